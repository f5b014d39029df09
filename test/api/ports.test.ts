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
      portsDomain: 'localhost',
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

  /** A request to the port proxy: Host PORT-ID.localhost, on the daemon's TCP port. */
  const viaProxy = (target: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> =>
    new Promise((resolve, reject) => {
      get({ host: '127.0.0.1', port, path, headers: { host: `${target}.localhost:${port}`, ...headers } }, async (res) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: (await readAll(res)).toString('utf8') })).on('error', reject);
    });

  test('the port proxy: PORT-ID.<domain> reaches the server inside only with an access token of that port, the owner\'s API token, or once public; expiry and revocation', async () => {
    const host = `8000-${sbx}`;
    assert.equal((await viaProxy(host, '/index.html')).status, 404, 'no token: as if there were no such port');
    const grant = await alice.grantPortAccess(sbx, 8000);
    assert.match(grant.token ?? '', /^abp_/);
    assert.equal(grant.url, `http://8000-${sbx}.localhost:${port}/`);
    assert.ok(grant.expiresAt && Date.parse(grant.expiresAt) > Date.now() + 3500_000, 'a token holds 1 h by default');
    const page = await viaProxy(host, '/index.html', { 'agentbox-port-token': grant.token! });
    assert.equal(page.status, 200);
    assert.equal(page.body, 'port-page\n');
    // A link with the token: redirected without it, the token kept as a cookie of this host only.
    const link = await viaProxy(host, `/index.html?a=1&agentbox_port_token=${encodeURIComponent(grant.token!)}`);
    assert.equal(link.status, 302);
    assert.equal(link.headers.location, '/index.html?a=1');
    const cookie = String(link.headers['set-cookie']);
    assert.match(cookie, /^agentbox_port_token=[^;]+; Path=\/; HttpOnly; SameSite=Lax$/);
    assert.doesNotMatch(cookie, /Domain=/i);
    assert.equal((await viaProxy(host, '/index.html', { cookie: `other=1; ${cookie.split(';')[0]}` })).status, 200);
    // The token is for this sandbox's port 8000 only; tokens of nobody, wrong ports and other tenants get nothing.
    assert.equal((await viaProxy(`7000-${sbx}`, '/', { 'agentbox-port-token': grant.token! })).status, 404);
    assert.equal((await viaProxy(host, '/index.html', { 'agentbox-port-token': `${grant.token!}x` })).status, 404);
    assert.equal((await viaProxy(`8000-sbx_nosuchsandbox0000`, '/', { 'agentbox-port-token': grant.token! })).status, 404);
    assert.equal((await viaProxy(host, '/index.html', { authorization: 'Bearer alice-token-0123456789' })).status, 200, 'the owner\'s API token');
    assert.equal((await viaProxy(host, '/index.html', { authorization: 'Bearer bob-token-0123456789' })).status, 404, 'another tenant\'s API token');
    assert.equal((await viaProxy(host, '/index.html', { authorization: 'Basic dXNlcjpwdw==', 'agentbox-port-token': grant.token! })).status, 200, 'the app\'s own HTTP authentication does not get in the way');
    assert.equal((await viaProxy(host, '/index.html', { authorization: 'Bearer not-an-agentbox-token' })).status, 404, 'a bearer that is not agentbox\'s opens nothing by itself');
    await assert.rejects(bob.grantPortAccess(sbx, 8000), NotFoundError);
    await assert.rejects(new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: 'alice-reader-token-0123456789' }).grantPortAccess(sbx, 8000), ForbiddenError);
    // Expiry, revocation, public.
    const short = await alice.grantPortAccess(sbx, 8000, { ttl: 1 });
    assert.equal((await viaProxy(host, '/index.html', { 'agentbox-port-token': short.token! })).status, 200);
    await new Promise((r) => setTimeout(r, 1200));
    assert.equal((await viaProxy(host, '/index.html', { 'agentbox-port-token': short.token! })).status, 404, 'an expired token');
    assert.equal(await alice.revokePortAccess(sbx, 8000), 2);
    assert.equal((await viaProxy(host, '/index.html', { 'agentbox-port-token': grant.token! })).status, 404, 'a revoked token');
    const pub = await alice.grantPortAccess(sbx, 8000, { public: true });
    assert.equal(pub.token, undefined);
    assert.equal((await viaProxy(host, '/index.html')).status, 200, 'a public port');
    assert.equal((await viaProxy(`7000-${sbx}`, '/')).status, 404, 'only that port is public');
    await alice.revokePortAccess(sbx, 8000);
    assert.equal((await viaProxy(host, '/index.html')).status, 404);
    // Other names under the domain, and anything else, are the API's (and its browser guard's).
    assert.equal((await viaProxy('api', '/healthz')).status, 403);
    for (const bad of [0, 70000]) await assert.rejects(alice.grantPortAccess(sbx, bad), BadRequestError);
  });

  test('the port proxy carries an upgrade (a WebSocket of the app inside) byte for byte, and strips its own credentials', async () => {
    const grant = await alice.grantPortAccess(sbx, 7100);
    // One connection's echo server: what reaches it comes back, so the request the app sees is visible.
    const r = await alice.exec(sbx, { cmd: ['sh', '-c', '(nc -l -p 7100 -e /bin/cat >/dev/null 2>&1 &); for i in $(seq 100); do netstat -ltn | grep -q ":7100 " && exit 0; sleep 0.1; done; exit 1'] });
    assert.equal(r.exitCode, 0);
    // Written raw, read raw: the echo server sends back the request exactly as the app inside got it.
    const sock = connect(port, '127.0.0.1');
    await new Promise((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    sock.write([`GET /chat HTTP/1.1`, `Host: 7100-${sbx}.localhost:${port}`, 'Connection: Upgrade', 'Upgrade: websocket', `agentbox-port-token: ${grant.token!}`, 'Cookie: agentbox_port_token=zzz; app=1', 'X-App: kept', 'Authorization: Bearer the-apps-own-token', '', 'first-frame-bytes'].join('\r\n'));
    let seen = '';
    sock.on('data', (c: Buffer) => (seen += c.toString('latin1')));
    for (let i = 0; i < 100 && !seen.includes('first-frame-bytes'); i++) await new Promise((r) => setTimeout(r, 50));
    sock.destroy();
    assert.match(seen, /^GET \/chat HTTP\/1\.1\r\n/);
    assert.match(seen, /\r\nx-app: kept\r\n/i);
    assert.match(seen, /\r\nupgrade: websocket\r\n/i);
    assert.match(seen, /\r\ncookie: app=1\r\n/i, 'the app\'s own cookies go on');
    assert.doesNotMatch(seen, /agentbox-port-token|agentbox_port_token/i, 'the proxy\'s credentials do not reach the app');
    assert.match(seen, /\r\nauthorization: Bearer the-apps-own-token\r\n/i, 'an Authorization that is not an agentbox token is the app\'s own: passed on');
    assert.match(seen, /\r\n\r\nfirst-frame-bytes$/, 'bytes after the head follow it');
    // The owner's API token opens the port, and never reaches the app (it could act as the tenant).
    const r2 = await alice.exec(sbx, { cmd: ['sh', '-c', '(nc -l -p 7101 -e /bin/cat >/dev/null 2>&1 &); for i in $(seq 100); do netstat -ltn | grep -q ":7101 " && exit 0; sleep 0.1; done; exit 1'] });
    assert.equal(r2.exitCode, 0);
    const sock2 = connect(port, '127.0.0.1');
    await new Promise((resolve, reject) => sock2.once('connect', resolve).once('error', reject));
    sock2.write([`GET /ws HTTP/1.1`, `Host: 7101-${sbx}.localhost:${port}`, 'Connection: Upgrade', 'Upgrade: websocket', 'Authorization: Bearer alice-token-0123456789', '', 'owner-bytes'].join('\r\n'));
    let seen2 = '';
    sock2.on('data', (c: Buffer) => (seen2 += c.toString('latin1')));
    for (let i = 0; i < 100 && !seen2.includes('owner-bytes'); i++) await new Promise((r) => setTimeout(r, 50));
    sock2.destroy();
    assert.match(seen2, /^GET \/ws HTTP\/1\.1\r\n/);
    assert.doesNotMatch(seen2, /alice-token|authorization/i, 'the owner\'s API token is not passed to the app');
    await alice.revokePortAccess(sbx, 7100);
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
