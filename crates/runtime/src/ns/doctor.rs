//! `dwell doctor` for the namespace runtime: what this host supports.

use std::path::Path;

use crate::doctor::Check;
use crate::host::cgroup::{CgroupMode, HostCgroups};

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

fn on_path(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists())
}

/// Inspect the host.
pub fn doctor() -> Vec<Check> {
    let mut out = Vec::new();
    match HostCgroups::detect() {
        Ok(h) => {
            let mode = match h.mode {
                CgroupMode::V1 => "v1",
                CgroupMode::Hybrid => "hybrid (v1 controllers + cgroup2)",
                CgroupMode::V2 => "v2 (unified)",
            };
            out.push(check("cgroups", true, format!("cgroup mode {mode}")));
            let kill =
                h.v2.as_ref()
                    .is_some_and(|r| r.join("cgroup.kill").exists() || has_kill_below(r));
            out.push(check(
                "cgroup.kill",
                kill,
                if kill {
                    "stop kills a sandbox atomically".to_string()
                } else {
                    "absent (kernel < 5.14 or no cgroup2): stop freezes and signals each pid"
                        .to_string()
                },
            ));
        }
        Err(e) => out.push(check("cgroups", false, e.to_string())),
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = fs.lines().any(|l| l.trim_end().ends_with("overlay"));
    out.push(check(
        "overlayfs",
        overlay,
        if overlay {
            "available"
        } else {
            "missing: modprobe overlay"
        },
    ));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let seccomp = status.lines().any(|l| l.starts_with("Seccomp:"));
    out.push(check(
        "seccomp",
        seccomp,
        if seccomp {
            "filters supported"
        } else {
            "kernel built without CONFIG_SECCOMP_FILTER"
        },
    ));
    out.push(user_namespaces_check());
    for ns in ["mnt", "pid", "net", "uts", "ipc", "cgroup"] {
        let ok = Path::new("/proc/self/ns").join(ns).exists();
        out.push(check(
            &format!("{ns} namespace"),
            ok,
            if ok { "available" } else { "missing" },
        ));
    }
    let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    let tools = on_path("ip") && on_path("nft") && on_path("nsenter");
    out.push(check(
        "nat networking",
        fwd.trim() == "1" && tools,
        match (fwd.trim() == "1", tools) {
            (true, true) => "ip_forward = 1, ip/nft/nsenter present".to_string(),
            (false, _) => {
                "net.ipv4.ip_forward = 0: `sysctl -w net.ipv4.ip_forward=1` to allow NAT mode"
                    .to_string()
            }
            (_, false) => {
                "install iproute2, nftables and util-linux (ip, nft, nsenter)".to_string()
            }
        },
    ));
    out
}

/// User namespaces for sandboxes: allowed by the kernel and new enough for
/// idmapped mounts and overlay layers given by descriptor (6.13).
fn user_namespaces_check() -> Check {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = kernel_version(&release);
    let new_enough = version >= (6, 13);
    let ok = max > 0 && new_enough;
    let detail = if ok {
        format!(
            "max_user_namespaces = {max}, kernel {}: each sandbox's root is its own host uid \
             range (turn off with `dwell serve --user-namespaces off`)",
            release.trim()
        )
    } else if max == 0 {
        "max_user_namespaces = 0: set it above 0, or run `dwell serve --user-namespaces off` \
         (sandbox root is then host root)"
            .to_string()
    } else {
        format!(
            "kernel {} is older than 6.13 (idmapped overlay layers by descriptor): run \
             `dwell serve --user-namespaces off` (sandbox root is then host root)",
            release.trim()
        )
    };
    check("user namespaces", ok, detail)
}

/// `6.18.44-foo` -> (6, 18).
fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn has_kill_below(root: &Path) -> bool {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("cgroup.kill").exists())
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_versions() {
        assert_eq!(super::kernel_version("6.18.44-fc-v1272\n"), (6, 18));
        assert_eq!(super::kernel_version("5.10.0"), (5, 10));
        assert_eq!(super::kernel_version(""), (0, 0));
    }
}
