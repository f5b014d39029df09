/*
 * PID 1 of a sandbox, shared by agentbox-helper (local runtime) and agentbox-docker-init (docker
 * runtime): not dumpable, every signal blocked (so nothing inside can kill it), optionally report
 * ready on READY_FD, keep the egress relay (egress-relay.h) running, run a periodic task if given
 * one (memory-watchdog.h), and reap every orphan for ever.
 */
#ifndef AGENTBOX_PID1_H
#define AGENTBOX_PID1_H
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "egress-relay.h"
#include "procfs.h"

/* A periodic task: fn(ctx) runs first at once, then again after as many milliseconds as it returns. */
struct pid1_tick {
  long (*fn)(void *ctx);
  void *ctx;
};

/*
 * Returns only if writing the ready byte failed (-1); the caller reports that.
 * With relay->port set, PID 1 also keeps the egress relay running (restarted if it dies, at most
 * once a second, so a sandbox that holds the port cannot make PID 1 spin).
 */
static int run_as_pid1(int ready_fd, struct egress_relay *relay, const struct pid1_tick *tick) {
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
  for (int fd = 3; fd < 1024; fd++) close(fd);
  time_t relay_started = time(NULL);
  if (relay) relay_start(relay);
  /* SIGCHLD stays blocked: it is only waited for, then all exited children are reaped. */
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  long long next_tick = 0;
  int reap = 1;
  for (;;) {
    int status;
    pid_t dead;
    /* Only after a SIGCHLD: with a tick, PID 1 wakes often, and under gVisor every syscall is the sentry's work. */
    while (reap && (dead = waitpid(-1, &status, WNOHANG)) > 0) {
      if (relay && relay->pid > 0 && dead == relay->pid) {
        if (time(NULL) - relay_started < 1) sleep(1);
        relay_started = time(NULL);
        relay_start(relay);
      }
    }
    reap = 0;
    siginfo_t info;
    if (!tick) {
      reap = sigwaitinfo(&chld, &info) == SIGCHLD;
      continue;
    }
    long long now_ms = monotonic_ms();
    if (now_ms >= next_tick) {
      next_tick = now_ms + tick->fn(tick->ctx);
      continue;
    }
    long long wait_ms = next_tick - now_ms;
    struct timespec ts = { (time_t)(wait_ms / 1000), (long)(wait_ms % 1000) * 1000000L };
    reap = sigtimedwait(&chld, &info, &ts) == SIGCHLD;
  }
}

#endif
