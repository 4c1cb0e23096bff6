//! The seccomp filters of a sandbox, deny by default.
//!
//! * An **allow list**: the system calls container runtimes allow by
//!   default (the names follow Docker/containerd's default profile, minus
//!   what this runtime refuses below, plus `chroot`, which that profile
//!   gates on CAP_SYS_CHROOT, a capability sandboxes keep). A number the
//!   list does not name gets ENOSYS, the kernel's own answer for a syscall
//!   it does not have, so programs fall back to older calls exactly as on
//!   an older kernel.
//! * A **refusal list** answered with EPERM: calls the kernel has (and libc
//!   knows) but a sandbox may not make; ENOSYS there would mislead libc
//!   into thinking the kernel lacks them. On x86_64 that is every number
//!   of the kernel's table up to [`LAST_KNOWN`] that the allow list does
//!   not name; elsewhere the named [`refused_syscalls`]. `io_uring_*` are
//!   refused (as in Docker's profile: a large, often-exploited surface).
//! * **Argument filters** (EPERM): `clone`/`unshare` with a namespace
//!   flag, `personality` outside the usual values, `socket(AF_VSOCK)`,
//!   and, unless the sandbox was granted core dumps, any change of
//!   RLIMIT_CORE (`setrlimit(RLIMIT_CORE, ..)`, `prlimit64(_,
//!   RLIMIT_CORE, new != NULL, _)`): the runtime sets it to 1, the one
//!   value that stops a dump both to a file and to a piped
//!   `kernel.core_pattern` helper; 0, which any process may lower its soft
//!   limit to, still pipes. Reading it (`getrlimit`, `prlimit64` with no
//!   new limit) keeps working.
//! * `clone3` answers ENOSYS: its flags live in memory a filter cannot
//!   read, so libc falls back to `clone`, which is filtered.
//! * On x86_64 a filter refuses the x32 ABI (numbers with bit 30 set); a
//!   foreign architecture is killed (seccompiler's architecture check).
//!
//! When filters disagree, the kernel takes the most restrictive action and,
//! among equal ones (two errnos), the most recently installed filter's: the
//! allow list goes first, so the refusal list's EPERM wins over its ENOSYS.

use std::collections::{BTreeMap, BTreeSet};

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// The highest syscall number this list was written against (`mseal`,
/// Linux 6.10). Newer numbers get ENOSYS until they are reviewed here.
pub const LAST_KNOWN: i64 = 462;

