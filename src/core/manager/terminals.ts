/**
 * Open terminals (`Runtime.openPty`), kept by the daemon apart from any client: a client attaches,
 * is given what the terminal showed lately, then its live output, and may detach and come back (a
 * dropped connection loses nothing). Each terminal is an exec in the history (its output's tail, its
 * exit code) and keeps its sandbox busy while it runs. One with no client left is hung up after a
 * grace period, unless it was opened to keep running (`keepAlive`).
 */
import { finished } from 'node:stream/promises';
import type { Logger } from 'pino';
import { ConflictError, NotFoundError } from '../../contract/errors.js';
import type { ExecEvent, SignalName } from '../../contract/model.js';
import type { Terminal } from '../../contract/terminals.js';
import { AsyncQueue } from '../async-queue.js';
import { RecentBytes } from '../recent-bytes.js';
import type { PtyProcess } from '../../runtime/pty.js';
import type { BegunExec, ExecRecorder } from './execs.js';

/** Bytes of recent output a newly attached client is given first. */
export const TERMINAL_REPLAY_BYTES = 256 * 1024;
/** A terminal nobody is attached to is hung up this long after its last client left (unless keepAlive). */
export const DETACHED_GRACE_MS = 30_000;
/** Running terminals per sandbox. */
export const MAX_TERMINALS_PER_SANDBOX = 16;
/** An ended terminal stays attachable (its last output and exit code) this long. */
const ENDED_KEPT_MS = 60_000;

/** One client's hold on a terminal. */
export interface TerminalAttachment {
  /** What the terminal showed lately (at most TERMINAL_REPLAY_BYTES), to draw before the live output. */
  readonly replay: Buffer;
  /** Live output from the moment of attaching; `exit` once the command ended (at once when it had). */
  on(event: 'output', fn: (data: Buffer) => void): void;
  on(event: 'exit', fn: (exitCode: number) => void): void;
  write(data: Buffer): void;
  resize(cols: number, rows: number): void;
  signal(sig: SignalName): void;
  detach(): void;
}

interface Client {
  output: (data: Buffer) => void;
  exit: (exitCode: number) => void;
}

class LiveTerminal {
  readonly recent = new RecentBytes(TERMINAL_REPLAY_BYTES);
  readonly clients = new Set<Client>();
  exitCode: number | null = null;
  private hangUpTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly info: Omit<Terminal, 'attached' | 'exitCode'>,
    readonly pty: PtyProcess,
    private readonly graceMs: number,
  ) {}

  view(): Terminal {
    return { ...this.info, attached: this.clients.size, exitCode: this.exitCode };
  }

  output(data: Buffer): void {
    this.recent.push(data);
    for (const c of this.clients) c.output(data);
  }

  ended(exitCode: number): void {
    this.exitCode = exitCode;
    clearTimeout(this.hangUpTimer);
    for (const c of this.clients) c.exit(exitCode);
  }

  attach(): TerminalAttachment {
    clearTimeout(this.hangUpTimer);
    const client: Client = { output: () => undefined, exit: () => undefined };
    const replay = this.recent.bytes;
    this.clients.add(client);
    const running = (): boolean => this.exitCode === null;
    return {
      replay,
      on: (event: 'output' | 'exit', fn: ((data: Buffer) => void) | ((exitCode: number) => void)) => {
        if (event === 'output') client.output = fn as (data: Buffer) => void;
        else {
          client.exit = fn as (exitCode: number) => void;
          if (this.exitCode !== null) client.exit(this.exitCode);
        }
      },
      write: (data) => {
        if (running()) this.pty.write(data);
      },
      resize: (cols, rows) => this.resize(cols, rows),
      signal: (sig) => {
        if (running()) this.pty.signal(sig);
      },
      detach: () => {
        if (this.clients.delete(client)) this.startGrace();
      },
    };
  }

  resize(cols: number, rows: number): void {
    if (this.exitCode !== null) return;
    this.pty.resize(cols, rows);
    this.info.cols = cols;
    this.info.rows = rows;
  }

  /** With no client attached, the hang-up comes after the grace period (unless keepAlive). */
  startGrace(): void {
    if (this.clients.size > 0 || this.exitCode !== null || this.info.keepAlive) return;
    clearTimeout(this.hangUpTimer);
    this.hangUpTimer = setTimeout(() => this.pty.destroy(), this.graceMs);
    this.hangUpTimer.unref();
  }
}

export interface OpenTerminalSpec {
  exec: BegunExec;
  cmd: string[];
  cols: number;
  rows: number;
  keepAlive: boolean;
  /** Thaw the sandbox and start the command on a terminal (the runtime's openPty). */
  start: () => Promise<PtyProcess>;
}

export class Terminals {
  private readonly live = new Map<string, LiveTerminal>();

