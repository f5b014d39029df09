/**
 * Egress for a microVM, which has no network device: the guest agent listens on 127.0.0.1:EGRESS_PORT
 * in the guest, and each connection a sandbox makes there becomes one stream of the agent's channel
 * (native/agentbox-vm-agent.c, kind `egress`), which this side joins to the sandbox's egress proxy
 * (the same Unix socket and service as on the other runtimes). The host keeps a few such streams
 * waiting for a connection; as one takes a connection, it opens the next.
 *
 * The stream carries the bytes both ways with the channel's credit, so a slow proxy or a slow
 * sandbox holds up its own connection only. Half-closes pass both ways at once: the sandbox's end
 * of writing as the end of the stream's stdout (the agent's 'D' frame), the proxy's as the end of
 * its stdin; the connection ends when both directions have.
 */
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { EGRESS_PORT, EGRESS_SOCKET } from '../egress-plumbing.js';
import type { VmChannel, VmStream } from './channel.js';

/** What the guest's relay writes on stderr once it holds a connection (EGRESS_ACCEPTED in the agent). */
export const ACCEPTED_MARK = 'agentbox-egress-accepted\n';
/** Streams kept waiting for a connection: a burst beyond it waits in the guest's listen backlog for a round trip. */
const WAITING = 4;
/** After a waiting stream failed (e.g. the agent's streams are all in use), the next try waits this long. */
const RETRY_MS = 250;
const MAX_RETRY_MS = 10_000;

const PROXY_DOWN =
  'HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n' + "agentbox egress: the sandbox's egress proxy is not running\n";

export class EgressPump {
  private stopped = false;
  private waiting = 0;
  /** Waiting streams that ended without a connection in a row: the retries back off. */
  private failures = 0;
  private lastError = '';

  private constructor(
    private readonly channel: VmChannel,
    /** The host directory of the sandbox's proxy socket (RuntimeSpec.egressDir). */
    private readonly egressDir: string,
    private readonly log: Logger | undefined,
  ) {}

  /**
   * Start relaying for the VM behind `channel`; resolves once the guest listens (before the sandbox's
   * first command can connect), rejects when it cannot. Ends by itself with the channel.
   */
  static async start(channel: VmChannel, egressDir: string, log?: Logger): Promise<EgressPump> {
    const pump = new EgressPump(channel, egressDir, log);
    const first = pump.open();
    if ((await first.pid) === undefined) {
      pump.stop();
      await first.exit.catch(() => undefined);
      throw new Error(pump.lastError.trim() || 'the guest agent did not start its egress relay');
    }
    pump.replenish(0);
    void channel.closed.then(() => pump.stop());
    return pump;
  }

  stop(): void {
    this.stopped = true;
  }

  /** One stream waiting for a connection in the guest. */
  private open(): VmStream {
    const s = this.channel.open({ kind: 'egress', cwd: '/', timeoutMs: 0, argv: [String(EGRESS_PORT)], env: {} });
    this.waiting++;
    let accepted = false;
    let err = '';
    s.stderr.on('data', (c: Buffer) => {
      if (accepted || err.length > 4096) return;
      err += c.toString('latin1');
      if (!err.startsWith(ACCEPTED_MARK)) return;
      accepted = true;
      this.waiting--;
      this.failures = 0;
      this.replenish(0);
      this.join(s);
    });
    const ended = (code: number | undefined): void => {
      if (accepted) return;
      this.waiting--;
      this.lastError = err;
      if (this.stopped || !this.channel.isOpen) return;
      this.failures++;
      this.log?.warn({ code, stderr: err.slice(0, 500), failures: this.failures }, 'microvm egress: a relay stream ended without a connection; opening another');
      this.replenish(Math.min(RETRY_MS * 2 ** (this.failures - 1), MAX_RETRY_MS));
    };
    s.exit.then((e) => ended(e.code), () => ended(undefined));
    return s;
  }

  private replenish(delayMs: number): void {
    void (async () => {
      if (delayMs) await sleep(delayMs);
      while (!this.stopped && this.channel.isOpen && this.waiting < WAITING) this.open();
    })();
  }

  /** Join a stream that holds a sandbox's connection to the proxy's socket. */
  private join(s: VmStream): void {
    // Half-open: the proxy's end of writing reaches the sandbox, which may still be sending.
    const proxy = createConnection({ path: join(this.egressDir, EGRESS_SOCKET), allowHalfOpen: true });
    let connected = false;
    proxy.once('connect', () => {
      connected = true;
      s.stdout.pipe(proxy);
      s.sendStdin(proxy);
    });
    proxy.once('error', (e: NodeJS.ErrnoException) => {
      if (connected) return s.kill();
      this.log?.warn({ err: e.message }, 'microvm egress: the sandbox\'s proxy does not answer');
      s.stdout.resume();
      s.sendStdin(Buffer.from(PROXY_DOWN));
    });
    // The guest's relay has ended (or the VM went away): nothing more comes or goes.
    void s.exit.then(
      () => proxy.end(),
      () => proxy.destroy(),
    );
  }
}
