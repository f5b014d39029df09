/**
 * Exec recording. Every exec passes through here on its way from the runtime to the caller: its
 * row is in the history from the start; while its events pass, the tails of its output are kept,
 * followers see them live, and the sandbox counts as busy (the reaper never idles it out
 * mid-command); when it ends, its outcome, the tenant's exec time and the metrics are written.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { proxyEnv } from '../../egress/service.js';
import { execClass, type Metrics } from '../../observability/metrics.js';
import { commandArgs, failSpan, sandboxAttributes, Tracing } from '../../observability/tracing.js';
import type { ExecOpts } from '../../runtime/types.js';
import type { Store, StoredExec, StoredSandbox } from '../../store/store.js';
import { AgentboxError, NotFoundError } from '../../contract/errors.js';
import { EXIT_AGENTBOX_FAILED } from '../../contract/exit-codes.js';
import { LiveExecs } from '../live-execs.js';
import { RecentBytes } from '../recent-bytes.js';
import type { ExecEvent, ExecRecord, ExecResult, ExecSummary } from '../../contract/model.js';
import type { ExecRequest } from '../../contract/requests.js';
import { utcDay } from './admission.js';
import { markActive } from './lifecycle.js';

export function newExecId(): string {
  return `exe_${randomBytes(8).toString('hex')}`;
}

/** What the runtime gets: the proxy's env (with egress) under the sandbox's under the request's; the timeout capped by the profile's. */
export function execOpts(stored: StoredSandbox, req: ExecRequest, execId: string, signal?: AbortSignal, input?: Readable): ExecOpts {
  const spec = stored.spec;
  return {
    execId,
    env: { ...(stored.sandbox.egress.mode === 'none' ? {} : proxyEnv()), ...spec.env, ...req.env },
    ...(req.cwd ? { cwd: req.cwd } : {}),
    ...(input !== undefined ? { stdin: input } : req.stdin !== undefined ? { stdin: Buffer.from(req.stdin) } : {}),
    timeoutMs: Math.min(req.timeoutMs ?? spec.execTimeoutMs, spec.execTimeoutMs),
    outputLimitBytes: spec.outputLimitBytes,
    ...(signal ? { signal } : {}),
  };
}

export interface ExecRecorderOpts {
  store: Store;
  logger: Logger;
  metrics?: Metrics | undefined;
  /** Bytes of each stream kept in the exec history. */
  tailBytes: number;
  /** Each exec is a `sandbox.exec` span. @default Tracing.disabled() */
  tracing?: Tracing | undefined;
  /** The replica whose execs these are (replica.ts), recorded on each; null: none named. */
  replica?: string | null | undefined;
}

/** An exec whose row is stored and whose command has not started yet. */
export interface BegunExec {
  execId: string;
  sandboxId: string;
  tenant: string;
  /** The sandbox's runtime (a metrics label). */
  runtime: string;
  startedAt: Date;
  cmd: string[];
  /** The sandbox's runtime and isolation, for its span. */
  sandbox?: { runtime: string; isolation: string } | undefined;
}

export class ExecRecorder {
  /** Running execs per sandbox. */
  private readonly running = new Map<string, number>();
  private readonly live = new LiveExecs();

  constructor(private readonly opts: ExecRecorderOpts) {}

  /** The sandbox is active from now on, and the exec is in its history (exitCode null while it runs). */
  begin(exec: { execId: string; sandboxId: string; tenant: string; runtime?: string; cmd: string[]; sandbox?: { runtime: string; isolation: string } }): BegunExec {
    const startedAt = new Date();
    markActive(this.opts.store, exec.sandboxId);
    this.opts.store.insertExec({ id: exec.execId, sandboxId: exec.sandboxId, tenant: exec.tenant, cmd: exec.cmd, startedAt: startedAt.toISOString(), replica: this.opts.replica ?? null });
    return { execId: exec.execId, sandboxId: exec.sandboxId, tenant: exec.tenant, runtime: exec.runtime ?? exec.sandbox?.runtime ?? 'unknown', startedAt, cmd: exec.cmd, ...(exec.sandbox ? { sandbox: exec.sandbox } : {}) };
  }

