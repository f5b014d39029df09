/**
 * One command in a pod through the pods/exec subresource, over WebSocket with the channel protocol
 * (`v5.channel.k8s.io`, else `v4.channel.k8s.io`): every message is one channel byte and the payload;
 * 0 stdin, 1 stdout, 2 stderr, 3 the final Status (JSON; a non-zero exit is `Failure` with reason
 * `NonZeroExitCode` and a cause `ExitCode` whose message is the code), 4 a terminal resize; v5 adds
 * channel 255, `[255, N]` closing stream N, which is how stdin gets its end of file.
 *
 * Written on `ws` rather than client-node's Exec so that output is flow-controlled (the socket is paused
 * while a reader is slow: a large file never piles up in memory) and stdin's end can be sent.
 * Closing the connection does not end the command on a real kubelet: callers kill what they start
 * (kubernetes-runtime.ts runs everything under agentbox-docker-init's `run`, whose tag `kill` finds).
 */
import type { Readable } from 'node:stream';
import { PassThrough } from 'node:stream';
import type { KubeConfig } from '@kubernetes/client-node';
import WebSocket from 'ws';
import { ConflictError, InternalError, RuntimeUnavailableError } from '../../contract/errors.js';
import { UNAVAILABLE_HINT } from './cluster.js';

export const PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'];
const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const STATUS = 3;
const CLOSE = 255;
/** Above this much unsent stdin, reading stdin waits. */
const STDIN_HIGH_WATER = 1 << 20;

export interface PodExec {
  stdout: Readable;
  stderr: Readable;
  /**
   * The command's exit code, once stdout and stderr have ended. Rejects with RuntimeUnavailableError
   * when the connection was lost before the status came, InternalError when the kubelet could not
   * run the command at all.
   */
  exitCode: Promise<number>;
  /** Drop the connection (on a real kubelet the command runs on: kill it first). */
  destroy(): void;
}

/** A transport failure before the exec started: retry it (`transient`) or not. */
export class ExecStartError extends Error {
  constructor(message: string, readonly status: number | undefined, readonly transient: boolean) {
    super(message);
  }
}

/** The exit code a channel-3 Status carries: 0 for Success, ExitCode's for NonZeroExitCode, undefined otherwise. */
export function exitCodeOf(status: { status?: string; reason?: string; details?: { causes?: { reason?: string; message?: string }[] } }): number | undefined {
  if (status.status === 'Success') return 0;
  if (status.reason !== 'NonZeroExitCode') return undefined;
  const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
  const code = Number(cause?.message);
  return Number.isInteger(code) ? code : undefined;
}

export function execUrl(server: string, namespace: string, pod: string, container: string, command: string[], stdin: boolean): string {
  const u = new URL(server);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.pathname = `${u.pathname.replace(/\/$/, '')}/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}/exec`;
  const q = new URLSearchParams();
  for (const c of command) q.append('command', c);
  q.set('container', container);
  q.set('stdin', String(stdin));
  q.set('stdout', 'true');
  q.set('stderr', 'true');
  q.set('tty', 'false');
  u.search = q.toString();
  return u.toString();
}

