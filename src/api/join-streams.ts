/** Two byte streams joined: a port's connection and its client (the API's routes, the port proxy, the CLI's port-forward). */
import type { Duplex } from 'node:stream';

/** Bytes both ways until both directions ended; a half-close is passed on; an error or a hang-up ends both. */
export function join(a: Duplex, b: Duplex): void {
  const end = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', end);
  b.on('error', end);
  a.on('close', end);
  b.on('close', end);
  a.pipe(b);
  b.pipe(a);
}
