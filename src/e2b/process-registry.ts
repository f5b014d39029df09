/**
 * Commands that outlive the request that started them (E2B's background commands, reattach by pid or
 * tag). Each runs as an ordinary agentbox exec (recorded, limited, killed with its sandbox), but its
 * lifetime belongs to this registry, not to a client's connection: a client that goes away only
 * stops listening; any client may listen again by pid or tag and gets the output from then on.
 *
 * The pid is the command's pid inside the sandbox. The command is started through `/bin/sh -c` that
 * first writes `agentbox-pid PID` as the first line of its stderr and then execs the command itself
 * (same pid); the line is taken off stderr here and never reaches a client.
 */
import { PidTable } from './pid-table.js';
import { PassThrough } from 'node:stream';
import type { Logger } from 'pino';
import { AsyncQueue } from '../core/async-queue.js';
import type { Caller, SandboxManager } from '../core/manager.js';
import { AgentboxError, ConflictError, InternalError, NotFoundError } from '../contract/errors.js';
import type { ExecEvent, ExecSummary } from '../contract/model.js';

/** What a command was started with, as E2B's List reports it. */
export interface ProcessConfig {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string;
}

/** How a command ended, in envd's terms: `exited` false when a signal ended it. */
export interface ProcessEnd {
  exitCode: number;
  exited: boolean;
  status: string;
  error?: string;
}

export type ProcessEvent = { type: 'stdout' | 'stderr'; data: Buffer } | { type: 'end'; end: ProcessEnd };

export interface TrackedProcess {
  readonly sandboxId: string;
  readonly pid: number;
  readonly tag: string | undefined;
  readonly execId: string;
  readonly config: ProcessConfig;
}

interface Entry extends TrackedProcess {
  stdin: PassThrough | undefined;
  abort: AbortController;
  killed: boolean;
  listeners: Set<AsyncQueue<ProcessEvent>>;
}

export interface StartOpts {
  config: ProcessConfig;
  tag?: string;
  /** Keep stdin open for sendStdin/closeStdin; otherwise it is empty. */
  stdin: boolean;
  /** The exec's timeout; default (and at most) the sandbox profile's execTimeout. */
  timeoutMs?: number;
}

const PID_LINE = /^agentbox-pid (\d+)\n/;
const PID_LINE_MAX = 64;
/** Writes the pid line, then becomes the command ($0 "$@"). */
const PID_WRAPPER = 'printf "agentbox-pid %s\\n" "$$" >&2 && exec "$0" "$@"';

export class ProcessRegistry {
  private readonly entries = new PidTable<Entry>();

  constructor(
    private readonly manager: SandboxManager,
    private readonly logger: Logger,
  ) {}

  /**
   * Start a command; resolves once its pid is known, with a listener that has every event from the
   * start. Rejects (and leaves nothing running) when the command could not be started.
   */
  async start(sandboxId: string, caller: Caller, opts: StartOpts): Promise<{ process: TrackedProcess; events: AsyncQueue<ProcessEvent> }> {
    if (opts.tag !== undefined && this.byTag(sandboxId, opts.tag)) {
      throw new ConflictError(`a process with tag ${JSON.stringify(opts.tag)} is already running in sandbox ${sandboxId}`, { hint: 'pick another tag, or connect to that one' });
    }
    const abort = new AbortController();
    const stdin = opts.stdin ? new PassThrough() : undefined;
    const { config } = opts;
    const { execId, events } = this.manager.execStream(
      sandboxId,
      {
        cmd: ['/bin/sh', '-c', PID_WRAPPER, config.cmd, ...config.args],
        env: config.envs,
        ...(config.cwd !== undefined ? { cwd: config.cwd } : {}),
        ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      },
      caller,
      abort.signal,
      stdin,
    );
    const first = new AsyncQueue<ProcessEvent>();
    let resolvePid!: (pid: number) => void;
    let rejectPid!: (err: unknown) => void;
    const pidKnown = new Promise<number>((resolve, reject) => {
      resolvePid = resolve;
      rejectPid = reject;
    });
    const log = this.logger.child({ sandbox_id: sandboxId, exec_id: execId });
    let entry: Entry | undefined;
    const pump = async (): Promise<void> => {
      let head = Buffer.alloc(0);
      const early: ProcessEvent[] = [];
      const emit = (ev: ProcessEvent): void => {
        if (!entry) early.push(ev);
        else for (const l of entry.listeners) l.push(ev);
      };
      let summary: ExecSummary | undefined;
      try {
        for await (const ev of events as AsyncIterable<ExecEvent>) {
          if (ev.type === 'exit') {
            summary = ev.result;
            continue;
          }
          if (ev.type === 'stderr' && entry === undefined) {
            head = Buffer.concat([head, ev.data]);
            const m = PID_LINE.exec(head.toString('latin1'));
            if (!m) {
              if (head.length > PID_LINE_MAX || head.includes(0x0a)) throw new InternalError(`the command did not start: ${head.toString('utf8').slice(0, 300)}`);
              continue;
            }
            entry = { sandboxId, pid: Number(m[1]), tag: opts.tag, execId, config, stdin, abort, killed: false, listeners: new Set([first]) };
            this.entries.add(entry);
            resolvePid(entry.pid);
            for (const e of early) first.push(e);
            const rest = head.subarray(m[0].length);
            if (rest.length > 0) emit({ type: 'stderr', data: rest });
            continue;
          }
          emit({ type: ev.type, data: ev.data });
        }
        if (!entry) {
          const text = head.toString('utf8').trim();
          throw new InternalError(`the command ended before it started${summary ? ` (exit ${summary.exitCode})` : ''}${text ? `: ${text.slice(0, 300)}` : ''}`, {
            hint: 'the image needs /bin/sh; check cwd exists',
          });
        }
        emit({ type: 'end', end: toEnd(summary, entry.killed) });
      } catch (err) {
        if (!entry) {
          rejectPid(err);
          return;
        }
        const message = err instanceof AgentboxError ? err.message : 'the command was lost (see the daemon log)';
        if (!(err instanceof AgentboxError)) log.warn({ err }, 'e2b: a tracked command failed');
        emit({ type: 'end', end: { exitCode: -1, exited: false, status: 'error', error: message } });
      } finally {
        stdin?.destroy();
        if (entry) {
          this.entries.remove(entry);
          for (const l of entry.listeners) l.end();
          entry.listeners.clear();
        }
      }
    };
    void pump();
    await pidKnown;
    const started = entry as Entry | undefined;
    if (!started) throw new InternalError('the command has no pid');
    log.info({ pid: started.pid, tag: opts.tag, cmd: config.cmd }, 'e2b: command started');
    return { process: started, events: first };
  }