export async function podExec(kc: KubeConfig, o: { namespace: string; pod: string; container: string; command: string[]; stdin?: Buffer | Readable }): Promise<PodExec> {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new RuntimeUnavailableError('no Kubernetes cluster is configured', { hint: UNAVAILABLE_HINT });
  const wsOpts: WebSocket.ClientOptions = { handshakeTimeout: 15_000, perMessageDeflate: false };
  await kc.applyToHTTPSOptions(wsOpts);
  const ws = new WebSocket(execUrl(server, o.namespace, o.pod, o.container, o.command, o.stdin !== undefined), PROTOCOLS, wsOpts);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => {
        if (body.length < 4096) body += c.toString();
      });
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        let message = body;
        try {
          message = (JSON.parse(body) as { message?: string }).message ?? body;
        } catch {
          // not a Status
        }
        reject(new ExecStartError(`pods/exec answered HTTP ${status}: ${message.slice(0, 300)}`, status, status === 429 || status >= 500));
      });
      res.on('error', () => reject(new ExecStartError(`pods/exec answered HTTP ${res.statusCode}`, res.statusCode, true)));
    });
    ws.once('error', (err) => reject(new ExecStartError(`cannot reach the API server for pods/exec: ${err.message}`, undefined, true)));
  });
  if (!PROTOCOLS.includes(ws.protocol)) {
    ws.terminate();
    throw new ExecStartError(`the API server chose no channel protocol agentbox speaks (${ws.protocol || 'none'})`, undefined, false);
  }
  const v5 = ws.protocol === 'v5.channel.k8s.io';
  if (o.stdin !== undefined && !v5) {
    ws.terminate();
    throw new RuntimeUnavailableError('this API server speaks only v4.channel.k8s.io, which cannot end a command\'s stdin', { hint: 'Kubernetes 1.30 or later speaks v5.channel.k8s.io' });
  }

  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const resumeIfDrained = (): void => {
    if (!stdout.writableNeedDrain && !stderr.writableNeedDrain && ws.isPaused) ws.resume();
  };
  stdout.on('drain', resumeIfDrained);
  stderr.on('drain', resumeIfDrained);
  let statusText = '';
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    const buf = isBinary ? data : Buffer.from(data);
    if (buf.length === 0) return;
    const channel = buf[0];
    const payload = buf.subarray(1);
    if (channel === STDOUT || channel === STDERR) {
      if (payload.length === 0) return;
      if (!(channel === STDOUT ? stdout : stderr).write(payload)) ws.pause();
    } else if (channel === STATUS) {
      if (statusText.length < 65536) statusText += payload.toString('utf8');
    }
    // CLOSE of an output stream and anything else: the socket's close ends the streams.
  });
  ws.on('error', () => undefined); // reported as the close without a status

  const exitCode = new Promise<number>((resolve, reject) => {
    ws.once('close', () => {
      stdout.end();
      stderr.end();
      const settle = (): void => {
        if (!statusText) return reject(new RuntimeUnavailableError(`the connection of an exec in pod ${o.pod} was lost before its exit status came`, { hint: UNAVAILABLE_HINT }));
        let status: Parameters<typeof exitCodeOf>[0];
        try {
          status = JSON.parse(statusText) as Parameters<typeof exitCodeOf>[0];
        } catch {
          return reject(new InternalError(`pods/exec sent a status that is not JSON: ${statusText.slice(0, 200)}`));
        }
        const code = exitCodeOf(status);
        if (code !== undefined) return resolve(code);
        const message = (status as { message?: string }).message ?? statusText.slice(0, 300);
        reject(/container not found|not running|is terminated|does not exist/i.test(message) ? new ConflictError(`pod ${o.pod} is not running: ${message}`) : new InternalError(`pods/exec in pod ${o.pod} failed: ${message}`));
      };
      // All output delivered first (a paused reader may still hold some).
      let left = 2;
      const one = (): void => void (--left === 0 && settle());
      stdout.once('end', one);
      stderr.once('end', one);
      stdout.once('close', () => left > 0 && one());
      stderr.once('close', () => left > 0 && one());
      if (stdout.readableEnded) one();
      if (stderr.readableEnded) one();
    });
  });
  exitCode.catch(() => undefined);

  if (o.stdin !== undefined) sendStdin(ws, o.stdin);
  return { stdout, stderr, exitCode, destroy: () => ws.terminate() };
}

function frame(channel: number, payload: Buffer): Buffer {
  return Buffer.concat([Buffer.from([channel]), payload]);
}

/** stdin on channel 0, then `[255, 0]` (v5: the command sees its end of file). */
function sendStdin(ws: WebSocket, stdin: Buffer | Readable): void {
  const end = (): void => {
    if (ws.readyState === WebSocket.OPEN) ws.send(Buffer.from([CLOSE, STDIN]));
  };
  if (Buffer.isBuffer(stdin)) {
    for (let i = 0; i < stdin.length; i += 65536) ws.send(frame(STDIN, stdin.subarray(i, i + 65536)));
    return end();
  }
  stdin.on('data', (c: Buffer) => {
    if (ws.readyState !== WebSocket.OPEN) return; // the command has ended: the rest is dropped
    ws.send(frame(STDIN, c));
    if (ws.bufferedAmount > STDIN_HIGH_WATER) {
      stdin.pause();
      const wait = setInterval(() => {
        if (ws.bufferedAmount <= STDIN_HIGH_WATER / 2 || ws.readyState !== WebSocket.OPEN) {
          clearInterval(wait);
          stdin.resume();
        }
      }, 5);
    }
  });
  stdin.once('end', end);
  stdin.once('error', () => ws.terminate());
  ws.once('close', () => stdin.destroy());
}
