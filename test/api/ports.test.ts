/**
 * A sandbox's ports through a real daemon: the upgrade route, the SDK's openPort and the CLI's
 * port-forward, to servers inside a sandbox that has no network; refusals as plain HTTP; tenancy.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { get, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConflictError, NotFoundError, BadRequestError, ForbiddenError } from '../../src/contract/errors.js';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

const skip = process.getuid?.() !== 0 ? 'the local runtime needs root' : undefined;
const CLI = new URL('../../src/cli/main.js', import.meta.url).pathname;

const POLICY = `version: 1
defaults:
  image: busybox
  limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 32 }
  ttl: 1h
  idleTimeout: 15m
  execTimeout: 1m
tenants:
  - name: alice
    tokens: [alice-token-0123456789]
    scopedTokens:
      - { token: alice-reader-token-0123456789, scopes: [read] }
  - name: bob
    tokens: [bob-token-0123456789]
`;

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** The raw upgrade exchange: the status line and headers the daemon answered, and the socket. */
function upgrade(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; body: string; socket?: Socket }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers });
    req.on('upgrade', (res, socket) => resolve({ status: res.statusCode ?? 0, body: '', socket }));
    req.on('response', async (res) => resolve({ status: res.statusCode ?? 0, body: (await readAll(res)).toString('utf8') }));
    req.on('error', reject);
    req.end();
  });
}

