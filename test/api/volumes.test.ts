/**
 * Named volumes through a real daemon: the routes, tenancy, sharing between sandboxes, rm while
 * mounted, file access without a sandbox (and that a volume's symlinks never reach the host),
 * restart reconciliation, and nothing left on the host.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { BadRequestError, ConflictError, ForbiddenError, NotFoundError } from '../../src/contract/errors.js';
import { startDaemon, type Daemon } from '../../src/daemon/compose.js';
import { silentLogger } from '../../src/observability/logger.js';
import { AgentboxClient, readAll } from '../../src/sdk/client.js';
import { mountTable } from '../../src/storage/host-tools.js';
import { VolumeStore } from '../../src/storage/volume-store.js';
import { DiskStore } from '../../src/storage/disk-store.js';
import { Store } from '../../src/store/store.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

const skip = process.getuid?.() !== 0 ? 'volumes need root (mounts, the local runtime)' : undefined;

const POLICY = `version: 1
defaults:
  image: busybox
  limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 32 }
  ttl: 1h
  idleTimeout: 15m
  execTimeout: 1m
tenants:
  - name: alice
    tokens: [alice-token-0123456789]
    scopedTokens:
      - { token: alice-agent-token-0123456789, scopes: [read, exec, files, manage], labels: { team: agents } }
      - { token: alice-reader-token-0123456789, scopes: [read] }
  - name: bob
    tokens: [bob-token-0123456789]
`;

function raw(port: number, method: string, path: string, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { authorization: 'Bearer alice-token-0123456789', ...(body ? { 'content-type': 'application/json' } : {}) } }, async (res) =>
      resolve({ status: res.statusCode ?? 0, body: (await readAll(res)).toString('utf8') }),
    );
    req.on('error', reject);
    req.end(body);
  });
}

const text = async (stream: Promise<Readable>): Promise<string> => (await readAll(await stream)).toString('utf8');

describe('named volumes', { skip }, () => {
  let home: string;
  let policyPath: string;
  let daemon: Daemon | undefined;
  let port: number;
  let alice: AgentboxClient;
  let bob: AgentboxClient;
  const volmnt = (): string => join(home, 'storage', 'volmnt');
  const mountedVolumes = (): string[] => mountTable().filter((m) => m.point.startsWith(`${volmnt()}/`)).map((m) => m.point);

  const start = async (): Promise<void> => {
    daemon = await startDaemon({
      env: { AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR },
      logger: silentLogger(),
      policyPath,
      socket: join(home, 'agentbox.sock'),
      tcp: { host: '127.0.0.1', port: 0 },
    });
    port = daemon.tcpAddress!.port;
    alice = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: 'alice-token-0123456789' });
    bob = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: 'bob-token-0123456789' });
  };

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-volumes-api-'));
    policyPath = join(home, 'policy.yaml');
    writeFileSync(policyPath, POLICY);
    await start();
  });

  after(async () => {
    if (daemon) {
      for (const c of [alice, bob]) {
        for (const sb of await c.list()) await c.delete(sb.id);
        for (const v of await c.listVolumes()) await c.deleteVolume(v.name);
      }
      const runtime = await daemon.manager.runtime('local');
      await daemon.close();
      assert.deepEqual(await runtime.list(), [], 'sandboxes left on the host');
    }
    const mounts = mountTable().filter((m) => m.point.startsWith(home));
    const loops = execFileSync('losetup', ['-nl', '-O', 'NAME,BACK-FILE'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(home));
    rmSync(home, { recursive: true, force: true });
    assert.deepEqual(mounts, [], 'mounts left under the home');
    assert.deepEqual(loops, [], 'loop devices left on images of the home');
  });

  test('create, list, inspect; a second create of the name, bad names and sizes are refused', async () => {
    const v = await alice.createVolume('data', { sizeMb: 32 });
    assert.deepEqual({ name: v.name, sizeMb: v.sizeMb, usedBy: v.usedBy }, { name: 'data', sizeMb: 32, usedBy: [] });
    assert.deepEqual((await alice.listVolumes()).map((x) => x.name), ['data']);
    assert.equal((await alice.getVolume('data')).sizeMb, 32);
    await assert.rejects(alice.createVolume('data'), ConflictError);
    for (const name of ['../x', 'a/b', '.', 'UPPER', '']) await assert.rejects(alice.createVolume(name), BadRequestError, name);
    await assert.rejects(alice.createVolume('big', { sizeMb: 1 << 20 }), BadRequestError);
    const traversal = await raw(port, 'GET', '/v1/volumes/..%2F..%2Fetc');
    assert.equal(traversal.status, 400, traversal.body);
    assert.equal(JSON.parse(traversal.body).error.code, 'bad_request');
    assert.ok(JSON.parse(traversal.body).error.hint);
    assert.equal(existsSync(join(home, 'storage', 'store', 'x.img')), false);
    assert.deepEqual(mountedVolumes(), [], 'nothing uses it: not mounted');
  });

  test('another tenant\'s volume does not exist for the caller (not_found), and has its own names', async () => {
    await assert.rejects(bob.getVolume('data'), NotFoundError);
    await assert.rejects(bob.deleteVolume('data'), NotFoundError);
    await assert.rejects(bob.readVolumeFile('data', '/x'), NotFoundError);
    await assert.rejects(bob.create({ volumes: [{ name: 'data', target: '/data' }] }), NotFoundError);
    assert.deepEqual(await bob.listVolumes(), []);
    await bob.createVolume('data', { sizeMb: 16 });
    await bob.writeVolumeFile('data', '/bob.txt', 'bob');
    await assert.rejects(alice.readVolumeFile('data', '/bob.txt'), NotFoundError);
    await bob.deleteVolume('data');
    // A token limited to labelled sandboxes sees none of the tenant's volumes; read scope cannot make one.
    const agent = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: 'alice-agent-token-0123456789' });
    await assert.rejects(agent.listVolumes(), ForbiddenError);
    await assert.rejects(agent.create({ volumes: [{ name: 'data', target: '/data' }] }), ForbiddenError);
    const reader = new AgentboxClient({ url: `http://127.0.0.1:${port}`, token: 'alice-reader-token-0123456789' });
    assert.deepEqual((await reader.listVolumes()).map((v) => v.name), ['data']);
    await assert.rejects(reader.createVolume('mine'), ForbiddenError);
  });

  test('mounted rw in two sandboxes and ro in a third: shared files, EROFS; rm refused while mounted; the files outlive them', async () => {
    const a = await alice.create({ volumes: [{ name: 'data', target: '/data' }] });
    const b = await alice.create({ volumes: [{ name: 'data', target: '/workspace/data' }] });
    const c = await alice.create({ volumes: [{ name: 'data', target: '/mnt/data', readOnly: true }] });
    assert.deepEqual(a.volumes, [{ name: 'data', target: '/data', readOnly: false }]);
    assert.deepEqual((await alice.get(c.id)).volumes, [{ name: 'data', target: '/mnt/data', readOnly: true }]);
    assert.equal(mountedVolumes().length, 1, 'one host mount for all three');
    assert.equal((await alice.exec(a.id, { cmd: ['sh', '-c', 'echo one > /data/f'] })).exitCode, 0);
    assert.equal((await alice.exec(b.id, { cmd: ['sh', '-c', 'cat /workspace/data/f; echo two >> /workspace/data/f'] })).stdout, 'one\n');
    const ro = await alice.exec(c.id, { cmd: ['sh', '-c', 'cat /mnt/data/f; echo x > /mnt/data/g'] });
    assert.equal(ro.stdout, 'one\ntwo\n');
    assert.match(ro.stderr, /Read-only file system/);
    assert.deepEqual((await alice.getVolume('data')).usedBy, [a.id, b.id, c.id].sort());
    const refused = await alice.deleteVolume('data').catch((err: unknown) => err);
    assert.ok(refused instanceof ConflictError, String(refused));
    assert.match(refused.message, new RegExp(a.id));
    assert.ok(refused.hint?.includes('agentbox rm'));
    await alice.delete(a.id);
    await alice.delete(b.id);
    assert.equal(mountedVolumes().length, 1, 'still mounted for the last sandbox');
    await alice.delete(c.id);
    assert.deepEqual(mountedVolumes(), [], 'unmounted with its last user');
    assert.equal(await text(alice.readVolumeFile('data', '/f')), 'one\ntwo\n');
    const d = await alice.create({ runtime: 'local', volumes: [{ name: 'data', target: '/data' }] });
    assert.equal((await alice.exec(d.id, { cmd: ['cat', '/data/f'] })).stdout, 'one\ntwo\n');
    await alice.delete(d.id);
  });

  test('bad mounts: unknown volume, reserved or nested targets', async () => {
    await assert.rejects(alice.create({ volumes: [{ name: 'nope', target: '/data' }] }), NotFoundError);
    for (const target of ['/', '/proc/x', '/workspace', '/.agentbox', 'data', '/data/../etc']) {
      await assert.rejects(alice.create({ volumes: [{ name: 'data', target }] }), BadRequestError, target);
    }
    await assert.rejects(alice.create({ volumes: [{ name: 'data', target: '/data' }, { name: 'data', target: '/data/x' }] }), BadRequestError);
    assert.deepEqual((await alice.list()).map((s) => s.id), [], 'no sandbox was left from a refused create');
  });

  test('files without a sandbox: write, read, list, remove; the volume is mounted only meanwhile', async () => {
    assert.equal((await alice.writeVolumeFile('data', '/in/put.txt', 'payload')).bytes, 7);
    assert.equal(await text(alice.readVolumeFile('data', '/in/put.txt')), 'payload');
    assert.deepEqual((await alice.listVolumeDir('data', '/in')).map((e) => [e.name, e.type, e.size]), [['put.txt', 'file', 7]]);
    assert.deepEqual((await alice.listVolumeDir('data')).map((e) => e.name).sort(), ['f', 'in']);
    await alice.removeVolumePath('data', '/in');
    await assert.rejects(alice.readVolumeFile('data', '/in/put.txt'), NotFoundError);
    await assert.rejects(alice.readVolumeFile('data', '/'), BadRequestError);
    await assert.rejects(alice.removeVolumePath('data', '/'), BadRequestError);
    await assert.rejects(alice.readVolumeFile('data', 'relative'), BadRequestError);
    await assert.rejects(alice.readVolumeFile('data', '/../etc/passwd'), BadRequestError);
    const full = await alice.writeVolumeFile('data', '/big', Buffer.alloc(40 * 1024 * 1024)).catch((err: unknown) => err);
    assert.ok(full instanceof BadRequestError && /full/.test(full.message), String(full));
    await alice.removeVolumePath('data', '/big');
    assert.deepEqual(mountedVolumes(), []);
    // Written by the API as the sandbox user: a sandbox may change it.
    await alice.writeVolumeFile('data', '/from-api', 'api\n');
    const s = await alice.create({ volumes: [{ name: 'data', target: '/data' }] });
    assert.equal((await alice.exec(s.id, { cmd: ['sh', '-c', 'echo sandbox >> /data/from-api && cat /data/from-api && stat -c %u /data/from-api'] })).stdout, 'api\nsandbox\n1000\n');
    await alice.delete(s.id);
  });

  test('a volume\'s symlinks never take the API out of the volume: absolute, ../.., /proc/self/root', async () => {
    const marker = `agentbox-escape-${randomBytes(4).toString('hex')}`;
    const s = await alice.create({ volumes: [{ name: 'data', target: '/data' }] });
    const plant = await alice.exec(s.id, {
      cmd: ['sh', '-c', [
        'cd /data',
        'ln -s /etc/shadow abs', 'ln -s ../../../../../../../etc/shadow rel', 'ln -s /proc/self/root/etc/shadow procroot',
        'ln -s /proc/1/root/etc/passwd proc1', 'ln -s /etc etcdir', 'ln -s / rootdir', 'ln -s ../../../../../tmp tmpdir',
        'mkdir -p etc && echo inside > etc/hostname',
      ].join(' && ')],
    });
    assert.equal(plant.exitCode, 0, plant.stderr);
    await alice.delete(s.id);
    // Reads: resolved inside the volume (its own /etc/hostname), or not found, never the host's file.
    assert.equal(await text(alice.readVolumeFile('data', '/etcdir/hostname')), 'inside\n');
    assert.equal(await text(alice.readVolumeFile('data', '/rootdir/etc/hostname')), 'inside\n');
    for (const path of ['/abs', '/rel', '/procroot', '/proc1', '/etcdir/shadow', '/etcdir/passwd', '/rootdir/etc/shadow']) {
      await assert.rejects(alice.readVolumeFile('data', path), NotFoundError, path);
    }
    const listed = (await alice.listVolumeDir('data', '/rootdir')).map((e) => e.name);
    assert.ok(listed.includes('abs') && listed.includes('etcdir'), `not the volume's root: ${listed}`);
    assert.ok(!listed.includes('usr') && !listed.includes('bin'), `the host's root was listed: ${listed}`);
    // Writes land inside the volume, never on the host.
    await alice.writeVolumeFile('data', `/etcdir/${marker}`, 'planted');
    // ../../tmp from the volume's root is the volume's /tmp, which does not exist yet; / is the volume's root.
    await assert.rejects(alice.writeVolumeFile('data', `/tmpdir/${marker}`, 'planted'), NotFoundError);
    await alice.writeVolumeFile('data', `/rootdir/tmp/${marker}`, 'planted');
    await alice.writeVolumeFile('data', `/tmpdir/${marker}.2`, 'planted');
    assert.equal(existsSync(`/tmp/${marker}.2`), false, 'wrote into the host /tmp');
    assert.equal(existsSync(`/etc/${marker}`), false, 'wrote into the host /etc');
    assert.equal(existsSync(`/tmp/${marker}`), false, 'wrote into the host /tmp');
    assert.equal(await text(alice.readVolumeFile('data', `/etc/${marker}`)), 'planted');
    assert.equal(await text(alice.readVolumeFile('data', `/tmp/${marker}`)), 'planted');
    // Removes too: the link target inside the volume goes, the host's file stays.
    const hostHostname = readFileSync('/etc/hostname', 'utf8');
    await alice.removeVolumePath('data', '/etcdir/hostname');
    assert.equal(readFileSync('/etc/hostname', 'utf8'), hostHostname);
    await assert.rejects(alice.readVolumeFile('data', '/etc/hostname'), NotFoundError);
    for (const p of ['/abs', '/rel', '/procroot', '/proc1', '/etcdir', '/rootdir', '/tmpdir', '/etc', '/tmp']) await alice.removeVolumePath('data', p);
    assert.deepEqual((await alice.listVolumeDir('data')).map((e) => e.name).sort(), ['f', 'from-api']);
  });

  test('MCP: volume_list and volume_create, and sandbox_create mounts volumes', async () => {
    const transport = new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${port}/mcp`), { requestInit: { headers: { authorization: 'Bearer alice-token-0123456789' } } });
    const client = new Client({ name: 'volumes-test', version: '0.0.1' });
    await client.connect(transport);
    try {
      type Result = { content: { text: string }[]; isError?: boolean };
      const made = (await client.callTool({ name: 'volume_create', arguments: { name: 'mcp-vol', sizeMb: 16 } })) as Result;
      assert.ok(!made.isError, JSON.stringify(made.content));
      const again = (await client.callTool({ name: 'volume_create', arguments: { name: 'mcp-vol' } })) as Result;
      assert.equal(again.isError, true);
      assert.match(again.content[0]!.text, /conflict/);
      const listed = (await client.callTool({ name: 'volume_list', arguments: {} })) as Result;
      assert.match(listed.content[0]!.text, /mcp-vol: 16 MiB/);
      const created = (await client.callTool({ name: 'sandbox_create', arguments: { volumes: [{ name: 'mcp-vol', target: '/data' }] } })) as Result;
      assert.ok(!created.isError, JSON.stringify(created.content));
      const id = (JSON.parse(created.content[1]!.text) as { id: string }).id;
      const r = (await client.callTool({ name: 'sandbox_exec', arguments: { id, command: 'echo via-mcp > /data/m && cat /data/m' } })) as Result;
      assert.match(r.content[1]!.text, /via-mcp/);
      await client.callTool({ name: 'sandbox_delete', arguments: { id } });
    } finally {
      await transport.terminateSession();
      await client.close();
    }
    assert.equal(await text(alice.readVolumeFile('mcp-vol', '/m')), 'via-mcp\n');
    await alice.deleteVolume('mcp-vol');
  });

  test('OpenAPI documents the volume routes from the same schemas', async () => {
    const doc = JSON.parse((await raw(port, 'GET', '/v1/openapi.json')).body) as { paths: Record<string, Record<string, unknown>> };
    for (const p of ['/v1/volumes', '/v1/volumes/{name}', '/v1/volumes/{name}/files', '/v1/volumes/{name}/files/list']) assert.ok(doc.paths[p], p);
    assert.match(JSON.stringify(doc.paths['/v1/sandboxes']), /volumes/);
  });

  test('a restart unmounts volumes nobody uses and removes images no volume names; the volumes and their files stay', async () => {
    await daemon!.close();
    daemon = undefined;
    // What a daemon killed at the wrong moment leaves: a volume still mounted, an image without a row.
    const store = Store.open(join(home, 'agentbox.db'));
    const row = store.volumes.get('alice', 'data');
    store.close();
    assert.ok(row);
    const disks = new DiskStore({ dir: join(home, 'storage') });
    const volumes = new VolumeStore({ disks, mountDir: volmnt() });
    await volumes.mount(row);
    await volumes.create({ id: 'vol_orphan', tenant: 'alice', name: 'orphan' }, 16);
    assert.equal(mountedVolumes().length, 1);
    await start();
    assert.deepEqual(mountedVolumes(), [], 'the unused volume is unmounted at start');
    assert.equal(existsSync(join(home, 'storage', 'store', 'volumes', 'alice', 'orphan.img')), false, 'the orphan image is removed');
    assert.deepEqual((await alice.listVolumes()).map((v) => v.name), ['data']);
    assert.equal(await text(alice.readVolumeFile('data', '/f')), 'one\ntwo\n');
    await alice.deleteVolume('data');
    assert.equal(existsSync(join(home, 'storage', 'store', 'volumes', 'alice', 'data.img')), false);
    await assert.rejects(alice.getVolume('data'), NotFoundError);
  });
});
