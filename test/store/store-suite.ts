/**
 * The store's behaviour on any engine, run by test/unit/store.test.ts on SQLite and by
 * test/store/postgres-store.test.ts on PostgreSQL: migrations, queries, exec ring, usage, audit,
 * volumes, two stores on one database, corrupt rows.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { InternalError } from '../../src/contract/errors.js';
import type { Sandbox, SandboxSpec, SandboxState } from '../../src/contract/model.js';
import { MIGRATIONS, migrate, schemaVersion, type Migration } from '../../src/store/migrations.js';
import { isUniqueViolation } from '../../src/store/sql-db.js';
import type { Store } from '../../src/store/store.js';
import type { StoreBackend } from './backends.js';
import { put, sandbox, specOf } from '../helpers/store-rows.js';


const ids = (list: { sandbox: Sandbox }[]): string[] => list.map((s) => s.sandbox.id);

export function storeSuite(b: StoreBackend): void {
  after(() => b.cleanUp());

  /** Opens a store on a fresh database (or on `where`) for the length of one test body. */
  async function withStore<T>(fn: (store: Store, where: string) => T | Promise<T>, where?: string): Promise<T> {
    const at = where ?? (await b.fresh());
    const store = b.open(at);
    try {
      return await fn(store, at);
    } finally {
      store.close();
    }
  }

  describe(`migrations (${b.name})`, () => {
    test('applied once; reopening keeps the data and the version', async () => {
      const where = await b.fresh();
      await withStore((store) => {
        assert.equal(store.schemaVersion, MIGRATIONS.length);
        put(store, sandbox('sbx_keep'));
      }, where);
      await withStore((store) => {
        assert.equal(store.schemaVersion, MIGRATIONS.length);
        assert.equal(store.getSandbox('sbx_keep')?.sandbox.id, 'sbx_keep');
      }, where);
    });

    test('a failing migration rolls back whole and leaves the version where it was', async () => {
      const db = b.openDb(await b.fresh());
      try {
        const next = MIGRATIONS.length + 1;
        const bad = 'CREATE TABLE half (x INTEGER); SELECT * FROM no_such_table;';
        const broken: Migration = { version: next, name: 'broken', sql: bad, postgres: bad };
        assert.throws(() => migrate(db, [...MIGRATIONS, broken]), (err: unknown) => err instanceof InternalError && new RegExp(`migration ${next}`).test(err.message));
        assert.equal(schemaVersion(db), MIGRATIONS.length);
        assert.throws(() => db.prepare('SELECT * FROM half').all(), /half/, 'the half-made table is still there');
      } finally {
        db.close();
      }
    });

    test('a database from a newer agentbox is refused', async () => {
      const where = await b.fresh();
      await withStore(() => undefined, where);
      await b.forceSchemaVersion(where, MIGRATIONS.length + 1);
      assert.throws(() => b.open(where), (err: unknown) => err instanceof InternalError && /newer/.test(err.message) && err.hint !== undefined);
    });

    test('versions must run 1, 2, 3, ...', async () => {
      const db = b.openDb(await b.fresh());
      try {
        assert.throws(() => migrate(db, [{ version: 2, name: 'skips one', sql: '', postgres: '' }]), InternalError);
      } finally {
        db.close();
      }
    });

    test('close is idempotent', async () => {
      const store = b.open(await b.fresh());
      store.close();
      store.close();
    });
  });

  describe(`sandboxes (${b.name})`, () => {
    test('insert then get returns the sandbox, spec, runtime data and idle timeout', async () => {
      await withStore(async (store) => {
        const sb = sandbox('sbx_a', { labels: { team: 'ml' }, expiresAt: '2026-01-01T01:00:00.000Z', profile: 'tiny' });
        put(store, sb);
        const got = store.getSandbox('sbx_a');
        assert.ok(got);
        assert.deepEqual(got.sandbox, { ...sb, endedAt: null, endReason: null, endedBy: null });
        assert.deepEqual(got.spec, specOf(sb));
        assert.equal(got.runtimeData, null);
        assert.equal(got.idleTimeoutMs, 900_000);

        store.setRuntimeData('sbx_a', { pid: 42, cgroup: '/x' });
        store.setState('sbx_a', 'stopped');
        store.touch('sbx_a', '2026-01-01T00:05:00.000Z');
        const again = store.getSandbox('sbx_a');
        assert.deepEqual(again?.runtimeData, { pid: 42, cgroup: '/x' });
        assert.equal(again?.sandbox.state, 'stopped');
        assert.equal(again?.sandbox.lastActiveAt, '2026-01-01T00:05:00.000Z');
        assert.equal(store.getSandbox('sbx_missing'), undefined);
      });
    });

    test('a duplicate id is refused', async () => {
      await withStore(async (store) => {
        put(store, sandbox('sbx_dup'));
        assert.throws(() => put(store, sandbox('sbx_dup')), isUniqueViolation);
      });
    });

    test('list filters by tenant, states, labels and ended, oldest first', async () => {
      await withStore(async (store) => {
        const at = (m: number): string => `2026-01-01T00:0${m}:00.000Z`;
        put(store, sandbox('sbx_3', { createdAt: at(3), labels: { team: 'ml', env: 'dev' } }));
        put(store, sandbox('sbx_1', { createdAt: at(1), labels: { team: 'ml' } }));
        put(store, sandbox('sbx_2', { createdAt: at(2), tenant: 'bob', labels: { team: 'ml' } }));
        put(store, sandbox('sbx_4', { createdAt: at(4), state: 'creating', labels: { 'a.b/c': 'x"y' } }));
        put(store, sandbox('sbx_5', { createdAt: at(5), state: 'deleted' }));
        put(store, sandbox('sbx_6', { createdAt: at(6), state: 'failed' }));

        assert.deepEqual(ids(store.listSandboxes()), ['sbx_1', 'sbx_2', 'sbx_3', 'sbx_4', 'sbx_6']);
        assert.deepEqual(ids(store.listSandboxes({ includeEnded: true })), ['sbx_1', 'sbx_2', 'sbx_3', 'sbx_4', 'sbx_5', 'sbx_6']);
        assert.deepEqual(ids(store.listSandboxes({ tenant: 'bob' })), ['sbx_2']);
        assert.deepEqual(ids(store.listSandboxes({ tenant: 'alice', labels: { team: 'ml' } })), ['sbx_1', 'sbx_3']);
        assert.deepEqual(ids(store.listSandboxes({ labels: { team: 'ml', env: 'dev' } })), ['sbx_3']);
        assert.deepEqual(ids(store.listSandboxes({ labels: { team: 'other' } })), []);
        assert.deepEqual(ids(store.listSandboxes({ labels: { 'a.b/c': 'x"y' } })), ['sbx_4'], 'keys with dots and slashes, values with quotes');
        assert.deepEqual(ids(store.listSandboxes({ labels: {} })), ['sbx_1', 'sbx_2', 'sbx_3', 'sbx_4', 'sbx_6']);
        assert.deepEqual(ids(store.listSandboxes({ states: ['creating', 'running'] })), ['sbx_1', 'sbx_2', 'sbx_3', 'sbx_4']);
        assert.deepEqual(ids(store.listSandboxes({ states: ['deleted'] })), ['sbx_5']);
        assert.deepEqual(ids(store.listSandboxes({ states: [] })), []);
      });
    });

    test('markEnded records state, reason, who and when; countActive counts creating and running', async () => {
      await withStore(async (store) => {
        put(store, sandbox('sbx_x', { limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 10 } }));
        put(store, sandbox('sbx_y', { state: 'creating', limits: { cpus: 1, memoryMb: 512, pids: 64, diskMb: 10 } }));
        put(store, sandbox('sbx_z', { tenant: 'bob' }));
        assert.deepEqual(store.countActive('alice'), { sandboxes: 2, memoryMb: 640 });

        store.markEnded('sbx_x', { state: 'deleted', reason: 'deleted', endedBy: 'alice-cli', at: '2026-01-02T00:00:00.000Z' });
        const ended = store.getSandbox('sbx_x')?.sandbox;
        assert.equal(ended?.state, 'deleted');
        assert.equal(ended?.endReason, 'deleted');
        assert.equal(ended?.endedBy, 'alice-cli');
        assert.equal(ended?.endedAt, '2026-01-02T00:00:00.000Z');
        assert.deepEqual(store.countActive('alice'), { sandboxes: 1, memoryMb: 512 });
        assert.deepEqual(store.countActive('nobody'), { sandboxes: 0, memoryMb: 0 });
      });
    });

    test('a sandbox ends once: a later end changes nothing, except that a stopped one can still be deleted', async () => {
      await withStore(async (store) => {
        put(store, sandbox('sbx_race'));
        assert.equal(store.markEnded('sbx_race', { state: 'deleted', reason: 'deleted', endedBy: 'alice', at: '2026-01-02T00:00:00.000Z' }), true);
        // the reaper's pass that raced the delete
        assert.equal(store.markEnded('sbx_race', { state: 'failed', reason: 'runtime_lost', endedBy: 'reaper', at: '2026-01-02T00:00:01.000Z' }), false);
        assert.equal(store.markEnded('sbx_race', { state: 'deleted', reason: 'deleted', endedBy: 'bob', at: '2026-01-02T00:00:02.000Z' }), false);
        const raced = store.getSandbox('sbx_race')?.sandbox;
        assert.deepEqual([raced?.state, raced?.endReason, raced?.endedBy, raced?.endedAt], ['deleted', 'deleted', 'alice', '2026-01-02T00:00:00.000Z']);

        put(store, sandbox('sbx_idle'));
        assert.equal(store.markEnded('sbx_idle', { state: 'stopped', reason: 'idle_timeout', endedBy: 'reaper', at: '2026-01-03T00:00:00.000Z' }), true);
        assert.equal(store.markEnded('sbx_idle', { state: 'failed', reason: 'runtime_lost', endedBy: 'reconcile', at: '2026-01-03T00:00:01.000Z' }), false);
        assert.equal(store.markEnded('sbx_idle', { state: 'deleted', reason: 'deleted', endedBy: 'alice', at: '2026-01-03T00:00:02.000Z' }), true);
        const idle = store.getSandbox('sbx_idle')?.sandbox;
        assert.deepEqual([idle?.state, idle?.endReason, idle?.endedBy, idle?.endedAt], ['deleted', 'idle_timeout', 'reaper', '2026-01-03T00:00:00.000Z']);
      });
    });

    test('purgeEnded removes sandboxes that ended before the cut-off, with their execs', async () => {
      await withStore(async (store) => {
        for (const id of ['sbx_old', 'sbx_new', 'sbx_live']) {
          put(store, sandbox(id));
          store.insertExec({ id: `exec_${id}`, sandboxId: id, tenant: 'alice', cmd: ['true'], startedAt: '2026-01-01T00:00:00.000Z' });
        }
        const end = (at: string): { state: SandboxState; reason: 'deleted'; endedBy: null; at: string } => ({ state: 'deleted', reason: 'deleted', endedBy: null, at });
        store.markEnded('sbx_old', end('2026-01-01T00:00:00.000Z'));
        store.markEnded('sbx_new', end('2026-03-01T00:00:00.000Z'));
        assert.equal(store.purgeEnded('2026-02-01T00:00:00.000Z'), 1);
        assert.deepEqual(ids(store.listSandboxes({ includeEnded: true })), ['sbx_new', 'sbx_live']);
        assert.equal(store.getExec('sbx_old', 'exec_sbx_old'), undefined);
        assert.ok(store.getExec('sbx_new', 'exec_sbx_new'));
      });
    });
  });

  describe(`execs (${b.name})`, () => {
    test('insert, finish, get and list (newest first), tails as Buffers', async () => {
      await withStore(async (store) => {
        put(store, sandbox('sbx_e'));
        store.insertExec({ id: 'exec_1', sandboxId: 'sbx_e', tenant: 'alice', cmd: ['echo', 'hi'], startedAt: '2026-01-01T00:00:01.000Z' });
        const running = store.getExec('sbx_e', 'exec_1');
        assert.equal(running?.exitCode, null);
        assert.equal(running?.endedAt, null);
        assert.equal(running?.stdoutTail, null);

        store.finishExec('exec_1', {
          exitCode: 3,
          timedOut: false,
          oomKilled: true,
          truncated: true,
          durationMs: 12.5,
          endedAt: '2026-01-01T00:00:02.000Z',
          stdoutTail: Buffer.from('hi\n'),
          stderrTail: Buffer.from([0xff, 0x00, 0x01]),
        });
        store.insertExec({ id: 'exec_2', sandboxId: 'sbx_e', tenant: 'alice', cmd: ['ls'], startedAt: '2026-01-01T00:00:03.000Z' });

        const done = store.getExec('sbx_e', 'exec_1');
        assert.ok(done);
        assert.deepEqual(done, {
          id: 'exec_1',
          sandboxId: 'sbx_e',
          tenant: 'alice',
          cmd: ['echo', 'hi'],
          startedAt: '2026-01-01T00:00:01.000Z',
          endedAt: '2026-01-01T00:00:02.000Z',
          exitCode: 3,
          lost: false,
          timedOut: false,
          oomKilled: true,
          truncated: true,
          durationMs: 12.5,
          stdoutTail: Buffer.from('hi\n'),
          stderrTail: Buffer.from([0xff, 0x00, 0x01]),
        });
        assert.ok(Buffer.isBuffer(done.stderrTail));
        assert.equal(store.getExec('sbx_other', 'exec_1'), undefined, 'an exec is found only under its own sandbox');
        assert.deepEqual(store.listExecs('sbx_e', 10).map((e) => e.id), ['exec_2', 'exec_1']);
        assert.deepEqual(store.listExecs('sbx_e', 1).map((e) => e.id), ['exec_2']);
      });
    });

    test('the ring keeps the newest N per sandbox and leaves other sandboxes alone', async () => {
      const store = b.open(await b.fresh(), { execsPerSandbox: 3 });
      try {
        put(store, sandbox('sbx_ring'));
        put(store, sandbox('sbx_other'));
        store.insertExec({ id: 'other_0', sandboxId: 'sbx_other', tenant: 'alice', cmd: ['true'], startedAt: '2026-01-01T00:00:00.000Z' });
        for (let i = 0; i < 7; i++) {
          // equal start times for the last ones: insertion order must still decide
          const startedAt = `2026-01-01T00:00:0${Math.min(i, 4)}.000Z`;
          store.insertExec({ id: `exec_${i}`, sandboxId: 'sbx_ring', tenant: 'alice', cmd: ['n', String(i)], startedAt });
        }
        assert.deepEqual(store.listExecs('sbx_ring', 100).map((e) => e.id), ['exec_6', 'exec_5', 'exec_4']);
        assert.equal(store.getExec('sbx_ring', 'exec_3'), undefined);
        assert.deepEqual(store.listExecs('sbx_other', 100).map((e) => e.id), ['other_0']);
      } finally {
        store.close();
      }
    });

    test('execs still running when a daemon starts are lost: ended then, exit code unknown; finished ones stay; a late finish changes nothing', async () => {
      await withStore(async (store) => {
        put(store, sandbox('sbx_l'));
        store.insertExec({ id: 'exec_done', sandboxId: 'sbx_l', tenant: 'alice', cmd: ['true'], startedAt: '2026-01-01T00:00:01.000Z' });
        const outcome = { exitCode: 0, timedOut: false, oomKilled: false, truncated: false, durationMs: 1, endedAt: '2026-01-01T00:00:02.000Z', stdoutTail: Buffer.from('ok'), stderrTail: Buffer.alloc(0) };
        store.finishExec('exec_done', outcome);
        store.insertExec({ id: 'exec_run', sandboxId: 'sbx_l', tenant: 'alice', cmd: ['sleep', '9'], startedAt: '2026-01-01T00:00:03.000Z' });
        assert.equal(store.loseUnfinishedExecs('2026-01-01T00:01:00.000Z'), 1);
        const lost = store.getExec('sbx_l', 'exec_run');
        assert.equal(lost?.lost, true);
        assert.equal(lost?.exitCode, null);
        assert.equal(lost?.endedAt, '2026-01-01T00:01:00.000Z');
        assert.equal(store.getExec('sbx_l', 'exec_done')?.lost, false);
        assert.equal(store.loseUnfinishedExecs('2026-01-01T00:02:00.000Z'), 0, 'a lost exec is lost once');
        store.finishExec('exec_run', outcome);
        assert.equal(store.getExec('sbx_l', 'exec_run')?.exitCode, null, 'a lost exec got an exit code after all');
      });
    });

    test('execsPerSandbox must be a positive integer', async () => {
      const where = await b.fresh();
      assert.throws(() => b.open(where, { execsPerSandbox: 0 }), InternalError);
    });
  });

  describe(`audit and usage (${b.name})`, () => {
    test('audit entries come back newest first, filtered by sandbox', async () => {
      await withStore(async (store) => {
        store.audit({ tenant: 'alice', actor: 'cli', action: 'create', sandboxId: 'sbx_1', detail: { image: 'busybox' } });
        store.audit({ tenant: null, actor: 'reconcile', action: 'reap_orphan', sandboxId: 'sbx_2', detail: null });
        store.audit({ tenant: 'alice', actor: 'cli', action: 'delete', sandboxId: 'sbx_1', detail: { reason: 'deleted' }, at: '2026-01-01T00:00:00.000Z' });
        const forOne = store.listAudit({ sandboxId: 'sbx_1' });
        assert.deepEqual(forOne.map((a) => a.action), ['delete', 'create']);
        assert.deepEqual(forOne[0]?.detail, { reason: 'deleted' });
        assert.equal(forOne[0]?.at, '2026-01-01T00:00:00.000Z');
        assert.deepEqual(store.listAudit({ limit: 2 }).map((a) => a.action), ['delete', 'reap_orphan']);
        assert.equal(store.listAudit({ sandboxId: 'sbx_2' })[0]?.detail, null);
      });
    });

    test('exec time accumulates per tenant and day', async () => {
      await withStore(async (store) => {
        assert.equal(store.execMsOn('alice', '2026-01-01'), 0);
        store.addExecMs('alice', '2026-01-01', 1500.4);
        store.addExecMs('alice', '2026-01-01', 250);
        store.addExecMs('alice', '2026-01-02', 7);
        store.addExecMs('bob', '2026-01-01', 1);
        assert.equal(store.execMsOn('alice', '2026-01-01'), 1750);
        assert.equal(store.execMsOn('alice', '2026-01-02'), 7);
        assert.equal(store.execMsOn('bob', '2026-01-01'), 1);
        assert.throws(() => store.addExecMs('alice', '2026-1-1', 5), InternalError);
        assert.throws(() => store.addExecMs('alice', '2026-01-01', Number.NaN), InternalError);
      });
    });
  });

  describe(`sharing and corruption (${b.name})`, () => {
    test('two stores on one database see each other\'s writes', async () => {
      const where = await b.fresh();
      const a = b.open(where);
      const c = b.open(where);
      try {
        put(a, sandbox('sbx_from_a'));
        assert.equal(c.getSandbox('sbx_from_a')?.sandbox.id, 'sbx_from_a');
        c.markEnded('sbx_from_a', { state: 'stopped', reason: 'idle_timeout', endedBy: 'reaper', at: '2026-01-01T00:10:00.000Z' });
        assert.equal(a.getSandbox('sbx_from_a')?.sandbox.endReason, 'idle_timeout');
        c.addExecMs('alice', '2026-01-01', 10);
        a.addExecMs('alice', '2026-01-01', 5);
        assert.equal(c.execMsOn('alice', '2026-01-01'), 15);
      } finally {
        a.close();
        c.close();
      }
    });

    test('a corrupt row is an InternalError that names the sandbox', async () => {
      await withStore(async (store, where) => {
        put(store, sandbox('sbx_good'));
        put(store, sandbox('sbx_bad_state'));
        put(store, sandbox('sbx_bad_json'));
        put(store, sandbox('sbx_bad_spec'));
        store.insertExec({ id: 'exec_bad', sandboxId: 'sbx_good', tenant: 'alice', cmd: ['x'], startedAt: '2026-01-01T00:00:00.000Z' });
        await b.raw(where, `
          UPDATE sandboxes SET state = 'exploded' WHERE id = 'sbx_bad_state';
          UPDATE sandboxes SET limits_json = '{not json' WHERE id = 'sbx_bad_json';
          UPDATE sandboxes SET spec_json = '{"id":"sbx_someone_else"}' WHERE id = 'sbx_bad_spec';
          UPDATE execs SET cmd_json = '"a string"' WHERE id = 'exec_bad';`);
        assert.equal(store.getSandbox('sbx_good')?.sandbox.state, 'running');
        for (const id of ['sbx_bad_state', 'sbx_bad_json', 'sbx_bad_spec']) {
          assert.throws(
            () => store.getSandbox(id),
            (err: unknown) => err instanceof InternalError && err.code === 'internal' && err.message.includes(id) && err.cause !== undefined,
            id,
          );
        }
        assert.throws(() => store.listSandboxes(), InternalError);
        assert.throws(() => store.getExec('sbx_good', 'exec_bad'), (err: unknown) => err instanceof InternalError && err.message.includes('exec_bad'));
      });
    });
  });

  describe(`volume rows (${b.name})`, () => {
    const sb = (id: string, state: Sandbox['state']): { sandbox: Sandbox; spec: SandboxSpec } => {
      const sandbox: Sandbox = {
        id, tenant: 'alice', image: 'busybox', profile: null, runtime: 'local', isolation: 'namespaces', state,
        limits: { cpus: 1, memoryMb: 64, pids: 32, diskMb: 16 }, egress: { mode: 'none', allow: [] }, labels: {},
        createdAt: '2026-01-01T00:00:00.000Z', expiresAt: null, lastActiveAt: '2026-01-01T00:00:00.000Z',
      };
      const spec: SandboxSpec = {
        id, tenant: 'alice', image: 'busybox', profile: null, runtime: 'local', isolation: 'namespaces', limits: sandbox.limits, egress: sandbox.egress,
        env: {}, labels: {}, ttlMs: null, idleTimeoutMs: null, execTimeoutMs: 1000, outputLimitBytes: 1000,
        volumes: [{ name: 'data', target: '/data', readOnly: false }],
      };
      return { sandbox, spec };
    };

    test('unique per tenant; users are the creating and running sandboxes that mount it; a sandbox shows its volumes', async () => {
      await withStore((store) => {
        const v = { id: 'vol_1', tenant: 'alice', name: 'data', sizeMb: 64, createdAt: '2026-01-01T00:00:00.000Z' };
        store.volumes.insert(v);
        store.volumes.insert({ ...v, id: 'vol_2', tenant: 'bob' });
        assert.throws(() => store.volumes.insert({ ...v, id: 'vol_3' }), isUniqueViolation);
        assert.deepEqual(store.volumes.get('alice', 'data'), v);
        assert.equal(store.volumes.get('carol', 'data'), undefined);
        assert.deepEqual(store.volumes.list('alice').map((x) => x.id), ['vol_1']);
        assert.deepEqual(store.volumes.list().map((x) => x.id), ['vol_1', 'vol_2']);
        for (const [id, state] of [['sbx_run', 'running'], ['sbx_new', 'creating'], ['sbx_old', 'stopped']] as const) {
          const { sandbox, spec } = sb(id, state);
          store.insertSandbox(sandbox, spec, null);
          store.volumes.addMounts([{ sandboxId: id, volumeId: 'vol_1', name: 'data', target: '/data', readOnly: false }]);
        }
        assert.deepEqual(store.volumes.activeUsers('vol_1'), ['sbx_new', 'sbx_run']);
        assert.deepEqual(store.volumes.activeMounts().map((m) => m.sandboxId).sort(), ['sbx_new', 'sbx_run']);
        assert.deepEqual(store.getSandbox('sbx_run')?.sandbox.volumes, [{ name: 'data', target: '/data', readOnly: false }]);
        store.markEnded('sbx_run', { state: 'deleted', reason: 'deleted', endedBy: null, at: '2026-01-01T00:01:00.000Z' });
        assert.deepEqual(store.volumes.activeUsers('vol_1'), ['sbx_new']);
        store.markEnded('sbx_new', { state: 'stopped', reason: 'stopped', endedBy: null, at: '2026-01-01T00:01:00.000Z' });
        assert.equal(store.purgeEnded('2026-01-02T00:00:00.000Z'), 2);
        assert.deepEqual(store.volumes.mountsOf('sbx_run'), [], 'the mounts of purged sandboxes go with them');
        assert.equal(store.volumes.mountsOf('sbx_old').length, 1);
        store.volumes.delete('vol_1');
        assert.equal(store.volumes.getById('vol_1'), undefined);
      });
    });

    test('mounting again at a target replaces the mount there', async () => {
      await withStore((store) => {
        const { sandbox, spec } = sb('sbx_re', 'running');
        store.insertSandbox(sandbox, spec, null);
        store.volumes.addMounts([
          { sandboxId: 'sbx_re', volumeId: 'vol_a', name: 'a', target: '/a', readOnly: false },
          { sandboxId: 'sbx_re', volumeId: 'vol_b', name: 'b', target: '/b', readOnly: false },
        ]);
        store.volumes.addMounts([{ sandboxId: 'sbx_re', volumeId: 'vol_c', name: 'c', target: '/a', readOnly: true }]);
        assert.deepEqual(store.volumes.mountsOf('sbx_re').map((m) => [m.target, m.volumeId, m.readOnly]).sort(), [['/a', 'vol_c', true], ['/b', 'vol_b', false]]);
      });
    });
  });

  describe(`snapshots, egress log and port grants (${b.name})`, () => {
    test('snapshot rows: creating until ready; found by id, tenant and name; listed newest first; names unique per tenant', async () => {
      await withStore((store) => {
        const base = { tenant: 'alice', sandboxId: 'sbx_s', image: 'busybox', diskMb: 16, labels: { team: 'ml' }, memory: false };
        store.snapshots.begin({ ...base, id: 'snap_1', name: 'one', createdAt: '2026-01-01T00:00:01.000Z' });
        store.snapshots.begin({ ...base, id: 'snap_2', name: null, createdAt: '2026-01-01T00:00:02.000Z', memory: true });
        store.snapshots.begin({ ...base, id: 'snap_3', name: 'one', tenant: 'bob', createdAt: '2026-01-01T00:00:03.000Z' });
        assert.throws(() => store.snapshots.begin({ ...base, id: 'snap_4', name: 'one', createdAt: '2026-01-01T00:00:04.000Z' }), isUniqueViolation);
        assert.equal(store.snapshots.find('snap_1', null), undefined, 'a creating snapshot is not found');
        assert.deepEqual(store.snapshots.unfinished().map((u) => `${u.id}@${u.sandboxId}`).sort(), ['snap_1@sbx_s', 'snap_2@sbx_s', 'snap_3@sbx_s']);
        assert.equal(store.snapshots.markReady('snap_1', 3_000_000_000, 'aa'), true);
        assert.equal(store.snapshots.markReady('snap_1', 1, 'bb'), false, 'ready once');
        store.snapshots.markReady('snap_2', 10, 'cc');
        store.snapshots.markReady('snap_3', 20, 'dd');
        assert.deepEqual(store.snapshots.find('snap_1', 'alice'), { id: 'snap_1', tenant: 'alice', name: 'one', sandboxId: 'sbx_s', image: 'busybox', diskMb: 16, bytes: 3_000_000_000, sha256: 'aa', createdAt: '2026-01-01T00:00:01.000Z', labels: { team: 'ml' }, memory: false });
        assert.equal(store.snapshots.find('snap_1', 'bob'), undefined);
        assert.equal(store.snapshots.find('snap_2', null)?.memory, true);
        assert.equal(store.snapshots.findByName('one', 'bob')?.id, 'snap_3');
        assert.deepEqual(store.snapshots.listReady('alice').map((x) => x.id), ['snap_2', 'snap_1']);
        assert.deepEqual(store.snapshots.listReady(null).map((x) => x.id), ['snap_3', 'snap_2', 'snap_1']);
        assert.equal(store.snapshots.tenantBytes('alice'), 3_000_000_010);
        assert.equal(store.snapshots.tenantBytes('nobody'), 0);
        assert.equal(store.snapshots.remove('snap_1'), true);
        assert.deepEqual([...store.snapshots.allIds()].sort(), ['snap_2', 'snap_3']);
      });
    });

    test('egress log: recorded, finished, filtered newest first; denied hosts by their latest rule; bytes summed', async () => {
      await withStore((store) => {
        const attempt = { sandboxId: 'sbx_g', tenant: 'alice', kind: 'connect' as const, method: null, address: null };
        const a = store.egress.record({ ...attempt, host: 'pypi.org', port: 443, decision: 'allowed', rule: 'allow pypi.org' });
        store.egress.record({ ...attempt, host: 'evil.example', port: 443, decision: 'denied', rule: 'not allowed' });
        store.egress.record({ ...attempt, host: 'other.example', port: 80, decision: 'denied', rule: 'not allowed' });
        store.egress.record({ ...attempt, host: 'evil.example', port: 443, decision: 'denied', rule: 'global deny' });
        store.egress.record({ ...attempt, sandboxId: 'sbx_other', host: 'x.example', port: 443, decision: 'denied', rule: 'not allowed' });
        store.egress.finish(a, { bytesUp: 3_000_000_000, bytesDown: 5, durationMs: 1.5, error: null });
        const all = store.egress.forSandbox('sbx_g');
        assert.deepEqual(all.map((e) => e.host), ['evil.example', 'other.example', 'evil.example', 'pypi.org']);
        assert.deepEqual(store.egress.forSandbox('sbx_g', { decision: 'allowed' }).map((e) => [e.host, e.bytesUp, e.bytesDown, e.durationMs]), [['pypi.org', 3_000_000_000, 5, 1.5]]);
        assert.equal(store.egress.forSandbox('sbx_g', { limit: 1 }).length, 1);
        assert.deepEqual(store.egress.deniedHosts('sbx_g').map((d) => [d.host, d.port, d.attempts, d.rule]), [['evil.example', 443, 2, 'global deny'], ['other.example', 80, 1, 'not allowed']]);
        assert.equal(store.egress.bytesUsed('sbx_g'), 3_000_000_005);
        assert.equal(store.egress.bytesUsed('sbx_none'), 0);
      });
    });

    test('port grants: by sandbox and port, by token; revoked; pruned past their expiry', async () => {
      await withStore((store) => {
        const g = { sandboxId: 'sbx_p', port: 8080, public: false, createdAt: '2026-01-01T00:00:00.000Z', expiresAt: '2026-01-01T01:00:00.000Z' };
        store.portAccess.insert({ ...g, id: 'pa_1', tokenSha256: 'aa' });
        store.portAccess.insert({ ...g, id: 'pa_2', tokenSha256: null, public: true, expiresAt: null, createdAt: '2026-01-01T00:00:01.000Z' });
        store.portAccess.insert({ ...g, id: 'pa_3', tokenSha256: 'bb', port: 3000 });
        assert.throws(() => store.portAccess.insert({ ...g, id: 'pa_4', tokenSha256: 'aa' }), isUniqueViolation);
        assert.deepEqual(store.portAccess.list('sbx_p', 8080).map((x) => [x.id, x.public]), [['pa_1', false], ['pa_2', true]]);
        assert.equal(store.portAccess.list('sbx_p').length, 3);
        assert.equal(store.portAccess.byToken('bb')?.port, 3000);
        assert.equal(store.portAccess.revoke('sbx_p', 3000), 1);
        assert.equal(store.portAccess.prune(new Date('2026-01-01T02:00:00.000Z')), 1);
        assert.deepEqual(store.portAccess.list('sbx_p').map((x) => x.id), ['pa_2']);
        assert.equal(store.portAccess.revoke('sbx_p'), 1);
      });
    });
  });
}
