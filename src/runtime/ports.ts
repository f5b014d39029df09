/**
 * A sandbox's ports, reached from the host without giving the sandbox a network (`Runtime.openPort`),
 * written once for every driver.
 *
 * The connection is made from inside: native/port-connect.h's `connect PORT` connects to
 * 127.0.0.1:PORT (else [::1]:PORT) in the sandbox, as its user, and relays the connection over its
 * stdin and stdout. It rides each driver's files transport (`FileOpStarter`: the helper on local and
 * runc, the exec agent on gVisor, the agent's channel on microvm), so nothing of the sandbox's
 * network changes, and no route from the sandbox to the host is opened: only the daemon can start one.
 */
import { Duplex, PassThrough, type Readable, type Writable } from 'node:stream';
import { BadRequestError, ConflictError, InternalError } from '../contract/errors.js';
import { type FileOpStarter, parseFileError } from './files.js';
import type { SandboxHandle } from './types.js';

const CONNECTED = 'agentbox-port-connected\n';

export class SandboxPorts {
  constructor(private readonly start: FileOpStarter) {}

  /**
   * A byte stream to the server listening on PORT inside the sandbox, once it is connected. Ending
   * the stream's writable side half-closes the connection; destroying the stream ends it and what
   * relays it. Refused with ConflictError when nothing listens there.
   */
  async openPort(handle: SandboxHandle, port: number): Promise<Duplex> {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new BadRequestError(`not a port: ${String(port)}`, { hint: 'a TCP port is an integer from 1 to 65535' });
    const input = new PassThrough();
    const proc = await this.start(handle, 'connect', String(port), input);
    return new Promise<Duplex>((resolve, reject) => {
      let stderr = '';
      let connected = false;
      // Refused: the relay has exited. Its stdin is ended and its (empty) stdout read, or a transport
      // that waits for both before it reports the exit (docker's exec routes) never would.
      const refused = (): void => {
        input.end();
        proc.stdout.resume();
      };
      proc.stderr.once('end', () => {
        if (!connected) refused();
      });
      proc.stderr.on('data', (c: Buffer) => {
        if (connected || stderr.length > 8192) return;
        stderr += c.toString();
        if (/agentbox-file-error:/.test(stderr)) return refused();
        if (!stderr.includes(CONNECTED)) return;
        connected = true;
        // Whoever holds the stream lets go of it (a client hung up): the relay inside ends too.
        resolve(new PortStream(proc.stdout, input, () => proc.abort()));
      });
      proc.exitCode.then(
        (code) => {
          if (connected) return;
          proc.abort();
          const { kind, detail } = parseFileError(stderr);
          if (kind === 'ECONNREFUSED') {
            reject(new ConflictError(`nothing listens on port ${port} in sandbox ${handle.id}`, { hint: `start the server first, listening on 127.0.0.1, ::1 or 0.0.0.0 inside; agentbox exec ${handle.id} -- netstat -ltn shows what listens` }));
          } else if (kind === 'EINVAL') {
            reject(new BadRequestError(detail));
          } else {
            reject(new InternalError(`could not connect to port ${port} in sandbox ${handle.id} (exit ${code}): ${detail}`));
          }
        },
        (err: unknown) => {
          if (!connected) reject(err);
        },
      );
    });
  }
}

/**
 * The connection as one stream: what is written goes to the relay's stdin (its end half-closes the
 * connection), what the relay writes is read. Destroying it is a plain hang-up (no error event), and
 * ends the relay.
 */
class PortStream extends Duplex {
  constructor(
    private readonly from: Readable,
    private readonly to: Writable,
    private readonly hangUp: () => void,
  ) {
    super({ allowHalfOpen: true });
    from.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) from.pause();
    });
    from.once('end', () => this.push(null));
    from.once('error', (err) => this.destroy(err));
    to.on('error', (err) => this.destroy(err));
  }

  override _read(): void {
    this.from.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.to.write(chunk)) done();
    else this.to.once('drain', () => done());
  }

  override _final(done: (err?: Error | null) => void): void {
    this.to.end(() => done());
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.from.destroy();
    this.to.destroy();
    this.hangUp();
    done(err);
  }
}
