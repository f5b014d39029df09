/**
 * Filesystem escapes tried from inside a sandbox: the read-only root, /proc's doors to other roots and inherited
 * descriptors, the files API through symlinks and `..`, devices, mounts, /sys and /proc/sys, and what the mount
 * table says about the host. Each probe checks a control where one exists, so a broken probe never passes.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readAll } from '../../sdk/client.js';
import { clip, marker, pyProbe } from './in-sandbox.js';
import type { Attack, AttackContext } from './types.js';

/** A host directory with a secret file, for attacks that try to reach the host through the files API; removed after. */
async function withHostSecret<T>(fn: (dir: string, secretPath: string, secret: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'agentbox-attack-'));
  const secret = `host-secret-${randomBytes(12).toString('hex')}`;
  const secretPath = join(dir, 'secret.txt');
  writeFileSync(secretPath, secret, { mode: 0o644 });
  try {
    return await fn(dir, secretPath, secret);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The files API's answer to a read, as text, or the error's code: never throws. */
async function apiRead(ctx: AttackContext, id: string, path: string): Promise<{ ok: boolean; text: string }> {
  try {
    return { ok: true, text: (await readAll(await ctx.client.readFile(id, path))).toString('utf8') };
  } catch (err) {
    return { ok: false, text: (err as { code?: string }).code ?? (err as Error).message };
  }
}

async function apiWrite(ctx: AttackContext, id: string, path: string, data: string): Promise<{ ok: boolean; text: string }> {
  try {
    await ctx.client.writeFile(id, path, data);
    return { ok: true, text: 'written' };
  } catch (err) {
    return { ok: false, text: (err as { code?: string }).code ?? (err as Error).message };
  }
}

const writeReadOnlyRoot: Attack = {
  id: 'filesystem.write-readonly-root',
  category: 'filesystem',
  title: 'create, open for writing, chmod, utime, mkdir and symlink on the read-only root (/, /usr/bin, /etc)',
  async run(ctx) {
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
import time
tag = 'agentbox-pwn-%d-%d' % (os.getpid(), int(time.time() * 1000))
got = []
# New files get unique names and go again at once; existing files are opened without O_TRUNC and never written.
for p, fl in [('/' + tag, os.O_WRONLY|os.O_CREAT|os.O_EXCL), ('/usr/bin/' + tag, os.O_WRONLY|os.O_CREAT|os.O_EXCL),
              ('/etc/' + tag, os.O_WRONLY|os.O_CREAT|os.O_EXCL), ('/etc/passwd', os.O_WRONLY|os.O_APPEND),
              ('/usr/bin/python3', os.O_WRONLY), ('/bin/sh', os.O_RDWR)]:
    e = try_open(p, fl)
    if not e:
        got.append('opened %s for writing' % p)
        if fl & os.O_CREAT:
            try: os.unlink(p)
            except OSError: pass
def same_mode(p):
    os.chmod(p, os.stat(p).st_mode & 0o7777)
def same_times(p):
    st = os.stat(p); os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
def mkdir_rm(p):
    os.mkdir(p); os.rmdir(p)
def symlink_rm(p):
    os.symlink('/workspace', p); os.unlink(p)
for name, f in [('chmod /etc/shadow (to its own mode)', lambda: same_mode('/etc/shadow')), ('mkdir in /usr', lambda: mkdir_rm('/usr/' + tag)),
                ('symlink in /etc', lambda: symlink_rm('/etc/' + tag)), ('utime /usr/bin/ls (to its own times)', lambda: same_times('/usr/bin/ls'))]:
    try:
        f(); got.append(name)
    except OSError:
        pass
ctl = try_open('/workspace/.rw-control', os.O_WRONLY|os.O_CREAT)
if ctl: done(False, 'control: /workspace is not writable either (%s), the probe proves nothing' % ctl)
os.unlink('/workspace/.rw-control')
done(not got, '; '.join(got) or 'every write to the root failed; /workspace writable (control)')
`);
  },
};

const procRootEscape: Attack = {
  id: 'filesystem.proc-root-escape',
  category: 'filesystem',
  title: 'reach another root through /proc/PID/root, /proc/PID/cwd and /proc/self/root/.. for every visible pid',
  async run(ctx) {
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
me = os.stat('/')
seen, leaks = 0, []
for pid in [p for p in os.listdir('/proc') if p.isdigit()] + ['self', 'thread-self']:
    for door in ('root', 'cwd'):
        base = '/proc/%s/%s' % (pid, door)
        try:
            st = os.stat(base + ('/' if door == 'root' else ''))
        except OSError:
            continue
        seen += 1
        if door == 'root' and (st.st_dev, st.st_ino) != (me.st_dev, me.st_ino):
            leaks.append('%s is another root (dev %d ino %d)' % (base, st.st_dev, st.st_ino))
        for sub in ('/../../../work', '/../../var/lib/docker', '/../../proc/1/root/var/lib/docker', '/../../etc/agentbox-host-only'):
            if os.path.exists(base + sub) and not os.path.exists(sub.replace('/..', '')):
                leaks.append('%s%s exists outside' % (base, sub))
if seen == 0: done(False, 'control: not even /proc/self/root could be opened; the probe proves nothing')
done(not leaks, '; '.join(leaks) or 'every /proc/PID/root (%d doors) is this sandbox\'s own root' % seen)
`);
  },
};

