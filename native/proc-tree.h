/*
 * Killing a command's whole process tree from inside a docker sandbox, for agentbox-docker-init's
 * `run` wrapper and for the exec agent (exec-agent.h): a timeout or an abort must not leave
 * background jobs behind.
 *
 * A command runs as the leader of a session of its own. What belongs to it: the leader, every
 * process below it by parent links, and every member of its session. Under runc the `run` wrapper is
 * a child subreaper, so double-forked orphans stay below it; gVisor refuses the subreaper role, and
 * there only a setsid escapee whose parent died gets away.
 */
#ifndef AGENTBOX_PROC_TREE_H
#define AGENTBOX_PROC_TREE_H
#include <ctype.h>
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "procfs.h"

#define TREE_MAX_PROCS 65536

/* SIGKILLs, once, every live process below `root` (and `root` itself), and every member of session
 * `session`, never `self`; returns how many were found. Zombies are not counted: their parent reaps. */
static int tree_kill_once(pid_t root, pid_t session, pid_t self) {
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
    mark[n] = pid == root || st.ppid == root || st.sid == session;
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
 * exited children between rounds. */
static void tree_kill(pid_t root, pid_t session, void (*reap)(void *), void *ctx) {
  pid_t self = getpid();
  kill(-session, SIGKILL); /* the session's process group at once, then whatever left it */
  for (int round = 0; round < 1000; round++) {
    if (reap) reap(ctx);
    if (tree_kill_once(root, session, self) == 0) break;
    struct timespec ts = { 0, 1000000 };
    nanosleep(&ts, NULL);
  }
  if (reap) reap(ctx);
}

#endif
