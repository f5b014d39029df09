/**
 * The store on PostgreSQL through the synchronous worker bridge (src/store/pg-db.ts), side by side with
 * the store on SQLite, per operation, on loopback to a private cluster (test/helpers/postgres.ts).
 * Baselines in the same run: `SELECT 1` through the bridge vs through pg's own async client, which
 * isolates what the bridge (worker hop + Atomics.wait) adds to the server round trip.
 * PostgreSQL runs twice: with its default synchronous_commit=on (a WAL flush per commit), and with it
 * off per session, which matches SQLite's WAL + synchronous=NORMAL (no fsync per commit).
 * Usage: npm run build && node dist/bench/store-postgres.js   (prints a Markdown table for BENCHMARKS.md)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { Sandbox, SandboxSpec } from '../src/contract/model.js';
import { PgDb } from '../src/store/pg-db.js';
import { Store } from '../src/store/store.js';
import { startPostgres } from '../test/helpers/postgres.js';
import { pct } from './stats.js';

const N = Number(process.env.BENCH_N ?? 1000);
const WARMUP = 50;

function sandbox(i: number): { sb: Sandbox; spec: SandboxSpec } {
  const id = `sbx_bench${String(i).padStart(4, '0')}`;
  const sb: Sandbox = {
    id, tenant: 'alice', image: 'busybox', profile: null, runtime: 'local', isolation: 'namespaces', state: 'running',
    limits: { cpus: 1, memoryMb: 256, pids: 64, diskMb: 100 }, egress: { mode: 'none', allow: [] }, labels: { team: 'bench' },
    createdAt: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(), expiresAt: null, lastActiveAt: new Date().toISOString(),
  };
  const spec: SandboxSpec = {
    id, tenant: sb.tenant, image: sb.image, profile: null, runtime: sb.runtime, isolation: sb.isolation, limits: sb.limits, egress: sb.egress,
    env: {}, labels: sb.labels, ttlMs: null, idleTimeoutMs: null, execTimeoutMs: 120_000, outputLimitBytes: 2_097_152,
  };
  return { sb, spec };
}

function time(fn: (i: number) => void, n = N): number[] {
  for (let i = 0; i < WARMUP; i++) fn(-1 - i);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    fn(i);
    out.push(performance.now() - t0);
  }
  return out;
}

/** Per-operation samples (ms) on one store: 100 sandboxes in it, then each operation N times. */
function measureStore(store: Store): Record<string, number[]> {
  for (let i = 0; i < 100; i++) {
    const { sb, spec } = sandbox(i);
    store.insertSandbox(sb, spec, null);
  }
  const tail = Buffer.alloc(4096, 0x61);
  let seq = 0;
  return {
    'insertExec + finishExec': time(() => {
      const id = `exec_${++seq}`;
      const at = new Date().toISOString();
      store.insertExec({ id, sandboxId: 'sbx_bench0001', tenant: 'alice', cmd: ['true'], startedAt: at });
      store.finishExec(id, { exitCode: 0, timedOut: false, oomKilled: false, truncated: false, durationMs: 1, endedAt: at, stdoutTail: tail, stderrTail: tail });
    }),
    getSandbox: time((i) => {
      if (store.getSandbox(sandbox(Math.abs(i) % 100).sb.id) === undefined) throw new Error('missing');
    }),
    'listSandboxes (100 rows)': time(() => {
      if (store.listSandboxes({ tenant: 'alice' }).length !== 100) throw new Error('not 100');
    }),
  };
}

const fmt = (v: number[]): string => `${pct(v, 50).toFixed(3)} / ${pct(v, 99).toFixed(3)}`;

const dir = mkdtempSync(join(tmpdir(), 'agentbox-bench-store-'));
const cluster = await startPostgres();
try {
  const sqlite = Store.open(join(dir, 'agentbox.db'));
  const lite = measureStore(sqlite);
  sqlite.close();

  const url = await cluster.createDatabase();
  const pgStore = Store.connect(url);
  const pgOn = measureStore(pgStore);
  pgStore.close();

  const url2 = new URL(await cluster.createDatabase());
  url2.searchParams.set('options', '-c synchronous_commit=off');
  const pgStoreOff = Store.connect(url2.href);
  const pgOff = measureStore(pgStoreOff);
  pgStoreOff.close();

  // Baselines: one trivial statement, through the bridge and through pg's async client directly.
  const bridged = PgDb.connect(url);
  const one = bridged.prepare('SELECT 1 AS x');
  const viaBridge = time(() => one.get());
  bridged.close();
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const direct: number[] = [];
  for (let i = 0; i < WARMUP + N; i++) {
    const t0 = performance.now();
    await client.query({ name: 'one', text: 'SELECT 1 AS x' });
    if (i >= WARMUP) direct.push(performance.now() - t0);
  }
  await client.end();

  console.log(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ${new Date().toISOString().slice(0, 10)}; n=${N} per operation; PostgreSQL on 127.0.0.1 (TCP)`);
  console.log('\n| operation (ms, p50 / p99) | SQLite (WAL, synchronous=NORMAL) | PostgreSQL, synchronous_commit=on | PostgreSQL, synchronous_commit=off | PG off / SQLite p50 |\n|---|---|---|---|---|');
  for (const op of Object.keys(lite)) {
    const [a, b, c] = [lite[op]!, pgOn[op]!, pgOff[op]!];
    console.log(`| ${op} | ${fmt(a)} | ${fmt(b)} | ${fmt(c)} | ${(pct(c, 50) / pct(a, 50)).toFixed(1)}× |`);
  }
  console.log(`\n| \`SELECT 1\` (ms, p50 / p99) | through the bridge (sync) | pg client directly (async) | bridge overhead p50 |\n|---|---|---|---|\n| round trip | ${fmt(viaBridge)} | ${fmt(direct)} | ${(pct(viaBridge, 50) - pct(direct, 50)).toFixed(3)} ms |`);
} finally {
  await cluster.stop();
  rmSync(dir, { recursive: true, force: true });
}