const inheritedFds: Attack = {
  id: 'filesystem.inherited-fds',
  category: 'filesystem',
  title: 'use descriptors above stdio inherited by a command or held by PID 1 (/proc/self/fd, /proc/1/fd)',
  async run(ctx) {
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
leaks = []
listing = os.open('/proc/self/fd', os.O_RDONLY | os.O_DIRECTORY)
for n in sorted(os.listdir('/proc/self/fd'), key=int):
    if int(n) <= 2 or int(n) == listing: continue
    try: t = os.readlink('/proc/self/fd/' + n)
    except OSError: continue
    leaks.append('own fd %s -> %s' % (n, t))
os.close(listing)
for pid in [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:
    try: fds = os.listdir('/proc/%s/fd' % pid)
    except OSError: continue
    for n in fds:
        try: t = os.readlink('/proc/%s/fd/%s' % (pid, n))
        except OSError: continue
        if t.startswith('/') and not t.startswith(('/dev/null', '/proc/', '/workspace', '/tmp', '/dev/pts')) and not os.path.exists(t):
            e = try_open('/proc/%s/fd/%s' % (pid, n))
            if not e: leaks.append('pid %s fd %s -> %s (host path, opened)' % (pid, n, t))
done(not leaks, '; '.join(leaks) or 'no descriptor above stdio in the command; no host file reachable through another process\'s fds')
`);
  },
};

/** The files API resolves paths inside the sandbox: a symlink or `..` must never land on the daemon's host. */
const filesApiSymlinkRead: Attack = {
  id: 'filesystem.files-api-symlink-read',
  category: 'filesystem',
  title: 'GET through the files API a /workspace symlink to a host file, to /proc/1/root/... and to /proc/self/root/...',
  async run(ctx) {
    return withHostSecret(async (_dir, secretPath, secret) => {
      const id = ctx.sandboxes.debian;
      const links: Record<string, string> = {
        'ln-host': secretPath,
        'ln-proc1': `/proc/1/root${secretPath}`,
        'ln-self': `/proc/self/root${secretPath}`,
        'ln-dotdot': `../../../../../../..${secretPath}`,
        'ln-cwd': `/proc/self/cwd/../../../..${secretPath}`,
      };
      const made = await ctx.exec(id, ['sh', '-c', Object.entries(links).map(([n, t]) => `ln -sfn '${t}' /workspace/${n}`).join(' && ') + ' && echo made']);
      if (!made.stdout.includes('made')) return { blocked: false, detail: `could not create the symlinks: ${clip(made.stderr)}` };
      const ctl = await apiRead(ctx, id, '/etc/hostname');
      if (!ctl.ok) return { blocked: false, detail: `control: reading /etc/hostname through the files API failed (${ctl.text})` };
      const leaks: string[] = [];
      for (const n of Object.keys(links)) {
        const r = await apiRead(ctx, id, `/workspace/${n}`);
        if (r.ok && r.text.includes(secret)) leaks.push(`/workspace/${n} gave the host file`);
      }
      for (const p of [`/proc/self/root${secretPath}`, `/proc/1/root${secretPath}`, `/proc/self/cwd${secretPath}`]) {
        const r = await apiRead(ctx, id, p);
        if (r.ok && r.text.includes(secret)) leaks.push(`${p} gave the host file`);
      }
      await ctx.exec(id, ['sh', '-c', `rm -f ${Object.keys(links).map((n) => `/workspace/${n}`).join(' ')}`]);
      return { blocked: leaks.length === 0, detail: leaks.join('; ') || `${Object.keys(links).length + 3} paths read, none reached the host file (control read ok)` };
    });
  },
};

const filesApiSymlinkWrite: Attack = {
  id: 'filesystem.files-api-symlink-write',
  category: 'filesystem',
  title: 'PUT and DELETE through the files API via a /workspace symlink (file and directory) pointing at the host',
  async run(ctx) {
    return withHostSecret(async (dir, secretPath, secret) => {
      const id = ctx.sandboxes.debian;
      const made = await ctx.exec(id, ['sh', '-c', `ln -sfn '${secretPath}' /workspace/wl-file && ln -sfn '${dir}' /workspace/wl-dir && ln -sfn '/proc/1/root${dir}' /workspace/wl-proc && echo made`]);
      if (!made.stdout.includes('made')) return { blocked: false, detail: `could not create the symlinks: ${clip(made.stderr)}` };
      const evil = `overwritten-${randomBytes(6).toString('hex')}`;
      for (const p of ['/workspace/wl-file', '/workspace/wl-dir/secret.txt', '/workspace/wl-dir/new.txt', '/workspace/wl-proc/new2.txt', `/proc/self/root${dir}/new3.txt`, `/workspace/../../../..${dir}/new4.txt`])
        await apiWrite(ctx, id, p, evil);
      for (const p of ['/workspace/wl-dir/secret.txt', `/proc/1/root${secretPath}`]) await ctx.client.removePath(id, p).catch(() => undefined);
      const ctl = await apiWrite(ctx, id, '/workspace/wl-control', 'x');
      await ctx.exec(id, ['sh', '-c', 'rm -f /workspace/wl-file /workspace/wl-dir /workspace/wl-proc /workspace/wl-control']);
      const leaks: string[] = [];
      if (!existsSync(secretPath)) leaks.push('the host file was deleted');
      else if (readFileSync(secretPath, 'utf8') !== secret) leaks.push('the host file was overwritten');
      for (const n of ['new.txt', 'new2.txt', 'new3.txt', 'new4.txt']) if (existsSync(join(dir, n))) leaks.push(`host ${n} was created`);
      if (leaks.length) return { blocked: false, detail: leaks.join('; ') };
      if (!ctl.ok) return { blocked: false, detail: `control: a plain PUT to /workspace failed (${ctl.text})` };
      return { blocked: true, detail: 'six writes and two deletes through symlinks and .. left the host directory untouched (control PUT ok)' };
    });
  },
};

const filesApiTraversal: Attack = {
  id: 'filesystem.files-api-traversal',
  category: 'filesystem',
  title: 'read and list host paths through the files API with .., //, /./ and percent-encoded spellings',
  async run(ctx) {
    return withHostSecret(async (dir, secretPath, secret) => {
      const id = ctx.sandboxes.debian;
      const leaks: string[] = [];
      const spellings = [`/workspace/../../../../../..${secretPath}`, `//..//..${secretPath}`, `/./workspace/./../..${secretPath}`, `/workspace/%2e%2e/%2e%2e${secretPath}`, `/workspace/..%2f..%2f..${secretPath}`, secretPath];
      for (const p of spellings) {
        const r = await apiRead(ctx, id, p);
        if (r.ok && r.text.includes(secret)) leaks.push(`${p} gave the host file`);
      }
      for (const p of [`/workspace/../../..${dir}`, dir, `/proc/self/root${dir}`, `/proc/1/root${dir}`]) {
        try {
          const entries = await ctx.client.listDir(id, p);
          if (entries.some((e) => e.name === 'secret.txt')) leaks.push(`list ${p} showed the host directory`);
        } catch {
          /* refused or absent: held */
        }
      }
      return { blocked: leaks.length === 0, detail: leaks.join('; ') || `${spellings.length} reads and 4 listings of host paths found nothing of the host` };
    });
  },
};

