/**
 * Privilege attacks from inside a sandbox: capabilities, root, setuid binaries, ptrace and the syscalls Docker's
 * default seccomp profile denies (io_uring, bpf, perf, userfaultfd, keyrings, pidfd_getfd, NUMA, modules, kexec,
 * namespaces), the same calls through a foreign ABI (i386 int 0x80, x32), and the kernel's secrets in /proc.
 * A syscall probe counts as blocked only when the call fails; where the call could succeed without the filter, the
 * probe asks for exactly that form (e.g. userfaultfd with UFFD_USER_MODE_ONLY), so only the filter can stop it.
 */
import { pyProbe } from './in-sandbox.js';
import type { Attack, AttackContext, AttackOutcome } from './types.js';

/** A probe in the usual attacker, the debian sandbox. */
function probe(ctx: AttackContext, body: string): Promise<AttackOutcome> {
  return pyProbe(ctx, ctx.sandboxes.debian, body);
}

/** Python: `deny(results)` reports the calls that did not fail; results are (name, rc, errno). */
const DENY = String.raw`
def deny(results, what):
    open_ = ['%s -> %d' % (n, r) for n, r, e in results if r >= 0]
    done(not open_, ('succeeded: ' + ', '.join(open_)) if open_ else '%s refused: ' % what + ', '.join('%s %s' % (n, e) for n, r, e in results))
`;

const capabilities: Attack = {
  id: 'privilege.capabilities',
  category: 'privilege',
  title: 'hold any capability: CapInh/CapPrm/CapEff/CapAmb/CapBnd in /proc/self/status and capget',
  async run(ctx) {
    // gVisor's exec agent keeps KILL/SETUID/SETGID in the bounding set of its own kernel (not the host's); with
    // no_new_privs and empty permitted/effective sets nothing can raise them, so there the bound is checked as such.
    return probe(ctx, String.raw`
st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
caps = {k: int(st[k].strip(), 16) for k in ('CapInh', 'CapPrm', 'CapEff', 'CapAmb', 'CapBnd') if k in st}
if len(caps) < 4: done(False, 'control: /proc/self/status has no capability lines: %r' % caps)
hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
data = (ctypes.c_uint32 * 6)()
r, e = sc(125, ctypes.byref(hdr), ctypes.byref(data))
eff = data[0] | (data[3] << 32); prm = data[1] | (data[4] << 32)
nnp = libc.prctl(39, 0, 0, 0, 0)
bad = {k: hex(v) for k, v in caps.items() if v and k != 'CapBnd'}
if eff or prm: bad['capget'] = 'eff %x prm %x' % (eff, prm)
bnd = caps.get('CapBnd', 0)
allowed_bnd = (1 << 5) | (1 << 6) | (1 << 7) if ${JSON.stringify(ctx.runtime)} == 'gvisor' else 0
if bnd & ~allowed_bnd or (bnd and nnp != 1): bad['CapBnd'] = hex(bnd)
done(not bad, ('capabilities held: %r' % bad) if bad else 'no capability in any set (bounding %s, no_new_privs %d)' % (hex(bnd), nnp))
`);
  },
};

const noNewPrivs: Attack = {
  id: 'privilege.no-new-privs',
  category: 'privilege',
  title: 'clear no_new_privs (prctl PR_SET_NO_NEW_PRIVS 0) or find it unset',
  async run(ctx) {
    return probe(ctx, String.raw`
before = libc.prctl(39, 0, 0, 0, 0)
libc.prctl(38, 0, 0, 0, 0)
after = libc.prctl(39, 0, 0, 0, 0)
done(before == 1 and after == 1, 'no_new_privs %d, %d after trying to clear it' % (before, after))
`);
  },
};

