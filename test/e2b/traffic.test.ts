/**
 * E2B's traffic rules (src/e2b/traffic.ts) without sandboxes: records kept across a restart, dropped
 * for ended sandboxes, never read as public when unreadable; traffic tokens per sandbox, apart from
 * envd tokens. The proxy path itself runs in e2b-sdk.test.ts against real sandboxes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, test } from 'node:test';
import { NotFoundError } from '../../src/contract/errors.js';
import type { Caller, SandboxManager } from '../../src/core/manager.js';
import { EnvdTokens } from '../../src/e2b/envd-token.js';
import { E2bTraffic } from '../../src/e2b/traffic.js';
import { silentLogger } from '../../src/observability/logger.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** What E2bTraffic asks of the manager, over a set of live sandbox ids; it records what it was asked. */
function fakeManager(live: Set<string>) {
  const calls: string[] = [];
  const check = (id: string): void => {
    if (!live.has(id)) throw new NotFoundError(`sandbox ${id} not found`);
  };
  const manager = {
    get: (id: string) => (check(id), { id, state: 'running' }),
    grantPortAccess: (id: string, port: number, req: { public?: boolean }, caller: Caller) => {
      check(id);
      calls.push(`grant ${id}:${port} public=${String(req.public)} as ${caller.tenant}/${caller.actor}`);
    },
    openPort: async (id: string, port: number, caller: Caller) => (check(id), calls.push(`open ${id}:${port} as ${caller.tenant}`), new PassThrough()),
    openPortByGrant: async (id: string, port: number) => (check(id), calls.push(`byGrant ${id}:${port}`), new PassThrough()),
  };
  return { manager: manager as unknown as SandboxManager, calls };
}

test('records survive a restart; ended sandboxes lose theirs; an unreadable record is not public', () => {
  const dir = mkdtempSync(join(tmpdir(), 'e2b-traffic-'));
  dirs.push(dir);
  const tokens = EnvdTokens.withKey(randomBytes(32));
  const live = new Set(['sbx_pub', 'sbx_priv', 'sbx_gone']);
  const { manager } = fakeManager(live);
  const first = new E2bTraffic({ manager, tokens, logger: silentLogger(), dir });
  first.record('sbx_pub', { tenant: 'alice', public: true });
  first.record('sbx_priv', { tenant: 'alice', public: false });
  first.record('sbx_gone', { tenant: 'bob', public: true });
  assert.equal(first.tokenFor('sbx_pub'), null);
  assert.equal(first.tokenFor('sbx_priv'), tokens.trafficToken('sbx_priv'));

  live.delete('sbx_gone');
  writeFileSync(join(dir, 'sbx_bad'), '{"tenant":"alice","public":"yes"}');
  const second = new E2bTraffic({ manager, tokens, logger: silentLogger(), dir });
  assert.deepEqual(second.rule('sbx_pub'), { tenant: 'alice', public: true });
  assert.deepEqual(second.rule('sbx_priv'), { tenant: 'alice', public: false });
  assert.equal(second.rule('sbx_gone'), undefined, 'its sandbox ended');
  assert.equal(existsSync(join(dir, 'sbx_gone')), false);
  assert.equal(second.rule('sbx_bad'), undefined);
  second.forget('sbx_pub');
  assert.equal(existsSync(join(dir, 'sbx_pub')), false);
});

test('open: a public sandbox\'s port is granted publicly, then opened by the grant; a private one only with its token', async () => {
  const tokens = EnvdTokens.withKey(randomBytes(32));
  const { manager, calls } = fakeManager(new Set(['sbx_pub', 'sbx_priv', 'sbx_other']));
  const traffic = new E2bTraffic({ manager, tokens, logger: silentLogger() });
  traffic.record('sbx_pub', { tenant: 'alice', public: true });
  traffic.record('sbx_priv', { tenant: 'alice', public: false });
  traffic.record('sbx_other', { tenant: 'alice', public: false });

  assert.ok(await traffic.open({ sandboxId: 'sbx_pub', port: 8000 }, undefined));
  assert.equal(await traffic.open({ sandboxId: 'sbx_priv', port: 8000 }, undefined), undefined);
  assert.equal(await traffic.open({ sandboxId: 'sbx_priv', port: 8000 }, tokens.trafficToken('sbx_other')), undefined);
  assert.equal(await traffic.open({ sandboxId: 'sbx_priv', port: 8000 }, tokens.issue('sbx_priv', 'alice', undefined)), undefined, 'an envd token is no traffic token');
  assert.ok(await traffic.open({ sandboxId: 'sbx_priv', port: 3000 }, tokens.trafficToken('sbx_priv')));
  assert.equal(await traffic.open({ sandboxId: 'sbx_unknown', port: 8000 }, undefined), undefined, 'no record: private');
  assert.deepEqual(calls, ['grant sbx_pub:8000 public=true as alice/e2b-traffic', 'byGrant sbx_pub:8000', 'open sbx_priv:3000 as alice']);
});

test('traffic tokens: one per sandbox and key, apart from envd tokens', () => {
  const tokens = EnvdTokens.withKey(randomBytes(32));
  const t = tokens.trafficToken('sbx_one');
  assert.equal(t, tokens.trafficToken('sbx_one'), 'derived: the same at create and connect');
  assert.equal(tokens.verifyTraffic('sbx_one', t), true);
  assert.equal(tokens.verifyTraffic('sbx_two', t), false);
  assert.equal(EnvdTokens.withKey(randomBytes(32)).verifyTraffic('sbx_one', t), false, 'another key');
  assert.equal(tokens.verifyTraffic('sbx_one', `${t}x`), false);
  assert.equal(tokens.verify('sbx_one', t), null, 'not an envd token');
});
