/**
 * A private PostgreSQL cluster for tests and benchmarks: initdb into a temp dir, a server on a free
 * 127.0.0.1 port (its Unix socket in that dir, never /var/run/postgresql), scram-sha-256 passwords
 * for everyone, one login role `agentbox`, and a fresh database per ask. Run as the `postgres` user
 * when we are root (initdb refuses root), as ourselves otherwise. `stop()` stops the server and
 * removes the directory; an exit hook does the same if a test run dies first.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export interface PostgresCluster {
  /** postgres://agentbox:...@127.0.0.1:PORT/NAME of a new, empty database owned by the role agentbox. */
  createDatabase(): Promise<string>;
  /** Runs SQL as the superuser in the database of `url` (a URL from createDatabase). */
  query<R = Record<string, unknown>>(url: string, sql: string, values?: unknown[]): Promise<R[]>;
  /** The same, blocking (through psql): for a test whose thread is held by a store transaction. */
  querySync(url: string, sql: string): string;
  readonly port: number;
  stop(): Promise<void>;
}

/** The bin directory of the newest PostgreSQL the host has, or a reason there is none. */
export function postgresBin(): { bin: string } | { skip: string } {
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) {
    const bin = join(base, v, 'bin');
    if (existsSync(join(bin, 'initdb')) && existsSync(join(bin, 'pg_ctl'))) return { bin };
  }
  return { skip: 'PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)' };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** uid/gid to run the server as: the postgres user when we are root, ourselves otherwise. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

export interface ClusterOpts {
  /** Extra `-c name=value` server settings (fsync=off for speed in tests, none for the benchmark). */
  settings?: Record<string, string>;
}

export async function startPostgres(opts: ClusterOpts = {}): Promise<PostgresCluster> {
  const found = postgresBin();
  if ('skip' in found) throw new Error(found.skip);
  const { bin } = found;
  const user = serverUser();
  const dir = mkdtempSync(join(tmpdir(), 'agentbox-pg-'));
  const data = join(dir, 'data');
  const superPassword = randomBytes(12).toString('hex');
  const rolePassword = randomBytes(12).toString('hex');
  const pwfile = join(dir, 'pw');
  writeFileSync(pwfile, `${superPassword}\n`, { mode: 0o600 });
  if (user) {
    chownSync(dir, user.uid, user.gid);
    chownSync(pwfile, user.uid, user.gid);
  }
  chmodSync(dir, 0o700);
  const run = (cmd: string, args: string[]): void => {
    const r = spawnSync(join(bin, cmd), args, { ...(user ?? {}), cwd: dir, encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' } });
    if (r.status !== 0) throw new Error(`${cmd} failed (${r.status ?? r.signal}): ${r.stderr || r.stdout}`);
  };
  let started = false;
  const cleanUp = (): void => {
    if (started) spawnSync(join(bin, 'pg_ctl'), ['stop', '-D', data, '-m', 'immediate', '-w'], { ...(user ?? {}), cwd: dir, stdio: 'ignore' });
    started = false;
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', cleanUp);
  try {
    run('initdb', ['-D', data, '-U', 'postgres', '--pwfile', pwfile, '--auth=scram-sha-256', '--encoding=UTF8', '--locale=C.UTF-8', '--no-sync']);
    const port = await freePort();
    const settings: Record<string, string> = {
      listen_addresses: '127.0.0.1',
      port: String(port),
      unix_socket_directories: dir,
      max_connections: '100',
      ...opts.settings,
    };
    const o = Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`).join(' ');
    run('pg_ctl', ['start', '-D', data, '-w', '-t', '60', '-l', join(dir, 'server.log'), '-o', o]);
    started = true;
    const adminUrl = (db: string): string => `postgres://postgres:${superPassword}@127.0.0.1:${port}/${db}`;
    const admin = async <R>(db: string, sql: string, values?: unknown[]): Promise<R[]> => {
      const c = new pg.Client({ connectionString: adminUrl(db) });
      await c.connect();
      try {
        return (await c.query(sql, values)).rows as R[];
      } finally {
        await c.end();
      }
    };
    await admin('postgres', `CREATE ROLE agentbox LOGIN PASSWORD '${rolePassword}'`);
    let seq = 0;
    return {
      port,
      async createDatabase() {
        const name = `t${++seq}_${randomBytes(3).toString('hex')}`;
        await admin('postgres', `CREATE DATABASE ${name} OWNER agentbox`);
        return `postgres://agentbox:${rolePassword}@127.0.0.1:${port}/${name}`;
      },
      async query<R>(url: string, sql: string, values?: unknown[]) {
        return admin<R>(new URL(url).pathname.slice(1), sql, values);
      },
      querySync(url: string, sql: string) {
        const r = spawnSync(join(bin, 'psql'), ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-c', sql, adminUrl(new URL(url).pathname.slice(1))], { encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`);
        return r.stdout;
      },
      async stop() {
        process.off('exit', cleanUp);
        cleanUp();
      },
    };
  } catch (err) {
    process.off('exit', cleanUp);
    cleanUp();
    throw err;
  }
}