const execCwdEscape: Attack = {
  id: 'filesystem.exec-cwd-escape',
  category: 'filesystem',
  title: 'start a command with its cwd at a host directory: the host path, /proc/1/root/..., /proc/self/cwd/..., a symlink, ../..',
  async run(ctx) {
    return withHostSecret(async (dir, _secretPath, secret) => {
      const id = ctx.sandboxes.debian;
      await ctx.exec(id, ['ln', '-sfn', dir, '/workspace/cwd-link']);
      const leaks: string[] = [];
      const outcomes: string[] = [];
      for (const cwd of [dir, `/proc/1/root${dir}`, `/proc/self/root${dir}`, `/proc/self/cwd/../../../..${dir}`, '/workspace/cwd-link', `/workspace/../../../..${dir}`]) {
        const r = await ctx.client.exec(id, { cmd: ['sh', '-c', 'cat secret.txt 2>/dev/null; pwd'], cwd, timeoutMs: 30_000 }).then(
          (x) => `${x.exitCode}:${x.stdout}`,
          (err: Error & { code?: string }) => `refused ${err.code ?? err.message}`,
        );
        if (r.includes(secret)) leaks.push(`cwd ${cwd} read the host file`);
        outcomes.push(r.startsWith('refused') ? 'refused' : `exit ${r.split(':')[0]}`);
      }
      await ctx.exec(id, ['rm', '-f', '/workspace/cwd-link']);
      const ctl = await ctx.client.exec(id, { cmd: ['pwd'], cwd: '/tmp' });
      if (!ctl.stdout.includes('/tmp')) return { blocked: false, detail: `control: an exec with cwd /tmp did not run there: ${clip(ctl.stdout + ctl.stderr)}` };
      return { blocked: leaks.length === 0, detail: leaks.join('; ') || `6 host cwds: ${[...new Set(outcomes)].join(', ')}, none reached the host file (control cwd /tmp ok)` };
    });
  },
};

