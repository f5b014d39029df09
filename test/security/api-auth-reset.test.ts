/**
 * Finding 1: auth is decided by the listener, never by what can be read off a connection. A TCP
 * client that resets its connection right after writing a request (SO_LINGER {1,0}) makes the peer
 * address unreadable; none of those requests may run as the local operator.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { closeDaemonLeavingNothing } from '../helpers/daemon-teardown.js';

const ALICE = 'alice-token-0123456789abcdef';
const OPERATOR_TOKEN = 'operator-token-0123456789abcdef';

/** Write one raw HTTP request, then reset the connection (RST) as soon as it is on the wire. */
function sendThenReset(port: number, raw: string): Promise<void> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    s.on('connect', () => {
      s.write(raw, () => {
        s.resetAndDestroy();
        resolve();
      });
    });
  });
}

function raw(port: number, method: string, path: string, body: string, extra: Record<string, string> = {}): string {
  const headers = { Host: `127.0.0.1:${port}`, 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)), ...extra };
  return `${method} ${path} HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n${body}`;
}

/** N one after the other, then N at once: the reset must win the race at least sometimes on unfixed code. */
async function attack(port: number, request: string, n = 6): Promise<void> {
  for (let i = 0; i < n; i++) await sendThenReset(port, request);
  await Promise.all(Array.from({ length: n }, () => sendThenReset(port, request)));
}

/** agentbox_http_requests_total of the TCP listener by "METHOD STATUS", as the operator sees it over the Unix socket. */
async function statusCounts(socket: string): Promise<Map<string, number>> {
  const res = await fetchUnix(socket, '/metrics');
  const out = new Map<string, number>();
  for (const m of res.matchAll(/^agentbox_http_requests_total\{([^}]*)\} (\d+)/gm)) {
    const labels = Object.fromEntries([...(m[1] as string).matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    // (A daemon that labels its listeners: count only TCP, not this very /metrics request.)
    if (labels.listener !== undefined && labels.listener !== 'tcp') continue;
    const key = `${labels.method} ${labels.status}`;
    out.set(key, (out.get(key) ?? 0) + Number(m[2]));
  }
  return out;
}

async function fetchUnix(socket: string, path: string): Promise<string> {
  const { request } = await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path, method: 'GET' }, async (res) => resolve((await readAll(res)).toString('utf8')));
    req.on('error', reject);
    req.end();
  });
}

/** Every request the server finished since `before` was refused with 401: none got past auth. */
async function assertAllRefused(socket: string, before: Map<string, number>, method: string, expected: number): Promise<void> {
  let after = new Map<string, number>();
  // The resets race the server's handling; wait until every request has been accounted for.
  for (let i = 0; i < 100; i++) {
    after = await statusCounts(socket);
    let total = 0;
    for (const [k, v] of after) if (k.startsWith(`${method} `)) total += v - (before.get(k) ?? 0);
    if (total >= expected) break;
    await sleep(50);
  }
  const passed: string[] = [];
  for (const [k, v] of after) {
    const delta = v - (before.get(k) ?? 0);
    if (k.startsWith(`${method} `) && !k.endsWith(' 401') && delta > 0) passed.push(`${delta} x ${k}`);
  }
  assert.deepEqual(passed, [], 'a reset TCP request without a token got past auth');
}

