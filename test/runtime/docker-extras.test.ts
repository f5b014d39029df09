/**
 * Docker-driver behaviour beyond the shared contract: the hardening Docker is asked for, abort,
 * gVisor really being gVisor, what an OOM does to a gVisor sandbox, and the gVisor exec agent
 * (killed, replaced, found again by a new daemon). Skipped without dockerd.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import Docker from 'dockerode';
import { VERSION } from '../../src/core/config.js';
import type { Isolation, Limits } from '../../src/contract/model.js';
import { GVISOR_HEADROOM, hostPidsLimit } from '../../src/runtime/docker/container-config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { AGENT_MOUNT, AGENT_SOCKET } from '../../src/runtime/docker/exec-agent.js';
import type { SandboxHandle } from '../../src/runtime/types.js';
import { collect, execOpts, run } from '../helpers/collect.js';
import { hasDebian, testImages } from '../helpers/images.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const homeTag = `test-extras-${process.pid}`;
const LIMITS: Limits = { cpus: 1, memoryMb: 128, pids: 64, diskMb: 16 };
// As the daemon runs it: gVisor execs go through the sandbox's exec agent.
const agentDir = mkdtempSync(join(tmpdir(), 'ab-agents-'));
const newRuntime = async (): Promise<DockerRuntime> => new DockerRuntime({ disks: scratchDiskStore(), images: await testImages(), homeTag, version: VERSION, agentDir });
const rt = await newRuntime();
const probe = await rt.probe();
const skip = probe.ok ? false : `${probe.reason} (${probe.hint})`;
const noRunsc = !probe.ok || !(probe.details?.runtimes ?? '').split(' ').includes('runsc');

let n = 0;
const made: SandboxHandle[] = [];
async function sandbox(isolation: Isolation, limits: Partial<Limits> = {}, image = 'busybox'): Promise<SandboxHandle> {
  const h = await rt.create({ id: `sbx_dx${process.pid}x${++n}`, image, isolation, limits: { ...LIMITS, ...limits }, labels: { 'agentbox.test': 'extras' } });
  made.push(h);
  return h;
}

describe('docker driver extras', { skip }, () => {
  after(async () => {
    for (const h of made) await rt.destroy(h);
    const left = await rt.list();
    await rt.close();
    assert.deepEqual(left, [], `containers labelled agentbox.home=${homeTag} left behind`);
    assert.deepEqual(readdirSync(agentDir), [], 'exec-agent directories left behind');
    rmSync(agentDir, { recursive: true, force: true });
  });

  test('asks Docker for a hardened container', async () => {
    const h = await sandbox('container');
    const info = await new Docker().getContainer(String(h.data.containerId)).inspect();
    const hc = info.HostConfig;
    assert.deepEqual(hc.CapDrop, ['ALL']);
    assert.deepEqual(hc.SecurityOpt, ['no-new-privileges']);
    assert.equal(hc.ReadonlyRootfs, true);
    assert.equal(hc.NetworkMode, 'none');
    assert.equal(hc.Memory, LIMITS.memoryMb * 1024 * 1024);
    assert.equal(hc.MemorySwap, hc.Memory);
    assert.equal(hc.PidsLimit, LIMITS.pids);
    assert.equal(hc.Privileged, false);
    assert.ok(!(hc.Binds ?? []).some((b) => b.includes('docker.sock')), 'docker socket mounted');
    assert.equal(info.Config.Labels['agentbox.sandbox'], h.id);
    assert.equal(info.Config.Labels['agentbox.home'], homeTag);
    assert.equal(info.Config.Labels['agentbox.version'], VERSION);
    const r = await run(rt, h, 'id -u; id -g; stat -c "%u %a" /workspace; cat /proc/1/status | grep -E "^(Uid|CapEff)"');
    assert.match(r.stdout, /^1000\n1000\n1000 755\n/);
    assert.match(r.stdout, /CapEff:\s+0000000000000000/);
  });

  test('asks Docker for a hardened gVisor container, with only what PID 1 needs', { skip: noRunsc && 'runsc is not registered with dockerd' }, async () => {
    const h = await sandbox('gvisor');
    const info = await new Docker().getContainer(String(h.data.containerId)).inspect();
    const hc = info.HostConfig;
    assert.equal(hc.Runtime, 'runsc');
    assert.deepEqual(hc.CapDrop, ['ALL']);
    // The memory watchdog kills; the exec agent is started as uid 1000.
    assert.deepEqual([...(hc.CapAdd ?? [])].sort(), ['KILL', 'SETGID', 'SETUID']);
    // No OCI seccomp profile (runsc's enforcement of dockerd 20.10's breaks select): PID 1 installs agentbox's.
    assert.deepEqual(hc.SecurityOpt, ['no-new-privileges', 'seccomp=unconfined']);
    assert.ok(info.Config.Cmd?.includes('--seccomp'), JSON.stringify(info.Config.Cmd));
    assert.equal(hc.ReadonlyRootfs, true);
    assert.equal(hc.Memory, (LIMITS.memoryMb + GVISOR_HEADROOM.memoryMb) * 1024 * 1024);
    assert.equal(hc.PidsLimit, hostPidsLimit(LIMITS.pids, true));
    assert.ok((hc.Binds ?? []).some((b) => b.endsWith(`:${AGENT_MOUNT}:ro`)), JSON.stringify(hc.Binds));
    assert.deepEqual(info.Config.Cmd?.slice(1, 4), ['init', '--exec-agent', `${AGENT_MOUNT}/${AGENT_SOCKET}`]);
  });

  for (const isolation of ['container', 'gvisor'] as const) {
    test(`an aborted exec kills its tree and returns promptly (${isolation})`, { skip: isolation === 'gvisor' && noRunsc && 'runsc is not registered with dockerd' }, async () => {
      const h = await sandbox(isolation);
      const ac = new AbortController();
      const t0 = Date.now();
      setTimeout(() => ac.abort(), 300);
      const r = await collect(rt.exec(h, ['sh', '-c', 'sleep 30 & sleep 30'], execOpts({ signal: ac.signal })));
      assert.ok(Date.now() - t0 < 5000, `abort took ${Date.now() - t0} ms`);
      assert.equal(r.exitCode, 128 + 15);
      assert.equal(r.timedOut, false);
      const ps = await run(rt, h, 'for s in /proc/[0-9]*/stat; do cat $s; echo; done 2>/dev/null | grep -c "(sleep) [RSD]" || true');
      assert.equal(ps.stdout.trim(), '0');
    });
  }

  test('gVisor is really gVisor', { skip: noRunsc && 'runsc is not registered with dockerd' }, async () => {
    const h = await sandbox('gvisor');
    const r = await run(rt, h, 'cat /proc/version; dmesg 2>/dev/null | head -1');
    assert.match(r.stdout, /gvisor|4\.4\.0 #1 SMP Sun Jan 10 15:06:54 PST 2016/i);
  });

  test('an OOM in a gVisor sandbox kills the biggest process, not the sandbox, and logs it', { skip: noRunsc && 'runsc is not registered with dockerd' }, async () => {
    const h = await sandbox('gvisor', { memoryMb: 48 }, hasDebian() ? 'debian' : 'busybox');
    // A bystander that must survive: small, started first, still running when the bomb goes off.
    const bystander = collect(rt.exec(h, ['sh', '-c', 'sleep 3; echo bystander-ok'], execOpts({})));
    const cmd = hasDebian() ? 'python3 -c "x=bytearray(400<<20); print(\'allocated\')"' : 'awk "BEGIN{s=\\"x\\"; while(1) s=s s}"';
    const t0 = Date.now();
    const r = await run(rt, h, cmd);
    assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
    assert.doesNotMatch(r.stdout, /allocated/);
    assert.equal(r.exitCode, 137, r.stderr);
    assert.equal(r.oomKilled, true);
    const by = await bystander;
    const log = await run(rt, h, 'cat /tmp/.agentbox/oom');
    assert.equal(by.stdout, 'bystander-ok\n', JSON.stringify(by) + log.stdout);
    const [tag, pid, rssKb, usedKb, limitKb] = log.stdout.trim().split('\n')[0]?.split(' ') ?? [];
    assert.ok(tag && Number(pid) > 1 && Number(rssKb) > 0, log.stdout);
    assert.equal(Number(limitKb), 48 * 1024);
    assert.ok(Number(usedKb) > 48 * 1024, log.stdout);
    // The sandbox user can read the log but neither forge nor remove it.
    const forged = await run(rt, h, '(echo forged >> /tmp/.agentbox/oom) 2>/dev/null; rm -rf /tmp/.agentbox 2>/dev/null; cat /tmp/.agentbox/oom');
    assert.equal(forged.stdout, log.stdout);
    // A plain SIGKILL is not an OOM.
    const killed = await run(rt, h, 'kill -9 $$');
    assert.equal(killed.exitCode, 137);
    assert.equal(killed.oomKilled, false);
  });

  /** The name of whoever started this exec's shell: the agent, or the `run` wrapper of an Engine exec. */
  const PARENT = 'tr "\\0" " " < /proc/$PPID/cmdline';

  test('a gVisor exec runs under the exec agent, as uid 1000 with seccomp and no capabilities', { skip: noRunsc && 'runsc is not registered with dockerd' }, async () => {
    const h = await sandbox('gvisor');
    const r = await run(rt, h, `${PARENT}; echo; grep -E "^(Uid|CapEff|CapPrm|Seccomp)" /proc/self/status`);
    assert.match(r.stdout, /^\/\.agentbox\/init agent /);
    assert.match(r.stdout, /Uid:\s+1000\s/);
    assert.match(r.stdout, /CapEff:\s+0{16}/);
    assert.match(r.stdout, /CapPrm:\s+0{16}/);
    assert.match(r.stdout, /Seccomp:\s+2/);
  });

  test('a gVisor sandbox that kills its exec agent gets a new one from PID 1, and execs work meanwhile', { skip: noRunsc && 'runsc is not registered with dockerd' }, async () => {
    const h = await sandbox('gvisor');
    const agentPid = async (): Promise<string> => (await run(rt, h, 'echo $PPID')).stdout.trim();
    const first = await agentPid();
    assert.match((await run(rt, h, PARENT)).stdout, /init agent/);
    // Twice in a row: the second agent is started a second after the first, not in a tight loop.
    for (let round = 0; round < 2; round++) {
      const killed = await run(rt, h, 'kill -9 $PPID; sleep 1; echo unreachable');
      assert.equal(killed.exitCode, 137);
      assert.equal((await run(rt, h, 'echo meanwhile')).stdout, 'meanwhile\n');
    }
    let parent = '';
    for (let i = 0; i < 40 && !parent.includes('init agent'); i++) {
      await sleep(250);
      parent = (await run(rt, h, PARENT)).stdout;
    }
    assert.match(parent, /init agent/);
    assert.notEqual(await agentPid(), first);
    // PID 1's child, as the sandbox user, without capabilities.
    const status = await run(rt, h, 'grep -E "^(PPid|Uid|CapEff|CapPrm)" /proc/$PPID/status');
    assert.match(status.stdout, /PPid:\s+1\n/);
    assert.match(status.stdout, /Uid:\s+1000\s+1000\s+1000\s+1000/);
    assert.match(status.stdout, /CapEff:\s+0{16}/);
    assert.match(status.stdout, /CapPrm:\s+0{16}/);
  });

  test('a new driver (a restarted daemon) finds the agents of running gVisor sandboxes again', { skip: noRunsc && 'runsc is not registered with dockerd' }, async () => {
    const first = await newRuntime();
    const h = await first.create({ id: `sbx_dx${process.pid}x${++n}`, image: 'busybox', isolation: 'gvisor', limits: LIMITS, labels: {} });
    made.push(h);
    assert.match((await run(first, h, PARENT)).stdout, /init agent/);
    await first.close();
    const second = await newRuntime();
    try {
      const r = await run(second, h, `echo again; ${PARENT}`);
      assert.match(r.stdout, /^again\n\/\.agentbox\/init agent /);
    } finally {
      await second.close();
    }
  });

  test('a gVisor sandbox that floods its agent socket costs the daemon a bounded number of descriptors', { skip: (noRunsc || !hasDebian()) && 'needs runsc and the debian test image' }, async () => {
    const h = await sandbox('gvisor', {}, 'debian');
    const fds = (): number => readdirSync('/proc/self/fd').length;
    const before = fds();
    const dial = 'import socket,time\ns=[]\nfor i in range(600):\n  c=socket.socket(socket.AF_UNIX); c.connect("/run/agentbox-agent/agent.sock"); s.append(c)\nprint(len(s), flush=True)\ntime.sleep(2)';
    const flood = collect(rt.exec(h, ['python3', '-c', dial], execOpts({})));
    let peak = 0;
    for (let i = 0; i < 20; i++) {
      peak = Math.max(peak, fds() - before);
      await sleep(100);
    }
    const r = await flood;
    assert.equal(r.stdout, '600\n', r.stderr);
    assert.ok(peak <= 260, `the daemon held ${peak} more descriptors while the sandbox dialled 600 times`);
    assert.equal((await run(rt, h, 'echo still-works')).stdout, 'still-works\n');
  });

  test('a gVisor exec whose reader stalls does not stall the sandbox\'s other execs', { skip: noRunsc && 'runsc is not registered with dockerd' }, async () => {
    const h = await sandbox('gvisor', { diskMb: 64 });
    await run(rt, h, 'dd if=/dev/zero of=/workspace/big bs=1M count=16 2>/dev/null');
    const stalled = await rt.readFile(h, '/workspace/big');
    stalled.pause(); // 16 MB that nobody reads: the agent must hold this exec's output, not all of them
    try {
      const other = run(rt, h, 'echo not-stalled');
      const winner = await Promise.race([other, sleep(10_000).then(() => 'stalled' as const)]);
      assert.notEqual(winner, 'stalled', 'another exec waited behind a reader that does not read');
      assert.equal((await other).stdout, 'not-stalled\n');
    } finally {
      stalled.destroy();
    }
  });
});
