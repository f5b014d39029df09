/** SandboxManager with the real local runtime and SQLite: lifecycle, reaper, reconciliation. */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { helperPath } from '../../src/core/config.js';
import { SandboxManager, type Caller } from '../../src/core/manager.js';
import { ConflictError, ForbiddenError, NotFoundError, QuotaExceededError } from '../../src/contract/errors.js';
import { silentLogger } from '../../src/observability/logger.js';
import { parsePolicyText } from '../../src/policy/load.js';
import type { Policy } from '../../src/policy/schema.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import { Store } from '../../src/store/store.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import type { ImageStore } from '../../src/images/image-store.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const caller: Caller = { tenant: 'default', actor: 'test' };

function policy(text: string): Policy {
  const r = parsePolicyText(text, 'test-policy.yaml');
  if (r.kind !== 'ok') throw new Error(`test policy invalid: ${JSON.stringify(r)}`);
  return r.policy;
}

async function until(fn: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(50);
  }
}

describe('SandboxManager', () => {
  let dir: string;
  let images: ImageStore;
  const scope = `agentbox/test-manager-${process.pid}`;
  const newRuntime = (): LocalRuntime => new LocalRuntime({ disks: scratchDiskStore(), scope, resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() });

  before(async () => {
    images = await testImages();
    dir = mkdtempSync(join(tmpdir(), 'agentbox-mgr-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const makeManager = (p: Policy, store: Store, rt = newRuntime()): SandboxManager =>
    new SandboxManager({ policy: p, store, runtimes: { local: rt }, logger: silentLogger(), reapIntervalMs: 100 });

  test('ttl expiry and idle timeout end sandboxes with their reason, and a busy one is not idle', async () => {
    const store = Store.open(join(dir, 'ttl.db'));
    const m = makeManager(policy('version: 1\ndefaults:\n  idleTimeout: 1s\n  ttl: 1h\n'), store);
    await m.start();
    const ttl = await m.create({ ttl: '1s' }, caller);
    const idle = await m.create({}, caller);
    const busy = await m.create({}, caller);
    const long = m.exec(busy.id, { cmd: ['sleep', '2.5'] }, caller);
    await until(() => m.get(ttl.id, caller).state !== 'running' && m.get(idle.id, caller).state !== 'running');
    assert.equal(m.get(ttl.id, caller).endReason, 'ttl_expired');
    assert.equal(m.get(idle.id, caller).endReason, 'idle_timeout');
    assert.equal(m.get(busy.id, caller).state, 'running', 'a sandbox with a running exec was reaped as idle');
    assert.equal((await long).exitCode, 0);
    await until(() => m.get(busy.id, caller).state !== 'running');
    await m.close();
    store.close();
  });

  test('a reaper pass that outlasts the interval is not joined by the next: an expired sandbox whose destroy is slow is destroyed once, its end announced once', async () => {
    const store = Store.open(join(dir, 'slow-destroy.db'));
    const rt = newRuntime();
    let destroys = 0;
    // The real runtime, its destroy made slower than ten reaper intervals (a cluster waits for its pod to go).
    const slow = Object.assign(Object.create(rt) as LocalRuntime, {
      destroy: async (h: Parameters<LocalRuntime['destroy']>[0]) => {
        destroys++;
        await sleep(1200);
        return rt.destroy(h);
      },
    });
    const ended: string[] = [];
    const m = new SandboxManager({ policy: policy('version: 1\n'), store, runtimes: { local: slow }, logger: silentLogger(), reapIntervalMs: 100, events: { emit: (e) => void (e.type === 'ended' && ended.push(e.sandbox.id)) } });
    await m.start();
    const sb = await m.create({ ttl: '1s' }, caller);
    await until(() => m.get(sb.id, caller).state !== 'running', 15_000);
    await sleep(500);
    assert.equal(m.get(sb.id, caller).endReason, 'ttl_expired');
    assert.equal(destroys, 1, 'overlapping reaper passes destroyed the expired sandbox more than once');
    assert.deepEqual(ended, [sb.id]);
    await m.close();
    store.close();
  });

  test('a burst of creates: bounded concurrency, a short queue, then quota_exceeded with retryAfterSec', async () => {
    const store = Store.open(join(dir, 'burst.db'));
    const rt = newRuntime();
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let running = 0;
    let peak = 0;
    // The real runtime, made slow on purpose so the burst is deterministic.
    const slow = Object.assign(Object.create(rt) as LocalRuntime, {
      create: async (spec: Parameters<LocalRuntime['create']>[0]) => {
        running++;
        peak = Math.max(peak, running);
        await gate;
        try {
          return await rt.create(spec);
        } finally {
          running--;
        }
      },
    });
    const m = new SandboxManager({ policy: policy('version: 1\n'), store, runtimes: { local: slow }, logger: silentLogger(), maxConcurrentCreates: 2, createQueueLength: 3 });
    await m.start();
    const attempts = Array.from({ length: 8 }, () => m.create({}, caller).then((sb) => ({ ok: true as const, sb }), (err: unknown) => ({ ok: false as const, err })));
    await sleep(100);
    open();
    const results = await Promise.all(attempts);
    const refused = results.filter((r) => !r.ok);
    assert.equal(results.filter((r) => r.ok).length, 5, 'two running plus three queued should succeed');
    assert.equal(refused.length, 3);
    for (const r of refused) {
      const err = (r as { err: QuotaExceededError }).err;
      assert.ok(err instanceof QuotaExceededError);
      assert.equal(err.retryAfterSec, 1);
    }
    assert.equal(peak, 2, 'more creates ran at once than allowed');
    for (const r of results) if (r.ok) await m.delete(r.sb.id, caller);
    await m.close();
    store.close();
  });

  test('pause on idle: frozen after pauseAfter, thawed transparently by the next exec or file call', async () => {
    const store = Store.open(join(dir, 'pause.db'));
    const rt = newRuntime();
    const m = makeManager(policy('version: 1\nprofiles:\n  nap: { pauseAfter: 1s }\n'), store, rt);
    await m.start();
    const sb = await m.create({ profile: 'nap' }, caller);
    const awake = await m.create({}, caller);
    await m.exec(sb.id, { cmd: ['sh', '-c', 'echo 7 > /workspace/n'] }, caller);
    // The manager marks a sandbox paused when it starts freezing it; the freeze lands a moment later.
    // Really frozen: an exec entering it directly (past the manager) would hang, so look at the freezer.
    await until(async () => m.isPaused(sb.id) && (await frozen(sb.id)));
    assert.equal(m.isPaused(awake.id), false, 'a sandbox without pauseAfter was paused');
    assert.equal((await m.exec(sb.id, { cmd: ['cat', '/workspace/n'] }, caller)).stdout, '7\n');
    assert.equal(m.isPaused(sb.id), false);
    assert.equal(await frozen(sb.id), false);
    await until(() => m.isPaused(sb.id));
    assert.equal((await m.listDir(sb.id, '/workspace', caller)).length, 1);
    await m.delete(sb.id, caller);
    await m.delete(awake.id, caller);
    await m.close();
    store.close();
  });

  test('pause on request: frozen at once, refused twice or with a mode the runtime lacks, resumed by resume or by the next call; scopes', async () => {
    const store = Store.open(join(dir, 'pause-request.db'));
    const m = makeManager(policy('version: 1\n'), store, newRuntime());
    await m.start();
    const sb = await m.create({}, caller);
    await m.exec(sb.id, { cmd: ['sh', '-c', 'echo 8 > /workspace/n'] }, caller);
    assert.equal((await m.pause(sb.id, {}, caller)).paused, 'frozen');
    assert.equal(await frozen(sb.id), true, 'the freezer holds it');
    await assert.rejects(m.pause(sb.id, {}, caller), (e: Error) => e instanceof ConflictError && /frozen already/.test(e.message));
    assert.equal((await m.resume(sb.id, caller)).paused, undefined);
    assert.equal(await frozen(sb.id), false);
    assert.equal((await m.resume(sb.id, caller)).state, 'running', 'resuming a running sandbox changes nothing');
    await assert.rejects(m.pause(sb.id, { mode: 'hibernate' }, caller), (e: Error) => e instanceof ConflictError && /cannot hibernate/.test(e.message));
    assert.equal(m.isPaused(sb.id), false, 'a refused hibernate leaves it running');
    await m.pause(sb.id, { mode: 'freeze' }, caller);
    assert.equal((await m.exec(sb.id, { cmd: ['cat', '/workspace/n'] }, caller)).stdout, '8\n', 'the next call resumes it');
    assert.equal(m.isPaused(sb.id), false);
    await assert.rejects(m.pause(sb.id, {}, { ...caller, scopes: ['read', 'exec'] }), ForbiddenError);
    await assert.rejects(m.pause(sb.id, { mode: 'nap' as 'freeze' }, caller));
    await assert.rejects(m.pause('sbx_nosuchsandbox', {}, caller), NotFoundError);
    await m.delete(sb.id, caller);
    await assert.rejects(m.pause(sb.id, {}, caller), ConflictError);
    await m.close();
    store.close();
  });

  test('a sandbox that dies on its own becomes runtime_lost', async () => {
    const store = Store.open(join(dir, 'lost.db'));
    const m = makeManager(policy('version: 1\n'), store);
    await m.start();
    const sb = await m.create({}, caller);
    const pid = (store.getSandbox(sb.id)?.runtimeData as { pid: number }).pid;
    process.kill(pid, 'SIGKILL');
    await until(() => m.get(sb.id, caller).state === 'failed');
    assert.equal(m.get(sb.id, caller).endReason, 'runtime_lost');
    await m.close();
    store.close();
  });

  test('start-up reconciliation reaps host sandboxes the store does not know', async () => {
    const store = Store.open(join(dir, 'orphan.db'));
    const rt = newRuntime();
    const orphan = await rt.create({ id: 'sbx_orphantest1', image: 'busybox', isolation: 'namespaces', limits: { cpus: 1, memoryMb: 64, pids: 32, diskMb: 16 }, labels: {} });
    assert.ok((await rt.list()).some((o) => o.id === orphan.id));
    const m = makeManager(policy('version: 1\n'), store, rt);
    await m.start();
    assert.ok(!(await rt.list()).some((o) => o.id === orphan.id), 'orphan survived start-up');
    assert.equal((await rt.status(orphan)).alive, false);
    await m.close();
    store.close();
  });

  test('a new manager takes over what the last one left: live sandboxes adopted (a frozen one stays paused until used, old exec leaves keep their jobs), dead ones runtime_lost, a create in flight create_failed, running execs lost', async () => {
    const store = Store.open(join(dir, 'adopt.db'));
    // Sandboxes outlive the manager that made them: whatever happens, none is left running.
    const cleanup = newRuntime();
    try {
      const p = policy('version: 1\nprofiles:\n  nap: { pauseAfter: 1s }\n');
      const first = makeManager(p, store);
      await first.start();
      const keep = await first.create({}, caller);
      const nap = await first.create({ profile: 'nap' }, caller);
      const dies = await first.create({}, caller);
      // A background job left by the first exec, in that exec's leaf cgroup.
      const job = (await first.exec(keep.id, { cmd: ['sh', '-c', 'sleep 1000 >/dev/null 2>&1 & echo "$! $(cut -d" " -f22 /proc/$!/stat)"'] }, caller)).stdout.trim();
      assert.match(job, /^\d+ \d+$/);
      await until(async () => first.isPaused(nap.id) && (await frozen(nap.id)));
      await first.close({ sandboxes: 'leave' });
      // What a daemon that died (kill -9) leaves: a sandbox that died meanwhile, a row mid-create, an exec mid-run.
      process.kill((store.getSandbox(dies.id)?.runtimeData as { pid: number }).pid, 'SIGKILL');
      const template = store.getSandbox(keep.id);
      assert.ok(template);
      store.insertSandbox({ ...template.sandbox, id: 'sbx_midcreate001', state: 'creating' }, { ...template.spec, id: 'sbx_midcreate001' }, null);
      store.insertExec({ id: 'exe_midrun', sandboxId: keep.id, tenant: 'default', cmd: ['sleep', '60'], startedAt: new Date().toISOString() });

      const second = makeManager(p, store);
      await second.start();
      // Before the new reaper's first pass (which would freeze it again for being idle): known as paused from the start.
      assert.equal(second.isPaused(nap.id), true, 'a sandbox the last manager froze is not known as paused');
      assert.equal((await second.exec(nap.id, { cmd: ['echo', 'awake'] }, caller)).stdout, 'awake\n');
      assert.equal(second.get(keep.id, caller).state, 'running');
      // The first exec here times out, and the new exec's leaf must not be the one that holds the old job.
      const late = await second.exec(keep.id, { cmd: ['sleep', '5'], timeoutMs: 300 }, caller);
      assert.equal(late.timedOut, true);
      const [pid, start] = job.split(' ');
      assert.equal((await second.exec(keep.id, { cmd: ['sh', '-c', `cut -d" " -f22 /proc/${pid}/stat`] }, caller)).stdout.trim(), start, 'the old background job did not survive the takeover');
      assert.deepEqual([second.get(dies.id, caller).state, second.get(dies.id, caller).endReason], ['failed', 'runtime_lost']);
      assert.equal(cgroupExists(dies.id), false, 'the dead sandbox\'s cgroup was not removed');
      assert.deepEqual([second.get('sbx_midcreate001', caller).state, second.get('sbx_midcreate001', caller).endReason], ['failed', 'create_failed']);
      const lost = second.execHistory(keep.id, caller).find((e) => e.execId === 'exe_midrun');
      assert.equal(lost?.state, 'lost');
      assert.equal(lost?.exitCode, null);
      await second.delete(keep.id, caller);
      await second.delete(nap.id, caller);
      await second.close();
      assert.deepEqual(await cleanup.list(), [], 'sandboxes left behind');
    } finally {
      for (const o of await cleanup.list()) await cleanup.reap(o.id);
      store.close();
    }
  });
});

/** Whether a sandbox's cgroup directory exists under any daemon scope (v2 or v1 layout). */
function cgroupExists(id: string): boolean {
  for (const base of ['/sys/fs/cgroup/agentbox', '/sys/fs/cgroup/pids/agentbox']) {
    let scopes: string[] = [];
    try {
      scopes = readdirSync(base);
    } catch {
      continue;
    }
    if (scopes.some((scope) => existsSync(join(base, scope, id)))) return true;
  }
  return false;
}

/** Whether the local runtime's freezer holds the sandbox (cgroup v1 freezer.state, v2 cgroup.events). */
async function frozen(id: string): Promise<boolean> {
  for (const base of ['/sys/fs/cgroup/freezer/agentbox', '/sys/fs/cgroup/agentbox']) {
    let scopes: string[] = [];
    try {
      scopes = readdirSync(base);
    } catch {
      continue;
    }
    for (const scope of scopes) {
      const dir = join(base, scope, id);
      if (!existsSync(dir)) continue;
      if (existsSync(join(dir, 'freezer.state'))) return readFileSync(join(dir, 'freezer.state'), 'utf8').trim() === 'FROZEN';
      return /^frozen 1$/m.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'));
    }
  }
  throw new Error(`no freezer cgroup for ${id}`);
}
