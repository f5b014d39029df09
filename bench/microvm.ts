/**
 * The microvm runtime beside raw QEMU with the same command line, in the same run (TCG on this host
 * unless KVM works; the table says which):
 *  - cold boot to the first exec: MicroVmRuntime.create (disk, root disk, boot, template save on the
 *    first of a kind) vs a bare MicroVm.start (QEMU + agent, the same disks) and its first command
 *  - restore from the template to the first exec vs a bare restore of the same state
 *  - exec round trip (`true`) through the runtime vs straight on the agent channel
 *  - host memory (QEMU's RSS) of an idle VM, booted and restored
 *  - fork with memory into 1 and 5 children, as the manager's `fork --memory` does it (hibernate,
 *    disk clone, memory copy, wake, the children from the image) to every child's first exec, vs
 *    a bare save of a running VM and as many bare restores of it
 *  - hibernate, and wake to the first exec, of a sandbox with a process running, vs a bare save
 *    and quit, and a bare restore
 *  - capacity: 128 MB sandboxes added one at a time until the exec round trip, the host's
 *    available memory, a create or a cap stops it; and the CPU the idle VMs take
 * Usage: npm run bench:microvm   (prints Markdown tables for BENCHMARKS.md)
 *   BENCH_PARTS=cold,warm,fork,hibernate,capacity   the parts to run (default all; warm includes the exec round trip)
 *   BENCH_N=5 rounds of cold, warm and hibernate; BENCH_FORKS=min(BENCH_N,3) rounds of each fork;
 *   BENCH_EXECS=30 exec round trips; BENCH_CAPACITY_MAX=80 VMs at most
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ImageStore } from '../src/images/image-store.js';
import { ensureGuest } from '../src/runtime/microvm/guest/build.js';
import { ensureRootDisk } from '../src/runtime/microvm/guest/root-disk.js';
import { vmExec } from '../src/runtime/microvm/guest-ops.js';
import { MicroVmRuntime } from '../src/runtime/microvm/microvm-runtime.js';
import { MicroVm, type MicroVmOpts, namedProcesses, saveVmState } from '../src/runtime/microvm/vm.js';
import type { ExecEvent, Limits } from '../src/contract/model.js';
import type { RuntimeSpec, SandboxHandle } from '../src/runtime/types.js';
import type { DiskStore } from '../src/storage/disk-store.js';
import { scratchDiskStore } from '../src/storage/scratch-store.js';
import { pct } from './stats.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const N = Number(process.env.BENCH_N ?? 5);
const FORKS = Number(process.env.BENCH_FORKS ?? Math.min(N, 3));
const EXECS = Number(process.env.BENCH_EXECS ?? 30);
const CAPACITY_MAX = Number(process.env.BENCH_CAPACITY_MAX ?? 80);
const ALL_PARTS = ['cold', 'warm', 'fork', 'hibernate', 'capacity'] as const;
type Part = (typeof ALL_PARTS)[number];
const PARTS = new Set((process.env.BENCH_PARTS ?? ALL_PARTS.join(',')).split(',').map((p) => p.trim()).filter(Boolean));
const LIMITS: Limits = { cpus: 1, memoryMb: 256, pids: 128, diskMb: 256 };
const CAPACITY_LIMITS: Limits = { ...LIMITS, memoryMb: 128 };
const FORK_COUNTS = [1, 5];
const TAG = `bench${process.pid}`;
/** The `-name` of this run's bare QEMUs; the runtime's are agentbox-vm.TAG.ID. */
const BARE_NAME = `agentbox-vm.${TAG}-bare`;

const opts = (execId: string) => ({ env: {}, timeoutMs: 60_000, outputLimitBytes: 1 << 20, execId });
let execs = 0;
const nextExec = (): string => `exe_b${++execs}`;
let interrupted = false;

async function drain(events: AsyncIterable<ExecEvent>): Promise<{ code: number; stdout: string }> {
  let code = -1;
  let stdout = '';
  for await (const e of events) {
    if (e.type === 'exit') code = e.result.exitCode;
    else if (e.type === 'stdout') stdout += e.data.toString();
  }
  return { code, stdout };
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function memAvailableGb(): number {
  const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) / 1024 ** 2 : NaN;
}

/** utime + stime of a process, in clock ticks (the fields after the command name, which may hold spaces). */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

/** This run's QEMU processes, the runtime's and the bare ones, found by their `-name`. */
function benchQemus(): number[] {
  return namedProcesses().filter((p) => p.name === BARE_NAME || p.name.startsWith(`agentbox-vm.${TAG}.`)).map((p) => p.pid);
}

