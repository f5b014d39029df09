/*
 * A command on a pseudo-terminal inside the sandbox, for the daemon's terminals (src/runtime/pty.ts):
 * `pty -`, carried by the files transport of every driver (file-ops.h dispatches it), so it runs where
 * file operations do: inside the sandbox, as its user, under the seccomp filter, in the sandbox's own
 * devpts. The terminal is allocated here, never on the host: nothing of the host's terminals is reachable.
 *
 * stdin carries frames from the daemon: one type byte, a 4-byte big-endian length, the payload.
 *   'S' start (first, once): NUL-terminated fields ROWS, COLS, CWD, ARGC, ARGV..., then KEY=VALUE... to the end
 *   'D' data typed at the terminal       'R' resize: "ROWS COLS"       'K' signal: "N", to the command
 * stdin's end is a hang-up: the command's session gets SIGHUP, and 2 s later its whole tree SIGKILL
 * (proc-tree.h: by parent, session and the exec's AGENTBOX_EXEC_ID, as a timed-out exec's).
 * stdout is what the terminal shows. stderr: `agentbox-pty-started PID` (the pid inside the sandbox)
 * once the command runs. The exit status is the command's (128+N for signal N, 126/127 when it could
 * not be run). Before the start, failures are one line `agentbox-file-error:KIND:message` and exit 1.
 * The session ends when the command (its leader) exits, as an exec does: what the terminal still
 * holds is read first, for at most PTY_LINGER_MS of quiet, since a background job may keep it open.
 */
#ifndef AGENTBOX_PTY_SESSION_H
#define AGENTBOX_PTY_SESSION_H
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include "exit-codes.h"
#include "proc-tree.h"

#define PTY_START_MAX (256 * 1024)
#define PTY_FRAME_MAX (1024 * 1024)
#define PTY_PENDING_MAX (2 * 1024 * 1024)
#define PTY_ARGS_MAX 4096
#define PTY_LINGER_MS 200
#define PTY_HANGUP_GRACE_MS 2000

static void pty_refuse(const char *kind, const char *why) {
  fprintf(stderr, "agentbox-file-error:%s:pty: %s\n", kind, why);
  exit(1);
}

static long long pty_now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Reads exactly N bytes from fd 0; 0 at a clean EOF before the first byte, -1 otherwise. */
static int pty_read_exact(char *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(0, buf + got, n - got);
    if (r == 0) return got == 0 ? 0 : -1;
    if (r < 0) { if (errno == EINTR) continue; return -1; }
    got += (size_t)r;
  }
  return 1;
}

static int pty_parse_size(const char *text, unsigned short *rows, unsigned short *cols) {
  char *end = NULL;
  long r = strtol(text, &end, 10);
  if (!end || *end != ' ') return -1;
  long c = strtol(end + 1, &end, 10);
  if (!end || *end || r < 1 || r > 1000 || c < 1 || c > 1000) return -1;
  *rows = (unsigned short)r;
  *cols = (unsigned short)c;
  return 0;
}

static void pty_set_size(int master, unsigned short rows, unsigned short cols) {
  struct winsize ws = { rows, cols, 0, 0 };
  ioctl(master, TIOCSWINSZ, &ws);
}

