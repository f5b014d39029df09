/**
 * Local runtime benchmark, side by side with the raw baseline in the same run:
 *  - create (until an exec can enter) + first exec, vs a one-shot `bwrap ... true`
 *  - exec round trip of `true`: runtime directly, through the HTTP API, vs one-shot bwrap
 *  - 50 idle sandboxes: time to create, host memory per sandbox
 * Usage: npm run bench   (prints a Markdown table for BENCHMARKS.md)
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from '../src/daemon/compose.js';
import { helperPath } from '../src/core/config.js';
import { ImageStore } from '../src/images/image-store.js';
import { silentLogger } from '../src/observability/logger.js';
import { LocalRuntime } from '../src/runtime/local/local-runtime.js';
import type { SandboxHandle } from '../src/runtime/types.js';
import { AgentboxClient } from '../src/sdk/client.js';
import { pct } from './stats.js';
import { scratchDiskStore } from '../src/storage/scratch-store.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const N = Number(process.env.BENCH_N ?? 100);

function row(name: string, values: number[], baseline?: number[]): string {
  const p50 = pct(values, 50);
  const ratio = baseline ? ` ${(p50 / pct(baseline, 50)).toFixed(2)}×` : '';
  return `| ${name} | ${p50.toFixed(1)} | ${pct(values, 95).toFixed(1)} | ${pct(values, 99).toFixed(1)} |${ratio} |`;
}

async function timeIt(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function drain(it: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of it) void _;
}

function rssOfTree(): number {
  const out = spawnSync('ps', ['-eo', 'rss=,comm='], { encoding: 'utf8' }).stdout;
  return out.split('\n').filter((l) => /\b(bwrap|init|agentbox-helper)\b/.test(l)).reduce((sum, l) => sum + Number(l.trim().split(/\s+/)[0] ?? 0), 0);
}

async function main(): Promise<void> {
  const images = new ImageStore(IMAGES);
  await images.ensure('busybox', {});
  const rootfs = images.resolve('busybox').rootfs;
  const rt = new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/bench-${process.pid}`, resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() });
  const limits = { cpus: 1, memoryMb: 256, pids: 128, diskMb: 64 };
  let n = 0;
  const exec = (h: SandboxHandle): Promise<void> => drain(rt.exec(h, ['true'], { env: {}, timeoutMs: 10_000, outputLimitBytes: 1 << 20, execId: `exe_b${n++}` }));

  // Raw baseline: one-shot bwrap with the same namespaces, the image bound read-only.
  const bwrap = (): void => {
    spawnSync('bwrap', ['--unshare-all', '--ro-bind', rootfs, '/', '--proc', '/proc', '--dev', '/dev', '--die-with-parent', '/bin/true']);
  };
  const rawBwrap: number[] = [];
  for (let i = 0; i < N; i++) rawBwrap.push(await timeIt(bwrap));

  const createFirst: number[] = [];
  const handles: SandboxHandle[] = [];
  for (let i = 0; i < Math.min(N, 40); i++) {
    createFirst.push(
      await timeIt(async () => {
        const h = await rt.create({ id: `sbx_bench${i}`, image: 'busybox', isolation: 'namespaces', limits, labels: {} });
        handles.push(h);
        await exec(h);
      }),
    );
  }
  for (const h of handles.splice(0)) await rt.destroy(h);

  const h = await rt.create({ id: 'sbx_benchexec', image: 'busybox', isolation: 'namespaces', limits, labels: {} });
  const direct: number[] = [];
  for (let i = 0; i < N; i++) direct.push(await timeIt(() => exec(h)));
  await rt.destroy(h);

  const home = mkdtempSync(join(tmpdir(), 'agentbox-bench-'));
  const daemon = await startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: IMAGES }, logger: silentLogger(), socket: null, tcp: { host: '127.0.0.1', port: 0 } });
  const client = new AgentboxClient({ url: `http://127.0.0.1:${daemon.tcpAddress!.port}` });
  const sb = await client.create();
  const api: number[] = [];
  for (let i = 0; i < N; i++) api.push(await timeIt(() => client.exec(sb.id, { cmd: ['true'] })));
  await client.delete(sb.id);

  const before = rssOfTree();
  const many: SandboxHandle[] = [];
  const t0 = performance.now();
  await Promise.all(Array.from({ length: 50 }, async (_, i) => many.push(await rt.create({ id: `sbx_many${i}`, image: 'busybox', isolation: 'namespaces', limits, labels: {} }))));
  const allReady = performance.now() - t0;
  const perSandboxKiB = (rssOfTree() - before) / 50;
  for (const m of many) await rt.destroy(m);
  await daemon.close();
  await rt.close();
  rmSync(home, { recursive: true, force: true });

  console.log(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ${new Date().toISOString().slice(0, 10)}; n=${N}`);
  console.log('\n| measurement (ms) | p50 | p95 | p99 | vs raw |\n|---|---|---|---|---|');
  console.log(row('raw one-shot `bwrap --unshare-all ... true`', rawBwrap));
  console.log(row('create + first exec (local)', createFirst, rawBwrap));
  console.log(row('exec `true`, runtime directly', direct, rawBwrap));
  console.log(row('exec `true` through HTTP API', api, rawBwrap));
  console.log(`\nAPI overhead p50: ${(pct(api, 50) - pct(direct, 50)).toFixed(1)} ms. 50 concurrent creates: all ready in ${allReady.toFixed(0)} ms, ~${(perSandboxKiB / 1024).toFixed(2)} MiB RSS per idle sandbox (bwrap + init).`);
}

await main();
