/**
 * What every image root needs whatever built it (busybox, mmdebstrap, an imported tarball):
 * mount points, the `sandbox` user, /etc/hosts and /etc/resolv.conf; plus the tree's size and id.
 *
 * Security: an imported tree is untrusted and we are root. Every path written here is checked
 * component by component so that a symlink in the image (say `etc -> /etc`) can never make us
 * write to the host.
 */
import { createHash } from 'node:crypto';
import { appendFileSync, chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BadRequestError } from '../contract/errors.js';

/** Mount points must exist in the image: the sandbox's root is mounted read-only. */
export const MOUNT_POINTS = ['workspace', 'tmp', 'proc', 'dev', 'sys', 'run', '.agentbox'] as const;

export const SANDBOX_UID = 1000;
export const SANDBOX_GID = 1000;
const SANDBOX_PASSWD = `sandbox:x:${SANDBOX_UID}:${SANDBOX_GID}:sandbox:/workspace:/bin/sh\n`;
const SANDBOX_GROUP = `sandbox:x:${SANDBOX_GID}:\n`;
const HOSTS = '127.0.0.1 localhost\n::1 localhost\n';

function lstatOrUndefined(path: string): ReturnType<typeof lstatSync> | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * `rootfs/rel` after checking that no existing component of it is a symlink (or, for parents,
 * something other than a directory). Throws `bad_request`: the image is unusable as it is.
 */
export function insideRootfs(rootfs: string, rel: string): string {
  let path = rootfs;
  const parts = rel.split('/').filter(Boolean);
  for (const [i, part] of parts.entries()) {
    path = join(path, part);
    const st = lstatOrUndefined(path);
    if (!st) continue;
    if (st.isSymbolicLink()) {
      throw new BadRequestError(`the image's /${parts.slice(0, i + 1).join('/')} is a symlink`, { hint: 'image roots must have /etc and the mount points as real directories' });
    }
    if (i < parts.length - 1 && !st.isDirectory()) {
      throw new BadRequestError(`the image's /${parts.slice(0, i + 1).join('/')} is not a directory`, { hint: 'image roots must have /etc and the mount points as real directories' });
    }
  }
  return path;
}

function ensureDir(rootfs: string, rel: string, mode: number): void {
  const path = insideRootfs(rootfs, rel);
  const st = lstatOrUndefined(path);
  if (st && !st.isDirectory()) throw new BadRequestError(`the image's /${rel} is not a directory`, { hint: 'mount points must be directories (or absent)' });
  if (!st) {
    mkdirSync(path, { mode });
    chmodSync(path, mode); // mkdir's mode is filtered by the umask
  }
}

/** Append `line` to a file unless some line already starts with `prefix`. */
function appendUnless(path: string, prefix: string, line: string): void {
  const text = lstatOrUndefined(path) ? readFileSync(path, 'utf8') : '';
  if (text.split('\n').some((l) => l.startsWith(prefix))) return;
  appendFileSync(path, `${text !== '' && !text.endsWith('\n') ? '\n' : ''}${line}`, { mode: 0o644 });
}

export interface FinishOpts {
  /** Replace /etc/resolv.conf with an empty file (sandboxes reach the network through a proxy only). */
  emptyResolvConf?: boolean;
}

/** Make `rootfs` usable as a read-only sandbox root: root-owned 0755, mount points, sandbox user. */
export function finishRootfs(rootfs: string, opts: FinishOpts = {}): void {
  if (process.getuid?.() === 0) chownSync(rootfs, 0, 0);
  chmodSync(rootfs, 0o755); // readable by the unprivileged uids sandboxes run as
  for (const dir of MOUNT_POINTS) ensureDir(rootfs, dir, dir === 'tmp' ? 0o1777 : 0o755);
  ensureDir(rootfs, 'etc', 0o755);
  appendUnless(insideRootfs(rootfs, 'etc/passwd'), 'root:', 'root:x:0:0:root:/root:/bin/sh\n');
  appendUnless(insideRootfs(rootfs, 'etc/passwd'), 'sandbox:', SANDBOX_PASSWD);
  appendUnless(insideRootfs(rootfs, 'etc/group'), 'root:', 'root:x:0:\n');
  appendUnless(insideRootfs(rootfs, 'etc/group'), 'sandbox:', SANDBOX_GROUP);
  // With a shadow file but no entry, PAM (su, runuser) refuses the user; `!` = no password login.
  const shadow = insideRootfs(rootfs, 'etc/shadow');
  if (lstatOrUndefined(shadow)) appendUnless(shadow, 'sandbox:', 'sandbox:!::0:99999:7:::\n');
  const hosts = insideRootfs(rootfs, 'etc/hosts');
  if (!lstatOrUndefined(hosts)) writeFileSync(hosts, HOSTS, { mode: 0o644 });
  const resolvConf = insideRootfs(rootfs, 'etc/resolv.conf');
  if (opts.emptyResolvConf || !lstatOrUndefined(resolvConf)) {
    writeFileSync(resolvConf, '', { mode: 0o644 });
    chmodSync(resolvConf, 0o644);
  }
}

export interface TreeStats {
  /** `sha256:` + hex digest of the tree's manifest (path, type, mode, owner, size, mtime, link target). */
  id: string;
  /** Apparent size of the regular files, hard links counted once. */
  sizeBytes: number;
}

/**
 * One walk over the tree (lstat only, symlinks not followed). The id is stable for a tree as it
 * sits on disk and changes with any rebuild (mtimes differ): it names this build of the image
 * without hashing every byte of a 200 MB Debian root.
 */
export function treeStats(rootfs: string): TreeStats {
  const hash = createHash('sha256');
  const seen = new Set<string>();
  let sizeBytes = 0;
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const relPath = `${rel}/${name}`;
      const st = lstatSync(path, { bigint: true });
      const target = st.isSymbolicLink() ? readlinkSync(path) : '';
      hash.update(`${relPath}\0${st.mode}\0${st.uid}:${st.gid}\0${st.size}\0${st.mtimeMs}\0${target}\n`);
      if (st.isFile()) {
        const inode = `${st.dev}:${st.ino}`;
        if (st.nlink === 1n || !seen.has(inode)) sizeBytes += Number(st.size);
        if (st.nlink > 1n) seen.add(inode);
      } else if (st.isDirectory()) walk(path, relPath);
    }
  };
  walk(rootfs, '');
  return { id: `sha256:${hash.digest('hex')}`, sizeBytes };
}
