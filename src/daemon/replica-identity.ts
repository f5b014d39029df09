/**
 * Who this daemon is among replicas on one store (core/manager/replica.ts): an id that survives its
 * restarts, so a restarted replica takes back its own sandboxes, and where its API can be reached.
 * AGENTBOX_REPLICA_ID names it (a StatefulSet's pod name); otherwise an id made once and kept in the home.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BadRequestError } from '../contract/errors.js';
import type { ReplicaIdentity } from '../core/manager.js';

const ID = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;

export function replicaIdentity(home: string, env: NodeJS.ProcessEnv): ReplicaIdentity {
  const id = env.AGENTBOX_REPLICA_ID?.trim() || homeReplicaId(home);
  if (!ID.test(id)) {
    throw new BadRequestError(`AGENTBOX_REPLICA_ID ${JSON.stringify(id)} is not a replica id`, { hint: 'use 1 to 63 lower-case letters, digits, dots, dashes or underscores, starting and ending with a letter or digit' });
  }
  const url = env.AGENTBOX_ADVERTISE_URL?.trim();
  if (url && !/^https?:\/\/[^\s/]+/.test(url)) {
    throw new BadRequestError(`AGENTBOX_ADVERTISE_URL ${JSON.stringify(url)} is not an http(s) URL`, { hint: 'the address other replicas\' clients reach this one at, e.g. http://10.0.0.5:8080' });
  }
  return { id, ...(url ? { url: url.replace(/\/+$/, '') } : {}) };
}

/** Made once per home (we hold its lock): the same replica across restarts. */
function homeReplicaId(home: string): string {
  const file = join(home, 'replica-id');
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const id = `rep-${randomBytes(5).toString('hex')}`;
  writeFileSync(file, `${id}\n`, { mode: 0o600 });
  return id;
}
