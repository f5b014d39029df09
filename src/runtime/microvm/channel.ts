/**
 * The host's end of the guest agent's port: one Unix socket (QEMU's chardev for the virtio-serial
 * port), many streams multiplexed over it (frames.ts). A stream is one request to the agent: an exec,
 * a file operation, `ps`, a signal, stats. Each has stdout, stderr, an exit status, and credit both
 * ways, so a stream whose reader is slow (or whose command does not read its stdin) holds up no other.
 */
import { randomBytes } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';
import { PassThrough, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Logger } from 'pino';
import { ConflictError, InternalError, RuntimeUnavailableError, TimeoutError } from '../../contract/errors.js';
import type { RuntimeStats } from '../types.js';
import {
  CHUNK_BYTES,
  encodeFrame,
  encodeOpen,
  encodeU32,
  type Frame,
  FrameDecoder,
  HEADER_BYTES,
  helloFrame,
  MAX_REQUEST_BYTES,
  NONCE_BYTES,
  type OpenRequest,
  WINDOW_BYTES,
} from './frames.js';

/** Why a stream's command ended, as the agent saw it. */
export type ExitReason = 'exited' | 'timeout' | 'killed' | 'oom';
const REASONS: readonly ExitReason[] = ['exited', 'timeout', 'killed', 'oom'];

export interface StreamExit {
  code: number;
  reason: ExitReason;
}

export interface ConnectOpts {
  /** Give up (TimeoutError) when the agent has not answered the hello by then. */
  timeoutMs: number;
  /** Stops waiting (e.g. QEMU exited during the boot); the reason is thrown. */
  signal?: AbortSignal;
  /**
   * Without an answer for this long the hello is sent again behind a run of zero bytes long enough to
   * end any frame a previous host cut off half-way (the agent then scans for the new hello). @default 5000
   */
  helloRetryMs?: number;
  log?: Logger;
}

/** One request running in the guest. */
export class VmStream {
  readonly stdout = new PassThrough({ highWaterMark: WINDOW_BYTES });
  readonly stderr = new PassThrough({ highWaterMark: WINDOW_BYTES });
  /** The leader's pid in the guest; undefined when it never started (or the request needs no process). */
  readonly pid: Promise<number | undefined>;
  /** Resolves when the agent reports the exit; rejects (ConflictError) when the VM or the channel went away first. */
  readonly exit: Promise<StreamExit>;
  private resolvePid!: (pid: number | undefined) => void;
  private resolveExit!: (e: StreamExit) => void;
  private rejectExit!: (err: Error) => void;
  private credit = WINDOW_BYTES;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private stdinEnded = false;
  private stdinSource: Readable | undefined;
  private eofSent = false;
  private ungranted = 0;
  private waitingDrain = false;
  private done = false;

  constructor(
    readonly id: number,
    private readonly send: (frame: Buffer) => void,
    /** What the stream runs (an 'R' frame's kind). */
    readonly kind: OpenRequest['kind'] = 'exec',
  ) {
    this.pid = new Promise((r) => (this.resolvePid = r));
    this.exit = new Promise((resolve, reject) => {
      this.resolveExit = resolve;
      this.rejectExit = reject;
    });
    this.exit.catch(() => undefined); // a caller that only reads the output must not see an unhandled rejection
  }

  /** Feed the command's stdin from `source` (undefined: empty). Call once. */
  sendStdin(source: Buffer | Readable | undefined): void {
    if (source === undefined) return this.endStdin();
    if (Buffer.isBuffer(source)) {
      this.queueStdin(source);
      return this.endStdin();
    }
    this.stdinSource = source;
    source.on('data', (c: Buffer | string) => {
      this.queueStdin(Buffer.isBuffer(c) ? c : Buffer.from(c));
      if (this.pendingBytes >= WINDOW_BYTES) source.pause();
    });
    source.once('end', () => this.endStdin());
    source.once('error', () => this.kill());
  }

  /** Kill the command's whole tree in the guest; it then exits 143. */
  kill(): void {
    if (!this.done) this.send(encodeFrame('K', this.id));
  }

  /** Send signal `n` to the command's process group. */
  signal(n: number): void {
    if (!this.done) this.send(encodeU32('S', this.id, n));
  }

  /** Stop waiting for the agent: end the stream here with `e` (a host-side backstop); later frames are ignored. */
  abandon(e: StreamExit): void {
    this.finish(e);
  }

  /** @internal a frame from the agent for this stream. */
  deliver(f: Frame): void {
    switch (f.type) {
      case 'P':
        if (f.payload.length === 4) this.resolvePid(f.payload.readUInt32BE(0));
        break;
      case 'O':
        this.output(this.stdout, f.payload);
        break;
      case 'e':
        this.output(this.stderr, f.payload);
        break;
      case 'D':
        // That output's writers have all closed it; the command may still run.
        if (!this.done) (f.payload.toString('latin1') === 'e' ? this.stderr : this.stdout).end();
        break;
      case 'W':
        if (f.payload.length === 4) {
          this.credit += f.payload.readUInt32BE(0);
          this.pump();
        }
        break;
      case 'X':
        if (f.payload.length >= 4) this.finish({ code: f.payload.readUInt32BE(0), reason: REASONS[f.payload[4] ?? 0] ?? 'exited' });
        break;
      default:
        break;
    }
  }

