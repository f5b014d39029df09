/*
 * A connection to a server listening inside the sandbox, for the daemon's ports (src/runtime/ports.ts):
 * `connect PORT`, carried by the files transport of every driver (file-ops.h dispatches it), so it runs
 * where file operations do: inside the sandbox, as its user, under the seccomp filter. It connects to
 * 127.0.0.1:PORT, else [::1]:PORT, says `agentbox-port-connected` on stderr, and relays stdin to the
 * connection and the connection to stdout until both directions have ended (half-closes passed on).
 * Nothing of the sandbox's network changes: the connection is made from inside, over its loopback.
 * On failure one stderr line `agentbox-file-error:KIND:message` and exit 1, as the file operations.
 */
#ifndef AGENTBOX_PORT_CONNECT_H
#define AGENTBOX_PORT_CONNECT_H
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "byte-relay.h"

/* How long a connect may take: on the loopback it is answered at once, but a sandbox kernel without
 * IPv6 (gVisor's netstack) leaves a connect to [::1] waiting for ever. */
#define PORT_CONNECT_TIMEOUT_MS 3000

/* A connected TCP socket to PORT on the loopback of FAMILY, or -1 with errno (ETIMEDOUT past the limit). */
static int loopback_connect(int family, int port) {
  int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return -1;
  struct sockaddr_storage st;
  socklen_t len;
  memset(&st, 0, sizeof st);
  if (family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&st;
    a->sin_family = AF_INET;
    a->sin_port = htons((unsigned short)port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof *a;
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&st;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((unsigned short)port);
    a->sin6_addr = in6addr_loopback;
    len = sizeof *a;
  }
  int rc = connect(s, (struct sockaddr *)&st, len);
  if (rc < 0 && errno == EINPROGRESS) {
    struct pollfd p = { s, POLLOUT, 0 };
    int n;
    do n = poll(&p, 1, PORT_CONNECT_TIMEOUT_MS); while (n < 0 && errno == EINTR);
    int err = 0;
    socklen_t elen = sizeof err;
    if (n == 0) err = ETIMEDOUT;
    else if (n < 0 || getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) err = errno;
    rc = err ? -1 : 0;
    errno = err;
  }
  /* Relayed with blocking reads and writes from here on. */
  if (rc == 0 && fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_NONBLOCK) != 0) rc = -1;
  if (rc < 0) {
    int e = errno;
    close(s);
    errno = e;
    return -1;
  }
  return s;
}

static int port_connect(const char *port_text) {
  char *end = NULL;
  errno = 0;
  long port = strtol(port_text, &end, 10);
  if (errno || !end || *end || end == port_text || port < 1 || port > 65535) {
    fprintf(stderr, "agentbox-file-error:EINVAL:connect %s: not a port number\n", port_text);
    exit(1);
  }
  int s = loopback_connect(AF_INET, (int)port);
  /* A server on [::1] only: tried when nothing answered on 127.0.0.1 (a wildcard listener takes both). */
  if (s < 0 && errno == ECONNREFUSED) {
    s = loopback_connect(AF_INET6, (int)port);
    if (s < 0 && errno != ECONNREFUSED) errno = ECONNREFUSED;
  }
  if (s < 0) {
    fprintf(stderr, "agentbox-file-error:%s:connect %ld: %s\n", errno == ECONNREFUSED ? "ECONNREFUSED" : "ECONNFAILED", port, strerror(errno));
    exit(1);
  }
  fprintf(stderr, "agentbox-port-connected\n");
  fflush(stderr);
  relay_streams(0, 1, s, s);
  return 0;
}

#endif
