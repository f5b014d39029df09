/**
 * The body a receiver gets for a lifecycle event: agentbox's own (`WebhookEvent`), or E2B's lifecycle
 * event (`format: e2b`), as documented at e2b.dev/docs/sandbox/lifecycle-events-webhooks.
 */
import type { WebhookEvent } from '../contract/webhooks.js';
import type { LifecycleEvent } from '../core/lifecycle-events.js';

export function agentboxBody(ev: LifecycleEvent, eventId: string): string {
  const body: WebhookEvent = {
    id: eventId,
    type: ev.type,
    at: ev.at,
    tenant: ev.sandbox.tenant,
    sandboxId: ev.sandbox.id,
    sandbox: ev.sandbox,
    ...(ev.type === 'ended' ? { endReason: ev.endReason, endedBy: ev.endedBy } : {}),
    ...(ev.type === 'paused' ? { pauseMode: ev.pauseMode } : {}),
  };
  return JSON.stringify(body);
}

const E2B_TYPES: Record<LifecycleEvent['type'], string> = {
  created: 'sandbox.lifecycle.created',
  paused: 'sandbox.lifecycle.paused',
  resumed: 'sandbox.lifecycle.resumed',
  ended: 'sandbox.lifecycle.killed',
};

/**
 * E2B's shape: labels are its metadata, the tenant its team, the profile (else the image) its
 * template, as agentbox's E2B surface reports them (except that surface's `base` alias for its base image).
 * `execution` rides on killed and paused, as E2B sends it; agentbox adds `endReason`/`endedBy` to
 * eventData on killed (E2B has no such fields; receivers that do not know them ignore them).
 */
export function e2bBody(ev: LifecycleEvent, eventId: string): string {
  const sb = ev.sandbox;
  const execution =
    ev.type === 'ended' || ev.type === 'paused'
      ? { started_at: sb.createdAt, vcpu_count: sb.limits.cpus, memory_mb: sb.limits.memoryMb, execution_time: Math.max(0, Date.parse(ev.at) - Date.parse(sb.createdAt)) }
      : undefined;
  return JSON.stringify({
    version: 'v2',
    id: eventId,
    type: E2B_TYPES[ev.type],
    eventData: {
      sandbox_metadata: sb.labels,
      ...(execution ? { execution } : {}),
      ...(ev.type === 'ended' ? { endReason: ev.endReason, endedBy: ev.endedBy } : {}),
    },
    sandboxBuildId: '',
    sandboxExecutionId: sb.id,
    sandboxId: sb.id,
    sandboxTeamId: sb.tenant,
    sandboxTemplateId: sb.profile ?? sb.image,
    timestamp: ev.at,
  });
}