const becomeRoot: Attack = {
  id: 'privilege.become-root',
  category: 'privilege',
  title: 'become uid/gid 0: setuid, setresuid, setgid, setgroups, setfsuid',
  async run(ctx) {
    return probe(ctx, String.raw`
if os.getuid() == 0 or os.geteuid() == 0: done(False, 'already uid 0 inside')
res = []
for name, nr, args in (('setuid', 105, (0,)), ('setresuid', 117, (0, 0, 0)), ('setgid', 106, (0,)), ('setresgid', 119, (0, 0, 0)), ('setreuid', 113, (0, 0))):
    r, e = sc(nr, *args); res.append((name, r, e))
g = (ctypes.c_uint32 * 1)(0)
r, e = sc(116, 1, ctypes.byref(g)); res.append(('setgroups', r, e))
sc(122, 0)
if os.geteuid() == 0 or os.getuid() == 0: res.append(('uid now 0', 0, ''))
fsuid = sc(122, -1)[0]
if fsuid == 0: res.append(('setfsuid', 0, ''))
deny(res, 'uid %d' % os.getuid())
`.replace('deny(', DENY + '\ndeny('));
  },
};

const setuidBinaries: Attack = {
  id: 'privilege.setuid-binaries',
  category: 'privilege',
  title: 'run the image\'s setuid/setgid binaries (passwd, chfn, newgrp, mount, ...) and watch their effective uid',
  async run(ctx) {
    return probe(ctx, String.raw`
import stat, subprocess, time
found = []
for d in ('/usr/bin', '/usr/sbin', '/bin', '/sbin', '/usr/lib/openssh', '/usr/libexec'):
    if not os.path.isdir(d) or os.path.islink(d) and d in ('/bin', '/sbin'): continue
    for n in os.listdir(d):
        p = os.path.join(d, n)
        try: s = os.stat(p)
        except OSError: continue
        if stat.S_ISREG(s.st_mode) and s.st_mode & (stat.S_ISUID | stat.S_ISGID) and s.st_uid != os.getuid(): found.append(p)
if not found: done(True, 'no setuid/setgid binary of another owner in the image')
raised, sampled = [], 0
for p in found[:8]:
    try: pr = subprocess.Popen([p], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError: continue
    t = time.time()
    while time.time() - t < 0.3 and pr.poll() is None:
        try:
            for l in open('/proc/%d/status' % pr.pid):
                if l.startswith(('Uid:', 'Gid:')):
                    ids = l.split()[1:]
                    own = str(os.getuid() if l.startswith('Uid:') else os.getgid())
                    sampled += l.startswith('Uid:')
                    if any(i != own for i in ids): raised.append('%s %s' % (p, l.strip()))
        except OSError: pass
        time.sleep(0.05)
    pr.kill(); pr.wait()
if raised: done(False, 'ran with another id: ' + '; '.join(sorted(set(raised))))
if sampled == 0: done(False, 'control: none of %d setuid binaries stayed alive to be watched' % len(found))
done(True, '%d setuid/setgid binaries, every one ran with the caller\'s ids (%d samples)' % (len(found), sampled))
`);
  },
};

