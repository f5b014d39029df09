/**
 * The stand-ins of the attack suite: TCP (and UDP) listeners the runner binds itself, on addresses a
 * sandbox must never reach (cloud metadata, a private range, a second loopback) and on the one it may
 * (`allowed.attack.test`). Each counts what reached it and keeps the first bytes of every connection,
 * so that a leak shows as a hit and can be traced to the attack whose marker it carries.
 * Non-loopback addresses exist only inside the runner's own network namespace (netns.ts): a packet
 * that gets past a sandbox still has nowhere else to go.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
import type { StandIns } from './attacks/types.js';

type ListenerKey = keyof StandIns['listeners'];

/** Where the stand-ins live when the runner has its own network namespace. */
export const STAND_IN_ADDRESSES = {
  metadata: '169.254.169.254',
  private: '10.0.0.1',
  allowed: '10.99.0.1',
  /** a host outside every allowlist whose address the policy opens: only a name-level rule keeps it out */
  denied: '10.99.0.2',
  loopback: '127.0.0.2',
  ipv6Loopback: '::1',
} as const;

/** Names the egress proxies resolve through the runner's AGENTBOX_EGRESS_HOSTS file. */
export function standInHostsFile(isolated: boolean): string {
  const a = STAND_IN_ADDRESSES;
  const lines = [
    `127.0.0.1 loopback.attack.test`,
    `127.0.0.2 loopback2.attack.test`,
    `::1 v6loopback.attack.test`,
  ];
  if (isolated) {
    lines.push(
      `${a.metadata} metadata.google.internal metadata.attack.test instance-data.attack.test`,
      `${a.private} internal.attack.test private.attack.test`,
      `${a.allowed} allowed.attack.test`,
      `${a.denied} denied.attack.test exfil.attack.test c2.attack.test`,
    );
  }
  return `${lines.join('\n')}\n`;
}

const KEEP_BYTES = 8192;

interface Bound {
  name: string;
  address: string;
  port: number;
  hits: number;
  close(): Promise<void>;
}

export class StandInSet implements StandIns {
  readonly hosts: Record<string, string> = {};
  readonly listeners = {} as StandIns['listeners'];
  readonly extra: Record<string, { address: string; port: number }> = {};
  unavailable?: string;
  private readonly bound: Bound[] = [];
  private readonly seen: { name: string; data: Buffer }[] = [];

  /** Binds the stand-ins; `isolated` false binds only loopback ones (the others are SKIPped by the attacks needing them). */
  static async start(isolated: boolean, reason?: string): Promise<StandInSet> {
    const set = new StandInSet();
    const a = STAND_IN_ADDRESSES;
    try {
      // Loopback stand-ins take any free port (the host's loopback is shared when not isolated).
      await set.tcp('loopback', a.loopback, isolated ? 80 : 0, true);
      await set.tcp('ipv6Loopback', a.ipv6Loopback, 0, true).catch(async () => set.tcp('ipv6Loopback', '127.0.0.1', 0, true));
      if (isolated) {
        await set.tcp('metadata', a.metadata, 80, true);
        await set.tcp('private', a.private, 80, true);
        await set.tcp('allowed', a.allowed, 80, true);
        await set.tcp('denied', a.denied, 80, false);
        await set.tcp('private-ssh', a.private, 22, false);
        await set.tcp('metadata-https', a.metadata, 443, false);
        await set.udp('dns-private', a.private, 53);
        await set.udp('dns-metadata', a.metadata, 53);
        await set.udp('dns-loopback', '127.0.0.1', 53);
      } else {
        set.unavailable = reason ?? 'no private network namespace';
        // The keys must exist; they point at a loopback port nothing targets by design.
        for (const k of ['metadata', 'private', 'allowed'] as const) set.listeners[k] = { address: '0.0.0.0', port: 0 };
      }
    } catch (err) {
      await set.close();
      throw err;
    }
    for (const line of standInHostsFile(isolated).trim().split('\n')) {
      const [address, ...names] = line.split(/\s+/);
      for (const n of names) set.hosts[n] = address as string;
    }
    return set;
  }

  hits(key: ListenerKey): number {
    const l = this.listeners[key];
    return l ? this.hitsAt(l.address, l.port) : 0;
  }

  hitsAt(address: string, port: number): number {
    return this.bound.filter((b) => b.address === address && b.port === port).reduce((n, b) => n + b.hits, 0);
  }

  /** Every hit on a listener other than `allowed` (a leak somewhere). */
  leakCount(): number {
    return this.bound.filter((b) => b.name !== 'allowed').reduce((n, b) => n + b.hits, 0);
  }

  received(marker: string): string[] {
    return [...new Set(this.seen.filter((s) => s.data.includes(marker)).map((s) => s.name))];
  }

  /** What `listener` got in connections carrying `marker` (e.g. the Host header the proxy sent on). */
  dataWith(marker: string, listener: string): string[] {
    return this.seen.filter((s) => s.name === listener && s.data.includes(marker)).map((s) => s.data.toString('latin1'));
  }

  async close(): Promise<void> {
    await Promise.all(this.bound.map((b) => b.close()));
    this.bound.length = 0;
  }

  private async tcp(name: string, address: string, port: number, primary: boolean): Promise<void> {
    const sockets = new Set<Socket>();
    const entry: Bound = { name, address, port, hits: 0, close: async () => undefined };
    const server: Server = createServer((s) => {
      entry.hits++;
      sockets.add(s);
      s.on('error', () => undefined);
      s.once('close', () => sockets.delete(s));
      const chunks: Buffer[] = [];
      let kept = 0;
      const slot = this.seen.push({ name, data: Buffer.alloc(0) }) - 1;
      s.on('data', (c: Buffer) => {
        if (kept < KEEP_BYTES) {
          chunks.push(c);
          kept += c.length;
          this.seen[slot] = { name, data: Buffer.concat(chunks).subarray(0, KEEP_BYTES) };
        }
        // Answer like a web server, so an attacker that got here sees it, and so does the attack's verdict.
        if (s.writable && kept === c.length) {
          const body = `stand-in ${name} reached\n`;
          s.end(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
        }
      });
      s.setTimeout(10_000, () => s.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: address, port, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address();
    entry.port = addr && typeof addr === 'object' ? addr.port : port;
    entry.close = () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      });
    this.bound.push(entry);
    if (primary) (this.listeners as Record<string, { address: string; port: number }>)[name] = { address, port: entry.port };
    else this.extra[name] = { address, port: entry.port };
  }

  private async udp(name: string, address: string, port: number): Promise<void> {
    const sock: UdpSocket = createSocket({ type: 'udp4', reuseAddr: false });
    const entry: Bound = { name, address, port, hits: 0, close: () => new Promise<void>((resolve) => sock.close(() => resolve())) };
    sock.on('message', (msg) => {
      entry.hits++;
      this.seen.push({ name, data: msg.subarray(0, KEEP_BYTES) });
    });
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(port, address, () => {
        sock.off('error', reject);
        resolve();
      });
    });
    this.bound.push(entry);
    this.extra[name] = { address, port };
  }
}
