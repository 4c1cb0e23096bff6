//! End to end: the SSH gateway (`serve --ssh-listen`) with Debian's
//! OpenSSH client: commands with their exit status and streams, a PTY
//! shell driven through stdin (and resized through a real terminal),
//! `scp` both ways with a binary file, an `sftp -b` batch, `ssh -L`
//! forwarding to a server inside the sandbox, logins refused alike for a
//! wrong key, another tenant's sandbox and an unknown one, the audit
//! record, and a host key that survives restarts. On both runtimes where
//! this host has them. Then the attacks on the gateway itself (the same on
//! every runtime: login and channels are decided before the agent): a
//! tenant that registers another's public key cannot capture their bare
//! `SANDBOX@` logins, a removed key's live connection is closed and opens
//! no channel, and anonymous connections cannot take every slot.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// A daemon with `--ssh-listen`, a registered client key and a
/// known_hosts file that pins the daemon's host key.
struct Gateway {
    d: Daemon,
    port: u16,
    dir: tempfile::TempDir,
}

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        skip(&format!(
            "{tool} is not installed; install openssh-client (scripts/install-deps.sh)"
        ));
    }
    ok
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test@dwell", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
}

impl Gateway {
    fn start() -> Gateway {
        Gateway::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Gateway {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["--ssh-listen", &addr];
        // 8 s unless the test gives its own.
        if !extra.contains(&"--ssh-idle-timeout") {
            args.extend(["--ssh-idle-timeout", "8s"]);
        }
        args.extend_from_slice(extra);
        let d = Daemon::start_with(&args);
        wait_listening(&addr, 30);
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("id"));
        keygen(&dir.path().join("stranger"));
        let g = Gateway { d, port, dir };
        g.pin_host_key();
        g
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// known_hosts with the daemon's public host key for this port.
    fn pin_host_key(&self) {
        let public = std::fs::read_to_string(self.d.data.join("ssh_host_ed25519_key.pub"))
            .expect("the daemon wrote its public host key");
        std::fs::write(
            self.path("known_hosts"),
            format!("[127.0.0.1]:{} {}", self.port, public.trim()),
        )
        .unwrap();
    }

    fn opts(&self, key: &str) -> Vec<String> {
        let o = |s: &str| vec!["-o".to_string(), s.to_string()];
        let mut v = vec!["-i".to_string(), self.path(key).display().to_string()];
        v.extend(o("BatchMode=yes"));
        v.extend(o("IdentitiesOnly=yes"));
        v.extend(o("StrictHostKeyChecking=yes"));
        v.extend(o(&format!(
            "UserKnownHostsFile={}",
            self.path("known_hosts").display()
        )));
        v.extend(o("GlobalKnownHostsFile=/dev/null"));
        v.extend(o("ConnectTimeout=20"));
        v.extend(o("LogLevel=ERROR"));
        v
    }

    /// `ssh -p PORT [extra] USER@127.0.0.1 -- CMD` with `key`.
    fn ssh_cmd(&self, key: &str, user: &str, extra: &[&str], cmd: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-p")
            .arg(self.port.to_string())
            .args(self.opts(key))
            .args(extra)
            .arg(format!("{user}@127.0.0.1"));
        if !cmd.is_empty() {
            c.arg("--").args(cmd);
        }
        c
    }

    fn run(&self, mut c: Command, input: &[u8]) -> Output {
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("start ssh");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        wait_within(child, Duration::from_secs(120), "an ssh client", || {
            tail(&self.d.log(), 40)
        })
    }

    fn ssh(&self, user: &str, cmd: &[&str], input: &[u8]) -> Output {
        self.run(self.ssh_cmd("id", user, &[], cmd), input)
    }

    fn refused(&self, key: &str, user: &str) {
        let out = self.run(self.ssh_cmd(key, user, &[], &["true"]), b"");
        assert_eq!(out.status.code(), Some(255), "{user} with {key} logged in");
        assert!(
            stderr(&out).contains("Permission denied (publickey)"),
            "{user} with {key}: {}",
            stderr(&out)
        );
    }
}

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    stdout(&out).split_whitespace().next().unwrap().to_string()
}

