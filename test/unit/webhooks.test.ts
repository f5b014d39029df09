/**
 * Lifecycle webhooks without sandboxes: the dispatcher and the delivery log in SQLite (the shared
 * suite, test/store/webhook-delivery-suite.ts, also run on PostgreSQL), the policy's webhook keys and
 * the secrets they name.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { BadRequestError } from '../../src/contract/errors.js';
import { signWebhook } from '../../src/contract/webhook-signature.js';
import { parsePolicyText } from '../../src/policy/load.js';
import { resolveWebhookTargets } from '../../src/webhooks/targets.js';
import { sqliteBackend } from '../store/backends.js';
import { webhookDeliverySuite } from '../store/webhook-delivery-suite.js';

const SECRET = 'whsec-test-0123456789abcdef';

webhookDeliverySuite(sqliteBackend());

describe('webhooks in the policy file', () => {
  const parse = (webhooks: string, top = '') => parsePolicyText(`version: 1\n${top}tenants:\n  - name: alice\n    tokens: [alice-token-0123456789]\n    webhooks:\n${webhooks}`, 'policy.yaml');

  test('a good one: url, secretEnv or secretFile, events, format', () => {
    const r = parse('      - { url: "https://hooks.example.com/a?x=1", secretEnv: HOOK_SECRET, events: [created, ended] }\n      - { url: "http://127.0.0.1:9000/b", secretFile: /etc/agentbox/hook.secret, format: e2b }\n', 'webhooks:\n  - { url: "http://localhost:8080/op", secretEnv: OP_SECRET }\n');
    assert.equal(r.kind, 'ok', JSON.stringify(r));
    if (r.kind !== 'ok') return;
    assert.deepEqual(r.policy.tenants![0]!.webhooks!.map((w) => w.format), ['agentbox', 'e2b']);
    assert.equal(r.policy.webhooks![0]!.url, 'http://localhost:8080/op');
  });

  const bad: Array<[string, string, RegExp]> = [
    ['not a URL', '      - { url: "hooks.example.com", secretEnv: S }\n', /policy\.yaml:6: tenants\[0\]\.webhooks\[0\]\.url: not a URL/],
    ['another scheme', '      - { url: "ftp://example.com/x", secretEnv: S }\n', /webhooks\[0\]\.url: a webhook URL is http:\/\/ or https:\/\/, not ftp:\/\//],
    ['a password in it', '      - { url: "https://u:p@example.com/x", secretEnv: S }\n', /carries no user or password/],
    ['no secret', '      - { url: "https://example.com/x" }\n', /webhooks\[0\]: give exactly one of secretEnv or secretFile/],
    ['both secrets', '      - { url: "https://example.com/x", secretEnv: S, secretFile: /s }\n', /give exactly one of secretEnv or secretFile/],
    ['an inline secret', '      - { url: "https://example.com/x", secret: hunter2hunter2hunter2 }\n', /webhooks\[0\]\.secret: the signing secret is never written in the policy file/],
    ['a relative secret file', '      - { url: "https://example.com/x", secretFile: hook.secret }\n', /secretFile: an absolute path/],
    ['an unknown event', '      - { url: "https://example.com/x", secretEnv: S, events: [created, exploded] }\n', /events\[1\]: expected one of: created, paused, resumed, ended/],
    ['the same URL twice', '      - { url: "https://example.com/x", secretEnv: S }\n      - { url: "https://example.com/x", secretEnv: T }\n', /webhooks\[1\]\.url: webhook https:\/\/example\.com\/x is listed twice/],
  ];
  for (const [what, yaml, msg] of bad) {
    test(`refused with a clear error: ${what}`, () => {
      const r = parse(yaml);
      assert.equal(r.kind, 'invalid');
      if (r.kind !== 'invalid') return;
      assert.match(`${r.source}:${r.line}: ${r.reason}`, msg);
    });
  }

  test('secrets are read when the daemon starts: unset, unreadable or short ones stop it, naming the webhook', () => {
    const r = parse('      - { url: "https://example.com/a", secretEnv: HOOK_SECRET }\n      - { url: "https://example.com/b", secretFile: /nonexistent/agentbox-hook.secret }\n');
    assert.equal(r.kind, 'ok');
    if (r.kind !== 'ok') return;
    assert.throws(() => resolveWebhookTargets(r.policy, { env: {} }), (err: unknown) => {
      assert.ok(err instanceof BadRequestError);
      assert.equal(err.message, 'policy tenants[0] (alice).webhooks[0]: secretEnv HOOK_SECRET is not set in the daemon\'s environment');
      assert.match(err.hint ?? '', /set HOOK_SECRET in the daemon's environment/);
      return true;
    });
    assert.throws(() => resolveWebhookTargets(r.policy, { env: { HOOK_SECRET: 'short' } }), /secretEnv HOOK_SECRET is 5 characters; a webhook secret needs at least 16/);
    assert.throws(() => resolveWebhookTargets(r.policy, { env: { HOOK_SECRET: SECRET } }), /tenants\[0\] \(alice\)\.webhooks\[1\]: cannot read secretFile \/nonexistent\/agentbox-hook\.secret \(ENOENT\)/);
    const dir = mkdtempSync(join(tmpdir(), 'agentbox-hooks-'));
    try {
      const file = join(dir, 'hook.secret');
      writeFileSync(file, `${SECRET}-file\n`);
      const ok = parse(`      - { url: "https://example.com/a", secretEnv: HOOK_SECRET, events: [ended] }\n      - { url: "https://example.com/b", secretFile: ${file} }\n`);
      assert.equal(ok.kind, 'ok');
      if (ok.kind !== 'ok') return;
      const targets = resolveWebhookTargets(ok.policy, { env: { HOOK_SECRET: SECRET } });
      const alice = targets.get('alice')!;
      assert.deepEqual(alice.map((t) => t.secret), [SECRET, `${SECRET}-file`], 'the file\'s trailing newline is part of the secret');
      assert.deepEqual([...alice[0]!.events], ['ended']);
      assert.deepEqual([...alice[1]!.events], ['created', 'paused', 'resumed', 'ended']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('signWebhook is the documented HMAC', () => {
    const body = '{"a":1}';
    assert.equal(signWebhook(SECRET, body, 1700000000), `t=1700000000,v1=${createHmac('sha256', SECRET).update(`1700000000.${body}`).digest('hex')}`);
  });
});
