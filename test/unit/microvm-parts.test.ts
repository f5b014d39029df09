/**
 * The microVM pieces that need no QEMU: the frame codec, the cpio writer, the module load order,
 * QEMU's command line and the boot gate. The real boots are in test/runtime/microvm-guest.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createServer } from 'node:net';
import { BootGate } from '../../src/runtime/microvm/boot-gate.js';
import { VmChannel } from '../../src/runtime/microvm/channel.js';
import { encodeFrame, encodeOpen, FrameDecoder, helloFrame, MAGIC } from '../../src/runtime/microvm/frames.js';
import { cpioArchive } from '../../src/runtime/microvm/guest/cpio.js';
import { extractVmlinux } from '../../src/runtime/microvm/guest/kernel.js';
import { moduleLoadOrder } from '../../src/runtime/microvm/guest/modules.js';
import { kernelCmdline, qemuArgs, tscKhz } from '../../src/runtime/microvm/qemu-args.js';

/** A guest frame as the agent writes it. */
function guestFrame(type: string, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.write(type, 0, 'latin1');
  h.writeUInt32BE(stream, 1);
  h.writeUInt32BE(payload.length, 5);
  return Buffer.concat([h, payload]);
}

test('the decoder skips everything before the answer to its own hello, then splits frames at any byte boundary', () => {
  const nonce = Buffer.from('12345678');
  const stale = Buffer.concat([guestFrame('O', 3, Buffer.from('old')), guestFrame('H', 0, Buffer.concat([MAGIC, Buffer.from('87654321')])), Buffer.from('garbage')]);
  const answer = guestFrame('H', 0, Buffer.concat([MAGIC, nonce]));
  const after = Buffer.concat([guestFrame('P', 1, Buffer.from([0, 0, 0, 42])), guestFrame('O', 1, Buffer.from('hello')), guestFrame('X', 1, Buffer.from([0, 0, 0, 3, 0]))]);
  const all = Buffer.concat([stale, answer, after]);
  for (const step of [1, 2, 7, all.length]) {
    const d = new FrameDecoder(nonce);
    const frames = [];
    for (let i = 0; i < all.length; i += step) frames.push(...d.push(all.subarray(i, i + step)));
    assert.equal(d.ready, true);
    assert.deepEqual(
      frames.map((f) => [f.type, f.stream, f.payload.toString('latin1')]),
      [
        ['P', 1, '\0\0\0*'],
        ['O', 1, 'hello'],
        ['X', 1, '\0\0\0\x03\0'],
      ],
      `step ${step}`,
    );
  }
  const d = new FrameDecoder(nonce);
  d.push(answer);
  assert.throws(() => d.push(guestFrame('Z', 1, Buffer.alloc(0))), /bad frame/);
});

test('host frames: header, hello, open request; a NUL byte cannot cross', () => {
  assert.deepEqual([...encodeFrame('E', 258)], [0x45, 0, 0, 1, 2, 0, 0, 0, 0]);
  const hello = helloFrame(Buffer.alloc(8, 1));
  assert.equal(hello.length, 9 + 24);
  assert.ok(hello.subarray(9, 25).equals(MAGIC));
  const open = encodeOpen(5, { kind: 'exec', cwd: '/w', timeoutMs: 1500.7, argv: ['sh', '-c', 'x'], env: { A: 'b' } });
  assert.equal(open?.subarray(9).toString(), 'exec\0/w\x001500\x003\0sh\0-c\0x\0A=b\0');
  assert.equal(encodeOpen(5, { kind: 'exec', cwd: '/', timeoutMs: 0, argv: ['a\0b'], env: {} }), undefined);
});

test('cpio newc: headers, names and data padded to 4 bytes, a trailer', () => {
  const a = cpioArchive([
    { kind: 'dir', path: 'etc' },
    { kind: 'file', path: '/etc/x', data: Buffer.from('hello'), mode: 0o600 },
    { kind: 'symlink', path: 'bin/sh', target: '/bin/busybox' },
  ]);
  assert.equal(a.subarray(0, 6).toString(), '070701');
  const text = a.toString('latin1');
  assert.ok(text.includes('etc/x\0'));
  assert.ok(text.includes('hello'));
  assert.ok(text.includes('TRAILER!!!\0'));
  // Each header starts on a 4-byte boundary.
  for (const m of text.matchAll(/070701/g)) assert.equal((m.index ?? 1) % 4, 0);
  // mode field of etc/x: regular file 0600.
  const at = text.indexOf('etc/x\0') - 110;
  assert.equal(text.slice(at + 14, at + 22), (0o100600).toString(16).padStart(8, '0'));
  assert.throws(() => cpioArchive([{ kind: 'dir', path: '../x' }]), /bad path/);
  assert.deepEqual(cpioArchive([{ kind: 'file', path: 'a', data: Buffer.from('x') }]), cpioArchive([{ kind: 'file', path: 'a', data: Buffer.from('x') }]));
});

