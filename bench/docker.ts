/**
 * Docker runtime benchmark, side by side with raw Engine API calls in the same run (runc and runsc):
 *  - cold create + first exec `true`, vs raw create + start + exec `true` of the same image
 *    (no hardening, no init), both ending when the exec's exit code is known
 *  - exec round trip of `true` in a running sandbox, vs a raw exec create + start + inspect, by the
 *    daemon's path (runc: direct entry; gVisor: the exec agent) and by Engine execs
 * Usage: npm run build && node dist/bench/docker.js   (prints a Markdown table)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { VERSION, helperPath } from '../src/core/config.js';
import { ImageStore } from '../src/images/image-store.js';
import type { Isolation } from '../src/contract/model.js';
import { DockerRuntime } from '../src/runtime/docker/docker-runtime.js';
import { imageRef } from '../src/runtime/docker/images.js';
import type { SandboxHandle } from '../src/runtime/types.js';
import { pct } from './stats.js';
import { scratchDiskStore } from '../src/storage/scratch-store.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const N_CREATE = Number(process.env.BENCH_N_CREATE ?? 10);
const N_EXEC = Number(process.env.BENCH_N ?? 50);
const LIMITS = { cpus: 1, memoryMb: 256, pids: 128, diskMb: 64 };

function row(name: string, values: number[], baseline?: number[]): string {
  const ratio = baseline ? `${(pct(values, 50) / pct(baseline, 50)).toFixed(2)}×` : '1×';
  return `| ${name} | ${pct(values, 50).toFixed(1)} | ${pct(values, 95).toFixed(1)} | ${ratio} |`;
}

async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function drain(it: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of it) void _;
}

/** A raw `docker exec true`: create, start (hijacked, output drained), inspect until it has exited. */
async function rawExec(c: Docker.Container): Promise<void> {
  const ex = await c.exec({ Cmd: ['true'], AttachStdout: true, AttachStderr: true });
  const sock = await ex.start({ hijack: true, stdin: false });
  await new Promise<void>((resolve) => {
    sock.on('close', () => resolve());
    sock.resume();
  });
  for (;;) {
    const info = await ex.inspect();
    if (!info.Running) return;
  }
}

async function main(): Promise<void> {
  const docker = new Docker();
  const store = new ImageStore(IMAGES);
  // As the daemon runs it (runc entered directly through the helper, gVisor through its exec agent),
  // and an Engine-only driver beside it.
  const agentDir = mkdtempSync(join(tmpdir(), 'ab-bench-agents-'));
  const rt = new DockerRuntime({ disks: scratchDiskStore(), images: store, homeTag: `bench-${process.pid}`, version: VERSION, helper: helperPath(), agentDir });
  const engineOnly = new DockerRuntime({ disks: scratchDiskStore(), images: store, homeTag: `bench-${process.pid}`, version: VERSION });
  const probe = await rt.probe();
  if (!probe.ok) throw new Error(`${probe.reason} (${probe.hint})`);
  await rt.prepareImage('busybox');
  const ref = imageRef(store.resolve('busybox').info);
  const isolations: Isolation[] = (probe.details?.runtimes ?? '').includes('runsc') ? ['container', 'gvisor'] : ['container'];
  const lines: string[] = [];
  let n = 0;

  for (const isolation of isolations) {
    const runtime = isolation === 'gvisor' ? 'runsc' : 'runc';
    const rawCreate: number[] = [];
    const abCreate: number[] = [];
    for (let i = 0; i < N_CREATE; i++) {
      let raw: Docker.Container | undefined;
      rawCreate.push(await timeIt(async () => {
        raw = await docker.createContainer({ Image: ref, Cmd: ['sleep', '3600'], HostConfig: { NetworkMode: 'none', Runtime: runtime }, Labels: { 'agentbox.bench': '1' } });
        await raw.start();
        await rawExec(raw);
      }));
      await raw?.remove({ force: true });
      let h: SandboxHandle | undefined;
      abCreate.push(await timeIt(async () => {
        h = await rt.create({ id: `sbx_bench${process.pid}x${++n}`, image: 'busybox', isolation, limits: LIMITS, labels: {} });
        await drain(rt.exec(h, ['true'], { env: {}, timeoutMs: 10_000, outputLimitBytes: 1 << 20, execId: `exe_b${n}` }));
      }));
      if (h) await rt.destroy(h);
    }

    const raw = await docker.createContainer({ Image: ref, Cmd: ['sleep', '3600'], HostConfig: { NetworkMode: 'none', Runtime: runtime }, Labels: { 'agentbox.bench': '1' } });
    await raw.start();
    const h = await rt.create({ id: `sbx_bench${process.pid}x${++n}`, image: 'busybox', isolation, limits: LIMITS, labels: {} });
    const rawExecs: number[] = [];
    const abExecs: number[] = [];
    const engineExecs: number[] = [];
    const opts = (i: number, tag: string) => ({ env: {}, timeoutMs: 10_000, outputLimitBytes: 1 << 20, execId: `exe_b${n}_${tag}${i}` });
    // In blocks, not interleaved: dockerd keeps working for a while after each Engine exec, which
    // would otherwise be billed to whatever runs next.
    for (let i = 0; i < N_EXEC; i++) rawExecs.push(await timeIt(() => rawExec(raw)));
    for (let i = 0; i < N_EXEC; i++) engineExecs.push(await timeIt(() => drain(engineOnly.exec(h, ['true'], opts(i, 'e')))));
    await new Promise((r) => setTimeout(r, 1000));
    for (let i = 0; i < N_EXEC; i++) abExecs.push(await timeIt(() => drain(rt.exec(h, ['true'], opts(i, 'd')))));
    await raw.remove({ force: true });
    await rt.destroy(h);

    lines.push(
      row(`raw Engine API create + start + exec \`true\` (${runtime})`, rawCreate),
      row(`agentbox create + first exec \`true\` (${runtime}, hardened)`, abCreate, rawCreate),
      row(`raw Engine API exec \`true\` (${runtime})`, rawExecs),
      row(`agentbox exec \`true\` (${runtime}, ${runtime === 'runc' ? 'direct entry' : 'exec agent'})`, abExecs, rawExecs),
      row(`agentbox exec \`true\` (${runtime}, Engine exec)`, engineExecs, rawExecs),
    );
  }
  await rt.close();
  await engineOnly.close();
  rmSync(agentDir, { recursive: true, force: true });
  console.log(`docker runtime, n=${N_CREATE} creates / ${N_EXEC} execs, ${new Date().toISOString().slice(0, 10)}\n`);
  console.log('| measurement (ms) | p50 | p95 | vs raw p50 |\n|---|---|---|---|');
  for (const l of lines) console.log(l);
}

await main();
