//! The agent channel and the sandbox's writable host paths (issue 11,
//! items 1 and 3): a sandbox cannot redirect the daemon to another
//! sandbox's agent, `/run/dwell` is small and not host-backed, a device
//! node made there is inert, and the console (PID 1's stdout/stderr) grows
//! only within the sandbox's own volume.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::support::*;

/// Kilobytes of host storage the data dir holds outside mounts (volume
/// images included: they are plain files on the data disk).
fn data_kib(data: &Path) -> u64 {
    let out = Command::new("du")
        .arg("-skx")
        .arg(data)
        .output()
        .expect("run du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du printed {:?}", stderr(&out)))
}

/// A sandbox with a 256 MiB volume on runtime `rt`; returns its id.
fn create_256m(d: &Daemon, name: &str, rt: &str) -> String {
    create_bare_on(d, name, rt, &["--memory", "256M", "--disk", "256M"])
}

/// Where sandbox `id`'s agent socket is on the host, for either runtime.
fn host_socket(d: &Daemon, id: &str) -> PathBuf {
    let dir = d.data.join("sandboxes").join(id);
    let ns = dir.join("agent/agent.sock");
    if ns.exists() {
        ns
    } else {
        dir.join("run/agent.sock")
    }
}

/// Run `script` in `sb` detached from the exec (its own session), so it
/// survives the agent dropping the exec's connection.
fn detached(d: &Daemon, sb: &str, script: &str) {
    let bg = format!("setsid -f sh -c '{script}' </dev/null >/dev/null 2>&1; echo started");
    let _ = d.run(&["exec", sb, "--", "sh", "-c", &bg]);
}

#[test]
fn a_sandbox_cannot_redirect_its_exec_to_another_sandbox() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let d = Daemon::start();
        let a = create_on(&d, &format!("chan-a-{rt}"), rt);
        let b = create_on(&d, &format!("chan-b-{rt}"), rt);
        d.sh(&b, "echo only-in-b > /root/b-only-file");
        let b_sock = host_socket(&d, &b);
        assert!(
            b_sock.exists(),
            "{rt}: B's socket {} missing",
            b_sock.display()
        );
        // In A, as its root: make the agent drop its socket, then plant a
        // symlink to B's socket where A's was (for every place it could be).
        let plant = format!(
            "sleep 1; for p in /run/dwell/agent.sock; do rm -f $p; ln -s {} $p; done; \
             touch /tmp/planted",
            b_sock.display()
        );
        detached(&d, &a, &format!("kill -USR1 1; {plant}"));
        // (Under gVisor the exec connection may be gone by now: wait.)
        std::thread::sleep(std::time::Duration::from_secs(3));
        // The attack ran: the planted link is there (gVisor: in the host
        // tmpfs behind A's /run/dwell; namespace: in A's own tmpfs).
        let a_run = d.data.join("sandboxes").join(&a).join("run/agent.sock");
        let planted = if rt == "gvisor" {
            std::fs::symlink_metadata(&a_run).is_ok_and(|m| m.file_type().is_symlink())
        } else {
            Path::new(&format!("/proc/{}/root/tmp/planted", d.host_pid(&a))).exists()
        };
        assert!(
            planted,
            "{rt}: the attack did not run: nothing was planted in A"
        );
        // A fresh daemon has no cached connection: it must connect anew.
        let mut d = d;
        d.restart();
        let out = d.run(&["exec", &a, "--", "cat", "/root/b-only-file"]);
        assert!(
            !stdout(&out).contains("only-in-b"),
            "{rt}: exec on A printed B's file: the daemon was redirected to B's agent"
        );
        assert!(
            !out.status.success(),
            "{rt}: exec on A succeeded reading B's file path: {}",
            stdout(&out)
        );
        // Either the exec still reached A (which has no such file), or the
        // daemon refused the planted link: never B.
        let err = stderr(&out);
        let ran_in_a = err.contains("No such file or directory");
        let refused = ["not a socket", "symlink", "key"]
            .iter()
            .any(|w| err.contains(w));
        assert!(
            ran_in_a || refused,
            "{rt}: exec on A failed for another reason: {}",
            tail(&err, 5)
        );
        // B is untouched and still works.
        assert_eq!(d.sh(&b, "cat /root/b-only-file").trim(), "only-in-b");
        // A comes back with a restart (its agent is its own again).
        d.ok(&["stop", &a]);
        d.ok(&["start", &a]);
        assert_eq!(
            d.sh(&a, "echo back").trim(),
            "back",
            "{rt}: A after a restart"
        );
        assert!(!d.sh(&a, "ls /root").contains("b-only-file"));
        assert_eq!(d.sh(&b, "cat /root/b-only-file").trim(), "only-in-b");
    }
}