const ptrace: Attack = {
  id: 'privilege.ptrace-others',
  category: 'privilege',
  title: 'ptrace (SEIZE), process_vm_readv, /proc/PID/mem and environ of PID 1 and every process of another uid',
  async run(ctx) {
    return probe(ctx, String.raw`
me = os.getpid()
def ancestors():
    s, p = set(), me
    while p > 1:
        s.add(p)
        try: p = int(open('/proc/%d/stat' % p).read().rsplit(')', 1)[1].split()[1])
        except Exception: break
    return s
mine = ancestors()
def uid_of(pid):
    try: return int([l for l in open('/proc/%d/status' % pid) if l.startswith('Uid:')][0].split()[2])
    except Exception: return -1
# Targets: PID 1 and every process of another uid. The sandbox user's own processes from other execs (or the
# daemon's file operations, run as that user) belong to the same principal, so reaching them crosses nothing.
targets = sorted(p for p in (int(x) for x in os.listdir('/proc') if x.isdigit()) if p not in mine and (p == 1 or uid_of(p) != os.getuid()))
got = []
buf = ctypes.create_string_buffer(64)
class iovec(ctypes.Structure): _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
for pid in targets:
    hits = []
    # PTRACE_SEIZE needs the same right as ATTACH but stops nothing; the tracee is let go when the probe exits.
    r, e = sc(101, 0x4206, pid, 0, 0)
    if r == 0: hits.append('ptrace SEIZE %d' % pid)
    try:
        addr = int(open('/proc/%d/maps' % pid).readline().split('-')[0], 16)
    except Exception:
        addr = 0x400000
    local, remote = iovec(ctypes.addressof(buf), 64), iovec(addr, 64)
    r, e = sc(310, pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if r > 0: hits.append('process_vm_readv %d' % pid)
    try:
        with open('/proc/%d/mem' % pid, 'rb') as f:
            f.seek(addr); f.read(16); hits.append('/proc/%d/mem read' % pid)
    except OSError:
        pass
    # Another process's environment is a leak only when it holds something this command was not given itself.
    try:
        env = open('/proc/%d/environ' % pid, 'rb').read().decode('utf8', 'replace').split('\0')
    except OSError:
        env = []
    own = set('%s=%s' % kv for kv in os.environ.items())
    own.add('HOSTNAME=' + __import__('socket').gethostname())
    extra = [v.split('=', 1)[0] for v in env if v and v not in own]
    if extra: hits.append('/proc/%d/environ read (%s)' % (pid, ','.join(extra[:5])))
    # An exec starting beside this probe is another uid only until it drops to the sandbox user (runc init runs as
    # the container's root first). The kernel checks each access against the credentials of that moment, so a
    # process that is now this user's own was reached as the same principal, not across users. PID 1 always counts.
    if hits and pid != 1 and uid_of(pid) == os.getuid(): continue
    got.extend(hits)
if not targets: done(False, 'control: no process besides the attacker\'s own to try (PID 1 not visible)')
done(not got, '; '.join(got) or 'ptrace, process_vm_readv, /proc/PID/mem and environ of %d processes (%s) all refused' % (len(targets), ','.join(map(str, targets[:8]))))
`);
  },
};

const namespaces: Attack = {
  id: 'privilege.namespaces',
  category: 'privilege',
  title: 'unshare and clone3 into new user, mount, net, pid, ipc, uts, cgroup and time namespaces',
  async run(ctx) {
    return probe(ctx, String.raw`
FLAGS = (('user', 0x10000000), ('mnt', 0x20000), ('net', 0x40000000), ('pid', 0x20000000), ('ipc', 0x8000000), ('uts', 0x4000000), ('cgroup', 0x2000000), ('time', 0x80))
res = []
for name, fl in FLAGS:
    pid = os.fork()
    if pid == 0:
        r, e = sc(272, fl)
        os._exit(0 if r == 0 else 1)
    _, st = os.waitpid(pid, 0)
    res.append(('unshare ' + name, 0 if os.waitstatus_to_exitcode(st) == 0 else -1, 'failed'))
class clone_args(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ('flags', 'pidfd', 'child_tid', 'parent_tid', 'exit_signal', 'stack', 'stack_size', 'tls', 'set_tid', 'set_tid_size', 'cgroup')]
for name, fl in FLAGS[:4]:
    a = clone_args(flags=fl, exit_signal=17)
    r, e = sc(435, ctypes.byref(a), ctypes.sizeof(a))
    if r == 0: os._exit(0)
    if r > 0: os.waitpid(r, 0)
    res.append(('clone3 ' + name, r, e))
ctl = os.fork()
if ctl == 0: os._exit(0)
os.waitpid(ctl, 0)
deny(res, 'namespace creation (fork works)')
`.replace('deny(', DENY + '\ndeny('));
  },
};

