/**
 * Cross-sandbox attacks: from the attacker (debian, tenant A) against the neighbour (tenant A) and the other tenant's
 * sandbox: see or signal their processes, reach their loopback and Unix-socket listeners, read their files and IPC
 * objects, share their namespaces or host uid, and reach them through the API with the wrong tenant's token.
 * Each attack first makes the neighbour hold something real (a process, a listener, a file, an IPC object) and checks
 * that the neighbour itself can reach it, so a miss means the boundary held, not that there was nothing to find.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { readAll } from '../../sdk/client.js';
import { clip, hostProcessesWith, marker, pyProbe, pyRun, pyStr } from './in-sandbox.js';
import type { Attack, AttackContext, AttackOutcome } from './types.js';

/** Runs a long-lived Python script in a sandbox, resolves once it printed READY, and collects what it prints after. */
async function background(ctx: AttackContext, id: string, script: string, args: string[]): Promise<{ output: () => string; ended: (ms: number) => Promise<boolean>; stop: () => Promise<void> }> {
  const ac = new AbortController();
  let out = '';
  let ready: () => void = () => undefined;
  let failed: (e: Error) => void = () => undefined;
  const isReady = new Promise<void>((res, rej) => ((ready = res), (failed = rej)));
  const pump = (async () => {
    try {
      for await (const ev of ctx.client.execStream(id, { cmd: ['python3', '-c', script, ...args], timeoutMs: 30_000 }, ac.signal)) {
        if (ev.type === 'stdout' || ev.type === 'stderr') {
          out += ev.data.toString('utf8');
          if (out.includes('READY')) ready();
        } else if (ev.type === 'exit') break;
      }
      failed(new Error(`the background process ended before READY: ${clip(out)}`));
    } catch (err) {
      failed(err as Error);
    }
  })();
  const guard = setTimeout(() => failed(new Error('the background process was not READY within 20 s')), 20_000);
  try {
    await isReady;
  } finally {
    clearTimeout(guard);
  }
  return {
    output: () => out,
    /** Waits up to `ms` for the process to exit (its last output has then arrived). */
    ended: (ms: number) => Promise.race([pump.then(() => true), new Promise<boolean>((res) => setTimeout(() => res(false), ms).unref())]),
    stop: async () => {
      ac.abort();
      await pump.catch(() => undefined);
    },
  };
}

/** The neighbour's listener: TCP and UDP on 127.0.0.1 and ::1, an abstract and a path Unix socket; prints HIT lines. */
const LISTENER = String.raw`
import os, select, socket, sys, time
port, name = int(sys.argv[1]), sys.argv[2]
socks = {}
def add(kind, fam, typ, addr):
    try:
        s = socket.socket(fam, typ)
        if fam != socket.AF_UNIX: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        if typ == socket.SOCK_STREAM: s.listen(16)
        socks[s] = kind
    except OSError as e:
        print('NOBIND %s %s' % (kind, e), flush=True)
add('tcp4', socket.AF_INET, socket.SOCK_STREAM, ('127.0.0.1', port))
add('tcp6', socket.AF_INET6, socket.SOCK_STREAM, ('::1', port))
add('udp4', socket.AF_INET, socket.SOCK_DGRAM, ('127.0.0.1', port))
add('abstract', socket.AF_UNIX, socket.SOCK_STREAM, '\0' + name)
add('path', socket.AF_UNIX, socket.SOCK_STREAM, '/tmp/%s.sock' % name)
print('READY', flush=True)
# poll, not select: gVisor's filter refuses select(2) (a finding of its own, not this attack's)
byfd = {s.fileno(): s for s in socks}
p = select.poll()
for s in socks: p.register(s, select.POLLIN)
end = time.time() + 25
while time.time() < end:
    for fd, _ in p.poll(500):
        s = byfd[fd]
        try:
            if s.type == socket.SOCK_DGRAM:
                data = s.recv(64)
            else:
                c, _ = s.accept(); c.settimeout(2); data = c.recv(64); c.close()
        except OSError:
            continue
        print('HIT %s %s' % (socks[s], data.decode('latin1')), flush=True)
        if data.startswith(b'quit'):
            os.unlink('/tmp/%s.sock' % name); sys.exit(0)
`;

