/**
 * The microVM guest and its channel, for real: the guest built from the installed Debian packages,
 * booted under QEMU (TCG here), and driven through the agent's framed protocol. One VM serves the
 * whole file (a TCG boot costs about a CPU-second); the kill test boots its own.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AddressInfo, createConnection, createServer } from 'node:net';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { finished } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentboxError } from '../../src/contract/errors.js';
import { SandboxFiles } from '../../src/runtime/files.js';
import { SandboxProcesses } from '../../src/runtime/processes.js';
import { chooseAccel } from '../../src/runtime/microvm/accel.js';
import { BootGate } from '../../src/runtime/microvm/boot-gate.js';
import { CHUNK_BYTES, type Frame, FrameDecoder, helloFrame, WINDOW_BYTES } from '../../src/runtime/microvm/frames.js';
import { ensureGuest, type GuestArtifacts, pruneGuests } from '../../src/runtime/microvm/guest/build.js';
import { vmExec, vmFileOps, vmProcOps } from '../../src/runtime/microvm/guest-ops.js';
import { MicroVm, QEMU_BINARY } from '../../src/runtime/microvm/vm.js';
import { ensureRootDisk } from '../../src/runtime/microvm/guest/root-disk.js';
import { testImages } from '../helpers/images.js';
import type { SandboxHandle } from '../../src/runtime/types.js';
import { collect, execOpts } from '../helpers/collect.js';

const qemu = spawnSync(QEMU_BINARY, ['--version'], { encoding: 'utf8' });
const skip = qemu.error ? `${QEMU_BINARY} is not installed (apt-get install qemu-system-x86; scripts/install-system-deps.sh does it)` : false;

const MEMORY_MB = 256;
/** Named after this process, so a run that was killed (no `after`) is cleaned up by the next one. */
const work = join(tmpdir(), `ab-microvm-test-${process.pid}`);
for (const name of readdirSync(tmpdir())) {
  const pid = Number(/^ab-microvm-test-(\d+)$/.exec(name)?.[1]);
  if (pid && pid !== process.pid && !existsSync(`/proc/${pid}`)) rmSync(join(tmpdir(), name), { recursive: true, force: true });
}
mkdirSync(work, { recursive: true });
const gate = new BootGate(2);
const handle: SandboxHandle = { id: 'sbx_microvmtest', runtime: 'local', data: {} };
let guest: GuestArtifacts;
let vm: MicroVm;

function bootVm(): Promise<MicroVm> {
  return MicroVm.start({ guest, memoryMb: MEMORY_MB, cpus: 1, runRoot: work, gate, name: `agentbox-test-${process.pid}`, dieWithParent: true });
}

const sh = (cmd: string, extra: Parameters<typeof execOpts>[0] = {}) => collect(vmExec(vm.channel, ['sh', '-c', cmd], execOpts(extra)));