describe('ports', { skip }, () => {
  let home: string;
  let daemon: Daemon | undefined;
  let port: number;
  let alice: AgentboxClient;
  let bob: AgentboxClient;
  let sbx: string;
  const forwards: ChildProcess[] = [];

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-ports-api-'));
    writeFileSync(join(home, 'policy.yaml'), POLICY);
    daemon = await startDaemon({
      env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR },
      logger: silentLogger(),
      policyPath: join(home, 'policy.yaml'),
      socket: join(home, 'agentbox.sock'),
      tcp: { host: '127.0.0.1', port: 0 },
    });
    port = daemon.tcpAddress!.port;
    alice = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: 'alice-token-0123456789' });
    bob = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: 'bob-token-0123456789' });
    const sb = await alice.create({ image: 'busybox' });
    sbx = sb.id;
    assert.equal(sb.egress.mode, 'none', 'the sandbox has no network');
    // An echo server (one connection) and a web server, on the sandbox's own loopback.
    const r = await alice.exec(sbx, {
      cmd: ['sh', '-c', 'mkdir -p /workspace/www && echo port-page > /workspace/www/index.html; httpd -p 127.0.0.1:8000 -h /workspace/www; (nc -l -p 7000 -e /bin/cat >/dev/null 2>&1 &); for i in $(seq 100); do netstat -ltn | grep -q ":7000 " && netstat -ltn | grep -q ":8000 " && exit 0; sleep 0.1; done; exit 1'],
    });
    assert.equal(r.exitCode, 0, `servers inside: ${r.stderr}`);
  });

  after(async () => {
    for (const f of forwards) f.kill('SIGKILL');
    if (daemon) {
      for (const sb of await alice.list()) await alice.delete(sb.id);
      const runtime = await daemon.manager.runtime('local');
      await daemon.close();
      assert.deepEqual(await runtime.list(), [], 'sandboxes left on the host');
    }
    rmSync(home, { recursive: true, force: true });
  });

  test('the SDK reaches a server inside a sandbox without network: 1 MiB echoed, half-close passed on', async () => {
    const conn = await alice.openPort(sbx, 7000);
    const payload = randomBytes(1 << 20);
    const chunks: Buffer[] = [];
    conn.on('data', (c: Buffer) => chunks.push(c));
    const ended = new Promise<void>((resolve, reject) => {
      conn.once('end', resolve);
      conn.once('error', reject);
    });
    conn.end(payload);
    await ended;
    assert.equal(sha(Buffer.concat(chunks)), sha(payload));
    // Nothing of that connection is left inside.
    for (let i = 0; i < 50; i++) {
      if (!(await alice.processes(sbx)).some((p) => / connect 7000$/.test(p.command) || /nc -l -p 7000/.test(p.command))) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.fail('the relay or the one-connection server is still running');
  });

  test('refusals are plain HTTP before any upgrade: nothing listening, bad port, plain GET, wrong Upgrade, no token, other tenant, read-only token, unknown sandbox', async () => {
    await assert.rejects(alice.openPort(sbx, 7999), (e: Error) => e instanceof ConflictError && /nothing listens on port 7999/.test(e.message));
    for (const bad of [0, 65536, 'http']) await assert.rejects(alice.openPort(sbx, bad as number), BadRequestError);
    await assert.rejects(bob.openPort(sbx, 8000), NotFoundError);
    await assert.rejects(new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: 'alice-reader-token-0123456789' }).openPort(sbx, 8000), ForbiddenError);
    await assert.rejects(alice.openPort('sbx_nosuchsandbox0000', 8000), NotFoundError);
    const auth = { authorization: 'Bearer alice-token-0123456789' };
    const path = `/v1/sandboxes/${sbx}/ports/8000/connect`;
    const plain = await new Promise<number>((resolve, reject) => get({ host: '127.0.0.1', port, path, headers: auth }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', reject));
    assert.equal(plain, 426);
    const ws = await upgrade(port, path, { ...auth, connection: 'Upgrade', upgrade: 'websocket' });
    assert.equal(ws.status, 400);
    assert.match(ws.body, /takes Upgrade: tcp/);
    const anon = await upgrade(port, path, { connection: 'Upgrade', upgrade: 'tcp' });
    assert.equal(anon.status, 401);
    const browser = await upgrade(port, path, { ...auth, connection: 'Upgrade', upgrade: 'tcp', origin: 'https://evil.example' });
    assert.equal(browser.status, 403);
    const unknownRoute = await upgrade(port, `/v1/sandboxes/${sbx}/ports/8000/nothing`, { ...auth, connection: 'Upgrade', upgrade: 'tcp' });
    assert.equal(unknownRoute.status, 404);
    // The upgrade itself, raw: 101, then the bytes of an HTTP exchange with the server inside.
    const ok = await upgrade(port, path, { ...auth, connection: 'Upgrade', upgrade: 'tcp' });
    assert.equal(ok.status, 101);
    ok.socket!.end('GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n');
    assert.match((await readAll(ok.socket!)).toString('utf8'), /^HTTP\/1\.[01] 200[\s\S]*port-page/);
  });

  test('agentbox port-forward: a local port to the sandbox\'s web server, many connections, then stopped', async () => {
    const child = spawn(process.execPath, [CLI, 'port-forward', sbx, '0:8000'], { env: { ...process.env, AGENTBOX_URL: `http://127.0.0.1:${port}`, AGENTBOX_TOKEN: 'alice-token-0123456789' }, stdio: ['ignore', 'pipe', 'pipe'] });
    forwards.push(child);
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    for (let i = 0; i < 100 && !/forwarding 127\.0\.0\.1:\d+/.test(out); i++) await new Promise((r) => setTimeout(r, 100));
    const m = /forwarding 127\.0\.0\.1:(\d+) -> (\S+):8000/.exec(out);
    assert.ok(m, `port-forward said: ${out} ${err}`);
    assert.equal(m[2], sbx);
    const local = Number(m[1]);
    const pages = await Promise.all(
      Array.from({ length: 8 }, () => new Promise<string>((resolve, reject) => get({ host: '127.0.0.1', port: local, path: '/index.html' }, async (res) => resolve((await readAll(res)).toString('utf8'))).on('error', reject))),
    );
    for (const p of pages) assert.equal(p, 'port-page\n');
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    assert.equal(code, 0, `port-forward exited ${code}: ${err}`);
    await assert.rejects(new Promise((resolve, reject) => connect(local, '127.0.0.1').once('connect', resolve).once('error', reject)), /ECONNREFUSED/);
  });

  test('agentbox port-forward refuses a bad spec and an unknown sandbox before listening', async () => {
    for (const [args, want] of [[[sbx, '70000'], /not a port/], [[sbx, 'a:b'], /not a port/], [['sbx_nosuchsandbox0000', '8000'], /no sandbox|not found/i]] as const) {
      const child = spawn(process.execPath, [CLI, 'port-forward', ...args], { env: { ...process.env, AGENTBOX_URL: `http://127.0.0.1:${port}`, AGENTBOX_TOKEN: 'alice-token-0123456789' }, stdio: ['ignore', 'pipe', 'pipe'] });
      forwards.push(child);
      let err = '';
      child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
      const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      assert.notEqual(code, 0);
      assert.match(err, want);
    }
  });
});
