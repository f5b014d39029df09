/**
 * What OpenTelemetry tracing costs an exec (issue 19): the same 300 execs of `true` through the API
 * (agentbox SDK over loopback TCP) on a daemon exporting spans over OTLP/HTTP to a receiver on
 * loopback, and on one with tracing off (the baseline), in the same run, local runtime, busybox.
 * Usage: npm run bench:tracing  (BENCH_N: execs per daemon, default 300)
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { startDaemon, type Daemon } from '../src/daemon/compose.js';
import { silentLogger } from '../src/observability/logger.js';
import { AgentboxClient } from '../src/sdk/client.js';
import { pct } from './stats.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const N = Number(process.env.BENCH_N ?? 300);
const TOKEN = 'bench-tracing-token-0123456789';

let exported = 0;
const receiver = createServer((req, res) => {
  let n = 0;
  req.on('data', (c: Buffer) => (n += c.length));
  req.on('end', () => {
    exported += n;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
  });
});
await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
const otlp = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;

async function run(traced: boolean): Promise<number[]> {
  const home = mkdtempSync(join(tmpdir(), 'agentbox-bench-otel-'));
  writeFileSync(join(home, 'policy.yaml'), `version: 1\ndefaults:\n  image: busybox\n  limits: { memoryMb: 128, pids: 64, diskMb: 16 }\ntenants:\n  - name: bench\n    tokens: [${TOKEN}]\n`);
  const daemon: Daemon = await startDaemon({
    env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: IMAGES, ...(traced ? { OTEL_EXPORTER_OTLP_ENDPOINT: otlp } : {}) },
    logger: silentLogger(),
    policyPath: join(home, 'policy.yaml'),
    socket: join(home, 'agentbox.sock'),
    tcp: { host: '127.0.0.1', port: 0 },
  });
  const client = new AgentboxClient({ url: `http://127.0.0.1:${daemon.tcpAddress!.port}`, token: TOKEN });
  const sbx = await client.create();
  for (let i = 0; i < 20; i++) await client.exec(sbx.id, { cmd: ['true'] });
  const ms: number[] = [];
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    await client.exec(sbx.id, { cmd: ['true'] });
    ms.push(performance.now() - t0);
  }
  await client.delete(sbx.id);
  await daemon.close();
  rmSync(home, { recursive: true, force: true });
  return ms;
}

// Alternate, so drift of the machine falls on both.
const off: number[] = [];
const on: number[] = [];
for (let round = 0; round < 2; round++) {
  off.push(...(await run(false)));
  on.push(...(await run(true)));
}
receiver.close();
const row = (what: string, xs: number[], base: number[]): string => `| ${what} | ${pct(xs, 50).toFixed(2)} | ${pct(xs, 99).toFixed(2)} | ${(pct(xs, 50) / pct(base, 50)).toFixed(2)}× |`;
console.log(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ${new Date().toISOString().slice(0, 10)}; ${2 * N} execs of \`true\` per row, local runtime, busybox, SDK over loopback TCP`);
console.log('\n| exec of `true` through the API | p50 (ms) | p99 (ms) | vs baseline |\n|---|---|---|---|');
console.log(row('tracing off (baseline)', off, off));
console.log(row('tracing on: spans exported over OTLP/HTTP to a receiver on loopback', on, off));
console.log(`\n${(exported / 1024).toFixed(0)} KiB of OTLP JSON exported (${(exported / on.length).toFixed(0)} bytes per exec: its request span and exec span)`);