/// Allowed on every architecture (names of the generic syscall table).
const ALLOWED_COMMON: &[(&str, i64)] = &[
    ("accept", libc::SYS_accept),
    ("accept4", libc::SYS_accept4),
    ("bind", libc::SYS_bind),
    ("brk", libc::SYS_brk),
    ("capget", libc::SYS_capget),
    ("capset", libc::SYS_capset),
    ("chdir", libc::SYS_chdir),
    ("chroot", libc::SYS_chroot),
    ("clock_getres", libc::SYS_clock_getres),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("clone", libc::SYS_clone),
    ("close", libc::SYS_close),
    ("connect", libc::SYS_connect),
    ("copy_file_range", libc::SYS_copy_file_range),
    ("dup", libc::SYS_dup),
    ("dup3", libc::SYS_dup3),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("eventfd2", libc::SYS_eventfd2),
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    ("faccessat", libc::SYS_faccessat),
    ("fadvise64", libc::SYS_fadvise64),
    ("fallocate", libc::SYS_fallocate),
    ("fanotify_mark", libc::SYS_fanotify_mark),
    ("fchdir", libc::SYS_fchdir),
    ("fchmod", libc::SYS_fchmod),
    ("fchmodat", libc::SYS_fchmodat),
    ("fchown", libc::SYS_fchown),
    ("fchownat", libc::SYS_fchownat),
    ("fcntl", libc::SYS_fcntl),
    ("fdatasync", libc::SYS_fdatasync),
    ("fgetxattr", libc::SYS_fgetxattr),
    ("flistxattr", libc::SYS_flistxattr),
    ("flock", libc::SYS_flock),
    ("fremovexattr", libc::SYS_fremovexattr),
    ("fsetxattr", libc::SYS_fsetxattr),
    ("fstat", libc::SYS_fstat),
    ("fstatfs", libc::SYS_fstatfs),
    ("fsync", libc::SYS_fsync),
    ("ftruncate", libc::SYS_ftruncate),
    ("futex", libc::SYS_futex),
    ("get_robust_list", libc::SYS_get_robust_list),
    ("getcpu", libc::SYS_getcpu),
    ("getcwd", libc::SYS_getcwd),
    ("getdents64", libc::SYS_getdents64),
    ("getegid", libc::SYS_getegid),
    ("geteuid", libc::SYS_geteuid),
    ("getgid", libc::SYS_getgid),
    ("getgroups", libc::SYS_getgroups),
    ("getitimer", libc::SYS_getitimer),
    ("getpeername", libc::SYS_getpeername),
    ("getpgid", libc::SYS_getpgid),
    ("getpid", libc::SYS_getpid),
    ("getppid", libc::SYS_getppid),
    ("getpriority", libc::SYS_getpriority),
    ("getrandom", libc::SYS_getrandom),
    ("getresgid", libc::SYS_getresgid),
    ("getresuid", libc::SYS_getresuid),
    ("getrusage", libc::SYS_getrusage),
    ("getsid", libc::SYS_getsid),
    ("getsockname", libc::SYS_getsockname),
    ("getsockopt", libc::SYS_getsockopt),
    ("gettid", libc::SYS_gettid),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("getuid", libc::SYS_getuid),
    ("getxattr", libc::SYS_getxattr),
    ("inotify_add_watch", libc::SYS_inotify_add_watch),
    ("inotify_init1", libc::SYS_inotify_init1),
    ("inotify_rm_watch", libc::SYS_inotify_rm_watch),
    ("io_cancel", libc::SYS_io_cancel),
    ("io_destroy", libc::SYS_io_destroy),
    ("io_getevents", libc::SYS_io_getevents),
    ("io_setup", libc::SYS_io_setup),
    ("io_submit", libc::SYS_io_submit),
    ("ioctl", libc::SYS_ioctl),
    ("ioprio_get", libc::SYS_ioprio_get),
    ("ioprio_set", libc::SYS_ioprio_set),
    ("kill", libc::SYS_kill),
    ("lgetxattr", libc::SYS_lgetxattr),
    ("linkat", libc::SYS_linkat),
    ("listen", libc::SYS_listen),
    ("listxattr", libc::SYS_listxattr),
    ("llistxattr", libc::SYS_llistxattr),
    ("lremovexattr", libc::SYS_lremovexattr),
    ("lseek", libc::SYS_lseek),
    ("lsetxattr", libc::SYS_lsetxattr),
    ("madvise", libc::SYS_madvise),
    ("membarrier", libc::SYS_membarrier),
    ("memfd_create", libc::SYS_memfd_create),
    ("mincore", libc::SYS_mincore),
    ("mkdirat", libc::SYS_mkdirat),
    ("mknodat", libc::SYS_mknodat),
    ("mlock", libc::SYS_mlock),
    ("mlock2", libc::SYS_mlock2),
    ("mlockall", libc::SYS_mlockall),
    ("mmap", libc::SYS_mmap),
    ("mprotect", libc::SYS_mprotect),
    ("mq_getsetattr", libc::SYS_mq_getsetattr),
    ("mq_notify", libc::SYS_mq_notify),
    ("mq_open", libc::SYS_mq_open),
    ("mq_timedreceive", libc::SYS_mq_timedreceive),
    ("mq_timedsend", libc::SYS_mq_timedsend),
    ("mq_unlink", libc::SYS_mq_unlink),
    ("mremap", libc::SYS_mremap),
    ("msgctl", libc::SYS_msgctl),
    ("msgget", libc::SYS_msgget),
    ("msgrcv", libc::SYS_msgrcv),
    ("msgsnd", libc::SYS_msgsnd),
    ("msync", libc::SYS_msync),
    ("munlock", libc::SYS_munlock),
    ("munlockall", libc::SYS_munlockall),
    ("munmap", libc::SYS_munmap),
    ("nanosleep", libc::SYS_nanosleep),
    ("newfstatat", libc::SYS_newfstatat),
    ("openat", libc::SYS_openat),
    ("personality", libc::SYS_personality),
    ("pipe2", libc::SYS_pipe2),
    ("pkey_alloc", libc::SYS_pkey_alloc),
    ("pkey_free", libc::SYS_pkey_free),
    ("pkey_mprotect", libc::SYS_pkey_mprotect),
    ("ppoll", libc::SYS_ppoll),
    ("prctl", libc::SYS_prctl),
    ("pread64", libc::SYS_pread64),
    ("preadv", libc::SYS_preadv),
    ("preadv2", libc::SYS_preadv2),
    ("prlimit64", libc::SYS_prlimit64),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pselect6", libc::SYS_pselect6),
    ("ptrace", libc::SYS_ptrace),
    ("pwrite64", libc::SYS_pwrite64),
    ("pwritev", libc::SYS_pwritev),
    ("pwritev2", libc::SYS_pwritev2),
    ("read", libc::SYS_read),
    ("readahead", libc::SYS_readahead),
    ("readlinkat", libc::SYS_readlinkat),
    ("readv", libc::SYS_readv),
    ("recvfrom", libc::SYS_recvfrom),
    ("recvmmsg", libc::SYS_recvmmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("remap_file_pages", libc::SYS_remap_file_pages),
    ("removexattr", libc::SYS_removexattr),
    ("renameat2", libc::SYS_renameat2),
    ("restart_syscall", libc::SYS_restart_syscall),
    ("rseq", libc::SYS_rseq),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigpending", libc::SYS_rt_sigpending),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigqueueinfo", libc::SYS_rt_sigqueueinfo),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("rt_sigsuspend", libc::SYS_rt_sigsuspend),
    ("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    ("rt_tgsigqueueinfo", libc::SYS_rt_tgsigqueueinfo),
    ("sched_get_priority_max", libc::SYS_sched_get_priority_max),
    ("sched_get_priority_min", libc::SYS_sched_get_priority_min),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("sched_getattr", libc::SYS_sched_getattr),
    ("sched_getparam", libc::SYS_sched_getparam),
    ("sched_getscheduler", libc::SYS_sched_getscheduler),
    ("sched_rr_get_interval", libc::SYS_sched_rr_get_interval),
    ("sched_setaffinity", libc::SYS_sched_setaffinity),
    ("sched_setattr", libc::SYS_sched_setattr),
    ("sched_setparam", libc::SYS_sched_setparam),
    ("sched_setscheduler", libc::SYS_sched_setscheduler),
    ("sched_yield", libc::SYS_sched_yield),
    ("seccomp", libc::SYS_seccomp),
    ("semctl", libc::SYS_semctl),
    ("semget", libc::SYS_semget),
    ("semop", libc::SYS_semop),
    ("semtimedop", libc::SYS_semtimedop),
    ("sendfile", libc::SYS_sendfile),
    ("sendmmsg", libc::SYS_sendmmsg),
    ("sendmsg", libc::SYS_sendmsg),
    ("sendto", libc::SYS_sendto),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("set_tid_address", libc::SYS_set_tid_address),
    ("setfsgid", libc::SYS_setfsgid),
    ("setfsuid", libc::SYS_setfsuid),
    ("setgid", libc::SYS_setgid),
    ("setgroups", libc::SYS_setgroups),
    ("setitimer", libc::SYS_setitimer),
    ("setpgid", libc::SYS_setpgid),
    ("setpriority", libc::SYS_setpriority),
    ("setregid", libc::SYS_setregid),
    ("setresgid", libc::SYS_setresgid),
    ("setresuid", libc::SYS_setresuid),
    ("setreuid", libc::SYS_setreuid),
    ("setsid", libc::SYS_setsid),
    ("setsockopt", libc::SYS_setsockopt),
    ("setuid", libc::SYS_setuid),
    ("setxattr", libc::SYS_setxattr),
    ("shmat", libc::SYS_shmat),
    ("shmctl", libc::SYS_shmctl),
    ("shmdt", libc::SYS_shmdt),
    ("shmget", libc::SYS_shmget),
    ("shutdown", libc::SYS_shutdown),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("signalfd4", libc::SYS_signalfd4),
    ("socket", libc::SYS_socket),
    ("socketpair", libc::SYS_socketpair),
    ("splice", libc::SYS_splice),
    ("statfs", libc::SYS_statfs),
    ("statx", libc::SYS_statx),
    ("symlinkat", libc::SYS_symlinkat),
    ("sync", libc::SYS_sync),
    ("syncfs", libc::SYS_syncfs),
    ("sysinfo", libc::SYS_sysinfo),
    ("tee", libc::SYS_tee),
    ("tgkill", libc::SYS_tgkill),
    ("timer_create", libc::SYS_timer_create),
    ("timer_delete", libc::SYS_timer_delete),
    ("timer_getoverrun", libc::SYS_timer_getoverrun),
    ("timer_gettime", libc::SYS_timer_gettime),
    ("timer_settime", libc::SYS_timer_settime),
    ("timerfd_create", libc::SYS_timerfd_create),
    ("timerfd_gettime", libc::SYS_timerfd_gettime),
    ("timerfd_settime", libc::SYS_timerfd_settime),
    ("times", libc::SYS_times),
    ("tkill", libc::SYS_tkill),
    ("truncate", libc::SYS_truncate),
    ("umask", libc::SYS_umask),
    ("uname", libc::SYS_uname),
    ("unlinkat", libc::SYS_unlinkat),
    ("unshare", libc::SYS_unshare),
    ("utimensat", libc::SYS_utimensat),
    ("vmsplice", libc::SYS_vmsplice),
    ("wait4", libc::SYS_wait4),
    ("waitid", libc::SYS_waitid),
    ("write", libc::SYS_write),
    ("writev", libc::SYS_writev),
];

/// Allowed on x86_64 only: the legacy calls the generic table dropped, the
/// x86 thread-area and LDT calls, and calls libc names on x86_64 only.
#[cfg(target_arch = "x86_64")]
const ALLOWED_X86_64: &[(&str, i64)] = &[
    ("access", libc::SYS_access),
    ("alarm", libc::SYS_alarm),
    ("arch_prctl", libc::SYS_arch_prctl),
    ("chmod", libc::SYS_chmod),
    ("chown", libc::SYS_chown),
    ("creat", libc::SYS_creat),
    ("dup2", libc::SYS_dup2),
    ("epoll_create", libc::SYS_epoll_create),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("eventfd", libc::SYS_eventfd),
    ("fork", libc::SYS_fork),
    ("futimesat", libc::SYS_futimesat),
    ("get_thread_area", libc::SYS_get_thread_area),
    ("getdents", libc::SYS_getdents),
    ("getpgrp", libc::SYS_getpgrp),
    ("inotify_init", libc::SYS_inotify_init),
    // libc has no constant for it on x86_64 (292 in the generic table).
    ("io_pgetevents", 333),
    ("lchown", libc::SYS_lchown),
    ("link", libc::SYS_link),
    ("lstat", libc::SYS_lstat),
    ("mkdir", libc::SYS_mkdir),
    ("mknod", libc::SYS_mknod),
    ("modify_ldt", libc::SYS_modify_ldt),
    ("open", libc::SYS_open),
    ("pause", libc::SYS_pause),
    ("pipe", libc::SYS_pipe),
    ("poll", libc::SYS_poll),
    ("readlink", libc::SYS_readlink),
    ("rename", libc::SYS_rename),
    ("rmdir", libc::SYS_rmdir),
    ("select", libc::SYS_select),
    ("set_thread_area", libc::SYS_set_thread_area),
    ("signalfd", libc::SYS_signalfd),
    ("stat", libc::SYS_stat),
    ("symlink", libc::SYS_symlink),
    ("time", libc::SYS_time),
    ("unlink", libc::SYS_unlink),
    ("utime", libc::SYS_utime),
    ("utimes", libc::SYS_utimes),
    ("vfork", libc::SYS_vfork),
    ("getrlimit", libc::SYS_getrlimit),
    ("renameat", libc::SYS_renameat),
    ("setrlimit", libc::SYS_setrlimit),
    ("sync_file_range", libc::SYS_sync_file_range),
];

/// Allowed on aarch64 only: calls its libc has no constant for.
#[cfg(target_arch = "aarch64")]
const ALLOWED_AARCH64: &[(&str, i64)] = &[("sync_file_range", 84)];

/// Allowed calls numbered 424 and up: one table for every architecture.
const ALLOWED_UNIFIED: &[(&str, i64)] = &[
    ("pidfd_send_signal", 424),
    ("pidfd_open", 434),
    ("close_range", 436),
    ("openat2", 437),
    ("faccessat2", 439),
    ("epoll_pwait2", 441),
    ("landlock_create_ruleset", 444),
    ("landlock_add_rule", 445),
    ("landlock_restrict_self", 446),
    ("memfd_secret", 447),
    ("process_mrelease", 448),
    ("futex_waitv", 449),
    ("cachestat", 451),
    ("fchmodat2", 452),
    ("map_shadow_stack", 453),
    ("futex_wake", 454),
    ("futex_wait", 455),
    ("futex_requeue", 456),
    ("mseal", 462),
];

/// `clone3`: answered ENOSYS by its own filter, never EPERM.
const CLONE3: i64 = 435;

/// The allowed syscalls of this architecture, by name and number.
pub fn allowed_syscalls() -> Vec<(&'static str, i64)> {
    let mut v: Vec<(&'static str, i64)> = ALLOWED_COMMON.to_vec();
    #[cfg(target_arch = "x86_64")]
    v.extend_from_slice(ALLOWED_X86_64);
    #[cfg(target_arch = "aarch64")]
    v.extend_from_slice(ALLOWED_AARCH64);
    v.extend_from_slice(ALLOWED_UNIFIED);
    v
}

/// Syscalls refused by name (EPERM) on every architecture: what reaches
/// kernel-global state (modules, kexec, clocks, swap, quotas, mounts,
/// namespaces, keyrings) or widens the attack surface (bpf, perf,
/// userfaultfd, io_uring, file handles).
pub fn refused_syscalls() -> Vec<(&'static str, i64)> {
    let mut v = vec![
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("move_mount", libc::SYS_move_mount),
        ("open_tree", libc::SYS_open_tree),
        ("fsopen", libc::SYS_fsopen),
        ("fsmount", libc::SYS_fsmount),
        ("fsconfig", libc::SYS_fsconfig),
        ("fspick", libc::SYS_fspick),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("reboot", libc::SYS_reboot),
        ("sethostname", libc::SYS_sethostname),
        ("setdomainname", libc::SYS_setdomainname),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("adjtimex", libc::SYS_adjtimex),
        ("acct", libc::SYS_acct),
        ("quotactl", libc::SYS_quotactl),
        ("quotactl_fd", libc::SYS_quotactl_fd),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("syslog", libc::SYS_syslog),
        ("nfsservctl", libc::SYS_nfsservctl),
        ("setns", libc::SYS_setns),
        ("vhangup", libc::SYS_vhangup),
        ("fanotify_init", libc::SYS_fanotify_init),
        ("kcmp", libc::SYS_kcmp),
        ("pidfd_getfd", libc::SYS_pidfd_getfd),
        ("process_madvise", 440),
        ("mbind", libc::SYS_mbind),
        ("set_mempolicy", libc::SYS_set_mempolicy),
        ("get_mempolicy", libc::SYS_get_mempolicy),
        ("migrate_pages", libc::SYS_migrate_pages),
        ("move_pages", libc::SYS_move_pages),
        ("io_uring_setup", 425),
        ("io_uring_enter", 426),
        ("io_uring_register", 427),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("iopl", libc::SYS_iopl),
        ("ioperm", libc::SYS_ioperm),
        ("uselib", libc::SYS_uselib),
        ("_sysctl", libc::SYS__sysctl),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ]);
    v
}

/// Every number answered EPERM: the named refusals and, on x86_64, every
/// other number of the kernel's table up to [`LAST_KNOWN`] that is not
/// allowed (and not `clone3`).
pub fn refused_numbers() -> BTreeSet<i64> {
    let mut set: BTreeSet<i64> = refused_syscalls().into_iter().map(|(_, n)| n).collect();
    if cfg!(target_arch = "x86_64") {
        let allowed: BTreeSet<i64> = allowed_syscalls().into_iter().map(|(_, n)| n).collect();
        // 0..=334 is the classic table (rseq last), 424.. the unified one.
        set.extend(
            (0..=334)
                .chain(424..=LAST_KNOWN)
                .filter(|n| *n != CLONE3 && !allowed.contains(n)),
        );
    }
    set
}

/// Namespace flags a sandbox may not use with clone/unshare.
pub const NAMESPACE_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME (unshare only; for clone the bit is the exit signal)
];

