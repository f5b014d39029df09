/**
 * Resource attacks: fork, thread, memory, disk, inode and output floods, processes that outlive their exec, CPU.
 * Every attack that may exhaust or kill a sandbox runs in a scratch sandbox with small limits, never in a shared one.
 * A limit "held" when the flood stopped near it, the sandbox (or the daemon) still answers, and nothing of the flood
 * is left on the host afterwards.
 */
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { EXIT_KILLED } from '../../contract/exit-codes.js';
import { clip, hostProcessesWith, PY_PRELUDE, pyProbe, pyRun, verdictOf } from './in-sandbox.js';
import type { Attack, AttackContext } from './types.js';

const SMALL = { memoryMb: 64, pids: 32, diskMb: 16 } as const;
/** A scratch sandbox being flooded has no business on the network. */
const NO_EGRESS = { mode: 'none' } as const;
/** For the pids attacks: memory enough that the pids limit, not the OOM killer, is what stops the bomb. */
const PIDS_ONLY = { ...SMALL, memoryMb: 256 } as const;

/** The suite cleans up after a failed attack: SIGKILL to host processes that still carry its marker (checked again). */
function killMarked(pids: number[], needle: string): void {
  for (const p of pids) {
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(needle)) process.kill(p, 'SIGKILL');
    } catch {
      /* gone already */
    }
  }
}

/** Polls for up to `ms` until `check` is true; returns its last answer. */
async function eventually(ms: number, check: () => Promise<boolean> | boolean): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > until) return false;
    await sleep(100);
  }
}

/** The sandbox still runs a command, or it ended cleanly (stopped/failed with a reason): never stuck half-alive. */
async function survivesOrEndsCleanly(ctx: AttackContext, id: string): Promise<{ ok: boolean; how: string }> {
  // A sandbox may need a moment after a flood (its processes dying): a few tries over about 10 s.
  let r: Awaited<ReturnType<AttackContext['exec']>> | Error = new Error('not tried');
  const until = Date.now() + 10_000;
  do {
    r = await ctx.exec(id, ['echo', 'alive'], { timeoutMs: 15_000 }).catch((err: Error) => err);
    if (!(r instanceof Error) && r.stdout.includes('alive')) return { ok: true, how: 'the sandbox still answers' };
    await sleep(500);
  } while (Date.now() < until);
  let sb = await ctx.client.get(id).catch(() => undefined);
  const ended = (): boolean => sb?.state === 'stopped' || sb?.state === 'failed';
  await eventually(5000, async () => ended() || ((sb = await ctx.client.get(id).catch(() => undefined)), ended()));
  if (sb && ended()) return { ok: true, how: `the sandbox ended cleanly (${sb.state}, ${sb.endReason ?? 'no reason'})` };
  return { ok: false, how: `the sandbox neither answers nor ended: ${r instanceof Error ? r.message : `exit ${r.exitCode} ${clip(r.stderr)}`}, state ${sb?.state ?? '?'}` };
}

const forkBomb: Attack = {
  id: 'resources.fork-bomb',
  category: 'resources',
  title: 'fork until fork fails (pids limit 32): the count stays at the limit, the sandbox recovers',
  async run(ctx) {
    const id = await ctx.scratch({ image: 'debian', limits: PIDS_ONLY, egress: NO_EGRESS });
    const r = await pyRun(ctx, id, String.raw`
import time
rd, wr = os.pipe()
kids, err = [], ''
t = time.time()
while len(kids) < 5000 and time.time() - t < 10:
    try:
        pid = os.fork()
    except OSError as e:
        err = ename(e); break
    if pid == 0:
        os.close(wr); os.read(rd, 1); os._exit(0)
    kids.append(pid)
    print('forked %d' % len(kids), flush=True)
os.close(wr)
for k in kids: os.waitpid(k, 0)
done(len(kids) < ${SMALL.pids} and err != '', 'forked %d processes before fork failed with %s (pids limit ${SMALL.pids})' % (len(kids), err or 'nothing'))
`);
    const forked = Math.max(0, ...[...r.stdout.matchAll(/forked (\d+)/g)].map((m) => Number(m[1])));
    // Where forking copies enough memory (gVisor), the memory limit may end the bomb before the pids limit does.
    const v = r.oomKilled && forked < SMALL.pids ? { blocked: true, detail: `forked ${forked} processes, then the memory limit OOM-killed the bomb` } : verdictOf(r);
    const after = await survivesOrEndsCleanly(ctx, id);
    return { blocked: v.blocked && after.ok, detail: `${v.detail}; ${after.how}` };
  },
};

