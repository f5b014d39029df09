/**
 * Lifecycle webhooks' delivery log and queue in the store, driven by the dispatcher against real
 * receivers on loopback (signatures checked byte for byte with an HMAC computed here, retries,
 * timeouts, a receiver down at first, a restart). Run on SQLite by test/unit/webhooks.test.ts, on
 * PostgreSQL by test/store/postgres-store.test.ts.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Sandbox } from '../../src/contract/model.js';
import { verifyWebhook } from '../../src/contract/webhook-signature.js';
import { WebhookEventSchema } from '../../src/contract/webhooks.js';
import type { LifecycleEvent } from '../../src/core/lifecycle-events.js';
import { silentLogger } from '../../src/observability/logger.js';
import type { Store } from '../../src/store/store.js';
import { backoffMs, WebhookDispatcher, type DeliveryOpts } from '../../src/webhooks/dispatcher.js';
import type { WebhookTarget } from '../../src/webhooks/targets.js';
import { checkSignature as checkSig, Receiver, type Received } from '../helpers/webhook-receiver.js';
import type { StoreBackend } from './backends.js';

const SECRET = 'whsec-test-0123456789abcdef';
const checkSignature = (r: Received): number => checkSig(r, SECRET);
const FAST: Partial<DeliveryOpts> = { attempts: 5, baseDelayMs: 40, factor: 2, timeoutMs: 400 };

async function until(what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`not in time: ${what}`);
    await sleep(10);
  }
}

let seq = 0;
function sandbox(over: Partial<Sandbox> = {}): Sandbox {
  const now = new Date().toISOString();
  return {
    id: `sbx_test${++seq}`,
    tenant: 'alice',
    image: 'busybox',
    profile: null,
    runtime: 'local',
    isolation: 'namespaces',
    state: 'running',
    limits: { cpus: 1, memoryMb: 64, pids: 64, diskMb: 64 },
    egress: { mode: 'none', allow: [] },
    labels: { team: 'a' },
    createdAt: now,
    expiresAt: null,
    lastActiveAt: now,
    endedAt: null,
    endReason: null,
    endedBy: null,
    ...over,
  };
}

const created = (sb: Sandbox): LifecycleEvent => ({ type: 'created', sandbox: sb, at: new Date().toISOString() });
const ended = (sb: Sandbox): LifecycleEvent => ({ type: 'ended', sandbox: { ...sb, state: 'deleted', endReason: 'deleted', endedBy: 'token:alice', endedAt: new Date().toISOString() }, at: new Date().toISOString(), endReason: 'deleted', endedBy: 'token:alice' });

function target(url: string, over: Partial<WebhookTarget> = {}): WebhookTarget {
  return { url, secret: SECRET, events: new Set(['created', 'paused', 'resumed', 'ended'] as const), format: 'agentbox', ...over };
}

function dispatcher(store: Store, targets: Record<string, WebhookTarget[]>, delivery: Partial<DeliveryOpts> = FAST): WebhookDispatcher {
  const d = new WebhookDispatcher({ log: store.webhooks, targets: new Map(Object.entries(targets)), logger: silentLogger(), userAgent: 'agentbox/test', delivery, random: () => 0.5 });
  d.start();
  return d;
}

export function webhookDeliverySuite(backend: StoreBackend): void {
  describe(`webhook deliveries (${backend.name})`, () => {
    const receivers: Receiver[] = [];
    const newReceiver = async (port = 0): Promise<Receiver> => {
      const r = await Receiver.start(port);
      receivers.push(r);
      return r;
    };
    after(async () => {
      for (const r of receivers) await r.close();
    });

    test('signed byte for byte, the event id on every header and retry the same, the body in the contract shape', async () => {
      const store = backend.open(await backend.fresh());
      const rx = await newReceiver();
      let first = true;
      rx.answer = (_r, res) => {
        res.writeHead(first ? 503 : 204).end();
        first = false;
      };
      const d = dispatcher(store, { alice: [target(rx.url)] });
      const sb = sandbox();
      d.emit(ended(sb));
      await until('two attempts', () => rx.got.length === 2);
      for (const [i, r] of rx.got.entries()) {
        checkSignature(r);
        assert.equal(r.headers['content-type'], 'application/json');
        assert.equal(r.headers['agentbox-event-type'], 'ended');
        assert.equal(r.headers['agentbox-delivery-attempt'], String(i + 1));
        const body = WebhookEventSchema.parse(JSON.parse(r.raw.toString('utf8')));
        assert.equal(r.headers['agentbox-event-id'], body.id);
        assert.match(body.id, /^evt_[0-9a-f]{24}$/);
        assert.equal(body.sandboxId, sb.id);
        assert.equal(body.tenant, 'alice');
        assert.equal(body.endReason, 'deleted');
        assert.equal(body.endedBy, 'token:alice');
        assert.deepEqual(body.sandbox.labels, { team: 'a' });
      }
      assert.equal(rx.got[0]!.headers['agentbox-event-id'], rx.got[1]!.headers['agentbox-event-id'], 'a retry got a new event id: receivers could not drop duplicates');
      assert.deepEqual(rx.got[0]!.raw, rx.got[1]!.raw, 'a retry sent other bytes');
      // The SDK's verifier agrees, and refuses a tampered body, another secret and an old timestamp.
      const r = rx.got[1]!;
      const header = String(r.headers['agentbox-signature']);
      assert.equal(verifyWebhook({ secret: SECRET, body: r.raw, header }).ok, true);
      assert.deepEqual(verifyWebhook({ secret: SECRET, body: Buffer.concat([r.raw, Buffer.from(' ')]), header }), { ok: false, reason: 'mismatch' });
      assert.deepEqual(verifyWebhook({ secret: `${SECRET}x`, body: r.raw, header }), { ok: false, reason: 'mismatch' });
      assert.deepEqual(verifyWebhook({ secret: SECRET, body: r.raw, header, nowSec: Math.floor(Date.now() / 1000) + 3600 }), { ok: false, reason: 'stale' });
      assert.deepEqual(verifyWebhook({ secret: SECRET, body: r.raw, header: undefined }), { ok: false, reason: 'missing' });
      await until('logged delivered', () => store.webhooks.list({ tenant: 'alice' })[0]?.state === 'delivered');
      const [row] = store.webhooks.list({ tenant: 'alice' });
      assert.equal(row!.attempts, 2);
      assert.equal(row!.lastStatus, 204);
      assert.equal(row!.lastError, null);
      assert.equal(row!.eventType, 'ended');
      assert.equal(row!.sandboxId, sb.id);
      assert.ok(row!.deliveredAt);
      await d.close();
    });

    test('500s are retried until a 2xx; a 400 is not retried; 408 and 429 are', async () => {
      const store = backend.open(await backend.fresh());
      const rx = await newReceiver();
      const plan = new Map<string, number[]>();
      rx.answer = (r, res) => {
        const body = JSON.parse(r.raw.toString('utf8')) as { sandboxId: string };
        const codes = plan.get(body.sandboxId)!;
        res.writeHead(codes.shift() ?? 200).end('nope');
      };
      const d = dispatcher(store, { alice: [target(rx.url)] });
      const flaky = sandbox();
      const refused = sandbox();
      const throttled = sandbox();
      plan.set(flaky.id, [500, 502, 500]);
      plan.set(refused.id, [400, 200]);
      plan.set(throttled.id, [429, 408]);
      for (const sb of [flaky, refused, throttled]) d.emit(created(sb));
      const row = (id: string) => store.webhooks.list({ tenant: 'alice', sandboxId: id })[0]!;
      await until('all settled', () => [flaky, refused, throttled].every((sb) => row(sb.id).state !== 'pending'));
      assert.equal(row(flaky.id).state, 'delivered');
      assert.equal(row(flaky.id).attempts, 4);
      assert.equal(row(refused.id).state, 'failed');
      assert.equal(row(refused.id).attempts, 1, 'a 400 was retried');
      assert.equal(row(refused.id).lastStatus, 400);
      assert.equal(row(refused.id).lastError, 'HTTP 400: nope');
      assert.equal(row(throttled.id).state, 'delivered');
      assert.equal(row(throttled.id).attempts, 3);
      assert.equal(rx.got.filter((r) => r.raw.includes(refused.id)).length, 1);
      await d.close();
    });

    test('gives up after the last attempt, with exponential waits between them', async () => {
      const store = backend.open(await backend.fresh());
      const rx = await newReceiver();
      rx.answer = (_r, res) => res.writeHead(500).end();
      const d = dispatcher(store, { alice: [target(rx.url)] }, { ...FAST, attempts: 4, baseDelayMs: 60 });
      d.emit(created(sandbox()));
      await until('failed', () => store.webhooks.list({ tenant: 'alice' })[0]?.state === 'failed');
      assert.equal(rx.got.length, 4);
      const gaps = rx.got.slice(1).map((r, i) => r.at - rx.got[i]!.at);
      // random() = 0.5: three quarters of 60, 120, 240 ms.
      [45, 90, 180].forEach((min, i) => assert.ok(gaps[i]! >= min - 5, `wait ${i + 1} was ${gaps[i]} ms, expected about ${min}`));
      assert.ok(gaps[2]! > gaps[0]!, `waits did not grow: ${gaps.join(', ')}`);
      const row = store.webhooks.list({ tenant: 'alice' })[0]!;
      assert.equal(row.attempts, 4);
      assert.equal(row.lastStatus, 500);
      assert.equal(row.nextAttemptAt, null);
      await d.close();
    });

    test('backoff: base × factor^(n-1), half of it jittered', () => {
      const o = { baseDelayMs: 5000, factor: 3 };
      assert.deepEqual([1, 2, 3, 4].map((n) => backoffMs(n, o, () => 0)), [2500, 7500, 22500, 67500]);
      assert.deepEqual([1, 2, 3, 4].map((n) => backoffMs(n, o, () => 0.999999)), [5000, 15000, 45000, 135000]);
    });

    test('a receiver that never answers times out per attempt and is retried', async () => {
      const store = backend.open(await backend.fresh());
      const rx = await newReceiver();
      rx.answer = () => undefined; // holds every request open
      const d = dispatcher(store, { alice: [target(rx.url)] }, { ...FAST, attempts: 2, timeoutMs: 200 });
      const t0 = Date.now();
      d.emit(created(sandbox()));
      await until('failed', () => store.webhooks.list({ tenant: 'alice' })[0]?.state === 'failed');
      assert.equal(rx.got.length, 2);
      const row = store.webhooks.list({ tenant: 'alice' })[0]!;
      assert.equal(row.lastStatus, null);
      assert.match(row.lastError ?? '', /no answer within 200 ms/);
      assert.ok(Date.now() - t0 >= 400, 'two 200 ms timeouts took less than 400 ms');
      await d.close();
    });

    test('a receiver that is down at first gets the event once it listens', async () => {
      const store = backend.open(await backend.fresh());
      const probe = await Receiver.start();
      const port = probe.port;
      await probe.close();
      const d = dispatcher(store, { alice: [target(`http://127.0.0.1:${port}/hook`)] }, { ...FAST, attempts: 8, baseDelayMs: 50 });
      d.emit(created(sandbox()));
      await until('two refused attempts', () => (store.webhooks.list({ tenant: 'alice' })[0]?.attempts ?? 0) >= 2);
      assert.match(store.webhooks.list({ tenant: 'alice' })[0]!.lastError ?? '', /ECONNREFUSED/);
      const rx = await newReceiver(port);
      await until('delivered', () => store.webhooks.list({ tenant: 'alice' })[0]?.state === 'delivered');
      assert.equal(rx.got.length, 1);
      checkSignature(rx.got[0]!);
      await d.close();
    });

    test('redirects are not followed, and not retried', async () => {
      const store = backend.open(await backend.fresh());
      const other = await newReceiver();
      const rx = await newReceiver();
      rx.answer = (_r, res) => res.writeHead(307, { location: other.url }).end();
      const d = dispatcher(store, { alice: [target(rx.url)] });
      d.emit(created(sandbox()));
      await until('failed', () => store.webhooks.list({ tenant: 'alice' })[0]?.state === 'failed');
      assert.equal(other.got.length, 0, 'the redirect was followed');
      assert.match(store.webhooks.list({ tenant: 'alice' })[0]!.lastError ?? '', /HTTP 307: redirect to http:\/\/127\.0\.0\.1:\d+\/hook not followed/);
      await d.close();
    });

    test('per sandbox and receiver in order: a later event waits while an earlier one is retried', async () => {
      const store = backend.open(await backend.fresh());
      const rx = await newReceiver();
      let n = 0;
      rx.answer = (_r, res) => res.writeHead(n++ < 2 ? 500 : 200).end();
      const d = dispatcher(store, { alice: [target(rx.url)] });
      const sb = sandbox();
      d.emit(created(sb));
      d.emit(ended(sb));
      await until('both delivered', () => store.webhooks.list({ tenant: 'alice' }).every((r) => r.state === 'delivered') && rx.got.length === 4);
      assert.deepEqual(rx.bodies().map((b) => b.type), ['created', 'created', 'created', 'ended']);
      await d.close();
    });

    test('only the events a receiver asks for, each tenant to its own receivers', async () => {
      const store = backend.open(await backend.fresh());
      const a = await newReceiver();
      const b = await newReceiver();
      const d = dispatcher(store, { alice: [target(a.url, { events: new Set(['ended'] as const) })], bob: [target(b.url)] });
      const mine = sandbox();
      const bobs = sandbox({ tenant: 'bob' });
      d.emit(created(mine));
      d.emit(ended(mine));
      d.emit(created(bobs));
      d.emit(created(sandbox({ tenant: 'carol' })));
      await until('delivered', () => a.got.length === 1 && b.got.length === 1);
      await sleep(100);
      assert.deepEqual(a.bodies().map((x) => [x.type, x.sandboxId]), [['ended', mine.id]]);
      assert.deepEqual(b.bodies().map((x) => [x.type, x.sandboxId]), [['created', bobs.id]]);
      assert.deepEqual(store.webhooks.list({ tenant: 'alice' }).map((r) => r.eventType), ['ended']);
      assert.deepEqual(store.webhooks.list({ tenant: 'bob' }).map((r) => r.sandboxId), [bobs.id]);
      assert.deepEqual(store.webhooks.list({ tenant: 'carol' }), []);
      await d.close();
    });

    test('the queue is bounded per tenant: beyond it an event is logged as failed, unsent', async () => {
      const store = backend.open(await backend.fresh());
      const rx = await newReceiver();
      rx.answer = () => undefined;
      const d = dispatcher(store, { alice: [target(rx.url)] }, { ...FAST, maxPendingPerTenant: 2, timeoutMs: 5000 });
      const sbs = [sandbox(), sandbox(), sandbox()];
      for (const sb of sbs) d.emit(created(sb));
      const rows = store.webhooks.list({ tenant: 'alice' });
      assert.deepEqual(rows.map((r) => r.state), ['failed', 'pending', 'pending']);
      assert.equal(rows[0]!.sandboxId, sbs[2]!.id);
      assert.equal(rows[0]!.attempts, 0);
      assert.match(rows[0]!.lastError ?? '', /not sent: 2 deliveries of this tenant were already waiting/);
      assert.equal(d.pending, 2);
      await d.close();
    });

    test('pending deliveries survive a restart: the next dispatcher on the same store sends them', async () => {
      const where = await backend.fresh();
      {
        const rx = await newReceiver();
        rx.answer = (_r, res) => res.writeHead(503).end();
        const first = backend.open(where);
        const d1 = dispatcher(first, { alice: [target(rx.url)] }, { ...FAST, baseDelayMs: 60_000 });
        const sb = sandbox();
        d1.emit(created(sb));
        await until('one attempt', () => first.webhooks.list({ tenant: 'alice' })[0]?.attempts === 1);
        await d1.close();
        first.close();
        rx.answer = (_r, res) => res.writeHead(200).end();
        const second = backend.open(where);
        const d2 = new WebhookDispatcher({ log: second.webhooks, targets: new Map([['alice', [target(rx.url)]]]), logger: silentLogger(), userAgent: 'agentbox/test', delivery: FAST });
        const pending = second.webhooks.pending();
        assert.equal(pending.length, 1);
        assert.equal(pending[0]!.attempts, 1);
        // Its next attempt is a minute away (a daemon that starts sooner waits for it): make it due now.
        second.webhooks.recordAttempt(pending[0]!.id, { attempts: 1, state: 'pending', lastStatus: 503, lastError: 'HTTP 503', nextAttemptAt: new Date().toISOString(), deliveredAt: null });
        d2.start();
        await until('delivered after restart', () => second.webhooks.list({ tenant: 'alice' })[0]?.state === 'delivered');
        const row = second.webhooks.list({ tenant: 'alice' })[0]!;
        assert.equal(row.attempts, 2);
        assert.equal(rx.got.length, 2);
        assert.equal(rx.got[0]!.headers['agentbox-event-id'], rx.got[1]!.headers['agentbox-event-id']);
        assert.equal(rx.got[1]!.headers['agentbox-delivery-attempt'], '2');
        await d2.close();
        second.close();
      }
    });

    test('a pending delivery whose receiver left the policy is failed at start, not sent', async () => {
      const store = backend.open(await backend.fresh());
      const rx = await newReceiver();
      rx.answer = () => undefined;
      const d1 = dispatcher(store, { alice: [target(rx.url)] }, { ...FAST, timeoutMs: 5000 });
      d1.emit(created(sandbox()));
      await d1.close();
      const d2 = dispatcher(store, {});
      await until('failed', () => store.webhooks.list({ tenant: 'alice' })[0]?.state === 'failed');
      assert.match(store.webhooks.list({ tenant: 'alice' })[0]!.lastError ?? '', /no longer in the policy/);
      await d2.close();
    });

    test('close() drains what is due for a moment, then leaves the rest pending', async () => {
      const store = backend.open(await backend.fresh());
      const rx = await newReceiver();
      const d = dispatcher(store, { alice: [target(rx.url)] });
      d.emit(created(sandbox()));
      await d.close(2000);
      assert.equal(store.webhooks.list({ tenant: 'alice' })[0]!.state, 'delivered');
      d.emit(created(sandbox()));
      assert.equal(store.webhooks.list({ tenant: 'alice' }).length, 1, 'a closed dispatcher queued an event');
    });

    test('format e2b: E2B\'s lifecycle body and e2b-signature beside agentbox\'s', async () => {
      const store = backend.open(await backend.fresh());
      const rx = await newReceiver();
      const d = dispatcher(store, { alice: [target(rx.url, { format: 'e2b' })] });
      const sb = sandbox({ profile: 'pydev', labels: { user: 'u1' } });
      d.emit(ended(sb));
      await until('delivered', () => rx.got.length === 1);
      const r = rx.got[0]!;
      checkSignature(r);
      assert.equal(r.headers['e2b-signature'], createHash('sha256').update(SECRET + r.raw.toString('utf8')).digest('base64').replace(/=+$/, ''));
      assert.equal(r.headers['e2b-signature-version'], 'v1');
      assert.match(String(r.headers['e2b-webhook-id']), /^wh_[0-9a-f]{16}$/);
      assert.match(String(r.headers['e2b-delivery-id']), /^[0-9a-f-]{36}$/);
      const body = JSON.parse(r.raw.toString('utf8')) as Record<string, unknown> & { eventData: Record<string, unknown> };
      assert.equal(body.type, 'sandbox.lifecycle.killed');
      assert.equal(body.sandboxId, sb.id);
      assert.equal(body.sandboxTeamId, 'alice');
      assert.equal(body.sandboxTemplateId, 'pydev');
      assert.equal(body.id, r.headers['agentbox-event-id']);
      assert.deepEqual(body.eventData.sandbox_metadata, { user: 'u1' });
      assert.equal((body.eventData.execution as { memory_mb: number }).memory_mb, 64);
      assert.equal(body.eventData.endReason, 'deleted');
      await d.close();
    });

    test('the log is pruned: finished rows beyond the newest N per tenant, never pending ones', async () => {
      const store = backend.open(await backend.fresh());
      const row = (i: number) => ({ eventId: `evt_${i}`, tenant: 'alice', sandboxId: 'sbx_x', eventType: 'created' as const, url: 'http://127.0.0.1:9/hook?token=abc', body: '{}', createdAt: new Date().toISOString() });
      const ids = Array.from({ length: 6 }, (_, i) => store.webhooks.enqueue(row(i)));
      // The oldest stays pending; the rest are delivered.
      for (const id of ids.slice(1)) store.webhooks.recordAttempt(id, { attempts: 1, state: 'delivered', lastStatus: 200, lastError: null, nextAttemptAt: null, deliveredAt: new Date().toISOString() });
      store.webhooks.prune('alice', 3, new Date(0).toISOString());
      const left = store.webhooks.list({ tenant: 'alice' });
      assert.deepEqual(left.map((r) => r.eventId), ['evt_5', 'evt_4', 'evt_3', 'evt_0']);
      assert.equal(left[0]!.url, 'http://127.0.0.1:9/hook', 'the log shows a receiver\'s query string');
      store.webhooks.prune('alice', 100, new Date(Date.now() + 60_000).toISOString());
      assert.deepEqual(store.webhooks.list({ tenant: 'alice' }).map((r) => r.eventId), ['evt_0'], 'age pruning dropped a pending row or kept a finished one');
    });
  });
}
