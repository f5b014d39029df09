/**
 * Watching a directory inside a sandbox by polling its listing through the sandbox's own file API:
 * runtime-neutral (local, docker, microvm alike) and nothing runs inside the sandbox. Events come
 * within one interval; a rename shows as a remove and a create; several writes within one interval
 * show as one write. A new non-empty file shows as a create then a write, as inotify reports it.
 */
import { posix } from 'node:path';
import { BadRequestError } from '../contract/errors.js';
import type { DirEntry } from '../contract/model.js';

export type WatchEventKind = 'create' | 'write' | 'remove' | 'chmod';

export interface WatchEvent {
  /** Path relative to the watched directory. */
  name: string;
  kind: WatchEventKind;
  /** The entry now (absent for a remove). */
  entry?: DirEntry;
}

/** Bounds on what one poll reads: a recursive watch of a huge tree is refused, not slowed to a crawl. */
export const WATCH_MAX_ENTRIES = 5000;
const WATCH_MAX_DEPTH = 16;

export class DirPoller {
  private known = new Map<string, DirEntry>();

  constructor(
    private readonly list: (path: string) => Promise<DirEntry[]>,
    private readonly root: string,
    private readonly recursive: boolean,
  ) {}

  /** Read the directory as it is now: what later polls compare with. */
  async start(): Promise<void> {
    this.known = await this.read();
  }

  /** What changed since the last read. */
  async poll(): Promise<WatchEvent[]> {
    const now = await this.read();
    const events: WatchEvent[] = [];
    for (const name of this.known.keys()) if (!now.has(name)) events.push({ name, kind: 'remove' });
    for (const [name, entry] of now) {
      const before = this.known.get(name);
      if (!before || before.type !== entry.type) {
        if (before) events.push({ name, kind: 'remove' });
        events.push({ name, kind: 'create', entry });
        if (entry.type === 'file' && entry.size > 0) events.push({ name, kind: 'write', entry });
      } else if (before.size !== entry.size || before.mtime !== entry.mtime) {
        events.push({ name, kind: 'write', entry });
      } else if (before.mode !== entry.mode) {
        events.push({ name, kind: 'chmod', entry });
      }
    }
    this.known = now;
    return events;
  }

  private async read(): Promise<Map<string, DirEntry>> {
    const out = new Map<string, DirEntry>();
    const walk = async (dir: string, rel: string, depth: number): Promise<void> => {
      for (const entry of await this.list(dir)) {
        const name = rel === '' ? entry.name : `${rel}/${entry.name}`;
        out.set(name, entry);
        if (out.size > WATCH_MAX_ENTRIES) {
          throw new BadRequestError(`${this.root} holds more than ${WATCH_MAX_ENTRIES} entries: too many to watch`, { hint: 'watch a smaller directory, or without recursive' });
        }
        if (this.recursive && entry.type === 'dir' && depth < WATCH_MAX_DEPTH) {
          // A directory removed between two reads is simply gone from this one.
          await walk(posix.join(dir, entry.name), name, depth + 1).catch((err: unknown) => {
            if ((err as { code?: string }).code !== 'not_found') throw err;
          });
        }
      }
    };
    await walk(this.root, '', 0);
    return out;
  }
}