const shellForkBomb: Attack = {
  id: 'resources.fork-bomb-shell',
  category: 'resources',
  title: 'a shell fork bomb (bomb | bomb &, 12 deep) for 3 s, then a command in the same sandbox',
  async run(ctx) {
    const id = await ctx.scratch({ limits: SMALL, egress: NO_EGRESS });
    // Depth 12 bounds it at ~8k processes should the pids limit not hold (the suite runs on users' hosts).
    const r = await ctx.exec(id, ['sh', '-c', 'bomb() { [ $1 -gt 0 ] && { bomb $(($1-1)) | bomb $(($1-1)) & }; sleep 30; }; bomb 12'], { timeoutMs: 3000 });
    const after = await survivesOrEndsCleanly(ctx, id);
    const alive = await ctx.client.health().then(() => true, () => false);
    return {
      blocked: after.ok && alive,
      detail: `the bomb ended (${r.timedOut ? 'timed out' : `exit ${r.exitCode}`}); ${after.how}; the daemon ${alive ? 'answers' : 'does not answer'}`,
    };
  },
};

const threadBomb: Attack = {
  id: 'resources.thread-bomb',
  category: 'resources',
  title: 'start threads until it fails (threads count against the pids limit of 32)',
  async run(ctx) {
    const id = await ctx.scratch({ image: 'debian', limits: PIDS_ONLY, egress: NO_EGRESS });
    const v = await pyProbe(ctx, id, String.raw`
import threading, time
ev = threading.Event()
n, err = 0, ''
t = time.time()
while n < 5000 and time.time() - t < 10:
    try:
        threading.Thread(target=ev.wait, daemon=True).start(); n += 1
    except Exception as e:
        err = str(e)[:60]; break
ev.set()
done(n < ${SMALL.pids} and err != '', 'started %d threads before: %s (pids limit ${SMALL.pids})' % (n, err or 'nothing stopped it'))
`);
    const after = await survivesOrEndsCleanly(ctx, id);
    return { blocked: v.blocked && after.ok, detail: `${v.detail}; ${after.how}` };
  },
};

const memoryBomb: Attack = {
  id: 'resources.memory-bomb',
  category: 'resources',
  title: `allocate and touch 1 GiB with memoryMb 64: exit ${EXIT_KILLED}, oomKilled, and no more than the limit was ever held`,
  async run(ctx) {
    const id = await ctx.scratch({ image: 'debian', limits: SMALL, egress: NO_EGRESS });
    const r = await pyRun(ctx, id, String.raw`
chunks = []
for i in range(1024):
    chunks.append(bytearray(b'x') * (1 << 20))
    if i % 8 == 0: print('held %d MiB' % (i + 1), flush=True)
print('RESULT ' + json.dumps({'blocked': False, 'detail': 'allocated and touched 1 GiB with memoryMb ${SMALL.memoryMb}'}))
`, { timeoutMs: 60_000 });
    const held = Math.max(0, ...[...r.stdout.matchAll(/held (\d+) MiB/g)].map((m) => Number(m[1])));
    if (r.stdout.includes('RESULT ')) return { blocked: false, detail: `allocated 1 GiB with memoryMb ${SMALL.memoryMb} (exit ${r.exitCode})` };
    const after = await survivesOrEndsCleanly(ctx, id);
    const killedRight = r.exitCode === EXIT_KILLED && r.oomKilled;
    const memoryError = r.stderr.includes('MemoryError');
    return {
      blocked: (killedRight || memoryError) && held <= SMALL.memoryMb + 8 && after.ok,
      detail: `held at most ${held} MiB, then exit ${r.exitCode} oomKilled ${r.oomKilled}${memoryError ? ' (MemoryError)' : ''}; ${after.how}`,
    };
  },
};

