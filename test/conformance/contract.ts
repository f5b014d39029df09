/**
 * The behaviour every runtime driver must show, run against the real thing.
 * `runRuntimeContract` is called once per driver (local, docker, docker+gvisor); a skipped test
 * must carry a reason.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, test, type TestContext } from 'node:test';
import { BadRequestError, ConflictError, ForbiddenError, NotFoundError } from '../../src/contract/errors.js';
import type { Isolation, Limits } from '../../src/contract/model.js';
import type { Runtime, RuntimeVolume, SandboxHandle } from '../../src/runtime/types.js';
import { scratchVolumeStore } from '../../src/storage/scratch-store.js';
import type { PtyProcess } from '../../src/runtime/pty.js';
import { mountTable } from '../../src/storage/host-tools.js';
import { collect, execOpts, run } from '../helpers/collect.js';
import { readAll } from '../../src/sdk/client.js';
import { TEST_IMAGES_DIR } from '../helpers/images.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

export interface ContractOpts {
  name: string;
  isolation: Isolation;
  newRuntime: () => Promise<Runtime>;
  /** Tests this driver cannot pass, each with the reason. */
  skip?: { reason: string; tests: string[] }[];
  /** Whether the debian image (python3) is available. */
  debian: boolean;
  /**
   * The driver's saved state holds no host connection of a sandbox with egress, so it may hibernate
   * one (microvm: the relays live on the host side of the agent's channel and are made again at wake).
   * Otherwise such a sandbox must be refused.
   */
  hibernatesWithEgress?: boolean;
}

const LIMITS: Limits = { cpus: 1, memoryMb: 256, pids: 128, diskMb: 64 };
let counter = 0;