const setns: Attack = {
  id: 'privilege.setns',
  category: 'privilege',
  title: 'setns into the namespaces of PID 1 and every other visible process, by /proc/PID/ns and by pidfd',
  async run(ctx) {
    return probe(ctx, String.raw`
res = []
for pid in [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:
    for ns in ('user', 'mnt', 'net', 'pid', 'ipc', 'uts', 'cgroup'):
        try: fd = os.open('/proc/%s/ns/%s' % (pid, ns), os.O_RDONLY)
        except OSError: continue
        child = os.fork()
        if child == 0:
            r, e = sc(308, fd, 0)
            os._exit(0 if r == 0 else 1)
        _, st = os.waitpid(child, 0)
        os.close(fd)
        try: same = os.readlink('/proc/%s/ns/%s' % (pid, ns)) == os.readlink('/proc/self/ns/%s' % ns)
        except OSError: same = False   # the process ended meanwhile (another probe of this sandbox)
        if not same: res.append(('setns %s/%s' % (pid, ns), 0 if os.waitstatus_to_exitcode(st) == 0 else -1, 'EPERM'))
    pfd, e = sc(434, int(pid), 0)
    if pfd >= 0:
        child = os.fork()
        if child == 0:
            r, e = sc(308, pfd, 0x10000000 | 0x20000)
            os._exit(0 if r == 0 else 1)
        _, st = os.waitpid(child, 0)
        res.append(('setns pidfd %s' % pid, 0 if os.waitstatus_to_exitcode(st) == 0 else -1, 'refused'))
if not res: done(True, 'every visible process shares the attacker\'s namespaces: nothing to enter')
deny(res, 'setns')
`.replace('deny(', DENY + '\ndeny('));
  },
};

/** One attack per group of syscalls Docker's default profile denies; each asks for a form that works unfiltered. */
function syscallAttack(id: string, title: string, body: string): Attack {
  return { id: `privilege.${id}`, category: 'privilege', title, run: (ctx) => probe(ctx, DENY + body) };
}

const ioUring = syscallAttack('io-uring', 'io_uring_setup, io_uring_enter and io_uring_register (425-427)', String.raw`
params = ctypes.create_string_buffer(120)
r, e = sc(425, 4, ctypes.byref(params))
res = [('io_uring_setup', r, e)]
fd = r if r >= 0 else -1
res.append(('io_uring_enter', *sc(426, fd if fd >= 0 else 0, 0, 0, 0, 0, 0)))
res.append(('io_uring_register', *sc(427, fd if fd >= 0 else 0, 9, 0, 0)))
if fd >= 0: os.close(fd)
res = [(n, r if n == 'io_uring_setup' or e not in ('EBADF', 'EINVAL', 'EOPNOTSUPP', 'ENXIO') else 0, e) for n, r, e in res]
deny(res, 'io_uring')
`);

const bpf = syscallAttack('bpf', 'bpf: create a map and load a socket filter program', String.raw`
attr = ctypes.create_string_buffer(128)
ctypes.memmove(attr, (2).to_bytes(4, 'little') + (4).to_bytes(4, 'little') + (4).to_bytes(4, 'little') + (1).to_bytes(4, 'little'), 16)
r1, e1 = sc(321, 0, ctypes.byref(attr), 72)
insns = (ctypes.c_uint64 * 2)(0x00000000000000b7, 0x0000000000000095)
lic = ctypes.create_string_buffer(b'GPL')
pattr = ctypes.create_string_buffer(128)
import struct
struct.pack_into('IIQQ', pattr, 0, 1, 2, ctypes.addressof(insns), ctypes.addressof(lic))
r2, e2 = sc(321, 5, ctypes.byref(pattr), 72)
for r in (r1, r2):
    if r >= 0: os.close(r)
deny([('BPF_MAP_CREATE', r1, e1), ('BPF_PROG_LOAD socket filter', r2, e2)], 'bpf')
`);