/** Fills one directory of a scratch sandbox; `bound` MiB is the most that may land there. */
function fillAttack(short: string, dir: string, title: string, bound: number = SMALL.diskMb): Attack {
  return {
    id: `resources.${short}`,
    category: 'resources',
    title,
    async run(ctx) {
      const id = await ctx.scratch({ image: 'debian', limits: SMALL, egress: NO_EGRESS });
      const r = await pyRun(ctx, id, String.raw`
d = ${JSON.stringify(dir)}
if not os.path.isdir(d): done(True, d + ' does not exist here')
total, err, n = 0, '', 0
block = b'\xa5' * (1 << 20)
try:
    while total < (256 << 20):
        with open('%s/fill-%d' % (d, n), 'wb') as f:
            for _ in range(16):
                f.write(block); f.flush(); total += len(block)
                print('wrote %d MiB' % (total >> 20), flush=True)
        n += 1
except OSError as e:
    err = ename(e)
for i in range(n + 1):
    try: os.unlink('%s/fill-%d' % (d, i))
    except OSError: pass
mib = total >> 20
done(err in ('ENOSPC', 'EDQUOT', 'EFBIG', 'ENOMEM') and mib <= ${bound} + 2, 'wrote %d MiB to %s before %s (bound ${bound} MiB)' % (mib, d, err or 'nothing stopped it at 256 MiB'))
`, { timeoutMs: 60_000 });
      // A tmpfs the runtime did not size (e.g. /dev/shm) is still charged to the sandbox's memory: an OOM kill at
      // the memory limit holds the boundary too.
      const wrote = Math.max(0, ...[...r.stdout.matchAll(/wrote (\d+) MiB/g)].map((m) => Number(m[1])));
      const v = r.oomKilled && wrote <= SMALL.memoryMb + 8 ? { blocked: true, detail: `wrote ${wrote} MiB to ${dir}, then the memory limit (${SMALL.memoryMb} MiB) OOM-killed the writer` } : verdictOf(r);
      const after = await survivesOrEndsCleanly(ctx, id);
      return { blocked: v.blocked && after.ok, detail: `${v.detail}; ${after.how}` };
    },
  };
}

const fillWorkspace = fillAttack('disk-fill-workspace', '/workspace', 'write 256 MiB to /workspace with diskMb 16: ENOSPC at the limit');
const fillTmp = fillAttack('disk-fill-tmp', '/tmp', 'write 256 MiB to /tmp with diskMb 16: ENOSPC at the limit');
// /dev/shm holds memory: the memory limit bounds it when diskMb does not.
const fillShm = fillAttack('disk-fill-dev-shm', '/dev/shm', 'write 256 MiB to /dev/shm (where it exists) with diskMb 16, memoryMb 64: stopped by either', Math.max(SMALL.diskMb, SMALL.memoryMb));

const fillThroughApi: Attack = {
  id: 'resources.disk-fill-files-api',
  category: 'resources',
  title: 'PUT a 64 MiB file through the files API into a sandbox with diskMb 16: refused, the sandbox and daemon fine',
  async run(ctx) {
    const id = await ctx.scratch({ limits: SMALL, egress: NO_EGRESS });
    let left = 64;
    const body = new Readable({
      read() {
        this.push(left-- > 0 ? Buffer.alloc(1 << 20, 0x5a) : null);
      },
    });
    const put = await ctx.client.writeFile(id, '/workspace/big.bin', body).then(
      (r) => `accepted (${r.bytes} bytes)`,
      (err: Error & { code?: string }) => `refused (${err.code ?? err.message})`,
    );
    const size = await ctx.exec(id, ['sh', '-c', 'wc -c < /workspace/big.bin 2>/dev/null || echo 0']);
    const mib = Math.round(Number(size.stdout.trim() || '0') / (1 << 20));
    const after = await survivesOrEndsCleanly(ctx, id);
    return { blocked: put.startsWith('refused') && mib <= SMALL.diskMb && after.ok, detail: `PUT ${put}, ${mib} MiB landed (diskMb ${SMALL.diskMb}); ${after.how}` };
  },
};

