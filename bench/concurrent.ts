/**
 * 100 sandboxes created at once through the manager, per runtime: time until all are ready, the
 * daemon's RSS growth, and host memory per idle sandbox (MemAvailable drop / 100, which counts
 * everything: bwrap + init, or containerd-shim + runc/runsc + the container).
 * Usage: npm run bench:concurrent
 */
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { helperPath, VERSION } from '../src/core/config.js';
import { SandboxManager, type Caller } from '../src/core/manager.js';
import { ImageStore } from '../src/images/image-store.js';
import { silentLogger } from '../src/observability/logger.js';
import { parsePolicyText } from '../src/policy/load.js';
import { DockerRuntime } from '../src/runtime/docker/docker-runtime.js';
import { LocalRuntime } from '../src/runtime/local/local-runtime.js';
import type { Runtime } from '../src/runtime/types.js';
import { Store } from '../src/store/store.js';
import { scratchDiskStore } from '../src/storage/scratch-store.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const N = Number(process.env.BENCH_N ?? 100);
const caller: Caller = { tenant: 'default', actor: 'bench' };

function memAvailableMiB(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

async function run(name: 'local' | 'docker', rt: Runtime, isolation?: 'gvisor', note?: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'agentbox-bench-conc-'));
  const r = parsePolicyText(`version: 1\ndefaults:\n  runtime: ${name}\n  limits: { memoryMb: 128, pids: 64, diskMb: 16 }\n`, 'bench.yaml');
  if (r.kind !== 'ok') throw new Error('bench policy invalid');
  const store = Store.open(join(dir, 'db'));
  const m = new SandboxManager({ policy: r.policy, store, runtimes: { [name]: rt }, logger: silentLogger(), maxConcurrentCreates: 16, createQueueLength: N });
  await m.start();
  await m.delete((await m.create({ ...(isolation ? { isolation } : {}) }, caller)).id, caller); // image import, probe
  await sleep(500);
  const rss0 = process.memoryUsage().rss / 2 ** 20;
  const avail0 = memAvailableMiB();
  const t0 = performance.now();
  const boxes = await Promise.all(Array.from({ length: N }, () => m.create({ ...(isolation ? { isolation } : {}) }, caller)));
  const wall = performance.now() - t0;
  await sleep(1000);
  const perBox = (avail0 - memAvailableMiB()) / N;
  const rss = process.memoryUsage().rss / 2 ** 20 - rss0;
  const ok = (await Promise.all(boxes.slice(0, 10).map((b) => m.exec(b.id, { cmd: ['true'] }, caller)))).every((x) => x.exitCode === 0);
  for (const b of boxes) await m.delete(b.id, caller);
  await m.close();
  store.close();
  rmSync(dir, { recursive: true, force: true });
  return `| ${name}${isolation ? ' + gVisor' : ''}${note ? ` (${note})` : ''} | ${(wall / 1000).toFixed(2)} | ${(wall / N).toFixed(1)} | +${rss.toFixed(0)} | ${perBox.toFixed(1)} | ${ok ? 'yes' : 'NO'} |`;
}

const images = new ImageStore(IMAGES);
await images.ensure('busybox', {});
const rows = [await run('local', new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/bench-conc-${process.pid}`, resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() }))];
// As the daemon runs them: runc entered directly, gVisor through its exec agent (one more process in each sandbox).
const agentDir = mkdtempSync(join(tmpdir(), 'agentbox-bench-agents-'));
const docker = new DockerRuntime({ disks: scratchDiskStore(), images, homeTag: `benchconc${process.pid}`, version: VERSION, helper: helperPath(), agentDir });
if ((await docker.probe()).ok) {
  rows.push(await run('docker', docker));
  rows.push(await run('docker', new DockerRuntime({ disks: scratchDiskStore(), images, homeTag: `benchconcg${process.pid}`, version: VERSION, helper: helperPath(), agentDir }), 'gvisor'));
  // What the agent costs: the same without it (Engine execs).
  rows.push(await run('docker', new DockerRuntime({ disks: scratchDiskStore(), images, homeTag: `benchconce${process.pid}`, version: VERSION }), 'gvisor', 'no exec agent'));
}
rmSync(agentDir, { recursive: true, force: true });
console.log(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ${new Date().toISOString().slice(0, 10)}; ${N} sandboxes at once (16 creating at a time)`);
console.log('\n| runtime | all ready (s) | per sandbox (ms) | daemon RSS (MiB) | host memory per idle sandbox (MiB) | execs work |\n|---|---|---|---|---|---|');
for (const row of rows) console.log(row);
