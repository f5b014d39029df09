/**
 * Which accelerator QEMU should use, decided by booting, not by the existence of /dev/kvm: on some
 * hosts /dev/kvm is a software-nested hypervisor (PVM) that cannot run a stock kernel (research §2:
 * the first printk after 25 s, then an emulation failure). A KVM boot that does not answer a command
 * within the probe's time means TCG.
 */
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import type { GuestArtifacts } from './guest/build.js';
import type { Accel } from './qemu-args.js';
import { MicroVm } from './vm.js';

export interface AccelChoice {
  accel: Accel;
  /** Why, in a sentence (for `agentbox doctor` and the logs). */
  reason: string;
}

export async function chooseAccel(o: { guest: Pick<GuestArtifacts, 'vmlinux' | 'initramfs'>; kvmDevice?: string; timeoutMs?: number; runRoot?: string; log?: Logger }): Promise<AccelChoice> {
  const dev = o.kvmDevice ?? '/dev/kvm';
  if (!existsSync(dev)) return { accel: 'tcg', reason: `${dev} does not exist: TCG (software emulation)` };
  let vm: MicroVm | undefined;
  try {
    // A probe's VM is this process's business only: it must not outlive it.
    vm = await MicroVm.start({ guest: o.guest, memoryMb: 128, cpus: 1, accel: 'kvm', readyTimeoutMs: o.timeoutMs ?? 15000, runRoot: o.runRoot, log: o.log, dieWithParent: true });
    const s = vm.channel.open({ kind: 'exec', cwd: '/', timeoutMs: 5000, argv: ['true'], env: { PATH: '/bin' } });
    s.sendStdin(undefined);
    s.stdout.resume();
    s.stderr.resume();
    const { code } = await s.exit;
    if (code !== 0) return { accel: 'tcg', reason: `a KVM guest booted but could not run a command (exit ${code}): TCG` };
    return { accel: 'kvm', reason: `a KVM guest booted in ${vm.bootMs} ms` };
  } catch (err) {
    o.log?.info({ err }, 'microvm KVM probe failed; using TCG');
    return { accel: 'tcg', reason: `${dev} exists but a KVM guest did not boot (${(err as Error).message}): TCG` };
  } finally {
    await vm?.kill();
  }
}
