//! dwell-cluster: the node channel of a dwell cluster.
//!
//! Daemons of one cluster (`dwell serve --cluster ...`) reach each other
//! over this channel: a request for a sandbox another node owns is
//! forwarded to that node. Only nodes may use it, and that is decided at
//! the TLS layer:
//!
//! * [`ClusterTls`] ([`identity`]): every node derives the same cluster CA
//!   from the shared cluster secret, and at each start a fresh certificate
//!   of its own signed by it, naming the node; [`tls`] builds the rustls
//!   configurations (mutual TLS 1.3, only the cluster CA trusted).
//! * [`serve_nodes`] ([`listener`]): serves an axum router to verified
//!   nodes, each request carrying the [`PeerNode`] it came from.
//! * [`Forwarder`] ([`forward`]): sends a request to a node and returns the
//!   answer, bodies streamed and upgrades (WebSockets) joined, on
//!   kept-alive connections ([`pool`]) with hop-by-hop headers handled
//!   (`headers`).

pub mod forward;
mod headers;
pub mod identity;
pub mod listener;
pub mod pool;
pub mod tls;

pub use forward::{ForwardError, ForwardFailure, Forwarder};
pub use identity::ClusterTls;
pub use listener::{serve_nodes, PeerNode};
