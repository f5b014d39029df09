/** The CLI as a user runs it: a real process, the auto-started daemon, exit codes, messages. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cliEntry } from '../../src/core/config.js';
import { TEST_IMAGES_DIR, hasDebian, testImages } from '../helpers/images.js';

describe('CLI', () => {
  let home: string;
  let env: NodeJS.ProcessEnv;

  const ab = (args: string[], input?: string): { code: number; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, [cliEntry(), ...args], { env, encoding: 'utf8', input: input ?? '', timeout: 60_000 });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };

  before(async () => {
    await testImages();
    home = mkdtempSync(join(tmpdir(), 'agentbox-cli-'));
    env = { PATH: process.env.PATH, AGENTBOX_HOME: home, AGENTBOX_IMAGES: TEST_IMAGES_DIR, AGENTBOX_LOG_LEVEL: 'warn' };
  });

  after(() => {
    const stopped = ab(['daemon', 'stop', '--stop-sandboxes']);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(ab(['daemon', 'status']).code, 3, 'the daemon did not stop');
    rmSync(home, { recursive: true, force: true });
  });

  test('run passes the exit code through and starts the daemon once', () => {
    const first = ab(['run', '--', 'sh', '-c', 'echo hello; exit 3']);
    assert.equal(first.code, 3, first.stderr);
    assert.equal(first.stdout, 'hello\n');
    assert.match(first.stderr, /started a local daemon/);
    const second = ab(['run', '--', 'true']);
    assert.equal(second.code, 0);
    assert.doesNotMatch(second.stderr, /started/);
  });

  test('run --timeout exits 124 and run removes its sandbox', () => {
    const r = ab(['run', '--timeout', '1s', '--', 'sh', '-c', 'sleep 30; echo finished']);
    assert.equal(r.code, 124);
    assert.doesNotMatch(r.stdout, /finished/);
    assert.equal(ab(['ls', '--json']).stdout.trim(), '[]');
  });

  test('python in the debian image', { skip: hasDebian() ? false : 'AGENTBOX_TEST_DEBIAN=0' }, () => {
    const r = ab(['run', '--image', 'debian', '--', 'python3', '-c', 'print(6*7)']);
    assert.equal(r.stdout, '42\n', r.stderr);
  });

  test('a memory bomb under --memory exits 137', { skip: hasDebian() ? false : 'AGENTBOX_TEST_DEBIAN=0' }, () => {
    const r = ab(['run', '--image', 'debian', '--memory', '64', '--', 'python3', '-c', 'x=bytearray(400<<20); print("allocated")']);
    assert.equal(r.code, 137, r.stderr);
    assert.doesNotMatch(r.stdout, /allocated/);
    assert.match(r.stderr, /OOM/);
  });

  test('create, exec, cp, logs, rm, inspect', () => {
    const created = ab(['create', '--label', 'who=cli-test']);
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.trim();
    assert.match(id, /^sbx_[a-z0-9]+$/);
    assert.equal(ab(['exec', id, '--', 'sh', '-c', 'echo kept > /workspace/f']).code, 0);
    assert.equal(ab(['exec', id, '--', 'cat', '/workspace/f']).stdout, 'kept\n');
    assert.equal(ab(['exec', id, '-i', '--', 'cat'], 'piped in').stdout, 'piped in');
    const local = join(home, 'upload.txt');
    writeFileSync(local, 'uploaded content');
    assert.equal(ab(['cp', local, `${id}:/workspace/up.txt`]).code, 0);
    assert.equal(ab(['cp', `${id}:/workspace/up.txt`, '-']).stdout, 'uploaded content');
    assert.match(ab(['logs', id]).stdout, /cat \/workspace\/f/);
    assert.match(ab(['ls']).stdout, new RegExp(id));
    assert.equal(ab(['rm', id]).code, 0);
    const inspected = ab(['inspect', id]);
    assert.match(inspected.stdout, /"endReason": "deleted"/);
    assert.match(inspected.stdout, /"state": "deleted"/);
  });

  test('exec returns while its background job runs; ps shows the job and its exec; kill ends it; kill 1 is refused', () => {
    const id = ab(['create']).stdout.trim();
    const started = ab(['exec', id, '--json', '--', 'sh', '-c', 'sleep 666 & echo started']);
    assert.equal(started.code, 0, started.stderr);
    const execId = (JSON.parse(started.stdout) as { execId: string; stdout: string }).execId;
    const ps = ab(['ps', id]);
    assert.equal(ps.code, 0, ps.stderr);
    assert.match(ps.stdout, /^PID\s+PPID\s+USER\s+EXEC\s+COMMAND$/m);
    const line = ps.stdout.split('\n').find((l) => l.endsWith('sleep 666'));
    assert.ok(line, ps.stdout);
    const [pid, , user, exec] = line.split(/\s+/);
    assert.equal(user, 'sandbox');
    assert.equal(exec, execId);
    const one = ab(['kill', id, '1']);
    assert.equal(one.code, 125);
    assert.match(one.stderr, /PID 1/);
    assert.match(one.stderr, /hint: .*agentbox stop/);
    assert.equal(ab(['kill', id, String(pid), '--signal', 'SIGBOGUS']).code, 125);
    const killed = ab(['kill', id, String(pid), '-s', 'kill']);
    assert.equal(killed.code, 0, killed.stderr);
    assert.equal(killed.stdout, `${pid} KILL\n`);
    const json = JSON.parse(ab(['ps', id, '--json']).stdout) as { command: string }[];
    assert.ok(!json.some((p) => p.command === 'sleep 666'), JSON.stringify(json));
    assert.equal(ab(['kill', id, String(pid)]).code, 125);
    assert.equal(ab(['rm', id]).code, 0);
  });

  test('agentbox failures exit 125 with a message and hint, no stack trace', () => {
    const unknownImage = ab(['run', '--image', 'no-such-image-xyz', '--', 'true']);
    assert.equal(unknownImage.code, 125);
    assert.ok(unknownImage.stderr.trim().split('\n').length <= 4, unknownImage.stderr);
    assert.match(unknownImage.stderr, /hint:/);
    assert.doesNotMatch(unknownImage.stderr, /at \S+\.js:\d+/);
    const unknownId = ab(['exec', 'sbx_nope', '--', 'true']);
    assert.equal(unknownId.code, 125);
    assert.match(unknownId.stderr, /no sandbox sbx_nope/);
    assert.equal(ab(['run', '--memory', 'lots', '--', 'true']).code, 125);
    assert.equal(ab(['run', '--memory', '999999', '--', 'true']).code, 125);
    assert.equal(ab(['no-such-command']).code, 125);
  });

  test('policy check points at the line of the problem', () => {
    const bad = join(home, 'bad.yaml');
    writeFileSync(bad, 'version: 1\ndefaults:\n  limits: { memoryMb: lots }\n');
    const r = ab(['policy', 'check', bad]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /:3:/);
    const good = join(home, 'good.yaml');
    writeFileSync(good, 'version: 1\nprofiles:\n  tiny: { limits: { memoryMb: 64 } }\n');
    const ok = ab(['policy', 'check', good]);
    assert.equal(ok.code, 0, ok.stderr);
  });

  test('image ls shows the test images', () => {
    const r = ab(['image', 'ls']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /busybox/);
  });
});