  constructor(
    private readonly opts: {
      execs: ExecRecorder;
      logger: Logger;
      /** From the last client's detaching to the hang-up (tests shorten it). @default DETACHED_GRACE_MS */
      detachedGraceMs?: number;
    },
  ) {}

  /** Running terminals of a sandbox. */
  running(sandboxId: string): number {
    let n = 0;
    for (const t of this.live.values()) if (t.info.sandboxId === sandboxId && t.exitCode === null) n++;
    return n;
  }

  checkRoom(sandboxId: string): void {
    if (this.running(sandboxId) >= MAX_TERMINALS_PER_SANDBOX) {
      throw new ConflictError(`sandbox ${sandboxId} already has ${MAX_TERMINALS_PER_SANDBOX} terminals open`, { hint: 'close one (exit its shell) first' });
    }
  }

  /** Start the terminal and record it as an exec; resolves once its command runs. */
  async open(spec: OpenTerminalSpec): Promise<Terminal> {
    const { exec } = spec;
    const queue = new AsyncQueue<ExecEvent>();
    let started: ((live: LiveTerminal) => void) | undefined;
    const opened = new Promise<LiveTerminal>((resolve) => (started = resolve));
    const t0 = performance.now();
    const events = this.opts.execs.events(exec, async () => {
      const pty = await spec.start();
      const live = new LiveTerminal(
        { terminalId: exec.execId, sandboxId: exec.sandboxId, cmd: spec.cmd, pid: pty.pid, cols: spec.cols, rows: spec.rows, keepAlive: spec.keepAlive, startedAt: exec.startedAt.toISOString() },
        pty,
        this.opts.detachedGraceMs ?? DETACHED_GRACE_MS,
      );
      this.live.set(exec.execId, live);
      started?.(live);
      pty.output.on('data', (data: Buffer) => queue.push({ type: 'stdout', data }));
      Promise.all([pty.exit, finished(pty.output).catch(() => undefined)]).then(
        ([exitCode]) => {
          queue.push({ type: 'exit', result: { execId: exec.execId, exitCode, truncated: false, timedOut: false, oomKilled: false, durationMs: Math.round(performance.now() - t0) } });
          queue.end();
        },
        (err: unknown) => queue.end(err),
      );
      return queue;
    });
    // The record is driven here, whoever is attached: it ends when the terminal does.
    const drained = (async () => {
      for await (const ev of events) {
        const live = this.live.get(exec.execId);
        if (ev.type === 'stdout') live?.output(ev.data);
        else if (ev.type === 'exit') live?.ended(ev.result.exitCode);
      }
    })();
    drained
      .catch((err: unknown) => this.opts.logger.warn({ sandbox_id: exec.sandboxId, exec_id: exec.execId, err: err instanceof Error ? err.message : String(err) }, 'terminal ended with an error'))
      .finally(() => {
        const live = this.live.get(exec.execId);
        if (!live) return;
        if (live.exitCode === null) live.ended(-1);
        setTimeout(() => this.live.delete(exec.execId), ENDED_KEPT_MS).unref();
      });
    // A failure to start (the runtime's error) is the caller's; the record has it too.
    const live = await Promise.race([opened, drained.then(() => Promise.reject(new ConflictError(`the terminal in sandbox ${exec.sandboxId} ended before it started`)))]);
    // Nobody attached within the grace period: hung up as if its last client had left.
    live.startGrace();
    return live.view();
  }

  list(sandboxId: string): Terminal[] {
    return [...this.live.values()].filter((t) => t.info.sandboxId === sandboxId).map((t) => t.view());
  }

  get(sandboxId: string, terminalId: string): Terminal {
    return this.find(sandboxId, terminalId).view();
  }

  attach(sandboxId: string, terminalId: string): TerminalAttachment {
    return this.find(sandboxId, terminalId).attach();
  }

  /** Resize without attaching: the hang-up clock of a terminal nobody watches keeps running. */
  resize(sandboxId: string, terminalId: string, cols: number, rows: number): Terminal {
    const t = this.find(sandboxId, terminalId);
    t.resize(cols, rows);
    return t.view();
  }

  /** Hang up a terminal (its session gets SIGHUP, then SIGKILL). */
  close(sandboxId: string, terminalId: string): Terminal {
    const t = this.find(sandboxId, terminalId);
    if (t.exitCode === null) t.pty.destroy();
    return t.view();
  }

  /** Hang up every terminal (the daemon is stopping). */
  closeAll(): void {
    for (const t of this.live.values()) if (t.exitCode === null) t.pty.destroy();
  }

  private find(sandboxId: string, terminalId: string): LiveTerminal {
    const t = this.live.get(terminalId);
    if (!t || t.info.sandboxId !== sandboxId) throw new NotFoundError(`no terminal ${terminalId} in sandbox ${sandboxId}`, { hint: `GET /v1/sandboxes/${sandboxId}/terminals lists them; an ended terminal is kept for a minute` });
    return t;
  }
}
