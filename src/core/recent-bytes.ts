/** The last `max` bytes written to it, without keeping the rest in memory (exec tails, terminal replays). */
export class RecentBytes {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly max: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.chunks.length > 1 && this.size - (this.chunks[0] as Buffer).length >= this.max) this.size -= (this.chunks.shift() as Buffer).length;
  }

  get bytes(): Buffer {
    const all = Buffer.concat(this.chunks);
    return all.length <= this.max ? all : all.subarray(all.length - this.max);
  }
}
