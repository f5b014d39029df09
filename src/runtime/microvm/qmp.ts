/**
 * QEMU's machine protocol (QMP) on a VM's Unix socket: one command at a time, each answered by
 * `return` or `error`; asynchronous `event` lines are skipped. Used to stop, save (migrate to a file)
 * and resume VMs for snapshot templates.
 */
import { createConnection, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { InternalError } from '../../contract/errors.js';

type Reply = { return?: unknown; error?: { class?: string; desc?: string } };

export class Qmp {
  private buffer = '';
  private waiting: ((line: Reply) => void) | undefined;
  private failure: Error | undefined;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      this.buffer += chunk;
      for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (!line) continue;
        let msg: Reply & { event?: string; QMP?: unknown };
        try {
          msg = JSON.parse(line) as Reply & { event?: string; QMP?: unknown };
        } catch {
          continue;
        }
        if (msg.event || msg.QMP) continue;
        const w = this.waiting;
        this.waiting = undefined;
        w?.(msg);
      }
    });
    const lost = (): void => {
      this.failure ??= new InternalError('QEMU closed its QMP socket');
      const w = this.waiting;
      this.waiting = undefined;
      w?.({ error: { desc: this.failure.message } });
    };
    sock.on('close', lost);
    sock.on('error', (err) => {
      this.failure = new InternalError(`QMP: ${err.message}`);
    });
  }

  /** Connect (retrying while QEMU has not made the socket yet) and leave capabilities negotiation. */
  static async connect(path: string, timeoutMs = 10_000): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = createConnection(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const qmp = new Qmp(sock);
        await qmp.execute('qmp_capabilities');
        return qmp;
      } catch (err) {
        if (Date.now() > deadline) throw new InternalError(`cannot reach QEMU's QMP socket ${path}: ${(err as Error).message}`);
        await sleep(20);
      }
    }
  }

  /** Run a command; its `return`, or an InternalError with QEMU's description. */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.waiting) return Promise.reject(new InternalError('QMP: one command at a time'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new InternalError(`QMP ${command} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting = (reply) => {
        clearTimeout(timer);
        if (reply.error) reject(new InternalError(`QMP ${command}: ${reply.error.desc ?? reply.error.class ?? 'error'}`));
        else resolve(reply.return);
      };
      this.sock.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    });
  }

  /** Poll `query-status` until the VM's status is `want` (e.g. `paused` once an incoming migration has loaded). */
  async waitStatus(want: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = (await this.execute('query-status')) as { status?: string };
      if (s.status === want) return;
      if (Date.now() > deadline) throw new InternalError(`the VM did not reach ${want} within ${timeoutMs} ms (it is ${s.status})`);
      await sleep(10);
    }
  }

  close(): void {
    this.sock.destroy();
  }
}
