/**
 * The files API on the docker runtime (runc and gVisor): a request the sandbox refuses is a user's
 * mistake, so it must come back as a typed 4xx error with a hint, never as `internal` (a 500). Each
 * operation is tried on names too long, symlink loops, pseudo-files that cannot be read, mount points
 * and paths through a file (issue 14: api.files-traversal saw 500s on gVisor).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { after, describe, test } from 'node:test';
import { VERSION } from '../../src/core/config.js';
import { AgentboxError } from '../../src/contract/errors.js';
import type { Isolation } from '../../src/contract/model.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import type { SandboxHandle } from '../../src/runtime/types.js';
import { run } from '../helpers/collect.js';
import { testImages } from '../helpers/images.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const homeTag = `test-files-errors-${process.pid}`;
const agentDir = mkdtempSync(join(tmpdir(), 'ab-agents-'));
const rt = new DockerRuntime({ disks: scratchDiskStore(), images: await testImages(), homeTag, version: VERSION, agentDir });
const probe = await rt.probe();
const skip = probe.ok ? false : `${probe.reason}`;
const noRunsc = !probe.ok || !(probe.details?.runtimes ?? '').split(' ').includes('runsc');

const LONG = 'n'.repeat(300);
type Op = 'read' | 'list' | 'write' | 'remove';

/** What an operation came to: `ok`, or the error's code and whether it has a hint. */
async function outcome(h: SandboxHandle, op: Op, path: string): Promise<string> {
  try {
    if (op === 'read') await text(await rt.readFile(h, path));
    else if (op === 'list') await rt.listDir(h, path);
    else if (op === 'write') await rt.writeFile(h, path, Readable.from([Buffer.from('x')]));
    else await rt.removePath(h, path);
    return 'ok';
  } catch (err) {
    if (!(err instanceof AgentboxError)) return `untyped ${String(err)}`;
    return `${err.code}${err.hint ? '' : ' without a hint'}`;
  }
}

describe('docker files API: refusals are typed 4xx errors with a hint', { skip }, () => {
  const made: SandboxHandle[] = [];
  after(async () => {
    for (const h of made) await rt.destroy(h);
    const left = await rt.list();
    await rt.close();
    rmSync(agentDir, { recursive: true, force: true });
    assert.deepEqual(left, [], `containers labelled agentbox.home=${homeTag} left behind`);
  });

  for (const isolation of ['container', 'gvisor'] as Isolation[]) {
    test(`every refusal of a file operation is a 4xx (${isolation})`, { skip: isolation === 'gvisor' && noRunsc && 'runsc is not registered with dockerd' }, async () => {
      const h = await rt.create({ id: `sbx_fe${process.pid}${isolation.slice(0, 1)}`, image: 'busybox', isolation, limits: { cpus: 1, memoryMb: 128, pids: 64, diskMb: 16 }, labels: {} });
      made.push(h);
      const setup = await run(rt, h, 'echo hi > /workspace/f && ln -s /workspace/loop /workspace/loop && echo ready');
      assert.equal(setup.stdout, 'ready\n', setup.stderr);
      const cases: [Op, string, string][] = [
        ['read', `/workspace/${LONG}`, 'bad_request'],
        ['list', `/workspace/${LONG}`, 'bad_request'],
        ['write', `/workspace/${LONG}`, 'bad_request'],
        ['remove', `/workspace/${LONG}`, 'bad_request'],
        ['read', '/workspace/loop', 'bad_request'],
        ['list', '/workspace/loop', 'bad_request'],
        ['write', '/workspace/loop', 'bad_request'],
        ['read', '/proc/self/mem', 'bad_request'],
        ['read', '/workspace/f/x', 'not_found'],
        ['list', '/workspace/f', 'not_found'],
        ['write', '/workspace/f/x', 'not_found'],
        ['remove', '/workspace/nothing-here', 'not_found'],
        ['write', '/etc/passwd', 'forbidden'],
      ];
      const got: string[] = [];
      for (const [op, path, code] of cases) got.push(`${op} ${path.slice(0, 40)}: ${await outcome(h, op, path)} (want ${code})`);
      assert.deepEqual(got, cases.map(([op, path, code]) => `${op} ${path.slice(0, 40)}: ${code} (want ${code})`));
    });
  }
});
