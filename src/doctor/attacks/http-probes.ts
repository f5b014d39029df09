/** Hand-made requests to the daemon under attack (its TCP listener on 127.0.0.1 only), for the API attacks. */
import { request } from 'node:http';
import { connect } from 'node:net';

export interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTP request; `status` 0 and the error in `body` when there was no answer. */
export function call(
  port: number,
  method: string,
  path: string,
  opts: { token?: string; body?: string | Buffer; headers?: Record<string, string>; socketPath?: string; timeoutMs?: number } = {},
): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const body = opts.body === undefined ? undefined : Buffer.isBuffer(opts.body) ? opts.body : Buffer.from(opts.body);
    const headers: Record<string, string> = {
      ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
      ...(body ? { 'content-type': 'application/json', 'content-length': String(body.length) } : {}),
      ...opts.headers,
    };
    const req = request(
      { ...(opts.socketPath ? { socketPath: opts.socketPath } : { host: '127.0.0.1', port }), method, path, headers, agent: false, setHost: !('host' in (opts.headers ?? {})) },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          if (size < 1024 * 1024) chunks.push(c);
          size += c.length;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (e) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: `(error ${e.message})` }));
      },
    );
    req.setTimeout(opts.timeoutMs ?? 60_000, () => req.destroy(new Error('no answer in time')));
    req.on('error', (e) => resolve({ status: 0, headers: {}, body: `(error ${e.message})` }));
    req.end(body);
  });
}

/** Raw bytes to the daemon's TCP port; the whole answer (up to 64 KiB) back. */
export function rawCall(port: number, data: string, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let out = '';
    const done = (): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(out);
    };
    const timer = setTimeout(done, timeoutMs);
    s.on('data', (c: Buffer) => {
      if (out.length < 65536) out += c.toString('latin1');
    });
    s.on('end', done);
    s.on('error', done);
    s.on('connect', () => s.write(data, 'latin1'));
  });
}

/** Writes a request and resets the connection at once (SO_LINGER 0): the server sees an RST right after the bytes. */
export function sendThenReset(port: number, data: string): Promise<void> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const t = setTimeout(() => {
      s.destroy();
      resolve();
    }, 3000);
    s.on('error', () => undefined);
    s.on('connect', () => {
      s.write(data, () => {
        s.resetAndDestroy();
        clearTimeout(t);
        setTimeout(resolve, 20);
      });
    });
  });
}

export const statusOf = (a: RawAnswer): string => (a.status === 0 ? a.body.slice(0, 60) : String(a.status));
