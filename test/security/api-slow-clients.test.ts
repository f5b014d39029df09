/**
 * Finding 6: the HTTP server bounds slow and idle clients (slowloris headers, a trickled body, a
 * connection that says nothing, too many connections) without cutting a long quiet exec stream;
 * malformed percent-encoding is a 400 with the usual body, never a 500 with a stack in the log.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { startDaemon, type Daemon, type DaemonOpts } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { closeDaemonLeavingNothing } from '../helpers/daemon-teardown.js';

const TOKEN = 'slow-clients-token-0123456789';

async function daemonIn(home: string, extra: Partial<DaemonOpts>): Promise<Daemon> {
  // Output well past the kernel's socket buffers, so a client that does not read stalls the stream.
  writeFileSync(join(home, 'policy.yaml'), `version: 1\ndefaults: { outputLimitBytes: 67108864 }\ntenants:\n  - { name: alice, tokens: [${TOKEN}] }\n`);
  return startDaemon({
    env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR },
    logger: silentLogger(),
    policyPath: join(home, 'policy.yaml'),
    socket: null,
    tcp: { host: '127.0.0.1', port: 0 },
    ...extra,
  });
}

/** Connects, then writes `lines` one every `everyMs` until the server closes or they run out. Resolves with whether the server cut it and what it said. */
function trickle(port: number, first: string, lines: string[], everyMs: number): Promise<{ cut: boolean; said: string }> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let said = '';
    let closed = false;
    s.on('data', (d) => (said += d.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => {
      closed = true;
      resolve({ cut: true, said });
    });
    s.on('connect', async () => {
      if (first) s.write(first);
      for (const line of lines) {
        await sleep(everyMs);
        if (closed) return;
        s.write(line);
      }
      await sleep(everyMs);
      if (closed) return;
      s.destroy();
      resolve({ cut: false, said });
    });
  });
}