/** Connects to every channel of the listener with `word`; prints per channel what happened. Used by both sides. */
const DIALER = String.raw`
import socket, sys
port, name, word = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
res = []
for kind, fam, typ, addr in (('tcp4', socket.AF_INET, socket.SOCK_STREAM, ('127.0.0.1', port)), ('tcp6', socket.AF_INET6, socket.SOCK_STREAM, ('::1', port)),
                             ('udp4', socket.AF_INET, socket.SOCK_DGRAM, ('127.0.0.1', port)), ('abstract', socket.AF_UNIX, socket.SOCK_STREAM, '\0' + name),
                             ('path', socket.AF_UNIX, socket.SOCK_STREAM, '/tmp/%s.sock' % name)):
    try:
        s = socket.socket(fam, typ); s.settimeout(3)
        if typ == socket.SOCK_DGRAM: s.sendto(word + b' ' + kind.encode(), addr)
        else: s.connect(addr); s.sendall(word + b' ' + kind.encode())
        s.close(); res.append(kind + ':sent')
    except OSError as e:
        res.append('%s:%s' % (kind, e.__class__.__name__))
seen = []
for f, key in (('/proc/net/tcp', ':%04X' % port), ('/proc/net/tcp6', ':%04X' % port), ('/proc/net/udp', ':%04X' % port), ('/proc/net/unix', name)):
    try:
        if key in open(f).read(): seen.append(f)
    except OSError:
        pass
print('DIAL ' + ' '.join(res) + ' SEEN ' + (','.join(seen) or 'none'), flush=True)
`;

const listeners: Attack = {
  id: 'cross-sandbox.reach-listeners',
  category: 'cross-sandbox',
  title: 'reach the neighbour\'s listeners on 127.0.0.1, ::1 (TCP, UDP), an abstract Unix socket and /tmp/NAME.sock; spot them in /proc/net',
  async run(ctx) {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const name = marker('agentbox-attack');
    const bg = await background(ctx, ctx.sandboxes.neighbour, LISTENER, [String(port), name]);
    try {
      const attack = await ctx.exec(ctx.sandboxes.debian, ['python3', '-c', DIALER, String(port), name, 'attack']);
      const control = await ctx.exec(ctx.sandboxes.neighbour, ['python3', '-c', DIALER, String(port), name, 'control']);
      await ctx.exec(ctx.sandboxes.neighbour, ['python3', '-c', `import socket; s = socket.create_connection(('127.0.0.1', ${port}), 3); s.sendall(b'quit'); s.close()`]);
      await bg.ended(10_000); // its HIT lines may still be on their way
      const out = bg.output();
      const leaked = [...out.matchAll(/HIT (\S+) attack/g)].map((m) => m[1]);
      const reachedByOwner = new Set([...out.matchAll(/HIT (\S+) control/g)].map((m) => m[1]));
      const seen = /SEEN (\S+)/.exec(attack.stdout)?.[1] ?? '?';
      if (!attack.stdout.includes('DIAL')) return { blocked: false, detail: `the attacker's dialer did not run: ${clip(attack.stderr)}` };
      if (!reachedByOwner.has('tcp4') || !reachedByOwner.has('abstract')) return { blocked: false, detail: `control: the neighbour could not reach its own listener (${[...reachedByOwner].join(',') || 'nothing'}; listener said: ${clip(out)}; its dialer: ${clip(control.stdout + control.stderr)})` };
      const ok = leaked.length === 0 && seen === 'none';
      return {
        blocked: ok,
        detail: ok
          ? `nothing reached (${clip(/DIAL (.*) SEEN/.exec(attack.stdout)?.[1] ?? '', 160)}); the neighbour reached its own ${[...reachedByOwner].join(',')}`
          : `reached: ${leaked.join(',') || 'none'}; seen in the attacker's /proc/net: ${seen}`,
      };
    } finally {
      await bg.stop();
    }
  },
};

const SLEEPER = String.raw`
import os, sys, time
print('READY %d' % os.getpid(), flush=True)
time.sleep(25)
`;

