/*
 * agentbox-docker-init: PID 1 and the exec wrapper inside a `docker` runtime sandbox (runc or runsc).
 *
 * Bind-mounted read-only at /.agentbox/init by the daemon; static, so nothing in the image matters.
 * Every mode first closes every descriptor above stdio (fd-hygiene.h).
 *
 *   init [--egress-relay PORT SOCKET] [--exec-agent SOCKET] [--memory-limit-kb N] [--seccomp]
 *                                  PID 1: blocks every signal and reaps orphans, forever; keeps the
 *                                  egress relay and the exec agent (as uid 1000) running; with a
 *                                  limit (gVisor), enforces it by killing the biggest process past
 *                                  it (memory-watchdog.h); with --seccomp, installs seccomp-deny.h's
 *                                  filter on itself (a container without a profile of its own).
 *   run TIMEOUT_MS TAG -- CMD ...  becomes a child subreaper, runs CMD in a session of its own, with
 *                                  its stdout and stderr relayed through pipes of its own, and exits
 *                                  with CMD's status (128+N for signal N) as soon as CMD exits: what
 *                                  CMD left running keeps running (reparented to PID 1), its output
 *                                  drained and discarded (exec-relay.h). On timeout it kills every
 *                                  descendant (background jobs and setsid escapees included,
 *                                  proc-tree.h) and exits 124; on SIGTERM/SIGINT/SIGHUP it does the
 *                                  same and exits 128+signal. TIMEOUT_MS 0 means no timeout. CMD runs
 *                                  with no_new_privs and the seccomp deny list (seccomp-deny.h).
 *   kill TAG                       sends SIGTERM to the `run` started with TAG (abort from outside:
 *                                  the Engine API has no way to signal an exec).
 *   fileop OP PATH                 read|write|list|remove|mkdir, with the same error line and listing
 *                                  protocol as agentbox-helper's `file` mode.
 *   ps                             lists the sandbox's processes (proc-list.h).
 *   signal NAME PID                sends signal NAME to the sandbox's process PID (never PID 1).
 *   drain FD...                    reads and discards the FDs until they have no writer left (the
 *                                  output of a background job whose exec has returned, exec-relay.h).
 *   agent SOCKET                   the exec agent of a gVisor sandbox (exec-agent.h): dials the daemon's
 *                                  socket and runs what it asks, as the user that started it (PID 1
 *                                  starts it with --exec-agent).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FAIL_PROGRAM "agentbox-init"
#include "exit-codes.h"
#include "fail.h"
#include "fd-hygiene.h"
#include "exec-agent.h"
#include "exec-relay.h"
#include "file-ops.h"
#include "memory-watchdog.h"
#include "egress-relay.h"
#include "pid1.h"
#include "proc-tree.h"
#include "proc-list.h"
#include "seccomp-deny.h"

#define EXIT_INIT EXIT_AGENTBOX_FAILED
/* The sandbox user (SANDBOX_USER in container-config.ts). */
#define SANDBOX_UID 1000
#define SANDBOX_GID 1000

/* ---------- init: PID 1 ---------- */

static long watchdog_tick(void *ctx) { return watchdog_check(ctx); }

/* PID 1's kept child that becomes the exec agent: the sandbox user, nothing of PID 1's rights. */
static pid_t agent_fork(void *ctx) {
  const char *socket_path = ctx;
  pid_t pid = fork();
  if (pid != 0) return pid;
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  /* From uid 0 to 1000 in every uid: the kernel clears the permitted and effective sets. */
  if (setgroups(0, NULL) != 0 || setgid(SANDBOX_GID) != 0 || setuid(SANDBOX_UID) != 0 || getuid() != SANDBOX_UID) _exit(EXIT_INIT);
  if (chdir("/") != 0) _exit(EXIT_INIT);
  char *envp[] = { "PATH=/usr/bin:/bin", NULL };
  execle(INIT_EXE, INIT_EXE, "agent", socket_path, (char *)NULL, envp);
  _exit(EXIT_INIT);
}

static int mode_init(int argc, char **argv) {
  if (getpid() != 1) die_msg("init must run as PID 1 of the container");
  struct egress_relay relay = {0, NULL, -1};
  const char *agent_socket = NULL;
  long memory_limit_kb = 0;
  int seccomp = 0;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--egress-relay") == 0 && i + 2 < argc) {
      relay.port = (int)parse_num(argv[i + 1], "relay port");
      relay.path = argv[i + 2];
      i += 2;
    } else if (strcmp(argv[i], "--exec-agent") == 0 && i + 1 < argc) {
      agent_socket = argv[++i];
    } else if (strcmp(argv[i], "--seccomp") == 0) {
      seccomp = 1;
    } else if (strcmp(argv[i], "--memory-limit-kb") == 0 && i + 1 < argc) {
      memory_limit_kb = parse_num(argv[++i], "memory limit");
    } else {
      fprintf(stderr, "agentbox-init: unknown init option %s\n", argv[i]);
      return EXIT_INIT;
    }
  }
  /* The container has no seccomp profile of its own (gVisor): the filter every command would get,
   * on PID 1 itself, so the relay, the agent and every command inherit it. */
  if (seccomp && (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || install_seccomp_deny() != 0)) die("seccomp");
  static struct memory_watchdog watchdog;
  struct pid1_tick tick = { watchdog_tick, &watchdog };
  if (memory_limit_kb > 0 && watchdog_open(&watchdog, memory_limit_kb) != 0) die("memory watchdog");
  struct pid1_child kept[2];
  int nkept = 0;
  if (relay.port > 0) {
    if (relay_listen(&relay) != 0) die("egress relay: listen");
    kept[nkept++] = (struct pid1_child){ relay_fork, &relay, 0, 0, 0, relay.listen_fd };
  }
  if (agent_socket) kept[nkept++] = (struct pid1_child){ agent_fork, (void *)agent_socket, 0, 0, 0, -1 };
  run_as_pid1(-1, kept, nkept, memory_limit_kb > 0 ? &tick : NULL);
  return EXIT_INIT;
}

