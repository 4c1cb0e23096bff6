//! The client against a fake agent that misbehaves: garbage, hangs, deaths,
//! window overruns. Every call must fail with a clear error, never hang.

use std::time::Duration;

use dwell_proto::frame::{encode, FrameReader, Kind};
use dwell_proto::{AgentClient, Error, ExecRequest, PROTOCOL_VERSION};
use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

type Fake = (FrameReader<ReadHalf<DuplexStream>>, WriteHalf<DuplexStream>);

/// A fake agent side: reads the client's Hello and answers it properly.
async fn fake_agent_handshaken() -> (tokio::task::JoinHandle<AgentClient>, Fake) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let client = tokio::spawn(async move { AgentClient::from_stream(a).await.unwrap() });
    let (r, mut w) = tokio::io::split(b);
    let mut r = FrameReader::new(r);
    let hello = r.next().await.unwrap().unwrap();
    assert_eq!(hello.kind, Kind::Hello);
    let reply = format!(r#"{{"protocol":{PROTOCOL_VERSION},"software":"fake"}}"#);
    w.write_all(&encode(0, Kind::Hello, reply.as_bytes()).unwrap())
        .await
        .unwrap();
    (client, (r, w))
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("client call hung")
}

#[tokio::test]
async fn unreachable_socket() {
    let e = AgentClient::connect_unix(std::path::Path::new("/nonexistent/agent.sock"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unreachable(_)), "{e}");
}

#[tokio::test]
async fn silent_agent_times_out_handshake() {
    let (a, _b) = tokio::io::duplex(1024);
    let e = within(AgentClient::from_stream(a)).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn garbage_handshake_is_a_protocol_error() {
    let (a, mut b) = tokio::io::duplex(1024);
    b.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
    let e = within(AgentClient::from_stream(a)).await.unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e}");
    let (a, mut b) = tokio::io::duplex(1024);
    b.write_all(&encode(0, Kind::Hello, br#"{"protocol":99,"software":"x"}"#).unwrap())
        .await
        .unwrap();
    let e = within(AgentClient::from_stream(a)).await.unwrap_err();
    assert!(e.to_string().contains("protocol 99"), "{e}");
}

#[tokio::test]
async fn garbage_after_handshake_fails_pending_and_future_calls() {
    let (client, (mut r, mut w)) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let c2 = c.clone();
    let pending = tokio::spawn(async move { c2.health().await });
    let _req = r.next().await.unwrap().unwrap();
    w.write_all(b"\x00\x00\x00\x07\x00\x00\x00\x01\x42zz")
        .await
        .unwrap();
    let e = within(pending).await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e}");
    let e = within(c.processes()).await.unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e}");
}

