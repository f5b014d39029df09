/**
 * Lifecycle webhooks through a real daemon and real local sandboxes: every event of a sandbox in
 * order (created, paused by the profile's pauseAfter, resumed by an exec, ended by a delete or its
 * ttl), signed, logged, readable by its tenant only (API and CLI); creates that never wait for a
 * receiver; a policy with a bad webhook refused before anything starts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { BadRequestError } from '../../src/contract/errors.js';
import { WebhookEventSchema, type WebhookDelivery, type WebhookEvent } from '../../src/contract/webhooks.js';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { checkSignature, Receiver } from '../helpers/webhook-receiver.js';

const ALICE_SECRET = 'alice-hook-secret-0123456789';
const BOB_SECRET = 'bob-hook-secret-0123456789ab';
const CLI = resolve(fileURLToPath(import.meta.url), '..', '..', '..', 'src', 'cli', 'main.js');

function policy(a: Receiver, b: Receiver, bobSecretFile: string): string {
  return `version: 1
defaults:
  image: busybox
  limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 64 }
profiles:
  nap: { pauseAfter: 1s }
tenants:
  - name: alice
    tokens: [alice-token-0123456789]
    scopedTokens:
      - { token: alice-agent-token-0123456789, scopes: [read], labels: { team: agents } }
    webhooks:
      - { url: "${a.url}", secretEnv: ALICE_HOOK_SECRET }
  - name: bob
    tokens: [bob-token-0123456789]
    webhooks:
      - { url: "${b.url}", secretFile: ${bobSecretFile}, events: [created, ended] }
`;
}

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`not in time: ${what}`);
    await sleep(25);
  }
}

/** The events a receiver got for one sandbox, in arrival order, each with its signature checked. */
function eventsOf(rx: Receiver, sandboxId: string, secret: string): WebhookEvent[] {
  return rx.got
    .map((r) => ({ r, ev: WebhookEventSchema.parse(JSON.parse(r.raw.toString('utf8'))) }))
    .filter(({ ev }) => ev.sandboxId === sandboxId)
    .map(({ r, ev }) => {
      checkSignature(r, secret);
      assert.equal(r.headers['agentbox-event-id'], ev.id);
      assert.equal(r.headers['agentbox-event-type'], ev.type);
      return ev;
    });
}

