/**
 * `http://agentbox.internal` through the cluster's egress proxy (egress/cluster-proxy.ts →
 * egress/api-relay.ts → a real daemon's API → api/gateway-relay.ts → the sandbox gateway): a
 * sandbox's own token reaches its /v1 routes, exec output streams and uploads go through whole;
 * everything else is refused, at the proxy or before any route at the daemon: another sandbox's
 * token, a tenant's, the operator's or none; a forged proof, one made with another secret or for
 * another sandbox; CONNECT; a daemon without AGENTBOX_EGRESS_SECRET; a proxy without AGENTBOX_API_URL.
 * A real daemon on the local runtime; the proxy reads its store, as replicas and the proxy share one.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { connect, createServer as createTcpServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { startEgressProxy } from '../../src/daemon/egress-proxy-main.js';
import { ClusterEgressProxy, egressCredential } from '../../src/egress/cluster-proxy.js';
import { GATEWAY_PROOF_HEADER, GATEWAY_SANDBOX_HEADER, gatewayProof } from '../../src/egress/gateway-proof.js';
import { systemResolver } from '../../src/egress/resolver.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient } from '../../src/sdk/client.js';
import { closeDaemonLeavingNothing } from '../helpers/daemon-teardown.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

const SECRET = 'cluster-gateway-test-secret-0123456789abcdef';
const ALICE = 'alice-token-0123456789';
const OPERATOR = 'operator-token-0123456789';
const POLICY = `version: 1
defaults: { image: busybox, ttl: 10m }
profiles:
  web: { egress: { mode: open } }
tenants:
  - name: alice
    tokens: [${ALICE}]
`;
const EGRESS = { globalDeny: [], allowRanges: [], byteQuotaMb: 4 };

interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
  /** ms from sending to the first time the body so far matched `mark` (-1: never), and to its end. */
  markMs: number;
  endMs: number;
}

function send(port: number, method: string, path: string, headers: OutgoingHttpHeaders, body?: Buffer | string, mark?: RegExp): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let markMs = -1;
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        if (markMs < 0 && mark?.test(Buffer.concat(chunks).toString())) markMs = performance.now() - started;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), markMs, endMs: performance.now() - started }));
      res.on('error', reject);
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.from('UPGRADED'), markMs: -1, endMs: 0 });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const errorCode = (r: Reply): string | undefined => (JSON.parse(r.body.toString() || '{}') as { error?: { code?: string } }).error?.code;
const basic = (id: string, credential = egressCredential(SECRET, id)): string => `Basic ${Buffer.from(`${id}:${credential}`).toString('base64')}`;
const bearer = (token: string | undefined): OutgoingHttpHeaders => (token === undefined ? {} : { authorization: `Bearer ${token}` });

