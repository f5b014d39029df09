/*
 * agentbox-helper: the small privileged piece of the `local` runtime.
 *
 * Run on the host by the (root) daemon, never looked up inside an image.
 *
 *   init READY_FD [--egress-relay PORT SOCKET]
 *                               PID 1 inside a sandbox: reports ready once bwrap has finished
 *                               setting up (closing the start-up race), then reaps orphans.
 *   spawn [opts] -- BWRAP ARGS  stages the image root and this binary in a private mount namespace,
 *                               then stays as the sandbox's keeper: its child joins the sandbox
 *                               cgroups, drops to the sandbox's own host uid and execs bwrap; the
 *                               keeper passes bwrap's child pid and PID 1's ready byte on to the
 *                               daemon, lets go of the daemon's pipes and reaps bwrap, so the sandbox
 *                               outlives the daemon.
 *   exec  [opts] -- CMD ARGS    joins an exec cgroup, enters every namespace of a running sandbox,
 *                               chroots into it, drops all privileges and runs CMD.
 *   file  [opts] -- OP PATH     the same entry, then a file operation (read|write|list|remove|mkdir)
 *                               done from inside, so symlinks resolve inside the sandbox.
 *   volfile --root DIR --uid U --gid G -- OP PATH
 *                               a file operation on a volume no sandbox has to run for: chrooted
 *                               into the volume's mount, unprivileged, so its symlinks resolve inside it.
 *   ps    [opts] -- -           the same entry, then lists the sandbox's processes (proc-list.h).
 *   signal [opts] -- NAME PID   the same entry, then sends signal NAME to the sandbox's process PID.
 *   overlay-root [opts] -- LAYER...  a docker sandbox's writable root at --root: the image's layers
 *                               (top first) idmapped to --uid/--gid, the upper layer under --root-upper.
 *   drain FD...                 inside a sandbox, as /.agentbox/init: reads and discards the FDs until
 *                               they have no writer left (a background job's output, exec-relay.h).
 *
 * Options for spawn/exec/file: --pid P, --start-time T (P's, from /proc/P/stat), --uid U, --gid G, --cgroup DIR (repeatable),
 * --rootfs DIR, --stage DIR, --init FILE (spawn: PID 1's binary, default this one), --disk DIR (spawn: the sandbox's disk,
 * staged at STAGE/disk), --cwd DIR, --info-fd N and --ready-fd N (spawn: the daemon's pipes for bwrap's child pid and
 * PID 1's ready byte; bwrap gets pipes of the keeper's own at the same numbers), --volume SRC / --volume-ro SRC
 * (spawn, repeatable: a mounted volume, staged idmapped at STAGE/vol/N in the order given), --mount-point PATH
 * (spawn, repeatable: a directory the image root gets for a volume to be mounted on), --root DIR (volfile),
 * --root-upper DIR (spawn: a writable root, whose upper layer and overlay work directory are under DIR, on the disk).
 *
 * Every mode first closes every descriptor above stdio it was not told to keep (fd-hygiene.h).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FAIL_PROGRAM "agentbox-helper"
#include "exit-codes.h"
#include "fail.h"
#include "fd-hygiene.h"
#include "file-ops.h"
#include "egress-relay.h"
#include "exec-relay.h"
#include "pid1.h"
#include "mount-point.h"
#include "writable-root.h"
#include "proc-list.h"
#include "seccomp-deny.h"
#include "drop-privileges.h"

#define MAX_CGROUPS 16
#define MAX_VOLUMES 16
/* Who owns a volume's files on its filesystem: the sandbox user's uid, as docker sandboxes write them. */
#define VOLUME_OWNER 1000
#define EXIT_HELPER EXIT_AGENTBOX_FAILED

