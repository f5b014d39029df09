/**
 * The store on SQLite: the shared suite (test/store/store-suite.ts, also run on PostgreSQL by
 * test/store/postgres-store.test.ts), then what only SQLite has: WAL, file modes, :memory:.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { MIGRATIONS } from '../../src/store/migrations.js';
import { Store } from '../../src/store/store.js';
import { sqliteBackend } from '../store/backends.js';
import { storeSuite } from '../store/store-suite.js';
import { put, sandbox } from '../helpers/store-rows.js';

storeSuite(sqliteBackend());

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


describe('sqlite only', () => {
  test('the version is PRAGMA user_version; the journal is WAL', () => {
    const path = dbPath();
    withStore(() => undefined, path);
    const raw = new Database(path, { readonly: true });
    try {
      assert.equal(raw.pragma('user_version', { simple: true }), MIGRATIONS.length);
      assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
    } finally {
      raw.close();
    }
  });

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

  test('a reader beside another connection\'s write transaction still reads, and sees the old state (WAL)', () => {
    const path = dbPath();
    withStore((a) => {
      put(a, sandbox('sbx_from_a'));
      a.setState('sbx_from_a', 'stopped');
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
    }, path);
  });
});
