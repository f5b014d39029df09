/**
 * Finding 3: a web page cannot drive a loopback daemon. A tokenless daemon on 127.0.0.1 is what a
 * page would aim at: cross-origin simple requests (CSRF) and reads through a rebound name (DNS
 * rebinding) must be refused before anything happens; programs (no Origin, JSON) keep working.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { closeDaemonLeavingNothing } from '../helpers/daemon-teardown.js';

interface Answer {
  status: number;
  body: string;
}

function send(port: number, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, setHost: !('Host' in headers) }, async (res) => {
      resolve({ status: res.statusCode ?? 0, body: (await readAll(res)).toString('utf8') });
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('a web page cannot drive a loopback daemon', () => {
  let home: string;
  let daemon: Daemon | undefined;
  let port: number;
  let operator: AgentboxClient;
  let target: string;

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-sec-browser-'));
    writeFileSync(join(home, 'policy.yaml'), 'version: 1\n');
    daemon = await startDaemon({
      env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR },
      logger: silentLogger(),
      policyPath: join(home, 'policy.yaml'),
      socket: join(home, 'agentbox.sock'),
      tcp: { host: '127.0.0.1', port: 0 },
      allowedHosts: ['agentbox.internal'],
    });
    port = daemon.tcpAddress!.port;
    operator = new AgentboxClient({ url: `unix:${join(home, 'agentbox.sock')}` });
    target = (await operator.create({ labels: { role: 'target' } })).id;
  });

  after(() =>
    closeDaemonLeavingNothing(daemon, home, async () => {
      for (const sb of await operator.list()) await operator.delete(sb.id);
    }),
  );

  const create = JSON.stringify({ labels: { attack: 'browser' } });
  const execBody = JSON.stringify({ cmd: ['sh', '-c', 'echo pwned > /workspace/pwned'] });

  /** What a page can send, each with the headers a browser would add. */
  const attacks = (p: number): { name: string; method: string; path: (id: string) => string; headers: Record<string, string>; body?: string }[] => [
    { name: 'text/plain create, foreign Origin and Host (the review)', method: 'POST', path: () => '/v1/sandboxes', headers: { Host: `evil.example:${p}`, Origin: 'http://evil.example', 'Content-Type': 'text/plain' }, body: create },
    { name: 'text/plain create, foreign Origin, our Host', method: 'POST', path: () => '/v1/sandboxes', headers: { Origin: 'http://evil.example', 'Content-Type': 'text/plain' }, body: create },
    { name: 'text/plain create, no Origin (old browser), our Host', method: 'POST', path: () => '/v1/sandboxes', headers: { 'Content-Type': 'text/plain;charset=UTF-8' }, body: create },
    { name: 'form-urlencoded create', method: 'POST', path: () => '/v1/sandboxes', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: `${create}=` },
    { name: 'multipart create', method: 'POST', path: () => '/v1/sandboxes', headers: { 'Content-Type': 'multipart/form-data; boundary=x' }, body: `--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n${create}\r\n--x--\r\n` },
    { name: 'body without a content type', method: 'POST', path: () => '/v1/sandboxes', headers: {}, body: create },
    { name: 'JSON type dressed up (application/json-patch)', method: 'POST', path: () => '/v1/sandboxes', headers: { 'Content-Type': 'application/jsonx' }, body: create },
    { name: 'Sec-Fetch-Site cross-site, no Origin', method: 'POST', path: () => '/v1/sandboxes', headers: { 'Sec-Fetch-Site': 'cross-site', 'Content-Type': 'application/json' }, body: create },
    { name: 'Sec-Fetch-Site same-site', method: 'POST', path: () => '/v1/sandboxes', headers: { 'Sec-Fetch-Site': 'same-site', 'Content-Type': 'application/json' }, body: create },
    { name: 'Origin null (sandboxed iframe, file://)', method: 'POST', path: () => '/v1/sandboxes', headers: { Origin: 'null', 'Content-Type': 'application/json' }, body: create },
    { name: 'empty no-cors POST from a page', method: 'POST', path: () => '/v1/sandboxes', headers: { Origin: 'http://evil.example' } },
    { name: 'text/plain exec in an existing sandbox', method: 'POST', path: (id) => `/v1/sandboxes/${id}/exec`, headers: { Origin: 'http://evil.example', 'Content-Type': 'text/plain' }, body: execBody },
    { name: 'text/plain exec, no Origin', method: 'POST', path: (id) => `/v1/sandboxes/${id}/exec`, headers: { 'Content-Type': 'text/plain' }, body: execBody },
    { name: 'rebinding: exec with a foreign Host and JSON', method: 'POST', path: (id) => `/v1/sandboxes/${id}/exec`, headers: { Host: `evil.example:${p}`, 'Content-Type': 'application/json' }, body: execBody },
    { name: 'rebinding: stop', method: 'POST', path: (id) => `/v1/sandboxes/${id}/stop`, headers: { Host: 'rebind.evil.example' } },
    { name: 'rebinding: list', method: 'GET', path: () => '/v1/sandboxes', headers: { Host: `evil.example:${p}` } },
    { name: 'rebinding: read a file', method: 'GET', path: (id) => `/v1/sandboxes/${id}/files?path=/etc/hostname`, headers: { Host: 'evil.example' } },
    { name: 'rebinding: healthz', method: 'GET', path: () => '/healthz', headers: { Host: `evil.example:${p}` } },
    { name: 'rebinding: metrics', method: 'GET', path: () => '/metrics', headers: { Host: `localhost.evil.example:${p}` } },
    { name: 'rebinding: a name that ends like ours', method: 'GET', path: () => '/v1/sandboxes', headers: { Host: `evil127.0.0.1:${p}` } },
    { name: 'cross-origin GET read with our Host', method: 'GET', path: () => '/v1/sandboxes', headers: { Origin: 'http://evil.example' } },
    { name: 'cross-origin delete', method: 'DELETE', path: (id) => `/v1/sandboxes/${id}`, headers: { Origin: 'http://evil.example' } },
    { name: 'rebinding: /mcp initialize', method: 'POST', path: () => '/mcp', headers: { Host: `evil.example:${p}`, 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '0' } } }) },
  ];

  test('each is refused with a 4xx error body, and nothing is created, run or changed', async () => {
    const before = (await operator.list({ all: true })).map((s) => s.id);
    const through: string[] = [];
    for (const a of attacks(port)) {
      const r = await send(port, a.method, a.path(target), a.headers, a.body);
      if (r.status < 400 || r.status >= 500) {
        through.push(`${a.name}: ${r.status} ${r.body.slice(0, 120)}`);
        continue;
      }
      const err = (JSON.parse(r.body) as { error?: { code?: string; message?: string; hint?: string } }).error;
      assert.ok(err?.code && err.message && err.hint, `${a.name}: no {error:{code,message,hint}} in ${r.body}`);
      assert.doesNotMatch(r.body, /sbx_/, `${a.name}: the refusal shows sandbox ids`);
    }
    assert.deepEqual(through, [], 'browser-style requests that got through');
    const after = await operator.list({ all: true });
    assert.deepEqual(after.filter((s) => !before.includes(s.id)).map((s) => s.id), [], 'a refused request created a sandbox');
    assert.equal(after.find((s) => s.id === target)?.state, 'running');
    assert.deepEqual(await operator.execs(target), [], 'a refused request ran a command');
  });

  test('programs keep working: JSON from 127.0.0.1 without Origin, the same origin, listed names, the SDK, raw file bytes', async () => {
    const json = { 'Content-Type': 'application/json' };
    const plain = await send(port, 'POST', '/v1/sandboxes', json, create);
    assert.equal(plain.status, 201, plain.body);
    const id = (JSON.parse(plain.body) as { id: string }).id;
    const same = await send(port, 'POST', `/v1/sandboxes/${id}/exec`, { ...json, Origin: `http://127.0.0.1:${port}`, 'Sec-Fetch-Site': 'same-origin' }, JSON.stringify({ cmd: ['true'] }));
    assert.equal(same.status, 200, same.body);
    for (const host of [`localhost:${port}`, `[::1]:${port}`, `LOCALHOST:${port}`, `agentbox.internal:${port}`, 'agentbox.internal']) {
      const r = await send(port, 'GET', `/v1/sandboxes/${id}`, { Host: host });
      assert.equal(r.status, 200, `Host ${host}: ${r.body}`);
    }
    const charset = await send(port, 'POST', `/v1/sandboxes/${id}/exec`, { 'Content-Type': 'application/json; charset=utf-8' }, JSON.stringify({ cmd: ['true'] }));
    assert.equal(charset.status, 200, charset.body);
    const sdk = new AgentboxClient({ url: `http://127.0.0.1:${port}` });
    await sdk.writeFile(id, '/workspace/raw.bin', Buffer.from([0, 1, 2, 255]));
    assert.deepEqual([...(await readAll(await sdk.readFile(id, '/workspace/raw.bin')))], [0, 1, 2, 255]);
    const put = await send(port, 'PUT', `/v1/sandboxes/${id}/files?path=/workspace/t.txt`, { 'Content-Type': 'text/plain' }, 'text body');
    assert.equal(put.status, 200, put.body);
    assert.equal((await sdk.exec(id, { cmd: ['cat', '/workspace/t.txt'] })).stdout, 'text body');
    await sdk.delete(id);
  });

  test('a tokenless TCP caller is not the operator: /healthz says ok only, /metrics has no process or HTTP figures', async () => {
    const h = await send(port, 'GET', '/healthz', {});
    assert.deepEqual(JSON.parse(h.body), { ok: true });
    const m = await send(port, 'GET', '/metrics', {});
    assert.equal(m.status, 200);
    assert.doesNotMatch(m.body, /agentbox_process_|agentbox_http_|agentbox_pool_/);
  });
});

