//! Set-user-id inside a sandbox (issue 15): in a user namespace
//! no_new_privs is off, so `sudo` and set-user-id binaries work as on any
//! Linux box. The root they give is the sandbox's own: the capability
//! bounding set stays reduced, /proc/sys stays read-only, no mount, no
//! nested user namespace, and the host sees an unprivileged uid. Without a
//! user namespace (root inside would be host root), and on gVisor (runsc
//! always sets it), no_new_privs stays on and set-user-id gives nothing.
//! The host image's skeleton, under host-user's account layer, cannot be
//! removed from under a running sandbox.

use crate::common::*;
use crate::support::*;

/// What root reached through sudo may not do; prints one `name result`
/// line per probe (`refused` is what must come back).
const ROOT_PROBES: &str = r#"
w() { if sh -c "$2" >/dev/null 2>&1; then echo "$1 done"; else echo "$1 refused"; fi; }
w sysctl 'echo sandbox-x > /proc/sys/kernel/hostname'
w core_pattern 'echo x > /proc/sys/kernel/core_pattern'
w mount 'mount -t tmpfs none /mnt'
w userns 'unshare -U true'
w netns 'unshare -n true'
w modules 'echo 1 > /proc/sys/kernel/modules_disabled'
w sysrq 'echo h > /proc/sysrq-trigger'
w ip_forward 'echo 1 > /proc/sys/net/ipv4/ip_forward'
"#;

/// Prints the no_new_privs flag (prctl PR_GET_NO_NEW_PRIVS: gVisor's
/// /proc/self/status has no NoNewPrivs line).
const NO_NEW_PRIVS: &str =
    "python3 -c 'import ctypes; print(ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))'";

fn bnd(d: &Daemon, sb: &str, prefix: &str) -> u64 {
    let hex = d.sh(
        sb,
        &format!("{prefix} grep CapBnd /proc/self/status | cut -f2"),
    );
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[test]
fn sudo_gives_sandbox_root_only() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let d = Daemon::start();
        create_on(&d, "s", rt);
        let id = d.create("u", &["--isolation", rt, "--image", "host-user"]);
        // host-user's default user is `user`, with passwordless sudo.
        assert_eq!(
            d.sh("u", "id -un; id -u; pwd"),
            "user\n1000\n/home/user\n",
            "{rt}"
        );
        d.ok(&[
            "exec",
            "u",
            "--user",
            "root",
            "--",
            "sh",
            "-c",
            "cp /usr/bin/id /opt/suid-id && chmod 4755 /opt/suid-id",
        ]);
        if rt == "gvisor" {
            // runsc always sets no_new_privs: set-user-id gives nothing.
            assert_eq!(d.sh("u", NO_NEW_PRIVS), "1\n");
            assert_eq!(d.sh("u", "/opt/suid-id -u").trim(), "1000");
            let out = d.run(&["exec", "u", "--", "sudo", "-n", "true"]);
            assert!(!out.status.success(), "sudo worked on gVisor");
            assert_eq!(d.sh("s", "echo ok"), "ok\n");
            continue;
        }
        assert_eq!(d.sh("u", NO_NEW_PRIVS), "0\n", "{rt}");
        let out = d.run(&["exec", "u", "--", "sudo", "-n", "id", "-u"]);
        assert_eq!(stdout(&out).trim(), "0", "{rt}: sudo: {}", stderr(&out));
        // sudo leaves RLIMIT_CORE alone (the filter refuses changes).
        assert!(!stderr(&out).contains("rlimit"), "{}", stderr(&out));
        // A set-user-id copy the sandbox makes itself works as well.
        assert_eq!(
            d.sh("u", "/opt/suid-id -u").trim(),
            "0",
            "{rt}: setuid copy"
        );
        // That root has no more than the sandbox's root had.
        let before = bnd(&d, "u", "");
        assert_eq!(bnd(&d, "u", "sudo -n"), before, "{rt}: bounding set grew");
        let eff = d.sh("u", "sudo -n grep CapEff /proc/self/status | cut -f2");
        let eff = u64::from_str_radix(eff.trim(), 16).unwrap();
        assert_eq!(
            eff & !before,
            0,
            "{rt}: sudo root has capabilities beyond the bounding set"
        );
        for (name, bit) in [
            ("SYS_ADMIN", 21),
            ("SYS_MODULE", 16),
            ("NET_ADMIN", 12),
            ("SYS_PTRACE", 19),
        ] {
            assert_eq!(eff & (1 << bit), 0, "{rt}: sudo root has CAP_{name}");
        }
        let probes = d.ok(&["exec", "u", "--", "sudo", "-n", "sh", "-c", ROOT_PROBES]);
        for line in probes.lines() {
            assert!(
                line.ends_with(" refused"),
                "{rt}: sudo root could: {line}\n{probes}"
            );
        }
        assert_eq!(probes.lines().count(), 8, "{probes}");
        if rt == "namespace" {
            // The host sees the sandbox's unprivileged range, not uid 0.
            let map = d.sh("u", "sudo -n cat /proc/self/uid_map");
            let host: u64 = map.split_whitespace().nth(1).unwrap().parse().unwrap();
            assert!(host >= 1 << 31, "{rt}: sandbox root is host uid {host}");
            let pid = d.host_pid(&id);
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
            assert!(!uid.split_whitespace().any(|f| f == "0"), "{uid}");
        }
        // The host's settings did not change.
        assert_ne!(
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim(),
            "sandbox-x"
        );
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap()
                .trim(),
            "0"
        );
        // The sandbox and its neighbour still work.
        assert_eq!(d.sh("u", "echo ok"), "ok\n");
        assert_eq!(d.sh("s", "echo ok"), "ok\n");
    }
}

#[test]
fn setuid_gives_nothing_without_a_user_namespace() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--user-namespaces", "off"]);
    d.create("r", &["--isolation", "namespace", "--image", "host-user"]);
    assert_eq!(d.sh("r", NO_NEW_PRIVS), "1\n");
    d.ok(&[
        "exec",
        "r",
        "--user",
        "root",
        "--",
        "sh",
        "-c",
        "cp /usr/bin/id /opt/suid-id && chmod 4755 /opt/suid-id",
    ]);
    assert_eq!(d.sh("r", "/opt/suid-id -u").trim(), "1000");
    let out = d.run(&["exec", "r", "--", "sudo", "-n", "true"]);
    assert!(!out.status.success(), "sudo worked with no_new_privs");
}

/// host-user's account layer sits on the host image's skeleton: removing
/// `host` is refused while a sandbox runs on host-user, naming it; once it
/// is gone both images can go and come back.
#[test]
fn the_host_image_stays_while_host_user_sandboxes_run() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("hu", &["--image", "host-user"]);
    for image in ["host", "host-user"] {
        let out = d.run(&["image", "rm", image]);
        assert!(
            !out.status.success(),
            "{image} removed under a running sandbox"
        );
        assert!(stderr(&out).contains("hu"), "{}", stderr(&out));
    }
    d.ok(&["rm", "-f", "hu"]);
    d.ok(&["image", "rm", "host-user"]);
    d.ok(&["image", "rm", "host"]);
    d.create("again", &["--image", "host-user"]);
    assert_eq!(d.sh("again", "id -un"), "user\n");
}
