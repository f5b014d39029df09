/**
 * The PostgreSQL engine of the store, synchronous like the SQLite one: each call is posted to a worker
 * thread that owns the connection (pg-worker.ts), and the main thread blocks in Atomics.wait until the
 * answer is back (synckit). So the store keeps the synchronous contract the core relies on, and its
 * check-then-act sequences stay free of interleaving within this process.
 *
 * The cost: every statement holds the daemon's event loop for a full round trip to the server
 * (about 0.1-0.3 ms on loopback, more over a network; BENCHMARKS.md, "PostgreSQL store"), where SQLite
 * answers in microseconds. A slow or distant database slows every request of the daemon, not just
 * the one that asked. An async store is the later cure; this one is the bridge until then.
 *
 * Each PgDb is ONE connection in the worker. Because its caller is blocked for the whole of every
 * call, a pool would add no concurrency; and a transaction (BEGIN ... COMMIT/ROLLBACK) necessarily
 * runs on that one connection from start to end. A connection that drops (a server restart, a
 * failover) is replaced at the next statement, outside a transaction; the statement that was in
 * flight fails and is not retried.
 */
import { createSyncFn } from 'synckit';
import { BadRequestError, InternalError, RuntimeUnavailableError } from '../contract/errors.js';
import { bindValues, sqlFor, toNumbered, type NumberedSql, type SqlDb, type SqlStatement, type SqlText, type SqlValue } from './sql-db.js';

export type PgRequest =
  | { op: 'connect'; url: string; connectTimeoutMs: number; queryTimeoutMs: number }
  | { op: 'query'; conn: number; text: string; values: SqlValue[] }
  | { op: 'exec'; conn: number; script: string; tx?: 'begin' | 'end' }
  | { op: 'close'; conn: number };

export interface PgFailure {
  message: string;
  /** SQLSTATE for the server's errors, a Node code (ECONNREFUSED, ...) for the network's, or null. */
  code: string | null;
  detail: string | null;
  constraint: string | null;
}

export type PgResponse =
  | { ok: true; conn?: number; rows?: unknown[]; changes?: number }
  | { ok: false; error: PgFailure };

export interface PgConnectOpts {
  /** @default 5000 */
  connectTimeoutMs?: number;
  /**
   * A statement (or a migration's script) that takes longer fails; the daemon's event loop waits for
   * it meanwhile. @default 30000
   */
  queryTimeoutMs?: number;
}

/** A statement PostgreSQL refused; `code` is its SQLSTATE (23505: unique violation, ...). */
export class PgError extends Error {
  readonly code: string | null;
  readonly detail: string | null;
  readonly constraint: string | null;
  constructor(f: PgFailure) {
    super(f.message);
    this.name = 'PgError';
    this.code = f.code;
    this.detail = f.detail;
    this.constraint = f.constraint;
  }
}

type Call = (req: PgRequest) => PgResponse;
let bridge: Call | undefined;

/**
 * How long the main thread waits for the worker at most: a backstop for a worker that stopped
 * answering, well past pg's own connect and statement timeouts, which answer first.
 */
const BRIDGE_TIMEOUT_MS = 120_000;

/** One worker per process (synckit keeps one per worker file), started at the first connect. */
function call(req: PgRequest): PgResponse {
  bridge ??= createSyncFn<(req: PgRequest) => Promise<PgResponse>>(new URL('./pg-worker.js', import.meta.url).href, { timeout: BRIDGE_TIMEOUT_MS }) as Call;
  return bridge(req);
}

export class PgDb implements SqlDb {
  readonly dialect = 'postgres' as const;
  private closed = false;
  private depth = 0;

  private constructor(private readonly conn: number) {}

  /**
   * Connect to `postgres://` or `postgresql://` URL. A URL that does not parse is a BadRequestError;
   * a server that cannot be reached, or refuses the login, a RuntimeUnavailableError; both name the
   * server (never the password) and carry a hint.
   */
  static connect(url: string, opts: PgConnectOpts = {}): PgDb {
    const where = describeUrl(url);
    const connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
    const queryTimeoutMs = opts.queryTimeoutMs ?? 30_000;
    const r = call({ op: 'connect', url, connectTimeoutMs, queryTimeoutMs });
    if (!r.ok) {
      throw new RuntimeUnavailableError(`cannot connect to the PostgreSQL database ${where}: ${r.error.message}`, {
        hint: connectHint(r.error.code),
        cause: new PgError(r.error),
      });
    }
    if (r.conn === undefined) throw new InternalError('the PostgreSQL worker answered a connect without a connection');
    return new PgDb(r.conn);
  }