/// Deterministic bytes that are not text (all 256 values, no pattern a
/// line-ending conversion would leave alone).
fn binary(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Commands, PTY shell, scp and sftp on a sandbox named `sb`.
fn sessions_and_files(g: &Gateway, sb: &str) {
    // A command: its streams apart and its exit status.
    let out = g.ssh(sb, &["echo out; echo err >&2; exit 7"], b"");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    // Stdin, and its end.
    let out = g.ssh(sb, &["wc -c"], b"hello world");
    assert_eq!(stdout(&out).trim(), "11");
    // A stream both ways larger than every window: `cat` echoes 12 MiB.
    let big = binary(12 << 20);
    let out = g.ssh(sb, &["cat"], &big);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == big, "cat returned {} bytes", out.stdout.len());
    // Environment sent by the client (SetEnv) and the start directory.
    let out = g.run(
        g.ssh_cmd(
            "id",
            sb,
            &["-o", "SetEnv=DWELL_T=from-client"],
            &["echo $DWELL_T; pwd"],
        ),
        b"",
    );
    assert_eq!(stdout(&out), "from-client\n/root\n");
    // Killed by a signal: the client reports it (OpenSSH exits 255).
    let out = g.ssh(sb, &["kill -KILL $$"], b"");
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));

    // A PTY shell driven by stdin.
    let out = g.run(
        g.ssh_cmd("id", sb, &["-tt"], &[]),
        b"tty; stty size; echo shell-$((6*7)); exit 3\n",
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}\n{}", stderr(&out));
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("shell-42"), "{text}");
    // The client had no terminal: the default size.
    assert!(text.contains("24 80"), "{text}");

    // A real terminal (python's pty): its size at login, then a resize.
    let script = r#"
import fcntl, os, pty, select, signal, struct, sys, termios, time
def size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
pid, fd = pty.fork()
if pid == 0:
    size(0, 30, 100)
    os.execvp(sys.argv[1], sys.argv[1:])
out = b""
def read_until(marker, limit):
    global out
    end = time.time() + limit
    while marker not in out and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                b = os.read(fd, 4096)
            except OSError:
                return
            if not b:
                return
            out += b
time.sleep(1)
os.write(fd, b"stty size; echo first-$((1+1))\n")
read_until(b"first-2", 60)
size(fd, 40, 120)
# The window-change travels client -> gateway -> agent: on a loaded machine
# it may take longer than a fixed wait, so ask until it has arrived. The
# kernel's SIGWINCH to the client is sent again each round: a client that
# missed it (busy machine) sends the new size when it gets one.
end = time.time() + 30
while b"40 120" not in out and time.time() < end:
    try:
        os.kill(pid, signal.SIGWINCH)
    except OSError:
        pass
    os.write(fd, b"stty size\n")
    read_until(b"40 120", 1)