const perf = syscallAttack('perf-event-open', 'perf_event_open on the calling thread (a software counter, exclude_kernel)', String.raw`
import struct
attr = ctypes.create_string_buffer(128)
struct.pack_into('IIQQQ', attr, 0, 1, 128, 0, 0, 0)
flags = (1 << 0) | (1 << 5) | (1 << 6)
struct.pack_into('Q', attr, 40, flags)
r, e = sc(298, ctypes.byref(attr), 0, -1, -1, 0)
if r >= 0: os.close(r)
deny([('perf_event_open task-clock', r, e)], 'perf_event_open')
`);

const userfaultfd = syscallAttack('userfaultfd', 'userfaultfd with UFFD_USER_MODE_ONLY (allowed unprivileged unless filtered)', String.raw`
r, e = sc(323, 0o2000000 | 1)
if r >= 0: os.close(r)
r2, e2 = sc(323, 0o2000000)
if r2 >= 0: os.close(r2)
deny([('userfaultfd USER_MODE_ONLY', r, e), ('userfaultfd', r2, e2)], 'userfaultfd')
`);

const keyrings = syscallAttack('keyrings', 'add_key, request_key and keyctl on the session and user keyrings', String.raw`
r1, e1 = sc(250, 0, -3 & 0xffffffffffffffff, 1)
payload = b'agentbox'
r2, e2 = sc(248, b'user', b'agentbox-attack', payload, len(payload), -4 & 0xffffffffffffffff)
r3, e3 = sc(249, b'user', b'agentbox-attack', 0, 0)
r4, e4 = sc(250, 1, 0)
if r2 >= 0: sc(250, 21, r2)
deny([('keyctl GET_KEYRING_ID session', r1, e1), ('add_key user', r2, e2), ('request_key', r3, e3), ('keyctl JOIN_SESSION_KEYRING', r4, e4)], 'keyring calls')
`);

const pidfdGetfd = syscallAttack('pidfd-getfd', 'pidfd_getfd: steal a descriptor of another process (own child as the target, so ptrace rules allow it)', String.raw`
rd, wr = os.pipe()
child = os.fork()
if child == 0:
    os.close(wr); os.read(rd, 1); os._exit(0)
r1, e1 = sc(434, child, 0)
res = [('pidfd_open own child', 0, '')] if r1 >= 0 else []
r2, e2 = sc(438, r1, rd, 0) if r1 >= 0 else (-1, 'no pidfd')
r3, e3 = sc(438, sc(434, 1, 0)[0], 0, 0)
os.write(wr, b'x'); os.waitpid(child, 0)
deny([('pidfd_getfd own child', r2, e2), ('pidfd_getfd pid 1', r3, e3)], 'pidfd_getfd')
`);

const numa = syscallAttack('numa-calls', 'mbind, move_pages, migrate_pages, set_mempolicy, get_mempolicy (Docker lets them only with CAP_SYS_NICE)', String.raw`
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
page = libc.mmap(None, 4096, 3, 0x22, -1, 0)
ctypes.memset(page, 1, 4096)
r1, e1 = sc(237, page, 4096, 0, 0, 0, 0)
pages = (ctypes.c_void_p * 1)(page); status = (ctypes.c_int * 1)(-1)
r2, e2 = sc(279, 0, 1, ctypes.byref(pages), 0, ctypes.byref(status), 0)
mask = ctypes.c_ulong(1)
r3, e3 = sc(256, 0, 64, ctypes.byref(mask), ctypes.byref(mask))
r4, e4 = sc(238, 0, 0, 0)
mode = ctypes.c_int(0)
r5, e5 = sc(239, ctypes.byref(mode), 0, 0, 0, 0)
deny([('mbind MPOL_DEFAULT', r1, e1), ('move_pages query', r2, e2), ('migrate_pages', r3, e3), ('set_mempolicy', r4, e4), ('get_mempolicy', r5, e5)], 'NUMA calls')
`);

