/** The SQLite store against real files: migrations, permissions, queries, exec ring, usage, WAL sharing, corrupt rows. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { InternalError } from '../../src/contract/errors.js';
import type { Sandbox, SandboxSpec, SandboxState } from '../../src/contract/model.js';
import { MIGRATIONS, migrate, schemaVersion, type Migration } from '../../src/store/migrations.js';
import { Store } from '../../src/store/store.js';

let dir: string;
let seq = 0;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'agentbox-store-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh database path per test, so tests cannot see each other's rows. */
function dbPath(): string {
  seq += 1;
  return join(dir, `t${seq}`, 'agentbox.db');
}

/** Opens a store for the length of one test body. */
function withStore<T>(fn: (store: Store, path: string) => T, path = dbPath()): T {
  const store = Store.open(path);
  try {
    return fn(store, path);
  } finally {
    store.close();
  }
}

function sandbox(id: string, over: Partial<Sandbox> = {}): Sandbox {
  return {
    id,
    tenant: 'alice',
    image: 'busybox',
    profile: null,
    runtime: 'local',
    isolation: 'namespaces',
    state: 'running',
    limits: { cpus: 1, memoryMb: 256, pids: 64, diskMb: 100 },
    egress: { mode: 'none', allow: [] },
    labels: {},
    createdAt: '2026-01-01T00:00:00.000Z',
    expiresAt: null,
    lastActiveAt: '2026-01-01T00:00:00.000Z',
    ...over,
  };
}

function specOf(sb: Sandbox): SandboxSpec {
  return {
    id: sb.id,
    tenant: sb.tenant,
    image: sb.image,
    profile: sb.profile,
    runtime: sb.runtime,
    isolation: sb.isolation,
    limits: sb.limits,
    egress: sb.egress,
    env: { LANG: 'C.UTF-8' },
    labels: sb.labels,
    ttlMs: 3_600_000,
    idleTimeoutMs: 900_000,
    execTimeoutMs: 120_000,
    outputLimitBytes: 2_097_152,
  };
}

function put(store: Store, sb: Sandbox): void {
  store.insertSandbox(sb, specOf(sb), 900_000);
}

const ids = (list: { sandbox: Sandbox }[]): string[] => list.map((s) => s.sandbox.id);

describe('migrations', () => {
  test('applied once; reopening keeps the data and user_version', () => {
    const path = dbPath();
    withStore((store) => {
      assert.equal(store.schemaVersion, MIGRATIONS.length);
      put(store, sandbox('sbx_keep'));
    }, path);
    withStore((store) => {
      assert.equal(store.schemaVersion, MIGRATIONS.length);
      assert.equal(store.getSandbox('sbx_keep')?.sandbox.id, 'sbx_keep');
    }, path);
    const raw = new Database(path, { readonly: true });
    try {
      assert.equal(schemaVersion(raw), MIGRATIONS.length);
      assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
    } finally {
      raw.close();
    }
  });

  test('a failing migration rolls back whole and leaves user_version where it was', () => {
    const db = new Database(':memory:');
    try {
      const next = MIGRATIONS.length + 1;
      const broken: Migration = { version: next, name: 'broken', sql: 'CREATE TABLE half (x INTEGER); SELECT * FROM no_such_table;' };
      assert.throws(() => migrate(db, [...MIGRATIONS, broken]), (err: unknown) => err instanceof InternalError && new RegExp(`migration ${next}`).test(err.message));
      assert.equal(schemaVersion(db), MIGRATIONS.length);
      const half = db.prepare("SELECT name FROM sqlite_master WHERE name = 'half'").get();
      assert.equal(half, undefined);
    } finally {
      db.close();
    }
  });

  test('a database from a newer agentbox is refused', () => {
    const path = dbPath();
    withStore(() => undefined, path);
    const raw = new Database(path);
    raw.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    raw.close();
    assert.throws(() => Store.open(path), (err: unknown) => err instanceof InternalError && /newer/.test(err.message));
  });

  test('versions must run 1, 2, 3, ...', () => {
    const db = new Database(':memory:');
    try {
      assert.throws(() => migrate(db, [{ version: 2, name: 'skips one', sql: '' }]), InternalError);
    } finally {
      db.close();
    }
  });
});

describe('open', () => {
  test('creates the directory 0700 and the database (and its WAL files) 0600', () => {
    const path = dbPath();
    withStore((store) => {
      put(store, sandbox('sbx_mode')); // a write, so the -wal file exists
      assert.equal(statSync(join(path, '..')).mode & 0o777, 0o700);
      for (const f of [path, `${path}-wal`, `${path}-shm`]) assert.equal(statSync(f).mode & 0o777, 0o600, f);
    }, path);
  });

  test(':memory: works', () => {
    withStore((store) => {
      put(store, sandbox('sbx_mem'));
      assert.equal(store.listSandboxes().length, 1);
    }, ':memory:');
  });

  test('close is idempotent', () => {
    const store = Store.open(dbPath());
    store.close();
    store.close();
  });
});