  /**
   * The exec's events, recorded as they pass. `start` runs the command when the events are first
   * read; whatever happens after that (its end, an error, the reader giving up) finishes the record.
   */
  events(exec: BegunExec, start: () => Promise<AsyncIterable<ExecEvent>>): AsyncIterable<ExecEvent> {
    const { execId, sandboxId: id, tenant, runtime, startedAt } = exec;
    const { store, metrics } = this.opts;
    const out = new RecentBytes(this.opts.tailBytes);
    const err = new RecentBytes(this.opts.tailBytes);
    const log = this.opts.logger.child({ sandbox_id: id, exec_id: execId });
    const hold = (sandboxId: string): (() => void) => this.hold(sandboxId);
    const live = this.live;
    const tracing = this.opts.tracing ?? Tracing.disabled();
    return (async function* () {
      let summary: ExecSummary | undefined;
      // Started on the first read, in the request's context: its parent is the request's span.
      const span = tracing.startSpan('sandbox.exec', tracing.enabled ? execAttributes(exec) : {});
      let failed: unknown;
      const release = hold(id);
      live.start(execId, id);
      try {
        for await (const ev of await start()) {
          if (ev.type === 'stdout') out.push(ev.data);
          else if (ev.type === 'stderr') err.push(ev.data);
          else summary = ev.result;
          live.push(execId, ev);
          yield ev;
        }
      } catch (e) {
        failed = e;
        throw e;
      } finally {
        live.finish(execId);
        release();
        const endedAt = new Date();
        store.finishExec(execId, {
          exitCode: summary?.exitCode ?? -1,
          timedOut: summary?.timedOut ?? false,
          oomKilled: summary?.oomKilled ?? false,
          truncated: summary?.truncated ?? false,
          durationMs: summary?.durationMs ?? endedAt.getTime() - startedAt.getTime(),
          endedAt: endedAt.toISOString(),
          stdoutTail: out.bytes,
          stderrTail: err.bytes,
        });
        store.addExecMs(tenant, utcDay(), endedAt.getTime() - startedAt.getTime());
        markActive(store, id);
        log.info({ exit_code: summary?.exitCode, ms: summary?.durationMs, timed_out: summary?.timedOut }, 'exec finished');
        const outcome = execClass(summary);
        metrics?.execs.inc({ runtime, outcome, tenant });
        metrics?.execSeconds.observe({ runtime, outcome, tenant }, (endedAt.getTime() - startedAt.getTime()) / 1000);
        if (span.isRecording()) {
          if (summary) {
            span.setAttributes({
              'process.exit.code': summary.exitCode,
              'agentbox.exec.duration_ms': summary.durationMs,
              'agentbox.exec.truncated': summary.truncated,
              'agentbox.exec.oom': summary.oomKilled,
              'agentbox.exec.timed_out': summary.timedOut,
            });
          }
          if (failed !== undefined) failSpan(span, failed);
          else if (!summary) failSpan(span, new Error('the exec ended without a result (the client went away?)'));
          span.end();
        }
      }
    })();
  }

  /** Count something other than an exec (a port's connection) as running in the sandbox until `release`. */
  hold(sandboxId: string): () => void {
    this.running.set(sandboxId, (this.running.get(sandboxId) ?? 0) + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.running.set(sandboxId, (this.running.get(sandboxId) ?? 1) - 1);
      if (this.running.get(sandboxId) === 0) this.running.delete(sandboxId);
    };
  }

  /** A sandbox with a running exec is not idle, however long the exec takes. */
  busy(sandboxId: string): boolean {
    return (this.running.get(sandboxId) ?? 0) > 0;
  }

  /** A running exec's events (replayed, then live); undefined when it is not running here. */
  followLive(sandboxId: string, execId: string): AsyncIterable<ExecEvent> | undefined {
    return this.live.follow(sandboxId, execId);
  }
}

/** The whole result of an exec at once, from its events. */
export async function collectResult(execId: string, events: AsyncIterable<ExecEvent>): Promise<ExecResult> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let summary: ExecSummary | undefined;
  for await (const ev of events) {
    if (ev.type === 'stdout') out.push(ev.data);
    else if (ev.type === 'stderr') err.push(ev.data);
    else summary = ev.result;
  }
  if (!summary) throw new AgentboxError('internal', `exec ${execId} ended without a result`);
  return { ...summary, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
}

/** One exec of the history, or not_found. */
export function storedExec(store: Store, sandboxId: string, execId: string): StoredExec {
  const rec = store.getExec(sandboxId, execId);
  if (!rec) throw new NotFoundError(`no exec ${execId} in sandbox ${sandboxId}`, { hint: `agentbox logs ${sandboxId} lists its execs` });
  return rec;
}

/** A stored exec as the contract shows it; `withOutput` adds the tails of its output as text. */
export function toExecRecord(e: StoredExec, withOutput: boolean): ExecRecord {
  return {
    execId: e.id,
    cmd: e.cmd,
    state: e.lost ? 'lost' : e.endedAt === null ? 'running' : 'ended',
    startedAt: e.startedAt,
    endedAt: e.endedAt,
    exitCode: e.exitCode,
    timedOut: e.timedOut,
    oomKilled: e.oomKilled,
    truncated: e.truncated,
    durationMs: e.durationMs,
    ...(withOutput ? { stdout: e.stdoutTail?.toString('utf8') ?? '', stderr: e.stderrTail?.toString('utf8') ?? '' } : {}),
  };
}

/**
 * A stored exec replayed as events: its output tails as raw bytes, then its exit. A lost exec (its
 * daemon died while it ran) has no status of its own: its exit says 125, agentbox failed.
 */
export function replayStored(rec: StoredExec): AsyncIterable<ExecEvent> {
  return (async function* () {
    if (rec.stdoutTail?.length) yield { type: 'stdout', data: rec.stdoutTail } as ExecEvent;
    if (rec.stderrTail?.length) yield { type: 'stderr', data: rec.stderrTail } as ExecEvent;
    const exitCode = rec.exitCode ?? (rec.lost ? EXIT_AGENTBOX_FAILED : -1);
    yield {
      type: 'exit',
      result: { execId: rec.id, exitCode, truncated: rec.truncated, timedOut: rec.timedOut, oomKilled: rec.oomKilled, durationMs: rec.durationMs ?? 0 },
    } as ExecEvent;
  })();
}

/** A `sandbox.exec` span's attributes known at its start: never the request's env (it may hold secrets), only the command, bounded. */
function execAttributes(exec: BegunExec): Record<string, string | string[]> {
  return {
    ...(exec.sandbox ? sandboxAttributes({ id: exec.sandboxId, tenant: exec.tenant, ...exec.sandbox }) : { 'agentbox.sandbox.id': exec.sandboxId, 'agentbox.tenant': exec.tenant }),
    'agentbox.exec.id': exec.execId,
    'process.command_args': commandArgs(exec.cmd),
  } as Record<string, string | string[]>;
}