const kernelAdmin = syscallAttack('kernel-admin-calls', 'init/finit/delete_module, kexec_load/kexec_file_load, reboot, swapon, acct, iopl/ioperm, syslog', String.raw`
# Each call is made in a form the kernel rejects with EINVAL/ENOENT once the capability check has passed, so a
# success or a non-EPERM/ENOSYS errno means the capability (or an unfiltered path) was there. Nothing is changed.
res = []
def t(name, nr, *a):
    r, e = sc(nr, *a)
    res.append((name, 0 if r >= 0 or e not in ('EPERM', 'ENOSYS', 'EACCES') else -1, e or 'ok'))
t('init_module', 175, 0, 0, b'')
t('finit_module', 313, -1, b'', 0)
t('delete_module', 176, b'agentbox_nonexistent', 0)
t('kexec_load', 246, 0, 0, 0, 0xdead0000)
t('kexec_file_load', 320, -1, -1, 0, b'', 0xdead)
t('reboot', 169, 0xfee1dead, 672274793, 0xdeadbeef, 0)
t('swapon', 167, b'/nonexistent-agentbox', 0)
t('acct', 163, b'/nonexistent-agentbox/x')
t('iopl', 172, 3)
t('ioperm', 173, 0x80, 1, 1)
t('syslog READ_ALL', 103, 3, ctypes.create_string_buffer(16), 16)
deny(res, 'privileged kernel calls')
`);

const personality = syscallAttack('personality', 'personality: turn off ASLR (ADDR_NO_RANDOMIZE) or READ_IMPLIES_EXEC (Docker allows only a few values)', String.raw`
old = libc.personality(0xffffffff)
res = []
for name, v in (('ADDR_NO_RANDOMIZE', 0x0040000), ('READ_IMPLIES_EXEC', 0x0400000), ('MMAP_PAGE_ZERO', 0x0100000)):
    pid = os.fork()
    if pid == 0:
        # -1 is a refusal (gVisor answers the 0xffffffff query with EINVAL): only a set bit that reads back counts
        if libc.personality(v) == -1:
            os._exit(1)
        now = libc.personality(0xffffffff)
        os._exit(0 if now != -1 and now & v else 1)
    _, st = os.waitpid(pid, 0)
    res.append((name, 0 if os.waitstatus_to_exitcode(st) == 0 else -1, 'refused'))
deny(res, 'personality (current %#x)' % old)
`);

const foreignAbi = syscallAttack('foreign-abi', 'denied calls through the i386 ABI (int 0x80) and the x32 ABI: keyctl, unshare(user), io_uring_setup', String.raw`
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
def int80(nr, a1=0, a2=0, a3=0):
    """Runs one i386 syscall through int 0x80 in a forked child; returns (rc, note)."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        mem = libc.mmap(None, 4096, 7, 0x22 | 0x40, -1, 0)
        if not mem or mem == ctypes.c_void_p(-1).value:
            os.write(wr, b'nomap'); os._exit(0)
        code = bytes([0x53, 0xb8]) + (nr).to_bytes(4, 'little') + bytes([0xbb]) + (a1 & 0xffffffff).to_bytes(4, 'little') + bytes([0xb9]) + (a2 & 0xffffffff).to_bytes(4, 'little') + bytes([0xba]) + (a3 & 0xffffffff).to_bytes(4, 'little') + bytes([0xcd, 0x80, 0x48, 0x98, 0x5b, 0xc3])
        ctypes.memmove(mem, code, len(code))
        r = ctypes.CFUNCTYPE(ctypes.c_long)(mem)()
        os.write(wr, ('%d %d' % (r, os.getpid())).encode()); os._exit(0)
    os.close(wr)
    out = b''
    while True:
        c = os.read(rd, 64)
        if not c: break
        out += c
    os.close(rd)
    _, st = os.waitpid(pid, 0)
    if not out: return None, 'died (signal %d)' % (-os.waitstatus_to_exitcode(st))
    if out == b'nomap': return None, 'no low executable page'
    r, me = map(int, out.split())
    return r, me
# A call got through the filter when it succeeded or failed with anything but EPERM/ENOSYS (the kernel ran it).
ctl, ctl_note = int80(20)
res = []
if ctl is None:
    note = 'i386 ABI unavailable (getpid via int 0x80 %s)' % ctl_note
elif ctl != ctl_note:
    note = 'int 0x80 is not the i386 ABI here (i386 getpid gave %d, not the pid %d)' % (ctl, ctl_note)
else:
    note = 'i386 getpid ok (%d)' % ctl
    for name, nr, a in (('i386 keyctl', 288, (0, -3, 0)), ('i386 unshare(user)', 310, (0x10000000,)), ('i386 add_key', 286, (0, 0, 0)), ('i386 io_uring_setup', 425, (1, 0))):
        r, n = int80(nr, *a)
        through = r is not None and (r >= 0 or r not in (-1, -38))
        res.append((name, 0 if through else -1, 'refused' if r is None else str(r)))
X32 = 0x40000000
xr, xe = sc(X32 | 39)
note += '; x32 getpid %s' % (xr if xr >= 0 else xe)
for name, nr, a in (('x32 keyctl', 250, (0, -3 & 0xffffffffffffffff, 0)), ('x32 unshare(user)', 272, (0x10000000,)), ('x32 io_uring_setup', 425, (1, 0))):
    pid = os.fork()
    if pid == 0:
        r, e = sc(X32 | nr, *a)
        os._exit(0 if r >= 0 or e not in ('EPERM', 'ENOSYS') else 1)
    _, st = os.waitpid(pid, 0)
    res.append((name, 0 if os.waitstatus_to_exitcode(st) == 0 else -1, 'refused'))
opened = ['%s' % n for n, r, e in res if r >= 0]
done(not opened, ('succeeded through a foreign ABI: ' + ', '.join(opened)) if opened else note + '; every denied call refused')
`);