const inodeFlood: Attack = {
  id: 'resources.inode-flood',
  category: 'resources',
  title: 'create empty files in /workspace and /tmp until it fails (memoryMb 64, diskMb 16): bounded, the sandbox recovers',
  async run(ctx) {
    const id = await ctx.scratch({ image: 'debian', limits: SMALL, egress: NO_EGRESS });
    // runsc ignores tmpfs nr_inodes and does not count inodes as the sandbox's memory: on gVisor only the
    // host memory limit bounds the flood, by ending the sandbox (README, Security). Give it the time to get there.
    const seconds = ctx.runtime === 'gvisor' ? 90 : 8;
    const r = await pyRun(ctx, id, String.raw`
import time
n, err, t = 0, '', time.time()
try:
    for d in ('/workspace', '/tmp'):
        os.makedirs(d + '/inodes', exist_ok=True)
        while n < 2000000 and time.time() - t < ${seconds}:
            os.close(os.open('%s/inodes/%d' % (d, n), os.O_CREAT | os.O_WRONLY, 0o600)); n += 1
            if n % 20000 == 0: print('files %d' % n, flush=True)
except OSError as e:
    err = ename(e)
print('files %d' % n)
done(err != '', 'created %d empty files before %s' % (n, err or 'nothing stopped it (${seconds} s)'))
`, { timeoutMs: (seconds + 60) * 1000 });
    const files = Math.max(0, ...[...r.stdout.matchAll(/files (\d+)/g)].map((m) => Number(m[1])));
    const after = await survivesOrEndsCleanly(ctx, id);
    const stopped = r.stdout.includes('"blocked": true') || (r.exitCode === EXIT_KILLED && r.oomKilled);
    return {
      blocked: stopped && after.ok,
      detail: `${r.stdout.includes('RESULT') ? clip(r.stdout.split('RESULT ')[1] ?? '', 160) : `killed after ${files} files (exit ${r.exitCode}, oomKilled ${r.oomKilled})`}; ${after.how}`,
    };
  },
};

function outputFlood(stream: 'stdout' | 'stderr' | 'both'): Attack {
  return {
    id: `resources.output-flood-${stream}`,
    category: 'resources',
    title: `write 64 MiB to ${stream === 'both' ? 'stdout and stderr interleaved' : stream}: the result is truncated at the output limit and the first bytes are kept`,
    async run(ctx) {
      const head = `HEAD-${stream}-${Date.now()}`;
      const cmd =
        stream === 'stdout'
          ? `echo ${head}; head -c 67108864 /dev/zero | tr '\\0' x`
          : stream === 'stderr'
            ? `echo ${head} >&2; head -c 67108864 /dev/zero | tr '\\0' y >&2`
            : `echo ${head}; i=0; while [ $i -lt 64 ]; do head -c 1048576 /dev/zero | tr '\\0' x; head -c 1048576 /dev/zero | tr '\\0' y >&2; i=$((i+1)); done`;
      const r = await ctx.exec(ctx.sandboxes.busybox, ['sh', '-c', cmd], { timeoutMs: 60_000 });
      const kept = (stream === 'stderr' ? r.stderr : r.stdout).startsWith(head);
      const total = Buffer.byteLength(r.stdout) + Buffer.byteLength(r.stderr);
      const bounded = total < 64 << 20 && r.truncated;
      const alive = await ctx.exec(ctx.sandboxes.busybox, ['echo', 'alive']);
      return {
        blocked: bounded && kept && alive.stdout.includes('alive'),
        detail: `truncated ${r.truncated}, ${total} bytes returned of 64 MiB, first line ${kept ? 'kept' : 'lost'}, exit ${r.exitCode}${r.timedOut ? ' (timed out)' : ''}; the next exec ${alive.stdout.includes('alive') ? 'ran' : `did not run: exit ${alive.exitCode} ${clip(alive.stdout + alive.stderr, 120)}`}`,
      };
    },
  };
}

const timeoutKillsTree: Attack = {
  id: 'resources.timeout-kills-tree',
  category: 'resources',
  title: 'on exec timeout, kill children that ignore SIGTERM, a setsid double-forked daemon and a nohup child',
  async run(ctx) {
    const id = await ctx.scratch({ limits: SMALL, egress: NO_EGRESS });
    const m = 7_000_000 + Math.floor(Math.random() * 999_999);
    // gVisor (runsc 2022-12) refuses PR_SET_CHILD_SUBREAPER, so a setsid escapee whose parent exited is
    // PID 1's and nobody's command: a documented limit (README, Security), not tried there.
    const escapee = ctx.runtime !== 'gvisor';
    const script = [
      `trap '' TERM HUP INT`,
      `(trap '' TERM HUP INT; exec sleep ${m}1) &`,
      ...(escapee ? [`(setsid sh -c 'trap "" TERM HUP; sleep ${m}2 & exit 0' &)`] : []),
      `nohup sleep ${m}3 >/dev/null 2>&1 &`,
      `sleep ${m}4`,
    ].join('\n');
    const r = await ctx.exec(id, ['sh', '-c', script], { timeoutMs: 1500 });
    const inside = async (): Promise<string> => (await ctx.exec(id, ['sh', '-c', `cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -o 'sleep ${m}[0-9]' || true`])).stdout.trim();
    const goneInside = await eventually(5000, async () => (await inside()) === '');
    const goneOnHost = await eventually(3000, () => hostProcessesWith(`${m}`).length === 0);
    const left = goneInside ? '' : (await inside()).replace(/\s+/g, ',');
    const onHost = hostProcessesWith(`${m}`);
    killMarked(onHost, `${m}`);
    return {
      blocked: r.timedOut && goneInside && goneOnHost,
      detail: `timedOut ${r.timedOut} exit ${r.exitCode}${escapee ? '' : ' (no setsid escapee: runsc refuses the subreaper role)'}; ${goneInside ? 'no child left inside' : `left inside: ${left}`}; ${goneOnHost ? 'none on the host' : `host pids ${onHost.join(',')} (killed by the suite)`}`,
    };
  },
};

