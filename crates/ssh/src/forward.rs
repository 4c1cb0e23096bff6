//! Local port forwarding (`ssh -L`, `direct-tcpip` channels): each channel
//! is a TCP connection made by the agent from inside the sandbox (its own
//! network namespace, so `localhost` is the sandbox's), bytes piped both
//! ways with half-closes passed on. A refused or unreachable target
//! refuses the channel with `connect failed` and the reason.

use std::sync::Arc;

use dwell_control::Controller;
use dwell_proto::ErrorKind;
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelOpenFailure};

use crate::server::{ChannelSlot, Login};

/// Connects to `host:port` inside the sandbox, then accepts the channel
/// and pipes it (or refuses it, saying why), in a task of its own.
pub fn open(
    ctl: Controller,
    login: Arc<Login>,
    channel: Channel<Msg>,
    host: String,
    port: u32,
    reply: ChannelOpenHandle,
    slot: ChannelSlot,
) {
    tokio::spawn(async move {
        let refuse = |code, reason: String| ChannelOpenFailure::Other { code, reason };
        let Some(port) = u16::try_from(port).ok().filter(|p| *p != 0) else {
            reply
                .reject(refuse(
                    2,
                    format!("port {port} is not a TCP port (1-65535)"),
                ))
                .await;
            return;
        };
        // Loopback by name: 127.0.0.1 first, then ::1 (a server bound to
        // IPv6 loopback only), as the port proxy does.
        let (host, fallback) = match host.as_str() {
            "" | "localhost" | "ip6-localhost" => ("127.0.0.1".to_string(), Some("::1")),
            h => (h.to_string(), None),
        };
        let client = match crate::session::agent(&ctl, &login).await {
            Ok(c) => c,
            Err(m) => {
                reply.reject(refuse(2, m)).await;
                return;
            }
        };
        let mut tunnel = client.connect_tcp(&host, port).await;
        if let (Err(dwell_proto::Error::Remote(r)), Some(v6)) = (&tunnel, fallback) {
            if r.kind == ErrorKind::ConnectionRefused {
                tunnel = client.connect_tcp(v6, port).await;
            }
        }
        let tunnel = match tunnel {
            Ok(t) => t,
            Err(e) => {
                let why = match &e {
                    dwell_proto::Error::Remote(r) if r.kind == ErrorKind::ConnectionRefused => {
                        format!(
                            "nothing listens on {host}:{port} inside sandbox {}",
                            login.sandbox_name
                        )
                    }
                    e => format!(
                        "cannot reach {host}:{port} inside sandbox {}: {e}",
                        login.sandbox_name
                    ),
                };
                if matches!(e, dwell_proto::Error::Unreachable(_)) {
                    ctl.agent_failed(&login.sandbox_id).await;
                }
                reply.reject(refuse(2, why)).await;
                return;
            }
        };
        reply.accept().await;
        let _active = ctl.stream_opened(&login.sandbox_id);
        let mut stream = channel.into_stream();
        let mut tunnel = tunnel;
        if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut tunnel).await {
            tracing::debug!("ssh: forward to {host}:{port}: {e}");
        }
        drop(slot);
    });
}
