/**
 * Terminals (issue 18) against a real daemon on loopback TCP and on its Unix socket, local runtime:
 * the SDK's TerminalConnection, the WebSocket's own rules (close codes, refusals as plain HTTP),
 * reattaching with replay, the hang-up of a terminal nobody is attached to, DELETE, tenants and
 * scopes, and the CLI (`agentbox shell` in a real pseudo-terminal on the host, `agentbox exec -t`).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { ConflictError, ForbiddenError, NotFoundError } from '../../src/contract/errors.js';
import type { Terminal } from '../../src/contract/terminals.js';
import { cliEntry } from '../../src/core/config.js';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import type { TerminalConnection } from '../../src/sdk/terminal.js';
import { closeDaemonLeavingNothing } from '../helpers/daemon-teardown.js';
import { hasDebian, TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { localSkip } from '../helpers/local-sandbox.js';

const ALICE = 'alice-token-0123456789';
const READER = 'alice-reader-token-0123456789';
const BOB = 'bob-token-0123456789';
const POLICY = `version: 1
defaults:
  image: busybox
  limits: { cpus: 1, memoryMb: 256, pids: 128, diskMb: 128 }
  ttl: 1h
  idleTimeout: 15m
tenants:
  - name: alice
    tokens: [${ALICE}]
    scopedTokens:
      - { token: ${READER}, scopes: [read] }
  - name: bob
    tokens: [${BOB}]
`;
/** The daemon's grace before hanging up a terminal nobody is attached to (30 s in production). */
const GRACE_MS = 1500;

/** What a terminal showed to one client, with a way to wait for something to appear. */
class Screen {
  text = '';
  private waiters: (() => void)[] = [];

  constructor(readonly conn: TerminalConnection) {
    conn.on('data', (d) => {
      this.text += d.toString('utf8');
      for (const w of this.waiters) w();
    });
  }

  /** Resolves once `re` matches what was shown after `from` (a length of `text`); fails naming what was shown. */
  async waitFor(re: RegExp, opts: { from?: number; timeoutMs?: number } = {}): Promise<RegExpMatchArray> {
    const from = opts.from ?? 0;
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    for (;;) {
      const m = this.text.slice(from).match(re);
      if (m) return m;
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`no ${re} on the terminal within ${opts.timeoutMs ?? 10_000} ms; it showed: ${JSON.stringify(this.text.slice(-400))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
      this.waiters = [];
    }
  }

  /** Type a line (Enter is CR on a terminal) and wait for `re` in what follows. */
  async run(line: string, re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray> {
    const from = this.text.length;
    this.conn.write(`${line}\r`);
    return this.waitFor(re, { from, ...(timeoutMs ? { timeoutMs } : {}) });
  }
}

interface RawAnswer {
  status: number;
  body: string;
  headers: IncomingMessage['headers'];
  /** The daemon switched protocols (it should not have). */
  upgraded: boolean;
}

/** One HTTP request as given, on TCP or the Unix socket; an upgrade the daemon accepts is reported, not used. */
function raw(target: { port: number } | { socketPath: string }, method: string, path: string, headers: Record<string, string>, body?: string): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({ ...('port' in target ? { host: '127.0.0.1', port: target.port } : { socketPath: target.socketPath }), method, path, headers }, async (res) => {
      resolve({ status: res.statusCode ?? 0, body: (await readAll(res)).toString('utf8'), headers: res.headers, upgraded: false });
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, body: '', headers: res.headers, upgraded: true });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const WS_HEADERS = { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' };

/** Fails naming `what` unless `p` settles within `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new assert.AssertionError({ message: `${what}: not within ${ms} ms` })), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The connection's end: the command's exit code, or null when it closed before; within 15 s. */
function exitOf(conn: TerminalConnection): Promise<number | null> {
  return within(conn.exit, 15_000, 'the terminal connection ending');
}

interface RawSocket {
  ws: WebSocket;
  /** The close code and reason, within 10 s. */
  closed: (what?: string) => Promise<{ code: number; reason: string }>;
  /** Binary messages so far, as text. */
  shown: () => string;
  /** Text messages so far. */
  texts: string[];
}

/** A WebSocket straight from `ws`, to see what the SDK hides: close codes, refusals. Messages are kept from the first. */
function rawSocket(url: string, headers: Record<string, string>, protocols: string[] = []): Promise<RawSocket | { status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { headers, perMessageDeflate: false });
    const closed = new Promise<{ code: number; reason: string }>((res) => ws.on('close', (code, reason) => res({ code, reason: reason.toString('utf8') })));
    let shown = '';
    const texts: string[] = [];
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      const text = (Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer)).toString('utf8');
      if (isBinary) shown += text;
      else texts.push(text);
    });
    ws.once('open', () => resolve({ ws, closed: (what = "the WebSocket") => within(closed, 10_000, `${what} closing`), shown: () => shown, texts }));
    ws.once('unexpected-response', (_req, res) => {
      void readAll(res).then((b) => resolve({ status: res.statusCode ?? 0, body: b.toString('utf8') }), reject);
    });
    ws.on('error', reject);
  });
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await sleep(100);
  }
}

