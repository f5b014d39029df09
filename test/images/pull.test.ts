/**
 * `image pull` against a real registry: Debian's docker-registry (the CNCF distribution server)
 * on a loopback port, filled by pushing our own busybox image through the Engine. The pulled
 * image then runs in a sandbox.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import Docker from 'dockerode';
import { VERSION, helperPath } from '../../src/core/config.js';
import { BadRequestError, ForbiddenError, NotFoundError } from '../../src/contract/errors.js';
import { startDaemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient } from '../../src/sdk/client.js';
import { ImageStore } from '../../src/images/image-store.js';
import { defaultImageName, pullImage } from '../../src/images/pull.js';
import type { Progress } from '../../src/images/run-tool.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { imageRef } from '../../src/runtime/docker/images.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import { collect } from '../helpers/collect.js';
import { testImages } from '../helpers/images.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const REGISTRY = '/usr/bin/docker-registry';
const homeTag = `test-pull-${process.pid}`;

async function skipReason(): Promise<string | false> {
  if (!existsSync(REGISTRY)) return 'docker-registry is not installed (scripts/start-dockerd.sh installs it)';
  const probe = await new DockerRuntime({ disks: scratchDiskStore(), images: { resolve: () => { throw new Error('unused'); } }, homeTag, version: VERSION }).probe();
  return probe.ok ? false : `${probe.reason} (${probe.hint})`;
}

function status(url: string): Promise<number> {
  return new Promise((resolve) => {
    get(url, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', () => resolve(0));
  });
}

function follow(docker: Docker, stream: NodeJS.ReadableStream): Promise<void> {
  return new Promise((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, events: { error?: string }[]) => {
      const failed = err?.message ?? events.find((e) => e.error)?.error;
      if (failed) reject(new Error(failed));
      else resolve();
    });
  });
}

describe('image pull', { skip: await skipReason() }, () => {
  const docker = new Docker();
  let dir: string;
  let registry: ChildProcess;
  let repo: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ab-pull-'));
    const port = 20000 + (process.pid % 20000);
    writeFileSync(
      join(dir, 'config.yml'),
      `version: 0.1\nlog: { level: error }\nstorage: { filesystem: { rootdirectory: ${join(dir, 'data')} } }\nhttp: { addr: "127.0.0.1:${port}" }\n`,
    );
    registry = spawn(REGISTRY, ['serve', join(dir, 'config.yml')], { stdio: 'ignore' });
    for (let i = 0; i < 100 && (await status(`http://127.0.0.1:${port}/v2/`)) !== 200; i++) await sleep(100);
    assert.equal(await status(`http://127.0.0.1:${port}/v2/`), 200, 'the registry did not come up');
    // Our busybox, imported into Docker by the driver, pushed under a registry name, then untagged.
    const images = await testImages();
    const rt = new DockerRuntime({ disks: scratchDiskStore(), images, homeTag, version: VERSION });
    await rt.prepareImage('busybox');
    await rt.close();
    repo = `127.0.0.1:${port}/abtest/bb`;
    await docker.getImage(imageRef(images.resolve('busybox').info)).tag({ repo, tag: 'v1' });
    await follow(docker, (await docker.getImage(`${repo}:v1`).push({ authconfig: {} })) as NodeJS.ReadableStream);
    await docker.getImage(`${repo}:v1`).remove();
  });

  after(async () => {
    registry?.kill('SIGTERM');
    await docker.getImage(`${repo}:v1`).remove({ force: true }).catch(() => undefined);
    const left = await docker.listContainers({ all: true, filters: { label: ['agentbox.pull'] } });
    assert.deepEqual(left.filter((c) => (c.Labels['agentbox.pull'] ?? '').startsWith(repo)), [], 'pull left a container behind');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('pulls with progress, keeps the image for both runtimes, and a sandbox runs on it', async () => {
    const store = new ImageStore(join(dir, 'images'));
    const events: Progress[] = [];
    const info = await pullImage(store, `${repo}:v1`, { name: 'pulled-bb', onProgress: (p) => events.push(p) });
    assert.equal(info.name, 'pulled-bb');
    assert.equal(info.source, 'pull');
    assert.equal(info.ref, `${repo}:v1`);
    assert.ok(events.some((e) => e.phase === 'pull'), 'no pull progress');
    assert.ok(events.some((e) => e.phase === 'pull' && /Pull complete|Downloaded newer image|Download complete/.test(e.message)), JSON.stringify(events.slice(-3)));
    assert.ok(events.some((e) => e.phase === 'export'));
    const rt = new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/${homeTag}`, resolveRootfs: (i) => store.resolve(i).rootfs, helper: helperPath() });
    const h = await rt.create({ id: `sbx_pull${process.pid}`, image: 'pulled-bb', isolation: 'namespaces', limits: { cpus: 1, memoryMb: 64, pids: 32, diskMb: 16 }, labels: {} });
    try {
      const r = await collect(rt.exec(h, ['sh', '-c', 'echo pulled-and-running; id -u'], { env: {}, timeoutMs: 10_000, outputLimitBytes: 1 << 20, execId: 'exe_pull' }));
      assert.equal(r.stdout, 'pulled-and-running\n1000\n');
    } finally {
      await rt.destroy(h);
      await rt.close();
    }
  });

  test('an unknown image is not_found, a malformed reference bad_request; nothing is left behind', async () => {
    const store = new ImageStore(join(dir, 'images2'));
    await assert.rejects(pullImage(store, `${repo}:nope`), NotFoundError);
    await assert.rejects(pullImage(store, 'bad ref with spaces'), BadRequestError);
    assert.deepEqual(store.list(), []);
  });

  test('over the API: progress events then the image; only the operator of a daemon without tenants may pull', async () => {
    const home = join(dir, 'daemon');
    const env = { AGENTBOX_HOME: home, AGENTBOX_IMAGES: join(home, 'images') };
    const daemon = await startDaemon({ env, logger: silentLogger(), socket: null, tcp: { host: '127.0.0.1', port: 0 } });
    try {
      const client = new AgentboxClient({ url: `http://127.0.0.1:${daemon.tcpAddress!.port}` });
      const seen: string[] = [];
      const info = await client.pullImage(`${repo}:v1`, { name: 'via-api', onProgress: (p) => seen.push(p.phase) });
      assert.equal(info.name, 'via-api');
      assert.ok(seen.includes('pull') && seen.includes('export'), seen.join(','));
      assert.equal(daemon.images.get('via-api')?.ref, `${repo}:v1`);
      await assert.rejects(client.pullImage(`${repo}:missing`), NotFoundError);
    } finally {
      await daemon.close();
    }
    writeFileSync(join(dir, 'tenants.yaml'), 'version: 1\ntenants:\n  - { name: alice, tokens: [alice-token-0123456789] }\n');
    const multi = await startDaemon({ env: { ...env, AGENTBOX_HOME: join(dir, 'daemon2') }, logger: silentLogger(), policyPath: join(dir, 'tenants.yaml'), socket: null, tcp: { host: '127.0.0.1', port: 0 } });
    try {
      const alice = new AgentboxClient({ url: `http://127.0.0.1:${multi.tcpAddress!.port}`, token: 'alice-token-0123456789' });
      await assert.rejects(alice.pullImage(`${repo}:v1`), ForbiddenError);
    } finally {
      await multi.close();
    }
  });

  test('default names come from the reference', () => {
    assert.equal(defaultImageName('python:3.12-slim'), 'python-3.12-slim');
    assert.equal(defaultImageName('registry.example.com:5000/team/tool:1.2'), 'tool-1.2');
    assert.equal(defaultImageName('alpine@sha256:0123abcd'), 'alpine');
  });
});