describe('slow and idle clients are cut', () => {
  let home: string;
  let daemon: Daemon | undefined;
  let port: number;
  let alice: AgentboxClient;
  const logLines: string[] = [];

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-sec-slow-'));
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        cb();
      },
    });
    daemon = await daemonIn(home, {
      logger: pino({ level: 'debug' }, sink),
      http: { headersTimeoutMs: 1000, requestTimeoutMs: 2000, idleTimeoutMs: 1000, keepAliveTimeoutMs: 500 },
    });
    port = daemon.tcpAddress!.port;
    alice = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: TOKEN });
  });

  after(() =>
    closeDaemonLeavingNothing(daemon, home, async () => {
      for (const sb of await alice.list()) await alice.delete(sb.id);
    }),
  );

  test('slowloris: headers trickled one line every 200 ms are cut', async () => {
    const lines = Array.from({ length: 60 }, (_, i) => `X-Slow-${i}: a\r\n`);
    const r = await trickle(port, `GET /v1/sandboxes HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n`, lines, 200);
    assert.equal(r.cut, true, 'the server was still reading headers after 12 s');
    assert.doesNotMatch(r.said, /HTTP\/1\.1 200/);
  });

  test('a body trickled byte by byte is cut (REST and /mcp)', async () => {
    const head = `POST /v1/sandboxes HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`;
    const r = await trickle(port, head, Array.from({ length: 60 }, () => ' '), 200);
    assert.equal(r.cut, true, 'the server was still waiting for the body after 12 s');
    assert.deepEqual(await alice.list(), [], 'a trickled create made a sandbox');
    const mcp = `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${TOKEN}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`;
    const m = await trickle(port, mcp, Array.from({ length: 60 }, () => ' '), 200);
    assert.equal(m.cut, true, '/mcp was still waiting for the body after 12 s');
  });

  test('a connection that says nothing is cut', async () => {
    const r = await trickle(port, '', Array.from({ length: 60 }, () => ''), 200);
    assert.equal(r.cut, true, 'a silent connection stayed open for 12 s');
  });

  test('a quiet exec is not cut: SSE (heartbeats) and buffered', async () => {
    const sb = await alice.create();
    let out = '';
    let exit: number | undefined;
    for await (const ev of alice.execStream(sb.id, { cmd: ['sh', '-c', 'sleep 3; echo done'] })) {
      if (ev.type === 'stdout') out += ev.data.toString();
      if (ev.type === 'exit') exit = ev.result.exitCode;
    }
    assert.equal(exit, 0);
    assert.equal(out, 'done\n');
    const r = await alice.exec(sb.id, { cmd: ['sh', '-c', 'sleep 3; echo buffered'] });
    assert.equal(r.stdout, 'buffered\n');
    await alice.delete(sb.id);
  });

  test('a client that stops reading a streaming exec is cut, and the exec does not hold on', async () => {
    const sb = await alice.create();
    const body = JSON.stringify({ cmd: ['sh', '-c', 'yes agentbox-output-line | head -c 30000000'] });
    const s = connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    s.write(`POST /v1/sandboxes/${sb.id}/exec HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${TOKEN}\r\nAccept: text/event-stream\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    s.pause(); // and never read
    // Seen from the server: the stalled connection goes away (the client, not reading, cannot tell).
    const server = daemon!.servers[0]!;
    const open = (): Promise<number> => new Promise((resolve) => server.getConnections((_e, n) => resolve(n)));
    let cut = false;
    for (let i = 0; i < 150 && !cut; i++) {
      await sleep(100);
      cut = (await open()) === 0;
    }
    s.destroy();
    assert.equal(cut, true, 'a client that reads nothing held its stream for 15 s');
    const history = await alice.execs(sb.id);
    assert.equal(history.length, 1);
    await alice.delete(sb.id);
  });

  test('malformed percent-encoding is a 400 with the error body, and no stack in the log', async () => {
    const sb = await alice.create();
    const paths = [
      '/v1/sandboxes/%E0%A4%A',
      '/v1/sandboxes/%E0%A4%A/exec',
      '/v1/sandboxes/%ZZ',
      `/v1/sandboxes/${sb.id}/files?path=%E0%A4%A`,
      `/v1/sandboxes/${sb.id}/files/list?path=/workspace%C0`,
      `/v1/sandboxes/${sb.id}/files?path=/workspace/a%00b`,
      '/v1/sandboxes?labels=a%3D%E0%A4%A',
      '/v1/sandboxes?%E0%A4%A=1',
    ];
    for (const path of paths) {
      const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, method: path.endsWith('/exec') ? 'POST' : 'GET', path, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' } }, async (res) =>
          resolve({ status: res.statusCode ?? 0, body: (await readAll(res)).toString('utf8') }),
        );
        req.on('error', reject);
        req.end(path.endsWith('/exec') ? '{"cmd":["true"]}' : undefined);
      });
      assert.equal(r.status, 400, `${path}: ${r.status} ${r.body}`);
      const err = (JSON.parse(r.body) as { error: { code: string; hint?: string } }).error;
      assert.equal(err.code, 'bad_request', path);
      assert.ok(err.hint, path);
    }
    const stacks = logLines.filter((l) => /URIError|unhandled error|"stack"/.test(l));
    assert.deepEqual(stacks, [], 'malformed input logged as an unhandled error');
    await alice.delete(sb.id);
  });
});

describe('connections are limited', () => {
  let home: string;
  let daemon: Daemon | undefined;
  let port: number;

  before(async () => {
    home = mkdtempSync(join(tmpdir(), 'agentbox-sec-conns-'));
    daemon = await daemonIn(home, { http: { maxConnections: 4 } });
    port = daemon.tcpAddress!.port;
  });

  after(async () => {
    // A before() that failed (e.g. on the old code) leaves no daemon: still remove the home.
    if (daemon === undefined) return rmSync(home, { recursive: true, force: true });
    await daemon.close();
    rmSync(home, { recursive: true, force: true });
  });

  test('beyond maxConnections a new connection is closed unanswered; once they go, one gets through', async () => {
    const open = (): Promise<Socket> =>
      new Promise((resolve, reject) => {
        const s = connect(port, '127.0.0.1', () => resolve(s));
        s.on('error', reject);
      });
    const held = await Promise.all(Array.from({ length: 4 }, open));
    const extra = connect(port, '127.0.0.1');
    extra.on('error', () => undefined);
    extra.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    let said = '';
    extra.on('data', (d) => (said += d.toString()));
    await new Promise<void>((resolve) => extra.on('close', () => resolve()));
    assert.equal(said, '', 'the connection over the limit was answered');
    for (const s of held) s.destroy();
    await sleep(100);
    const ok = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/healthz' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(ok, 200);
  });
});
