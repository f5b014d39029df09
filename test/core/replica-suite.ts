/**
 * Daemon replicas on one store (core/manager/replica.ts), with the real local runtime: each replica a
 * SandboxManager with its own identity and host scope, on its own connection to the same database.
 * Run on SQLite (test/core/replicas.test.ts) and on PostgreSQL.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { helperPath } from '../../src/core/config.js';
import { SandboxManager, type Caller } from '../../src/core/manager.js';
import type { LifecycleEvent } from '../../src/core/lifecycle-events.js';
import { ConflictError } from '../../src/contract/errors.js';
import { silentLogger } from '../../src/observability/logger.js';
import { parsePolicyText } from '../../src/policy/load.js';
import type { Policy } from '../../src/policy/schema.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import type { Runtime } from '../../src/runtime/types.js';
import type { Store } from '../../src/store/store.js';
import { testImages } from '../helpers/images.js';
import type { ImageStore } from '../../src/images/image-store.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const caller: Caller = { tenant: 'default', actor: 'test' };

function policy(text: string): Policy {
  const r = parsePolicyText(text, 'test-policy.yaml');
  if (r.kind !== 'ok') throw new Error(`test policy invalid: ${JSON.stringify(r)}`);
  return r.policy;
}

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`${what}: not in time`);
    await sleep(50);
  }
}

export interface ReplicaSuiteOpts {
  /** Which database, for the test names. */
  name: string;
  /** A new connection to one fresh database per NAME (two calls with one name: the same database). */
  openStore: (db: string) => Store | Promise<Store>;
  /** Skip the suite, with the reason. */
  skip?: string | false;
}

