/**
 * Root filesystem tarballs in and out. An imported tarball is untrusted: it is listed first and
 * refused (`bad_request`) if any entry has an absolute path, a `..` component, or is a device
 * node; owners and permissions are kept (we extract as root), so the image looks as packed.
 */
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, basename } from 'node:path';
import { BadRequestError } from '../contract/errors.js';
import { runTool, type OnProgress } from './run-tool.js';

/** `tar -tv --full-time` line: type+mode, owner, size (or `major,minor`), date, time, name. */
const LISTING = /^(\S)\S{9}\S?\s+\S+\s+(?:\d+,\s*\d+|\d+)\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s(.*)$/;

function unsafePath(path: string): boolean {
  return path.startsWith('/') || path.split('/').includes('..');
}

/**
 * The ways to split `rest` at `sep`: the listing does not escape ` -> ` or ` link to ` inside
 * names, so every occurrence is a candidate and each candidate is checked.
 */
function splits(rest: string, sep: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let at = rest.indexOf(sep); at >= 0; at = rest.indexOf(sep, at + 1)) out.push([rest.slice(0, at), rest.slice(at + sep.length)]);
  return out.length ? out : [[rest, '']];
}

/** Why one listing line makes the tarball unacceptable, or undefined when it is fine. */
export function checkListingLine(line: string): string | undefined {
  const m = LISTING.exec(line);
  if (!m) return `unrecognised tar listing line: ${line}`;
  const type = m[1] as string;
  const rest = m[2] as string;
  // Symlink targets may be absolute (`/bin/sh -> /bin/busybox`): they resolve inside the sandbox.
  // Hard link targets name other members, so they must be as safe as member names.
  const candidates = type === 'l' ? splits(rest, ' -> ') : type === 'h' ? splits(rest, ' link to ') : [[rest, ''] as [string, string]];
  for (const [name, target] of candidates) {
    if (type === 'b' || type === 'c') return `device node ${name}`;
    if (unsafePath(name)) return `unsafe path ${name}`;
    if (type === 'h' && unsafePath(target)) return `hard link ${name} to unsafe path ${target}`;
  }
  return undefined;
}

/** List `tarPath` and throw `bad_request` at the first unacceptable entry; returns the entry count. */
export async function checkTarball(tarPath: string, signal?: AbortSignal): Promise<number> {
  const stop = new AbortController();
  const onAbort = (): void => stop.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  let problem: string | undefined;
  let entries = 0;
  try {
    await runTool('tar', ['--numeric-owner', '--full-time', '-tvf', tarPath], {
      signal: stop.signal,
      onStdout: (line) => {
        if (problem !== undefined || line === '') return;
        entries++;
        problem = checkListingLine(line);
        if (problem !== undefined) stop.abort();
      },
    });
  } catch (err) {
    if (problem === undefined) throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  if (problem !== undefined) {
    throw new BadRequestError(`refusing to import ${tarPath}: ${problem}`, { hint: 'an image tarball must hold relative paths inside the image and no device files' });
  }
  return entries;
}

export interface ImportOpts {
  onProgress?: OnProgress;
  signal?: AbortSignal;
}

/** Extract a checked tarball into the (not yet existing) directory `rootfs`, keeping owners and modes. */
export async function extractTarball(rootfs: string, tarPath: string, opts: ImportOpts = {}): Promise<void> {
  const progress = opts.onProgress ?? (() => undefined);
  progress({ phase: 'import', message: `checking ${tarPath}`, percent: 0 });
  const entries = await checkTarball(tarPath, opts.signal);
  progress({ phase: 'import', message: `extracting ${entries} entries`, percent: 30 });
  mkdirSync(rootfs, { mode: 0o755 });
  // --same-owner is tar's default for root; --no-overwrite-dir keeps rootfs itself root:root 0755.
  await runTool('tar', ['--numeric-owner', '--same-owner', '--no-overwrite-dir', '-xpf', tarPath, '-C', rootfs], opts.signal ? { signal: opts.signal } : {});
  progress({ phase: 'import', message: 'extracted', percent: 90 });
}

/**
 * Write `rootfs` as a tarball at `outPath` (for `docker import`), numeric owners, written to a
 * temporary name first so a failed export leaves no half file.
 */
export async function exportTar(rootfs: string, outPath: string, signal?: AbortSignal): Promise<void> {
  const partial = join(dirname(outPath), `.${basename(outPath)}.partial-${randomBytes(4).toString('hex')}`);
  try {
    await runTool('tar', ['--numeric-owner', '--one-file-system', '-C', rootfs, '-cf', partial, '.'], signal ? { signal } : {});
    renameSync(partial, outPath);
  } finally {
    rmSync(partial, { force: true });
  }
}