const seeProcesses: Attack = {
  id: 'cross-sandbox.see-processes',
  category: 'cross-sandbox',
  title: 'find the neighbour\'s and the other tenant\'s processes (and the host\'s) in /proc: cmdline, status, the pid count',
  async run(ctx) {
    const mark = marker('agentbox-neighbour-proc');
    const bgs = [await background(ctx, ctx.sandboxes.neighbour, SLEEPER, [mark])];
    try {
      const other = await background(ctx, ctx.sandboxes.otherTenant, SLEEPER, [mark]).catch(() => undefined);
      if (other) bgs.push(other);
      // The marker goes in reversed, so the probe's own command line does not contain it.
      const v = await pyProbe(ctx, ctx.sandboxes.debian, String.raw`
mark = ${pyStr([...mark].reverse().join(''))}[::-1]
found, foreign = [], []
mine, p = set(), os.getpid()
while p > 1:
    mine.add(p)
    try: p = int(open('/proc/%d/stat' % p).read().rsplit(')', 1)[1].split()[1])
    except Exception: break
pids = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in mine]
for p in pids:
    try:
        argv = open('/proc/%s/cmdline' % p, 'rb').read().split(b'\0')
    except OSError:
        continue
    cmd = b' '.join(argv).decode('latin1')
    if mark in cmd: found.append(p)
    prog = os.path.basename(argv[0].decode('latin1'))
    if prog in ('dockerd', 'containerd', 'node', 'runsc', 'runsc-sandbox', 'runsc-gofer', 'systemd', 'sshd', 'bwrap') or prog.startswith('containerd-shim'):
        foreign.append('%s:%s' % (p, cmd[:40]))
done(not found and not foreign, ('the neighbour\'s process is visible as pid %s' % ','.join(found)) if found else ('host processes visible: ' + '; '.join(foreign[:4])) if foreign else '%d processes visible, all the attacker\'s own sandbox' % len(pids))
`);
      return v;
    } finally {
      for (const b of bgs) await b.stop();
    }
  },
};

const signalNeighbour: Attack = {
  id: 'cross-sandbox.signal-neighbour',
  category: 'cross-sandbox',
  title: 'signal the neighbour\'s process by its inner and host pids (SIGKILL once identified as it) and sweep kill(pid, 0) over 1..65535',
  async run(ctx) {
    const mark = marker('agentbox-signal-target');
    const bg = await background(ctx, ctx.sandboxes.neighbour, SLEEPER, [mark]);
    try {
      const nsPid = Number(/READY (\d+)/.exec(bg.output())?.[1] ?? '0');
      const hostPids = hostProcessesWith(mark);
      const v = await pyProbe(ctx, ctx.sandboxes.debian, String.raw`
import signal
own = set(int(p) for p in os.listdir('/proc') if p.isdigit())
mark = ${pyStr([...mark].reverse().join(''))}[::-1]
targets = [p for p in [${nsPid}] + ${JSON.stringify(hostPids)} if p > 1 and p not in own]
# SIGKILL only a process this probe has identified as the neighbour's (its marker in the command line): a guessed
# pid could be anyone's where pid namespaces are shared. The rest get signal 0.
for p in targets:
    try:
        if mark in open('/proc/%d/cmdline' % p, 'rb').read().decode('latin1'): os.kill(p, signal.SIGKILL)
        else: os.kill(p, 0)
    except OSError: pass
foreign = []
for p in range(1, 65536):
    if p in own: continue
    try:
        os.kill(p, 0); answered = True
    except PermissionError:
        answered = True
    except OSError:
        answered = False
    # A pid that answers and shows in /proc is the attacker's own sandbox (a probe started meanwhile).
    if answered and not os.path.exists('/proc/%d' % p): foreign.append(p)
done(not foreign, ('pids answering outside the attacker\'s own: %s' % foreign[:10]) if foreign else '%d guessed pids of the neighbour signalled (SIGKILL once identified); no pid outside the attacker\'s own answers kill(pid, 0)' % len(targets))
`);
      const alive = await ctx.exec(ctx.sandboxes.neighbour, ['sh', '-c', `kill -0 ${nsPid} && echo alive`]);
      const survived = alive.stdout.includes('alive');
      return { blocked: v.blocked && survived, detail: `${v.detail}; the neighbour's process ${survived ? 'survived' : 'died'} (pid ${nsPid} inside, host pids ${hostPids.join(',') || 'not visible'})` };
    } finally {
      await bg.stop();
    }
  },
};

