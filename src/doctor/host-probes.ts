/**
 * The individual host checks of `agentbox doctor`, each reading only the paths it is given, so a test
 * can point one at a fake /proc or an empty PATH and see it fail with its fix. No runtime is built
 * here; host-checks.ts adds the runtimes' own probes and puts the list together.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, closeSync, constants, existsSync, openSync, readFileSync, statfsSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';

/** A runtime as the doctor reports it (gVisor apart from docker's runc). */
export type RuntimeName = 'local' | 'docker' | 'gvisor' | 'microvm' | 'kubernetes';

export interface HostCheck {
  name: string;
  ok: boolean;
  /** what was found, or what is wrong */
  detail: string;
  /** the command that fixes a failing check (where no single command can, the step to take) */
  fix?: string;
  /** the runtimes that cannot run while this check fails; empty: advice only */
  requiredBy: RuntimeName[];
  /** a failing optional check does not fail `agentbox doctor` (it is not needed by the default runtime, local) */
  optional: boolean;
}

export function check(c: Omit<HostCheck, 'optional' | 'fix'> & { fix?: string }): HostCheck {
  const out: HostCheck = { name: c.name, ok: c.ok, detail: c.detail, requiredBy: c.requiredBy, optional: !c.requiredBy.includes('local') };
  if (!c.ok && c.fix) out.fix = c.fix;
  return out;
}

/** The PATH the local runtime runs bwrap with (local-runtime.ts): the doctor looks where it will look. */
export const HOST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** bwrap-args.ts passes --disable-userns, which bubblewrap 0.8.0 introduced (Debian 12 ships 0.8.0). */
export const MIN_BWRAP: readonly [number, number, number] = [0, 8, 0];

/** Oldest kernel agentbox is exercised on is Debian 12's 6.1; below 5.10 nothing has been tried. */
const OLDEST_TRIED_KERNEL: readonly [number, number] = [5, 10];

/** Host tasks a gVisor sandbox may take at the default pids 256: pids + 1024 + 24 × pids (README, Security). */
const GVISOR_TASKS_PER_SANDBOX = 256 + 1024 + 24 * 256;

