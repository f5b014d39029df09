/*
 * Nothing of the daemon's open files may reach a sandbox: a descriptor the daemon inherited without
 * close-on-exec (say a shell started it holding fd 300 on a root-owned file) would otherwise pass
 * through every native entry path into the sandbox's commands, which could read and write it through
 * /proc/self/fd. Every program here closes all descriptors above stdio first, keeping only the ones a
 * path passes on purpose (bwrap's --info-fd, PID 1's ready pipe).
 */
#ifndef AGENTBOX_FD_HYGIENE_H
#define AGENTBOX_FD_HYGIENE_H
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

static int fd_kept(int fd, const int *keep, int nkeep) {
  for (int i = 0; i < nkeep; i++) if (keep[i] == fd) return 1;
  return 0;
}

/* Old kernels (before 5.9) and gVisor releases without close_range: walk /proc/self/fd, or failing
 * that every possible descriptor up to the limit. */
static void close_fds_fallback(const int *keep, int nkeep) {
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    int own = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      char *end;
      long fd = strtol(e->d_name, &end, 10);
      if (*end || end == e->d_name || fd < 3 || fd == own || fd_kept((int)fd, keep, nkeep)) continue;
      close((int)fd);
    }
    closedir(d);
    return;
  }
  struct rlimit rl;
  long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max < (1L << 20) ? (long)rl.rlim_max : (1L << 20);
  for (long fd = 3; fd < max; fd++) if (!fd_kept((int)fd, keep, nkeep)) close((int)fd);
}

/* Closes every descriptor above 2 except the NKEEP in KEEP (any order). */
static void close_extra_fds(const int *keep, int nkeep) {
  int sorted[16];
  int n = 0;
  for (int i = 0; i < nkeep && n < 16; i++) if (keep[i] > 2) sorted[n++] = keep[i];
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) { int t = sorted[j]; sorted[j] = sorted[j - 1]; sorted[j - 1] = t; }
  unsigned int from = 3;
  for (int i = 0; i <= n; i++) {
    unsigned int to = i < n ? (unsigned int)sorted[i] - 1 : ~0U;
    if (i < n && (unsigned int)sorted[i] < from) continue;
    if (to >= from && syscall(SYS_close_range, from, to, 0) != 0) {
      close_fds_fallback(sorted, n);
      return;
    }
    if (i < n) from = (unsigned int)sorted[i] + 1;
  }
}

#endif
