/**
 * The MCP surface against a real daemon, driven by the SDK's real Client: over stdio (the
 * stand-alone entry, as `agentbox mcp` runs it) and over Streamable HTTP (the /mcp handler on a
 * server of the test's own).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { UnauthorizedError } from '../../src/contract/errors.js';
import type { Caller } from '../../src/core/manager.js';
import type { Sandbox } from '../../src/contract/model.js';
import { createMcpHttpHandler, type McpHttpHandler } from '../../src/mcp/http.js';
import { managerOps } from '../../src/mcp/ops.js';
import { SESSION_LABEL, SessionSandbox } from '../../src/mcp/session.js';
import { TOOL_NAMES } from '../../src/mcp/tools.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

const POLICY = `version: 1
defaults:
  image: busybox
  limits: { cpus: 1, memoryMb: 256, pids: 128, diskMb: 128 }
  ttl: 1h
  idleTimeout: 15m
  execTimeout: 30s
  outputLimitBytes: 65536
`;

const STDIO_MAIN = fileURLToPath(new URL('../../src/mcp/stdio-main.js', import.meta.url));

function texts(r: unknown): string[] {
  return ((r as CallToolResult).content ?? []).map((c) => (c.type === 'text' ? c.text : ''));
}

/** The JSON block of a tool result (the last text item). */
function json<T = Record<string, unknown>>(r: unknown): T {
  const all = texts(r);
  return JSON.parse(all[all.length - 1] ?? 'null') as T;
}

async function call(client: Client, name: string, args: Record<string, unknown>): Promise<CallToolResult> {
  return (await client.callTool({ name, arguments: args })) as CallToolResult;
}

