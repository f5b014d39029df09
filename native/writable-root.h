/*
 * A writable root over a read-only image (rootfs: writable): an overlay whose lower layers are the
 * image's, idmapped so that their root-owned files are the sandbox user's, and whose upper layer is
 * on the sandbox's disk. Shared by agentbox-helper (local and docker, on the host) and
 * agentbox-vm-agent (microvm, in the guest). The includer has fail.h (die, die_msg) and _GNU_SOURCE.
 */
#ifndef AGENTBOX_WRITABLE_ROOT_H
#define AGENTBOX_WRITABLE_ROOT_H
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * A user namespace whose only mapping is OWNER -> the sandbox's host uid (and gid): the idmapping
 * of the sandbox's view of a tree whose files OWNER owns (a volume's VOLUME_OWNER, an image's root).
 * Made by a child born in a new user namespace, whose maps we (root) write; the namespace lives on
 * through the returned descriptor.
 */
static int idmap_userns(unsigned long owner, uid_t uid, gid_t gid) {
  int sync[2];
  char path[64], map[64];
  if (pipe2(sync, O_CLOEXEC) != 0) die("pipe");
  pid_t child = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
  if (child < 0) die("clone user namespace");
  if (child == 0) {
    char c;
    close(sync[1]);
    while (read(sync[0], &c, 1) < 0 && errno == EINTR) {}
    _exit(0);
  }
  close(sync[0]);
  const char *files[2] = { "uid_map", "gid_map" };
  unsigned long ids[2] = { uid, gid };
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "/proc/%d/%s", child, files[i]);
    int n = snprintf(map, sizeof map, "%lu %lu 1\n", owner, ids[i]);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, map, (size_t)n) != n) die(path);
    close(fd);
  }
  snprintf(path, sizeof path, "/proc/%d/ns/user", child);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  if (ns < 0) die(path);
  close(sync[1]);
  while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {}
  return ns;
}

/* DIR/NAME as a directory of MODE, owned by UID:GID; an existing one (a snapshot's, a fork's) is kept. */
static void ensure_dir(char *out, size_t size, const char *dir, const char *name, mode_t mode, uid_t uid, gid_t gid) {
  int n = snprintf(out, size, "%s/%s", dir, name);
  if (n < 0 || (size_t)n >= size) die_msg("path too long");
  if (mkdir(out, mode) != 0 && errno != EEXIST) die(out);
  struct stat st;
  if (lstat(out, &st) != 0 || !S_ISDIR(st.st_mode)) die_msg("a writable root's layer is not a directory");
  if (chown(out, uid, gid) != 0 || chmod(out, mode) != 0) die(out);
}

/*
 * A writable root (rootfs: writable) at TARGET: an overlay over the image whose upper layer is
 * UPPER_DIR/upper, on the sandbox's disk, so what the sandbox changes counts against its disk quota
 * and goes with its snapshots and forks. The image's LAYERS (top first) are its lower layers through
 * idmapped mounts that show their root-owned files as UID:GID (the sandbox's user on the host): the
 * sandbox user owns the root it may change; files of other owners in the image show as the overflow
 * uid, read-only. The image itself never changes: overlay copies a file up before its first write.
 * EXTRA (may be NULL): a last lower directory, not idmapped (mount points the image lacks).
 * UPPER_DIR must exist (its upper/ and work/ are made here).
 * Every layer is named by descriptor, so the sandbox's mountinfo shows no host path. nosuid, nodev.
 * ATTACH_AT (may be NULL; one layer only): a directory where the idmapped layer is attached first.
 * Before Linux 6.15 overlayfs refuses a detached mount as a layer ("failed to clone lowerpath"):
 * the microVM guest's 6.1 kernel needs it, the host (whose mountinfo it would show up in) does not.
 */
static void mount_writable_root(const char *const *layers, int nlayers, const char *extra, const char *upper_dir, const char *target, uid_t uid, gid_t gid, const char *attach_at) {
  char upper[4096], work[4096], opts[4096];
  if (nlayers < 1 || nlayers > 64) die_msg("a writable root needs 1 to 64 image layers");
  ensure_dir(upper, sizeof upper, upper_dir, "upper", 0755, uid, gid);
  ensure_dir(work, sizeof work, upper_dir, "work", 0700, 0, 0);
  int userns = idmap_userns(0, uid, gid);
  int fds[66];
  int nfds = 0;
  for (int i = 0; i < nlayers; i++) {
    /* A detached idmapped copy of the layer's mount: it exists only while its descriptor is open, and the overlay keeps it. */
    int tree = open_tree(AT_FDCWD, layers[i], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (tree < 0) die(layers[i]);
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    attr.userns_fd = (uint64_t)userns;
    if (mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) die("idmap the image for a writable root (needs Linux 5.19+)");
    if (attach_at) {
      if (nlayers != 1) die_msg("a writable root attaches one layer only");
      if (mkdir(attach_at, 0755) != 0 && errno != EEXIST) die(attach_at);
      if (move_mount(tree, "", AT_FDCWD, attach_at, MOVE_MOUNT_F_EMPTY_PATH) != 0) die(attach_at);
      close(tree);
      tree = open(attach_at, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (tree < 0) die(attach_at);
    }
    fds[nfds++] = tree;
  }
  close(userns);
  if (extra) {
    fds[nfds] = open(extra, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fds[nfds++] < 0) die(extra);
  }
  int upper_fd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int work_fd = open(work, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (upper_fd < 0 || work_fd < 0) die("open a writable root's layer");
  size_t len = (size_t)snprintf(opts, sizeof opts, "lowerdir=");
  for (int i = 0; i < nfds; i++) len += (size_t)snprintf(opts + len, sizeof opts - len, "%s/proc/self/fd/%d", i ? ":" : "", fds[i]);
  snprintf(opts + len, sizeof opts - len, ",upperdir=/proc/self/fd/%d,workdir=/proc/self/fd/%d,xino=off,uuid=off,index=off,redirect_dir=off,metacopy=off", upper_fd, work_fd);
  if (mount("agentbox-root", target, "overlay", MS_NOSUID | MS_NODEV, opts) != 0) die("overlay a writable root (needs overlayfs with idmapped lower layers, Linux 5.19+)");
  for (int i = 0; i < nfds; i++) close(fds[i]);
  close(upper_fd);
  close(work_fd);
}

#endif
