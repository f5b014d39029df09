/**
 * Sandbox tokens (ARCHITECTURE.md, "Sandbox tokens"): minted by a caller with manage, used from
 * outside for exactly their scopes on their one sandbox, refused everywhere else (other sandboxes are
 * 404; creates, mints, snapshots, volumes, webhooks, usage overview, metrics, daemon, images, MCP, the
 * E2B control plane, another sandbox's terminal, port stream or port proxy are refused), and dead once
 * expired, revoked or their sandbox ended. From inside a sandbox with egress, busybox wget reaches the
 * API at http://agentbox.internal through the sandbox's proxy with its own token only. A real daemon
 * on the local runtime.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { QEMU_BINARY } from '../../src/runtime/microvm/vm.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';
import { cliEntry, VERSION } from '../../src/core/config.js';
import type { AgentboxError } from '../../src/contract/errors.js';
import { SANDBOX_TOKEN_PATH } from '../../src/contract/tokens.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { closeDaemonLeavingNothing } from '../helpers/daemon-teardown.js';

const ALICE = 'alice-token-0123456789';
const ALICE_READER = 'alice-reader-token-0123456789';
const ALICE_MANAGER = 'alice-manager-token-0123456789';
const BOB = 'bob-token-0123456789';
const OPERATOR = 'operator-token-0123456789';

const POLICY = `version: 1
defaults: { image: busybox, ttl: 10m }
profiles:
  web: { egress: { mode: open } }
tenants:
  - name: alice
    tokens: [${ALICE}]
    scopedTokens:
      - { token: ${ALICE_READER}, scopes: [read, exec] }
      - { token: ${ALICE_MANAGER}, scopes: [read, manage] }
  - name: bob
    tokens: [${BOB}]
`;

interface Answer {
  status: number;
  body: string;
}

function codeOf(err: unknown): string | undefined {
  return (err as AgentboxError | undefined)?.code;
}

async function refused(p: Promise<unknown>, code: string, what: string): Promise<AgentboxError> {
  try {
    await p;
  } catch (err) {
    assert.equal(codeOf(err), code, `${what}: ${String(err)}`);
    return err as AgentboxError;
  }
  assert.fail(`${what}: was allowed`);
}

describe('sandbox tokens', () => {
  let home: string;
  let daemon: Daemon | undefined;
  let port: number;
  let url: string;
  let alice: AgentboxClient;
  let a: string;
  let b: string;

  const raw = (method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method, path, headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers } }, async (res) => {
        resolve({ status: res.statusCode ?? 0, body: (await readAll(res)).toString('utf8') });
      });
      req.on('upgrade', (res, socket) => {
        socket.destroy();
        resolve({ status: res.statusCode ?? 0, body: 'UPGRADED' });
      });
      req.on('error', reject);
      req.end(body);
    });
  const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'ab-sandbox-tokens-'));
    writeFileSync(join(home, 'policy.yaml'), POLICY);
    daemon = await startDaemon({
      env: { AGENTBOX_HOME: join(home, 'h'), AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_TOKEN: OPERATOR },
      logger: silentLogger(),
      policyPath: join(home, 'policy.yaml'),
      tcp: { host: '127.0.0.1', port: 0 },
      portsDomain: 'localhost',
    });
    port = daemon.tcpAddress!.port;
    url = `http://127.0.0.1:${port}`;
    alice = new AgentboxClient({ url, token: ALICE });
    a = (await alice.create({ labels: { which: 'a' } })).id;
    b = (await alice.create({ labels: { which: 'b' } })).id;
  });

  after(() =>
    closeDaemonLeavingNothing(daemon, home, async () => {
      for (const sb of await alice.list()) await alice.delete(sb.id);
    }),
  );

  test('mint: 201 with the token shown once, its id, scopes and an expiry; the list never shows the secret', async () => {
    const t = await alice.createToken(a, { scopes: ['exec', 'read'], ttl: '10m' });
    assert.match(t.token, /^abx_sbt_[A-Za-z0-9_-]{43}$/);
    assert.match(t.id, /^sbt_[0-9a-f]{16}$/);
    assert.equal(t.sandboxId, a);
    assert.deepEqual(t.scopes, ['read', 'exec']);
    assert.equal(t.revokedAt, null);
    assert.equal(t.apiUrl, null, 'a sandbox without egress has no in-sandbox address');
    const left = Date.parse(t.expiresAt) - Date.now();
    assert.ok(left > 9 * 60_000 && left <= 10 * 60_000, `expires in ${left} ms`);
    const listed = await alice.listTokens(a);
    const row = listed.find((x) => x.id === t.id);
    assert.ok(row);
    assert.equal((row as Record<string, unknown>).token, undefined);
    assert.ok(!JSON.stringify(listed).includes(t.token), 'the list shows the secret');
    // The default ttl is 15m.
    const d = await alice.createToken(a, { scopes: ['read'] });
    const dl = Date.parse(d.expiresAt) - Date.parse(d.createdAt);
    assert.equal(dl, 15 * 60_000);
    // Only the sha256 is in the store.
    assert.ok(!JSON.stringify(daemon!.store.sandboxTokens.list(a)).includes(t.token));
  });

  test('bad mints: ttl over 1h (400 with a hint), manage, no scope, an unknown scope', async () => {
    const long = await refused(alice.createToken(a, { scopes: ['read'], ttl: '2h' }), 'bad_request', 'ttl 2h');
    assert.match(long.hint ?? '', /at most 1h/);
    await refused(alice.createToken(a, { scopes: ['read'], ttl: 3601 }), 'bad_request', 'ttl 3601 s');
    const manage = await refused(alice.createToken(a, { scopes: ['manage'] as unknown as ['read'] }), 'bad_request', 'manage');
    assert.match(manage.message, /manage/);
    await refused(alice.createToken(a, { scopes: [] }), 'bad_request', 'no scope');
    await refused(alice.createToken(a, { scopes: ['root'] as unknown as ['read'] }), 'bad_request', 'unknown scope');
    const r = await raw('POST', `/v1/sandboxes/${a}/tokens`, bearer(ALICE), JSON.stringify({ scopes: ['read'], ttl: '61m' }));
    assert.equal(r.status, 400);
  });

  test('who may mint: manage on that sandbox; not a token without manage, not beyond the minter\'s scopes, not another tenant', async () => {
    await refused(new AgentboxClient({ url, token: ALICE_READER }).createToken(a, { scopes: ['read'] }), 'forbidden', 'a read+exec token mints');
    const mgr = new AgentboxClient({ url, token: ALICE_MANAGER });
    await refused(mgr.createToken(a, { scopes: ['exec'] }), 'forbidden', 'a read+manage token mints exec');
    assert.deepEqual((await mgr.createToken(a, { scopes: ['read'] })).scopes, ['read']);
    await refused(new AgentboxClient({ url, token: BOB }).createToken(a, { scopes: ['read'] }), 'not_found', 'bob mints on alice\'s sandbox');
  });

  test('from outside: allowed scopes work, others are 403, other sandboxes 404, the list holds only its sandbox', async () => {
    const t = await alice.createToken(a, { scopes: ['read', 'exec'] });
    const sbt = new AgentboxClient({ url, token: t.token });
    assert.equal((await sbt.get(a)).id, a);
    const r = await sbt.exec(a, { cmd: ['echo', 'hi'] });
    assert.equal(r.stdout.toString(), 'hi\n');
    assert.ok((await sbt.execs(a)).length >= 1);
    await refused(sbt.readFile(a, '/etc/hostname'), 'forbidden', 'files without the files scope');
    await refused(sbt.writeFile(a, '/tmp/x', 'x'), 'forbidden', 'write without the files scope');
    // Another sandbox of the same tenant does not exist for it, whatever the operation.
    await refused(sbt.get(b), 'not_found', 'get b');
    await refused(sbt.exec(b, { cmd: ['true'] }), 'not_found', 'exec b');
    await refused(sbt.execs(b), 'not_found', 'exec history of b');
    await refused(sbt.egressLog(b), 'not_found', 'egress log of b');
    await refused(sbt.processes(b), 'not_found', 'processes of b');
    assert.equal((await raw('GET', `/v1/sandboxes/${b}/terminals`, bearer(t.token))).status, 404);
    assert.equal((await raw('GET', `/v1/sandboxes/${b}/usage`, bearer(t.token))).status, 404);
    assert.equal((await raw('GET', `/v1/sandboxes/${b}/desktop`, bearer(t.token))).status, 404);
    assert.deepEqual((await sbt.list()).map((s) => s.id), [a]);
    assert.deepEqual((await sbt.list({ all: true })).map((s) => s.id), [a]);
    assert.deepEqual((await sbt.list({ labels: { which: 'b' } })).map((s) => s.id), []);
    // Its own sandbox's tokens (no secrets) it may read.
    assert.ok((await sbt.listTokens(a)).some((x) => x.id === t.id));
  });

  test('a sandbox token cannot create, mint, manage, or reach anything of the tenant\'s or the operator\'s', async () => {
    const t = await alice.createToken(a, { scopes: ['read', 'exec', 'files'] });
    const sbt = new AgentboxClient({ url, token: t.token });
    await refused(sbt.create({}), 'forbidden', 'create');
    await refused(sbt.createToken(a, { scopes: ['read'] }), 'forbidden', 'mint');
    await refused(sbt.revokeToken(a, t.id), 'forbidden', 'revoke');
    await refused(sbt.delete(a), 'forbidden', 'delete its own sandbox');
    await refused(sbt.stop(a), 'forbidden', 'stop');
    await refused(sbt.delete(b), 'forbidden', 'delete another');
    await refused(sbt.fork(a, {}), 'forbidden', 'fork');
    await refused(sbt.snapshot(a, {}), 'forbidden', 'snapshot');
    await refused(sbt.listSnapshots(), 'forbidden', 'snapshot list');
    await refused(sbt.listVolumes(), 'forbidden', 'volume list');
    await refused(sbt.grantPortAccess(a, 8000, {}), 'forbidden', 'port access');
    await refused(sbt.allowEgress(a, 'example.com'), 'forbidden', 'egress approval');
    const forbidden: [string, string, string?][] = [
      ['GET', '/v1/usage'],
      ['GET', '/v1/webhooks/deliveries'],
      ['GET', '/v1/daemon'],
      ['GET', '/metrics'],
      ['POST', '/v1/images/pull', JSON.stringify({ ref: 'busybox:latest' })],
      ['POST', `/v1/sandboxes/${a}/pause`, JSON.stringify({})],
      ['POST', `/v1/sandboxes/${a}/resume`],
    ];
    for (const [method, path, body] of forbidden) {
      const r = await raw(method, path, bearer(t.token), body);
      assert.equal(r.status, 403, `${method} ${path}: ${r.body}`);
    }
    // /healthz answers it only {ok}, as anyone without the operator's token.
    const health = JSON.parse((await raw('GET', '/healthz', bearer(t.token))).body) as Record<string, unknown>;
    assert.equal(health.checks, undefined);
    // MCP over HTTP opens sessions that hold tenant-wide things: refused.
    const init = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-03-26', capabilities: {}, clientInfo: { name: 't', version: '1' } } });
    const mcp = await raw('POST', '/mcp', { ...bearer(t.token), accept: 'application/json, text/event-stream' }, init);
    assert.equal(mcp.status, 403, mcp.body);
    // E2B's control plane hands out envd tokens that outlive it: refused, as X-API-KEY and as a bearer.
    for (const h of [{ 'x-api-key': t.token }, bearer(t.token)]) {
      assert.equal((await raw('GET', '/e2b/sandboxes', h)).status, 403);
      assert.equal((await raw('GET', `/e2b/sandboxes/${a}`, h)).status, 403);
      assert.equal((await raw('POST', '/e2b/sandboxes', h, JSON.stringify({ templateID: 'busybox' }))).status, 403);
    }
  });

  test('the terminals WebSocket, the port stream and the port proxy: another sandbox is 404', async () => {
    const t = await alice.createToken(a, { scopes: ['read', 'exec'] });
    const term = await alice.openTerminal(b, { cmd: ['sh'], keepAlive: true });
    const ws = { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' };
    const attach = await raw('GET', `/v1/sandboxes/${b}/terminals/${term.terminalId}/attach`, { ...ws, ...bearer(t.token) });
    assert.equal(attach.status, 404, attach.body);
    // The token as a page's bearer subprotocol: the same.
    const proto = await raw('GET', `/v1/sandboxes/${b}/terminals/${term.terminalId}/attach`, { ...ws, 'sec-websocket-protocol': `agentbox.v1, agentbox.bearer.${Buffer.from(t.token).toString('base64url')}` });
    assert.equal(proto.status, 404, proto.body);
    const close = await raw('DELETE', `/v1/sandboxes/${b}/terminals/${term.terminalId}`, bearer(t.token));
    assert.equal(close.status, 404, close.body);
    await alice.closeTerminal(b, term.terminalId);
    const stream = await raw('GET', `/v1/sandboxes/${b}/ports/8000/connect`, { connection: 'Upgrade', upgrade: 'tcp', ...bearer(t.token) });
    assert.equal(stream.status, 404, stream.body);
    // The port proxy (PORT-ID.localhost): its bearer is an API token, and another sandbox's port is 404.
    const proxied = await raw('GET', '/', { host: `8000-${b}.localhost:${port}`, ...bearer(t.token) });
    assert.equal(proxied.status, 404, proxied.body);
  });

  test('audit entries name the minter and the token', async () => {
    const t = await alice.createToken(a, { scopes: ['exec'] });
    const sbt = new AgentboxClient({ url, token: t.token });
    await alice.exec(a, { cmd: ['sh', '-c', 'sleep 30 >/dev/null 2>&1 &'] });
    const sleeper = (await alice.processes(a)).find((p) => p.argv[0] === 'sleep');
    assert.ok(sleeper, 'no sleep process');
    await sbt.killProcess(a, sleeper.pid, { signal: 'KILL' });
    const audit = daemon!.store.listAudit({ sandboxId: a, limit: 200 });
    assert.ok(audit.some((e) => e.action === 'token_create' && e.actor === `token:alice` && (e.detail as { token?: string }).token === t.id), 'no token_create by alice');
    assert.ok(audit.some((e) => e.action === 'process_kill' && e.actor === `sandbox-token:${t.id}`), 'the kill does not name the token');
  });

  test('expiry: a token past its ttl is 401 like any bad token', async () => {
    const t = await alice.createToken(a, { scopes: ['read'], ttl: '2s' });
    const sbt = new AgentboxClient({ url, token: t.token });
    assert.equal((await sbt.get(a)).id, a);
    await sleep(2300);
    await refused(sbt.get(a), 'unauthorized', 'an expired token');
    // Unknown tokens of the same shape are the same 401.
    await refused(new AgentboxClient({ url, token: `abx_sbt_${'A'.repeat(43)}` }).get(a), 'unauthorized', 'an unknown token');
  });

  test('revoke: the next request is 401; the list says when', async () => {
    const t = await alice.createToken(a, { scopes: ['read'] });
    const sbt = new AgentboxClient({ url, token: t.token });
    assert.equal((await sbt.get(a)).id, a);
    const revoked = await alice.revokeToken(a, t.id);
    assert.notEqual(revoked.revokedAt, null);
    await refused(sbt.get(a), 'unauthorized', 'a revoked token');
    assert.notEqual((await alice.listTokens(a)).find((x) => x.id === t.id)?.revokedAt, null);
    await refused(alice.revokeToken(a, 'sbt_0000000000000000'), 'not_found', 'an unknown token id');
    await refused(alice.revokeToken(b, t.id), 'not_found', 'a token id of another sandbox');
    await refused(new AgentboxClient({ url, token: BOB }).revokeToken(a, t.id), 'not_found', 'bob revokes');
  });

  test('its sandbox ended (stopped, deleted): 401, and the rows are gone', async () => {
    const c = (await alice.create({})).id;
    const t = await alice.createToken(c, { scopes: ['read'] });
    const sbt = new AgentboxClient({ url, token: t.token });
    assert.equal((await sbt.get(c)).id, c);
    await alice.stop(c);
    await refused(sbt.get(c), 'unauthorized', 'token of a stopped sandbox');
    assert.deepEqual(daemon!.store.sandboxTokens.list(c), []);
    await refused(alice.createToken(c, { scopes: ['read'] }), 'conflict', 'mint on a stopped sandbox');
    const d = (await alice.create({})).id;
    const u = await alice.createToken(d, { scopes: ['read'] });
    await alice.delete(d);
    await refused(new AgentboxClient({ url, token: u.token }).get(d), 'unauthorized', 'token of a deleted sandbox');
    // A row that survived its sandbox's end (another daemon version, a crash between): still never authenticates.
    const e = (await alice.create({})).id;
    const v = await alice.createToken(e, { scopes: ['read'] });
    const rows = daemon!.store.sandboxTokens.list(e);
    await alice.delete(e);
    for (const r of rows) daemon!.store.sandboxTokens.insert(r);
    await refused(new AgentboxClient({ url, token: v.token }).get(e), 'unauthorized', 'a surviving row of a deleted sandbox');
    daemon!.store.sandboxTokens.dropSandbox(e);
  });

  test('the CLI: token create --scope --ttl, ls, revoke', async () => {
    const env = { ...process.env, AGENTBOX_URL: url, AGENTBOX_TOKEN: ALICE };
    const cli = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
      new Promise((resolve) => {
        execFile(process.execPath, [cliEntry(), ...args], { env }, (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
      });
    const made = await cli('token', 'create', a, '--scope', 'exec', '--scope', 'read', '--ttl', '10m');
    assert.equal(made.code, 0, made.stderr);
    const token = made.stdout.trim();
    assert.match(token, /^abx_sbt_/);
    const id = /^(sbt_[0-9a-f]{16}):/.exec(made.stderr)?.[1];
    assert.ok(id, made.stderr);
    assert.equal((await new AgentboxClient({ url, token }).exec(a, { cmd: ['true'] })).exitCode, 0);
    const ls = await cli('token', 'ls', a, '--json');
    assert.equal(ls.code, 0, ls.stderr);
    assert.ok((JSON.parse(ls.stdout) as { id: string }[]).some((x) => x.id === id));
    assert.ok(!ls.stdout.includes(token));
    const rev = await cli('token', 'revoke', a, id);
    assert.equal(rev.code, 0, rev.stderr);
    await refused(new AgentboxClient({ url, token }).get(a), 'unauthorized', 'revoked by the CLI');
    const long = await cli('token', 'create', a, '--scope', 'exec', '--ttl', '2h');
    assert.equal(long.code, 125);
    assert.match(long.stderr, /1h/);
  });
});

const dockerProbe = await new DockerRuntime({ disks: scratchDiskStore(), images: { resolve: () => { throw new Error('unused'); } }, homeTag: `test-tokens-${process.pid}`, version: VERSION }).probe();
const dockerSkip = dockerProbe.ok ? false : `docker: ${dockerProbe.reason}`;
const runsc = dockerProbe.ok && (dockerProbe.details?.runtimes ?? '').split(' ').includes('runsc');

/** The same in-sandbox path on each runtime this host has: every one reaches its proxy the same way. */
const INSIDE_VARIANTS: { name: string; runtime: string; isolation: string; skip: string | false; env?: Record<string, string> }[] = [
  { name: 'local', runtime: 'local', isolation: 'namespaces', skip: false },
  { name: 'docker (runc)', runtime: 'docker', isolation: 'container', skip: dockerSkip },
  { name: 'docker (gVisor)', runtime: 'docker', isolation: 'gvisor', skip: dockerSkip || (runsc ? false : 'runsc is not registered with dockerd') },
  { name: 'microvm', runtime: 'microvm', isolation: 'vm', skip: spawnSync(QEMU_BINARY, ['--version']).error ? `${QEMU_BINARY} is not installed` : false, env: { AGENTBOX_MICROVM_ACCEL: 'tcg' } },
];

