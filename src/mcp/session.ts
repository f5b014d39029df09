/**
 * The session sandbox: what `sandbox_exec` / `sandbox_write_file` / `sandbox_read_file` use when
 * the model gives no `id`. Created on first use with the policy defaults, labelled with the
 * session, deleted when the MCP session closes or after it has been idle for `idleMs` (the
 * daemon's reaper would stop it at the policy's idleTimeout anyway; deleting it here also clears
 * it from `sandbox_list`).
 */
import type { Logger } from 'pino';
import { AgentboxError, ConflictError } from '../contract/errors.js';
import type { SandboxOps } from './ops.js';

/** Label on every session sandbox; its value names the MCP session. */
export const SESSION_LABEL = 'agentbox.mcp-session';

export interface SessionSandboxOpts {
  /** Value of the SESSION_LABEL label (the HTTP session id, or `stdio-PID`). */
  tag: string;
  /** Delete the session sandbox after this long without a call that used it. */
  idleMs: number;
  logger?: Logger;
}

export interface SessionUse<T> {
  value: T;
  /** The session sandbox the call ran in. */
  id: string;
  /** Things the model should know: a sandbox was created, or replaced because the old one ended. */
  notes: string[];
}

export class SessionSandbox {
  private id: string | undefined;
  private pending: Promise<string> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private busy = 0;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** Said with the next creation: the previous session sandbox was deleted for idleness. */
  private expiredNote: string | undefined;

  constructor(
    private readonly ops: SandboxOps,
    private readonly opts: SessionSandboxOpts,
  ) {}

  /** The session sandbox's id, if one exists now. */
  get current(): string | undefined {
    return this.id;
  }

  get tag(): string {
    return this.opts.tag;
  }

  /**
   * Run `fn` against the session sandbox, creating it first if needed. If the sandbox ended in the
   * meantime (idle timeout, ttl, deleted by hand), a fresh one replaces it and `fn` runs once more:
   * safe, because an operation on an ended sandbox never started.
   */
  async use<T>(fn: (id: string) => Promise<T>): Promise<SessionUse<T>> {
    if (this.closed) throw new ConflictError('this MCP session is closed', { hint: 'start a new MCP session' });
    this.busy++;
    this.disarm();
    const notes: string[] = [];
    try {
      let id = await this.ensure(notes);
      try {
        return { value: await fn(id), id, notes };
      } catch (err) {
        const ended = await endedReason(this.ops, err, id);
        if (ended === undefined) throw err;
        notes.push(`the session sandbox ${id} had ended (${ended}); files written to it earlier are gone`);
        this.forget(id);
        void this.ops.delete(id).catch(() => undefined);
        id = await this.ensure(notes);
        return { value: await fn(id), id, notes };
      }
    } finally {
      this.busy--;
      this.arm();
    }
  }

  /** The model deleted or stopped the session sandbox itself: the next use creates a new one. */
  forget(id: string): void {
    if (this.id !== id) return;
    this.id = undefined;
    this.disarm();
  }

  /** Delete the session sandbox (waiting for a create in flight) and refuse further use. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      this.disarm();
      if (this.pending) await this.pending.catch(() => undefined);
      const id = this.id;
      this.id = undefined;
      if (id) await this.destroy(id, 'session closed');
    })();
    return this.closing;
  }

  private async ensure(notes: string[]): Promise<string> {
    if (this.id) return this.id;
    this.pending ??= (async () => {
      try {
        const sb = await this.ops.create({ labels: { [SESSION_LABEL]: this.opts.tag } });
        this.id = sb.id;
        if (this.expiredNote) notes.push(this.expiredNote);
        this.expiredNote = undefined;
        notes.push(`created this session's sandbox ${sb.id} (image ${sb.image}); it is deleted when the MCP session ends`);
        this.opts.logger?.info({ sandbox_id: sb.id, session: this.opts.tag }, 'session sandbox created');
        return sb.id;
      } finally {
        this.pending = undefined;
      }
    })();
    const id = await this.pending;
    if (this.closed) throw new ConflictError('this MCP session closed while its sandbox was being created', { hint: 'start a new MCP session' });
    return id;
  }

  private arm(): void {
    if (this.closed || this.busy > 0 || !this.id) return;
    this.disarm();
    this.timer = setTimeout(() => void this.expire(), this.opts.idleMs);
    this.timer.unref();
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async expire(): Promise<void> {
    const id = this.id;
    if (this.busy > 0 || !id) return;
    this.id = undefined;
    this.expiredNote = `the previous session sandbox ${id} was deleted after ${Math.round(this.opts.idleMs / 1000)} s without use; files written to it are gone`;
    await this.destroy(id, 'idle');
  }

  private async destroy(id: string, why: string): Promise<void> {
    try {
      await this.ops.delete(id);
      this.opts.logger?.info({ sandbox_id: id, session: this.opts.tag, why }, 'session sandbox deleted');
    } catch (err) {
      this.opts.logger?.warn({ sandbox_id: id, session: this.opts.tag, err: err instanceof Error ? err.message : String(err) }, 'could not delete the session sandbox');
    }
  }
}

/**
 * Whether `err` (from an operation on sandbox `id`) means the sandbox itself is gone or no longer
 * running, rather than e.g. a missing file in it: asks for the sandbox's state. Returns why it
 * ended (`idle_timeout`, `deleted`, `unknown sandbox`...), or undefined when it is still running.
 */
export async function endedReason(ops: SandboxOps, err: unknown, id: string): Promise<string | undefined> {
  if (!(err instanceof AgentboxError) || (err.code !== 'not_found' && err.code !== 'conflict')) return undefined;
  try {
    const sb = await ops.get(id);
    if (sb.state === 'running') return undefined;
    return sb.endReason ?? sb.state;
  } catch (e) {
    if (e instanceof AgentboxError && e.code === 'not_found') return 'unknown sandbox';
    return undefined;
  }
}
