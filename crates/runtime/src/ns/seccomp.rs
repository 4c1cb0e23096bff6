//! The seccomp filters of a sandbox: a deny list (EPERM) of system calls
//! that reach kernel-global state or widen the attack surface, argument
//! filters for namespace creation and `personality`, `clone3` answered
//! with ENOSYS (its flags live in memory a filter cannot read, so libc
//! falls back to `clone`, which is filtered), and on x86_64 a filter that
//! refuses the x32 ABI, whose syscall numbers would bypass the deny list.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// Syscalls refused outright.
pub fn denied_syscalls() -> Vec<(&'static str, i64)> {
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
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("adjtimex", libc::SYS_adjtimex),
        ("acct", libc::SYS_acct),
        ("quotactl", libc::SYS_quotactl),
        ("quotactl_fd", libc::SYS_quotactl_fd),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("nfsservctl", libc::SYS_nfsservctl),
        ("syslog", libc::SYS_syslog),
        ("setns", libc::SYS_setns),
        ("vhangup", libc::SYS_vhangup),
        ("fanotify_init", libc::SYS_fanotify_init),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("iopl", libc::SYS_iopl),
        ("ioperm", libc::SYS_ioperm),
        // Removed from the kernel long ago (libc has no constants); a
        // denied number still answers EPERM instead of ENOSYS.
        ("create_module", 174),
        ("get_kernel_syms", 177),
        ("query_module", 178),
        ("uselib", libc::SYS_uselib),
        ("_sysctl", libc::SYS__sysctl),
    ]);
    v
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

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("seccomp: unsupported architecture: {e:?}"))
}

fn masked(flag: u64) -> Result<SeccompRule, String> {
    let cond = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(flag),
        flag,
    )
    .map_err(|e| format!("seccomp condition: {e}"))?;
    SeccompRule::new(vec![cond]).map_err(|e| format!("seccomp rule: {e}"))
}

/// The EPERM filter.
pub fn deny_filter() -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in denied_syscalls() {
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
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(|e| format!("building the seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("compiling the seccomp filter: {e}"))
}

/// clone3 -> ENOSYS.
pub fn clone3_filter() -> Result<BpfProgram, String> {
    let mut rules = BTreeMap::new();
    rules.insert(libc::SYS_clone3, vec![]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(|e| format!("building the clone3 filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("compiling the clone3 filter: {e}"))
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

/// Install every filter on the calling thread (no_new_privs must be set or
/// CAP_SYS_ADMIN held).
pub fn install() -> Result<(), String> {
    let programs = [deny_filter()?, clone3_filter()?];
    for p in &programs {
        seccompiler::apply_filter(p).map_err(|e| format!("installing seccomp filter: {e}"))?;
    }
    if cfg!(target_arch = "x86_64") {
        seccompiler::apply_filter(&x32_filter())
            .map_err(|e| format!("installing the x32 seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        assert!(deny_filter().unwrap().len() > 50);
        assert!(!clone3_filter().unwrap().is_empty());
        assert_eq!(x32_filter().len(), 4);
    }
}
