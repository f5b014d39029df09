/*
 * PID 1 of a sandbox, shared by agentbox-helper (local runtime) and agentbox-docker-init (docker
 * runtime): not dumpable, every signal blocked (so nothing inside can kill it), optionally report
 * ready on READY_FD, then reap every orphan for ever.
 */
#ifndef AGENTBOX_PID1_H
#define AGENTBOX_PID1_H
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* Returns only if writing the ready byte failed (-1); the caller reports that. */
static int run_as_pid1(int ready_fd) {
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
  /* SIGCHLD stays blocked: it is only waited for, then all exited children are reaped. */
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  for (;;) {
    int status;
    while (waitpid(-1, &status, WNOHANG) > 0) {}
    siginfo_t info;
    sigwaitinfo(&chld, &info);
  }
}

#endif
