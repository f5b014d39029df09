/*
 * agentbox-vm-agent: /init of a microVM guest, and the agent that runs the daemon's requests in it.
 *
 * The guest is a QEMU microvm booted with a kernel of its own and an initramfs agentbox builds
 * (src/runtime/microvm/guest/). This binary is that initramfs's /init:
 *
 *   as PID 1   mounts /proc, /sys, /dev, /tmp, /run; loads the kernel modules listed in
 *              /etc/agentbox/modules (in that order: the cloud kernel builds virtio as modules);
 *              mounts the image's root disk and the sandbox's own disk when the VM has them
 *              (mount_sandbox_root; commands then run chrooted there; with agentbox.writable_root=1
 *              the image under an overlay whose upper layer is on the disk), else makes the initramfs's
 *              /workspace the sandbox user's; brings up lo; then stays PID 1 (pid1.h: reaps every
 *              orphan, background jobs included) and keeps the agent running (restarted if it dies).
 *   the agent  root in the guest (the VM is the boundary): opens the virtio-serial port named
 *              org.agentbox.0 and serves framed, multiplexed streams on it for as long as the guest runs.
 *
 * There is one port and one byte stream, so every frame names its stream:
 *   type (1 byte) | stream id (4 bytes BE) | payload length (4 bytes BE) | payload
 * host -> guest  'H' hello: MAGIC + 8-byte nonce (stream 0); the agent ends every stream and answers 'H'
 *                'R' open a stream: NUL-terminated kind, cwd, timeout_ms, argc, argv..., env (K=V)...
 *                    kind exec: run argv; file: file_op(argv[0], argv[1]) (file-ops.h); ps; signal NAME PID
 *                    (proc-list.h); stats: one line "MEM_BYTES PIDS CPU_MS" on stdout; freeze (the
 *                    sandbox's disk, for at most timeout_ms) and thaw; sync HEX UNIX_MS (after a restore:
 *                    fresh entropy and the host's clock): answered at once, by the agent as root
 *                    egress PORT: take one connection to 127.0.0.1:PORT in the guest (listening from
 *                    the first such request on) and relay it: stdout its bytes, stdin the proxy's;
 *                    stderr says EGRESS_ACCEPTED once it holds one
 *                'I' stdin bytes (within the stdin window)   'E' end of stdin
 *                'K' kill the stream's tree (exit 143)   'S' signal (4 bytes) to the leader's process group
 *                'W' output window: the host took that many more bytes (4 bytes)
 *                'Q' power the guest off (stream 0)
 * guest -> host  'H' hello answer (nonce 0: unasked, the agent has just started)   'P' leader pid (4 bytes)   'O' stdout   'e' stderr
 *                'W' stdin window: the command took that many more bytes
 *                'D' that output ('O' or 'e', 1 byte) has ended before the exit: every writer closed it
 *                'X' exit status (4 bytes) + why (1 byte): 0 it exited, 1 timeout (124), 2 the host's 'K' (143),
 *                    3 killed by SIGKILL (or a shell's exit 137 for its child) while the OOM killer struck
 *                    (the sandbox cgroup's oom_kill count grew; the guest's without one)
 * Each stream starts with WINDOW bytes of credit both ways, so one slow reader or a command that does
 * not read its stdin stalls its own stream only, never the port.
 *
 * Every command runs as uid 1000 with no capabilities (empty bounding set), no_new_privs and the
 * seccomp filter (seccomp-deny.h), in a session of its own, as the other runtimes run them. An exec
 * ends when its leader exits (exec-relay.h says why): what its pipes hold then is sent with the exit
 * status, and a pipe a background job still holds is read and discarded from then on. A timeout kills
 * the whole tree (proc-tree.h: parent links, session, AGENTBOX_EXEC_ID marker) and exits 124.
 *
 * The host side may go away at any time (a daemon restart). virtio-serial then reports POLLHUP and
 * reads return 0 until a host connects again, which the kernel signals with SIGIO. The agent never
 * exits on that: it ends every stream (nobody is left to read it), drops what the old host left unread,
 * and waits for the next host's hello, scanning the bytes for MAGIC, so a frame the old host cut off
 * half-way cannot desynchronise the new one.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/random.h>
#include <net/if.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FAIL_PROGRAM "agentbox-vm-agent"
#include "byte-relay.h"
#include "exit-codes.h"
#include "fail.h"
#include "fd-hygiene.h"
#include "file-ops.h"
#include "pid1.h"
#include "proc-list.h"
#include "proc-tree.h"
#include "procfs.h"
#include "seccomp-deny.h"
#include "drop-privileges.h"
#include "mount-point.h"
#include "writable-root.h"

#define PORT_NAME "org.agentbox.0"
#define MAGIC "\x7f" "agentbox-vm-1\n\0" /* 16 bytes with the terminating NUL */
#define MAGIC_LEN 16
#define NONCE_LEN 8
#define HDR 9
#define MAX_STREAMS 128
#define CHUNK 65536
#define WINDOW (1024u << 10)
#define MAX_REQUEST (1u << 20)
#define MAX_DISCARD 256
#define SANDBOX_UID 1000
#define SANDBOX_GID 1000
#define EXIT_KILLED_BY_HOST (EXIT_SIGNAL_BASE + SIGTERM)
/* Bytes queued for the port beyond which no command output is read (the port is slower than a pipe). */
#define OUT_BACKLOG_MAX (4u << 20)

struct stream {
  int used;
  uint32_t id;
  int in, out, err;
  pid_t pid;
  int exited, status, forced, reported;
  long long deadline_ms;
  char *in_buf;
  size_t in_len, in_off;
  int stdin_eof;
  uint32_t out_credit;  /* output bytes the host still accepts */
  uint32_t in_taken;    /* stdin bytes the command took, not yet granted back to the host */
  char *marker;         /* AGENTBOX_EXEC_ID=<id>, or NULL */
  long long oom_kills;  /* the guest's oom_kill count when the stream started */
};

enum { WHY_EXITED, WHY_TIMEOUT, WHY_KILLED, WHY_OOM };

static struct stream streams[MAX_STREAMS];
static int discard[MAX_DISCARD];
static int ndiscard;

static int port = -1;
static int connected;
static int framed; /* 0: scanning for MAGIC (no host hello seen since the last connect) */
static unsigned char *rbuf;
static size_t rlen;
static char *obuf;
static size_t olen, ooff;

static void log_line(const char *fmt, const char *arg) {
  int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  char line[512];
  int n = snprintf(line, sizeof line, "<3>agentbox-vm-agent: ");
  n += snprintf(line + n, sizeof line - (size_t)n, fmt, arg ? arg : "", strerror(errno));
  if (write(fd, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1)) < 0) {}
  close(fd);
}

