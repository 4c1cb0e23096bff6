//! End to end: exec (exit codes, stdin, env, cwd, user, timeout, PTY,
//! background processes) and the file API, including attempts to name files
//! outside the sandbox.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn exec_reports_codes_streams_and_options() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("e", &["--env", "GREETING=hi"]);
    assert_eq!(
        d.run(&["exec", "e", "--", "sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    let out = d.run(&["exec", "e", "--", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    assert_eq!(
        d.run(&["exec", "e", "--", "sh", "-c", "kill -TERM $$"])
            .status
            .code(),
        Some(143)
    );
    assert_eq!(
        d.run(&["exec", "e", "--", "no-such-program"])
            .status
            .code()
            .map(|c| c != 0),
        Some(true)
    );
    assert_eq!(
        d.ok(&[
            "exec",
            "-e",
            "X=1",
            "-w",
            "/tmp",
            "e",
            "--",
            "sh",
            "-c",
            "echo $GREETING $X $(pwd)"
        ]),
        "hi 1 /tmp\n"
    );
    assert_eq!(
        d.ok(&["exec", "-u", "nobody", "e", "--", "id", "-u"]),
        "65534\n"
    );
    let out = d.run(&["exec", "--timeout", "300ms", "e", "--", "sleep", "10"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    // stdin, end of file included: the CLI once lost the data and the
    // close when its stdin ended before it forwarded them (a race, so
    // several rounds; `tr` then waited for ever).
    for round in 0..12 {
        let mut child = d
            .cmd(&["exec", "-i", "e", "--", "sh", "-c", "tr a-z A-Z"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
        let out = wait_within(child, Duration::from_secs(60), "dwell exec -i", || {
            tail(&d.log(), 30)
        });
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "SHOUT\n",
            "round {round}"
        );
    }
    // PTY: a terminal inside, sized like ours (80x24 when we have none).
    let out = d.ok(&[
        "exec",
        "-t",
        "e",
        "--",
        "sh",
        "-c",
        "test -t 0 && stty size",
    ]);
    assert_eq!(out.trim(), "24 80");
    // JSON form
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["exec", "--json", "e", "--", "echo", "j"])).unwrap();
    assert_eq!(v["stdout"], "j\n");
    assert_eq!(v["exit"]["code"], 0);
}

#[test]
fn background_processes_outlive_the_request_and_can_be_reattached() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("bg", &[]);
    let pid = d.ok(&[
        "exec",
        "-d",
        "--tag",
        "ticker",
        "bg",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; sleep 0.1; done; sleep 30",
    ]);
    let pid = pid.trim();
    wait_for(5, "output", || {
        d.ok(&["logs", "bg", "--pid", pid]).contains("line3")
    });
    let ps = d.ok(&["ps", "bg", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&ps).unwrap();
    let p = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_u64().map(|n| n.to_string()).as_deref() == Some(pid))
        .unwrap();
    assert_eq!(p["running"], true);
    assert_eq!(p["tag"], "ticker");
    d.ok(&["kill", "bg", pid, "-s", "KILL"]);
    wait_for(5, "process to end", || {
        let v: serde_json::Value = serde_json::from_str(&d.ok(&["ps", "bg", "--json"])).unwrap();
        v.as_array().unwrap().iter().any(|p| {
            p["pid"].as_u64().map(|n| n.to_string()).as_deref() == Some(pid)
                && p["running"] == false
        })
    });
}

#[test]
fn cp_round_trips_files_and_the_file_api_stays_inside() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("f", &[]);
    let local = d.dir.path().join("blob.bin");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&local, &data).unwrap();
    d.ok(&["cp", local.to_str().unwrap(), "f:/root/"]);
    assert_eq!(d.sh("f", "wc -c < /root/blob.bin"), "3000000\n");
    let back = d.dir.path().join("back.bin");
    d.ok(&["cp", "f:/root/blob.bin", back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the round trip changed the file"
    );

    // A host file the sandbox must never be able to name.
    let secret = d.dir.path().join("host-secret");
    std::fs::write(&secret, "HOSTSECRET").unwrap();
    let s = secret.to_str().unwrap();
    let out = d.run(&[
        "cp",
        &format!("f:/../../../..{s}"),
        d.dir.path().join("x1").to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "../ reached the host");
    d.sh(
        "f",
        &format!("ln -s {s} /root/link; ln -s ../../../../../..{s} /root/rel"),
    );
    for p in ["/root/link", "/root/rel"] {
        let dst = d.dir.path().join("x2");
        let out = d.run(&["cp", &format!("f:{p}"), dst.to_str().unwrap()]);
        let got = std::fs::read_to_string(&dst).unwrap_or_default();
        assert!(!got.contains("HOSTSECRET"), "{p} read a host file");
        assert!(!out.status.success());
    }
    // Writing through a symlink that points out stays inside too.
    d.sh("f", &format!("ln -s {s} /root/wlink"));
    let up = d.dir.path().join("payload");
    std::fs::write(&up, "PWNED").unwrap();
    let _ = d.run(&["cp", up.to_str().unwrap(), "f:/root/wlink"]);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "HOSTSECRET");
    // Errors are clear.
    let out = d.run(&[
        "cp",
        "f:/root/none",
        d.dir.path().join("n").to_str().unwrap(),
    ]);
    assert!(
        stderr(&out).contains("not_found") || stderr(&out).contains("No such file"),
        "{}",
        stderr(&out)
    );
    let out = d.run(&["cp", "f:relative", "x"]);
    assert!(stderr(&out).contains("absolute"));
}

/// A large upload the daemon refuses before reading it (the sandbox is
/// paused and does not wake on use) ends with the daemon's refusal, not
/// with a broken pipe from a connection closed while the file was still
/// being sent.
#[test]
fn cp_of_a_large_file_to_a_paused_sandbox_shows_the_refusal() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("p", &[]);
    d.ok(&["pause", "p"]);
    let big = d.dir.path().join("big.bin");
    // Sparse: 400 MiB to send without 400 MiB of disk.
    std::fs::File::create(&big)
        .unwrap()
        .set_len(400 << 20)
        .unwrap();
    for dest in ["p:/root/big.bin", "p:/root/", "p:/root/again.bin"] {
        let out = d.run(&["cp", big.to_str().unwrap(), dest]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(75), "{dest}: {err}");
        assert!(
            err.contains("is paused") && !err.contains("Broken pipe"),
            "{dest}: {err}"
        );
    }
    let _ = std::fs::remove_file(&big);
    d.ok(&["resume", "p"]);
    assert_eq!(
        d.sh(
            "p",
            "test ! -e /root/big.bin && test ! -e /root/again.bin && echo none"
        ),
        "none\n",
        "a refused upload left a file"
    );
}
