/*
 * The memory limit of a gVisor sandbox, enforced from inside by PID 1.
 *
 * gVisor's sentry keeps every page of the sandbox in one host memory file, so the host cgroup limit
 * cannot single out a process: when it is reached, the host OOM killer ends the sentry and with it
 * the whole sandbox. The sentry does count its memory (sysinfo(2) inside: totalram - freeram), so
 * PID 1 watches that count and, past the limit, kills the biggest process as the Linux OOM killer
 * would. The host limit stays as the backstop, set higher by the daemon (GVISOR_HEADROOM) to hold
 * the sentry itself, the slack below and what a process can allocate while it is being killed.
 *
 * What costs is not the check (one syscall, ~0.04 ms) but waking PID 1 for it: about 0.8 ms of the
 * sentry's CPU under the ptrace platform. So wake-ups are spaced by the room left plus a slack of
 * WATCHDOG_SLACK_KB, at the rate of the fastest allocator (WATCHDOG_RATE_KB_PER_MS), between 2 ms
 * and 1 s: a process can pass the limit by up to the slack for a few milliseconds before it is
 * killed, and a sandbox sitting at its limit costs ~60 wake-ups a second, not ~500.
 * Measured cost and overshoot: BENCHMARKS.md (gVisor memory watchdog).
 *
 * Each kill is logged, one line per kill, to WATCHDOG_LOG (root-owned, readable by the sandbox
 * user) as `TAG PID RSS_KB USED_KB LIMIT_KB COMM`, where TAG is the exec tag of the victim's `run`
 * wrapper, `@PID` for a command the exec agent started as PID, or `-`; so the daemon can tell an
 * out-of-memory kill from any other SIGKILL.
 */
#ifndef AGENTBOX_MEMORY_WATCHDOG_H
#define AGENTBOX_MEMORY_WATCHDOG_H
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>
#include "procfs.h"

#define WATCHDOG_DIR "/tmp/.agentbox"
#define WATCHDOG_LOG WATCHDOG_DIR "/oom"
/* 2 GB/s: above what one process touching fresh pages reaches in gVisor here (~0.8 GB/s). */
#define WATCHDOG_RATE_KB_PER_MS 2048L
#define WATCHDOG_SLACK_KB (32L * 1024)
#define WATCHDOG_MIN_MS 2L
#define WATCHDOG_MAX_MS 1000L
#define WATCHDOG_IDLE_OVER_MS 20L
/* A victim gets this long to release its memory before another process is chosen, unless the count
 * grows by more than WATCHDOG_GROWTH_KB meanwhile (a second allocator; the victim itself may add a
 * little before the signal lands). */
#define WATCHDOG_GRACE_MS 1000L
#define WATCHDOG_GROWTH_KB (8L * 1024)

struct memory_watchdog {
  long limit_kb;
  int log_fd;
  long long victim_at_ms; /* 0: no kill yet */
  long used_at_kill;
};

/* Memory the sentry holds for the sandbox, in kB. */
static long watchdog_used_kb(void) {
  struct sysinfo si;
  if (sysinfo(&si) != 0) return -1;
  return (long)((si.totalram - si.freeram) * (unsigned long long)si.mem_unit / 1024);
}

/* The process with the largest resident set, PID 1, the `run` wrappers and the exec agent aside; 0 if none. */
static pid_t watchdog_biggest(long *rss_kb) {
  DIR *d = opendir("/proc");
  if (!d) return 0;
  long page_kb = sysconf(_SC_PAGESIZE) / 1024;
  pid_t best = 0;
  long best_rss = -1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!isdigit((unsigned char)e->d_name[0])) continue;
    pid_t pid = (pid_t)atoi(e->d_name);
    if (pid == 1) continue;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/statm", pid);
    if (proc_read(path, buf, sizeof buf) <= 0) continue;
    long size, rss;
    if (sscanf(buf, "%ld %ld", &size, &rss) != 2) continue;
    /* A wrapper or the exec agent holds almost nothing; killing it would lose exit statuses. */
    if (init_mode_of(pid, "run") == 0 || init_mode_of(pid, "agent") == 0) continue;
    if (rss > best_rss) {
      best_rss = rss;
      best = pid;
    }
  }
  closedir(d);
  *rss_kb = best_rss * page_kb;
  return best;
}

static void watchdog_log_kill(struct memory_watchdog *w, pid_t victim, long rss_kb, long used_kb) {
  char tag[256] = "-";
  struct proc_stat st;
  if (proc_stat_of(victim, &st) != 0) snprintf(st.comm, sizeof st.comm, "?");
  char comm[sizeof st.comm];
  snprintf(comm, sizeof comm, "%s", st.comm);
  /* The nearest `run` wrapper above the victim (or the victim itself) names its exec; a command the
   * exec agent started is named by its own pid, `@PID` (exec-agent.h). */
  pid_t pid = victim;
  for (int depth = 0; depth < 64 && pid > 1 && run_tag_of(pid, tag, sizeof tag) != 0; depth++) {
    if (proc_stat_of(pid, &st) != 0) break;
    if (st.ppid > 1 && init_mode_of(st.ppid, "agent") == 0) {
      snprintf(tag, sizeof tag, "@%d", pid);
      break;
    }
    pid = st.ppid;
  }
  for (char *c = comm; *c; c++) if (isspace((unsigned char)*c)) *c = '_';
  if (w->log_fd >= 0) dprintf(w->log_fd, "%s %d %ld %ld %ld %s\n", tag, victim, rss_kb, used_kb, w->limit_kb, comm);
}

/* Before anything else runs in the sandbox, so nobody can have taken the name in the sticky /tmp.
 * The files are opened at the first check: run_as_pid1 closes every inherited descriptor. */
static int watchdog_open(struct memory_watchdog *w, long limit_kb) {
  w->limit_kb = limit_kb;
  w->log_fd = -1;
  w->victim_at_ms = 0;
  w->used_at_kill = 0;
  return mkdir(WATCHDOG_DIR, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* One check; returns the milliseconds until the next one. */
static long watchdog_check(struct memory_watchdog *w) {
  if (w->log_fd < 0) w->log_fd = open(WATCHDOG_LOG, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  long used = watchdog_used_kb();
  if (used < 0) return WATCHDOG_MAX_MS;
  long room = w->limit_kb - used;
  if (room < 0) {
    long long now = monotonic_ms();
    /* While a victim's memory is on its way back, another kill is only for whoever keeps allocating. */
    if (w->victim_at_ms > 0 && now - w->victim_at_ms < WATCHDOG_GRACE_MS && used <= w->used_at_kill + WATCHDOG_GROWTH_KB) return WATCHDOG_MIN_MS;
    long rss_kb;
    pid_t victim = watchdog_biggest(&rss_kb);
    /* Nothing to kill (the memory is held by tmpfs files, say): look again soon, without spinning. */
    if (victim <= 0) return WATCHDOG_IDLE_OVER_MS;
    watchdog_log_kill(w, victim, rss_kb, used);
    kill(victim, SIGKILL);
    w->victim_at_ms = now;
    w->used_at_kill = used;
    return WATCHDOG_MIN_MS;
  }
  long ms = (room + WATCHDOG_SLACK_KB) / WATCHDOG_RATE_KB_PER_MS;
  return ms < WATCHDOG_MIN_MS ? WATCHDOG_MIN_MS : ms > WATCHDOG_MAX_MS ? WATCHDOG_MAX_MS : ms;
}

#endif