#[tokio::test]
async fn agent_death_fails_calls_and_streams() {
    let (client, (mut r, mut w)) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let c2 = c.clone();
    let exec = tokio::spawn(async move { c2.exec(ExecRequest::shell("x")).await });
    let req = r.next().await.unwrap().unwrap();
    w.write_all(&encode(req.stream, Kind::Event, br#"{"event":"started","pid":7}"#).unwrap())
        .await
        .unwrap();
    w.write_all(&encode(req.stream, Kind::Stdout, b"partial").unwrap())
        .await
        .unwrap();
    let mut p = within(exec).await.unwrap().unwrap();
    assert_eq!(p.pid(), 7);
    p.next().await.unwrap(); // Started
    assert!(matches!(
        p.next().await,
        Some(dwell_proto::ProcessEvent::Stdout(_))
    ));
    drop((r, w)); // the agent dies
    assert!(within(p.next()).await.is_none());
    assert!(
        matches!(p.error(), Some(Error::Unreachable(_))),
        "{:?}",
        p.error()
    );
    let e = within(c.health()).await.unwrap_err();
    assert!(matches!(e, Error::Unreachable(_)), "{e}");
    let e = p
        .input()
        .write_stdin(bytes::Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unreachable(_)), "{e}");
}

#[tokio::test]
async fn hung_agent_hits_the_call_timeout() {
    let (client, _fake) = fake_agent_handshaken().await;
    let c = client
        .await
        .unwrap()
        .with_call_timeout(Duration::from_millis(200));
    let e = within(c.stat("/x")).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn window_overrun_is_a_protocol_error() {
    let (client, (mut r, mut w)) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let c2 = c.clone();
    let reader = tokio::spawn(async move { c2.read_file("/big").await });
    let req = r.next().await.unwrap().unwrap();
    w.write_all(&encode(req.stream, Kind::Event, br#"{"event":"opened","size":1}"#).unwrap())
        .await
        .unwrap();
    let mut fr = within(reader).await.unwrap().unwrap();
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..5 {
        w.write_all(&encode(req.stream, Kind::Data, &chunk).unwrap())
            .await
            .unwrap();
    }
    let mut err = None;
    for _ in 0..6 {
        match within(fr.next_chunk()).await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert!(matches!(err, Some(Error::Protocol(_))), "{err:?}");
}

#[tokio::test]
async fn remote_errors_carry_their_kind() {
    let (client, (mut r, mut w)) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let c2 = c.clone();
    let call = tokio::spawn(async move { c2.stat("/nope").await });
    let req = r.next().await.unwrap().unwrap();
    w.write_all(
        &encode(
            req.stream,
            Kind::End,
            br#"{"err":{"kind":"not_found","message":"stat /nope: No such file"}}"#,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let e = within(call).await.unwrap().unwrap_err();
    assert_eq!(e.remote_kind(), Some(dwell_proto::ErrorKind::NotFound));
    assert_eq!(e.to_string(), "not_found: stat /nope: No such file");
}

#[tokio::test]
async fn a_stream_whose_reader_falls_behind_is_ended_not_grown() {
    use dwell_proto::client::MAX_QUEUED_EVENTS;
    let (client, (mut r, mut w)) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let c2 = c.clone();
    let watch = tokio::spawn(async move { c2.watch("/w", true).await });
    let req = r.next().await.unwrap().unwrap();
    w.write_all(&encode(req.stream, Kind::Event, br#"{"event":"watching"}"#).unwrap())
        .await
        .unwrap();
    let mut watcher = within(watch).await.unwrap().unwrap();
    // Nobody reads while the "sandbox" makes far more changes than the cap.
    let ev = encode(
        req.stream,
        Kind::Event,
        br#"{"event":"fs","name":"f","change":"create"}"#,
    )
    .unwrap();
    for _ in 0..MAX_QUEUED_EVENTS + 100 {
        w.write_all(&ev).await.unwrap();
    }
    // The client cancels the stream in the agent...
    let cancel = within(async {
        loop {
            let f = r.next().await.unwrap().unwrap();
            if f.kind == Kind::Cancel {
                return f;
            }
        }
    })
    .await;
    assert_eq!(cancel.stream, req.stream);
    // ...and the reader gets what was queued, then a clear error.
    let mut got = 0;
    let err = loop {
        match within(watcher.next()).await {
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("the watch ended without an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, MAX_QUEUED_EVENTS);
    assert!(err.to_string().contains("fell 4096 events behind"), "{err}");
    // The connection itself still serves other calls.
    let c2 = c.clone();
    let call = tokio::spawn(async move { c2.stat("/x").await });
    let req = r.next().await.unwrap().unwrap();
    w.write_all(
        &encode(
            req.stream,
            Kind::End,
            br#"{"err":{"kind":"not_found","message":"no /x"}}"#,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let e = within(call).await.unwrap().unwrap_err();
    assert_eq!(e.remote_kind(), Some(dwell_proto::ErrorKind::NotFound));
}

const FS_HEAD: &[u8] = br#"{"event":"fs","name":""#;
const FS_TAIL: &[u8] = br#"","change":"create"}"#;
/// The bytes of an `fs_event` that are not its name.
const FS_EVENT_OVERHEAD: usize = FS_HEAD.len() + FS_TAIL.len();

/// An `fs` event whose JSON is exactly `len` bytes.
fn fs_event(len: usize) -> Vec<u8> {
    let (head, tail) = (FS_HEAD, FS_TAIL);
    let mut p = head.to_vec();
    p.resize(len - tail.len(), b'n');
    p.extend_from_slice(tail);
    assert_eq!(p.len(), len);
    p
}

/// Opens a watch on the fake agent and answers `watching`; returns the
/// watcher and its stream id.
async fn open_watch(
    c: &AgentClient,
    (r, w): &mut Fake,
    path: &'static str,
) -> (dwell_proto::Watcher, u32) {
    let c2 = c.clone();
    let watch = tokio::spawn(async move { c2.watch(path, false).await });
    let req = r.next().await.unwrap().unwrap();
    assert_eq!(req.kind, Kind::Request);
    w.write_all(&encode(req.stream, Kind::Event, br#"{"event":"watching"}"#).unwrap())
        .await
        .unwrap();
    (within(watch).await.unwrap().unwrap(), req.stream)
}

#[tokio::test]
async fn an_oversized_event_is_refused_before_it_is_parsed() {
    use dwell_proto::frame::MAX_EVENT_PAYLOAD;
    let (client, mut fake) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let (mut watcher, id) = open_watch(&c, &mut fake, "/w").await;
    // One byte above the limit: valid JSON, well under the 1 MiB frame.
    let ev = encode(id, Kind::Event, &fs_event(MAX_EVENT_PAYLOAD + 1)).unwrap();
    fake.1.write_all(&ev).await.unwrap();
    let e = within(watcher.next()).await.unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("above the {MAX_EVENT_PAYLOAD} byte limit")),
        "{e}"
    );
    // A protocol violation ends the connection: later calls say why.
    let e = within(c.stat("/x")).await.unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e}");
}

#[tokio::test]
async fn an_event_at_the_limit_is_delivered() {
    use dwell_proto::frame::MAX_EVENT_PAYLOAD;
    let (client, mut fake) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let (mut watcher, id) = open_watch(&c, &mut fake, "/w").await;
    let ev = encode(id, Kind::Event, &fs_event(MAX_EVENT_PAYLOAD)).unwrap();
    fake.1.write_all(&ev).await.unwrap();
    let got = within(watcher.next()).await.unwrap().unwrap();
    assert_eq!(got.name.len(), MAX_EVENT_PAYLOAD - FS_EVENT_OVERHEAD);
}

#[tokio::test]
async fn an_oversized_hello_is_refused() {
    use dwell_proto::frame::MAX_HELLO_PAYLOAD;
    let (a, b) = tokio::io::duplex(1 << 20);
    let client = tokio::spawn(async move { AgentClient::from_stream(a).await });
    let (r, mut w) = tokio::io::split(b);
    let mut r = FrameReader::new(r);
    r.next().await.unwrap().unwrap();
    let reply = format!(
        r#"{{"protocol":{PROTOCOL_VERSION},"software":"{}"}}"#,
        "s".repeat(MAX_HELLO_PAYLOAD)
    );
    w.write_all(&encode(0, Kind::Hello, reply.as_bytes()).unwrap())
        .await
        .unwrap();
    let e = within(client).await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e}");
    assert!(e.to_string().contains("byte limit for a Hello"), "{e}");
}

#[tokio::test]
async fn a_flood_of_large_events_is_held_to_the_byte_cap() {
    use dwell_proto::client::MAX_QUEUED_EVENT_BYTES;
    const SIZE: usize = 60 * 1024;
    let (client, mut fake) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let (mut flooded, id) = open_watch(&c, &mut fake, "/flood").await;
    let (mut quiet, quiet_id) = open_watch(&c, &mut fake, "/quiet").await;
    // 12 MiB of events nobody reads: three times the cap.
    let ev = encode(id, Kind::Event, &fs_event(SIZE)).unwrap();
    let (r, w) = &mut fake;
    for _ in 0..3 * MAX_QUEUED_EVENT_BYTES / SIZE {
        w.write_all(&ev).await.unwrap();
    }
    let cancel = within(async {
        loop {
            let f = r.next().await.unwrap().unwrap();
            if f.kind == Kind::Cancel {
                return f;
            }
        }
    })
    .await;
    assert_eq!(cancel.stream, id);
    // What was held never passed the cap; then the reader gets the error.
    let mut got = 0;
    let err = loop {
        match within(flooded.next()).await {
            Ok(Some(e)) => {
                assert_eq!(e.name.len(), SIZE - FS_EVENT_OVERHEAD);
                got += 1;
            }
            Ok(None) => panic!("the watch ended without an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, MAX_QUEUED_EVENT_BYTES / SIZE);
    assert!(
        err.to_string().contains(&format!(
            "fell {MAX_QUEUED_EVENT_BYTES} bytes of events behind"
        )),
        "{err}"
    );
    // The other watch on the connection still gets its events...
    w.write_all(
        &encode(
            quiet_id,
            Kind::Event,
            br#"{"event":"fs","name":"q","change":"write"}"#,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let q = within(quiet.next()).await.unwrap().unwrap();
    assert_eq!(q.name, "q");
    // ...and new calls are served.
    let c2 = c.clone();
    let call = tokio::spawn(async move { c2.stat("/x").await });
    let req = r.next().await.unwrap().unwrap();
    w.write_all(
        &encode(
            req.stream,
            Kind::End,
            br#"{"err":{"kind":"not_found","message":"no /x"}}"#,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let e = within(call).await.unwrap().unwrap_err();
    assert_eq!(e.remote_kind(), Some(dwell_proto::ErrorKind::NotFound));
}

#[tokio::test]
async fn an_undecodable_event_or_end_ends_the_connection_when_taken() {
    let (client, mut fake) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let (mut watcher, id) = open_watch(&c, &mut fake, "/w").await;
    let ev = encode(id, Kind::Event, br#"{"event":"no such event"}"#).unwrap();
    fake.1.write_all(&ev).await.unwrap();
    let e = within(watcher.next()).await.unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e}");
    assert!(e.to_string().contains("undecodable event"), "{e}");
    let e = within(c.stat("/x")).await.unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e}");

    let (client, (mut r, mut w)) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let c2 = c.clone();
    let call = tokio::spawn(async move { c2.stat("/x").await });
    let req = r.next().await.unwrap().unwrap();
    w.write_all(&encode(req.stream, Kind::End, b"{not json").unwrap())
        .await
        .unwrap();
    let e = within(call).await.unwrap().unwrap_err();
    assert!(e.to_string().contains("undecodable end message"), "{e}");
    let e = within(c.health()).await.unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e}");
}

/// Opens a `connect` stream the fake agent answers as connected.
async fn open_tunnel(c: &AgentClient, fake: &mut Fake) -> (dwell_proto::client::TcpTunnel, u32) {
    let c2 = c.clone();
    let open = tokio::spawn(async move { c2.connect_tcp("127.0.0.1", 80).await });
    let (r, w) = fake;
    let req = r.next().await.unwrap().unwrap();
    w.write_all(
        &encode(
            req.stream,
            Kind::Event,
            br#"{"event":"connected","peer":"127.0.0.1:80"}"#,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    (within(open).await.unwrap().unwrap(), req.stream)
}

/// Sends `frame` up to `times` times; returns how many were sent before
/// the client stopped reading (it closed the connection).
async fn flood(w: &mut WriteHalf<DuplexStream>, frame: &[u8], times: usize) -> usize {
    for i in 0..times {
        if w.write_all(frame).await.is_err() {
            return i;
        }
    }
    times
}

/// Floods frames that would queue without counting against the flow
/// window: the connection must end with a protocol error naming the
/// violation (so the client stops reading and holds nothing more), not
/// take them all.
async fn flood_ends_the_connection(
    first: Option<Kind>,
    kind: Kind,
    payload: &[u8],
    expect: &str,
    exec: bool,
) {
    const TIMES: usize = 1_000_000;
    let (client, mut fake) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    // The stream is kept open (not read from) while it is flooded.
    let (_open, id): (Box<dyn std::any::Any + Send>, u32) = if exec {
        let c2 = c.clone();
        let open = tokio::spawn(async move { c2.exec(ExecRequest::shell("x")).await });
        let req = fake.0.next().await.unwrap().unwrap();
        fake.1
            .write_all(&encode(req.stream, Kind::Event, br#"{"event":"started","pid":7}"#).unwrap())
            .await
            .unwrap();
        (Box::new(within(open).await.unwrap().unwrap()), req.stream)
    } else {
        let (t, id) = open_tunnel(&c, &mut fake).await;
        (Box::new(t), id)
    };
    let (_r, w) = &mut fake;
    if let Some(k) = first {
        w.write_all(&encode(id, k, b"").unwrap()).await.unwrap();
    }
    let sent = within(flood(w, &encode(id, kind, payload).unwrap(), TIMES)).await;
    assert!(sent < TIMES, "the client took all {TIMES} {kind:?} frames");
    let e = within(c.health()).await.unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e}");
    assert!(e.to_string().contains(expect), "{e}");
}

#[tokio::test]
async fn an_eof_flood_ends_the_connection() {
    flood_ends_the_connection(None, Kind::Eof, b"", "a second Eof", false).await;
}

#[tokio::test]
async fn data_after_eof_ends_the_connection() {
    flood_ends_the_connection(Some(Kind::Eof), Kind::Data, b"x", "a Data frame", false).await;
}

#[tokio::test]
async fn an_empty_data_flood_ends_the_connection() {
    flood_ends_the_connection(None, Kind::Data, b"", "empty Data frame", false).await;
    flood_ends_the_connection(None, Kind::Stdout, b"", "empty Stdout frame", true).await;
    flood_ends_the_connection(None, Kind::Stderr, b"", "empty Stderr frame", true).await;
}

#[tokio::test]
async fn a_file_read_whole_is_held_to_its_cap() {
    // The size the agent states when opening...
    let (client, (mut r, mut w)) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let c2 = c.clone();
    let reader = tokio::spawn(async move { c2.read_file("/etc/hosts").await });
    let req = r.next().await.unwrap().unwrap();
    w.write_all(
        &encode(
            req.stream,
            Kind::Event,
            br#"{"event":"opened","size":4294967296}"#,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let fr = within(reader).await.unwrap().unwrap();
    let e = within(fr.read_to_end(1024)).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { max: 1024, .. }), "{e}");
    assert!(
        e.to_string().contains("/etc/hosts (4294967296 bytes)"),
        "{e}"
    );
    // ...and what it sends when that size was a lie (/dev/zero says 0).
    let c2 = c.clone();
    let reader = tokio::spawn(async move { c2.read_file("/etc/hosts").await });
    let req = loop {
        let f = r.next().await.unwrap().unwrap();
        if f.kind == Kind::Request {
            break f;
        }
    };
    w.write_all(&encode(req.stream, Kind::Event, br#"{"event":"opened","size":0}"#).unwrap())
        .await
        .unwrap();
    let fr = within(reader).await.unwrap().unwrap();
    let feed = tokio::spawn(async move {
        let chunk = encode(req.stream, Kind::Data, &[0u8; 600]).unwrap();
        for _ in 0..4 {
            w.write_all(&chunk).await.unwrap();
        }
        (r, w)
    });
    let e = within(fr.read_to_end(1024)).await.unwrap_err();
    assert!(e.to_string().contains("sent more than it said"), "{e}");
    let (mut r, _w) = feed.await.unwrap();
    // The read was cancelled in the agent.
    let cancel = within(async {
        loop {
            let f = r.next().await.unwrap().unwrap();
            if f.kind == Kind::Cancel {
                return f;
            }
        }
    })
    .await;
    assert_eq!(cancel.stream, req.stream);
}

#[tokio::test]
async fn collected_output_is_held_to_its_cap() {
    let (client, (mut r, mut w)) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let c2 = c.clone();
    let exec = tokio::spawn(async move { c2.exec(ExecRequest::shell("yes")).await });
    let req = r.next().await.unwrap().unwrap();
    w.write_all(&encode(req.stream, Kind::Event, br#"{"event":"started","pid":7}"#).unwrap())
        .await
        .unwrap();
    let p = within(exec).await.unwrap().unwrap();
    for k in [Kind::Stdout, Kind::Stderr, Kind::Stdout] {
        w.write_all(&encode(req.stream, k, &[b'y'; 400]).unwrap())
            .await
            .unwrap();
    }
    let e = within(p.output(1000)).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { max: 1000, .. }), "{e}");
    assert!(e.to_string().contains("output of process 7"), "{e}");
}

#[tokio::test]
async fn a_flood_of_tiny_data_frames_is_held_to_the_frame_cap() {
    use dwell_proto::client::MAX_QUEUED_DATA_FRAMES;
    let (client, (mut r, mut w)) = fake_agent_handshaken().await;
    let c = client.await.unwrap();
    let c2 = c.clone();
    let exec = tokio::spawn(async move { c2.exec(ExecRequest::shell("x")).await });
    let req = r.next().await.unwrap().unwrap();
    w.write_all(&encode(req.stream, Kind::Event, br#"{"event":"started","pid":7}"#).unwrap())
        .await
        .unwrap();
    let mut p = within(exec).await.unwrap().unwrap();
    // One-byte frames, well within the byte window, nobody reads.
    let one = encode(req.stream, Kind::Stdout, b"y").unwrap();
    for _ in 0..MAX_QUEUED_DATA_FRAMES + 100 {
        w.write_all(&one).await.unwrap();
    }
    let cancel = within(async {
        loop {
            let f = r.next().await.unwrap().unwrap();
            if f.kind == Kind::Cancel {
                return f;
            }
        }
    })
    .await;
    assert_eq!(cancel.stream, req.stream);
    let mut got = 0;
    let err = loop {
        match within(p.try_next()).await {
            Ok(Some(dwell_proto::ProcessEvent::Started { .. })) => {}
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("the stream ended without an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, MAX_QUEUED_DATA_FRAMES);
    assert!(
        err.to_string()
            .contains(&format!("fell {MAX_QUEUED_DATA_FRAMES} data frames behind")),
        "{err}"
    );
}
