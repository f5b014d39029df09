/** The manager's parts on their own, without a runtime: admission and exec recording against an in-memory store. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { QuotaExceededError } from '../../src/contract/errors.js';
import { CreateGate, QuotaLedger } from '../../src/core/manager/admission.js';
import { ExecRecorder, replayStored, storedExec, toExecRecord } from '../../src/core/manager/execs.js';
import type { ExecEvent, Sandbox, SandboxSpec } from '../../src/contract/model.js';
import { silentLogger } from '../../src/observability/logger.js';
import { parsePolicyText } from '../../src/policy/load.js';
import { Store } from '../../src/store/store.js';

function spec(tenant: string, id: string, memoryMb = 64): SandboxSpec {
  return {
    id,
    tenant,
    image: 'busybox',
    profile: null,
    runtime: 'local',
    isolation: 'namespaces',
    limits: { cpus: 1, memoryMb, pids: 64, diskMb: 64 },
    egress: { mode: 'none', allow: [] },
    env: {},
    labels: {},
    ttlMs: null,
    idleTimeoutMs: null,
    execTimeoutMs: 10_000,
    outputLimitBytes: 1024,
  };
}

function storeWith(s: SandboxSpec): Store {
  const store = Store.open(':memory:');
  const now = new Date().toISOString();
  const sb: Sandbox = { ...s, state: 'running', createdAt: now, expiresAt: null, lastActiveAt: now, endedAt: null, endReason: null, endedBy: null };
  store.insertSandbox(sb, s, null);
  return store;
}

describe('QuotaLedger', () => {
  const r = parsePolicyText('version: 1\ntenants:\n  - name: alice\n    tokens: [alice-token-0123456789]\n    quotas: { sandboxes: 2, memoryMb: 200 }\n', 'p.yaml');
  if (r.kind !== 'ok') throw new Error('test policy invalid');

  test('reservations count before any row is stored; a release frees its share once', () => {
    const ledger = new QuotaLedger(r.policy, Store.open(':memory:'));
    const first = ledger.reserve(spec('alice', 'sbx_a'));
    ledger.reserve(spec('alice', 'sbx_b'));
    assert.throws(() => ledger.reserve(spec('alice', 'sbx_c')), QuotaExceededError);
    first();
    first();
    ledger.reserve(spec('alice', 'sbx_c'));
    assert.throws(() => ledger.reserve(spec('alice', 'sbx_d')), QuotaExceededError, 'a second release of the same share freed another');
  });

  test('memory held by reservations counts too', () => {
    const ledger = new QuotaLedger(r.policy, Store.open(':memory:'));
    ledger.reserve(spec('alice', 'sbx_a', 150));
    assert.throws(() => ledger.reserve(spec('alice', 'sbx_b', 64)), /would use 214 MiB of 200 MiB/);
  });
});

describe('CreateGate', () => {
  test('max run at once, queueLength wait in order, the rest get a 429 with retry-after', async () => {
    const gate = new CreateGate(1, 1);
    const release = await gate.acquire();
    let second = false;
    const waiting = gate.acquire().then((r) => {
      second = true;
      return r;
    });
    await assert.rejects(gate.acquire(), (err: unknown) => err instanceof QuotaExceededError && err.retryAfterSec === 1);
    await new Promise((r) => setImmediate(r));
    assert.equal(second, false, 'a queued create ran while the slot was taken');
    release();
    (await waiting)();
    assert.equal(second, true);
  });
});

describe('ExecRecorder', () => {
  test('records an exec: busy while it runs, tails and outcome after; the contract view and the replay', async () => {
    const s = spec('alice', 'sbx_rec');
    const store = storeWith(s);
    // 4 bytes of each stream are kept: 'hello world' leaves 'orld'.
    const rec = new ExecRecorder({ store, logger: silentLogger(), tailBytes: 4 });
    const begun = rec.begin({ execId: 'exe_1', sandboxId: s.id, tenant: 'alice', cmd: ['echo', 'hi'] });
    assert.equal(toExecRecord(storedExec(store, s.id, 'exe_1'), false).exitCode, null, 'a running exec is in the history with exitCode null');
    assert.equal(toExecRecord(storedExec(store, s.id, 'exe_1'), false).state, 'running');
    let busyInside = false;
    const events = rec.events(begun, async () =>
      (async function* (): AsyncIterable<ExecEvent> {
        busyInside = rec.busy(s.id);
        yield { type: 'stdout', data: Buffer.from('hello ') };
        yield { type: 'stdout', data: Buffer.from('world') };
        yield { type: 'stderr', data: Buffer.from('e') };
        yield { type: 'exit', result: { execId: 'exe_1', exitCode: 3, truncated: false, timedOut: false, oomKilled: false, durationMs: 7 } };
      })(),
    );
    for await (const ev of events) void ev;
    assert.equal(busyInside, true);
    assert.equal(rec.busy(s.id), false);
    const row = storedExec(store, s.id, 'exe_1');
    assert.equal(
      JSON.stringify(toExecRecord(row, true)),
      JSON.stringify({ execId: 'exe_1', cmd: ['echo', 'hi'], state: 'ended', startedAt: row.startedAt, endedAt: row.endedAt, exitCode: 3, timedOut: false, oomKilled: false, truncated: false, durationMs: 7, stdout: 'orld', stderr: 'e' }),
    );
    assert.equal('stdout' in toExecRecord(row, false), false, 'a history entry carries no output');
    const replayed: string[] = [];
    for await (const ev of replayStored(row)) replayed.push(ev.type === 'exit' ? `exit ${ev.result.exitCode}` : `${ev.type} ${ev.data.toString()}`);
    assert.deepEqual(replayed, ['stdout orld', 'stderr e', 'exit 3']);
  });

  test('an exec its daemon died with reads as lost, and replays as 125 (agentbox failed), not as running', async () => {
    const s = spec('alice', 'sbx_lost');
    const store = storeWith(s);
    new ExecRecorder({ store, logger: silentLogger(), tailBytes: 4 }).begin({ execId: 'exe_l', sandboxId: s.id, tenant: 'alice', cmd: ['sleep', '9'] });
    store.loseUnfinishedExecs(new Date().toISOString());
    const rec = toExecRecord(storedExec(store, s.id, 'exe_l'), true);
    assert.equal(rec.state, 'lost');
    assert.equal(rec.exitCode, null);
    assert.notEqual(rec.endedAt, null);
    const replayed: string[] = [];
    for await (const ev of replayStored(storedExec(store, s.id, 'exe_l'))) replayed.push(ev.type === 'exit' ? `exit ${ev.result.exitCode}` : ev.type);
    assert.deepEqual(replayed, ['exit 125']);
  });
});