describe('agentbox.internal through the cluster egress proxy', () => {
  let home: string;
  let daemon: Daemon | undefined;
  let bare: Daemon | undefined;
  let alice: AgentboxClient;
  let apiPort: number;
  const proxies: ClusterEgressProxy[] = [];
  /** The proxy relaying to the daemon; to the daemon without the secret; one without AGENTBOX_API_URL; one whose API is down. */
  let viaPort: number;
  let toBarePort: number;
  let unsetPort: number;
  let downPort: number;
  let mine: string;
  let other: string;
  let token: string;
  let otherToken: string;

  const proxyTo = async (apiUrl: string | undefined): Promise<number> => {
    const p = new ClusterEgressProxy({ store: daemon!.store, secret: SECRET, policy: EGRESS, resolve: systemResolver(), logger: silentLogger(), apiUrl: apiUrl === undefined ? undefined : new URL(apiUrl) });
    proxies.push(p);
    return (await p.listen(0, '127.0.0.1')).port;
  };
  /** A request as code in sandbox `from` sends it with http_proxy set to its cluster proxy URL. */
  const inside = (from: string, method: string, path: string, opts: { token?: string; body?: Buffer | string; headers?: OutgoingHttpHeaders; port?: number; mark?: RegExp } = {}): Promise<Reply> =>
    send(opts.port ?? viaPort, method, `http://agentbox.internal${path}`, { host: 'agentbox.internal', 'proxy-authorization': basic(from), ...bearer(opts.token), ...opts.headers }, opts.body, opts.mark);
  /** A request straight to a daemon's API with gateway headers, as anything but the proxy could send one. */
  const relayed = (port: number, id: string, proof: string, method: string, path: string, token?: string, extra: OutgoingHttpHeaders = {}): Promise<Reply> =>
    send(port, method, path, { [GATEWAY_SANDBOX_HEADER]: id, [GATEWAY_PROOF_HEADER]: proof, ...bearer(token), ...extra });

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'ab-cluster-gateway-'));
    writeFileSync(join(home, 'policy.yaml'), POLICY);
    const common = { logger: silentLogger(), policyPath: join(home, 'policy.yaml'), tcp: { host: '127.0.0.1', port: 0 } };
    daemon = await startDaemon({ ...common, env: { AGENTBOX_HOME: join(home, 'h'), AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_TOKEN: OPERATOR, AGENTBOX_EGRESS_SECRET: SECRET } });
    bare = await startDaemon({ ...common, env: { AGENTBOX_HOME: join(home, 'bare'), AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_TOKEN: OPERATOR } });
    apiPort = daemon.tcpAddress!.port;
    alice = new AgentboxClient({ url: `http://127.0.0.1:${apiPort}`, token: ALICE });
    mine = (await alice.create({ profile: 'web' })).id;
    other = (await alice.create({ profile: 'web' })).id;
    token = (await alice.createToken(mine, { scopes: ['read', 'exec', 'files'] })).token;
    otherToken = (await alice.createToken(other, { scopes: ['read', 'exec'] })).token;
    viaPort = await proxyTo(`http://127.0.0.1:${apiPort}`);
    toBarePort = await proxyTo(`http://127.0.0.1:${bare.tcpAddress!.port}`);
    unsetPort = await proxyTo(undefined);
    // A port that was free a moment ago: nothing answers there.
    const probe = createTcpServer();
    const downApi = await new Promise<number>((resolve) => probe.listen(0, '127.0.0.1', () => resolve((probe.address() as AddressInfo).port)));
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    downPort = await proxyTo(`http://127.0.0.1:${downApi}`);
  });

  after(async () => {
    for (const p of proxies) await p.close();
    await bare?.close();
    await closeDaemonLeavingNothing(daemon, home, async () => {
      for (const sb of await alice.list()) await alice.delete(sb.id);
    });
  });

  test('its own token reaches its /v1 routes: get, list (itself only), exec; nothing of it is egress', async () => {
    const got = await inside(mine, 'GET', `/v1/sandboxes/${mine}`, { token });
    assert.equal(got.status, 200, got.body.toString());
    assert.equal((JSON.parse(got.body.toString()) as { id: string }).id, mine);
    const list = await inside(mine, 'GET', '/v1/sandboxes?limit=10', { token });
    assert.equal(list.status, 200, list.body.toString());
    assert.deepEqual((JSON.parse(list.body.toString()) as { sandboxes: { id: string }[] }).sandboxes.map((s) => s.id), [mine]);
    const ran = await inside(mine, 'POST', `/v1/sandboxes/${mine}/exec`, { token, body: '{"cmd":["echo","via","the","cluster"]}', headers: { 'content-type': 'application/json' } });
    assert.equal(ran.status, 200, ran.body.toString());
    assert.equal((JSON.parse(ran.body.toString()) as { stdout: string }).stdout, 'via the cluster\n');
    assert.ok(!(await alice.egressLog(mine)).log.some((e) => e.host === 'agentbox.internal'), 'logged as egress');
  });

  test('bodies stream both ways: exec output arrives while the command runs; a 3 MiB chunked upload comes back whole', async () => {
    const sse = await inside(mine, 'POST', `/v1/sandboxes/${mine}/exec`, { token, body: '{"cmd":["sh","-c","echo one; sleep 2; echo two"]}', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, mark: /event: stdout/ });
    assert.equal(sse.status, 200, sse.body.toString());
    assert.match(String(sse.headers['content-type']), /text\/event-stream/);
    assert.match(sse.body.toString(), /event: exit/);
    assert.ok(sse.markMs >= 0 && sse.endMs - sse.markMs > 1500, `the first stdout event came with the end (at ${Math.round(sse.markMs)} ms, end ${Math.round(sse.endMs)} ms)`);
    const data = randomBytes(3 * 1024 * 1024);
    const put = await new Promise<Reply>((resolve, reject) => {
      const started = performance.now();
      const req = request({ host: '127.0.0.1', port: viaPort, method: 'PUT', path: `http://agentbox.internal/v1/sandboxes/${mine}/files?path=/tmp/big.bin`, agent: false, headers: { host: 'agentbox.internal', 'proxy-authorization': basic(mine), ...bearer(token), 'content-type': 'application/octet-stream' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), markMs: -1, endMs: performance.now() - started }));
      });
      req.on('error', reject);
      // In pieces, without a Content-Length: chunked all the way to the daemon.
      for (let i = 0; i < data.length; i += 256 * 1024) req.write(data.subarray(i, i + 256 * 1024));
      req.end();
    });
    assert.equal(put.status, 200, put.body.toString());
    assert.equal((JSON.parse(put.body.toString()) as { bytes: number }).bytes, data.length);
    const back = await inside(mine, 'GET', `/v1/sandboxes/${mine}/files?path=/tmp/big.bin`, { token });
    assert.equal(back.status, 200);
    assert.equal(createHash('sha256').update(back.body).digest('hex'), createHash('sha256').update(data).digest('hex'));
  });

  test('refused through the proxy: another sandbox\'s token (403), a tenant\'s, the operator\'s or none (401), other routes (404), CONNECT (400)', async () => {
    const cases: [string, string, string, string | undefined, number][] = [
      ['another sandbox\'s token', 'GET', `/v1/sandboxes/${other}`, otherToken, 403],
      ['its token for another sandbox', 'GET', `/v1/sandboxes/${other}`, token, 404],
      ['a tenant\'s token', 'GET', `/v1/sandboxes/${mine}`, ALICE, 401],
      ['the operator\'s token', 'GET', `/v1/sandboxes/${mine}`, OPERATOR, 401],
      ['the operator\'s token on an operator route', 'GET', '/v1/daemon', OPERATOR, 401],
      ['no token', 'GET', `/v1/sandboxes/${mine}`, undefined, 401],
      ['/metrics', 'GET', '/metrics', token, 404],
      ['/healthz', 'GET', '/healthz', token, 404],
      ['/mcp', 'POST', '/mcp', token, 404],
    ];
    for (const [what, method, path, t, status] of cases) {
      const r = await inside(mine, method, path, { token: t });
      assert.equal(r.status, status, `${what}: ${r.body.toString()}`);
      assert.ok(errorCode(r), `${what}: not the one error shape: ${r.body.toString()}`);
    }
    // Its own token from the other sandbox: the proxy knows whose credential it checked.
    assert.equal((await inside(other, 'GET', `/v1/sandboxes/${mine}`, { token })).status, 403);
    // Gateway headers a sandbox sends itself name nobody: the request is still the credential's sandbox's.
    const claimed = await inside(mine, 'GET', `/v1/sandboxes/${other}`, { token: otherToken, headers: { [GATEWAY_SANDBOX_HEADER]: other, [GATEWAY_PROOF_HEADER]: gatewayProof(SECRET, other), 'x-agentbox-gateway-extra': 'x' } });
    assert.equal(claimed.status, 403, claimed.body.toString());
    for (const target of ['agentbox.internal:443', 'agentbox.internal:80']) {
      const answer = await new Promise<string>((resolve, reject) => {
        const s = connect(viaPort, '127.0.0.1', () => s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: ${basic(mine)}\r\n\r\nGET /v1/sandboxes HTTP/1.1\r\nHost: agentbox.internal\r\nAuthorization: Bearer ${token}\r\n\r\n`));
        let got = '';
        s.on('data', (c: Buffer) => (got += c.toString()));
        s.on('close', () => resolve(got));
        s.on('error', reject);
      });
      assert.match(answer, /^HTTP\/1\.1 400 /, `CONNECT ${target}: ${answer}`);
      assert.ok(!answer.includes(mine), `CONNECT ${target} reached the API: ${answer}`);
    }
    assert.equal((await inside(mine, 'GET', ':8080/v1/sandboxes', { token, headers: { host: 'agentbox.internal:8080' } })).status, 404, 'another port');
  });

  test('refused at the daemon before any route: a forged proof, another secret\'s, another sandbox\'s, two of them; a tenant\'s or the operator\'s token with a good proof', async () => {
    // The same request with the real proof passes: the refusals below are about what changed.
    assert.equal((await relayed(apiPort, mine, gatewayProof(SECRET, mine), 'GET', `/v1/sandboxes/${mine}`, token)).status, 200);
    const cases: [string, string, string, string, string | undefined, number, string][] = [
      ['a forged proof', mine, 'x'.repeat(43), `/v1/sandboxes/${mine}`, token, 401, 'unauthorized'],
      ['no proof', mine, '', `/v1/sandboxes/${mine}`, token, 401, 'unauthorized'],
      ['another secret\'s proof', mine, gatewayProof(`${SECRET}-other`, mine), `/v1/sandboxes/${mine}`, token, 401, 'unauthorized'],
      ['the sandbox\'s egress credential as the proof', mine, egressCredential(SECRET, mine), `/v1/sandboxes/${mine}`, token, 401, 'unauthorized'],
      ['the proof of another sandbox', other, gatewayProof(SECRET, mine), `/v1/sandboxes/${other}`, otherToken, 401, 'unauthorized'],
      ['a tenant\'s token', mine, gatewayProof(SECRET, mine), `/v1/sandboxes/${mine}`, ALICE, 401, 'unauthorized'],
      ['the operator\'s token', mine, gatewayProof(SECRET, mine), '/v1/sandboxes', OPERATOR, 401, 'unauthorized'],
      ['the operator\'s token on the daemon route', mine, gatewayProof(SECRET, mine), '/v1/daemon', OPERATOR, 401, 'unauthorized'],
      ['another sandbox\'s token', mine, gatewayProof(SECRET, mine), `/v1/sandboxes/${other}`, otherToken, 403, 'forbidden'],
      ['a non-/v1 route', mine, gatewayProof(SECRET, mine), '/metrics', token, 404, 'not_found'],
    ];
    for (const [what, id, proof, path, t, status, code] of cases) {
      const r = await relayed(apiPort, id, proof, 'GET', path, t);
      assert.equal(r.status, status, `${what}: ${r.body.toString()}`);
      assert.equal(errorCode(r), code, what);
    }
    const twice = await new Promise<string>((resolve, reject) => {
      const s = connect(apiPort, '127.0.0.1', () => s.write(`GET /v1/sandboxes/${mine} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer ${token}\r\n${GATEWAY_SANDBOX_HEADER}: ${mine}\r\n${GATEWAY_SANDBOX_HEADER}: ${mine}\r\n${GATEWAY_PROOF_HEADER}: ${gatewayProof(SECRET, mine)}\r\n\r\n`));
      let got = '';
      s.on('data', (c: Buffer) => (got += c.toString()));
      s.on('close', () => resolve(got));
      s.on('error', reject);
    });
    assert.match(twice, /^HTTP\/1\.1 401 /, 'two sandbox headers');
    const upgrade = await relayed(apiPort, mine, gatewayProof(SECRET, mine), 'GET', `/v1/sandboxes/${mine}/terminal`, token, { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64') });
    assert.equal(upgrade.status, 403, `an upgrade: ${upgrade.body.toString()}`);
  });

  test('a daemon without AGENTBOX_EGRESS_SECRET refuses relayed requests (403), through the proxy or not', async () => {
    const direct = await relayed(bare!.tcpAddress!.port, mine, gatewayProof(SECRET, mine), 'GET', `/v1/sandboxes/${mine}`, token);
    assert.equal(direct.status, 403, direct.body.toString());
    assert.equal(errorCode(direct), 'forbidden');
    assert.match(direct.body.toString(), /AGENTBOX_EGRESS_SECRET/);
    // A proof under an empty secret is no way in either.
    assert.equal((await relayed(bare!.tcpAddress!.port, mine, gatewayProof('', mine), 'GET', '/v1/sandboxes', OPERATOR)).status, 403);
    const via = await inside(mine, 'GET', `/v1/sandboxes/${mine}`, { token, port: toBarePort });
    assert.equal(via.status, 403, via.body.toString());
  });

  test('agentbox egress-proxy as run from the CLI: AGENTBOX_API_URL from the environment, the daemon\'s store file; a malformed URL stops it starting', async () => {
    const env = { AGENTBOX_HOME: join(home, 'h'), AGENTBOX_EGRESS_SECRET: SECRET, AGENTBOX_API_URL: `http://127.0.0.1:${apiPort}` };
    const running = await startEgressProxy({ host: '127.0.0.1', port: 0, policyPath: join(home, 'policy.yaml'), logger: silentLogger(), env });
    try {
      const r = await inside(mine, 'GET', `/v1/sandboxes/${mine}`, { token, port: running.address.port });
      assert.equal(r.status, 200, r.body.toString());
      assert.equal((JSON.parse(r.body.toString()) as { id: string }).id, mine);
    } finally {
      await running.close();
    }
    await assert.rejects(startEgressProxy({ host: '127.0.0.1', port: 0, policyPath: join(home, 'policy.yaml'), logger: silentLogger(), env: { ...env, AGENTBOX_API_URL: `http://127.0.0.1:${apiPort}/v1` } }), (err: Error & { code?: string }) => err.code === 'bad_request' && /AGENTBOX_API_URL/.test(err.message));
  });

  test('a proxy without AGENTBOX_API_URL, or whose API does not answer: 503 in the one error shape, saying what to set', async () => {
    const unset = await inside(mine, 'GET', `/v1/sandboxes/${mine}`, { token, port: unsetPort });
    assert.equal(unset.status, 503, unset.body.toString());
    assert.equal(errorCode(unset), 'runtime_unavailable');
    assert.match(unset.body.toString(), /AGENTBOX_API_URL/);
    const down = await inside(mine, 'POST', `/v1/sandboxes/${mine}/exec`, { token, port: downPort, body: '{"cmd":["true"]}', headers: { 'content-type': 'application/json' } });
    assert.equal(down.status, 503, down.body.toString());
    assert.equal(errorCode(down), 'runtime_unavailable');
    assert.match(down.body.toString(), /AGENTBOX_API_URL/);
  });
});
