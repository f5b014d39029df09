/**
 * Finding 5: an /mcp session belongs to the token that opened it (any other token, even a scoped
 * one of the same tenant, gets 404 for it), MCP requests take from the tenant's requestsPerMinute
 * like REST calls, and one tenant cannot take every session slot.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { closeDaemonLeavingNothing } from '../helpers/daemon-teardown.js';

const ALICE = 'alice-mcp-token-0123456789';
const ALICE2 = 'alice-mcp-second-token-0123';
const ALICE_RO = 'alice-mcp-readonly-token-0123';
const BOB = 'bob-mcp-token-0123456789';
const CAROL = 'carol-mcp-token-0123456789';
const PROTO = '2025-06-18';

interface McpAnswer {
  status: number;
  text: string;
  json?: { result?: { content?: { text?: string }[]; isError?: boolean }; error?: { message?: string } };
  sid?: string;
  retryAfter?: string;
}

describe('MCP sessions over HTTP', () => {
  let home: string;
  let daemon: Daemon | undefined;
  let port: number;
  let alice: AgentboxClient;
  let target: string;

  function post(token: string, msg: unknown, sid?: string, method = 'POST'): Promise<McpAnswer> {
    const body = method === 'POST' ? JSON.stringify(msg) : '';
    const headers: Record<string, string> = { accept: 'application/json, text/event-stream', 'content-type': 'application/json', authorization: `Bearer ${token}` };
    if (sid) Object.assign(headers, { 'mcp-session-id': sid, 'mcp-protocol-version': PROTO });
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method, path: '/mcp', headers, agent: false }, async (res) => {
        const text = (await readAll(res)).toString('utf8');
        let json: McpAnswer['json'];
        const lines = String(res.headers['content-type'] ?? '').includes('text/event-stream') ? text.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5)) : [text];
        for (const l of lines) {
          try {
            json = JSON.parse(l) as McpAnswer['json'];
          } catch {
            // not JSON
          }
        }
        const sidHeader = res.headers['mcp-session-id'];
        resolve({ status: res.statusCode ?? 0, text, ...(json ? { json } : {}), ...(typeof sidHeader === 'string' ? { sid: sidHeader } : {}), ...(typeof res.headers['retry-after'] === 'string' ? { retryAfter: res.headers['retry-after'] } : {}) });
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  async function open(token: string): Promise<McpAnswer> {
    const init = await post(token, { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: PROTO, capabilities: {}, clientInfo: { name: 'sec-test', version: '0' } } });
    if (init.sid) await post(token, { jsonrpc: '2.0', method: 'notifications/initialized' }, init.sid);
    return init;
  }

  const close = (token: string, sid: string): Promise<McpAnswer> => post(token, undefined, sid, 'DELETE');
  const exec = (token: string, sid: string, command: string, id = 2): Promise<McpAnswer> =>
    post(token, { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'sandbox_exec', arguments: { id: target, command } } }, sid);

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-sec-mcp-'));
    writeFileSync(
      join(home, 'policy.yaml'),
      `version: 1
tenants:
  - name: alice
    tokens: [${ALICE}, ${ALICE2}]
    scopedTokens:
      - { token: ${ALICE_RO}, scopes: [read] }
    quotas: { mcpSessions: 2 }
  - name: bob
    tokens: [${BOB}]
  - name: carol
    tokens: [${CAROL}]
    quotas: { requestsPerMinute: 4 }
`,
    );
    daemon = await startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR }, logger: silentLogger(), policyPath: join(home, 'policy.yaml'), socket: null, tcp: { host: '127.0.0.1', port: 0 } });
    port = daemon.tcpAddress!.port;
    alice = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: ALICE });
    target = (await alice.create()).id;
  });

  after(() =>
    closeDaemonLeavingNothing(daemon, home, async () => {
      await alice.delete(target).catch(() => undefined);
    }),
  );

  test('only the opening token may use a session: a read-only token of the same tenant, another full token and another tenant get 404', async () => {
    const s = await open(ALICE);
    assert.equal(s.status, 200, s.text);
    const sid = s.sid!;
    try {
      const own = await exec(ALICE, sid, 'echo own-$((40+2))');
      assert.match(JSON.stringify(own.json), /own-42/, own.text);
      for (const [name, token] of [['read-only', ALICE_RO], ['second full token', ALICE2], ['bob', BOB]] as const) {
        const r = await exec(token, sid, 'echo ran-$((40+3)); echo x > /workspace/marker', 3);
        assert.equal(r.status, 404, `${name}: ${r.status} ${r.text.slice(0, 200)}`);
        assert.doesNotMatch(r.text, /ran-43/, `${name} ran a command in alice's session`);
        const del = await close(token, sid);
        assert.equal(del.status, 404, `${name} closed alice's session: ${del.status}`);
      }
      await assert.rejects(alice.readFile(target, '/workspace/marker'));
      // The session is still the opener's.
      assert.match(JSON.stringify((await exec(ALICE, sid, 'echo still-$((40+4))', 4)).json), /still-44/);
    } finally {
      await close(ALICE, sid);
    }
  });

  test('a tenant at its session cap gets 429 with a hint; other tenants still open sessions', async () => {
    const mine: [string, string][] = [];
    try {
      for (const token of [ALICE, ALICE2]) {
        const r = await open(token);
        assert.equal(r.status, 200, r.text);
        mine.push([token, r.sid!]);
      }
      const over = await open(ALICE);
      assert.equal(over.status, 429, `${over.status} ${over.text.slice(0, 200)}`);
      assert.ok(over.retryAfter, 'no Retry-After');
      assert.match(over.json?.error?.message ?? '', /alice.*2.*MCP sessions.*DELETE \/mcp/);
      const ro = await open(ALICE_RO);
      assert.equal(ro.status, 429, 'a scoped token of the same tenant counts against the same cap');
      const other = await open(BOB);
      assert.equal(other.status, 200, other.text);
      await close(BOB, other.sid!);
      const [token, sid] = mine.shift()!;
      assert.equal((await close(token, sid)).status, 200);
      const again = await open(ALICE);
      assert.equal(again.status, 200, 'a closed session frees its slot');
      mine.push([ALICE, again.sid!]);
    } finally {
      for (const [token, sid] of mine) await close(token, sid);
    }
  });

  test('MCP requests take from the tenant\'s requestsPerMinute, shared with REST', async () => {
    const s = await open(CAROL); // initialize + notifications/initialized: 2 of 4
    assert.equal(s.status, 200, s.text);
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await post(CAROL, { jsonrpc: '2.0', id: 10 + i, method: 'tools/list' }, s.sid)).status);
    assert.deepEqual(statuses.slice(0, 2), [200, 200]);
    assert.equal(statuses[2], 429, `MCP was not limited: ${statuses.join(' ')}`);
    const rest = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: CAROL });
    await assert.rejects(rest.list(), (err: Error & { code?: string }) => err.code === 'quota_exceeded');
  });
});
