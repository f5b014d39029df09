/**
 * API attacks: against the daemon's TCP listener (127.0.0.1) with hand-made requests — the auth and
 * tenancy classes (no token, a wrong one, another tenant's, a read-only one, a reset connection, an
 * MCP session opened by someone else), traversal through the files API (a sandbox's and a volume's), oversize and malformed
 * bodies and URLs, header injection, cross-origin browser requests, what /metrics and /healthz tell,
 * and privileged operations (image pull, egress approval of a closed address) as a tenant.
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { call, rawCall, sendThenReset, statusOf, type RawAnswer } from './http-probes.js';
import { newMarker, probe, allRefused, type Attempt } from './net-probes.js';
import type { Attack, AttackContext, AttackOutcome } from './types.js';

const enc = encodeURIComponent;

interface Expect {
  what: string;
  answer: RawAnswer;
  ok: (status: number) => boolean;
}

function verdict(checks: readonly Expect[], blockedWhat: string): AttackOutcome {
  const bad = checks.filter((c) => !c.ok(c.answer.status));
  if (bad.length === 0) return { blocked: true, detail: `${blockedWhat}: ${checks.slice(0, 6).map((c) => `${c.what} ${statusOf(c.answer)}`).join(', ')}${checks.length > 6 ? ', …' : ''}` };
  return { blocked: false, detail: bad.map((c) => `${c.what} -> ${statusOf(c.answer)} ${c.answer.body.replace(/\s+/g, ' ').slice(0, 80)}`).join('; ') };
}

const is401 = (s: number): boolean => s === 401;
const is403 = (s: number): boolean => s === 403;
const isHidden = (s: number): boolean => s === 404 || s === 403;
const is4xx = (s: number): boolean => s >= 400 && s < 500;

/** Every route, aimed at sandbox `id` (destructive ones at a scratch sandbox). */
function routeCalls(id: string, scratchId: string): { method: string; path: string; body?: string; what: string }[] {
  return [
    { method: 'GET', path: '/v1/sandboxes', what: 'list' },
    { method: 'POST', path: '/v1/sandboxes', body: JSON.stringify({ image: 'busybox', labels: { 'doctor-attack': 'api' } }), what: 'create' },
    { method: 'GET', path: `/v1/sandboxes/${id}`, what: 'get' },
    { method: 'POST', path: `/v1/sandboxes/${id}/exec`, body: JSON.stringify({ cmd: ['sh', '-c', 'echo owned > /workspace/api-owned'] }), what: 'exec' },
    { method: 'GET', path: `/v1/sandboxes/${id}/execs`, what: 'execs' },
    { method: 'PUT', path: `/v1/sandboxes/${id}/files?path=/workspace/api-owned`, body: 'owned', what: 'write file' },
    { method: 'GET', path: `/v1/sandboxes/${id}/files?path=/etc/hostname`, what: 'read file' },
    { method: 'GET', path: `/v1/sandboxes/${id}/files/list?path=/workspace`, what: 'list dir' },
    { method: 'DELETE', path: `/v1/sandboxes/${id}/files?path=/workspace/api-owned`, what: 'remove file' },
    { method: 'GET', path: `/v1/sandboxes/${id}/egress`, what: 'egress log' },
    { method: 'POST', path: `/v1/sandboxes/${scratchId}/egress/allow`, body: JSON.stringify({ host: 'allowed.attack.test:80' }), what: 'egress approve' },
    { method: 'POST', path: `/v1/sandboxes/${scratchId}/stop`, what: 'stop' },
    { method: 'DELETE', path: `/v1/sandboxes/${scratchId}`, what: 'delete' },
  ];
}

async function allRoutes(ctx: AttackContext, id: string, scratchId: string, opts: { token?: string; headers?: Record<string, string> }, ok: (s: number) => boolean, prefix = ''): Promise<Expect[]> {
  const out: Expect[] = [];
  for (const r of routeCalls(id, scratchId)) {
    const answer = await call(ctx.api.port, r.method, r.path, { ...(opts.token ? { token: opts.token } : {}), ...(r.body !== undefined ? { body: r.body } : {}), ...(opts.headers ? { headers: opts.headers } : {}) });
    out.push({ what: `${prefix}${r.what}`, answer, ok });
  }
  return out;
}

/** The sandbox still exists and nothing wrote into it. */
async function untouched(ctx: AttackContext, id: string): Promise<string | null> {
  const r = await ctx.exec(id, ['sh', '-c', 'cat /workspace/api-owned 2>/dev/null || echo clean']);
  return r.stdout.includes('owned') ? `/workspace/api-owned was written in ${id}` : null;
}

const MCP_PROTO = '2025-06-18';

async function mcpPost(ctx: AttackContext, token: string, msg: unknown, sid?: string): Promise<{ status: number; text: string; sid?: string }> {
  const a = await call(ctx.api.port, 'POST', '/mcp', {
    token,
    body: JSON.stringify(msg),
    headers: { accept: 'application/json, text/event-stream', ...(sid ? { 'mcp-session-id': sid, 'mcp-protocol-version': MCP_PROTO } : {}) },
  });
  const sidHeader = a.headers['mcp-session-id'];
  return { status: a.status, text: a.body, ...(typeof sidHeader === 'string' ? { sid: sidHeader } : {}) };
}