/** A sparse copy of an ext4 image (a full one of 256 MB would weigh on the bare side of a timing). */
function copyDisk(src: string, dest: string): void {
  execFileSync('cp', ['--sparse=always', src, dest]);
}

function row(name: string, values: number[], baseline?: number[], unit = 1): string {
  const ratio = baseline ? `${(pct(values, 50) / pct(baseline, 50)).toFixed(2)}×` : '';
  return `| ${name} | ${(pct(values, 50) / unit).toFixed(2)} | ${(pct(values, 95) / unit).toFixed(2)} | ${ratio} |`;
}

const table = (title: string): string => `\n### ${title}\n\n| | p50 | p95 | vs bare |\n|---|---|---|---|`;

interface Bench {
  rt: MicroVmRuntime;
  disks: DiskStore;
  work: string;
  vmOpts: MicroVmOpts;
  /** A new empty ext4 disk of LIMITS.diskMb for a bare VM. */
  freshDisk: () => string;
  spec: (limits?: Limits) => RuntimeSpec;
  /** Bare VMs running, for the cleanup should a part fail. */
  bare: Set<MicroVm>;
  cold?: { rt: number[]; bare: number[]; rss: number[] };
  warm?: { rt: number[]; bare: number[]; rss: number[]; execRt: number[]; execRaw: number[]; saveMs: number };
  /** The tables of the parts after these two, in order. */
  out: string[];
}

async function startBare(b: Bench, dataDisk: string, incoming?: string): Promise<MicroVm> {
  const vm = await MicroVm.start({ ...b.vmOpts, dataDisk, ...(incoming ? { incoming } : {}) });
  b.bare.add(vm);
  return vm;
}

async function killBare(b: Bench, vm: MicroVm): Promise<void> {
  await vm.kill();
  b.bare.delete(vm);
}

/** Start a process that outlives its command, and return its pid. */
async function backgroundJob(run: (cmd: string[]) => AsyncIterable<ExecEvent>): Promise<string> {
  const r = await drain(run(['sh', '-c', 'sleep 1000 >/dev/null 2>&1 & echo $!']));
  const pid = r.stdout.trim();
  if (r.code !== 0 || !/^\d+$/.test(pid)) throw new Error(`the background job did not start: ${r.code} ${r.stdout}`);
  return pid;
}

/** Every one of these commands exited 0 (a first exec that failed would still stop a timing). */
async function expectAllOk(runs: AsyncIterable<ExecEvent>[], who: string): Promise<void> {
  const codes = (await Promise.all(runs.map(drain))).map((r) => r.code);
  if (codes.some((c) => c !== 0)) throw new Error(`${who}: a first exec failed (exit codes ${codes.join(', ')})`);
}

async function expectJob(run: (cmd: string[]) => AsyncIterable<ExecEvent>, pid: string, who: string): Promise<void> {
  const r = await drain(run(['sh', '-c', `kill -0 ${pid}`]));
  if (r.code !== 0) throw new Error(`${who} lost its background process ${pid} (kill -0 exited ${r.code})`);
}

