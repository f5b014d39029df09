/** The sandbox token routes (ARCHITECTURE.md, "Sandbox tokens"), registered into the route table by routes.ts. */
import { z } from 'zod';
import { CreatedSandboxTokenSchema, CreateSandboxTokenRequestSchema, SandboxTokenListSchema, SandboxTokenSchema } from '../contract/tokens.js';
import { parseWith, readJson, sendJson } from './http-util.js';
import type { RouteFn } from './volume-routes.js';

const TokenIdSchema = z.string().regex(/^sbt_[0-9a-f]{16}$/, 'a token id (sbt_...)');

export function registerTokenRoutes(route: RouteFn): void {
  route(
    'POST',
    '/v1/sandboxes/{id}/tokens',
    {
      summary: 'Mint a short-lived token scoped to this sandbox (read, exec, files; never manage; at most 1h, default 15m), shown once; with inject: true also written into the sandbox. Code inside a sandbox with egress reaches the API at http://agentbox.internal through its proxy',
      body: CreateSandboxTokenRequestSchema,
      response: CreatedSandboxTokenSchema,
      status: 201,
    },
    async (ctx) => {
      const body = await readJson(ctx.req, CreateSandboxTokenRequestSchema);
      sendJson(ctx.res, 201, await ctx.manager.createToken(ctx.params.id as string, body, ctx.caller));
    },
  );
  route('GET', '/v1/sandboxes/{id}/tokens', { summary: 'The sandbox\'s tokens, without their secrets', response: SandboxTokenListSchema }, async (ctx) => {
    sendJson(ctx.res, 200, { tokens: ctx.manager.listTokens(ctx.params.id as string, ctx.caller) });
  });
  route('DELETE', '/v1/sandboxes/{id}/tokens/{tokenId}', { summary: 'Revoke one of the sandbox\'s tokens now', params: { tokenId: TokenIdSchema }, response: SandboxTokenSchema }, async (ctx) => {
    sendJson(ctx.res, 200, ctx.manager.revokeToken(ctx.params.id as string, parseWith(TokenIdSchema, ctx.params.tokenId), ctx.caller));
  });
}
