//! Exec through the real agent: exit codes, signals, stdout/stderr, stdin,
//! timeouts, concurrency, background processes, attach, PTY.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{s, sh, Agent};
use dwell_proto::{Error, ErrorKind, ExecRequest, ProcessEvent, TtySize};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_signals_and_errors() {
    let a = Agent::start();
    let c = a.client().await;
    let o = sh(&c, "exit 3").await;
    assert_eq!(
        (o.status.code, o.status.signal, o.status.timed_out),
        (Some(3), None, false)
    );
    let o = sh(&c, "kill -TERM $$").await;
    assert_eq!((o.status.code, o.status.signal), (None, Some(15)));
    let o = c
        .exec(ExecRequest::argv(["echo", "a b", "c"]))
        .await
        .unwrap()
        .output(1 << 24)
        .await
        .unwrap();
    assert_eq!(s(&o.stdout), "a b c\n");
    let e = c
        .exec(ExecRequest::argv(["/definitely/not/here"]))
        .await
        .err()
        .expect("missing program must fail");
    assert_eq!(e.remote_kind(), Some(ErrorKind::NotFound), "{e}");
    let mut r = ExecRequest::shell("true");
    r.cwd = Some("/no/such/dir".into());
    let e = c.exec(r).await.err().unwrap();
    assert_eq!(e.remote_kind(), Some(ErrorKind::NotFound), "{e}");
    let e = c.exec(ExecRequest::default()).await.err().unwrap();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    let h = c.health().await.unwrap();
    assert_eq!(h.protocol, dwell_proto::PROTOCOL_VERSION);
    assert!(h.pid_count > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_cwd_user_and_streams() {
    let a = Agent::start();
    let c = a.client().await;
    let mut r = ExecRequest::shell("echo out; echo err >&2; echo $FOO; pwd; id -u; echo $HOME");
    r.env.insert("FOO".into(), "bar".into());
    r.cwd = Some("/tmp".into());
    r.user = Some("65534:65534".into());
    let o = c.exec(r).await.unwrap().output(1 << 24).await.unwrap();
    let out = s(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..4], ["out", "bar", "/tmp", "65534"], "{out}");
    assert_eq!(s(&o.stderr), "err\n");
    let mut r = ExecRequest::shell("id -un; echo $HOME");
    r.user = Some("root".into());
    let o = c.exec(r).await.unwrap().output(1 << 24).await.unwrap();
    assert_eq!(s(&o.stdout), "root\n/root\n");
    let mut r = ExecRequest::shell("true");
    r.user = Some("no-such-user-xyz".into());
    assert_eq!(
        c.exec(r).await.err().unwrap().remote_kind(),
        Some(ErrorKind::NotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_streamed_and_closed() {
    let a = Agent::start();
    let c = a.client().await;
    let mut r = ExecRequest::argv(["sh", "-c", "wc -c; echo done"]);
    r.stdin = true;
    let p = c.exec(r).await.unwrap();
    let input = p.input();
    let big = Bytes::from(vec![b'x'; 3 * 1024 * 1024 + 7]);
    input.write_stdin(big).await.unwrap();
    input.close_stdin().await.unwrap();
    let o = p.output(1 << 24).await.unwrap();
    assert_eq!(
        s(&o.stdout).split_whitespace().collect::<Vec<_>>(),
        ["3145735", "done"]
    );
    // Without stdin the process sees /dev/null.
    let o = sh(&c, "cat; echo end").await;
    assert_eq!(s(&o.stdout), "end\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_and_reports() {
    let a = Agent::start();
    let c = a.client().await;
    let mut r = ExecRequest::shell("echo before; sleep 30");
    r.timeout_ms = Some(300);
    let t = Instant::now();
    let o = c.exec(r).await.unwrap().output(1 << 24).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(o.status.timed_out);
    assert_eq!(o.status.signal, Some(9));
    assert_eq!(s(&o.stdout), "before\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_execs_on_one_connection() {
    let a = Agent::start();
    let c = a.client().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let o = sh(&c, &format!("echo {i}; echo e{i} >&2; exit {}", i % 7)).await;
            assert_eq!(s(&o.stdout), format!("{i}\n"));
            assert_eq!(s(&o.stderr), format!("e{i}\n"));
            assert_eq!(o.status.code, Some(i % 7));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_foreground_exec_is_killed() {
    let a = Agent::start();
    let c = a.client().await;
    let p = c.exec(ExecRequest::shell("sleep 30")).await.unwrap();
    let pid = p.pid();
    drop(p);
    let t = Instant::now();
    loop {
        let ps = c.processes().await.unwrap();
        let me = ps.iter().find(|x| x.pid == pid).expect("process is listed");
        if !me.running {
            assert_eq!(me.exit.unwrap().signal, Some(9));
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "foreground process survived its stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_outlives_connection_and_reattaches() {
    let a = Agent::start();
    let c = a.client().await;
    let mut r = ExecRequest::shell("echo start; echo warn >&2; sleep 1; echo end");
    r.background = true;
    r.tag = Some("bg-job".into());
    let mut p = c.exec(r).await.unwrap();
    let pid = p.pid();
    assert_eq!(p.next().await, Some(ProcessEvent::Started { pid }));
    // Wait for the first line, then drop the whole connection.
    loop {
        if let Some(ProcessEvent::Stdout(b)) = p.next().await {
            assert_eq!(&b[..], b"start\n");
            break;
        }
    }
    drop(p);
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let c2 = a.client().await;
    let ps = c2.processes().await.unwrap();
    let info = ps
        .iter()
        .find(|x| x.pid == pid)
        .expect("background process listed");
    assert!(info.running && info.background);
    assert_eq!(info.tag.as_deref(), Some("bg-job"));
    let mut att = c2.attach(pid).await.unwrap();
    assert_eq!(att.info().unwrap().pid, pid);
    let o = {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut status = None;
        while let Some(ev) = att.next().await {
            match ev {
                ProcessEvent::Stdout(b) => out.extend_from_slice(&b),
                ProcessEvent::Stderr(b) => err.extend_from_slice(&b),
                ProcessEvent::Exit(st) => status = Some(st),
                ProcessEvent::Started { .. } => {}
            }
        }
        assert!(att.error().is_none(), "{:?}", att.error());
        (out, err, status.unwrap())
    };
    assert_eq!(s(&o.0), "start\nend\n");
    assert_eq!(s(&o.1), "warn\n");
    assert_eq!(o.2.code, Some(0));
    // Attaching after the exit replays and reports the exit.
    let o = c2.attach(pid).await.unwrap().output(1 << 24).await.unwrap();
    assert_eq!(
        (s(&o.stdout).as_str(), o.status.code),
        ("start\nend\n", Some(0))
    );
    let e = c2.attach(999_999).await.err().unwrap();
    assert_eq!(e.remote_kind(), Some(ErrorKind::NoSuchProcess));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_by_pid_and_by_handle() {
    let a = Agent::start();
    let c = a.client().await;
    let p = c.exec(ExecRequest::shell("sleep 30")).await.unwrap();
    c.signal(p.pid(), libc::SIGTERM).await.unwrap();
    let o = p.output(1 << 24).await.unwrap();
    assert_eq!(o.status.signal, Some(libc::SIGTERM));
    let p = c.exec(ExecRequest::argv(["sleep", "30"])).await.unwrap();
    p.input().signal(libc::SIGUSR1).await.unwrap();
    assert_eq!(
        p.output(1 << 24).await.unwrap().status.signal,
        Some(libc::SIGUSR1)
    );
    assert!(c.signal(12345678, 15).await.is_err());
    assert_eq!(
        c.signal(2, 0).await.err().unwrap().remote_kind(),
        Some(ErrorKind::InvalidArgument)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_exec_with_resize() {
    let a = Agent::start();
    let c = a.client().await;
    let mut r =
        ExecRequest::shell("test -t 0 && echo is-tty; stty size; read x; stty size; echo got-$x");
    r.tty = Some(TtySize { rows: 24, cols: 80 });
    let mut p = c.exec(r).await.unwrap();
    let input = p.input();
    let mut out = String::new();
    let mut resized = false;
    let mut status = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(ev) = tokio::time::timeout_at(deadline.into(), p.next())
        .await
        .expect("pty exec hung")
    {
        match ev {
            ProcessEvent::Stdout(b) => out.push_str(&s(&b)),
            ProcessEvent::Stderr(_) => panic!("a tty has no separate stderr"),
            ProcessEvent::Exit(st) => status = Some(st),
            ProcessEvent::Started { .. } => {}
        }
        if !resized && out.contains("24 80") {
            resized = true;
            input.resize(40, 100).await.unwrap();
            input
                .write_stdin(Bytes::from_static(b"hi\n"))
                .await
                .unwrap();
        }
    }
    assert!(out.contains("is-tty"), "{out}");
    assert!(out.contains("40 100"), "{out}");
    assert!(out.contains("got-hi"), "{out}");
    assert_eq!(status.unwrap().code, Some(0));

    // Unary resize by pid and tty EOF via close_stdin.
    let mut r = ExecRequest::shell("read x; stty size; cat; echo eof");
    r.tty = Some(TtySize { rows: 10, cols: 20 });
    let p = c.exec(r).await.unwrap();
    c.resize(p.pid(), 33, 44).await.unwrap();
    let input = p.input();
    input
        .write_stdin(Bytes::from_static(b"go\n"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    input.close_stdin().await.unwrap();
    let o = tokio::time::timeout(Duration::from_secs(10), p.output(1 << 24))
        .await
        .unwrap()
        .unwrap();
    let out = s(&o.stdout);
    assert!(out.contains("33 44") && out.contains("eof"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_by_pid_from_another_connection() {
    let a = Agent::start();
    let c = a.client().await;
    let mut r = ExecRequest::shell("cat; echo closed");
    r.stdin = true;
    r.background = true;
    let p = c.exec(r).await.unwrap();
    let pid = p.pid();
    drop(p);
    let c2 = a.client().await;
    c2.write_stdin(pid, Bytes::from_static(b"abc\n"))
        .await
        .unwrap();
    c2.write_stdin(pid, Bytes::from(vec![b'z'; 300 * 1024]))
        .await
        .unwrap();
    c2.close_stdin(pid).await.unwrap();
    let o = c2.attach(pid).await.unwrap().output(1 << 24).await.unwrap();
    let out = s(&o.stdout);
    // The ring keeps the last 64 KiB; the end of the stream must be there.
    assert!(
        out.ends_with("zzz\nclosed\n") || out.ends_with("zzzclosed\n"),
        "{}",
        &out[out.len().saturating_sub(20)..]
    );
    assert_eq!(o.status.code, Some(0));
    // A process without stdin says so.
    let p = c.exec(ExecRequest::shell("sleep 5")).await.unwrap();
    let e = c
        .write_stdin(p.pid(), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::InvalidArgument), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_is_not_held_back_by_descendants_holding_the_pipe() {
    let a = Agent::start();
    let c = a.client().await;
    let t = Instant::now();
    let p = c
        .exec(ExecRequest::shell("(sleep 1.5; echo late) & echo early"))
        .await
        .unwrap();
    let pid = p.pid();
    let o = p.output(1 << 24).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(350),
        "exit waited for the descendant"
    );
    assert_eq!((s(&o.stdout).as_str(), o.status.code), ("early\n", Some(0)));
    // The descendant's later output lands in the replay buffer (no SIGPIPE).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let o = c.attach(pid).await.unwrap().output(1 << 24).await.unwrap();
    assert_eq!(s(&o.stdout), "early\nlate\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_to_a_process_with_a_huge_command_line_fits_the_event_limit() {
    use dwell_proto::frame::MAX_EVENT_PAYLOAD;
    let a = Agent::start();
    let c = a.client().await;
    // Ten arguments of 100 KiB: the command line is far above an event.
    let big = "a".repeat(100 * 1024);
    let mut argv = vec!["sh".to_string(), "-c".into(), "echo ok".into()];
    argv.extend((0..10).map(|_| big.clone()));
    let o = c
        .exec(ExecRequest::argv(argv))
        .await
        .unwrap()
        .output(1 << 24)
        .await
        .unwrap();
    assert_eq!(s(&o.stdout), "ok\n");
    let pid = c
        .processes()
        .await
        .unwrap()
        .iter()
        .find(|p| p.argv.len() == 13)
        .expect("the process is listed with its whole command line")
        .pid;
    // The attached event carries the head of the command line, cut short.
    let att = c.attach(pid).await.unwrap();
    let info = att.info().unwrap().clone();
    assert_eq!(info.pid, pid);
    assert_eq!(info.argv[..3], ["sh", "-c", "echo ok"]);
    assert!(
        info.argv.last().unwrap().ends_with('…'),
        "{:?}",
        info.argv.len()
    );
    assert!(serde_json::to_vec(&info).unwrap().len() < MAX_EVENT_PAYLOAD);
    let o = att.output(1 << 24).await.unwrap();
    assert_eq!((s(&o.stdout).as_str(), o.status.code), ("ok\n", Some(0)));
}
