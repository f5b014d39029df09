/**
 * API benchmark: SSE throughput of a 200 MB stdout stream (through HTTP vs the runtime directly,
 * same run) and 50 clients executing concurrently (errors, latency percentiles).
 * Usage: npm run bench:api
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from '../src/daemon/compose.js';
import { helperPath } from '../src/core/config.js';
import { ImageStore } from '../src/images/image-store.js';
import { silentLogger } from '../src/observability/logger.js';
import { LocalRuntime } from '../src/runtime/local/local-runtime.js';
import { AgentboxClient } from '../src/sdk/client.js';
import { pct } from './stats.js';
import { scratchDiskStore } from '../src/storage/scratch-store.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const MB = 200;
const CLIENTS = 50;
const PER_CLIENT = 20;

async function main(): Promise<void> {
  const images = new ImageStore(IMAGES);
  await images.ensure('busybox', {});
  const home = mkdtempSync(join(tmpdir(), 'agentbox-bench-api-'));
  const policyPath = join(home, 'policy.yaml');
  writeFileSync(policyPath, `version: 1\ndefaults:\n  outputLimitBytes: ${(MB + 10) * 1024 * 1024}\n  limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 16 }\n`);
  const daemon = await startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: IMAGES }, logger: silentLogger(), policyPath, socket: null, tcp: { host: '127.0.0.1', port: 0 }, maxConcurrentCreates: 8, createQueueLength: 64 });
  const client = new AgentboxClient({ url: `http://127.0.0.1:${daemon.tcpAddress!.port}` });
  const cmd = ['sh', '-c', `head -c ${MB * 1024 * 1024} /dev/zero`];

  // 50 clients, each with its own sandbox, executing concurrently
  const boxes = await Promise.all(Array.from({ length: CLIENTS }, () => client.create()));
  const latencies: number[] = [];
  let errors = 0;
  let t0 = performance.now();
  await Promise.all(
    boxes.map(async (b) => {
      const c = new AgentboxClient({ url: `http://127.0.0.1:${daemon.tcpAddress!.port}` });
      for (let i = 0; i < PER_CLIENT; i++) {
        const s = performance.now();
        try {
          const r = await c.exec(b.id, { cmd: ['true'] });
          if (r.exitCode !== 0) errors++;
        } catch {
          errors++;
        }
        latencies.push(performance.now() - s);
      }
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  for (const b of boxes) await client.delete(b.id);
  // SSE throughput through the API
  const sb = await client.create();
  let bytes = 0;
  t0 = performance.now();
  for await (const ev of client.execStream(sb.id, { cmd })) if (ev.type === 'stdout') bytes += ev.data.length;
  const apiSec = (performance.now() - t0) / 1000;
  await client.delete(sb.id);

  // The same stream from the runtime directly (no HTTP, no base64)
  const rt = new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/bench-api-${process.pid}`, resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() });
  const h = await rt.create({ id: 'sbx_benchsse', image: 'busybox', isolation: 'namespaces', limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 16 }, labels: {} });
  let directBytes = 0;
  t0 = performance.now();
  for await (const ev of rt.exec(h, cmd, { env: {}, timeoutMs: 120_000, outputLimitBytes: (MB + 10) * 1024 * 1024, execId: 'exe_benchsse' })) if (ev.type === 'stdout') directBytes += ev.data.length;
  const directSec = (performance.now() - t0) / 1000;
  await rt.destroy(h);
  await rt.close();

  await daemon.close();
  rmSync(home, { recursive: true, force: true });

  console.log(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ${new Date().toISOString().slice(0, 10)}`);
  console.log(`\n| stream of ${MB} MB stdout | MB/s | seconds |\n|---|---|---|`);
  console.log(`| runtime directly | ${(directBytes / 2 ** 20 / directSec).toFixed(0)} | ${directSec.toFixed(2)} |`);
  console.log(`| HTTP SSE (base64 events) | ${(bytes / 2 ** 20 / apiSec).toFixed(0)} | ${apiSec.toFixed(2)} |`);
  console.log(`\n${CLIENTS} clients × ${PER_CLIENT} execs of \`true\`: errors ${errors}, p50 ${pct(latencies, 50).toFixed(1)} ms, p95 ${pct(latencies, 95).toFixed(1)} ms, p99 ${pct(latencies, 99).toFixed(1)} ms, ${(latencies.length / wall).toFixed(0)} execs/s`);
  if (bytes !== MB * 1024 * 1024 || directBytes !== bytes) console.log(`WARNING: byte counts differ: api ${bytes}, direct ${directBytes}`);
}

await main();
