/** A webhook receiver on loopback for tests, and the signature check done independently of the code under test. */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface Received {
  headers: IncomingMessage['headers'];
  raw: Buffer;
  at: number;
}

/** A webhook receiver on loopback: records every request; `answer` decides each response. */
export class Receiver {
  readonly got: Received[] = [];
  answer: (r: Received, res: ServerResponse) => void = (_r, res) => res.writeHead(200).end('ok');
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  private constructor(server: Server) {
    this.server = server;
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r = { headers: req.headers, raw: Buffer.concat(chunks), at: Date.now() };
        this.got.push(r);
        this.answer(r, res);
      });
    });
  }

  static async start(port = 0): Promise<Receiver> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    return new Receiver(server);
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  bodies(): Array<{ type: string; sandboxId: string; id: string }> {
    return this.got.map((r) => JSON.parse(r.raw.toString('utf8')) as { type: string; sandboxId: string; id: string });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** The `agentbox-signature` of a request, recomputed here from the raw bytes (not with the code under test). */
export function checkSignature(r: Received, secret: string): number {
  const header = String(r.headers['agentbox-signature']);
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  assert.ok(m, `malformed agentbox-signature: ${header}`);
  const t = m[1]!;
  const want = createHmac('sha256', secret).update(Buffer.concat([Buffer.from(`${t}.`), r.raw])).digest('hex');
  assert.equal(m[2], want, 'the signature is not HMAC-SHA256(secret, t + "." + raw body)');
  assert.ok(Math.abs(Number(t) - Date.now() / 1000) < 30, `timestamp ${t} is not now`);
  return Number(t);
}

