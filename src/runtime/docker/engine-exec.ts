/**
 * One Engine exec (POST /containers/{id}/exec, then a hijacked /exec/{id}/start): its stdout and
 * stderr demultiplexed from Docker's 8-byte-header framing, its stdin, and its exit code.
 */
import type { Duplex, Readable } from 'node:stream';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type Docker from 'dockerode';
import { ConflictError, InternalError } from '../../contract/errors.js';
import { engineError, engineMessage, statusOf } from './engine.js';

export interface EngineExecOpts {
  cmd: string[];
  user: string;
  workingDir: string;
  env: Record<string, string>;
  /** undefined: the command's stdin is empty. */
  stdin?: Buffer | Readable;
}

export interface EngineExec {
  stdout: Readable;
  stderr: Readable;
  /** The command's exit code, once both output streams have ended. */
  exitCode: Promise<number>;
  /** Drop the connection (the command itself keeps running; see `kill` in agentbox-docker-init). */
  destroy(): void;
}

const HEADER = 8;

/**
 * Docker's multiplexed stream: [type(1: stdout, 2: stderr), 0, 0, 0, size(u32 BE)] + payload.
 * Pauses the socket while a consumer is slow, so a large file never piles up in memory.
 */
class Demuxer {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly source: Duplex, private readonly out: PassThrough, private readonly err: PassThrough) {
    const resume = (): void => {
      if (!out.writableNeedDrain && !err.writableNeedDrain) source.resume();
    };
    out.on('drain', resume);
    err.on('drain', resume);
  }

  feed(chunk: Buffer): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    let blocked = false;
    while (this.pending.length >= HEADER) {
      const size = this.pending.readUInt32BE(4);
      if (this.pending.length < HEADER + size) break;
      const type = this.pending[0];
      const payload = this.pending.subarray(HEADER, HEADER + size);
      this.pending = this.pending.subarray(HEADER + size);
      if (payload.length === 0) continue;
      const target = type === 2 ? this.err : this.out;
      if (!target.write(payload)) blocked = true;
    }
    if (blocked) this.source.pause();
  }
}

export async function startEngineExec(container: Docker.Container, o: EngineExecOpts, address: string): Promise<EngineExec> {
  let exec: Docker.Exec;
  try {
    exec = await container.exec({
      Cmd: o.cmd,
      AttachStdin: o.stdin !== undefined,
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
      User: o.user,
      WorkingDir: o.workingDir,
      Env: Object.entries(o.env).map(([k, v]) => `${k}=${v}`),
    });
  } catch (err) {
    throw execError(err, container.id, address);
  }
  let sock: Duplex;
  try {
    sock = (await exec.start({ hijack: true, stdin: o.stdin !== undefined })) as unknown as Duplex;
  } catch (err) {
    throw execError(err, container.id, address);
  }

  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const demux = new Demuxer(sock, stdout, stderr);
  sock.on('data', (c: Buffer) => demux.feed(c));
  const ended = new Promise<Error | undefined>((resolve) => {
    let failure: Error | undefined;
    sock.on('error', (e: Error) => (failure = e));
    sock.on('close', () => resolve(failure));
  });
  // The socket's end means the command ended and Docker copied all of its output.
  void ended.then(() => {
    stdout.end();
    stderr.end();
  });

  if (o.stdin !== undefined) {
    sock.on('error', () => undefined); // the command may exit without reading its stdin
    if (Buffer.isBuffer(o.stdin)) sock.end(o.stdin);
    else {
      o.stdin.on('error', () => sock.destroy());
      o.stdin.pipe(sock); // ends (half-closes) the socket after the last byte: the command sees EOF
    }
  }

  const exitCode = (async (): Promise<number> => {
    const failure = await ended;
    // The exec may still read as running for a moment after its stream closed.
    for (let i = 0; i < 200; i++) {
      let info: Docker.ExecInspectInfo;
      try {
        info = await exec.inspect();
      } catch (err) {
        throw execError(err, container.id, address);
      }
      if (!info.Running && info.ExitCode !== null) return info.ExitCode;
      await sleep(i < 20 ? 2 : 25);
    }
    throw new InternalError(`exec in container ${container.id.slice(0, 12)} did not report an exit code${failure ? ` (${failure.message})` : ''}`);
  })();
  exitCode.catch(() => undefined);

  return { stdout, stderr, exitCode, destroy: () => sock.destroy() };
}

function execError(err: unknown, containerId: string, address: string): Error {
  const status = statusOf(err);
  // 404: the container is gone; 409: it is stopped or paused. Either way not a running sandbox.
  if (status === 404 || status === 409) {
    return new ConflictError(`the sandbox container ${containerId.slice(0, 12)} is not running: ${engineMessage(err)}`, { hint: 'agentbox inspect ID says why it ended', cause: err });
  }
  return engineError(err, 'exec failed', address);
}

