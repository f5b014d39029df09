/**
 * Turns a spawned process that runs a sandbox command into the driver's event stream:
 * output chunks (capped), a timeout that kills the whole command tree, abort, one `exit` event.
 */
import type { ChildProcess } from 'node:child_process';
import { Readable } from 'node:stream';
import { AsyncQueue } from '../core/async-queue.js';
import type { ExecEvent } from '../contract/model.js';
import { execSummary, OutputCap } from './shared.js';
import type { ExecOpts } from './types.js';

export interface ExecHooks {
  /** Kill everything the command started (the driver knows how: cgroup, container exec...). */
  killTree(): Promise<void>;
  /** After the process ended: the real exit code and whether the OOM killer struck. */
  settle(raw: { code: number | null; signal: NodeJS.Signals | null; timedOut: boolean }): Promise<{ exitCode: number; oomKilled: boolean }>;
  /** Strip driver framing from stderr, if any. */
  stderrFilter?: (chunk: Buffer) => Buffer;
}

export function streamExec(child: ChildProcess, opts: ExecOpts, hooks: ExecHooks): AsyncIterable<ExecEvent> {
  const queue = new AsyncQueue<ExecEvent>();
  const started = performance.now();
  const cap = new OutputCap(opts.outputLimitBytes);
  let timedOut = false;
  let killing: Promise<void> | undefined;
  const killOnce = (): Promise<void> => (killing ??= hooks.killTree().catch(() => undefined));

  const timer = setTimeout(() => {
    timedOut = true;
    void killOnce();
  }, opts.timeoutMs);
  const onAbort = (): void => void killOnce();
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  child.stdout?.on('data', (chunk: Buffer) => {
    const part = cap.take(chunk);
    if (part) queue.push({ type: 'stdout', data: part });
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    const part = cap.take(hooks.stderrFilter ? hooks.stderrFilter(chunk) : chunk);
    if (part && part.length > 0) queue.push({ type: 'stderr', data: part });
  });

  if (child.stdin) {
    child.stdin.on('error', () => undefined); // the command may exit without reading its stdin
    const input = opts.stdin;
    if (input === undefined) child.stdin.end();
    else if (Buffer.isBuffer(input)) child.stdin.end(input);
    else (input as Readable).pipe(child.stdin);
  }

  let spawnError: Error | undefined;
  child.on('error', (err) => (spawnError = err));
  child.on('close', (code, signal) => {
    clearTimeout(timer);
    // The exec is over: a background job that kept its stdin gets EOF, not the rest of the input.
    child.stdin?.destroy();
    opts.signal?.removeEventListener('abort', onAbort);
    void (async () => {
      if (killing) await killing;
      if (spawnError && code === null) {
        queue.end(spawnError);
        return;
      }
      const { exitCode, oomKilled } = await hooks.settle({ code, signal, timedOut });
      queue.push({ type: 'exit', result: execSummary({ execId: opts.execId, exitCode, timedOut, oomKilled, truncated: cap.truncated, startedAt: started }) });
      queue.end();
    })().catch((err: unknown) => queue.end(err));
  });
  return queue;
}