/** The checks both transports share: tools, exec (ok, non-zero, timeout, bad id), files. Returns the session sandbox id. */
async function exerciseTools(client: Client): Promise<string> {
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((t) => t.name).sort(), [...TOOL_NAMES].sort());
  for (const t of tools) {
    assert.ok((t.description ?? '').length > 40, `${t.name} has a description`);
    assert.equal(t.inputSchema.type, 'object', `${t.name} has an input schema`);
  }
  const exec = tools.find((t) => t.name === 'sandbox_exec')!;
  assert.ok(exec.description!.includes('truncated'));
  assert.ok(exec.inputSchema.properties && 'cmd' in exec.inputSchema.properties && 'command' in exec.inputSchema.properties && 'id' in exec.inputSchema.properties);
  assert.ok(!exec.inputSchema.required?.includes('id'), 'id is optional on sandbox_exec');

  // A non-zero exit is a tool error that still carries the whole result.
  const r1 = await call(client, 'sandbox_exec', { cmd: ['sh', '-c', 'echo hi; exit 3'] });
  assert.equal(r1.isError, true);
  const res1 = json<{ sandboxId: string; exitCode: number; stdout: string; timedOut: boolean }>(r1);
  assert.equal(res1.exitCode, 3);
  assert.equal(res1.stdout, 'hi\n');
  assert.equal(res1.timedOut, false);
  assert.match(res1.sandboxId, /^sbx_/);
  assert.match(texts(r1)[0]!, /exit 3/);
  assert.match(texts(r1)[0]!, /created this session's sandbox/);
  const sid = res1.sandboxId;

  // The same session sandbox next time; a shell line through `command`; success is not an error.
  const r2 = await call(client, 'sandbox_exec', { command: 'echo mcp-$((40+2)) > /workspace/n.txt; cat /workspace/n.txt' });
  assert.equal(r2.isError ?? false, false);
  assert.equal(json(r2).sandboxId, sid);
  assert.equal(json(r2).stdout, 'mcp-42\n');

  // Timeout: a tool error saying timedOut, exit 124.
  const r3 = await call(client, 'sandbox_exec', { cmd: ['sleep', '5'], timeoutMs: 300 });
  assert.equal(r3.isError, true);
  assert.equal(json(r3).timedOut, true);
  assert.equal(json(r3).exitCode, 124);

  // Output over the policy's outputLimitBytes (64 KiB here) is cut and says so.
  const r4 = await call(client, 'sandbox_exec', { command: 'yes 0123456789 | head -c 200000' });
  assert.equal(json(r4).truncated, true);
  assert.ok((json<{ stdout: string }>(r4).stdout.length) <= 65536);

  // Neither command nor cmd: a tool error with a hint.
  const r5 = await call(client, 'sandbox_exec', {});
  assert.equal(r5.isError, true);
  assert.match(texts(r5)[0]!, /bad_request/);

  // Unknown id: a tool error, not_found, with a hint in terms of the tools.
  const r6 = await call(client, 'sandbox_exec', { id: 'sbx_doesnotexist', cmd: ['true'] });
  assert.equal(r6.isError, true);
  assert.match(texts(r6)[0]!, /not_found/);
  assert.match(texts(r6)[0]!, /sandbox_list/);

  // Files: text round trip, binary as base64, a missing file, a read-only path.
  const text = 'héllo wörld\nline 2\n';
  const w = await call(client, 'sandbox_write_file', { path: '/workspace/hello.txt', content: text });
  assert.equal(w.isError ?? false, false, texts(w).join('\n'));
  assert.equal(json(w).bytes, Buffer.byteLength(text));
  const rd = await call(client, 'sandbox_read_file', { path: '/workspace/hello.txt' });
  assert.equal(rd.isError ?? false, false);
  assert.deepEqual({ content: json(rd).content, encoding: json(rd).encoding, truncated: json(rd).truncated }, { content: text, encoding: 'utf8', truncated: false });
  const cat = await call(client, 'sandbox_exec', { cmd: ['cat', '/workspace/hello.txt'] });
  assert.equal(json(cat).stdout, text);
  const nested = await call(client, 'sandbox_write_file', { path: '/workspace/a/b/c.txt', content: 'deep' });
  assert.equal(nested.isError ?? false, false, 'parent directories are created');

  const bin = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80, 10]);
  const wb = await call(client, 'sandbox_write_file', { path: '/workspace/bin', content: bin.toString('base64'), encoding: 'base64' });
  assert.equal(json(wb).bytes, bin.length);
  const rb = await call(client, 'sandbox_read_file', { path: '/workspace/bin' });
  assert.equal(json(rb).encoding, 'base64', 'binary content falls back to base64');
  assert.deepEqual(Buffer.from(json<{ content: string }>(rb).content, 'base64'), bin);

  const part = await call(client, 'sandbox_read_file', { path: '/workspace/hello.txt', maxBytes: 2 });
  assert.equal(json(part).truncated, true);
  assert.equal(json(part).content, 'h', 'a character cut in half is dropped, not mangled');

  const missing = await call(client, 'sandbox_read_file', { path: '/workspace/nope.txt' });
  assert.equal(missing.isError, true);
  assert.match(texts(missing)[0]!, /not_found/);
  const ro = await call(client, 'sandbox_write_file', { path: '/etc/x', content: 'x' });
  assert.equal(ro.isError, true);

  // A background job outlives its call; sandbox_ps names the call that started it; sandbox_kill ends it, never PID 1.
  const bg = await call(client, 'sandbox_exec', { command: 'sleep 555 & echo started' });
  assert.equal(bg.isError ?? false, false, texts(bg).join('\n'));
  assert.equal(json(bg).stdout, 'started\n');
  const ps = await call(client, 'sandbox_ps', {});
  assert.equal(ps.isError ?? false, false, texts(ps).join('\n'));
  const procs = json<{ sandboxId: string; processes: { pid: number; command: string; execId: string | null }[] }>(ps);
  assert.equal(procs.sandboxId, sid);
  const job = procs.processes.find((p) => p.command === 'sleep 555');
  assert.ok(job, texts(ps).join('\n'));
  assert.equal(job.execId, json(bg).execId);
  assert.match(texts(ps)[0]!, /sleep 555/);
  const one = await call(client, 'sandbox_kill', { pid: 1 });
  assert.equal(one.isError, true);
  assert.match(texts(one)[0]!, /forbidden/);
  const killed = await call(client, 'sandbox_kill', { pid: job.pid, signal: 'KILL' });
  assert.equal(killed.isError ?? false, false, texts(killed).join('\n'));
  assert.deepEqual(json(killed), { sandboxId: sid, pid: job.pid, signal: 'KILL' });
  const again = await call(client, 'sandbox_kill', { pid: job.pid });
  assert.equal(again.isError, true);
  assert.match(texts(again)[0]!, /not_found/);
  assert.match(texts(again)[0]!, /sandbox_ps/);

  // list marks the session's sandbox; get returns it.
  const ls = await call(client, 'sandbox_list', {});
  assert.ok(json<{ sandboxes: Sandbox[] }>(ls).sandboxes.some((s) => s.id === sid && s.labels[SESSION_LABEL] !== undefined));
  assert.match(texts(ls)[0]!, /this session's sandbox/);
  const got = await call(client, 'sandbox_get', { id: sid });
  assert.equal(json(got).state, 'running');
  return sid;
}