describe('terminals', { skip: localSkip }, () => {
  let home: string;
  let daemon: Daemon | undefined;
  let port: number;
  let socketPath: string;
  let alice: AgentboxClient;
  let bob: AgentboxClient;
  let reader: AgentboxClient;
  let operator: AgentboxClient;
  /** alice's busybox sandbox, shared by the tests (each opens its own terminals). */
  let sbx: string;
  const auth = { authorization: `Bearer ${ALICE}` };

  const getTerminal = async (sandboxId: string, terminalId: string, token = ALICE): Promise<Terminal> => {
    const r = await raw({ port }, 'GET', `/v1/sandboxes/${sandboxId}/terminals/${terminalId}`, { authorization: `Bearer ${token}` });
    assert.equal(r.status, 200, r.body);
    return JSON.parse(r.body) as Terminal;
  };
  const attachUrl = (sandboxId: string, terminalId: string): string => `ws://127.0.0.1:${port}/v1/sandboxes/${sandboxId}/terminals/${terminalId}/attach`;
  /** The processes a terminal started that are still in the sandbox. */
  const processesOf = async (terminalId: string): Promise<string[]> => (await alice.processes(sbx)).filter((p) => p.execId === terminalId).map((p) => p.command);

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-term-'));
    const policyPath = join(home, 'policy.yaml');
    writeFileSync(policyPath, POLICY);
    socketPath = join(home, 'agentbox.sock');
    daemon = await startDaemon({
      env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR },
      logger: silentLogger(),
      policyPath,
      socket: socketPath,
      tcp: { host: '127.0.0.1', port: 0 },
      terminalGraceMs: GRACE_MS,
      // Short HTTP limits: a WebSocket lives far longer than any of them and must not be cut by them.
      http: { headersTimeoutMs: 1500, requestTimeoutMs: 2000, idleTimeoutMs: 1500 },
    });
    port = daemon.tcpAddress!.port;
    alice = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: ALICE });
    bob = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: BOB });
    reader = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: READER });
    operator = new AgentboxClient({ url: `unix:${socketPath}` });
    sbx = (await alice.create()).id;
  });

  after(async () => {
    await closeDaemonLeavingNothing(daemon, home, async () => {
      for (const c of [alice, bob, operator]) for (const sb of await c.list()) await c.delete(sb.id);
    });
  });

  test('open and attach over the SDK: a terminal inside, resize, Ctrl-C, exit code on the socket, the terminal and the exec history', async () => {
    const t = await alice.openTerminal(sbx, { cols: 80, rows: 24 });
    assert.equal(t.sandboxId, sbx);
    assert.equal(t.exitCode, null);
    assert.equal(t.keepAlive, false);
    assert.ok((await alice.listTerminals(sbx)).some((x) => x.terminalId === t.terminalId));
    const conn = await alice.attachTerminal(sbx, t.terminalId);
    const screen = new Screen(conn);
    // The typed line shows `tty-$((6*7))`; only the shell's answer shows tty-42.
    await screen.run('[ -t 0 ] && echo tty-$((6*7))', /tty-42/);
    assert.equal((await getTerminal(sbx, t.terminalId)).attached, 1);

    conn.resize(100, 37);
    await screen.run('stty size', /[\r\n]37 100\r\n/);
    const resized = await getTerminal(sbx, t.terminalId);
    assert.deepEqual([resized.cols, resized.rows], [100, 37]);
    const viaHttp = await raw({ port }, 'POST', `/v1/sandboxes/${sbx}/terminals/${t.terminalId}/resize`, { ...auth, 'content-type': 'application/json' }, '{"cols":90,"rows":30}');
    assert.equal(viaHttp.status, 200, viaHttp.body);
    await screen.run('stty size', /[\r\n]30 90\r\n/);

    // Ctrl-C is a byte like any other: the terminal inside makes it a SIGINT for the foreground job.
    const from = screen.text.length;
    conn.write('sleep 30\r');
    await until('the foreground sleep', async () => ((await processesOf(t.terminalId)).includes('sleep 30') ? true : undefined));
    const t0 = Date.now();
    conn.write('\x03');
    conn.write('echo rc=$?\r');
    await screen.waitFor(/rc=130/, { from });
    assert.ok(Date.now() - t0 < 10_000);
    assert.ok(!(await processesOf(t.terminalId)).includes('sleep 30'), 'the sleep survived Ctrl-C');

    conn.write('exit 3\r');
    assert.equal(await exitOf(conn), 3);
    const ended = await getTerminal(sbx, t.terminalId);
    assert.equal(ended.exitCode, 3);
    assert.equal(ended.attached, 0);
    const record = await alice.execRecord(sbx, t.terminalId);
    assert.equal(record.exitCode, 3);
    assert.equal(record.state, 'ended');
    assert.match(record.stdout ?? '', /tty-42/);
    assert.ok((await alice.execs(sbx)).some((e) => e.execId === t.terminalId));
    assert.deepEqual(await processesOf(t.terminalId), []);
  });

  test('a command instead of a shell; a signal control message; the socket closes with 1000 after the exit event', async () => {
    const t = await alice.openTerminal(sbx, { cmd: ['sh', '-c', 'echo ready; exec sleep 60'] });
    const r = await rawSocket(attachUrl(sbx, t.terminalId), auth);
    assert.ok('ws' in r, JSON.stringify(r));
    await until('ready', async () => (r.shown().includes('ready') ? true : undefined));
    r.ws.send(JSON.stringify({ type: 'signal', signal: 'TERM' }));
    const closed = await r.closed();
    assert.equal(closed.code, 1000);
    assert.deepEqual(r.texts.map((s) => JSON.parse(s) as unknown), [{ type: 'exit', exitCode: 143 }]);
    assert.equal((await getTerminal(sbx, t.terminalId)).exitCode, 143);
  });

  test('reconnect: the shell goes on without a client, a new client gets the earlier output first, two clients see the same output', async () => {
    const t = await alice.openTerminal(sbx, {});
    const first = new Screen(await alice.attachTerminal(sbx, t.terminalId));
    await first.run('echo first-$((2+3))', /first-5/);
    first.conn.close();
    assert.equal(await exitOf(first.conn), null, 'a detached client is told no exit code');
    // Nobody attached, within the grace period: still running.
    await sleep(GRACE_MS / 2);
    const detached = await getTerminal(sbx, t.terminalId);
    assert.equal(detached.exitCode, null);
    assert.equal(detached.attached, 0);
    assert.ok((await processesOf(t.terminalId)).length > 0, 'the shell is gone');

    const second = new Screen(await alice.attachTerminal(sbx, t.terminalId));
    // Nothing typed yet: the earlier output is a replay.
    await second.waitFor(/first-5/, { timeoutMs: 5000 });
    // Quiet past the daemon's HTTP idle and request timeouts (1.5 s, 2 s): a WebSocket is not cut by them.
    await sleep(2500);
    await second.run('echo second-$((3+4))', /second-7/);
    const third = new Screen(await alice.attachTerminal(sbx, t.terminalId));
    await third.waitFor(/second-7/, { timeoutMs: 5000 });
    assert.equal((await getTerminal(sbx, t.terminalId)).attached, 2);
    const [a, b] = [second.text.length, third.text.length];
    third.conn.write('echo both-$((4+5))\r');
    await second.waitFor(/both-9/, { from: a });
    await third.waitFor(/both-9/, { from: b });
    second.conn.write('exit 7\r');
    assert.deepEqual(await Promise.all([exitOf(second.conn), exitOf(third.conn)]), [7, 7]);
    // An ended terminal can still be attached to for a while: its last output, then its exit code.
    const late = new Screen(await alice.attachTerminal(sbx, t.terminalId));
    assert.equal(await exitOf(late.conn), 7);
    assert.match(late.text, /both-9/);
  });

  test('keepAlive false: hung up once nobody is attached for the grace period; keepAlive true: it stays', async () => {
    const dropped = await alice.openTerminal(sbx, {});
    const conn = await alice.attachTerminal(sbx, dropped.terminalId);
    conn.close();
    await exitOf(conn);
    const left = Date.now();
    const never = await alice.openTerminal(sbx, {});
    const kept = await alice.openTerminal(sbx, { keepAlive: true });
    assert.equal(kept.keepAlive, true);
    const keptConn = await alice.attachTerminal(sbx, kept.terminalId);
    keptConn.close();
    await exitOf(keptConn);

    await sleep(GRACE_MS / 3);
    assert.equal((await getTerminal(sbx, dropped.terminalId)).exitCode, null, 'hung up before the grace period');
    const hungUp = await until('the detached terminal hung up', async () => {
      const v = await getTerminal(sbx, dropped.terminalId);
      return v.exitCode === null ? undefined : v;
    });
    assert.ok(Date.now() - left >= GRACE_MS, `hung up after ${Date.now() - left} ms`);
    assert.equal(hungUp.exitCode, 129, 'a hung-up shell dies of SIGHUP');
    // Resizing over HTTP attaches nothing: it does not put the hang-up off.
    await until('the never-attached terminal hung up, resized all along', async () => {
      const r = await raw({ port }, 'POST', `/v1/sandboxes/${sbx}/terminals/${never.terminalId}/resize`, { ...auth, 'content-type': 'application/json' }, '{"cols":81,"rows":25}');
      assert.equal(r.status, 200, r.body);
      return (JSON.parse(r.body) as Terminal).exitCode === null ? undefined : true;
    }, GRACE_MS * 3);
    await until('no process left by the hung-up terminals', async () => ((await processesOf(dropped.terminalId)).length + (await processesOf(never.terminalId)).length === 0 ? true : undefined));

    await sleep(GRACE_MS * 2);
    assert.equal((await getTerminal(sbx, kept.terminalId)).exitCode, null, 'keepAlive terminal was hung up');
    const back = new Screen(await alice.attachTerminal(sbx, kept.terminalId));
    await back.run('echo kept-$((5*5))', /kept-25/);
    back.conn.write('exit\r');
    assert.equal(await exitOf(back.conn), 0);
  });

  test('DELETE hangs a terminal up and leaves no process in the sandbox, even one that ignores SIGHUP', async () => {
    const t = await alice.openTerminal(sbx, {});
    const screen = new Screen(await alice.attachTerminal(sbx, t.terminalId));
    await screen.run('trap "" HUP; sleep 301 & echo bg-$((1+1))', /bg-2/);
    screen.conn.write('sleep 302\r');
    await until('both sleeps', async () => {
      const ps = await processesOf(t.terminalId);
      return ps.includes('sleep 301') && ps.includes('sleep 302') ? true : undefined;
    });
    const closed = await alice.closeTerminal(sbx, t.terminalId);
    assert.equal(closed.terminalId, t.terminalId);
    const code = await exitOf(screen.conn);
    assert.notEqual(code, null, 'the attached client was not told the terminal ended');
    await until('no process left by the terminal', async () => ((await processesOf(t.terminalId)).length === 0 ? true : undefined), 8000);
    assert.notEqual((await getTerminal(sbx, t.terminalId)).exitCode, null);
    assert.equal((await alice.execRecord(sbx, t.terminalId)).state, 'ended');
    // Again: nothing to hang up, the same answer.
    assert.equal((await alice.closeTerminal(sbx, t.terminalId)).exitCode, code);
  });

  test('at most 16 running terminals per sandbox; deleting the sandbox ends its terminals and closes their sockets', async () => {
    const sb = (await alice.create()).id;
    const opened = [];
    for (let i = 0; i < 16; i++) opened.push(await alice.openTerminal(sb, { cmd: ['sleep', '600'], keepAlive: true }));
    await assert.rejects(alice.openTerminal(sb, {}), ConflictError);
    const closed = opened.pop() as Terminal;
    await alice.closeTerminal(sb, closed.terminalId);
    await until('the closed terminal ended', async () => ((await getTerminal(sb, closed.terminalId)).exitCode !== null ? true : undefined));
    const last = await alice.openTerminal(sb, { keepAlive: true });
    const screen = new Screen(await alice.attachTerminal(sb, last.terminalId));
    await screen.run('echo last-$((9+9))', /last-18/);
    await alice.delete(sb);
    await exitOf(screen.conn);
    for (const t of [...opened, last]) assert.notEqual((await getTerminal(sb, t.terminalId)).exitCode, null, `terminal ${t.terminalId} still running in a deleted sandbox`);
    await assert.rejects(alice.openTerminal(sb, {}), ConflictError);
  });

  test('bad sizes, unknown ids, wrong upgrades and a plain GET on the attach route', async () => {
    const post = (body: string): Promise<RawAnswer> => raw({ port }, 'POST', `/v1/sandboxes/${sbx}/terminals`, { ...auth, 'content-type': 'application/json' }, body);
    for (const body of ['{"cols":0}', '{"cols":1001}', '{"rows":0}', '{"rows":1001}', '{"cols":1.5}', '{"shell":true}', '{"cmd":[]}']) {
      const r = await post(body);
      assert.equal(r.status, 400, `${body}: ${r.status} ${r.body}`);
      assert.equal((JSON.parse(r.body) as { error: { code: string } }).error.code, 'bad_request');
    }
    assert.equal((await post('{"cols":1000,"rows":1}')).status, 201);
    assert.equal((await raw({ port }, 'POST', '/v1/sandboxes/sbx_nope/terminals', { ...auth, 'content-type': 'application/json' }, '{}')).status, 404);

    const t = await alice.openTerminal(sbx, { keepAlive: true });
    const base = `/v1/sandboxes/${sbx}/terminals`;
    for (const body of ['{"cols":0,"rows":24}', '{"cols":1001,"rows":24}', '{"cols":80}']) {
      assert.equal((await raw({ port }, 'POST', `${base}/${t.terminalId}/resize`, { ...auth, 'content-type': 'application/json' }, body)).status, 400, body);
    }
    assert.equal((await raw({ port }, 'GET', `${base}/term_nope`, auth)).status, 404);
    assert.equal((await raw({ port }, 'DELETE', `${base}/term_nope`, auth)).status, 404);
    assert.equal((await raw({ port }, 'POST', `${base}/term_nope/resize`, { ...auth, 'content-type': 'application/json' }, '{"cols":80,"rows":24}')).status, 404);
    await assert.rejects(alice.attachTerminal(sbx, 'term_nope'), NotFoundError);
    // The terminal of another sandbox is not found in this one.
    const other = (await alice.create()).id;
    await assert.rejects(alice.attachTerminal(other, t.terminalId), NotFoundError);
    assert.equal((await raw({ port }, 'GET', `/v1/sandboxes/${other}/terminals/${t.terminalId}`, auth)).status, 404);
    await alice.delete(other);

    // Refusals of an upgrade are plain HTTP answers with the one error shape.
    const unknown = await raw({ port }, 'GET', `${base}/term_nope/attach`, { ...auth, ...WS_HEADERS });
    assert.equal(unknown.upgraded, false);
    assert.equal(unknown.status, 404);
    assert.equal((JSON.parse(unknown.body) as { error: { code: string } }).error.code, 'not_found');
    const wrong = await raw({ port }, 'GET', `${base}/${t.terminalId}/attach`, { ...auth, ...WS_HEADERS, upgrade: 'tcp' });
    assert.equal(wrong.status, 400, wrong.body);
    assert.match(wrong.body, /websocket/);
    const plain = await raw({ port }, 'GET', `${base}/${t.terminalId}/attach`, auth);
    assert.equal(plain.status, 426, plain.body);
    assert.equal((await raw({ port }, 'POST', `${base}/${t.terminalId}/attach`, auth)).status, 405);
    const anonymous = await raw({ port }, 'GET', `${base}/${t.terminalId}/attach`, WS_HEADERS);
    assert.equal(anonymous.status, 401);
    // A handshake the WebSocket server refuses (no key, a wrong version) must not leave an attachment behind.
    for (const drop of ['sec-websocket-key', 'sec-websocket-version'] as const) {
      const headers: Record<string, string> = { ...auth, ...WS_HEADERS };
      delete headers[drop];
      const r = await raw({ port }, 'GET', `${base}/${t.terminalId}/attach`, headers);
      assert.equal(r.upgraded, false);
      assert.equal(r.status, 400, `without ${drop}`);
    }
    const ok = await raw({ port }, 'GET', `${base}/${t.terminalId}/attach`, { ...auth, ...WS_HEADERS });
    assert.equal(ok.upgraded, true, 'the same headers with the key and version are accepted');
    await until('no client attached', async () => ((await getTerminal(sbx, t.terminalId)).attached === 0 ? true : undefined), 3000);
    await alice.closeTerminal(sbx, t.terminalId);
  });

  test('WebSocket messages: non-JSON text is 1007, an oversize message 1009, a bad resize 1007; the terminal goes on', async () => {
    const t = await alice.openTerminal(sbx, { keepAlive: true });
    const url = attachUrl(sbx, t.terminalId);
    // The last two have a close reason over 123 bytes if the daemon echoes them: it must not fall over.
    for (const text of ['hello', '{"type":"resize","cols":0,"rows":24}', '{"type":"bogus"}', 'é'.repeat(200), JSON.stringify({ type: 'signal', signal: 'INT', ['é'.repeat(100)]: 1 })]) {
      const r = await rawSocket(url, auth);
      assert.ok('ws' in r);
      r.ws.send(text);
      assert.equal((await r.closed(`the WebSocket sent ${JSON.stringify(text.slice(0, 30))}`)).code, 1007, text.slice(0, 40));
    }
    const big = await rawSocket(url, auth);
    assert.ok('ws' in big);
    big.ws.send(Buffer.alloc(1024 * 1024 + 1, 0x61), { binary: true });
    assert.equal((await big.closed()).code, 1009);
    assert.equal((await getTerminal(sbx, t.terminalId)).exitCode, null);
    const screen = new Screen(await alice.attachTerminal(sbx, t.terminalId));
    await screen.run('echo still-$((8*8))', /still-64/);
    assert.equal((await getTerminal(sbx, t.terminalId)).attached, 1);
    screen.conn.write('exit\r');
    assert.equal(await exitOf(screen.conn), 0);
  });

  test('tenants and scopes: another tenant cannot see, open or attach; a read-only token cannot open or attach', async () => {
    const t = await alice.openTerminal(sbx, { keepAlive: true });
    await assert.rejects(bob.openTerminal(sbx, {}), NotFoundError);
    await assert.rejects(bob.listTerminals(sbx), NotFoundError);
    await assert.rejects(bob.attachTerminal(sbx, t.terminalId), NotFoundError);
    await assert.rejects(bob.closeTerminal(sbx, t.terminalId), NotFoundError);
    const bobs = await raw({ port }, 'GET', `/v1/sandboxes/${sbx}/terminals/${t.terminalId}/attach`, { authorization: `Bearer ${BOB}`, ...WS_HEADERS });
    assert.equal(bobs.status, 404);
    assert.equal(bobs.upgraded, false);

    assert.ok((await reader.listTerminals(sbx)).some((x) => x.terminalId === t.terminalId), 'read scope lists terminals');
    await assert.rejects(reader.openTerminal(sbx, {}), ForbiddenError);
    await assert.rejects(reader.attachTerminal(sbx, t.terminalId), ForbiddenError);
    await assert.rejects(reader.closeTerminal(sbx, t.terminalId), ForbiddenError);
    const readers = await raw({ port }, 'POST', `/v1/sandboxes/${sbx}/terminals/${t.terminalId}/resize`, { authorization: `Bearer ${READER}`, 'content-type': 'application/json' }, '{"cols":10,"rows":10}');
    assert.equal(readers.status, 403);
    const v = await getTerminal(sbx, t.terminalId);
    assert.deepEqual([v.cols, v.rows, v.attached, v.exitCode], [80, 24, 0, null]);
    assert.equal(t.terminalId, (await alice.closeTerminal(sbx, t.terminalId)).terminalId);
  });

  test('a browser cannot attach: a foreign Origin or Sec-Fetch-Site is refused as on every route', async () => {
    const t = await alice.openTerminal(sbx, { keepAlive: true });
    const url = attachUrl(sbx, t.terminalId);
    for (const headers of [{ origin: 'http://evil.example' }, { origin: 'null' }, { 'sec-fetch-site': 'cross-site' }, { host: 'rebound.example' }] as Record<string, string>[]) {
      const r = await rawSocket(url, { ...auth, ...headers });
      assert.ok('status' in r, `upgraded with ${JSON.stringify(headers)}`);
      assert.equal(r.status, 403, JSON.stringify(headers));
      assert.equal((JSON.parse(r.body) as { error: { code: string } }).error.code, 'forbidden');
    }
    const same = await rawSocket(url, { ...auth, origin: `http://127.0.0.1:${port}` });
    assert.ok('ws' in same, 'the daemon\'s own origin is refused');
    same.ws.close();
    await same.closed();
    await alice.closeTerminal(sbx, t.terminalId);
  });

  test('a page of the daemon\'s own origin attaches with its token as a subprotocol; the daemon never echoes the token; a bad or second credential is 401', async () => {
    const t = await alice.openTerminal(sbx, { keepAlive: true });
    const url = attachUrl(sbx, t.terminalId);
    const bearer = (token: string): string => `agentbox.bearer.${Buffer.from(token).toString('base64url')}`;
    const page = { origin: `http://127.0.0.1:${port}` };
    const ok = await rawSocket(url, page, ['agentbox.v1', bearer(ALICE)]);
    assert.ok('ws' in ok, `refused: ${JSON.stringify(ok)}`);
    assert.equal(ok.ws.protocol, 'agentbox.v1');
    ok.ws.send(Buffer.from('echo sub-$((6*7))\r'));
    await until('the command\'s output', async () => (ok.shown().includes('sub-42') ? true : undefined));
    ok.ws.close();
    await ok.closed();
    for (const [protocols, headers] of [
      [['agentbox.v1', bearer('not-a-token-0123456789')], page],
      [['agentbox.v1', bearer(BOB)], page],
      [['agentbox.v1', 'agentbox.bearer.not*base64'], page],
      [['agentbox.v1', bearer(ALICE), bearer(BOB)], page],
      [['agentbox.v1', bearer(ALICE)], { ...page, ...auth }],
      [['agentbox.v1'], page],
    ] as [string[], Record<string, string>][]) {
      const r = await rawSocket(url, headers, protocols);
      assert.ok('status' in r, `upgraded with ${JSON.stringify(protocols)}`);
      assert.ok(r.status === 401 || r.status === 404, `${r.status} for ${JSON.stringify(protocols)}: ${r.body}`);
      // bob's token is valid, but the terminal is alice's: not found for him.
      assert.equal(r.status, protocols.includes(bearer(BOB)) && protocols.length === 2 ? 404 : 401, JSON.stringify(protocols));
    }
    const foreign = await rawSocket(url, { origin: 'http://evil.example' }, ['agentbox.v1', bearer(ALICE)]);
    assert.ok('status' in foreign && foreign.status === 403, 'a foreign page with the token is still refused');
    await alice.closeTerminal(sbx, t.terminalId);
  });

  test('over the Unix socket: the operator opens and attaches without a token', async () => {
    const sb = await operator.create();
    const t = await operator.openTerminal(sb.id, {});
    const screen = new Screen(await operator.attachTerminal(sb.id, t.terminalId));
    await screen.run('[ -t 0 ] && echo tty-$((6*7))', /tty-42/);
    const refused = await raw({ socketPath }, 'GET', `/v1/sandboxes/${sb.id}/terminals/term_nope/attach`, WS_HEADERS);
    assert.equal(refused.status, 404);
    assert.equal((await raw({ socketPath }, 'GET', `/v1/sandboxes/${sb.id}/terminals/${t.terminalId}/attach`, {})).status, 426);
    screen.conn.write('exit 3\r');
    assert.equal(await exitOf(screen.conn), 3);
    assert.equal((await operator.execRecord(sb.id, t.terminalId)).exitCode, 3);
    await assert.rejects(alice.attachTerminal(sb.id, t.terminalId), NotFoundError);
    await operator.delete(sb.id);
  });

  test('debian: the login shell is bash, on a terminal', { skip: hasDebian() ? undefined : 'AGENTBOX_TEST_DEBIAN=0' }, async () => {
    const sb = await alice.create({ image: 'debian' });
    const t = await alice.openTerminal(sb.id, { cols: 120, rows: 40 });
    const screen = new Screen(await alice.attachTerminal(sb.id, t.terminalId));
    await screen.run('[ -t 0 ] && [ -n "$BASH_VERSION" ] && echo bash-tty-$((6*7))', /bash-tty-42/);
    await screen.run('stty size', /[\r\n]40 120\r\n/);
    await screen.run('tty', /\/dev\/pts\/\d+/);
    screen.conn.write('exit 3\r');
    assert.equal(await exitOf(screen.conn), 3);
    await alice.delete(sb.id);
  });

  describe('the CLI', () => {
    const env = (): NodeJS.ProcessEnv => ({ ...process.env, AGENTBOX_URL: `http://127.0.0.1:${port}`, AGENTBOX_TOKEN: ALICE, NO_COLOR: '1' });
    /** The CLI as a child (not spawnSync: the daemon answering it runs in this process). */
    const cli = async (args: string[], input: string): Promise<{ status: number | null; stdout: string; stderr: string }> => {
      const child = spawn(process.execPath, [cliEntry(), ...args], { env: env(), stdio: ['pipe', 'pipe', 'pipe'] });
      child.stdin.end(input);
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      const [stdout, stderr] = await Promise.all([readAll(child.stdout), readAll(child.stderr)]);
      return { status: await within(exited, 60_000, `agentbox ${args.join(' ')}`), stdout: stdout.toString('utf8'), stderr: stderr.toString('utf8') };
    };

    test('agentbox shell ID in a real pseudo-terminal: types a command, exit 4 is the CLI\'s exit code', async () => {
      const driver = join(home, 'ptydrive.py');
      writeFileSync(
        driver,
        `import os, pty, sys, time, select, fcntl, termios, struct, json
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack('HHHH', 33, 111, 0, 0))
    os.environ['TERM'] = 'xterm'
    os.execvp(sys.argv[1], sys.argv[1:])
buf = b''
def pump(done, timeout):
    global buf
    end = time.time() + timeout
    while time.time() < end and not done(buf):
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                d = os.read(fd, 4096)
            except OSError:
                break
            if not d:
                break
            buf += d
    return done(buf)
pump(lambda b: len(b) > 0, 15)
os.write(fd, b'[ -t 0 ] && stty size && echo tty-$((6*7))\\r')
got = pump(lambda b: b'tty-42' in b, 15)
os.write(fd, b'exit 4\\r')
code = None
end = time.time() + 15
while time.time() < end:
    p, st = os.waitpid(pid, os.WNOHANG)
    if p:
        code = os.waitstatus_to_exitcode(st)
        break
    pump(lambda b: False, 0.2)
if code is None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps({'got': got, 'code': code, 'shown': buf.decode('utf-8', 'replace')}))
`,
      );
      const child = spawn('python3', [driver, process.execPath, cliEntry(), 'shell', sbx], { env: env(), stdio: ['ignore', 'pipe', 'inherit'] });
      const out = (await readAll(child.stdout)).toString('utf8');
      const r = JSON.parse(out.trim().split('\n').pop() ?? '{}') as { got: boolean; code: number | null; shown: string };
      assert.equal(r.got, true, `no tty-42; the terminal showed ${JSON.stringify(r.shown.slice(-400))}`);
      assert.match(r.shown, /[\r\n]33 111\r*\n/, 'the host terminal\'s size was not the sandbox terminal\'s');
      assert.equal(r.code, 4, `the terminal showed ${JSON.stringify(r.shown.slice(-400))}`);
    });

    test('agentbox exec -t ID -- CMD runs CMD on a terminal (and without -t it is not)', async () => {
      const withT = await cli(['exec', '-t', sbx, '--', 'sh', '-c', '[ -t 1 ] && echo on-tty; exit 5'], '');
      assert.equal(withT.status, 5, withT.stderr);
      assert.match(withT.stdout, /^on-tty\r?\n/);
      // Without -i the command has a terminal but not the CLI's input; with -i it is typed in.
      const readLine = ['sh', '-c', 'read -t 2 line; echo "got[$line]"'];
      const notTyped = await cli(['exec', '-t', sbx, '--', ...readLine], 'typed\n');
      assert.equal(notTyped.status, 0, notTyped.stderr);
      assert.match(notTyped.stdout, /got\[\]/);
      const typed = await cli(['exec', '-t', '-i', sbx, '--', ...readLine], 'typed\n');
      assert.equal(typed.status, 0, typed.stderr);
      assert.match(typed.stdout, /got\[typed\]/);
      const withoutT = await cli(['exec', sbx, '--', 'sh', '-c', '[ -t 1 ] && echo on-tty; exit 5'], '');
      assert.equal(withoutT.status, 5, withoutT.stderr);
      assert.equal(withoutT.stdout, '');
    });
  });
});
