/**
 * The store's seam over its SQL engine: what the store modules need, and nothing more. Two engines
 * implement it: SQLite through better-sqlite3 (sqlite-db.ts) and PostgreSQL through a worker thread
 * (pg-db.ts). Both are synchronous, because the whole core calls the store synchronously.
 *
 * Statements are written with SQLite's placeholders, `?` (positional) or `@name` (one object of
 * named values), in both dialects; the PostgreSQL engine turns them into `$n` (toNumbered). Where the
 * two engines need different SQL, the statement gives both texts side by side ({ sqlite, postgres }).
 */
import { InternalError } from '../contract/errors.js';

export type Dialect = 'sqlite' | 'postgres';

/** One text both engines run, or one per engine. */
export type SqlText = string | { readonly sqlite: string; readonly postgres: string };

/** A value a statement binds: what both better-sqlite3 and pg accept alike. */
export type SqlValue = string | number | bigint | Buffer | null;

export interface RunResult {
  /** Rows inserted, updated or deleted. */
  changes: number;
}

/**
 * A prepared statement. P is the tuple of bind arguments: positional values, or a single object
 * for `@name` placeholders, as with better-sqlite3.
 */
export interface SqlStatement<P extends unknown[] = unknown[], R = unknown> {
  run(...params: P): RunResult;
  get(...params: P): R | undefined;
  all(...params: P): R[];
}

export interface SqlDb {
  readonly dialect: Dialect;
  /** False once closed. */
  readonly open: boolean;
  prepare<P extends unknown[] = unknown[], R = unknown>(sql: SqlText): SqlStatement<P, R>;
  /** Runs a script of statements without parameters (migrations). */
  exec(script: string): void;
  /**
   * Runs fn in a transaction: committed when fn returns, rolled back when it throws (and the error
   * rethrown). Nested calls become savepoints. fn must be synchronous. A statement that fails inside
   * fn should end it: on PostgreSQL it aborts the transaction (later statements fail until the
   * rollback), where SQLite would carry on; no store module catches one inside a transaction.
   */
  transaction<T>(fn: () => T): T;
  close(): void;
}

/** The text of a statement for this dialect. */
export function sqlFor(sql: SqlText, dialect: Dialect): string {
  return typeof sql === 'string' ? sql : sql[dialect];
}

/** A unique or primary-key constraint refused the write, on either engine. */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  // 23505: PostgreSQL's unique_violation (pg-db.ts keeps the SQLSTATE as the error's code).
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === '23505';
}

/** A statement's text with `$n` placeholders, and how to order the call's arguments for them. */
export interface NumberedSql {
  text: string;
  /** The `@name`s in `$n` order; null when the statement uses `?` (or nothing). */
  names: string[] | null;
}

/**
 * SQLite placeholders to PostgreSQL's: each `?` becomes the next `$n`; each distinct `@name` gets one
 * `$n` (used as often as it appears). Quoted strings, quoted identifiers and comments are skipped, so
 * `'a?b'` stays as it is; `@>` (jsonb containment) is an operator, not a name. Nothing else is translated.
 */
export function toNumbered(sql: string): NumberedSql {
  let out = '';
  let positional = 0;
  const names: string[] = [];
  let i = 0;
  while (i < sql.length) {
    const c = sql[i]!;
    if (c === "'" || c === '"') {
      const end = closingQuote(sql, i, c);
      out += sql.slice(i, end);
      i = end;
    } else if (c === '-' && sql[i + 1] === '-') {
      const nl = sql.indexOf('\n', i);
      const end = nl < 0 ? sql.length : nl;
      out += sql.slice(i, end);
      i = end;
    } else if (c === '?') {
      out += `$${++positional}`;
      i += 1;
    } else if (c === '@' && /[A-Za-z_]/.test(sql[i + 1] ?? '')) {
      const name = /^[A-Za-z_]\w*/.exec(sql.slice(i + 1))![0];
      let n = names.indexOf(name);
      if (n < 0) n = names.push(name) - 1;
      out += `$${n + 1}`;
      i += 1 + name.length;
    } else {
      out += c;
      i += 1;
    }
  }
  if (positional > 0 && names.length > 0) throw new InternalError(`a statement mixes ? and @name placeholders: ${sql.trim().slice(0, 80)}`);
  return { text: out, names: names.length > 0 ? names : null };
}

/** Index just past the quote that closes the one at `start` (a doubled quote is an escaped one). */
function closingQuote(sql: string, start: number, q: string): number {
  let i = start + 1;
  for (;;) {
    const j = sql.indexOf(q, i);
    if (j < 0) return sql.length;
    if (sql[j + 1] === q) {
      i = j + 2;
      continue;
    }
    return j + 1;
  }
}

/** The call's arguments in `$n` order: the named object's values by name, or the positional ones. */
export function bindValues(numbered: NumberedSql, params: readonly unknown[]): SqlValue[] {
  if (numbered.names === null) return params.map(checkValue);
  const bag = params[0];
  if (params.length !== 1 || typeof bag !== 'object' || bag === null || Buffer.isBuffer(bag) || Array.isArray(bag)) {
    throw new InternalError('a statement with @name placeholders takes one object of values');
  }
  return numbered.names.map((name) => {
    if (!(name in bag)) throw new InternalError(`missing named parameter @${name}`);
    return checkValue((bag as Record<string, unknown>)[name]);
  });
}

function checkValue(v: unknown): SqlValue {
  if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint' || Buffer.isBuffer(v)) return v;
  throw new InternalError(`a statement cannot bind a ${v === undefined ? 'undefined' : typeof v} value`);
}
