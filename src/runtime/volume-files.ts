/**
 * The files API on a named volume that no sandbox has to run for (`agentbox volume cp`,
 * /v1/volumes/{name}/files): the same native file operations and the same streaming as a sandbox's
 * (files.ts), done by `agentbox-helper volfile` chrooted into the volume's mount as its owner.
 *
 * Why a helper and not fs calls in the daemon: the volume's contents are written by sandboxes, so
 * any path in it may be a symlink to /etc/shadow, ../../.. or /proc/self/root/...; the daemon is
 * root and would follow them onto the host. In the helper's chroot they resolve inside the volume.
 */
import { spawn } from 'node:child_process';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { BadRequestError, ConflictError, ForbiddenError, InternalError, NotFoundError, type AgentboxError } from '../contract/errors.js';
import type { DirEntry } from '../contract/model.js';
import { checkPath, parseFileError, SandboxFiles, type FileOpStarter } from './files.js';
import type { SandboxHandle } from './types.js';

/** The volume's owner (storage/volume-store.ts VOLUME_OWNER, the sandbox user). */
const OWNER = 1000;
const HOST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** file-ops.h's error line as a typed error about a volume (`name`), with hints that fit a volume. */
export function volumeFileError(stderr: string, path: string, name: string): AgentboxError {
  const { kind, detail } = parseFileError(stderr);
  const dir = posix.dirname(path);
  switch (kind) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new NotFoundError(`no such file in volume ${name}: ${path}`, { hint: `list the directory: GET /v1/volumes/${name}/files/list?path=${dir}` });
    case 'EISDIR':
      return new BadRequestError(`${path} in volume ${name} is a directory`, { hint: `list it: GET /v1/volumes/${name}/files/list?path=${path}` });
    case 'EACCES':
    case 'EROFS':
      return new ForbiddenError(`not allowed in volume ${name}: ${detail}`, { hint: 'only files of the sandbox user (uid 1000) can be changed; change the mode from a sandbox that mounts the volume' });
    case 'ENOSPC':
      return new BadRequestError(`volume ${name} is full: ${detail}`, { hint: 'its size is its quota: remove files, or copy what you need into a bigger volume' });
    case 'ELOOP':
      return new BadRequestError(`too many levels of symlinks (a loop?) in volume ${name}: ${path}`, { hint: `see where the links point: GET /v1/volumes/${name}/files/list?path=${dir}` });
    case 'ENAMETOOLONG':
      return new BadRequestError(`a name in ${path.slice(0, 200)} is too long for volume ${name}`, { hint: 'each part of a path may have at most 255 bytes' });
    case 'ENOTREG':
    case 'EINVAL':
      return new BadRequestError(`${path} in volume ${name} is not a regular file or directory`, { hint: 'only regular files and directories go through the files API; use a sandbox for anything else' });
    case 'EFBIG':
      return new BadRequestError(`${path} in volume ${name} reports no size and holds more than 1 MiB`, { hint: 'read it from a sandbox that mounts the volume' });
    case 'E2BIG':
      return new BadRequestError(`${path} in volume ${name} has more than 10000 entries`, { hint: 'list it from a sandbox that mounts the volume' });
    case 'EBUSY':
      return new ConflictError(`${path} in volume ${name} is in use: ${detail}`, { hint: 'retry in a moment' });
    case 'ENOTEMPTY':
    case 'EEXIST':
      return new BadRequestError(`${detail} (volume ${name})`, { hint: `look at what is there: GET /v1/volumes/${name}/files/list?path=${dir}` });
    default:
      return new InternalError(`file operation failed in volume ${name}: ${detail}`);
  }
}

/** File operations on mounted volumes, each by one helper process. */
export class VolumeFiles {
  private readonly files: SandboxFiles;

  constructor(private readonly helper: string) {
    this.files = new SandboxFiles(this.start, volumeFileError);
  }

  /** `root`: the volume's mount on the host; `name`: the volume's, for messages. */
  private handle(root: string, name: string): SandboxHandle {
    return { id: name, runtime: 'local', data: { root } };
  }

  private readonly start: FileOpStarter = async (handle, op, path, stdin) => {
    const root = (handle.data as { root?: unknown }).root;
    if (typeof root !== 'string' || !root.startsWith('/')) throw new InternalError(`no mount for volume ${handle.id}`);
    const child = spawn(this.helper, ['volfile', '--root', root, '--uid', String(OWNER), '--gid', String(OWNER), '--', op, path], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: HOST_PATH },
      cwd: '/',
    });
    const input = child.stdin;
    input.on('error', () => undefined);
    if (stdin) stdin.pipe(input);
    else input.end();
    const exitCode = new Promise<number>((resolve, reject) => {
      child.on('error', (err) => reject(new InternalError(`file operation failed in volume ${handle.id}: ${err.message}`, { hint: 'run npm run build (the native helper)' })));
      child.on('close', (code) => resolve(code ?? 128));
    });
    exitCode.catch(() => undefined); // observed by SandboxFiles
    const abort = (): void => {
      child.kill('SIGKILL');
      child.stdout.destroy();
    };
    return { stdout: child.stdout, stderr: child.stderr, exitCode, abort };
  };

  readFile(root: string, path: string, name: string): Promise<Readable> {
    return this.files.readFile(this.handle(root, name), path);
  }

  writeFile(root: string, path: string, data: Readable, name: string): Promise<number> {
    return this.files.writeFile(this.handle(root, name), path, data);
  }

  listDir(root: string, path: string, name: string): Promise<DirEntry[]> {
    return this.files.listDir(this.handle(root, name), path);
  }

  async removePath(root: string, path: string, name: string): Promise<void> {
    if (checkPath(path) === '/') throw new BadRequestError(`refusing to remove the root of volume ${name}`, { hint: `remove the volume instead: agentbox volume rm ${name}` });
    await this.files.removePath(this.handle(root, name), path);
  }
}
