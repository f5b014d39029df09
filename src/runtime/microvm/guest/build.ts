/**
 * Builds what a microVM boots: the kernel as a PVH vmlinux and an initramfs holding busybox-static,
 * the kernel modules the guest needs, and agentbox's guest agent as /init (native/agentbox-vm-agent.c).
 *
 * The outputs live in DIR/guest-FINGERPRINT/, where the fingerprint covers every input (kernel version
 * and image, modules, busybox, agent binary, this builder's layout). Same inputs: the directory is
 * there and nothing is built. Two processes may build at once: each builds in a temporary directory
 * of its own and renames it into place; the loser throws its copy away and uses the winner's.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { RuntimeUnavailableError } from '../../../contract/errors.js';
import { type CpioEntry, cpioArchive } from './cpio.js';
import { extractVmlinux, findGuestKernel, type GuestKernel } from './kernel.js';
import { GUEST_MODULES, moduleLoadOrder } from './modules.js';

/** Bump when the initramfs layout changes in a way the inputs do not show. */
const LAYOUT_VERSION = 1;
const BUSYBOX = '/bin/busybox';

export interface GuestBuildOpts {
  /** Where guest-FINGERPRINT/ directories go, e.g. $AGENTBOX_HOME/microvm. */
  dir: string;
  /** @default the newest installed Debian cloud kernel */
  kernel?: GuestKernel;
  /** @default dist/native/agentbox-vm-agent (AGENTBOX_VM_AGENT overrides) */
  agentPath?: string;
  /** @default /bin/busybox from busybox-static */
  busyboxPath?: string;
  modules?: readonly string[];
  log?: Logger;
}

export interface GuestArtifacts {
  fingerprint: string;
  kernelVersion: string;
  /** ELF with a PVH entry point, for QEMU's -kernel. */
  vmlinux: string;
  /** Uncompressed newc cpio (3.6 MB), for -initrd. gzip -9 (1.6 MB) booted no faster here (2.3-3.2 s either way, 8 boots each under load), so the build skips it. */
  initramfs: string;
  /** Whether this call built it (false: it was there already, or another process built it meanwhile). */
  built: boolean;
}

export function defaultAgentPath(): string {
  // dist/src/runtime/microvm/guest/build.js -> dist/native/
  return process.env.AGENTBOX_VM_AGENT ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'native', 'agentbox-vm-agent');
}

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

/** The guest for these inputs, built if it is not there yet. */
export async function ensureGuest(opts: GuestBuildOpts): Promise<GuestArtifacts> {
  const kernel = opts.kernel ?? findGuestKernel();
  const agentPath = opts.agentPath ?? defaultAgentPath();
  const busyboxPath = opts.busyboxPath ?? BUSYBOX;
  const modules = opts.modules ?? GUEST_MODULES;
  if (!existsSync(agentPath)) throw new RuntimeUnavailableError(`the guest agent ${agentPath} is not built`, { hint: 'npm run build (needs gcc and libc6-dev)' });
  if (!existsSync(busyboxPath)) throw new RuntimeUnavailableError(`${busyboxPath} is missing`, { hint: 'apt-get install busybox-static' });
  const order = moduleLoadOrder(kernel.modulesDir, modules);
  const compressed = order.find((m) => !m.endsWith('.ko'));
  if (compressed) throw new RuntimeUnavailableError(`kernel module ${compressed} is compressed; /init loads plain .ko files only`, { hint: 'use Debian 12\'s linux-image-cloud-amd64' });

  const [agent, busybox, vmlinuz] = await Promise.all([readFile(agentPath), readFile(busyboxPath), readFile(kernel.vmlinuz)]);
  const fingerprint = sha256(
    JSON.stringify({ layout: LAYOUT_VERSION, kernel: kernel.version, vmlinuz: sha256(vmlinuz), agent: sha256(agent), busybox: sha256(busybox), modules: order }),
  ).slice(0, 16);
  const final = join(opts.dir, `guest-${fingerprint}`);
  const artifacts = (built: boolean): GuestArtifacts => ({
    fingerprint,
    kernelVersion: kernel.version,
    vmlinux: join(final, 'vmlinux'),
    initramfs: join(final, 'initramfs.cpio'),
    built,
  });
  if (existsSync(join(final, 'guest.json'))) return artifacts(false);

  await mkdir(opts.dir, { recursive: true });
  await removeAbandonedBuilds(opts.dir);
  const tmp = join(opts.dir, `.build-${fingerprint}-${process.pid}-${randomBytes(4).toString('hex')}`);
  const started = performance.now();
  try {
    await mkdir(tmp);
    await extractVmlinux(kernel.vmlinuz, join(tmp, 'vmlinux'));
    const initramfs = cpioArchive(initramfsEntries({ agent, busybox, busyboxPath, kernel, order }));
    await writeFile(join(tmp, 'initramfs.cpio'), initramfs);
    // Written last: a directory with guest.json is complete.
    await writeFile(join(tmp, 'guest.json'), `${JSON.stringify({ fingerprint, kernelVersion: kernel.version, modules: order, builtAt: new Date().toISOString() }, null, 2)}\n`);
    try {
      await rename(tmp, final);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code === 'ENOTEMPTY' || code === 'EEXIST') && existsSync(join(final, 'guest.json'))) return artifacts(false);
      throw err;
    }
    opts.log?.info({ fingerprint, kernel: kernel.version, ms: Math.round(performance.now() - started), initramfsBytes: initramfs.length }, 'microvm guest built');
    return artifacts(true);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** `.build-FP-PID-RAND` directories whose builder died (a crash, kill -9): each is up to 60 MB. */