os.write(fd, b"stty size; echo second-$((2+2)); exit\n")
read_until(b"\x00never", 60)
sys.stdout.write(out.decode(errors="replace"))
"#;
    let mut py = Command::new("python3");
    py.arg("-c").arg(script).arg("ssh").args(
        g.ssh_cmd("id", sb, &["-t"], &[])
            .get_args()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    let out = g.run(py, b"");
    let text = stdout(&out);
    assert!(
        text.contains("30 100") && text.contains("first-2"),
        "{text}"
    );
    assert!(
        text.contains("40 120") && text.contains("second-4"),
        "{text}"
    );

    // scp both ways, a binary file byte for byte.
    let data = binary(700 * 1024 + 13);
    std::fs::write(g.path("up.bin"), &data).unwrap();
    let mut scp = Command::new("scp");
    scp.arg("-P")
        .arg(g.port.to_string())
        .args(g.opts("id"))
        .arg(g.path("up.bin"))
        .arg(format!("{sb}@127.0.0.1:/root/up.bin"));
    let out = g.run(scp, b"");
    assert!(out.status.success(), "scp up: {}", stderr(&out));
    let inside = g.d.sh(sb, "sha256sum /root/up.bin");
    assert_eq!(
        inside.split_whitespace().next(),
        Some(sha256(&g.path("up.bin")).as_str())
    );
    let mut scp = Command::new("scp");
    scp.arg("-P")
        .arg(g.port.to_string())
        .args(g.opts("id"))
        .arg(format!("{sb}@127.0.0.1:up.bin"))
        .arg(g.path("down.bin"));
    let out = g.run(scp, b"");
    assert!(out.status.success(), "scp down: {}", stderr(&out));
    assert!(std::fs::read(g.path("down.bin")).unwrap() == data);

    // An sftp batch: mkdir, put, ls, rename, get, rm, rmdir.
    let batch = format!(
        "mkdir /root/sd\nput {up} /root/sd/a.bin\nls -l /root/sd\nrename /root/sd/a.bin /root/sd/b.bin\n\
         ls /root/sd\nget /root/sd/b.bin {back}\nrm /root/sd/b.bin\nrmdir /root/sd\n",
        up = g.path("up.bin").display(),
        back = g.path("back.bin").display()
    );
    std::fs::write(g.path("batch"), batch).unwrap();
    let mut sftp = Command::new("sftp");
    sftp.arg("-P")
        .arg(g.port.to_string())
        .args(g.opts("id"))
        .arg("-b")
        .arg(g.path("batch"))
        .arg(format!("{sb}@127.0.0.1"));
    let out = g.run(sftp, b"");
    assert!(
        out.status.success(),
        "sftp: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let listing = stdout(&out);
    assert!(
        listing.contains("a.bin") && listing.contains("b.bin"),
        "{listing}"
    );
    assert!(listing.contains(&data.len().to_string()), "{listing}");
    assert!(std::fs::read(g.path("back.bin")).unwrap() == data);
    assert_eq!(
        g.d.sh(sb, "test -e /root/sd && echo left || echo gone"),
        "gone\n"
    );
    // What cannot be done says so: a symlink (sftp's exit status is 1).
    std::fs::write(g.path("batch2"), "symlink /etc/passwd /root/pw\n").unwrap();
    let mut sftp = Command::new("sftp");
    sftp.arg("-P")
        .arg(g.port.to_string())
        .args(g.opts("id"))
        .arg("-b")
        .arg(g.path("batch2"))
        .arg(format!("{sb}@127.0.0.1"));
    let out = g.run(sftp, b"");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unsupported"), "{}", stderr(&out));
}

/// `ssh -L` to a web server inside the sandbox (its own loopback).
fn local_forward(g: &Gateway, sb: &str) {
    g.d.ok(&[
        "exec",
        "-d",
        sb,
        "--",
        "python3",
        "-m",
        "http.server",
        "8080",
        "--bind",
        "127.0.0.1",
        "--directory",
        "/etc",
    ]);
    wait_for(30, "http.server inside the sandbox", || {
        g.d.run(&[
            "exec",
            sb,
            "--",
            "python3",
            "-c",
            "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/')",
        ])
        .status
        .success()
    });
    let lport = free_port();
    let mut c = g.ssh_cmd(
        "id",
        sb,
        &[
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &format!("{lport}:localhost:8080"),
        ],
        &[],
    );
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ssh = KillOnDrop(child);
    let addr = format!("127.0.0.1:{lport}");
    wait_listening(&addr, 30);
    let r = http::request(&addr, "GET", "/hostname", &[], b"");
    assert_eq!(r.status, 200);
    let inside = g.d.sh(sb, "cat /etc/hostname");
    assert_eq!(r.text(), inside);
    // A port nothing listens on: the connection is refused, the session
    // lives (the client still runs and a working forward of the same
    // connection still serves).
    let lport2 = free_port();
    let lport3 = free_port();
    let mut c = g.ssh_cmd(
        "id",
        sb,
        &[
            "-L",
            &format!("{lport2}:127.0.0.1:9"),
            "-L",
            &format!("{lport3}:localhost:8080"),
        ],
        &["sleep 60"],
    );
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ssh2 = KillOnDrop(child);
    let addr2 = format!("127.0.0.1:{lport2}");
    let addr3 = format!("127.0.0.1:{lport3}");
    wait_listening(&addr2, 30);
    wait_listening(&addr3, 30);
    let got = http::try_request(&addr2, "GET", "/", &[], b"");
    assert!(
        got.is_err(),
        "a closed port answered: {:?}",
        got.map(|r| r.status)
    );
    assert!(
        matches!(ssh2.0.try_wait(), Ok(None)),
        "the refused channel ended the ssh connection: {:?}",
        ssh2.0.try_wait()
    );
    let r = http::request(&addr3, "GET", "/hostname", &[], b"");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.text(), inside);
    assert!(
        matches!(ssh2.0.try_wait(), Ok(None)),
        "the ssh connection lives on"
    );
}

