/**
 * Lifecycle events to the tenants' webhook URLs (ARCHITECTURE.md, "Lifecycle, reaper, reconcile"; README
 * "Lifecycle webhooks"): the manager's event sink (core's `LifecycleEvents`).
 * `emit` only writes a row (the delivery log is the queue) and returns; sending happens later, off
 * the lifecycle's path. Per sandbox and receiver, events go out in order: a later one waits while an
 * earlier one is retried. Network errors, timeouts, 408, 429 and 5xx are retried with exponential
 * backoff and jitter; other answers are final. Rows still pending when the daemon stops are sent by
 * the next one.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { signE2bWebhook, signWebhook } from '../contract/webhook-signature.js';
import { WEBHOOK_HEADERS } from '../contract/webhooks.js';
import type { LifecycleEvent, LifecycleEvents } from '../core/lifecycle-events.js';
import type { PendingDelivery, WebhookDeliveries } from '../store/webhook-deliveries.js';
import { agentboxBody, e2bBody } from './payloads.js';
import { postOnce, type AttemptResult } from './post.js';
import type { WebhookTarget, WebhookTargets } from './targets.js';

export interface DeliveryOpts {
  /** Attempts per delivery, the first included. @default 5 */
  attempts: number;
  /** Wait after the first failed attempt, before jitter; multiplied by `factor` after each. @default 5000 */
  baseDelayMs: number;
  /** @default 3 (5 s, 15 s, 45 s, 135 s: about 3.5 minutes at most over 5 attempts) */
  factor: number;
  /** One attempt, connection to answer. @default 10000 */
  timeoutMs: number;
  /** Attempts in flight at once, all tenants. @default 8 */
  concurrency: number;
  /** Deliveries waiting per tenant; beyond it new events are logged as failed unsent. @default 1000 */
  maxPendingPerTenant: number;
  /** Finished deliveries kept per tenant. @default 10000 */
  keepPerTenant: number;
  /** Finished deliveries older than this are pruned. @default 7 days */
  keepMs: number;
}

export const DEFAULT_DELIVERY_OPTS: Readonly<DeliveryOpts> = Object.freeze({
  attempts: 5,
  baseDelayMs: 5000,
  factor: 3,
  timeoutMs: 10_000,
  concurrency: 8,
  maxPendingPerTenant: 1000,
  keepPerTenant: 10_000,
  keepMs: 7 * 24 * 3600_000,
});

export interface DispatcherOpts {
  log: WebhookDeliveries;
  targets: WebhookTargets;
  logger: Logger;
  /** The User-Agent of every delivery, e.g. agentbox/0.1.0. */
  userAgent: string;
  delivery?: Partial<DeliveryOpts>;
  /** [0, 1): the jitter's source. @default Math.random */
  random?: () => number;
}

/** How long to wait after failed attempt N (1-based): half fixed, half random ("equal jitter"). */
export function backoffMs(attempt: number, o: Pick<DeliveryOpts, 'baseDelayMs' | 'factor'>, random: () => number): number {
  const full = o.baseDelayMs * o.factor ** (attempt - 1);
  return Math.round(full / 2 + (random() * full) / 2);
}

/** Whether an attempt's outcome is worth another try. */
export function retryable(r: AttemptResult): boolean {
  if (r.kind === 'error') return true;
  return r.status === 408 || r.status === 429 || r.status >= 500;
}