export function findOnPath(name: string, path: string): string | undefined {
  for (const dir of path.split(delimiter).filter(Boolean)) {
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

function versionAtLeast(have: readonly number[], want: readonly number[]): boolean {
  for (let i = 0; i < want.length; i++) {
    const a = have[i] ?? 0;
    const b = want[i] ?? 0;
    if (a !== b) return a > b;
  }
  return true;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function readInt(path: string): number | undefined {
  const t = readText(path);
  if (t === undefined || !/^\d+$/.test(t)) return undefined;
  return Number(t);
}

export function kernelCheck(release: string): HostCheck {
  const m = release.match(/^(\d+)\.(\d+)/);
  const v = m ? [Number(m[1]), Number(m[2])] : [];
  const ok = m !== null && versionAtLeast(v, OLDEST_TRIED_KERNEL);
  return check({
    name: 'kernel',
    ok,
    detail: ok ? `Linux ${release}` : `Linux ${release}: older than ${OLDEST_TRIED_KERNEL.join('.')}, on which agentbox has not been tried (Debian 12 ships 6.1)`,
    fix: 'apt-get install linux-image-amd64 && reboot',
    requiredBy: [],
  });
}

/**
 * cgroup v2 needs the memory, pids and cpu controllers at the root; v1 needs memory, pids, cpu and
 * freezer mounted (cgroups.ts). Either must be writable: a read-only cgroupfs (an unprivileged
 * container) cannot hold a sandbox's limits.
 */
export function cgroupCheck(root: string): HostCheck {
  const name = 'cgroups';
  const controllers = readText(join(root, 'cgroup.controllers'));
  let detail: string;
  let fix: string | undefined;
  if (controllers !== undefined) {
    const have = controllers.split(/\s+/).filter(Boolean);
    const missing = ['memory', 'pids', 'cpu'].filter((c) => !have.includes(c));
    detail = `v2 at ${root}, controllers: ${have.join(' ') || 'none'}`;
    if (missing.length > 0) {
      return check({
        name,
        ok: false,
        detail: `${detail}; missing ${missing.join(', ')} (needed for each sandbox's limits)`,
        fix: `enable them on the kernel command line: add ${missing.map((c) => `cgroup_enable=${c}`).join(' ')} (and remove any cgroup_disable=) to GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub && reboot`,
        requiredBy: ['local'],
      });
    }
  } else {
    const wanted = ['memory', 'pids', 'cpu', 'freezer'];
    const missing = wanted.filter((c) => !existsSync(join(root, c, 'cgroup.procs')));
    if (missing.length === wanted.length && !existsSync(join(root, 'unified', 'cgroup.controllers')) && !existsSync(join(root, 'memory'))) {
      return check({ name, ok: false, detail: `no cgroup filesystem at ${root}`, fix: `mount -t cgroup2 none ${root}`, requiredBy: ['local'] });
    }
    detail = `v1 at ${root}, ${wanted.filter((c) => !missing.includes(c)).join(', ') || 'no controller'} mounted`;
    if (missing.length > 0) {
      fix = missing.map((c) => `mkdir -p ${join(root, c)} && mount -t cgroup -o ${c} cgroup ${join(root, c)}`).join(' && ');
      return check({ name, ok: false, detail: `${detail}; missing ${missing.join(', ')}`, fix, requiredBy: ['local'] });
    }
  }
  const probe = controllers !== undefined ? root : join(root, 'memory');
  try {
    accessSync(probe, constants.W_OK);
  } catch (err) {
    return check({
      name,
      ok: false,
      detail: `${detail}; ${probe} is not writable (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
      fix: 'run agentbox as root on the host (or in a container started with --privileged --cgroupns=host)',
      requiredBy: ['local'],
    });
  }
  return check({ name, ok: true, detail, requiredBy: ['local'] });
}

export function bubblewrapCheck(path: string): HostCheck {
  const name = 'bubblewrap';
  const fix = 'apt-get install bubblewrap';
  const bwrap = findOnPath('bwrap', path);
  if (!bwrap) return check({ name, ok: false, detail: `bwrap not found on ${path}`, fix, requiredBy: ['local'] });
  const r = spawnSync(bwrap, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  const m = (r.stdout ?? '').match(/(\d+)\.(\d+)(?:\.(\d+))?/);
  if (r.error || r.status !== 0 || !m) {
    return check({ name, ok: false, detail: `${bwrap} --version failed: ${r.error?.message ?? (r.stderr || r.stdout || `exit ${r.status}`).trim()}`, fix: `apt-get install --reinstall bubblewrap`, requiredBy: ['local'] });
  }
  const version = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  if (!versionAtLeast(version, MIN_BWRAP)) {
    return check({
      name,
      ok: false,
      detail: `${bwrap} is ${version.join('.')}; agentbox needs ${MIN_BWRAP.join('.')} or later (--disable-userns)`,
      fix: `${fix} (0.8.0 or later: Debian 12's; on older releases from backports)`,
      requiredBy: ['local'],
    });
  }
  return check({ name, ok: true, detail: `${bwrap}, ${version.join('.')}`, requiredBy: ['local'] });
}

/**
 * Every local sandbox is a user namespace. The limit comes first (a 0 there is the usual way a host
 * turns them off); then, when a bwrap is given, a real one is made, as the runtime will.
 */
export function userNamespacesCheck(procRoot: string, bwrap?: string): HostCheck {
  const name = 'user namespaces';
  const fix = 'sysctl -w user.max_user_namespaces=15000';
  const limitFile = join(procRoot, 'sys', 'user', 'max_user_namespaces');
  const max = readInt(limitFile);
  if (max === 0) return check({ name, ok: false, detail: `user.max_user_namespaces is 0 (${limitFile}): none can be made`, fix, requiredBy: ['local'] });
  const limit = max === undefined ? `no readable ${limitFile}` : `user.max_user_namespaces ${max}`;
  if (!bwrap) return check({ name, ok: true, detail: limit, requiredBy: ['local'] });
  const r = spawnSync(bwrap, ['--unshare-user', '--unshare-pid', '--unshare-net', '--ro-bind', '/', '/', '--proc', '/proc', '--dev', '/dev', 'true'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) {
    const why = (r.error?.message ?? r.stderr ?? '').trim().split('\n').pop() ?? '';
    return check({ name, ok: false, detail: `${limit}, but bwrap cannot make one: ${why || `exit ${r.status}`}`, fix: `${fix} (and, on Ubuntu, sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)`, requiredBy: ['local'] });
  }
  return check({ name, ok: true, detail: `${limit}; bwrap made one`, requiredBy: ['local'] });
}

/** agentbox-helper (local runtime) and agentbox-docker-init (docker and gVisor), both built by `npm run build`. */
export function nativeHelperCheck(helper: string, checkout: string): HostCheck {
  const files = [helper, join(dirname(helper), 'agentbox-docker-init')];
  const missing = files.filter((f) => {
    try {
      accessSync(f, constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
  return check({
    name: 'native helper',
    ok: missing.length === 0,
    detail: missing.length === 0 ? files.join(', ') : `missing: ${missing.join(', ')}`,
    fix: `cd ${checkout} && npm run build (it compiles them; needs: apt-get install gcc libc6-dev)`,
    requiredBy: ['local', 'docker', 'gvisor'],
  });
}

/**
 * The microvm runtime: QEMU, a Debian cloud kernel to boot (and busybox-static for the guest's
 * initramfs), and agentbox's guest agent. KVM is not needed (kvmCheck).
 */
export function microvmCheck(o: { qemu: string | undefined; kernel: string | undefined; busybox: string; agent: string }): HostCheck {
  const missing = [
    ...(o.qemu ? [] : ['qemu-system-x86_64']),
    ...(o.kernel ? [] : ['a Debian cloud kernel in /boot']),
    ...(existsSync(o.busybox) ? [] : [`busybox-static (${o.busybox})`]),
    ...(existsSync(o.agent) ? [] : [`the guest agent (${o.agent})`]),
  ];
  return check({
    name: 'runtime microvm (QEMU)',
    ok: missing.length === 0,
    detail: missing.length === 0 ? `${o.qemu}, guest kernel ${o.kernel}` : `missing: ${missing.join(', ')}`,
    fix: 'apt-get install --no-install-recommends qemu-system-x86 linux-image-cloud-amd64 busybox-static lz4 (scripts/install-system-deps.sh), then npm run build',
    requiredBy: ['microvm'],
  });
}

/**
 * /dev/kvm, which the microvm runtime uses when a guest really boots on it (accel.ts decides by
 * booting one); without it, or where it cannot run a stock kernel, guests run under TCG (software
 * emulation, about a CPU-second per boot). Advice only.
 */
export function kvmCheck(device: string): HostCheck {
  const later = 'the microvm runtime uses it if a guest boots on it, and software emulation (TCG) otherwise';
  let state: string;
  let ok = false;
  if (!existsSync(device)) state = `${device} absent`;
  else {
    try {
      closeSync(openSync(device, 'r+'));
      ok = true;
      state = `${device} present and openable`;
    } catch (err) {
      state = `${device} present but not openable (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
    }
  }
  return check({
    name: 'kvm (microvm runtime)',
    ok,
    detail: `${state}; ${later}`,
    fix: existsSync(device) ? 'run as root, or: usermod -aG kvm "$USER"' : 'modprobe kvm_intel (or kvm_amd); on a virtual machine, turn on nested virtualization in its host',
    requiredBy: [],
  });
}

/** Free space where `path` will live: its nearest existing ancestor's filesystem. */
export function freeBytes(path: string): { at: string; free: number; total: number } | undefined {
  let p = path;
  for (;;) {
    try {
      const s = statfsSync(p);
      return { at: p, free: s.bavail * s.bsize, total: s.blocks * s.bsize };
    } catch {
      const up = dirname(p);
      if (up === p) return undefined;
      p = up;
    }
  }
}

function gib(n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(n / 1024 ** 2)} MiB`;
}

/**
 * `what` (AGENTBOX_HOME or the image store) needs `minBytes` free to work at all; below `warnBytes`
 * the check warns. The store and logs are small; an image is 5 MB (busybox) to a few hundred (debian).
 */
export function diskCheck(what: string, path: string, opts: { minBytes: number; warnBytes: number; requiredBy: RuntimeName[]; fix: string }): HostCheck {
  const name = `disk (${what})`;
  const f = freeBytes(path);
  if (!f) return check({ name, ok: false, detail: `cannot stat any directory above ${path}`, fix: opts.fix, requiredBy: opts.requiredBy });
  const detail = `${path}: ${gib(f.free)} free of ${gib(f.total)}${f.at !== path ? ` (on the filesystem of ${f.at}; ${path} does not exist yet)` : ''}`;
  if (f.free < opts.minBytes) return check({ name, ok: false, detail: `${detail}; needs at least ${gib(opts.minBytes)}`, fix: opts.fix, requiredBy: opts.requiredBy });
  if (f.free < opts.warnBytes) return check({ name, ok: false, detail: `${detail}; below ${gib(opts.warnBytes)}, images may not fit`, fix: opts.fix, requiredBy: [] });
  return check({ name, ok: true, detail, requiredBy: opts.requiredBy });
}

/**
 * Host task limits. A local sandbox takes at most its `pids`; a busy gVisor sandbox takes up to
 * 7424 host tasks at the default pids 256, so a small kernel.pid_max caps how many of those fit.
 */
export function taskLimitsCheck(procRoot: string): HostCheck {
  const name = 'pid_max / threads-max';
  const pidMax = readInt(join(procRoot, 'sys', 'kernel', 'pid_max'));
  const threadsMax = readInt(join(procRoot, 'sys', 'kernel', 'threads-max'));
  if (pidMax === undefined || threadsMax === undefined) {
    return check({ name, ok: false, detail: `cannot read ${join(procRoot, 'sys', 'kernel', 'pid_max')} or threads-max`, fix: 'mount -t proc proc /proc', requiredBy: [] });
  }
  const room = Math.floor(Math.min(pidMax, threadsMax) / GVISOR_TASKS_PER_SANDBOX);
  const detail = `kernel.pid_max ${pidMax}, kernel.threads-max ${threadsMax}: room for ${room} busy gVisor sandboxes at the default pids 256 (${GVISOR_TASKS_PER_SANDBOX} host tasks each)`;
  if (pidMax < 256 * 4 || threadsMax < 256 * 4) {
    return check({ name, ok: false, detail: `${detail}; too few for even four local sandboxes`, fix: fixFor(pidMax, threadsMax), requiredBy: ['local'] });
  }
  return check({ name, ok: room >= 16, detail, fix: fixFor(pidMax, threadsMax), requiredBy: [] });
}

function fixFor(pidMax: number, threadsMax: number): string {
  const want = 16 * GVISOR_TASKS_PER_SANDBOX;
  const cmds = [...(pidMax < want ? ['sysctl -w kernel.pid_max=4194304'] : []), ...(threadsMax < want ? [`sysctl -w kernel.threads-max=${Math.max(want, 2 * threadsMax)}`] : [])];
  return cmds.join(' && ') || 'sysctl -w kernel.pid_max=4194304';
}

/** The runtimes every check allows, and for each one that cannot run, the fixes of the checks in its way. */
export interface RuntimeSummary {
  ready: RuntimeName[];
  notReady: { runtime: RuntimeName; why: string[]; fixes: string[] }[];
}

export function summarize(checks: HostCheck[]): RuntimeSummary {
  const out: RuntimeSummary = { ready: [], notReady: [] };
  for (const rt of ['local', 'docker', 'gvisor', 'microvm', 'kubernetes'] as const) {
    const blocking = checks.filter((c) => !c.ok && c.requiredBy.includes(rt));
    if (blocking.length === 0) out.ready.push(rt);
    else out.notReady.push({ runtime: rt, why: blocking.map((c) => c.name), fixes: [...new Set(blocking.map((c) => c.fix).filter((f): f is string => f !== undefined))] });
  }
  return out;
}

/** Exit code of `agentbox doctor`: 0 iff the default runtime (local) can run. */
export function doctorExitCode(checks: HostCheck[]): number {
  return summarize(checks).ready.includes('local') ? 0 : 1;
}

/** The text report: one line per check, the fix under each failing one, then which runtimes are ready. */
export function renderChecks(checks: HostCheck[]): string {
  const lines: string[] = [];
  for (const c of checks) {
    lines.push(`${c.ok ? 'ok  ' : c.optional ? 'warn' : 'FAIL'} ${c.name}: ${c.detail}`);
    if (!c.ok && c.fix) lines.push(`       fix: ${c.fix}`);
  }
  const s = summarize(checks);
  lines.push('');
  lines.push(`ready: ${s.ready.join(', ') || 'none'}`);
  for (const n of s.notReady) lines.push(`not ready: ${n.runtime} (${n.why.join(', ')})${n.fixes.length ? ` — fix: ${n.fixes.join('; ')}` : ''}`);
  return `${lines.join('\n')}\n`;
}

/**
 * Sandbox disks (storage/disk-store.ts): loop devices, XFS and ext4 in the kernel, and the tools
 * that make and freeze them. Every runtime keeps /workspace and /tmp on one.
 */
export function sandboxDisksCheck(opts: { path: string; procRoot: string; loopControl?: string }): HostCheck {
  const requiredBy: RuntimeName[] = ['local', 'docker', 'gvisor'];
  const name = 'sandbox disks (loop, xfs, ext4)';
  const missingTools = ['mkfs.xfs', 'mkfs.ext4', 'xfs_io', 'fsfreeze', 'mount', 'umount'].filter((t) => !findOnPath(t, opts.path));
  if (missingTools.length > 0) {
    return check({ name, ok: false, detail: `missing: ${missingTools.join(', ')}`, requiredBy, fix: 'apt-get install xfsprogs e2fsprogs util-linux mount' });
  }
  let filesystems = '';
  try {
    filesystems = readFileSync(join(opts.procRoot, 'filesystems'), 'utf8');
  } catch {
    // unreadable: reported below as missing
  }
  const fs = new Set(filesystems.split('\n').map((l) => l.trim().split(/\s+/).pop()));
  const missingFs = ['xfs', 'ext4'].filter((f) => !fs.has(f));
  if (missingFs.length > 0) {
    return check({ name, ok: false, detail: `the kernel lacks ${missingFs.join(' and ')} (/proc/filesystems)`, requiredBy, fix: `modprobe ${missingFs.join(' ')}, or use a kernel built with them` });
  }
  if (!existsSync(opts.loopControl ?? '/dev/loop-control')) {
    return check({ name, ok: false, detail: 'no /dev/loop-control: loop devices are not available (a container without them?)', requiredBy, fix: 'modprobe loop, or run agentbox where /dev/loop-control exists' });
  }
  return check({ name, ok: true, detail: 'loop devices, xfs and ext4 present; a sparse XFS store under AGENTBOX_HOME/storage holds one ext4 image per sandbox', requiredBy });
}
