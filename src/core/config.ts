/** Where things live on the host, from the environment (ARCHITECTURE: Environment). */
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Paths {
  home: string;
  images: string;
  /** The SQLite file of the store, used unless databaseUrl is set. */
  db: string;
  /** The store's PostgreSQL database instead of the SQLite file. @default AGENTBOX_DATABASE_URL */
  databaseUrl: string | null;
  socket: string;
  /** The disk store: every sandbox's disk, snapshots and volumes (storage/disk-store.ts). */
  storage: string;
  /** Short stable tag of the home, used to scope host objects (cgroups, containers) per daemon. */
  homeTag: string;
  /**
   * Short stable tag of the store, used to scope the objects of a shared runtime (a cluster's pods):
   * every replica on one PostgreSQL database has the same, whatever its home; the home's tag with the
   * SQLite store.
   */
  storeTag: string;
}

/** The database a URL names (host, port, database), without its credentials or options; postgres: and postgresql: alike. */
function databaseIdentity(url: string): string {
  try {
    const u = new URL(url);
    return `postgres://${u.hostname}:${u.port || '5432'}${u.pathname}`;
  } catch {
    return url; // an invalid URL fails at the store's connect, with a clear error
  }
}

const tag = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 10);

export function resolvePaths(env: NodeJS.ProcessEnv = process.env): Paths {
  const home = resolve(env.AGENTBOX_HOME ?? join(homedir(), '.agentbox'));
  const databaseUrl = env.AGENTBOX_DATABASE_URL?.trim() || null;
  const homeTag = tag(home);
  return {
    home,
    images: resolve(env.AGENTBOX_IMAGES ?? join(home, 'images')),
    db: join(home, 'agentbox.db'),
    databaseUrl,
    socket: join(home, 'agentbox.sock'),
    storage: join(home, 'storage'),
    homeTag,
    storeTag: databaseUrl ? tag(databaseIdentity(databaseUrl)) : homeTag,
  };
}

export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The native helper built by `npm run build` (dist/native/agentbox-helper). */
export function helperPath(): string {
  return process.env.AGENTBOX_HELPER ?? join(packageRoot, 'dist', 'native', 'agentbox-helper');
}

/** The CLI entry point, used to start a detached daemon. */
export function cliEntry(): string {
  return join(packageRoot, 'dist', 'src', 'cli', 'main.js');
}

export const VERSION = '0.1.0';

/** sun_path holds 108 bytes; a directory of per-sandbox sockets must leave room for `/<sandbox id>/<name>.sock`. */
const MAX_SOCKET_BASE = 60;

/**
 * A directory for per-sandbox Unix sockets: `$home/<name>`, or, when that path is too long for a
 * socket address, a short one under /run/agentbox keyed by the home.
 */
export function socketBaseDir(home: string, name: string): string {
  const preferred = join(home, name);
  return preferred.length <= MAX_SOCKET_BASE ? preferred : `/run/agentbox/${name}-${createHash('sha256').update(home).digest('hex').slice(0, 12)}`;
}