export const apiAttacks: Attack[] = [
  {
    id: 'api.no-token',
    category: 'api',
    title: 'every route over TCP without a token',
    async run(ctx) {
      const scratch = await ctx.scratch({ image: 'busybox' });
      const checks = await allRoutes(ctx, ctx.sandboxes.busybox, scratch, {}, is401);
      checks.push({ what: 'image pull', answer: await call(ctx.api.port, 'POST', '/v1/images/pull', { body: JSON.stringify({ ref: '127.0.0.1:9/doctor/none:1' }) }), ok: is401 });
      checks.push({ what: '/mcp', answer: await call(ctx.api.port, 'POST', '/mcp', { body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: MCP_PROTO, capabilities: {}, clientInfo: { name: 'doctor', version: '0' } } }), headers: { accept: 'application/json, text/event-stream' } }), ok: is401 });
      checks.push({ what: '/metrics', answer: await call(ctx.api.port, 'GET', '/metrics'), ok: is401 });
      const v = verdict(checks, 'all 401');
      const touched = await untouched(ctx, ctx.sandboxes.busybox);
      return touched ? { blocked: false, detail: touched } : v;
    },
  },
  {
    id: 'api.bad-token',
    category: 'api',
    title: 'wrong, truncated, extended, re-cased and non-Bearer tokens, and a token in the query string',
    async run(ctx) {
      const t = ctx.api.tokenA;
      const variants: Record<string, string> = {
        wrong: 'Bearer doctor-not-a-token-0000000000',
        truncated: `Bearer ${t.slice(0, -1)}`,
        extended: `Bearer ${t}x`,
        upper: `Bearer ${t.toUpperCase()}`,
        basic: `Basic ${Buffer.from(`tenant-a:${t}`).toString('base64')}`,
        'two tokens': `Bearer ${ctx.api.tokenB},${t}`,
        empty: 'Bearer ',
      };
      const checks: Expect[] = [];
      for (const [name, header] of Object.entries(variants)) {
        checks.push({ what: `${name}: list`, answer: await call(ctx.api.port, 'GET', '/v1/sandboxes', { headers: { authorization: header } }), ok: is401 });
        checks.push({ what: `${name}: exec`, answer: await call(ctx.api.port, 'POST', `/v1/sandboxes/${ctx.sandboxes.busybox}/exec`, { headers: { authorization: header }, body: JSON.stringify({ cmd: ['sh', '-c', 'echo owned > /workspace/api-owned'] }) }), ok: is401 });
      }
      for (const q of [`token=${enc(t)}`, `access_token=${enc(t)}`]) {
        checks.push({ what: `?${q.split('=')[0]}`, answer: await call(ctx.api.port, 'GET', `/v1/sandboxes?${q}`), ok: is401 });
      }
      const v = verdict(checks, 'all 401');
      const touched = await untouched(ctx, ctx.sandboxes.busybox);
      return touched ? { blocked: false, detail: touched } : v;
    },
  },
  {
    id: 'api.reset-connection-bypass',
    category: 'api',
    title: 'unauthenticated TCP create and exec whose client resets the connection right after sending (SO_LINGER 0)',
    async run(ctx) {
      const marker = newMarker();
      const body = JSON.stringify({ image: 'busybox', labels: { 'doctor-rst': marker } });
      const create = `POST /v1/sandboxes HTTP/1.1\r\nHost: 127.0.0.1:${ctx.api.port}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
      const execBody = JSON.stringify({ cmd: ['sh', '-c', `echo ${marker} > /workspace/rst-${marker}`] });
      const exec = `POST /v1/sandboxes/${ctx.sandboxes.busybox}/exec HTTP/1.1\r\nHost: 127.0.0.1:${ctx.api.port}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(execBody)}\r\n\r\n${execBody}`;
      for (let i = 0; i < 4; i++) await sendThenReset(ctx.api.port, create);
      await Promise.all(Array.from({ length: 4 }, () => sendThenReset(ctx.api.port, create)));
      for (let i = 0; i < 3; i++) await sendThenReset(ctx.api.port, exec);
      // Whatever the daemon started, it has had the time a create takes: look through the operator's socket.
      const created: string[] = [];
      for (let i = 0; i < 6; i++) {
        const list = await call(0, 'GET', `/v1/sandboxes?all=1&labels=${enc(`doctor-rst=${marker}`)}`, { socketPath: ctx.api.socketPath });
        const found = ((JSON.parse(list.body || '{}') as { sandboxes?: { id: string }[] }).sandboxes ?? []).map((s) => s.id);
        created.push(...found.filter((id) => !created.includes(id)));
        if (created.length > 0) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      for (const id of created) await call(0, 'DELETE', `/v1/sandboxes/${id}`, { socketPath: ctx.api.socketPath });
      const wrote = await ctx.exec(ctx.sandboxes.busybox, ['sh', '-c', `cat /workspace/rst-${marker} 2>/dev/null || echo clean`]);
      if (created.length > 0) return { blocked: false, detail: `reset connections created ${created.length} sandbox(es) without a token: ${created.join(' ')}` };
      if (wrote.stdout.includes(marker)) return { blocked: false, detail: 'a reset connection ran an exec without a token (it wrote its marker file)' };
      return { blocked: true, detail: '8 reset creates and 3 reset execs without a token: nothing created, nothing ran' };
    },
  },
  {
    id: 'api.other-tenant',
    category: 'api',
    title: "another tenant's token on every route of a sandbox (must look like it does not exist), and the other way round",
    async run(ctx) {
      const scratch = await ctx.scratch({ image: 'busybox' });
      const checks = await allRoutes(ctx, ctx.sandboxes.busybox, scratch, { token: ctx.api.tokenB }, isHidden, 'B on A: ');
      // create is the one route B may use: drop it (B creating its own sandbox is fine) and the list (checked below).
      const filtered = checks.filter((c) => !/: (create|list)$/.test(c.what));
      for (const created of checks.filter((c) => /: create$/.test(c.what) && c.answer.status === 201)) {
        const id = (JSON.parse(created.answer.body) as { id?: string }).id;
        if (id) await ctx.otherClient.delete(id).catch(() => undefined);
      }
      const t = ctx.sandboxes.otherTenant;
      for (const [what, method, path, body] of [
        ['A on B: get', 'GET', `/v1/sandboxes/${t}`, undefined],
        ['A on B: exec', 'POST', `/v1/sandboxes/${t}/exec`, JSON.stringify({ cmd: ['true'] })],
        ['A on B: read file', 'GET', `/v1/sandboxes/${t}/files?path=/etc/hostname`, undefined],
        ['A on B: egress', 'GET', `/v1/sandboxes/${t}/egress`, undefined],
      ] as const) {
        filtered.push({ what, answer: await call(ctx.api.port, method, path, { token: ctx.api.tokenA, ...(body ? { body } : {}) }), ok: isHidden });
      }
      const listB = await call(ctx.api.port, 'GET', '/v1/sandboxes?all=1', { token: ctx.api.tokenB });
      const leakedIds = Object.values(ctx.sandboxes).filter((id) => id !== t && listB.body.includes(id));
      if (leakedIds.length > 0) return { blocked: false, detail: `tenant B's list shows tenant A's sandboxes ${leakedIds.join(' ')}` };
      const v = verdict(filtered, 'not found / forbidden');
      const touched = await untouched(ctx, ctx.sandboxes.busybox);
      const alive = await ctx.client.get(scratch);
      if (touched) return { blocked: false, detail: touched };
      if (alive.state !== 'running') return { blocked: false, detail: `tenant B stopped or deleted A's sandbox (${alive.state})` };
      return v;
    },
  },
  {
    id: 'api.read-only-token-writes',
    category: 'api',
    title: 'a read-only scoped token doing writes (create, exec, files, egress approval, stop, delete)',
    async run(ctx) {
      const scratch = await ctx.scratch({ image: 'busybox' });
      const checks = (await allRoutes(ctx, ctx.sandboxes.busybox, scratch, { token: ctx.api.tokenReadOnlyA }, is403)).filter((c) =>
        /create|exec$|write file|remove file|egress approve|stop|delete/.test(c.what),
      );
      const control = await call(ctx.api.port, 'GET', `/v1/sandboxes/${ctx.sandboxes.busybox}`, { token: ctx.api.tokenReadOnlyA });
      if (control.status !== 200) return { blocked: false, detail: `control: the read-only token could not even read (${statusOf(control)}); the check proves nothing` };
      for (const created of checks.filter((c) => c.what === 'create' && c.answer.status === 201)) {
        const id = (JSON.parse(created.answer.body) as { id?: string }).id;
        if (id) await ctx.client.delete(id).catch(() => undefined);
      }
      const v = verdict(checks, 'all 403, reads still 200');
      const touched = await untouched(ctx, ctx.sandboxes.busybox);
      return touched ? { blocked: false, detail: touched } : v;
    },
  },
  {
    id: 'api.mcp-session-hijack',
    category: 'api',
    title: "an MCP session opened with tenant A's full token, used with A's read-only token and with tenant B's",
    async run(ctx) {
      const id = ctx.sandboxes.busybox;
      const init = await mcpPost(ctx, ctx.api.tokenA, { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: MCP_PROTO, capabilities: {}, clientInfo: { name: 'doctor', version: '0' } } });
      if (init.status !== 200 || !init.sid) return { blocked: false, detail: `setup: initialize with the full token got ${init.status}: ${init.text.slice(0, 100)}` };
      const sid = init.sid;
      const callExec = (n: number, command: string) => ({ jsonrpc: '2.0', id: n, method: 'tools/call', params: { name: 'sandbox_exec', arguments: { id, command } } });
      try {
        await mcpPost(ctx, ctx.api.tokenA, { jsonrpc: '2.0', method: 'notifications/initialized' }, sid);
        const ctl = await mcpPost(ctx, ctx.api.tokenA, callExec(2, 'echo ctl-$((40+2))'), sid);
        if (!ctl.text.includes('ctl-42')) return { blocked: false, detail: `control: sandbox_exec with the full token in its own session did not run (${ctl.status}); the check proves nothing` };
        const ro = await mcpPost(ctx, ctx.api.tokenReadOnlyA, callExec(3, 'echo ro-$((40+3)) > /workspace/api-owned; echo ro-$((40+3))'), sid);
        const b = await mcpPost(ctx, ctx.api.tokenB, callExec(4, 'echo b-$((40+4)) > /workspace/api-owned; echo b-$((40+4))'), sid);
        if (ro.text.includes('ro-43')) return { blocked: false, detail: `the read-only token's sandbox_exec ran in the full token's session (${ro.status})` };
        if (b.text.includes('b-44')) return { blocked: false, detail: `tenant B's token ran sandbox_exec in tenant A's session (${b.status})` };
        const touched = await untouched(ctx, id);
        if (touched) return { blocked: false, detail: touched };
        return { blocked: true, detail: `read-only token in A's session -> ${ro.status}, tenant B's token -> ${b.status}; neither ran` };
      } finally {
        await call(ctx.api.port, 'DELETE', '/mcp', { token: ctx.api.tokenA, headers: { 'mcp-session-id': sid, 'mcp-protocol-version': MCP_PROTO } });
      }
    },
  },
  {
    id: 'api.mcp-other-tenant-sandbox',
    category: 'api',
    title: "tenant B's own MCP session running sandbox_exec and sandbox_read_file on tenant A's sandbox",
    async run(ctx) {
      const init = await mcpPost(ctx, ctx.api.tokenB, { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: MCP_PROTO, capabilities: {}, clientInfo: { name: 'doctor', version: '0' } } });
      if (init.status !== 200 || !init.sid) return { blocked: false, detail: `setup: initialize with B's token got ${init.status}` };
      const sid = init.sid;
      try {
        await mcpPost(ctx, ctx.api.tokenB, { jsonrpc: '2.0', method: 'notifications/initialized' }, sid);
        const ex = await mcpPost(ctx, ctx.api.tokenB, { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'sandbox_exec', arguments: { id: ctx.sandboxes.busybox, command: 'echo x-$((40+5))' } } }, sid);
        // A secret only the file holds (ids and hostnames may be echoed by an error message).
        const secret = newMarker();
        await ctx.exec(ctx.sandboxes.busybox, ['sh', '-c', `echo ${secret} > /workspace/mcp-secret-${secret}`]);
        const rd = await mcpPost(ctx, ctx.api.tokenB, { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'sandbox_read_file', arguments: { id: ctx.sandboxes.busybox, path: `/workspace/mcp-secret-${secret}` } } }, sid);
        await ctx.exec(ctx.sandboxes.busybox, ['rm', '-f', `/workspace/mcp-secret-${secret}`]);
        if (ex.text.includes('x-45')) return { blocked: false, detail: "tenant B's MCP sandbox_exec ran in tenant A's sandbox" };
        if (rd.text.split(`mcp-secret-${secret}`).join('').includes(secret)) return { blocked: false, detail: "tenant B's MCP sandbox_read_file read tenant A's file" };
        return { blocked: true, detail: `both refused (${ex.text.replace(/\s+/g, ' ').slice(0, 80)})` };
      } finally {
        await call(ctx.api.port, 'DELETE', '/mcp', { token: ctx.api.tokenB, headers: { 'mcp-session-id': sid, 'mcp-protocol-version': MCP_PROTO } });
      }
    },
  },
  {
    id: 'api.files-traversal',
    category: 'api',
    title: 'files API out of the sandbox: ../, encoded ../, and symlinks in /workspace pointing at host paths',
    needs: [],
    async run(ctx) {
      const canary = ctx.canary;
      if (!canary) return { blocked: false, detail: 'setup: the runner gave no host canary file' };
      const id = ctx.sandboxes.busybox;
      const host = canary.hostFile;
      const hostDir = dirname(host);
      const m = newMarker();
      const written = join(hostDir, `written-by-sandbox-${m}`);
      await ctx.exec(id, ['sh', '-c', `cd /workspace && ln -sf ${host} ${m}-file && ln -sfn / ${m}-root && ln -sfn /proc/1/root ${m}-proc && ln -sfn ${hostDir} ${m}-dir && ln -sf ${written} ${m}-w && mkdir -p ${m}-d`]);
      const up = '../'.repeat(12);
      const reads = [
        `/workspace/${up}${host.slice(1)}`,
        `/workspace/${m}-d/${up}${host.slice(1)}`,
        host,
        `/workspace/${m}-file`,
        `/workspace/${m}-root${host}`,
        `/workspace/${m}-proc${host}`,
        `/workspace/${m}-dir/host-secret.txt`,
        `/proc/1/root${host}`,
        `/proc/self/root${host}`,
      ];
      const seen: string[] = [];
      const check = (what: string, a: RawAnswer): void => {
        if (a.status >= 500) seen.push(`${what} -> ${a.status} (a server error, not a refusal)`);
        if (a.body.includes(canary.value)) seen.push(`${what} -> the host file's content`);
        // A listing of the host directory names the canary file as an entry (an error message may echo the path: that is fine).
        if (a.status === 200 && /"name"\s*:\s*"host-secret\.txt"/.test(a.body)) seen.push(`${what} -> a listing of the host directory`);
      };
      for (const p of reads) check(`read ${p}`, await call(ctx.api.port, 'GET', `/v1/sandboxes/${id}/files?path=${enc(p)}`, { token: ctx.api.tokenA }));
      const rawPaths = [`/workspace/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e${host}`, `/workspace/%252e%252e/%252e%252e${host}`, `/workspace/..%2f..%2f..%2f..%2f..%2f..%2f..%2f..${host}`];
      for (const p of rawPaths) check(`read ${p}`, await call(ctx.api.port, 'GET', `/v1/sandboxes/${id}/files?path=${p}`, { token: ctx.api.tokenA }));
      for (const p of [`/workspace/${m}-dir`, `/workspace/${m}-root${hostDir}`, `/workspace/${up}${hostDir.slice(1)}`]) {
        check(`list ${p}`, await call(ctx.api.port, 'GET', `/v1/sandboxes/${id}/files/list?path=${enc(p)}`, { token: ctx.api.tokenA }));
      }
      for (const p of [`/workspace/${m}-w`, `/workspace/${m}-dir/written-by-sandbox-${m}`, `/workspace/${up}${written.slice(1)}`, `/workspace/${m}-root${written}`]) {
        check(`write ${p}`, await call(ctx.api.port, 'PUT', `/v1/sandboxes/${id}/files?path=${enc(p)}`, { token: ctx.api.tokenA, body: 'owned', headers: { 'content-type': 'application/octet-stream' } }));
      }
      for (const p of [`/workspace/${m}-dir/host-secret.txt`, `/workspace/${m}-file`]) {
        await call(ctx.api.port, 'DELETE', `/v1/sandboxes/${id}/files?path=${enc(p)}`, { token: ctx.api.tokenA });
      }
      if (existsSync(written)) seen.push(`a write through the files API created ${written} on the host`);
      if (!existsSync(host)) seen.push(`a delete through the files API removed ${host} on the host`);
      await ctx.exec(id, ['sh', '-c', `rm -rf /workspace/${m}-*`]);
      return seen.length === 0
        ? { blocked: true, detail: `${reads.length + rawPaths.length} reads, 3 listings, 4 writes and 2 deletes aimed at ${hostDir}: none reached the host` }
        : { blocked: false, detail: seen.join('; ') };
    },
  },
  {
    id: 'api.volume-files-symlinks',
    category: 'api',
    title: 'volume files API (no sandbox) out of the volume: symlinks a sandbox planted in it (absolute, ../.., /proc/self/root), another tenant\'s volume',
    needs: [],
    async run(ctx) {
      const canary = ctx.canary;
      if (!canary) return { blocked: false, detail: 'setup: the runner gave no host canary file' };
      const host = canary.hostFile;
      const hostDir = dirname(host);
      const m = newMarker();
      const name = `doctor-${m}`;
      const written = join(hostDir, `written-by-volume-${m}`);
      const up = '../'.repeat(12);
      await ctx.client.createVolume(name, { sizeMb: 16 });
      const seen: string[] = [];
      let id: string | undefined;
      try {
        id = await ctx.scratch({ image: 'busybox', volumes: [{ name, target: '/data' }] });
        await ctx.exec(id, ['sh', '-c', `cd /data && ln -s ${host} file && ln -s / root && ln -s /proc/self/root proc && ln -s /proc/1/root proc1 && ln -s ${hostDir} dir && ln -s ${written} w && ln -s ${up}${hostDir.slice(1)} up`]);
        // Files without a sandbox: the volume is mounted by the daemon alone.
        await ctx.client.delete(id);
        const base = `/v1/volumes/${name}/files`;
        const check = (what: string, a: RawAnswer): void => {
          if (a.status >= 500) seen.push(`${what} -> ${a.status} (a server error, not a refusal)`);
          if (a.body.includes(canary.value)) seen.push(`${what} -> the host file's content`);
          if (a.status === 200 && /"name"\s*:\s*"host-secret\.txt"/.test(a.body)) seen.push(`${what} -> a listing of the host directory`);
        };
        for (const p of ['/file', `/root${host}`, `/proc${host}`, `/proc1${host}`, '/dir/host-secret.txt', '/up/host-secret.txt', `/${up}${host.slice(1)}`]) {
          check(`read ${p}`, await call(ctx.api.port, 'GET', `${base}?path=${enc(p)}`, { token: ctx.api.tokenA }));
        }
        for (const p of ['/dir', `/root${hostDir}`, '/up', '/proc1/']) check(`list ${p}`, await call(ctx.api.port, 'GET', `${base}/list?path=${enc(p)}`, { token: ctx.api.tokenA }));
        for (const p of ['/w', `/dir/written-by-volume-${m}`, `/root${written}`, `/up/written-by-volume-${m}`]) {
          check(`write ${p}`, await call(ctx.api.port, 'PUT', `${base}?path=${enc(p)}`, { token: ctx.api.tokenA, body: 'owned', headers: { 'content-type': 'application/octet-stream' } }));
        }
        for (const p of ['/dir/host-secret.txt', '/up/host-secret.txt', `/root${host}`]) await call(ctx.api.port, 'DELETE', `${base}?path=${enc(p)}`, { token: ctx.api.tokenA });
        if (existsSync(written)) seen.push(`a write through the volume files API created ${written} on the host`);
        if (!existsSync(host)) seen.push(`a delete through the volume files API removed ${host} on the host`);
        for (const [what, a] of [
          ['tenant B reads', await call(ctx.api.port, 'GET', `${base}?path=/w`, { token: ctx.api.tokenB })],
          ['tenant B lists', await call(ctx.api.port, 'GET', `${base}/list?path=/`, { token: ctx.api.tokenB })],
          ['tenant B removes the volume', await call(ctx.api.port, 'DELETE', `/v1/volumes/${name}`, { token: ctx.api.tokenB })],
        ] as const) {
          if (!isHidden(a.status)) seen.push(`${what} -> ${statusOf(a)}`);
        }
      } finally {
        if (id) await ctx.client.delete(id).catch(() => undefined);
        await ctx.client.deleteVolume(name).catch(() => undefined);
      }
      return seen.length === 0
        ? { blocked: true, detail: '7 reads, 4 listings, 4 writes and 3 deletes through symlinks planted in a volume, aimed at the host: all stayed inside the volume; tenant B got 404' }
        : { blocked: false, detail: seen.join('; ') };
    },
  },
  {
    id: 'api.oversize-bodies',
    category: 'api',
    title: 'oversize JSON bodies (create 24 MiB, exec stdin past its limit): a 4xx, never a 5xx, the daemon still answers',
    needs: [],
    async run(ctx) {
      const big = `{"image":"busybox","labels":{"a":"${'x'.repeat(24 * 1024 * 1024)}"}}`;
      const stdin = JSON.stringify({ cmd: ['true'], stdin: 'y'.repeat(17 * 1024 * 1024) });
      const checks: Expect[] = [
        { what: 'create 24 MiB', answer: await call(ctx.api.port, 'POST', '/v1/sandboxes', { token: ctx.api.tokenA, body: big }), ok: (s) => is4xx(s) || s === 0 },
        { what: 'exec stdin 17 MiB', answer: await call(ctx.api.port, 'POST', `/v1/sandboxes/${ctx.sandboxes.busybox}/exec`, { token: ctx.api.tokenA, body: stdin }), ok: (s) => is4xx(s) || s === 0 },
        { what: 'egress approve 2 MiB', answer: await call(ctx.api.port, 'POST', `/v1/sandboxes/${ctx.sandboxes.busybox}/egress/allow`, { token: ctx.api.tokenA, body: JSON.stringify({ host: 'a'.repeat(2 * 1024 * 1024) }) }), ok: is4xx },
      ];
      const after = await call(ctx.api.port, 'GET', '/v1/sandboxes', { token: ctx.api.tokenA });
      if (after.status !== 200) return { blocked: false, detail: `the daemon stopped answering after oversize bodies (${statusOf(after)})` };
      return verdict(checks, 'refused, daemon fine');
    },
  },
  {
    id: 'api.malformed-bodies',
    category: 'api',
    title: 'malformed JSON (truncated, wrong types, deep nesting, invalid UTF-8, prototype keys): 4xx, nothing created',
    needs: [],
    async run(ctx) {
      const bodies: [string, string | Buffer][] = [
        ['truncated', '{"image":'],
        ['array', '[]'],
        ['null', 'null'],
        ['wrong type', '{"image":1}'],
        ['unknown key', '{"image":"busybox","privileged":true}'],
        ['deep nesting', `${'['.repeat(200_000)}${']'.repeat(200_000)}`],
        ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d])],
        ['__proto__', '{"__proto__":{"runtime":"docker","image":"busybox"},"constructor":{"prototype":{"x":1}}}'],
        ['huge number', '{"image":"busybox","limits":{"memoryMb":1e309}}'],
        ['negative limits', '{"image":"busybox","limits":{"memoryMb":-1,"pids":-1}}'],
      ];
      const checks: Expect[] = [];
      for (const [what, body] of bodies) checks.push({ what, answer: await call(ctx.api.port, 'POST', '/v1/sandboxes', { token: ctx.api.tokenA, body }), ok: is4xx });
      checks.push({ what: 'exec cmd []', answer: await call(ctx.api.port, 'POST', `/v1/sandboxes/${ctx.sandboxes.busybox}/exec`, { token: ctx.api.tokenA, body: '{"cmd":[]}' }), ok: is4xx });
      checks.push({ what: 'exec cmd string', answer: await call(ctx.api.port, 'POST', `/v1/sandboxes/${ctx.sandboxes.busybox}/exec`, { token: ctx.api.tokenA, body: '{"cmd":"id"}' }), ok: is4xx });
      for (const c of checks.filter((x) => x.answer.status === 201)) {
        const id = (JSON.parse(c.answer.body) as { id?: string }).id;
        if (id) await ctx.client.delete(id).catch(() => undefined);
      }
      return verdict(checks, 'all 4xx');
    },
  },
  {
    id: 'api.malformed-percent-encoding',
    category: 'api',
    title: 'malformed percent-encoding and NUL in paths and queries: a 4xx, never a 500',
    needs: [],
    async run(ctx) {
      const id = ctx.sandboxes.busybox;
      const paths = ['/v1/sandboxes/%E0%A4%A', '/v1/sandboxes/%ZZ', '/v1/sandboxes/%', `/v1/sandboxes/${id}%00`, `/v1/sandboxes/${id}/files?path=%E0%A4%A`, `/v1/sandboxes/${id}/files?path=/workspace/%00x`, `/v1/sandboxes/${id}/files/list?path=%C0%AF`, '/v1/sandboxes?labels=%FF', `/v1/sandboxes/${id}/execs/%E0%A4%A`];
      const checks: Expect[] = [];
      for (const p of paths) checks.push({ what: p.replace(id, '{id}'), answer: await call(ctx.api.port, 'GET', p, { token: ctx.api.tokenA }), ok: is4xx });
      return verdict(checks, 'all 4xx');
    },
  },
  {
    id: 'api.header-injection',
    category: 'api',
    title: 'CRLF in values the daemon may reflect into headers (path, session id, labels), obs-fold and bare-LF headers',
    needs: [],
    async run(ctx) {
      const port = ctx.api.port;
      const auth = `Authorization: Bearer ${ctx.api.tokenA}\r\n`;
      const raws: [string, string][] = [
        ['CRLF in path', `GET /v1/sandboxes/sbx_x%0d%0aSet-Cookie:%20doctor=pwn HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${auth}Connection: close\r\n\r\n`],
        ['CRLF in MCP session id', `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${auth}Mcp-Session-Id: x\rSet-Cookie: doctor=pwn\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`],
        ['obs-fold', `GET /v1/sandboxes HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer wrong\r\n ${ctx.api.tokenA}\r\nConnection: close\r\n\r\n`],
        ['bare LF', `GET /v1/sandboxes HTTP/1.1\nHost: 127.0.0.1:${port}\nAuthorization: Bearer wrong\n\rX: y\nConnection: close\n\n`],
      ];
      const bad: string[] = [];
      const seen: string[] = [];
      for (const [what, data] of raws) {
        const answer = await rawCall(port, data);
        const head = answer.split('\r\n\r\n')[0] ?? '';
        const status = /^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 'none';
        seen.push(`${what} ${status}`);
        if (/\r\nset-cookie:\s*doctor=pwn/i.test(head)) bad.push(`${what}: the injected header came back`);
        if (status.startsWith('5')) bad.push(`${what}: ${status}`);
        if (what === 'obs-fold' && status === '200') bad.push('obs-fold: a folded Authorization header authenticated');
      }
      // Labels with CRLF, reflected anywhere in a header of the create answer.
      const r = await call(port, 'POST', '/v1/sandboxes', { token: ctx.api.tokenA, body: JSON.stringify({ image: 'busybox', labels: { 'doctor-attack': 'x\r\nSet-Cookie: doctor=pwn' } }) });
      if (r.status === 201) await ctx.client.delete((JSON.parse(r.body) as { id: string }).id).catch(() => undefined);
      if (JSON.stringify(r.headers).toLowerCase().includes('doctor=pwn')) bad.push('a label value came back as a header');
      seen.push(`CRLF in a label ${r.status}`);
      return bad.length === 0 ? { blocked: true, detail: `no injected header, no 5xx: ${seen.join(', ')}` } : { blocked: false, detail: bad.join('; ') };
    },
  },
  {
    id: 'api.cross-origin-browser',
    category: 'api',
    title: 'browser-style cross-origin requests: text/plain POST with a foreign Origin and Host, a rebinding GET with a foreign Host',
    needs: [],
    async run(ctx) {
      const port = ctx.api.port;
      const marker = newMarker();
      const body = JSON.stringify({ image: 'busybox', labels: { 'doctor-csrf': marker } });
      const checks: Expect[] = [
        { what: 'text/plain POST, Origin+Host evil', answer: await call(port, 'POST', '/v1/sandboxes', { token: ctx.api.tokenA, body, headers: { 'content-type': 'text/plain', origin: 'http://evil.example', host: `evil.example:${port}` } }), ok: is4xx },
        { what: 'text/plain POST, Origin evil', answer: await call(port, 'POST', '/v1/sandboxes', { token: ctx.api.tokenA, body, headers: { 'content-type': 'text/plain', origin: 'http://evil.example' } }), ok: is4xx },
        { what: 'JSON POST, Origin evil', answer: await call(port, 'POST', '/v1/sandboxes', { token: ctx.api.tokenA, body, headers: { origin: 'http://evil.example' } }), ok: is4xx },
        { what: 'GET, Host evil (rebinding)', answer: await call(port, 'GET', '/v1/sandboxes', { token: ctx.api.tokenA, headers: { host: `evil.example:${port}` } }), ok: is4xx },
        { what: 'exec, Origin null', answer: await call(port, 'POST', `/v1/sandboxes/${ctx.sandboxes.busybox}/exec`, { token: ctx.api.tokenA, body: JSON.stringify({ cmd: ['sh', '-c', 'echo owned > /workspace/api-owned'] }), headers: { 'content-type': 'text/plain', origin: 'null' } }), ok: is4xx },
      ];
      const made = await ctx.client.list({ labels: { 'doctor-csrf': marker } });
      for (const s of made) await ctx.client.delete(s.id).catch(() => undefined);
      const control = await call(port, 'GET', '/v1/sandboxes', { token: ctx.api.tokenA });
      if (control.status !== 200) return { blocked: false, detail: `control: a same-origin GET failed (${statusOf(control)})` };
      const v = verdict(checks, 'refused, nothing created');
      if (made.length > 0) return { blocked: false, detail: `created ${made.length} sandbox(es) from cross-origin requests; ${v.detail}` };
      const touched = await untouched(ctx, ctx.sandboxes.busybox);
      return touched ? { blocked: false, detail: touched } : v;
    },
  },
  {
    id: 'api.metrics-tenant-leak',
    category: 'api',
    title: "/metrics with another tenant's token shows nothing of tenant A; without a token it is refused",
    needs: [],
    async run(ctx) {
      const withB = await call(ctx.api.port, 'GET', '/metrics', { token: ctx.api.tokenB });
      const none = await call(ctx.api.port, 'GET', '/metrics');
      const leaks = [...Object.values(ctx.sandboxes).filter((id) => id !== ctx.sandboxes.otherTenant), 'tenant-a', ctx.api.tokenA].filter((s) => withB.body.includes(s));
      if (none.status === 200) return { blocked: false, detail: '/metrics answered without a token' };
      if (leaks.length > 0) return { blocked: false, detail: `/metrics with tenant B's token names ${leaks.join(', ')}` };
      // Counts are a leak too: B has one sandbox, so a gauge of all sandboxes would say more.
      const gauge = /^agentbox_sandboxes(?:_active|_running)?(?:\{[^}]*\})?\s+(\d+)/m.exec(withB.body);
      if (gauge && Number(gauge[1]) > 1) return { blocked: false, detail: `/metrics with tenant B's token counts ${gauge[1]} sandboxes (B has 1): other tenants' counts` };
      return { blocked: true, detail: `no token -> ${none.status}; tenant B's token -> ${withB.status}, nothing of tenant A` };
    },
  },
  {
    id: 'api.healthz-leak',
    category: 'api',
    title: '/healthz without a token says ok or not ok, and nothing about versions, paths or runtimes',
    needs: [],
    async run(ctx) {
      const a = await call(ctx.api.port, 'GET', '/healthz');
      const canaryDir = ctx.canary ? dirname(ctx.canary.hostFile) : '/nonexistent';
      const tells = ['0.1.0', canaryDir, '/images', '/var/', '/root', '/tmp', 'bubblewrap', 'dockerd', 'cgroup', 'runsc', 'unix:', '.sock'].filter((s) => a.body.includes(s));
      return tells.length === 0 && a.status !== 0
        ? { blocked: true, detail: `${a.status}: ${a.body.slice(0, 100)}` }
        : { blocked: false, detail: `/healthz without a token tells ${tells.join(', ') || statusOf(a)}: ${a.body.replace(/\s+/g, ' ').slice(0, 160)}` };
    },
  },
  {
    id: 'api.image-pull-as-tenant',
    category: 'api',
    title: 'a tenant pulling an image into the host-wide image store (the registry is a closed loopback port)',
    needs: [],
    async run(ctx) {
      // The reference points at 127.0.0.1:9 (discard, nothing listens): even if the pull were allowed it goes nowhere.
      const a = await call(ctx.api.port, 'POST', '/v1/images/pull', { token: ctx.api.tokenA, body: JSON.stringify({ ref: '127.0.0.1:9/doctor/none:1', name: `doctor-${newMarker()}` }) });
      const ro = await call(ctx.api.port, 'POST', '/v1/images/pull', { token: ctx.api.tokenReadOnlyA, body: JSON.stringify({ ref: '127.0.0.1:9/doctor/none:1' }) });
      return verdict([{ what: 'tenant A', answer: a, ok: is403 }, { what: 'read-only token', answer: ro, ok: is403 }], 'forbidden');
    },
  },
  {
    id: 'api.egress-approve-closed',
    category: 'api',
    title: 'live egress approval of closed addresses (metadata, loopback in mapped IPv6, a globally denied name), and approval by a read-only token',
    needs: ['python3', 'isolatedNetwork'],
    async run(ctx) {
      const id = await ctx.scratch({ egress: { mode: 'allowlist', allow: ['allowed.attack.test:80'] } });
      const hosts = ['169.254.169.254:80', '[::ffff:a9fe:a9fe]:80', 'metadata.google.internal:80', `127.0.0.1:${ctx.api.port}`, `[::ffff:7f00:1]:${ctx.api.port}`, 'c2.attack.test:80', '10.0.0.1:80', '2852039166:80'];
      const accepted: string[] = [];
      const statuses: string[] = [];
      for (const h of hosts) {
        const a = await call(ctx.api.port, 'POST', `/v1/sandboxes/${id}/egress/allow`, { token: ctx.api.tokenA, body: JSON.stringify({ host: h }) });
        statuses.push(`${h} ${a.status}`);
        if (a.status === 200) accepted.push(h);
        else if (!is4xx(a.status)) return { blocked: false, detail: `approving ${h} -> ${statusOf(a)} (not a refusal)` };
      }
      const ro = await call(ctx.api.port, 'POST', `/v1/sandboxes/${id}/egress/allow`, { token: ctx.api.tokenReadOnlyA, body: JSON.stringify({ host: 'denied.attack.test:80' }) });
      if (ro.status !== 403) return { blocked: false, detail: `a read-only token approved egress (${statusOf(ro)})` };
      if (accepted.length === 0) return { blocked: true, detail: `every approval refused (${statuses.join(', ')})` };
      // Accepted: then the proxy must still refuse each of them.
      const attempts: Attempt[] = accepted.map((h) => ({ kind: 'connect', target: h }));
      const { results, marker } = await probe(ctx, id, attempts);
      const v = allRefused(ctx, results, marker, `approved ${accepted.join(' ')}, then`);
      return v;
    },
  },
  {
    id: 'api.create-allowlist-closed',
    category: 'api',
    title: 'a create whose allowlist names a closed address (metadata, mapped-IPv6 loopback, private) or a denied name',
    needs: ['python3', 'isolatedNetwork'],
    async run(ctx) {
      const lists = [['169.254.169.254:80'], [`[::ffff:7f00:1]:${ctx.api.port}`], [`[0:0:0:0:0:ffff:7f00:1]:${ctx.api.port}`], ['[::ffff:a00:1]:80'], ['10.0.0.1:80'], ['c2.attack.test:80'], ['metadata.google.internal']];
      const out: string[] = [];
      for (const allow of lists) {
        const a = await call(ctx.api.port, 'POST', '/v1/sandboxes', { token: ctx.api.tokenA, body: JSON.stringify({ image: 'debian', egress: { mode: 'allowlist', allow }, labels: { 'doctor-attack': 'allow-closed' }, ...(ctx.runtime === 'local' ? { runtime: 'local' } : { runtime: 'docker', isolation: ctx.runtime === 'docker' ? 'container' : 'gvisor' }) }) });
        if (is4xx(a.status)) {
          out.push(`${allow[0]} refused ${a.status}`);
          continue;
        }
        if (a.status !== 201) return { blocked: false, detail: `create with ${allow[0]} -> ${statusOf(a)}` };
        const id = (JSON.parse(a.body) as { id: string }).id;
        try {
          const target = (allow[0] as string).includes(':') && !(allow[0] as string).endsWith(']') ? (allow[0] as string) : `${allow[0] as string}:80`;
          const { results, marker } = await probe(ctx, id, [{ kind: 'connect', target }, { kind: 'get', url: `http://${target}/` }]);
          const v = allRefused(ctx, results, marker, `allowlist ${allow[0]} accepted, then`);
          if (!v.blocked) return v;
          out.push(`${allow[0]} accepted, proxy refused`);
        } finally {
          await ctx.client.delete(id).catch(() => undefined);
        }
      }
      return { blocked: true, detail: out.join(', ') };
    },
  },
  {
    id: 'api.socket-and-home-modes',
    category: 'api',
    title: "the daemon's Unix socket and home are the owner's only (the socket is trusted as the local operator)",
    needs: [],
    async run(ctx) {
      const sock = statSync(ctx.api.socketPath);
      const home = statSync(dirname(ctx.api.socketPath));
      const problems: string[] = [];
      if ((sock.mode & 0o077) !== 0) problems.push(`socket mode ${(sock.mode & 0o777).toString(8)}`);
      if ((home.mode & 0o077) !== 0) problems.push(`home mode ${(home.mode & 0o777).toString(8)}`);
      if (sock.uid !== process.getuid?.()) problems.push(`socket owned by uid ${sock.uid}`);
      return problems.length === 0 ? { blocked: true, detail: `socket ${(sock.mode & 0o777).toString(8)}, home ${(home.mode & 0o777).toString(8)}` } : { blocked: false, detail: problems.join(', ') };
    },
  },
];
