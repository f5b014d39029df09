/**
 * Turns a remote exec (docker's Engine exec or exec agent, kubernetes' pods/exec) into the driver's
 * event stream: output chunks (capped), one `exit` event. The timeout itself is enforced inside the
 * sandbox by agentbox-docker-init's `run` mode; this side only keeps a backstop for an init that
 * cannot answer.
 */
import { finished } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { AsyncQueue } from '../core/async-queue.js';
import { EXIT_KILLED, EXIT_TIMED_OUT } from '../contract/exit-codes.js';
import type { ExecEvent } from '../contract/model.js';
import { execSummary, OutputCap } from './shared.js';
import type { ExecOpts } from './types.js';

/** A command running in a sandbox, as a driver's transport hands it over. */
export interface RemoteExec {
  stdout: Readable;
  stderr: Readable;
  /** The exit code, once stdout and stderr have ended; rejects when the transport failed. */
  exitCode: Promise<number>;
  /** Drop the transport's connection. */
  destroy(): void;
}

/** How long past its timeout an exec may take before the connection is dropped. */
const BACKSTOP_MS = 5000;
/** How often a long exec checks that its sandbox still runs (a dead gVisor sandbox leaves the stream open). */
const WATCH_MS = 1000;

export interface ExecEventHooks {
  start(): Promise<RemoteExec>;
  /** Kill the command tree from outside (abort, or an init that missed its own deadline). */
  kill(): Promise<void>;
  /** Whether the sandbox still runs (polled while an exec lasts). */
  alive(): Promise<boolean>;
  /** Called once the exit code is known: whether the OOM killer struck. */
  oomKilled(exitCode: number): Promise<boolean>;
}

export function execEvents(opts: ExecOpts, hooks: ExecEventHooks): AsyncIterable<ExecEvent> {
  const queue = new AsyncQueue<ExecEvent>();
  const started = performance.now();
  const cap = new OutputCap(opts.outputLimitBytes);
  void (async () => {
    const ex = await hooks.start();
    let deadlinePassed = false;
    let killing: Promise<void> | undefined;
    const killOnce = (): Promise<void> => (killing ??= hooks.kill().catch(() => undefined));
    const deadline = setTimeout(() => (deadlinePassed = true), opts.timeoutMs);
    let dropped = false;
    const backstop = setTimeout(() => {
      void killOnce();
      setTimeout(() => {
        dropped = true;
        ex.destroy();
      }, BACKSTOP_MS).unref();
    }, opts.timeoutMs + BACKSTOP_MS);
    let died = false;
    const watch = setInterval(() => {
      void hooks.alive().then(
        (alive) => {
          if (alive || died) return;
          died = true;
          ex.destroy();
        },
        () => undefined,
      );
    }, WATCH_MS);
    const onAbort = (): void => void killOnce();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.signal?.aborted) onAbort();

    ex.stdout.on('data', (chunk: Buffer) => {
      const part = cap.take(chunk);
      if (part) queue.push({ type: 'stdout', data: part });
    });
    ex.stderr.on('data', (chunk: Buffer) => {
      const part = cap.take(chunk);
      if (part) queue.push({ type: 'stderr', data: part });
    });
    try {
      await Promise.all([finished(ex.stdout), finished(ex.stderr)]).catch(() => undefined);
      const code = died ? EXIT_KILLED : dropped ? EXIT_TIMED_OUT : await ex.exitCode;
      const timedOut = !died && (dropped || (deadlinePassed && code === EXIT_TIMED_OUT));
      const oomKilled = !timedOut && (await hooks.oomKilled(code));
      queue.push({ type: 'exit', result: execSummary({ execId: opts.execId, exitCode: code, timedOut, oomKilled, truncated: cap.truncated, startedAt: started }) });
      queue.end();
    } finally {
      clearTimeout(deadline);
      clearTimeout(backstop);
      clearInterval(watch);
      opts.signal?.removeEventListener('abort', onAbort);
    }
  })().catch((err: unknown) => queue.end(err));
  return queue;
}
