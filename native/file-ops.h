/*
 * File operations done from inside a sandbox, shared by agentbox-helper (local runtime) and
 * agentbox-docker-init (docker runtime). Protocol read by src/runtime/files.ts:
 * on failure one stderr line `agentbox-file-error:ERRNO:message` and exit 1; `list` writes
 * NUL-terminated records `TYPE SIZE MODE MTIME NAME`.
 *
 * Bounded, so that nothing in a sandbox can hang a files request or keep a helper process alive:
 * only regular files are read or written (opened O_NONBLOCK|O_NOCTTY and checked with fstat, so a
 * FIFO never blocks in open, a device is never read); a read ends at the size fstat reported (a file
 * that grows for ever still ends), or at FILE_UNSIZED_MAX for a file that reports none (/proc,
 * /sys); a listing stops at FILE_LIST_MAX entries.
 */
#ifndef AGENTBOX_FILE_OPS_H
#define AGENTBOX_FILE_OPS_H
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "port-connect.h"
#include "pty-session.h"

#define FILE_UNSIZED_MAX (1L << 20)
#define FILE_LIST_MAX 10000

/* A refusal that is no errno: KIND is read by src/runtime/files.ts (ENOTREG, EFBIG, E2BIG). */
static void file_refuse(const char *kind, const char *op, const char *path, const char *why) {
  fprintf(stderr, "agentbox-file-error:%s:%s %s: %s\n", kind, op, path, why);
  exit(1);
}

static void file_fail(const char *op, const char *path) {
  /* open() O_NONBLOCK on a FIFO without a reader, a socket, a device without its driver: not a file. */
  if (errno == ENXIO || errno == ENODEV || errno == EAGAIN) file_refuse("ENOTREG", op, path, "not a regular file");
  /* One machine-readable line for the daemon: errno name, then a human message. */
  const char *name = errno == ENOENT ? "ENOENT" : errno == EISDIR ? "EISDIR" : errno == ENOTDIR ? "ENOTDIR"
                   : errno == EACCES || errno == EPERM ? "EACCES" : errno == EROFS ? "EROFS"
                   : errno == ENOSPC || errno == EDQUOT ? "ENOSPC" : errno == EEXIST ? "EEXIST"
                   : errno == ELOOP ? "ELOOP" : errno == ENOTEMPTY ? "ENOTEMPTY" : errno == ENAMETOOLONG ? "ENAMETOOLONG"
                   : errno == EBUSY || errno == ETXTBSY ? "EBUSY" : errno == EINVAL ? "EINVAL" : errno == EFBIG ? "ENOSPC" : "EIO";
  fprintf(stderr, "agentbox-file-error:%s:%s %s: %s\n", name, op, path, strerror(errno));
  exit(1);
}

/* Copies until EOF, or LIMIT bytes (-1: no limit). Past LIMIT: with STRICT, returns 1 if there was
 * more; without, stops there. 0 when done, -1 on an error. */
static int copy_fd(int in, int out, long long limit, int strict) {
  char buf[65536];
  long long done = 0;
  for (;;) {
    size_t want = sizeof buf;
    /* STRICT reads whole buffers (some /proc files want aligned reads) and looks at what came back. */
    if (limit >= 0 && !strict && (long long)want > limit - done) want = (size_t)(limit - done);
    if (want == 0) return 0;
    ssize_t n = read(in, buf, want);
    if (n == 0) return 0;
    if (n > 0 && limit >= 0 && done + n > limit) return 1;
    if (n > 0) done += n;
    if (n < 0) { if (errno == EINTR) continue; return -1; }
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(out, buf + off, (size_t)(n - off));
      if (w < 0) { if (errno == EINTR) continue; return -1; }
      off += w;
    }
  }
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st; (void)ftw;
  if ((flag == FTW_DP ? rmdir(path) : unlink(path)) != 0) file_fail("remove", path);
  return 0;
}