static uint32_t be32(const unsigned char *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3]; }
static void put32(unsigned char *p, uint32_t v) { p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16); p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v; }

/* ---------- the port ---------- */

static void queue(char type, uint32_t id, const void *p, uint32_t n) {
  if (!connected) return;
  if (ooff > 0 && ooff == olen) ooff = olen = 0;
  if (ooff > (1u << 20)) {
    memmove(obuf, obuf + ooff, olen - ooff);
    olen -= ooff;
    ooff = 0;
  }
  char *grown = realloc(obuf, olen + HDR + n);
  if (!grown) _exit(EXIT_FAILURE);
  obuf = grown;
  unsigned char h[HDR];
  h[0] = (unsigned char)type;
  put32(h + 1, id);
  put32(h + 5, n);
  memcpy(obuf + olen, h, HDR);
  if (n) memcpy(obuf + olen + HDR, p, n);
  olen += HDR + n;
}

static void queue_u32(char type, uint32_t id, uint32_t v) {
  unsigned char b[4];
  put32(b, v);
  queue(type, id, b, 4);
}

static void flush_port(void) {
  while (connected && ooff < olen) {
    ssize_t w = write(port, obuf + ooff, olen - ooff);
    if (w > 0) ooff += (size_t)w;
    else if (w < 0 && errno == EINTR) continue;
    else return; /* EAGAIN, or the host went away: poll says which */
  }
}

/* /dev/vportNpM whose /sys/class/virtio-ports/vportNpM/name is PORT_NAME, opened; -1 while none is. */
static int open_port(void) {
  DIR *d = opendir("/sys/class/virtio-ports");
  if (!d) return -1;
  struct dirent *e;
  int fd = -1;
  while (fd < 0 && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[300], name[64];
    snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
    if (proc_read(path, name, sizeof name) <= 0) continue;
    name[strcspn(name, "\n")] = '\0';
    if (strcmp(name, PORT_NAME) != 0) continue;
    snprintf(path, sizeof path, "/dev/%s", e->d_name);
    fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  }
  closedir(d);
  if (fd < 0) return -1;
  /* SIGIO on every change of the host's connection (and on data): the only wake-up virtio-serial
   * gives while no host is connected, when poll() reports POLLHUP at once. */
  fcntl(fd, F_SETOWN, getpid());
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC);
  return fd;
}

/* ---------- streams ---------- */

static void reap(void *ctx) {
  (void)ctx;
  int status;
  pid_t dead;
  while ((dead = waitpid(-1, &status, WNOHANG)) > 0) {
    for (int i = 0; i < MAX_STREAMS; i++) {
      struct stream *s = &streams[i];
      if (s->used && s->pid == dead && !s->exited) {
        s->exited = 1;
        s->status = status;
      }
    }
  }
}

static void stream_kill(struct stream *s, int forced) {
  if (s->forced || s->pid <= 0) return;
  s->forced = forced;
  tree_kill(s->pid, s->pid, reap, NULL, s->marker);
}

static void stream_free(struct stream *s) {
  int *fds[] = {&s->in, &s->out, &s->err};
  for (int i = 0; i < 3; i++) if (*fds[i] >= 0) close(*fds[i]);
  free(s->in_buf);
  free(s->marker);
  memset(s, 0, sizeof *s);
}

/* The host is gone or started over: every stream ends, its tree killed, nothing more is sent. */
static void end_all_streams(void) {
  for (int i = 0; i < MAX_STREAMS; i++) {
    struct stream *s = &streams[i];
    if (!s->used) continue;
    if (!s->exited) stream_kill(s, EXIT_KILLED_BY_HOST);
    stream_free(s);
  }
  olen = ooff = 0;
}

static struct stream *stream_of(uint32_t id) {
  for (int i = 0; i < MAX_STREAMS; i++) if (streams[i].used && streams[i].id == id) return &streams[i];
  return NULL;
}

/* Where commands run: "/newroot" once the image's disk is mounted there (mount_sandbox_root), else the initramfs. */
static const char *sandbox_root;
/* The sandbox's limits (agentbox.memory_mb=N agentbox.pids=N on the kernel's command line); 0: none. */
static long memory_mb, pids_limit;
/* rootfs: writable (agentbox.writable_root=1 on the kernel's command line). */
static int writable_root;
/* Every command's cgroup: the guest's kernel, agent and PID 1 live outside it, in the VM's headroom. */
#define SANDBOX_CGROUP "/sys/fs/cgroup/sandbox"

static int write_text(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, strlen(text));
  close(fd);
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* In the child: the sandbox user with nothing of root's (guest root may set groups: no EPERM allowed). */
static void become_sandbox_user(void) {
  struct drop_to t = { 1, SANDBOX_UID, SANDBOX_GID, 0 };
  drop_privileges_to(&t);
}

/* In the child: run what KIND names with ARGV; never returns. */
static void set_oom_score_adj(const char *value) {
  int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  if (write(fd, value, strlen(value)) < 0) {}
  close(fd);
}

__attribute__((noreturn)) static void child_main(const char *kind, const char *cwd, char **argv, int argc, char **env) {
  set_oom_score_adj("0"); /* PID 1 and the agent are spared by the OOM killer; commands are not */
  /* Into the sandbox's cgroup (memoryMb, pids) before anything of the command runs. */
  if ((memory_mb > 0 || pids_limit > 0) && write_text(SANDBOX_CGROUP "/cgroup.procs", "0") != 0) {
    fprintf(stderr, "agentbox: cannot enter the sandbox's cgroup: %s\n", strerror(errno));
    _exit(EXIT_AGENTBOX_FAILED);
  }
  if (sandbox_root && (chroot(sandbox_root) != 0 || chdir("/") != 0)) {
    fprintf(stderr, "agentbox: cannot enter the sandbox's root: %s\n", strerror(errno));
    _exit(EXIT_AGENTBOX_FAILED);
  }
  become_sandbox_user();
  if (chdir(cwd) != 0) {
    fprintf(stderr, "agentbox: cannot enter %s: %s\n", cwd, strerror(errno));
    _exit(EXIT_CANNOT_EXECUTE);
  }
  if (strcmp(kind, "exec") == 0) {
    extern char **environ;
    environ = env; /* execvp looks PATH up in the command's own environment */
    execvp(argv[0], argv);
    int err = errno;
    fprintf(stderr, "agentbox: %s: %s\n", argv[0], strerror(err));
    _exit(err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXECUTE);
  }
  if (strcmp(kind, "file") == 0 && argc == 2) {
    int rc = file_op(argv[0], argv[1]);
    if (rc >= 0 && fflush(stdout) == 0) _exit(rc);
    fprintf(stderr, "agentbox-file-error:EINVAL:unknown operation %s\n", argv[0]);
    _exit(1);
  }
  if (strcmp(kind, "ps") == 0) _exit(ps_main());
  if (strcmp(kind, "signal") == 0) _exit(signal_main(argc, argv));
  fprintf(stderr, "agentbox: unknown request %s\n", kind);
  _exit(EXIT_AGENTBOX_FAILED);
}