async function main(): Promise<void> {
  const unknown = [...PARTS].filter((p) => !(ALL_PARTS as readonly string[]).includes(p));
  if (unknown.length) throw new Error(`BENCH_PARTS: no part ${unknown.join(', ')} (there are ${ALL_PARTS.join(', ')})`);
  process.once('SIGINT', () => {
    interrupted = true;
    console.error('interrupted: cleaning up (again to quit at once, leaving VMs behind)');
  });
  const images = new ImageStore(IMAGES);
  await images.ensure('busybox', {});
  const work = mkdtempSync(join(tmpdir(), 'bench-microvm-'));
  const dir = join(work, 'microvm');
  const runRoot = join(work, 'run');
  mkdirSync(runRoot);
  const disks = scratchDiskStore();
  const rt = new MicroVmRuntime({ images, homeTag: TAG, dir, runRoot, disks });
  const guest = await ensureGuest({ dir: join(dir, 'guest') });
  const bb = images.resolve('busybox');
  const rootDisk = await ensureRootDisk(join(dir, 'roots'), { id: bb.info.id, rootfs: bb.rootfs, sizeBytes: bb.info.sizeBytes });
  let n = 0;
  const id = (): string => `sbx_bm${process.pid}x${++n}`;
  const b: Bench = {
    rt,
    disks,
    work,
    // Named like the runtime's VMs (but outside its home, which it lists and reaps): found again by name.
    vmOpts: { guest, memoryMb: LIMITS.memoryMb, cpus: LIMITS.cpus, limits: { memoryMb: LIMITS.memoryMb, pids: LIMITS.pids }, rootDisk, runRoot: work, dieWithParent: true, name: BARE_NAME },
    freshDisk: () => {
      const p = join(work, `raw-${++n}.img`);
      execFileSync('truncate', ['-s', `${LIMITS.diskMb}M`, p]);
      execFileSync('mkfs.ext4', ['-q', '-F', p]);
      return p;
    },
    spec: (limits = LIMITS) => ({ id: id(), image: 'busybox', isolation: 'vm', limits, labels: {} }),
    bare: new Set(),
    out: [],
  };
  const parts: Record<Part, (b: Bench) => Promise<void>> = { cold, warm, fork, hibernate, capacity };
  let leftovers: string[] = [];
  try {
    for (const p of ALL_PARTS) if (PARTS.has(p) && !interrupted) await parts[p](b);
  } finally {
    for (const vm of b.bare) await vm.kill().catch(() => undefined);
    // Whatever a failed part left in the runtime's home: running, hibernated, half made.
    for (const o of await rt.list()) await rt.reap(o.id).catch((err: unknown) => console.error(`could not reap ${o.id}: ${String(err)}`));
    await rt.close();
    leftovers = [
      ...benchQemus().map((pid) => `QEMU pid ${pid}`),
      ...readdirSync(runRoot).map((d) => `run directory ${join(runRoot, d)}`),
      ...readdirSync(work).filter((d) => d.startsWith('agentbox-vm-')).map((d) => `bare VM directory ${join(work, d)}`),
      ...['hibernated', 'memory'].flatMap((k) => (existsSync(join(dir, k, TAG)) ? readdirSync(join(dir, k, TAG)).map((d) => `${k} ${d}`) : [])),
    ];
    const accel = String(readAccel(dir));
    rmSync(work, { recursive: true, force: true });
    console.log(`microvm, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, ${cpus()[0]?.model ?? ''}, accelerator ${accel}, guest kernel ${guest.kernelVersion}, 256 MB guests, busybox`);
    printBootTables(b);
    console.log(b.out.join('\n'));
  }
  if (leftovers.length) throw new Error(`left behind after the run: ${leftovers.join('; ')}`);
}

/** The tables of the cold and warm parts, those that ran. */
function printBootTables({ cold, warm }: Bench): void {
  if (cold || warm) {
    console.log(`\n### To the first exec (s, p50 / p95 of ${N}), vs bare QEMU with the same command line in the same run\n\n| | p50 | p95 | vs bare |\n|---|---|---|---|`);
    if (cold) console.log(row('runtime: cold boot (create + first exec)', cold.rt, cold.bare, 1000));
    if (cold) console.log(row('bare QEMU: boot + first command', cold.bare, undefined, 1000));
    if (warm) console.log(row('runtime: from the template (create + first exec)', warm.rt, warm.bare, 1000));
    if (warm) console.log(row('bare QEMU: restore of a saved state + first command', warm.bare, undefined, 1000));
  }
  if (warm) {
    console.log(`\nSaving a state (QMP stop, migrate to a file, cont): ${(warm.saveMs / 1000).toFixed(2)} s once.\n`);
    console.log(`### Exec round trip of \`true\` (ms, p50 / p95 of ${EXECS})\n\n| | p50 | p95 | vs bare |\n|---|---|---|---|`);
    console.log(row('runtime.exec', warm.execRt, warm.execRaw));
    console.log(row('bare agent channel', warm.execRaw));
  }
  if (cold || warm) {
    console.log(`\n### Host memory of an idle VM (QEMU's RSS, MB, 1 s after its first command)\n\n| | p50 | p95 | |\n|---|---|---|---|`);
    if (cold) console.log(row('booted', cold.rss));
    if (warm) console.log(row('restored from a saved state', warm.rss));
  }
}

