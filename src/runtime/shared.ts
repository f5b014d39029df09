/** Pieces every driver needs: path checks, file-error mapping, output capping, listing parsing. */
import { posix } from 'node:path';
import type { AgentboxError } from '../contract/errors.js';
import { BadRequestError, ConflictError, ForbiddenError, InternalError, NotFoundError } from '../contract/errors.js';
import { EXIT_KILLED, EXIT_TIMED_OUT } from '../contract/exit-codes.js';
import type { DirEntry, ExecSummary } from '../contract/model.js';

/** An absolute path inside the sandbox, without `..` tricks or NUL bytes. */
export function checkPath(path: string): string {
  if (typeof path !== 'string' || path.length === 0) throw new BadRequestError('a path is required', { hint: 'pass ?path=/workspace/FILE' });
  if (path.length > 4096) throw new BadRequestError('path too long (max 4096 bytes)');
  if (path.includes('\0')) throw new BadRequestError('path contains a NUL byte');
  if (!path.startsWith('/')) {
    throw new BadRequestError(`path must be absolute inside the sandbox: ${path}`, { hint: `use /workspace/${path}` });
  }
  if (path.split('/').includes('..')) {
    throw new BadRequestError(`path must not contain '..': ${path}`, { hint: 'give the absolute path you mean' });
  }
  const normal = posix.normalize(path);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}

const FILE_ERROR_LINE = /agentbox-file-error:([A-Z0-9]+):(.*)/;

/** Turn the helper's one-line file error (or another failure) into a typed error. */
export function fileError(stderr: string, path: string, sandboxId: string): AgentboxError {
  const m = FILE_ERROR_LINE.exec(stderr);
  const kind = m?.[1];
  const detail = m?.[2]?.trim() ?? stderr.trim().split('\n').pop() ?? 'unknown error';
  switch (kind) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new NotFoundError(`no such file in sandbox ${sandboxId}: ${path}`, { hint: `list the directory: agentbox exec ${sandboxId} -- ls ${posix.dirname(path)}` });
    case 'EISDIR':
      return new BadRequestError(`${path} is a directory`, { hint: 'use the files/list route (or agentbox exec ... ls) for directories' });
    case 'EACCES':
    case 'EROFS':
      return new ForbiddenError(`not allowed in sandbox ${sandboxId}: ${detail}`, { hint: 'only /workspace and /tmp are writable' });
    case 'ENOSPC':
      return new BadRequestError(`no space left in sandbox ${sandboxId}: ${detail}`, { hint: 'the sandbox disk limit (limits.diskMb) is reached; remove files or ask for a bigger profile' });
    case 'ELOOP':
      return new BadRequestError(`too many levels of symlinks (a loop?) in sandbox ${sandboxId}: ${path}`, { hint: `see where the links point: agentbox exec ${sandboxId} -- ls -l ${posix.dirname(path)}` });
    case 'ENAMETOOLONG':
      return new BadRequestError(`a name in ${path.slice(0, 200)} is too long for sandbox ${sandboxId}`, { hint: 'each part of a path may have at most 255 bytes' });
    case 'EINVAL':
      return new BadRequestError(`${path} in sandbox ${sandboxId} cannot be used that way: ${detail}`, { hint: `for anything but regular files and directories use agentbox exec ${sandboxId} -- ...` });
    case 'EBUSY':
      return new ConflictError(`${path} in sandbox ${sandboxId} is in use (a mount point or a running program): ${detail}`, { hint: 'mount points such as /workspace and /tmp stay; remove or replace what is inside them' });
    case 'ENOTREG':
      return new BadRequestError(`${path} in sandbox ${sandboxId} is not a regular file (a FIFO, device, socket or the like)`, { hint: `only regular files go through the files API; for anything else use agentbox exec ${sandboxId} -- ...` });
    case 'EFBIG':
      return new BadRequestError(`${path} in sandbox ${sandboxId} reports no size and holds more than 1 MiB`, { hint: `read it with agentbox exec ${sandboxId} -- head -c N ${path}` });
    case 'E2BIG':
      return new BadRequestError(`${path} in sandbox ${sandboxId} has more than 10000 entries`, { hint: `list it with agentbox exec ${sandboxId} -- ls ${path}` });
    case 'ENOTEMPTY':
    case 'EEXIST':
      return new BadRequestError(detail, { hint: `look at what is there: agentbox exec ${sandboxId} -- ls -la ${posix.dirname(path)}` });
    default:
      return new InternalError(`file operation failed in sandbox ${sandboxId}: ${detail}`);
  }
}

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

const TYPES: Record<string, DirEntry['type']> = { f: 'file', d: 'dir', l: 'symlink', o: 'other' };

/** Parse the helper's NUL-terminated `TYPE SIZE MODE MTIME NAME` records. */
export function parseDirListing(raw: Buffer): DirEntry[] {
  const entries: DirEntry[] = [];
  for (const rec of raw.toString('utf8').split('\0')) {
    if (!rec) continue;
    const m = /^([fdlo]) (\d+) ([0-7]+) (-?\d+) ([\s\S]*)$/.exec(rec);
    if (!m) continue;
    entries.push({
      name: m[5] as string,
      type: TYPES[m[1] as string] ?? 'other',
      size: Number(m[2]),
      mode: parseInt(m[3] as string, 8),
      mtime: new Date(Number(m[4]) * 1000).toISOString(),
    });
  }
  return entries.sort((a, b) => a.name.localeCompare(b.name));
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
