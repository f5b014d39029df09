/**
 * The port routes (ARCHITECTURE.md, "Terminals and ports"): a byte stream to a server listening
 * inside a sandbox, made from inside (`Runtime.openPort`), so the sandbox's network stays closed.
 *
 * `GET /v1/sandboxes/{id}/ports/{port}/connect` with `Connection: Upgrade` and `Upgrade: tcp`: once
 * the connection inside is made, the daemon answers 101 and the HTTP connection carries its bytes
 * both ways, half-closes included (`agentbox port-forward` opens one per local connection). When
 * nothing listens there, a plain 409.
 */
import type { Duplex } from 'node:stream';
import { z } from 'zod';
import { parseWith } from './http-util.js';
import type { UpgradeCtx, UpgradeRouteFn } from './routes.js';

const PortSchema = z.number().int().min(1).max(65535).describe('a TCP port inside the sandbox');

export function registerPortRoutes(upgradeRoute: UpgradeRouteFn): void {
  upgradeRoute(
    '/v1/sandboxes/{id}/ports/{port}/connect',
    { summary: 'A byte stream to a server listening on PORT inside the sandbox (127.0.0.1 or ::1 there), over an HTTP upgrade (Upgrade: tcp); 409 when nothing listens', upgrade: 'tcp', params: { port: PortSchema } },
    async (ctx: UpgradeCtx) => {
      const raw = ctx.params.port ?? '';
      const port = parseWith(PortSchema, /^\d{1,5}$/.test(raw) ? Number(raw) : raw);
      const conn = await ctx.manager.openPort(ctx.params.id as string, port, ctx.caller);
      const client = ctx.socket;
      if (!client.writable) {
        conn.destroy();
        return;
      }
      client.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n');
      if (ctx.head.length > 0) conn.write(ctx.head);
      join(client, conn);
    },
  );
}

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
