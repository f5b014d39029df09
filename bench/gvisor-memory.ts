/**
 * What the memory watchdog of a gVisor sandbox (native/memory-watchdog.h) costs and how well it holds:
 *  - CPU of a sandbox, idle per memory limit and with a process holding most of its limit, side by
 *    side in the same run with the same container without the watchdog (PID 1 started without
 *    --memory-limit-kb, the same process held in it)
 *  - memory bombs (one, then two processes writing 400 MB each) in a small sandbox: how often the
 *    sandbox survives, how far past the limit gVisor's count got before the kill, and the host
 *    cgroup's peak against its ceiling (limit + GVISOR_HEADROOM)
 * Usage: npm run build && node dist/bench/gvisor-memory.js   (needs runsc and the debian test image)
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Docker from 'dockerode';
import { VERSION } from '../src/core/config.js';
import type { Limits } from '../src/contract/model.js';
import { ImageStore } from '../src/images/image-store.js';
import { containerConfig, GVISOR_HEADROOM } from '../src/runtime/docker/container-config.js';
import { defaultInitPath, DockerRuntime } from '../src/runtime/docker/docker-runtime.js';
import { imageRef } from '../src/runtime/docker/images.js';
import { WATCHDOG_LOG } from '../src/runtime/docker/oom.js';
import { cgroupsOf } from '../src/runtime/proc.js';
import { run } from '../test/helpers/collect.js';
import { pct } from './stats.js';
import { scratchDiskStore } from '../src/storage/scratch-store.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const IDLE_S = Number(process.env.BENCH_IDLE_S ?? 10);
const N_BOMB = Number(process.env.BENCH_N ?? 10);
const IDLE_LIMITS_MB = [48, 512, 2048];
const BOMB_LIMIT_MB = 48;
const homeTag = `bench-gvisor-memory-${process.pid}`;

function limits(memoryMb: number): Limits {
  return { cpus: 2, memoryMb, pids: 128, diskMb: 64 };
}

function cgroupDir(pid: number, controller: string): string {
  const c = cgroupsOf(pid).find((g) => g.controllers.includes(controller));
  if (!c) throw new Error(`no ${controller} cgroup for pid ${pid}`);
  return c.dir;
}

/** CPU the container's cgroup used over `seconds`, in ms per second. */
async function idleCpu(pid: number, seconds: number): Promise<number> {
  const file = join(cgroupDir(pid, 'cpuacct'), 'cpuacct.usage');
  const before = Number(readFileSync(file, 'utf8'));
  await sleep(seconds * 1000);
  return (Number(readFileSync(file, 'utf8')) - before) / 1e6 / seconds;
}

async function pidOf(docker: Docker, containerId: string): Promise<number> {
  return (await docker.getContainer(containerId).inspect()).State.Pid;
}