const hostSockets: Attack = {
  id: 'filesystem.host-unix-sockets',
  category: 'filesystem',
  title: 'connect to Unix sockets of the host from an egress-none sandbox: docker.sock, containerd, the daemon\'s own socket, any socket on the filesystem',
  async run(ctx) {
    // gVisor's PID 1 dials its exec agent through /run/agentbox-agent/agent.sock: reaching it is by design (it serves
    // only this sandbox). Anything else that answers is a way out.
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
import socket, stat, time
allowed = ('/run/agentbox-agent/agent.sock',) if ${JSON.stringify(ctx.runtime)} == 'gvisor' else ()
cands = {'/var/run/docker.sock', '/run/docker.sock', '/run/containerd/containerd.sock', '/run/dbus/system_bus_socket', '/run/systemd/private',
         ${JSON.stringify(ctx.api.socketPath)}, '/run/agentbox/proxy.sock', '/var/run/agentbox/proxy.sock'}
ctl = '/tmp/agentbox-ctl-%d.sock' % os.getpid()
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); srv.bind(ctl); srv.listen(4)
t0 = time.time()
for root, dirs, files in os.walk('/', topdown=True):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys', '/usr')]
    for f in files:
        p = os.path.join(root, f)
        try:
            if stat.S_ISSOCK(os.lstat(p).st_mode): cands.add(p)
        except OSError: pass
    if time.time() - t0 > 5: break
for l in open('/proc/net/unix').read().splitlines()[1:]:
    f = l.split()
    if len(f) >= 8 and f[7].startswith('/'): cands.add(f[7])
got, tried, ctl_ok = [], 0, False
for p in sorted(cands):
    if p == ctl:
        try:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(2); c.connect(p); c.close(); ctl_ok = True
        except OSError: pass
        continue
    if p in allowed: continue
    tried += 1
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(2); s.connect(p); s.close(); got.append(p)
    except OSError:
        pass
srv.close(); os.unlink(ctl)
if not got and not ctl_ok: done(False, 'control: the probe did not find or reach its own socket in /tmp')
done(not got, ('connected to host sockets: ' + ', '.join(got)) if got else 'no Unix socket answered (%d tried%s; its own in /tmp found and reached)' % (tried, ', the exec agent\'s own socket aside' if allowed else ''))
`);
  },
};

const hardlinks: Attack = {
  id: 'filesystem.hardlink-out',
  category: 'filesystem',
  title: 'hardlink root-owned files (/etc/shadow, the init binary) into /workspace and /tmp, then write through the link',
  async run(ctx) {
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
got = []
for src in ('/etc/shadow', '/etc/passwd', '/.agentbox/init', '/proc/1/exe', '/usr/bin/python3'):
    for dst in ('/workspace/hl-%d' % os.getpid(), '/tmp/hl-%d' % os.getpid()):
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            continue
        e = try_open(dst, os.O_WRONLY)
        got.append('linked %s -> %s%s' % (src, dst, '' if e else ' and opened it for writing'))
        os.unlink(dst)
open('/workspace/hl-src', 'w').close()
os.link('/workspace/hl-src', '/workspace/hl-ctl')
os.unlink('/workspace/hl-ctl'); os.unlink('/workspace/hl-src')
done(not got, '; '.join(got) or 'no root-owned file could be hardlinked into a writable place (a link of an own file works)')
`);
  },
};

const openByHandle: Attack = {
  id: 'filesystem.open-by-handle',
  category: 'filesystem',
  title: 'open_by_handle_at with a handle for the filesystem root and inode 2 (the "shocker" escape)',
  async run(ctx) {
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
NAME_TO_HANDLE_AT, OPEN_BY_HANDLE_AT = 303, 304
buf = ctypes.create_string_buffer(8 + 128)
ctypes.memmove(buf, (128).to_bytes(4, 'little'), 4)
mnt = ctypes.c_int(0)
r, e = sc(NAME_TO_HANDLE_AT, -100, b'/etc', ctypes.byref(buf), ctypes.byref(mnt), 0)
tries = []
rootfd = os.open('/', os.O_RDONLY)
if r == 0:
    r2, e2 = sc(OPEN_BY_HANDLE_AT, rootfd, ctypes.byref(buf), os.O_RDONLY)
    tries.append(('own /etc handle', r2, e2))
forged = ctypes.create_string_buffer(8 + 8)
ctypes.memmove(forged, (8).to_bytes(4, 'little') + (1).to_bytes(4, 'little') + (2).to_bytes(4, 'little') + (0).to_bytes(4, 'little'), 16)
r3, e3 = sc(OPEN_BY_HANDLE_AT, rootfd, ctypes.byref(forged), os.O_RDONLY)
tries.append(('forged inode-2 handle', r3, e3))
opened = ['%s opened (fd %d)' % (n, rc) for n, rc, er in tries if rc >= 0]
done(not opened, '; '.join(opened) or 'open_by_handle_at refused: ' + ', '.join('%s %s' % (n, er) for n, rc, er in tries))
`);
  },
};

const mknodDevices: Attack = {
  id: 'filesystem.mknod-device',
  category: 'filesystem',
  title: 'mknod a block device (the host disk 8:0 / 253:0 / 254:0) and /dev/mem (1:1) in /workspace, /tmp and /dev, then open it',
  async run(ctx) {
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
import stat
got = []
for d in ('/workspace', '/tmp', '/dev', '/dev/shm'):
    for kind, mj, mn in ((stat.S_IFBLK, 8, 0), (stat.S_IFBLK, 253, 0), (stat.S_IFBLK, 254, 0), (stat.S_IFCHR, 1, 1)):
        p = '%s/agentbox-dev-%d-%d' % (d, mj, mn)
        try:
            os.mknod(p, kind | 0o600, os.makedev(mj, mn))
        except OSError:
            continue
        e = try_open(p)
        if not e: got.append('%s created and opened' % p)
        os.unlink(p)
done(not got, '; '.join(got) or 'no device node could be created and opened')
`);
  },
};

