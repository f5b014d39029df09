/**
 * The port routes (ARCHITECTURE.md, "Terminals and ports"): a byte stream to a server listening
 * inside a sandbox, made from inside (`Runtime.openPort`), so the sandbox's network stays closed.
 *
 * `GET /v1/sandboxes/{id}/ports/{port}/connect` with `Connection: Upgrade` and `Upgrade: tcp`: once
 * the connection inside is made, the daemon answers 101 and the HTTP connection carries its bytes
 * both ways, half-closes included (`agentbox port-forward` opens one per local connection). When
 * nothing listens there, a plain 409.
 */
import { z } from 'zod';
import { parseWith, readJson, sendJson } from './http-util.js';
import { join } from './join-streams.js';
import { GrantPortAccessRequestSchema, PortAccessSchema, PortNumberSchema } from '../contract/ports.js';
import type { RouteFn } from './volume-routes.js';
import type { RouteCtx, UpgradeCtx, UpgradeRouteFn } from './routes.js';

const PortSchema = PortNumberSchema;

function portOf(params: Record<string, string>): number {
  const raw = params.port ?? '';
  return parseWith(PortSchema, /^\d{1,5}$/.test(raw) ? Number(raw) : raw);
}

export function registerPortRoutes(route: RouteFn, upgradeRoute: UpgradeRouteFn): void {
  route('POST', '/v1/sandboxes/{id}/ports/{port}/access', { summary: 'Let browsers reach PORT through the port proxy (PORT-ID.<ports domain>): a new access token (shown once), or with public: true anyone', body: GrantPortAccessRequestSchema, response: PortAccessSchema, status: 201, params: { port: PortSchema } }, async (ctx: RouteCtx) => {
    const body = await readJson(ctx.req, GrantPortAccessRequestSchema);
    const port = portOf(ctx.params);
    sendJson(ctx.res, 201, ctx.manager.grantPortAccess(ctx.params.id as string, port, body, ctx.caller));
  });

  route('DELETE', '/v1/sandboxes/{id}/ports/{port}/access', { summary: 'Revoke every access token of PORT and make it private again', response: z.object({ revoked: z.number().int() }), params: { port: PortSchema } }, async (ctx: RouteCtx) => {
    sendJson(ctx.res, 200, { revoked: ctx.manager.revokePortAccess(ctx.params.id as string, portOf(ctx.params), ctx.caller) });
  });

  upgradeRoute(
    '/v1/sandboxes/{id}/ports/{port}/connect',
    { summary: 'A byte stream to a server listening on PORT inside the sandbox (127.0.0.1 or ::1 there), over an HTTP upgrade (Upgrade: tcp); 409 when nothing listens', upgrade: 'tcp', params: { port: PortSchema } },
    async (ctx: UpgradeCtx) => {
      const port = portOf(ctx.params);
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