async function removeAbandonedBuilds(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const pid = Number(/^\.build-[0-9a-f]+-(\d+)-[0-9a-f]+$/.exec(name)?.[1]);
    if (!pid || pid === process.pid || isAlive(pid)) continue;
    await rm(join(dir, name), { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes every complete guest of `dir` but the ones named (and abandoned builds). For the driver,
 * once no VM or snapshot uses an older guest: nothing here knows which do.
 */
export async function pruneGuests(dir: string, keepFingerprints: readonly string[]): Promise<string[]> {
  if (!existsSync(dir)) return [];
  await removeAbandonedBuilds(dir);
  const removed: string[] = [];
  for (const name of await readdir(dir)) {
    const fp = /^guest-([0-9a-f]+)$/.exec(name)?.[1];
    if (!fp || keepFingerprints.includes(fp)) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    removed.push(fp);
  }
  return removed;
}

/** Every file of the initramfs: /init (the agent), busybox and its applets, modules, users. */
function initramfsEntries(o: { agent: Buffer; busybox: Buffer; busyboxPath: string; kernel: GuestKernel; order: string[] }): CpioEntry[] {
  const entries: CpioEntry[] = [];
  const dirs = new Set<string>();
  const dir = (path: string, mode = 0o755): void => {
    const parts = path.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      if (dirs.has(p)) continue;
      dirs.add(p);
      entries.push({ kind: 'dir', path: p, mode: i === parts.length ? mode : 0o755 });
    }
  };
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc/agentbox', 'proc', 'sys', 'dev', 'run', 'root', 'workspace']) dir(d, d === 'root' ? 0o700 : 0o755);
  dir('tmp', 0o1777);
  entries.push({ kind: 'chardev', path: 'dev/console', major: 5, minor: 1 });
  entries.push({ kind: 'file', path: 'init', data: o.agent, mode: 0o755 });
  entries.push({ kind: 'file', path: 'bin/busybox', data: o.busybox, mode: 0o755 });
  for (const applet of busyboxApplets(o.busyboxPath)) {
    if (applet === 'bin/busybox' || applet === 'init' || applet === 'linuxrc') continue;
    const parent = applet.split('/').slice(0, -1).join('/');
    if (parent) dir(parent);
    entries.push({ kind: 'symlink', path: applet, target: '/bin/busybox' });
  }
  const modDir = `lib/modules/${o.kernel.version}`;
  const loadList: string[] = [];
  for (const rel of o.order) {
    const path = `${modDir}/${rel}`;
    dir(path.split('/').slice(0, -1).join('/'));
    entries.push({ kind: 'file', path, data: readFileSync(join(o.kernel.modulesDir, rel)), mode: 0o644 });
    loadList.push(`/${path}`);
  }
  const text = (path: string, body: string, mode = 0o644): void => void entries.push({ kind: 'file', path, data: Buffer.from(body), mode });
  text('etc/agentbox/modules', `${loadList.join('\n')}\n`);
  text('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  text('etc/group', 'root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n');
  text('etc/hostname', 'agentbox\n');
  text('etc/hosts', '127.0.0.1 localhost agentbox\n::1 localhost\n');
  return entries;
}

/** busybox --list-full: every applet's path (bin/sh, usr/bin/env, ...). */
function busyboxApplets(busybox: string): string[] {
  const r = spawnSync(busybox, ['--list-full'], { encoding: 'utf8' });
  if (r.status !== 0) throw new RuntimeUnavailableError(`${busybox} --list-full failed: ${r.stderr}`, { hint: 'apt-get install busybox-static' });
  return r.stdout.split('\n').filter(Boolean);
}
