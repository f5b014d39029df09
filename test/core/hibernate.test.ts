/**
 * pauseAfter mode hibernate, through a real `agentbox serve` and the SDK: an idle gVisor sandbox's
 * memory goes to disk (its container stops), the next exec or file call brings it back where it was
 * (a shell counting in memory goes on from its number, same pid) and the exec says how long that
 * took (`wokeMs`); the sandbox shows `paused: hibernated` meanwhile; a daemon killed with -9 while it
 * is hibernated is followed by one that knows it is, and wakes it. Profiles asking for hibernation
 * where it cannot be done are refused at create with the reason. A fork with memory gives children
 * that go on with the parent's running processes. Nothing is left on the host.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { BadRequestError } from '../../src/contract/errors.js';
import { resolvePaths, VERSION } from '../../src/core/config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { DiskStore } from '../../src/storage/disk-store.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { ServeProcesses } from '../helpers/serve-process.js';

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for: ${what}`);
    await sleep(100);
  }
}

describe('hibernating idle sandboxes', async () => {
  const images = await testImages();
  const probe = new DockerRuntime({ disks: scratchDiskStore(), images, homeTag: 'probe', version: VERSION, agentDir: mkdtempSync(join(tmpdir(), 'ab-hib-probe-')) });
  const up = await probe.probe();
  const can = up.ok ? await probe.canHibernate({ isolation: 'gvisor', network: false, volumes: false }) : { ok: false, reason: up.reason };
  await probe.close();
  const skip = can.ok ? false : `gVisor sandboxes cannot be hibernated here: ${can.reason}`;

  test('an idle gVisor sandbox is hibernated and woken by the next call, across a daemon kill -9; impossible profiles are refused', { skip }, async () => {
    const home = mkdtempSync(join(tmpdir(), 'agentbox-hibernate-'));
    const policy = join(home, 'policy.yaml');
    writeFileSync(
      policy,
      [
        'version: 1',
        'defaults:',
        '  runtime: docker',
        '  isolation: gvisor',
        '  limits: { memoryMb: 256, pids: 64, diskMb: 16 }',
        'profiles:',
        '  nap: { pauseAfter: { idle: 1s, mode: hibernate } }',
        '  nap-runc: { isolation: container, pauseAfter: { idle: 1s, mode: hibernate } }',
        '  nap-local: { runtime: local, isolation: namespaces, pauseAfter: { idle: 1s, mode: hibernate } }',
        '  nap-net: { egress: { mode: allowlist, allow: [example.com] }, pauseAfter: { idle: 1s, mode: hibernate } }',
        '  doze: { pauseAfter: 1s }',
        '  runc: { isolation: container }',
        '',
      ].join('\n'),
    );
    const env = { ...process.env, AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_POLICY: policy, AGENTBOX_LOG_LEVEL: 'warn' };
    const serve = new ServeProcesses({ home, env, runtime: 'docker' });
    const client = serve.client;
    const paths = resolvePaths(env);
    const disks = new DiskStore({ dir: paths.storage });
    const rt = new DockerRuntime({ disks, images, homeTag: paths.homeTag, version: VERSION });
    await serve.around(rt, disks, async () => {
      const first = await serve.start();
      for (const profile of ['nap-runc', 'nap-local', 'nap-net']) {
        await assert.rejects(client.create({ profile }), (err: unknown) => err instanceof BadRequestError && /hibernat/.test(err.message) && err.hint !== undefined, `profile ${profile} was not refused`);
      }
      // Volumes are shared with other sandboxes, which may listen on a Unix socket in them.
      await client.createVolume('shared', { sizeMb: 16 });
      await assert.rejects(client.create({ profile: 'nap', volumes: [{ name: 'shared', target: '/data' }] }), (err: unknown) => err instanceof BadRequestError && /volume/.test(err.message));
      await client.deleteVolume('shared');
      assert.deepEqual((await client.list()).filter((s) => s.state === 'running'), [], 'a refused create left a sandbox');

      const sb = await client.create({ profile: 'nap' });
      const doze = await client.create({ profile: 'doze' });
      await client.exec(sb.id, { cmd: ['sh', '-c', "sh -c 'i=0; while :; do i=$((i+1)); echo $i > /workspace/count.new; mv /workspace/count.new /workspace/count; sleep 0.1; done' >/dev/null 2>&1 & echo $! > /workspace/pid"] });
      const pid = (await client.exec(sb.id, { cmd: ['cat', '/workspace/pid'] })).stdout.trim();
      await until('the sandbox is hibernated', async () => (await client.get(sb.id)).paused === 'hibernated');
      await until('the freeze-only sandbox is frozen', async () => (await client.get(doze.id)).paused === 'frozen');
      const before = Number(readWorkspaceCount(home, sb.id));
      // Its container stopped: no process of it runs on the host, its memory is free.
      assert.equal(await containerRunning(sb.id), false, 'the hibernated sandbox\'s container still runs');
      await sleep(700);
      const woke = await client.exec(sb.id, { cmd: ['sh', '-c', `cat /workspace/count; kill -0 ${pid} && echo alive`] });
      assert.ok(typeof woke.wokeMs === 'number' && woke.wokeMs > 0, `wokeMs is ${woke.wokeMs}`);
      const [after, alive] = woke.stdout.trim().split('\n');
      assert.equal(alive, 'alive', 'the counting process did not come back');
      assert.ok(Number(after) >= before && Number(after) < before + 30, `the counter went from ${before} to ${after}: not where it stopped`);
      assert.equal((await client.get(sb.id)).paused, undefined);
      // A second exec finds it awake: no wake time.
      assert.equal((await client.exec(sb.id, { cmd: ['true'] })).wokeMs, undefined);

      // A file call wakes it too.
      await until('hibernated again', async () => (await client.get(sb.id)).paused === 'hibernated');
      assert.equal((await text(await client.readFile(sb.id, '/workspace/pid'))).trim(), pid);
      assert.equal((await client.get(sb.id)).paused, undefined);

      // kill -9 while hibernated: the next daemon knows, before anything calls it.
      await until('hibernated once more', async () => (await client.get(sb.id)).paused === 'hibernated');
      await serve.kill9(first);
      await serve.start();
      const adopted = await client.get(sb.id);
      assert.deepEqual([adopted.state, adopted.paused], ['running', 'hibernated']);
      const again = await client.exec(sb.id, { cmd: ['sh', '-c', `kill -0 ${pid} && echo alive`] });
      assert.equal(again.stdout, 'alive\n');
      assert.ok((again.wokeMs ?? 0) > 0);

      // Fork with memory: each child goes on with the parent's running counter (same pid, its number
      // on from the parent's), then counts on its own disk; the parent keeps running.
      const parent = await client.create({});
      await client.exec(parent.id, { cmd: ['sh', '-c', "sh -c 'i=0; while :; do i=$((i+1)); echo $i > /workspace/count.new; mv /workspace/count.new /workspace/count; sleep 0.1; done' >/dev/null 2>&1 & echo $! > /workspace/pid"] });
      await until('the parent counts', async () => Number((await client.exec(parent.id, { cmd: ['cat', '/workspace/count'] })).stdout) > 5);
      const parentPid = (await client.exec(parent.id, { cmd: ['cat', '/workspace/pid'] })).stdout.trim();
      const atFork = Number((await client.exec(parent.id, { cmd: ['cat', '/workspace/count'] })).stdout);
      const kids = await client.fork(parent.id, { count: 2, memory: true });
      assert.equal(kids.length, 2);
      for (const kid of kids) {
        const r = await client.exec(kid.id, { cmd: ['sh', '-c', `kill -0 ${parentPid} && echo alive; cat /workspace/count`] });
        const [alive, n] = r.stdout.trim().split('\n');
        assert.equal(alive, 'alive', `child ${kid.id} does not run the parent's counter`);
        assert.ok(Number(n) >= atFork, `child ${kid.id} counted from ${n}, the parent was at ${atFork}`);
      }
      // Independent from here: a file written in one child is in neither the other nor the parent.
      await client.exec(kids[0]!.id, { cmd: ['sh', '-c', 'echo mine > /workspace/only-here'] });
      for (const other of [kids[1]!.id, parent.id]) assert.equal((await client.exec(other, { cmd: ['test', '-e', '/workspace/only-here'] })).exitCode, 1);
      assert.equal((await client.exec(parent.id, { cmd: ['sh', '-c', `kill -0 ${parentPid} && echo alive`] })).stdout, 'alive\n', 'the parent lost its process');
      // Where memory cannot be forked: a clear refusal, and no child.
      const runc = await client.create({ profile: 'runc' });
      await assert.rejects(client.fork(runc.id, { memory: true }), (err: unknown) => err instanceof BadRequestError && /memory/.test(err.message));
      for (const x of [parent.id, runc.id, ...kids.map((k) => k.id)]) await client.delete(x);

      const containers = await Promise.all([sb.id, doze.id].map((id) => containerIdOf(id)));
      await client.delete(sb.id);
      await client.delete(doze.id);
      assert.deepEqual(await rt.list(), [], 'containers left behind');
      assert.deepEqual(runscRecords(containers), [], 'runsc records left behind');
    });
  });

  /** The sandbox's /workspace/count as the host sees it on its disk (readable while it is hibernated). */
  function readWorkspaceCount(home: string, id: string): string {
    return readFileSync(join(resolvePaths({ AGENTBOX_HOME: home }).storage, 'mnt', id, 'workspace', 'count'), 'utf8');
  }

  async function docker(args: string[]): Promise<string> {
    return new Promise<string>((resolve) => {
      const p = spawn('docker', args);
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.on('close', () => resolve(out.trim()));
    });
  }

  async function containerRunning(id: string): Promise<boolean> {
    return (await docker(['ps', '-q', '--filter', `label=agentbox.id=${id}`])) !== '';
  }

  async function containerIdOf(id: string): Promise<string> {
    return docker(['inspect', '-f', '{{.Id}}', `agentbox-${id}`]);
  }

  /** runsc's records of these containers (a hibernation, or removing a frozen one, could leave them). */
  function runscRecords(containerIds: string[]): string[] {
    const root = '/run/docker/runtime-runc/moby';
    if (!existsSync(root)) return [];
    return readdirSync(root).filter((f) => f.endsWith('.state') && containerIds.some((c) => c !== '' && f.startsWith(c)));
  }
});
