/**
 * A client's attachment to a terminal (the WebSocket of `GET .../terminals/{id}/attach`): what it
 * shows as 'data' events, typing, resizes, signals, and the command's exit code.
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import WebSocket from 'ws';
import type { SignalName } from '../contract/model.js';
import type { TerminalControl, TerminalEvent } from '../contract/terminals.js';

export class TerminalConnection extends EventEmitter<{ data: [Buffer]; close: [] }> {
  /** The command's exit code once it ended; null when the connection closed before (detached, or cut). */
  readonly exit: Promise<number | null>;

  constructor(private readonly ws: WebSocket) {
    super();
    let exitCode: number | null = null;
    this.exit = new Promise((resolve) => {
      ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
        const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
        if (isBinary) {
          this.emit('data', bytes);
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