/** Explicit sandboxes: create (and a policy denial), exec by id, stop, delete, use after delete. */
async function exerciseExplicit(client: Client): Promise<void> {
  const denied = await call(client, 'sandbox_create', { limits: { memoryMb: 100000 } });
  assert.equal(denied.isError, true);
  assert.match(texts(denied)[0]!, /policy_denied/);

  const c = await call(client, 'sandbox_create', { labels: { purpose: 'mcp-test' }, env: { GREETING: 'hej' } });
  assert.equal(c.isError ?? false, false, texts(c).join('\n'));
  const id = json<Sandbox>(c).id;
  const e = await call(client, 'sandbox_exec', { id, command: 'echo $GREETING' });
  assert.equal(json(e).stdout, 'hej\n');
  assert.equal(json(e).sandboxId, id);

  // Its files kept as a snapshot and restored into a new sandbox, and branched by a fork.
  await call(client, 'sandbox_exec', { id, command: 'echo snap-me > /workspace/s' });
  const sn = await call(client, 'sandbox_snapshot', { id });
  assert.equal(sn.isError ?? false, false, texts(sn).join('\n'));
  const snapId = json<{ id: string }>(sn).id;
  assert.match(snapId, /^snap_/);
  const restored = json<Sandbox>(await call(client, 'sandbox_create', { snapshot: snapId })).id;
  assert.equal(json(await call(client, 'sandbox_exec', { id: restored, command: 'cat /workspace/s' })).stdout, 'snap-me\n');
  const f = await call(client, 'sandbox_fork', { id, count: 2 });
  assert.equal(f.isError ?? false, false, texts(f).join('\n'));
  const kids = json<{ sandboxes: Sandbox[] }>(f).sandboxes.map((k) => k.id);
  assert.equal(kids.length, 2);
  for (const k of kids) assert.equal(json(await call(client, 'sandbox_exec', { id: k, command: 'cat /workspace/s' })).stdout, 'snap-me\n');
  for (const k of [restored, ...kids]) await call(client, 'sandbox_delete', { id: k });

  // A web server inside, shared for a browser through the port proxy with a token of that port.
  await call(client, 'sandbox_exec', { id, command: 'mkdir -p /workspace/www && echo shared-page > /workspace/www/index.html && httpd -p 127.0.0.1:8000 -h /workspace/www' });
  const sh = await call(client, 'sandbox_share_port', { id, port: 8000 });
  assert.equal(sh.isError ?? false, false, texts(sh).join('\n'));
  const grant = json<{ url: string; token: string; public: boolean }>(sh);
  assert.equal(grant.public, false);
  const m = new RegExp(`^http://8000-${id}\\.localhost:(\\d+)/$`).exec(grant.url);
  assert.ok(m, `url ${grant.url}`);
  assert.match(texts(sh)[0]!, /\?agentbox_port_token=abp_/);
  const viaProxy = (token?: string): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      get({ host: '127.0.0.1', port: Number(m[1]), path: '/index.html', headers: { host: `8000-${id}.localhost`, ...(token ? { 'agentbox-port-token': token } : {}) } }, async (res) => {
        const chunks: Buffer[] = [];
        for await (const c of res) chunks.push(c as Buffer);
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() });
      }).on('error', reject);
    });
  assert.deepEqual(await viaProxy(grant.token), { status: 200, body: 'shared-page\n' });
  assert.equal((await viaProxy()).status, 404);
  const badPort = await call(client, 'sandbox_share_port', { id, port: 0 });
  assert.equal(badPort.isError, true);
  const unknown = await call(client, 'sandbox_snapshot', { id: 'sbx_nope' });
  assert.equal(unknown.isError, true);

  const st = await call(client, 'sandbox_stop', { id });
  assert.equal(json(st).state, 'stopped');
  const after = await call(client, 'sandbox_exec', { id, cmd: ['true'] });
  assert.equal(after.isError, true);
  assert.match(texts(after)[0]!, /has ended/);
  const d = await call(client, 'sandbox_delete', { id });
  assert.equal(json(d).state, 'deleted');
}

