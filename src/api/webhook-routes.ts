/** The /v1/webhooks routes (README, "Lifecycle webhooks"), registered into the route table by routes.ts. */
import { z } from 'zod';
import { BadRequestError } from '../contract/errors.js';
import { WEBHOOK_DELIVERY_STATES, WebhookDeliveryListSchema } from '../contract/webhooks.js';
import { sendJson } from './http-util.js';
import type { RouteFn } from './volume-routes.js';

const QuerySchema = z
  .object({
    sandbox: z.string().regex(/^sbx_[A-Za-z0-9]{1,64}$/, 'a sandbox id (sbx_...)').optional(),
    state: z.enum(WEBHOOK_DELIVERY_STATES).optional(),
    limit: z.coerce.number().int().min(1).max(1000).optional(),
  })
  .strict();

export function registerWebhookRoutes(route: RouteFn): void {
  route(
    'GET',
    '/v1/webhooks/deliveries',
    {
      summary: "The caller's tenant's webhook deliveries, newest first: event, receiver, state, attempts, last status or error",
      query: { sandbox: 'only this sandbox\'s', state: 'pending | delivered | failed', limit: 'at most this many (default 100, at most 1000)' },
      response: WebhookDeliveryListSchema,
    },
    async (ctx) => {
      const r = QuerySchema.safeParse(Object.fromEntries(ctx.query));
      if (!r.success) {
        const issue = r.error.issues[0];
        const where = issue?.path.join('.') || 'query';
        const extra = issue?.code === 'unrecognized_keys' ? `: ${issue.keys.join(', ')}` : '';
        throw new BadRequestError(`?${where}: ${issue?.message ?? 'invalid'}${extra}`, { hint: 'query parameters: sandbox, state (pending|delivered|failed), limit (1-1000)' });
      }
      const q = r.data;
      const deliveries = ctx.manager.webhookDeliveries(ctx.caller, { ...(q.sandbox ? { sandboxId: q.sandbox } : {}), ...(q.state ? { state: q.state } : {}), ...(q.limit ? { limit: q.limit } : {}) });
      sendJson(ctx.res, 200, { deliveries });
    },
  );
}
