/**
 * Warm claim vs cold create through the manager, per runtime, in one run; plus the raw baseline
 * (`docker run`-equivalent through the Engine API is in bench/docker.ts; one-shot bwrap in bench/local.ts).
 * Usage: npm run bench:pool
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { helperPath, VERSION } from '../src/core/config.js';
import { SandboxManager, type Caller } from '../src/core/manager.js';
import { ImageStore } from '../src/images/image-store.js';
import { silentLogger } from '../src/observability/logger.js';
import { parsePolicyText } from '../src/policy/load.js';
import { DockerRuntime } from '../src/runtime/docker/docker-runtime.js';
import { LocalRuntime } from '../src/runtime/local/local-runtime.js';
import { MicroVmRuntime } from '../src/runtime/microvm/microvm-runtime.js';
import type { Runtime } from '../src/runtime/types.js';
import { Store } from '../src/store/store.js';
import { pct } from './stats.js';
import { scratchDiskStore } from '../src/storage/scratch-store.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const N = Number(process.env.BENCH_N ?? 40);
const caller: Caller = { tenant: 'default', actor: 'bench' };

async function measure(name: 'local' | 'docker' | 'microvm', rt: Runtime, n = N): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'agentbox-bench-pool-'));
  const r = parsePolicyText(`version: 1\ndefaults:\n  runtime: ${name}\n  limits: { memoryMb: 128, pids: 64, diskMb: 16 }\npools:\n  - { image: busybox, size: ${n} }\n`, 'bench.yaml');
  if (r.kind !== 'ok') throw new Error('bench policy invalid');
  const store = Store.open(join(dir, 'db'));
  const m = new SandboxManager({ policy: r.policy, store, runtimes: { [name]: rt }, logger: silentLogger() });
  await m.start();
  await m.poolsFull();
  const warm: number[] = [];
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    ids.push((await m.create({}, caller)).id);
    warm.push(performance.now() - t0);
  }
  const cold: number[] = [];
  for (let i = 0; i < Math.min(n, 20); i++) {
    const t0 = performance.now();
    ids.push((await m.create({ limits: { memoryMb: 64 } }, caller)).id);
    cold.push(performance.now() - t0);
  }
  for (const id of ids) await m.delete(id, caller);
  await m.close();
  store.close();
  rmSync(dir, { recursive: true, force: true });
  return [
    `| ${name}: warm claim | ${pct(warm, 50).toFixed(2)} | ${pct(warm, 99).toFixed(2)} | ${(pct(warm, 50) / pct(cold, 50)).toFixed(3)}× |`,
    `| ${name}: cold create | ${pct(cold, 50).toFixed(1)} | ${pct(cold, 99).toFixed(1)} | 1× |`,
  ];
}

const images = new ImageStore(IMAGES);
await images.ensure('busybox', {});
const rows = await measure('local', new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/bench-pool-${process.pid}`, resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() }));
const docker = new DockerRuntime({ disks: scratchDiskStore(), images, homeTag: `benchpool${process.pid}`, version: VERSION });
if ((await docker.probe()).ok) rows.push(...(await measure('docker', docker)));
// Idle VMs cost CPU under TCG (BENCHMARKS.md, microvm capacity): a smaller pool.
const VM_N = Number(process.env.BENCH_VM_N ?? 8);
const vmWork = mkdtempSync(join(tmpdir(), 'agentbox-bench-pool-vm-'));
const microvm = new MicroVmRuntime({ images, homeTag: `benchpool${process.pid}`, dir: join(vmWork, 'microvm'), runRoot: join(vmWork, 'run'), disks: scratchDiskStore() });
if ((await microvm.probe()).ok && process.env.BENCH_SKIP_MICROVM !== '1') rows.push(...(await measure('microvm', microvm, VM_N)));
rmSync(vmWork, { recursive: true, force: true });
console.log(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ${new Date().toISOString().slice(0, 10)}; n=${N} (microvm: ${VM_N})`);
console.log('\n| create through the manager (ms) | p50 | p99 | vs cold p50 |\n|---|---|---|---|');
for (const row of rows) console.log(row);