const outliveStop: Attack = {
  id: 'resources.outlive-stop',
  category: 'resources',
  title: 'leave a setsid + nohup daemon behind an exec, then stop the sandbox: nothing of it may stay on the host',
  async run(ctx) {
    const id = await ctx.scratch({ limits: SMALL, egress: NO_EGRESS });
    const m = 8_000_000 + Math.floor(Math.random() * 999_999);
    await ctx.exec(id, ['sh', '-c', `(setsid nohup sh -c 'trap "" TERM HUP; sleep ${m}1' >/dev/null 2>&1 &); nohup sleep ${m}2 >/dev/null 2>&1 & echo started`]);
    const survivedExec = (await ctx.exec(id, ['sh', '-c', `cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c 'sleep ${m}' || true`])).stdout.trim();
    const stopped = (await ctx.client.stop(id)).state;
    const gone = await eventually(5000, () => hostProcessesWith(`${m}`).length === 0);
    const execAfter = await ctx.exec(id, ['echo', 'alive']).then((r) => r.stdout.includes('alive'), () => false);
    const onHost = hostProcessesWith(`${m}`);
    killMarked(onHost, `${m}`);
    return {
      blocked: gone && stopped === 'stopped' && !execAfter,
      detail: `${survivedExec || '?'} daemon(s) outlived their exec (allowed); after stop (state ${stopped}) ${gone ? 'none is left on the host' : `host pids ${onHost.join(',')} remained (killed by the suite)`}${execAfter ? ', and an exec still ran' : ''}`,
    };
  },
};

const cpuLimit: Attack = {
  id: 'resources.cpu-limit',
  category: 'resources',
  title: 'spin as many busy processes as the host has cores for 1.5 s: CPU time stays near the sandbox\'s cpus limit',
  async run(ctx) {
    const id = ctx.sandboxes.debian;
    const limit = (await ctx.client.get(id)).limits.cpus;
    // CPU time where the host kernel counts it (local, runc: throttled time is not run time, whatever else
    // the host is doing); work done on gVisor, whose guest kernel may count time the host throttled it as run.
    const byWork = ctx.runtime === 'gvisor';
    const v = await pyRun(ctx, id, String.raw`
import resource, time
def spin(sec):
    n, end = 0, time.time() + sec
    while time.time() < end:
        for _ in range(1000): pass
        n += 1
    return n
one = spin(0.4) / 0.4
n = max(2, os.cpu_count() or 2)
rd, wr = os.pipe()
kids = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os.close(rd); os.write(wr, (str(spin(1.5)) + '\n').encode()); os._exit(0)
    kids.append(pid)
os.close(wr)
for k in kids: os.waitpid(k, 0)
total = sum(int(x) for x in os.fdopen(rd).read().split())
one = max(one, spin(0.4) / 0.4)   # the faster of two baselines: a busy host must not make the sandbox look over its limit
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print('CPU %.3f %d' % ((total / 1.5 / one) if ${byWork ? 'True' : 'False'} else ((ru.ru_utime + ru.ru_stime) / 1.5), n))
`);
    const m = /CPU ([\d.]+) (\d+)/.exec(v.stdout);
    if (!m) return { blocked: false, detail: `the probe did not run: exit ${v.exitCode} ${clip(v.stderr)}` };
    const [used, procs] = [Number(m[1]), Number(m[2])];
    if (limit >= procs) return { blocked: true, detail: `cpus limit ${limit} >= ${procs} spinners: nothing to exceed (used ${used.toFixed(2)} cores)` };
    return { blocked: used <= limit * 1.25 + 0.15, detail: `${procs} spinners ${byWork ? 'did the work of' : 'used'} ${used.toFixed(2)} cores for 1.5 s (cpus limit ${limit})` };
  },
};

