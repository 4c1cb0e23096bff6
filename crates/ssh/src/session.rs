//! Session channels: a shell or a command run through the agent, with or
//! without a PTY, or the sftp subsystem. The channel's task reads its
//! requests in order (PTY, environment, then the one that starts
//! something), runs it, and then carries stdin (and its end), window
//! changes and signals to the process and its output back, ending with
//! `exit-status` (or `exit-signal`), EOF and close. A client that closes
//! the channel first kills the process (its stream is dropped).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use dwell_control::Controller;
use dwell_proto::{AgentClient, ExecRequest, ProcessEvent, TtySize};
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelWriteHalf, Sig};

use crate::server::{env_ok, ChannelSlot, Login};

/// The shell of `ssh host` without a command: bash as a login shell when
/// the image has it, else sh (as `dwell shell` does).
const LOGIN_SHELL: &str =
    "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi";

/// Stdin bytes a session holds that its process has not taken yet.
pub const STDIN_BUFFER: usize = 16 * 1024 * 1024;

/// Where shells and commands start (the sandbox's root's home).
pub const HOME: &str = "/root";

enum Start {
    Shell,
    Exec(String),
    Sftp,
}

/// The agent of the login's sandbox (woken when its policy allows it), or
/// a message for the client.
pub(crate) async fn agent(ctl: &Controller, login: &Login) -> Result<AgentClient, String> {
    Ok(reach(ctl, login).await?.client)
}

/// The login's sandbox reached: its agent, and, when another node runs
/// it, what that node told of it (None: read here).
struct Reached {
    client: AgentClient,
    command_defaults: Option<bool>,
    secrets: Option<BTreeMap<String, String>>,
}

/// The agent of the login's sandbox, here or (in a cluster) through the
/// node that runs it.
async fn reach(ctl: &Controller, login: &Login) -> Result<Reached, String> {
    let failed = |e: String| format!("dwell: sandbox {}: {e}", login.sandbox_name);
    if let Some(remote) = &login.remote {
        let c = ctl.clone();
        let (tenant, id) = (login.tenant.clone(), login.sandbox_id.clone());
        let owner = tokio::task::spawn_blocking(move || c.owner(&tenant, &id))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
        if let Some(owner) = owner {
            let node = owner.node.clone();
            let asker = crate::Asker {
                tenant: login.tenant.clone(),
                key_id: login.key_id.clone(),
                sandbox_id: login.sandbox_id.clone(),
            };
            let r = (remote.0)(owner, asker)
                .await
                .map_err(|e| failed(format!("through node {node}, which runs it: {e}")))?;
            return Ok(Reached {
                client: r.client,
                command_defaults: Some(r.command_defaults),
                secrets: Some(r.secrets),
            });
        }
    }
    let (_, client) = ctl
        .agent_for(&login.tenant, &login.sandbox_id, "SSH")
        .await
        .map_err(|e| failed(e.to_string()))?;
    Ok(Reached {
        client,
        command_defaults: None,
        secrets: None,
    })
}