/** QEMU processes started for this file, found by the name they carry. */
function ourQemus(): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`agentbox-test-${process.pid}`);
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe('microvm guest', { skip }, () => {
  before(async () => {
    guest = await ensureGuest({ dir: join(work, 'guest') });
    vm = await bootVm();
    console.log(`# boot to agent ready: ${vm.bootMs} ms (guest ${guest.fingerprint}, kernel ${guest.kernelVersion})`);
  });
  after(async () => {
    await vm?.kill();
    rmSync(work, { recursive: true, force: true });
  });

  test('the guest build is fingerprinted: a second call builds nothing, two at once agree', async () => {
    const again = await ensureGuest({ dir: join(work, 'guest') });
    assert.equal(again.built, false);
    assert.equal(again.fingerprint, guest.fingerprint);
    const dir = join(work, 'guest-race');
    const [a, b] = await Promise.all([ensureGuest({ dir }), ensureGuest({ dir })]);
    assert.equal(a.fingerprint, b.fingerprint);
    assert.deepEqual(readdirSync(dir), [`guest-${a.fingerprint}`], 'no temporary directory is left');
    // A builder killed half-way leaves its directory (the next build or a prune removes it); a prune
    // removes the guests no longer wanted.
    mkdirSync(join(dir, `.build-${a.fingerprint}-999999999-abcd1234`));
    mkdirSync(join(dir, 'guest-0123456789abcdef'));
    assert.deepEqual(await pruneGuests(dir, [a.fingerprint]), ['0123456789abcdef']);
    assert.deepEqual(readdirSync(dir), [`guest-${a.fingerprint}`]);
  });

  test('its own kernel: uname -r is the guest kernel, not the host\'s', async () => {
    const r = await sh('uname -r');
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout.trim(), guest.kernelVersion);
    assert.notEqual(r.stdout.trim(), release());
  });

  test('MemTotal matches the memory asked for', async () => {
    const r = await sh('grep MemTotal /proc/meminfo');
    const kb = Number(/(\d+)/.exec(r.stdout)?.[1]);
    // The kernel keeps its own image and reserved pages out of MemTotal: within 15% below, never above.
    assert.ok(kb <= MEMORY_MB * 1024 && kb > MEMORY_MB * 1024 * 0.85, `MemTotal ${kb} kB for ${MEMORY_MB} MiB`);
  });

  test('exec: stdout, stderr, exit code, stdin, env and cwd', async () => {
    const r = await sh('echo out; echo err >&2; exit 7');
    assert.deepEqual([r.stdout, r.stderr, r.exitCode, r.timedOut], ['out\n', 'err\n', 7, false]);
    const input = randomBytes(300_000).toString('base64');
    const c = await collect(vmExec(vm.channel, ['sh', '-c', 'wc -c; cat >/dev/null'], execOpts({ stdin: Readable.from([Buffer.from(input)]) })));
    assert.equal(c.stdout.trim(), String(input.length));
    const e = await sh('echo "$FOO:$AGENTBOX_EXEC_ID:$(pwd)"', { env: { FOO: 'bar' }, cwd: '/tmp', execId: 'exe_env1' });
    assert.equal(e.stdout, 'bar:exe_env1:/tmp\n');
    const missing = await collect(vmExec(vm.channel, ['no-such-command'], execOpts()));
    assert.equal(missing.exitCode, 127);
  });

  test('commands run as uid 1000 with no capabilities', async () => {
    const r = await sh('id -u; id -g; grep -E "^Cap(Eff|Prm|Bnd|Amb):|^NoNewPrivs:" /proc/self/status');
    const [uid, gid, ...caps] = r.stdout.trim().split('\n');
    assert.equal(uid, '1000');
    assert.equal(gid, '1000');
    for (const line of caps) {
      if (line.startsWith('NoNewPrivs')) assert.match(line, /1$/);
      else assert.match(line, /:\s*0+$/, line);
    }
    const port = await sh('ls -l /dev/vport*; cat /dev/vport*p1 </dev/null; echo rc=$?');
    assert.match(port.stdout, /^crw-------\s+1 root\s+root/m, 'the agent\'s port is root\'s');
    assert.match(port.stdout, /rc=1/);
    assert.match(port.stderr, /Permission denied/, 'the sandbox user cannot speak to the host on the agent\'s port');
    const root = await sh('touch /etc/x 2>&1; echo $?');
    assert.notEqual(root.stdout.trim().split('\n').pop(), '0', 'the sandbox user cannot write outside /workspace and /tmp');
  });

  test('a timeout kills the whole tree and exits 124', async () => {
    const t0 = performance.now();
    const r = await sh('sleep 100 & setsid sh -c "sleep 101" & sleep 102', { timeoutMs: 1000, execId: 'exe_timeout1' });
    assert.equal(r.exitCode, 124);
    assert.equal(r.timedOut, true);
    assert.ok(performance.now() - t0 < 20_000, 'ended by the 1 s timeout, not by the 100 s sleeps');
    const left = await sh('ps -o args | grep -c "^sleep 10[012]" || true');
    assert.equal(left.stdout.trim(), '0', 'no sleep of the killed tree is left');
  });

  test('a background job outlives its exec, which returns at once; its later output is drained', async () => {
    const t0 = performance.now();
    // The jobs start writing after the leader's exit: what they wrote before it would be the exec's output.
    const r = await sh('(sleep 30; echo late) & (sleep 0.5; while :; do echo spam; sleep 0.2; done) & echo started');
    const ms = performance.now() - t0;
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'started\n');
    assert.ok(ms < 15_000, `the exec returned after ${Math.round(ms)} ms, not when the 30 s job ended`);
    const ps = await sh('ps -o pid,ppid,args | grep "sleep 30" | grep -v grep');
    assert.match(ps.stdout, /^\s*\d+\s+\d+\s+sleep 30$/m, 'the job still runs');
    assert.match(ps.stdout, /^\s*\d+\s+1\s+sh -c \(sleep 30/m, 'its subshell was reparented to init');
    // Still serving while the job writes into its drained pipe.
    assert.equal((await sh('echo next')).stdout, 'next\n');
    await sh('pkill -f "while :"; pkill -f "sleep 30"; true');
  });

  test('abort and signals reach the command', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    const r = await collect(vmExec(vm.channel, ['sleep', '30'], execOpts({ signal: ac.signal })));
    assert.equal(r.exitCode, 143);
    const stream = vm.channel.open({ kind: 'exec', cwd: '/workspace', timeoutMs: 0, argv: ['sleep', '30'], env: {} });
    stream.sendStdin(undefined);
    await stream.pid;
    stream.signal(15);
    assert.deepEqual(await stream.exit, { code: 143, reason: 'exited' });
  });

  test('files: write, read, list, remove round-trip, a few MB byte-identical', async () => {
    const files = new SandboxFiles(vmFileOps(() => vm.channel));
    const data = randomBytes(4 * 1024 * 1024 + 123);
    const t0 = performance.now();
    const n = await files.writeFile(handle, '/workspace/dir/blob.bin', Readable.from([data]));
    const wMs = performance.now() - t0;
    assert.equal(n, data.length);
    const t1 = performance.now();
    const back = await buffer(await files.readFile(handle, '/workspace/dir/blob.bin'));
    const rMs = performance.now() - t1;
    assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(data).digest('hex'));
    console.log(`# 4 MiB: write ${Math.round(wMs)} ms (${(4 / (wMs / 1000)).toFixed(1)} MiB/s), read ${Math.round(rMs)} ms (${(4 / (rMs / 1000)).toFixed(1)} MiB/s)`);
    const list = await files.listDir(handle, '/workspace/dir');
    assert.deepEqual(list.map((e) => [e.name, e.type, e.size]), [['blob.bin', 'file', data.length]]);
    await files.removePath(handle, '/workspace/dir');
    await assert.rejects(files.readFile(handle, '/workspace/dir/blob.bin'), (e: AgentboxError) => e.code === 'not_found');
    await assert.rejects(files.writeFile(handle, '/etc/nope', Readable.from([Buffer.from('x')])), (e: AgentboxError) => e.code === 'forbidden');
    const owner = await sh('touch /workspace/o && stat -c %u /workspace/o');
    assert.equal(owner.stdout.trim(), '1000');
  });

  test('ps, signal and stats', async () => {
    const procs = new SandboxProcesses(vmProcOps(() => vm.channel));
    await sh('sleep 60 &', { execId: 'exe_bg_ps' });
    const list = await procs.processes(handle);
    const job = list.find((p) => p.execId === 'exe_bg_ps' && p.command.startsWith('sleep'));
    assert.ok(job, JSON.stringify(list));
    assert.equal(job.uid, 1000);
    assert.equal(list[0]?.pid, 1);
    await procs.signalProcess(handle, job.pid, 'KILL');
    await assert.rejects(procs.signalProcess(handle, 1, 'KILL'), (e: AgentboxError) => e.code === 'forbidden');
    const stats = await vm.channel.stats();
    assert.ok(stats.memoryBytes > 1 << 20 && stats.memoryBytes < MEMORY_MB << 20, JSON.stringify(stats));
    assert.ok(stats.pids > 3 && stats.cpuMs > 0, JSON.stringify(stats));
  });

  test('concurrent streams are multiplexed over the one port', async () => {
    const runs = await Promise.all(Array.from({ length: 8 }, (_, i) => sh(`sleep 0.$((RANDOM % 5)); head -c ${100_000 + i} /dev/zero | tr '\\0' x; echo; echo ${i} >&2`)));
    runs.forEach((r, i) => {
      assert.equal(r.exitCode, 0);
      assert.equal(r.stdout.length, 100_000 + i + 1);
      assert.equal(r.stderr, `${i}\n`);
    });
  });

  test('credit: a command that never reads its stdin, or a reader that stops, stalls only its own stream', async () => {
    // 8 MiB offered to a command that ignores stdin: the exec still ends when the command does.
    const big = Readable.from((function* () {
      for (let i = 0; i < 128; i++) yield Buffer.alloc(65536, 1);
    })());
    const ignoring = await collect(vmExec(vm.channel, ['sh', '-c', 'sleep 0.3; echo done'], execOpts({ stdin: big })));
    assert.deepEqual([ignoring.exitCode, ignoring.stdout], [0, 'done\n']);
    // A stream whose stdout nobody reads fills its credit and waits; another exec runs meanwhile.
    const flood = vm.channel.open({ kind: 'exec', cwd: '/workspace', timeoutMs: 0, argv: ['sh', '-c', 'head -c 20000000 /dev/zero'], env: { PATH: '/bin:/usr/bin' } });
    flood.sendStdin(undefined);
    flood.stderr.resume();
    await flood.pid;
    await new Promise((r) => setTimeout(r, 300));
    // At most the stream's buffer (one window) plus the credit the agent had left (one window) plus a frame.
    assert.ok(flood.stdout.readableLength <= 2 * WINDOW_BYTES + CHUNK_BYTES, `buffered on the host: ${flood.stdout.readableLength}`);
    const other = await sh('echo meanwhile');
    assert.equal(other.stdout, 'meanwhile\n');
    let got = 0;
    flood.stdout.on('data', (c: Buffer) => (got += c.length));
    assert.deepEqual(await flood.exit, { code: 0, reason: 'exited' });
    await finished(flood.stdout);
    assert.equal(got, 20_000_000);
  });

  test('an OOM kill inside the guest is 137 with oomKilled, and the agent survives it', async () => {
    const r = await sh('awk \'BEGIN { s = "xxxxxxxxxxxxxxxx"; while (1) s = s s }\'', { timeoutMs: 60_000 });
    assert.equal(r.exitCode, 137, r.stderr);
    assert.equal(r.oomKilled, true);
    assert.equal((await sh('echo alive')).stdout, 'alive\n');
  });

  test('the host\'s filesystem is not visible', async () => {
    const marker = join(work, `host-marker-${randomBytes(6).toString('hex')}`);
    writeFileSync(marker, 'secret');
    const r = await sh(`ls ${marker} 2>&1; ls / ; cat /proc/mounts`);
    assert.ok(existsSync(marker));
    assert.doesNotMatch(r.stdout, /secret/);
    assert.match(r.stdout, /No such file/);
    assert.doesNotMatch(r.stdout, /\/work|\/home|virtiofs|9p/);
    const net = await sh('ls /sys/class/net');
    assert.equal(net.stdout.trim(), 'lo', 'no network device');
  });

  test('exec round trip', async () => {
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      await collect(vmExec(vm.channel, ['true'], execOpts()));
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    console.log(`# exec round trip (true): median ${times[10]?.toFixed(1)} ms, p95 ${times[18]?.toFixed(1)} ms`);
  });

  test('the agent survives the host disconnecting, even mid-exec, and serves the next host', async () => {
    const stream = vm.channel.open({ kind: 'exec', cwd: '/workspace', timeoutMs: 0, argv: ['sh', '-c', 'echo $$ > /tmp/orphan.pid; echo ready; exec sleep 60'], env: { PATH: '/bin' } });
    stream.sendStdin(undefined);
    stream.stderr.resume();
    await once(stream.stdout, 'data');
    for (let i = 0; i < 3; i++) await vm.reconnect();
    await assert.rejects(stream.exit, (e: AgentboxError) => e.code === 'conflict');
    const r = await sh('echo back; kill -0 $(cat /tmp/orphan.pid) 2>/dev/null && echo alive || echo gone');
    assert.equal(r.stdout, 'back\ngone\n', 'the stream of the old host was ended');
  });

  test('malformed frames get a refusal or a resync, never a dead agent', async () => {
    await vm.channel.close();
    const sock = createConnection(vm.agentSocket);
    await once(sock, 'connect');
    const nonce = randomBytes(8);
    const frames: Frame[] = [];
    let decoder = new FrameDecoder(nonce);
    sock.on('data', (c: Buffer) => frames.push(...decoder.push(c)));
    const until = async (pred: () => boolean): Promise<void> => {
      for (let i = 0; i < 500 && !pred(); i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(pred(), JSON.stringify(frames.map((f) => [f.type, f.stream])));
    };
    sock.write(helloFrame(nonce));
    await until(() => decoder.ready);
    const raw = (type: string, id: number, payload: Buffer): Buffer => {
      const h = Buffer.alloc(9);
      h.write(type, 0, 'latin1');
      h.writeUInt32BE(id, 1);
      h.writeUInt32BE(payload.length, 5);
      return Buffer.concat([h, payload]);
    };
    sock.write(raw('R', 1, Buffer.alloc(100))); // 100 empty strings
    sock.write(raw('R', 2, Buffer.from('exec\0/\x000\x00999999999999\0sh\0'))); // argc far beyond the strings
    await until(() => frames.filter((f) => f.type === 'X').length === 2);
    assert.deepEqual(frames.filter((f) => f.type === 'X').map((f) => f.payload.readUInt32BE(0)), [125, 125]);
    // An unknown frame type puts the agent out of step: only a new hello brings it back.
    sock.write(raw('Z', 3, Buffer.alloc(0)));
    const nonce2 = randomBytes(8);
    decoder = new FrameDecoder(nonce2);
    frames.length = 0;
    sock.write(helloFrame(nonce2));
    await until(() => decoder.ready);
    sock.destroy();
    await vm.reconnect();
    assert.equal((await sh('echo fine')).stdout, 'fine\n');
  });

  test('KVM is used only when a KVM guest really boots', async () => {
    const none = await chooseAccel({ guest, kvmDevice: join(work, 'no-kvm') });
    assert.equal(none.accel, 'tcg');
    assert.match(none.reason, /does not exist/);
    if (existsSync('/dev/kvm')) {
      const real = await chooseAccel({ guest, runRoot: work, timeoutMs: 20_000 });
      console.log(`# /dev/kvm: ${real.accel} (${real.reason})`);
      assert.equal(ourQemus().length, 1, 'the probe\'s VM is gone');
    }
  });

  test('kill leaves nothing behind: no QEMU process, no socket, no directory', async () => {
    const other = await bootVm();
    try {
      assert.equal((await collect(vmExec(other.channel, ['true'], execOpts()))).exitCode, 0);
      assert.ok(existsSync(other.agentSocket));
    } finally {
      await other.kill();
    }
    const dir = other.runDir;
    assert.equal(existsSync(dir), false);
    assert.deepEqual(ourQemus().filter((p) => p === other.pid), []);
    await assert.rejects(collect(vmExec(other.channel, ['true'], execOpts())), (e: AgentboxError) => e.code === 'conflict');
  });

  test('QEMU is jailed: a user of its own, no capabilities, no network; as it, the host\'s private files, the network and the other VMs are out of reach', async () => {
    const status = (pid: number): Record<string, string> =>
      Object.fromEntries(readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]));
    const other = await bootVm();
    const server = createServer((c) => c.end('host loopback\n'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    // What a QEMU taken over by its guest could do: run code as QEMU's user, in QEMU's namespaces.
    const asQemu = (pid: number, cmd: string) => {
      const st = status(pid);
      const [uid] = st.Uid!.split(/\s+/);
      const [gid] = st.Gid!.split(/\s+/);
      return spawnSync('nsenter', ['--target', String(pid), '--net', '--ipc', '--', 'setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--', 'sh', '-c', cmd], { encoding: 'utf8' });
    };
    const privateDir = join(work, 'private');
    mkdirSync(privateDir, { mode: 0o700, recursive: true });
    writeFileSync(join(privateDir, 'secret'), 'the daemon\'s\n', { mode: 0o644 });
    try {
      for (const pid of [vm.pid, other.pid]) {
        const st = status(pid);
        const ids = [...st.Uid!.split(/\s+/), ...st.Gid!.split(/\s+/)].map(Number);
        assert.ok(ids.every((id) => id === ids[0] && id >= 1_700_000_000), `QEMU ${pid} runs as ${st.Uid} / ${st.Gid}`);
        assert.equal(st.Groups, '');
        for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) assert.equal(st[set], '0000000000000000', `${set} of QEMU ${pid}`);
        assert.equal(st.NoNewPrivs, '1');
        assert.equal(st.Seccomp, '2', 'QEMU\'s own syscall filter');
        assert.notEqual(readlinkSync(`/proc/${pid}/ns/net`), readlinkSync('/proc/self/ns/net'), 'a network namespace of its own');
      }
      assert.notEqual(status(vm.pid).Uid, status(other.pid).Uid, 'each VM its own user');

      // The control: as QEMU, QEMU itself is in reach (so a refusal below is the jail's, not the probe's).
      const self = asQemu(other.pid, `kill -0 ${other.pid} && echo reached`);
      assert.equal(self.stdout.trim(), 'reached', self.stderr);

      const otherVm = asQemu(other.pid, `kill -0 ${vm.pid} 2>&1; head -c1 /proc/${vm.pid}/mem 2>&1; ls /proc/${vm.pid}/fd 2>&1; echo done`);
      assert.match(otherVm.stdout, /not permitted/i, 'signalling another VM\'s QEMU');
      assert.match(otherVm.stdout, /\/mem'.*Permission denied/, 'reading another VM\'s memory');
      assert.match(otherVm.stdout, /\/fd'.*Permission denied/, 'another VM\'s open files');

      const files = asQemu(other.pid, `cat ${join(privateDir, 'secret')} 2>&1; touch ${join(other.runDir, 'vm.json')} 2>&1; echo done`);
      assert.doesNotMatch(files.stdout, /the daemon's/, 'a file in a directory of root\'s');
      assert.match(files.stdout, /vm\.json.*Permission denied/, 'the daemon\'s side of the VM\'s directory');

      const net = asQemu(other.pid, `${process.execPath} -e "require('net').connect(${port}, '127.0.0.1').on('connect', () => { console.log('connected'); process.exit(0) }).on('error', (e) => { console.log(e.code); process.exit(0) })"`);
      assert.match(net.stdout.trim(), /^(ENETUNREACH|ECONNREFUSED|EADDRNOTAVAIL)$/, `the host's loopback from QEMU's namespace: ${net.stdout}${net.stderr}`);
      // ...while from the host's namespace the same server answers.
      const control = spawnSync(process.execPath, ['-e', `require('net').connect(${port}, '127.0.0.1').on('connect', () => { console.log('connected'); process.exit(0) })`], { encoding: 'utf8' });
      assert.equal(control.stdout.trim(), 'connected');

      // And the VM works through all of it.
      assert.equal((await collect(vmExec(other.channel, ['true'], execOpts()))).exitCode, 0);
    } finally {
      server.close();
      await other.kill();
      rmSync(privateDir, { recursive: true, force: true });
    }
  });

  test('named volumes: a host directory through a virtiofsd of its own, as uid 1000; read-only enforced by the server too; host symlinks lead into the guest, not the host', async () => {
    const images = await testImages();
    const busybox = images.resolve('busybox');
    const root = await ensureRootDisk(join(work, 'roots'), { ...busybox.info, rootfs: busybox.rootfs });
    const disk = join(work, 'vol-disk.img');
    spawnSync('truncate', ['-s', '64M', disk]);
    assert.equal(spawnSync('mkfs.ext4', ['-q', '-F', disk]).status, 0);
    const rw = join(work, 'vol-rw');
    const ro = join(work, 'vol-ro');
    const marker = join(work, `host-secret-${process.pid}`);
    for (const d of [rw, ro]) {
      mkdirSync(d, { recursive: true });
      chownSync(d, 1000, 1000);
    }
    writeFileSync(join(ro, 'kept'), 'read me\n');
    writeFileSync(marker, 'HOST-SECRET\n');
    symlinkSync(marker, join(rw, 'escape'));
    const other = await MicroVm.start({
      guest, memoryMb: 128, cpus: 1, runRoot: work, gate, name: `agentbox-test-${process.pid}`, dieWithParent: true, rootDisk: root, dataDisk: disk,
      volumes: [{ source: rw, target: '/data', readOnly: false }, { source: ro, target: '/opt/ro volume', readOnly: true }],
    });
    try {
      const run = async (cmd: string) => collect(vmExec(other.channel, ['sh', '-c', cmd], execOpts({ timeoutMs: 60_000 })));
      const r = await run('echo from-guest > /data/new && mkdir /data/d && stat -c %u /data/new; cat "/opt/ro volume/kept"; echo no > "/opt/ro volume/x"; echo rc=$?; cat /data/escape; echo end');
      assert.equal(r.stdout, '1000\nread me\nrc=1\nend\n', r.stderr);
      assert.match(r.stderr, /Read-only file system/);
      assert.doesNotMatch(r.stdout + r.stderr, /HOST-SECRET/, 'a symlink in a volume reached the host\'s file');
      assert.equal(readFileSync(join(rw, 'new'), 'utf8'), 'from-guest\n');
      assert.equal(statSync(join(rw, 'd')).uid, 1000, 'the guest\'s user is uid 1000 on the host');
      // The servers: root in namespaces of their own, the read-only one behind a read-only mount of
      // its directory (a guest kernel that ignored its own ro could still not write).
      const servers = readdirSync('/proc')
        .filter((p) => /^\d+$/.test(p))
        .filter((p) => {
          try {
            return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`--socket-path=${join(other.runDir, 'qemu')}`);
          } catch {
            return false;
          }
        });
      assert.ok(servers.length >= 2, `virtiofsd processes: ${servers.length}`);
      for (const pid of servers) assert.notEqual(readlinkSync(`/proc/${pid}/ns/mnt`), readlinkSync('/proc/self/ns/mnt'));
      // The one serving (virtiofsd forks into its sandbox) has the volume as its root.
      const roServers = servers.filter((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`source=${ro}`));
      const roots = roServers.map((p) => readFileSync(`/proc/${p}/mountinfo`, 'utf8').split('\n').find((l) => l.split(' ')[4] === '/') ?? '');
      assert.ok(
        roots.some((l) => (l.split(' ')[5] ?? '').split(',').includes('ro')),
        `the read-only volume's server's root: ${roots.join(' | ')}`,
      );
      await other.kill();
      // They end with their VM.
      await sleep(500);
      for (const pid of servers) assert.equal(existsSync(`/proc/${pid}`), false, `virtiofsd ${pid} outlived its VM`);
    } finally {
      await other.kill();
      for (const d of [rw, ro]) rmSync(d, { recursive: true, force: true });
      rmSync(marker, { force: true });
    }
  });

  test('vCPUs as asked; shutdown powers the guest off cleanly', async () => {
    const other = await MicroVm.start({ guest, memoryMb: 128, cpus: 2, runRoot: work, gate, name: `agentbox-test-${process.pid}`, dieWithParent: true });
    const cpus = await collect(vmExec(other.channel, ['nproc'], execOpts())).catch(async (err: unknown) => {
      await other.kill();
      throw err;
    });
    assert.equal(cpus.stdout.trim(), '2');
    const t0 = performance.now();
    await other.shutdown().finally(() => other.kill());
    const exit = await other.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
    console.log(`# power off: ${Math.round(performance.now() - t0)} ms`);
    assert.equal(existsSync(other.runDir), false);
  });

  test('an image as the root (read-only, shared) and the sandbox\'s own disk as /workspace and /tmp: the image\'s files, a quota, nothing of the host, and the files are on the disk after power-off', async () => {
    const images = await testImages();
    const busybox = images.resolve('busybox');
    const roots = join(work, 'roots');
    const [a, b] = await Promise.all([ensureRootDisk(roots, { ...busybox.info, rootfs: busybox.rootfs }), ensureRootDisk(roots, { ...busybox.info, rootfs: busybox.rootfs })]);
    assert.equal(a, b, 'two builds at once disagree');
    assert.deepEqual(readdirSync(roots), [a.split('/').pop()], 'a partial build is left');
    const disk = join(work, 'disk.img');
    spawnSync('truncate', ['-s', '64M', disk]);
    assert.equal(spawnSync('mkfs.ext4', ['-q', '-F', disk]).status, 0);
    const other = await MicroVm.start({ guest, memoryMb: 128, cpus: 1, runRoot: work, gate, name: `agentbox-test-${process.pid}`, dieWithParent: true, rootDisk: a, dataDisk: disk });
    try {
      const run = async (cmd: string) => collect(vmExec(other.channel, ['sh', '-c', cmd], execOpts({ timeoutMs: 60_000 })));
      const r = await run('uname -r; id -u; pwd; cat /etc/passwd | grep -c sandbox; touch /etc/x 2>/dev/null || echo read-only; echo kept > /workspace/f; echo t > /tmp/t; stat -c %u /workspace/f');
      const [kernel, uid, cwd, users, ro, owner] = r.stdout.trim().split('\n');
      assert.notEqual(kernel, release(), 'the guest runs the host\'s kernel');
      assert.equal(kernel, guest.kernelVersion);
      assert.deepEqual([uid, cwd, users, ro, owner], ['1000', '/workspace', '1', 'read-only', '1000'], r.stdout + r.stderr);
      // The host's root is nowhere: what the guest sees is the image's tree.
      const mine = await run(`test -e ${JSON.stringify(work)} && echo host-visible; ls / | tr '\\n' ' '`);
      assert.doesNotMatch(mine.stdout, /host-visible/);
      const full = await run('dd if=/dev/zero of=/workspace/big bs=1M count=100 2>&1; rm -f /workspace/big');
      assert.match(full.stdout, /No space left on device/);
      assert.equal((await run('sync; echo synced')).stdout, 'synced\n');
      await other.shutdown();
    } finally {
      await other.kill();
    }
    // The disk holds what the guest wrote (read with debugfs, no mount).
    const dumped = spawnSync('debugfs', ['-R', 'cat /workspace/f', disk], { encoding: 'utf8' });
    assert.equal(dumped.stdout, 'kept\n', dumped.stderr);
  });
});
