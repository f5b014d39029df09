/*
 * The exec agent of a gVisor sandbox: an Engine exec into gVisor costs about 100 ms, and every
 * process created under gVisor's ptrace platform costs several more, so one long-lived agent runs
 * the daemon's commands, each with a single posix_spawn and nothing in between.
 *
 * It does what the `run` wrapper does for the other paths: the command runs as the leader of a
 * session of its own, with no_new_privs and the seccomp deny list (set once on the agent, inherited),
 * its tree is killed on timeout (exit 124), on the daemon's 'K' (exit 143, as a SIGTERM'd wrapper),
 * and when the daemon's connection goes away (proc-tree.h: parent links, session, and the exec's
 * AGENTBOX_EXEC_ID marker, since gVisor has no subreaper for the agent to be per exec).
 *
 * The exec ends when its leader exits (exec-relay.h says why): the agent then sends what the output
 * pipes hold (everything the leader wrote) and the exit status at once. A pipe a background job still
 * holds stays in the agent's poll loop, read and discarded until its last writer is gone, so the job
 * never gets SIGPIPE; the job itself is PID 1's (the agent is no subreaper).
 *
 * PID 1 starts it as the sandbox user (`init --exec-agent`, and again if it dies). It keeps one idle
 * connection dialled to the daemon's socket in a directory bound into the sandbox (runsc
 * --host-uds=open); a request on it becomes a session and the agent dials again. One poll loop relays every session;
 * nothing blocks on a slow reader but that reader's own session.
 *
 * A session ends with the agent's half-close after its 'X'; the agent reads (and drops) whatever the
 * daemon still sends until the daemon closes too. Closing at once would leave the daemon's late
 * stdin, 'E' or 'K' unread: on a Unix socket that resets the connection or fails the daemon's next
 * write, and Node then drops the connection with the 'X' it had not read yet (the exec came back as
 * 137 with no output, a refused file write as a 500).
 *
 * Frames both ways: type (1 byte), payload length (4 bytes, big-endian), payload.
 *   daemon -> agent  'R' request: NUL-terminated cwd, timeout_ms (0: none), argc, argv..., env (K=V)...
 *                    'I' stdin bytes   'E' end of stdin   'K' kill the command's tree
 *   agent -> daemon  'P' the command's pid (4 bytes)   'O' stdout   'e' stderr
 *                    'X' exit status (4 bytes): the command's, 128+N for signal N, 124 on timeout
 * The memory watchdog names a kill in a command started here `@PID` (memory-watchdog.h).
 */
#ifndef AGENTBOX_EXEC_AGENT_H
#define AGENTBOX_EXEC_AGENT_H
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include "exit-codes.h"
#include "proc-tree.h"
#include "procfs.h"
#include "seccomp-deny.h"

#define AGENT_MAX_REQUEST (8u << 20)
#define AGENT_MAX_ARGS 65536
#define AGENT_MAX_SESSIONS 64
#define AGENT_CHUNK 65536
/* Stdin held for a command that does not read it; past this, frames from the daemon wait. */
#define AGENT_STDIN_BACKLOG (1u << 20)
#define AGENT_EXIT_KILLED (EXIT_SIGNAL_BASE + SIGTERM)
/* How long a finished session waits for the daemon's close (after the last bytes from it) before closing anyway. */
#define AGENT_LINGER_MS 10000
/* Pipes of background jobs whose exec has returned, drained and discarded; past this, a newly left
 * pipe is closed instead (its writer then gets EPIPE). */
#define AGENT_MAX_DISCARD 256

struct agent_session {
  int used;
  int conn, in, out, err;
  pid_t pid;
  int exited, status;
  int forced;            /* 0, or the exit status a kill by the agent decided (124, 143) */
  long long deadline_ms; /* 0: none */
  unsigned char *rbuf; /* frames from the daemon, one at most (5 + AGENT_CHUNK); allocated per session:
                        * under gVisor a static buffer costs its full size in every process of this binary */
  size_t rlen;
  char *in_buf; /* stdin bytes on their way to the command */
  size_t in_len, in_off;
  int stdin_eof;
  char *out_buf; /* frames on their way to the daemon */
  size_t out_len, out_off;
  long long linger_until_ms; /* 0, or: all sent and half-closed, waiting for the daemon's close until then (or more from it) */
  char *marker; /* the exec's AGENTBOX_EXEC_ID=<id> entry from its request, or NULL */
};