  /** @internal the channel is gone. */
  lost(err: Error): void {
    if (this.done) return;
    this.done = true;
    this.resolvePid(undefined);
    this.stdout.end();
    this.stderr.end();
    this.stdinSource?.destroy();
    this.rejectExit(err);
  }

  private finish(e: StreamExit): void {
    if (this.done) return;
    this.done = true;
    this.resolvePid(undefined);
    this.stdout.end();
    this.stderr.end();
    if (this.stdinSource && !this.stdinEnded) this.stdinSource.destroy();
    this.resolveExit(e);
  }

  private output(to: PassThrough, data: Buffer): void {
    if (this.done || to.writableEnded) return;
    // Credit goes back once the reader has taken the bytes: a reader that stops stalls this stream only.
    if (to.write(data) && this.ungranted === 0) return this.send(encodeU32('W', this.id, data.length));
    this.ungranted += data.length;
    if (this.waitingDrain) return;
    this.waitingDrain = true;
    to.once('drain', () => {
      this.waitingDrain = false;
      const n = this.ungranted;
      this.ungranted = 0;
      if (!this.done && n > 0) this.send(encodeU32('W', this.id, n));
    });
  }

  private queueStdin(chunk: Buffer): void {
    if (this.done || this.stdinEnded || chunk.length === 0) return;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.pump();
  }

  private endStdin(): void {
    if (this.stdinEnded) return;
    this.stdinEnded = true;
    this.pump();
  }

  private pump(): void {
    while (!this.done && this.credit > 0 && this.pending.length > 0) {
      const head = this.pending[0] as Buffer;
      const n = Math.min(head.length, this.credit, CHUNK_BYTES);
      this.send(encodeFrame('I', this.id, head.subarray(0, n)));
      this.credit -= n;
      this.pendingBytes -= n;
      if (n === head.length) this.pending.shift();
      else this.pending[0] = head.subarray(n);
    }
    if (this.stdinSource?.isPaused() && this.pendingBytes < WINDOW_BYTES / 2) this.stdinSource.resume();
    if (!this.done && this.stdinEnded && this.pending.length === 0 && !this.eofSent) {
      this.eofSent = true;
      this.send(encodeFrame('E', this.id));
      this.stdinSource = undefined;
    }
  }
}

/** A connected, greeted channel to one guest's agent. */
export class VmChannel {
  private readonly streams = new Map<number, VmStream>();
  private nextId = 1;
  private closedErr: Error | undefined;
  readonly closed: Promise<void>;

