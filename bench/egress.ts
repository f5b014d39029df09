/**
 * Egress proxy overhead, side by side with direct connections in the same run, against a fake
 * internet in a network namespace (HTTPS with a throwaway CA, over a veth pair):
 *  A. the proxy alone: a Node client on the host, direct TLS vs CONNECT through the proxy's socket
 *     - connection setup + one small GET, sequential (p50/p95)
 *     - HTTPS download throughput
 *  B. the whole path from inside a local sandbox (python3 -> PID 1's relay -> proxy), vs the same
 *     python3 script on the host connecting directly
 * Usage: npm run build && node dist/bench/egress.js   (needs root, the debian test image; prints Markdown)
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import { helperPath } from '../src/core/config.js';
import { SandboxManager, type Caller } from '../src/core/manager.js';
import { systemResolver } from '../src/egress/resolver.js';
import { EgressService } from '../src/egress/service.js';
import { ImageStore } from '../src/images/image-store.js';
import { silentLogger } from '../src/observability/logger.js';
import { parsePolicyText } from '../src/policy/load.js';
import { EGRESS_SOCKET } from '../src/runtime/egress-plumbing.js';
import { LocalRuntime } from '../src/runtime/local/local-runtime.js';
import { Store } from '../src/store/store.js';
import { scratchDiskStore } from '../src/storage/scratch-store.js';
import { startFakeInternet, type FakeInternet } from '../test/helpers/fake-internet.js';
import { pct } from './stats.js';

const N_SETUP = Number(process.env.BENCH_N ?? 100);
const DOWNLOAD = Number(process.env.BENCH_BYTES ?? 256 * 1024 * 1024);
const RUNS = 3;
const HOST = 'site.fake.test';
const caller: Caller = { tenant: 'default', actor: 'bench' };

const median = (v: number[]): number => pct(v, 50);

/** One TLS connection: handshake, GET path, read to the end; resolves with the body length. */
function httpsGet(socket: Socket | undefined, net: FakeInternet, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const opts = { servername: HOST, ca: net.caPem };
    const tls: TLSSocket = socket ? tlsConnect({ ...opts, socket }) : tlsConnect({ ...opts, host: net.siteAddress, port: net.httpsPort });
    tls.once('secureConnect', () => tls.write(`GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`));
    let n = 0;
    tls.on('data', (c: Buffer) => (n += c.length));
    tls.on('end', () => resolve(n));
    tls.on('error', reject);
  });
}

function connectVia(sock: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: sock, method: 'CONNECT', path: `${HOST}:443` });
    req.on('connect', (res: IncomingMessage, socket: Socket) => (res.statusCode === 200 ? resolve(socket) : reject(new Error(`CONNECT ${res.statusCode}`))));
    req.on('error', reject);
    req.end();
  });
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

const PY = String.raw`
import json, ssl, sys, time, urllib.request
base, n, size, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
op = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
setup = []
for _ in range(n):
    t = time.perf_counter(); op.open(base + '/index.txt', timeout=10).read(); setup.append((time.perf_counter() - t) * 1000)
rates = []
for _ in range(3):
    t = time.perf_counter(); r = op.open(base + '/bytes?n=%d' % size, timeout=120); got = 0
    while True:
        b = r.read(1 << 20)
        if not b: break
        got += len(b)
    rates.append(got / (time.perf_counter() - t) / 1e6)
print(json.dumps({'setup': setup, 'rates': rates}))
`;

interface PyResult {
  setup: number[];
  rates: number[];
}