describe('sandboxes', () => {
  test('insert then get returns the sandbox, spec, runtime data and idle timeout', () => {
    withStore((store) => {
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

  test('a duplicate id is refused', () => {
    withStore((store) => {
      put(store, sandbox('sbx_dup'));
      assert.throws(() => put(store, sandbox('sbx_dup')), /UNIQUE/);
    });
  });

  test('list filters by tenant, states, labels and ended, oldest first', () => {
    withStore((store) => {
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

  test('markEnded records state, reason, who and when; countActive counts creating and running', () => {
    withStore((store) => {
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

  test('a sandbox ends once: a later end changes nothing, except that a stopped one can still be deleted', () => {
    withStore((store) => {
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

  test('purgeEnded removes sandboxes that ended before the cut-off, with their execs', () => {
    withStore((store) => {
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

describe('execs', () => {
  test('insert, finish, get and list (newest first), tails as Buffers', () => {
    withStore((store) => {
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

  test('the ring keeps the newest N per sandbox and leaves other sandboxes alone', () => {
    const store = Store.open(dbPath(), { execsPerSandbox: 3 });
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

  test('execs still running when a daemon starts are lost: ended then, exit code unknown; finished ones stay; a late finish changes nothing', () => {
    withStore((store) => {
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

  test('execsPerSandbox must be a positive integer', () => {
    assert.throws(() => Store.open(':memory:', { execsPerSandbox: 0 }), InternalError);
  });
});

describe('audit and usage', () => {
  test('audit entries come back newest first, filtered by sandbox', () => {
    withStore((store) => {
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

  test('exec time accumulates per tenant and day', () => {
    withStore((store) => {
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

describe('sharing and corruption', () => {
  test('two stores on one file see each other\'s writes (WAL)', () => {
    const path = dbPath();
    const a = Store.open(path);
    const b = Store.open(path);
    try {
      put(a, sandbox('sbx_from_a'));
      assert.equal(b.getSandbox('sbx_from_a')?.sandbox.id, 'sbx_from_a');
      b.markEnded('sbx_from_a', { state: 'stopped', reason: 'idle_timeout', endedBy: 'reaper', at: '2026-01-01T00:10:00.000Z' });
      assert.equal(a.getSandbox('sbx_from_a')?.sandbox.endReason, 'idle_timeout');
      b.addExecMs('alice', '2026-01-01', 10);
      a.addExecMs('alice', '2026-01-01', 5);
      assert.equal(b.execMsOn('alice', '2026-01-01'), 15);
      // a reader in the middle of a write transaction on the other connection still reads (WAL), and sees the old state
      const raw = new Database(path);
      try {
        raw.exec('BEGIN IMMEDIATE');
        raw.prepare("UPDATE sandboxes SET state = 'deleted' WHERE id = 'sbx_from_a'").run();
        assert.equal(a.getSandbox('sbx_from_a')?.sandbox.state, 'stopped');
        raw.exec('COMMIT');
        assert.equal(a.getSandbox('sbx_from_a')?.sandbox.state, 'deleted');
      } finally {
        raw.close();
      }
    } finally {
      a.close();
      b.close();
    }
  });

  test('a corrupt row is an InternalError that names the sandbox', () => {
    const path = dbPath();
    withStore((store) => {
      put(store, sandbox('sbx_good'));
      put(store, sandbox('sbx_bad_state'));
      put(store, sandbox('sbx_bad_json'));
      put(store, sandbox('sbx_bad_spec'));
      store.insertExec({ id: 'exec_bad', sandboxId: 'sbx_good', tenant: 'alice', cmd: ['x'], startedAt: '2026-01-01T00:00:00.000Z' });
      const raw = new Database(path);
      try {
        raw.prepare("UPDATE sandboxes SET state = 'exploded' WHERE id = 'sbx_bad_state'").run();
        raw.prepare("UPDATE sandboxes SET limits_json = '{not json' WHERE id = 'sbx_bad_json'").run();
        raw.prepare(`UPDATE sandboxes SET spec_json = '{"id":"sbx_someone_else"}' WHERE id = 'sbx_bad_spec'`).run();
        raw.prepare(`UPDATE execs SET cmd_json = '"a string"' WHERE id = 'exec_bad'`).run();
      } finally {
        raw.close();
      }
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
    }, path);
  });
});