static struct agent_session agent_sessions[AGENT_MAX_SESSIONS];
static int agent_discard[AGENT_MAX_DISCARD];
static int agent_ndiscard;

/* A free session slot, or NULL when AGENT_MAX_SESSIONS are running. */
static struct agent_session *agent_slot(void) {
  for (int i = 0; i < AGENT_MAX_SESSIONS; i++) if (!agent_sessions[i].used) return &agent_sessions[i];
  return NULL;
}

static uint32_t agent_be32(const unsigned char *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3]; }

/* Queues a frame for the daemon; it is sent as the connection takes it. */
static void agent_queue(struct agent_session *s, char type, const void *p, uint32_t n) {
  if (s->conn < 0) return;
  if (s->out_off > 0 && s->out_off == s->out_len) s->out_off = s->out_len = 0;
  char *grown = realloc(s->out_buf, s->out_len + 5 + n);
  if (!grown) _exit(EXIT_FAILURE);
  s->out_buf = grown;
  unsigned char h[5] = {(unsigned char)type, (unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n};
  memcpy(s->out_buf + s->out_len, h, 5);
  if (n) memcpy(s->out_buf + s->out_len + 5, p, n);
  s->out_len += 5 + n;
}

static void agent_queue_u32(struct agent_session *s, char type, uint32_t v) {
  unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
  agent_queue(s, type, b, 4);
}

static void agent_reap(void *ctx) {
  (void)ctx;
  int status;
  pid_t dead;
  while ((dead = waitpid(-1, &status, WNOHANG)) > 0) {
    for (int i = 0; i < AGENT_MAX_SESSIONS; i++) {
      struct agent_session *s = &agent_sessions[i];
      if (s->used && s->pid == dead && !s->exited) {
        s->exited = 1;
        s->status = status;
      }
    }
  }
}

static void agent_kill(struct agent_session *s, int forced) {
  if (s->forced) return;
  s->forced = forced;
  tree_kill(s->pid, s->pid, agent_reap, NULL, s->marker);
}

/* The daemon is gone: end the command; nobody is left to tell. */
static void agent_drop(struct agent_session *s) {
  if (s->conn < 0) return;
  close(s->conn);
  s->conn = -1;
  s->out_len = s->out_off = 0;
  if (!s->exited) agent_kill(s, AGENT_EXIT_KILLED);
}

static void agent_free(struct agent_session *s) {
  int *fds[] = {&s->conn, &s->in, &s->out, &s->err};
  for (int i = 0; i < 4; i++) if (*fds[i] >= 0) close(*fds[i]);
  free(s->rbuf);
  free(s->in_buf);
  free(s->out_buf);
  free(s->marker);
  memset(s, 0, sizeof *s);
}

static int agent_dial(const char *path) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int agent_read_all(int fd, void *p, size_t n) {
  char *c = p;
  while (n > 0) {
    ssize_t r = read(fd, c, n);
    if (r == 0) return -1;
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    c += r;
    n -= (size_t)r;
  }
  return 0;
}

/* A command that could not start: its error line and status, as the `run` wrapper would give them. */
static void agent_refuse(struct agent_session *s, const char *what, const char *name, int err, int code) {
  char msg[512];
  int m = snprintf(msg, sizeof msg, "agentbox: %s%s: %s\n", what, name, strerror(err));
  agent_queue(s, 'e', msg, (uint32_t)(m < (int)sizeof msg ? m : (int)sizeof msg - 1));
  agent_queue_u32(s, 'X', (uint32_t)code);
}

/* Parses a request and starts its command; the session reports the outcome either way. */
static void agent_start(struct agent_session *s, char *req, uint32_t len) {
  char **strs = malloc(sizeof *strs * (AGENT_MAX_ARGS * 2 + 4));
  int n = 0;
  for (uint32_t off = 0; strs && off < len && n < AGENT_MAX_ARGS * 2 + 3; off += (uint32_t)strlen(req + off) + 1) strs[n++] = req + off;
  int argc = n >= 4 ? atoi(strs[2]) : 0;
  if (!strs || argc < 1 || argc > AGENT_MAX_ARGS || 3 + argc > n) {
    free(strs);
    agent_refuse(s, "bad request", "", EINVAL, EXIT_AGENTBOX_FAILED);
    return;
  }
  const char *cwd = strs[0];
  long long timeout_ms = atoll(strs[1]);
  int envc = n - 3 - argc;
  char **env = malloc(sizeof *env * (size_t)(envc + 1));
  if (!env) _exit(EXIT_FAILURE);
  memcpy(env, strs + 3 + argc, sizeof *env * (size_t)envc);
  env[envc] = NULL;
  char **argv = strs + 3;
  argv[argc] = NULL;

  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
    agent_refuse(s, "pipe", "", errno, EXIT_CANNOT_EXECUTE);
    goto done;
  }
  /* The command's PATH lookup uses the command's own PATH, as execvp in the `run` wrapper does. */
  const char *path = NULL;
  for (char **e = env; *e; e++) {
    if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
    if (strncmp(*e, "AGENTBOX_EXEC_ID=", 17) == 0 && (*e)[17] && !s->marker) s->marker = strdup(*e);
  }
  if (path) setenv("PATH", path, 1);
  else unsetenv("PATH");
  /* Single-threaded: entering the cwd here and leaving it after the spawn races with nothing. */
  if (chdir(cwd) != 0) {
    agent_refuse(s, "cannot enter ", cwd, errno, EXIT_CANNOT_EXECUTE);
    goto done;
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  /* No addclosefrom here: under runsc 2022 it made spawned commands die (SIGKILL, intermittently).
   * The agent closed everything above stdio when it started, and opens every descriptor close-on-exec. */
  posix_spawnattr_init(&at);
  sigset_t none, dfl;
  sigemptyset(&none);
  sigemptyset(&dfl);
  sigaddset(&dfl, SIGPIPE); /* ignored by the agent; the command gets the default */
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &dfl);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, &at, argv, env);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  if (chdir("/") != 0) {}
  if (rc != 0) {
    agent_refuse(s, "", argv[0], rc, rc == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXECUTE);
    goto done;
  }
  s->pid = pid;
  s->in = in[1];
  s->out = out[0];
  s->err = err[0];
  in[1] = out[0] = err[0] = -1;
  fcntl(s->in, F_SETFL, O_NONBLOCK);
  fcntl(s->out, F_SETFL, O_NONBLOCK);
  fcntl(s->err, F_SETFL, O_NONBLOCK);
  s->deadline_ms = timeout_ms > 0 ? monotonic_ms() + timeout_ms : 0;
  agent_queue_u32(s, 'P', (uint32_t)pid);
