/**
 * Issue 18's numbers, each beside its baseline in the same run, on the local runtime:
 *  - create → first command result through the unmodified e2b SDK vs agentbox's own SDK, cold and
 *    from a warm pool (p50/p99);
 *  - a terminal's keystroke echo through the daemon (WebSocket) vs the runtime's openPty directly;
 *  - bytes through a sandbox's port (daemon upgrade route, and the runtime's openPort) vs a plain
 *    loopback connection on the host.
 * Usage: npm run bench:e2b  (BENCH_N: samples per create series, default 12)
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { startDaemon, type Daemon } from '../src/daemon/compose.js';
import { silentLogger } from '../src/observability/logger.js';
import { AgentboxClient } from '../src/sdk/client.js';
import { pct } from './stats.js';
import { handleOf } from '../src/core/manager/runtimes.js';

const IMAGES = process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images';
const N = Number(process.env.BENCH_N ?? 12);
const TOKEN = 'bench-e2b-token-0123456789abcdef';

async function daemonWith(policy: string): Promise<{ daemon: Daemon; home: string; url: string }> {
  const home = mkdtempSync(join(tmpdir(), 'agentbox-bench-e2b-'));
  writeFileSync(join(home, 'policy.yaml'), policy);
  const daemon = await startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: IMAGES }, logger: silentLogger(), policyPath: join(home, 'policy.yaml'), socket: join(home, 'agentbox.sock'), tcp: { host: '127.0.0.1', port: 0 } });
  return { daemon, home, url: `http://127.0.0.1:${daemon.tcpAddress!.port}` };
}

const policyOf = (pool: number): string => `version: 1
defaults:
  image: debian
  limits: { memoryMb: 256, pids: 128, diskMb: 64 }
  ttl: 1h
tenants:
  - name: bench
    tokens: [${TOKEN}]
${pool > 0 ? `pools:\n  - { image: debian, size: ${pool} }\n` : ''}`;

async function createSeries(url: string, warm: Daemon | undefined): Promise<{ e2b: number[]; own: number[] }> {
  process.env.E2B_API_URL = `${url}/e2b`;
  process.env.E2B_SANDBOX_URL = `${url}/e2b/envd`;
  process.env.E2B_API_KEY = TOKEN;
  const { Sandbox } = await import('e2b');
  const client = new AgentboxClient({ url, token: TOKEN });
  const e2b: number[] = [];
  const own: number[] = [];
  for (let i = 0; i < N; i++) {
    if (warm) await warm.manager.poolsFull();
    let t0 = performance.now();
    const sbx = await Sandbox.create();
    const r = await sbx.commands.run('echo hi');
    e2b.push(performance.now() - t0);
    if (r.stdout !== 'hi\n') throw new Error(`e2b: ${JSON.stringify(r.stdout)}`);
    await sbx.kill();
    if (warm) await warm.manager.poolsFull();
    t0 = performance.now();
    const sb = await client.create({ image: 'debian' });
    const o = await client.exec(sb.id, { cmd: ['sh', '-c', 'echo hi'] });
    own.push(performance.now() - t0);
    if (o.stdout !== 'hi\n') throw new Error(`own: ${JSON.stringify(o.stdout)}`);
    await client.delete(sb.id);
  }
  return { e2b, own };
}

/** Milliseconds from a typed byte to its echo, over WRITE/ON of a terminal running `cat`. */
async function echoLatency(write: (b: Buffer) => void, onData: (fn: (b: Buffer) => void) => void, samples = 200): Promise<number[]> {
  let waiting: ((b: Buffer) => void) | undefined;
  onData((b) => waiting?.(b));
  const out: number[] = [];
  await new Promise((r) => setTimeout(r, 300));
  for (let i = 0; i < samples; i++) {
    const ch = String.fromCharCode(97 + (i % 26));
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      waiting = (b) => {
        if (b.toString().includes(ch)) resolve();
      };
      write(Buffer.from(ch));
    });
    out.push(performance.now() - t0);
  }
  return out;
}

/** MB/s of BYTES written through CONN to a server that discards them, until it has read them all (it closes then). */
async function throughput(conn: Duplex | Socket, bytes: number): Promise<number> {
  const chunk = Buffer.alloc(256 * 1024, 7);
  const t0 = performance.now();
  const done = new Promise<void>((resolve, reject) => {
    conn.on('data', () => undefined);
    conn.once('end', () => resolve());
    conn.once('close', () => resolve());
    conn.once('error', reject);
  });
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    if (!conn.write(chunk)) await new Promise((r) => conn.once('drain', r));
  }
  conn.end();
  await done;
  return bytes / 2 ** 20 / ((performance.now() - t0) / 1000);
}

