/**
 * The docker runtime across a daemon crash: containers outlive a daemon killed with -9; the next
 * daemon keeps the sandboxes its store knows (they still work) and reaps the ones it does not
 * (warm-pool members, which belonged to nobody yet).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { cliEntry, resolvePaths, VERSION } from '../../src/core/config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { AgentboxClient } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

async function until(fn: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(100);
  }
}

describe('docker sandboxes across a daemon crash', async () => {
  const images = await testImages();
  const up = (await new DockerRuntime({ images, homeTag: 'probe', version: VERSION }).probe()).ok;

  test('kill -9: known sandboxes survive and still work, pool members are reaped', { skip: up ? false : 'dockerd is not reachable (scripts/start-dockerd.sh)' }, async () => {
    const home = mkdtempSync(join(tmpdir(), 'agentbox-dcrash-'));
    const policy = join(home, 'policy.yaml');
    writeFileSync(policy, 'version: 1\ndefaults:\n  runtime: docker\n  limits: { memoryMb: 128, pids: 64, diskMb: 16 }\npools:\n  - { image: busybox, size: 2 }\n');
    const env = { ...process.env, AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_POLICY: policy, AGENTBOX_LOG_LEVEL: 'warn' };
    const client = new AgentboxClient({ url: `unix:${join(home, 'agentbox.sock')}` });
    const rt = new DockerRuntime({ images, homeTag: resolvePaths(env).homeTag, version: VERSION });
    const start = async (): Promise<ChildProcess> => {
      const child = spawn(process.execPath, [cliEntry(), 'serve', '--socket-only'], { env, stdio: 'ignore' });
      await until(async () => (await client.health().catch(() => undefined))?.checks['runtime.docker']?.ok === true);
      return child;
    };
    let second: ChildProcess | undefined;
    try {
      const first = await start();
      const sb = await client.create();
      await client.exec(sb.id, { cmd: ['sh', '-c', 'echo survived > /workspace/mark'] });
      await until(async () => (await rt.list()).filter((o) => o.pooled).length === 2);
      const oldPool = (await rt.list()).filter((o) => o.pooled).map((o) => o.id);
      first.kill('SIGKILL');
      await new Promise((resolve) => first.once('exit', resolve));
      assert.equal((await rt.list()).length, 3, 'containers should outlive the daemon');

      second = await start();
      const after = await client.get(sb.id);
      assert.equal(after.state, 'running');
      assert.equal((await client.exec(sb.id, { cmd: ['cat', '/workspace/mark'] })).stdout, 'survived\n');
      // The old pool members were nobody's: reaped at start; the new daemon fills its own pool.
      const left = (await rt.list()).map((o) => o.id);
      assert.deepEqual(oldPool.filter((id) => left.includes(id)), [], 'the crashed daemon\'s pool members were not reaped');
      await until(async () => (await rt.list()).filter((o) => o.pooled).length === 2);
      await client.delete(sb.id);
    } finally {
      if (second) {
        second.kill('SIGTERM');
        await new Promise((resolve) => second!.once('exit', resolve));
      }
      for (const o of await rt.list()) await rt.reap(o.id);
      rmSync(home, { recursive: true, force: true });
    }
    assert.deepEqual(await rt.list(), [], 'containers left behind');
  });
});
