/**
 * The store on a real PostgreSQL (a private cluster, test/helpers/postgres.ts): the shared suites that
 * test/unit runs on SQLite, then what only PostgreSQL has: replicas migrating one new database at once,
 * transactions on the worker's connection, the typed errors of a bad URL or an unreachable server.
 * Needs the PostgreSQL server binaries; root is not needed (as root the server runs as `postgres`).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, describe, test } from 'node:test';
import { BadRequestError, InternalError, RuntimeUnavailableError } from '../../src/contract/errors.js';
import { resolvePaths } from '../../src/core/config.js';
import { MIGRATIONS } from '../../src/store/migrations.js';
import { PgDb, PgError } from '../../src/store/pg-db.js';
import { isUniqueViolation } from '../../src/store/sql-db.js';
import { Store } from '../../src/store/store.js';
import { postgresBin, startPostgres, type PostgresCluster } from '../helpers/postgres.js';
import { postgresBackend } from './backends.js';
import { storeSuite } from './store-suite.js';
import { webhookDeliverySuite } from './webhook-delivery-suite.js';

const found = postgresBin();
/** Ends every connection agentbox holds to the current database, as a server restart or failover would. */
const TERMINATE = "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'agentbox' AND datname = current_database()";
// Durability is not under test: without fsync the cluster starts and creates databases faster.
const cluster: PostgresCluster | undefined = 'skip' in found ? undefined : await startPostgres({ settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' } });
after(() => cluster?.stop());

if (cluster === undefined) {
  test('the store on PostgreSQL', { skip: 'skip' in found ? found.skip : '' }, () => undefined);
} else {
  const pgc = cluster;
  storeSuite(postgresBackend(pgc));
  webhookDeliverySuite(postgresBackend(pgc));

  describe('postgres only', () => {
    test('replicas that start at once on one new database migrate it once, and all open it', async () => {
      const url = await pgc.createDatabase();
      const storeModule = new URL('../../src/store/store.js', import.meta.url).href;
      const startAt = Date.now() + 1500; // every process connects at the same moment, after its start-up
      const script = `
        const { Store } = await import(${JSON.stringify(storeModule)});
        while (Date.now() < ${startAt}) {}
        const s = Store.connect(process.env.URL);
        console.log(s.schemaVersion);
        s.close();`;
      const runs = Array.from({ length: 4 }, () => new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, URL: url }, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (out += d.toString()));
        child.on('close', (code) => resolve({ code, out }));
      }));
      const results = await Promise.all(runs);
      for (const r of results) assert.deepEqual([r.code, r.out.trim()], [0, String(MIGRATIONS.length)], r.out);
      const rows = await pgc.query<{ version: number }>(url, 'SELECT version FROM schema_version ORDER BY version');
      assert.deepEqual(rows.map((r) => r.version), MIGRATIONS.map((m) => m.version), 'each migration applied exactly once');
    });

    test('a transaction runs on one connection: others see nothing until COMMIT; a throw rolls it all back', async () => {
      const url = await pgc.createDatabase();
      const db = PgDb.connect(url);
      const other = PgDb.connect(url);
      try {
        db.exec('CREATE TABLE t (x INTEGER PRIMARY KEY)');
        const insert = db.prepare<[number]>('INSERT INTO t (x) VALUES (?)');
        const count = (on: PgDb): number => on.prepare<[], { n: number }>('SELECT count(*) AS n FROM t').get()?.n ?? -1;
        db.transaction(() => {
          insert.run(1);
          insert.run(2);
          assert.equal(count(db), 2, 'the transaction sees its own rows');
          assert.equal(count(other), 0, 'another connection sees rows before COMMIT');
        });
        assert.equal(count(other), 2);

        assert.throws(() => db.transaction(() => {
          insert.run(3);
          throw new Error('boom');
        }), /boom/);
        assert.equal(count(db), 2, 'a throw inside the transaction kept its row');

        // A failing statement aborts the transaction; the error is the statement's, and the connection works on.
        assert.throws(() => db.transaction(() => {
          insert.run(4);
          insert.run(1);
        }), isUniqueViolation);
        assert.equal(count(db), 2);

        // Nested: the inner one is a savepoint, rolled back alone.
        db.transaction(() => {
          insert.run(5);
          assert.throws(() => db.transaction(() => {
            insert.run(6);
            throw new Error('inner');
          }), /inner/);
        });
        assert.deepEqual(db.prepare<[], { x: number }>('SELECT x FROM t ORDER BY x').all().map((r) => r.x), [1, 2, 5]);
      } finally {
        db.close();
        other.close();
      }
    });

    test('a dropped connection is replaced at the next statement; inside a transaction the transaction fails instead', async () => {
      const url = await pgc.createDatabase();
      const store = Store.connect(url);
      const db = PgDb.connect(url);
      const kill = async (): Promise<void> => {
        const killed = await pgc.query<{ ok: boolean }>(url, TERMINATE);
        assert.ok(killed.length >= 1 && killed.every((k) => k.ok));
        await new Promise((r) => setTimeout(r, 200)); // the worker hears of it ('error' on the idle client)
      };
      try {
        store.addExecMs('alice', '2026-01-01', 5);
        await kill();
        store.addExecMs('alice', '2026-01-01', 5);
        assert.equal(store.execMsOn('alice', '2026-01-01'), 10, 'an idle connection that dropped was not replaced');

        db.exec('CREATE TABLE t (x INTEGER)');
        const insert = db.prepare<[number]>('INSERT INTO t (x) VALUES (?)');
        assert.throws(() => db.transaction(() => {
          insert.run(1);
          pgc.querySync(url, TERMINATE);
          insert.run(2);
        }), (err: unknown) => err instanceof PgError, 'a statement after the drop went through');
        assert.deepEqual(db.prepare<[], { n: number }>('SELECT count(*) AS n FROM t').get(), { n: 0 }, 'half a transaction was committed');
      } finally {
        store.close();
        db.close();
      }
    });

    test('the store\'s own transactions roll back whole (insertExec: the insert and the ring trim)', async () => {
      const url = await pgc.createDatabase();
      const store = Store.connect(url, { execsPerSandbox: 2 });
      try {
        const at = '2026-01-01T00:00:00.000Z';
        store.insertExec({ id: 'exec_1', sandboxId: 'sbx_1', tenant: 'alice', cmd: ['true'], startedAt: at });
        assert.throws(() => store.insertExec({ id: 'exec_1', sandboxId: 'sbx_1', tenant: 'alice', cmd: ['again'], startedAt: at }), isUniqueViolation);
        assert.deepEqual(store.listExecs('sbx_1').map((e) => e.cmd), [['true']]);
      } finally {
        store.close();
      }
    });

    test('a snapshot name taken twice is a unique violation the manager turns into a conflict', async () => {
      const url = await pgc.createDatabase();
      const store = Store.connect(url);
      try {
        const snap = { id: 'snap_1', tenant: 'alice', name: 'base', sandboxId: 'sbx_1', image: 'busybox', diskMb: 16, createdAt: new Date().toISOString(), labels: {}, memory: false };
        store.snapshots.begin(snap);
        assert.throws(() => store.snapshots.begin({ ...snap, id: 'snap_2' }), isUniqueViolation);
        store.snapshots.begin({ ...snap, id: 'snap_3', tenant: 'bob' });
        assert.ok(store.snapshots.markReady('snap_1', 5_000_000_000, 'ab'), 'bytes beyond 2^31 fit');
        assert.equal(store.snapshots.tenantBytes('alice'), 5_000_000_000);
      } finally {
        store.close();
      }
    });

    test('an unreachable server, a refused login, a missing database: RuntimeUnavailableError with a hint, no password in it', async () => {
      const url = new URL(await pgc.createDatabase());
      const password = decodeURIComponent(url.password);
      const closedPort = new URL(url.href);
      closedPort.port = '1';
      const wrongPassword = new URL(url.href);
      wrongPassword.password = 'not-the-password';
      const noDatabase = new URL(url.href);
      noDatabase.pathname = '/no_such_database';
      for (const [bad, hint] of [[closedPort, /pg_isready/], [wrongPassword, /user and password/], [noDatabase, /create the database/]] as const) {
        assert.throws(() => Store.connect(bad.href), (err: unknown) => {
          assert.ok(err instanceof RuntimeUnavailableError, String(err));
          assert.equal(err.code, 'runtime_unavailable');
          assert.match(err.hint ?? '', hint);
          assert.ok(!err.message.includes(password) && !err.message.includes('not-the-password'), err.message);
          return true;
        });
      }
    });

    test('a URL that is not a postgres:// URL is a BadRequestError naming AGENTBOX_DATABASE_URL', () => {
      for (const bad of ['not a url', 'mysql://u:p@127.0.0.1/db', 'postgres:///db']) {
        assert.throws(() => Store.connect(bad), (err: unknown) => err instanceof BadRequestError && /AGENTBOX_DATABASE_URL/.test(err.message) && err.hint !== undefined, bad);
      }
    });

    test('a database with a newer schema is refused, and left as it was', async () => {
      const url = await pgc.createDatabase();
      Store.connect(url).close();
      await pgc.query(url, "INSERT INTO schema_version (version, name, applied_at) VALUES (99, 'future', 'x')");
      assert.throws(() => Store.connect(url), (err: unknown) => err instanceof InternalError && /version 99 is newer/.test(err.message) && /AGENTBOX_DATABASE_URL/.test(err.hint ?? ''));
      const rows = await pgc.query<{ n: string }>(url, 'SELECT count(*) AS n FROM schema_version');
      assert.equal(Number(rows[0]?.n), MIGRATIONS.length + 1);
    });

    test('AGENTBOX_DATABASE_URL is the daemon\'s store (config), trimmed; unset or empty: the SQLite file', () => {
      assert.equal(resolvePaths({ AGENTBOX_HOME: '/h', AGENTBOX_DATABASE_URL: ' postgres://a@b/c ' }).databaseUrl, 'postgres://a@b/c');
      assert.equal(resolvePaths({ AGENTBOX_HOME: '/h' }).databaseUrl, null);
      assert.equal(resolvePaths({ AGENTBOX_HOME: '/h', AGENTBOX_DATABASE_URL: '' }).databaseUrl, null);
    });
  });
}