struct opts {
  pid_t pid;
  unsigned long long start_time; /* of --pid, in clock ticks since boot (0: not checked) */
  uid_t uid;
  gid_t gid;
  int have_ids;
  const char *cgroups[MAX_CGROUPS];
  int ncgroups;
  const char *rootfs;
  const char *stage;
  const char *egress;
  const char *disk;
  const char *init;
  const char *cwd;
  const char *volumes[MAX_VOLUMES];
  int volume_ro[MAX_VOLUMES];
  int nvolumes;
  const char *mount_points[MAX_VOLUMES];
  int nmount_points;
  const char *root;
  const char *root_upper;
  int info_fd, ready_fd; /* spawn: -1 when not given */
  char **rest;
};

static void parse_opts(int argc, char **argv, struct opts *o) {
  memset(o, 0, sizeof *o);
  o->info_fd = o->ready_fd = -1;
  int i = 0;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) { i++; break; }
    if (i + 1 >= argc) die_msg("option without value");
    const char *v = argv[++i];
    if (strcmp(a, "--pid") == 0) o->pid = (pid_t)parse_num(v, "pid");
    else if (strcmp(a, "--start-time") == 0) o->start_time = (unsigned long long)parse_num(v, "start time");
    else if (strcmp(a, "--uid") == 0) { o->uid = (uid_t)parse_num(v, "uid"); o->have_ids = 1; }
    else if (strcmp(a, "--gid") == 0) o->gid = (gid_t)parse_num(v, "gid");
    else if (strcmp(a, "--cgroup") == 0) {
      if (o->ncgroups >= MAX_CGROUPS) die_msg("too many cgroups");
      o->cgroups[o->ncgroups++] = v;
    } else if (strcmp(a, "--rootfs") == 0) o->rootfs = v;
    else if (strcmp(a, "--stage") == 0) o->stage = v;
    else if (strcmp(a, "--egress") == 0) o->egress = v;
    else if (strcmp(a, "--disk") == 0) o->disk = v;
    else if (strcmp(a, "--init") == 0) o->init = v;
    else if (strcmp(a, "--cwd") == 0) o->cwd = v;
    else if (strcmp(a, "--volume") == 0 || strcmp(a, "--volume-ro") == 0) {
      if (o->nvolumes >= MAX_VOLUMES) die_msg("too many volumes");
      o->volume_ro[o->nvolumes] = strcmp(a, "--volume-ro") == 0;
      o->volumes[o->nvolumes++] = v;
    } else if (strcmp(a, "--mount-point") == 0) {
      if (o->nmount_points >= MAX_VOLUMES) die_msg("too many mount points");
      o->mount_points[o->nmount_points++] = v;
    } else if (strcmp(a, "--root") == 0) o->root = v;
    else if (strcmp(a, "--root-upper") == 0) o->root_upper = v;
    else if (strcmp(a, "--info-fd") == 0) o->info_fd = (int)parse_num(v, "fd");
    else if (strcmp(a, "--ready-fd") == 0) o->ready_fd = (int)parse_num(v, "fd");
    else { fprintf(stderr, "agentbox-helper: unknown option %s\n", a); exit(EXIT_HELPER); }
  }
  if (i >= argc) die_msg("missing command after --");
  o->rest = &argv[i];
}

/* Processes inherit the cgroup of whoever spawned them: join first, so limits and the freezer apply. */
static void join_cgroups(const struct opts *o) {
  char path[4096], buf[32];
  int n = snprintf(buf, sizeof buf, "%d\n", getpid());
  for (int i = 0; i < o->ncgroups; i++) {
    snprintf(path, sizeof path, "%s/cgroup.procs", o->cgroups[i]);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) die(path);
    if (write(fd, buf, (size_t)n) != n) die(path);
    close(fd);
  }
}

/* ---------- dropping privileges after setns ---------- */

static void drop_privileges(const struct opts *o) {
  struct drop_to t = { o->have_ids, o->uid, o->gid, 1 };
  drop_privileges_to(&t);
}

/* ---------- entering a running sandbox ---------- */

/* Order matters: bwrap --disable-userns nests a second user namespace, so the other namespaces
 * belong to its parent. Join them while still host root, chroot, and take the user namespace last. */
