/** A docker runtime with no dockerd behind its socket answers quickly and with typed errors, never hangs. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { RuntimeUnavailableError } from '../../src/contract/errors.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const dir = mkdtempSync(join(tmpdir(), 'agentbox-docker-down-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const images = { resolve: (name: string) => ({ info: { name, id: 'abc123', createdAt: new Date(0).toISOString() }, rootfs: dir }) };
const spec = { id: 'sbx_down1', image: 'busybox', isolation: 'container' as const, limits: { cpus: 1, memoryMb: 64, pids: 32, diskMb: 8 }, labels: {} };

test('nothing listens on the socket: probe says so quickly, create rejects with runtime_unavailable', async () => {
  const rt = new DockerRuntime({ disks: scratchDiskStore(), images, homeTag: 'test-down', version: 'test', docker: { socketPath: join(dir, 'no-dockerd.sock') } });
  const t0 = Date.now();
  const probe = await rt.probe();
  assert.equal(probe.ok, false);
  assert.match(probe.reason ?? '', /dockerd is not reachable at .*no-dockerd\.sock/);
  assert.match(probe.hint ?? '', /start-dockerd/);
  assert.ok(Date.now() - t0 < 5000, `probe took ${Date.now() - t0} ms`);
  await assert.rejects(rt.create(spec), RuntimeUnavailableError);
  await assert.rejects(rt.list(), RuntimeUnavailableError);
  await rt.close();
});

test('a socket that accepts but never answers: probe gives up within its timeout', async () => {
  const sock = join(dir, 'silent.sock');
  const held: import('node:net').Socket[] = [];
  const server: Server = createServer((s) => held.push(s));
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  try {
    const rt = new DockerRuntime({ disks: scratchDiskStore(), images, homeTag: 'test-down', version: 'test', docker: { socketPath: sock }, probeTimeoutMs: 1000 });
    const t0 = Date.now();
    const probe = await rt.probe();
    assert.equal(probe.ok, false);
    assert.match(probe.reason ?? '', /not reachable/);
    assert.ok(Date.now() - t0 < 5000, `probe took ${Date.now() - t0} ms`);
    await rt.close();
  } finally {
    for (const s of held) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
