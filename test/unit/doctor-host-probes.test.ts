/**
 * The host checks of `agentbox doctor`, each pointed at a fake /proc, cgroup tree, device or PATH:
 * a failing check says what is wrong and the command that fixes it, and only the checks the local
 * runtime needs decide the exit code. Needs no root and no bubblewrap (a fake bwrap stands in).
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  bubblewrapCheck,
  cgroupCheck,
  check,
  diskCheck,
  doctorExitCode,
  kernelCheck,
  kvmCheck,
  microvmCheck,
  renderChecks,
  summarize,
  taskLimitsCheck,
  userNamespacesCheck,
} from '../../src/doctor/host-probes.js';

const scratch = mkdtempSync(join(tmpdir(), 'ab-doctor-probes-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

let n = 0;
/** A directory tree of small files: { 'sys/user/max_user_namespaces': '0' }. */
function tree(files: Record<string, string>): string {
  const root = join(scratch, `t${n++}`);
  mkdirSync(root);
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(join(root, rel, '..'), { recursive: true });
    writeFileSync(join(root, rel), `${text}\n`);
  }
  return root;
}

function fakeBwrap(versionLine: string): string {
  const dir = tree({});
  writeFileSync(join(dir, 'bwrap'), `#!/bin/sh\necho '${versionLine}'\n`);
  chmodSync(join(dir, 'bwrap'), 0o755);
  return dir;
}

