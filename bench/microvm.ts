/**
 * The microvm runtime beside raw QEMU with the same command line, in the same run (TCG on this host
 * unless KVM works; the table says which):
 *  - cold boot to the first exec: MicroVmRuntime.create (disk, root disk, boot, template save on the
 *    first of a kind) vs a bare MicroVm.start (QEMU + agent, the same disks) and its first command
 *  - restore from the template to the first exec vs a bare restore of the same state
 *  - exec round trip (`true`) through the runtime vs straight on the agent channel
 *  - host memory (QEMU's RSS) of an idle VM, booted and restored
 * Usage: npm run bench:microvm   (prints Markdown tables for BENCHMARKS.md)
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { ImageStore } from '../src/images/image-store.js';
import { ensureGuest } from '../src/runtime/microvm/guest/build.js';
import { ensureRootDisk } from '../src/runtime/microvm/guest/root-disk.js';
import { vmExec } from '../src/runtime/microvm/guest-ops.js';
import { MicroVmRuntime } from '../src/runtime/microvm/microvm-runtime.js';
import { MicroVm } from '../src/runtime/microvm/vm.js';
import type { ExecEvent } from '../src/contract/model.js';
import type { SandboxHandle } from '../src/runtime/types.js';
import { scratchDiskStore } from '../src/storage/scratch-store.js';
import { pct } from './stats.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const N = Number(process.env.BENCH_N ?? 5);
const EXECS = Number(process.env.BENCH_EXECS ?? 30);
const LIMITS = { cpus: 1, memoryMb: 256, pids: 128, diskMb: 256 };

const opts = (execId: string) => ({ env: {}, timeoutMs: 60_000, outputLimitBytes: 1 << 20, execId });
let execs = 0;

async function drain(events: AsyncIterable<ExecEvent>): Promise<number> {
  let code = -1;
  for await (const e of events) if (e.type === 'exit') code = e.result.exitCode;
  return code;
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function row(name: string, values: number[], baseline?: number[], unit = 1): string {
  const ratio = baseline ? `${(pct(values, 50) / pct(baseline, 50)).toFixed(2)}×` : '';
  return `| ${name} | ${(pct(values, 50) / unit).toFixed(2)} | ${(pct(values, 95) / unit).toFixed(2)} | ${ratio} |`;
}

async function main(): Promise<void> {
  const images = new ImageStore(IMAGES);
  await images.ensure('busybox', {});
  const work = mkdtempSync(join(tmpdir(), 'bench-microvm-'));
  const dir = join(work, 'microvm');
  const runRoot = join(work, 'run');
  mkdirSync(runRoot);
  const disks = scratchDiskStore();
  const rt = new MicroVmRuntime({ images, homeTag: `bench${process.pid}`, dir, runRoot, disks });
  const guest = await ensureGuest({ dir: join(dir, 'guest') });
  const bb = images.resolve('busybox');
  const rootDisk = await ensureRootDisk(join(dir, 'roots'), { id: bb.info.id, rootfs: bb.rootfs, sizeBytes: bb.info.sizeBytes });
  let n = 0;
  const id = (): string => `sbx_bm${process.pid}x${++n}`;
  const vmOpts = { guest, memoryMb: LIMITS.memoryMb, cpus: LIMITS.cpus, limits: { memoryMb: LIMITS.memoryMb, pids: LIMITS.pids }, rootDisk, runRoot: work, dieWithParent: true };
  const freshDisk = (): string => {
    const p = join(work, `raw-${++n}.img`);
    execFileSync('truncate', ['-s', `${LIMITS.diskMb}M`, p]);
    execFileSync('mkfs.ext4', ['-q', '-F', p]);
    return p;
  };

  // --- cold: the runtime (a diskMb of its own each round, so no template serves it) vs bare QEMU.
  const cold: number[] = [];
  const rawCold: number[] = [];
  const rssCold: number[] = [];
  for (let i = 0; i < N; i++) {
    let t0 = performance.now();
    const h = await rt.create({ id: id(), image: 'busybox', isolation: 'vm', limits: { ...LIMITS, diskMb: LIMITS.diskMb + 1 + i }, labels: {} });
    await drain(rt.exec(h, ['true'], opts(`exe_b${++execs}`)));
    cold.push(performance.now() - t0);
    await rt.destroy(h);
    const disk = freshDisk();
    t0 = performance.now();
    const vm = await MicroVm.start({ ...vmOpts, dataDisk: disk });
    await drain(vmExec(vm.channel, ['true'], opts(`exe_b${++execs}`)));
    rawCold.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 1000));
    rssCold.push(rssMb(vm.pid));
    await vm.kill();
  }

  // --- warm: the runtime from its template vs a bare restore of a state saved the same way.
  const first = await rt.create({ id: id(), image: 'busybox', isolation: 'vm', limits: LIMITS, labels: {} }); // saves the template
  await rt.destroy(first);
  const sourceDisk = freshDisk();
  const source = await MicroVm.start({ ...vmOpts, dataDisk: sourceDisk });
  const state = join(work, 'state.bin');
  const stateDisk = join(work, 'state-disk.img');
  const t0s = performance.now();
  await source.saveState(state, async () => copyFileSync(sourceDisk, stateDisk));
  const saveMs = performance.now() - t0s;
  await source.kill();
  const warm: number[] = [];
  const rawWarm: number[] = [];
  const rssWarm: number[] = [];
  const execRt: number[] = [];
  const execRaw: number[] = [];
  for (let i = 0; i < N; i++) {
    let t0 = performance.now();
    const h: SandboxHandle = await rt.create({ id: id(), image: 'busybox', isolation: 'vm', limits: LIMITS, labels: {} });
    await drain(rt.exec(h, ['true'], opts(`exe_b${++execs}`)));
    warm.push(performance.now() - t0);
    if (i === 0) {
      for (let k = 0; k < EXECS; k++) {
        const t = performance.now();
        await drain(rt.exec(h, ['true'], opts(`exe_b${++execs}`)));
        execRt.push(performance.now() - t);
      }
    }
    await rt.destroy(h);
    const disk = join(work, `restore-${i}.img`);
    copyFileSync(stateDisk, disk);
    t0 = performance.now();
    const vm = await MicroVm.start({ ...vmOpts, dataDisk: disk, incoming: state });
    await drain(vmExec(vm.channel, ['true'], opts(`exe_b${++execs}`)));
    rawWarm.push(performance.now() - t0);
    if (i === 0) {
      for (let k = 0; k < EXECS; k++) {
        const t = performance.now();
        await drain(vmExec(vm.channel, ['true'], opts(`exe_b${++execs}`)));
        execRaw.push(performance.now() - t);
      }
    }
    await new Promise((r) => setTimeout(r, 1000));
    rssWarm.push(rssMb(vm.pid));
    await vm.kill();
  }
  await rt.close();
  const accel = String(readAccel(dir));
  rmSync(work, { recursive: true, force: true });

  console.log(`microvm, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, ${cpus()[0]?.model ?? ''}, accelerator ${accel}, guest kernel ${guest.kernelVersion}, 256 MB guests, busybox\n`);
  console.log(`### To the first exec (s, p50 / p95 of ${N}), vs bare QEMU with the same command line in the same run\n\n| | p50 | p95 | vs bare |\n|---|---|---|---|`);
  console.log(row('runtime: cold boot (create + first exec)', cold, rawCold, 1000));
  console.log(row('bare QEMU: boot + first command', rawCold, undefined, 1000));
  console.log(row('runtime: from the template (create + first exec)', warm, rawWarm, 1000));
  console.log(row('bare QEMU: restore of a saved state + first command', rawWarm, undefined, 1000));
  console.log(`\nSaving a state (QMP stop, migrate to a file, cont): ${(saveMs / 1000).toFixed(2)} s once.\n`);
  console.log(`### Exec round trip of \`true\` (ms, p50 / p95 of ${EXECS})\n\n| | p50 | p95 | vs bare |\n|---|---|---|---|`);
  console.log(row('runtime.exec', execRt, execRaw));
  console.log(row('bare agent channel', execRaw));
  console.log(`\n### Host memory of an idle VM (QEMU's RSS, MB, 1 s after its first command)\n\n| | p50 | p95 | |\n|---|---|---|---|`);
  console.log(row('booted', rssCold));
  console.log(row('restored from a saved state', rssWarm));
}

function readAccel(dir: string): unknown {
  try {
    return (JSON.parse(readFileSync(join(dir, 'accel.json'), 'utf8')) as { accel?: string }).accel;
  } catch {
    return process.env.AGENTBOX_MICROVM_ACCEL ?? 'tcg (no accel.json)';
  }
}

await main();
