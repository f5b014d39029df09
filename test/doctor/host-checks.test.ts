/**
 * `agentbox doctor` on this host, through the real runtimes' probes: the JSON lines and their summary
 * agree with the exit code, and a check pointed at a fake /proc (user namespaces off) turns the
 * local runtime's verdict to "not ready" with its fix, while the real probes still run.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { cliEntry } from '../../src/core/config.js';
import { hostChecks } from '../../src/doctor/host-checks.js';
import { doctorExitCode, summarize, type HostCheck, type RuntimeSummary } from '../../src/doctor/host-probes.js';
import { TEST_IMAGES_DIR } from '../helpers/images.js';

const scratch = mkdtempSync(join(tmpdir(), 'ab-doctor-host-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const env = { PATH: process.env.PATH, AGENTBOX_HOME: join(scratch, 'home'), AGENTBOX_IMAGES: TEST_IMAGES_DIR };

describe('agentbox doctor host checks', () => {
  test('--json: one object per check, each failing one with a fix, the summary last, exit 0 iff local is ready', () => {
    const r = spawnSync(process.execPath, [cliEntry(), 'doctor', '--json'], { env, encoding: 'utf8', timeout: 60_000 });
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as HostCheck & { summary?: RuntimeSummary });
    const summary = lines.pop()?.summary;
    assert.ok(summary, `no summary line last: ${r.stdout}`);
    const names = lines.map((c) => c.name);
    for (const want of ['kernel', 'cgroups', 'bubblewrap', 'user namespaces', 'native helper', 'runtime local (bubblewrap + cgroups)', 'disk (AGENTBOX_HOME)', 'sandbox disks (loop, xfs, ext4)', 'disk (image store)', 'pid_max / threads-max', 'runtime docker (dockerd)', 'runtime gvisor (runsc)', 'runtime microvm (QEMU)', 'kvm (microvm runtime)', 'runtime kubernetes (API server)']) {
      assert.ok(names.includes(want), `no check ${want}: ${names.join(', ')}`);
    }
    for (const c of lines.filter((l) => !l.ok)) assert.ok(c.fix, `${c.name} fails without a fix`);
    assert.deepEqual(summary, summarize(lines));
    assert.equal(r.status, summary.ready.includes('local') ? 0 : 1, r.stdout + r.stderr);
    // Every runtime is reported, ready or not.
    assert.deepEqual([...summary.ready, ...summary.notReady.map((n) => n.runtime)].sort(), ['docker', 'gvisor', 'kubernetes', 'local', 'microvm']);
  });

  test('with user namespaces off in a fake /proc, the local runtime is not ready and the fix is the sysctl', async () => {
    const proc = join(scratch, 'proc');
    mkdirSync(join(proc, 'sys', 'user'), { recursive: true });
    mkdirSync(join(proc, 'sys', 'kernel'), { recursive: true });
    writeFileSync(join(proc, 'sys', 'user', 'max_user_namespaces'), '0\n');
    writeFileSync(join(proc, 'sys', 'kernel', 'pid_max'), '4194304\n');
    writeFileSync(join(proc, 'sys', 'kernel', 'threads-max'), '4194304\n');
    const checks = await hostChecks({ env, procRoot: proc });
    const userns = checks.find((c) => c.name === 'user namespaces');
    assert.equal(userns?.ok, false);
    assert.equal(userns?.fix, 'sysctl -w user.max_user_namespaces=15000');
    assert.equal(checks.find((c) => c.name === 'pid_max / threads-max')?.ok, true, 'the fake /proc is read for the task limits too');
    const local = summarize(checks).notReady.find((n) => n.runtime === 'local');
    assert.ok(local?.fixes.includes('sysctl -w user.max_user_namespaces=15000'), JSON.stringify(local));
    assert.equal(doctorExitCode(checks), 1);
  });

  test('with no bwrap on the PATH searched, bubblewrap FAILs with apt-get install bubblewrap and no namespace is tried', async () => {
    const empty = join(scratch, 'empty-path');
    mkdirSync(empty, { recursive: true });
    const checks = await hostChecks({ env, path: empty, kvmDevice: join(scratch, 'kvm') });
    const bwrap = checks.find((c) => c.name === 'bubblewrap');
    assert.equal(bwrap?.ok, false);
    assert.equal(bwrap?.fix, 'apt-get install bubblewrap');
    assert.doesNotMatch(checks.find((c) => c.name === 'user namespaces')?.detail ?? '', /bwrap made one/);
    assert.equal(doctorExitCode(checks), 1);
  });
});