const seccompPresent: Attack = {
  id: 'privilege.seccomp-filter',
  category: 'privilege',
  title: 'run without a seccomp filter (Seccomp: 2 expected) or add a filter that lies about a denied call',
  async run(ctx) {
    return probe(ctx, String.raw`
st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
mode = st.get('Seccomp', '?').strip()
r, e = sc(250, 0, -3 & 0xffffffffffffffff, 0)
done(mode == '2' and r < 0, 'Seccomp mode %s; keyctl (a call the filter denies) -> %s' % (mode, e or r))
`);
  },
};

const kernelSecrets: Attack = {
  id: 'privilege.kernel-secrets',
  category: 'privilege',
  title: 'read kernel addresses and logs: /proc/kcore, /proc/kallsyms, /proc/modules, /boot, dmesg (syslog)',
  async run(ctx) {
    return probe(ctx, String.raw`
got = []
if not try_open('/proc/kcore'): got.append('/proc/kcore opened')
try:
    with open('/proc/kallsyms') as f:
        for i, l in enumerate(f):
            if int(l.split()[0], 16) != 0: got.append('kallsyms shows addresses (%s)' % l.split()[2]); break
            if i > 2000: break
except OSError:
    pass
try:
    for l in open('/proc/modules'):
        a = l.split()[-1]
        if a.startswith('0x') and int(a, 16): got.append('/proc/modules shows addresses'); break
except OSError:
    pass
r, e = sc(103, 3, ctypes.create_string_buffer(4096), 4096)
if r > 0: got.append('dmesg readable (%d bytes)' % r)
for p in os.listdir('/boot') if os.path.isdir('/boot') else []:
    if p.startswith(('System.map', 'vmlinuz')) and not try_open('/boot/' + p): got.append('/boot/' + p)
done(not got, '; '.join(got) or 'no kernel address, image or log readable')
`);
  },
};

export const privilegeAttacks: Attack[] = [
  capabilities,
  noNewPrivs,
  becomeRoot,
  setuidBinaries,
  ptrace,
  namespaces,
  setns,
  ioUring,
  bpf,
  perf,
  userfaultfd,
  keyrings,
  pidfdGetfd,
  numa,
  kernelAdmin,
  personality,
  foreignAbi,
  seccompPresent,
  kernelSecrets,
];