const insidePolicy = (runtime: string, isolation: string): string => `version: 1
defaults: { image: busybox, ttl: 10m, runtime: ${runtime}, isolation: ${isolation} }
profiles:
  web: { runtime: ${runtime}, isolation: ${isolation}, egress: { mode: open } }
  closed: { runtime: ${runtime}, isolation: ${isolation} }
tenants:
  - name: alice
    tokens: [${ALICE}]
`;

for (const v of INSIDE_VARIANTS) {
  describe(`sandbox tokens from inside a sandbox on ${v.name} (http://agentbox.internal through its egress proxy)`, { skip: v.skip }, () => {
    let home: string;
    let daemon: Daemon | undefined;
    let url: string;
    let alice: AgentboxClient;
    let mine: string;
    let other: string;
    let token: string;

    before(async () => {
      await testImages();
      home = mkdtempSync(join(tmpdir(), 'ab-sandbox-tokens-in-'));
      writeFileSync(join(home, 'policy.yaml'), insidePolicy(v.runtime, v.isolation));
      daemon = await startDaemon({
        env: { AGENTBOX_HOME: join(home, 'h'), AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_TOKEN: OPERATOR, ...v.env },
        logger: silentLogger(),
        policyPath: join(home, 'policy.yaml'),
        tcp: { host: '127.0.0.1', port: 0 },
      });
      url = `http://127.0.0.1:${daemon.tcpAddress!.port}`;
      alice = new AgentboxClient({ url, token: ALICE });
      mine = (await alice.create({ profile: 'web' })).id;
      other = (await alice.create({ profile: 'web' })).id;
      const t = await alice.createToken(mine, { scopes: ['read', 'exec'], inject: true });
      assert.equal(t.injectedPath, SANDBOX_TOKEN_PATH);
      assert.equal(t.apiUrl, 'http://agentbox.internal');
      token = t.token;
    });

    after(() =>
      closeDaemonLeavingNothing(daemon, home, async () => {
        for (const sb of await alice.list()) await alice.delete(sb.id);
      }),
    );

    /**
     * One HTTP request from inside `id` to its proxy, as any client with http_proxy sends it (busybox nc:
     * busybox wget turns a --post-data request into a GET when it goes through a proxy).
     */
    const inside = async (id: string, method: string, path: string, opts: { auth?: string; body?: string; origin?: string } = {}): Promise<{ status: number; body: string }> => {
      const body = opts.body ?? '';
      const host = `agentbox.internal${path.startsWith(':') ? path.slice(0, path.indexOf('/')) : ''}`;
      const target = method === 'CONNECT' ? 'agentbox.internal:443' : `http://agentbox.internal${path}`;
      const head = [`${method} ${target} HTTP/1.1`, `Host: ${host}`, 'Connection: close', ...(opts.auth !== undefined ? [`Authorization: Bearer ${opts.auth}`] : []), ...(opts.origin !== undefined ? [`Origin: ${opts.origin}`] : []), ...(opts.body !== undefined ? ['Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`] : [])];
      // busybox's nc quits when its stdin ends: the writer holds it open until the answer has come.
      const script = 'R=/tmp/resp.$$; { printf "%s" "$REQ"; i=0; while [ ! -s $R ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done; sleep 0.2; } | nc 127.0.0.1 3128 > $R; cat $R; rm -f $R';
      const r = await alice.exec(id, { cmd: ['sh', '-c', script], env: { REQ: `${head.join('\r\n')}\r\n\r\n${body}` }, timeoutMs: 30_000 });
      const text = r.stdout.toString();
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      return { status, body: text.slice(text.indexOf('\r\n\r\n') + 4) };
    };

    test('the token file is there, the sandbox user\'s, mode 0600; execs have AGENTBOX_URL', async () => {
      const r = await alice.exec(mine, { cmd: ['sh', '-c', `stat -c '%a %u' ${SANDBOX_TOKEN_PATH}; cat ${SANDBOX_TOKEN_PATH}; echo "url=$AGENTBOX_URL"`] });
      const [mode, content, env] = r.stdout.toString().trim().split('\n');
      assert.equal(mode, '600 1000');
      assert.equal(content, token);
      assert.equal(env, 'url=http://agentbox.internal');
    });

    test('its own sandbox: wget with the injected token gets it; list and exec work', async () => {
      const got = await alice.exec(mine, { cmd: ['sh', '-c', `wget -q -O - --header "Authorization: Bearer $(cat ${SANDBOX_TOKEN_PATH})" "$AGENTBOX_URL/v1/sandboxes/${mine}"`], timeoutMs: 20_000 });
      assert.equal(got.exitCode, 0, got.stdout.toString() + got.stderr.toString());
      assert.equal((JSON.parse(got.stdout.toString()) as { id: string }).id, mine);
      const list = await inside(mine, 'GET', '/v1/sandboxes', { auth: token });
      assert.equal(list.status, 200, JSON.stringify(list));
      assert.deepEqual((JSON.parse(list.body) as { sandboxes: { id: string }[] }).sandboxes.map((s) => s.id), [mine]);
      const ran = await inside(mine, 'POST', `/v1/sandboxes/${mine}/exec`, { auth: token, body: '{"cmd":["echo","from","inside"]}' });
      assert.equal(ran.status, 200, ran.body);
      assert.equal((JSON.parse(ran.body) as { stdout: string }).stdout, 'from inside\n');
      // Not egress: nothing of it is in the sandbox's egress log.
      assert.ok(!(await alice.egressLog(mine)).log.some((e) => e.host === 'agentbox.internal'));
    });

    test('refused: another sandbox (404), no token or a tenant\'s token (401), another sandbox\'s token (403), scopes it lacks (403), operator routes (404)', async () => {
      const cases: [string, string, { auth?: string; body?: string }, number][] = [
        ['GET', `/v1/sandboxes/${other}`, { auth: token }, 404],
        ['POST', `/v1/sandboxes/${other}/exec`, { auth: token, body: '{"cmd":["true"]}' }, 404],
        ['GET', `/v1/sandboxes/${mine}`, {}, 401],
        ['POST', `/v1/sandboxes/${mine}/exec`, { body: '{"cmd":["true"]}' }, 401],
        ['GET', `/v1/sandboxes/${mine}`, { auth: ALICE }, 401],
        ['GET', `/v1/sandboxes/${mine}`, { auth: OPERATOR }, 401],
        ['GET', `/v1/sandboxes/${mine}`, { auth: 'abx_sbt_nonsense' }, 401],
        ['GET', `/v1/sandboxes/${mine}/files?path=/etc/hostname`, { auth: token }, 403],
        ['POST', '/v1/sandboxes', { auth: token, body: '{}' }, 403],
        ['POST', `/v1/sandboxes/${mine}/tokens`, { auth: token, body: '{"scopes":["read"]}' }, 403],
        ['DELETE', `/v1/sandboxes/${mine}`, { auth: token }, 403],
        ['POST', `/v1/sandboxes/${mine}/egress/allow`, { auth: token, body: '{"host":"example.com"}' }, 403],
        ['GET', '/v1/daemon', { auth: token }, 403],
        ['GET', '/metrics', { auth: token }, 404],
        ['GET', '/e2b/sandboxes', { auth: token }, 404],
        ['POST', '/mcp', { auth: token, body: '{}' }, 404],
        ['GET', '/healthz', { auth: token }, 404],
      ];
      for (const [method, path, opts, status] of cases) {
        const r = await inside(mine, method, path, opts);
        assert.equal(r.status, status, `${method} ${path} with ${opts.auth ?? 'no token'}: ${r.body}`);
      }
      const theirs = await alice.createToken(other, { scopes: ['read'] });
      const r = await inside(mine, 'GET', `/v1/sandboxes/${other}`, { auth: theirs.token });
      assert.equal(r.status, 403, r.body);
      // Its own token from inside the other sandbox: 403 as well (the proxy knows whose sandbox it serves).
      const back = await inside(other, 'GET', `/v1/sandboxes/${mine}`, { auth: token });
      assert.equal(back.status, 403, back.body);
      // A browser page in the sandbox (it sends an Origin) is not a client, even with the token.
      assert.equal((await inside(mine, 'GET', `/v1/sandboxes/${mine}`, { auth: token, origin: 'http://evil.example' })).status, 403);
      // Only port 80, only plain HTTP: another port is 404 from the proxy, CONNECT a 400.
      assert.equal((await inside(mine, 'GET', ':8080/v1/sandboxes', { auth: token })).status, 404);
      assert.equal((await inside(mine, 'CONNECT', '', { auth: token })).status, 400);
    });

    test('MCP: sandbox_create_token mints and injects a token the code inside then uses', async () => {
      const transport = new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${ALICE}` } } });
      const client = new Client({ name: 'tokens-test', version: '0.0.1' });
      await client.connect(transport);
      try {
        const r = (await client.callTool({ name: 'sandbox_create_token', arguments: { id: other, scopes: ['read'], ttl: '5m' } })) as { content: { text: string }[]; structuredContent?: { token?: string; injectedPath?: string }; isError?: boolean };
        assert.ok(!r.isError, JSON.stringify(r.content));
        assert.match(JSON.stringify(r.content), /agentbox\.internal/);
        const got = await alice.exec(other, { cmd: ['sh', '-c', `wget -q -O - --header "Authorization: Bearer $(cat ${SANDBOX_TOKEN_PATH})" "$AGENTBOX_URL/v1/sandboxes/${other}"`], timeoutMs: 20_000 });
        assert.equal(got.exitCode, 0, got.stdout.toString());
        assert.equal((JSON.parse(got.stdout.toString()) as { id: string }).id, other);
        const bad = (await client.callTool({ name: 'sandbox_create_token', arguments: { id: other, scopes: ['read'], ttl: '2h' } })) as { isError?: boolean; content: { text: string }[] };
        assert.equal(bad.isError, true);
        assert.match(JSON.stringify(bad.content), /1h/);
      } finally {
        await transport.terminateSession().catch(() => undefined);
        await client.close();
      }
    });

    test('a sandbox without egress: no in-sandbox address (the token is for use from outside); nothing is punched through', async () => {
      const closed = (await alice.create({ profile: 'closed' })).id;
      const t = await alice.createToken(closed, { scopes: ['read'], inject: true });
      assert.equal(t.apiUrl, null);
      const r = await alice.exec(closed, { cmd: ['sh', '-c', `echo "url=$AGENTBOX_URL"; wget -q -T 3 -O - --header "Authorization: Bearer $(cat ${SANDBOX_TOKEN_PATH})" http://agentbox.internal/v1/sandboxes/${closed} 2>&1; echo "exit=$?"`], timeoutMs: 20_000 });
      const out = r.stdout.toString();
      assert.match(out, /^url=\n/);
      assert.match(out, /exit=[1-9]/);
      assert.equal((await new AgentboxClient({ url, token: t.token }).get(closed)).id, closed);
      await alice.delete(closed);
    });

    test('once its sandbox ends the in-sandbox path is gone with the token', async () => {
      const t = await alice.createToken(other, { scopes: ['read'] });
      await alice.delete(other);
      await refused(new AgentboxClient({ url, token: t.token }).get(other), 'unauthorized', 'after delete');
    });
  });
}