describe('the names a TCP listener serves', () => {
  test('AGENTBOX_ALLOWED_HOSTS adds names; a wildcard bind adds this host\'s name and addresses, nothing else', async () => {
    const home = mkdtempSync(join(tmpdir(), 'agentbox-sec-hosts-'));
    const token = 'hosts-test-token-0123456789';
    const d = await startDaemon({
      env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_ALLOWED_HOSTS: 'proxy.example, Other.Example.', AGENTBOX_TOKEN: token },
      logger: silentLogger(),
      socket: null,
      tcp: { host: '0.0.0.0', port: 0 },
    });
    try {
      const p = d.tcpAddress!.port;
      const status = async (host: string): Promise<number> => (await send(p, 'GET', '/v1/sandboxes', { Host: host, Authorization: `Bearer ${token}` })).status;
      for (const ok of ['proxy.example', `other.example:${p}`, `${hostname()}:${p}`, `127.0.0.1:${p}`]) assert.equal(await status(ok), 200, ok);
      for (const bad of ['evil.example', `proxy.example.evil.example:${p}`, `0.0.0.0:${p}`, 'user@127.0.0.1', '127.0.0.1:80:80', '']) assert.equal(await status(bad), 403, bad);
    } finally {
      await d.close();
      rmSync(home, { recursive: true, force: true });
    }
  });
});