for (const shape of ['tenants', 'AGENTBOX_TOKEN'] as const) {
  describe(`a reset TCP connection is never the local operator (${shape})`, () => {
    let home: string;
    let daemon: Daemon | undefined;
    let port: number;
    let socket: string;
    let operator: AgentboxClient;
    let target: string;

    before(async () => {
      await testImages();
      home = mkdtempSync(join(tmpdir(), 'agentbox-sec-rst-'));
      const policyPath = join(home, 'policy.yaml');
      writeFileSync(policyPath, shape === 'tenants' ? `version: 1\ntenants:\n  - { name: alice, tokens: [${ALICE}] }\n` : 'version: 1\n');
      socket = join(home, 'agentbox.sock');
      daemon = await startDaemon({
        env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, ...(shape === 'AGENTBOX_TOKEN' ? { AGENTBOX_TOKEN: OPERATOR_TOKEN } : {}) },
        logger: silentLogger(),
        policyPath,
        socket,
        tcp: { host: '127.0.0.1', port: 0 },
      });
      port = daemon.tcpAddress!.port;
      operator = new AgentboxClient({ url: `unix:${socket}` });
      // The operator's own sandbox: what an attacker acting as the operator would exec in.
      target = (await operator.create({ labels: { role: 'target' }, egress: { mode: 'allowlist', allow: ['example.com'] } })).id;
    });

    after(() =>
      closeDaemonLeavingNothing(daemon, home, async () => {
        for (const sb of await operator.list({ all: false })) await operator.delete(sb.id);
      }),
    );

    test('POST /v1/sandboxes creates nothing', async () => {
      const before = await statusCounts(socket);
      const ids = (await operator.list({ all: true })).map((s) => s.id);
      await attack(port, raw(port, 'POST', '/v1/sandboxes', JSON.stringify({ labels: { attack: 'rst' } })));
      await assertAllRefused(socket, before, 'POST', 12);
      const created = (await operator.list({ all: true })).filter((s) => !ids.includes(s.id));
      assert.deepEqual(created.map((s) => s.id), [], 'a reset request created sandboxes');
    });

    test('exec runs nothing in the operator\'s sandbox', async () => {
      const before = await statusCounts(socket);
      await attack(port, raw(port, 'POST', `/v1/sandboxes/${target}/exec`, JSON.stringify({ cmd: ['sh', '-c', 'echo x >> /workspace/pwned'] })));
      await assertAllRefused(socket, before, 'POST', 12);
      assert.deepEqual(await operator.execs(target), [], 'a reset request ran a command');
    });

    test('egress allow, stop and delete change nothing', async () => {
      const before = await statusCounts(socket);
      await attack(port, raw(port, 'POST', `/v1/sandboxes/${target}/egress/allow`, JSON.stringify({ host: 'evil.example' })), 3);
      await attack(port, raw(port, 'POST', `/v1/sandboxes/${target}/stop`, ''), 3);
      await assertAllRefused(socket, before, 'POST', 12);
      const beforeDel = await statusCounts(socket);
      await attack(port, raw(port, 'DELETE', `/v1/sandboxes/${target}`, ''), 3);
      await assertAllRefused(socket, beforeDel, 'DELETE', 6);
      const sb = await operator.get(target);
      assert.equal(sb.state, 'running');
      assert.deepEqual(sb.egress.allow, ['example.com']);
    });

    test('/mcp initialize opens no session; image pull is refused before its handler', async () => {
      const init = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'rst', version: '0' } } });
      const before = await statusCounts(socket);
      await attack(port, raw(port, 'POST', '/mcp', init, { Accept: 'application/json, text/event-stream' }), 3);
      // An empty ref is a 400 from the handler: anything but 401 means auth let it through.
      await attack(port, raw(port, 'POST', '/v1/images/pull', JSON.stringify({ ref: '' })), 3);
      await assertAllRefused(socket, before, 'POST', 12);
    });

    test('pipelined after an authenticated request, a tokenless one is still refused', async () => {
      const token = shape === 'tenants' ? ALICE : OPERATOR_TOKEN;
      const said = await new Promise<string>((resolve) => {
        const s = connect(port, '127.0.0.1');
        let out = '';
        s.on('data', (d) => {
          out += d.toString('latin1');
          if ((out.match(/HTTP\/1\.1 /g) ?? []).length >= 2 && out.endsWith('}')) s.end();
        });
        s.on('close', () => resolve(out));
        s.on('error', () => resolve(out));
        s.write(raw(port, 'GET', '/v1/sandboxes', '', { Authorization: `Bearer ${token}` }) + raw(port, 'GET', '/v1/sandboxes', '', { Connection: 'close' }));
      });
      const statuses = [...said.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
      assert.deepEqual(statuses, ['200', '401']);
    });

    test('GET reads of the operator\'s sandboxes are refused', async () => {
      const before = await statusCounts(socket);
      await attack(port, raw(port, 'GET', '/v1/sandboxes', ''), 3);
      await attack(port, raw(port, 'GET', `/v1/sandboxes/${target}/files?path=/etc/hostname`, ''), 3);
      await assertAllRefused(socket, before, 'GET', 12);
    });
  });
}
