/*
 * The egress relay, started by PID 1 of a sandbox with network: listens on 127.0.0.1:PORT inside
 * the sandbox and joins each connection to the egress proxy's Unix socket (bound into the
 * sandbox by the runtime). It holds nothing the sandbox could not reach anyway; it exists so
 * that ordinary clients (HTTP_PROXY=http://127.0.0.1:PORT) can use a proxy they only know by TCP.
 * One forked process per connection keeps it simple: each is a blocking poll() loop on two fds.
 */
#ifndef AGENTBOX_EGRESS_RELAY_H
#define AGENTBOX_EGRESS_RELAY_H
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "byte-relay.h"
#include "seccomp-deny.h"

struct egress_relay {
  int port;          /* 0: no relay */
  const char *path;  /* proxy socket inside the sandbox */
  int listen_fd;     /* bound by PID 1 before it reports ready (relay_listen); -1 until then */
};

/* PID 1 binds 127.0.0.1:PORT before it reports ready, so a sandbox's first exec never finds the
 * proxy port closed: connections wait in the backlog until the relay (and any restarted relay,
 * which inherits the same socket) accepts them. Returns 0, or -1 with errno. */
static int relay_listen(struct egress_relay *r) {
  int l = loopback_listen(r->port);
  if (l < 0) return -1;
  r->listen_fd = l;
  return 0;
}

static void relay_connection(int client, const char *path) {
  int up = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
  if (up < 0 || connect(up, (struct sockaddr *)&sa, sizeof sa) < 0) {
    static const char msg[] =
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        "agentbox egress: the sandbox's egress proxy is not running\n";
    if (write(client, msg, sizeof msg - 1) < 0) {}
    _exit(1);
  }
  relay_streams(client, client, up, up);
  _exit(0);
}

static void relay_main(int l, const char *path) {
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  /* It parses nothing, but it does face the sandbox's connections: give it the commands' filter too. */
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || install_seccomp_deny() != 0) _exit(1);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGCHLD, SIG_IGN); /* connection processes reap themselves */
  signal(SIGPIPE, SIG_IGN);
  int one = 1;
  for (;;) {
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE || errno == EAGAIN) continue;
      _exit(1);
    }
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pid_t pid = fork();
    if (pid == 0) {
      close(l);
      relay_connection(c, path);
    }
    close(c);
  }
}

/* For PID 1's kept children (pid1.h): forks the relay; its pid, or -1. */
static pid_t relay_fork(void *ctx) {
  struct egress_relay *r = ctx;
  pid_t pid = fork();
  if (pid == 0) {
    relay_main(r->listen_fd, r->path);
    _exit(1);
  }
  return pid;
}

#endif