test('modules load after what they depend on, each once', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ab-mods-'));
  try {
    writeFileSync(
      join(dir, 'modules.dep'),
      [
        'kernel/fs/overlayfs/overlay.ko:',
        'kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko',
        'kernel/drivers/virtio/virtio_ring.ko:',
        'kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
        'kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
        '',
      ].join('\n'),
    );
    assert.deepEqual(moduleLoadOrder(dir, ['virtio_mmio', 'virtio_console', 'overlay']), [
      'kernel/drivers/virtio/virtio_ring.ko',
      'kernel/drivers/virtio/virtio.ko',
      'kernel/drivers/virtio/virtio_mmio.ko',
      'kernel/drivers/char/virtio_console.ko',
      'kernel/fs/overlayfs/overlay.ko',
    ]);
    assert.throws(() => moduleLoadOrder(dir, ['virtio_blk']), (e: Error & { code?: string }) => e.code === 'runtime_unavailable');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('QEMU command line: microvm, no network, the agent port, memory and vCPUs, the disks; the TSC rate only under TCG', () => {
  const base = { vmlinux: '/k', initramfs: '/i', agentSocket: '/r/agent.sock', consoleLog: '/r/console.log', memoryMb: 256, cpus: 2, tscKhz: 2096025 };
  const tcg = qemuArgs({ ...base, accel: 'tcg' });
  const at = (args: string[], flag: string): string | undefined => args[args.indexOf(flag) + 1];
  assert.match(at(tcg, '-M') ?? '', /^microvm,/);
  assert.equal(at(tcg, '-m'), '256');
  assert.equal(at(tcg, '-smp'), '2');
  assert.ok(tcg.includes('-nodefaults') && tcg.includes('-no-user-config'));
  assert.match(at(tcg, '-append') ?? '', /tsc_early_khz=2096025/);
  assert.ok(tcg.includes('socket,id=agent,path=/r/agent.sock,server=on,wait=off'));
  assert.ok(tcg.includes('virtserialport,chardev=agent,name=org.agentbox.0'));
  assert.ok(!tcg.some((a) => /netdev|virtio-net|-nic/.test(a)), 'no network device');
  const kvm = qemuArgs({ ...base, accel: 'kvm' });
  assert.equal(at(kvm, '-accel'), 'kvm');
  assert.doesNotMatch(at(kvm, '-append') ?? '', /tsc_early_khz/);
  assert.throws(() => qemuArgs({ ...base, accel: 'tcg', memoryMb: 10 }), RangeError);
  assert.throws(() => qemuArgs({ ...base, accel: 'tcg', agentSocket: '/a,b' }), RangeError);
  // Disks: the root read-only, the sandbox's read-write, each found in the guest by its serial; a comma cannot smuggle options in.
  const disks = qemuArgs({ ...base, accel: 'tcg', rootDisk: '/roots/x.ext4', dataDisk: '/mnt/d.img' });
  assert.ok(disks.includes('id=root,file=/roots/x.ext4,format=raw,if=none,readonly=on') && disks.includes('virtio-blk-device,drive=root,serial=agentbox-root'));
  assert.ok(disks.some((a) => a.startsWith('id=disk,file=/mnt/d.img,format=raw,if=none,') && !a.includes('readonly')) && disks.includes('virtio-blk-device,drive=disk,serial=agentbox-disk'));
  assert.ok(!tcg.some((a) => a.includes('virtio-blk')), 'disks nobody asked for');
  assert.throws(() => qemuArgs({ ...base, accel: 'tcg', rootDisk: '/r.ext4,readonly=off' }), RangeError);
  // The sandbox's limits reach the guest agent on the kernel's command line.
  assert.match(at(qemuArgs({ ...base, accel: 'tcg', limits: { memoryMb: 48, pids: 32 } }), '-append') ?? '', / agentbox\.memory_mb=48 agentbox\.pids=32$/);
  assert.throws(() => qemuArgs({ ...base, accel: 'tcg', limits: { memoryMb: 48, pids: 0 } }), RangeError);
  assert.throws(() => qemuArgs({ ...base, accel: 'tcg', dataDisk: '/d.img,file=/etc/shadow' }), RangeError);
  assert.doesNotMatch(kernelCmdline({}), /tsc_early_khz/);
  const dir = mkdtempSync(join(tmpdir(), 'ab-cpuinfo-'));
  try {
    writeFileSync(join(dir, 'cpuinfo'), 'processor\t: 0\ncpu MHz\t\t: 2096.025\n');
    assert.equal(tscKhz(join(dir, 'cpuinfo')), 2096025);
    assert.equal(tscKhz(join(dir, 'missing')), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the boot gate lets `limit` boots run at once, the rest in order', async () => {
  const gate = new BootGate(2);
  let running = 0;
  let peak = 0;
  const order: number[] = [];
  await Promise.all(
    Array.from({ length: 6 }, (_, i) =>
      gate.run(async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 10));
        order.push(i);
        running--;
      }),
    ),
  );
  assert.equal(peak, 2);
  assert.deepEqual(order, [0, 1, 2, 3, 4, 5]);
  await assert.rejects(gate.run(async () => Promise.reject(new Error('boom'))), /boom/);
  assert.equal(await gate.run(async () => 7), 7, 'a failed boot frees its place');
  assert.throws(() => new BootGate(0), RangeError);
});

/** A stand-in agent on a Unix socket: answers hellos, runs nothing, and can announce a restart. */
async function fakeAgent(path: string) {
  const hellos: Buffer[] = [];
  const opened: number[] = [];
  let conn: import('node:net').Socket | undefined;
  const server = createServer((s) => {
    conn = s;
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      for (;;) {
        while (buf.length > 0 && buf[0] === 0) buf = buf.subarray(1); // the host's zero preamble
        if (buf.length < 9) return;
        const type = String.fromCharCode(buf[0] as number);
        const id = buf.readUInt32BE(1);
        const len = buf.readUInt32BE(5);
        if (buf.length < 9 + len) return;
        const payload = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        if (type === 'H') {
          hellos.push(payload.subarray(16));
          s.write(guestFrame('H', 0, payload));
        } else if (type === 'R') {
          opened.push(id);
          s.write(guestFrame('P', id, Buffer.from([0, 0, 0, 9])));
          if (payload.toString().startsWith('stats')) s.write(Buffer.concat([guestFrame('O', id, Buffer.from('1 2 3\n')), guestFrame('X', id, Buffer.from([0, 0, 0, 0, 0]))]));
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    hellos,
    opened,
    announce: () => conn?.write(guestFrame('H', 0, Buffer.concat([MAGIC, Buffer.alloc(8)]))),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

test('a channel whose agent restarts ends its streams with a conflict and greets the new agent', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ab-fake-agent-'));
  const agent = await fakeAgent(join(dir, 'agent.sock'));
  try {
    const ch = await VmChannel.connect(join(dir, 'agent.sock'), { timeoutMs: 5000 });
    const running = ch.open({ kind: 'exec', cwd: '/', timeoutMs: 0, argv: ['sleep', '9'], env: {} });
    running.sendStdin(undefined);
    assert.equal(await running.pid, 9);
    agent.announce();
    await assert.rejects(running.exit, (e: Error & { code?: string }) => e.code === 'conflict' && /restarted/.test(e.message));
    assert.deepEqual(await ch.stats(), { memoryBytes: 1, pids: 2, cpuMs: 3 });
    assert.equal(agent.hellos.length, 2, 'greeted again');
    assert.notDeepEqual(agent.hellos[0], agent.hellos[1], 'with a new nonce');
    await ch.close();
  } finally {
    await agent.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a gzip-compressed kernel image is extracted up to its payload\'s end, and a non-ELF payload is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ab-vmlinuz-'));
  try {
    const elf = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), Buffer.alloc(300_000, 7)]);
    // A bzImage: setup code, the gzip payload (no file name: flags 0), a trailer.
    writeFileSync(join(dir, 'vmlinuz'), Buffer.concat([Buffer.from('MZ setup code'), gzipSync(elf), Buffer.from('trailer')]));
    await extractVmlinux(join(dir, 'vmlinuz'), join(dir, 'vmlinux'));
    assert.ok(readFileSync(join(dir, 'vmlinux')).equals(elf));
    writeFileSync(join(dir, 'bad'), Buffer.concat([Buffer.from('MZ'), gzipSync(Buffer.from('not an elf'))]));
    await assert.rejects(extractVmlinux(join(dir, 'bad'), join(dir, 'out')), (e: Error & { code?: string }) => e.code === 'runtime_unavailable');
    writeFileSync(join(dir, 'none'), Buffer.from('nothing compressed here'));
    await assert.rejects(extractVmlinux(join(dir, 'none'), join(dir, 'out2')), /neither an LZ4 nor a gzip/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
