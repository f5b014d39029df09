/** E2B's paths inside a sandbox: relative ones are taken from the sandbox user's home, /workspace. */
import { posix } from 'node:path';
import { BadRequestError } from '../contract/errors.js';

/** The sandbox user's home and every command's default working directory. */
export const SANDBOX_HOME = '/workspace';

/** An absolute path inside the sandbox; '..' and NUL are refused as agentbox's own file API refuses them. */
export function sandboxPath(path: string, what = 'path'): string {
  if (path.length === 0) throw new BadRequestError(`${what} is empty`, { hint: 'give a path inside the sandbox, e.g. /workspace/file.txt' });
  if (path.length > 4096) throw new BadRequestError(`${what} is longer than 4096 bytes`);
  if (path.includes('\0')) throw new BadRequestError(`${what} contains a NUL byte`);
  const absolute = path.startsWith('/') ? path : `${SANDBOX_HOME}/${path}`;
  if (absolute.split('/').includes('..')) throw new BadRequestError(`${what} must not contain '..': ${path.slice(0, 200)}`, { hint: 'give the absolute path you mean' });
  const normal = posix.normalize(absolute);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}
