/**
 * Finding 10 (API parts): parallel creates cannot pass a tenant's quota together; AGENTBOX_TOKEN
 * and policy tokens have a minimum length; no policy tenant can take the local operator's name.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { VERSION } from '../../src/core/config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { AgentboxError } from '../../src/contract/errors.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { closeDaemonLeavingNothing } from '../helpers/daemon-teardown.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const ALICE = 'alice-quota-token-0123456789';

describe('parallel creates against a tenant quota', () => {
  let home: string;
  let daemon: Daemon | undefined;
  let alice: AgentboxClient;

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-sec-quota-'));
    writeFileSync(join(home, 'policy.yaml'), `version: 1\ndefaults: { limits: { memoryMb: 256 } }\ntenants:\n  - name: alice\n    tokens: [${ALICE}]\n    quotas: { sandboxes: 2, memoryMb: 384 }\n`);
    daemon = await startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR }, logger: silentLogger(), policyPath: join(home, 'policy.yaml'), socket: null, tcp: { host: '127.0.0.1', port: 0 } });
    alice = new AgentboxClient({ url: `http://127.0.0.1:${daemon.tcpAddress!.port}`, token: ALICE });
  });

  after(() =>
    closeDaemonLeavingNothing(daemon, home, async () => {
      for (const sb of await alice.list()) await alice.delete(sb.id);
    }),
  );

  test('8 creates at once with a quota of 2 sandboxes: exactly 2 succeed, the rest are quota_exceeded', async () => {
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => alice.create({ labels: { race: 'count' }, limits: { memoryMb: 64 } })));
    const ok = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(ok.length, 2, `${ok.length} creates passed a quota of 2`);
    for (const r of refused) assert.equal((r.reason as AgentboxError).code, 'quota_exceeded', String(r.reason));
    assert.equal((await alice.list()).length, 2);
    for (const sb of await alice.list()) await alice.delete(sb.id);
  });

  test('8 creates started in one tick on the manager (every surface ends there): exactly 2 succeed', async () => {
    const caller = { tenant: 'alice', actor: 'test' };
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => daemon!.manager.create({ limits: { memoryMb: 64 } }, caller)));
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    for (const sb of daemon!.manager.list(caller)) await daemon!.manager.delete(sb.id, caller);
    assert.equal(ok, 2, `${ok} creates passed a quota of 2`);
  });

  test('memory quota: 6 creates of 256 MiB at once against 384 MiB: exactly 1 succeeds', async () => {
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => alice.create({ limits: { memoryMb: 256 } })));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    // A refused create holds nothing: the slots are free again.
    for (const sb of await alice.list()) await alice.delete(sb.id);
    const two = await Promise.all([alice.create({ limits: { memoryMb: 64 } }), alice.create({ limits: { memoryMb: 64 } })]);
    assert.equal(two.length, 2);
  });
});

const dockerProbe = await new DockerRuntime({ disks: scratchDiskStore(), images: { resolve: () => { throw new Error('unused'); } }, homeTag: `test-quota-${process.pid}`, version: VERSION }).probe();

describe('parallel first-use creates on docker against a tenant quota', { skip: dockerProbe.ok ? false : `docker: ${dockerProbe.reason}` }, () => {
  let home: string;
  let daemon: Daemon | undefined;
  let alice: AgentboxClient;

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-sec-quota-docker-'));
    writeFileSync(join(home, 'policy.yaml'), `version: 1\ndefaults: { runtime: docker, limits: { memoryMb: 128 } }\ntenants:\n  - name: alice\n    tokens: [${ALICE}]\n    quotas: { sandboxes: 2 }\n`);
    daemon = await startDaemon({ env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR }, logger: silentLogger(), policyPath: join(home, 'policy.yaml'), socket: null, tcp: { host: '127.0.0.1', port: 0 } });
    alice = new AgentboxClient({ url: `http://127.0.0.1:${daemon.tcpAddress!.port}`, token: ALICE });
  });

  after(async () => {
    if (daemon === undefined) return rmSync(home, { recursive: true, force: true });
    for (const sb of await alice.list()) await alice.delete(sb.id);
    const runtime = await daemon.manager.runtime('docker');
    await daemon.close();
    const left = await runtime.list();
    rmSync(home, { recursive: true, force: true });
    assert.deepEqual(left, [], 'containers left on the host');
  });

  test('6 creates over HTTP at once, the first ones this daemon makes: exactly 2 succeed', async () => {
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => alice.create({ labels: { race: 'docker' } })));
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as AgentboxError).code, 'quota_exceeded', String(r.reason));
    assert.equal(ok, 2, `${ok} creates passed a quota of 2`);
  });
});

describe('token strength and the operator\'s tenant name', () => {
  const tryStart = async (env: Record<string, string>, policy?: string): Promise<{ err?: AgentboxError; home: string }> => {
    const home = mkdtempSync(join(tmpdir(), 'agentbox-sec-tok-'));
    const policyPath = join(home, 'policy.yaml');
    if (policy) writeFileSync(policyPath, policy);
    try {
      const d = await startDaemon({ env: { AGENTBOX_HOME: join(home, 'h'), AGENTBOX_IMAGES: TEST_IMAGES_DIR, ...env }, logger: silentLogger(), ...(policy ? { policyPath } : {}), socket: null, tcp: { host: '127.0.0.1', port: 0 } });
      await d.close();
      return { home };
    } catch (err) {
      return { err: err as AgentboxError, home };
    }
  };

  test('a short AGENTBOX_TOKEN: the daemon refuses to start, with a hint', async () => {
    for (const weak of ['x', 'secret', 'fifteen-chars15']) {
      const { err, home } = await tryStart({ AGENTBOX_TOKEN: weak });
      try {
        assert.ok(err, `AGENTBOX_TOKEN ${weak} was accepted`);
        assert.equal(err.code, 'bad_request');
        assert.match(err.message, /AGENTBOX_TOKEN.*16/);
        assert.doesNotMatch(err.message, new RegExp(weak), 'the error repeats the token');
        assert.match(err.hint ?? '', /openssl rand/);
        assert.equal(existsSync(join(home, 'h', 'agentbox.db')), false, 'it got as far as the store');
      } finally {
        rmSync(home, { recursive: true, force: true });
      }
    }
    const { err, home } = await tryStart({ AGENTBOX_TOKEN: 'sixteen-chars-16' });
    rmSync(home, { recursive: true, force: true });
    assert.equal(err, undefined);
  });

  test('short policy tokens, a bad digest and a tenant named default are refused at load, with the line', async () => {
    const cases: [string, number, RegExp][] = [
      ['version: 1\ntenants:\n  - name: a\n    tokens: [short-token]\n', 4, /at least 16 characters/],
      ['version: 1\ntenants:\n  - name: a\n    tokens: [ok-token-0123456789]\n    scopedTokens:\n      - { token: short-scoped, scopes: [read] }\n', 6, /at least 16 characters/],
      ['version: 1\ntenants:\n  - name: a\n    tokenSha256: [abcdef]\n', 4, /64 hex/],
      ['version: 1\ntenants:\n  - name: a\n    tokens: [ok-token-0123456789]\n  - name: default\n    tokens: [other-token-0123456789]\n', 5, /local operator/],
    ];
    for (const [policy, line, why] of cases) {
      const { err, home } = await tryStart({}, policy);
      rmSync(home, { recursive: true, force: true });
      assert.ok(err, `accepted:\n${policy}`);
      assert.match(err.message, why);
      assert.match(err.message, new RegExp(`policy\\.yaml:${line}:`), err.message);
    }
  });
});