/* One line "MEM_BYTES PIDS CPU_MS": memory in use (MemTotal - MemAvailable), processes, CPU time used since boot. */
static void stats_line(char *out, size_t size) {
  char buf[4096];
  long long total = 0, avail = 0, pids = 0, cpu = 0;
  if (proc_read("/proc/meminfo", buf, sizeof buf) > 0) {
    char *t = strstr(buf, "MemTotal:"), *a = strstr(buf, "MemAvailable:");
    if (t) total = atoll(t + 9);
    if (a) avail = atoll(a + 13);
  }
  if (proc_read("/proc/stat", buf, sizeof buf) > 0 && strncmp(buf, "cpu ", 4) == 0) {
    long long v[8] = {0};
    sscanf(buf + 4, "%lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    long hz = sysconf(_SC_CLK_TCK);
    /* user nice system [idle iowait] irq softirq steal */
    cpu = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) * 1000 / (hz > 0 ? hz : 100);
  }
  /* Memory: the guest's in use, its kernel's share included (the VM is the sandbox). Processes: the
   * sandbox cgroup's (what pids limits), and PID 1, as the other runtimes count them. */
  long long memory = (total - avail) * 1024;
  if (proc_read(SANDBOX_CGROUP "/pids.current", buf, sizeof buf) > 0) {
    pids = atoll(buf) + 1;
  } else {
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) if (isdigit((unsigned char)e->d_name[0])) pids++;
    if (d) closedir(d);
  }
  snprintf(out, size, "%lld %lld %lld\n", memory, pids, cpu);
}

static void queue_exit(uint32_t id, uint32_t code, unsigned char why) {
  unsigned char b[5];
  put32(b, code);
  b[4] = why;
  queue('X', id, b, 5);
}

static void refuse(uint32_t id, const char *msg, int code) {
  queue('e', id, msg, (uint32_t)strlen(msg));
  queue_exit(id, (uint32_t)code, WHY_EXITED);
}

/* The guest's count of OOM kills since boot (/proc/vmstat oom_kill). */
/* OOM kills so far: the sandbox cgroup's own (memory.events) when it has one, else the guest's (/proc/vmstat, ~6 KB). */
static long long oom_kill_count(void) {
  static char buf[32768];
  if (proc_read(SANDBOX_CGROUP "/memory.events", buf, sizeof buf) > 0) {
    char *p = strstr(buf, "oom_kill ");
    return p ? atoll(p + 9) : 0;
  }
  if (proc_read("/proc/vmstat", buf, sizeof buf) <= 0) return 0;
  char *p = strstr(buf, "\noom_kill ");
  return p ? atoll(p + 10) : 0;
}

/* 'R': parses the request, forks its child (or answers at once), and opens the stream. */
/*
 * The sandbox's disk frozen (FIFREEZE on /disk): its data and metadata on the virtual disk, writers
 * held, so the host can copy the disk's image consistently while the VM runs (a snapshot, a fork).
 * Thawed by the host's thaw, when the host goes away, or at the freeze's own deadline at the latest:
 * a host that dies holding it never leaves the sandbox's writers stuck.
 */
static int frozen_fd = -1;
static long long thaw_at_ms;

static void disk_thaw(void) {
  if (frozen_fd < 0) return;
  if (ioctl(frozen_fd, FITHAW, 0) != 0) log_line("thaw %s: %s", "/disk");
  close(frozen_fd);
  frozen_fd = -1;
}

