/**
 * Hibernating gVisor sandboxes: `docker checkpoint create` (runsc checkpoint) writes the sandbox's
 * memory and processes to disk and stops the container, which frees its memory; `docker start
 * --checkpoint` brings the same processes back. Its disk (/workspace, /tmp) stays mounted on the host.
 *
 * Measured on Debian 12's runsc (release 20221219) with dockerd 20.10: checkpoint ~0.4 s, restore ~0.8 s
 * for a small sandbox. What does not work there, and is therefore refused: runc (it would need CRIU,
 * whose `criu check` fails on this kernel), `--leave-running` (runsc panics, killing the container),
 * and any sandbox that may hold a connection to a host Unix socket (its egress proxy's; one in a
 * named volume another sandbox listens on; the exec agent's, which `ExecRouter.park` closes first):
 * the checkpoint fails on it, and a failed checkpoint kills the container. The checkpoint lives under dockerd's data root, with the container; it goes with it.
 * That runsc also leaves a restored sandbox registered after its next checkpoint: see clearStaleRunscState.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, realpathSync } from 'node:fs';
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { InternalError } from '../../contract/errors.js';
import { runTool } from '../../storage/host-tools.js';
import type { HibernateKind, ProbeResult } from '../types.js';
import { statusOf } from './engine.js';

/** The one checkpoint a hibernated sandbox's container has; removed once the sandbox is back. */
export const HIBERNATE_CHECKPOINT = 'agentbox-hibernate';

export const EXPERIMENTAL_HINT = 'set "experimental": true in /etc/docker/daemon.json and restart dockerd (scripts/start-dockerd.sh does)';

/** Whether a sandbox of this kind can be hibernated by this Engine. */
export async function hibernationSupport(docker: Docker, kind: HibernateKind): Promise<ProbeResult> {
  if (kind.isolation !== 'gvisor') {
    return { ok: false, reason: `a ${kind.isolation} sandbox of the docker runtime cannot be hibernated (runc would need CRIU, which does not work on this kernel)`, hint: 'use --isolation gvisor' };
  }
  if (kind.network) {
    return { ok: false, reason: 'a gVisor sandbox with egress holds connections to its proxy on the host, which a checkpoint cannot save', hint: 'hibernate sandboxes with egress none, or use pauseAfter mode freeze' };
  }
  if (kind.volumes) {
    // Another sandbox (a local one) may listen on a Unix socket in a shared volume, and one connection to it would fail the checkpoint.
    return { ok: false, reason: 'a sandbox with named volumes may hold connections to host sockets in them, which a checkpoint cannot save (and a failed checkpoint ends the sandbox)', hint: 'hibernate sandboxes without volumes, or use pauseAfter mode freeze' };
  }
  const info = (await docker.info()) as { ExperimentalBuild?: boolean };
  if (!info.ExperimentalBuild) {
    return { ok: false, reason: 'dockerd runs without its experimental features, and docker checkpoint is one', hint: EXPERIMENTAL_HINT };
  }
  return { ok: true };
}

interface DialOpts {
  path: string;
  method: 'GET' | 'POST' | 'DELETE';
  statusCodes: Record<number, true | string>;
  options?: Record<string, unknown>;
  allowEmpty?: boolean;
}

/** The Engine's checkpoint routes, which dockerode's types leave out, through its HTTP client. */
function dial(docker: Docker, opts: DialOpts): Promise<unknown> {
  const modem = docker.modem as { dial(o: DialOpts, cb: (err: unknown, data: unknown) => void): void };
  return new Promise((resolve, reject) => modem.dial(opts, (err, data) => (err ? reject(err) : resolve(data))));
}

const CODES = { 404: 'no such container', 409: 'conflict', 500: 'server error' } as const;

/** Save the container's memory and processes and stop it. A stale checkpoint of an earlier hibernation goes first. */
export async function checkpointContainer(docker: Docker, containerId: string): Promise<void> {
  await deleteCheckpoint(docker, containerId, HIBERNATE_CHECKPOINT);
  await dial(docker, { path: `/containers/${containerId}/checkpoints`, method: 'POST', allowEmpty: true, options: { CheckpointID: HIBERNATE_CHECKPOINT, Exit: true }, statusCodes: { 200: true, 201: true, 204: true, ...CODES } });
}

/** Restores from a checkpoint, one at a time (see restoreContainer). */
let restores: Promise<void> = Promise.resolve();

/**
 * Start the container from one of its checkpoints (the hibernation's by default), then drop that checkpoint.
 *
 * dockerd 20.10 uploads the checkpoint directory, as a tar, into containerd's content store by its
 * digest, and fails the start ("commit failed: content sha256:… already exists") when those exact
 * bytes are there already: a fork's children and its parent restore copies of one checkpoint, and
 * restores of one container met the same (seen in CI, about one run in two on a busy host). A file
 * of random bytes written into the directory first makes every upload its own; runsc reads only its
 * image files. Restores also take turns.
 */
export async function restoreContainer(docker: Docker, dockerRoot: string, containerId: string, checkpoint = HIBERNATE_CHECKPOINT): Promise<void> {
  const turn = restores.then(async () => {
    await writeFile(join(checkpointDir(dockerRoot, containerId, checkpoint), 'agentbox-restore-nonce'), randomBytes(16).toString('hex'));
    // An empty body: the Engine refuses a start with options in it (since API 1.24).
    await dial(docker, { path: `/containers/${containerId}/start?`, method: 'POST', options: { _query: { checkpoint }, _body: {} }, statusCodes: { 204: true, 304: true, ...CODES } });
  });
  restores = turn.catch(() => undefined);
  await turn;
  await dropCheckpoint(docker, containerId, checkpoint);
}