/** The runtime (a diskMb of its own each round, so no template serves it) vs bare QEMU. */
async function cold(b: Bench): Promise<void> {
  const { rt } = b;
  const cold: number[] = [];
  const rawCold: number[] = [];
  const rssCold: number[] = [];
  for (let i = 0; i < N; i++) {
    let t0 = performance.now();
    const h = await rt.create(b.spec({ ...LIMITS, diskMb: LIMITS.diskMb + 1 + i }));
    await drain(rt.exec(h, ['true'], opts(nextExec())));
    cold.push(performance.now() - t0);
    await rt.destroy(h);
    const disk = b.freshDisk();
    t0 = performance.now();
    const vm = await startBare(b, disk);
    await drain(vmExec(vm.channel, ['true'], opts(nextExec())));
    rawCold.push(performance.now() - t0);
    await sleep(1000);
    rssCold.push(rssMb(vm.pid));
    await killBare(b, vm);
  }
  b.cold = { rt: cold, bare: rawCold, rss: rssCold };
}

/** The runtime from its template vs a bare restore of a state saved the same way; the exec round trip. */
async function warm(b: Bench): Promise<void> {
  const { rt, work } = b;
  const first = await rt.create(b.spec()); // saves the template
  await rt.destroy(first);
  const sourceDisk = b.freshDisk();
  const source = await startBare(b, sourceDisk);
  const state = join(work, 'state.bin');
  const stateDisk = join(work, 'state-disk.img');
  const t0s = performance.now();
  await source.saveState(state, async () => copyFileSync(sourceDisk, stateDisk));
  const saveMs = performance.now() - t0s;
  await killBare(b, source);
  const warm: number[] = [];
  const rawWarm: number[] = [];
  const rssWarm: number[] = [];
  const execRt: number[] = [];
  const execRaw: number[] = [];
  for (let i = 0; i < N; i++) {
    let t0 = performance.now();
    const h: SandboxHandle = await rt.create(b.spec());
    await drain(rt.exec(h, ['true'], opts(nextExec())));
    warm.push(performance.now() - t0);
    if (i === 0) {
      for (let k = 0; k < EXECS; k++) {
        const t = performance.now();
        await drain(rt.exec(h, ['true'], opts(nextExec())));
        execRt.push(performance.now() - t);
      }
    }
    await rt.destroy(h);
    const disk = join(work, `restore-${i}.img`);
    copyFileSync(stateDisk, disk);
    t0 = performance.now();
    const vm = await startBare(b, disk, state);
    await drain(vmExec(vm.channel, ['true'], opts(nextExec())));
    rawWarm.push(performance.now() - t0);
    if (i === 0) {
      for (let k = 0; k < EXECS; k++) {
        const t = performance.now();
        await drain(vmExec(vm.channel, ['true'], opts(nextExec())));
        execRaw.push(performance.now() - t);
      }
    }
    await sleep(1000);
    rssWarm.push(rssMb(vm.pid));
    await killBare(b, vm);
    rmSync(disk, { force: true });
  }
  b.warm = { rt: warm, bare: rawWarm, rss: rssWarm, execRt, execRaw, saveMs };
}

/**
 * Fork with memory as the manager does it (memoryForkSource, then the children one after another),
 * until every child answered its first exec; the bare side saves its running source VM (which goes
 * on) and restores copies. Both parents run a background process that every child must still have.
 */