const sharedFiles: Attack = {
  id: 'cross-sandbox.read-files',
  category: 'cross-sandbox',
  title: 'find the neighbour\'s files in the attacker\'s /tmp, /dev/shm, /workspace, /proc/*/root and by host-path guesses',
  async run(ctx) {
    const mark = marker('agentbox-neighbour-file');
    const made = await ctx.exec(ctx.sandboxes.neighbour, ['sh', '-c', `for d in /tmp /dev/shm /workspace /dev/mqueue; do [ -w $d ] && echo ${mark} > $d/${mark}; done; cat /workspace/${mark}`]);
    if (!made.stdout.includes(mark)) return { blocked: false, detail: `control: the neighbour could not write its own marker: ${clip(made.stderr)}` };
    try {
      return await pyProbe(ctx, ctx.sandboxes.debian, String.raw`
import glob
mark = ${pyStr(mark)}
hits = []
cands = ['%s/%s' % (d, mark) for d in ('/tmp', '/dev/shm', '/workspace', '/dev/mqueue', '/run', '/var/tmp')]
cands += glob.glob('/proc/*/root/*/' + mark) + glob.glob('/proc/*/cwd/' + mark)
for pat in ('/var/lib/docker/*/*/' + mark, '/var/tmp/agentbox*/*/' + mark, '/tmp/agentbox*/*/' + mark, '/proc/1/root/var/lib/docker/volumes/*/_data/' + mark):
    cands += glob.glob(pat)
import time
t0 = time.time()
for root, dirs, files in os.walk('/', topdown=True):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys', '/usr')]
    if mark in files: hits.append(os.path.join(root, mark))
    if time.time() - t0 > 8: break
for c in cands:
    try:
        if mark in open(c).read(): hits.append(c)
    except OSError:
        pass
done(not hits, ('the neighbour\'s file is readable at ' + ', '.join(sorted(set(hits)))) if hits else 'the neighbour\'s marker (in its /tmp, /dev/shm, /workspace) is nowhere in the attacker\'s view')
`);
    } finally {
      await ctx.exec(ctx.sandboxes.neighbour, ['sh', '-c', `rm -f /tmp/${mark} /dev/shm/${mark} /workspace/${mark} /dev/mqueue/${mark}`]);
    }
  },
};

const sysvIpc: Attack = {
  id: 'cross-sandbox.ipc-objects',
  category: 'cross-sandbox',
  title: 'attach the neighbour\'s SysV shared memory, message queue and semaphores by key, and its POSIX message queue',
  async run(ctx) {
    const key = 0x41420000 + Math.floor(Math.random() * 0xffff);
    const mq = `/${marker('agentbox-mq')}`;
    const IPC = String.raw`
libc.shmget.restype = libc.msgget.restype = libc.semget.restype = ctypes.c_int
libc.mq_open.restype = ctypes.c_int
KEY, MQ = ${key}, ${pyStr(mq)}.encode()
`;
    const made = await pyRun(ctx, ctx.sandboxes.neighbour, IPC + String.raw`
ids = [libc.shmget(KEY, 4096, 0o1600 | 0o666), libc.msgget(KEY, 0o1000 | 0o666), libc.semget(KEY, 1, 0o1000 | 0o666)]
q = libc.mq_open(MQ, os.O_CREAT | os.O_RDWR, 0o666, None)
again = [libc.shmget(KEY, 0, 0), libc.msgget(KEY, 0), libc.semget(KEY, 0, 0)]
print('MADE %s %d AGAIN %s' % (ids, q, again))
`);
    const made1 = /MADE \[(.*)\] (-?\d+) AGAIN \[(.*)\]/.exec(made.stdout);
    try {
      if (!made1 || made1[3]!.split(',').some((x) => Number(x) < 0)) return { blocked: false, detail: `control: the neighbour could not create or find its own IPC objects: ${clip(made.stdout + made.stderr)}` };
      const v = await pyProbe(ctx, ctx.sandboxes.debian, IPC + String.raw`
got = []
for name, f in (('shmget', lambda: libc.shmget(KEY, 0, 0)), ('msgget', lambda: libc.msgget(KEY, 0)), ('semget', lambda: libc.semget(KEY, 0, 0))):
    if f() >= 0: got.append(name)
if libc.mq_open(MQ, os.O_RDONLY, 0, None) >= 0: got.append('mq_open')
try:
    sysv = [l.split()[0] for l in open('/proc/sysvipc/shm').read().splitlines()[1:]]
    if any(int(k) == KEY for k in sysv): got.append('/proc/sysvipc/shm lists it')
except (OSError, ValueError):
    pass
done(not got, ('the neighbour\'s IPC objects are reachable: ' + ', '.join(got)) if got else 'key %#x: no shm, msg, sem or POSIX queue of the neighbour reachable' % KEY)
`);
      return v;
    } finally {
      await pyRun(ctx, ctx.sandboxes.neighbour, IPC + String.raw`
for i, f in ((libc.shmget(KEY, 0, 0), lambda i: libc.shmctl(i, 0, None)), (libc.msgget(KEY, 0), lambda i: libc.msgctl(i, 0, None)), (libc.semget(KEY, 0, 0), lambda i: libc.semctl(i, 0, 0))):
    if i >= 0: f(i)
libc.mq_unlink(MQ)
`);
    }
  },
};

