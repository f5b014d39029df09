/**
 * The microvm runtime through a real `agentbox serve` and the SDK: a sandbox with a kernel of its
 * own, snapshot and restore (on microvm and on local), fork, a daemon killed with -9 whose sandbox
 * (files and a running process) the next daemon adopts, a VM killed from outside ending as
 * runtime_lost, and nothing left behind (no QEMU, no disk, no run directory).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { resolvePaths } from '../../src/core/config.js';
import { MicroVmRuntime } from '../../src/runtime/microvm/microvm-runtime.js';
import { QEMU_BINARY } from '../../src/runtime/microvm/vm.js';
import { RUN_DIR } from '../../src/runtime/staged-binary.js';
import { DiskStore } from '../../src/storage/disk-store.js';
import { mountTable } from '../../src/storage/host-tools.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { ServeProcesses } from '../helpers/serve-process.js';

const qemu = spawnSync(QEMU_BINARY, ['--version']);
const skip = qemu.error ? `${QEMU_BINARY} is not installed` : process.getuid?.() !== 0 ? 'needs root' : false;

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for: ${what}`);
    await sleep(100);
  }
}

/** QEMU processes of this home (their -name carries its tag). */
function qemusOf(homeTag: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(`agentbox-vm.${homeTag}.`);
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe('the microvm runtime through the daemon', { skip }, async () => {
  const images = await testImages();

  test('a kernel of its own; snapshot, restore (microvm and local), fork; kill -9 of the daemon adopted; a VM killed from outside is runtime_lost; nothing left', async () => {
    const home = mkdtempSync(join(tmpdir(), 'agentbox-microvm-'));
    const policy = join(home, 'policy.yaml');
    writeFileSync(policy, 'version: 1\ndefaults:\n  runtime: microvm\n  limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 256 }\n');
    const env = { ...process.env, AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_POLICY: policy, AGENTBOX_LOG_LEVEL: 'warn', AGENTBOX_MICROVM_ACCEL: 'tcg' };
    const serve = new ServeProcesses({ home, env, runtime: 'microvm' });
    const client = serve.client;
    const paths = resolvePaths(env);
    const disks = new DiskStore({ dir: paths.storage });
    const rt = new MicroVmRuntime({ images, homeTag: paths.homeTag, dir: join(home, 'microvm'), runRoot: join(RUN_DIR, `vm-${paths.homeTag}`), disks });
    // What an older agentbox left: a guest build and a template of another guest (its disk beside it).
    const oldGuest = join(home, 'microvm', 'guest', 'guest-0123456789abcdef');
    const oldTemplate = join(home, 'microvm', 'templates', 'stale0template');
    mkdirSync(oldGuest, { recursive: true });
    mkdirSync(oldTemplate, { recursive: true });
    writeFileSync(join(home, 'stale-template.img'), 'disk');
    writeFileSync(join(oldTemplate, 'ready.json'), JSON.stringify({ state: join(oldTemplate, 'state.bin'), disk: join(home, 'stale-template.img'), guest: '0123456789abcdef', rootDisk: '/nonexistent' }));
    await serve.around(rt, disks, async () => {
      let daemon = await serve.start();
      const sb = await client.create({});
      assert.deepEqual([existsSync(oldGuest), existsSync(oldTemplate), existsSync(join(home, 'stale-template.img'))], [false, false, false], 'an old guest or template was not pruned');
      assert.deepEqual([sb.runtime, sb.isolation], ['microvm', 'vm']);
      // QEMU itself is bounded on the host: it runs in a cgroup of the sandbox's own.
      const qemuOf = (id: string): number | undefined => qemusOf(paths.homeTag).find((p) => readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(id));
      assert.match(readFileSync(`/proc/${qemuOf(sb.id)}/cgroup`, 'utf8'), new RegExp(`agentbox-vm/${paths.homeTag}/${sb.id}/`), 'QEMU is not in the sandbox\'s host cgroup');
      const first = await client.exec(sb.id, { cmd: ['sh', '-c', 'uname -r; head -c 3000000 /dev/urandom > /workspace/data; sha256sum /workspace/data | cut -c1-64; sleep 1000 >/dev/null 2>&1 & echo $!'] });
      const [kernel, sum, pid] = first.stdout.trim().split('\n');
      assert.notEqual(kernel, release(), 'the sandbox runs the host\'s kernel');
      const sumOf = async (id: string): Promise<string> => (await client.exec(id, { cmd: ['sh', '-c', 'sha256sum /workspace/data | cut -c1-64'] })).stdout.trim();

      // The first create of a kind saved its template: the next ones are restored from it (QEMU -incoming),
      // each with fresh entropy and the host's clock, never the template's or each other's.
      const clones = [await client.create({}), await client.create({})];
      const seen = new Set<string>();
      for (const c of clones) {
        const q = qemusOf(paths.homeTag).find((p) => readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(c.id));
        assert.ok(q && readFileSync(`/proc/${q}/cmdline`, 'latin1').split('\0').includes('-incoming'), `sandbox ${c.id} booted cold, not from the template`);
        const r = await client.exec(c.id, { cmd: ['sh', '-c', 'head -c 16 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; date +%s; test -e /workspace/data && echo LEAK'] });
        const [random, now] = r.stdout.trim().split('\n');
        assert.ok(random && !seen.has(random), `two clones drew the same random bytes: ${random}`);
        seen.add(random);
        assert.ok(Math.abs(Number(now) - Date.now() / 1000) < 10, `a clone's clock says ${now}, the host's ${Math.round(Date.now() / 1000)}`);
        assert.doesNotMatch(r.stdout, /LEAK/, 'a clone has another sandbox\'s files');
        await client.delete(c.id);
      }

      // A damaged template is dropped and the create boots instead; the next one is restored again.
      const templates = join(home, 'microvm', 'templates');
      for (const k of readdirSync(templates)) writeFileSync(join(templates, k, 'state.bin'), 'not a migration stream');
      const afterDamage = await client.create({});
      assert.equal((await client.exec(afterDamage.id, { cmd: ['echo', 'booted'] })).stdout, 'booted\n');
      const again = await client.create({});
      const q = qemusOf(paths.homeTag).find((p) => readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(again.id));
      assert.ok(q && readFileSync(`/proc/${q}/cmdline`, 'latin1').split('\0').includes('-incoming'), 'no new template after the damaged one was dropped');
      assert.equal((await client.exec(again.id, { cmd: ['echo', 'restored'] })).stdout, 'restored\n');
      for (const x of [afterDamage, again]) await client.delete(x.id);

      const snap = await client.snapshot(sb.id);
      for (const runtime of ['microvm', 'local'] as const) {
        const r = await client.create({ snapshot: snap.id, runtime });
        assert.equal(await sumOf(r.id), sum, `restored on ${runtime}`);
        await client.delete(r.id);
      }
      const children = await client.fork(sb.id, { count: 2 });
      for (const c of children) assert.equal(await sumOf(c.id), sum, `child ${c.id}`);
      await client.exec(children[0]!.id, { cmd: ['sh', '-c', 'echo child > /workspace/data'] });
      assert.equal(await sumOf(sb.id), sum, 'a child reached into its parent');
      for (const c of children) await client.delete(c.id);

      // A fork with memory: the children go on with the parent's running processes (its `sleep`),
      // each with entropy of its own; the parent goes on too, and no memory image is left behind.
      const memChildren = await client.fork(sb.id, { count: 2, memory: true });
      const draws = new Set<string>();
      for (const c of memChildren) {
        const r = await client.exec(c.id, { cmd: ['sh', '-c', `kill -0 ${pid} && echo alive; head -c 16 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; date +%s`] });
        const [alive, random, now] = r.stdout.trim().split('\n');
        assert.equal(alive, 'alive', `child ${c.id} lacks the parent's process: ${r.stdout} ${r.stderr}`);
        assert.ok(random && !draws.has(random), `two memory children drew the same random bytes: ${random}`);
        draws.add(random);
        assert.ok(Math.abs(Number(now) - Date.now() / 1000) < 10, `a memory child's clock says ${now}`);
        const q = qemuOf(c.id);
        assert.ok(q && readFileSync(`/proc/${q}/cmdline`, 'latin1').split('\0').includes('-incoming'), `child ${c.id} booted instead of starting from the parent's memory`);
      }
      await client.exec(memChildren[0]!.id, { cmd: ['kill', pid!] });
      assert.equal((await client.exec(sb.id, { cmd: ['sh', '-c', `kill -0 ${pid} && echo alive`] })).stdout, 'alive\n', 'a memory child reached into its parent');
      for (const c of memChildren) await client.delete(c.id);
      const memoryLeft = join(home, 'microvm', 'memory', paths.homeTag);
      assert.deepEqual(existsSync(memoryLeft) ? readdirSync(memoryLeft) : [], [], 'memory images left after the fork');

      // A snapshot with its memory: each sandbox restored from it goes on with the processes (as often
      // as asked), and only as the same kind of sandbox; a damaged memory file is refused before anything starts.
      const memSnap = await client.snapshot(sb.id, { memory: true });
      assert.equal(memSnap.memory, true);
      assert.deepEqual(existsSync(memoryLeft) ? readdirSync(memoryLeft) : [], [], 'the snapshot left its memory image behind');
      for (let i = 0; i < 2; i++) {
        const r = await client.create({ snapshot: memSnap.id });
        const out = await client.exec(r.id, { cmd: ['sh', '-c', `kill -0 ${pid} && echo alive; sha256sum /workspace/data | cut -c1-64`] });
        assert.equal(out.stdout, `alive\n${sum}\n`, `restore ${i}: ${out.stderr}`);
        await client.delete(r.id);
      }
      await assert.rejects(client.create({ snapshot: memSnap.id, runtime: 'local' }), (e: { code?: string }) => e.code === 'conflict');
      await assert.rejects(client.create({ snapshot: memSnap.id, limits: { memoryMb: 256 } }), (e: { code?: string }) => e.code === 'conflict');
      const stateFile = join(disks.storeDir, 'snapshots', memSnap.id, 'memory', 'state.bin');
      writeFileSync(stateFile, Buffer.from('x'), { flag: 'r+' });
      await assert.rejects(client.create({ snapshot: memSnap.id }), (e: { code?: string; message?: string }) => e.code === 'conflict' && /memory file state\.bin/.test(e.message ?? ''));
      await client.deleteSnapshot(memSnap.id);
      // A runtime that cannot save memory refuses with the reason, and takes no snapshot.
      const onLocal = await client.create({ runtime: 'local' });
      await assert.rejects(client.snapshot(onLocal.id, { memory: true }), (e: { code?: string }) => e.code === 'bad_request');
      await client.delete(onLocal.id);
      assert.deepEqual((await client.listSnapshots()).map((x) => x.id), [snap.id]);

      // kill -9: the VM runs on, and the next daemon adopts it: same files, same process.
      await serve.kill9(daemon);
      daemon = await serve.start();
      const after = await client.exec(sb.id, { cmd: ['sh', '-c', `sha256sum /workspace/data | cut -c1-64; kill -0 ${pid} && echo alive`] });
      assert.equal(after.stdout, `${sum}\nalive\n`, after.stderr);

      // A VM killed from outside: the sandbox ends as runtime_lost, and its disk and directory go.
      const victim = await client.create({});
      const qemuPid = qemusOf(paths.homeTag).find((p) => readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(victim.id));
      assert.ok(qemuPid, 'no QEMU process for the sandbox');
      process.kill(qemuPid, 'SIGKILL');
      await until('the sandbox ends as runtime_lost', async () => (await client.get(victim.id)).endReason === 'runtime_lost');
      await until('its run directory goes', () => !existsSync(join(RUN_DIR, `vm-${paths.homeTag}`, victim.id)));

      await client.delete(sb.id);
      await client.delete(victim.id);
      await client.deleteSnapshot(snap.id);
      await until('no QEMU of this home is left', () => qemusOf(paths.homeTag).length === 0);
      assert.deepEqual(mountTable().filter((m) => m.point.startsWith(join(paths.storage, 'mnt'))), [], 'disk mounts left');
      assert.deepEqual(existsSync(join(RUN_DIR, `vm-${paths.homeTag}`)) ? readdirSync(join(RUN_DIR, `vm-${paths.homeTag}`)) : [], [], 'run directories left');
      const cgroupsLeft = ['', 'memory', 'pids', 'cpu'].map((c) => join('/sys/fs/cgroup', c, 'agentbox-vm', paths.homeTag)).filter((d) => existsSync(d) && readdirSync(d, { withFileTypes: true }).some((e) => e.isDirectory()));
      assert.deepEqual(cgroupsLeft, [], 'host cgroups of the VMs left');
    });
  });
});