/* Field 22 of PROCFD/stat (start time in clock ticks), or 0. comm may hold spaces and ')'. */
static unsigned long long start_time_of(int procfd) {
  char buf[1024];
  int fd = openat(procfd, "stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  for (int field = 2; p && field < 22; field++) p = strchr(p + 1, ' ');
  return p ? strtoull(p + 1, NULL, 10) : 0;
}

static void enter_sandbox(const struct opts *o) {
  static const char *const names[] = { "ipc", "uts", "net", "pid", "cgroup", "mnt", "user" };
  enum { N = sizeof names / sizeof names[0] };
  int fds[N];
  char path[128];
  if (o->pid <= 0) die_msg("--pid is required");
  /* Everything below is opened relative to this one directory: it stays bound to the process it was
   * opened for, so if that process dies and its pid is reused meanwhile, the opens fail instead of
   * landing in another process's namespaces (the daemon checked the pid's start time a moment ago,
   * which alone leaves a window). */
  snprintf(path, sizeof path, "/proc/%d", o->pid);
  int procfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (procfd < 0) die(path);
  if (o->start_time && start_time_of(procfd) != o->start_time) die_msg("the sandbox's init is gone (its pid now names another process)");
  int rootfd = openat(procfd, "root", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) die("root");
  for (int i = 0; i < N; i++) {
    snprintf(path, sizeof path, "ns/%s", names[i]);
    fds[i] = openat(procfd, path, O_RDONLY | O_CLOEXEC);
    /* A kernel without cgroup namespaces is not a reason to refuse. */
    if (fds[i] < 0 && !(errno == ENOENT && strcmp(names[i], "cgroup") == 0)) die(path);
  }
  close(procfd);
  /* A plain container (docker, runc) has no user namespace of its own: joining ours is EINVAL. */
  struct stat own, target;
  int same_user = stat("/proc/self/ns/user", &own) == 0 && fds[N - 1] >= 0 && fstat(fds[N - 1], &target) == 0 &&
                  own.st_ino == target.st_ino && own.st_dev == target.st_dev;
  for (int i = 0; i < N; i++) {
    if (fds[i] < 0) continue;
    if (strcmp(names[i], "user") == 0) {
      if (fchdir(rootfd) != 0) die("fchdir root");
      if (chroot(".") != 0) die("chroot");
      if (same_user) {
        close(fds[i]);
        continue;
      }
    }
    if (setns(fds[i], 0) != 0) {
      snprintf(path, sizeof path, "setns %s", names[i]);
      die(path);
    }
    close(fds[i]);
  }
  close(rootfd);
  const char *cwd = o->cwd ? o->cwd : "/";
  if (chdir(cwd) != 0) {
    fprintf(stderr, "agentbox-helper: cannot enter %s: %s\n", cwd, strerror(errno));
    exit(EXIT_HELPER);
  }
}

static volatile pid_t relay_child = 0;
static void relay_signal(int sig) {
  if (relay_child > 0) kill(relay_child, sig);
}

/* setns(pid) only applies to children: fork, relay signals, pass the exit status through. */
static int fork_and_wait(void) {
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    return 0;
  }
  relay_child = child;
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = relay_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  int status;
  while (waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) die("waitpid");
  }
  if (WIFEXITED(status)) exit(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) exit(EXIT_SIGNAL_BASE + WTERMSIG(status));
  exit(EXIT_HELPER);
}

/* ---------- modes ---------- */

static int mode_init(int argc, char **argv) {
  if (getpid() != 1) die_msg("init must run as PID 1 of the sandbox");
  int ready_fd = argc >= 1 && strcmp(argv[0], "-") != 0 ? (int)parse_num(argv[0], "ready fd") : -1;
  close_extra_fds(&ready_fd, ready_fd >= 0 ? 1 : 0);
  struct egress_relay relay = {0, NULL, -1};
  if (argc >= 4 && strcmp(argv[1], "--egress-relay") == 0) {
    relay.port = (int)parse_num(argv[2], "relay port");
    relay.path = argv[3];
    if (relay_listen(&relay) != 0) die("egress relay: listen");
  }
  struct pid1_child kept = { relay_fork, &relay, 0, 0, 0, relay.listen_fd };
  run_as_pid1(ready_fd, &kept, relay.port > 0 ? 1 : 0, NULL);
  die("ready");
  return EXIT_HELPER;
}

