/**
 * The busybox image: the host's static busybox, its applet links, a passwd with root and
 * `sandbox`, and the mount points. Well under a second.
 */
import { chmodSync, closeSync, copyFileSync, mkdirSync, openSync, readSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RuntimeUnavailableError } from '../contract/errors.js';
import { abortReason, runTool, type OnProgress } from './run-tool.js';

export const HOST_BUSYBOX = '/bin/busybox';
const PT_INTERP = 3;

/** True for an ELF executable without a program interpreter (statically linked). */
export function isStaticElf(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(64);
    readSync(fd, head, 0, 64, 0);
    if (head.readUInt32BE(0) !== 0x7f454c46) return false; // "\x7fELF"
    const is64 = head[4] === 2;
    const le = head[5] === 1;
    const u16 = (b: Buffer, o: number): number => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const u32 = (b: Buffer, o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const phoff = is64 ? Number(le ? head.readBigUInt64LE(32) : head.readBigUInt64BE(32)) : u32(head, 28);
    const phentsize = u16(head, is64 ? 54 : 42);
    const phnum = u16(head, is64 ? 56 : 44);
    const table = Buffer.alloc(phentsize * phnum);
    readSync(fd, table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) if (u32(table, i * phentsize) === PT_INTERP) return false;
    return true;
  } finally {
    closeSync(fd);
  }
}

export interface BusyboxOpts {
  /** The static busybox to copy. @default /bin/busybox (Debian package busybox-static) */
  busybox?: string;
  onProgress?: OnProgress;
  signal?: AbortSignal;
}

/** Fill the (not yet existing) directory `rootfs` with a busybox system. Needs root (chroot). */
export async function buildBusybox(rootfs: string, opts: BusyboxOpts = {}): Promise<void> {
  const busybox = opts.busybox ?? HOST_BUSYBOX;
  const progress = opts.onProgress ?? (() => undefined);
  let isStatic: boolean;
  try {
    isStatic = isStaticElf(busybox);
  } catch {
    throw new RuntimeUnavailableError(`no busybox at ${busybox}`, { hint: 'apt-get install busybox-static' });
  }
  // A dynamic busybox would need the host's libc inside the image.
  if (!isStatic) throw new RuntimeUnavailableError(`${busybox} is not statically linked`, { hint: 'apt-get install busybox-static' });

  progress({ phase: 'busybox', message: `copying ${busybox}`, percent: 10 });
  for (const dir of ['', 'bin', 'usr', 'etc', 'root']) mkdirSync(join(rootfs, dir), { mode: 0o755 });
  // Everything lives in /bin; the other usual directories point there (as merged-/usr does).
  symlinkSync('bin', join(rootfs, 'sbin'));
  symlinkSync('../bin', join(rootfs, 'usr', 'bin'));
  symlinkSync('../bin', join(rootfs, 'usr', 'sbin'));
  copyFileSync(busybox, join(rootfs, 'bin', 'busybox'));
  chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);

  // Chrooted, so the links name the image's /bin/busybox, never a host path.
  progress({ phase: 'busybox', message: 'installing applet links', percent: 40 });
  await runTool('chroot', [rootfs, '/bin/busybox', '--install', '-s', '/bin'], { installHint: 'apt-get install coreutils', ...(opts.signal ? { signal: opts.signal } : {}) });
  if (opts.signal?.aborted) throw abortReason(opts.signal);

  const etc = join(rootfs, 'etc');
  writeFileSync(join(etc, 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n', { mode: 0o644 });
  writeFileSync(join(etc, 'group'), 'root:x:0:\nnogroup:x:65534:\n', { mode: 0o644 });
  progress({ phase: 'busybox', message: 'done', percent: 100 });
}
