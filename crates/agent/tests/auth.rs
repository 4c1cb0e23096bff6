//! The authenticated handshake against the real agent: an agent started
//! with a key serves only clients that prove that key, and proves it back;
//! a client that expects a key refuses an agent that cannot prove it.

mod common;

use std::process::{Command, Stdio};

use common::*;
use dwell_proto::auth::KEY_ENV;
use dwell_proto::frame::{encode, FrameReader, Kind};
use dwell_proto::{AgentClient, AgentKey, Error, Peer};
use tokio::io::AsyncWriteExt;

fn start_with_key(key: &AgentKey) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/dwell/agent.sock");
    let child = Command::new(AGENT)
        .arg("--listen")
        .arg(&sock)
        .env(KEY_ENV, key.to_hex())
        .stdin(Stdio::null())
        .spawn()
        .expect("start dwell-agent");
    let a = Agent { child, dir, sock };
    a.wait_for_socket();
    a
}

async fn connect(a: &Agent, key: Option<&AgentKey>) -> Result<AgentClient, Error> {
    let s = tokio::net::UnixStream::connect(&a.sock).await.unwrap();
    let peer = Peer {
        sandbox: "sbx-a".into(),
        key: key.cloned(),
    };
    AgentClient::from_stream_to(s, &peer).await
}

#[tokio::test]
async fn the_right_key_works_and_the_key_is_not_inherited() {
    let key = AgentKey::generate().unwrap();
    let a = start_with_key(&key);
    let c = connect(&a, Some(&key))
        .await
        .expect("the right key connects");
    let out = sh(&c, &format!("echo \"[${KEY_ENV}]\"")).await;
    assert_eq!(s(&out.stdout), "[]\n", "a child inherited the key");
}

#[tokio::test]
async fn a_client_with_the_wrong_key_is_refused_with_a_clear_error() {
    let key = AgentKey::generate().unwrap();
    let a = start_with_key(&key);
    let other = AgentKey::generate().unwrap();
    let e = connect(&a, Some(&other)).await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("sbx-a") && msg.contains("not"), "{msg}");
    // The agent still serves the right key afterwards.
    let c = connect(&a, Some(&key)).await.unwrap();
    c.health().await.unwrap();
}

#[tokio::test]
async fn a_client_without_a_key_is_refused_by_an_agent_with_one() {
    let key = AgentKey::generate().unwrap();
    let a = start_with_key(&key);
    let e = connect(&a, None).await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
    let e = AgentClient::connect_unix(&a.sock).await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
}

#[tokio::test]
async fn an_agent_without_a_key_is_refused_by_a_client_that_expects_one() {
    let a = Agent::start();
    let key = AgentKey::generate().unwrap();
    let e = connect(&a, Some(&key)).await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
    assert!(e.to_string().contains("sbx-a"), "{e}");
    // Unauthenticated on both sides keeps working (old sandboxes, --stdio).
    connect(&a, None).await.unwrap().health().await.unwrap();
}

/// A client that skips its proof, or forges one, gets no request served:
/// the agent drops the connection instead of answering.
#[tokio::test]
async fn requests_without_the_client_proof_are_never_served() {
    let key = AgentKey::generate().unwrap();
    let a = start_with_key(&key);
    for proof in [None, Some("00".repeat(32))] {
        let s = tokio::net::UnixStream::connect(&a.sock).await.unwrap();
        let (r, mut w) = tokio::io::split(s);
        let mut r = FrameReader::new(r);
        let nonce = "11".repeat(32);
        let hello = format!(r#"{{"protocol":2,"software":"raw","nonce":"{nonce}"}}"#);
        w.write_all(&encode(0, Kind::Hello, hello.as_bytes()).unwrap())
            .await
            .unwrap();
        let reply = r.next().await.unwrap().unwrap();
        assert_eq!(reply.kind, Kind::Hello);
        if let Some(p) = &proof {
            let h = format!(r#"{{"protocol":2,"software":"raw","proof":"{p}"}}"#);
            w.write_all(&encode(0, Kind::Hello, h.as_bytes()).unwrap())
                .await
                .unwrap();
        }
        let req = br#"{"op":"exec","argv":["touch","/tmp/x"]}"#;
        let _ = w.write_all(&encode(1, Kind::Request, req).unwrap()).await;
        let next = tokio::time::timeout(std::time::Duration::from_secs(15), r.next())
            .await
            .expect("the agent neither answered nor closed");
        assert!(
            matches!(next, Ok(None) | Err(_)),
            "the agent answered a request without a valid client proof ({proof:?}): {next:?}"
        );
    }
}

/// A keyless agent accepts the unauthenticated version-1 Hello (the
/// frames are the same), so sandboxes from before keys stay reachable; an
/// agent with a key refuses it.
#[tokio::test]
async fn version_one_hellos_reach_keyless_agents_only() {
    async fn hello_v1(a: &Agent) -> serde_json::Value {
        let s = tokio::net::UnixStream::connect(&a.sock).await.unwrap();
        let (r, mut w) = tokio::io::split(s);
        let mut r = FrameReader::new(r);
        let hello = br#"{"protocol":1,"software":"old dwell-proto"}"#;
        w.write_all(&encode(0, Kind::Hello, hello).unwrap())
            .await
            .unwrap();
        let reply = r.next().await.unwrap().unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    }
    let keyless = Agent::start();
    let reply = hello_v1(&keyless).await;
    assert_eq!(reply["protocol"], 1, "{reply}");
    assert!(reply.get("error").is_none(), "{reply}");
    let keyed = start_with_key(&AgentKey::generate().unwrap());
    let reply = hello_v1(&keyed).await;
    assert!(
        reply["error"].as_str().unwrap_or("").contains("key"),
        "{reply}"
    );
}
