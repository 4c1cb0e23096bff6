//! The daemon's connections to sandbox agents, cached per sandbox: the one
//! way the daemon reaches an agent.

use dwell_proto::AgentClient;

use crate::context::Context;
use crate::reconcile::config::config_of;

/// Drop the cached connection to sandbox `id`'s agent.
pub(crate) async fn forget(ctx: &Context, id: &str) {
    ctx.agents.lock().await.remove(id);
}

/// Connect to a sandbox's agent and keep the connection for later
/// calls. The cache lock is not held while connecting, so one slow or
/// hung agent never delays calls to the others.
///
/// The one way the daemon reaches an agent: the runtime opens the
/// socket safely and checks the peer is the sandbox's
/// ([`Runtime::connect_agent`]), then the handshake proves the
/// sandbox's agent key both ways, so a connection that reaches another
/// sandbox's agent fails closed.
pub(crate) async fn connect(
    ctx: &Context,
    id: &str,
) -> std::result::Result<AgentClient, dwell_proto::Error> {
    let unreachable = |e: String| dwell_proto::Error::Unreachable(e);
    let cfg = config_of(ctx, id).map_err(|e| unreachable(e.to_string()))?;
    let runtime = ctx.runtime_of(id).map_err(|e| unreachable(e.to_string()))?;
    let doze = if crate::doze::dozes(ctx, &*runtime) {
        Some(crate::doze::before_connect(ctx, id).await)
    } else {
        None
    };
    let key = match &cfg.agent_key {
        Some(k) => Some(dwell_proto::AgentKey::from_hex(k).map_err(|e| {
            unreachable(format!(
                "the config of sandbox {id} has a bad agent key: {e}"
            ))
        })?),
        None => None,
    };
    let std_stream = tokio::time::timeout(
        dwell_proto::client::CONNECT_TIMEOUT,
        tokio::task::spawn_blocking(move || runtime.connect_agent(&cfg)),
    )
    .await
    .map_err(|_| unreachable(format!("connecting to the agent of sandbox {id} timed out")))?
    .map_err(|e| unreachable(format!("a worker thread failed: {e}")))?
    .map_err(|e| unreachable(format!("sandbox {id}: {e} (is the sandbox running?)")))?;
    let stream = std_stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(std_stream))
        .map_err(|e| unreachable(format!("sandbox {id}: {e}")))?;
    let peer = dwell_proto::Peer {
        sandbox: id.to_string(),
        key,
    };
    let client = AgentClient::from_stream_to(stream, &peer).await?;
    if let Some((gate, _held)) = doze {
        crate::doze::connected(ctx, id, gate, &client);
    }
    ctx.agents
        .lock()
        .await
        .insert(id.to_string(), client.clone());
    Ok(client)
}

/// The cached connection to sandbox `id`'s agent while it is up, or a
/// new one.
pub(crate) async fn client(
    ctx: &Context,
    id: &str,
) -> std::result::Result<AgentClient, dwell_proto::Error> {
    if let Some(c) = ctx.agents.lock().await.get(id) {
        if c.is_connected() {
            return Ok(c.clone());
        }
    }
    connect(ctx, id).await
}

/// Connect to a freshly started sandbox's agent now, so its first exec
/// does not pay for the connection and handshake. Best effort.
pub(crate) async fn preconnect(ctx: &Context, id: &str) {
    let _ = connect(ctx, id).await;
}