done:
  for (int i = 0; i < 2; i++) {
    if (in[i] >= 0) close(in[i]);
    if (out[i] >= 0) close(out[i]);
    if (err[i] >= 0) close(err[i]);
  }
  free(env);
  free(strs);
}

/* Takes the request off a fresh connection (the daemon writes it whole, right away). */
static void agent_accept(int conn) {
  struct agent_session *s = agent_slot();
  unsigned char h[5];
  if (!s || agent_read_all(conn, h, 5) != 0) {
    close(conn);
    return;
  }
  uint32_t len = agent_be32(h + 1);
  char *req = h[0] == 'R' && len > 0 && len <= AGENT_MAX_REQUEST ? malloc(len + 1) : NULL;
  if (!req || agent_read_all(conn, req, len) != 0) {
    free(req);
    close(conn);
    return;
  }
  req[len] = '\0';
  memset(s, 0, sizeof *s);
  s->rbuf = malloc(5 + AGENT_CHUNK);
  if (!s->rbuf) _exit(EXIT_FAILURE);
  s->used = 1;
  s->conn = conn;
  s->in = s->out = s->err = -1;
  fcntl(conn, F_SETFL, O_NONBLOCK);
  agent_start(s, req, len);
  free(req);
  if (s->pid == 0) s->exited = 1; /* refused: only its frames are left to send */
}