async function main(): Promise<void> {
  const docker = new Docker();
  const store = new ImageStore(IMAGES);
  const rt = new DockerRuntime({ disks: scratchDiskStore(), images: store, homeTag, version: VERSION });
  const probe = await rt.probe();
  if (!probe.ok || !(probe.details?.runtimes ?? '').split(' ').includes('runsc')) throw new Error('needs dockerd with runsc (scripts/start-dockerd.sh)');
  await rt.prepareImage('debian');
  const ref = imageRef(store.resolve('debian').info);
  let n = 0;
  const id = (): string => `sbx_gvm${process.pid}x${++n}`;

  console.log(`gVisor memory watchdog, ${new Date().toISOString().slice(0, 10)}, idle ${IDLE_S} s, ${N_BOMB} bombs per kind\n`);
  console.log('| memory limit | CPU, no watchdog (ms/s) | CPU, watchdog (ms/s) | watchdog cost (% of a core) |\n|---|---|---|---|');
  // Idle, and with a process holding most of the limit (the watchdog wakes more often near it).
  const cases: { mb: number; holdMb: number }[] = [...IDLE_LIMITS_MB.map((mb) => ({ mb, holdMb: 0 })), { mb: 512, holdMb: 470 }];
  for (const { mb, holdMb } of cases) {
    // The same container the runtime makes, minus the watchdog: PID 1 without --memory-limit-kb.
    const bareId = id();
    const bareDisk = await scratchDiskStore().create(bareId, limits(mb).diskMb);
    const config = containerConfig({ id: bareId, imageRef: ref, isolation: 'gvisor', limits: limits(mb), labels: {}, initPath: defaultInitPath(), homeTag, version: VERSION, diskRoot: bareDisk.root });
    config.Cmd = (config.Cmd ?? []).filter((a, i, all) => a !== '--memory-limit-kb' && all[i - 1] !== '--memory-limit-kb');
    const bare = await docker.createContainer(config);
    await bare.start();
    const h = await rt.create({ id: id(), image: 'debian', isolation: 'gvisor', limits: limits(mb), labels: {} });
    let held: Promise<unknown> | undefined;
    if (holdMb > 0) {
      const hold = `x=bytearray(${holdMb}<<20); import time; time.sleep(${IDLE_S * 2 + 5})`;
      const ex = await bare.exec({ Cmd: ['python3', '-c', hold], User: '1000:1000' });
      await ex.start({ Detach: true });
      held = run(rt, h, `python3 -c "${hold}"`, { timeoutMs: 60_000 });
      await sleep(3000);
    }
    await sleep(1000);
    const [without, withWatchdog] = [await idleCpu((await bare.inspect()).State.Pid, IDLE_S), await idleCpu(await pidOf(docker, String(h.data.containerId)), IDLE_S)];
    const label = holdMb > 0 ? `${mb} MB, ${holdMb} MB held` : `${mb} MB, idle`;
    console.log(`| ${label} | ${without.toFixed(2)} | ${withWatchdog.toFixed(2)} | ${((withWatchdog - without) / 10).toFixed(2)}% |`);
    await bare.remove({ force: true });
    await scratchDiskStore().destroy(bareId);
    await rt.destroy(h);
    await held?.catch(() => undefined);
  }

  const bombs = {
    'one process, 400 MB': 'python3 -c "x=bytearray(400<<20); print(1)"',
    'two processes, 400 MB each': 'python3 -c "x=bytearray(400<<20)" & python3 -c "x=bytearray(400<<20)"; wait; exit 137',
  };
  const ceilingMb = BOMB_LIMIT_MB + GVISOR_HEADROOM.memoryMb;
  console.log(`\n| bomb in a ${BOMB_LIMIT_MB} MB sandbox (host ceiling ${ceilingMb} MB) | sandbox survived | reported oomKilled | past the limit at the kill, p50 / max (MB) | host peak, p50 / max (MB) |\n|---|---|---|---|---|`);
  for (const [name, cmd] of Object.entries(bombs)) {
    let survived = 0;
    let reported = 0;
    const over: number[] = [];
    const peaks: number[] = [];
    for (let i = 0; i < N_BOMB; i++) {
      const h = await rt.create({ id: id(), image: 'debian', isolation: 'gvisor', limits: limits(BOMB_LIMIT_MB), labels: {} });
      const memDir = cgroupDir(await pidOf(docker, String(h.data.containerId)), 'memory');
      writeFileSync(join(memDir, 'memory.max_usage_in_bytes'), '0');
      const r = await run(rt, h, cmd, { timeoutMs: 60_000 });
      if (r.oomKilled) reported++;
      try {
        peaks.push(Number(readFileSync(join(memDir, 'memory.max_usage_in_bytes'), 'utf8')) / 2 ** 20);
      } catch {
        peaks.push(ceilingMb); // the cgroup went with the sandbox: it reached the ceiling
      }
      if ((await rt.status(h)).alive) {
        survived++;
        const log = await run(rt, h, `cat ${WATCHDOG_LOG}`);
        for (const line of log.stdout.trim().split('\n')) {
          const [, , , usedKb, limitKb] = line.split(' ');
          if (usedKb && limitKb) over.push((Number(usedKb) - Number(limitKb)) / 1024);
        }
      }
      await rt.destroy(h);
    }
    const mb = (v: number[]): string => (v.length ? `${pct(v, 50).toFixed(1)} / ${Math.max(...v).toFixed(1)}` : 'n/a');
    console.log(`| ${name} | ${survived}/${N_BOMB} | ${reported}/${N_BOMB} | ${mb(over)} | ${mb(peaks)} |`);
  }
  await rt.close();
}

await main();