static int disk_freeze(long long hold_ms) {
  if (frozen_fd >= 0) return 0;
  int fd = open("/disk", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  if (ioctl(fd, FIFREEZE, 0) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  frozen_fd = fd;
  thaw_at_ms = monotonic_ms() + (hold_ms > 0 ? hold_ms : 60000);
  return 0;
}

/*
 * After a restore from a template: every clone starts with the template's RNG state and clock. The
 * host sends fresh entropy (hex) and its time (ms since the epoch): credited to the kernel's pool
 * (RNDADDENTROPY, which reseeds it) and set as the guest's clock.
 */
static int sync_guest(const char *hex, const char *unix_ms) {
  size_t n = strlen(hex) / 2;
  if (n == 0 || n > 512) return -1;
  struct { int entropy_count; int buf_size; unsigned char buf[512]; } pool;
  for (size_t i = 0; i < n; i++) {
    unsigned int byte;
    if (sscanf(hex + 2 * i, "%2x", &byte) != 1) return -1;
    pool.buf[i] = (unsigned char)byte;
  }
  pool.entropy_count = (int)(n * 8);
  pool.buf_size = (int)n;
  int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = ioctl(fd, RNDADDENTROPY, &pool);
  /* Credited entropy alone does not rekey a CRNG that is ready already (it reseeds once a minute at
   * most): two clones of one running VM would then go on drawing the same bytes. Reseed it now. */
  if (rc == 0) rc = ioctl(fd, RNDRESEEDCRNG);
  close(fd);
  if (rc != 0) return -1;
  long long ms = atoll(unix_ms);
  struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
  return ms > 0 ? clock_settime(CLOCK_REALTIME, &ts) : 0;
}

/*
 * The sandbox's way to its egress proxy: the agent listens on 127.0.0.1:PORT in the guest from the
 * host's first "egress" request on (the host makes it before the sandbox's first command, and keeps a
 * few open). Each such stream's child takes one connection and joins it to the stream: the
 * sandbox's bytes go out as stdout, the proxy's come in as stdin; the host joins the stream to the
 * proxy's Unix socket. No network device, no address: the bytes only cross the agent's port.
 */
static int egress_fd = -1, egress_port;

static int egress_listen(int port) {
  if (port <= 0 || port > 65535) { errno = EINVAL; return -1; }
  if (egress_fd >= 0) {
    if (port == egress_port) return 0;
    errno = EADDRINUSE;
    return -1;
  }
  egress_fd = loopback_listen(port);
  if (egress_fd < 0) return -1;
  egress_port = port;
  return 0;
}

/* What an egress stream's child writes on stderr once it holds a connection (the host then connects it to the proxy). */
#define EGRESS_ACCEPTED "agentbox-egress-accepted\n"

/*
 * The child of an "egress" stream: nobody (65534) without capabilities, no_new_privs and the
 * commands' filter, outside the sandbox's root and cgroup (it is the agent's, like the relay of the
 * other runtimes); it parses nothing. Takes one connection, says so, relays it, exits.
 */
__attribute__((noreturn)) static void egress_child(int l) {
  struct drop_to nobody = { 1, 65534, 65534, 0 };
  drop_privileges_to(&nobody);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || install_seccomp_deny() != 0) _exit(EXIT_AGENTBOX_FAILED);
  signal(SIGPIPE, SIG_IGN);
  int c;
  do c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  while (c < 0 && (errno == EINTR || errno == ECONNABORTED));
  if (c < 0) _exit(EXIT_AGENTBOX_FAILED);
  close(l);
  int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  static const char accepted[] = EGRESS_ACCEPTED;
  if (write(2, accepted, sizeof accepted - 1) < 0) _exit(EXIT_AGENTBOX_FAILED);
  close(2);
  relay_streams(c, c, 0, 1);
  _exit(0);
}

static void stream_open(uint32_t id, char *req, uint32_t len) {
  if (stream_of(id)) return refuse(id, "agentbox: stream id in use\n", EXIT_AGENTBOX_FAILED);
  struct stream *s = NULL;
  for (int i = 0; i < MAX_STREAMS && !s; i++) if (!streams[i].used) s = &streams[i];
  if (!s) return refuse(id, "agentbox: too many streams at once\n", EXIT_AGENTBOX_FAILED);
  /* Every string takes at least its NUL: at most len of them. */
  char **strs = malloc(sizeof *strs * ((size_t)len + 1));
  if (!strs) _exit(EXIT_FAILURE);
  int n = 0;
  for (uint32_t off = 0; off < len; off += (uint32_t)strlen(req + off) + 1) strs[n++] = req + off;
  int argc = n >= 4 ? atoi(strs[3]) : -1;
  if (argc < 0 || argc > n - 4) {
    free(strs);
    return refuse(id, "agentbox: bad request\n", EXIT_AGENTBOX_FAILED);
  }
  const char *kind = strs[0], *cwd = strs[1];
  long long timeout_ms = atoll(strs[2]);
  if (strcmp(kind, "stats") == 0) {
    char line[128];
    stats_line(line, sizeof line);
    queue('O', id, line, (uint32_t)strlen(line));
    queue_exit(id, 0, WHY_EXITED);
    free(strs);
    return;
  }
  if (strcmp(kind, "sync") == 0) {
    int ok = argc == 2 && sync_guest(strs[4], strs[5]) == 0;
    if (!ok) { const char *m = "agentbox: cannot reseed the guest or set its clock\n"; queue('e', id, m, (uint32_t)strlen(m)); }
    queue_exit(id, ok ? 0 : 1, WHY_EXITED);
    free(strs);
    return;
  }
  if (strcmp(kind, "freeze") == 0 || strcmp(kind, "thaw") == 0) {
    int rc = 0;
    if (kind[0] == 'f' && disk_freeze(timeout_ms) != 0) {
      char msg[160];
      snprintf(msg, sizeof msg, "agentbox: cannot freeze the sandbox's disk: %s\n", strerror(errno));
      queue('e', id, msg, (uint32_t)strlen(msg));
      rc = 1;
    }
    if (kind[0] == 't') disk_thaw();
    queue_exit(id, (uint32_t)rc, WHY_EXITED);
    free(strs);
    return;
  }
  int egress = strcmp(kind, "egress") == 0;
  if (!egress && strcmp(kind, "exec") != 0 && strcmp(kind, "file") != 0 && strcmp(kind, "ps") != 0 && strcmp(kind, "signal") != 0) {
    free(strs);
    return refuse(id, "agentbox: unknown request\n", EXIT_AGENTBOX_FAILED);
  }
  if (strcmp(kind, "exec") == 0 && argc < 1) {
    free(strs);
    return refuse(id, "agentbox: empty command\n", EXIT_AGENTBOX_FAILED);
  }
  if (egress && (argc != 1 || egress_listen(atoi(strs[4])) != 0)) {
    char msg[160];
    snprintf(msg, sizeof msg, "agentbox: cannot listen on 127.0.0.1:%s for the sandbox's egress: %s\n", argc == 1 ? strs[4] : "?", argc == 1 ? strerror(errno) : "bad request");
    free(strs);
    return refuse(id, msg, EXIT_AGENTBOX_FAILED);
  }
  char **argv = malloc(sizeof *argv * (size_t)(argc + 1));
  char **env = malloc(sizeof *env * (size_t)(n - 4 - argc + 1));
  if (!argv || !env) _exit(EXIT_FAILURE);
  memcpy(argv, strs + 4, sizeof *argv * (size_t)argc);
  argv[argc] = NULL;
  int envc = n - 4 - argc;
  memcpy(env, strs + 4 + argc, sizeof *env * (size_t)envc);
  env[envc] = NULL;
  memset(s, 0, sizeof *s);
  s->in = s->out = s->err = -1;
  for (int i = 0; i < envc; i++) {
    if (strncmp(env[i], "AGENTBOX_EXEC_ID=", 17) == 0 && env[i][17] && !s->marker) s->marker = strdup(env[i]);
  }
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
    refuse(id, "agentbox: no pipe\n", EXIT_CANNOT_EXECUTE);
    goto done;
  }
  pid_t pid = fork();
  if (pid < 0) {
    refuse(id, "agentbox: cannot fork\n", EXIT_CANNOT_EXECUTE);
    goto done;
  }
  if (pid == 0) {
    setsid();
    if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0) _exit(EXIT_AGENTBOX_FAILED);
    close_extra_fds(egress ? &egress_fd : NULL, egress ? 1 : 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    umask(022);
    if (egress) egress_child(egress_fd);
    child_main(kind, cwd, argv, argc, env);
  }
  s->used = 1;
  s->id = id;
  s->pid = pid;
  s->in = in[1];
  s->out = out[0];
  s->err = err[0];
  in[1] = out[0] = err[0] = -1;
  fcntl(s->in, F_SETFL, O_NONBLOCK);
  fcntl(s->out, F_SETFL, O_NONBLOCK);
  fcntl(s->err, F_SETFL, O_NONBLOCK);
  s->out_credit = WINDOW;
  s->oom_kills = oom_kill_count();
  s->deadline_ms = timeout_ms > 0 ? monotonic_ms() + timeout_ms : 0;
  queue_u32('P', id, (uint32_t)pid);
done:
  for (int i = 0; i < 2; i++) {
    if (in[i] >= 0) close(in[i]);
    if (out[i] >= 0) close(out[i]);
    if (err[i] >= 0) close(err[i]);
  }
  if (!s->used) {
    free(s->marker);
    s->marker = NULL;
  }
  free(argv);
  free(env);
  free(strs);
}

