/** Drain an exec event stream into a result, for assertions. */
import type { ExecEvent, ExecSummary } from '../../src/contract/model.js';
import type { Runtime, SandboxHandle, ExecOpts } from '../../src/runtime/types.js';

export interface Collected extends ExecSummary {
  stdout: string;
  stderr: string;
  stdoutBytes: Buffer;
  firstChunkAtMs: number | undefined;
}

export async function collect(events: AsyncIterable<ExecEvent>): Promise<Collected> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let summary: ExecSummary | undefined;
  const t0 = performance.now();
  let first: number | undefined;
  for await (const ev of events) {
    if (ev.type === 'exit') summary = ev.result;
    else {
      first ??= performance.now() - t0;
      (ev.type === 'stdout' ? out : err).push(ev.data);
    }
  }
  if (!summary) throw new Error('no exit event');
  const stdoutBytes = Buffer.concat(out);
  return { ...summary, stdout: stdoutBytes.toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), stdoutBytes, firstChunkAtMs: first };
}

let n = 0;
export function execOpts(extra: Partial<ExecOpts> = {}): ExecOpts {
  return { env: {}, timeoutMs: 30_000, outputLimitBytes: 4 * 1024 * 1024, execId: `exe_test${process.pid}_${++n}`, ...extra };
}

export async function run(rt: Runtime, h: SandboxHandle, cmd: string, extra: Partial<ExecOpts> = {}): Promise<Collected> {
  return collect(rt.exec(h, ['sh', '-c', cmd], execOpts(extra)));
}