/// personality(2) values allowed (the usual safe ones and the query).
pub const PERSONALITY_ALLOWED: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `RLIMIT_CORE`, as setrlimit(2) and prlimit64(2) number it.
const RLIMIT_CORE: u64 = 4;

/// The address family refused to `socket(2)`: AF_VSOCK reaches the host
/// (or hypervisor) rather than the sandbox's network namespace.
const AF_VSOCK: u64 = 40;

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("seccomp: unsupported architecture: {e:?}"))
}

fn rule(cond: Result<SeccompCondition, seccompiler::BackendError>) -> Result<SeccompRule, String> {
    let cond = cond.map_err(|e| format!("seccomp condition: {e}"))?;
    SeccompRule::new(vec![cond]).map_err(|e| format!("seccomp rule: {e}"))
}

fn masked(flag: u64) -> Result<SeccompRule, String> {
    rule(SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(flag),
        flag,
    ))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    otherwise: SeccompAction,
    on_match: SeccompAction,
    what: &str,
) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(rules, otherwise, on_match, arch()?)
        .map_err(|e| format!("building the {what} seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("compiling the {what} seccomp filter: {e}"))
}

/// The allow list: named calls pass, every other number gets ENOSYS.
pub fn allow_filter() -> Result<BpfProgram, String> {
    let rules = allowed_syscalls()
        .into_iter()
        .map(|(_, nr)| (nr, vec![]))
        .collect();
    compile(
        rules,
        SeccompAction::Errno(libc::ENOSYS as u32),
        SeccompAction::Allow,
        "allow-list",
    )
}

/// The rules refusing any change of RLIMIT_CORE: `setrlimit(RLIMIT_CORE,
/// ..)` (x86_64; the generic table has no setrlimit) and
/// `prlimit64(_, RLIMIT_CORE, new, _)` with `new` not NULL.
fn core_limit_rules() -> Result<Vec<(i64, Vec<SeccompRule>)>, String> {
    let resource_is_core = |arg| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, RLIMIT_CORE)
            .map_err(|e| format!("seccomp condition: {e}"))
    };
    let new_limit_given = SeccompCondition::new(2, SeccompCmpArgLen::Qword, SeccompCmpOp::Ne, 0)
        .map_err(|e| format!("seccomp condition: {e}"))?;
    let prlimit = SeccompRule::new(vec![resource_is_core(1)?, new_limit_given])
        .map_err(|e| format!("seccomp rule: {e}"))?;
    #[allow(unused_mut)]
    let mut rules = vec![(libc::SYS_prlimit64, vec![prlimit])];
    #[cfg(target_arch = "x86_64")]
    rules.push((
        libc::SYS_setrlimit,
        vec![SeccompRule::new(vec![resource_is_core(0)?])
            .map_err(|e| format!("seccomp rule: {e}"))?],
    ));
    Ok(rules)
}