const mounts: Attack = {
  id: 'filesystem.mount-and-chroot',
  category: 'filesystem',
  title: 'mount (tmpfs, proc, bind, cgroup, sysfs, fsopen, open_tree), remount / rw, unmount /workspace and /proc, pivot_root, chroot',
  async run(ctx) {
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
import time
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MS_BIND, MS_REMOUNT, MS_RDONLY = 4096, 32, 1
MNT_DETACH, MNT_EXPIRE = 2, 4
base = '/tmp/agentbox-mnt-%d-%d' % (os.getpid(), int(time.time() * 1000))
os.makedirs(base + '/src'); os.makedirs(base + '/dst')
got = []
# Each mount goes on a directory of the probe's own and comes off again at once.
for what in ((b'none', b'tmpfs', 0), (b'proc', b'proc', 0), ((base + '/src').encode(), None, MS_BIND), (b'none', b'cgroup', 0), (b'none', b'sysfs', 0), (b'none', b'cgroup2', 0)):
    if libc.mount(what[0], (base + '/dst').encode(), what[1], what[2], None) == 0:
        got.append('mount %s' % (what[1] or b'bind').decode())
        libc.umount2((base + '/dst').encode(), MNT_DETACH)
# Remount the root writable only where it is read-only, and put it back at once.
st = os.statvfs('/')
if st.f_flag & 1:
    keep = (st.f_flag & (2 | 4 | 8)) << 0
    if libc.mount(None, b'/', None, MS_REMOUNT | MS_BIND | keep, None) == 0:
        got.append('remount / read-write')
        libc.mount(None, b'/', None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep, None)
# MNT_EXPIRE: with the right to unmount, the first call only marks the mount (EAGAIN/EBUSY); nothing comes off.
for t in (b'/workspace', b'/proc', b'/tmp', b'/'):
    r = libc.umount2(t, MNT_EXPIRE)
    e = ctypes.get_errno()
    if r == 0 or e in (errno.EAGAIN, errno.EBUSY): got.append('may unmount %s' % t.decode())
# pivot_root checks the right first (EPERM), then the paths: with paths that do not exist, ENOENT means allowed.
r, e = sc(155, (base + '/none1').encode(), (base + '/none2').encode())
if e != 'EPERM': got.append('pivot_root allowed (%s)' % (e or r))
r, e = sc(430, b'tmpfs', 0)
if r >= 0: got.append('fsopen tmpfs'); os.close(r)
r, e = sc(428, -100, b'/', 1 | 0x80000)
if r >= 0: got.append('open_tree clone of /'); os.close(r)
os.rmdir(base + '/src'); os.rmdir(base + '/dst'); os.rmdir(base)
pid = os.fork()
if pid == 0:
    try:
        os.chroot('/tmp'); os._exit(0)
    except OSError:
        os._exit(1)
_, w = os.waitpid(pid, 0)
if os.waitstatus_to_exitcode(w) == 0: got.append('chroot')
done(not got, '; '.join(got) or 'every mount, remount, unmount, pivot_root, fsopen, open_tree and chroot refused')
`);
  },
};

const sysWrites: Attack = {
  id: 'filesystem.sys-writes',
  category: 'filesystem',
  title: 'open for writing /sys/kernel (uevent_helper), cgroup release_agent/notify_on_release and cgroup limits',
  async run(ctx) {
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
import glob
targets = ['/sys/kernel/uevent_helper', '/sys/kernel/mm/transparent_hugepage/enabled', '/sys/power/state', '/sys/class/net/lo/mtu']
for pat in ('/sys/fs/cgroup/*/release_agent', '/sys/fs/cgroup/release_agent', '/sys/fs/cgroup/*/notify_on_release', '/sys/fs/cgroup/*/memory.limit_in_bytes',
            '/sys/fs/cgroup/*/pids.max', '/sys/fs/cgroup/*/cgroup.procs', '/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/pids.max', '/sys/fs/cgroup/cgroup.procs'):
    targets += glob.glob(pat)
got = [p for p in targets if os.path.exists(p) and not try_open(p, os.O_WRONLY)]
done(not got, ('opened for writing: ' + ', '.join(got)) if got else 'none of %d /sys targets opened for writing' % len(targets))
`);
  },
};

const procSysWrites: Attack = {
  id: 'filesystem.proc-sys-writes',
  category: 'filesystem',
  title: 'open /proc/sys/kernel/core_pattern, modprobe, sysrq, hostname, binfmt_misc register and vm knobs for writing',
  async run(ctx) {
    // Opening is the attack; nothing is written even when an open succeeds.
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
targets = ['/proc/sys/kernel/core_pattern', '/proc/sys/kernel/modprobe', '/proc/sys/kernel/sysrq', '/proc/sys/kernel/hostname',
           '/proc/sys/kernel/domainname', '/proc/sys/kernel/panic', '/proc/sys/vm/drop_caches', '/proc/sys/vm/overcommit_memory',
           '/proc/sys/fs/binfmt_misc/register', '/proc/sys/net/ipv4/ip_forward', '/proc/sys/kernel/randomize_va_space', '/proc/sys/fs/suid_dumpable']
got = [p for p in targets if os.path.exists(p) and not try_open(p, os.O_WRONLY)]
readable = [p for p in targets if os.path.exists(p) and not try_open(p)]
done(not got, ('opened for writing: ' + ', '.join(got)) if got else 'none of %d /proc/sys knobs opened for writing (%d exist and read)' % (len(targets), len(readable)))
`);
  },
};

const sysrqAndKernelFiles: Attack = {
  id: 'filesystem.kernel-devices',
  category: 'filesystem',
  title: 'open /proc/sysrq-trigger for writing, /dev/mem, /dev/kmem, /dev/port, /dev/kmsg, /proc/kcore and disk devices',
  async run(ctx) {
    // gVisor's /dev/fuse and /dev/net/tun are devices of its own kernel (the Sentry), not the host's.
    const sentryDevices = ctx.runtime === 'gvisor' ? "'/dev/fuse', '/dev/net/tun'" : "'/dev/null'";
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
SENTRY = (${sentryDevices},)
got = []
if os.path.exists('/proc/sysrq-trigger') and not try_open('/proc/sysrq-trigger', os.O_WRONLY): got.append('/proc/sysrq-trigger opened for writing')
for p in ('/dev/mem', '/dev/kmem', '/dev/port', '/dev/kmsg', '/proc/kcore', '/dev/vda', '/dev/sda', '/dev/nvme0n1', '/dev/dm-0', '/dev/xvda', '/dev/fuse', '/dev/kvm', '/dev/net/tun', '/dev/loop-control'):
    if p not in SENTRY and os.path.exists(p) and not try_open(p): got.append(p + ' opened')
blocks = [n for n in os.listdir('/dev') if os.path.exists('/dev/' + n) and __import__('stat').S_ISBLK(os.stat('/dev/' + n).st_mode)]
if blocks: got.append('block devices in /dev: ' + ','.join(blocks))
if try_open('/dev/null', os.O_WRONLY): done(False, 'control: /dev/null does not open, the probe proves nothing')
done(not got, '; '.join(got) or 'no kernel memory, log, port or disk device opened (control /dev/null ok)')
`);
  },
};