  private constructor(
    private readonly sock: Socket,
    private decoder: FrameDecoder,
    private readonly log: Logger | undefined,
  ) {
    this.closed = new Promise((resolve) => {
      sock.once('close', () => {
        const err = this.closedErr ?? new ConflictError('the microVM\'s agent channel closed', { hint: 'the VM was stopped or died; create the sandbox again' });
        this.closedErr = err;
        for (const s of this.streams.values()) s.lost(err);
        this.streams.clear();
        resolve();
      });
    });
    sock.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = this.decoder.push(chunk);
      } catch (err) {
        this.log?.warn({ err }, 'microvm agent sent a bad frame; closing the channel');
        this.closedErr = new InternalError(`the microVM's agent broke the protocol: ${(err as Error).message}`);
        sock.destroy();
        return;
      }
      for (const f of frames) {
        if (f.type === 'H') return this.agentRestarted();
        const s = this.streams.get(f.stream);
        if (!s) continue;
        s.deliver(f);
        if (f.type === 'X') this.streams.delete(f.stream);
      }
    });
  }

  /**
   * Connects to the agent's socket (retrying while it does not exist yet: QEMU makes it as it starts)
   * and greets the agent; resolves once it answered. The agent ends whatever streams an earlier host
   * left running when it gets the hello.
   */
  static async connect(path: string, opts: ConnectOpts): Promise<VmChannel> {
    const deadline = performance.now() + opts.timeoutMs;
    const sock = await connectSocket(path, deadline, opts.signal);
    return new Promise<VmChannel>((resolve, reject) => {
      let nonce = randomBytes(NONCE_BYTES);
      let decoder = new FrameDecoder(nonce);
      let retry: NodeJS.Timeout | undefined;
      const cleanup = (): void => {
        clearTimeout(timer);
        clearInterval(retry);
        sock.off('data', onData);
        sock.off('close', onClose);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const fail = (err: Error): void => {
        cleanup();
        sock.destroy();
        reject(err);
      };
      const onData = (chunk: Buffer): void => {
        try {
          // What comes with the answer in the same chunk is for no stream (none is open yet): dropped.
          decoder.push(chunk);
        } catch (err) {
          return fail(new InternalError(`the microVM's agent broke the protocol: ${(err as Error).message}`));
        }
        if (!decoder.ready) return;
        cleanup();
        resolve(new VmChannel(sock, decoder, opts.log));
      };
      const onClose = (): void => fail(new RuntimeUnavailableError('the microVM closed the agent socket before its agent answered', { hint: 'see the VM console log' }));
      const onAbort = (): void => fail(opts.signal?.reason instanceof Error ? opts.signal.reason : new RuntimeUnavailableError('the microVM went away during the boot'));
      const timer = setTimeout(
        () => fail(new TimeoutError(`the microVM's agent did not answer within ${opts.timeoutMs} ms`, { hint: 'the host may be overloaded (TCG boots cost CPU); see the VM console log' })),
        Math.max(0, deadline - performance.now()),
      );
      sock.on('data', onData);
      sock.once('close', onClose);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      sock.on('error', () => undefined);
      // A few zero bytes first: harmless to an agent waiting for a hello, and they put one that was
      // mid-frame out of step, which makes it scan for the hello.
      sock.write(Buffer.concat([Buffer.alloc(16), helloFrame(nonce)]));
      retry = setInterval(() => {
        opts.log?.debug({ path }, 'microvm agent has not answered; greeting it again');
        nonce = randomBytes(NONCE_BYTES);
        decoder = new FrameDecoder(nonce);
        sock.write(Buffer.concat([Buffer.alloc(HEADER_BYTES + MAX_REQUEST_BYTES), helloFrame(nonce)]));
      }, opts.helloRetryMs ?? 5000);
    });
  }

  /** Start a request in the guest. BadRequestError-free: a string with a NUL byte fails the stream (exit 125). */
  open(req: OpenRequest): VmStream {
    const id = this.nextId++;
    const stream = new VmStream(id, (f) => this.write(f), req.kind);
    if (this.closedErr) {
      stream.lost(this.closedErr);
      return stream;
    }
    const frame = encodeOpen(id, req);
    if (!frame || frame.length > HEADER_BYTES + MAX_REQUEST_BYTES) {
      stream.stderr.write(frame ? 'agentbox: request too large (argv + env over 1 MiB)\n' : 'agentbox: a string of the request holds a NUL byte\n');
      stream.deliver({ type: 'X', stream: id, payload: Buffer.from([0, 0, 0, 125, 0]) });
      return stream;
    }
    this.streams.set(id, stream);
    this.write(frame);
    return stream;
  }

  /** Streams running now whose kind is not one of `except` (e.g. the commands and transfers of a sandbox, not its egress relays). */
  running(except: readonly OpenRequest['kind'][] = []): number {
    let n = 0;
    for (const s of this.streams.values()) if (!except.includes(s.kind)) n++;
    return n;
  }

  /** Memory in use, processes and CPU time of the whole guest. */
  async stats(): Promise<RuntimeStats> {
    const s = this.open({ kind: 'stats', cwd: '/', timeoutMs: 0, argv: [], env: {} });
    s.sendStdin(undefined);
    const chunks: Buffer[] = [];
    s.stdout.on('data', (c: Buffer) => chunks.push(c));
    s.stderr.resume();
    await Promise.all([s.exit, finished(s.stdout), finished(s.stderr)]);
    const [mem, pids, cpu] = Buffer.concat(chunks).toString().trim().split(/\s+/).map(Number);
    return { memoryBytes: mem ?? 0, pids: pids ?? 0, cpuMs: cpu ?? 0 };
  }

  /** Ask the guest to power off (sync, then ACPI off); QEMU exits. */
  powerOff(): void {
    this.write(encodeFrame('Q', 0));
  }

  get isOpen(): boolean {
    return this.closedErr === undefined && !this.sock.destroyed;
  }

  /** Disconnect. The agent ends the streams still running (kills their trees) and waits for a new host. */
  async close(): Promise<void> {
    this.closedErr ??= new ConflictError('the channel to the microVM was closed by the host');
    this.sock.end();
    const t = setTimeout(() => this.sock.destroy(), 1000);
    await this.closed;
    clearTimeout(t);
  }

  /**
   * A hello after ours was answered: a new agent announced itself (PID 1 restarts one that died). What
   * ran through the old one is gone; greet the new one. Frames after it in the same chunk are dropped:
   * a new agent sends nothing before it has been greeted.
   */
  private agentRestarted(): void {
    this.log?.warn('microvm guest agent restarted; its streams are lost');
    const err = new ConflictError('the microVM\'s agent restarted; what ran through it was ended', { hint: 'run the command again' });
    for (const s of this.streams.values()) s.lost(err);
    this.streams.clear();
    const nonce = randomBytes(NONCE_BYTES);
    this.decoder = new FrameDecoder(nonce);
    this.write(Buffer.concat([Buffer.alloc(16), helloFrame(nonce)]));
  }

  private write(frame: Buffer): void {
    if (!this.sock.destroyed) this.sock.write(frame);
  }
}

async function connectSocket(path: string, deadline: number, signal: AbortSignal | undefined): Promise<Socket> {
  for (;;) {
    if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new RuntimeUnavailableError('the microVM went away during the boot');
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = createConnection(path);
        s.once('connect', () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || performance.now() > deadline) {
        throw new RuntimeUnavailableError(`cannot connect to the microVM's agent socket ${path}: ${(err as Error).message}`, { hint: 'see the VM console log' });
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}
