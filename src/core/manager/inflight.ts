/**
 * Operations that `close()` waits for before it destroys what is still running: runtime creates,
 * file writes, and streaming execs for as long as their events are being read.
 */
export class Inflight {
  private readonly pending = new Set<Promise<unknown>>();

  track<T>(p: Promise<T>): Promise<T> {
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p)).catch(() => undefined);
    return p;
  }

  /** The same items; pending from the first read until the iteration ends or is abandoned. */
  trackIterable<T>(it: AsyncIterable<T>): AsyncIterable<T> {
    const pending = this.pending;
    return {
      async *[Symbol.asyncIterator]() {
        let resolveDone: () => void = () => undefined;
        const done = new Promise<void>((r) => (resolveDone = r));
        pending.add(done);
        try {
          yield* it;
        } finally {
          resolveDone();
          pending.delete(done);
        }
      },
    };
  }

  /** Resolves when everything pending now has settled, failed or not. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }
}
