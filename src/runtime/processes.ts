/**
 * The processes API of every driver (`processes`, `signalProcess`), written once, as files.ts is for files.
 *
 * The work inside the sandbox is native/proc-list.h, the same C in agentbox-helper (local) and
 * agentbox-docker-init (docker), run as the sandbox user inside the sandbox's pid namespace, so a pid
 * is the sandbox's own and a signal can reach nothing outside it:
 *   `ps`              one record per process on stdout, every field NUL-terminated: pid, ppid, uid,
 *                     user, exec id, argc, then argc arguments; exit 0.
 *   `signal NAME PID` exit 0; on failure one stderr line `agentbox-proc-error:CODE:message`, exit 1.
 * A driver supplies only the transport (`ProcOpRunner`).
 */
import { AgentboxError, BadRequestError, ForbiddenError, InternalError, NotFoundError } from '../contract/errors.js';
import type { ProcessInfo, SignalName } from '../contract/model.js';
import type { Runtime, SandboxHandle } from './types.js';

/** What the transport gives back: the operation's whole output and its exit status. */
export interface ProcOpResult {
  stdout: Buffer;
  stderr: string;
  exitCode: number;
}

/**
 * What a driver implements: run `ps` or `signal NAME PID` of native/proc-list.h inside the sandbox as
 * the sandbox user. Throws (ConflictError) when the sandbox is not running.
 */
export type ProcOpRunner = (handle: SandboxHandle, args: ['ps'] | ['signal', SignalName, string]) => Promise<ProcOpResult>;

const ERROR_PREFIX = 'agentbox-proc-error:';

/** The two process members of `Runtime`, over a driver's transport. */
export class SandboxProcesses implements Pick<Runtime, 'processes' | 'signalProcess'> {
  constructor(private readonly run: ProcOpRunner) {}

  async processes(handle: SandboxHandle): Promise<ProcessInfo[]> {
    const r = await this.run(handle, ['ps']);
    if (r.exitCode !== 0) throw procError(r.stderr, handle.id, undefined);
    return parseProcessList(r.stdout);
  }

  async signalProcess(handle: SandboxHandle, pid: number, signal: SignalName): Promise<void> {
    if (pid === 1) throw initRefused(handle.id);
    if (!Number.isInteger(pid) || pid < 1) throw new BadRequestError(`${pid} is not a pid`, { hint: `agentbox ps ${handle.id} lists the sandbox's processes` });
    const r = await this.run(handle, ['signal', signal, String(pid)]);
    if (r.exitCode !== 0) throw procError(r.stderr, handle.id, pid);
  }
}

/** Killing PID 1 would end the sandbox from inside (and the init ignores signals anyway): refused by name. */
export function initRefused(sandboxId: string): AgentboxError {
  return new ForbiddenError(`PID 1 is the init of sandbox ${sandboxId}: it cannot be killed`, { hint: `to end everything in it, stop the sandbox: agentbox stop ${sandboxId}` });
}

/** The records of native/proc-list.h's `ps`, sorted by pid. A truncated last record is dropped. */
export function parseProcessList(buf: Buffer): ProcessInfo[] {
  const fields = buf.toString('utf8').split('\0');
  const out: ProcessInfo[] = [];
  let i = 0;
  while (i + 6 <= fields.length) {
    const [pid, ppid, uid, user, execId, argc] = fields.slice(i, i + 6) as [string, string, string, string, string, string];
    const n = Number(argc);
    if (!/^\d+$/.test(pid) || !Number.isInteger(n) || n < 0 || i + 6 + n > fields.length) break;
    const argv = fields.slice(i + 6, i + 6 + n);
    i += 6 + n;
    out.push({
      pid: Number(pid),
      ppid: Number(ppid),
      uid: Number(uid),
      user: user === '' ? null : user,
      command: argv.join(' '),
      argv,
      execId: execId === '' ? null : execId,
    });
  }
  return out.sort((a, b) => a.pid - b.pid);
}

/** The error line of `signal` (or a failed `ps`) as a typed error. */
export function procError(stderr: string, sandboxId: string, pid: number | undefined): AgentboxError {
  const line = stderr.split('\n').find((l) => l.startsWith(ERROR_PREFIX));
  const [code, ...rest] = (line?.slice(ERROR_PREFIX.length) ?? '').split(':');
  const detail = rest.join(':').trim() || stderr.trim().slice(0, 300) || 'no detail';
  const ps = `agentbox ps ${sandboxId} lists the sandbox's processes`;
  if (pid !== undefined && code === 'not_found') return new NotFoundError(`no process ${pid} in sandbox ${sandboxId}`, { hint: `it may have ended; ${ps}` });
  if (pid !== undefined && code === 'forbidden') {
    return pid === 1 ? initRefused(sandboxId) : new ForbiddenError(`process ${pid} of sandbox ${sandboxId} is not the sandbox user's (${detail})`, { hint: `only the sandbox user's processes can be signalled; ${ps}` });
  }
  if (code === 'bad_request') return new BadRequestError(detail, { hint: ps });
  return new InternalError(`could not ${pid === undefined ? 'list the processes' : `signal process ${pid}`} of sandbox ${sandboxId}: ${detail}`);
}
