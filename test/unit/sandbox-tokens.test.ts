/** Sandbox tokens without a daemon: the Authenticator's lookup, the access rules, the store rows, the request schema. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { Authenticator } from '../../src/api/auth.js';
import { CreateSandboxTokenRequestSchema } from '../../src/contract/tokens.js';
import { need, needTenantWide, type Caller } from '../../src/core/manager/access.js';
import { DEFAULT_POLICY, PolicySchema } from '../../src/policy/schema.js';
import { SANDBOX_TOKENS_SQL } from '../../src/store/sandbox-tokens.js';
import { Store } from '../../src/store/store.js';

const TOKEN = `abx_sbt_${'x'.repeat(43)}`;
const hex = (s: string): string => createHash('sha256').update(s).digest('hex');

describe('the Authenticator and sandbox tokens', () => {
  const own: Caller = { tenant: 'alice', actor: 'sandbox-token:sbt_1', scopes: ['read'], sandboxId: 'sbx_a' };

  test('a sandbox token is looked up by its sha256 and stands for what the lookup says', () => {
    const asked: string[] = [];
    const auth = new Authenticator(DEFAULT_POLICY, undefined, (h) => (asked.push(h), own));
    assert.deepEqual(auth.authenticateToken(TOKEN), own);
    assert.deepEqual(asked, [hex(TOKEN)]);
  });

  test('unknown, or anything wider than one sandbox without manage, is 401', () => {
    const cases: (Caller | undefined)[] = [undefined, { ...own, scopes: ['read', 'manage'] }, { tenant: 'alice', actor: 'x', scopes: ['read'] }, { tenant: 'alice', actor: 'x', sandboxId: 'sbx_a' }];
    for (const c of cases) {
      const auth = new Authenticator(DEFAULT_POLICY, undefined, () => c);
      assert.throws(() => auth.authenticateToken(TOKEN), (e: unknown) => (e as { code?: string }).code === 'unauthorized', JSON.stringify(c));
    }
    assert.throws(() => new Authenticator(DEFAULT_POLICY, undefined).authenticateToken(TOKEN), (e: unknown) => (e as { code?: string }).code === 'unauthorized');
  });

  test('policy tokens never reach the lookup, and a policy may not name a token of that shape', () => {
    const policy = { ...DEFAULT_POLICY, tenants: [{ name: 'alice', tokens: ['alice-token-0123456789'] }] };
    let called = 0;
    const auth = new Authenticator(policy, undefined, () => (called++, undefined));
    assert.throws(() => auth.authenticateToken(TOKEN));
    assert.equal(auth.authenticateToken('alice-token-0123456789').tenant, 'alice');
    assert.equal(called, 1);
    const bad = PolicySchema.safeParse({ version: 1, tenants: [{ name: 'alice', tokens: [TOKEN] }] });
    assert.equal(bad.success, false);
    assert.match(JSON.stringify(bad.error?.issues), /abx_sbt_/);
  });
});

describe('access rules for a caller bound to one sandbox', () => {
  const sbt: Caller = { tenant: 'alice', actor: 'sandbox-token:sbt_1', scopes: ['read', 'exec', 'files', 'manage'], sandboxId: 'sbx_a' };

  test('manage is forbidden whatever its scopes say; tenant-wide operations are forbidden', () => {
    assert.throws(() => need(sbt, 'manage'), (e: unknown) => (e as { code?: string }).code === 'forbidden');
    assert.throws(() => needTenantWide(sbt, 'read', 'see snapshots'), (e: unknown) => (e as { code?: string }).code === 'forbidden');
    need(sbt, 'read');
    needTenantWide({ tenant: 'alice', actor: 'token:alice' }, 'read', 'see snapshots');
  });
});

describe('the sandbox_tokens rows', () => {
  const row = (id: string, sandboxId: string, tokenSha256: string, expiresAt: string) => ({ id, sandboxId, tenant: 'alice', scopesJson: '["read"]', tokenSha256, createdAt: new Date().toISOString(), expiresAt, revokedAt: null });

  test('by hash, revoke, drop with the sandbox, prune expired; one row per hash', () => {
    const store = Store.open(':memory:');
    const later = new Date(Date.now() + 60_000).toISOString();
    store.sandboxTokens.insert(row('sbt_1', 'sbx_a', 'h1', later));
    store.sandboxTokens.insert(row('sbt_2', 'sbx_a', 'h2', new Date(Date.now() - 1000).toISOString()));
    store.sandboxTokens.insert(row('sbt_3', 'sbx_b', 'h3', later));
    assert.throws(() => store.sandboxTokens.insert(row('sbt_4', 'sbx_b', 'h3', later)), /UNIQUE/);
    assert.equal(store.sandboxTokens.byHash('h1')?.id, 'sbt_1');
    assert.equal(store.sandboxTokens.revoke('sbx_b', 'sbt_1', new Date().toISOString()), false, 'revoked through another sandbox');
    assert.equal(store.sandboxTokens.byHash('h1')?.revokedAt, null);
    assert.equal(store.sandboxTokens.revoke('sbx_a', 'sbt_1', '2026-01-01T00:00:00.000Z'), true);
    assert.equal(store.sandboxTokens.revoke('sbx_a', 'sbt_1', '2027-01-01T00:00:00.000Z'), true);
    assert.equal(store.sandboxTokens.byHash('h1')?.revokedAt, '2026-01-01T00:00:00.000Z', 'a second revoke moved the time');
    assert.equal(store.sandboxTokens.prune(new Date()), 1);
    assert.equal(store.sandboxTokens.dropSandbox('sbx_a'), 1);
    assert.deepEqual(store.sandboxTokens.list('sbx_b').map((t) => t.id), ['sbt_3']);
    store.close();
  });

  test('its migration is SQL PostgreSQL also runs: TEXT columns, no AUTOINCREMENT, no JSON functions', () => {
    assert.doesNotMatch(SANDBOX_TOKENS_SQL, /AUTOINCREMENT|json_|DATETIME|BLOB|\bWITHOUT ROWID\b/i);
  });
});

describe('the mint request', () => {
  test('scopes: no manage, none unknown, at least one; in a fixed order; unknown keys refused', () => {
    assert.deepEqual(CreateSandboxTokenRequestSchema.parse({ scopes: ['files', 'read'] }).scopes, ['read', 'files']);
    for (const scopes of [['manage'], [], ['read', 'admin']]) assert.equal(CreateSandboxTokenRequestSchema.safeParse({ scopes }).success, false, JSON.stringify(scopes));
    assert.equal(CreateSandboxTokenRequestSchema.safeParse({ scopes: ['read'], sandboxId: 'sbx_b' }).success, false);
  });
});
