/*
 * Become the sandbox user with nothing of root's, for good: every capability out of the bounding,
 * ambient, effective, permitted and inheritable sets, the given ids (real, effective, saved), no
 * supplementary groups, no_new_privs, and the seccomp deny filter. Shared by agentbox-helper (after
 * entering a sandbox's namespaces) and agentbox-vm-agent (in a command's child, inside the guest).
 * Dies (fail.h) on any step that does not take.
 */
#ifndef AGENTBOX_DROP_PRIVILEGES_H
#define AGENTBOX_DROP_PRIVILEGES_H
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "fail.h"
#include "seccomp-deny.h"

struct drop_to {
  /* 0: keep the current ids (the caller already is the sandbox user). */
  int set_ids;
  uid_t uid;
  gid_t gid;
  /* A bwrap user namespace denies setgroups (setgroups=deny): there the groups are already empty. */
  int setgroups_may_be_denied;
};

static void drop_privileges_to(const struct drop_to *t) {
  /* Entering a user namespace grants every capability inside it: take them all away again. */
  for (int cap = 0; cap <= 63; cap++) {
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0) break;
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) die("drop bounding set");
  }
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  if (t->set_ids) {
    if (setgroups(0, NULL) != 0 && !(t->setgroups_may_be_denied && errno == EPERM)) die("setgroups");
    if (setresgid(t->gid, t->gid, t->gid) != 0) die("setgid");
    if (setresuid(t->uid, t->uid, t->uid) != 0) die("setuid");
  }
  struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  if (syscall(SYS_capset, &hdr, data) != 0) die("capset");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("no_new_privs");
  if (install_seccomp_deny() != 0) die("seccomp");
}

#endif
