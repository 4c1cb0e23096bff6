//! The resolver's decisions against a fake upstream on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::Query;
use hickory_proto::rr::Name;

use super::*;

/// A fake upstream on loopback: answers every A query with 192.0.2.10,
/// TTL 5, and counts the queries.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = sock.recv_from(&mut buf).await.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut m = reply_to(&q, ResponseCode::NoError);
            let name = q.queries()[0].name().clone();
            m.add_answer(Record::from_rdata(
                name,
                5,
                RData::A(Ipv4Addr::new(192, 0, 2, 10).into()),
            ));
            sock.send_to(&m.to_vec().unwrap(), peer).await.unwrap();
        }
    });
    (addr, count)
}

type Pinned = Arc<Mutex<Vec<(String, Vec<Pin>)>>>;

fn resolver(upstreams: Vec<SocketAddr>) -> (Arc<Resolver>, Pinned) {
    let pinned: Pinned = Arc::default();
    let p = pinned.clone();
    let r = Resolver::with_pinner(
        Options {
            upstreams,
            upstream_timeout: Duration::from_millis(300),
            rate: 1,
            burst: 20,
            ..Options::default()
        },
        Arc::new(move |table: &str, pins: &[Pin]| {
            lock(&p).push((table.to_string(), pins.to_vec()));
            Ok(())
        }),
    );
    (r, pinned)
}

fn sandbox(allow: &[&str], deny: &[&str]) -> Attached {
    let rules = EgressRules {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: deny.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    Attached {
        id: "sb1".into(),
        table: "dwell_t".into(),
        gateway: Ipv4Addr::new(10, 200, 0, 1),
        sandbox_ip: Ipv4Addr::new(10, 200, 0, 2),
        policy: RwLock::new(Arc::new(Policy::compile(&rules).unwrap())),
        learned: Mutex::new(HashMap::new()),
        bucket: Mutex::new(Bucket {
            tokens: 20.0,
            at: Instant::now(),
        }),
        in_flight: Arc::new(Semaphore::new(4)),
        tcp: Arc::new(Semaphore::new(4)),
        tasks: Mutex::new(Vec::new()),
    }
}

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn decode(b: Option<Vec<u8>>) -> Message {
    Message::from_vec(&b.expect("an answer")).unwrap()
}

#[tokio::test]
async fn a_denied_name_gets_nxdomain_without_asking_upstream() {
    let (up, count) = upstream().await;
    let (r, pinned) = resolver(vec![up]);
    let a = sandbox(&["allowed.test"], &["0.0.0.0/0"]);
    let m = decode(answer(&r, &a, &query("other.test."), false).await);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(m.id(), 4242);
    assert_eq!(count.load(Ordering::SeqCst), 0);
    assert!(lock(&pinned).is_empty());
}

#[tokio::test]
async fn an_allowed_name_is_pinned_for_at_least_a_minute_before_the_answer() {
    let (up, count) = upstream().await;
    let (r, pinned) = resolver(vec![up]);
    let a = sandbox(&["*.allowed.test"], &["0.0.0.0/0"]);
    let m = decode(answer(&r, &a, &query("Www.Allowed.Test."), false).await);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(m.id(), 4242);
    assert_eq!(m.answers().len(), 1);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let p = lock(&pinned).clone();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, "dwell_t");
    assert_eq!(
        p[0].1,
        [Pin {
            addr: Ipv4Addr::new(192, 0, 2, 10),
            ttl: MIN_PIN
        }]
    );
    assert!(lock(&a.learned).contains_key(&Ipv4Addr::new(192, 0, 2, 10)));
}

#[tokio::test]
async fn other_names_pass_unpinned_when_nothing_is_denied() {
    let (up, _) = upstream().await;
    let (r, pinned) = resolver(vec![up]);
    let a = sandbox(&[], &["bad.test"]);
    let m = decode(answer(&r, &a, &query("fine.test."), false).await);
    assert_eq!(m.answers().len(), 1);
    assert!(lock(&pinned).is_empty());
    let m = decode(answer(&r, &a, &query("bad.test."), false).await);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
}

struct OnePeer;

impl PeerNames for OnePeer {
    fn resolve(&self, sandbox_id: &str, name: &str) -> Option<IpAddr> {
        (sandbox_id == "sb1" && name == "db").then(|| IpAddr::V4(Ipv4Addr::new(10, 9, 0, 3)))
    }
}

#[tokio::test]
async fn peer_names_come_first() {
    let (r, _) = resolver(vec![]);
    r.set_peer_names(Arc::new(OnePeer));
    let a = sandbox(&[], &["0.0.0.0/0"]);
    let m = decode(answer(&r, &a, &query("db."), false).await);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    match m.answers()[0].data() {
        RData::A(x) => assert_eq!(x.0, Ipv4Addr::new(10, 9, 0, 3)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_dead_upstream_is_servfail_within_its_timeout() {
    // A bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (r, _) = resolver(vec![silent.local_addr().unwrap()]);
    let a = sandbox(&[], &[]);
    let t = Instant::now();
    let m = decode(answer(&r, &a, &query("x.test."), false).await);
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_flood_is_refused() {
    let (r, _) = resolver(vec![]);
    let a = sandbox(&[], &["0.0.0.0/0"]);
    let mut refused = 0;
    for _ in 0..40 {
        let m = decode(answer(&r, &a, &query("x.test."), false).await);
        if m.response_code() == ResponseCode::Refused {
            refused += 1;
        }
    }
    assert!(refused >= 15, "{refused}");
}

#[tokio::test]
async fn garbage_gets_formerr_or_silence() {
    let (r, _) = resolver(vec![]);
    let a = sandbox(&[], &[]);
    assert!(answer(&r, &a, &[1], false).await.is_none());
    let m = decode(answer(&r, &a, &[0, 7, 0xff, 0xff, 0xff], false).await);
    assert_eq!(m.response_code(), ResponseCode::FormErr);
}

#[test]
fn upstreams_parse() {
    assert_eq!(
        parse_upstream("192.0.2.53").unwrap(),
        "192.0.2.53:53".parse().unwrap()
    );
    assert_eq!(
        parse_upstream("192.0.2.53:5353").unwrap(),
        "192.0.2.53:5353".parse().unwrap()
    );
    assert!(parse_upstream("dns.example")
        .unwrap_err()
        .contains("invalid DNS upstream"));
    let conf =
        "# c\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nsearch x\nnameserver 2001:db8::1\n";
    assert_eq!(
        upstreams_from_resolv_conf(conf),
        vec![
            "127.0.0.53:53".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap()
        ]
    );
}