describe('lifecycle webhooks through the daemon', () => {
  let home: string;
  let daemon: Daemon;
  let a: Receiver;
  let b: Receiver;
  let alice: AgentboxClient;
  let agent: AgentboxClient;
  let bob: AgentboxClient;
  let url: string;

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-hooks-'));
    a = await Receiver.start();
    b = await Receiver.start();
    const bobSecret = join(home, 'bob.secret');
    writeFileSync(bobSecret, `${BOB_SECRET}\n`, { mode: 0o600 });
    const policyPath = join(home, 'policy.yaml');
    writeFileSync(policyPath, policy(a, b, bobSecret));
    daemon = await startDaemon({
      env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, ALICE_HOOK_SECRET: ALICE_SECRET },
      logger: silentLogger(),
      policyPath,
      socket: null,
      tcp: { host: '127.0.0.1', port: 0 },
      reapIntervalMs: 100,
      webhookDelivery: { baseDelayMs: 50, factor: 2, timeoutMs: 2000 },
    });
    url = `http://127.0.0.1:${daemon.tcpAddress!.port}`;
    alice = new AgentboxClient({ url, token: 'alice-token-0123456789' });
    agent = new AgentboxClient({ url, token: 'alice-agent-token-0123456789' });
    bob = new AgentboxClient({ url, token: 'bob-token-0123456789' });
  });

  after(async () => {
    a.answer = (_r, res) => res.writeHead(200).end();
    for (const c of [alice, bob]) for (const sb of await c.list()) await c.delete(sb.id);
    await daemon.close();
    await a.close();
    await b.close();
    rmSync(home, { recursive: true, force: true });
  });

  test('created → paused → resumed → ended, in order, signed, ended with endReason and endedBy; the log through the API', async () => {
    const sb = await alice.create({ profile: 'nap', labels: { team: 'agents' } });
    await until('paused event', () => a.got.some((r) => r.raw.includes(sb.id) && r.raw.includes('"type":"paused"')));
    assert.equal((await alice.get(sb.id)).paused, 'frozen');
    const r = await alice.exec(sb.id, { cmd: ['echo', 'awake'] });
    assert.equal(r.stdout, 'awake\n');
    await alice.delete(sb.id);
    await until('ended event', () => eventsOf(a, sb.id, ALICE_SECRET).some((e) => e.type === 'ended'));
    const events = eventsOf(a, sb.id, ALICE_SECRET);
    assert.deepEqual(events.map((e) => e.type), ['created', 'paused', 'resumed', 'ended']);
    const [created, paused, resumed, ended] = events as [WebhookEvent, WebhookEvent, WebhookEvent, WebhookEvent];
    assert.equal(created.sandbox.state, 'running');
    assert.equal(created.tenant, 'alice');
    assert.deepEqual(created.sandbox.labels, { team: 'agents' });
    assert.equal(paused.pauseMode, 'freeze');
    assert.equal(paused.sandbox.paused, 'frozen');
    assert.equal(resumed.sandbox.paused, undefined);
    assert.equal(ended.endReason, 'deleted');
    assert.equal(ended.endedBy, 'token:alice');
    assert.equal(ended.sandbox.state, 'deleted');
    assert.equal(new Set(events.map((e) => e.id)).size, 4, 'two events shared an id');
    for (const [i, e] of events.entries()) if (i > 0) assert.ok(Date.parse(e.at) >= Date.parse(events[i - 1]!.at), 'events out of order by time');

    const log = await alice.webhookDeliveries({ sandboxId: sb.id });
    assert.deepEqual(log.map((d) => d.eventType), ['ended', 'resumed', 'paused', 'created'], 'the log is newest first');
    assert.deepEqual(log.map((d) => d.eventId), [...events].reverse().map((e) => e.id));
    for (const d of log) {
      assert.equal(d.state, 'delivered');
      assert.equal(d.attempts, 1);
      assert.equal(d.lastStatus, 200);
      assert.equal(d.url, a.url);
      assert.equal(d.tenant, 'alice');
    }
  });

  test('an end by the reaper says so (ttl_expired, endedBy reaper); bob gets only the events he asked for', async () => {
    const sb = await bob.create({ ttl: '1s' });
    await until('ended event', () => b.got.some((r) => r.raw.includes(sb.id) && r.raw.includes('"type":"ended"')));
    const events = eventsOf(b, sb.id, BOB_SECRET);
    assert.deepEqual(events.map((e) => e.type), ['created', 'ended']);
    assert.equal(events[1]!.endReason, 'ttl_expired');
    assert.equal(events[1]!.endedBy, 'reaper');
    assert.equal(events[1]!.sandbox.state, 'stopped');
    assert.equal(a.got.filter((r) => r.raw.includes(sb.id)).length, 0, "bob's event reached alice's receiver");
    // Deleting a stopped sandbox is no second end.
    await bob.delete(sb.id);
    await sleep(300);
    assert.equal(eventsOf(b, sb.id, BOB_SECRET).length, 2, 'the delete of an ended sandbox was told as another end');
  });

  test('a tenant sees only its own deliveries; a label-scoped token only those of its sandboxes', async () => {
    const mine = await alice.create({ labels: { team: 'agents' } });
    const other = await alice.create({ labels: { team: 'humans' } });
    const bobs = await bob.create();
    await until('created events', () => [mine.id, other.id].every((id) => a.got.some((r) => r.raw.includes(id))) && b.got.some((r) => r.raw.includes(bobs.id)));
    await until('logged as delivered', async () => (await alice.webhookDeliveries()).filter((d) => d.state === 'delivered').length >= 2);
    const ofAlice = await alice.webhookDeliveries({ limit: 1000 });
    const ofBob = await bob.webhookDeliveries({ limit: 1000 });
    const ofAgent = await agent.webhookDeliveries({ limit: 1000 });
    assert.ok(ofAlice.length > 0 && ofBob.length > 0);
    assert.ok(ofAlice.every((d) => d.tenant === 'alice'), 'alice saw another tenant\'s delivery');
    assert.ok(ofBob.every((d) => d.tenant === 'bob'), 'bob saw another tenant\'s delivery');
    assert.ok(!ofAlice.some((d) => d.sandboxId === bobs.id));
    assert.ok(ofAlice.some((d) => d.sandboxId === other.id));
    assert.ok(ofAgent.some((d) => d.sandboxId === mine.id));
    assert.ok(!ofAgent.some((d) => d.sandboxId === other.id), 'a token scoped to team=agents saw a team=humans sandbox\'s delivery');
    assert.deepEqual(await bob.webhookDeliveries({ sandboxId: mine.id }), [], 'bob read alice\'s deliveries by sandbox id');
    const bad = await fetch(`${url}/v1/webhooks/deliveries?state=bogus`, { headers: { authorization: 'Bearer alice-token-0123456789' } });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { code: string } }).error.code, 'bad_request');
    assert.equal((await fetch(`${url}/v1/webhooks/deliveries`)).status, 401);
    for (const id of [mine.id, other.id]) await alice.delete(id);
    await bob.delete(bobs.id);
  });

  test('agentbox webhook deliveries (CLI over the SDK) lists the tenant\'s log', async () => {
    const sb = await bob.create();
    await until('logged', async () => (await bob.webhookDeliveries({ sandboxId: sb.id }))[0]?.state === 'delivered');
    const env = { ...process.env, AGENTBOX_URL: url, AGENTBOX_TOKEN: 'bob-token-0123456789', AGENTBOX_HOME: home };
    const json = await promisify(execFile)(process.execPath, [CLI, 'webhook', 'deliveries', '--sandbox', sb.id, '--json'], { env });
    const rows = JSON.parse(json.stdout) as WebhookDelivery[];
    assert.deepEqual(rows.map((d) => [d.sandboxId, d.eventType, d.state]), [[sb.id, 'created', 'delivered']]);
    const text = await promisify(execFile)(process.execPath, [CLI, 'webhook', 'deliveries'], { env });
    assert.match(text.stdout, /EVENT\s+SANDBOX\s+TYPE\s+STATE/);
    assert.ok(text.stdout.includes(sb.id));
    await bob.delete(sb.id);
  });

  test('a create does not wait for its delivery: the receiver still holds the created event when create returns', async () => {
    const held: ServerResponse[] = [];
    a.answer = (_r, res) => held.push(res);
    const sb = await alice.create();
    await until('the created event reaches the receiver', () => held.length > 0 && a.got.some((r) => r.raw.includes(sb.id)));
    assert.ok(held.every((res) => !res.writableEnded), 'the receiver answered already');
    // The row is pending while the receiver holds it.
    assert.equal((await alice.webhookDeliveries({ sandboxId: sb.id }))[0]?.state, 'pending');
    a.answer = (_r, res) => res.writeHead(200).end();
    for (const res of held) res.writeHead(200).end();
    await alice.delete(sb.id);
    await until('ended delivered', async () => (await alice.webhookDeliveries({ sandboxId: sb.id })).map((d) => d.state).join() === 'delivered,delivered');
  });
});