describe('MCP', () => {
  let home: string;
  let daemon: Daemon;
  let socket: string;
  let local: AgentboxClient;

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-mcp-'));
    const policyPath = join(home, 'policy.yaml');
    writeFileSync(policyPath, POLICY);
    socket = join(home, 'agentbox.sock');
    daemon = await startDaemon({
      env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR },
      logger: silentLogger(),
      policyPath,
      socket,
      tcp: { host: '127.0.0.1', port: 0 },
      portsDomain: 'localhost',
    });
    local = new AgentboxClient({ url: `unix:${socket}` });
  });

  after(async () => {
    const runtime = await daemon.manager.runtime('local');
    const leftRunning = await local.list();
    await daemon.close();
    const leftOnHost = await runtime.list();
    rmSync(home, { recursive: true, force: true });
    assert.deepEqual(leftRunning.map((s) => s.id), [], 'sandboxes still running after the tests');
    assert.deepEqual(leftOnHost, [], 'sandboxes left on the host after the daemon closed');
  });

  test('session sandbox: created on first use, deleted when idle, replaced with a note', async () => {
    const caller = { tenant: 'carol', actor: 'test' };
    const session = new SessionSandbox(managerOps(daemon.manager, caller), { tag: 'unit', idleMs: 200 });
    try {
      const first = await session.use((id) => Promise.resolve(id));
      assert.match(first.notes.join('\n'), /created this session's sandbox/);
      assert.equal(daemon.manager.get(first.id, caller).labels[SESSION_LABEL], 'unit');
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && daemon.manager.get(first.id, caller).state !== 'deleted') await sleep(50);
      assert.equal(daemon.manager.get(first.id, caller).state, 'deleted');
      const second = await session.use((id) => Promise.resolve(id));
      assert.notEqual(second.id, first.id);
      assert.match(second.notes.join('\n'), /was deleted after/);
      // Ended behind the session's back (e.g. the reaper): the call is retried in a fresh sandbox.
      await daemon.manager.stop(second.id, caller);
      const third = await session.use((id) => daemon.manager.exec(id, { cmd: ['true'] }, caller));
      assert.notEqual(third.id, second.id);
      assert.equal(third.value.exitCode, 0);
      assert.match(third.notes.join('\n'), /had ended \(stopped\)/);
    } finally {
      await session.close();
    }
    assert.equal(daemon.manager.list(caller).length, 0);
  });

  describe('over stdio', () => {
    function stdioClient(): { client: Client; transport: StdioClientTransport; stderr: () => string } {
      const env: Record<string, string> = {};
      for (const [k, v] of Object.entries(process.env)) if (v !== undefined && k !== 'AGENTBOX_TOKEN') env[k] = v;
      const transport = new StdioClientTransport({
        command: process.execPath,
        args: [STDIO_MAIN],
        env: { ...env, AGENTBOX_URL: `unix:${socket}`, AGENTBOX_LOG_LEVEL: 'info' },
        stderr: 'pipe',
      });
      let err = '';
      transport.stderr?.on('data', (c: Buffer) => (err += c.toString()));
      return { client: new Client({ name: 'agentbox-test', version: '0.0.1' }), transport, stderr: () => err };
    }

    test('tools, exec, files; closing the client deletes the session sandbox', async () => {
      const { client, transport, stderr } = stdioClient();
      await client.connect(transport);
      let sid: string;
      try {
        sid = await exerciseTools(client);
        await exerciseExplicit(client);
        assert.equal((await local.get(sid)).state, 'running');
      } finally {
        await client.close();
      }
      const sb = await local.get(sid);
      assert.equal(sb.state, 'deleted', `session sandbox not deleted on close; server stderr:\n${stderr()}`);
      assert.ok(!(await local.list()).some((s) => s.id === sid));
      assert.doesNotMatch(stderr(), /could not delete/);
    });

    test('SIGTERM to the server deletes its session sandbox before it exits', async () => {
      const { client, transport, stderr } = stdioClient();
      await client.connect(transport);
      const r = await call(client, 'sandbox_exec', { command: 'echo up' });
      const sid = json<{ sandboxId: string }>(r).sandboxId;
      assert.equal((await local.get(sid)).state, 'running');
      const closed = new Promise<void>((resolve) => (client.onclose = resolve));
      process.kill(transport.pid!, 'SIGTERM');
      await closed;
      assert.equal((await local.get(sid)).state, 'deleted', `stderr:\n${stderr()}`);
      await client.close();
    });
  });

  describe('over Streamable HTTP', () => {
    let server: Server;
    let handler: McpHttpHandler;
    let url: URL;
    const TOKENS: Record<string, Caller> = {
      'tok-alice': { tenant: 'alice', actor: 'mcp:alice' },
      'tok-bob': { tenant: 'bob', actor: 'mcp:bob' },
    };
    const alice = TOKENS['tok-alice']!;

    const authenticate = (req: IncomingMessage): Caller => {
      const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
      const caller = m ? TOKENS[m[1]!] : undefined;
      if (!caller) throw new UnauthorizedError('missing or invalid bearer token', { hint: 'send Authorization: Bearer <token>' });
      return caller;
    };

    function httpClient(token: string): { client: Client; transport: StreamableHTTPClientTransport } {
      const transport = new StreamableHTTPClientTransport(url, { requestInit: { headers: { authorization: `Bearer ${token}` } } });
      return { client: new Client({ name: 'agentbox-test', version: '0.0.1' }), transport };
    }

    before(async () => {
      handler = createMcpHttpHandler({ manager: daemon.manager, authenticate, logger: silentLogger() });
      server = createServer((req, res) => void handler(req, res));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const addr = server.address();
      assert.ok(addr && typeof addr === 'object');
      url = new URL(`http://127.0.0.1:${addr.port}/mcp`);
    });

    after(async () => {
      await handler.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    const initBody = JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '0' } },
    });
    const mcpHeaders = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };

    test('no token: 401; a browser origin: 403', async () => {
      const r = await fetch(url, { method: 'POST', headers: mcpHeaders, body: initBody });
      assert.equal(r.status, 401);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'unauthorized');
      const o = await fetch(url, { method: 'POST', headers: { ...mcpHeaders, authorization: 'Bearer tok-alice', origin: 'http://evil.example' }, body: initBody });
      assert.equal(o.status, 403);
      assert.equal(handler.sessionCount, 0);
    });

    test('tools, exec, files; other tenants cannot use the session; DELETE deletes the sandbox', async () => {
      const { client, transport } = httpClient('tok-alice');
      await client.connect(transport);
      assert.equal(handler.sessionCount, 1);
      const sid = await exerciseTools(client);
      await exerciseExplicit(client);

      // The sandbox belongs to alice: bob neither sees it nor can use alice's MCP session.
      const sb = daemon.manager.get(sid, alice);
      assert.equal(sb.tenant, 'alice');
      assert.equal(daemon.manager.list({ tenant: 'bob', actor: 'x' }).length, 0);
      const hijack = await fetch(url, {
        method: 'POST',
        headers: { ...mcpHeaders, authorization: 'Bearer tok-bob', 'mcp-session-id': transport.sessionId!, 'mcp-protocol-version': '2025-06-18' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'sandbox_exec', arguments: { command: 'id' } } }),
      });
      assert.equal(hijack.status, 404);
      const noSession = await fetch(url, { method: 'POST', headers: { ...mcpHeaders, authorization: 'Bearer tok-alice' }, body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }) });
      assert.equal(noSession.status, 400);

      // Bob's own session gets its own sandbox in his tenant.
      const b = httpClient('tok-bob');
      await b.client.connect(b.transport);
      const rb = await call(b.client, 'sandbox_exec', { command: 'echo bob' });
      const bobSid = json<{ sandboxId: string }>(rb).sandboxId;
      assert.notEqual(bobSid, sid);
      assert.equal(daemon.manager.get(bobSid, { tenant: 'bob', actor: 'x' }).tenant, 'bob');
      const cross = await call(b.client, 'sandbox_read_file', { id: sid, path: '/workspace/hello.txt' });
      assert.equal(cross.isError, true);
      assert.match(texts(cross)[0]!, /not_found/);

      // Session DELETE: the sandbox is deleted by the time the client has its answer.
      await transport.terminateSession();
      assert.equal(daemon.manager.get(sid, alice).state, 'deleted');
      await client.close();
      await b.transport.terminateSession();
      await b.client.close();
      assert.equal(daemon.manager.get(bobSid, { tenant: 'bob', actor: 'x' }).state, 'deleted');
      assert.equal(handler.sessionCount, 0);
    });

    test('an idle session is closed and its sandbox deleted', async () => {
      const idle = createMcpHttpHandler({ manager: daemon.manager, authenticate, logger: silentLogger(), sessionIdleMs: 300 });
      const srv = createServer((req, res) => void idle(req, res));
      await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
      const port = (srv.address() as { port: number }).port;
      const transport = new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${port}/mcp`), { requestInit: { headers: { authorization: 'Bearer tok-alice' } } });
      const client = new Client({ name: 'agentbox-test', version: '0.0.1' });
      try {
        await client.connect(transport);
        const sid = json<{ sandboxId: string }>(await call(client, 'sandbox_exec', { command: 'true' })).sandboxId;
        const deadline = Date.now() + 10_000;
        while (Date.now() < deadline && (daemon.manager.get(sid, alice).state !== 'deleted' || idle.sessionCount > 0)) await sleep(100);
        assert.equal(daemon.manager.get(sid, alice).state, 'deleted');
        assert.equal(idle.sessionCount, 0);
      } finally {
        await client.close();
        await idle.close();
        await new Promise<void>((resolve) => srv.close(() => resolve()));
      }
    });
  });
});