static void bind_into(const char *src, const char *dst, int readonly) {
  if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) != 0) die(dst);
  if (readonly && mount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
    die(dst);
}


/*
 * A volume (a filesystem mounted on the host, shared by every sandbox that uses it) at DST, idmapped
 * so that its owner VOLUME_OWNER is this sandbox's host uid: each local sandbox runs as a uid of its
 * own, and still every one reads and writes the same files as their owner, stored as VOLUME_OWNER.
 * Files of any other owner show as the overflow uid and cannot be created.
 */
static void stage_volume(const char *src, const char *dst, int readonly, int userns) {
  int tree = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (tree < 0) die(src);
  struct mount_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (readonly ? MOUNT_ATTR_RDONLY : 0);
  attr.userns_fd = (uint64_t)userns;
  if (mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) die("idmap a volume (needs Linux 5.12+ and ext4)");
  if (mkdir(dst, 0755) != 0) die(dst);
  if (move_mount(tree, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) != 0) die(dst);
  close(tree);
}

/*
 * The image root, read-only. A bind mount would show the image store's host path in the sandbox's
 * /proc/self/mountinfo (the mount's root within its filesystem); an overlay whose lower directories
 * are named by descriptor shows only "lowerdir=/proc/self/fd/N:/proc/self/fd/M". Overlay wants two
 * lower directories when it has no upper one: the second is an empty directory on the stage.
 * Without overlayfs, a bind mount as before.
 */
