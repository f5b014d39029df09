/**
 * Attacks on one sandbox's egress proxy, sent raw through its Unix socket, aimed only at
 * listeners this test binds on 127.0.0.1 (issue 14, finding 2): address spellings that reach host
 * loopback, plain-HTTP domain fronting, several hosts on one keep-alive connection, request
 * smuggling, CONNECT to a port the allowlist does not name, odd CONNECT authorities, and a TLS
 * ClientHello whose SNI names another host than the tunnel's.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { systemResolver } from '../../src/egress/resolver.js';
import { EgressService } from '../../src/egress/service.js';
import { silentLogger } from '../../src/observability/logger.js';
import { EGRESS_SOCKET } from '../../src/runtime/egress-plumbing.js';
import { Store } from '../../src/store/store.js';

/** A raw TCP listener on 127.0.0.1 that records every connection and every byte it gets. */
interface Listener {
  port: number;
  connections: number;
  bytes: Buffer[];
  server: Server;
}

async function rawListener(): Promise<Listener> {
  const l: Listener = { port: 0, connections: 0, bytes: [], server: createServer() };
  l.server.on('connection', (s: Socket) => {
    l.connections++;
    s.on('data', (c: Buffer) => l.bytes.push(c));
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => l.server.listen(0, '127.0.0.1', r));
  l.port = (l.server.address() as AddressInfo).port;
  return l;
}

/** Sends `text` over a fresh connection to the proxy and collects everything until it closes. */
function raw(sock: string, text: string | Buffer, opts: { endAfter?: (got: string) => boolean } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(sock);
    let got = '';
    const guard = setTimeout(() => s.destroy(), 15_000);
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      if (opts.endAfter?.(got)) s.destroy();
    });
    s.on('close', () => {
      clearTimeout(guard);
      resolve(got);
    });
    s.on('error', reject);
    s.write(text);
  });
}

const statusOf = (reply: string): number => Number(/^HTTP\/1\.[01] (\d{3})/.exec(reply)?.[1] ?? 0);

