/** Child processes for image builds: argument arrays only, a clean environment, stderr tails in errors. */
import { spawn } from 'node:child_process';
import { InternalError, RuntimeUnavailableError } from '../contract/errors.js';

export interface Progress {
  phase: string;
  message: string;
  percent?: number;
}
export type OnProgress = (p: Progress) => void;

export interface RunToolOpts {
  /** Called for each complete stdout line. */
  onStdout?: (line: string) => void;
  /** Called for each complete stderr line. */
  onStderr?: (line: string) => void;
  signal?: AbortSignal;
  /** Hint for the "not installed" error, e.g. `apt-get install mmdebstrap`. */
  installHint?: string;
}

const HOST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Passed through so a host that reaches its mirror through a proxy keeps doing so. */
const PASS_ENV = ['http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'TMPDIR'];
const TAIL_LINES = 6;

function toolEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: HOST_PATH, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' };
  for (const key of PASS_ENV) if (process.env[key] !== undefined) env[key] = process.env[key];
  return env;
}

/** Split a byte stream into lines; the last partial line is flushed by the returned function. */
function lineSplitter(onLine: (line: string) => void): { push: (chunk: Buffer) => void; flush: () => void } {
  let partial = '';
  return {
    push: (chunk) => {
      partial += chunk.toString('utf8');
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) onLine(line);
    },
    flush: () => {
      if (partial !== '') onLine(partial);
      partial = '';
    },
  };
}

/** Why an aborted build stopped: the caller's reason when it is an error, else a plain message. */
export function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new InternalError('image build aborted');
}

/**
 * Run `cmd args...` and resolve when it exits 0. A missing tool is `runtime_unavailable`;
 * a failure is `internal` with the tool's last stderr lines in the message.
 */
export function runTool(cmd: string, args: string[], opts: RunToolOpts = {}): Promise<void> {
  const { signal } = opts;
  if (signal?.aborted) return Promise.reject(abortReason(signal));
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: toolEnv(), ...(signal ? { signal } : {}) });
    const tail: string[] = [];
    const out = lineSplitter((line) => opts.onStdout?.(line));
    const err = lineSplitter((line) => {
      if (line.trim() === '') return;
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
      opts.onStderr?.(line);
    });
    child.stdout.on('data', out.push);
    child.stderr.on('data', err.push);
    let failed: Error | undefined;
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (signal?.aborted) failed = abortReason(signal);
      else if (e.code === 'ENOENT') failed = new RuntimeUnavailableError(`${cmd} is not installed`, { hint: opts.installHint ?? `apt-get install ${cmd}` });
      else failed = new InternalError(`${cmd} could not be started: ${e.message}`, { cause: e });
    });
    child.on('close', (code, sig) => {
      out.flush();
      err.flush();
      if (failed) return reject(failed);
      if (signal?.aborted) return reject(abortReason(signal));
      if (code === 0) return resolvePromise();
      const how = sig ? `killed by ${sig}` : `exit ${code}`;
      const detail = tail.length ? `: ${tail.join(' | ')}` : '';
      reject(new InternalError(`${cmd} failed (${how})${detail}`));
    });
  });
}

