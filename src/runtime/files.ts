/**
 * The files API of every driver (readFile, writeFile, listDir, removePath), written once.
 *
 * The work inside the sandbox is native/file-ops.h, the same C in agentbox-helper (local) and
 * agentbox-docker-init (docker): `OP PATH`, the file's bytes on stdin (write) or stdout (read),
 * NUL-terminated `TYPE SIZE MODE MTIME NAME` records on stdout (list), exit 0; on failure one stderr
 * line `agentbox-file-error:KIND:message` and exit 1. Its bounds (regular files only, a read ends at
 * the size fstat saw or 1 MiB, a listing at 10000 entries) are kept there, where nothing in the
 * sandbox can race them.
 *
 * This side checks paths, streams, and maps KIND to typed errors. A driver supplies only the
 * transport: how to start one `OP PATH` inside a sandbox, as the sandbox user (`FileOpStarter`).
 */
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { PassThrough, Transform } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { AgentboxError } from '../contract/errors.js';
import { BadRequestError, ConflictError, ForbiddenError, InternalError, NotFoundError } from '../contract/errors.js';
import type { DirEntry } from '../contract/model.js';
import type { Runtime, SandboxHandle } from './types.js';

/**
 * The operations of native/file-ops.h that the files API uses (it has `mkdir` too), and `connect`,
 * a port's connection (ports.ts) and a terminal (pty.ts), which ride the same transport.
 */
export type FileOp = 'read' | 'write' | 'list' | 'remove' | 'connect' | 'pty';

/** One file operation running inside a sandbox, as its transport hands it over. */
export interface FileOpProcess {
  stdout: Readable;
  stderr: Readable;
  /**
   * The operation's exit status: 0, or non-zero with the error line on stderr. Rejects with a typed
   * error when the transport itself failed (e.g. ConflictError: the sandbox is not running).
   */
  exitCode: Promise<number>;
  /**
   * End the operation and whatever runs it inside the sandbox (a reader went away, the input failed).
   * May be called more than once and after the end.
   */
  abort(): void;
}

/**
 * What a driver implements for the files API: start `OP PATH` (PATH already checked) in the sandbox as
 * the sandbox user. `stdin` undefined: the operation's stdin is empty. Throws (ConflictError) when the
 * sandbox is not running.
 */
export type FileOpStarter = (handle: SandboxHandle, op: FileOp, path: string, stdin: Readable | undefined) => Promise<FileOpProcess>;

/** Turns an operation's stderr into the typed error for `path` in the place `id` names (default: fileError). */
export type FileErrorMapper = (stderr: string, path: string, id: string) => AgentboxError;

/** The four file members of `Runtime`, over a driver's transport. */
export class SandboxFiles implements Pick<Runtime, 'readFile' | 'writeFile' | 'listDir' | 'removePath'> {
  constructor(
    private readonly start: FileOpStarter,
    private readonly toError: FileErrorMapper = fileError,
  ) {}

  async readFile(handle: SandboxHandle, path: string): Promise<Readable> {
    const p = checkPath(path);
    const proc = await this.start(handle, 'read', p, undefined);
    const stderr = collectStderr(proc);
    const out = new PassThrough();
    return new Promise<Readable>((resolve, reject) => {
      // Resolved at the first byte, so that an error before it is a typed rejection, not a broken stream.
      let started = false;
      proc.stdout.once('data', () => {
        started = true;
        resolve(out);
      });
      proc.stdout.pipe(out, { end: false });
      // A reader that gives up (destroys the stream, the HTTP client hung up) ends the operation.
      out.once('close', () => {
        if (!out.writableFinished) proc.abort();
      });
      void settled(proc).then(
        (code) => {
          const err = code === 0 ? undefined : this.toError(stderr(), p, handle.id);
          if (!started) {
            if (err) return reject(err);
            out.end();
            return resolve(out);
          }
          if (err) out.destroy(err);
          else out.end();
        },
        (err: unknown) => (started ? out.destroy(err as Error) : reject(err)),
      );
    });
  }

  /** Returns the bytes taken from `data`; an error of `data` aborts the operation and is thrown. */
  async writeFile(handle: SandboxHandle, path: string, data: Readable): Promise<number> {
    const p = checkPath(path);
    let bytes = 0;
    let inputError: Error | undefined;
    let proc: FileOpProcess | undefined;
    // Counted in a transform, not a 'data' listener: that would start the flow before the transport is there.
    const counted = new Transform({
      transform(chunk: Buffer, _enc, done) {
        bytes += chunk.length;
        done(null, chunk);
      },
    });
    counted.on('error', () => undefined); // reported as inputError; a transport need not listen
    data.on('error', (err) => {
      inputError = err;
      counted.destroy(err);
      proc?.abort();
    });
    data.pipe(counted);
    proc = await this.start(handle, 'write', p, counted);
    if (inputError) proc.abort();
    const stderr = collectStderr(proc);
    proc.stdout.resume();
    const code = await settled(proc);
    if (inputError) throw inputError;
    if (code !== 0) throw this.toError(stderr(), p, handle.id);
    return bytes;
  }

  async listDir(handle: SandboxHandle, path: string): Promise<DirEntry[]> {
    const p = checkPath(path);
    const proc = await this.start(handle, 'list', p, undefined);
    const stderr = collectStderr(proc);
    const chunks: Buffer[] = [];
    proc.stdout.on('data', (c: Buffer) => chunks.push(c));
    const code = await settled(proc);
    if (code !== 0) throw this.toError(stderr(), p, handle.id);
    return parseDirListing(Buffer.concat(chunks));
  }

  async removePath(handle: SandboxHandle, path: string): Promise<void> {
    const p = checkPath(path);
    if (p === '/') throw new BadRequestError('refusing to remove /', { hint: 'delete the sandbox instead: agentbox rm ID' });
    const proc = await this.start(handle, 'remove', p, undefined);
    const stderr = collectStderr(proc);
    proc.stdout.resume();
    const code = await settled(proc);
    if (code !== 0) throw this.toError(stderr(), p, handle.id);
  }
}

/** The exit status, once all of stdout and stderr has been delivered (or the streams were destroyed). */
async function settled(proc: FileOpProcess): Promise<number> {
  const [code] = await Promise.all([proc.exitCode, finished(proc.stdout).catch(() => undefined), finished(proc.stderr).catch(() => undefined)]);
  return code;
}

/** The first 8 KiB of stderr: enough for the error line, bounded whatever the sandbox writes. */
function collectStderr(proc: FileOpProcess): () => string {
  let text = '';
  proc.stderr.on('data', (c: Buffer) => {
    if (text.length < 8192) text += c.toString();
  });
  return () => text;
}

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

/** file-ops.h's one-line error: its KIND (ENOENT, ENOTREG, ...; undefined for another failure) and the message. */
export function parseFileError(stderr: string): { kind: string | undefined; detail: string } {
  const m = FILE_ERROR_LINE.exec(stderr);
  return { kind: m?.[1], detail: m?.[2]?.trim() ?? stderr.trim().split('\n').pop() ?? 'unknown error' };
}

/** Turn file-ops.h's one-line error (or another failure's stderr) into a typed error. */
export function fileError(stderr: string, path: string, sandboxId: string): AgentboxError {
  const { kind, detail } = parseFileError(stderr);
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

const TYPES: Record<string, DirEntry['type']> = { f: 'file', d: 'dir', l: 'symlink', o: 'other' };

/** Parse file-ops.h's NUL-terminated `TYPE SIZE MODE MTIME NAME` records. */
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