/// An SSH login wakes a sandbox its idle timeout paused (auto-resume is on
/// by default after a policy's pause) and runs the command; one a user
/// paused with auto-resume turned off stays asleep, and the client prints
/// the reason naming its state.
#[test]
fn an_ssh_login_wakes_a_policy_paused_sandbox() {
    if !can_run() || !have("ssh") {
        return;
    }
    let g = Gateway::start_with(&["--resync-secs", "1"]);
    g.d.ok(&[
        "ssh-key",
        "add",
        "--name",
        "laptop",
        &g.path("id.pub").display().to_string(),
    ]);
    g.d.create("web", &["--idle-timeout", "2s"]);
    let state = || g.d.inspect("web")["state"].as_str().unwrap().to_string();
    wait_for(15, "idle -> paused", || state() == "paused");
    // No second idle pause between the calls below on a slow machine; the
    // pause stays the policy's.
    g.d.ok(&["update", "web", "--idle-timeout", "1h"]);
    assert_eq!(g.d.inspect("web")["wakes_on_use"], true);
    let out = g.ssh("web", &["echo awake"], b"");
    assert_eq!(stdout(&out), "awake\n", "{}", stderr(&out));
    assert_eq!(state(), "running");
    let events = g.d.ok(&["logs", "web"]);
    assert!(events.contains("woken by SSH"), "{events}");

    // Paused by its user, auto-resume off: not woken.
    g.d.ok(&["pause", "web"]);
    g.d.ok(&["update", "web", "--auto-resume=false"]);
    let out = g.ssh("web", &["true"], b"");
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sandbox web is paused") && err.contains("does not wake on use"),
        "{err}"
    );
    assert_eq!(state(), "paused");
    assert_eq!(g.d.ok(&["logs", "web"]).matches("woken by").count(), 1);
}

#[test]
fn ssh_gateway_with_the_openssh_client() {
    if !can_run() || !have("ssh") {
        return;
    }
    let mut g = Gateway::start();
    // The key as registered: fingerprint as ssh-keygen prints it.
    g.d.ok(&[
        "ssh-key",
        "add",
        "--name",
        "laptop",
        &g.path("id.pub").display().to_string(),
    ]);
    let keys: serde_json::Value =
        serde_json::from_str(&g.d.ok(&["ssh-key", "ls", "--json"])).unwrap();
    let fp = stdout(
        &Command::new("ssh-keygen")
            .arg("-lf")
            .arg(g.path("id.pub"))
            .output()
            .unwrap(),
    );
    assert_eq!(keys[0]["name"], "laptop");
    assert!(
        fp.contains(keys[0]["fingerprint"].as_str().unwrap()),
        "{fp}"
    );
    // The same key twice is a conflict.
    let again =
        g.d.run(&["ssh-key", "add", &g.path("id.pub").display().to_string()]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already registered"),
        "{}",
        stderr(&again)
    );

    let host_fp = {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(g.d.data.join("ssh_host_ed25519_key.pub"))
            .output()
            .unwrap();
        stdout(&out).split_whitespace().nth(1).unwrap().to_string()
    };
    assert!(
        g.d.log().contains(&host_fp),
        "the serve log names the host key"
    );

    let id = g.d.create("web", &[]);
    sessions_and_files(&g, "web");
    // By id too.
    assert_eq!(stdout(&g.ssh(&id, &["echo by-id"], b"")), "by-id\n");
    local_forward(&g, "web");

    // Logins are audited.
    let audit = g.d.ok(&["audit", "--json"]);
    assert!(
        audit.contains("\"SSH\"") && audit.contains(&format!("/v1/sandboxes/{id}/ssh")),
        "{audit}"
    );

    // Refused alike: a key nobody registered, another tenant's sandbox, no sandbox.
    g.d.tenant_key("other");
    g.d.ok(&[
        "--as-tenant",
        "other",
        "create",
        "--name",
        "theirs",
        "--memory",
        "256M",
        "--disk",
        "512M",
    ]);
    g.refused("stranger", "web");
    g.refused("id", "theirs");
    g.refused("id", "nope");
    // A removed key no longer logs in.
    g.d.ok(&[
        "ssh-key",
        "add",
        "--name",
        "second",
        &g.path("stranger.pub").display().to_string(),
    ]);
    assert_eq!(
        stdout(&g.run(g.ssh_cmd("stranger", "web", &[], &["echo in"]), b"")),
        "in\n"
    );
    g.d.ok(&["ssh-key", "rm", "second"]);
    g.refused("stranger", "web");
    let gone = g.d.run(&["ssh-key", "rm", "second"]);
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains("no SSH key"), "{}", stderr(&gone));

    // A stopped sandbox: the login works, the command says why it cannot run.
    g.d.ok(&["stop", "web"]);
    let out = g.ssh("web", &["true"], b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(stderr(&out).contains("stopped"), "{}", stderr(&out));
    g.d.ok(&["start", "web"]);

    // gVisor, where this host has it.
    if can_run_gvisor() {
        g.d.create("gv", &["--isolation", "gvisor"]);
        sessions_and_files(&g, "gv");
        local_forward(&g, "gv");
    }

    // A connection without traffic is closed after --ssh-idle-timeout.
    let t0 = std::time::Instant::now();
    let out = g.ssh("web", &["sleep 60"], b"");
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(t0.elapsed() < Duration::from_secs(40), "{:?}", t0.elapsed());

    // The host key survives a restart: the pinned known_hosts still works.
    g.d.restart();
    wait_listening(&format!("127.0.0.1:{}", g.port), 30);
    assert_eq!(stdout(&g.ssh("web", &["echo again"], b"")), "again\n");
}

