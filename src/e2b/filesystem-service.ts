/** envd's `filesystem.Filesystem` Connect service over the sandbox's own file API (sandbox-fs.ts, dir-watch.ts). */
import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { ConflictError } from '../contract/errors.js';
import type { DirEntry } from '../contract/model.js';
import type { SandboxManager } from '../core/manager.js';
import { DirPoller, WATCH_MAX_ENTRIES, type WatchEvent } from './dir-watch.js';
import { childPath, entryInfo } from './entry-info.js';
import { envdRequest, keepaliveMs, type EnvdRequest } from './envd-context.js';
import { toConnectError } from './errors.js';
import {
  EventType,
  FilesystemEventSchema,
  type EntryInfo,
  type Filesystem,
  type FilesystemEvent,
  type WatchDirResponse,
  WatchDirResponseSchema,
} from './gen/filesystem/filesystem_pb.js';
import { sandboxPath } from './sandbox-paths.js';
import { makeDir, move, statPath } from './sandbox-fs.js';

const POLL_MS = 250;
const KINDS: Record<WatchEvent['kind'], EventType> = { create: EventType.CREATE, write: EventType.WRITE, remove: EventType.REMOVE, chmod: EventType.CHMOD };
/** A non-streaming watcher nobody asked for events for this long is dropped. */
const WATCHER_IDLE_MS = 5 * 60_000;
const WATCHER_MAX_BUFFERED = 10_000;

interface Watcher {
  sandboxId: string;
  events: FilesystemEvent[];
  lastAsked: number;
  stop: AbortController;
  failure?: ConnectError;
}