const rows: string[] = [];
// 1. Create → first result, cold.
{
  const { daemon, home, url } = await daemonWith(policyOf(0));
  await daemon.images.ensure('debian', {});
  const cold = await createSeries(url, undefined);
  rows.push(`| create → first result, cold: e2b SDK | ${pct(cold.e2b, 50).toFixed(0)} | ${pct(cold.e2b, 99).toFixed(0)} | ${(pct(cold.e2b, 50) / pct(cold.own, 50)).toFixed(2)}× |`);
  rows.push(`| create → first result, cold: agentbox SDK | ${pct(cold.own, 50).toFixed(0)} | ${pct(cold.own, 99).toFixed(0)} | 1× |`);

  // 2. Terminal echo, and 3. port throughput, on one sandbox of this daemon.
  const client = new AgentboxClient({ url, token: TOKEN });
  const sb = await client.create({ image: 'debian' });
  const t = await client.openTerminal(sb.id, { cmd: ['cat'], cols: 80, rows: 24 });
  const conn = await client.attachTerminal(sb.id, t.terminalId);
  const viaDaemon = await echoLatency((b) => conn.write(b), (fn) => conn.on('data', fn));
  conn.close();
  await client.closeTerminal(sb.id, t.terminalId);
  const rt = await daemon.manager.runtime('local');
  const handle = handleOf(daemon.store.getSandbox(sb.id)!);
  const pty = await rt.openPty!(handle, { cmd: ['cat'], cols: 80, rows: 24, env: {}, execId: 'exe_bench' });
  const direct = await echoLatency((b) => pty.write(b), (fn) => pty.output.on('data', fn));
  pty.destroy();
  rows.push(`| terminal keystroke echo: daemon WebSocket | ${pct(viaDaemon, 50).toFixed(2)} | ${pct(viaDaemon, 99).toFixed(2)} | ${(pct(viaDaemon, 50) / pct(direct, 50)).toFixed(2)}× |`);
  rows.push(`| terminal keystroke echo: runtime openPty | ${pct(direct, 50).toFixed(2)} | ${pct(direct, 99).toFixed(2)} | 1× |`);

  const BYTES = 256 * 2 ** 20;
  const sink = async (): Promise<void> => {
    // One connection, read to its end; the count written to /tmp/sink.count (checked after each run).
    const r = await client.exec(sb.id, { cmd: ['sh', '-c', "rm -f /tmp/sink.count; (python3 -c 'import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\",7000)); s.listen(1)\nc,_=s.accept()\nn=0\nwhile True:\n  b=c.recv(1<<20)\n  if not b: break\n  n+=len(b)\nopen(\"/tmp/sink.count\",\"w\").write(str(n))\nc.close()' >/dev/null 2>&1 &); for i in $(seq 50); do grep -q ':1B58 00000000:0000 0A' /proc/net/tcp && break; sleep 0.1; done"] });
    if (r.exitCode !== 0) throw new Error(r.stderr);
  };
  const sunk = async (): Promise<void> => {
    let n = '';
    for (let i = 0; i < 50 && !n; i++) {
      n = (await client.exec(sb.id, { cmd: ['sh', '-c', 'cat /tmp/sink.count 2>/dev/null || true'] })).stdout.trim();
      if (!n) await new Promise((r) => setTimeout(r, 100));
    }
    if (Number(n) !== BYTES) throw new Error(`the server inside read ${n || 'nothing'} bytes, not ${BYTES}`);
  };
  await sink();
  const viaApi = await throughput(await client.openPort(sb.id, 7000), BYTES);
  await sunk();
  await sink();
  const viaRuntime = await throughput(await rt.openPort!(handle, 7000), BYTES);
  await sunk();
  // The baseline: the same python server on the host's loopback, no sandbox and no daemon between.
  const hostSink = spawn('python3', ['-c', 'import socket,sys\ns=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(1)\nprint(s.getsockname()[1], flush=True)\nc,_=s.accept()\nn=0\nwhile True:\n  b=c.recv(1<<20)\n  if not b: break\n  n+=len(b)\nprint(n, flush=True)'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: hostSink.stdout! })[Symbol.asyncIterator]();
  const hostPort = Number((await lines.next()).value);
  const plain = connect(hostPort, '127.0.0.1');
  await new Promise((r) => plain.once('connect', r));
  const viaLoopback = await throughput(plain, BYTES);
  if (Number((await lines.next()).value) !== BYTES) throw new Error('the host server read less than was sent');
  rows.push(`| port, 256 MiB upload: daemon (Upgrade: tcp) | ${viaApi.toFixed(0)} MB/s | | ${(viaApi / viaLoopback).toFixed(2)}× |`);
  rows.push(`| port, 256 MiB upload: runtime openPort | ${viaRuntime.toFixed(0)} MB/s | | ${(viaRuntime / viaLoopback).toFixed(2)}× |`);
  rows.push(`| port, 256 MiB upload: host loopback to the same server, no sandbox | ${viaLoopback.toFixed(0)} MB/s | | 1× |`);
  await client.delete(sb.id);
  await daemon.close();
  rmSync(home, { recursive: true, force: true });
}
// 1b. Create → first result from a warm pool.
{
  const { daemon, home, url } = await daemonWith(policyOf(2));
  const warm = await createSeries(url, daemon);
  rows.push(`| create → first result, warm pool: e2b SDK | ${pct(warm.e2b, 50).toFixed(0)} | ${pct(warm.e2b, 99).toFixed(0)} | ${(pct(warm.e2b, 50) / pct(warm.own, 50)).toFixed(2)}× |`);
  rows.push(`| create → first result, warm pool: agentbox SDK | ${pct(warm.own, 50).toFixed(0)} | ${pct(warm.own, 99).toFixed(0)} | 1× |`);
  for (const sb of daemon.store.listSandboxes({ states: ['running'] })) await daemon.manager.delete(sb.sandbox.id, { tenant: sb.sandbox.tenant, actor: 'bench' }).catch(() => undefined);
  await daemon.close();
  rmSync(home, { recursive: true, force: true });
}
console.log(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ${new Date().toISOString().slice(0, 10)}; local runtime, debian image; n=${N} per create series, 200 keystrokes`);
console.log('\n| measure | p50 (ms) | p99 (ms) | vs baseline |\n|---|---|---|---|');
for (const row of rows) console.log(row);
process.exit(0);
