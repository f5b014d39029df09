/**
 * The Runtime-shaped operations over a VM's agent channel: exec as ExecEvents, and the transports
 * files.ts (`SandboxFiles`) and processes.ts (`SandboxProcesses`) run on, so the microVM driver gets
 * the same file and process semantics as the others from the same C (file-ops.h, proc-list.h).
 */
import { finished } from 'node:stream/promises';
import type { ExecEvent } from '../../contract/model.js';
import type { FileOpProcess, FileOpStarter } from '../files.js';
import type { ProcOpRunner } from '../processes.js';
import { execEnv, execSummary, OutputCap } from '../shared.js';
import type { ExecOpts } from '../types.js';
import type { VmChannel, VmStream } from './channel.js';
import type { OpenRequest } from './frames.js';

/** Output queued for a slow consumer beyond which the streams are paused (the agent's credit then stalls the command). */
const QUEUE_BYTES = 1 << 20;
/**
 * The agent kills a command at its timeout; should it not answer (a guest wedged under memory
 * pressure), the host asks again this long after the deadline and, as long again later, gives the
 * exec up as timed out. @internal exported for tests
 */
export const BACKSTOP_MS = 5000;

/**
 * Run `cmd` in the guest as the sandbox user; yields stdout/stderr chunks and exactly one exit event.
 * Rejects (ConflictError) when the VM or its channel goes away before the exit.
 */
export async function* vmExec(channel: VmChannel, cmd: string[], opts: ExecOpts): AsyncGenerator<ExecEvent> {
  const startedAt = performance.now();
  const stream = channel.open({ kind: 'exec', cwd: opts.cwd ?? '/workspace', timeoutMs: opts.timeoutMs, argv: cmd, env: execEnv(opts) });
  stream.sendStdin(opts.stdin);
  const onAbort = (): void => stream.kill();
  if (opts.signal?.aborted) stream.kill();
  else opts.signal?.addEventListener('abort', onAbort, { once: true });

  const backstop =
    opts.timeoutMs > 0
      ? setTimeout(() => {
          stream.kill();
          setTimeout(() => stream.abandon({ code: 124, reason: 'timeout' }), BACKSTOP_MS).unref();
        }, opts.timeoutMs + BACKSTOP_MS)
      : undefined;
  backstop?.unref();
  const cap = new OutputCap(opts.outputLimitBytes);
  const queue: ExecEvent[] = [];
  let queued = 0;
  let wake: (() => void) | undefined;
  const notify = (): void => {
    wake?.();
    wake = undefined;
  };
  const take = (type: 'stdout' | 'stderr') => (c: Buffer) => {
    const part = cap.take(c);
    if (!part) return;
    queue.push({ type, data: part });
    queued += part.length;
    if (queued > QUEUE_BYTES) {
      stream.stdout.pause();
      stream.stderr.pause();
    }
    notify();
  };
  stream.stdout.on('data', take('stdout'));
  stream.stderr.on('data', take('stderr'));
  let ended = 0;
  const onEnd = (): void => {
    ended++;
    notify();
  };
  stream.stdout.once('end', onEnd);
  stream.stderr.once('end', onEnd);
  let failure: Error | undefined;
  let exit: Awaited<VmStream['exit']> | undefined;
  stream.exit.then(
    (e) => {
      exit = e;
      notify();
    },
    (err: Error) => {
      failure = err;
      notify();
    },
  );
  try {
    for (;;) {
      const ev = queue.shift();
      if (ev) {
        if (ev.type !== 'exit') queued -= ev.data.length;
        if (queued <= QUEUE_BYTES / 2 && stream.stdout.isPaused()) {
          stream.stdout.resume();
          stream.stderr.resume();
        }
        yield ev;
        continue;
      }
      if (failure) throw failure;
      if (exit && ended === 2) break;
      await new Promise<void>((r) => (wake = r));
    }
    yield {
      type: 'exit',
      result: execSummary({ execId: opts.execId, exitCode: exit.code, timedOut: exit.reason === 'timeout', oomKilled: exit.reason === 'oom', truncated: cap.truncated, startedAt }),
    };
  } finally {
    clearTimeout(backstop);
    opts.signal?.removeEventListener('abort', onAbort);
    // A consumer that stops early (break, an error) ends the command, as an abort would.
    if (!exit && !failure) stream.kill();
  }
}

/** files.ts's transport: one `file OP PATH` stream per operation, run as the sandbox user. */
export function vmFileOps(channelOf: () => VmChannel): FileOpStarter {
  return async (_handle, op, path, stdin): Promise<FileOpProcess> => {
    const stream = channelOf().open({ kind: 'file', cwd: '/', timeoutMs: 0, argv: [op, path], env: {} });
    stream.sendStdin(stdin);
    return {
      stdout: stream.stdout,
      stderr: stream.stderr,
      exitCode: stream.exit.then((e) => e.code),
      abort: () => stream.kill(),
    };
  };
}

/** One request without stdin, to its end: all of its stdout, its stderr (up to 8 KiB) and its exit code. */
export async function vmRequest(channel: VmChannel, kind: OpenRequest['kind'], argv: string[], timeoutMs: number): Promise<{ stdout: Buffer; stderr: string; exitCode: number }> {
  const stream = channel.open({ kind, cwd: '/', timeoutMs, argv, env: {} });
  stream.sendStdin(undefined);
  const out: Buffer[] = [];
  let err = '';
  stream.stdout.on('data', (c: Buffer) => out.push(c));
  stream.stderr.on('data', (c: Buffer) => {
    if (err.length < 8192) err += c.toString();
  });
  const [{ code }] = await Promise.all([stream.exit, finished(stream.stdout), finished(stream.stderr)]);
  return { stdout: Buffer.concat(out), stderr: err, exitCode: code };
}

/** processes.ts's transport: `ps` and `signal NAME PID` streams. */
export function vmProcOps(channelOf: () => VmChannel): ProcOpRunner {
  return async (_handle, args) => {
    const [kind, ...rest] = args;
    return vmRequest(channelOf(), kind, rest, 30000);
  };
}