const overwriteHostBinaries: Attack = {
  id: 'filesystem.overwrite-host-binary',
  category: 'filesystem',
  title: 'overwrite the host binaries bound into the sandbox (/proc/1/exe, /.agentbox/init, /proc/PID/exe: the runc CVE-2019-5736 class)',
  async run(ctx) {
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
got = []
def own_file(p):
    # a program the sandbox wrote itself and runs (another attack's, running beside this one): not a host binary
    try:
        return os.readlink(p).startswith(('/tmp/', '/workspace/', '/dev/shm/'))
    except OSError:
        return False
paths = ['/.agentbox/init', '/proc/self/exe'] + [q for q in ('/proc/%s/exe' % p for p in os.listdir('/proc') if p.isdigit()) if not own_file(q)]
for root, dirs, files in os.walk('/.agentbox'):
    paths += [os.path.join(root, f) for f in files]
for p in ('/run/agentbox-agent',):
    if os.path.isdir(p): paths += [os.path.join(p, f) for f in os.listdir(p)]
for p in paths:
    for fl in (os.O_WRONLY, os.O_RDWR):
        if os.path.exists(p) and not try_open(p, fl):
            got.append('%s opened for writing' % p); break
    try:
        os.chmod(p, os.stat(p).st_mode & 0o7777); got.append('chmod ' + p)
    except OSError:
        pass
done(not got, '; '.join(got) or '%d host-provided or running binaries, none writable' % len(set(paths)))
`);
  },
};

const mountinfoHostPaths: Attack = {
  id: 'filesystem.mountinfo-host-paths',
  category: 'filesystem',
  title: 'read host paths (image store, helper binary, docker data dir) from /proc/self/mountinfo and /proc/self/mounts',
  async run(ctx) {
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
import re
RUNTIME = ${JSON.stringify(ctx.runtime)}
shown = set()
HIDDEN_FS = {'proc', 'tmpfs', 'devtmpfs', 'devpts', 'sysfs', 'cgroup', 'cgroup2', 'mqueue', '9p'}
for line in open('/proc/self/mountinfo'):
    pre, _, post = line.partition(' - ')
    f = pre.split()
    fstype = post.split()[0] if post else ''
    # /workspace and /tmp are directories of the sandbox's own disk (ext4 on a loop device), bound at
    # the same paths: their root names the disk's layout, nothing of the host's.
    own_disk = f[3] == f[4] and f[4] in ('/workspace', '/tmp')
    if fstype not in HIDDEN_FS and f[3] != '/' and not own_disk:
        shown.add(f[3])
    for m in re.findall(r'(?:lowerdir|upperdir|workdir)=([^ ,]+)', post):
        shown.update(m.split(':'))
for line in open('/proc/self/mounts'):
    for m in re.findall(r'(?:lowerdir|upperdir|workdir)=([^ ,]+)', line):
        shown.update(m.split(':'))
# Docker's own storage (overlay layers, the per-container hostname/hosts/resolv.conf) shows through any runc
# container and cannot be hidden by agentbox: reported, not failed (the README's threat model says so).
docker_own = set(p for p in shown if RUNTIME == 'docker' and re.search(r'/overlay2/|/containers/[0-9a-f]{64}/', p))
shown -= docker_own
# Neutral names that say nothing about the host's layout: overlay layers named by descriptor, and the
# staged copy of agentbox's own init under /run/agentbox/bin/<content hash>/ (not where agentbox is installed).
neutral = set(p for p in shown if re.fullmatch(r'/proc/self/fd/[0-9]+|/run/agentbox/bin/[0-9a-f]{16}/[A-Za-z0-9_.-]+', p))
shown -= neutral
note = (' (docker\'s own storage shows: %d paths under %s)' % (len(docker_own), os.path.commonpath(sorted(docker_own)))) if docker_own else ''
done(not shown, ('host paths shown: ' + ', '.join(sorted(shown))[:500] + note) if shown else 'no host path in mountinfo or mounts' + note)
`);
  },
};