export function runRuntimeContract(opts: ContractOpts): void {
  const skipReason = (name: string): string | undefined => opts.skip?.find((s) => s.tests.includes(name))?.reason;
  const it = (name: string, fn: (t: TestContext) => Promise<void>): void => {
    const reason = skipReason(name);
    if (reason) test(name, { skip: reason }, fn);
    else test(name, fn);
  };

  describe(`runtime contract: ${opts.name}`, () => {
    let rt: Runtime;
    let sb: SandboxHandle;
    const created: SandboxHandle[] = [];

    const newSandbox = async (limits: Partial<Limits> = {}, image = 'busybox', volumes?: RuntimeVolume[]): Promise<SandboxHandle> => {
      const h = await rt.create({ id: `sbx_ct${process.pid}x${++counter}`, image, isolation: opts.isolation, limits: { ...LIMITS, ...limits }, labels: {}, ...(volumes ? { volumes } : {}) });
      created.push(h);
      return h;
    };

    before(async () => {
      rt = await opts.newRuntime();
      const probe = await rt.probe();
      assert.ok(probe.ok, `probe failed: ${probe.reason}`);
      sb = await newSandbox();
    });

    after(async () => {
      for (const h of created) await rt.destroy(h);
      const left = (await rt.list()).filter((o) => created.some((h) => h.id === o.id));
      await rt.close();
      assert.deepEqual(left, [], 'sandboxes left behind on the host');
    });

    it('runs a command and passes stdout, stderr and the exit code through', async () => {
      const r = await run(rt, sb, 'echo out; echo err >&2; exit 3');
      assert.equal(r.stdout, 'out\n');
      assert.equal(r.stderr, 'err\n');
      assert.equal(r.exitCode, 3);
      assert.equal(r.timedOut, false);
    });

    it('delivers stdin and the given environment, and nothing of the host environment', async () => {
      process.env.AGENTBOX_TEST_HOST_SECRET = 'host-env-leak';
      try {
        const r = await collect(rt.exec(sb, ['sh', '-c', 'cat; echo "$GREETING"; env'], execOpts({ stdin: Buffer.from('from-stdin\n'), env: { GREETING: 'hello' } })));
        assert.match(r.stdout, /^from-stdin\nhello\n/);
        assert.doesNotMatch(r.stdout, /host-env-leak/);
        assert.match(r.stdout, /^PATH=/m);
      } finally {
        delete process.env.AGENTBOX_TEST_HOST_SECRET;
      }
    });

    it('runs in /workspace by default and honours cwd', async () => {
      assert.equal((await run(rt, sb, 'pwd')).stdout, '/workspace\n');
      assert.equal((await run(rt, sb, 'pwd', { cwd: '/tmp' })).stdout, '/tmp\n');
    });

    it('reports a missing command as exit 127', async () => {
      const r = await collect(rt.exec(sb, ['no-such-command-xyz'], execOpts()));
      assert.equal(r.exitCode, 127);
    });

    it('keeps files between execs', async () => {
      await run(rt, sb, 'echo kept > /workspace/keep.txt');
      assert.equal((await run(rt, sb, 'cat /workspace/keep.txt')).stdout, 'kept\n');
    });

    it('kills the whole command tree on timeout (exit 124)', async () => {
      const t0 = Date.now();
      const r = await run(rt, sb, 'sleep 30 & sleep 30; echo finished', { timeoutMs: 700 });
      assert.equal(r.timedOut, true);
      assert.equal(r.exitCode, 124);
      assert.doesNotMatch(r.stdout, /finished/);
      assert.ok(Date.now() - t0 < 10_000, 'timeout took too long to return');
      // Zombies waiting for PID 1 to reap them are dead already: count live sleeps only.
      const ps = await run(rt, sb, 'for s in /proc/[0-9]*/stat; do cat $s; echo; done 2>/dev/null | grep -c "(sleep) [RSD]" || true');
      assert.equal(ps.stdout.trim(), '0', 'sleep processes survived the timeout');
    });

    /** Live processes whose command line matches `pattern` (write one letter in brackets, so the grep never matches itself). */
    const countAlive = async (h: SandboxHandle, pattern: string): Promise<number> => {
      const r = await run(rt, h, `for c in /proc/[0-9]*/cmdline; do tr "\\0" " " < $c 2>/dev/null; echo; done | grep -c -e '${pattern}' || true`);
      return Number(r.stdout.trim());
    };

    it('returns when the leader exits, while a background job holding its output runs on', async () => {
      const h = await newSandbox();
      const t0 = Date.now();
      const r = await run(rt, h, 'sleep 999 & echo started', { timeoutMs: 120_000 });
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(r.timedOut, false);
      assert.equal(r.stdout, 'started\n');
      assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms: the exec waited for its background job`);
      assert.equal(await countAlive(h, 'slee[p] 999'), 1, 'the background job did not survive its exec');
      await rt.destroy(h);
    });

    it('keeps a background server that logs to its inherited stdout running and usable from the next exec', async () => {
      const h = await newSandbox();
      // A logger on the exec's stdout and stderr (a closed pipe would kill it with SIGPIPE), and a fifo server.
      const started = await run(rt, h, [
        'mkfifo /tmp/srv.fifo',
        '(i=0; while true; do i=$((i+1)); echo $i > /tmp/srv.count; echo "tick $i"; echo "tock $i" >&2; sleep 0.1; done) &',
        '(while true; do echo pong > /tmp/srv.fifo; done) &',
        'echo started',
      ].join('\n'), { timeoutMs: 120_000 });
      assert.equal(started.exitCode, 0, started.stderr);
      assert.match(started.stdout, /started/);
      // The logger keeps counting long after its exec returned (it writes ten lines a second). A read
      // can meet the count file between its truncation and its new number: empty reads are read again.
      const r = await run(rt, h, 'until [ -n "$a" ]; do a=$(cat /tmp/srv.count); done; for i in $(seq 100); do sleep 0.1; b=$(cat /tmp/srv.count); [ -n "$b" ] && [ "$b" != "$a" ] && break; done; echo "$a $b"; cat /tmp/srv.fifo', { timeoutMs: 60_000 });
      const [a, b, pong] = r.stdout.trim().split(/\s+/);
      assert.ok(Number(b) > Number(a), `the logger stopped: counts ${a} then ${b}; stderr ${r.stderr}`);
      assert.equal(pong, 'pong');
      const later = await run(rt, h, 'until [ -n "$a" ]; do a=$(cat /tmp/srv.count); done; for i in $(seq 100); do sleep 0.1; b=$(cat /tmp/srv.count); [ -n "$b" ] && [ "$b" != "$a" ] && break; done; echo "$a $b"', { timeoutMs: 60_000 });
      const [c, d] = later.stdout.trim().split(/\s+/);
      assert.ok(Number(c) >= Number(b) && Number(d) > Number(c), `the logger stopped: counts ${c} then ${d}`);
      assert.doesNotMatch(r.stdout + later.stdout, /tick|tock/, 'a background job\'s later output reached another exec');
      await rt.destroy(h);
    });

    it('kills the whole tree on timeout, setsid and double-forked descendants included, and leaves nothing', async () => {
      const h = await newSandbox();
      const t0 = Date.now();
      const r = await run(rt, h, 'setsid sh -c "sleep 901 & sleep 902 & exit 0" & (sleep 903 &); sleep 904 & sleep 905', { timeoutMs: 1500 });
      assert.equal(r.exitCode, 124);
      assert.equal(r.timedOut, true);
      assert.ok(Date.now() - t0 < 15_000, `the timeout took ${Date.now() - t0} ms`);
      assert.equal(await countAlive(h, 'slee[p] 90[1-5]'), 0, 'part of the tree outlived the timeout');
      await rt.destroy(h);
    });

    it('never loses what the leader wrote just before it exited', async () => {
      const h = await newSandbox();
      for (let i = 0; i < 6; i++) {
        const size = [0, 1, 4095, 65536, 200_000, 1_000_003][i] as number;
        // Half of the runs leave a background job holding the pipes; the last bytes come right before the exit.
        const bg = i % 2 === 0 ? 'sleep 999 & ' : '';
        const r = await run(rt, h, `${bg}head -c ${size} /dev/zero | tr "\\0" a; printf END; printf LAST >&2`, { timeoutMs: 60_000 });
        assert.equal(r.exitCode, 0, r.stderr);
        assert.equal(r.stdout.length, size + 3, `run ${i}: ${r.stdout.length} of ${size + 3} bytes`);
        assert.ok(r.stdout.endsWith('END'), `run ${i}: stdout ends with ${JSON.stringify(r.stdout.slice(-10))}`);
        assert.equal(r.stderr, 'LAST');
      }
      await rt.destroy(h);
    });

    it('lists the sandbox\'s processes with the exec that started each, kills one, and refuses PID 1', async () => {
      const h = await newSandbox();
      const bgOpts = execOpts();
      const started = await collect(rt.exec(h, ['sh', '-c', 'sleep 997 & sleep 998 & echo started'], bgOpts));
      assert.equal(started.stdout, 'started\n');
      const list = await rt.processes(h);
      const init = list.find((p) => p.pid === 1);
      assert.ok(init, `no PID 1 in ${JSON.stringify(list)}`);
      assert.equal(init.execId, null);
      const bg = list.filter((p) => /^sleep 99[78]$/.test(p.command));
      assert.equal(bg.length, 2, `background jobs: ${JSON.stringify(list)}`);
      for (const p of bg) {
        assert.equal(p.execId, bgOpts.execId);
        assert.equal(p.uid, 1000);
        assert.equal(p.user, 'sandbox');
        assert.deepEqual(p.argv, p.command.split(' '));
        assert.ok(p.pid > 1);
      }
      // Every process of an exec carries its id, the exec's own leader included.
      const self = await run(rt, h, 'tr "\\0" "\\n" < /proc/$$/environ | grep ^AGENTBOX_EXEC_ID=');
      assert.match(self.stdout, /^AGENTBOX_EXEC_ID=\S+\n$/);
      const victim = bg.find((p) => p.command === 'sleep 997') as (typeof bg)[number];
      await rt.signalProcess(h, victim.pid, 'KILL');
      assert.equal(await countAlive(h, 'slee[p] 997'), 0, 'the killed process is still alive');
      assert.equal(await countAlive(h, 'slee[p] 998'), 1, 'the kill took another process with it');
      await assert.rejects(rt.signalProcess(h, victim.pid, 'TERM'), NotFoundError);
      await assert.rejects(rt.signalProcess(h, 1, 'KILL'), ForbiddenError);
      await assert.rejects(rt.signalProcess(h, 4_000_000, 'TERM'), NotFoundError);
      assert.equal((await run(rt, h, 'echo alive')).stdout, 'alive\n');
      const after = await rt.processes(h);
      assert.ok(!after.some((p) => p.pid === victim.pid), 'the killed process is still listed');
      assert.ok(after.some((p) => p.command === 'sleep 998' && p.execId === bgOpts.execId));
      await rt.destroy(h);
    });

    it('streams output before the command ends', async () => {
      const r = await run(rt, sb, 'echo first; sleep 1; echo second');
      assert.equal(r.stdout, 'first\nsecond\n');
      assert.ok((r.firstChunkAtMs ?? 9999) < 900, `first chunk came after ${r.firstChunkAtMs} ms`);
    });

    it('truncates output at the limit and says so', async () => {
      const r = await run(rt, sb, 'head -c 100000 /dev/zero | tr "\\0" x', { outputLimitBytes: 1000 });
      assert.equal(r.stdout.length, 1000);
      assert.equal(r.truncated, true);
      assert.equal(r.exitCode, 0);
    });

    it('runs concurrent execs in one sandbox', async () => {
      const results = await Promise.all([1, 2, 3, 4, 5].map((i) => run(rt, sb, `sleep 0.2; echo ${i}`)));
      assert.deepEqual(results.map((r) => r.stdout.trim()), ['1', '2', '3', '4', '5']);
    });

    it('round-trips a binary file by checksum and lists and removes it', async () => {
      const data = randomBytes(3 * 1024 * 1024 + 17);
      const n = await rt.writeFile(sb, '/workspace/dir/blob.bin', Readable.from([data.subarray(0, 1000), data.subarray(1000)]));
      assert.equal(n, data.length);
      const back = await readAll(await rt.readFile(sb, '/workspace/dir/blob.bin'));
      assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(data).digest('hex'));
      const list = await rt.listDir(sb, '/workspace/dir');
      assert.deepEqual(list.map((e) => [e.name, e.type, e.size]), [['blob.bin', 'file', data.length]]);
      await rt.removePath(sb, '/workspace/dir');
      await assert.rejects(rt.listDir(sb, '/workspace/dir'), NotFoundError);
    });

    it('reads an empty file as an empty stream', async () => {
      await rt.writeFile(sb, '/workspace/empty', Readable.from([]));
      assert.equal((await readAll(await rt.readFile(sb, '/workspace/empty'))).length, 0);
    });

    it('gives typed errors for missing files, directories, bad paths and read-only places', async () => {
      await assert.rejects(rt.readFile(sb, '/workspace/missing'), NotFoundError);
      await assert.rejects(rt.readFile(sb, '/workspace'), BadRequestError);
      await assert.rejects(rt.readFile(sb, 'relative/path'), BadRequestError);
      await assert.rejects(rt.readFile(sb, '/workspace/../etc/passwd'), BadRequestError);
      await assert.rejects(rt.writeFile(sb, '/etc/evil', Readable.from([Buffer.from('x')])), ForbiddenError);
      await assert.rejects(rt.removePath(sb, '/workspace/missing'), NotFoundError);
    });

    it('resolves a symlink to a host path inside the sandbox, never on the host', async () => {
      const secretPath = `/root/.agentbox-contract-secret-${process.pid}`;
      writeFileSync(secretPath, 'host-secret-content');
      try {
        await run(rt, sb, `ln -sf ${secretPath} /workspace/link; ln -sf /proc/1/root/etc/hostname /workspace/link2`);
        await assert.rejects(rt.readFile(sb, '/workspace/link'), NotFoundError);
        await assert.rejects(rt.writeFile(sb, '/workspace/link', Readable.from([Buffer.from('overwritten')])));
        const r = await run(rt, sb, `cat ${secretPath} 2>&1 || true`);
        assert.doesNotMatch(r.stdout, /host-secret-content/);
      } finally {
        unlinkSync(secretPath);
      }
    });

    it('refuses a FIFO, a device, a never-ending /proc file and a huge directory in the files API, without hanging', async () => {
      // A hang is the failure: each call must settle well inside this bound.
      const settles = async <T>(what: string, p: Promise<T>): Promise<PromiseSettledResult<T>> => {
        let timer: NodeJS.Timeout | undefined;
        const hang = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} hung`)), 30_000)));
        try {
          return await Promise.race([Promise.allSettled([p]).then((r) => r[0] as PromiseSettledResult<T>), hang]);
        } finally {
          clearTimeout(timer);
        }
      };
      const refused = async (what: string, p: Promise<unknown>, ...kinds: (new (...a: never[]) => Error)[]): Promise<void> => {
        const r = await settles(what, p);
        assert.equal(r.status, 'rejected', `${what} was not refused`);
        const err = (r as PromiseRejectedResult).reason as Error;
        assert.ok(kinds.some((k) => err instanceof k), `${what}: ${err.name}: ${err.message}`);
      };
      await run(rt, sb, 'mkfifo /workspace/fifo && ln -sf /dev/zero /workspace/zero-link && mkdir -p /tmp/many && cd /tmp/many && seq 10001 | xargs touch && echo made');
      await refused('reading a FIFO', rt.readFile(sb, '/workspace/fifo'), BadRequestError);
      await refused('writing a FIFO', rt.writeFile(sb, '/workspace/fifo', Readable.from([Buffer.from('x')])), BadRequestError);
      await refused('reading /dev/zero', rt.readFile(sb, '/dev/zero'), BadRequestError);
      await refused('reading a symlink to /dev/zero', rt.readFile(sb, '/workspace/zero-link'), BadRequestError);
      await refused('writing /dev/null', rt.writeFile(sb, '/dev/null', Readable.from([Buffer.from('x')])), BadRequestError, ForbiddenError);
      // Report size 0 and go on for megabytes, or the whole address space (or do not exist: gVisor).
      await refused('reading /proc/kallsyms', rt.readFile(sb, '/proc/kallsyms').then(readAll), BadRequestError, NotFoundError);
      await refused('reading /proc/self/pagemap', rt.readFile(sb, '/proc/self/pagemap').then(readAll), BadRequestError, NotFoundError, ForbiddenError);
      await refused('listing 10001 entries', rt.listDir(sb, '/tmp/many'), BadRequestError);
      // Ordinary files, and /proc files that report no size, still read.
      assert.match((await readAll(await rt.readFile(sb, '/proc/self/status'))).toString(), /^Name:/m);
      await run(rt, sb, 'rm -rf /tmp/many /workspace/fifo /workspace/zero-link');
    });

    it('ends the file read of a reader that goes away, leaving no process behind', async () => {
      const countReaders = async (): Promise<number> => {
        const r = await run(rt, sb, 'for c in /proc/[0-9]*/cmdline; do tr "\\0" " " < $c 2>/dev/null; echo; done | grep -c -e "fileo[p] read" -e " fil[e] .*-- read" || true');
        return Number(r.stdout.trim());
      };
      await run(rt, sb, 'dd if=/dev/zero of=/workspace/big bs=1M count=16 2>/dev/null; echo made');
      assert.equal(await countReaders(), 0, 'a file reader was running before the test');
      const stream = await rt.readFile(sb, '/workspace/big');
      await new Promise<void>((resolve, reject) => {
        stream.once('data', () => resolve());
        stream.once('error', reject);
      });
      stream.destroy(); // the consumer goes away after the first chunk
      let left = await countReaders();
      for (let i = 0; i < 50 && left > 0; i++) {
        await new Promise((r) => setTimeout(r, 200));
        left = await countReaders();
      }
      assert.equal(left, 0, 'the file reader outlived its consumer');
      await run(rt, sb, 'rm -f /workspace/big');
    });

    const withDebian = opts.debian ? it : (name: string, fn: () => Promise<void>): void => void test(name, { skip: 'needs the debian image (python3) to make raw syscalls' }, fn);
    withDebian('lets ordinary programs wait on descriptors (select, pselect6, poll, epoll)', async () => {
      const py = await newSandbox({}, 'debian');
      const r = await run(rt, py, `python3 -c 'import os, select
r, w = os.pipe(); os.write(w, b"x")
print(select.select([r], [], [], 5)[0] == [r])
p = select.poll(); p.register(r, select.POLLIN); print(len(p.poll(5000)) == 1)
e = select.epoll(); e.register(r, select.EPOLLIN); print(len(e.poll(5)) == 1)'`);
      assert.equal(r.stdout + r.stderr, 'True\nTrue\nTrue\n');
    });

    withDebian('refuses the syscalls Docker\'s default profile refuses, whatever their number\'s spelling', async () => {
      const py = await newSandbox({}, 'debian');
      // x86_64 numbers; on another arch the test says so rather than pass.
      const probe = String.raw`import ctypes, errno, platform
assert platform.machine() == "x86_64", platform.machine()
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(4096)
p = ctypes.c_long(ctypes.addressof(buf))
calls = {"io_uring_setup": (425, 1, p), "io_uring_enter": (426, -1, 0, 0, 0), "io_uring_register": (427, -1, 0, 0, 0),
  "pidfd_getfd": (438, -1, 0, 0), "mbind": (237, 0, 0, 0, 0, 0, 0), "move_pages": (279, 0, 0, 0, 0, 0, 0),
  "set_mempolicy": (238, 0, 0, 0), "get_mempolicy": (239, 0, 0, 0, 0, 0), "userfaultfd": (323, 0),
  "perf_event_open": (298, p, 0, -1, -1, 0), "bpf": (321, 0, p, 0), "add_key": (248, 0, 0, 0, 0, 0),
  "keyctl": (250, 0, 0), "request_key": (249, 0, 0, 0, 0), "syslog": (103, 10, 0, 0), "vhangup": (153,),
  "quotactl_fd": (443, -1, 0, 0, 0), "process_madvise": (440, -1, 0, 0, 0, 0), "nfsservctl": (180, 0, 0, 0),
  "unshare(NEWUSER)": (272, 0x10000000), "setns": (308, -1, 0), "mount": (165, 0, 0, 0, 0, 0),
  "socket(AF_ALG)": (41, 38, 5, 0), "socket(AF_VSOCK)": (41, 40, 1, 0), "personality(READ_IMPLIES_EXEC)": (135, 0x0400000),
  "x32 io_uring_setup": (0x40000000 | 425, 1, p), "x32 bpf": (0x40000000 | 321, 0, p, 0), "beyond the table": (1023,)}
for name, args in calls.items():
    rc = libc.syscall(*[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    e = ctypes.get_errno()
    ok = rc == -1 and e in (errno.EPERM, errno.ENOSYS)
    print("%s %s rc=%d errno=%s" % ("REFUSED" if ok else "ALLOWED", name, rc, errno.errorcode.get(e, e)))
s = libc.syscall(ctypes.c_long(41), ctypes.c_long(1), ctypes.c_long(1), ctypes.c_long(0))
print("CONTROL socket(AF_UNIX) %s" % ("ok" if s >= 0 else "failed %d" % ctypes.get_errno()))`;
      const r = await collect(rt.exec(py, ['python3', '-c', probe], execOpts()));
      await rt.destroy(py);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.match(r.stdout, /^CONTROL socket\(AF_UNIX\) ok$/m, 'the filter refuses what it must allow');
      const allowed = r.stdout.split('\n').filter((l) => l.startsWith('ALLOWED'));
      assert.deepEqual(allowed, [], `not refused with EPERM/ENOSYS:\n${allowed.join('\n')}`);
    });

    it('does not show the image store\'s host path in /proc/self/mountinfo', async () => {
      const r = await run(rt, sb, 'cat /proc/self/mountinfo');
      assert.match(r.stdout, / \/ /, 'no mountinfo read');
      assert.ok(!r.stdout.includes(TEST_IMAGES_DIR), `mountinfo names ${TEST_IMAGES_DIR}:\n${r.stdout}`);
    });

    it('has no capabilities and no new privileges', async () => {
      const r = await run(rt, sb, 'grep -E "^(CapEff|CapBnd|CapPrm|NoNewPrivs)" /proc/self/status');
      assert.match(r.stdout, /CapEff:\s+0000000000000000/);
      assert.match(r.stdout, /CapPrm:\s+0000000000000000/);
      if (/NoNewPrivs:/.test(r.stdout)) {
        assert.match(r.stdout, /NoNewPrivs:\s+1/);
        return;
      }
      // gVisor's /proc does not report the flag: ask the kernel itself, prctl(PR_GET_NO_NEW_PRIVS).
      assert.ok(opts.debian, 'no NoNewPrivs line in /proc/self/status, and no python3 image to ask prctl');
      const py = await newSandbox({}, 'debian');
      const p = await run(rt, py, 'python3 -c "import ctypes; print(ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))"');
      assert.equal(p.stdout.trim(), '1', `PR_GET_NO_NEW_PRIVS said ${p.stdout}${p.stderr}`);
      await rt.destroy(py);
    });

    it('is not root on the host: /proc/sys is not writable', async () => {
      const r = await run(rt, sb, '( exec 3>/proc/sys/kernel/core_pattern ) 2>/dev/null && echo SYSCTL-WRITABLE; echo done');
      assert.doesNotMatch(r.stdout, /SYSCTL-WRITABLE/);
    });

    it('has a read-only root', async () => {
      // Where a permission check comes first (gVisor: EACCES for uid 1000), the mount table still has to say ro.
      const r = await run(rt, sb, 'touch /etc/x 2>&1; [ -e /etc/x ] && echo CREATED; grep -E "^[^ ]+ / " /proc/mounts | tail -1; echo end');
      assert.doesNotMatch(r.stdout, /CREATED/);
      assert.match(r.stdout, /touch: .*(Read-only file system|Permission denied)/i);
      const rootMount = r.stdout.split('\n').find((l) => /^\S+ \/ \S+ /.test(l)) ?? '';
      assert.match(rootMount, /^\S+ \/ \S+ (ro,|ro )/, `the root is not mounted read-only: ${rootMount}`);
    });

    it('writes only to /workspace, /tmp and /dev/shm', async () => {
      const r = await run(rt, sb, 'for d in / /etc /usr /bin /var /dev /proc /sys /workspace /tmp /dev/shm; do if ( echo x > "$d/.agentbox-w" ) 2>/dev/null; then echo "W $d"; rm -f "$d/.agentbox-w"; fi; done; echo end');
      assert.equal(r.stdout, 'W /workspace\nW /tmp\nW /dev/shm\nend\n');
    });

    it('cannot mount or make namespaces', async () => {
      const mounts = await run(rt, sb, 'mount -t tmpfs none /tmp/m 2>/dev/null && echo MOUNTED; mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null && echo MOUNTED; unshare -U true 2>/dev/null && echo UNSHARED; echo ok');
      assert.equal(mounts.stdout, 'ok\n');
    });

    it('sees only its own processes, and cannot kill its PID 1', async () => {
      // Processes with a command line: a VM's own kernel threads (empty ones) are its own kernel's, not a neighbour's.
      const r = await run(rt, sb, 'kill -9 1 2>/dev/null; sleep 0.2; for c in /proc/[0-9]*/cmdline; do tr -d "\\0" < $c 2>/dev/null | head -c 1; echo; done | grep -c .');
      assert.ok(Number(r.stdout.trim()) < 10, `sees ${r.stdout.trim()} processes`);
      assert.equal((await run(rt, sb, 'echo alive')).stdout, 'alive\n');
    });

    it('has no network but loopback and cannot reach the host', async () => {
      const server = createServer((_req, res) => res.end('host-server-reached'));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as AddressInfo).port;
      try {
        const r = await run(rt, sb, `cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; wget -q -T 2 -O - http://127.0.0.1:${port}/ 2>&1; echo end`, { timeoutMs: 15_000 });
        assert.doesNotMatch(r.stdout, /host-server-reached/);
        const ifaces = r.stdout.split('\n').filter((l) => /^[a-z0-9]+$/.test(l) && l !== 'end');
        assert.deepEqual(ifaces.filter((i) => i !== 'lo'), [], `interfaces: ${ifaces.join(',')}`);
      } finally {
        server.close();
      }
    });

    it('enforces the memory limit with the OOM killer (137) and survives it', async () => {
      const small = await newSandbox({ memoryMb: 48 }, opts.debian ? 'debian' : 'busybox');
      const cmd = opts.debian ? 'python3 -c "x=bytearray(400<<20); print(\'allocated\')"' : 'awk "BEGIN{s=\\"x\\"; while(1) s=s s}"';
      const r = await run(rt, small, cmd);
      assert.doesNotMatch(r.stdout, /allocated/);
      assert.equal(r.oomKilled, true, `exit ${r.exitCode}, stderr ${r.stderr}`);
      assert.equal(r.exitCode, 137);
      assert.equal((await run(rt, small, 'echo survived')).stdout, 'survived\n');
    });

    it('enforces the pids limit against a fork bomb', async () => {
      const small = await newSandbox({ pids: 32 });
      // The bomb runs in a subshell (some shells exit when fork fails); the count is a glob, which
      // needs no fork while the sandbox is full.
      // Counted: processes of the sandbox user (`test -O`, a builtin): a VM's kernel threads are not its.
      const r = await run(rt, small, '(i=0; while [ $i -lt 100 ]; do sleep 5 >/dev/null 2>&1 & i=$((i+1)); done) 2>/dev/null; n=0; for p in /proc/[0-9]*; do [ -O $p ] && n=$((n+1)); done; echo $n', { timeoutMs: 20_000 });
      const seen = Number(r.stdout.trim());
      assert.ok(Number.isInteger(seen) && seen > 0, `no process count: ${JSON.stringify(r)}`);
      assert.ok(seen <= 34, `saw ${seen} processes under a limit of 32`);
      assert.ok(seen >= 16, `saw only ${seen} processes: the bomb did not run, so the limit was not tested`);
      await rt.destroy(small);
    });

    it('enforces the disk limit on /workspace', async () => {
      const r = await run(rt, sb, `dd if=/dev/zero of=/workspace/fill bs=1M count=${LIMITS.diskMb * 2} 2>&1; rm -f /workspace/fill`);
      assert.match(r.stdout, /No space left/i);
    });

    it('keeps /workspace and /tmp on disk: files beyond memoryMb fit, past diskMb is ENOSPC, and the sandbox lives on', async () => {
      // 96 MB of files under a 48 MB memory limit: on a tmpfs this is an OOM kill, on the disk it is nothing.
      const h = await newSandbox({ memoryMb: 48, diskMb: 160 });
      const write = await run(rt, h, 'head -c 100663296 /dev/urandom > /workspace/big && echo ok-$(stat -c %s /workspace/big) && sha256sum /workspace/big');
      assert.equal(write.exitCode, 0, write.stdout + write.stderr);
      assert.match(write.stdout, /^ok-100663296\n/);
      const sum = write.stdout.split('\n')[1]!.split(' ')[0];
      assert.ok((await rt.stats(h)).memoryBytes < 48 * 1024 * 1024, 'the files count against memory');
      // /tmp shares the disk and its quota.
      const over = await run(rt, h, 'dd if=/dev/zero of=/tmp/over bs=1M count=100 2>&1; echo rc=$?');
      assert.match(over.stdout, /No space left on device/);
      assert.match(over.stdout, /rc=1/);
      assert.equal((await rt.status(h)).alive, true);
      const after = await run(rt, h, 'rm -f /tmp/over; sha256sum /workspace/big; echo small > /tmp/small && cat /tmp/small');
      assert.equal(after.exitCode, 0, after.stderr);
      assert.equal(after.stdout, `${sum}  /workspace/big\nsmall\n`);
    });

    it('starts from a frozen clone of a live sandbox\'s disk: the same bytes, owned by the new sandbox, independent both ways', async () => {
      const a = await newSandbox({ diskMb: 96 });
      const w = await run(rt, a, 'head -c 20000000 /dev/urandom > /workspace/data; mkdir -p /workspace/d/e; echo deep > /workspace/d/e/f; echo t > /tmp/t; sha256sum /workspace/data | cut -d" " -f1');
      assert.equal(w.exitCode, 0, w.stderr);
      const disks = scratchDiskStore();
      const clone = rt.withDiskFrozen ? await rt.withDiskFrozen(a, () => disks.cloneToScratch(a.id)) : await disks.cloneToScratch(a.id);
      try {
        const b = await rt.create({ id: `sbx_ct${process.pid}x${++counter}`, image: 'busybox', isolation: opts.isolation, limits: { ...LIMITS, diskMb: 96 }, labels: {}, diskFrom: clone });
        created.push(b);
        const r = await run(rt, b, 'sha256sum /workspace/data | cut -d" " -f1; cat /workspace/d/e/f /tmp/t; echo more >> /workspace/d/e/f && echo writable; stat -c %u /workspace/data');
        assert.equal(r.stdout, `${w.stdout}deep\nt\nwritable\n1000\n`);
        assert.equal((await run(rt, a, 'cat /workspace/d/e/f')).stdout, 'deep\n', 'a write in the clone reached the original');
        await run(rt, a, 'echo only-a > /workspace/only-a');
        assert.equal((await run(rt, b, 'test -e /workspace/only-a && echo SEEN || echo unseen')).stdout, 'unseen\n');
      } finally {
        await disks.dropScratch(clone);
      }
    });

    it('a volume mounted rw in two sandboxes is shared; ro mount refuses writes (EROFS); survives the sandbox', async () => {
      // One filesystem mounted once on the host (storage/volume-store.ts), bound into each sandbox.
      const volumes = scratchVolumeStore();
      const v = { id: `vol_ct${process.pid}x${++counter}`, tenant: 'contract', name: `v${process.pid}x${counter}` };
      await volumes.create(v, 16);
      const mine: SandboxHandle[] = [];
      try {
        const source = await volumes.mount(v);
        const a = await newSandbox({}, 'busybox', [{ source, target: '/data', readOnly: false }]);
        const b = await newSandbox({}, 'busybox', [
          { source, target: '/workspace/shared', readOnly: false },
          { source, target: '/mnt/ro', readOnly: true },
        ]);
        mine.push(a, b);
        // Each sandbox writes as its own user (a random host uid on local) and owns what the other wrote.
        let r = await run(rt, a, 'echo from-a > /data/a && id -u && stat -c %u /data/a');
        assert.equal(r.stdout, '1000\n1000\n', r.stderr);
        r = await run(rt, b, 'cat /workspace/shared/a && echo from-b >> /workspace/shared/a && mkdir /workspace/shared/d && echo b > /workspace/shared/d/b && stat -c %u /workspace/shared/a');
        assert.equal(r.stdout, 'from-a\n1000\n', r.stderr);
        assert.equal((await run(rt, a, 'cat /data/a /data/d/b')).stdout, 'from-a\nfrom-b\nb\n');
        // Read-only: the same files, no writes.
        r = await run(rt, b, 'echo no > /mnt/ro/c; echo rc=$?; rm /mnt/ro/a; cat /mnt/ro/d/b');
        assert.match(r.stderr, /Read-only file system/);
        assert.equal(r.stdout, 'rc=1\nb\n');
        // The volume's size is its quota.
        r = await run(rt, a, 'dd if=/dev/zero of=/data/fill bs=1M count=32 2>&1; echo rc=$?; rm -f /data/fill');
        assert.match(r.stdout, /No space left on device/);
        // Both gone: the files stay, on the host as the sandbox user's (uid 1000), for the next sandbox.
        await rt.destroy(a);
        await rt.destroy(b);
        assert.equal(readFileSync(join(source, 'a'), 'utf8'), 'from-a\nfrom-b\n');
        assert.equal(statSync(join(source, 'd', 'b')).uid, 1000);
        const c = await newSandbox({}, 'busybox', [{ source, target: '/data', readOnly: false }]);
        mine.push(c);
        assert.equal((await run(rt, c, 'cat /data/a && rm -r /data/d && ls /data')).stdout, 'from-a\nfrom-b\na\n');
      } finally {
        for (const h of mine) await rt.destroy(h);
        await volumes.remove(v);
      }
    });

    it('a writable root: the sandbox user changes the image\'s files, under the disk quota; the image and other sandboxes never see it; a copy of the disk carries it', async (t) => {
      if (!rt.writableRoot) return t.skip(`${opts.name} has no writable root capability`);
      const writable = async (extra: { diskFrom?: string } = {}): Promise<SandboxHandle> => {
        const h = await rt.create({ id: `sbx_ct${process.pid}x${++counter}`, image: 'busybox', isolation: opts.isolation, limits: LIMITS, labels: {}, writableRoot: true, ...extra });
        created.push(h);
        return h;
      };
      const h = await writable();
      const changed = await run(
        rt,
        h,
        [
          'set -e',
          'echo "10.0.0.9 added" >> /etc/hosts',
          'mkdir -p /usr/local/bin',
          "printf '#!/bin/sh\\necho tool ran\\n' > /usr/local/bin/tool",
          'chmod +x /usr/local/bin/tool',
          '/usr/local/bin/tool',
          'rm /etc/resolv.conf',
          'id -u; stat -c %u /usr /etc/hosts',
        ].join('\n'),
      );
      assert.equal(changed.exitCode, 0, changed.stderr);
      assert.equal(changed.stdout, 'tool ran\n1000\n1000\n1000\n', 'the sandbox user does not own its root');
      // Other sandboxes (read-only or writable) start from the unchanged image.
      for (const other of [sb, await writable()]) {
        const r = await run(rt, other, 'grep -c added /etc/hosts; test -e /usr/local/bin/tool && echo tool; test -e /etc/resolv.conf && echo resolv');
        assert.equal(r.stdout, '0\nresolv\n', 'a change reached another sandbox (or the image)');
      }
      // The root's read-only elsewhere: a sandbox without it cannot write there.
      assert.notEqual((await run(rt, sb, 'echo x > /etc/x')).exitCode, 0, 'the default root is writable');
      // The changes are on the disk: one quota for the root and /workspace, and memory is not where they go.
      const full = await run(rt, h, 'dd if=/dev/zero of=/usr/big bs=1M count=200 2>&1; echo dd=$?');
      assert.match(full.stdout, /No space left on device/);
      assert.match((await run(rt, h, 'dd if=/dev/zero of=/workspace/after-full bs=1M count=2 2>&1; rm -f /workspace/after-full')).stdout, /No space left on device/, '/workspace had room past the quota the root filled');
      assert.equal((await run(rt, h, 'rm /usr/big; echo x > /workspace/after-free; cat /workspace/after-free')).stdout, 'x\n');
      // A copy of its disk (what a snapshot or a fork starts from) carries the root's changes, to a sandbox of another host user.
      const disks = scratchDiskStore();
      // Frozen, as a snapshot's copy is: a VM's writes reach its disk image when its kernel flushes them.
      const disk = rt.withDiskFrozen ? await rt.withDiskFrozen(h, () => disks.cloneToScratch(h.id)) : await disks.cloneToScratch(h.id);
      try {
        const child = await writable({ diskFrom: disk });
        const r = await run(rt, child, 'grep -c added /etc/hosts; /usr/local/bin/tool; test -e /etc/resolv.conf || echo resolv-gone; stat -c %u /usr/local/bin/tool; echo child >> /etc/hosts');
        assert.equal(r.stdout, '1\ntool ran\nresolv-gone\n1000\n', r.stderr);
        assert.equal((await run(rt, h, 'grep -c child /etc/hosts')).stdout, '0\n', 'the copy reached into its source');
      } finally {
        await disks.dropScratch(disk);
      }
      // Its overlay goes with it (docker's is mounted on the host, inside the disk's mount).
      await rt.destroy(h);
      assert.deepEqual(mountTable().filter((m) => m.point.includes(h.id)), [], 'mounts of the writable root are left on the host');
    });

    it('pauses and resumes', async (t) => {
      // A capability the driver leaves out shows as a skip, not as a pass.
      if (!rt.pause || !rt.resume) return t.skip(`${opts.name} has no pause capability`);
      const h = await newSandbox();
      await run(rt, h, 'echo x > /workspace/state');
      await rt.pause(h);
      assert.equal((await rt.status(h)).alive, true);
      await rt.resume(h);
      assert.equal((await run(rt, h, 'cat /workspace/state')).stdout, 'x\n');
    });

    it('hibernates: its processes and memory go to disk, its memory is freed, and they come back where they were', async (t) => {
      if (!rt.canHibernate || !rt.hibernate || !rt.wake) return t.skip(`${opts.name} has no hibernate capability`);
      const can = await rt.canHibernate({ isolation: opts.isolation, network: false, volumes: false });
      // Refused with a reason and a hint, never silently.
      if (!can.ok) {
        assert.ok(can.reason && can.hint, 'a refusal without its reason and hint');
        return t.skip(`${opts.name} cannot hibernate here: ${can.reason}`);
      }
      assert.equal((await rt.canHibernate({ isolation: opts.isolation, network: true, volumes: false })).ok, opts.hibernatesWithEgress === true, opts.hibernatesWithEgress ? 'a sandbox with egress is refused, though its saved state holds no host connection' : 'a sandbox with egress holds host connections: it must be refused');
      assert.equal((await rt.canHibernate({ isolation: opts.isolation, network: false, volumes: true })).ok, false, 'a sandbox with volumes may reach host sockets in them: it must be refused');
      const h = await newSandbox();
      // State that lives only in memory: a shell counting in a variable (the file is only its trace), and a pid.
      await run(rt, h, "sh -c 'i=0; while :; do i=$((i+1)); echo $i > /workspace/count.new; mv /workspace/count.new /workspace/count; sleep 0.1; done' >/dev/null 2>&1 & echo $! > /workspace/pid");
      const count = async (): Promise<number> => Number((await run(rt, h, 'cat /workspace/count')).stdout);
      const deadline = Date.now() + 20_000;
      while ((await count()) < 5) assert.ok(Date.now() < deadline, 'the counter did not start');
      const pid = (await run(rt, h, 'cat /workspace/pid')).stdout.trim();
      // A command in flight keeps the sandbox awake: refused, and the command finishes as if nothing happened.
      const busy = collect(rt.exec(h, ['sh', '-c', 'sleep 1; echo done'], execOpts()));
      await new Promise((r) => setTimeout(r, 300));
      await assert.rejects(rt.hibernate(h), ConflictError);
      assert.equal((await busy).stdout, 'done\n');
      for (const round of [1, 2]) {
        const before = await count();
        await rt.hibernate(h);
        assert.deepEqual(await rt.status(h), { alive: true, hibernated: true }, `round ${round}: status`);
        assert.ok((await rt.list()).some((o) => o.id === h.id && o.alive), `round ${round}: list does not count it alive`);
        assert.equal((await rt.stats(h)).memoryBytes, 0, `round ${round}: its memory is still held`);
        await new Promise((r) => setTimeout(r, 500));
        await rt.wake(h);
        const after = await count();
        // Went on from where it stopped: not started again from 1, and not counted on while hibernated.
        assert.ok(after >= before && after < before + 40, `round ${round}: the counter went from ${before} to ${after}`);
        assert.equal((await run(rt, h, `kill -0 ${pid} && echo alive`)).stdout, 'alive\n', `round ${round}: the same process is not there`);
      }
      assert.equal((await rt.status(h)).hibernated, undefined);
      const r = await collect(rt.exec(h, ['sh', '-c', 'sleep 30 & sleep 30'], execOpts({ timeoutMs: 500 })));
      assert.equal(r.exitCode, 124, 'a timeout after waking does not kill the tree');
    });

    it('starts a sandbox from a hibernated one\'s memory image: the same processes go on in it, independently', async (t) => {
      if (!rt.canHibernate || !rt.hibernate || !rt.wake || !rt.copyMemory || !rt.dropMemory) return t.skip(`${opts.name} cannot copy a sandbox's memory`);
      const can = await rt.canHibernate({ isolation: opts.isolation, network: false, volumes: false });
      if (!can.ok) return t.skip(`${opts.name} cannot hibernate here: ${can.reason}`);
      const parent = await newSandbox();
      await run(rt, parent, "sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done' >/dev/null 2>&1 & echo $! > /tmp/pid; echo parent > /tmp/who");
      const pid = (await run(rt, parent, 'sleep 0.5; cat /tmp/pid')).stdout.trim();
      // A memory image goes with the disk of the same moment (its processes hold files open there):
      // both are taken while the parent is hibernated, as the manager's fork does.
      await rt.hibernate(parent);
      const disks = scratchDiskStore();
      const disk = await disks.cloneToScratch(parent.id);
      const image = await rt.copyMemory(parent);
      await rt.wake(parent);
      try {
        const child = await rt.create({ id: `sbx_ct${process.pid}x${++counter}`, image: 'busybox', isolation: opts.isolation, limits: LIMITS, labels: {}, diskFrom: disk, memoryFrom: image });
        created.push(child);
        const r = await run(rt, child, `sleep 0.5; kill -0 ${pid} && echo alive; cat /tmp/count; cat /tmp/who; echo child > /tmp/who`);
        const [alive, n, who] = r.stdout.trim().split('\n');
        assert.equal(alive, 'alive', `the process ${pid} is not in the child: ${r.stdout} ${r.stderr}`);
        assert.ok(Number(n) > 0, `the child's counter wrote ${n}`);
        assert.equal(who, 'parent');
        await run(rt, child, `kill ${pid}`);
        assert.equal((await run(rt, parent, `kill -0 ${pid} && echo alive; cat /tmp/who`)).stdout, 'alive\nparent\n', 'the child reached into the parent');
      } finally {
        await disks.dropScratch(disk);
        await rt.dropMemory(image);
        await rt.dropMemory(image); // idempotent
      }
    });

    it('reaches a server listening inside over openPort, made from inside (no network opened): bytes both ways with half-close, two at once, a refusal where nothing listens, nothing left after', async (t) => {
      if (!rt.openPort) return t.skip(`${opts.name} has no openPort capability`);
      const h = await newSandbox();
      // Echo servers inside on the sandbox's loopback: one connection each (busybox nc -e cat).
      const listen = async (port: number): Promise<void> => {
        const r = await run(rt, h, `nc -l -p ${port} -e /bin/cat >/dev/null 2>&1 & for i in $(seq 100); do netstat -ltn 2>/dev/null | grep -q ":${port} " && exit 0; sleep 0.1; done; exit 1`);
        assert.equal(r.exitCode, 0, `no server on ${port} inside: ${r.stderr}`);
      };
      await listen(8080);
      await listen(8081);
      const [a, b] = await Promise.all([rt.openPort(h, 8080), rt.openPort(h, 8081)]);
      const payloads = [randomBytes(1 << 20), randomBytes(300_000)];
      const sha = (buf: Buffer): string => createHash('sha256').update(buf).digest('hex');
      const echoed = await Promise.all(
        [a, b].map(async (conn, i) => {
          const chunks: Buffer[] = [];
          conn.on('data', (c: Buffer) => chunks.push(c));
          const ended = new Promise<void>((resolve, reject) => {
            conn.once('end', resolve);
            conn.once('error', reject);
          });
          // Written, then half-closed: cat sees its end, answers everything and ends the connection.
          conn.end(payloads[i]);
          await ended;
          return Buffer.concat(chunks);
        }),
      );
      assert.equal(sha(echoed[0]!), sha(payloads[0]!), `1 MiB through port 8080 came back as ${echoed[0]!.length} bytes`);
      assert.equal(sha(echoed[1]!), sha(payloads[1]!));
      await assert.rejects(rt.openPort(h, 8082), (e: Error) => e instanceof ConflictError && /nothing listens on port 8082/.test(e.message));
      for (const bad of [0, 65536, 1.5, -1]) await assert.rejects(rt.openPort(h, bad), BadRequestError);
      // A client that goes away mid-connection ends what relayed it inside.
      await listen(8083);
      const c = await rt.openPort(h, 8083);
      c.write('hello');
      c.destroy();
      let left: string[] = [];
      for (let i = 0; i < 50; i++) {
        left = (await rt.processes(h)).filter((p) => / connect 808\d/.test(p.command) || /^nc -l -p 808[0-3]/.test(p.command)).map((p) => p.command);
        if (left.length === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(left, [], 'the relays and the one-connection servers should have ended with their connections');
      await rt.destroy(h);
    });

    /** A terminal in sandbox H, and what it has shown so far. */
    const openTerminal = async (h: SandboxHandle, cmd: string[], more: { cwd?: string } = {}): Promise<{ pty: PtyProcess; screen: () => string; waitFor: (re: RegExp, what: string) => Promise<void> }> => {
      const pty = await rt.openPty!(h, { cmd, cols: 80, rows: 24, env: { GREETING: 'hello-pty' }, execId: `exe_pty${++counter}`, ...more });
      let text = '';
      pty.output.on('data', (c: Buffer) => (text += c.toString()));
      const waitFor = async (re: RegExp, what: string): Promise<void> => {
        for (let i = 0; i < 150 && !re.test(text); i++) await new Promise((r) => setTimeout(r, 100));
        assert.match(text, re, `${what}; the terminal showed: ${JSON.stringify(text.slice(-400))}`);
      };
      return { pty, screen: () => text, waitFor };
    };

    it('runs a command on a terminal inside (openPty): a real tty of its own devpts, size and resize, typing, signals, exit codes, hang-up, nothing left after', async (t) => {
      if (!rt.openPty) return t.skip(`${opts.name} has no openPty capability`);
      const h = await newSandbox();
      const open = (cmd: string[], more: { cwd?: string } = {}) => openTerminal(h, cmd, more);
      const s = await open(['sh']);
      assert.ok(s.pty.pid > 1, `pid inside: ${s.pty.pid}`);
      s.pty.write(Buffer.from('[ -t 0 ] && [ -t 1 ] && echo tty-$((6*7)); tty; stty size; echo "$GREETING $TERM $(id -u) $AGENTBOX_EXEC_ID"\n'));
      await s.waitFor(/tty-42/, 'stdin and stdout are a terminal');
      await s.waitFor(/\/dev\/pts\/\d+/, 'the terminal is a pts of the sandbox');
      await s.waitFor(/^24 80\r?$/m, 'stty size gives the size asked for');
      await s.waitFor(/hello-pty xterm-256color 1000 exe_pty\d+/, 'the environment, TERM, the sandbox user and the exec id');
      s.pty.resize(132, 40);
      s.pty.write(Buffer.from('stty size\n'));
      await s.waitFor(/^40 132\r?$/m, 'a resize reaches the terminal');
      // Input larger than the terminal's buffer arrives whole (the relay waits for the terminal).
      const big = 'x'.repeat(200_000);
      s.pty.write(Buffer.from(`head -c 200200 > /tmp/typed.txt\n`));
      for (let off = 0; off < big.length; off += 1000) s.pty.write(Buffer.from(`${big.slice(off, off + 1000)}\n`));
      s.pty.write(Buffer.from('wc -c < /tmp/typed.txt\n'));
      await s.waitFor(/^200200\r?$/m, '200 kB typed arrive whole');
      s.pty.write(Buffer.from('exit 7\n'));
      assert.equal(await s.pty.exit, 7);

      // A signal to the command; a missing command; a missing cwd; bad sizes.
      const trapped = await open(['sh', '-c', 'trap "echo got-term; exit 5" TERM; echo ready; while :; do sleep 0.1; done']);
      await trapped.waitFor(/ready/, 'the trap is set');
      trapped.pty.signal('TERM');
      assert.equal(await trapped.pty.exit, 5);
      await trapped.waitFor(/got-term/, 'the command saw SIGTERM');
      assert.equal(await (await open(['no-such-command-xyz'])).pty.exit, 127);
      const nocwd = await open(['sh'], { cwd: '/no/such/dir' });
      assert.equal(await nocwd.pty.exit, 126);
      await nocwd.waitFor(/no\/such\/dir/, 'the reason is on the terminal');
      for (const [cols, rows] of [[0, 24], [80, 0], [1001, 24], [80.5, 24]] as const) {
        await assert.rejects(rt.openPty(h, { cmd: ['sh'], cols, rows, env: {}, execId: 'exe_bad' }), BadRequestError);
      }
      await assert.rejects(rt.openPty(h, { cmd: [], cols: 80, rows: 24, env: {}, execId: 'exe_bad' }), BadRequestError);

      // A hang-up ends the session and its jobs, even a job that ignores SIGHUP (SIGKILL follows).
      const hup = await open(['sh', '-c', 'trap "" HUP; echo stubborn; sleep 60 & wait']);
      await hup.waitFor(/stubborn/, 'the session runs');
      hup.pty.hangUp();
      assert.equal(typeof (await hup.pty.exit), 'number', 'a hung-up session ends (its status is the shell\'s choice)');
      // A leader that dies of the hang-up at once: what it left ignoring SIGHUP (as nohup does) goes too.
      const nohup = await open(['sh', '-c', '(trap "" HUP; exec sleep 61) >/dev/null 2>&1 & echo started-nohup; sleep 1000']);
      await nohup.waitFor(/started-nohup/, 'the session runs');
      nohup.pty.hangUp();
      assert.equal(await nohup.pty.exit, 129, 'sh dies of SIGHUP');
      // A client that drops the session at once: nothing of it is left inside.
      const dropped = await open(['sh', '-c', 'echo dropped-start; sleep 60']);
      await dropped.waitFor(/dropped-start/, 'the session runs');
      dropped.pty.destroy();
      let left: string[] = [];
      for (let i = 0; i < 60; i++) {
        left = (await rt.processes(h)).filter((p) => /exe_pty/.test(p.execId ?? '') || / pty -$/.test(p.command) || /sleep 6[01]/.test(p.command)).map((p) => `${p.pid} ${p.command}`);
        if (left.length === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(left, [], 'terminal sessions and their jobs should be gone');
      await rt.destroy(h);
    });

    it('a Ctrl-C typed on a terminal interrupts its foreground job', async (t) => {
      if (!rt.openPty) return t.skip(`${opts.name} has no openPty capability`);
      const h = await newSandbox();
      const s = await openTerminal(h, ['sh']);
      // Ctrl-C is a byte like any other: the terminal turns it into SIGINT for the foreground job.
      s.pty.write(Buffer.from('sleep 30; echo sleep-$((40+2))\n'));
      await new Promise((r) => setTimeout(r, 700));
      const t0 = Date.now();
      s.pty.write(Buffer.from('\x03'));
      s.pty.write(Buffer.from('echo after-$((6*7))\n'));
      await s.waitFor(/^after-42\r?$/m, 'Ctrl-C interrupts the foreground sleep');
      assert.doesNotMatch(s.screen(), /^sleep-42/m, 'the sleep was interrupted, not finished');
      assert.ok(Date.now() - t0 < 20_000);
      s.pty.destroy();
      await rt.destroy(h);
    });

    it('reports stats: memory, processes, and CPU time that grows while a loop spins', async () => {
      const s = await rt.stats(sb);
      assert.ok(s.memoryBytes > 0);
      assert.ok(s.pids >= 1);
      // A busy loop for a second, in the background so that it is alive when the second sample is taken.
      await run(rt, sb, '(timeout 1 sh -c "while :; do :; done" >/dev/null 2>&1 &)');
      await new Promise((r) => setTimeout(r, 700));
      const later = await rt.stats(sb);
      assert.ok(later.cpuMs - s.cpuMs >= 200, `cpuMs went from ${s.cpuMs} to ${later.cpuMs} while a loop spun for 700 ms`);
    });

    it('destroys everything: status, list and exec agree it is gone', async () => {
      const h = await newSandbox();
      assert.ok((await rt.list()).some((o) => o.id === h.id));
      await rt.destroy(h);
      await rt.destroy(h); // idempotent
      assert.equal((await rt.status(h)).alive, false);
      assert.ok(!(await rt.list()).some((o) => o.id === h.id));
      await assert.rejects(async () => collect(rt.exec(h, ['true'], execOpts())), ConflictError);
    });

    it('reaps a sandbox it is told is an orphan', async () => {
      const h = await newSandbox();
      await rt.reap(h.id);
      assert.ok(!(await rt.list()).some((o) => o.id === h.id));
      assert.equal((await rt.status(h)).alive, false);
    });

    it('fails cleanly for an unknown image and leaves nothing', async () => {
      const before = (await rt.list()).length;
      await assert.rejects(newSandbox({}, 'no-such-image-xyz'), NotFoundError);
      assert.equal((await rt.list()).length, before);
    });
  });
}