  get open(): boolean {
    return !this.closed;
  }

  prepare<P extends unknown[] = unknown[], R = unknown>(sql: SqlText): SqlStatement<P, R> {
    const numbered = toNumbered(sqlFor(sql, 'postgres'));
    return {
      run: (...params: P) => ({ changes: this.query(numbered, params).changes ?? 0 }),
      get: (...params: P) => withBuffers(this.query(numbered, params).rows?.[0]) as R | undefined,
      all: (...params: P) => (this.query(numbered, params).rows ?? []).map(withBuffers) as R[],
    };
  }

  exec(script: string): void {
    this.send({ op: 'exec', conn: this.conn, script });
  }

  /** BEGIN, COMMIT and ROLLBACK of the outermost transaction: the worker must know one is open. */
  private execTx(script: string, tx: 'begin' | 'end'): void {
    this.send({ op: 'exec', conn: this.conn, script, tx });
  }

  transaction<T>(fn: () => T): T {
    const level = this.depth;
    if (level === 0) this.execTx('BEGIN', 'begin');
    else this.exec(`SAVEPOINT agentbox_${level}`);
    this.depth += 1;
    let result: T;
    try {
      result = fn();
      if (typeof (result as { then?: unknown } | null)?.then === 'function') {
        throw new InternalError('a store transaction must be synchronous (its function returned a promise)');
      }
    } catch (err) {
      this.depth -= 1;
      try {
        if (level === 0) this.execTx('ROLLBACK', 'end');
        else this.exec(`ROLLBACK TO SAVEPOINT agentbox_${level}; RELEASE SAVEPOINT agentbox_${level}`);
      } catch {
        // The connection is gone, and the server rolls back what it leaves open: fn's error is the one to tell.
      }
      throw err;
    }
    this.depth -= 1;
    if (level === 0) this.execTx('COMMIT', 'end');
    else this.exec(`RELEASE SAVEPOINT agentbox_${level}`);
    return result;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    call({ op: 'close', conn: this.conn });
  }

  private query(numbered: NumberedSql, params: readonly unknown[]): PgResponse & { ok: true } {
    return this.send({ op: 'query', conn: this.conn, text: numbered.text, values: bindValues(numbered, params) });
  }

  private send(req: PgRequest): PgResponse & { ok: true } {
    if (this.closed) throw new InternalError('the store is closed');
    const r = call(req);
    if (!r.ok) throw new PgError(r.error);
    return r;
  }
}

/**
 * bytea columns arrive as Buffers in the worker but cross to this thread as plain Uint8Arrays (the
 * structured clone keeps no Buffer class); the rows' shapes promise Buffers, as better-sqlite3 gives them.
 */
function withBuffers(row: unknown): unknown {
  if (typeof row !== 'object' || row === null) return row;
  const r = row as Record<string, unknown>;
  for (const [k, v] of Object.entries(r)) {
    if (v instanceof Uint8Array && !Buffer.isBuffer(v)) r[k] = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  }
  return r;
}

/** host:port/database of a URL, for messages (the password stays out); a bad URL is a BadRequestError. */
export function describeUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new BadRequestError('AGENTBOX_DATABASE_URL is not a URL', { hint: 'write it as postgres://USER:PASSWORD@HOST:5432/DATABASE' });
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
    throw new BadRequestError(`AGENTBOX_DATABASE_URL must be a postgres:// or postgresql:// URL, not ${u.protocol}//`, {
      hint: 'write it as postgres://USER:PASSWORD@HOST:5432/DATABASE, or unset it to use the SQLite file in AGENTBOX_HOME',
    });
  }
  if (u.hostname === '' && !u.searchParams.has('host')) {
    throw new BadRequestError('AGENTBOX_DATABASE_URL names no host', { hint: 'write it as postgres://USER:PASSWORD@HOST:5432/DATABASE' });
  }
  const host = u.hostname || u.searchParams.get('host') || '';
  return `${host}${u.port ? `:${u.port}` : ''}${u.pathname}`;
}

function connectHint(code: string | null): string {
  switch (code) {
    case '28P01':
    case '28000':
      return 'check the user and password in AGENTBOX_DATABASE_URL';
    case '3D000':
      return 'create the database first (createdb), or name an existing one in AGENTBOX_DATABASE_URL';
    default:
      return 'check that PostgreSQL runs and accepts connections at the host and port of AGENTBOX_DATABASE_URL (pg_isready -d "$AGENTBOX_DATABASE_URL")';
  }
}
