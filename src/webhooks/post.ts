/**
 * One delivery attempt: a POST with a deadline over the whole exchange, no redirects followed, and
 * at most a little of the answer read (its status is what counts; a few bytes explain a failure).
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';

export type AttemptResult =
  | { kind: 'status'; status: number; detail: string | null }
  | { kind: 'error'; error: string; timedOut: boolean };

export interface PostOpts {
  timeoutMs: number;
  /** Bytes of a non-2xx answer kept to explain it. @default 512 */
  maxResponseBytes?: number;
  /** Aborts the attempt (the daemon is stopping). */
  signal?: AbortSignal;
}

export function postOnce(url: string, body: Buffer, headers: Record<string, string>, opts: PostOpts): Promise<AttemptResult> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: AttemptResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      req.destroy();
      resolve(r);
    };
    const u = new URL(url);
    // A fresh connection per attempt (agent: false): nothing of one receiver's connection lingers.
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, {
      method: 'POST',
      agent: false,
      headers: { ...headers, 'content-length': String(body.length), connection: 'close' },
    });
    const timer = setTimeout(() => finish({ kind: 'error', error: `no answer within ${opts.timeoutMs} ms`, timedOut: true }), opts.timeoutMs);
    const onAbort = (): void => finish({ kind: 'error', error: 'the daemon stopped during the attempt', timedOut: false });
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err: NodeJS.ErrnoException) => finish({ kind: 'error', error: err.code ? `${err.code}: ${err.message}` : err.message, timedOut: false }));
    req.on('response', (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) return finish({ kind: 'status', status, detail: null });
      if (status >= 300 && status < 400) {
        const to = res.headers.location;
        return finish({ kind: 'status', status, detail: `redirect${to ? ` to ${to.slice(0, 200)}` : ''} not followed` });
      }
      const cap = opts.maxResponseBytes ?? 512;
      const chunks: Buffer[] = [];
      let size = 0;
      const explain = (): void => finish({ kind: 'status', status, detail: printable(Buffer.concat(chunks).subarray(0, cap)) });
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        size += c.length;
        if (size >= cap) explain();
      });
      res.on('end', explain);
      res.on('error', explain);
    });
    req.end(body);
  });
}

function printable(b: Buffer): string | null {
  const s = b.toString('utf8').replace(/[^\x20-\x7e]+/g, ' ').trim();
  return s === '' ? null : s;
}