/// Runs one session channel to its end.
pub async fn run(
    ctl: Controller,
    login: Arc<Login>,
    mut channel: Channel<Msg>,
    handle: Handle,
    slot: ChannelSlot,
) {
    let mut pty: Option<(String, TtySize)> = None;
    let mut env = BTreeMap::new();
    let start = loop {
        match channel.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => pty = Some((term, size(col_width, row_height))),
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some((_, s)) = &mut pty {
                    *s = size(col_width, row_height);
                }
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => {
                if env_ok(&variable_name, &variable_value, env.len()) {
                    env.insert(variable_name, variable_value);
                }
            }
            Some(ChannelMsg::RequestShell { .. }) => break Start::Shell,
            Some(ChannelMsg::Exec { command, .. }) => {
                break Start::Exec(String::from_utf8_lossy(&command).into_owned())
            }
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => break Start::Sftp,
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    // An open channel keeps the sandbox from being idle.
    let active = ctl.stream_opened(&login.sandbox_id);
    match start {
        Start::Sftp => crate::sftp::run(ctl.clone(), login, channel).await,
        Start::Shell => {
            let argv = vec!["/bin/sh".into(), "-c".into(), LOGIN_SHELL.into()];
            exec(&ctl, &login, channel, &handle, argv, pty, env).await
        }
        Start::Exec(cmd) => {
            let argv = vec!["/bin/sh".into(), "-c".into(), cmd];
            exec(&ctl, &login, channel, &handle, argv, pty, env).await
        }
    }
    drop((active, slot));
}

fn size(cols: u32, rows: u32) -> TtySize {
    let clamp = |v: u32, default: u16| match v {
        0 => default,
        v => v.min(u16::MAX as u32) as u16,
    };
    TtySize {
        rows: clamp(rows, 24),
        cols: clamp(cols, 80),
    }
}

/// Tells the client why nothing runs, and ends the channel with status 255
/// (what OpenSSH's client reports for its own errors).
async fn fail(tx: &ChannelWriteHalf<Msg>, message: &str) {
    let _ = tx
        .extended_data_bytes(1, Bytes::from(format!("{message}\r\n")))
        .await;
    let _ = tx.exit_status(255).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

async fn exec(
    ctl: &Controller,
    login: &Login,
    channel: Channel<Msg>,
    handle: &Handle,
    argv: Vec<String>,
    pty: Option<(String, TtySize)>,
    env: BTreeMap<String, String>,
) {
    let id = channel.id();
    let (mut rx, tx) = channel.split();
    let reached = match reach(ctl, login).await {
        Ok(r) => r,
        Err(m) => {
            fail(&tx, &m).await;
            return;
        }
    };
    let command_defaults = match reached.command_defaults {
        Some(d) => d,
        None => ctl.has_command_defaults(&login.sandbox_id),
    };
    let mut req = ExecRequest {
        argv,
        // An image with a USER or WORKDIR: the agent starts there, as that
        // user (root's home may be closed to them).
        cwd: (!command_defaults).then(|| HOME.into()),
        stdin: true,
        ..Default::default()
    };
    let secrets = match reached.secrets {
        Some(s) => Ok(s),
        None => ctl.secret_env(&login.sandbox_id),
    };
    // The sandbox's secrets first; what the client sends wins.
    match secrets {
        Ok(secrets) => req.env.extend(secrets),
        Err(e) => {
            fail(
                &tx,
                &format!("dwell: cannot read the sandbox's secrets: {e}"),
            )
            .await;
            return;
        }
    }
    req.env.extend(env);
    if let Some((term, s)) = pty {
        if !term.is_empty() {
            req.env.insert("TERM".into(), term);
        }
        req.tty = Some(s);
    }
    let mut stream = match start(ctl, login, &req, reached.client).await {
        Ok(s) => s,
        Err(m) => {
            fail(&tx, &m).await;
            return;
        }
    };
    let input = stream.input();
    // Client -> process. Ends when the client closes the channel. russh
    // grants the client window as data arrives, and the connection's other
    // messages (the client's window for our output among them) wait while
    // a channel's data is not taken: so stdin is taken at once into a
    // buffer of up to STDIN_BUFFER bytes that a second loop feeds to the
    // process, and only a process that leaves that much unread holds the
    // connection up.
    let room = Arc::new(tokio::sync::Semaphore::new(STDIN_BUFFER));
    let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel();
    let from_client = async {
        while let Some(msg) = rx.wait().await {
            let r = match msg {
                ChannelMsg::Data { data } => {
                    let n = data.len().clamp(1, STDIN_BUFFER) as u32;
                    let Ok(permit) = room.clone().acquire_many_owned(n).await else {
                        break;
                    };
                    let _ = queue.send(Some((data, permit)));
                    Ok(())
                }
                ChannelMsg::Eof => {
                    let _ = queue.send(None);
                    Ok(())
                }
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    ..
                } => {
                    let s = size(col_width, row_height);
                    input.resize(s.rows, s.cols).await
                }
                ChannelMsg::Signal { signal } => match signal_number(&signal) {
                    Some(n) => input.signal(n).await,
                    None => Ok(()),
                },
                ChannelMsg::Close => break,
                _ => Ok(()),
            };
            if let Err(e) = r {
                // The process may have exited.
                tracing::debug!("ssh: input to the process: {e}");
            }
        }
    };
    let feed = async {
        while let Some(item) = queued.recv().await {
            let r = match item {
                // The permit goes back once the process has the bytes.
                Some((data, _permit)) => input.write_stdin(data).await,
                None => input.close_stdin().await,
            };
            if let Err(e) = r {
                // The process may have closed its stdin or exited.
                tracing::debug!("ssh: stdin of the process: {e}");
            }
        }
        // Waits for the end of the channel (select below) after the queue.
        std::future::pending::<()>().await
    };
    let from_client = async {
        tokio::select! {
            () = from_client => {}
            () = feed => {}
        }
    };
    // Process -> client. Ends with the process.
    let to_client = async {
        loop {
            match stream.try_next().await {
                Ok(Some(ProcessEvent::Started { .. })) => {}
                Ok(Some(ProcessEvent::Stdout(b))) => {
                    if tx.data_bytes(b).await.is_err() {
                        return None;
                    }
                }
                Ok(Some(ProcessEvent::Stderr(b))) => {
                    if tx.extended_data_bytes(1, b).await.is_err() {
                        return None;
                    }
                }
                Ok(Some(ProcessEvent::Exit(status))) => return Some(Ok(status)),
                Ok(None) => return Some(Err("the process stream ended early".to_string())),
                Err(e) => return Some(Err(e.to_string())),
            }
        }
    };
    let ended = tokio::select! {
        r = to_client => r,
        () = from_client => None,
    };
    match ended {
        // The client went away: dropping the stream kills the process.
        None => {}
        Some(Ok(status)) => {
            let _ = tx.eof().await;
            match (status.code, status.signal) {
                (Some(code), _) => {
                    let _ = tx.exit_status(code as u32).await;
                }
                (None, Some(sig)) => {
                    let _ = handle
                        .exit_signal_request(
                            id,
                            signal_name(sig),
                            false,
                            String::new(),
                            String::new(),
                        )
                        .await;
                }
                (None, None) => {
                    let _ = tx.exit_status(255).await;
                }
            }
            let _ = tx.close().await;
        }
        Some(Err(m)) => {
            let _ = ctl.agent_failed(&login.sandbox_id).await;
            fail(&tx, &format!("dwell: lost the sandbox's process: {m}")).await;
        }
    }
}

/// Starts the process; a dead cached agent connection is replaced once.
async fn start(
    ctl: &Controller,
    login: &Login,
    req: &ExecRequest,
    client: AgentClient,
) -> Result<dwell_proto::ProcessStream, String> {
    match client.exec(req.clone()).await {
        Ok(s) => Ok(s),
        Err(dwell_proto::Error::Unreachable(_)) => {
            ctl.agent_failed(&login.sandbox_id).await;
            let client = agent(ctl, login).await?;
            client
                .exec(req.clone())
                .await
                .map_err(|e| format!("dwell: cannot start the command: {e}"))
        }
        Err(e) => Err(format!("dwell: cannot start the command: {e}")),
    }
}

/// Linux signal numbers of the names SSH uses (RFC 4254 6.10).
fn signal_number(s: &Sig) -> Option<i32> {
    Some(match s {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => 12,
            "CONT" => 18,
            "STOP" => 19,
            "TSTP" => 20,
            "WINCH" => 28,
            _ => return None,
        },
    })
}

fn signal_name(n: i32) -> Sig {
    match n {
        1 => Sig::HUP,
        2 => Sig::INT,
        3 => Sig::QUIT,
        4 => Sig::ILL,
        6 => Sig::ABRT,
        8 => Sig::FPE,
        9 => Sig::KILL,
        10 => Sig::USR1,
        11 => Sig::SEGV,
        13 => Sig::PIPE,
        14 => Sig::ALRM,
        15 => Sig::TERM,
        12 => Sig::Custom("USR2".into()),
        n => Sig::Custom(format!("SIG{n}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip() {
        for n in [1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 13, 14, 15] {
            assert_eq!(signal_number(&signal_name(n)), Some(n));
        }
        assert_eq!(signal_number(&Sig::Custom("NOPE".into())), None);
    }

    #[test]
    fn tty_sizes_are_clamped() {
        assert_eq!(size(0, 0), TtySize { rows: 24, cols: 80 });
        assert_eq!(size(100_000, 40).cols, u16::MAX);
    }
}