const namespacesShared: Attack = {
  id: 'cross-sandbox.shared-namespaces',
  category: 'cross-sandbox',
  title: 'share a namespace (net, ipc, uts, pid, mnt) with the neighbour, or change its hostname from outside',
  async run(ctx): Promise<AttackOutcome> {
    // The cgroup namespace is left out: docker on cgroup v1 shares the host's (it hides paths, it isolates nothing).
    const NS = ['net', 'ipc', 'uts', 'pid', 'mnt'];
    const read = `import os\nfor n in ${JSON.stringify(NS)}:\n    try: print('NS', n, os.readlink('/proc/self/ns/' + n))\n    except OSError: print('NS', n, '?')\nprint('HOST', os.uname().nodename)`;
    const [a, b] = await Promise.all([ctx.exec(ctx.sandboxes.debian, ['python3', '-c', read]), ctx.exec(ctx.sandboxes.neighbour, ['python3', '-c', read])]);
    const ns = (s: string): Map<string, string> => new Map([...s.matchAll(/^NS (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    const [na, nb] = [ns(a.stdout), ns(b.stdout)];
    if (na.size < NS.length || nb.size < NS.length) return { blocked: false, detail: `the namespace probe did not run: ${clip(a.stderr + b.stderr)}` };
    // gVisor runs one kernel per sandbox: its namespace ids are local to that kernel and may repeat across sandboxes.
    const shared = ctx.runtime === 'gvisor' ? [] : NS.filter((n) => na.get(n) !== '?' && na.get(n) === nb.get(n));
    const sethost = await pyProbe(ctx, ctx.sandboxes.debian, String.raw`
import socket
before = socket.gethostname().encode()
# The hostname it already has: success proves the right and changes nothing, wherever the UTS namespace is.
r = libc.sethostname(before, len(before))
done(r != 0, 'sethostname %s (hostname %s)' % ('succeeded' if r == 0 else 'refused', before.decode()))
`);
    const nbHost = /HOST (\S+)/.exec((await ctx.exec(ctx.sandboxes.neighbour, ['python3', '-c', read])).stdout)?.[1];
    const leaks: string[] = [];
    if (shared.length) leaks.push(`shares ${shared.join(',')} with the neighbour`);
    if (!sethost.blocked) leaks.push(sethost.detail);
    if (nbHost && nbHost === hostname()) leaks.push(`the neighbour has the host's hostname (${nbHost})`);
    return { blocked: leaks.length === 0, detail: leaks.join('; ') || `no namespace shared${ctx.runtime === 'gvisor' ? ' (one kernel per sandbox)' : ` (${NS.join(',')} differ)`}; ${sethost.detail}` };
  },
};

const hostUid: Attack = {
  id: 'cross-sandbox.host-uid',
  category: 'cross-sandbox',
  title: 'run as the same host uid as the neighbour (uid_map), so an escaped process could touch its files',
  // docker (runc and runsc) runs every sandbox as uid 1000 of the host's user namespace: no per-sandbox uid to check
  // there (see the README's threat model); local maps each sandbox to its own host uid.
  runtimes: ['local'],
  async run(ctx) {
    // Seen from the host, where the uid is real: the sandboxes' own uid_map only shows their inner namespace.
    const mark = marker('agentbox-uid');
    const bgs = await Promise.all([ctx.sandboxes.debian, ctx.sandboxes.neighbour].map((id, i) => background(ctx, id, SLEEPER, [`${mark}-${i}`])));
    try {
      const uidOf = (needle: string): number[] =>
        hostProcessesWith(needle)
          .filter((p) => readFileSync(`/proc/${p}/cmdline`, 'latin1').startsWith('python3\0'))
          .map((p) => {
            try {
              return Number(/^Uid:\s+\d+\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1]);
            } catch {
              return NaN;
            }
          })
          .filter((u) => !Number.isNaN(u));
      const [ua, ub] = [uidOf(`${mark}-0`), uidOf(`${mark}-1`)];
      if (!ua.length || !ub.length) return { blocked: false, detail: `control: the sandboxes' processes are not visible on the host (${ua.length}, ${ub.length})` };
      const shared = ua.filter((u) => ub.includes(u));
      const root = [...ua, ...ub].filter((u) => u === 0);
      return {
        blocked: shared.length === 0 && root.length === 0,
        detail: `the attacker's processes run as host uid ${[...new Set(ua)].join(',')}, the neighbour's as ${[...new Set(ub)].join(',')}`,
      };
    } finally {
      for (const b of bgs) await b.stop();
    }
  },
};

const otherTenantApi: Attack = {
  id: 'cross-sandbox.other-tenant-api',
  category: 'cross-sandbox',
  title: 'reach the other tenant\'s sandbox through the API with tenant A\'s token (get, exec, files, execs, egress, stop) and A\'s scratch with B\'s',
  async run(ctx) {
    const leaks: string[] = [];
    const notFound = async (what: string, p: Promise<unknown>): Promise<void> => {
      try {
        const v = await p;
        leaks.push(`${what} answered ${clip(JSON.stringify(v ?? null), 60)}`);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code !== 'not_found') leaks.push(`${what} failed with ${code ?? (err as Error).message}, not not_found`);
      }
    };
    const b = ctx.sandboxes.otherTenant;
    await notFound('A: get B', ctx.client.get(b));
    await notFound('A: exec in B', ctx.client.exec(b, { cmd: ['true'] }));
    await notFound('A: read B /etc/hostname', ctx.client.readFile(b, '/etc/hostname').then((s) => readAll(s)));
    await notFound('A: list B /workspace', ctx.client.listDir(b, '/workspace'));
    await notFound('A: write B /workspace', ctx.client.writeFile(b, '/workspace/agentbox-attack', 'x'));
    await notFound('A: B execs', ctx.client.execs(b));
    await notFound('A: B egress log', ctx.client.egressLog(b));
    if ((await ctx.client.list({ all: true })).some((s) => s.id === b)) leaks.push("A's list shows B's sandbox");
    const victim = await ctx.scratch({ egress: { mode: 'none' } });
    await notFound('B: exec in A', ctx.otherClient.exec(victim, { cmd: ['true'] }));
    await notFound('B: write A', ctx.otherClient.writeFile(victim, '/workspace/agentbox-attack', 'x'));
    await notFound('B: allow egress for A', ctx.otherClient.allowEgress(victim, 'example.com'));
    await notFound('B: stop A', ctx.otherClient.stop(victim));
    await notFound('B: delete A', ctx.otherClient.delete(victim));
    if ((await ctx.otherClient.list({ all: true })).some((s) => s.id === victim)) leaks.push("B's list shows A's sandbox");
    const state = (await ctx.client.get(victim)).state;
    if (state !== 'running') leaks.push(`A's scratch is ${state} after B's attempts`);
    const ownB = await ctx.otherClient.get(b).then(() => true, () => false);
    if (!ownB) leaks.push('control: B cannot get its own sandbox');
    return { blocked: leaks.length === 0, detail: leaks.join('; ') || '13 cross-tenant calls all not_found; A\'s sandbox still running; B reaches its own (control)' };
  },
};

export const crossSandboxAttacks: Attack[] = [listeners, seeProcesses, signalNeighbour, sharedFiles, sysvIpc, namespacesShared, hostUid, otherTenantApi];
