/**
 * Slow DNS from one sandbox must not stall another's egress (issue 14, finding 10). A UDP DNS
 * server this test binds on 127.0.0.1 answers `fast.test` at once and holds every `slow-*` query
 * unanswered; the daemon's resolver is pointed at it with AGENTBOX_EGRESS_DNS. While two sandboxes
 * flood the proxy with slow names (more lookups than libuv's 4 pool threads), a third one's
 * CONNECT to the fast name gets through, and the daemon's file I/O still completes, while every
 * slow lookup is still pending.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { resolverFromEnv } from '../../src/egress/resolver.js';
import { EgressService } from '../../src/egress/service.js';
import { silentLogger } from '../../src/observability/logger.js';
import { EGRESS_SOCKET } from '../../src/runtime/egress-plumbing.js';
import { Store } from '../../src/store/store.js';

interface FakeDns {
  port: number;
  /** Names of slow queries received (each retry counts) and not answered. */
  held: string[];
  fastAnswered: number;
  socket: UdpSocket;
}

/** The question name and type of a DNS query. */
function question(msg: Buffer): { name: string; type: number; end: number } | null {
  let p = 12;
  const labels: string[] = [];
  while (p < msg.length) {
    const len = msg[p] as number;
    if (len === 0) break;
    labels.push(msg.subarray(p + 1, p + 1 + len).toString('latin1'));
    p += 1 + len;
  }
  if (p + 5 > msg.length) return null;
  return { name: labels.join('.').toLowerCase(), type: msg.readUInt16BE(p + 1), end: p + 5 };
}

async function startFakeDns(): Promise<FakeDns> {
  const socket = createSocket('udp4');
  const dns: FakeDns = { port: 0, held: [], fastAnswered: 0, socket };
  socket.on('message', (msg, rinfo) => {
    const q = question(msg);
    if (!q) return;
    if (q.name.startsWith('slow-')) {
      dns.held.push(q.name);
      return; // never answered: the resolver's own timeout ends it
    }
    const isA = q.type === 1 && q.name === 'fast.test';
    const header = Buffer.alloc(12);
    header.writeUInt16BE(msg.readUInt16BE(0), 0);
    header.writeUInt16BE(q.name === 'fast.test' ? 0x8180 : 0x8183, 2); // NOERROR, or NXDOMAIN for unknown names
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(isA ? 1 : 0, 6);
    const answer = isA ? Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]) : Buffer.alloc(0);
    socket.send(Buffer.concat([header, msg.subarray(12, q.end), answer]), rinfo.port, rinfo.address);
    if (isA) dns.fastAnswered++;
  });
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  dns.port = socket.address().port;
  return dns;
}

/** Sends a CONNECT and resolves with the status line once the proxy answers it. */
function connectThrough(sock: string, authority: string): { reply: Promise<string>; socket: Socket } {
  const s = connect(sock);
  s.on('error', () => undefined);
  s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  const reply = new Promise<string>((resolve) => {
    let got = '';
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      if (got.includes('\r\n')) resolve(got.split('\r\n')[0] as string);
    });
    s.on('close', () => resolve(got.split('\r\n')[0] ?? ''));
  });
  return { reply, socket: s };
}

async function until(fn: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1500 && !fn(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(fn(), `never happened: ${what}`);
}

describe('slow DNS answers for one sandbox do not stall another', () => {
  let dir: string;
  let store: Store;
  let dns: FakeDns;
  let target: Server;
  let targetPort: number;
  let svc: EgressService;
  const ids = ['sbx_dnsflood1', 'sbx_dnsflood2', 'sbx_dnsquiet'];
  const sockets: Socket[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ab-slow-dns-'));
    store = Store.open(join(dir, 'db.sqlite'));
    dns = await startFakeDns();
    target = createServer((s) => s.on('error', () => undefined));
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    targetPort = (target.address() as AddressInfo).port;
    svc = new EgressService({
      home: dir,
      policy: { globalDeny: [], allowRanges: ['127.0.0.1/32'], byteQuotaMb: 4 },
      resolve: resolverFromEnv({ AGENTBOX_EGRESS_DNS: `127.0.0.1:${dns.port}` }),
      log: store.egress,
      logger: silentLogger(),
    });
    for (const id of ids) await svc.open({ id, tenant: 't', egress: { mode: 'open', allow: [] } });
  });

  after(async () => {
    for (const s of sockets) s.destroy();
    try {
      // Every slow lookup ends (c-ares gives up) and is logged before the store closes under it.
      if (store) await until(() => ids.slice(0, 2).reduce((n, id) => n + store.egress.forSandbox(id, { limit: 1000 }).length, 0) >= 16 * 2 + 16 + 1, 'every slow lookup ended');
    } finally {
      await svc?.closeAll();
      await new Promise((r) => target?.close(r));
      dns?.socket.close();
      store?.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a fast name gets through and file I/O completes while 32 slow lookups are pending', async () => {
    const flood: Promise<string>[] = [];
    for (const id of ids.slice(0, 2)) {
      const sock = join(svc.dirFor(id), EGRESS_SOCKET);
      for (let i = 0; i < 16; i++) {
        const c = connectThrough(sock, `slow-${id}-${i}.test:${targetPort}`);
        sockets.push(c.socket);
        flood.push(c.reply);
      }
    }
    let floodAnswered = 0;
    for (const p of flood) void p.then(() => floodAnswered++);
    // Every slow name has reached the DNS server at least once: all 32 lookups are in flight.
    await until(() => new Set(dns.held).size >= 32, 'all 32 slow names asked');

    const quiet = connectThrough(join(svc.dirFor('sbx_dnsquiet'), EGRESS_SOCKET), `fast.test:${targetPort}`);
    sockets.push(quiet.socket);
    const status = await quiet.reply;
    const file = join(dir, 'io-probe');
    writeFileSync(file, 'still-works');
    const io = await readFile(file, 'utf8');
    assert.equal(status, 'HTTP/1.1 200 Connection Established');
    assert.equal(io, 'still-works');
    assert.equal(floodAnswered, 0, 'the slow lookups were no longer pending: the test proves nothing');
    assert.ok(dns.fastAnswered >= 1);
  });

  test('a sandbox cannot hold more than its share of lookups: the 17th in flight is refused at once', async () => {
    const sock = join(svc.dirFor('sbx_dnsflood1'), EGRESS_SOCKET);
    // The first test's 16 lookups of this sandbox end first (c-ares gives up on them); then fill its slots again, and one more.
    await until(() => store.egress.forSandbox('sbx_dnsflood1', { limit: 1000 }).length >= 16, 'the first flood ended');
    const fill: Promise<string>[] = [];
    for (let i = 0; i < 16; i++) {
      const c = connectThrough(sock, `slow-again-${i}.test:${targetPort}`);
      sockets.push(c.socket);
      fill.push(c.reply);
    }
    await until(() => dns.held.filter((n) => n.startsWith('slow-again-')).length >= 16, 'the 16 slots filled');
    let filledAnswered = 0;
    for (const p of fill) void p.then(() => filledAnswered++);
    const extra = connectThrough(sock, `slow-extra.test:${targetPort}`);
    sockets.push(extra.socket);
    const line = await extra.reply;
    assert.match(line, /^HTTP\/1\.1 503 .*too_many_lookups/);
    assert.equal(filledAnswered, 0, 'the 16 slow lookups were no longer pending: the test proves nothing');
    assert.equal(dns.held.includes('slow-extra.test'), false, 'the 17th lookup was sent anyway');
  });
});
