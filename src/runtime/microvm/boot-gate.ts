/**
 * Bounds how many microVMs boot at once. Under TCG a boot costs about 0.8 CPU-seconds; past a few
 * at once on a small host they only queue up for the cores and each takes longer (research §5:
 * 10 concurrent boots took 7-8 s each). Booting VMs wait here, in order; running ones are not counted.
 */
export class BootGate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`boot limit must be a positive integer, not ${limit}`);
  }

  /** Boots waiting for their turn. */
  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((r) => this.waiting.push(r));
    else this.running++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
