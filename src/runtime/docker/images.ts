/**
 * Local images (rootfs directories in the image store) become Docker images on first use:
 * `tar -C ROOTFS -c .` piped into the Engine's import (POST /images/create?fromSrc=-), tagged
 * `agentbox/<name>:<tag>` where the tag changes whenever the local image is rebuilt.
 */
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import { InternalError } from '../../contract/errors.js';
import { engineError, statusOf } from './engine.js';

/** What the driver needs of the image store (src/images/image-store.ts fits). */
export interface ImageSource {
  /** Throws NotFoundError for an unknown image. */
  resolve(name: string): { info: { name: string; id?: string; createdAt: string }; rootfs: string };
}

/** Docker repository path components allow [a-z0-9] runs joined by single separators. */
function repoName(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9._-]/g, '-').replace(/[._-]{2,}/g, '-').replace(/^[._-]+|[._-]+$/g, '') || 'image';
}

/** A tag that names this build of the image: its id, else its creation time. */
export function imageTag(info: { id?: string; createdAt: string }): string {
  const raw = info.id && info.id.length > 0 ? info.id : `c${info.createdAt.replace(/[^0-9]/g, '')}`;
  return raw.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^[.-]/, '_').slice(0, 128);
}

export function imageRef(info: { name: string; id?: string; createdAt: string }): string {
  return `agentbox/${repoName(info.name)}:${imageTag(info)}`;
}

export class ImageImporter {
  /** In-flight and finished imports of this process, by reference. */
  private readonly known = new Map<string, Promise<string>>();

  constructor(private readonly docker: Docker, private readonly source: ImageSource, private readonly address: string) {}

  /** The Docker reference of the local image `name`, importing it when Docker does not have this build yet. */
  ensure(name: string): Promise<string> {
    const { info, rootfs } = this.source.resolve(name);
    const ref = imageRef(info);
    let p = this.known.get(ref);
    if (!p) {
      p = this.importIfMissing(ref, rootfs);
      this.known.set(ref, p);
      p.catch(() => this.known.delete(ref));
    }
    return p;
  }

  private async importIfMissing(ref: string, rootfs: string): Promise<string> {
    try {
      await this.docker.getImage(ref).inspect();
      return ref;
    } catch (err) {
      if (statusOf(err) !== 404) throw engineError(err, `cannot inspect image ${ref}`, this.address);
    }
    const [repo, tag] = ref.split(':') as [string, string];
    const tar = spawn('tar', ['-C', rootfs, '-c', '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let tarErr = '';
    tar.stderr.on('data', (c: Buffer) => (tarErr = (tarErr + c.toString()).slice(-2000)));
    const tarDone = new Promise<number | null>((resolve) => {
      tar.on('error', (e) => {
        tarErr += e.message;
        resolve(null);
      });
      tar.on('close', (code) => resolve(code));
    });
    try {
      const progress = await this.docker.importImage(tar.stdout, { repo, tag });
      await drainProgress(progress as Readable);
    } catch (err) {
      tar.kill('SIGKILL');
      throw err instanceof InternalError ? err : engineError(err, `cannot import image ${ref}`, this.address);
    }
    const code = await tarDone;
    if (code !== 0) throw new InternalError(`cannot import image ${ref}: tar of ${rootfs} failed: ${tarErr.trim() || `exit ${code}`}`);
    return ref;
  }
}

/** Read the import's JSON progress lines; an `error` line is a failed import. */
async function drainProgress(stream: Readable): Promise<void> {
  let text = '';
  for await (const chunk of stream) text = (text + (chunk as Buffer).toString()).slice(-64 * 1024);
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim()) continue;
    let msg: { error?: unknown; errorDetail?: { message?: unknown } };
    try {
      msg = JSON.parse(line) as typeof msg;
    } catch {
      continue;
    }
    if (msg.error !== undefined) throw new InternalError(`image import failed: ${String(msg.errorDetail?.message ?? msg.error)}`);
  }
}
