/**
 * The guest's kernel: Debian's cloud kernel as installed by apt (linux-image-cloud-amd64), turned into
 * the uncompressed ELF `vmlinux` QEMU boots directly through its PVH entry point. That skips the
 * bzImage's real-mode setup and self-decompression, which under TCG cost about 0.2 s per boot
 * (../shared/research/microvm.md).
 */
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, readdirSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { inflateRawSync } from 'node:zlib';
import { RuntimeUnavailableError } from '../../../contract/errors.js';

export interface GuestKernel {
  version: string;
  /** The compressed image apt installed (/boot/vmlinuz-VERSION). */
  vmlinuz: string;
  /** /lib/modules/VERSION: the modules that go into the initramfs. */
  modulesDir: string;
}

const INSTALL_HINT = 'install the guest kernel: apt-get install linux-image-cloud-amd64 (scripts/install-system-deps.sh)';

/** Compare dotted/dashed versions numerically where they are numbers (6.1.0-57 > 6.1.0-9). */
function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const d = /^\d+$/.test(x) && /^\d+$/.test(y) ? Number(x) - Number(y) : x.localeCompare(y);
    if (d !== 0) return d;
  }
  return 0;
}

/** The newest installed cloud kernel that has its modules; RuntimeUnavailableError when none. */
export function findGuestKernel(boot = '/boot', modulesRoot = '/lib/modules'): GuestKernel {
  const versions = (existsSync(boot) ? readdirSync(boot) : [])
    .map((f) => /^vmlinuz-(.+-cloud-amd64)$/.exec(f)?.[1])
    .filter((v): v is string => v !== undefined && existsSync(join(modulesRoot, v, 'modules.dep')))
    .sort(compareVersions);
  const version = versions.at(-1);
  if (!version) throw new RuntimeUnavailableError(`no Debian cloud kernel with modules under ${boot} and ${modulesRoot}`, { hint: INSTALL_HINT });
  return { version, vmlinuz: join(boot, `vmlinuz-${version}`), modulesDir: join(modulesRoot, version) };
}

/** The legacy LZ4 frame magic Linux's LZ4-compressed bzImage payload starts with, and gzip's. */
const LZ4_LEGACY = Buffer.from([0x02, 0x21, 0x4c, 0x18]);
const GZIP = Buffer.from([0x1f, 0x8b, 0x08, 0x00]);
const ELF = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

/**
 * Writes the ELF vmlinux inside `vmlinuz` to `out`. The payload is found by its compression magic
 * (the bzImage header's payload offset would do too; the magic works for every layout seen).
 */
export async function extractVmlinux(vmlinuz: string, out: string): Promise<void> {
  const image = await readFile(vmlinuz);
  const lz4At = image.indexOf(LZ4_LEGACY);
  const gzAt = image.indexOf(GZIP);
  // The payload's magic comes first; the other's bytes may occur by chance inside it.
  if (lz4At >= 0 && (gzAt < 0 || lz4At < gzAt)) await lz4Decompress(image.subarray(lz4At), out);
  else if (gzAt >= 0) {
    // Not seen with Debian's amd64 kernels (LZ4), kept for builds that use gzip. The payload is a
    // gzip member with no optional fields (flags 0, a 10-byte header); raw inflate stops at its end,
    // where gunzip would fail on the bzImage's trailer and lose what it had not flushed.
    await writeFile(out, inflateRawSync(image.subarray(gzAt + 10)));
  } else {
    throw new RuntimeUnavailableError(`${vmlinuz}: neither an LZ4 nor a gzip payload found, cannot extract a PVH vmlinux`, { hint: 'use Debian 12\'s linux-image-cloud-amd64' });
  }
  const fd = await open(out, 'r');
  try {
    const head = Buffer.alloc(4);
    await fd.read(head, 0, 4, 0);
    if (!head.equals(ELF)) throw new RuntimeUnavailableError(`${vmlinuz}: the extracted kernel is not an ELF file`, { hint: INSTALL_HINT });
  } finally {
    await fd.close();
  }
}

/** `lz4 -dc`: it decodes the legacy frames and stops at the bzImage's trailing bytes. */
function lz4Decompress(data: Buffer, out: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('lz4', ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' ? new RuntimeUnavailableError('lz4 is not installed', { hint: 'apt-get install lz4' }) : err),
    );
    const written = pipeline(child.stdout, createWriteStream(out));
    child.stdin.on('error', () => undefined); // lz4 stops reading at the trailer
    child.stdin.end(data);
    child.once('close', (code) => {
      // lz4 exits 1 on the bzImage's trailer after the last frame, having written the whole kernel:
      // the caller's ELF check decides. Killed by a signal is a failure.
      written.then(() => (code === null ? reject(new Error(`lz4 was killed: ${stderr.trim()}`)) : resolve()), reject);
    });
  });
}