/// Opens idle TCP connections to the gateway from loopback source
/// addresses (`plan`: `IP:COUNT`), prints how many of each got the server's
/// greeting (the rest were closed at once), closes those of the last
/// address, then prints how many of the others the server closed (the
/// login grace) and how long that took; exits when its stdin closes.
const IDLE_CLIENTS: &str = r#"
import socket, sys, time
port = int(sys.argv[1])
conns = []
for item in sys.argv[2:]:
    ip, n = item.split(":")
    for _ in range(int(n)):
        s = socket.socket()
        s.bind((ip, 0))
        s.connect(("127.0.0.1", port))
        conns.append((ip, s))
time.sleep(1)
greeted, counts = [], {}
for ip, s in conns:
    s.settimeout(3)
    try:
        b = s.recv(64)
    except OSError:
        b = b""
    if b.startswith(b"SSH-"):
        greeted.append((ip, s))
        counts[ip] = counts.get(ip, 0) + 1
last = sys.argv[-1].split(":")[0]
greeted = [s for ip, s in greeted if ip != last or s.close()]
time.sleep(1)
print(" ".join(f"{item.split(':')[0]}={counts.get(item.split(':')[0], 0)}" for item in sys.argv[2:]), flush=True)
t0 = time.time()
closed = 0
for s in greeted:
    s.settimeout(max(0.1, 40 - (time.time() - t0)))
    try:
        while s.recv(4096):
            pass
        closed += 1
    except OSError as e:
        closed += 1 if not isinstance(e, socket.timeout) else 0
print(f"closed={closed} after={time.time() - t0:.0f}", flush=True)
sys.stdin.read()
"#;

