/**
 * `agentbox image pull REF`: an image from a registry, through the Docker Engine (which holds
 * the registry credentials and mirrors the operator configured), turned into an ordinary agentbox
 * image so that both runtimes can use it: pull (progress per layer, summed), create a stopped
 * container, export its filesystem, and import that tarball with the same safety checks as
 * `image import`. The image's own entrypoint, env and user are not kept: sandboxes set their own.
 */
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import Docker from 'dockerode';
import { BadRequestError, NotFoundError, RuntimeUnavailableError } from '../contract/errors.js';
import type { ImageInfo } from '../contract/images.js';
import type { ImageStore } from './image-store.js';
import type { OnProgress } from './run-tool.js';

export interface PullOpts {
  /** The agentbox image name; default derived from the reference (`python:3.12-slim` → `python-3.12-slim`). */
  name?: string;
  onProgress?: OnProgress;
  docker?: Docker.DockerOptions;
  signal?: AbortSignal;
}

/** What the Engine's pull stream says, per line. */
interface PullEvent {
  id?: string;
  status?: string;
  error?: string;
  progressDetail?: { current?: number; total?: number };
}

const REF_RE = /^[a-z0-9][a-z0-9._\-/:@]{0,254}$/i;

export function defaultImageName(ref: string): string {
  const base = ref.replace(/@sha256:[0-9a-f]+$/i, '').split('/').at(-1) ?? ref;
  return base.replace(/:/g, '-').replace(/[^a-zA-Z0-9._-]/g, '-').slice(0, 64);
}

/** Sums the per-layer byte counts of a pull into one percentage. */
class PullProgress {
  private readonly layers = new Map<string, { current: number; total: number }>();
  constructor(private readonly emit: OnProgress) {}

  on(e: PullEvent): void {
    if (e.id && e.progressDetail?.total && e.status === 'Downloading') {
      this.layers.set(e.id, { current: e.progressDetail.current ?? 0, total: e.progressDetail.total });
    } else if (e.id && (e.status === 'Download complete' || e.status === 'Already exists' || e.status === 'Pull complete')) {
      const l = this.layers.get(e.id);
      if (l) l.current = l.total;
    }
    let current = 0;
    let total = 0;
    for (const l of this.layers.values()) {
      current += l.current;
      total += l.total;
    }
    const percent = total > 0 ? Math.min(100, Math.round((current / total) * 100)) : undefined;
    const what = e.id ? `${e.id}: ${e.status ?? ''}` : (e.status ?? '');
    this.emit({ phase: 'pull', message: total > 0 ? `${what} (${(current / 1e6).toFixed(1)}/${(total / 1e6).toFixed(1)} MB)` : what, ...(percent !== undefined ? { percent } : {}) });
  }
}

async function pullWithProgress(docker: Docker, ref: string, onProgress: OnProgress): Promise<void> {
  let stream: NodeJS.ReadableStream;
  try {
    stream = (await docker.pull(ref)) as NodeJS.ReadableStream;
  } catch (err) {
    throw pullError(ref, err);
  }
  const progress = new PullProgress(onProgress);
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(
      stream,
      (err: Error | null, events: PullEvent[]) => {
        const failed = err ?? events.find((e) => e.error)?.error;
        if (failed) reject(pullError(ref, failed));
        else resolve();
      },
      (e: PullEvent) => progress.on(e),
    );
  });
}

function pullError(ref: string, err: unknown): Error {
  const message = err instanceof Error ? err.message : String(err);
  if (/ENOENT|ECONNREFUSED|connect EACCES/.test(message)) {
    return new RuntimeUnavailableError(`cannot reach dockerd to pull ${ref}: ${message}`, { hint: 'image pull goes through the Docker Engine: start dockerd (scripts/start-dockerd.sh)' });
  }
  if (/not found|manifest unknown|404/i.test(message)) {
    return new NotFoundError(`no image ${ref} in its registry: ${message.trim()}`, { hint: 'check the name and tag; a private registry needs docker login on this host' });
  }
  return new BadRequestError(`pulling ${ref} failed: ${message.trim()}`, { hint: 'check the registry address and that dockerd can reach it (docker info shows its mirrors and insecure registries)' });
}

export async function pullImage(store: ImageStore, ref: string, opts: PullOpts = {}): Promise<ImageInfo> {
  if (!REF_RE.test(ref)) throw new BadRequestError(`not an image reference: ${JSON.stringify(ref)}`, { hint: 'e.g. python:3.12-slim or registry.example.com/team/tool:1.2' });
  const onProgress = opts.onProgress ?? (() => undefined);
  const docker = new Docker(opts.docker);
  await pullWithProgress(docker, ref, onProgress);
  const tmp = mkdtempSync(join(tmpdir(), 'agentbox-pull-'));
  let container: Docker.Container | undefined;
  try {
    onProgress({ phase: 'export', message: `exporting the filesystem of ${ref}` });
    container = await docker.createContainer({ Image: ref, Cmd: ['/nonexistent'], Entrypoint: [], NetworkDisabled: true, HostConfig: { NetworkMode: 'none' }, Labels: { 'agentbox.pull': ref } });
    const tar = join(tmp, 'rootfs.tar');
    await pipeline(await container.export(), createWriteStream(tar), ...(opts.signal ? [{ signal: opts.signal }] : []));
    return await store.importTar(opts.name ?? defaultImageName(ref), tar, { onProgress, ...(opts.signal ? { signal: opts.signal } : {}), source: 'pull', ref });
  } finally {
    await container?.remove({ force: true }).catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
  }
}
