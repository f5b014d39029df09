/**
 * The daemon's side of a gVisor sandbox's exec agent (native/exec-agent.h). The agent dials a Unix
 * socket in a directory bound into the sandbox and keeps one idle connection open; an exec takes it,
 * sends its request and stdin, and reads the command's pid, stdout, stderr and exit status back,
 * each framed as type (1 byte) + length (4 bytes, big-endian) + payload.
 *
 * Whatever runs in the sandbox can dial this socket too and pose as the agent. It then sees and
 * answers requests for its own sandbox only, which it could already tamper with as the same user;
 * frames are bounded and parsed defensively either way.
 */
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { PassThrough, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { EXIT_KILLED } from '../../contract/exit-codes.js';
import type { EngineExec, EngineExecOpts } from './engine-exec.js';

/** Where the agent's directory appears inside the sandbox, and the socket in it. */
export const AGENT_MOUNT = '/run/agentbox-agent';
export const AGENT_SOCKET = 'agent.sock';

const CHUNK = 65536;
/** The agent sends at most 64 KiB a frame (plus its error lines); bigger is a broken or hostile peer. */
const MAX_FRAME_IN = CHUNK + 1024;
/** The agent refuses requests above 8 MiB (AGENT_MAX_REQUEST); those go through the Engine. */
export const MAX_REQUEST = 8 << 20;
const EXIT_LOST = EXIT_KILLED;
/**
 * The agent keeps one idle connection; a few more are a relaunch overlapping the old agent. Anything
 * beyond is something in the sandbox dialling the socket, which must not cost the daemon descriptors.
 */
const MAX_IDLE = 4;
/** Idle ones plus the execs running at once in one sandbox. */
const MAX_CONNECTIONS = 256;

/** What the agent runs: the command (no wrapper), where, for how long, with what environment. */
export interface AgentRequest {
  cmd: string[];
  workingDir: string;
  env: Record<string, string>;
  /** 0: no timeout. */
  timeoutMs: number;
}

function frame(type: string, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(5);
  h.write(type, 0, 'latin1');
  h.writeUInt32BE(payload.length, 1);
  return Buffer.concat([h, payload]);
}

/** The 'R' frame: cwd, timeout, argc, argv..., env (K=V)..., each NUL-terminated; undefined when a string holds a NUL. */
export function encodeRequest(r: AgentRequest): Buffer | undefined {
  const strings = [r.workingDir, String(Math.max(0, Math.floor(r.timeoutMs))), String(r.cmd.length), ...r.cmd, ...Object.entries(r.env).map(([k, v]) => `${k}=${v}`)];
  if (strings.some((s) => s.includes('\0'))) return undefined;
  return frame('R', Buffer.from(strings.map((s) => `${s}\0`).join(''), 'utf8'));
}

/** An exec through the agent: an Engine exec's shape, plus a kill and the command's pid. */
export interface AgentExec extends EngineExec {
  /** Kill the command's tree; it then exits 143. */
  terminate(): void;
  /** The command's pid inside the sandbox, once started (undefined: it never started). */
  pid: Promise<number | undefined>;
}

type AgentState = 'starting' | 'up' | 'down';

/** How long `drain` waits for connections in use to end before it calls the sandbox busy. */
const SETTLE_MS = 500;

/** The listening side for one sandbox: hands out the agent's idle connections. */
export class AgentListener {
  private readonly idle: Socket[] = [];
  /** Every open connection, idle or in an exec: closing the listener ends them all. */
  private readonly open = new Set<Socket>();
  private readonly waiters: ((s: Socket | undefined) => void)[] = [];
  /** starting: no agent has dialled yet; up: one has; down: its idle connection closed (it died) or none came. */
  private agentState: AgentState = 'starting';

  private constructor(private readonly server: Server, readonly path: string) {
    server.maxConnections = MAX_CONNECTIONS;
    server.on('connection', (s: Socket) => {
      s.on('error', () => undefined);
      this.open.add(s);
      s.once('close', () => {
        this.open.delete(s);
        const i = this.idle.indexOf(s);
        if (i < 0) return;
        this.idle.splice(i, 1);
        // The agent closes an idle connection only by dying.
        if (this.idle.length === 0) this.agentState = 'down';
      });
      this.agentState = 'up';
      const waiter = this.waiters.shift();
      if (waiter) return waiter(s);
      if (this.idle.length >= MAX_IDLE) return void s.destroy();
      this.idle.push(s);
    });
  }

  static async listen(path: string): Promise<AgentListener> {
    rmSync(path, { force: true });
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(path, 0o666); // the agent runs as the sandbox user; the directories above keep others out
    return new AgentListener(server, path);
  }

  get state(): AgentState {
    return this.agentState;
  }

  /** No agent came when one was expected: execs stop waiting for one until one dials in. */
  markDown(): void {
    if (this.idle.length === 0) this.agentState = 'down';
  }

  /** An idle agent connection, waiting up to `timeoutMs` for one; undefined when none came. */
  take(timeoutMs: number): Promise<Socket | undefined> {
    const s = this.idle.shift();
    if (s) return Promise.resolve(s);
    if (timeoutMs <= 0) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const waiter = (sock: Socket | undefined): void => {
        clearTimeout(timer);
        resolve(sock);
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(undefined);
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /**
   * Stop listening and have the agent close every connection it holds, waiting up to `timeoutMs` for
   * it: it closes an idle connection the host ends, and its redials then fail, since nothing listens.
   * Only when no exec or file operation uses a connection ('busy', and nothing changed, otherwise).
   * 'timeout', listening stopped, when the agent did not close them all in time.
   */
  async drain(timeoutMs: number): Promise<'drained' | 'busy' | 'timeout'> {
    // The connection of an exec that just ended closes a moment after its exit status came.
    const settle = Date.now() + SETTLE_MS;
    while (this.idle.length !== this.open.size && Date.now() < settle) await sleep(10);
    if (this.idle.length !== this.open.size) return 'busy';
    for (const w of this.waiters.splice(0)) w(undefined);
    this.server.close();
    rmSync(this.path, { force: true });
    this.idle.length = 0;
    const deadline = Date.now() + timeoutMs;
    for (const s of this.open) s.end();
    while (this.open.size > 0 && Date.now() < deadline) await sleep(10);
    return this.open.size === 0 ? 'drained' : 'timeout';
  }

  async close(): Promise<void> {
    for (const w of this.waiters.splice(0)) w(undefined);
    this.idle.length = 0;
    // A paused exec (its reader stopped reading) would never see its end: server.close() waits for every connection.
    for (const s of this.open) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.path, { force: true });
  }
}

/** One exec over a taken agent connection. */
export function agentExec(sock: Socket, request: Buffer, stdin: EngineExecOpts['stdin']): AgentExec {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let resolveExit!: (code: number) => void;
  const exitCode = new Promise<number>((r) => (resolveExit = r));
  let resolvePid!: (pid: number | undefined) => void;
  const pid = new Promise<number | undefined>((r) => (resolvePid = r));
  let code: number | undefined;
  let pending: Buffer = Buffer.alloc(0);

  const finish = (c: number): void => {
    if (code !== undefined) return;
    code = c;
    resolvePid(undefined);
    stdout.end();
    stderr.end();
    void Promise.all([new Promise((r) => stdout.once('end', r)), new Promise((r) => stderr.once('end', r))]).then(() => resolveExit(c));
  };
  const deliver = (out: PassThrough, data: Buffer): void => {
    if (!out.write(data)) {
      sock.pause();
      out.once('drain', () => sock.resume());
    }
  };
  sock.on('data', (chunk: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= 5) {
      const type = String.fromCharCode(pending[0] as number);
      const len = pending.readUInt32BE(1);
      if (len > MAX_FRAME_IN || !'POeX'.includes(type) || ((type === 'P' || type === 'X') && len !== 4)) {
        sock.destroy();
        return;
      }
      if (pending.length < 5 + len) break;
      const payload = pending.subarray(5, 5 + len);
      pending = pending.subarray(5 + len);
      if (type === 'O') deliver(stdout, payload);
      else if (type === 'e') deliver(stderr, payload);
      else if (type === 'P') resolvePid(payload.readUInt32BE(0));
      else {
        finish(payload.readUInt32BE(0));
        sock.end();
        return;
      }
    }
  });
  // Gone before its exit status: the agent was killed, and its commands with it.
  sock.once('close', () => finish(EXIT_LOST));

  sock.write(request);
  if (stdin === undefined) sock.write(frame('E'));
  else if (Buffer.isBuffer(stdin)) {
    for (let i = 0; i < stdin.length; i += CHUNK) sock.write(frame('I', stdin.subarray(i, i + CHUNK)));
    sock.write(frame('E'));
  } else pipeStdin(stdin as Readable, sock);
  return {
    stdout,
    stderr,
    exitCode,
    pid,
    destroy: () => sock.destroy(),
    terminate: () => {
      if (code === undefined && sock.writable) sock.write(frame('K'));
    },
  };
}

function pipeStdin(stdin: Readable, sock: Socket): void {
  stdin.on('data', (c: Buffer) => {
    if (!sock.writable) return; // the command has ended: the agent would only drop it
    let ok = true;
    for (let i = 0; i < c.length; i += CHUNK) ok = sock.write(frame('I', c.subarray(i, i + CHUNK))) && ok;
    if (!ok) {
      stdin.pause();
      sock.once('drain', () => stdin.resume());
    }
  });
  stdin.once('end', () => sock.writable && sock.write(frame('E')));
  stdin.once('error', () => sock.destroy());
  sock.once('close', () => stdin.destroy());
}