/* ---------- run: one exec ---------- */

/* The exec's marker (AGENTBOX_EXEC_ID=<id>) from the wrapper's own environment, which CMD inherits; NULL without one. */
static const char *exec_marker(void) {
  static char marker[256];
  const char *id = getenv(EXEC_ID_ENV);
  if (!id || !*id || strlen(id) >= sizeof marker - sizeof EXEC_ID_ENV - 1) return NULL;
  snprintf(marker, sizeof marker, "%s=%s", EXEC_ID_ENV, id);
  return marker;
}

static int mode_run(int argc, char **argv) {
  if (argc < 4 || strcmp(argv[2], "--") != 0) die_msg("usage: run TIMEOUT_MS TAG -- CMD ...");
  long timeout_ms = parse_num(argv[0], "timeout");
  char **cmd = &argv[3];
  /* Until CMD exits, orphans below it (a double fork) are reparented here rather than to PID 1, so a
   * kill finds them by parent links (proc-tree.h). gVisor (runsc 2022) answers EINVAL: carry on, the
   * session and the exec's marker catch what the tree misses. */
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 && errno != EINVAL) die("PR_SET_CHILD_SUBREAPER");
  sigset_t old;
  struct exec_relay relay;
  if (exec_relay_open(&relay, &old) != 0) die("relay");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    exec_relay_child(&relay, &old);
    setsid();
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("no_new_privs");
    if (install_seccomp_deny() != 0) die("seccomp");
    execvp(cmd[0], cmd);
    int err = errno;
    fprintf(stderr, "agentbox: %s: %s\n", cmd[0], strerror(err));
    _exit(err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXECUTE);
  }
  exec_relay_started(&relay, child);
  long long deadline = timeout_ms > 0 ? monotonic_ms() + timeout_ms : 0;
  int sig = 0;
  int ev = exec_relay_wait(&relay, deadline, &sig);
  if (ev == RELAY_EXITED) {
    /* Background jobs the command left behind keep running (reparented to PID 1 once this exits). */
    exec_relay_finish(&relay);
    exec_relay_hand_off(&relay, NULL, NULL);
    return exec_relay_exit_code(&relay, EXIT_INIT);
  }
  tree_kill(getpid(), child, exec_relay_reap, &relay, exec_marker());
  /* What the command wrote before it was killed still goes out; nothing of its tree is left to drain. */
  exec_relay_finish(&relay);
  if (ev == RELAY_ERROR) die_msg("cannot wait for the command");
  return ev == RELAY_DEADLINE ? EXIT_TIMED_OUT : EXIT_SIGNAL_BASE + sig;
}

/* ---------- kill: abort a run from outside ---------- */

static int mode_kill(int argc, char **argv) {
  if (argc < 1) die_msg("usage: kill TAG");
  DIR *d = opendir("/proc");
  if (!d) die("/proc");
  int hits = 0;
  struct dirent *e;
  char tag[256];
  while ((e = readdir(d)) != NULL) {
    if (!isdigit((unsigned char)e->d_name[0])) continue;
    pid_t pid = (pid_t)atoi(e->d_name);
    if (run_tag_of(pid, tag, sizeof tag) == 0 && strcmp(tag, argv[0]) == 0 && kill(pid, SIGTERM) == 0) hits++;
  }
  closedir(d);
  return hits > 0 ? 0 : 1;
}

/* ---------- ps, signal: the sandbox's processes ---------- */

static int mode_signal(int argc, char **argv) {
  return signal_main(argc, argv);
}

/* ---------- fileop: file operations as the sandbox user ---------- */

static int mode_fileop(int argc, char **argv) {
  if (argc < 2) die_msg("usage: fileop OP PATH");
  int rc = file_op(argv[0], argv[1]);
  if (rc < 0) {
    fprintf(stderr, "agentbox-init: unknown file op %s\n", argv[0]);
    return EXIT_INIT;
  }
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: agentbox-docker-init init|run|kill|fileop|ps|signal|drain|agent ...\n");
    return EXIT_INIT;
  }
  /* A drainer keeps the descriptors it was started with (and closes the rest itself). */
  if (strcmp(argv[1], "drain") == 0) return drain_main(argc - 2, argv + 2);
  /* Whatever the process that started this one held (runc's, the Engine's, the exec agent's, the
   * daemon's through agentbox-helper), nothing above stdio is meant for the sandbox. */
  close_extra_fds(NULL, 0);
  const char *mode = argv[1];
  if (strcmp(mode, "init") == 0) return mode_init(argc - 2, argv + 2);
  if (strcmp(mode, "run") == 0) return mode_run(argc - 2, argv + 2);
  if (strcmp(mode, "kill") == 0) return mode_kill(argc - 2, argv + 2);
  if (strcmp(mode, "fileop") == 0) return mode_fileop(argc - 2, argv + 2);
  if (strcmp(mode, "ps") == 0) return ps_main();
  if (strcmp(mode, "signal") == 0) return mode_signal(argc - 2, argv + 2);
  if (strcmp(mode, "agent") == 0) {
    if (argc < 3) die_msg("usage: agent SOCKET");
    agent_main(argv[2]);
  }
  fprintf(stderr, "agentbox-init: unknown mode %s\n", mode);
  return EXIT_INIT;
}