describe('doctor host checks', () => {
  test('user namespaces turned off (max_user_namespaces 0): FAIL with the sysctl that fixes it, local not ready, exit 1', () => {
    const c = userNamespacesCheck(tree({ 'sys/user/max_user_namespaces': '0' }));
    assert.equal(c.ok, false);
    assert.equal(c.optional, false);
    assert.match(c.detail, /max_user_namespaces is 0/);
    assert.equal(c.fix, 'sysctl -w user.max_user_namespaces=15000');
    const text = renderChecks([c]);
    assert.match(text, /^FAIL user namespaces: .*\n {7}fix: sysctl -w user\.max_user_namespaces=15000\n/);
    assert.match(text, /^not ready: local \(user namespaces\) — fix: sysctl -w user\.max_user_namespaces=15000$/m);
    assert.equal(doctorExitCode([c]), 1);
    assert.equal(userNamespacesCheck(tree({ 'sys/user/max_user_namespaces': '15000' })).ok, true);
  });

  test('no bwrap on the PATH: FAIL, fix apt-get install bubblewrap; one too old for --disable-userns: FAIL; 0.8.0: ok', () => {
    const missing = bubblewrapCheck(tree({}));
    assert.equal(missing.ok, false);
    assert.equal(missing.fix, 'apt-get install bubblewrap');
    const old = bubblewrapCheck(fakeBwrap('bubblewrap 0.4.1'));
    assert.equal(old.ok, false);
    assert.match(old.detail, /0\.4\.1; agentbox needs 0\.8\.0 or later/);
    assert.match(old.fix ?? '', /^apt-get install bubblewrap/);
    const good = bubblewrapCheck(fakeBwrap('bubblewrap 0.8.0'));
    assert.equal(good.ok, true, good.detail);
    assert.equal(good.fix, undefined, 'a passing check carries no fix');
  });

  test('cgroups: v2 without the memory controller and v1 without freezer FAIL with their fixes; complete trees pass', () => {
    const v2 = cgroupCheck(tree({ 'cgroup.controllers': 'cpuset cpu io pids' }));
    assert.equal(v2.ok, false);
    assert.match(v2.detail, /^v2 at .*missing memory/);
    assert.match(v2.fix ?? '', /cgroup_enable=memory/);
    const v1root = tree({ 'memory/cgroup.procs': '', 'pids/cgroup.procs': '', 'cpu/cgroup.procs': '' });
    const v1 = cgroupCheck(v1root);
    assert.equal(v1.ok, false);
    assert.match(v1.detail, /^v1 at .*memory, pids, cpu mounted; missing freezer$/);
    assert.equal(v1.fix, `mkdir -p ${v1root}/freezer && mount -t cgroup -o freezer cgroup ${v1root}/freezer`);
    assert.equal(cgroupCheck(tree({ 'cgroup.controllers': 'cpuset cpu io memory pids' })).ok, true);
    assert.equal(cgroupCheck(join(scratch, 'no-such-dir')).ok, false);
  });

  test('kvm: an absent device is advice only (microvm falls back to TCG); microvm itself needs QEMU, a guest kernel, busybox-static and the agent', () => {
    const c = kvmCheck(join(scratch, 'no-kvm'));
    assert.equal(c.ok, false);
    assert.equal(c.optional, true);
    assert.match(c.detail, /absent; the microvm runtime uses it if a guest boots on it, and software emulation \(TCG\) otherwise/);
    const none = microvmCheck({ qemu: undefined, kernel: undefined, busybox: join(scratch, 'no-busybox'), agent: join(scratch, 'no-agent') });
    assert.equal(none.ok, false);
    assert.deepEqual(none.requiredBy, ['microvm']);
    assert.match(none.detail, /missing: qemu-system-x86_64, a Debian cloud kernel in \/boot, busybox-static .*, the guest agent/);
    assert.match(none.fix ?? '', /apt-get install .*qemu-system-x86 linux-image-cloud-amd64 busybox-static/);
    writeFileSync(join(scratch, 'busybox'), '');
    writeFileSync(join(scratch, 'agent'), '');
    assert.equal(microvmCheck({ qemu: '/usr/bin/qemu-system-x86_64', kernel: '6.1.0-57-cloud-amd64', busybox: join(scratch, 'busybox'), agent: join(scratch, 'agent') }).ok, true);
    assert.match(c.fix ?? '', /modprobe kvm_intel/);
    assert.equal(doctorExitCode([c]), 0, 'kvm does not decide the exit code');
  });

  test('pid_max / threads-max: a small pid_max warns with the sysctl; a large one passes; an unreadable /proc says so', () => {
    const small = taskLimitsCheck(tree({ 'sys/kernel/pid_max': '32768', 'sys/kernel/threads-max': '192724' }));
    assert.equal(small.ok, false);
    assert.equal(small.optional, true);
    assert.match(small.detail, /room for 4 busy gVisor sandboxes/);
    assert.equal(small.fix, 'sysctl -w kernel.pid_max=4194304');
    assert.equal(taskLimitsCheck(tree({ 'sys/kernel/pid_max': '4194304', 'sys/kernel/threads-max': '192724' })).ok, true);
    const tiny = taskLimitsCheck(tree({ 'sys/kernel/pid_max': '600', 'sys/kernel/threads-max': '600' }));
    assert.equal(tiny.optional, false, 'too few tasks for local sandboxes fails the local runtime');
    assert.match(taskLimitsCheck(tree({})).detail, /cannot read/);
  });

  test('disk: a home that does not exist yet is measured on its nearest parent; too little space FAILs with the fix', () => {
    const fresh = diskCheck('AGENTBOX_HOME', join(scratch, 'later', 'home'), { minBytes: 1, warnBytes: 1, requiredBy: ['local'], fix: 'free space' });
    assert.equal(fresh.ok, true, fresh.detail);
    assert.match(fresh.detail, /free of .*does not exist yet/);
    const full = diskCheck('AGENTBOX_HOME', scratch, { minBytes: Number.MAX_SAFE_INTEGER, warnBytes: Number.MAX_SAFE_INTEGER, requiredBy: ['local'], fix: 'free space' });
    assert.equal(full.ok, false);
    assert.equal(full.fix, 'free space');
    assert.equal(doctorExitCode([full]), 1);
  });

  test('kernel: older than 5.10 warns (advice only), 6.1 passes', () => {
    const old = kernelCheck('4.19.0-27-amd64');
    assert.equal(old.ok, false);
    assert.equal(old.optional, true);
    assert.equal(kernelCheck('6.1.0-28-amd64').ok, true);
  });

  test('summary: dockerd down leaves docker and gvisor not ready with the setup fix; local alone decides the exit code', () => {
    const checks = [
      check({ name: 'runtime local', ok: true, detail: 'fine', requiredBy: ['local'] }),
      check({ name: 'runtime docker (dockerd)', ok: false, detail: 'not reachable', fix: './scripts/setup.sh --with-docker', requiredBy: ['docker', 'gvisor'] }),
    ];
    const s = summarize(checks);
    assert.deepEqual(s.ready, ['local', 'microvm', 'kubernetes']);
    assert.deepEqual(s.notReady.map((r) => r.runtime), ['docker', 'gvisor']);
    assert.deepEqual(s.notReady[0]?.fixes, ['./scripts/setup.sh --with-docker']);
    assert.equal(doctorExitCode(checks), 0);
    const text = renderChecks(checks);
    assert.match(text, /^warn runtime docker \(dockerd\): not reachable\n {7}fix: \.\/scripts\/setup\.sh --with-docker$/m);
    assert.match(text, /^ready: local, microvm, kubernetes$/m);
  });
});