/* Frames from the daemon: stdin, its end, a kill. */
static void agent_read_conn(struct agent_session *s) {
  ssize_t r = read(s->conn, s->rbuf + s->rlen, 5 + AGENT_CHUNK - s->rlen);
  if (r < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (r <= 0) {
    agent_drop(s);
    return;
  }
  s->rlen += (size_t)r;
  if (s->linger_until_ms) s->linger_until_ms = monotonic_ms() + AGENT_LINGER_MS; /* stdin still coming: the daemon is there */
  while (s->rlen >= 5) {
    uint32_t flen = agent_be32(s->rbuf + 1);
    if (flen > AGENT_CHUNK) {
      agent_drop(s);
      return;
    }
    if (s->rlen < 5 + flen) break;
    char type = (char)s->rbuf[0];
    if (type == 'I' && s->in >= 0 && flen > 0) {
      if (s->in_off == s->in_len) s->in_off = s->in_len = 0;
      char *grown = realloc(s->in_buf, s->in_len + flen);
      if (!grown) _exit(EXIT_FAILURE);
      s->in_buf = grown;
      memcpy(s->in_buf + s->in_len, s->rbuf + 5, flen);
      s->in_len += flen;
    } else if (type == 'E') {
      s->stdin_eof = 1;
    } else if (type == 'K' && s->pid > 0) { /* also after the leader exited: a background job may hold its output */
      agent_kill(s, AGENT_EXIT_KILLED);
    }
    memmove(s->rbuf, s->rbuf + 5 + flen, s->rlen - 5 - flen);
    s->rlen -= 5 + flen;
  }
}

/* Output of the command, read only while nothing is waiting for the daemon (its backpressure). */
static void agent_read_output(struct agent_session *s, int *fd, char type) {
  char buf[AGENT_CHUNK];
  ssize_t r = read(*fd, buf, sizeof buf);
  if (r > 0) {
    agent_queue(s, type, buf, (uint32_t)r);
    return;
  }
  if (r < 0 && (errno == EINTR || errno == EAGAIN)) return;
  close(*fd);
  *fd = -1;
}

/* After the leader's exit: queues the FIONREAD bytes the pipe holds, then closes it if no writer is
 * left, or moves it to the discard set. */
static void agent_take_rest(struct agent_session *s, int *fd, char type) {
  if (*fd < 0) return;
  int n = 0;
  if (ioctl(*fd, FIONREAD, &n) != 0) n = 0;
  char *buf = n > 0 ? malloc((size_t)n) : NULL;
  size_t got = 0;
  while (buf && got < (size_t)n) {
    ssize_t r = read(*fd, buf + got, (size_t)n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  for (size_t off = 0; off < got; off += AGENT_CHUNK) agent_queue(s, type, buf + off, (uint32_t)(got - off < AGENT_CHUNK ? got - off : AGENT_CHUNK));
  free(buf);
  struct pollfd p = { *fd, POLLIN, 0 };
  int hup = poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
  if (hup || agent_ndiscard >= AGENT_MAX_DISCARD) close(*fd);
  else agent_discard[agent_ndiscard++] = *fd;
  *fd = -1;
}

/* A discarded pipe is readable: drop what it holds; close it once its last writer is gone. */
static void agent_discard_ready(int k) {
  char buf[4096];
  ssize_t r = read(agent_discard[k], buf, sizeof buf);
  if (r > 0 || (r < 0 && (errno == EINTR || errno == EAGAIN))) return;
  close(agent_discard[k]);
  agent_discard[k] = -1;
}

static void agent_flush(struct agent_session *s) {
  while (s->conn >= 0 && s->out_off < s->out_len) {
    ssize_t w = write(s->conn, s->out_buf + s->out_off, s->out_len - s->out_off);
    if (w > 0) s->out_off += (size_t)w;
    else if (w < 0 && errno == EINTR) continue;
    else if (w < 0 && errno == EAGAIN) return;
    else agent_drop(s);
  }
}

static void agent_feed_stdin(struct agent_session *s) {
  ssize_t w = write(s->in, s->in_buf + s->in_off, s->in_len - s->in_off);
  if (w > 0) s->in_off += (size_t)w;
  else if (w < 0 && errno != EAGAIN && errno != EINTR) {
    close(s->in); /* the command closed its stdin: what is left for it is dropped */
    s->in = -1;
    s->in_off = s->in_len = 0;
  }
}

/* After a leader has exited: report, or, once nobody listens, let the session go. */
static void agent_settle(struct agent_session *s) {
  if (s->in >= 0 && (s->exited || (s->stdin_eof && s->in_off == s->in_len))) {
    close(s->in);
    s->in = -1;
    s->in_off = s->in_len = 0; /* what the command did not take is dropped; the daemon's frames are read on */
  }
  if (!s->exited) return;
  /* The leader exited on its own: what the pipes hold now is everything it wrote; a pipe with a writer
   * left (a background job) is drained from here on, not waited for. */
  if (!s->forced && s->conn >= 0) {
    agent_take_rest(s, &s->out, 'O');
    agent_take_rest(s, &s->err, 'e');
  }
  /* Killed, or nobody to tell: what the pipes still hold is all there will be (an escapee may keep them open). */
  if (s->forced || s->conn < 0) {
    if (s->out >= 0) agent_read_output(s, &s->out, 'O');
    if (s->err >= 0) agent_read_output(s, &s->err, 'e');
    if (s->out >= 0) { close(s->out); s->out = -1; }
    if (s->err >= 0) { close(s->err); s->err = -1; }
  }
  if (s->out >= 0 || s->err >= 0) return;
  if (s->conn >= 0 && s->pid > 0) {
    int st = s->status;
    uint32_t code = s->forced ? (uint32_t)s->forced : WIFEXITED(st) ? (uint32_t)WEXITSTATUS(st) : WIFSIGNALED(st) ? (uint32_t)EXIT_SIGNAL_BASE + (uint32_t)WTERMSIG(st) : (uint32_t)EXIT_AGENTBOX_FAILED;
    s->pid = -s->pid; /* reported: never again */
    agent_queue_u32(s, 'X', code);
  }
  agent_flush(s);
  if (s->conn >= 0 && s->out_off < s->out_len) return;
  if (s->conn >= 0) {
    /* All sent: half-close, then read until the daemon's close (agent_read_conn drops what comes). */
    long long now = monotonic_ms();
    if (s->linger_until_ms == 0) {
      s->linger_until_ms = now + AGENT_LINGER_MS;
      if (shutdown(s->conn, SHUT_WR) != 0) s->linger_until_ms = now;
    }
    if (now < s->linger_until_ms) return;
  }
  agent_free(s);
}

enum { AK_SIGNAL, AK_IDLE, AK_CONN, AK_OUT, AK_ERR, AK_IN, AK_DISCARD };

__attribute__((noreturn)) static void agent_main(const char *socket_path) {
  /* Not dumpable: it runs as the sandbox user, and a command of that uid could otherwise open the
   * agent's descriptors (other execs' stdin and output pipes) through /proc/AGENT/fd, or its memory
   * through /proc/AGENT/mem; ptrace itself is refused by the seccomp filter. */
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || install_seccomp_deny() != 0) _exit(EXIT_FAILURE);
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) _exit(EXIT_FAILURE);
  int idle = -1;
  long backoff_ms = 0;
  enum { MAXP = 2 + 4 * AGENT_MAX_SESSIONS + AGENT_MAX_DISCARD };
  struct pollfd p[MAXP];
  int owner[MAXP], kind[MAXP];
  for (;;) {
    int free_slot = agent_slot() != NULL;
    if (idle < 0 && free_slot) {
      idle = agent_dial(socket_path);
      backoff_ms = idle >= 0 ? 0 : backoff_ms == 0 ? 10 : backoff_ms < 500 ? backoff_ms * 2 : 1000;
    }
    long long now = monotonic_ms(), next_deadline = 0;
    int np = 0;
    p[np] = (struct pollfd){sfd, POLLIN, 0}; kind[np++] = AK_SIGNAL;
    if (idle >= 0) { p[np] = (struct pollfd){idle, POLLIN, 0}; kind[np++] = AK_IDLE; }
    for (int i = 0; i < AGENT_MAX_SESSIONS; i++) {
      struct agent_session *s = &agent_sessions[i];
      if (!s->used) continue;
      if (s->deadline_ms && !s->forced && s->pid > 0) {
        if (now >= s->deadline_ms) agent_kill(s, EXIT_TIMED_OUT);
        else if (!next_deadline || s->deadline_ms < next_deadline) next_deadline = s->deadline_ms;
      }
      if (s->linger_until_ms && (!next_deadline || s->linger_until_ms < next_deadline)) next_deadline = s->linger_until_ms;
      int backlog = s->out_off < s->out_len;
      if (s->conn >= 0) {
        short ev = (short)((s->in_len - s->in_off < AGENT_STDIN_BACKLOG ? POLLIN : 0) | (backlog ? POLLOUT : 0));
        if (ev) { p[np] = (struct pollfd){s->conn, ev, 0}; owner[np] = i; kind[np++] = AK_CONN; }
      }
      if (!backlog && s->out >= 0) { p[np] = (struct pollfd){s->out, POLLIN, 0}; owner[np] = i; kind[np++] = AK_OUT; }
      if (!backlog && s->err >= 0) { p[np] = (struct pollfd){s->err, POLLIN, 0}; owner[np] = i; kind[np++] = AK_ERR; }
      if (s->in >= 0 && s->in_off < s->in_len) { p[np] = (struct pollfd){s->in, POLLOUT, 0}; owner[np] = i; kind[np++] = AK_IN; }
    }
    for (int k = 0; k < agent_ndiscard; k++) { p[np] = (struct pollfd){agent_discard[k], POLLIN, 0}; owner[np] = k; kind[np++] = AK_DISCARD; }
    int wait_ms = -1;
    if (idle < 0 && free_slot) wait_ms = (int)backoff_ms;
    if (next_deadline) {
      long long left = next_deadline - now;
      if (wait_ms < 0 || left < wait_ms) wait_ms = (int)(left < 0 ? 0 : left);
    }
    if (poll(p, (nfds_t)np, wait_ms) < 0 && errno != EINTR) _exit(EXIT_FAILURE);
    for (int k = 0; k < np; k++) {
      if (!p[k].revents) continue;
      if (kind[k] == AK_SIGNAL) {
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) > 0) {}
        agent_reap(NULL);
        continue;
      }
      if (kind[k] == AK_IDLE) {
        agent_accept(idle);
        idle = -1;
        continue;
      }
      if (kind[k] == AK_DISCARD) {
        agent_discard_ready(owner[k]);
        continue;
      }
      struct agent_session *s = &agent_sessions[owner[k]];
      if (!s->used) continue;
      if (kind[k] == AK_CONN && s->conn >= 0) {
        if (p[k].revents & POLLOUT) agent_flush(s);
        if (s->conn >= 0 && (p[k].revents & (POLLIN | POLLHUP | POLLERR))) agent_read_conn(s);
      } else if (kind[k] == AK_OUT && s->out >= 0) agent_read_output(s, &s->out, 'O');
      else if (kind[k] == AK_ERR && s->err >= 0) agent_read_output(s, &s->err, 'e');
      else if (kind[k] == AK_IN && s->in >= 0) agent_feed_stdin(s);
    }
    int kept = 0;
    for (int k = 0; k < agent_ndiscard; k++) if (agent_discard[k] >= 0) agent_discard[kept++] = agent_discard[k];
    agent_ndiscard = kept;
    for (int i = 0; i < AGENT_MAX_SESSIONS; i++) {
      struct agent_session *s = &agent_sessions[i];
      if (!s->used) continue;
      agent_flush(s);
      if (s->used) agent_settle(s);
    }
  }
}

#endif
