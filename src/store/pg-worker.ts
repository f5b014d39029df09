/**
 * The worker thread behind PgDb (pg-db.ts): it owns the PostgreSQL connections and runs each request
 * the main thread sends through synckit, while the main thread waits (Atomics.wait) for the answer.
 * One process has one such worker; each PgDb is one connection in it, named by a number.
 * Failures come back as data ({ ok: false }), never as thrown errors: synckit would clone an Error
 * without its SQLSTATE, and the main thread needs it (unique violations, the typed connect errors).
 */
import pg from 'pg';
import { runAsWorker } from 'synckit';
import type { PgFailure, PgRequest, PgResponse } from './pg-db.js';

// COUNT(*) and BIGINT columns (int8) and SUM() over them (numeric) come back as strings by default, lest
// a value beyond 2^53 lose precision; the store's values (row ids, bytes, milliseconds) stay far below
// that, and its row shapes want numbers, as SQLite gives them. Scoped to these clients, not pg's global table.
const INT8 = 20;
const NUMERIC = 1700;
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === INT8 || oid === NUMERIC) return (v: string) => Number(v);
    return pg.types.getTypeParser(oid, format ?? 'text');
  }) as typeof pg.types.getTypeParser,
};

const clients = new Map<number, { client: pg.Client; broken: Error | null }>();
let nextId = 1;
/** Server-side prepared statements: one name per distinct text, the same on every connection. */
const statementNames = new Map<string, string>();

async function handle(req: PgRequest): Promise<PgResponse> {
  try {
    switch (req.op) {
      case 'connect': {
        const client = new pg.Client({
          connectionString: req.url,
          types,
          connectionTimeoutMillis: req.connectTimeoutMs,
          query_timeout: req.queryTimeoutMs,
          application_name: 'agentbox',
        });
        const entry = { client, broken: null as Error | null };
        // A connection that drops while idle emits 'error' (an unhandled one would kill the worker);
        // the next request on it fails with that reason instead.
        client.on('error', (err) => {
          entry.broken = err;
        });
        await client.connect();
        const id = nextId++;
        clients.set(id, entry);
        return { ok: true, conn: id };
      }
      case 'query': {
        const client = clientOf(req.conn);
        let name = statementNames.get(req.text);
        if (name === undefined) {
          name = `agentbox_${statementNames.size + 1}`;
          statementNames.set(req.text, name);
        }
        const r = await client.query({ name, text: req.text, values: req.values });
        return { ok: true, rows: r.rows as unknown[], changes: r.rowCount ?? 0 };
      }
      case 'exec': {
        await clientOf(req.conn).query(req.script);
        return { ok: true };
      }
      case 'close': {
        const entry = clients.get(req.conn);
        clients.delete(req.conn);
        if (entry) await entry.client.end().catch(() => undefined);
        return { ok: true };
      }
    }
  } catch (err) {
    return { ok: false, error: failure(err) };
  }
}

function clientOf(conn: number): pg.Client {
  const entry = clients.get(conn);
  if (!entry) throw Object.assign(new Error('the PostgreSQL connection is closed'), { code: 'closed' });
  if (entry.broken) throw entry.broken;
  return entry.client;
}

function failure(err: unknown): PgFailure {
  const e = err as { message?: unknown; code?: unknown; detail?: unknown; constraint?: unknown };
  return {
    message: typeof e.message === 'string' ? e.message : String(err),
    code: typeof e.code === 'string' ? e.code : null,
    detail: typeof e.detail === 'string' ? e.detail : null,
    constraint: typeof e.constraint === 'string' ? e.constraint : null,
  };
}

runAsWorker(handle);