async function fork(b: Bench): Promise<void> {
  const { rt, disks, work } = b;
  const parent = await rt.create(b.spec());
  const rtRun = (h: SandboxHandle) => (cmd: string[]) => rt.exec(h, cmd, opts(nextExec()));
  const pid = await backgroundJob(rtRun(parent));
  const sourceDisk = b.freshDisk();
  const source = await startBare(b, sourceDisk);
  const bareRun = (vm: MicroVm) => (cmd: string[]) => vmExec(vm.channel, cmd, opts(nextExec()));
  const barePid = await backgroundJob(bareRun(source));
  const state = join(work, 'fork-state.bin');
  const stateDisk = join(work, 'fork-state-disk.img');
  b.out.push(table(`Fork with memory to every child's first exec (s, p50 / p95 of ${FORKS}), vs a bare save of a running VM and as many bare restores`));
  const stopped: number[] = [];
  const bareStopped: number[] = [];
  for (const count of FORK_COUNTS) {
    const total: number[] = [];
    const bareTotal: number[] = [];
    for (let round = 0; round < FORKS && !interrupted; round++) {
      let t0 = performance.now();
      await rt.hibernate(parent);
      const disk = await disks.cloneToScratch(parent.id);
      const memory = await rt.copyMemory(parent);
      await rt.wake(parent);
      stopped.push(performance.now() - t0);
      const kids: SandboxHandle[] = [];
      for (let i = 0; i < count; i++) kids.push(await rt.create({ ...b.spec(), diskFrom: disk, memoryFrom: memory }));
      await disks.dropScratch(disk);
      await rt.dropMemory(memory);
      await expectAllOk(kids.map((k) => rtRun(k)(['true'])), 'fork children');
      total.push(performance.now() - t0);
      await expectJob(rtRun(parent), pid, 'the parent');
      for (const k of kids) await expectJob(rtRun(k), pid, `fork child ${k.id}`);
      for (const k of kids) await rt.destroy(k);

      t0 = performance.now();
      await source.saveState(state, async () => copyDisk(sourceDisk, stateDisk));
      bareStopped.push(performance.now() - t0);
      const bareKids: MicroVm[] = [];
      for (let i = 0; i < count; i++) {
        const kidDisk = join(work, `fork-kid-${i}.img`);
        copyDisk(stateDisk, kidDisk);
        bareKids.push(await startBare(b, kidDisk, state));
      }
      await expectAllOk(bareKids.map((vm) => bareRun(vm)(['true'])), 'bare restored VMs');
      bareTotal.push(performance.now() - t0);
      for (const vm of bareKids) await expectJob(bareRun(vm), barePid, 'a bare restored VM');
      for (const vm of bareKids) await killBare(b, vm);
      for (let i = 0; i < count; i++) rmSync(join(work, `fork-kid-${i}.img`), { force: true });
    }
    const per = (v: number[]): number[] => v.map((t) => t / count);
    b.out.push(row(`runtime: fork --memory, ${count} ${count === 1 ? 'child' : 'children'}, total`, total, bareTotal, 1000));
    b.out.push(row('bare QEMU: save + restores + first commands, total', bareTotal, undefined, 1000));
    if (count > 1) {
      b.out.push(row(`runtime: per child (total / ${count})`, per(total), per(bareTotal), 1000));
      b.out.push(row(`bare QEMU: per child (total / ${count})`, per(bareTotal), undefined, 1000));
    }
  }
  b.out.push(row(`runtime: the parent stopped (hibernate, disk clone, memory copy, wake; all ${stopped.length} forks)`, stopped, bareStopped, 1000));
  b.out.push(row('bare QEMU: the source stopped (stop, save, disk copy, cont)', bareStopped, undefined, 1000));
  await rt.destroy(parent);
  await killBare(b, source);
}

/** Hibernate, and wake to the first exec, of a sandbox with a process running; bare: a save and quit, a restore. */
async function hibernate(b: Bench): Promise<void> {
  const { rt, work } = b;
  const h = await rt.create(b.spec());
  const run = (cmd: string[]) => rt.exec(h, cmd, opts(nextExec()));
  const pid = await backgroundJob(run);
  const hib: number[] = [];
  const wake: number[] = [];
  for (let i = 0; i < N && !interrupted; i++) {
    let t0 = performance.now();
    await rt.hibernate(h);
    hib.push(performance.now() - t0);
    t0 = performance.now();
    await rt.wake(h);
    await drain(run(['true']));
    wake.push(performance.now() - t0);
  }
  await expectJob(run, pid, 'the woken sandbox');
  await rt.destroy(h);

  const disk = b.freshDisk();
  const state = join(work, 'hibernate-state.bin');
  let vm = await startBare(b, disk);
  const bareRun = (cmd: string[]) => vmExec(vm.channel, cmd, opts(nextExec()));
  const barePid = await backgroundJob(bareRun);
  const bareHib: number[] = [];
  const bareWake: number[] = [];
  for (let i = 0; i < N && !interrupted; i++) {
    let t0 = performance.now();
    await vm.channel.close();
    await saveVmState(vm.runDir, state, { then: 'quit' });
    await vm.exited;
    bareHib.push(performance.now() - t0);
    await killBare(b, vm); // only its directory is left to remove
    t0 = performance.now();
    vm = await startBare(b, disk, state);
    await drain(bareRun(['true']));
    bareWake.push(performance.now() - t0);
  }
  await expectJob(bareRun, barePid, 'the bare restored VM');
  const stateMb = statSync(state).size / 2 ** 20;
  await killBare(b, vm);
  b.out.push(table(`Hibernate and wake of a 256 MB sandbox with a process running (s, p50 / p95 of ${N}), vs bare QEMU`));
  b.out.push(row('runtime: hibernate', hib, bareHib, 1000));
  b.out.push(row('bare QEMU: stop, save to a file, quit', bareHib, undefined, 1000));
  b.out.push(row('runtime: wake + first exec', wake, bareWake, 1000));
  b.out.push(row('bare QEMU: restore + first command', bareWake, undefined, 1000));
  b.out.push(`\nThe saved state: ${stateMb.toFixed(0)} MB.`);
}