/// The EPERM filter: refused numbers and the argument filters.
/// `core_dumps_granted` leaves RLIMIT_CORE changeable (the grant is refused
/// up front while the host pipes core dumps).
pub fn deny_filter(core_dumps_granted: bool) -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in refused_numbers() {
        rules.insert(nr, vec![]);
    }
    // clone: the flags word is argument 0 on x86_64 and aarch64. The last
    // flag (0x80) is skipped: in clone it is part of the exit signal.
    let clone_rules = NAMESPACE_FLAGS[..7]
        .iter()
        .map(|f| masked(*f))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let unshare_rules = NAMESPACE_FLAGS
        .iter()
        .map(|f| masked(*f))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_unshare, unshare_rules);
    let persona = PERSONALITY_ALLOWED
        .iter()
        .map(|v| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("seccomp condition: {e}"))?;
    rules.insert(
        libc::SYS_personality,
        vec![SeccompRule::new(persona).map_err(|e| format!("seccomp rule: {e}"))?],
    );
    rules.insert(
        libc::SYS_socket,
        vec![rule(SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            AF_VSOCK,
        ))?],
    );
    if !core_dumps_granted {
        rules.extend(core_limit_rules()?);
    }
    compile(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        "refusal",
    )
}

/// clone3 -> ENOSYS.
pub fn clone3_filter() -> Result<BpfProgram, String> {
    let mut rules = BTreeMap::new();
    rules.insert(CLONE3, vec![]);
    compile(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        "clone3",
    )
}