  /** A running command by pid or tag, or not_found. */
  find(sandboxId: string, selector: { pid: number } | { tag: string }): TrackedProcess {
    const entry = this.entry(sandboxId, selector);
    if (!entry) {
      const what = 'pid' in selector ? `pid ${selector.pid}` : `tag ${JSON.stringify(selector.tag)}`;
      throw new NotFoundError(`no running process with ${what} in sandbox ${sandboxId}`, { hint: 'list them with commands.list(); a command that ended cannot be connected to' });
    }
    return entry;
  }

  /** The running commands of a sandbox, by pid. */
  list(sandboxId: string): TrackedProcess[] {
    return this.entries.of(sandboxId);
  }

  /** Listen to a running command from now on (its end included). */
  listen(process: TrackedProcess): AsyncQueue<ProcessEvent> {
    const entry = this.entry(process.sandboxId, { pid: process.pid });
    const queue = new AsyncQueue<ProcessEvent>();
    if (entry) entry.listeners.add(queue);
    else queue.end();
    return queue;
  }

  /** Stop listening (the command runs on). */
  unlisten(process: TrackedProcess, queue: AsyncQueue<ProcessEvent>): void {
    this.entry(process.sandboxId, { pid: process.pid })?.listeners.delete(queue);
    queue.end();
  }

  /** Kill the command and everything it started (its exec's whole tree). */
  kill(process: TrackedProcess): void {
    const entry = this.entry(process.sandboxId, { pid: process.pid });
    if (!entry) return;
    entry.killed = true;
    entry.abort.abort();
  }

  writeStdin(process: TrackedProcess, data: Uint8Array): void {
    const stdin = this.stdinOf(process);
    stdin.write(Buffer.from(data));
  }

  closeStdin(process: TrackedProcess): void {
    this.stdinOf(process).end();
  }

  /** Kill every tracked command (the daemon is stopping: the manager waits for running execs). */
  close(): void {
    for (const e of this.entries.all()) this.kill(e);
  }

  private stdinOf(process: TrackedProcess): PassThrough {
    const entry = this.entry(process.sandboxId, { pid: process.pid });
    if (!entry) throw new NotFoundError(`process ${process.pid} has ended`);
    if (!entry.stdin) throw new ConflictError(`process ${process.pid} was started without stdin`, { hint: 'start it with stdin: true to send it input' });
    if (entry.stdin.writableEnded) throw new ConflictError(`the stdin of process ${process.pid} is closed`);
    return entry.stdin;
  }

  private entry(sandboxId: string, selector: { pid: number } | { tag: string }): Entry | undefined {
    return 'pid' in selector ? this.entries.get(sandboxId, selector.pid) : this.byTag(sandboxId, selector.tag);
  }

  private byTag(sandboxId: string, tag: string): Entry | undefined {
    for (const e of this.entries.of(sandboxId)) if (e.tag === tag) return e;
    return undefined;
  }

}

/** An exec's outcome in envd's words (a killed command: exit -1, not exited, "signal: killed"). */
function toEnd(summary: ExecSummary | undefined, killed: boolean): ProcessEnd {
  if (killed) return { exitCode: -1, exited: false, status: 'signal: killed', error: 'signal: killed' };
  if (!summary) return { exitCode: -1, exited: false, status: 'unknown', error: 'the command ended without an exit status' };
  if (summary.timedOut) return { exitCode: summary.exitCode, exited: false, status: 'signal: killed', error: `killed after its exec timeout (${Math.round(summary.durationMs / 1000)} s; the profile's execTimeout)` };
  if (summary.oomKilled) return { exitCode: summary.exitCode, exited: false, status: 'signal: killed', error: 'killed by the out-of-memory killer (the sandbox memory limit)' };
  const status = `exit status ${summary.exitCode}`;
  return summary.exitCode === 0 ? { exitCode: 0, exited: true, status } : { exitCode: summary.exitCode, exited: true, status, error: status };
}