/** Remove a checkpoint; one that is not there is fine, another failure is thrown. */
async function deleteCheckpoint(docker: Docker, containerId: string, checkpoint: string): Promise<void> {
  await dial(docker, { path: `/containers/${containerId}/checkpoints/${checkpoint}`, method: 'DELETE', statusCodes: { 200: true, 204: true, ...CODES } }).catch((err: unknown) => {
    if (statusOf(err) !== 404 && !/no such|not exist|not found/i.test(String((err as Error).message))) throw err;
  });
}

/** Remove a checkpoint no longer needed, whatever the Engine says (it goes with its container anyway). */
export async function dropCheckpoint(docker: Docker, containerId: string, checkpoint: string): Promise<void> {
  await deleteCheckpoint(docker, containerId, checkpoint).catch(() => undefined);
}

/*
 * Memory images for forks. dockerd 20.10 restores only from a checkpoint in the container's own
 * directory (`start --checkpoint-dir` is refused), so an image is a copy of the hibernation's
 * checkpoint kept beside it in the parent container's directory (it goes when that container does),
 * and a child gets its own copy in its directory before it starts. `<containerId>/<checkpoint>`.
 */
const FORK_CHECKPOINT = /^([0-9a-f]{64})\/(agentbox-fork-[0-9a-f]{16})$/;

function checkpointDir(dockerRoot: string, containerId: string, checkpoint: string): string {
  return join(dockerRoot, 'containers', containerId, 'checkpoints', checkpoint);
}

/** A copy of a hibernated container's checkpoint, as a memory image reference. */
export async function copyHibernation(dockerRoot: string, containerId: string): Promise<string> {
  const name = `agentbox-fork-${randomBytes(8).toString('hex')}`;
  const from = checkpointDir(dockerRoot, containerId, HIBERNATE_CHECKPOINT);
  if (!existsSync(from)) throw new InternalError(`the container ${containerId} has no hibernation checkpoint in ${dockerRoot} to copy`, { hint: 'is dockerd\'s data root on this host?' });
  await cp(from, checkpointDir(dockerRoot, containerId, name), { recursive: true, errorOnExist: true, force: false, preserveTimestamps: true });
  return `${containerId}/${name}`;
}

export function parseMemoryImage(image: string): { containerId: string; checkpoint: string } {
  const m = FORK_CHECKPOINT.exec(image);
  if (!m?.[1] || !m[2]) throw new InternalError(`not a memory image of the docker runtime: ${image}`);
  return { containerId: m[1], checkpoint: m[2] };
}

/** Put a memory image into a new (created, not started) container's directory, under the image's checkpoint name. */
export async function placeMemoryImage(dockerRoot: string, image: string, containerId: string): Promise<string> {
  const { containerId: from, checkpoint } = parseMemoryImage(image);
  await mkdir(join(dockerRoot, 'containers', containerId, 'checkpoints'), { recursive: true, mode: 0o700 });
  await cp(checkpointDir(dockerRoot, from, checkpoint), checkpointDir(dockerRoot, containerId, checkpoint), { recursive: true, errorOnExist: true, force: false, preserveTimestamps: true });
  return checkpoint;
}

/** Whether a stopped container is a hibernated sandbox (it has the checkpoint), not a dead one. */
export async function hasHibernateCheckpoint(docker: Docker, containerId: string): Promise<boolean> {
  try {
    const found = (await dial(docker, { path: `/containers/${containerId}/checkpoints`, method: 'GET', statusCodes: { 200: true, ...CODES } })) as { Name?: string }[] | null;
    return (found ?? []).some((c) => c.Name === HIBERNATE_CHECKPOINT);
  } catch (err) {
    if (statusOf(err) === 404) return false;
    throw err;
  }
}

/** Where dockerd keeps its OCI runtimes' state (`<exec-root>/runtime-<name>/<namespace>`). */
function runscStateFiles(containerId: string): string[] {
  const found: string[] = [];
  // /var/run is usually a link to /run: each real directory once.
  const roots = new Set(['/run/docker', '/var/run/docker'].filter((d) => existsSync(d)).map((d) => realpathSync(d)));
  for (const execRoot of roots) {
    let entries: string[];
    try {
      entries = readdirSync(execRoot).filter((e) => e.startsWith('runtime-'));
    } catch {
      continue;
    }
    for (const e of entries) {
      for (const ns of readdirSync(join(execRoot, e), { withFileTypes: true })) {
        const file = join(execRoot, e, ns.name, `${containerId}_sandbox:${containerId}.state`);
        if (ns.isDirectory() && existsSync(file)) found.push(file);
      }
    }
  }
  return found;
}

/**
 * runsc (release 20221219) keeps a sandbox it restored from a checkpoint registered as "paused" once
 * that sandbox is checkpointed again: its sentry has exited and the checkpoint is whole, but the next
 * restore is refused with "id already in use". Its own `delete --force` removes the record (and then
 * panics on the same invalid paused → stopped transition, which is why its exit status is not looked at).
 * Call only for a container the Engine reports stopped or has removed.
 */
export async function clearStaleRunscState(runscPath: () => Promise<string>, containerId: string): Promise<void> {
  for (const file of runscStateFiles(containerId)) {
    const root = join(file, '..');
    await runTool(await runscPath(), ['--root', root, 'delete', '--force', containerId], { timeoutMs: 30_000 }).catch(() => undefined);
    if (existsSync(file)) throw new InternalError(`runsc still has a record of the hibernated container ${containerId} in ${root}`, { hint: `runsc --root ${root} delete --force ${containerId}` });
  }
}
