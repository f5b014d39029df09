/*
 * PID 1 of a sandbox, shared by agentbox-helper (local runtime) and agentbox-docker-init (docker
 * runtime): not dumpable, every signal blocked (so nothing inside can kill it), optionally report
 * ready on READY_FD, keep children running (the egress relay of egress-relay.h, the exec agent of
 * exec-agent.h), run a periodic task if given one (memory-watchdog.h), and reap every orphan for ever.
 */
#ifndef AGENTBOX_PID1_H
#define AGENTBOX_PID1_H
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "fd-hygiene.h"
#include "procfs.h"

/* A periodic task: fn(ctx) runs first at once, then again after as many milliseconds as it returns. */
struct pid1_tick {
  long (*fn)(void *ctx);
  void *ctx;
};

/* A child PID 1 keeps running (the egress relay, the exec agent): started at once, and again when it
 * dies, at most once a second, so a sandbox that kills it in a loop cannot make PID 1 spin. */
struct pid1_child {
  pid_t (*start)(void *ctx); /* forks it; its pid, or -1 */
  void *ctx;
  pid_t pid;
  long long start_at_ms, started_ms;
  int keep_fd; /* a descriptor PID 1 holds for it across restarts (the relay's listening socket); <= 2: none */
};

#define PID1_RESTART_MS 1000

/*
 * Returns only if writing the ready byte failed (-1); the caller reports that.
 */
static int run_as_pid1(int ready_fd, struct pid1_child *kept, int nkept, const struct pid1_tick *tick) {
  /* Not dumpable: nothing in the sandbox may ptrace PID 1, even with the same uid. */
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, NULL);
  if (ready_fd >= 0) {
    if (write(ready_fd, "R", 1) != 1) return -1;
    close(ready_fd);
  }
  int devnull = open("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2(devnull, 0); dup2(devnull, 1); dup2(devnull, 2);
    if (devnull > 2) close(devnull);
  }
  int keep[8] = {0}, nkeep = 0;
  for (int i = 0; i < nkept && nkeep < 8; i++) if (kept[i].keep_fd > 2) keep[nkeep++] = kept[i].keep_fd;
  close_extra_fds(keep, nkeep);
  /* SIGCHLD stays blocked: it is only waited for, then all exited children are reaped. */
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  long long next_tick = 0;
  int reap = 0;
  for (;;) {
    int status;
    pid_t dead;
    /* Only after a SIGCHLD: with a tick, PID 1 wakes often, and under gVisor every syscall is the sentry's work. */
    while (reap && (dead = waitpid(-1, &status, WNOHANG)) > 0) {
      for (int i = 0; i < nkept; i++) {
        if (kept[i].pid != dead) continue;
        kept[i].pid = 0;
        kept[i].start_at_ms = kept[i].started_ms + PID1_RESTART_MS;
      }
    }
    reap = 0;
    long long now_ms = monotonic_ms(), wake_ms = -1;
    for (int i = 0; i < nkept; i++) {
      if (kept[i].pid > 0) continue;
      if (now_ms >= kept[i].start_at_ms) {
        kept[i].started_ms = now_ms;
        kept[i].pid = kept[i].start(kept[i].ctx);
        if (kept[i].pid < 0) kept[i].pid = 0;
        if (kept[i].pid > 0) continue;
        kept[i].start_at_ms = now_ms + PID1_RESTART_MS;
      }
      if (wake_ms < 0 || kept[i].start_at_ms < wake_ms) wake_ms = kept[i].start_at_ms;
    }
    if (tick && now_ms >= next_tick) {
      next_tick = now_ms + tick->fn(tick->ctx);
      continue;
    }
    if (tick && (wake_ms < 0 || next_tick < wake_ms)) wake_ms = next_tick;
    siginfo_t info;
    if (wake_ms < 0) {
      reap = sigwaitinfo(&chld, &info) == SIGCHLD;
      continue;
    }
    long long wait_ms = wake_ms - now_ms;
    if (wait_ms < 0) wait_ms = 0;
    struct timespec ts = { (time_t)(wait_ms / 1000), (long)(wait_ms % 1000) * 1000000L };
    reap = sigtimedwait(&chld, &info, &ts) == SIGCHLD;
  }
}

#endif