describe('egress proxy under attack (loopback targets only)', () => {
  let dir: string;
  let store: Store;
  let tcp: Listener;
  let other: Listener;
  let web: HttpServer;
  let webPort: number;
  const webSeen: string[] = [];
  let closedSvc: EgressService;
  let openedSvc: EgressService;
  let openSock: string;
  let allowSock: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ab-proxy-attacks-'));
    store = Store.open(join(dir, 'db.sqlite'));
    tcp = await rawListener();
    other = await rawListener();
    web = createHttpServer((req, res) => {
      webSeen.push(`${req.method} ${req.headers.host} ${req.url}`);
      req.resume();
      res.end('ok');
    });
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
    webPort = (web.address() as AddressInfo).port;
    const names = ['loop.test', 'good.test', 'second.test', 'blocked.test', 'elsewhere.test'];
    const resolve = systemResolver({
      overrides: new Map([
        ...names.map((n) => [n, ['127.0.0.1']] as [string, string[]]),
        // A DNS answer (AAAA) may spell loopback too.
        ['mapped.test', ['::ffff:7f00:1']],
        ['mapped-dotted.test', ['::ffff:127.0.0.1']],
        ['nat64.test', ['64:ff9b::7f00:1']],
        ['unspecified.test', ['::']],
      ]),
    });
    // An egress-open sandbox of a daemon that opens no range: nothing on host loopback is reachable.
    closedSvc = new EgressService({ home: join(dir, 'a'), policy: { globalDeny: ['blocked.test'], allowRanges: [], byteQuotaMb: 4 }, resolve, log: store.egress, logger: silentLogger() });
    await closedSvc.open({ id: 'sbx_attackopen', tenant: 't', egress: { mode: 'open', allow: [] } });
    openSock = join(closedSvc.dirFor('sbx_attackopen'), EGRESS_SOCKET);
    // An allowlist sandbox of a daemon that opens 127.0.0.1, so the allowed names reach the test's listeners.
    openedSvc = new EgressService({
      home: join(dir, 'b'),
      policy: { globalDeny: ['blocked.test', `127.0.0.1:${other.port}`], allowRanges: ['127.0.0.1/32'], byteQuotaMb: 4 },
      resolve,
      log: store.egress,
      logger: silentLogger(),
    });
    await openedSvc.open({ id: 'sbx_attackopen2', tenant: 't', egress: { mode: 'open', allow: [] } });
    await openedSvc.open({
      id: 'sbx_attackallow',
      tenant: 't',
      egress: { mode: 'allowlist', allow: [`good.test:${tcp.port}`, `good.test:${webPort}`, `second.test:${webPort}`, `second.test:${tcp.port}`, 'good.test'] },
    });
    allowSock = join(openedSvc.dirFor('sbx_attackallow'), EGRESS_SOCKET);
  });

  after(async () => {
    await closedSvc?.closeAll();
    await openedSvc?.closeAll();
    await new Promise((r) => tcp?.server.close(r));
    await new Promise((r) => other?.server.close(r));
    web?.closeAllConnections();
    await new Promise((r) => web?.close(r));
    store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('no spelling of host loopback gets through CONNECT or plain HTTP from an egress-open sandbox', async () => {
    const p = tcp.port;
    const targets = [
      `[::ffff:7f00:1]:${p}`, `[0:0:0:0:0:ffff:7f00:1]:${p}`, `[::FFFF:7F00:0001]:${p}`, `[::ffff:127.0.0.1]:${p}`, `[0::ffff:7f00:1]:${p}`,
      `[::7f00:1]:${p}`, `[::ffff:0:7f00:1]:${p}`, `[64:ff9b::7f00:1]:${p}`, `[2002:7f00:1::]:${p}`,
      `2130706433:${p}`, `0x7f000001:${p}`, `017700000001:${p}`, `0177.0.0.1:${p}`, `0x7f.1:${p}`, `127.1:${p}`, `127.0.1:${p}`, `127.0.0.1.:${p}`,
      `0.0.0.0:${p}`, `0:${p}`, `[::]:${p}`, `[::1]:${p}`, `loop.test:${p}`, `mapped.test:${p}`, `mapped-dotted.test:${p}`, `nat64.test:${p}`, `unspecified.test:${p}`, `LOOP.test.:${p}`, `loop%2Etest:${p}`, `loop\u3002test:${p}`,
      `user@127.0.0.1:${p}`, `[fe80::1%25lo]:${p}`, `[::ffff:7f00:1%lo]:${p}`,
    ];
    for (const t of targets) {
      const reply = await raw(openSock, `CONNECT ${t} HTTP/1.1\r\nHost: ${t}\r\n\r\n`);
      assert.ok([400, 403].includes(statusOf(reply)), `CONNECT ${JSON.stringify(t)} got: ${reply.split('\r\n')[0]}`);
    }
    for (const t of [`[::ffff:7f00:1]:${p}`, `[0:0:0:0:0:ffff:7f00:1]:${p}`, `0x7f.1:${p}`, `2130706433:${p}`, `[::]:${p}`]) {
      const reply = await raw(openSock, `GET http://${t}/ HTTP/1.1\r\nHost: ${t}\r\nConnection: close\r\n\r\n`);
      assert.ok([400, 403].includes(statusOf(reply)), `GET http://${t}/ got: ${reply.split('\r\n')[0]}`);
    }
    assert.equal(tcp.connections, 0, 'a connection reached the loopback listener');
  });

  test('CONNECT to a port the allowlist does not name is refused; named ports and 443/80 of a portless entry are not', async () => {
    const refused = await raw(allowSock, `CONNECT good.test:${other.port} HTTP/1.1\r\nHost: good.test:${other.port}\r\n\r\n`);
    assert.equal(statusOf(refused), 403, refused);
    assert.match(refused, /not_allowlisted/);
    assert.equal(other.connections, 0);
    const named = await raw(allowSock, `CONNECT good.test:${tcp.port} HTTP/1.1\r\nHost: good.test\r\n\r\n`, { endAfter: (g) => g.includes('\r\n\r\n') });
    assert.equal(statusOf(named), 200, named);
  });

  test('a deny-listed IP literal is denied however the sandbox reaches it: another spelling, or a name that resolves to it', async () => {
    const sock = join(openedSvc.dirFor('sbx_attackopen2'), EGRESS_SOCKET);
    const p = other.port;
    for (const t of [`127.0.0.1:${p}`, `[::ffff:7f00:1]:${p}`, `2130706433:${p}`, `loop.test:${p}`, `good.test:${p}`, `mapped.test:${p}`]) {
      const reply = await raw(sock, `CONNECT ${t} HTTP/1.1\r\nHost: ${t}\r\n\r\n`);
      assert.equal(statusOf(reply), 403, `CONNECT ${t}: ${reply.split('\r\n')[0]}`);
      assert.match(reply, /globalDeny:127\.0\.0\.1:/);
    }
    assert.equal(other.connections, 0);
    // The same sandbox reaches the opened loopback address on a port the deny entry does not name.
    const ok = await raw(sock, `CONNECT loop.test:${tcp.port} HTTP/1.1\r\nHost: loop.test\r\n\r\n`, { endAfter: (g) => g.includes('\r\n\r\n') });
    assert.equal(statusOf(ok), 200, ok);
  });

  test('plain HTTP: a Host header that names another host than the URL is refused (no domain fronting), and nothing is forwarded', async () => {
    const before = webSeen.length;
    for (const host of ['blocked.test', `blocked.test:${webPort}`, `second.test:${webPort + 1}`, 'elsewhere.test', `good.test:${webPort}\r\nHost: blocked.test`]) {
      const reply = await raw(allowSock, `GET http://good.test:${webPort}/x HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      assert.equal(statusOf(reply), 400, `Host ${JSON.stringify(host)}: ${reply.split('\r\n')[0]}`);
    }
    const userinfo = await raw(allowSock, `GET http://blocked.test@good.test:${webPort}/x HTTP/1.1\r\nHost: good.test:${webPort}\r\nConnection: close\r\n\r\n`);
    assert.equal(statusOf(userinfo), 400, userinfo);
    assert.equal(webSeen.length, before, `forwarded: ${webSeen.slice(before).join(' | ')}`);
    const ok = await raw(allowSock, `GET http://GOOD.test:${webPort}/y HTTP/1.1\r\nHost: good.test:${webPort}\r\nConnection: close\r\n\r\n`);
    assert.equal(statusOf(ok), 200, ok);
    assert.equal(webSeen.at(-1), `GET good.test:${webPort} /y`);
  });

  test('every request on one keep-alive connection is checked on its own', async () => {
    const before = webSeen.length;
    const reqs =
      `GET http://good.test:${webPort}/first HTTP/1.1\r\nHost: good.test:${webPort}\r\n\r\n` +
      `GET http://blocked.test:${webPort}/second HTTP/1.1\r\nHost: blocked.test:${webPort}\r\n\r\n` +
      `GET http://elsewhere.test:${webPort}/third HTTP/1.1\r\nHost: elsewhere.test:${webPort}\r\nConnection: close\r\n\r\n`;
    const reply = await raw(allowSock, reqs);
    const statuses = [...reply.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    assert.equal(statuses[0], 200, reply);
    assert.ok(statuses.slice(1).every((s) => s === 403 || s === 400), reply);
    assert.deepEqual(webSeen.slice(before), [`GET good.test:${webPort} /first`]);
  });

  test('request smuggling: ambiguous framing, obs-fold and oversized heads are refused before anything is forwarded', async () => {
    const before = webSeen.length;
    const url = `http://good.test:${webPort}/s`;
    const h = `Host: good.test:${webPort}`;
    const attempts: [string, string][] = [
      ['CL + TE', `POST ${url} HTTP/1.1\r\n${h}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET http://blocked.test:${webPort}/smuggled HTTP/1.1\r\nHost: blocked.test\r\n\r\n`],
      ['TE + CL', `POST ${url} HTTP/1.1\r\n${h}\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n`],
      ['two Content-Lengths', `POST ${url} HTTP/1.1\r\n${h}\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n`],
      ['Content-Length list', `POST ${url} HTTP/1.1\r\n${h}\r\nContent-Length: 0, 44\r\n\r\n`],
      ['TE obfuscated', `POST ${url} HTTP/1.1\r\n${h}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`],
      ['TE chained', `POST ${url} HTTP/1.1\r\n${h}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`],
      ['TE with space before colon', `POST ${url} HTTP/1.1\r\n${h}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n`],
      ['obs-fold', `GET ${url} HTTP/1.1\r\n${h}\r\nX-A: a\r\n b\r\n\r\n`],
      ['bare LF', `GET ${url} HTTP/1.1\n${h}\nX-A: a\n\n`],
      ['two Host headers', `GET ${url} HTTP/1.1\r\n${h}\r\nHost: blocked.test\r\n\r\n`],
      ['64 KiB header', `GET ${url} HTTP/1.1\r\n${h}\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`],
    ];
    for (const [name, text] of attempts) {
      const reply = await raw(allowSock, text);
      const status = statusOf(reply);
      assert.ok(status === 400 || status === 431 || (status === 0 && reply === ''), `${name}: ${reply.split('\r\n')[0] || '(no answer)'}`);
    }
    assert.deepEqual(webSeen.slice(before), [], 'something was forwarded');
  });

  /** CONNECT to `authority`, then a TLS handshake naming `servername`; what the listener got on that connection. */
  const tlsThrough = async (authority: string, servername: string): Promise<{ status: number; listenerBytes: number }> => {
    const startBytes = tcp.bytes.length;
    const s = connect(allowSock);
    s.on('error', () => undefined);
    s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    const head = await new Promise<string>((resolve) => {
      let got = '';
      const onData = (c: Buffer): void => {
        got += c.toString('latin1');
        if (got.includes('\r\n\r\n')) {
          s.off('data', onData);
          resolve(got);
        }
      };
      s.on('data', onData);
      s.on('close', () => resolve(got));
    });
    const status = statusOf(head);
    if (status !== 200) return { status, listenerBytes: 0 };
    // The listener is not a TLS server: the handshake never completes, the ClientHello is what it would get.
    const tls = tlsConnect({ socket: s, servername, rejectUnauthorized: false });
    tls.on('error', () => undefined);
    await new Promise<void>((resolve) => {
      const check = setInterval(() => {
        if (tcp.bytes.length > startBytes || s.destroyed) {
          clearInterval(check);
          resolve();
        }
      }, 10);
    });
    tls.destroy();
    return { status, listenerBytes: tcp.bytes.slice(startBytes).reduce((n, b) => n + b.length, 0) };
  };

  test('TLS through an allowed tunnel: an SNI naming a host the sandbox may not reach is refused (domain fronting); its own or another allowed name passes', async () => {
    const a = `good.test:${tcp.port}`;
    for (const sni of ['blocked.test', 'elsewhere.test', 'metadata.google.internal']) {
      const r = await tlsThrough(a, sni);
      assert.equal(r.status, 200);
      assert.equal(r.listenerBytes, 0, `the ClientHello for ${sni} went through the tunnel to good.test`);
    }
    assert.ok(store.egress.forSandbox('sbx_attackallow', { decision: 'denied' }).some((e) => e.rule === 'sni:blocked.test'));
    for (const sni of ['good.test', 'GOOD.test', 'second.test']) {
      const r = await tlsThrough(a, sni);
      assert.ok(r.listenerBytes > 0, `the ClientHello for ${sni} did not get through`);
    }
  });
});
