/** Exec pieces every driver needs: output capping, the base environment, the exit event. (Files: files.ts.) */
import type { ExecSummary } from '../contract/model.js';
import { EXIT_KILLED, EXIT_TIMED_OUT } from '../contract/exit-codes.js';

/** Keeps at most `limit` bytes of output across stdout and stderr. */
export class OutputCap {
  private used = 0;
  truncated = false;
  constructor(private readonly limit: number) {}

  /** The part of `chunk` that still fits, or undefined when nothing does. */
  take(chunk: Buffer): Buffer | undefined {
    const room = this.limit - this.used;
    if (room <= 0) {
      this.truncated = this.truncated || chunk.length > 0;
      return undefined;
    }
    if (chunk.length <= room) {
      this.used += chunk.length;
      return chunk;
    }
    this.used = this.limit;
    this.truncated = true;
    return chunk.subarray(0, room);
  }
}

/**
 * The variable every process of an exec carries, inherited by its children: which exec started a
 * process (`processes()`), and on docker how a timeout finds a descendant that left the exec's
 * session and parent (native/proc-tree.h). The native side spells it `EXEC_ID_ENV` (exec-relay.h).
 */
export const EXEC_ID_ENV = 'AGENTBOX_EXEC_ID';

/** The environment of an exec: the base, the request's, and the exec's id (which the request cannot override). */
export function execEnv(opts: { env: Record<string, string>; execId: string }): Record<string, string> {
  return { ...baseEnv(opts.env), [EXEC_ID_ENV]: opts.execId };
}

/** The environment every command starts from: nothing of the host's leaks in. */
export function baseEnv(extra: Record<string, string>): Record<string, string> {
  return {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/workspace',
    USER: 'sandbox',
    LANG: 'C.UTF-8',
    ...extra,
  };
}

/** The exit event every driver ends an exec with: 124 on timeout, 137 when the OOM killer struck. */
export function execSummary(o: { execId: string; exitCode: number; timedOut: boolean; oomKilled: boolean; truncated: boolean; startedAt: number }): ExecSummary {
  return {
    execId: o.execId,
    exitCode: o.timedOut ? EXIT_TIMED_OUT : o.oomKilled ? EXIT_KILLED : o.exitCode,
    truncated: o.truncated,
    timedOut: o.timedOut,
    oomKilled: o.oomKilled,
    durationMs: Math.round((performance.now() - o.startedAt) * 10) / 10,
  };
}
