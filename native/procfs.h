/*
 * Small readers of /proc and the clock, shared by agentbox-docker-init's `run`/`kill` modes, its
 * exec agent and process-tree killer, its memory watchdog and PID 1. `static inline`: each program uses only some of them.
 */
#ifndef AGENTBOX_PROCFS_H
#define AGENTBOX_PROCFS_H
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static inline long long monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads a small /proc file into buf (NUL-terminated); its length, or -1. */
static inline ssize_t proc_read(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, size - 1);
  close(fd);
  if (n < 0) return -1;
  buf[n] = '\0';
  return n;
}

struct proc_stat {
  pid_t ppid, sid;
  char state;
  char comm[64];
};

/* Fields of /proc/PID/stat; comm may hold spaces and parentheses, so it ends at the last ')'. */
static inline int proc_stat_of(pid_t pid, struct proc_stat *st) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  if (proc_read(path, buf, sizeof buf) <= 0) return -1;
  char *open_paren = strchr(buf, '('), *close_paren = strrchr(buf, ')');
  if (!open_paren || !close_paren || close_paren < open_paren) return -1;
  size_t len = (size_t)(close_paren - open_paren - 1);
  if (len >= sizeof st->comm) len = sizeof st->comm - 1;
  memcpy(st->comm, open_paren + 1, len);
  st->comm[len] = '\0';
  char state;
  int pp, pg, se;
  if (sscanf(close_paren + 1, " %c %d %d %d", &state, &pp, &pg, &se) != 4) return -1;
  st->state = state;
  st->ppid = (pid_t)pp;
  st->sid = (pid_t)se;
  return 0;
}

/* The TAG of PID if it is a `run` wrapper (argv: INIT run TIMEOUT TAG -- ...): 0, else -1. */
static inline int run_tag_of(pid_t pid, char *tag, size_t tag_size) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
  ssize_t n = proc_read(path, buf, sizeof buf);
  if (n <= 0) return -1;
  const char *args[5];
  size_t off = 0;
  int i = 0;
  for (; i < 5 && off < (size_t)n; i++) {
    args[i] = buf + off;
    off += strlen(buf + off) + 1;
  }
  if (i < 5 || strcmp(args[1], "run") != 0 || strcmp(args[4], "--") != 0) return -1;
  snprintf(tag, tag_size, "%s", args[3]);
  return 0;
}

/* Where the daemon binds agentbox-docker-init into every docker sandbox (INIT_IN_CONTAINER). */
#define INIT_EXE "/.agentbox/init"

/* Whether PID's argv is agentbox-docker-init's in MODE (`run`, `agent`): 0 if so, else -1. Only the
 * argv: gVisor lets nobody read another process's /proc/PID/exe, and PID 1 has no CAP_SYS_PTRACE for
 * maps. So a sandbox can pose as one; all it gains is that PID 1's memory watchdog spares the poser,
 * and then the host's limit ends the whole sandbox instead of one command. */
static inline int init_mode_of(pid_t pid, const char *mode) {
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
  ssize_t n = proc_read(path, buf, sizeof buf);
  if (n <= 0 || strcmp(buf, INIT_EXE) != 0) return -1;
  const char *arg1 = buf + strlen(buf) + 1;
  return arg1 < buf + n && strcmp(arg1, mode) == 0 ? 0 : -1;
}

#endif
