/*
 * The seccomp deny list every sandboxed command gets (local runtime via agentbox-helper, docker
 * runtime via agentbox-docker-init `run`): close to Docker's default profile, plus no namespaces of
 * any kind. Under runc it stacks on Docker's own profile; under gVisor, where runsc gives exec'd
 * processes no seccomp profile, it is the only one (and the sentry enforces it).
 */
#ifndef AGENTBOX_SECCOMP_DENY_H
#define AGENTBOX_SECCOMP_DENY_H
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define AB_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define AB_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "agentbox: unsupported architecture"
#endif

#define LOAD_NR BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
                 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

#define NS_FLAGS (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | \
                  CLONE_NEWNET | CLONE_NEWCGROUP)

/* Needs no_new_privs (or CAP_SYS_ADMIN) first; returns 0, or -1 with errno. */
static int install_seccomp_deny(void) {
  struct sock_filter f[] = {
    /* A foreign ABI (i386 via int 0x80) would bypass a filter written for this one. */
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AB_AUDIT_ARCH, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    LOAD_NR,
#if defined(__x86_64__)
    /* x32 syscalls carry bit 30. */
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
#endif
    /* clone3 passes flags in memory seccomp cannot read: ENOSYS makes libc fall back to clone. */
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
    /* clone with namespace flags: no nested namespaces. */
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
    BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, NS_FLAGS, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
    LOAD_NR,
    DENY(SYS_ptrace), DENY(SYS_process_vm_readv), DENY(SYS_process_vm_writev), DENY(SYS_kcmp),
    DENY(SYS_mount), DENY(SYS_umount2), DENY(SYS_pivot_root), DENY(SYS_chroot),
    DENY(SYS_unshare), DENY(SYS_setns),
    DENY(SYS_swapon), DENY(SYS_swapoff), DENY(SYS_reboot), DENY(SYS_kexec_load), DENY(SYS_kexec_file_load),
    DENY(SYS_init_module), DENY(SYS_finit_module), DENY(SYS_delete_module), DENY(SYS_acct),
    DENY(SYS_settimeofday), DENY(SYS_clock_settime), DENY(SYS_clock_adjtime), DENY(SYS_adjtimex),
    DENY(SYS_bpf), DENY(SYS_perf_event_open), DENY(SYS_userfaultfd), DENY(SYS_keyctl), DENY(SYS_add_key),
    DENY(SYS_request_key), DENY(SYS_open_by_handle_at), DENY(SYS_name_to_handle_at),
    DENY(SYS_quotactl), DENY(SYS_fanotify_init), DENY(SYS_lookup_dcookie),
    DENY(SYS_move_mount), DENY(SYS_open_tree), DENY(SYS_fsopen), DENY(SYS_fsmount), DENY(SYS_fspick),
    DENY(SYS_mount_setattr), DENY(SYS_personality),
#if defined(__x86_64__)
    DENY(SYS_iopl), DENY(SYS_ioperm), DENY(SYS_uselib), DENY(SYS_sysfs), DENY(SYS__sysctl),
#endif
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { .len = (unsigned short)(sizeof f / sizeof f[0]), .filter = f };
  return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

#endif