const fdLimit: Attack = {
  id: 'resources.open-files',
  category: 'resources',
  title: 'raise RLIMIT_NOFILE beyond its hard limit and open descriptors until it fails',
  async run(ctx) {
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
import resource, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
raised = ''
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard + 1, hard + 1)); raised = 'hard limit raised to %d' % (hard + 1)
except (OSError, ValueError):
    pass
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fds, err, t = [], '', time.time()
try:
    while time.time() - t < 5: fds.append(os.open('/dev/null', os.O_RDONLY))
except OSError as e:
    err = ename(e)
n = len(fds)
for f in fds: os.close(f)
done(not raised and err == 'EMFILE' and n <= hard and hard <= (1 << 20), raised or 'opened %d descriptors before %s (hard limit %d, not raisable)' % (n, err or 'nothing (5 s)', hard))
`);
  },
};

const killEverything: Attack = {
  id: 'resources.kill-everything',
  category: 'resources',
  title: 'kill(-1, SIGKILL) and kill(1, SIGKILL) from inside: only the sandbox\'s own processes can die, the daemon and host stay',
  async run(ctx) {
    const id = await ctx.scratch({ image: 'debian', limits: SMALL, egress: NO_EGRESS });
    // kill(-1) only where the pid namespace is the sandbox's own (no more processes than its pids limit, PID 1 not
    // the host's systemd): where
    // it is not, the attack has already got through and must not take the host down with it.
    const r = await ctx.exec(id, ['python3', '-c', `${PY_PRELUDE}
pids = [p for p in os.listdir('/proc') if p.isdigit()]
comm = open('/proc/1/comm').read().strip()
if len(pids) > ${SMALL.pids} or comm in ('systemd', 'launchd', 'dockerd', 'containerd'):
    print('SHARED %d processes, PID 1 %s' % (len(pids), comm), flush=True); os._exit(3)
for target in (1, -1):
    try: os.kill(target, 9)
    except OSError: pass
`], { timeoutMs: 15_000 });
    if (r.stdout.includes('SHARED')) return { blocked: false, detail: `the pid namespace is not the sandbox's own (${r.stdout.trim()}); not signalled` };
    const after = await survivesOrEndsCleanly(ctx, id);
    const neighbour = await ctx.exec(ctx.sandboxes.neighbour, ['echo', 'alive']);
    const ok = after.ok && neighbour.stdout.includes('alive');
    return { blocked: ok, detail: `kill -9 -1 exec ended with ${r.exitCode}; ${after.how}; the neighbour ${neighbour.stdout.includes('alive') ? 'still answers' : 'does not answer'}` };
  },
};

const execFlood: Attack = {
  id: 'resources.exec-flood',
  category: 'resources',
  title: '64 concurrent execs into a sandbox with pids 32: each ends (ran or refused), the sandbox and the daemon answer after',
  async run(ctx) {
    const id = await ctx.scratch({ limits: SMALL, egress: NO_EGRESS });
    const results = await Promise.all(
      Array.from({ length: 64 }, () =>
        ctx.exec(id, ['sh', '-c', 'sleep 1; echo done'], { timeoutMs: 30_000 }).then(
          (r) => (r.stdout.includes('done') ? 'ran' : r.timedOut ? 'timed out' : `exit ${r.exitCode}`),
          (err: Error & { code?: string }) => `refused ${err.code ?? err.message}`,
        ),
      ),
    );
    const tally = new Map<string, number>();
    for (const r of results) tally.set(r, (tally.get(r) ?? 0) + 1);
    const after = await survivesOrEndsCleanly(ctx, id);
    const health = await ctx.client.health().then(() => true, () => false);
    const summary = [...tally].map(([k, n]) => `${n} ${k}`).join(', ');
    return { blocked: after.ok && health && !tally.has('timed out'), detail: `${summary}; ${after.how}; the daemon ${health ? 'answers' : 'does not answer'}` };
  },
};

