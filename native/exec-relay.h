/*
 * An exec ends when its leader exits, not when the last process holding its output does. Shared by
 * agentbox-helper's `exec` (local runtime) and agentbox-docker-init's `run` (docker: direct entry and
 * Engine execs); the gVisor exec agent (exec-agent.h) does the same in its own poll loop.
 *
 * The process that starts the leader gives it pipes of its own for stdout and stderr and copies what
 * comes through them to its own stdout and stderr (the daemon's) while the leader runs. Background
 * jobs inherit those pipes, never the daemon's, so nothing the daemon waits for outlives the leader.
 *
 * When the leader has exited, everything it wrote is in the pipes already (a write to a pipe is
 * complete before the writer can go on to exit), so exactly FIONREAD bytes are copied: nothing the
 * leader wrote is lost, and a background job that keeps writing cannot keep the exec open. A pipe
 * that still has a writer then (a background job) goes to a drainer: `INIT_EXE drain FD...`, a small
 * process in the sandbox, in its own session, as the sandbox user, with the exec's AGENTBOX_EXEC_ID,
 * that reads and discards until every writer is gone. So a server that logs to the stdout it
 * inherited never gets SIGPIPE; what it writes after its exec returned is discarded. The drainer's
 * parent exits at once, so it is reparented to the sandbox's init, which reaps it.
 */
#ifndef AGENTBOX_EXEC_RELAY_H
#define AGENTBOX_EXEC_RELAY_H
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>
#include "fd-hygiene.h"
#include "procfs.h"

#define RELAY_CHUNK 65536
/* The environment variable every process of an exec carries (src/runtime/shared.ts EXEC_ID_ENV). */
#define EXEC_ID_ENV "AGENTBOX_EXEC_ID"

struct relay_stream {
  int from;       /* read end of the leader's pipe; -1 once closed */
  int to;         /* where its bytes go (1 or 2); -1 once that is gone (the bytes are then dropped) */
  int write_end;  /* the leader's end, until the fork */
  int to_flags;   /* `to`'s file status flags before the relay made it non-blocking */
  char *buf;
  size_t len, off;
};

struct exec_relay {
  struct relay_stream s[2];
  int sfd;   /* signalfd: SIGCHLD and the signals that end an exec (SIGTERM, SIGINT, SIGHUP) */
  pid_t leader;
  int exited, status;
};

enum { RELAY_EXITED, RELAY_SIGNAL, RELAY_DEADLINE, RELAY_ERROR };

/* Pipes for the leader's stdout and stderr, and a signalfd for SIGCHLD, SIGTERM, SIGINT and SIGHUP
 * (blocked from here on; the previous mask goes to *old). Call before forking the leader. 0, or -1
 * with errno. */
static int exec_relay_open(struct exec_relay *r, sigset_t *old) {
  memset(r, 0, sizeof *r);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &set, old) != 0) return -1;
  r->sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (r->sfd < 0) return -1;
  for (int i = 0; i < 2; i++) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return -1;
    r->s[i].from = p[0];
    r->s[i].write_end = p[1];
    r->s[i].to = i + 1;
    r->s[i].buf = malloc(RELAY_CHUNK); /* not static: under gVisor that costs its size in every process of the binary */
    if (!r->s[i].buf) return -1;
  }
  return 0;
}

/* In the leader, after the fork: stdout and stderr on the pipes, the signal mask back to `old`. */
static void exec_relay_child(struct exec_relay *r, const sigset_t *old) {
  if (dup2(r->s[0].write_end, 1) < 0 || dup2(r->s[1].write_end, 2) < 0) _exit(125);
  sigprocmask(SIG_SETMASK, old, NULL);
}

/* In the relaying process, after the fork. */
static void exec_relay_started(struct exec_relay *r, pid_t leader) {
  r->leader = leader;
  for (int i = 0; i < 2; i++) {
    struct relay_stream *s = &r->s[i];
    close(s->write_end);
    s->write_end = -1;
    fcntl(s->from, F_SETFL, fcntl(s->from, F_GETFL) | O_NONBLOCK);
    /* Only this process holds `to` (the leader has its own pipes): non-blocking, so a slow daemon
     * never keeps a deadline or a signal from being handled. Restored before exit. */
    s->to_flags = fcntl(s->to, F_GETFL);
    if (s->to_flags < 0 || fcntl(s->to, F_SETFL, s->to_flags | O_NONBLOCK) != 0) s->to_flags = -1;
  }
  /* A daemon that went away must not kill the relay before it could report: EPIPE is handled. */
  signal(SIGPIPE, SIG_IGN);
}

