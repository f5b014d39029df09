/**
 * `agentbox doctor`: one line per thing this host needs, each failing one with the command that fixes
 * it, then which runtimes are ready. Exit 0 iff the default runtime (local) can run.
 */
import { existsSync } from 'node:fs';
import { release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { buildRuntimes, describeProbe } from '../daemon/compose.js';
import { cliEntry, helperPath, resolvePaths } from '../core/config.js';
import { ImageStore } from '../images/image-store.js';
import { DiskStore } from '../storage/disk-store.js';
import {
  HOST_PATH,
  bubblewrapCheck,
  cgroupCheck,
  check,
  diskCheck,
  findOnPath,
  kernelCheck,
  kvmCheck,
  microvmCheck,
  nativeHelperCheck,
  sandboxDisksCheck,
  taskLimitsCheck,
  userNamespacesCheck,
  type HostCheck,
} from './host-probes.js';
import { DEBIAN_HINT } from './runner.js';
import { defaultAgentPath } from '../runtime/microvm/guest/build.js';
import { findGuestKernel } from '../runtime/microvm/guest/kernel.js';
import { QEMU_BINARY } from '../runtime/microvm/vm.js';

export type { HostCheck } from './host-probes.js';

export interface HostCheckOpts {
  /** @default process.env (AGENTBOX_HOME, AGENTBOX_IMAGES) */
  env?: NodeJS.ProcessEnv;
  /** @default '/proc' */
  procRoot?: string;
  /** @default '/sys/fs/cgroup' */
  cgroupRoot?: string;
  /** @default '/dev/kvm' */
  kvmDevice?: string;
  /** where bwrap is looked for; @default the PATH the local runtime runs it with */
  path?: string;
}

const MiB = 1024 ** 2;

export async function hostChecks(opts: HostCheckOpts = {}): Promise<HostCheck[]> {
  const env = opts.env ?? process.env;
  const procRoot = opts.procRoot ?? '/proc';
  const paths = resolvePaths(env);
  const images = new ImageStore(paths.images);
  const runtimes = buildRuntimes(paths, images, new DiskStore({ dir: paths.storage }));
  const checkout = resolve(dirname(cliEntry()), '..', '..', '..');
  const setupWithDocker = `${join(checkout, 'scripts', 'setup.sh')} --with-docker`;
  const checks: HostCheck[] = [];

  checks.push(kernelCheck(release()));
  checks.push(cgroupCheck(opts.cgroupRoot ?? '/sys/fs/cgroup'));
  const bwrap = bubblewrapCheck(opts.path ?? HOST_PATH);
  checks.push(bwrap);
  checks.push(userNamespacesCheck(procRoot, bwrap.ok ? findOnPath('bwrap', opts.path ?? HOST_PATH) : undefined));
  checks.push(nativeHelperCheck(helperPath(), checkout));

  const local = await runtimes.local?.probe();
  checks.push(
    check({
      name: 'runtime local (bubblewrap + cgroups)',
      ok: local?.ok === true,
      detail: local ? describeProbe(local) : 'unavailable',
      ...(local && !local.ok && local.hint ? { fix: local.hint } : {}),
      requiredBy: ['local'],
    }),
  );

  checks.push(diskCheck('AGENTBOX_HOME', paths.home, { minBytes: 64 * MiB, warnBytes: 256 * MiB, requiredBy: ['local', 'docker', 'gvisor'], fix: `free space on that filesystem, or export AGENTBOX_HOME=<a directory on a larger disk>` }));
  checks.push(sandboxDisksCheck({ path: opts.path ?? HOST_PATH, procRoot }));
  checks.push(diskCheck('image store', paths.images, { minBytes: 16 * MiB, warnBytes: 1024 * MiB, requiredBy: ['local', 'docker', 'gvisor'], fix: 'agentbox image rm NAME for images no longer used, or export AGENTBOX_IMAGES=<a directory on a larger disk>' }));

  const busybox = images.get('busybox');
  checks.push(check({ name: 'image busybox', ok: true, detail: busybox ? `present in ${paths.images}` : 'not built yet; built on first use (under a second)', requiredBy: [] }));
  let python = false;
  try {
    python = existsSync(join(images.resolve('debian').rootfs, 'usr', 'bin', 'python3'));
  } catch {
    python = false;
  }
  checks.push(check({ name: 'image debian (python3)', ok: python, detail: python ? `present in ${paths.images}` : `missing in ${paths.images}`, fix: DEBIAN_HINT, requiredBy: [] }));

  checks.push(taskLimitsCheck(procRoot));

  const docker = await runtimes.docker?.probe();
  checks.push(
    check({
      name: 'runtime docker (dockerd)',
      ok: docker?.ok === true,
      detail: docker?.ok ? `dockerd ${String(docker.details?.dockerd ?? '')}, runtimes: ${String(docker.details?.runtimes ?? '')}` : (docker?.reason ?? 'unavailable'),
      fix: setupWithDocker,
      requiredBy: ['docker', 'gvisor'],
    }),
  );
  const runscRegistered = docker?.ok ? String(docker.details?.runtimes ?? '').split(' ').includes('runsc') : false;
  const runscBinary = findOnPath('runsc', opts.path ?? HOST_PATH);
  checks.push(
    check({
      name: 'runtime gvisor (runsc)',
      ok: runscRegistered,
      detail: runscRegistered
        ? `runsc registered with dockerd${runscBinary ? ` (${runscBinary})` : ''}`
        : `${runscBinary ? `${runscBinary} installed` : 'runsc not installed'}; ${docker?.ok ? 'dockerd does not list it as a runtime' : 'needs dockerd'}`,
      fix: setupWithDocker,
      requiredBy: ['gvisor'],
    }),
  );
  let kernel: string | undefined;
  try {
    kernel = findGuestKernel().version;
  } catch {
    kernel = undefined;
  }
  checks.push(microvmCheck({ qemu: findOnPath(process.env.AGENTBOX_QEMU ?? QEMU_BINARY, opts.path ?? HOST_PATH), kernel, busybox: '/bin/busybox', agent: defaultAgentPath() }));
  checks.push(kvmCheck(opts.kvmDevice ?? '/dev/kvm'));
  // The cluster comes from AGENTBOX_KUBECONFIG (or in-cluster config) here: the doctor reads no policy.
  const kube = await runtimes.kubernetes?.probe();
  await runtimes.kubernetes?.close();
  checks.push(
    check({
      name: 'runtime kubernetes (API server)',
      ok: kube?.ok === true,
      detail: kube ? describeProbe(kube) : 'unavailable',
      ...(kube && !kube.ok && kube.hint ? { fix: kube.hint } : {}),
      requiredBy: ['kubernetes'],
    }),
  );
  return checks;
}