static void stage_rootfs(const char *rootfs, const char *stage, const char *root, const struct opts *o) {
  char empty[4096], opts[128];
  snprintf(empty, sizeof empty, "%s/empty", stage);
  int rootfs_fd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (rootfs_fd < 0) die(rootfs);
  if (mkdir(empty, 0755) != 0) die(empty);
  /* Volumes' mount points the image lacks: directories of the lower layer under the image's, so
   * bwrap finds them on the read-only root (where the image has the path, the image's wins). */
  for (int i = 0; i < o->nmount_points; i++) make_mount_point(empty, o->mount_points[i], 0);
  int empty_fd = open(empty, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (empty_fd < 0) die(empty);
  snprintf(opts, sizeof opts, "lowerdir=/proc/self/fd/%d:/proc/self/fd/%d,xino=off,uuid=off,index=off,redirect_dir=off", rootfs_fd, empty_fd);
  if (mount("agentbox-image", root, "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, opts) != 0) bind_into(rootfs, root, 1);
  close(rootfs_fd);
  close(empty_fd);
}

/* The image root for spawn --root-upper: the image is one layer; the mount points the image lacks come last. */
static void stage_writable_rootfs(const char *rootfs, const char *stage, const char *root, const struct opts *o) {
  char empty[4096];
  snprintf(empty, sizeof empty, "%s/empty", stage);
  if (mkdir(empty, 0755) != 0) die(empty);
  for (int i = 0; i < o->nmount_points; i++) make_mount_point(empty, o->mount_points[i], 0);
  if (mkdir(o->root_upper, 0700) != 0 && errno != EEXIST) die(o->root_upper);
  const char *layers[1] = { rootfs };
  mount_writable_root(layers, 1, empty, o->root_upper, root, o->uid, o->gid, NULL);
}

/*
 * overlay-root: a writable root for a docker sandbox, mounted at --target in the host's mount
 * namespace (docker binds its directories into the container): the image's layer directories
 * (after --, top first) idmapped to --uid/--gid, the upper layer under --root-upper.
 */
static int mode_overlay_root(int argc, char **argv) {
  struct opts o;
  parse_opts(argc, argv, &o);
  if (!o.have_ids || !o.root_upper || !o.root || !o.rest[0]) die_msg("overlay-root needs --uid, --gid, --root-upper, --root TARGET and the layers after --");
  close_extra_fds(NULL, 0);
  int n = 0;
  while (o.rest[n]) n++;
  if (mkdir(o.root_upper, 0700) != 0 && errno != EEXIST) die(o.root_upper);
  if (mkdir(o.root, 0755) != 0 && errno != EEXIST) die(o.root);
  mount_writable_root((const char *const *)o.rest, n, NULL, o.root_upper, o.root, o.uid, o.gid, NULL);
  return 0;
}

/* ---------- spawn: staging, then the keeper ---------- */

/* Puts FROM at descriptor TO, without close-on-exec, so bwrap inherits it there. */
static void fd_at(int from, int to) {
  if (from == to) {
    if (fcntl(to, F_SETFD, 0) != 0) die("fcntl");
  } else if (dup2(from, to) < 0) die("dup2");
}

/* Every byte, unless the reader has gone (EPIPE: SIGPIPE is ignored) or another error: -1. */
static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

static pid_t child_pid_in(const char *info) {
  const char *p = strstr(info, "\"child-pid\"");
  if (!p || !(p = strchr(p, ':'))) return 0;
  long pid = strtol(p + 1, NULL, 10);
  return pid > 1 ? (pid_t)pid : 0;
}

/*
 * The sandbox's keeper: the process the daemon started, which stays while the sandbox runs. It holds
 * the daemon's pipes only until the sandbox is ready; bwrap and PID 1 never hold a descriptor of the
 * daemon's, so a daemon that dies (kill -9) neither takes the sandbox along (no --die-with-parent)
 * nor leaves it writing into a pipe without a reader. It reaps bwrap (and, as a child subreaper, PID 1
 * should bwrap die first), so no zombie waits for the host's PID 1; it exits with bwrap's status once
 * no child is left. Its own parent is the daemon that started it, or after that daemon died, the
 * host's PID 1 (or the nearest subreaper), which reaps it.
 *
 * Before ready: bwrap's stderr is passed on to the daemon's (the error of a failed start), the info
 * JSON is collected, and when PID 1's ready byte and the info's end have come, both go to the daemon.
 * After: bwrap's stderr is read and dropped. A daemon that went away during the start never learns of
 * the sandbox: the keeper kills it instead of leaving it to run unknown.
 */
__attribute__((noreturn)) static void keep(pid_t bwrap, int sfd, int info_r, int ready_r, int err_r, int daemon_info, int daemon_ready) {
  char info[4096], buf[4096];
  size_t info_len = 0;
  int ready = 0, handed_over = 0, status = EXIT_HELPER << 8;
  for (;;) {
    struct pollfd p[4];
    int n = 0;
    p[n++] = (struct pollfd){ sfd, POLLIN, 0 };
    if (err_r >= 0) p[n++] = (struct pollfd){ err_r, POLLIN, 0 };
    if (info_r >= 0) p[n++] = (struct pollfd){ info_r, POLLIN, 0 };
    if (ready_r >= 0) p[n++] = (struct pollfd){ ready_r, POLLIN, 0 };
    if (poll(p, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      die("keeper: poll");
    }
    int gone = 0;
    for (int i = 0; i < n; i++) {
      if (!p[i].revents) continue;
      int fd = p[i].fd;
      if (fd == sfd) {
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) > 0) {}
        int st;
        pid_t dead;
        while ((dead = waitpid(-1, &st, WNOHANG)) > 0) if (dead == bwrap) status = st;
        gone = dead < 0 && errno == ECHILD;
        continue;
      }
      ssize_t r = fd == info_r ? read(fd, info + info_len, sizeof info - 1 - info_len) : read(fd, buf, sizeof buf);
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r <= 0 || (fd == info_r && info_len + (size_t)r >= sizeof info - 1)) {
        close(fd);
        if (fd == err_r) err_r = -1;
        if (fd == info_r) info_r = -1;
        if (fd == ready_r) ready_r = -1;
        continue;
      }
      if (fd == info_r) info_len += (size_t)r;
      else if (fd == ready_r) ready = ready || memchr(buf, 'R', (size_t)r) != NULL;
      else if (!handed_over) write_all(STDERR_FILENO, buf, (size_t)r);
    }
    if (!handed_over && ready && info_r < 0) {
      handed_over = 1;
      info[info_len] = '\0';
      if (write_all(daemon_info, info, info_len) != 0 || write_all(daemon_ready, "R", 1) != 0) {
        pid_t pid1 = child_pid_in(info);
        if (pid1) kill(pid1, SIGKILL);
        kill(bwrap, SIGKILL);
      }
      close(daemon_info);
      close(daemon_ready);
      if (ready_r >= 0) close(ready_r);
      ready_r = -1;
      int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
      if (devnull >= 0 && devnull != STDERR_FILENO) {
        dup2(devnull, STDERR_FILENO);
        close(devnull);
      }
    }
    if (gone) {
      /* What bwrap said last, if the daemon is still waiting for the start. */
      ssize_t r;
      while (!handed_over && err_r >= 0 && (r = read(err_r, buf, sizeof buf)) > 0) write_all(STDERR_FILENO, buf, (size_t)r);
      if (WIFEXITED(status)) exit(WEXITSTATUS(status));
      exit(WIFSIGNALED(status) ? EXIT_SIGNAL_BASE + WTERMSIG(status) : EXIT_HELPER);
    }
  }
}

static int mode_spawn(int argc, char **argv) {
  struct opts o;
  parse_opts(argc, argv, &o);
  if (!o.rootfs || !o.stage || !o.have_ids || o.info_fd <= 2 || o.ready_fd <= 2 || o.info_fd == o.ready_fd)
    die_msg("spawn needs --rootfs, --stage, --uid, --gid, --info-fd and --ready-fd");
  /* Only the daemon's two pipes stay, and only the keeper holds them: bwrap gets pipes of the keeper's. */
  int keep_fds[2] = { o.info_fd, o.ready_fd };
  close_extra_fds(keep_fds, 2);
  /* Out of the daemon's process group and session: a terminal's ^C or hang-up for the daemon is not the sandbox's. */
  setsid();
  /* A private mount namespace lets the unprivileged uid reach the image even under a 0700 home:
   * bwrap resolves its bind sources as that uid. */
  if (unshare(CLONE_NEWNS) != 0) die("unshare mount namespace");
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make / private");
  if (mount("agentbox-stage", o.stage, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") != 0) die(o.stage);
  char root[4096], bin[4096], init[4096];
  snprintf(root, sizeof root, "%s/root", o.stage);
  snprintf(bin, sizeof bin, "%s/bin", o.stage);
  snprintf(init, sizeof init, "%s/bin/init", o.stage);
  if (mkdir(root, 0755) != 0) die(root);
  if (mkdir(bin, 0755) != 0) die(bin);
  int fd = open(init, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
  if (fd < 0) die(init);
  close(fd);
  if (o.root_upper) stage_writable_rootfs(o.rootfs, o.stage, root, &o);
  else stage_rootfs(o.rootfs, o.stage, root, &o);
  /* PID 1's binary: the daemon's copy under a neutral path (--init), whose path the sandbox's
   * mountinfo shows; else this very binary, wherever it is installed. */
  char self[4096];
  ssize_t len = o.init ? 0 : readlink("/proc/self/exe", self, sizeof self - 1);
  if (!o.init && len <= 0) die("readlink /proc/self/exe");
  if (!o.init) self[len] = '\0';
  bind_into(o.init ? o.init : self, init, 1);
  if (o.disk) {
    /* The sandbox's disk (workspace/, tmp/), staged like the image: bwrap binds its parts read-write. */
    char disk[4096];
    snprintf(disk, sizeof disk, "%s/disk", o.stage);
    if (mkdir(disk, 0755) != 0) die(disk);
    bind_into(o.disk, disk, 0);
  }
  if (o.egress) {
    /* The egress proxy's socket directory, staged like the image: bwrap binds it at /run/agentbox. */
    char egress[4096];
    snprintf(egress, sizeof egress, "%s/egress", o.stage);
    if (mkdir(egress, 0755) != 0) die(egress);
    bind_into(o.egress, egress, 1);
  }
  if (o.nvolumes > 0) {
    /* Volumes at STAGE/vol/N, in the order given: bwrap binds each at its target. */
    char vol[4096];
    snprintf(vol, sizeof vol, "%s/vol", o.stage);
    if (mkdir(vol, 0755) != 0) die(vol);
    int userns = idmap_userns(VOLUME_OWNER, o.uid, o.gid);
    for (int i = 0; i < o.nvolumes; i++) {
      snprintf(vol, sizeof vol, "%s/vol/%d", o.stage, i);
      stage_volume(o.volumes[i], vol, o.volume_ro[i], userns);
    }
    close(userns);
  }
  int info[2], ready[2], err[2];
  if (pipe2(info, O_CLOEXEC) != 0 || pipe2(ready, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) die("pipe");
  /* SIGCHLD is blocked before the fork, so the keeper cannot miss bwrap's end. */
  sigset_t chld, old;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, &old);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");
  pid_t bwrap = fork();
  if (bwrap < 0) die("fork");
  if (bwrap == 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) die("/dev/null");
    fd_at(devnull, STDIN_FILENO);
    fd_at(devnull, STDOUT_FILENO);
    fd_at(info[1], o.info_fd);
    fd_at(ready[1], o.ready_fd);
    fd_at(err[1], STDERR_FILENO);
    /* Processes inherit their parent's cgroups: bwrap and PID 1 are the sandbox's from the start; the
     * keeper stays out of them, so killing the sandbox's cgroup leaves it to reap what it kills. */
    join_cgroups(&o);
    if (setgroups(0, NULL) != 0) die("setgroups");
    if (setresgid(o.gid, o.gid, o.gid) != 0) die("setgid");
    if (setresuid(o.uid, o.uid, o.uid) != 0) die("setuid");
    execvp(o.rest[0], o.rest);
    die(o.rest[0]);
  }
  close(info[1]);
  close(ready[1]);
  close(err[1]);
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    dup2(devnull, STDIN_FILENO);
    dup2(devnull, STDOUT_FILENO);
    close(devnull);
  }
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  /* Not dumpable: the keeper is root and holds the sandbox's mount namespace. */
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  keep(bwrap, sfd, info[0], ready[0], err[0], o.info_fd, o.ready_fd);
}

static void become_sandbox_user(void *ctx) { drop_privileges(ctx); }

/*
 * The command's leader gets pipes of this process for stdout and stderr (exec-relay.h): the exec ends
 * when the leader exits, with everything the leader wrote, and whatever it left running keeps
 * running, in the exec's cgroup (which the daemon then no longer reuses), its output drained.
 */
static int mode_exec(int argc, char **argv) {
  struct opts o;
  parse_opts(argc, argv, &o);
  close_extra_fds(NULL, 0);
  join_cgroups(&o);
  enter_sandbox(&o);
  sigset_t old;
  struct exec_relay relay;
  if (exec_relay_open(&relay, &old) != 0) die("relay");
  /* setns(pid) only applies to children: the leader is this process's child. */
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    exec_relay_child(&relay, &old);
    setsid();
    drop_privileges(&o);
    execvp(o.rest[0], o.rest);
    fprintf(stderr, "agentbox: %s: %s\n", o.rest[0], strerror(errno));
    _exit(errno == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXECUTE);
  }
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  exec_relay_started(&relay, child);
  for (;;) {
    int sig = 0;
    int ev = exec_relay_wait(&relay, 0, &sig);
    if (ev == RELAY_EXITED) break;
    if (ev == RELAY_SIGNAL) kill(child, sig); /* passed on, as before; the leader decides */
    if (ev == RELAY_ERROR) die("poll"); /* the leader dies with this process (PDEATHSIG) */
  }
  exec_relay_finish(&relay);
  exec_relay_hand_off(&relay, become_sandbox_user, &o);
  return exec_relay_exit_code(&relay, EXIT_HELPER);
}

/* ---------- file operations, done from inside the sandbox ---------- */

static int mode_file(int argc, char **argv) {
  struct opts o;
  parse_opts(argc, argv, &o);
  if (!o.rest[0] || !o.rest[1]) die_msg("file needs OP PATH");
  close_extra_fds(NULL, 0);
  join_cgroups(&o);
  enter_sandbox(&o);
  fork_and_wait();
  drop_privileges(&o);
  int rc = file_op(o.rest[0], o.rest[1]);
  if (rc < 0) {
    fprintf(stderr, "agentbox-helper: unknown file op %s\n", o.rest[0]);
    return EXIT_HELPER;
  }
  return rc;
}

/* ---------- file operations on a volume, with no sandbox ---------- */

/*
 * A volume's files are written by sandboxes, so a path in it may be a symlink to anything
 * (/etc/shadow, ../../.., /proc/self/root/...). The operation runs chrooted into the volume's mount
 * (absolute links and ".." resolve inside it, and there is no /proc), as the volume's owner with no
 * capabilities (no way out of the chroot, no reading what the owner cannot), not dumpable (no
 * ptrace by a host user of that uid) and with the sandboxes' seccomp filter.
 */
static int mode_volfile(int argc, char **argv) {
  struct opts o;
  parse_opts(argc, argv, &o);
  if (!o.root || !o.have_ids || !o.rest[0] || !o.rest[1]) die_msg("volfile needs --root, --uid, --gid and OP PATH");
  close_extra_fds(NULL, 0);
  int fd = open(o.root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) die(o.root);
  if (fchdir(fd) != 0 || chroot(".") != 0 || chdir("/") != 0) die("chroot into the volume");
  close(fd);
  umask(022);
  drop_privileges(&o);
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) die("not dumpable");
  int rc = file_op(o.rest[0], o.rest[1]);
  if (rc < 0) {
    fprintf(stderr, "agentbox-helper: unknown file op %s\n", o.rest[0]);
    return EXIT_HELPER;
  }
  return rc;
}

