/**
 * Terminals: a command on a pseudo-terminal inside a sandbox (`Runtime.openPty`), written once for
 * every driver.
 *
 * native/pty-session.h's `pty` op allocates the terminal inside the sandbox (its own devpts), starts
 * the command as the leader of a session on it, as the sandbox user, and relays: framed input on its
 * stdin (typing, resizes, signals), what the terminal shows on its stdout. It rides each driver's
 * files transport (`FileOpStarter`), as ports do (ports.ts), so no driver has code of its own for it.
 */
import { constants } from 'node:os';
import { PassThrough, type Readable } from 'node:stream';
import { BadRequestError, InternalError } from '../contract/errors.js';
import type { SignalName } from '../contract/model.js';
import { type FileOpStarter, parseFileError } from './files.js';
import { execEnv } from './shared.js';
import type { SandboxHandle } from './types.js';

const STARTED = /agentbox-pty-started (\d+)\n/;
/** The native side refuses a start frame over 256 KiB; one data frame may hold up to 1 MiB. */
const MAX_FRAME = 1024 * 1024;
export const MAX_TERMINAL_SIZE = 1000;
/** native/pty-session.h: from a hang-up to SIGKILL for the session's tree. */
const HANG_UP_GRACE_MS = 2000;

export interface PtyOpts {
  /** The command and its arguments (a login shell, say). */
  cmd: string[];
  cols: number;
  rows: number;
  /** Added on top of the base environment, as an exec's (`TERM` defaults to xterm-256color). */
  env: Record<string, string>;
  /** @default '/workspace' */
  cwd?: string;
  /** The terminal's processes carry it as AGENTBOX_EXEC_ID, as an exec's do. */
  execId: string;
}

/** A command running on a terminal inside a sandbox. */
export interface PtyProcess {
  /** Its pid inside the sandbox. */
  readonly pid: number;
  /** What the terminal shows; ends when the session ends. */
  readonly output: Readable;
  /** The command's exit status once the session ends (128+N for signal N); rejects only when the transport failed. */
  readonly exit: Promise<number>;
  /** Typed at the terminal (Ctrl-C is a byte like any other: the terminal makes it a SIGINT). */
  write(data: Buffer): void;
  resize(cols: number, rows: number): void;
  /** A signal to the command itself (its process group gets Ctrl-C's). */
  signal(sig: SignalName): void;
  /** Hang up: the session gets SIGHUP, then SIGKILL 2 s later if it is still there. */
  hangUp(): void;
  /** Let go of the session: hang up, stop reading, and end what relays it once the session has ended (at most 3.5 s). */
  destroy(): void;
}

export function checkTerminalSize(cols: number, rows: number): void {
  for (const [name, v] of [['cols', cols], ['rows', rows]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > MAX_TERMINAL_SIZE) throw new BadRequestError(`${name} must be an integer from 1 to ${MAX_TERMINAL_SIZE}, not ${String(v)}`, { hint: 'give the terminal\'s size in character cells, e.g. cols 80 and rows 24' });
  }
}

function frame(type: 'S' | 'D' | 'R' | 'K', payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

function startFrame(opts: PtyOpts): Buffer {
  const env = execEnv({ env: { TERM: 'xterm-256color', ...opts.env }, execId: opts.execId });
  const fields = [String(opts.rows), String(opts.cols), opts.cwd ?? '/workspace', String(opts.cmd.length), ...opts.cmd, ...Object.entries(env).map(([k, v]) => `${k}=${v}`)];
  if (fields.some((f) => f.includes('\0'))) throw new BadRequestError('a terminal\'s command, cwd and environment cannot contain NUL bytes');
  return frame('S', Buffer.from(fields.map((f) => `${f}\0`).join('')));
}

export class SandboxPty {
  constructor(private readonly start: FileOpStarter) {}

  /** Start OPTS.cmd on a new terminal inside the sandbox; resolves once the command runs. */
  async openPty(handle: SandboxHandle, opts: PtyOpts): Promise<PtyProcess> {
    checkTerminalSize(opts.cols, opts.rows);
    if (opts.cmd.length === 0) throw new BadRequestError('a terminal needs a command', { hint: 'e.g. ["bash", "-l"]' });
    const first = startFrame(opts);
    if (first.length > 256 * 1024) throw new BadRequestError('the command and environment of a terminal are over 256 KiB');
    const input = new PassThrough();
    input.write(first);
    const proc = await this.start(handle, 'pty', '-', input);
    return new Promise<PtyProcess>((resolve, reject) => {
      let stderr = '';
      let started = false;
      proc.stderr.on('data', (c: Buffer) => {
        if (started || stderr.length > 8192) return;
        stderr += c.toString();
        const m = STARTED.exec(stderr);
        if (!m) return;
        started = true;
        resolve(new RelayedPty(Number(m[1]), proc.stdout, input, proc.exitCode, () => proc.abort()));
      });
      proc.exitCode.then(
        (code) => {
          if (started) return;
          proc.abort();
          const { kind, detail } = parseFileError(stderr);
          if (kind === 'EINVAL' || kind === 'E2BIG') reject(new BadRequestError(detail));
          else reject(new InternalError(`could not start a terminal in sandbox ${handle.id} (exit ${code}): ${detail || stderr.trim().slice(0, 300)}`, { hint: 'the image needs /dev/ptmx; `agentbox doctor` checks the runtime' }));
        },
        (err: unknown) => {
          if (!started) reject(err);
        },
      );
    });
  }
}

class RelayedPty implements PtyProcess {
  readonly exit: Promise<number>;

  constructor(
    readonly pid: number,
    readonly output: Readable,
    private readonly input: PassThrough,
    exitCode: Promise<number>,
    private readonly abort: () => void,
  ) {
    this.exit = exitCode.finally(() => input.end());
    this.exit.catch(() => undefined);
  }

  private send(type: 'D' | 'R' | 'K', payload: Buffer): void {
    if (this.input.writableEnded || this.input.destroyed) return;
    this.input.write(frame(type, payload));
  }

  write(data: Buffer): void {
    for (let off = 0; off < data.length; off += MAX_FRAME) this.send('D', data.subarray(off, off + MAX_FRAME));
  }

  resize(cols: number, rows: number): void {
    checkTerminalSize(cols, rows);
    this.send('R', Buffer.from(`${rows} ${cols}`));
  }

  signal(sig: SignalName): void {
    this.send('K', Buffer.from(String(constants.signals[`SIG${sig}`])));
  }

  hangUp(): void {
    if (!this.input.writableEnded) this.input.end();
  }

  destroy(): void {
    this.hangUp();
    this.output.resume();
    // The relay ends the session's whole tree 2 s after a hang-up; cutting it off sooner would leave
    // that to the kernel's hang-up of the terminal, which gVisor does not deliver.
    const cut = setTimeout(() => this.abort(), HANG_UP_GRACE_MS + 1500);
    cut.unref();
    this.exit.finally(() => clearTimeout(cut)).catch(() => undefined);
  }
}