/* Collects every exited child (a child subreaper inherits orphans too); notes the leader's status. */
static void exec_relay_reap(void *ctx) {
  struct exec_relay *r = ctx;
  int status;
  pid_t dead;
  while ((dead = waitpid(-1, &status, WNOHANG)) > 0) {
    if (dead == r->leader && !r->exited) {
      r->exited = 1;
      r->status = status;
    }
  }
}

/* Writes what is pending; returns when it would block. A destination that failed drops its bytes. */
static void exec_relay_flush(struct relay_stream *s) {
  while (s->off < s->len) {
    if (s->to < 0) {
      s->off = s->len = 0;
      return;
    }
    ssize_t w = write(s->to, s->buf + s->off, s->len - s->off);
    if (w > 0) s->off += (size_t)w;
    else if (w < 0 && errno == EINTR) continue;
    else if (w < 0 && errno == EAGAIN) return;
    else s->to = -1; /* the daemon is gone: keep reading, so the leader never blocks, and drop */
  }
  s->off = s->len = 0;
}

/* Flushes everything pending, waiting for the destination as long as it takes. */
static void exec_relay_flush_all(struct relay_stream *s) {
  for (;;) {
    exec_relay_flush(s);
    if (s->off >= s->len) return;
    struct pollfd p = { s->to, POLLOUT, 0 };
    if (poll(&p, 1, -1) < 0 && errno != EINTR) s->to = -1;
  }
}

/* Reads one chunk from the leader's pipe; at EOF (no writer left) the pipe is closed. */
static void exec_relay_read(struct relay_stream *s) {
  ssize_t n = read(s->from, s->buf, RELAY_CHUNK);
  if (n > 0) {
    s->off = 0;
    s->len = (size_t)n;
    return;
  }
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  close(s->from);
  s->from = -1;
}

/*
 * Relays until the leader has exited (RELAY_EXITED), one of the caller's signals arrives
 * (RELAY_SIGNAL, *sig set), deadline_ms (monotonic; 0: none) passes (RELAY_DEADLINE), or poll itself
 * fails (RELAY_ERROR, errno set).
 */
static int exec_relay_wait(struct exec_relay *r, long long deadline_ms, int *sig) {
  for (;;) {
    if (r->exited) return RELAY_EXITED;
    struct pollfd p[5];
    int kind[5], np = 0;
    p[np] = (struct pollfd){ r->sfd, POLLIN, 0 };
    kind[np++] = -1;
    for (int i = 0; i < 2; i++) {
      struct relay_stream *s = &r->s[i];
      if (s->off < s->len) {
        p[np] = (struct pollfd){ s->to, POLLOUT, 0 };
        kind[np++] = i;
      } else if (s->from >= 0) {
        p[np] = (struct pollfd){ s->from, POLLIN, 0 };
        kind[np++] = i;
      }
    }
    int timeout = -1;
    if (deadline_ms > 0) {
      long long left = deadline_ms - monotonic_ms();
      if (left <= 0) return RELAY_DEADLINE;
      timeout = left > 1000000 ? 1000000 : (int)left;
    }
    if (poll(p, (nfds_t)np, timeout) < 0) {
      if (errno == EINTR) continue;
      return RELAY_ERROR;
    }
    for (int k = 0; k < np; k++) {
      if (!p[k].revents) continue;
      if (kind[k] < 0) {
        struct signalfd_siginfo si;
        int other = 0;
        while (read(r->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
          if ((int)si.ssi_signo != SIGCHLD) other = (int)si.ssi_signo;
        }
        exec_relay_reap(r);
        if (other) {
          *sig = other;
          return RELAY_SIGNAL;
        }
        continue;
      }
      struct relay_stream *s = &r->s[kind[k]];
      if (s->off < s->len) exec_relay_flush(s);
      else exec_relay_read(s);
    }
  }
}

/*
 * The leader has exited (or its tree was killed): copies what the pipes hold now, which includes
 * everything the leader wrote, and closes each pipe that has no writer left. Returns how many are
 * still open (a background job holds them).
 */
static int exec_relay_finish(struct exec_relay *r) {
  int open_pipes = 0;
  for (int i = 0; i < 2; i++) {
    struct relay_stream *s = &r->s[i];
    exec_relay_flush_all(s);
    if (s->from < 0) continue;
    int n = 0;
    if (ioctl(s->from, FIONREAD, &n) != 0) n = 0;
    while (n > 0) {
      ssize_t got = read(s->from, s->buf, (size_t)n < RELAY_CHUNK ? (size_t)n : RELAY_CHUNK);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      n -= (int)got;
      s->off = 0;
      s->len = (size_t)got;
      exec_relay_flush_all(s);
    }
    /* No writer left: POLLHUP. What came after the count (from a job that has exited since) is dropped. */
    struct pollfd p = { s->from, POLLIN, 0 };
    if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) {
      char sink[4096];
      while (read(s->from, sink, sizeof sink) > 0) {}
      close(s->from);
      s->from = -1;
    } else {
      open_pipes++;
    }
  }
  for (int i = 0; i < 2; i++) {
    if (r->s[i].to >= 0 && r->s[i].to_flags >= 0) fcntl(r->s[i].to, F_SETFL, r->s[i].to_flags);
  }
  return open_pipes;
}