const workspaceSetuid: Attack = {
  id: 'filesystem.writable-exec-setuid',
  category: 'filesystem',
  title: 'create a setuid/setgid copy of a binary in /workspace, /tmp and /dev/shm, and run it expecting a raised euid',
  async run(ctx) {
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
import shutil, subprocess
got, made = [], 0
for d in ('/workspace', '/tmp', '/dev/shm'):
    if not os.path.isdir(d): continue
    p = d + '/agentbox-suid-python'
    try:
        shutil.copy('/usr/bin/python3', p)
        os.chmod(p, 0o6755)
    except OSError:
        continue
    made += 1
    try:
        out = subprocess.run([p, '-c', 'import os; print(os.geteuid(), os.getegid())'], capture_output=True, timeout=20).stdout.decode().split()
        if out and (out[0] != str(os.getuid()) or out[1] != str(os.getgid())): got.append('%s ran with euid/egid %s' % (p, ' '.join(out)))
    except Exception:
        pass
    os.unlink(p)
done(not got, '; '.join(got) or 'a setuid copy (%d made) runs with the caller\'s own ids: nothing to gain (own uid %d)' % (made, os.getuid()))
`);
  },
};

const fifoAndDeviceThroughApi: Attack = {
  id: 'filesystem.files-api-special-files',
  category: 'filesystem',
  title: 'GET through the files API a FIFO, /dev/zero and /dev/urandom (never-ending): the read must end, the daemon must stay up',
  async run(ctx) {
    const id = ctx.sandboxes.debian;
    const fifo = `/workspace/${marker('fifo')}`;
    const made = await ctx.exec(id, ['sh', '-c', `mkfifo ${fifo} && echo made`]);
    if (!made.stdout.includes('made')) return { blocked: false, detail: `could not create the FIFO: ${clip(made.stderr)}` };
    const outcomes: string[] = [];
    let hung = false;
    for (const p of [fifo, '/dev/zero', '/dev/urandom', '/proc/self/fd/0']) {
      const ac = new AbortController();
      const guard = setTimeout(() => ac.abort(), 10_000);
      const pending = ctx.client.readFile(id, p);
      // A read that answers after we gave up is closed then, so no connection is left behind.
      ac.signal.addEventListener('abort', () => void pending.then((st) => st.destroy(), () => undefined));
      try {
        const stream = await Promise.race([
          pending,
          new Promise<never>((_, rej) => ac.signal.addEventListener('abort', () => rej(new Error('no answer in 10 s')))),
        ]);
        let n = 0;
        for await (const c of stream) {
          n += (c as Buffer).length;
          if (n > 256 * 1024 * 1024 || ac.signal.aborted) break;
        }
        stream.destroy();
        outcomes.push(`${p}: ${n} bytes`);
        if (ac.signal.aborted) hung = true;
      } catch (err) {
        outcomes.push(`${p}: ${(err as { code?: string }).code ?? (err as Error).message}`);
        if (ac.signal.aborted) hung = true;
      } finally {
        clearTimeout(guard);
      }
    }
    await ctx.exec(id, ['rm', '-f', fifo]);
    const alive = await ctx.exec(id, ['echo', 'alive']);
    if (hung) return { blocked: false, detail: `a read hung: ${outcomes.join('; ')}` };
    if (!alive.stdout.includes('alive')) return { blocked: false, detail: `the sandbox stopped answering after the reads: ${outcomes.join('; ')}` };
    return { blocked: true, detail: outcomes.join('; ') };
  },
};

const devShmAndDevWritable: Attack = {
  id: 'filesystem.writable-outside-workspace',
  category: 'filesystem',
  title: 'find every writable directory of the sandbox: only /workspace, /tmp and the runtime\'s /dev/shm, /dev/mqueue may be',
  async run(ctx) {
    // Every create is a gofer round trip on gVisor: the walk of the debian image takes seconds there,
    // many more when other attacks run beside it. A walk cut short counts as a failure, so give it room.
    return pyProbe(ctx, ctx.sandboxes.debian, String.raw`
ok = ('/workspace', '/tmp', '/dev/shm', '/dev/mqueue', '/proc', '/sys', '/dev/pts')
import time
found, t0, seen = [], time.time(), 0
name = '.agentbox-w-probe-%d' % os.getpid()
for root, dirs, files in os.walk('/', topdown=True):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys', '/workspace', '/tmp')]
    seen += 1
    if seen > 20000 or time.time() - t0 > 40:
        found.append('(more than %d directories: stopped looking)' % seen); break
    if root.startswith(ok): continue
    p = os.path.join(root, name)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd); os.unlink(p); found.append(root)
    except OSError:
        pass
done(not found, ('writable outside /workspace and /tmp: ' + ', '.join(found)) if found else 'no writable directory outside /workspace, /tmp (and /dev/shm, /dev/mqueue)')
`, { timeoutMs: 60_000 });
  },
};

const writableRoot: Attack = {
  id: 'filesystem.writable-root',
  category: 'filesystem',
  title: 'from a writable root (rootfs: writable): change the shared image for other sandboxes, make root-owned, setuid or device files, forge overlay xattrs, show the layers\' host paths',
  async run(ctx) {
    let id: string;
    try {
      id = await ctx.scratch({ profile: 'writable' });
    } catch (err) {
      // A runtime without writable roots must refuse the profile, never hand out a read-only or an unquota'd one.
      const e = err as { code?: string; message?: string };
      return { blocked: e.code === 'bad_request', detail: `the profile is refused on ${ctx.runtime}: ${e.code ?? ''} ${clip(e.message ?? String(err), 160)}` };
    }
    const tag = marker('agentbox-writable-root');
    // The binds of a docker sandbox's writable root must be its own overlay's, not Docker's.
    const layerNames = ctx.runtime === 'docker' ? await ctx.exec(id, ['sh', '-c', "grep -c ' /usr .*agentbox-root.*lowerdir=/proc/self/fd/' /proc/self/mountinfo"]) : undefined;
    if (layerNames && layerNames.stdout.trim() !== '1') return { blocked: false, detail: `/usr is not the writable root's overlay, named by descriptor: ${clip(layerNames.stdout + layerNames.stderr)}` };
    const inside = await pyProbe(ctx, id, String.raw`
import re, shutil, stat, subprocess
TAG = ${JSON.stringify(tag)}
got, did = [], []
# The control: the root is writable here, or the probe proves nothing.
try:
    open('/etc/' + TAG, 'w').write(TAG)
    with open('/usr/bin/ls', 'r+b') as f: f.seek(0, 2)
    did.append('control: wrote /etc, opened /usr/bin/ls for writing')
except OSError as e:
    done(False, 'control: the writable root is not writable (%s), the probe proves nothing' % ename(e))
p = '/usr/bin/' + TAG
shutil.copy('/usr/bin/python3', p)
for name, f in [('chown to root', lambda: os.chown(p, 0, 0)), ('chown to another user', lambda: os.chown(p, 1001, 1001)),
                ('mknod a char device', lambda: os.mknod('/etc/' + TAG + '-dev', stat.S_IFCHR | 0o666, os.makedev(1, 3))),
                ('mknod an overlay whiteout (0:0)', lambda: os.mknod('/usr/' + TAG + '-wh', stat.S_IFCHR | 0o666, 0)),
                ('set trusted.overlay.redirect', lambda: os.setxattr('/usr/share', 'trusted.overlay.redirect', b'/../../../')),
                ('set trusted.overlay.opaque', lambda: os.setxattr('/etc', 'trusted.overlay.opaque', b'y')),
                ('set security.capability', lambda: os.setxattr(p, 'security.capability', bytes.fromhex('0100000200200000000000000000000000000000')))]:
    try:
        f(); got.append(name)
    except OSError:
        pass
os.chmod(p, 0o6755)
out = subprocess.run([p, '-c', 'import os; print(os.geteuid(), os.getegid())'], capture_output=True, timeout=20).stdout.decode().split()
if out and (out[0] != str(os.getuid()) or out[1] != str(os.getgid())): got.append('a setuid copy in /usr/bin ran with euid/egid %s' % ' '.join(out))
# The writable root's own overlay names its layers by descriptor. (Docker's overlay under a runc
# container's / shows Docker's storage, which agentbox cannot hide: filesystem.mountinfo-host-paths reports it.)
DOCKER_OWN = r'/var/lib/docker/overlay2/.*' if ${JSON.stringify(ctx.runtime)} == 'docker' else r'(?!)'
for line in open('/proc/self/mountinfo'):
    for m in re.findall(r'(?:lowerdir|upperdir|workdir)=([^ ,]+)', line.strip()):
        got += ['mountinfo shows ' + x for x in m.split(':') if not re.fullmatch(r'/proc/self/fd/[0-9]+', x) and not re.fullmatch(DOCKER_OWN, x)]
done(not got, '; '.join(got) or 'root- and other-owned files, devices, whiteouts, overlay and capability xattrs refused; a setuid copy gains nothing; layers named by descriptor only (' + '; '.join(did) + ')')
`);
    if (!inside.blocked) return inside;
    // The image is shared: neither a read-only sandbox nor a new writable one of it sees the change.
    const fresh = await ctx.scratch({ profile: 'writable' });
    for (const other of [ctx.sandboxes.neighbour, fresh]) {
      const r = await ctx.exec(other, ['sh', '-c', `test -e /etc/${tag} && echo /etc; test -e /usr/bin/${tag} && echo /usr/bin; python3 -c 'print(6*7)'`]);
      if (r.stdout !== '42\n') {
        return { blocked: false, detail: `a change in one writable root reached ${other === fresh ? 'a new writable sandbox' : 'a read-only sandbox'} of the same image: ${clip(r.stdout)}` };
      }
    }
    return { blocked: true, detail: `${inside.detail}; other sandboxes of the image see none of it` };
  },
};

export const filesystemAttacks: Attack[] = [
  writableRoot,
  writeReadOnlyRoot,
  procRootEscape,
  inheritedFds,
  filesApiSymlinkRead,
  filesApiSymlinkWrite,
  filesApiTraversal,
  fifoAndDeviceThroughApi,
  execCwdEscape,
  hostSockets,
  hardlinks,
  openByHandle,
  mknodDevices,
  mounts,
  sysWrites,
  procSysWrites,
  sysrqAndKernelFiles,
  overwriteHostBinaries,
  mountinfoHostPaths,
  workspaceSetuid,
  devShmAndDevWritable,
];

