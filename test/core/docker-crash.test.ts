/**
 * The docker runtime across a daemon crash: containers outlive a daemon killed with -9; the next
 * daemon keeps the sandboxes its store knows (they still work) and reaps the ones it does not
 * (warm-pool members, which belonged to nobody yet). A survivor with egress gets its proxy back.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { cliEntry, resolvePaths, VERSION } from '../../src/core/config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { AgentboxClient } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

async function until(fn: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(100);
  }
}

describe('docker sandboxes across a daemon crash', async () => {
  const images = await testImages();
  const up = (await new DockerRuntime({ disks: scratchDiskStore(), images, homeTag: 'probe', version: VERSION }).probe()).ok;

  test('kill -9: known sandboxes survive and still work, pool members are reaped', { skip: up ? false : 'dockerd is not reachable (scripts/start-dockerd.sh)' }, async () => {
    const home = mkdtempSync(join(tmpdir(), 'agentbox-dcrash-'));
    const policy = join(home, 'policy.yaml');
    writeFileSync(policy, 'version: 1\ndefaults:\n  runtime: docker\n  limits: { memoryMb: 128, pids: 64, diskMb: 16 }\npools:\n  - { image: busybox, size: 2 }\negress:\n  allowRanges: [127.0.0.1/32]\n');
    // A site on the host's loopback, for a sandbox whose egress proxy must come back with the new daemon.
    const site = createServer((_req, res) => res.end('site-ok\n'));
    await new Promise<void>((r) => site.listen(0, '127.0.0.1', r));
    const sitePort = (site.address() as AddressInfo).port;
    writeFileSync(join(home, 'hosts'), '127.0.0.1 site.crash.test\n');
    const env = { ...process.env, AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_POLICY: policy, AGENTBOX_LOG_LEVEL: 'warn', AGENTBOX_EGRESS_HOSTS: join(home, 'hosts') };
    const fetchSite = async (id: string): Promise<string> =>
      (await client.exec(id, { cmd: ['wget', '-q', '-O', '-', `http://site.crash.test:${sitePort}/`], timeoutMs: 20_000 })).stdout;
    const client = new AgentboxClient({ url: `unix:${join(home, 'agentbox.sock')}` });
    const rt = new DockerRuntime({ disks: scratchDiskStore(), images, homeTag: resolvePaths(env).homeTag, version: VERSION });
    // Every daemon this test starts, so that a failing assertion cannot leave one running.
    const daemons: ChildProcess[] = [];
    const start = async (): Promise<ChildProcess> => {
      const child = spawn(process.execPath, [cliEntry(), 'serve', '--socket-only'], { env, stdio: 'ignore' });
      daemons.push(child);
      await until(async () => (await client.health().catch(() => undefined))?.checks?.['runtime.docker']?.ok === true);
      return child;
    };
    try {
      const first = await start();
      const sb = await client.create();
      await client.exec(sb.id, { cmd: ['sh', '-c', 'echo survived > /workspace/mark'] });
      const online = await client.create({ egress: { mode: 'allowlist', allow: [`site.crash.test:${sitePort}`] } });
      assert.equal(await fetchSite(online.id), 'site-ok\n');
      await until(async () => (await rt.list()).filter((o) => o.pooled).length === 2);
      const oldPool = (await rt.list()).filter((o) => o.pooled).map((o) => o.id);
      first.kill('SIGKILL');
      await new Promise((resolve) => first.once('exit', resolve));
      assert.equal((await rt.list()).length, 4, 'containers should outlive the daemon');

      await start();
      const after = await client.get(sb.id);
      assert.equal(after.state, 'running');
      assert.equal((await client.exec(sb.id, { cmd: ['cat', '/workspace/mark'] })).stdout, 'survived\n');
      assert.equal(await fetchSite(online.id), 'site-ok\n', 'the surviving sandbox lost its egress proxy');
      assert.equal((await client.egressLog(online.id)).log.length, 2, 'the egress log does not span the restart');
      // The old pool members were nobody's: reaped at start; the new daemon fills its own pool.
      const left = (await rt.list()).map((o) => o.id);
      assert.deepEqual(oldPool.filter((id) => left.includes(id)), [], 'the crashed daemon\'s pool members were not reaped');
      await until(async () => (await rt.list()).filter((o) => o.pooled).length === 2);
      await client.delete(sb.id);
      await client.delete(online.id);
    } finally {
      site.close();
      for (const d of daemons.filter((c) => c.exitCode === null && c.signalCode === null)) {
        d.kill('SIGTERM');
        await new Promise((resolve) => d.once('exit', resolve));
      }
      for (const o of await rt.list()) await rt.reap(o.id);
      rmSync(home, { recursive: true, force: true });
    }
    assert.deepEqual(await rt.list(), [], 'containers left behind');
  });
});
