/**
 * Hibernation and memory fork of gVisor sandboxes, side by side with the raw Engine calls in the
 * same run:
 *  - hibernate (agent parked + docker checkpoint + runsc record check) and wake (restore + the next
 *    exec), for a sandbox holding 0, 16 and 48 MB in /dev/shm, vs `docker checkpoint create` and
 *    `docker start --checkpoint` of a plain runsc container holding the same
 *  - the memory image's size, and the host memory the sandbox holds running vs hibernated
 *  - a memory fork's parts (hibernate, disk clone, image copy, wake) and a child started from the
 *    image, vs a cold create of the same sandbox
 * Usage: npm run bench:hibernate   (prints Markdown tables for BENCHMARKS.md)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { helperPath, VERSION } from '../src/core/config.js';
import { ImageStore } from '../src/images/image-store.js';
import { DockerRuntime } from '../src/runtime/docker/docker-runtime.js';
import type { SandboxHandle } from '../src/runtime/types.js';
import { scratchDiskStore } from '../src/storage/scratch-store.js';
import { collect, execOpts } from '../test/helpers/collect.js';
import { pct } from './stats.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const REPEAT = Number(process.env.BENCH_REPEAT ?? 5);

function docker(...args: string[]): string {
  return execFileSync('docker', args, { encoding: 'utf8' }).trim();
}

async function timeIt(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

const ms = (v: number[]): string => `${pct(v, 50).toFixed(0)} / ${pct(v, 95).toFixed(0)}`;

async function main(): Promise<void> {
  const images = new ImageStore(IMAGES);
  await images.ensure('busybox', {});
  const disks = scratchDiskStore();
  const agentDir = mkdtempSync(join(tmpdir(), 'ab-bench-agents-'));
  const rt = new DockerRuntime({ disks, images, homeTag: `bench-hib-${process.pid}`, version: VERSION, helper: helperPath(), agentDir });
  const can = await rt.canHibernate({ isolation: 'gvisor', network: false, volumes: false });
  if (!can.ok) throw new Error(`gVisor sandboxes cannot be hibernated here: ${can.reason} (${can.hint})`);
  const limits = { cpus: 1, memoryMb: 512, pids: 128, diskMb: 256 };
  let n = 0;
  const create = (memoryFrom?: string, diskFrom?: string): Promise<SandboxHandle> =>
    rt.create({ id: `sbx_bh${process.pid}x${++n}`, image: 'busybox', isolation: 'gvisor', limits, labels: {}, ...(memoryFrom ? { memoryFrom } : {}), ...(diskFrom ? { diskFrom } : {}) });
  const run = async (h: SandboxHandle, cmd: string): Promise<string> => (await collect(rt.exec(h, ['sh', '-c', cmd], execOpts()))).stdout;
  const containerOf = (h: SandboxHandle): string => (h.data as { containerId: string }).containerId;
  // The Docker image agentbox's busybox became, for the raw baseline containers.
  const probe = await create();
  const rawImage = docker('inspect', '-f', '{{.Config.Image}}', containerOf(probe));
  await rt.destroy(probe);

  console.log(`Hibernation (gVisor), ${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, ${cpus()[0]?.model ?? ''}, runsc ${docker('info', '-f', '{{range $k, $v := .Runtimes}}{{if eq $k "runsc"}}{{$v.Path}}{{end}}{{end}}')}\n`);
  console.log(`### Hibernate and wake (ms, p50 / p95 of ${REPEAT}), vs the raw Engine calls on a plain runsc container holding the same\n`);
  console.log('| held in /dev/shm | hibernate | wake + first exec | raw checkpoint | raw restore | memory image | host memory running → hibernated |\n|---|---|---|---|---|---|---|');
  // /dev/shm is 64 MB in a docker sandbox: random bytes there are memory the sentry holds, and do not compress.
  for (const mb of [0, 16, 48]) {
    const h = await create();
    await run(h, `dd if=/dev/urandom of=/dev/shm/held bs=1M count=${mb} 2>/dev/null; sleep 1000 >/dev/null 2>&1 & true`);
    const running = (await rt.stats(h)).memoryBytes;
    const hib: number[] = [];
    const wake: number[] = [];
    let imageBytes = 0;
    for (let i = 0; i < REPEAT; i++) {
      hib.push(await timeIt(() => rt.hibernate!(h)));
      imageBytes = Number(execFileSync('du', ['-sb', join(docker('info', '-f', '{{.DockerRootDir}}'), 'containers', containerOf(h), 'checkpoints')], { encoding: 'utf8' }).split('\t')[0]);
      wake.push(await timeIt(async () => {
        await rt.wake!(h);
        await run(h, 'true');
      }));
    }
    await rt.hibernate!(h);
    const hibernated = (await rt.stats(h)).memoryBytes;
    await rt.wake!(h);
    await rt.destroy(h);
    // The same on a container of agentbox's busybox image with no agentbox parts: the Engine's own cost.
    const raw = `agentbox-bench-raw-${process.pid}-${mb}`;
    docker('run', '-d', '--name', raw, '--runtime', 'runsc', '--network', 'none', '--memory', `${limits.memoryMb}m`, rawImage, 'sh', '-c', `dd if=/dev/urandom of=/dev/shm/held bs=1M count=${mb} 2>/dev/null; exec sleep 100000`);
    const rawCp: number[] = [];
    const rawRs: number[] = [];
    try {
      await new Promise((r) => setTimeout(r, 1000));
      for (let i = 0; i < REPEAT; i++) {
        rawCp.push(await timeIt(() => docker('checkpoint', 'create', raw, `c${i}`)));
        // runsc's stale record after a restored container's checkpoint (see hibernation.ts), cleared as agentbox does (not timed).
        try {
          execFileSync('runsc', ['--root', '/run/docker/runtime-runc/moby', 'delete', '--force', docker('inspect', '-f', '{{.Id}}', raw)], { stdio: 'ignore' });
        } catch {
          /* it panics after clearing the record, or there was none */
        }
        rawRs.push(await timeIt(() => {
          docker('start', '--checkpoint', `c${i}`, raw);
          docker('exec', raw, 'true');
        }));
        docker('checkpoint', 'rm', raw, `c${i}`);
      }
    } finally {
      docker('rm', '-f', raw);
    }
    console.log(`| ${mb} MB | ${ms(hib)} | ${ms(wake)} | ${ms(rawCp)} | ${ms(rawRs)} (+ exec) | ${(imageBytes / 2 ** 20).toFixed(1)} MB | ${(running / 2 ** 20).toFixed(0)} MB → ${(hibernated / 2 ** 20).toFixed(0)} MB |`);
  }

  console.log(`\n### Fork with memory (ms, p50 / p95 of ${REPEAT}; parent holding 48 MB in /dev/shm and a running process)\n`);
  const parent = await create();
  await run(parent, 'dd if=/dev/urandom of=/dev/shm/held bs=1M count=48 2>/dev/null; sleep 1000 >/dev/null 2>&1 & true');
  const parts = { hibernate: [] as number[], clone: [] as number[], copy: [] as number[], wake: [] as number[], child: [] as number[], cold: [] as number[] };
  for (let i = 0; i < REPEAT; i++) {
    parts.hibernate.push(await timeIt(() => rt.hibernate!(parent)));
    let disk = '';
    let image = '';
    parts.clone.push(await timeIt(async () => (disk = await disks.cloneToScratch(parent.id))));
    parts.copy.push(await timeIt(async () => (image = await rt.copyMemory!(parent))));
    parts.wake.push(await timeIt(() => rt.wake!(parent)));
    let child: SandboxHandle | undefined;
    parts.child.push(await timeIt(async () => {
      child = await create(image, disk);
      await run(child, 'true');
    }));
    await rt.destroy(child!);
    await disks.dropScratch(disk);
    await rt.dropMemory!(image);
    let cold: SandboxHandle | undefined;
    parts.cold.push(await timeIt(async () => {
      cold = await create();
      await run(cold, 'true');
    }));
    await rt.destroy(cold!);
  }
  await rt.destroy(parent);
  const stopped = parts.hibernate.map((v, i) => v + parts.clone[i]! + parts.copy[i]! + parts.wake[i]!);
  console.log('| part | ms |\n|---|---|');
  console.log(`| parent hibernated (checkpoint) | ${ms(parts.hibernate)} |`);
  console.log(`| its disk cloned (reflink) | ${ms(parts.clone)} |`);
  console.log(`| its memory image copied | ${ms(parts.copy)} |`);
  console.log(`| parent woken | ${ms(parts.wake)} |`);
  console.log(`| **parent stopped, in all** | ${ms(stopped)} |`);
  console.log(`| a child started from the image, to its first exec | ${ms(parts.child)} |`);
  console.log(`| baseline: a cold create of the same sandbox, to its first exec | ${ms(parts.cold)} |`);
  await rt.close();
  rmSync(agentDir, { recursive: true, force: true });
}

await main();
