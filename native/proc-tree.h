/*
 * Killing a command's whole process tree from inside a docker sandbox, for agentbox-docker-init's
 * `run` wrapper and for the exec agent (exec-agent.h): a timeout or an abort must not leave
 * background jobs behind, nor a descendant that called setsid() or double-forked.
 *
 * A command runs as the leader of a session of its own. What belongs to it: the leader, every
 * process below it by parent links, every member of its session, every process whose environment
 * carries the exec's marker (AGENTBOX_EXEC_ID=<id>, inherited by every child), and everything below
 * those. Each covers what the others miss:
 *  - parent links: the whole tree while it stays attached. Under runc the `run` wrapper is a child
 *    subreaper until the leader exits (the only time a kill happens), so an orphan of a double fork
 *    is reparented to it, not to PID 1, and stays below it: parent links alone are then complete,
 *    whatever the command does (setsid included).
 *  - the session: a job whose parent died before the kill, when there is no subreaper.
 *  - the marker: gVisor refuses PR_SET_CHILD_SUBREAPER to everything but PID 1, and the exec agent
 *    is shared by every exec (a subreaper there would also adopt what earlier execs left running).
 *    There, a setsid + double-fork escapee is found by the environment it inherited. Only a process
 *    that leaves its session, loses its parent and drops the variable from its environment (exec
 *    with another one, or makes itself undumpable so /proc hides it) before the kill gets away; it
 *    then runs on like a background job, within the sandbox's limits, and ends with the sandbox.
 */
#ifndef AGENTBOX_PROC_TREE_H
#define AGENTBOX_PROC_TREE_H
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "procfs.h"

#define TREE_MAX_PROCS 65536

/* Whether PID's environment holds exactly the entry `marker` (K=V): matched as it is read, a page at a time. */
static int env_has(pid_t pid, const char *marker) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/environ", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  long mlen = (long)strlen(marker), pos = 0; /* bytes of the current entry matched so far; -1: not this one */
  int found = 0;
  ssize_t n;
  while (!found && (n = read(fd, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < n && !found; i++) {
      if (buf[i] == '\0') {
        found = pos == mlen;
        pos = 0;
      } else if (pos >= 0 && pos < mlen && buf[i] == marker[pos]) {
        pos++;
      } else {
        pos = -1;
      }
    }
  }
  close(fd);
  return found;
}

/* SIGKILLs, once, every live process below `root` (and `root` itself), every member of session
 * `session` and every process whose environment holds `marker` (NULL: none) with all below it,
 * never `self`; returns how many were found. Zombies are not counted: their parent reaps. */
static int tree_kill_once(pid_t root, pid_t session, pid_t self, const char *marker) {
  /* On the heap, not static: under gVisor a static array costs its full size in every process of the binary. */
  pid_t *pids = malloc(sizeof *pids * TREE_MAX_PROCS), *ppids = malloc(sizeof *ppids * TREE_MAX_PROCS);
  char *mark = malloc(TREE_MAX_PROCS);
  int n = 0;
  DIR *d = pids && ppids && mark ? opendir("/proc") : NULL;
  if (!d) {
    free(pids);
    free(ppids);
    free(mark);
    return 0;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL && n < TREE_MAX_PROCS) {
    if (!isdigit((unsigned char)e->d_name[0])) continue;
    pid_t pid = (pid_t)atoi(e->d_name);
    struct proc_stat st;
    if (pid == self || proc_stat_of(pid, &st) != 0 || st.state == 'Z' || st.state == 'X') continue;
    pids[n] = pid;
    ppids[n] = st.ppid;
    mark[n] = pid == root || st.ppid == root || st.sid == session || (marker && env_has(pid, marker));
    n++;
  }
  closedir(d);
  for (int grew = 1; grew;) {
    grew = 0;
    for (int i = 0; i < n; i++) {
      if (mark[i]) continue;
      for (int j = 0; j < n; j++) {
        if (mark[j] && ppids[i] == pids[j]) {
          mark[i] = grew = 1;
          break;
        }
      }
    }
  }
  int found = 0;
  for (int i = 0; i < n; i++) {
    if (mark[i]) {
      kill(pids[i], SIGKILL);
      found++;
    }
  }
  free(pids);
  free(ppids);
  free(mark);
  return found;
}

/* Kills the tree until nothing of it is left alive (at most ~1 s); reap(ctx) collects the caller's
 * exited children between rounds. `marker`: the exec's AGENTBOX_EXEC_ID=<id> entry, or NULL. */
static void tree_kill(pid_t root, pid_t session, void (*reap)(void *), void *ctx, const char *marker) {
  pid_t self = getpid();
  kill(-session, SIGKILL); /* the session's process group at once, then whatever left it */
  for (int round = 0; round < 1000; round++) {
    if (reap) reap(ctx);
    if (tree_kill_once(root, session, self, marker) == 0) break;
    struct timespec ts = { 0, 1000000 };
    nanosleep(&ts, NULL);
  }
  if (reap) reap(ctx);
}

#endif