const stdinFlood: Attack = {
  id: 'resources.stdin-flood',
  category: 'resources',
  title: 'send 16 MiB of stdin to a command that reads one byte and exits: the exec ends, the next one runs',
  async run(ctx) {
    const id = ctx.sandboxes.busybox;
    const r = await ctx
      .exec(id, ['sh', '-c', 'head -c 1 >/dev/null; echo read-one'], { stdin: 'x'.repeat(16 * 1024 * 1024 - 1024), timeoutMs: 30_000 })
      .then(
        (x) => (x.stdout.includes('read-one') ? `ended (exit ${x.exitCode})` : x.timedOut ? 'hung until its timeout' : `exit ${x.exitCode} ${clip(x.stderr, 80)}`),
        (err: Error & { code?: string }) => `refused (${err.code ?? err.message})`,
      );
    const alive = await ctx.exec(id, ['echo', 'alive']);
    return { blocked: !r.startsWith('hung') && alive.stdout.includes('alive'), detail: `the flooded exec ${r}; the next exec ${alive.stdout.includes('alive') ? 'ran' : `did not: exit ${alive.exitCode}`}` };
  },
};

const zombies: Attack = {
  id: 'resources.zombie-flood',
  category: 'resources',
  title: 'leave 20 unreaped children, then exit: PID 1 must reap the orphans so they do not hold the pids limit',
  async run(ctx) {
    const id = await ctx.scratch({ image: 'debian', limits: SMALL, egress: NO_EGRESS });
    const made = await pyRun(ctx, id, String.raw`
import time
for _ in range(20):
    if os.fork() == 0: os._exit(0)
time.sleep(0.3)
def state(p):
    try: return open('/proc/%s/stat' % p).read().rsplit(')', 1)[1].split()[0]
    except OSError: return '?'
z = sum(1 for p in os.listdir('/proc') if p.isdigit() and state(p) == 'Z')
print('ZOMBIES %d' % z)
`);
    const before = Number(/ZOMBIES (\d+)/.exec(made.stdout)?.[1] ?? '-1');
    if (before < 15) return { blocked: false, detail: `control: the probe did not leave its zombies (${before}): ${clip(made.stderr)}` };
    let left = -1;
    await eventually(3000, async () => {
      const r = await ctx.exec(id, ['sh', '-c', "cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') Z ' || true"]);
      left = Number(r.stdout.trim() || '-1');
      return left === 0;
    });
    const after = await survivesOrEndsCleanly(ctx, id);
    return { blocked: left === 0 && after.ok, detail: `${before} zombies while their parent lived; ${left} left after it exited; ${after.how}` };
  },
};

const hugeArgv: Attack = {
  id: 'resources.huge-argv-env',
  category: 'resources',
  title: 'exec with 8 MiB of argv and 1 MiB of environment: refused or run, the sandbox and daemon answer afterwards',
  async run(ctx) {
    const id = ctx.sandboxes.busybox;
    const argv = ['sh', '-c', 'echo $#', 'x', ...Array.from({ length: 64 }, () => 'a'.repeat(128 * 1024))];
    const env = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`BIG_${i}`, 'e'.repeat(32 * 1024)]));
    const r = await ctx.exec(id, argv, { env }).then(
      (x) => `exit ${x.exitCode}${x.stderr ? ` (${clip(x.stderr, 60)})` : ''}`,
      (err: Error & { code?: string }) => `refused (${err.code ?? err.message})`,
    );
    const alive = await ctx.exec(id, ['echo', 'alive']);
    const health = await ctx.client.health().then(() => true, () => false);
    return { blocked: alive.stdout.includes('alive') && health, detail: `the huge exec: ${r}; afterwards the sandbox ${alive.stdout.includes('alive') ? 'answers' : 'does not answer'} and the daemon ${health ? 'answers' : 'does not'}` };
  },
};

export const resourceAttacks: Attack[] = [
  forkBomb,
  shellForkBomb,
  threadBomb,
  memoryBomb,
  fillWorkspace,
  fillTmp,
  fillShm,
  fillThroughApi,
  inodeFlood,
  outputFlood('stdout'),
  outputFlood('stderr'),
  outputFlood('both'),
  timeoutKillsTree,
  outliveStop,
  cpuLimit,
  fdLimit,
  killEverything,
  execFlood,
  stdinFlood,
  zombies,
  hugeArgv,
];