static void hello(const unsigned char *nonce) {
  end_all_streams();
  unsigned char p[MAGIC_LEN + NONCE_LEN];
  memcpy(p, MAGIC, MAGIC_LEN);
  memcpy(p + MAGIC_LEN, nonce, NONCE_LEN);
  queue('H', 0, p, sizeof p);
  framed = 1;
}

static void handle_frame(char type, uint32_t id, unsigned char *p, uint32_t n) {
  if (type == 'H') {
    if (n == MAGIC_LEN + NONCE_LEN && memcmp(p, MAGIC, MAGIC_LEN) == 0) hello(p + MAGIC_LEN);
    else framed = 0;
    return;
  }
  if (type == 'Q') {
    sync();
    reboot(RB_POWER_OFF);
    return;
  }
  if (type == 'R') {
    char *req = malloc(n + 1);
    if (!req) _exit(EXIT_FAILURE);
    memcpy(req, p, n);
    req[n] = '\0';
    stream_open(id, req, n);
    free(req);
    return;
  }
  struct stream *s = stream_of(id);
  if (!s) return; /* ended already: late stdin, a kill after the exit */
  if (type == 'I' && s->in >= 0 && n > 0) {
    if (s->in_off == s->in_len) s->in_off = s->in_len = 0;
    char *grown = realloc(s->in_buf, s->in_len + n);
    if (!grown) _exit(EXIT_FAILURE);
    s->in_buf = grown;
    memcpy(s->in_buf + s->in_len, p, n);
    s->in_len += n;
  } else if (type == 'E') {
    s->stdin_eof = 1;
  } else if (type == 'K' && s->pid > 0) {
    stream_kill(s, EXIT_KILLED_BY_HOST);
  } else if (type == 'S' && n == 4 && s->pid > 0 && !s->exited) {
    int sig = (int)be32(p);
    if (sig > 0 && sig < 65 && kill(-s->pid, sig) != 0) kill(s->pid, sig);
  } else if (type == 'W' && n == 4) {
    uint32_t more = be32(p);
    s->out_credit = more > (1u << 30) - s->out_credit ? (1u << 30) : s->out_credit + more;
  }
}

static int valid_type(unsigned char t) { return t && strchr("HRIEKSWQ", (int)t) != NULL; }

/* Takes every whole frame out of rbuf; while not framed, looks for MAGIC first. */
static void parse_input(void) {
  size_t off = 0;
  for (;;) {
    if (!framed) {
      /* A hello frame's header sits right before MAGIC. */
      size_t found = (size_t)-1;
      for (size_t i = off + HDR; i + MAGIC_LEN <= rlen; i++) {
        if (rbuf[i] == (unsigned char)MAGIC[0] && memcmp(rbuf + i, MAGIC, MAGIC_LEN) == 0 && rbuf[i - HDR] == 'H') { found = i - HDR; break; }
      }
      if (found == (size_t)-1) {
        /* Keep a tail that may hold the start of a hello. */
        size_t keep = HDR + MAGIC_LEN;
        if (rlen - off > keep) off = rlen - keep;
        break;
      }
      off = found;
      framed = 1;
    }
    if (rlen - off < HDR) break;
    unsigned char type = rbuf[off];
    uint32_t id = be32(rbuf + off + 1), n = be32(rbuf + off + 5);
    if (!valid_type(type) || n > MAX_REQUEST || (type != 'R' && n > CHUNK)) {
      framed = 0; /* out of step: a new host's hello puts it right */
      off++;
      continue;
    }
    if (rlen - off < HDR + n) break;
    off += HDR + n;
    handle_frame((char)type, id, rbuf + off - n, n);
  }
  if (off > 0) {
    memmove(rbuf, rbuf + off, rlen - off);
    rlen -= off;
  }
}

/* What the old host sent and nobody read stays in the port: not drained here, since by now the next
 * host's hello may sit behind it (a drain lost it). The scan for MAGIC skips it instead. */
static void host_gone(void) {
  if (connected) end_all_streams();
  disk_thaw();
  connected = 0;
  framed = 0;
  rlen = 0;
}

/* Whether a host is connected now: virtio-serial says POLLHUP while none is. */
static void check_host(void) {
  struct pollfd p = { port, POLLIN, 0 };
  int hup = poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
  if (hup) host_gone();
  else if (!connected) {
    connected = 1;
    framed = 0;
  }
}

