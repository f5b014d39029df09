/** Server-sent events: one writer, with backpressure. */
import type { ServerResponse } from 'node:http';

/** How often a quiet stream gets an SSE comment, so proxies keep it open and a vanished client is noticed. */
export const SSE_HEARTBEAT_MS = 15_000;

export function startSse(res: ServerResponse, heartbeatMs = SSE_HEARTBEAT_MS): void {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.flushHeaders();
  const beat = setInterval(() => {
    // Nothing more to queue for a client that is not reading: the idle timeout then sees a stall.
    if (!res.writableEnded && !res.destroyed && !res.writableNeedDrain) res.write(': keep-alive\n\n');
  }, heartbeatMs);
  beat.unref();
  res.once('close', () => clearInterval(beat));
  res.once('finish', () => clearInterval(beat));
}

/** Write one event; resolves when the socket can take more (backpressure for big streams). */
export function sendEvent(res: ServerResponse, event: string, data: unknown): Promise<void> | undefined {
  const ok = res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  if (ok || res.destroyed) return undefined;
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.once('drain', done);
    res.once('close', done);
  });
}