/// x86_64 only: refuse every syscall number with the x32 bit set.
pub fn x32_filter() -> BpfProgram {
    const X32_BIT: u32 = 0x4000_0000;
    let ins = |code: u16, jt: u8, jf: u8, k: u32| sock_filter { code, jt, jf, k };
    vec![
        // A = seccomp_data.nr
        ins(0x20, 0, 0, 0), // BPF_LD | BPF_W | BPF_ABS
        // if (A & X32_BIT) goto deny
        ins(0x45, 0, 1, X32_BIT), // BPF_JMP | BPF_JSET | BPF_K
        ins(0x06, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ins(0x06, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// The compiled filters, per `core_dumps_granted`: a warm-pool boot
/// process compiles them while it waits ([`warm`]), so the sandbox's PID 1
/// (a fork of it) installs them without compiling on the start path.
static COMPILED: [std::sync::OnceLock<Result<Programs, String>>; 2] =
    [std::sync::OnceLock::new(), std::sync::OnceLock::new()];

type Programs = Vec<(&'static str, BpfProgram)>;

/// Compile both variants of the filters now (see [`COMPILED`]).
pub fn warm() {
    for granted in [false, true] {
        let _ = programs(granted);
    }
}

/// The filters in installation order (compiled once per process).
fn programs(core_dumps_granted: bool) -> Result<&'static Programs, String> {
    COMPILED[usize::from(core_dumps_granted)]
        .get_or_init(|| compile_all(core_dumps_granted))
        .as_ref()
        .map_err(Clone::clone)
}

/// The filters in installation order. The order matters: see the module
/// doc.
fn compile_all(core_dumps_granted: bool) -> Result<Programs, String> {
    let mut out = vec![
        ("allow", allow_filter()?),
        ("deny", deny_filter(core_dumps_granted)?),
        ("clone3", clone3_filter()?),
    ];
    if cfg!(target_arch = "x86_64") {
        out.push(("x32", x32_filter()));
    }
    Ok(out)
}

/// Install every filter on the calling thread, setting no_new_privs first
/// (seccompiler does). `core_dumps_granted`: see [`deny_filter`].
pub fn install(core_dumps_granted: bool) -> Result<(), String> {
    for (name, p) in programs(core_dumps_granted)? {
        seccompiler::apply_filter(p)
            .map_err(|e| format!("installing the {name} seccomp filter: {e}"))?;
    }
    Ok(())
}

/// Install every filter on the calling thread without setting
/// no_new_privs: the kernel then wants CAP_SYS_ADMIN in the caller's user
/// namespace (EACCES otherwise), so this runs before the capabilities are
/// dropped. `core_dumps_granted`: see [`deny_filter`].
pub fn install_without_no_new_privs(core_dumps_granted: bool) -> Result<(), String> {
    for (name, p) in programs(core_dumps_granted)? {
        let prog = libc::sock_fprog {
            len: u16::try_from(p.len())
                .map_err(|_| format!("the {name} seccomp filter is too long"))?,
            // seccompiler's sock_filter has libc's layout.
            filter: p.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the kernel copies the program from valid memory that
        // outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(format!(
                "installing the {name} seccomp filter: {} (without no_new_privs the process needs CAP_SYS_ADMIN in its user namespace)",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmed_filters_are_compiled_once_and_the_same() {
        warm();
        for granted in [false, true] {
            let a = programs(granted).unwrap();
            assert!(std::ptr::eq(a, programs(granted).unwrap()));
            assert_eq!(*a, compile_all(granted).unwrap());
        }
        assert_ne!(*programs(false).unwrap(), *programs(true).unwrap());
    }

    fn allowed() -> BTreeSet<i64> {
        allowed_syscalls().into_iter().map(|(_, n)| n).collect()
    }

    #[test]
    fn filters_compile() {
        assert!(allow_filter().unwrap().len() > 300);
        assert!(deny_filter(false).unwrap().len() > 50);
        assert!(deny_filter(true).unwrap().len() > 50);
        assert!(!clone3_filter().unwrap().is_empty());
        assert_eq!(x32_filter().len(), 4);
    }

    #[test]
    fn lists_have_no_duplicates() {
        let all = allowed_syscalls();
        assert_eq!(all.len(), allowed().len(), "a syscall is allowed twice");
        let refused = refused_syscalls();
        let set: BTreeSet<i64> = refused.iter().map(|(_, n)| *n).collect();
        assert_eq!(refused.len(), set.len(), "a syscall is refused twice");
    }

    #[test]
    fn refused_and_allowed_are_disjoint() {
        let allowed = allowed();
        for (name, nr) in refused_syscalls() {
            assert!(!allowed.contains(&nr), "{name} is both allowed and refused");
        }
        assert!(refused_numbers().is_disjoint(&allowed));
    }

    #[test]
    fn io_uring_is_refused_and_clone3_is_left_to_enosys() {
        let refused = refused_numbers();
        for nr in [425, 426, 427] {
            assert!(refused.contains(&nr));
        }
        assert!(!refused.contains(&CLONE3));
        assert!(!allowed().contains(&CLONE3));
    }

    #[test]
    fn argument_filtered_calls_pass_the_allow_list() {
        let allowed = allowed();
        for nr in [libc::SYS_clone, libc::SYS_unshare, libc::SYS_personality] {
            assert!(allowed.contains(&nr));
        }
    }

    #[test]
    fn numbers_past_the_reviewed_table_get_enosys() {
        // Neither allowed nor refused: the allow list answers ENOSYS.
        for nr in [LAST_KNOWN + 1, LAST_KNOWN + 2, 1000] {
            assert!(!allowed().contains(&nr));
            assert!(!refused_numbers().contains(&nr));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_known_x86_64_number_is_decided() {
        let allowed = allowed();
        let refused = refused_numbers();
        for nr in (0..=334).chain(424..=LAST_KNOWN) {
            assert!(
                nr == CLONE3 || allowed.contains(&nr) || refused.contains(&nr),
                "syscall {nr} is neither allowed nor refused"
            );
        }
        // The legacy calls libc still makes.
        for nr in [libc::SYS_open, libc::SYS_stat, libc::SYS_fork] {
            assert!(allowed.contains(&nr));
        }
    }

    /// Runs `probe` in a forked child that installed `deny_filter(granted)`
    /// and returns what the child reported: the errno of each probe, 0 for
    /// success (the test process itself keeps no filter).
    fn under_deny_filter(granted: bool, probes: &[fn() -> i64]) -> Vec<i32> {
        let filter = deny_filter(granted).unwrap();
        let mut fds = [0; 2];
        // SAFETY: pipe with a valid two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only makes raw syscalls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: prctl and raw syscalls with valid arguments; the child
            // never returns into the test harness.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if seccompiler::apply_filter(&filter).is_err() {
                    libc::_exit(2);
                }
                for probe in probes {
                    let errno: i32 = if probe() < 0 {
                        *libc::__errno_location()
                    } else {
                        0
                    };
                    libc::write(fds[1], (&errno as *const i32).cast(), 4);
                }
                libc::_exit(0);
            }
        }
        // SAFETY: closing our copy of the write end; waiting for our child.
        unsafe { libc::close(fds[1]) };
        let mut status = 0;
        // SAFETY: as above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        let mut out = Vec::new();
        let mut buf = [0u8; 4];
        // SAFETY: reading into a 4-byte buffer from our pipe.
        while unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 4) } == 4 {
            out.push(i32::from_ne_bytes(buf));
        }
        // SAFETY: closing our read end.
        unsafe { libc::close(fds[0]) };
        out
    }

    fn current_core_limit() -> libc::rlimit {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit into a valid struct.
        unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut r) };
        r
    }

    #[cfg(target_arch = "x86_64")]
    fn setrlimit_core_zero() -> i64 {
        let r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: current_core_limit().rlim_max,
        };
        // SAFETY: raw setrlimit with a valid struct (glibc would use prlimit64).
        unsafe { libc::syscall(libc::SYS_setrlimit, RLIMIT_CORE, &r) }
    }

    fn prlimit_core_zero() -> i64 {
        let r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: current_core_limit().rlim_max,
        };
        // SAFETY: prlimit64 on ourselves with a valid new limit.
        unsafe { libc::syscall(libc::SYS_prlimit64, 0, RLIMIT_CORE, &r, 0usize) }
    }

    fn prlimit_core_read() -> i64 {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit64 with no new limit, reading into a valid struct.
        unsafe { libc::syscall(libc::SYS_prlimit64, 0, RLIMIT_CORE, 0usize, &mut r) }
    }

    fn getrlimit_core() -> i64 {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit into a valid struct.
        i64::from(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut r) })
    }

    fn prlimit_nofile_same() -> i64 {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: read then write back the same RLIMIT_NOFILE.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
            libc::syscall(libc::SYS_prlimit64, 0, libc::RLIMIT_NOFILE, &r, 0usize)
        }
    }

    /// With CAP_SYS_ADMIN (the test runs as root) the filters go on
    /// without no_new_privs, and they filter all the same.
    #[test]
    fn filters_install_without_no_new_privs_and_filter() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        // SAFETY: the child only makes raw syscalls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = (|| {
                if install_without_no_new_privs(false).is_err() {
                    return 2;
                }
                // SAFETY: prctl and raw syscalls with valid arguments.
                unsafe {
                    if libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 0 {
                        return 3;
                    }
                    // kcmp of our own descriptor 0 with itself: 0 unfiltered.
                    let me = libc::getpid();
                    if libc::syscall(libc::SYS_kcmp, me, me, 0, 0, 0) != -1
                        || *libc::__errno_location() != libc::EPERM
                    {
                        return 4;
                    }
                    if libc::syscall(libc::SYS_getpid) <= 0 {
                        return 5;
                    }
                }
                0
            })();
            // SAFETY: leaving the forked child without running destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child died: {status}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "see the codes above");
    }

    #[test]
    fn core_limit_changes_are_refused_unless_granted_and_reads_pass() {
        let probes: Vec<fn() -> i64> = vec![
            prlimit_core_zero,
            prlimit_core_read,
            getrlimit_core,
            prlimit_nofile_same,
        ];
        let eperm = libc::EPERM;
        assert_eq!(under_deny_filter(false, &probes), vec![eperm, 0, 0, 0]);
        assert_eq!(under_deny_filter(true, &probes), vec![0, 0, 0, 0]);
        #[cfg(target_arch = "x86_64")]
        {
            let set: Vec<fn() -> i64> = vec![setrlimit_core_zero];
            assert_eq!(under_deny_filter(false, &set), vec![eperm]);
            assert_eq!(under_deny_filter(true, &set), vec![0]);
        }
    }
}