static void mkdirs(const char *path, int include_last) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path);
  size_t len = strlen(buf);
  for (size_t i = 1; i <= len; i++) {
    if (buf[i] == '/' || (include_last && buf[i] == '\0')) {
      char saved = buf[i];
      buf[i] = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) file_fail("mkdir", buf);
      buf[i] = saved;
    }
  }
}

/* Returns the exit status (0, or a pty command's), exits 1 with an error line on failure, or -1 for an unknown OP. */
static int file_op(const char *op, const char *path) {
  struct stat st;
  if (strcmp(op, "read") == 0) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) file_fail("read", path);
    if (fstat(fd, &st) != 0) file_fail("read", path);
    if (S_ISDIR(st.st_mode)) { errno = EISDIR; file_fail("read", path); }
    if (!S_ISREG(st.st_mode)) file_refuse("ENOTREG", "read", path, "not a regular file");
    /* A regular file: reads never block. At most what fstat saw, so a file that keeps growing ends. */
    int rc = st.st_size > 0 ? copy_fd(fd, 1, (long long)st.st_size, 0) : copy_fd(fd, 1, FILE_UNSIZED_MAX, 1);
    /* A pseudo-file with no size (/proc/self/mem, say) that read(2) refuses: what it is, not a failure. */
    if (rc < 0 && st.st_size == 0 && errno != EACCES && errno != EPERM) file_refuse("ENOTREG", "read", path, "a pseudo-file that cannot be read as a file");
    if (rc < 0) file_fail("read", path);
    if (rc > 0) file_refuse("EFBIG", "read", path, "reports no size and holds more than 1 MiB");
    return 0;
  }
  if (strcmp(op, "write") == 0) {
    mkdirs(path, 0);
    /* Not O_TRUNC: nothing is changed before fstat says it is a regular file. */
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0644);
    if (fd < 0) file_fail("write", path);
    if (fstat(fd, &st) != 0) file_fail("write", path);
    if (!S_ISREG(st.st_mode)) file_refuse("ENOTREG", "write", path, "not a regular file");
    if (ftruncate(fd, 0) != 0) file_fail("write", path);
    if (copy_fd(0, fd, -1, 0) != 0) file_fail("write", path);
    if (close(fd) != 0) file_fail("write", path);
    return 0;
  }
  if (strcmp(op, "mkdir") == 0) { mkdirs(path, 1); return 0; }
  /* Not a file: a port's connection (port-connect.h), which rides the same transport. PATH is the port. */
  if (strcmp(op, "connect") == 0) return port_connect(path);
  /* Not a file either: a command on a terminal (pty-session.h); its status is the command's. PATH is unused. */
  if (strcmp(op, "pty") == 0) return pty_session();
  if (strcmp(op, "remove") == 0) {
    if (lstat(path, &st) != 0) file_fail("remove", path);
    if (nftw(path, remove_entry, 32, FTW_DEPTH | FTW_PHYS) != 0) file_fail("remove", path);
    return 0;
  }
  if (strcmp(op, "list") == 0) {
    DIR *d = opendir(path);
    if (!d) file_fail("list", path);
    struct dirent *e;
    long count = 0;
    /* NUL-terminated records: TYPE SIZE MODE MTIME NAME, any byte but NUL allowed in NAME. */
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      if (++count > FILE_LIST_MAX) {
        fflush(stdout);
        file_refuse("E2BIG", "list", path, "more than 10000 entries");
      }
      if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      char type = S_ISREG(st.st_mode) ? 'f' : S_ISDIR(st.st_mode) ? 'd' : S_ISLNK(st.st_mode) ? 'l' : 'o';
      printf("%c %lld %o %lld %s%c", type, (long long)st.st_size, (unsigned)(st.st_mode & 07777),
             (long long)st.st_mtime, e->d_name, '\0');
    }
    closedir(d);
    fflush(stdout);
    return 0;
  }
  return -1;
}

#endif
