/**
 * A faster way into a runc container than an Engine exec: agentbox-helper joins the container's
 * cgroups, enters its namespaces (as `docker exec` does through runc), drops every capability,
 * sets no_new_privs and a seccomp filter close to Docker's default, becomes uid 1000 and runs the
 * command. An Engine exec costs about 80 ms here (create, hijacked start, inspect); this costs a
 * fork and a few syscalls.
 *
 * Only where it is safe and possible: dockerd on this host (a Unix socket), agentbox running as
 * root, the helper built, and runc (gVisor's sentry has no namespaces to enter). Otherwise the
 * driver keeps using the Engine API. AGENTBOX_DOCKER_DIRECT_EXEC=0 turns it off.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import type { Readable } from 'node:stream';
import { EXIT_AGENTBOX_FAILED, EXIT_KILLED, EXIT_SIGNAL_BASE } from '../../contract/exit-codes.js';
import { cgroupsOf, isSameProcess, processStartTime } from '../proc.js';
import type { EngineExec, EngineExecOpts } from './engine-exec.js';

/** A container's init as the host sees it, and the cgroup directories an exec must join. */
export interface EntryTarget {
  pid: number;
  startTime: number;
  cgroupDirs: string[];
}

export function directEntryUsable(helper: string, engineIsLocal: boolean, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.AGENTBOX_DOCKER_DIRECT_EXEC === '0' || !engineIsLocal || process.getuid?.() !== 0) return false;
  try {
    accessSync(helper, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function entryTarget(pid: number): EntryTarget | undefined {
  const startTime = processStartTime(pid);
  if (startTime === undefined) return undefined;
  try {
    return { pid, startTime, cgroupDirs: cgroupsOf(pid).map((c) => c.dir) };
  } catch {
    return undefined;
  }
}

export function targetAlive(t: EntryTarget): boolean {
  return isSameProcess(t.pid, t.startTime);
}

const UID = '1000';

/** Run one command in the container through the helper; the same shape as an Engine exec. */
export function directExec(helper: string, target: EntryTarget, o: EngineExecOpts): EngineExec {
  const [uid, gid] = o.user.split(':');
  const child = spawn(
    helper,
    ['exec', '--pid', String(target.pid), '--start-time', String(target.startTime), '--uid', uid ?? UID, '--gid', gid ?? uid ?? UID, ...target.cgroupDirs.flatMap((d) => ['--cgroup', d]), '--cwd', o.workingDir, '--', ...o.cmd],
    { stdio: ['pipe', 'pipe', 'pipe'], env: o.env, cwd: '/' },
  );
  const stdin = child.stdin!;
  stdin.on('error', () => undefined); // the command may exit without reading its stdin
  if (o.stdin === undefined) stdin.end();
  else if (Buffer.isBuffer(o.stdin)) stdin.end(o.stdin);
  else (o.stdin as Readable).pipe(stdin);
  const exitCode = new Promise<number>((resolve) => {
    child.on('error', () => resolve(EXIT_AGENTBOX_FAILED));
    child.on('close', (code, signal) => {
      stdin.destroy(); // a background job that kept the exec's stdin gets EOF, not the rest of the input
      resolve(code ?? (signal === 'SIGKILL' ? EXIT_KILLED : EXIT_SIGNAL_BASE));
    });
  });
  // Closing the pipes too: a grandchild (the `run` wrapper's command) that outlives the helper then
  // gets EPIPE instead of blocking for ever on a pipe nobody reads.
  const destroy = (): void => {
    child.kill('SIGKILL');
    child.stdout?.destroy();
    child.stderr?.destroy();
  };
  return { stdout: child.stdout!, stderr: child.stderr!, exitCode, destroy };
}