static void read_port(void) {
  ssize_t r = read(port, rbuf + rlen, HDR + MAX_REQUEST - rlen);
  if (r < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (r <= 0) {
    host_gone();
    return;
  }
  rlen += (size_t)r;
  parse_input();
}

/* Output of a command, within its credit. */
static void read_output(struct stream *s, int *fd, char type) {
  char buf[CHUNK];
  size_t want = s->out_credit < sizeof buf ? s->out_credit : sizeof buf;
  if (want == 0) return;
  ssize_t r = read(*fd, buf, want);
  if (r > 0) {
    queue(type, s->id, buf, (uint32_t)r);
    s->out_credit -= (uint32_t)r;
    return;
  }
  if (r < 0 && (errno == EINTR || errno == EAGAIN)) return;
  close(*fd);
  *fd = -1;
  /* Every writer has closed it while the command runs on (an egress relay whose sandbox side ended
   * writing, a command that closed its stdout): the host ends its copy now, not at the exit. */
  queue('D', s->id, &type, 1);
}

/* After the leader's exit: what the pipe holds now is everything it wrote (sent whatever the credit:
 * it is bounded by the pipe's size); a pipe a background job still holds is then only drained. */
static void take_rest(struct stream *s, int *fd, char type) {
  if (*fd < 0) return;
  int n = 0;
  if (ioctl(*fd, FIONREAD, &n) != 0) n = 0;
  char buf[CHUNK];
  while (n > 0) {
    ssize_t r = read(*fd, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    queue(type, s->id, buf, (uint32_t)r);
    n -= (int)r;
  }
  struct pollfd p = { *fd, POLLIN, 0 };
  int hup = poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
  if (hup || ndiscard >= MAX_DISCARD) close(*fd);
  else discard[ndiscard++] = *fd;
  *fd = -1;
}

static void feed_stdin(struct stream *s) {
  ssize_t w = write(s->in, s->in_buf + s->in_off, s->in_len - s->in_off);
  if (w > 0) {
    s->in_off += (size_t)w;
    s->in_taken += (uint32_t)w;
  } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
    close(s->in); /* the command closed its stdin: the rest is dropped, and still credited */
    s->in = -1;
    s->in_taken += (uint32_t)(s->in_len - s->in_off);
    s->in_off = s->in_len = 0;
  }
}

static void settle(struct stream *s) {
  if (s->in >= 0 && (s->exited || (s->stdin_eof && s->in_off == s->in_len))) {
    close(s->in);
    s->in = -1;
  }
  if (s->in < 0 && s->in_len > s->in_off) {
    s->in_taken += (uint32_t)(s->in_len - s->in_off);
    s->in_off = s->in_len = 0;
  }
  /* Granted back in batches, so a byte-at-a-time reader does not cost a frame per byte. */
  if (s->in_taken >= WINDOW / 4 || (s->in_taken > 0 && s->in < 0)) {
    queue_u32('W', s->id, s->in_taken);
    s->in_taken = 0;
  }
  if (!s->exited || s->reported) return;
  if (!s->forced) {
    take_rest(s, &s->out, 'O');
    take_rest(s, &s->err, 'e');
  } else {
    int *fds[] = {&s->out, &s->err};
    for (int i = 0; i < 2; i++) if (*fds[i] >= 0) { close(*fds[i]); *fds[i] = -1; }
  }
  int st = s->status;
  uint32_t code = s->forced ? (uint32_t)s->forced
                : WIFEXITED(st) ? (uint32_t)WEXITSTATUS(st)
                : WIFSIGNALED(st) ? (uint32_t)EXIT_SIGNAL_BASE + (uint32_t)WTERMSIG(st)
                : (uint32_t)EXIT_AGENTBOX_FAILED;
  unsigned char why = s->forced == EXIT_TIMED_OUT ? WHY_TIMEOUT : s->forced ? WHY_KILLED
                    : ((WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) || (WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGKILL)) && oom_kill_count() > s->oom_kills ? WHY_OOM : WHY_EXITED;
  queue_exit(s->id, code, why);
  s->reported = 1;
  stream_free(s);
}

static void discard_ready(int k) {
  char buf[4096];
  ssize_t r = read(discard[k], buf, sizeof buf);
  if (r > 0 || (r < 0 && (errno == EINTR || errno == EAGAIN))) return;
  close(discard[k]);
  discard[k] = -1;
}

enum { K_SIGNAL, K_PORT, K_OUT, K_ERR, K_IN, K_DISCARD };

__attribute__((noreturn)) static void agent_main(void) {
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGIO);
  sigprocmask(SIG_BLOCK, &set, NULL);
  int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) _exit(EXIT_FAILURE);
  rbuf = malloc(HDR + MAX_REQUEST);
  if (!rbuf) _exit(EXIT_FAILURE);
  for (int tries = 0; (port = open_port()) < 0; tries++) {
    if (tries == 500) log_line("no virtio-serial port named " PORT_NAME " yet%s (%s)", "");
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  check_host();
  /* A hello no host asked for (nonce 0) says "an agent has just started": after a restart by PID 1
   * the host learns that its streams are gone and greets again; a host still waiting for its first
   * answer skips it (the nonce is not its own). */
  unsigned char announce[MAGIC_LEN + NONCE_LEN] = {0};
  memcpy(announce, MAGIC, MAGIC_LEN);
  queue('H', 0, announce, sizeof announce);
  enum { MAXP = 2 + 3 * MAX_STREAMS + MAX_DISCARD };
  struct pollfd p[MAXP];
  int owner[MAXP], kind[MAXP];
  for (;;) {
    long long now = monotonic_ms(), next = 0;
    int np = 0;
    p[np] = (struct pollfd){sfd, POLLIN, 0}; kind[np++] = K_SIGNAL;
    int backlog = olen - ooff;
    if (connected) {
      short ev = (short)((rlen < HDR + MAX_REQUEST ? POLLIN : 0) | (backlog ? POLLOUT : 0));
      p[np] = (struct pollfd){port, ev, 0}; kind[np++] = K_PORT;
    }
    for (int i = 0; i < MAX_STREAMS; i++) {
      struct stream *s = &streams[i];
      if (!s->used) continue;
      if (s->deadline_ms && !s->forced && !s->exited) {
        if (now >= s->deadline_ms) stream_kill(s, EXIT_TIMED_OUT);
        else if (!next || s->deadline_ms < next) next = s->deadline_ms;
      }
      int can_read = s->out_credit > 0 && (size_t)backlog < OUT_BACKLOG_MAX && !s->exited;
      if (can_read && s->out >= 0) { p[np] = (struct pollfd){s->out, POLLIN, 0}; owner[np] = i; kind[np++] = K_OUT; }
      if (can_read && s->err >= 0) { p[np] = (struct pollfd){s->err, POLLIN, 0}; owner[np] = i; kind[np++] = K_ERR; }
      if (s->in >= 0 && s->in_off < s->in_len) { p[np] = (struct pollfd){s->in, POLLOUT, 0}; owner[np] = i; kind[np++] = K_IN; }
    }
    for (int k = 0; k < ndiscard; k++) { p[np] = (struct pollfd){discard[k], POLLIN, 0}; owner[np] = k; kind[np++] = K_DISCARD; }
    if (frozen_fd >= 0) {
      if (now >= thaw_at_ms) disk_thaw();
      else if (!next || thaw_at_ms < next) next = thaw_at_ms;
    }
    int wait_ms = connected ? -1 : 1000; /* a missed SIGIO costs at most a second */
    if (next) {
      long long left = next - now;
      if (wait_ms < 0 || left < wait_ms) wait_ms = (int)(left < 0 ? 0 : left);
    }
    int ready = poll(p, (nfds_t)np, wait_ms);
    if (ready < 0 && errno != EINTR) _exit(EXIT_FAILURE);
    if (ready == 0 && !connected) check_host();
    for (int k = 0; ready > 0 && k < np; k++) {
      if (!p[k].revents) continue;
      if (kind[k] == K_SIGNAL) {
        struct signalfd_siginfo si;
        int io = 0;
        while (read(sfd, &si, sizeof si) > 0) if (si.ssi_signo == SIGIO) io = 1;
        reap(NULL);
        if (io) check_host();
      } else if (kind[k] == K_PORT) {
        if (!connected) continue;
        if (p[k].revents & POLLOUT) flush_port();
        if (p[k].revents & POLLIN) read_port();
        else if (p[k].revents & (POLLHUP | POLLERR)) host_gone();
      } else if (kind[k] == K_DISCARD) {
        discard_ready(owner[k]);
      } else {
        struct stream *s = &streams[owner[k]];
        if (!s->used) continue;
        if (kind[k] == K_OUT && s->out >= 0) read_output(s, &s->out, 'O');
        else if (kind[k] == K_ERR && s->err >= 0) read_output(s, &s->err, 'e');
        else if (kind[k] == K_IN && s->in >= 0) feed_stdin(s);
      }
    }
    int kept = 0;
    for (int k = 0; k < ndiscard; k++) if (discard[k] >= 0) discard[kept++] = discard[k];
    ndiscard = kept;
    reap(NULL);
    for (int i = 0; i < MAX_STREAMS; i++) if (streams[i].used) settle(&streams[i]);
    flush_port();
  }
}

