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

interface Connection {
  client: pg.Client;
  /** Why the connection dropped (the server restarted, an admin ended it), until it is replaced. */
  broken: Error | null;
  /** Between BEGIN and COMMIT/ROLLBACK: a dropped connection then loses the transaction, never silently. */
  inTransaction: boolean;
  readonly config: pg.ClientConfig;
}

const connections = new Map<number, Connection>();
let nextId = 1;
/** Server-side prepared statements: one name per distinct text, the same on every connection. */
const statementNames = new Map<string, string>();

async function open(config: pg.ClientConfig): Promise<{ client: pg.Client; onError: (set: (err: Error) => void) => void }> {
  const client = new pg.Client(config);
  let report: (err: Error) => void = () => undefined;
  // A connection that drops while idle emits 'error' (an unhandled one would end the worker).
  client.on('error', (err) => report(err));
  await client.connect();
  return { client, onError: (set) => (report = set) };
}

async function handle(req: PgRequest): Promise<PgResponse> {
  try {
    switch (req.op) {
      case 'connect': {
        const config: pg.ClientConfig = {
          connectionString: req.url,
          types,
          connectionTimeoutMillis: req.connectTimeoutMs,
          query_timeout: req.queryTimeoutMs,
          application_name: 'agentbox',
        };
        const { client, onError } = await open(config);
        const conn: Connection = { client, broken: null, inTransaction: false, config };
        onError((err) => (conn.broken = err));
        const id = nextId++;
        connections.set(id, conn);
        return { ok: true, conn: id };
      }
      case 'query': {
        const client = await clientOf(req.conn);
        let name = statementNames.get(req.text);
        if (name === undefined) {
          name = `agentbox_${statementNames.size + 1}`;
          statementNames.set(req.text, name);
        }
        const r = await client.query({ name, text: req.text, values: req.values });
        return { ok: true, rows: r.rows as unknown[], changes: r.rowCount ?? 0 };
      }
      case 'exec': {
        const conn = connections.get(req.conn);
        if (conn && req.tx === 'end') {
          // The end of a transaction is its end even when it fails: the server has rolled back.
          conn.inTransaction = false;
          // A COMMIT must not go to a new connection, where it would "succeed" with nothing to commit.
          if (conn.broken) throw conn.broken;
        }
        const client = await clientOf(req.conn);
        await client.query(req.script);
        if (conn && req.tx === 'begin') conn.inTransaction = true;
        return { ok: true };
      }
      case 'close': {
        const conn = connections.get(req.conn);
        connections.delete(req.conn);
        if (conn) await conn.client.end().catch(() => undefined);
        return { ok: true };
      }
    }
  } catch (err) {
    return { ok: false, error: failure(err) };
  }
}

/**
 * The connection's client; a dropped one is replaced by a new connection first, unless a transaction
 * was open on it: that transaction is gone, and the caller must hear so (its ROLLBACK ends it).
 * The request that was in flight when the connection dropped is never retried: it may have been applied.
 */
async function clientOf(id: number): Promise<pg.Client> {
  const conn = connections.get(id);
  if (!conn) throw Object.assign(new Error('the PostgreSQL connection is closed'), { code: 'closed' });
  if (conn.broken === null) return conn.client;
  if (conn.inTransaction) throw conn.broken;
  conn.client.end().catch(() => undefined);
  const { client, onError } = await open(conn.config);
  conn.client = client;
  conn.broken = null;
  onError((err) => (conn.broken = err));
  return client;
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