async function main(): Promise<void> {
  const net = await startFakeInternet();
  const dir = mkdtempSync(join(tmpdir(), 'ab-bench-egress-'));
  const store = Store.open(join(dir, 'db.sqlite'));
  const parsed = parsePolicyText(`version: 1\ndefaults: { image: debian }\negress: { byteQuotaMb: 1048576 }\n`, 'bench.yaml');
  if (parsed.kind !== 'ok') throw new Error('bad bench policy');
  const egress = new EgressService({
    home: dir,
    policy: parsed.policy.egress,
    resolve: systemResolver({ overrides: new Map([[HOST, [net.siteAddress]]]) }),
    log: store.egress,
    logger: silentLogger(),
  });
  const rows: string[] = [];
  try {
    // A. the proxy alone
    await egress.open({ id: 'sbx_bench', tenant: 'default', egress: { mode: 'allowlist', allow: [HOST] } });
    const sock = join(egress.dirFor('sbx_bench'), EGRESS_SOCKET);
    const direct: number[] = [];
    const proxied: number[] = [];
    for (let i = 0; i < N_SETUP; i++) {
      direct.push(await timed(() => httpsGet(undefined, net, '/index.txt')));
      proxied.push(await timed(async () => httpsGet(await connectVia(sock), net, '/index.txt')));
    }
    rows.push(`| A. host client: HTTPS connect + GET, p50 / p95 (ms) | ${median(direct).toFixed(2)} / ${pct(direct, 95).toFixed(2)} | ${median(proxied).toFixed(2)} / ${pct(proxied, 95).toFixed(2)} | ${(median(proxied) / median(direct)).toFixed(2)}× |`);
    const rateD: number[] = [];
    const rateP: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      rateD.push(DOWNLOAD / 1e6 / ((await timed(() => httpsGet(undefined, net, `/bytes?n=${DOWNLOAD}`))) / 1000));
      rateP.push(DOWNLOAD / 1e6 / ((await timed(async () => httpsGet(await connectVia(sock), net, `/bytes?n=${DOWNLOAD}`))) / 1000));
    }
    rows.push(`| A. host client: HTTPS download ${DOWNLOAD >> 20} MiB (MB/s, median of ${RUNS}) | ${median(rateD).toFixed(0)} | ${median(rateP).toFixed(0)} | ${(median(rateP) / median(rateD)).toFixed(2)}× |`);

    // B. from inside a local sandbox, vs the same script on the host
    const images = new ImageStore(process.env.AGENTBOX_IMAGES ?? '/var/tmp/agentbox-test/images');
    await images.ensure('debian', { packages: ['python3'] });
    const rt = new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/bench-egress-${process.pid}`, resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() });
    const manager = new SandboxManager({ policy: parsed.policy, store, runtimes: { local: rt }, logger: silentLogger(), egress });
    await manager.start();
    try {
      const sb = await manager.create({ egress: { mode: 'allowlist', allow: [HOST] }, limits: { memoryMb: 512 } }, caller);
      await manager.writeFile(sb.id, '/workspace/b.py', Readable.from([Buffer.from(PY)]), caller);
      await manager.writeFile(sb.id, '/workspace/ca.pem', Readable.from([Buffer.from(net.caPem)]), caller);
      const r = await manager.exec(sb.id, { cmd: ['python3', '/workspace/b.py', `https://${HOST}`, String(Math.min(N_SETUP, 50)), String(DOWNLOAD), '/workspace/ca.pem'], timeoutMs: 600_000 }, caller);
      if (r.exitCode !== 0) throw new Error(`sandbox python failed: ${r.stderr}`);
      const inside = JSON.parse(r.stdout) as PyResult;
      writeFileSync(join(dir, 'b.py'), PY);
      const { stdout } = await promisify(execFile)('python3', [join(dir, 'b.py'), `https://${net.siteAddress}`, String(Math.min(N_SETUP, 50)), String(DOWNLOAD), net.caFile], { maxBuffer: 1 << 20 });
      const host = JSON.parse(stdout) as PyResult;
      rows.push(`| B. python3: HTTPS connect + GET, p50 / p95 (ms) | ${median(host.setup).toFixed(2)} / ${pct(host.setup, 95).toFixed(2)} | ${median(inside.setup).toFixed(2)} / ${pct(inside.setup, 95).toFixed(2)} | ${(median(inside.setup) / median(host.setup)).toFixed(2)}× |`);
      rows.push(`| B. python3: HTTPS download ${DOWNLOAD >> 20} MiB (MB/s, median of ${RUNS}) | ${median(host.rates).toFixed(0)} | ${median(inside.rates).toFixed(0)} | ${(median(inside.rates) / median(host.rates)).toFixed(2)}× |`);
      await manager.delete(sb.id, caller);
    } finally {
      await manager.close();
    }
  } finally {
    await egress.closeAll();
    store.close();
    rmSync(dir, { recursive: true, force: true });
    await net.close();
  }
  console.log(`Egress proxy overhead, ${new Date().toISOString().slice(0, 10)}, ${N_SETUP} setups, ${DOWNLOAD >> 20} MiB downloads\n`);
  console.log('| measurement | direct | through the proxy | ratio |');
  console.log('|---|---|---|---|');
  for (const r of rows) console.log(r);
}

await main();
