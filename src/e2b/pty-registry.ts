/**
 * E2B's PTYs (`sandbox.pty`) over agentbox terminals (ARCHITECTURE.md, "Terminals and ports":
 * `SandboxManager.openTerminal`). A PTY started through envd is a terminal opened with `keepAlive`: E2B's
 * PTYs outlive the stream that started them, until their shell exits or they are killed. envd
 * addresses them by pid (the command's pid inside the sandbox), so this registry maps a sandbox's
 * pids to the terminals it opened; terminals opened through /v1 (`agentbox shell`) are not E2B's and
 * are not found here.
 *
 * Each envd stream (Start, Connect) is an attachment of its own: it gets what the terminal showed
 * lately (all of it, for the stream that started it), then live output, then the end. Typing,
 * resizes and signals go through one attachment kept per PTY, so they cost no replay.
 */
import { PidTable } from './pid-table.js';
import type { Logger } from 'pino';
import { AgentboxError, ConflictError } from '../contract/errors.js';
import type { SignalName } from '../contract/model.js';
import { AsyncQueue } from '../core/async-queue.js';
import type { Caller, SandboxManager } from '../core/manager.js';
import type { TerminalAttachment } from '../core/manager/terminals.js';
import type { ProcessConfig, ProcessEnd } from './process-registry.js';

export interface TrackedPty {
  readonly sandboxId: string;
  readonly pid: number;
  /** The agentbox terminal (also its exec id in the exec history). */
  readonly terminalId: string;
  readonly config: ProcessConfig;
}

export type PtyEvent = { type: 'pty'; data: Buffer } | { type: 'end'; end: ProcessEnd };

/** One stream's hold on a PTY: its events (replay first), and `close()` to let go (the PTY runs on). */
export interface PtyListener {
  readonly events: AsyncQueue<PtyEvent>;
  close(): void;
}

export interface OpenPtyOpts {
  config: ProcessConfig;
  cols: number;
  rows: number;
}

interface Entry extends TrackedPty {
  /** The attachment typing, resizes and signals go through; its output is not read. */
  readonly control: TerminalAttachment;
  /** Hang the terminal up (as the caller that opened it). */
  readonly hangUp: () => void;
  /** Killed through envd: its end reads as E2B's killed command, whatever status the shell had. */
  killed: boolean;
}

export class PtyRegistry {
  private readonly entries = new PidTable<Entry>();

  constructor(
    private readonly manager: SandboxManager,
    private readonly logger: Logger,
  ) {}

  /**
   * Open a terminal running CONFIG's command; resolves once it runs, with a listener that has
   * everything the terminal showed from its start.
   */
  async open(sandboxId: string, caller: Caller, opts: OpenPtyOpts): Promise<{ pty: TrackedPty; listener: PtyListener }> {
    const { config } = opts;
    const terminal = await this.manager.openTerminal(
      sandboxId,
      { cmd: [config.cmd, ...config.args], cols: opts.cols, rows: opts.rows, env: config.envs, keepAlive: true, ...(config.cwd !== undefined ? { cwd: config.cwd } : {}) },
      caller,
    );
    const { terminalId } = terminal;
    const hangUp = (): void => {
      try {
        this.manager.closeTerminal(sandboxId, terminalId, caller);
      } catch (err) {
        // Gone already (its sandbox ended): nothing to hang up.
        if (!(err instanceof AgentboxError)) throw err;
      }
    };
    let control: TerminalAttachment;
    try {
      control = this.manager.attachTerminal(sandboxId, terminalId, caller);
    } catch (err) {
      hangUp();
      throw err;
    }
    const entry: Entry = { sandboxId, pid: terminal.pid, terminalId, config, control, hangUp, killed: false };
    this.entries.add(entry);
    // The first attachment registered: its exit runs before any stream's, so a pid that has ended is
    // no longer found by the time a client hears of the end.
    control.on('exit', () => {
      this.entries.remove(entry);
      control.detach();
    });
    this.logger.info({ sandbox_id: sandboxId, terminal_id: terminalId, pid: entry.pid, cmd: config.cmd }, 'e2b: pty started');
    return { pty: entry, listener: this.listenTo(entry, caller) };
  }

  /** A running PTY of this registry by pid, or undefined. */
  find(sandboxId: string, pid: number): TrackedPty | undefined {
    return this.entries.get(sandboxId, pid);
  }

  /** The running PTYs of a sandbox. */
  list(sandboxId: string): TrackedPty[] {
    return this.entries.of(sandboxId);
  }

  /**
   * Listen to a PTY: what it showed lately (at most the terminal's replay, 256 KiB), then live
   * output, then its end. A client reattaching by pid so redraws its screen (E2B's envd sends only
   * what comes after).
   */
  listen(pty: TrackedPty, caller: Caller): PtyListener {
    return this.listenTo(this.entryOf(pty), caller);
  }

  /** The same for an entry that may have ended already (its end is then the only event). */
  private listenTo(entry: Entry, caller: Caller): PtyListener {
    const events = new AsyncQueue<PtyEvent>();
    const attachment = this.manager.attachTerminal(entry.sandboxId, entry.terminalId, caller);
    if (attachment.replay.length > 0) events.push({ type: 'pty', data: attachment.replay });
    attachment.on('output', (data) => events.push({ type: 'pty', data }));
    attachment.on('exit', (exitCode) => {
      events.push({ type: 'end', end: toEnd(exitCode, entry.killed) });
      events.end();
    });
    let closed = false;
    return {
      events,
      close: () => {
        if (closed) return;
        closed = true;
        attachment.detach();
        events.end();
      },
    };
  }

  write(pty: TrackedPty, data: Uint8Array): void {
    this.entryOf(pty).control.write(Buffer.from(data));
  }

  resize(pty: TrackedPty, cols: number, rows: number): void {
    this.entryOf(pty).control.resize(cols, rows);
  }

  /** A signal to the PTY's command (its shell): SIGTERM to an interactive shell does nothing, as on E2B. */
  signal(pty: TrackedPty, sig: SignalName): void {
    this.entryOf(pty).control.signal(sig);
  }

  /**
   * Kill a PTY: its terminal is hung up, so the session gets SIGHUP (a shell passes it on to its jobs)
   * and 2 s later, if its shell is still there, SIGKILL for the session's whole tree. A SIGKILL of the
   * shell alone would leave its background jobs running.
   */
  kill(pty: TrackedPty): void {
    const entry = this.entries.get(pty.sandboxId, pty.pid);
    if (!entry) return;
    entry.killed = true;
    entry.hangUp();
  }

  /** Hang up every PTY (the daemon is stopping). */
  close(): void {
    for (const e of this.entries.all()) this.kill(e);
  }

  private entryOf(pty: TrackedPty): Entry {
    const entry = this.entries.get(pty.sandboxId, pty.pid);
    if (!entry || entry.terminalId !== pty.terminalId) throw new ConflictError(`the PTY with pid ${pty.pid} has ended`);
    return entry;
  }

}

/**
 * A terminal's end in envd's words. The terminal reports 128+N for signal N, which cannot be told
 * from `exit 128+N`; only a kill through envd reads as E2B's killed command (exit -1, "signal: killed").
 */
function toEnd(exitCode: number, killed: boolean): ProcessEnd {
  if (killed) return { exitCode: -1, exited: false, status: 'signal: killed', error: 'signal: killed' };
  if (exitCode < 0) return { exitCode: -1, exited: false, status: 'error', error: 'the terminal was lost (see the daemon log)' };
  const status = `exit status ${exitCode}`;
  return exitCode === 0 ? { exitCode, exited: true, status } : { exitCode, exited: true, status, error: status };
}
