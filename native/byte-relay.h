/*
 * Moving bytes between two connections until both directions have ended, and the loopback listener
 * the egress relays accept on. Used by PID 1's relay (egress-relay.h: a TCP connection and the
 * proxy's Unix socket) and by the microVM guest agent (a TCP connection and a stream's stdin/stdout
 * pipes, which the host joins to the proxy).
 */
#ifndef AGENTBOX_BYTE_RELAY_H
#define AGENTBOX_BYTE_RELAY_H
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A listening TCP socket on 127.0.0.1:PORT (close-on-exec, backlog 128), or -1 with errno. */
static int loopback_listen(int port) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((unsigned short)port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(l, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(l, 128) < 0) {
    int e = errno;
    if (l >= 0) close(l);
    errno = e;
    return -1;
  }
  return l;
}

/* Copy what is readable on `from` to `to`; 0 on EOF, -1 on error, 1 otherwise. */
static int relay_move(int from, int to, char *buf, size_t len) {
  ssize_t n = read(from, buf, len);
  if (n == 0) return 0;
  if (n < 0) return errno == EINTR || errno == EAGAIN ? 1 : -1;
  for (ssize_t off = 0; off < n;) {
    ssize_t w = write(to, buf + off, (size_t)(n - off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    off += w;
  }
  return 1;
}

/* The end of one direction: a socket is half-closed (its other direction goes on), a pipe closed. */
static void relay_end_writing(int fd) {
  if (shutdown(fd, SHUT_WR) < 0 && errno == ENOTSOCK) close(fd);
}

/*
 * a_in -> b_out and b_in -> a_out until both have ended; the end of one is passed on as the end of
 * writing to the other side. A socket is its own in and out (relay_streams(s, s, t, t)).
 */
static void relay_streams(int a_in, int a_out, int b_in, int b_out) {
  static char buf[65536];
  int open_ab = 1, open_ba = 1;
  while (open_ab || open_ba) {
    /* An ended direction's fd is left out (-1): a peer's hang-up would otherwise wake poll() forever. */
    struct pollfd p[2] = {{open_ab ? a_in : -1, POLLIN, 0}, {open_ba ? b_in : -1, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (open_ab && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      int r = relay_move(a_in, b_out, buf, sizeof buf);
      if (r < 0) return;
      if (r == 0) { open_ab = 0; relay_end_writing(b_out); }
    }
    if (open_ba && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      int r = relay_move(b_in, a_out, buf, sizeof buf);
      if (r < 0) return;
      if (r == 0) { open_ba = 0; relay_end_writing(a_out); }
    }
  }
}

#endif