/* In the child: the command as the leader of a new session whose controlling terminal is the pty. */
__attribute__((noreturn)) static void pty_child(int master, const char *cwd, char **argv, char **env) {
  signal(SIGPIPE, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  setsid();
  int n = -1;
  char path[64];
  int slave = -1;
  if (ioctl(master, TIOCGPTN, &n) == 0) {
    snprintf(path, sizeof path, "/dev/pts/%d", n);
    slave = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
  }
  /* gVisor may have made it the controlling terminal already, and then refuses TIOCSCTTY. */
  if (slave < 0 || (ioctl(slave, TIOCSCTTY, 0) != 0 && tcgetsid(slave) != getsid(0))) {
    fprintf(stderr, "agentbox: cannot open the terminal's pts %d: %s\n", n, strerror(errno));
    _exit(EXIT_AGENTBOX_FAILED);
  }
  if (dup2(slave, 0) < 0 || dup2(slave, 1) < 0 || dup2(slave, 2) < 0) _exit(EXIT_AGENTBOX_FAILED);
  close(slave);
  close(master);
  if (chdir(cwd) != 0) {
    fprintf(stderr, "agentbox: cannot enter %s: %s\r\n", cwd, strerror(errno));
    _exit(EXIT_CANNOT_EXECUTE);
  }
  extern char **environ;
  environ = env; /* execvp looks PATH up in the command's own environment */
  execvp(argv[0], argv);
  int err = errno;
  fprintf(stderr, "agentbox: %s: %s\r\n", argv[0], strerror(err));
  _exit(err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXECUTE);
}

/* Writes what is pending to the (non-blocking) master; returns the bytes left. */
static size_t pty_flush_input(int master, char *pending, size_t len) {
  while (len > 0) {
    ssize_t w = write(master, pending, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      return 0; /* the terminal is gone: what was typed goes nowhere */
    }
    memmove(pending, pending + w, len - (size_t)w);
    len -= (size_t)w;
  }
  return len;
}

/* Moves what the terminal shows to stdout; 0 when the terminal has nothing more (EIO: no one holds it), 1 otherwise. */
static int pty_pass_output(int master) {
  char buf[65536];
  ssize_t n = read(master, buf, sizeof buf);
  if (n == 0 || (n < 0 && errno == EIO)) return 0;
  if (n < 0) return errno == EINTR || errno == EAGAIN ? 1 : 0;
  for (ssize_t off = 0; off < n;) {
    ssize_t w = write(1, buf + off, (size_t)(n - off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return 0; /* the daemon stopped reading: the session is being dropped */
    }
    off += w;
  }
  return 1;
}

struct pty_reap { pid_t child; int status; int exited; };

static void pty_reap_child(void *ctx) {
  struct pty_reap *r = ctx;
  if (!r->exited && waitpid(r->child, &r->status, WNOHANG) == r->child) r->exited = 1;
}

static int pty_session(void) {
  /* The start frame. */
  char head[5];
  if (pty_read_exact(head, 5) != 1 || head[0] != 'S') pty_refuse("EINVAL", "the first frame is not a start frame");
  uint32_t len = ((uint32_t)(unsigned char)head[1] << 24) | ((uint32_t)(unsigned char)head[2] << 16) |
                 ((uint32_t)(unsigned char)head[3] << 8) | (uint32_t)(unsigned char)head[4];
  if (len == 0 || len > PTY_START_MAX) pty_refuse("E2BIG", "the start frame is empty or over 256 KiB");
  char *start = malloc(len + 1);
  if (!start) pty_refuse("EIO", "out of memory");
  if (pty_read_exact(start, len) != 1) pty_refuse("EINVAL", "the start frame ended early");
  start[len] = '\0';
  if (start[len - 1] != '\0') pty_refuse("EINVAL", "the start frame does not end with NUL");
  char *fields[PTY_ARGS_MAX * 2 + 8];
  size_t nf = 0;
  for (size_t off = 0; off < len && nf < sizeof fields / sizeof fields[0] - 1; off += strlen(start + off) + 1) fields[nf++] = start + off;
  if (nf < 5) pty_refuse("EINVAL", "the start frame needs ROWS, COLS, CWD, ARGC and a command");
  char size_text[64];
  snprintf(size_text, sizeof size_text, "%s %s", fields[0], fields[1]);
  unsigned short rows, cols;
  if (pty_parse_size(size_text, &rows, &cols) != 0) pty_refuse("EINVAL", "rows and columns are integers from 1 to 1000");
  const char *cwd = fields[2];
  long argc = strtol(fields[3], NULL, 10);
  if (argc < 1 || argc > PTY_ARGS_MAX || (size_t)argc + 4 > nf) pty_refuse("EINVAL", "ARGC does not match the arguments");
  /* argv and env, each NULL-terminated. */
  static char *argv_buf[PTY_ARGS_MAX + 1], *env_buf[PTY_ARGS_MAX * 2 + 8];
  for (long i = 0; i < argc; i++) argv_buf[i] = fields[4 + i];
  argv_buf[argc] = NULL;
  size_t ne = 0;
  for (size_t i = 4 + (size_t)argc; i < nf && ne < sizeof env_buf / sizeof env_buf[0] - 1; i++) env_buf[ne++] = fields[i];
  env_buf[ne] = NULL;
  const char *marker = NULL; /* AGENTBOX_EXEC_ID=<id>: how a hang-up finds what left the session */
  for (size_t i = 0; i < ne; i++) if (strncmp(env_buf[i], "AGENTBOX_EXEC_ID=", 17) == 0) marker = env_buf[i];

  int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) {
    fprintf(stderr, "agentbox-file-error:EIO:pty: cannot open /dev/ptmx: %s\n", strerror(errno));
    exit(1);
  }
  int unlock = 0;
  if (ioctl(master, TIOCSPTLCK, &unlock) != 0) pty_refuse("EIO", "cannot unlock the terminal");
  pty_set_size(master, rows, cols);

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) pty_refuse("EIO", "signalfd");
  signal(SIGPIPE, SIG_IGN);

  pid_t child = fork();
  if (child < 0) pty_refuse("EIO", "fork");
  if (child == 0) pty_child(master, cwd, argv_buf, env_buf);
  fprintf(stderr, "agentbox-pty-started %d\n", (int)child);
  fflush(stderr);
  fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);

  char *pending = malloc(PTY_PENDING_MAX);
  char *frame = malloc(PTY_FRAME_MAX);
  if (!pending || !frame) { kill(child, SIGKILL); pty_refuse("EIO", "out of memory"); }
  size_t pending_len = 0;
  int stdin_open = 1, master_open = 1, status = 0, exited = 0;
  long long hangup_at = -1, quiet_since = -1;
  for (;;) {
    struct pollfd p[3] = {
      { master_open ? master : -1, POLLIN | (pending_len ? POLLOUT : 0), 0 },
      { sfd, POLLIN, 0 },
      /* Typing waits while the terminal has not taken what came before (backpressure to the daemon). */
      { stdin_open && pending_len < PTY_PENDING_MAX - PTY_FRAME_MAX && !exited ? 0 : -1, POLLIN, 0 },
    };
    int timeout = -1;
    long long now = pty_now_ms();
    if (exited) timeout = (int)(quiet_since + PTY_LINGER_MS - now);
    else if (hangup_at >= 0) timeout = (int)(hangup_at + PTY_HANGUP_GRACE_MS - now);
    if (timeout < -1) timeout = 0;
    int n = poll(p, 3, timeout);
    if (n < 0 && errno != EINTR) break;
    now = pty_now_ms();
    if (exited && (n == 0 || now - quiet_since >= PTY_LINGER_MS)) break;
    if (!exited && hangup_at >= 0 && now - hangup_at >= PTY_HANGUP_GRACE_MS) {
      struct pty_reap r = { child, 0, 0 };
      tree_kill(child, child, pty_reap_child, &r, marker);
      if (r.exited) {
        status = r.status;
        break;
      }
      hangup_at = now + 3600 * 1000LL; /* once */
    }
    if (n <= 0) continue;
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (!pty_pass_output(master)) {
        if (exited) break;
        /* EIO while the leader lives: every holder of the terminal closed it; wait for the leader. */
        master_open = 0;
        pending_len = 0;
      } else if (exited) {
        quiet_since = now;
      }
    }
    if (pending_len && (p[0].revents & POLLOUT)) pending_len = pty_flush_input(master, pending, pending_len);
    if (p[1].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {}
      if (!exited && waitpid(child, &status, WNOHANG) == child) {
        exited = 1;
        quiet_since = now;
      }
    }
    if (p[2].revents & (POLLIN | POLLHUP | POLLERR)) {
      char fh[5];
      int r = pty_read_exact(fh, 5);
      uint32_t flen = r == 1 ? ((uint32_t)(unsigned char)fh[1] << 24) | ((uint32_t)(unsigned char)fh[2] << 16) |
                               ((uint32_t)(unsigned char)fh[3] << 8) | (uint32_t)(unsigned char)fh[4] : 0;
      if (r != 1 || flen > PTY_FRAME_MAX || (flen && pty_read_exact(frame, flen) != 1)) {
        /* The end of stdin (or a broken frame): the daemon hangs up. */
        stdin_open = 0;
        hangup_at = now;
        pid_t fg = tcgetpgrp(master);
        if (fg > 0) kill(-fg, SIGHUP);
        kill(-child, SIGHUP);
        kill(child, SIGCONT);
        continue;
      }
      if (fh[0] == 'D') {
        memcpy(pending + pending_len, frame, flen);
        pending_len = pty_flush_input(master, pending, pending_len + flen);
      } else if (fh[0] == 'R' && flen < 32) {
        char text[32];
        memcpy(text, frame, flen);
        text[flen] = '\0';
        if (pty_parse_size(text, &rows, &cols) == 0) pty_set_size(master, rows, cols);
      } else if (fh[0] == 'K' && flen < 8) {
        char text[8];
        memcpy(text, frame, flen);
        text[flen] = '\0';
        long sig = strtol(text, NULL, 10);
        if (sig >= 1 && sig < 65) kill(child, (int)sig);
      }
    }
  }
  if (!exited) {
    struct pty_reap r = { child, 0, 0 };
    tree_kill(child, child, pty_reap_child, &r, marker);
    if (!r.exited) waitpid(child, &r.status, 0);
    status = r.status;
  } else if (hangup_at >= 0) {
    /* Hung up, and the leader went first (a shell that dies of SIGHUP): what it left (nohup, a job
     * that ignores SIGHUP) goes too. Its pid may be reused by now: found by session and marker only. */
    tree_kill(-1, child, NULL, NULL, marker);
  }
  if (WIFSIGNALED(status)) return EXIT_SIGNAL_BASE + WTERMSIG(status);
  return WEXITSTATUS(status);
}

#endif