/* ---------- PID 1 ---------- */

static void mount_or_log(const char *src, const char *target, const char *type, unsigned long flags, const char *data) {
  mkdir(target, 0755);
  if (mount(src, target, type, flags, data) != 0) log_line("mount %s: %s", target);
}

/* The /dev path of the virtio disk whose serial (QEMU's -device virtio-blk-device,serial=) is SERIAL, into OUT; 0 if none. */
static int disk_by_serial(const char *serial, char *out, size_t size) {
  DIR *d = opendir("/sys/block");
  if (!d) return 0;
  struct dirent *e;
  int found = 0;
  while (!found && (e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, "vd", 2) != 0) continue;
    char path[300], buf[64];
    if (strlen(e->d_name) > 32) continue;
    snprintf(path, sizeof path, "/sys/block/%s/serial", e->d_name);
    ssize_t n = proc_read(path, buf, sizeof buf);
    if (n <= 0) continue;
    buf[strcspn(buf, "\n")] = '\0';
    if (strcmp(buf, serial) == 0) {
      snprintf(out, size, "/dev/%s", e->d_name);
      found = 1;
    }
  }
  closedir(d);
  return found;
}

/* DIR as the sandbox's writable directory TARGET: /workspace the sandbox user's, /tmp sticky and open to all. */
static void bind_writable(const char *dir, const char *target, int is_tmp) {
  mkdir(dir, is_tmp ? 01777 : 0755);
  if (is_tmp ? chmod(dir, 01777) != 0 : chown(dir, SANDBOX_UID, SANDBOX_GID) != 0) log_line("own %s: %s", dir);
  if (mount(dir, target, NULL, MS_BIND, NULL) != 0) log_line("bind %s: %s", target);
}

/*
 * A disk that comes from a sandbox of another runtime (a snapshot of a local one, whose files are a
 * random host uid's) is handed to the sandbox user, as claimDisk() does on the host: what that
 * previous user owned in workspace/, tmp/ and a writable root's upper layer becomes uid 1000's;
 * root's and other owners' files stay theirs. A disk of this runtime's is 1000's already: no walk.
 */
static uid_t claim_from;
static int claim_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
  (void)type;
  (void)ftw;
  if (st->st_uid == claim_from && lchown(path, SANDBOX_UID, SANDBOX_GID) != 0) log_line("hand over %s: %s", path);
  return 0;
}
static void claim_disk(void) {
  struct stat st;
  if (lstat("/disk/workspace", &st) != 0 || st.st_uid == SANDBOX_UID || st.st_uid == 0) return;
  claim_from = st.st_uid;
  const char *trees[] = { "/disk/workspace", "/disk/tmp", "/disk/rootfs/upper" };
  for (size_t i = 0; i < sizeof trees / sizeof trees[0]; i++) {
    if (lstat(trees[i], &st) == 0 && S_ISDIR(st.st_mode)) nftw(trees[i], claim_entry, 32, FTW_PHYS | FTW_MOUNT);
  }
}

/*
 * Named volumes (agentbox.volumes=TAG:rw|ro:HEX(target),... on the kernel's command line; the host's
 * src/runtime/microvm/qemu-args.ts writes it): each a virtiofs export of the host's, mounted at its
 * target, nosuid and nodev, read-only when asked (the host's server is read-only then too).
 */
#define MAX_VOLUMES 16
struct volume {
  char tag[16];
  int read_only;
  char target[1024];
};
static struct volume volumes[MAX_VOLUMES];
static int nvolumes;

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static void parse_volumes(const char *cmdline) {
  const char *p = strstr(cmdline, "agentbox.volumes=");
  if (!p) return;
  p += strlen("agentbox.volumes=");
  while (*p && *p != ' ' && *p != '\n') {
    if (nvolumes == MAX_VOLUMES) die_msg("too many volumes");
    struct volume *v = &volumes[nvolumes];
    size_t n = strcspn(p, ":");
    if (n == 0 || n >= sizeof v->tag || p[n] != ':') die_msg("bad agentbox.volumes");
    memcpy(v->tag, p, n);
    v->tag[n] = '\0';
    p += n + 1;
    if (strncmp(p, "ro:", 3) == 0) v->read_only = 1;
    else if (strncmp(p, "rw:", 3) != 0) die_msg("bad agentbox.volumes");
    p += 3;
    size_t len = 0;
    while (*p && *p != ',' && *p != ' ' && *p != '\n') {
      int hi = hex_value(p[0]), lo = p[1] ? hex_value(p[1]) : -1;
      if (hi < 0 || lo < 0 || len + 1 >= sizeof v->target) die_msg("bad agentbox.volumes");
      v->target[len++] = (char)(hi * 16 + lo);
      p += 2;
    }
    v->target[len] = '\0';
    nvolumes++;
    if (*p == ',') p++;
  }
}

static void mount_volumes(void) {
  for (int i = 0; i < nvolumes; i++) {
    char target[2048];
    make_mount_point("/newroot", volumes[i].target, 1);
    snprintf(target, sizeof target, "/newroot%s", volumes[i].target);
    unsigned long flags = MS_NOSUID | MS_NODEV | (volumes[i].read_only ? MS_RDONLY : 0);
    if (mount(volumes[i].tag, target, "virtiofs", flags, NULL) != 0) die(target);
  }
}

/*
 * The sandbox's filesystem, when the VM has disks (found by their virtio serial, not their order):
 * agentbox-root is the image's root, an ext4 shared read-only by every VM of the image; agentbox-disk,
 * the sandbox's own disk (ext4 of diskMb, its quota), whose workspace/ and tmp/ become /workspace and /tmp. Without a second disk they
 * are tmpfs. Commands then run chrooted there. Without disks they run in the initramfs (busybox).
 */
