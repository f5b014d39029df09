/**
 * Hibernating gVisor sandboxes: `docker checkpoint create` (runsc checkpoint) writes the sandbox's
 * memory and processes to disk and stops the container, which frees its memory; `docker start
 * --checkpoint` brings the same processes back. Its disk (/workspace, /tmp) stays mounted on the host.
 *
 * Measured on Debian 12's runsc (release 20221219) with dockerd 20.10: checkpoint ~0.4 s, restore ~0.8 s
 * for a small sandbox. What does not work there, and is therefore refused: runc (it would need CRIU,
 * whose `criu check` fails on this kernel), `--leave-running` (runsc panics, killing the container),
 * and any sandbox holding a connection to a host Unix socket (its egress proxy's; the exec agent's,
 * which `ExecRouter.park` closes first): the checkpoint fails on it, and a failed checkpoint kills the
 * container. The checkpoint lives under dockerd's data root, with the container; it goes with it.
 * That runsc also leaves a restored sandbox registered after its next checkpoint: see clearStaleRunscState.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { InternalError } from '../../contract/errors.js';
import type { Isolation } from '../../contract/model.js';
import { runTool } from '../../storage/host-tools.js';
import type { ProbeResult } from '../types.js';
import { statusOf } from './engine.js';

/** The one checkpoint a hibernated sandbox's container has; removed once the sandbox is back. */
export const HIBERNATE_CHECKPOINT = 'agentbox-hibernate';

export const EXPERIMENTAL_HINT = 'set "experimental": true in /etc/docker/daemon.json and restart dockerd (scripts/start-dockerd.sh does)';

/** Whether a sandbox of this kind can be hibernated by this Engine. */
export async function hibernationSupport(docker: Docker, kind: { isolation: Isolation; network: boolean }): Promise<ProbeResult> {
  if (kind.isolation !== 'gvisor') {
    return { ok: false, reason: `a ${kind.isolation} sandbox of the docker runtime cannot be hibernated (runc would need CRIU, which does not work on this kernel)`, hint: 'use --isolation gvisor' };
  }
  if (kind.network) {
    return { ok: false, reason: 'a gVisor sandbox with egress holds connections to its proxy on the host, which a checkpoint cannot save', hint: 'hibernate sandboxes with egress none, or use pauseAfter mode freeze' };
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
  await dial(docker, { path: `/containers/${containerId}/checkpoints/${HIBERNATE_CHECKPOINT}`, method: 'DELETE', statusCodes: { 200: true, 204: true, ...CODES } }).catch((err: unknown) => {
    if (statusOf(err) !== 404 && !/no such|not exist|not found/i.test(String((err as Error).message))) throw err;
  });
  await dial(docker, { path: `/containers/${containerId}/checkpoints`, method: 'POST', allowEmpty: true, options: { CheckpointID: HIBERNATE_CHECKPOINT, Exit: true }, statusCodes: { 200: true, 201: true, 204: true, ...CODES } });
}

/** Start the container from its hibernation checkpoint, then drop the checkpoint (the memory image is no longer needed). */
export async function restoreContainer(docker: Docker, containerId: string): Promise<void> {
  // An empty body: the Engine refuses a start with options in it (since API 1.24).
  await dial(docker, { path: `/containers/${containerId}/start?`, method: 'POST', options: { _query: { checkpoint: HIBERNATE_CHECKPOINT }, _body: {} }, statusCodes: { 204: true, 304: true, ...CODES } });
  await dial(docker, { path: `/containers/${containerId}/checkpoints/${HIBERNATE_CHECKPOINT}`, method: 'DELETE', statusCodes: { 200: true, 204: true, ...CODES } }).catch(() => undefined);
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
  for (const execRoot of ['/run/docker', '/var/run/docker']) {
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
  return [...new Set(found)];
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