export class WebhookDispatcher implements LifecycleEvents {
  private readonly o: DeliveryOpts;
  private readonly random: () => number;
  /** Per sandbox and receiver, the deliveries still to send, in order: only the head is ever sent. */
  private readonly lanes = new Map<string, PendingDelivery[]>();
  private readonly pendingByTenant = new Map<string, number>();
  private readonly known = new Set<number>();
  private readonly timers = new Map<number, NodeJS.Timeout>();
  private readonly ready: PendingDelivery[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  private inserts = 0;
  private closed = false;

  constructor(private readonly opts: DispatcherOpts) {
    this.o = { ...DEFAULT_DELIVERY_OPTS, ...opts.delivery };
    this.random = opts.random ?? Math.random;
  }

  /** Take over the deliveries a stopped daemon left pending; prune old ones. */
  start(): void {
    for (const tenant of this.opts.targets.keys()) this.prune(tenant);
    for (const d of this.opts.log.pending()) this.track(d);
  }

  emit(ev: LifecycleEvent): void {
    if (this.closed) return;
    const tenant = ev.sandbox.tenant;
    const targets = (this.opts.targets.get(tenant) ?? []).filter((t) => t.events.has(ev.type));
    if (targets.length === 0) return;
    const eventId = `evt_${randomBytes(12).toString('hex')}`;
    const createdAt = new Date().toISOString();
    for (const t of targets) {
      const row = { eventId, tenant, sandboxId: ev.sandbox.id, eventType: ev.type, url: t.url, body: t.format === 'e2b' ? e2bBody(ev, eventId) : agentboxBody(ev, eventId), createdAt };
      if ((this.pendingByTenant.get(tenant) ?? 0) >= this.o.maxPendingPerTenant) {
        const why = `not sent: ${this.o.maxPendingPerTenant} deliveries of this tenant were already waiting (is the receiver down?)`;
        this.opts.log.recordDropped(row, why);
        this.opts.logger.warn({ sandbox_id: row.sandboxId, tenant, event_id: eventId, event: ev.type, url: safeUrl(t.url) }, 'webhook queue full: event dropped');
        continue;
      }
      const id = this.opts.log.enqueue(row);
      this.track({ ...row, id, attempts: 0, nextAttemptAt: createdAt });
      if (++this.inserts % 50 === 0) this.prune(tenant);
    }
  }

  /** Deliveries waiting to be sent (tests, metrics). */
  get pending(): number {
    let n = 0;
    for (const v of this.pendingByTenant.values()) n += v;
    return n;
  }

  /**
   * Stop sending. For up to `drainMs`, deliveries that are due (the ends a stopping daemon records,
   * say) still go out; then timers are cleared and attempts under way aborted. Whatever is left stays
   * pending in the store, for the next daemon.
   */
  async close(drainMs = 0): Promise<void> {
    const deadline = Date.now() + drainMs;
    while (!this.closed && Date.now() < deadline && (this.inFlight.size > 0 || this.ready.length > 0 || this.dueBy(Date.now() + 50))) {
      await new Promise((r) => setTimeout(r, 25));
    }
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.ready.length = 0;
    this.abort.abort();
    await Promise.all([...this.inFlight]);
  }

  /** Whether a lane's head is to be sent by `at`. */
  private dueBy(at: number): boolean {
    for (const lane of this.lanes.values()) {
      const head = lane[0];
      if (head && Date.parse(head.nextAttemptAt) <= at) return true;
    }
    return false;
  }

  private track(d: PendingDelivery): void {
    if (this.known.has(d.id)) return;
    this.known.add(d.id);
    this.pendingByTenant.set(d.tenant, (this.pendingByTenant.get(d.tenant) ?? 0) + 1);
    const key = laneKey(d);
    const lane = this.lanes.get(key);
    if (lane) {
      lane.push(d);
      return;
    }
    this.lanes.set(key, [d]);
    this.schedule(d);
  }

  private schedule(d: PendingDelivery): void {
    if (this.closed) return;
    const wait = Math.max(0, Date.parse(d.nextAttemptAt) - Date.now());
    const timer = setTimeout(() => {
      this.timers.delete(d.id);
      this.ready.push(d);
      this.pump();
    }, wait);
    timer.unref();
    this.timers.set(d.id, timer);
  }

  private pump(): void {
    while (!this.closed && this.inFlight.size < this.o.concurrency && this.ready.length > 0) {
      const d = this.ready.shift()!;
      const p = this.attempt(d).catch((err: unknown) => {
        this.opts.logger.error({ sandbox_id: d.sandboxId, tenant: d.tenant, event_id: d.eventId, err: err instanceof Error ? err.message : String(err) }, 'webhook delivery failed unexpectedly');
        this.finish(d);
      });
      this.inFlight.add(p);
      void p.finally(() => {
        this.inFlight.delete(p);
        this.pump();
      });
    }
  }

  private async attempt(d: PendingDelivery): Promise<void> {
    const log = { sandbox_id: d.sandboxId, tenant: d.tenant, event_id: d.eventId, event: d.eventType, url: safeUrl(d.url) };
    const target = this.opts.targets.get(d.tenant)?.find((t) => t.url === d.url);
    if (!target) {
      // Left pending by a daemon whose policy had this receiver; this one's has not.
      this.opts.log.recordAttempt(d.id, { attempts: d.attempts, state: 'failed', lastStatus: null, lastError: 'not sent: the receiver is no longer in the policy', nextAttemptAt: null, deliveredAt: null });
      this.opts.logger.warn(log, 'webhook delivery dropped: receiver no longer configured');
      return this.finish(d);
    }
    const attempts = d.attempts + 1;
    const body = Buffer.from(d.body, 'utf8');
    const result = await postOnce(d.url, body, this.headers(target, d, body, attempts), { timeoutMs: this.o.timeoutMs, signal: this.abort.signal });
    // Aborted by close(): the row stays as it was, pending, for the next daemon.
    if (this.closed) return;
    const now = new Date();
    if (result.kind === 'status' && result.status >= 200 && result.status < 300) {
      this.opts.log.recordAttempt(d.id, { attempts, state: 'delivered', lastStatus: result.status, lastError: null, nextAttemptAt: null, deliveredAt: now.toISOString() });
      this.opts.logger.info({ ...log, attempt: attempts, status: result.status }, 'webhook delivered');
      return this.finish(d);
    }
    const error = result.kind === 'error' ? result.error : `HTTP ${result.status}${result.detail ? `: ${result.detail}` : ''}`;
    const status = result.kind === 'status' ? result.status : null;
    if (retryable(result) && attempts < this.o.attempts) {
      const next = new Date(now.getTime() + backoffMs(attempts, this.o, this.random)).toISOString();
      this.opts.log.recordAttempt(d.id, { attempts, state: 'pending', lastStatus: status, lastError: error, nextAttemptAt: next, deliveredAt: null });
      this.opts.logger.warn({ ...log, attempt: attempts, status, error, next_attempt_at: next }, 'webhook attempt failed; will retry');
      d.attempts = attempts;
      d.nextAttemptAt = next;
      this.schedule(d);
      return;
    }
    this.opts.log.recordAttempt(d.id, { attempts, state: 'failed', lastStatus: status, lastError: error, nextAttemptAt: null, deliveredAt: null });
    this.opts.logger.warn({ ...log, attempt: attempts, status, error }, retryable(result) ? 'webhook delivery failed: no attempts left' : 'webhook delivery refused by the receiver; not retried');
    this.finish(d);
  }

  private headers(t: WebhookTarget, d: PendingDelivery, body: Buffer, attempt: number): Record<string, string> {
    const h: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': this.opts.userAgent,
      [WEBHOOK_HEADERS.signature]: signWebhook(t.secret, body, Math.floor(Date.now() / 1000)),
      [WEBHOOK_HEADERS.eventId]: d.eventId,
      [WEBHOOK_HEADERS.eventType]: d.eventType,
      [WEBHOOK_HEADERS.attempt]: String(attempt),
    };
    if (t.format === 'e2b') {
      h['e2b-webhook-id'] = `wh_${createHash('sha256').update(`${d.tenant}\n${t.url}`).digest('hex').slice(0, 16)}`;
      h['e2b-delivery-id'] = randomUUID();
      h['e2b-signature-version'] = 'v1';
      h['e2b-signature'] = signE2bWebhook(t.secret, body);
    }
    return h;
  }

  /** The delivery is done (delivered or given up): the next of its lane becomes due. */
  private finish(d: PendingDelivery): void {
    this.known.delete(d.id);
    this.pendingByTenant.set(d.tenant, Math.max(0, (this.pendingByTenant.get(d.tenant) ?? 1) - 1));
    const key = laneKey(d);
    const lane = this.lanes.get(key);
    if (!lane) return;
    const i = lane.indexOf(d);
    if (i >= 0) lane.splice(i, 1);
    const next = lane[0];
    if (!next) {
      this.lanes.delete(key);
      return;
    }
    this.schedule(next);
  }

  private prune(tenant: string): void {
    this.opts.log.prune(tenant, this.o.keepPerTenant, new Date(Date.now() - this.o.keepMs).toISOString());
  }
}

function laneKey(d: { tenant: string; sandboxId: string; url: string }): string {
  return `${d.tenant}\n${d.sandboxId}\n${d.url}`;
}

/** For logs: no query string (it may carry the receiver's own token). */
function safeUrl(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}
