/** `agentbox volume ...` and `create --volume` as a user runs them: a real process, the auto-started daemon, exit codes, messages. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cliEntry } from '../../src/core/config.js';
import { mountTable } from '../../src/storage/host-tools.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

const skip = process.getuid?.() !== 0 ? 'volumes need root (mounts, the local runtime)' : undefined;

describe('CLI: volumes', { skip }, () => {
  let home: string;
  let env: NodeJS.ProcessEnv;

  const ab = (args: string[], input?: string): { code: number; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, [cliEntry(), ...args], { env, encoding: 'utf8', input: input ?? '', timeout: 60_000 });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };

  /** A failure as the CLI must print it: exit 125, one line (plus a hint), no stack. */
  const fails = (r: { code: number; stderr: string }, pattern: RegExp): void => {
    assert.equal(r.code, 125, r.stderr);
    const lines = r.stderr.split('\n').filter((l) => l && !/started a local daemon/.test(l) && !/^\s*hint:/.test(l));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, pattern);
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'a stack trace');
  };

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-cli-volumes-'));
    env = { PATH: process.env.PATH, AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_LOG_LEVEL: 'warn' };
  });

  after(() => {
    const stopped = ab(['daemon', 'stop']);
    assert.equal(stopped.code, 0, stopped.stderr);
    const left = mountTable().filter((m) => m.point.startsWith(home));
    rmSync(home, { recursive: true, force: true });
    assert.deepEqual(left, [], 'mounts left under the home');
  });

  test('create, ls, inspect; a volume outlives its sandbox and is read without one; rm refused while mounted', () => {
    const made = ab(['volume', 'create', 'work', '--size', '32']);
    assert.equal(made.code, 0, made.stderr);
    assert.equal(made.stdout, 'work\n');
    fails(ab(['volume', 'create', 'work']), /volume work exists/);
    assert.match(ab(['volume', 'ls']).stdout, /^work\s+32M/m);
    assert.equal(JSON.parse(ab(['volume', 'inspect', 'work']).stdout).sizeMb, 32);

    const id = ab(['create', '--volume', 'work:/data']).stdout.trim();
    assert.match(id, /^sbx_/);
    assert.equal(ab(['exec', id, '--', 'sh', '-c', 'echo from-sandbox > /data/x']).code, 0);
    assert.match(ab(['volume', 'ls']).stdout, new RegExp(`work\\s+32M\\s+\\S+\\s+${id}`));
    fails(ab(['volume', 'rm', 'work']), new RegExp(`volume work is mounted by sandbox ${id}`));
    const ro = ab(['run', '--volume', 'work:/workspace/in:ro', '--', 'sh', '-c', 'cat /workspace/in/x; touch /workspace/in/y']);
    assert.equal(ro.stdout, 'from-sandbox\n');
    assert.match(ro.stderr, /Read-only file system/);
    assert.equal(ab(['rm', id]).code, 0);

    assert.equal(ab(['volume', 'cp', 'work:/x', '-']).stdout, 'from-sandbox\n');
    const out = join(home, 'x.out');
    assert.equal(ab(['volume', 'cp', 'work:/x', out]).code, 0);
    assert.equal(readFileSync(out, 'utf8'), 'from-sandbox\n');
    const src = join(home, 'in.txt');
    writeFileSync(src, 'from-file\n');
    assert.equal(ab(['volume', 'cp', src, 'work:/sub/in.txt']).code, 0);
    assert.equal(ab(['volume', 'cp', '-', 'work:/stdin.txt'], 'from-stdin\n').code, 0);
    assert.equal(ab(['run', '--volume', 'work:/data', '--', 'cat', '/data/sub/in.txt', '/data/stdin.txt']).stdout, 'from-file\nfrom-stdin\n');

    assert.equal(ab(['volume', 'rm', 'work']).stdout, 'work\n');
    assert.doesNotMatch(ab(['volume', 'ls']).stdout, /work/);
  });

  test('bad input: one line, exit 125, no stack, nothing made', () => {
    fails(ab(['volume', 'create', '../x']), /not a volume name/);
    fails(ab(['volume', 'create', 'ok', '--size', 'lots']), /--size/);
    fails(ab(['volume', 'inspect', 'nope']), /no volume nope/);
    fails(ab(['volume', 'rm', 'nope']), /no volume nope/);
    fails(ab(['volume', 'cp', 'nope:/x', '-']), /no volume nope/);
    fails(ab(['volume', 'cp', './a', './b']), /exactly one side/);
    fails(ab(['create', '--volume', 'nope:/data']), /no volume nope/);
    fails(ab(['create', '--volume', 'data']), /--volume takes NAME:\/PATH/);
    assert.equal(ab(['volume', 'create', 'v2', '--size', '16']).code, 0);
    fails(ab(['create', '--volume', 'v2:/proc/x']), /\/proc/);
    fails(ab(['create', '--volume', 'v2:/workspace']), /sandbox's own disk/);
    fails(ab(['volume', 'cp', 'v2:/missing', '-']), /no such file in volume v2/);
    assert.equal(ab(['volume', 'rm', 'v2']).code, 0);
    assert.equal(ab(['ls', '--json']).stdout.trim(), '[]');
    assert.equal(ab(['volume', 'ls', '--json']).stdout.trim(), '[]');
  });
});
