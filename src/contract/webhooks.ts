/**
 * Lifecycle webhooks on the wire (README, "Lifecycle webhooks"): the event a tenant's URL receives,
 * the headers that sign it, and the delivery log the tenant reads back (`GET /v1/webhooks/deliveries`).
 */
import { z } from 'zod';
import { EndReasonSchema, SandboxSchema } from './model.js';

export const WEBHOOK_EVENT_TYPES = ['created', 'paused', 'resumed', 'ended'] as const;
export const WebhookEventTypeSchema = z.enum(WEBHOOK_EVENT_TYPES).describe('created | paused | resumed | ended');
export type WebhookEventType = z.infer<typeof WebhookEventTypeSchema>;

/** Headers of every delivery; names are lower-case, as Node gives them to a receiver. */
export const WEBHOOK_HEADERS = {
  /** `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>` */
  signature: 'agentbox-signature',
  /** The event's id: the same on every retry, so a receiver can drop duplicates. */
  eventId: 'agentbox-event-id',
  eventType: 'agentbox-event-type',
  /** 1 on the first try. */
  attempt: 'agentbox-delivery-attempt',
} as const;

/** The body of a delivery in agentbox's own format (`format: agentbox`, the default). */
export const WebhookEventSchema = z
  .object({
    id: z.string().describe('Event id (evt_...), unique; the same on every retry (header agentbox-event-id)'),
    type: WebhookEventTypeSchema,
    at: z.string().describe('When it happened, ISO 8601'),
    tenant: z.string(),
    sandboxId: z.string(),
    sandbox: SandboxSchema.describe('The sandbox as it was right after the event'),
    endReason: EndReasonSchema.optional().describe('ended only: why'),
    endedBy: z.string().nullable().optional().describe('ended only: who ended it (a token\'s actor, reaper, ...); null when nobody did'),
    pauseMode: z.enum(['freeze', 'hibernate']).optional().describe('paused only: frozen (memory kept) or hibernated (memory on disk)'),
  })
  .strict();
export type WebhookEvent = z.infer<typeof WebhookEventSchema>;

export const WEBHOOK_DELIVERY_STATES = ['pending', 'delivered', 'failed'] as const;

export const WebhookDeliverySchema = z
  .object({
    eventId: z.string(),
    tenant: z.string(),
    sandboxId: z.string(),
    eventType: WebhookEventTypeSchema,
    url: z.string().describe('The receiver, without its query string'),
    state: z.enum(WEBHOOK_DELIVERY_STATES).describe('pending: will be tried (again); delivered: a 2xx came back; failed: given up'),
    attempts: z.number().int().min(0),
    lastStatus: z.number().int().nullable().describe('HTTP status of the last attempt; null when none came back'),
    lastError: z.string().nullable().describe('Why the last attempt failed, if it did'),
    createdAt: z.string(),
    nextAttemptAt: z.string().nullable().describe('pending only: when it is tried next'),
    deliveredAt: z.string().nullable(),
  })
  .strict();
export type WebhookDelivery = z.infer<typeof WebhookDeliverySchema>;

export const WebhookDeliveryListSchema = z.object({ deliveries: z.array(WebhookDeliverySchema) }).strict();