interface CapacityRow {
  vms: number;
  memGb: number;
  rssMb: number;
  load: number;
  execMs: number;
  createMs: number;
}

/**
 * Idle 128 MB sandboxes one after another (from the template after the first) until one of the
 * limits below; after each, the host's state and the exec round trip on the first.
 */
async function capacity(b: Bench): Promise<void> {
  const { rt } = b;
  const vms: SandboxHandle[] = [];
  const pids = (): number[] => vms.map((h) => h.data.pid as number);
  const rows: CapacityRow[] = [];
  let stop = `the cap of ${CAPACITY_MAX} VMs (BENCH_CAPACITY_MAX)`;
  while (vms.length < CAPACITY_MAX) {
    if (interrupted) {
      stop = 'an interrupt';
      break;
    }
    const t0 = performance.now();
    try {
      vms.push(await rt.create(b.spec(CAPACITY_LIMITS)));
    } catch (err) {
      stop = `create #${vms.length + 1} failing: ${(err as Error).message.slice(0, 200)}`;
      break;
    }
    const createMs = performance.now() - t0;
    const first = vms[0]!;
    const execMs: number[] = [];
    for (let k = 0; k < 5; k++) {
      const t = performance.now();
      await drain(rt.exec(first, ['true'], opts(nextExec())));
      execMs.push(performance.now() - t);
    }
    const r: CapacityRow = { vms: vms.length, memGb: memAvailableGb(), rssMb: pids().reduce((s, p) => s + rssMb(p), 0), load: loadavg()[0] ?? NaN, execMs: pct(execMs, 50), createMs };
    rows.push(r);
    if (createMs > 30_000) stop = `create #${r.vms} taking ${(createMs / 1000).toFixed(1)} s (> 30 s)`;
    else if (r.execMs > 1000) stop = `the exec round trip on the first VM reaching ${r.execMs.toFixed(0)} ms (> 1000 ms)`;
    else if (r.memGb < 3) stop = `MemAvailable down to ${r.memGb.toFixed(2)} GiB (< 3 GiB)`;
    else continue;
    break;
  }
  let idle = '';
  if (vms.length && !interrupted) {
    await sleep(2000); // the last restore's own work done
    const hz = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    const before = pids().reduce((s, p) => s + cpuTicks(p), 0);
    const t0 = performance.now();
    await sleep(10_000);
    const cpuS = (pids().reduce((s, p) => s + cpuTicks(p), 0) - before) / hz;
    const pctAll = (cpuS / ((performance.now() - t0) / 1000)) * 100;
    idle = `Idle CPU over 10 s with ${vms.length} VMs: ${pctAll.toFixed(1)} % of a core in all, ${(pctAll / vms.length).toFixed(2)} % per idle VM.`;
  }
  const t0 = performance.now();
  for (const h of vms) await rt.destroy(h);
  const destroyS = (performance.now() - t0) / 1000;
  b.out.push(`\n### Capacity: idle 128 MB busybox sandboxes, added one at a time (after each: the host, and the exec round trip of \`true\` on the first, p50 of 5)\n`);
  b.out.push('| VMs | MemAvailable GiB | QEMU RSS total MB | per VM MB | load (1 min) | exec p50 ms | create s |\n|---|---|---|---|---|---|---|');
  for (const r of rows.filter((r, i) => r.vms === 1 || r.vms % 5 === 0 || i === rows.length - 1)) {
    b.out.push(`| ${r.vms} | ${r.memGb.toFixed(2)} | ${r.rssMb.toFixed(0)} | ${(r.rssMb / r.vms).toFixed(0)} | ${r.load.toFixed(2)} | ${r.execMs.toFixed(0)} | ${(r.createMs / 1000).toFixed(2)} |`);
  }
  b.out.push(`\nStopped at ${vms.length} VMs by ${stop}. ${idle} Destroying them all: ${destroyS.toFixed(1)} s.`);
}

function readAccel(dir: string): unknown {
  try {
    return (JSON.parse(readFileSync(join(dir, 'accel.json'), 'utf8')) as { accel?: string }).accel;
  } catch {
    return process.env.AGENTBOX_MICROVM_ACCEL ?? 'tcg (no accel.json)';
  }
}

await main();