#[test]
fn run_dwell_is_a_small_scratch_space_not_the_host_data_disk() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let d = Daemon::start();
        let sb = create_256m(&d, &format!("chan-run-{rt}"), rt);
        let before = data_kib(&d.data);
        let out = d.run(&[
            "exec",
            &sb,
            "--",
            "sh",
            "-c",
            "dd if=/dev/zero of=/run/dwell/big bs=1M count=400 2>&1; echo rc=$?",
        ]);
        let text = stdout(&out);
        assert!(
            text.contains("No space left") && !text.contains("rc=0"),
            "{rt}: 400 MiB into /run/dwell did not fail with ENOSPC: {text}"
        );
        let grown = data_kib(&d.data).saturating_sub(before);
        assert!(
            grown < 32 * 1024,
            "{rt}: the host data dir grew by {grown} KiB from a write to /run/dwell"
        );
        // The sandbox (and a neighbour) still work; the space comes back.
        d.sh(
            &sb,
            "rm -f /run/dwell/big; echo ok > /run/dwell/small; cat /run/dwell/small",
        );
        let n = create_on(&d, &format!("chan-run-n-{rt}"), rt);
        assert_eq!(d.sh(&n, "echo fine").trim(), "fine");
    }
}

#[test]
fn a_device_node_in_run_dwell_is_inert_and_never_on_the_host() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let d = Daemon::start();
        let sb = create_on(&d, &format!("chan-dev-{rt}"), rt);
        let out = d.run(&[
            "exec",
            &sb,
            "--",
            "sh",
            "-c",
            "mknod /run/dwell/x b 7 0 && echo made; head -c 1 /run/dwell/x >/dev/null 2>&1 \
             && echo readable; true",
        ]);
        assert!(
            !stdout(&out).contains("readable"),
            "{rt}: a block device made in /run/dwell could be read: {}",
            stdout(&out)
        );
        // Host side: no device node of the sandbox's making is usable.
        let mut devices = Vec::new();
        find_devices(&d.data, &mut devices, 0);
        for dev in &devices {
            let opened = std::fs::File::open(dev);
            assert!(
                opened.is_err(),
                "{rt}: the device node {} opens on the host",
                dev.display()
            );
        }
        let host_x = d.data.join("sandboxes").join(&sb).join("run/x");
        if rt == "namespace" {
            assert!(
                std::fs::symlink_metadata(&host_x).is_err(),
                "{rt}: /run/dwell/x reached the host at {}",
                host_x.display()
            );
        }
        assert_eq!(d.sh(&sb, "echo still").trim(), "still");
    }
}

/// Block and character devices below `dir` (not descending into images
/// and mounted roots, which may hold an image's own /dev).
fn find_devices(dir: &Path, out: &mut Vec<PathBuf>, depth: u32) {
    if depth > 6 {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let p = e.path();
        if ft.is_block_device() || ft.is_char_device() {
            out.push(p);
        } else if ft.is_dir() && e.file_name() != "rootfs" && e.file_name() != "images" {
            find_devices(&p, out, depth + 1);
        }
    }
}