export function runReplicaSuite(o: ReplicaSuiteOpts): void {
  describe(`daemon replicas on one ${o.name} store`, { skip: o.skip ?? false }, () => {
    let images: ImageStore;
    const stores: Store[] = [];
    const managers: SandboxManager[] = [];
    const open = async (db: string): Promise<Store> => {
      const s = await o.openStore(db);
      stores.push(s);
      return s;
    };
    const localRuntime = (host: string): LocalRuntime =>
      new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/test-replicas-${process.pid}-${host}`, resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() });
    const replica = (id: string, store: Store, rt: Runtime, p = policy('version: 1\n'), events?: LifecycleEvent[]): SandboxManager => {
      const m = new SandboxManager({
        policy: p,
        store,
        runtimes: { local: rt },
        logger: silentLogger(),
        reapIntervalMs: 100,
        replica: { id, url: `http://${id}.test:8080` },
        ...(events ? { events: { emit: (e: LifecycleEvent) => void events.push(e) } } : {}),
      });
      managers.push(m);
      return m;
    };

    before(async () => {
      images = await testImages();
    });
    after(async () => {
      for (const m of managers) await m.close().catch(() => undefined);
      for (const s of stores) s.close();
    });

    test('replicas: a host-local sandbox is listed and inspected by every replica, entered only by its own, and another replica neither reconciles, reaps, loses its execs nor stops it', async () => {
      const a = replica('rep-a', await open('local'), localRuntime('a'));
      await a.start();
      const sb = await a.create({}, caller);
      assert.equal((await a.exec(sb.id, { cmd: ['sh', '-c', 'echo via-a'] }, caller)).stdout, 'via-a\n');
      const running = a.exec(sb.id, { cmd: ['sh', '-c', 'sleep 2; echo slow'] }, caller);

      const bStore = await open('local');
      const b = replica('rep-b', bStore, localRuntime('b'));
      await b.start(); // its reconcile meets a live sandbox, and an exec under way, of another replica
      assert.deepEqual(b.get(sb.id, caller), a.get(sb.id, caller));
      assert.ok(b.list(caller).some((s) => s.id === sb.id), 'B lists the sandbox A created');
      await assert.rejects(b.exec(sb.id, { cmd: ['true'] }, caller), (err: unknown) => err instanceof ConflictError && /replica rep-a/.test(err.message) && /http:\/\/rep-a\.test:8080/.test(err.hint ?? ''));
      await assert.rejects(b.listDir(sb.id, '/workspace', caller), ConflictError);
      await assert.rejects(b.delete(sb.id, caller), ConflictError);
      await b.reapOnce();
      await b.reapOnce();
      assert.equal(a.get(sb.id, caller).state, 'running', 'B ended a sandbox of A');
      assert.equal((await running).stdout, 'slow\n', 'B\'s start recorded A\'s running exec as lost');
      assert.equal(bStore.listExecs(sb.id).filter((e) => e.lost).length, 0);

      await b.close(); // stops its own sandboxes only
      assert.equal(a.get(sb.id, caller).state, 'running', 'B\'s stop ended a sandbox of A');
      assert.equal((await a.exec(sb.id, { cmd: ['sh', '-c', 'echo again'] }, caller)).stdout, 'again\n');
      await a.delete(sb.id, caller);
      assert.equal(a.get(sb.id, caller).state, 'deleted');
      await a.close();
    });

    test('replicas: a sandbox of a shared runtime is served by every replica, and its ttl ends it exactly once, by the replica holding the lease', async () => {
      // One local runtime seen by both replicas stands for a cluster (the kubernetes runtime is `shared`).
      const cluster = localRuntime('cluster');
      let destroys = 0;
      const shared = new Proxy(cluster, {
        get(target, prop, receiver) {
          if (prop === 'shared') return true;
          if (prop === 'destroy') return async (h: Parameters<Runtime['destroy']>[0]) => { destroys++; return target.destroy(h); };
          const v: unknown = Reflect.get(target, prop, receiver);
          return typeof v === 'function' ? (v as (...args: unknown[]) => unknown).bind(target) : v;
        },
      }) as Runtime;
      const events: LifecycleEvent[] = [];
      // Left in the cluster by a replica that died: no row knows it. The leader sweeps it.
      const orphan = await shared.create({ id: `sbx_orphan${process.pid}`, image: 'busybox', isolation: 'namespaces', limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 64 }, labels: {} });
      const a = replica('rep-c', await open('shared'), shared, policy('version: 1\n'), events);
      const b = replica('rep-d', await open('shared'), shared, policy('version: 1\n'), events);
      await a.start();
      await b.start();
      const sb = await a.create({ ttl: '2s' }, caller);
      assert.equal((await b.exec(sb.id, { cmd: ['sh', '-c', 'echo via-b'] }, caller)).stdout, 'via-b\n', 'B serves a shared sandbox A created');
      await b.writeFile(sb.id, '/workspace/f', (await import('node:stream')).Readable.from([Buffer.from('from b')]), caller);
      assert.equal((await a.exec(sb.id, { cmd: ['cat', '/workspace/f'] }, caller)).stdout, 'from b');
      await until('the ttl ends it', () => a.get(sb.id, caller).state !== 'running');
      await until('the leader reaps the orphan', async () => !(await cluster.list()).some((o) => o.id === orphan.id));
      assert.ok((await cluster.list()).some((o) => o.id === sb.id) === false);
      await sleep(500); // both reapers had passes after the end
      assert.equal(a.get(sb.id, caller).endReason, 'ttl_expired');
      assert.equal(destroys, 1, 'both replicas\' reapers destroyed the expired sandbox');
      const sweeps = (await open('shared')).listAudit({ sandboxId: orphan.id }).filter((e) => e.action === 'reap_orphan');
      assert.equal(sweeps.length, 1, 'the orphan was reaped by more than one replica, or by none');
      assert.equal(events.filter((e) => e.type === 'ended' && e.sandbox.id === sb.id).length, 1, 'its end was announced more than once');
      await b.close();
      await a.close();
    });

    test('replicas: a tenant quota holds across replicas: a burst of creates through both never passes it', async () => {
      const p = policy('version: 1\ntenants:\n  - name: bob\n    tokens: [bob-token-0123456789]\n    quotas: { sandboxes: 2 }\n');
      const bob: Caller = { tenant: 'bob', actor: 'test' };
      const a = replica('rep-q1', await open('quota'), localRuntime('q1'), p);
      const b = replica('rep-q2', await open('quota'), localRuntime('q2'), p);
      await a.start();
      await b.start();
      // Each replica alone would let 2 through (its own count and reservations): together, still 2.
      const results = await Promise.allSettled([a, b, a, b, a, b].map((m) => m.create({}, bob)));
      const made = results.filter((r) => r.status === 'fulfilled');
      const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(made.length, 2, `${made.length} sandboxes were made for a quota of 2`);
      for (const r of refused) assert.equal((r.reason as { code?: string }).code, 'quota_exceeded', String(r.reason));
      assert.equal(a.list(bob).filter((s) => s.state === 'running').length, 2);
      assert.equal(a.list(bob).filter((s) => s.state !== 'running').length, 0, 'a refused create left a row');
      await b.close();
      await a.close();
    });

    test('replicas: one lease holder at a time; a stopped replica hands it over at once, a dead one when it expires, and its unfinished execs are recorded as lost', async () => {
      const s1 = await open('lease');
      const s2 = await open('lease');
      const t0 = new Date('2026-01-01T00:00:00.000Z');
      assert.equal(s1.replicas.tryLease('job', 'r1', t0, 10_000), true);
      assert.equal(s2.replicas.tryLease('job', 'r2', t0, 10_000), false, 'two holders');
      assert.equal(s1.replicas.tryLease('job', 'r1', new Date(t0.getTime() + 5_000), 10_000), true, 'the holder renews');
      assert.equal(s2.replicas.tryLease('job', 'r2', new Date(t0.getTime() + 14_000), 10_000), false, 'taken before the renewed lease expired');
      assert.equal(s2.replicas.tryLease('job', 'r2', new Date(t0.getTime() + 15_000), 10_000), true, 'not taken once expired');
      s2.replicas.releaseLease('job', 'r1'); // not r1's any more: nothing happens
      assert.equal(s1.replicas.tryLease('job', 'r1', new Date(t0.getTime() + 16_000), 10_000), false);
      s2.replicas.releaseLease('job', 'r2');
      assert.equal(s1.replicas.tryLease('job', 'r1', new Date(t0.getTime() + 16_000), 10_000), true, 'a released lease is free');

      // A replica that died long ago, with an exec it never finished.
      const live = replica('rep-live', s1, localRuntime('live'));
      await live.start();
      const old = new Date(Date.now() - 10 * 60_000).toISOString();
      s2.replicas.heartbeat({ id: 'rep-dead', url: null, host: 'gone', pid: 1 }, old, true);
      s2.insertExec({ id: 'exec_dead', sandboxId: 'sbx_elsewhere', tenant: 'default', cmd: ['sleep', '1000'], startedAt: old, replica: 'rep-dead' });
      s2.insertExec({ id: 'exec_alive', sandboxId: 'sbx_elsewhere', tenant: 'default', cmd: ['sleep', '1000'], startedAt: old, replica: 'rep-other' });
      await live.reapOnce();
      assert.equal(s2.getExec('sbx_elsewhere', 'exec_dead')?.lost, true, 'the dead replica\'s exec is not recorded as lost');
      assert.equal(s2.getExec('sbx_elsewhere', 'exec_alive')?.lost, false, 'an exec of a replica that has no heartbeat row yet was lost');
      assert.deepEqual(s2.replicas.list().map((r) => r.id), ['rep-live']);
      await live.close();
      assert.deepEqual(s2.replicas.list(), [], 'a stopped replica is still listed');
    });
  });
}
