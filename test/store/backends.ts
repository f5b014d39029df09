/**
 * The store's engines as the shared store suites see them (store-suite.ts, webhook-delivery-suite.ts):
 * a fresh database, a store on it, and SQL on it from outside the store. test/unit runs the suites on
 * SQLite; test/store/postgres-store.test.ts on a private PostgreSQL cluster (test/helpers/postgres.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { PgDb } from '../../src/store/pg-db.js';
import { SqliteDb } from '../../src/store/sqlite-db.js';
import { Store, type StoreOpts } from '../../src/store/store.js';
import type { PostgresCluster } from '../helpers/postgres.js';

export interface StoreBackend {
  name: 'sqlite' | 'postgres';
  /** A new, empty database: a file path or a URL. */
  fresh(): Promise<string>;
  open(where: string, opts?: StoreOpts): Store;
  /** The engine alone, not migrated (for the migration tests). */
  openDb(where: string): SqliteDb | PgDb;
  /** SQL run on the database from outside the store (to corrupt rows, to fake a newer schema). */
  raw(where: string, sql: string): Promise<void>;
  /** Records `version` as the database's schema version, as a newer agentbox would. */
  forceSchemaVersion(where: string, version: number): Promise<void>;
  /** Removes what the backend made (files); the PostgreSQL cluster is stopped by its owner. */
  cleanUp(): void;
}

export function sqliteBackend(): StoreBackend {
  const dir = mkdtempSync(join(tmpdir(), 'agentbox-store-'));
  let seq = 0;
  const raw = (path: string, sql: string): void => {
    const db = new Database(path);
    try {
      db.exec(sql);
    } finally {
      db.close();
    }
  };
  return {
    name: 'sqlite',
    fresh: async () => join(dir, `t${++seq}`, 'agentbox.db'),
    open: (path, opts) => Store.open(path, opts),
    openDb: (path) => SqliteDb.open(path),
    raw: async (path, sql) => raw(path, sql),
    forceSchemaVersion: async (path, version) => raw(path, `PRAGMA user_version = ${version}`),
    cleanUp: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export function postgresBackend(cluster: PostgresCluster): StoreBackend {
  return {
    name: 'postgres',
    fresh: () => cluster.createDatabase(),
    open: (url, opts) => Store.connect(url, opts),
    openDb: (url) => PgDb.connect(url),
    raw: async (url, sql) => {
      await cluster.query(url, sql);
    },
    forceSchemaVersion: async (url, version) => {
      await cluster.query(url, 'INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)', [version, 'from the future', new Date().toISOString()]);
    },
    cleanUp: () => undefined,
  };
}