#[test]
fn the_console_grows_only_within_the_sandbox_volume() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let d = Daemon::start();
        let sb = create_256m(&d, &format!("chan-con-{rt}"), rt);
        let state = d.data.join("sandboxes").join(&sb);
        // The daemon's whole temp dir (its log too), not only the data dir.
        let all = d.data.parent().expect("the data dir has a parent");
        let before = data_kib(all);
        let out = d.run(&[
            "exec",
            &sb,
            "--",
            "sh",
            "-c",
            "dd if=/dev/zero of=/proc/1/fd/2 bs=1M count=400 2>&1; echo rc=$?",
        ]);
        let text = stdout(&out);
        // It stops at the full volume, or (a namespace sandbox in its user
        // namespace) cannot even reopen the console, which the boot process
        // made as host root.
        assert!(
            !text.contains("rc=0")
                && (text.contains("No space left") || text.contains("Permission denied")),
            "{rt}: 400 MiB through /proc/1/fd/2 must stop at the full volume (disk 256M): {text}"
        );
        let grown = data_kib(all).saturating_sub(before);
        assert!(
            grown < 300 * 1024,
            "{rt}: host storage grew by {grown} KiB, more than the 256M volume"
        );
        assert!(
            !state.join("console.log").exists(),
            "{rt}: the console is a file in the host state dir"
        );
        // A restart empties an overgrown console; the sandbox works again.
        d.ok(&["stop", &sb]);
        d.ok(&["start", &sb]);
        assert_eq!(d.sh(&sb, "echo ok > /root/f && cat /root/f").trim(), "ok");
    }
}

/// The agent key is what the daemon finally relies on: a connection that
/// reaches sandbox B's agent while it expects sandbox A's (however it got
/// there) fails closed with an error naming A; B's own key works.
#[test]
fn reaching_another_sandboxs_agent_fails_the_handshake() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let d = Daemon::start();
        let a = create_on(&d, &format!("chan-ka-{rt}"), rt);
        let b = create_on(&d, &format!("chan-kb-{rt}"), rt);
        let key_of = |id: &str| {
            let p = d.data.join("sandboxes").join(id).join("sandbox.json");
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let hex = v["agent_key"]
                .as_str()
                .expect("a started sandbox has a key");
            dwell_proto::AgentKey::from_hex(hex).unwrap()
        };
        let (key_a, key_b) = (key_of(&a), key_of(&b));
        assert_ne!(key_a, key_b, "{rt}: two sandboxes share a key");
        let b_sock = host_socket(&d, &b);
        let tokio_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio_rt.block_on(async {
            let peer = |id: &str, key| dwell_proto::Peer {
                sandbox: id.to_string(),
                key: Some(key),
            };
            let s = tokio::net::UnixStream::connect(&b_sock).await.unwrap();
            let e = dwell_proto::AgentClient::from_stream_to(s, &peer(&a, key_a.clone()))
                .await
                .unwrap_err();
            assert!(
                matches!(e, dwell_proto::Error::Unauthenticated(_)) && e.to_string().contains(&a),
                "{rt}: reaching B with A's key: {e}"
            );
            let s = tokio::net::UnixStream::connect(&b_sock).await.unwrap();
            let c = dwell_proto::AgentClient::from_stream_to(s, &peer(&b, key_b.clone()))
                .await
                .unwrap_or_else(|e| panic!("{rt}: B's own key: {e}"));
            c.health().await.unwrap();
            // Without a key at all: refused too.
            let e = dwell_proto::AgentClient::connect_unix(&b_sock)
                .await
                .unwrap_err();
            assert!(
                matches!(e, dwell_proto::Error::Unauthenticated(_)),
                "{rt}: {e}"
            );
        });
        assert_eq!(d.sh(&a, "echo a").trim(), "a");
        assert_eq!(d.sh(&b, "echo b").trim(), "b");
    }
}
