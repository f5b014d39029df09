/**
 * A client's attachment to a terminal (the WebSocket of `GET .../terminals/{id}/attach`): what it
 * shows as 'data' events, typing, resizes, signals, and the command's exit code.
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import WebSocket from 'ws';
import type { SignalName } from '../contract/model.js';
import type { TerminalControl, TerminalEvent } from '../contract/terminals.js';

/** What a connection holds for its first 'data' listener at most (the daemon's replay is 256 KiB). */
const MAX_HELD_BYTES = 1024 * 1024;

/**
 * What the terminal shows arrives as 'data' events, starting with its recent output. Output that
 * arrives before the first 'data' listener is added (the replay often comes with the handshake, before
 * `attachTerminal()`'s promise has resolved) is held and given to that listener, at most 1 MiB of it.
 */
export class TerminalConnection extends EventEmitter<{ data: [Buffer]; close: [] }> {
  /** The command's exit code once it ended; null when the connection closed before (detached, or cut). */
  readonly exit: Promise<number | null>;
  /** Output waiting for the first 'data' listener; undefined once it was given out. */
  private held: Buffer[] | undefined = [];
  private heldBytes = 0;

  constructor(private readonly ws: WebSocket) {
    super();
    // Every emitter has newListener, though the typed event map leaves it out.
    (this as EventEmitter).on('newListener', (event: string | symbol) => {
      // Called before the listener is added: give it the held output right after.
      if (event === 'data' && this.held) queueMicrotask(() => this.release());
    });
    let exitCode: number | null = null;
    this.exit = new Promise((resolve) => {
      ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
        const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
        if (isBinary) {
          this.output(bytes);
          return;
        }
        try {
          const ev = JSON.parse(bytes.toString('utf8')) as TerminalEvent;
          if (ev.type === 'exit') exitCode = ev.exitCode;
        } catch {
          /* a control message this client does not know */
        }
      });
      ws.on('close', () => {
        resolve(exitCode);
        this.emit('close');
      });
      ws.on('error', () => undefined);
    });
  }

  private output(bytes: Buffer): void {
    if (!this.held) {
      this.emit('data', bytes);
      return;
    }
    this.held.push(bytes);
    this.heldBytes += bytes.length;
    while (this.heldBytes > MAX_HELD_BYTES && this.held.length > 1) this.heldBytes -= (this.held.shift() as Buffer).length;
  }

  private release(): void {
    const held = this.held;
    if (!held || this.listenerCount('data') === 0) return;
    this.held = undefined;
    for (const b of held) this.emit('data', b);
  }

  /** Typed at the terminal (Ctrl-C is '\x03'). */
  write(data: Buffer | string): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(typeof data === 'string' ? Buffer.from(data) : data, { binary: true });
  }

  resize(cols: number, rows: number): void {
    this.control({ type: 'resize', cols, rows });
  }

  signal(signal: SignalName): void {
    this.control({ type: 'signal', signal });
  }

  /** Detach: the terminal goes on (hung up 30 s later when nobody else is attached, unless kept alive). */
  close(): void {
    this.ws.close(1000);
  }

  private control(msg: TerminalControl): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }
}

/** Open the WebSocket; rejects with the daemon's answer when it refuses the upgrade. */
export function connectTerminal(url: string, headers: Record<string, string>, refused: (res: IncomingMessage) => Promise<never>): Promise<TerminalConnection> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false, maxPayload: 16 * 1024 * 1024 });
    ws.once('open', () => resolve(new TerminalConnection(ws)));
    ws.once('unexpected-response', (_req, res) => {
      refused(res).catch(reject);
    });
    ws.once('error', reject);
  });
}