export function filesystemService(manager: SandboxManager, logger: Logger): { impl: ServiceImpl<typeof Filesystem>; close(): void } {
  const watchers = new Map<string, Watcher>();

  const guard = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw toConnectError(err, logger);
    }
  };

  const toEvent = (e: WatchEvent, root: string, includeEntry: boolean): FilesystemEvent =>
    create(FilesystemEventSchema, { name: e.name, type: KINDS[e.kind], ...(includeEntry && e.entry ? { entry: entryInfo(e.entry, childPath(root, e.name)) } : {}) });

  const newPoller = async (r: EnvdRequest, path: string, recursive: boolean): Promise<DirPoller> => {
    const entry = await statPath(manager, r.sandboxId, path, r.caller);
    if (entry.type !== 'dir') throw new ConnectError(`${path} is not a directory`, Code.InvalidArgument);
    const poller = new DirPoller((p) => manager.listDir(r.sandboxId, p, r.caller), path, recursive);
    await poller.start();
    return poller;
  };

  const listDepth = async (r: EnvdRequest, path: string, depth: number): Promise<EntryInfo[]> => {
    const out: EntryInfo[] = [];
    const walk = async (dir: string, level: number): Promise<void> => {
      const entries: DirEntry[] = await manager.listDir(r.sandboxId, dir, r.caller);
      for (const e of entries) {
        if (out.length >= WATCH_MAX_ENTRIES) throw new ConnectError(`more than ${WATCH_MAX_ENTRIES} entries under ${path}`, Code.ResourceExhausted);
        const p = childPath(dir, e.name);
        out.push(entryInfo(e, p));
        if (e.type === 'dir' && level < depth) await walk(p, level + 1);
      }
    };
    await walk(path, 1);
    return out;
  };

  const impl: ServiceImpl<typeof Filesystem> = {
    stat: (req, ctx) =>
      guard(async () => {
        const r = envdRequest(ctx);
        const path = sandboxPath(req.path);
        return { entry: entryInfo(await statPath(manager, r.sandboxId, path, r.caller), path) };
      }),

    makeDir: (req, ctx) =>
      guard(async () => {
        const r = envdRequest(ctx);
        const path = sandboxPath(req.path);
        try {
          await makeDir(manager, r.sandboxId, path, r.caller);
        } catch (err) {
          if (err instanceof ConflictError) throw new ConnectError(`${path} already exists`, Code.AlreadyExists);
          throw err;
        }
        return { entry: entryInfo(await statPath(manager, r.sandboxId, path, r.caller), path) };
      }),

    move: (req, ctx) =>
      guard(async () => {
        const r = envdRequest(ctx);
        const from = sandboxPath(req.source, 'source');
        const to = sandboxPath(req.destination, 'destination');
        await move(manager, r.sandboxId, from, to, r.caller);
        return { entry: entryInfo(await statPath(manager, r.sandboxId, to, r.caller), to) };
      }),

    listDir: (req, ctx) =>
      guard(async () => {
        const r = envdRequest(ctx);
        const path = sandboxPath(req.path);
        return { entries: await listDepth(r, path, Math.max(1, Math.min(req.depth || 1, 16))) };
      }),

    remove: (req, ctx) =>
      guard(async () => {
        const r = envdRequest(ctx);
        await manager.removePath(r.sandboxId, sandboxPath(req.path), r.caller);
        return {};
      }),

    async *watchDir(req, ctx: HandlerContext): AsyncGenerator<WatchDirResponse> {
      const r = envdRequest(ctx);
      const path = sandboxPath(req.path);
      const poller = await guard(() => newPoller(r, path, req.recursive));
      yield create(WatchDirResponseSchema, { event: { case: 'start', value: {} } });
      const keepalive = keepaliveMs(ctx);
      let quietSince = Date.now();
      while (!ctx.signal.aborted) {
        await sleep(POLL_MS, undefined, { signal: ctx.signal }).catch(() => undefined);
        if (ctx.signal.aborted) return;
        const events = await guard(() => poller.poll());
        for (const e of events) yield create(WatchDirResponseSchema, { event: { case: 'filesystem', value: toEvent(e, path, req.includeEntry) } });
        if (events.length > 0) quietSince = Date.now();
        else if (Date.now() - quietSince >= keepalive) {
          quietSince = Date.now();
          yield create(WatchDirResponseSchema, { event: { case: 'keepalive', value: {} } });
        }
      }
    },

    createWatcher: (req, ctx) =>
      guard(async () => {
        const r = envdRequest(ctx);
        const path = sandboxPath(req.path);
        const poller = await newPoller(r, path, req.recursive);
        const watcherId = randomUUID();
        const w: Watcher = { sandboxId: r.sandboxId, events: [], lastAsked: Date.now(), stop: new AbortController() };
        watchers.set(watcherId, w);
        void (async () => {
          while (!w.stop.signal.aborted && Date.now() - w.lastAsked < WATCHER_IDLE_MS) {
            await sleep(POLL_MS, undefined, { signal: w.stop.signal }).catch(() => undefined);
            if (w.stop.signal.aborted) break;
            try {
              for (const e of await poller.poll()) if (w.events.length < WATCHER_MAX_BUFFERED) w.events.push(toEvent(e, path, req.includeEntry));
            } catch (err) {
              w.failure = toConnectError(err, logger);
              break;
            }
          }
          if (!w.failure) watchers.delete(watcherId);
        })();
        return { watcherId };
      }),

    getWatcherEvents: (req, ctx) =>
      guard(async () => {
        const r = envdRequest(ctx);
        const w = watchers.get(req.watcherId);
        if (!w || w.sandboxId !== r.sandboxId) throw new ConnectError(`no watcher ${req.watcherId}`, Code.NotFound);
        if (w.failure) {
          watchers.delete(req.watcherId);
          throw w.failure;
        }
        w.lastAsked = Date.now();
        return { events: w.events.splice(0) };
      }),

    removeWatcher: (req, ctx) =>
      guard(async () => {
        const r = envdRequest(ctx);
        const w = watchers.get(req.watcherId);
        if (!w || w.sandboxId !== r.sandboxId) throw new ConnectError(`no watcher ${req.watcherId}`, Code.NotFound);
        w.stop.abort();
        watchers.delete(req.watcherId);
        return {};
      }),
  };
  return {
    impl,
    close() {
      for (const w of watchers.values()) w.stop.abort();
      watchers.clear();
    },
  };
}
