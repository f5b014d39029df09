/**
 * One watch on the driver's pods (its label selector), kept open for the driver's lifetime so that
 * waiting for a pod to run or to go is an event, not a polling loop.
 *
 * A dropped watch reconnects (backoff 100 ms doubling to 5 s) from the last resourceVersion it saw,
 * so no change is missed; when the API server no longer has that version (410 Gone, as a watch event
 * or as the answer) it lists again and goes on from the list's version. Waiters also poll now and
 * then (kubernetes-runtime.ts), so a watch that is down only makes them slower, never stuck.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Watch, type V1Pod } from '@kubernetes/client-node';
import type { Cluster } from './cluster.js';
import { isTransient } from './cluster.js';

export type PodEvent = 'ADDED' | 'MODIFIED' | 'DELETED';
export type PodListener = (type: PodEvent, pod: V1Pod) => void;

export interface PodWatchStats {
  /** Watch requests made (the first, and each reconnect). */
  connects: number;
  /** Lists made: the first, and each after a 410 Gone. */
  relists: number;
  /** The last resourceVersion seen. */
  resourceVersion: string | undefined;
}

/** How long after the watch dropped its pods still count as current (a reconnect replays what it missed). */
const FRESH_MS = 5000;

export class PodWatch {
  private readonly listeners = new Set<PodListener>();
  /** Every pod the watch knows, by name (an informer's store): current while `fresh()`. */
  private readonly pods = new Map<string, V1Pod>();
  private listed = false;
  private connected = false;
  private lastConnected = 0;
  private abort: AbortController | undefined;
  /** Ends a backoff sleep at stop(). */
  private readonly stopping = new AbortController();
  private running: Promise<void> | undefined;
  private stopped = false;
  private rv: string | undefined;
  readonly stats: PodWatchStats = { connects: 0, relists: 0, resourceVersion: undefined };

  constructor(private readonly cluster: Cluster, private readonly namespace: string, private readonly labelSelector: string, private readonly onError: (msg: string, err: unknown) => void = () => undefined) {}

  /** Starts the watch on first use. */
  on(listener: PodListener): () => void {
    this.listeners.add(listener);
    this.running ??= this.loop();
    return () => this.listeners.delete(listener);
  }

  /**
   * The pod named NAME as the watch last saw it: undefined when it has none (never made, gone, or
   * an event not here yet), 'unknown' when the watch is not current (not listed yet, or down for
   * more than FRESH_MS). Starts the watch on first use.
   */
  cached(name: string): V1Pod | undefined | 'unknown' {
    this.running ??= this.loop();
    if (!this.fresh()) return 'unknown';
    return this.pods.get(name);
  }

  private fresh(): boolean {
    return this.listed && (this.connected || Date.now() - this.lastConnected < FRESH_MS);
  }

  private emit(type: PodEvent, pod: V1Pod): void {
    const name = pod.metadata?.name;
    if (name) {
      if (type === 'DELETED') this.pods.delete(name);
      else this.pods.set(name, pod);
    }
    for (const l of [...this.listeners]) {
      try {
        l(type, pod);
      } catch (err) {
        this.onError('a pod watch listener failed', err);
      }
    }
  }

  private async loop(): Promise<void> {
    let delay = 100;
    while (!this.stopped) {
      try {
        if (this.rv === undefined) await this.relist();
        const ended = await this.watchOnce();
        if (ended === 'gone') {
          this.rv = undefined;
          continue;
        }
        delay = 100;
      } catch (err) {
        if (!isTransient(err) && (err as { statusCode?: number }).statusCode !== 410) this.onError('the pod watch failed; retrying', err);
        if ((err as { statusCode?: number }).statusCode === 410) this.rv = undefined;
        if (this.stopped) return;
        await sleep(delay, undefined, { signal: this.stopping.signal }).catch(() => undefined);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  /** A list: every pod as ADDED (listeners take it as the state now), and the version to watch from. */
  private async relist(): Promise<void> {
    const list = await this.cluster.core.listNamespacedPod({ namespace: this.namespace, labelSelector: this.labelSelector });
    this.stats.relists++;
    this.pods.clear();
    for (const pod of list.items) this.emit('ADDED', pod);
    this.listed = true;
    this.setRv(list.metadata?.resourceVersion);
  }

  private setRv(rv: string | undefined): void {
    if (rv) this.rv = this.stats.resourceVersion = rv;
  }

  /** One watch request until it ends: 'ended' (reconnect from the last version), 'gone' (relist first). */
  private watchOnce(): Promise<'ended' | 'gone'> {
    return new Promise((resolve, reject) => {
      let gone = false;
      let ended = false;
      this.stats.connects++;
      const path = `/api/v1/namespaces/${encodeURIComponent(this.namespace)}/pods`;
      const query = { labelSelector: this.labelSelector, resourceVersion: this.rv, allowWatchBookmarks: true };
      new Watch(this.cluster.kc)
        .watch(
          path,
          query,
          (type: string, obj: unknown) => {
            if (type === 'ERROR') {
              if ((obj as { code?: number }).code === 410) gone = true;
              return;
            }
            const pod = obj as V1Pod;
            this.setRv(pod.metadata?.resourceVersion);
            if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') this.emit(type, pod);
          },
          (err: unknown) => {
            ended = true;
            this.abort = undefined;
            if (this.connected) this.lastConnected = Date.now();
            this.connected = false;
            if (err && !(err instanceof Error && err.name === 'AbortError')) return reject(err);
            resolve(gone ? 'gone' : 'ended');
          },
        )
        .then((ctrl) => {
          this.abort = ctrl;
          // client-node resolves even when the request failed (after calling `done`): not connected then.
          if (!ended) this.connected = true;
          if (this.stopped) ctrl.abort();
        }, reject);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    this.abort?.abort();
    this.listeners.clear();
    await this.running;
  }
}