#[test]
fn ssh_gateway_shared_keys_removed_keys_and_anonymous_floods() {
    if !can_run() || !have("ssh") || !has_tools(&["python3"]) {
        return;
    }
    let g = Gateway::start_with(&[
        "--ssh-max-connections",
        "30",
        "--ssh-max-startups",
        "20",
        "--ssh-max-startups-per-ip",
        "10",
        "--ssh-login-grace",
        "10s",
        // Far above the 15 s the removed key's connection gets to close:
        // that close is the removal's, not the idle timeout's.
        "--ssh-idle-timeout",
        "10m",
    ]);
    let key = |tenant: Option<&str>, name: &str, file: &str| {
        let path = g.path(file).display().to_string();
        let mut args = vec![];
        if let Some(t) = tenant {
            args.extend(["--as-tenant", t]);
        }
        args.extend(["ssh-key", "add", "--name", name, path.as_str()]);
        g.d.ok(&args);
    };

    // 1. Anonymous connections: at most 10 per source address and 20 in
    // all wait to log in (56 opened against 30 connection slots); once a
    // few of them go, a user from elsewhere logs in; the waiting ones are
    // closed after the login grace.
    key(None, "laptop", "id.pub");
    g.d.create("main", &[]);
    let mut py = Command::new("python3");
    py.arg("-c")
        .arg(IDLE_CLIENTS)
        .arg(g.port.to_string())
        .args(["127.0.0.1:40", "127.0.0.3:8", "127.0.0.4:8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut flood = py.spawn().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(flood.stdout.take().unwrap()));
    let flood = KillOnDrop(flood);
    let counts = lines.next().unwrap().unwrap();
    assert_eq!(counts, "127.0.0.1=10 127.0.0.3=8 127.0.0.4=2", "{counts}");
    let out = g.run(
        g.ssh_cmd("id", "main", &["-o", "BindAddress=127.0.0.2"], &["echo in"]),
        b"",
    );
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
    let closed = lines.next().unwrap().unwrap();
    assert!(closed.starts_with("closed=18 "), "{closed}");
    assert!(g.d.log().contains("--ssh-max-startups-per-ip"));
    drop(flood);

    // 2. Tenant "attacker" registers the victim's public key (public keys
    // are public) and makes a sandbox "web"; the victim ("default") has
    // "main" only. The victim's bare `web@` must not reach the attacker's.
    g.d.tenant_key("attacker");
    key(Some("attacker"), "stolen", "id.pub");
    g.d.ok(&[
        "--as-tenant",
        "attacker",
        "create",
        "--name",
        "web",
        "--memory",
        "256M",
        "--disk",
        "512M",
    ]);
    g.d.ok(&[
        "--as-tenant",
        "attacker",
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo attacker > /owner",
    ]);
    let ambiguous = |user: &str| {
        let out = g.ssh(user, &["cat /owner; echo reached"], b"");
        assert_eq!(out.status.code(), Some(255), "{user}: {}", stdout(&out));
        assert!(
            !stdout(&out).contains("reached"),
            "{user}: {}",
            stdout(&out)
        );
        assert!(
            stderr(&out).contains(&format!("ssh {user}+TENANT@HOST")),
            "{user}: {}",
            stderr(&out)
        );
    };
    ambiguous("web");
    ambiguous("main");
    // Qualified: only the tenant named, and only if it holds the key.
    g.refused("id", "web+default");
    g.refused("id", "web+nobody");
    g.refused("id", "web+default+attacker");
    assert_eq!(
        stdout(&g.ssh("main+default", &["echo mine"], b"")),
        "mine\n"
    );
    // The victim makes its own "web": the bare name is still refused, the
    // qualified one and the id reach the victim's.
    let vid = g.d.create("web", &[]);
    g.d.sh("web", "echo victim > /owner");
    ambiguous("web");
    assert_eq!(
        stdout(&g.ssh("web+default", &["cat /owner"], b"")),
        "victim\n"
    );
    assert_eq!(stdout(&g.ssh(&vid, &["cat /owner"], b"")), "victim\n");
    assert!(g.d.log().contains("a bare sandbox name is ambiguous"));
    // A key only one tenant registered still logs in by bare name.
    key(None, "second", "stranger.pub");
    assert_eq!(
        stdout(&g.run(g.ssh_cmd("stranger", "web", &[], &["cat /owner"]), b"")),
        "victim\n"
    );

    // 3. A removed key: its live connection opens no new channel and is
    // closed within seconds (a multiplexed master connection).
    let ctl = g.path("mux");
    let ctl_opt = format!("ControlPath={}", ctl.display());
    let mux = |extra: &[&str], cmd: &[&str]| {
        let mut v = vec!["-o", ctl_opt.as_str()];
        v.extend_from_slice(extra);
        g.run(g.ssh_cmd("stranger", "web", &v, cmd), b"")
    };
    let master = g
        .ssh_cmd(
            "stranger",
            "web",
            &["-o", &ctl_opt, "-o", "ControlMaster=yes", "-N"],
            &[],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut master = KillOnDrop(master);
    wait_for(30, "the ssh master connection", || {
        mux(&["-O", "check"], &[]).status.success()
    });
    let out = mux(&["-o", "ControlMaster=no"], &["echo one"]);
    assert_eq!(stdout(&out), "one\n", "{}", stderr(&out));
    let t0 = std::time::Instant::now();
    g.d.ok(&["ssh-key", "rm", "second"]);
    wait_for(15, "the removed key's connection to close", || {
        matches!(master.0.try_wait(), Ok(Some(_)))
    });
    println!(
        "the removed key's connection closed {:?} after its removal began",
        t0.elapsed()
    );
    let out = mux(&["-o", "ControlMaster=no"], &["echo two"]);
    assert_ne!(stdout(&out), "two\n");
    assert!(g.d.log().contains("no longer logs in"));
}
