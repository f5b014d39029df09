/**
 * Running execs that others may follow (`GET .../execs/{id}?follow=1`, `agentbox logs -f`):
 * output so far is replayed (up to a cap), then events arrive live until `exit`.
 */
import { AsyncQueue } from './async-queue.js';
import type { ExecEvent } from '../contract/model.js';

const REPLAY_CAP_BYTES = 1024 * 1024;

interface LiveExec {
  sandboxId: string;
  replay: ExecEvent[];
  replayBytes: number;
  done: boolean;
  followers: Set<AsyncQueue<ExecEvent>>;
}

export class LiveExecs {
  private readonly execs = new Map<string, LiveExec>();

  start(execId: string, sandboxId: string): void {
    this.execs.set(execId, { sandboxId, replay: [], replayBytes: 0, done: false, followers: new Set() });
  }

  push(execId: string, ev: ExecEvent): void {
    const live = this.execs.get(execId);
    if (!live) return;
    const size = ev.type === 'exit' ? 0 : ev.data.length;
    if (ev.type === 'exit' || live.replayBytes + size <= REPLAY_CAP_BYTES) {
      live.replay.push(ev);
      live.replayBytes += size;
    }
    for (const f of live.followers) f.push(ev);
  }

  /** The exec ended: followers get their end; the record stays briefly for late followers. */
  finish(execId: string): void {
    const live = this.execs.get(execId);
    if (!live) return;
    live.done = true;
    for (const f of live.followers) f.end();
    live.followers.clear();
    setTimeout(() => this.execs.delete(execId), 5000).unref();
  }

  /** Replay then live events, or undefined when the exec is not running here. */
  follow(sandboxId: string, execId: string): AsyncIterable<ExecEvent> | undefined {
    const live = this.execs.get(execId);
    if (!live || live.sandboxId !== sandboxId) return undefined;
    const queue = new AsyncQueue<ExecEvent>();
    for (const ev of live.replay) queue.push(ev);
    if (live.done) queue.end();
    else live.followers.add(queue);
    return queue;
  }
}