/*
 * Hands the pipes still open to a drainer (see the top of this file) and forgets them. `become(ctx)`
 * runs in the drainer first (agentbox-helper drops to the sandbox user there; `run` already is it).
 * If the drainer cannot start, the pipes are closed: the job's later writes fail, it keeps running.
 */
static void exec_relay_hand_off(struct exec_relay *r, void (*become)(void *), void *ctx) {
  int fds[2], n = 0;
  for (int i = 0; i < 2; i++) if (r->s[i].from >= 0) fds[n++] = r->s[i].from;
  if (n > 0) {
    pid_t pid = fork();
    if (pid == 0) {
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, NULL);
      signal(SIGPIPE, SIG_DFL);
      setsid();
      if (become) become(ctx);
      /* Above every descriptor the drainer is given, then down to 3 and 4 (dup2 clears close-on-exec). */
      int high[2];
      for (int i = 0; i < n; i++) if ((high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 16)) < 0) _exit(125);
      int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
      if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(devnull, 2) < 0) _exit(125);
      char *args[5] = { INIT_EXE, "drain", NULL, NULL, NULL };
      static char names[2][4] = { "3", "4" };
      for (int i = 0; i < n; i++) {
        if (dup2(high[i], 3 + i) < 0) _exit(125);
        args[2 + i] = names[i];
      }
      int keep[2] = { 3, 4 };
      close_extra_fds(keep, n);
      /* Only the exec's id: ps attributes the drainer to its exec, nothing else of the exec's environment. */
      static char marker[256];
      const char *id = getenv(EXEC_ID_ENV);
      char *envp[2] = { NULL, NULL };
      if (id && strlen(id) < sizeof marker - sizeof EXEC_ID_ENV - 1) {
        snprintf(marker, sizeof marker, "%s=%s", EXEC_ID_ENV, id);
        envp[0] = marker;
      }
      execve(INIT_EXE, args, envp);
      /* Not bound at INIT_EXE (the kubernetes driver stages the binary into the pod's /tmp): this
       * very program, which has the same `drain` mode. */
      if (errno == ENOENT) execve("/proc/self/exe", args, envp);
      _exit(125);
    }
  }
  for (int i = 0; i < 2; i++) {
    if (r->s[i].from >= 0) close(r->s[i].from);
    r->s[i].from = -1;
  }
}

/* The exit status an exec reports for its leader: its code, 128+N for signal N. */
static int exec_relay_exit_code(const struct exec_relay *r, int fallback) {
  if (!r->exited) return fallback;
  if (WIFEXITED(r->status)) return WEXITSTATUS(r->status);
  if (WIFSIGNALED(r->status)) return 128 + WTERMSIG(r->status);
  return fallback;
}

/*
 * `INIT_EXE drain FD...`: reads every FD and discards it until each has no writer left, then exits.
 * The FDs are the only descriptors it keeps.
 */
static int drain_main(int argc, char **argv) {
  struct pollfd p[8];
  int n = 0;
  for (int i = 0; i < argc && n < 8; i++) {
    char *end;
    long fd = strtol(argv[i], &end, 10);
    if (*end == '\0' && fd > 2 && fd < 64) p[n++] = (struct pollfd){ (int)fd, POLLIN, 0 };
  }
  int keep[8] = { 0 };
  for (int i = 0; i < n; i++) keep[i] = p[i].fd;
  close_extra_fds(keep, n);
  char buf[16384];
  while (n > 0) {
    if (poll(p, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    for (int i = 0; i < n; i++) {
      if (!p[i].revents) continue;
      ssize_t got = read(p[i].fd, buf, sizeof buf);
      if (got > 0 || (got < 0 && (errno == EINTR || errno == EAGAIN))) continue;
      close(p[i].fd);
      p[i--] = p[--n];
    }
  }
  return 0;
}

#endif