static void mount_sandbox_root(void) {
  char root_dev[300], disk_dev[300], cmdline[4096];
  if (proc_read("/proc/cmdline", cmdline, sizeof cmdline) <= 0) cmdline[0] = '\0';
  writable_root = strstr(cmdline, "agentbox.writable_root=1") != NULL;
  parse_volumes(cmdline);
  if (!disk_by_serial("agentbox-root", root_dev, sizeof root_dev)) {
    mkdir("/workspace", 0755);
    if (chown("/workspace", SANDBOX_UID, SANDBOX_GID) != 0) log_line("chown %s: %s", "/workspace");
    return;
  }
  mkdir("/newroot", 0755);
  int have_disk = disk_by_serial("agentbox-disk", disk_dev, sizeof disk_dev);
  if (have_disk) {
    mkdir("/disk", 0755);
    if (mount(disk_dev, "/disk", "ext4", MS_NOSUID | MS_NODEV, NULL) != 0) log_line("mount the sandbox's disk %s: %s", disk_dev);
    else claim_disk();
  }
  if (writable_root) {
    /* rootfs: writable (writable-root.h): the image, idmapped so the sandbox user owns it, under an
     * overlay whose upper layer is the disk's rootfs/ (as on the host runtimes: the quota, the
     * snapshots and the forks carry it). A VM asked for one and unable to make it does not start. */
    if (!have_disk) die_msg("a writable root needs the sandbox's disk");
    mkdir("/image", 0755);
    if (mount(root_dev, "/image", "ext4", MS_RDONLY | MS_NOSUID | MS_NODEV, "noload") != 0) die("mount the image's root");
    if (mkdir("/disk/rootfs", 0700) != 0 && errno != EEXIST) die("/disk/rootfs");
    const char *layers[1] = { "/image" };
    mount_writable_root(layers, 1, NULL, "/disk/rootfs", "/newroot", SANDBOX_UID, SANDBOX_GID, "/image-idmapped");
  } else if (nvolumes > 0) {
    /* A read-only root with volumes: the image under a read-only overlay whose second layer holds
     * the mount points the image lacks (as the local runtime does on the host). */
    mkdir("/image", 0755);
    if (mount(root_dev, "/image", "ext4", MS_RDONLY | MS_NOSUID | MS_NODEV, "noload") != 0) die("mount the image's root");
    mount_or_log("tmpfs", "/mount-points", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    for (int i = 0; i < nvolumes; i++) make_mount_point("/mount-points", volumes[i].target, 0);
    if (mount("agentbox-image", "/newroot", "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, "lowerdir=/image:/mount-points") != 0) die("overlay the image's root");
  } else if (mount(root_dev, "/newroot", "ext4", MS_RDONLY | MS_NOSUID | MS_NODEV, "noload") != 0) {
    log_line("mount the image's root %s: %s", root_dev);
    return;
  }
  if (have_disk) {
    bind_writable("/disk/workspace", "/newroot/workspace", 0);
    bind_writable("/disk/tmp", "/newroot/tmp", 1);
  } else {
    mount_or_log("tmpfs", "/newroot/workspace", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,uid=1000,gid=1000");
    mount_or_log("tmpfs", "/newroot/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  }
  mount_volumes();
  mount_or_log("proc", "/newroot/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount_or_log("sysfs", "/newroot/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount_or_log("devtmpfs", "/newroot/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  mount_or_log("devpts", "/newroot/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,mode=0620,ptmxmode=0666");
  mount_or_log("tmpfs", "/newroot/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  mount_or_log("tmpfs", "/newroot/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
  sandbox_root = "/newroot";
}

/*
 * The sandbox's cgroup: memory.max = memoryMb (no swap), pids.max = pids, for every command and what
 * it starts. The VM has more RAM than memoryMb (the kernel's and the agent's share): what the sandbox
 * may use is this cgroup's limit, and its OOM kills are the sandbox's (exit 137).
 */
static void setup_limits(void) {
  char buf[4096], num[32];
  if (proc_read("/proc/cmdline", buf, sizeof buf) <= 0) return;
  const char *p = strstr(buf, "agentbox.memory_mb=");
  if (p) memory_mb = atol(p + strlen("agentbox.memory_mb="));
  p = strstr(buf, "agentbox.pids=");
  if (p) pids_limit = atol(p + strlen("agentbox.pids="));
  if (memory_mb <= 0 && pids_limit <= 0) return;
  /* The guest's RAM is little more than memoryMb: under the default heuristic a large allocation
   * fails outright (MemoryError) where on a host it would be made and the cgroup's OOM killer would
   * end the command when it touched too much. Always overcommit, so the limit acts as it does there. */
  if (write_text("/proc/sys/vm/overcommit_memory", "1") != 0) log_line("%sovercommit_memory: %s", "");
  mount_or_log("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  if (write_text("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids") != 0) log_line("cgroup controllers%s: %s", "");
  if (mkdir(SANDBOX_CGROUP, 0755) != 0 && errno != EEXIST) log_line("mkdir %s: %s", SANDBOX_CGROUP);
  if (memory_mb > 0) {
    snprintf(num, sizeof num, "%lld", (long long)memory_mb * 1024 * 1024);
    if (write_text(SANDBOX_CGROUP "/memory.max", num) != 0) log_line("%smemory.max: %s", "");
    if (write_text(SANDBOX_CGROUP "/memory.swap.max", "0") != 0 && errno != ENOENT) log_line("%smemory.swap.max: %s", "");
  }
  if (pids_limit > 0) {
    snprintf(num, sizeof num, "%ld", pids_limit);
    if (write_text(SANDBOX_CGROUP "/pids.max", num) != 0) log_line("%spids.max: %s", "");
  }
}

static void load_modules(void) {
  FILE *f = fopen("/etc/agentbox/modules", "re");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = '\0';
    if (!line[0]) continue;
    int fd = open(line, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)) log_line("module %s: %s", line);
    if (fd >= 0) close(fd);
  }
  fclose(f);
}

static void loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP;
    ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  close(s);
}

static pid_t start_agent(void *ctx) {
  (void)ctx;
  pid_t pid = fork();
  if (pid != 0) return pid;
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  agent_main();
}

static int init_main(void) {
  /* Whatever a command does to the guest's memory, the OOM killer picks it, never PID 1 or the
   * agent (the agent inherits this and hands its children 0). */
  set_oom_score_adj("-1000");
  mount_or_log("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount_or_log("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount_or_log("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  mount_or_log("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666");
  mount_or_log("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  mount_or_log("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  mount_or_log("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
  if (sethostname("agentbox", 8) != 0) log_line("hostname%s: %s", "");
  load_modules();
  setup_limits();
  mount_sandbox_root();
  loopback_up();
  struct pid1_child agent = { start_agent, NULL, 0, 0, 0, -1 };
  run_as_pid1(-1, &agent, 1, NULL);
  return EXIT_AGENTBOX_FAILED;
}

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  (void)parse_num; /* fail.h's, unused here */
  if (getpid() != 1) die_msg("must run as /init (PID 1) of a microVM guest");
  return init_main();
}
