/**
 * The filesystem operations envd offers that agentbox's files API has no member for, built on the
 * sandbox's own API: stat (the parent's listing), make dir and move (a command inside the sandbox,
 * `mkdir -p` / `mv -fT`, which busybox and GNU coreutils both have; recorded in the exec history).
 */
import { posix } from 'node:path';
import { BadRequestError, ConflictError, ForbiddenError, NotFoundError } from '../contract/errors.js';
import type { DirEntry } from '../contract/model.js';
import type { Caller, SandboxManager } from '../core/manager.js';
import { rootEntry } from './entry-info.js';

/** Exit codes of the scripts below, each for one case the caller must tell apart. */
const EXISTS = 17;
const MISSING = 2;

/** The entry at `path`, or not_found. */
export async function statPath(manager: SandboxManager, id: string, path: string, caller: Caller): Promise<DirEntry> {
  if (path === '/') return rootEntry();
  let entries: DirEntry[];
  try {
    entries = await manager.listDir(id, posix.dirname(path), caller);
  } catch (err) {
    // A parent that is a file: nothing can be at `path`.
    if (err instanceof BadRequestError) throw new NotFoundError(`no such file or directory: ${path}`);
    throw err;
  }
  const entry = entries.find((e) => e.name === posix.basename(path));
  if (!entry) throw new NotFoundError(`no such file or directory: ${path}`, { hint: `list ${posix.dirname(path)} to see what is there` });
  return entry;
}

/** Make a directory and its parents; conflict (E2B: AlreadyExists) when something is already there. */
export async function makeDir(manager: SandboxManager, id: string, path: string, caller: Caller): Promise<void> {
  await runFsCommand(manager, id, caller, ['/bin/sh', '-c', `[ -e "$1" ] && exit ${EXISTS}; mkdir -p -- "$1"`, 'mkdir', path], path);
}

/** Rename `from` to `to` (replacing a file there; a directory there is refused, as rename(2) would for a file). */
export async function move(manager: SandboxManager, id: string, from: string, to: string, caller: Caller): Promise<void> {
  await runFsCommand(manager, id, caller, ['/bin/sh', '-c', `[ -e "$1" ] || [ -L "$1" ] || exit ${MISSING}; mv -fT -- "$1" "$2"`, 'mv', from, to], from);
}

async function runFsCommand(manager: SandboxManager, id: string, caller: Caller, cmd: string[], path: string): Promise<void> {
  const r = await manager.exec(id, { cmd, cwd: '/', timeoutMs: 60_000 }, caller);
  if (r.exitCode === 0) return;
  const detail = r.stderr.trim().split('\n').pop()?.slice(0, 300) ?? '';
  if (r.exitCode === EXISTS) throw new ConflictError(`${path} already exists`);
  if (r.exitCode === MISSING) throw new NotFoundError(`no such file or directory: ${path}`);
  if (/permission denied|read-only file system/i.test(detail)) throw new ForbiddenError(detail, { hint: 'only /workspace and /tmp are writable' });
  throw new BadRequestError(detail || `${cmd[3] ?? 'the command'} failed with exit ${r.exitCode}`);
}
