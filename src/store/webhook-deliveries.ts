/**
 * The webhook delivery log, which is also the delivery queue: a row per event and receiver, pending
 * until a 2xx comes back or the sender gives up. It holds the exact body, so a daemon started after
 * a crash sends the same bytes (signed afresh: the signature carries the time of each attempt).
 * Finished rows are pruned per tenant (the newest `keep`) and by age; pending ones never.
 */
import type Database from 'better-sqlite3';
import type { WebhookDelivery, WebhookEventType } from '../contract/webhooks.js';

export interface NewDelivery {
  eventId: string;
  tenant: string;
  sandboxId: string;
  eventType: WebhookEventType;
  url: string;
  body: string;
  createdAt: string;
}

/** A delivery still to be sent, as the sender needs it. */
export interface PendingDelivery extends NewDelivery {
  id: number;
  attempts: number;
  nextAttemptAt: string;
}

export interface AttemptOutcome {
  attempts: number;
  state: 'pending' | 'delivered' | 'failed';
  lastStatus: number | null;
  lastError: string | null;
  nextAttemptAt: string | null;
  deliveredAt: string | null;
}

export interface DeliveryQuery {
  tenant: string;
  sandboxId?: string;
  state?: WebhookDelivery['state'];
  /** @default 100 */
  limit?: number;
}

interface Row {
  id: number;
  event_id: string;
  tenant: string;
  sandbox_id: string;
  event_type: string;
  url: string;
  body: string;
  state: string;
  attempts: number;
  last_status: number | null;
  last_error: string | null;
  created_at: string;
  next_attempt_at: string | null;
  delivered_at: string | null;
}

export const WEBHOOK_DELIVERIES_SQL = `
  CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    created_at TEXT NOT NULL,
    next_attempt_at TEXT,
    delivered_at TEXT,
    UNIQUE (event_id, url)
  );
  CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant, id);
  CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
`;

export class WebhookDeliveries {
  private readonly insertStmt: Database.Statement<[NewDelivery & { state: string; lastError: string | null; nextAttemptAt: string | null }]>;
  private readonly updateStmt: Database.Statement<[AttemptOutcome & { id: number }]>;
  private readonly pendingStmt: Database.Statement<[], Row>;
  private readonly listStmt: Database.Statement<[{ tenant: string; sandboxId: string | null; state: string | null; limit: number }], Row>;
  private readonly trimStmt: Database.Statement<[{ tenant: string; keep: number }]>;
  private readonly ageStmt: Database.Statement<[{ before: string }]>;

  constructor(db: Database.Database) {
    this.insertStmt = db.prepare(`
      INSERT INTO webhook_deliveries (event_id, tenant, sandbox_id, event_type, url, body, state, last_error, created_at, next_attempt_at)
      VALUES (@eventId, @tenant, @sandboxId, @eventType, @url, @body, @state, @lastError, @createdAt, @nextAttemptAt)`);
    this.updateStmt = db.prepare(`
      UPDATE webhook_deliveries SET attempts = @attempts, state = @state, last_status = @lastStatus, last_error = @lastError,
        next_attempt_at = @nextAttemptAt, delivered_at = @deliveredAt
      WHERE id = @id`);
    this.pendingStmt = db.prepare("SELECT * FROM webhook_deliveries WHERE state = 'pending' ORDER BY id");
    this.listStmt = db.prepare(`
      SELECT * FROM webhook_deliveries
      WHERE tenant = @tenant AND (@sandboxId IS NULL OR sandbox_id = @sandboxId) AND (@state IS NULL OR state = @state)
      ORDER BY id DESC LIMIT @limit`);
    // Finished rows beyond the newest `keep` of the tenant; a pending one stays (it is the queue).
    this.trimStmt = db.prepare(`
      DELETE FROM webhook_deliveries WHERE tenant = @tenant AND state <> 'pending' AND id <= (
        SELECT id FROM webhook_deliveries WHERE tenant = @tenant ORDER BY id DESC LIMIT 1 OFFSET @keep)`);
    this.ageStmt = db.prepare("DELETE FROM webhook_deliveries WHERE state <> 'pending' AND created_at < @before");
  }

  /** A delivery to send now; its row id. */
  enqueue(d: NewDelivery): number {
    return Number(this.insertStmt.run({ ...d, state: 'pending', lastError: null, nextAttemptAt: d.createdAt }).lastInsertRowid);
  }

  /** A delivery given up before its first attempt (the tenant's queue was full), so the tenant can see it was lost. */
  recordDropped(d: NewDelivery, why: string): void {
    this.insertStmt.run({ ...d, state: 'failed', lastError: why, nextAttemptAt: null });
  }

  recordAttempt(id: number, outcome: AttemptOutcome): void {
    this.updateStmt.run({ id, ...outcome });
  }

  /** Every delivery still to be sent, oldest first (a starting daemon takes them over). */
  pending(): PendingDelivery[] {
    return this.pendingStmt.all().map((r) => ({
      id: r.id,
      eventId: r.event_id,
      tenant: r.tenant,
      sandboxId: r.sandbox_id,
      eventType: eventType(r.event_type),
      url: r.url,
      body: r.body,
      createdAt: r.created_at,
      attempts: r.attempts,
      nextAttemptAt: r.next_attempt_at ?? r.created_at,
    }));
  }

  /** Newest first. */
  list(q: DeliveryQuery): WebhookDelivery[] {
    return this.listStmt.all({ tenant: q.tenant, sandboxId: q.sandboxId ?? null, state: q.state ?? null, limit: q.limit ?? 100 }).map(toDelivery);
  }

  /** Keep the newest `keep` rows of the tenant (finished ones are dropped first) and nothing finished before `before`. */
  prune(tenant: string, keep: number, before: string): void {
    this.trimStmt.run({ tenant, keep });
    this.ageStmt.run({ before });
  }
}

function eventType(s: string): WebhookEventType {
  if (s === 'created' || s === 'paused' || s === 'resumed' || s === 'ended') return s;
  throw new Error(`webhook delivery row with unknown event type ${JSON.stringify(s)}`);
}

function toDelivery(r: Row): WebhookDelivery {
  const state = r.state === 'pending' || r.state === 'delivered' ? r.state : 'failed';
  return {
    eventId: r.event_id,
    tenant: r.tenant,
    sandboxId: r.sandbox_id,
    eventType: eventType(r.event_type),
    url: withoutQuery(r.url),
    state,
    attempts: r.attempts,
    lastStatus: r.last_status,
    lastError: r.last_error,
    createdAt: r.created_at,
    nextAttemptAt: state === 'pending' ? r.next_attempt_at : null,
    deliveredAt: r.delivered_at,
  };
}

/** A receiver's query string may carry a token of its own: the log shows scheme, host and path only. */
function withoutQuery(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return url.split('?')[0] ?? url;
  }
}