/* ---------- processes, seen from inside the sandbox ---------- */

static int mode_ps(int argc, char **argv) {
  struct opts o;
  parse_opts(argc, argv, &o);
  close_extra_fds(NULL, 0);
  join_cgroups(&o);
  enter_sandbox(&o);
  fork_and_wait();
  drop_privileges(&o);
  return ps_main();
}

static int mode_signal(int argc, char **argv) {
  struct opts o;
  parse_opts(argc, argv, &o);
  if (!o.rest[0] || !o.rest[1]) die_msg("signal needs NAME PID");
  close_extra_fds(NULL, 0);
  join_cgroups(&o);
  enter_sandbox(&o);
  fork_and_wait();
  drop_privileges(&o);
  return signal_main(2, o.rest);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: agentbox-helper init|spawn|exec|file|volfile|ps|signal|drain|overlay-root ...\n");
    return EXIT_HELPER;
  }
  const char *mode = argv[1];
  if (strcmp(mode, "init") == 0) return mode_init(argc - 2, argv + 2);
  if (strcmp(mode, "spawn") == 0) return mode_spawn(argc - 2, argv + 2);
  if (strcmp(mode, "exec") == 0) return mode_exec(argc - 2, argv + 2);
  if (strcmp(mode, "file") == 0) return mode_file(argc - 2, argv + 2);
  if (strcmp(mode, "volfile") == 0) return mode_volfile(argc - 2, argv + 2);
  if (strcmp(mode, "ps") == 0) return mode_ps(argc - 2, argv + 2);
  if (strcmp(mode, "signal") == 0) return mode_signal(argc - 2, argv + 2);
  if (strcmp(mode, "drain") == 0) return drain_main(argc - 2, argv + 2);
  if (strcmp(mode, "overlay-root") == 0) return mode_overlay_root(argc - 2, argv + 2);
  fprintf(stderr, "agentbox-helper: unknown mode %s\n", mode);
  return EXIT_HELPER;
}
