/*
 * `ps` and `signal` from inside a sandbox, for both programs (agentbox-helper on local, after entering
 * the sandbox as its user; agentbox-docker-init in a container, as uid 1000). Run inside, so pids are
 * the sandbox's own and a signal can reach nothing outside it.
 *
 * ps: one record per process, every field NUL-terminated: pid, ppid, uid, user name ('' when
 * /etc/passwd does not name it), exec id (the value of AGENTBOX_EXEC_ID in its environment; '' when it
 * has none or the environment is not readable, as for the sandbox's init), argc, then argc arguments
 * (the command line; `[comm]` when it is empty). The TS side is src/runtime/processes.ts.
 *
 * signal NAME PID: sends the signal; exit 0. Refused: PID 1 (the sandbox's init). Errors as one line
 * `agentbox-proc-error:CODE:message` on stderr and exit 1, CODE one of not_found, forbidden, bad_request.
 */
#ifndef AGENTBOX_PROC_LIST_H
#define AGENTBOX_PROC_LIST_H
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "procfs.h"

#define PS_MAX_USERS 256
#define PS_MAX_CMDLINE 8192
#define PS_EXEC_ENV "AGENTBOX_EXEC_ID="

struct ps_user {
  unsigned uid;
  char name[33];
};

/* uid -> name from the sandbox's own /etc/passwd. */
static int ps_users(struct ps_user *users, int max) {
  FILE *f = fopen("/etc/passwd", "re");
  if (!f) return 0;
  char line[512];
  int n = 0;
  while (n < max && fgets(line, sizeof line, f)) {
    char *name = strtok(line, ":");
    char *pw = name ? strtok(NULL, ":") : NULL;
    char *uid = pw ? strtok(NULL, ":") : NULL;
    if (!uid || strlen(name) >= sizeof users[n].name) continue;
    char *end;
    unsigned long v = strtoul(uid, &end, 10);
    if (*end || end == uid) continue;
    users[n].uid = (unsigned)v;
    snprintf(users[n].name, sizeof users[n].name, "%s", name);
    n++;
  }
  fclose(f);
  return n;
}

/* The value of AGENTBOX_EXEC_ID in PID's environment, into out; '' when absent or unreadable. */
static void ps_exec_id(pid_t pid, char *out, size_t size) {
  char path[64], buf[4096], entry[256];
  out[0] = '\0';
  snprintf(path, sizeof path, "/proc/%d/environ", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  size_t len = 0;
  int overlong = 0;
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] != '\0') {
        if (len < sizeof entry - 1) entry[len++] = buf[i];
        else overlong = 1;
        continue;
      }
      entry[len] = '\0';
      if (!overlong && strncmp(entry, PS_EXEC_ENV, sizeof PS_EXEC_ENV - 1) == 0) {
        size_t vlen = strlen(entry + sizeof PS_EXEC_ENV - 1);
        if (vlen < size) memcpy(out, entry + sizeof PS_EXEC_ENV - 1, vlen + 1);
        close(fd);
        return;
      }
      len = 0;
      overlong = 0;
    }
  }
  close(fd);
}

static unsigned ps_uid_of(pid_t pid) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  if (proc_read(path, buf, sizeof buf) <= 0) return (unsigned)-1;
  const char *u = strstr(buf, "\nUid:");
  return u ? (unsigned)strtoul(u + 5, NULL, 10) : (unsigned)-1;
}

static int ps_main(void) {
  struct ps_user *users = malloc(sizeof *users * PS_MAX_USERS);
  char *cmd = malloc(PS_MAX_CMDLINE);
  if (!users || !cmd) return 1;
  int nusers = ps_users(users, PS_MAX_USERS);
  DIR *d = opendir("/proc");
  if (!d) {
    fprintf(stderr, "agentbox-proc-error:internal:cannot read /proc: %s\n", strerror(errno));
    return 1;
  }
  pid_t self = getpid();
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!isdigit((unsigned char)e->d_name[0])) continue;
    pid_t pid = (pid_t)atoi(e->d_name);
    struct proc_stat st;
    if (pid == self || proc_stat_of(pid, &st) != 0 || st.state == 'Z' || st.state == 'X') continue;
    unsigned uid = ps_uid_of(pid);
    const char *user = "";
    for (int i = 0; i < nusers; i++) if (users[i].uid == uid) { user = users[i].name; break; }
    char exec_id[128];
    ps_exec_id(pid, exec_id, sizeof exec_id);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    ssize_t n = proc_read(path, cmd, PS_MAX_CMDLINE);
    if (n < 0) continue; /* gone meanwhile */
    int argc = 0;
    for (ssize_t i = 0; i < n; i++) if (cmd[i] == '\0') argc++;
    if (n > 0 && cmd[n - 1] != '\0') argc++; /* cut at the limit: the last argument is partial */
    printf("%d%c%d%c%u%c%s%c%s%c", pid, 0, st.ppid, 0, uid, 0, user, 0, exec_id, 0);
    if (argc == 0) {
      printf("1%c[%s]%c", 0, st.comm, 0);
      continue;
    }
    printf("%d%c", argc, 0);
    fwrite(cmd, 1, (size_t)n, stdout);
    if (cmd[n - 1] != '\0') putchar(0);
  }
  closedir(d);
  free(users);
  free(cmd);
  return fflush(stdout) == 0 ? 0 : 1;
}

static const struct { const char *name; int sig; } PS_SIGNALS[] = {
  { "TERM", SIGTERM }, { "KILL", SIGKILL }, { "INT", SIGINT }, { "HUP", SIGHUP }, { "QUIT", SIGQUIT },
  { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "STOP", SIGSTOP }, { "CONT", SIGCONT },
};

static int signal_main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "agentbox-proc-error:bad_request:usage: signal NAME PID\n");
    return 1;
  }
  int sig = 0;
  for (size_t i = 0; i < sizeof PS_SIGNALS / sizeof PS_SIGNALS[0]; i++) if (strcmp(argv[0], PS_SIGNALS[i].name) == 0) sig = PS_SIGNALS[i].sig;
  char *end;
  long pid = strtol(argv[1], &end, 10);
  if (!sig || *end || end == argv[1] || pid < 1 || pid > 4194304) {
    fprintf(stderr, "agentbox-proc-error:bad_request:cannot send %s to %s\n", argv[0], argv[1]);
    return 1;
  }
  if (pid == 1) {
    fprintf(stderr, "agentbox-proc-error:forbidden:PID 1 is the sandbox's init\n");
    return 1;
  }
  /* A zombie has ended already (ps does not list it); kill() would still succeed on it. */
  struct proc_stat st;
  if (proc_stat_of((pid_t)pid, &st) == 0 && (st.state == 'Z' || st.state == 'X')) {
    fprintf(stderr, "agentbox-proc-error:not_found:process %ld has ended\n", pid);
    return 1;
  }
  if (kill((pid_t)pid, sig) == 0) return 0;
  int err = errno;
  fprintf(stderr, "agentbox-proc-error:%s:process %ld: %s\n", err == ESRCH ? "not_found" : err == EPERM ? "forbidden" : "internal", pid, strerror(err));
  return 1;
}

#endif