describe('a policy with a bad webhook', () => {
  const start = async (webhook: string, env: Record<string, string> = {}): Promise<{ err: unknown; home: string }> => {
    const dir = mkdtempSync(join(tmpdir(), 'agentbox-hooks-bad-'));
    const home = join(dir, 'home');
    const policyPath = join(dir, 'policy.yaml');
    writeFileSync(policyPath, `version: 1\ntenants:\n  - name: alice\n    tokens: [alice-token-0123456789]\n    webhooks:\n      - ${webhook}\n`);
    try {
      const d = await startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, ...env }, logger: silentLogger(), policyPath, socket: null });
      await d.close();
      return { err: undefined, home };
    } catch (err) {
      return { err, home };
    } finally {
      // Checked by the caller before this is gone: nothing was made in the home.
      setImmediate(() => rmSync(dir, { recursive: true, force: true }));
    }
  };

  test('a bad URL: refused with file, line and field; nothing started', async () => {
    const { err, home } = await start('{ url: "ftp://example.com/hook", secretEnv: HOOK_SECRET }', { HOOK_SECRET: ALICE_SECRET });
    assert.ok(err instanceof BadRequestError, String(err));
    assert.match(err.message, /policy\.yaml:6: tenants\[0\]\.webhooks\[0\]\.url: a webhook URL is http:\/\/ or https:\/\/, not ftp:\/\//);
    assert.equal(existsSync(home), false, 'the daemon made its home before refusing the policy');
  });

  test('a secret that is not there: refused naming the webhook and the variable; nothing started', async () => {
    const { err, home } = await start('{ url: "https://example.com/hook", secretEnv: HOOK_SECRET }');
    assert.ok(err instanceof BadRequestError, String(err));
    assert.equal(err.message, "policy tenants[0] (alice).webhooks[0]: secretEnv HOOK_SECRET is not set in the daemon's environment");
    assert.match(err.hint ?? '', /HOOK_SECRET/);
    assert.equal(existsSync(home), false, 'the daemon made its home before refusing the policy');
  });

  test('no secret at all: refused by the schema', async () => {
    const { err } = await start('{ url: "https://example.com/hook" }');
    assert.ok(err instanceof BadRequestError, String(err));
    assert.match(err.message, /tenants\[0\]\.webhooks\[0\]: give exactly one of secretEnv or secretFile/);
  });
});
