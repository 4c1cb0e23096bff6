//! The resolver's decisions against a fake upstream on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::Query;
use hickory_proto::rr::Name;

use super::*;

/// A fake upstream on loopback: answers every A query with 192.0.2.10,
/// TTL 5, and counts the queries.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    upstream_with(Duration::ZERO, 5, 1).await
}

/// A fake upstream that answers after `delay` with `records` addresses
/// (192.0.2.10 first, 10.1.0.K for a name `nK.*`; then 10.x.y.z), TTL
/// `ttl`, and counts the queries.
async fn upstream_with(delay: Duration, ttl: u32, records: u32) -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = sock.recv_from(&mut buf).await.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            let q = Message::from_vec(&buf[..n]).unwrap();
            let sock = sock.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut m = reply_to(&q, ResponseCode::NoError);
                let name = q.queries()[0].name().clone();
                let first = name.to_ascii();
                let k = first
                    .strip_prefix('n')
                    .and_then(|t| t.split('.').next()?.parse::<u8>().ok());
                for i in 0..records {
                    let ip = match (i, k) {
                        (0, Some(k)) => Ipv4Addr::new(10, 1, 0, k),
                        (0, None) => Ipv4Addr::new(192, 0, 2, 10),
                        _ => Ipv4Addr::from(0x0a00_0000 + i),
                    };
                    m.add_answer(Record::from_rdata(name.clone(), ttl, RData::A(ip.into())));
                }
                sock.send_to(&m.to_vec().unwrap(), peer).await.unwrap();
            });
        }
    });
    (addr, count)
}

type Pinned = Arc<Mutex<Vec<(String, Vec<Pin>)>>>;

fn resolver(upstreams: Vec<SocketAddr>) -> (Arc<Resolver>, Pinned) {
    resolver_with(Options {
        upstreams,
        upstream_timeout: Duration::from_millis(300),
        rate: 1,
        burst: 20,
        ..Options::default()
    })
}

fn resolver_with(opts: Options) -> (Arc<Resolver>, Pinned) {
    resolver_pinning_in(opts, Duration::ZERO)
}

/// A resolver whose pinner takes `delay` (an nft run).
fn resolver_pinning_in(opts: Options, delay: Duration) -> (Arc<Resolver>, Pinned) {
    let pinned: Pinned = Arc::default();
    let p = pinned.clone();
    let r = Resolver::with_pinner(
        opts,
        Arc::new(move |table: &str, pins: &[Pin]| {
            std::thread::sleep(delay);
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
        rules: RwLock::new(Rules {
            generation: 0,
            policy: Arc::new(Policy::compile(&rules).unwrap()),
        }),
        pin_lock: AsyncMutex::new(()),
        pending: Mutex::new(Vec::new()),
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

#[tokio::test]
async fn tcp_queries_are_answered_one_after_the_other() {
    let (up, _) = upstream().await;
    let (r, pinned) = resolver(vec![up]);
    let a = Arc::new(sandbox(&["allowed.test"], &["0.0.0.0/0"]));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (r2, a2) = (r.clone(), a.clone());
    tokio::spawn(async move {
        let (conn, _) = l.accept().await.unwrap();
        let _ = serve_conn(&r2, &a2, conn).await;
    });
    let mut c = TcpStream::connect(addr).await.unwrap();
    for (name, code) in [
        ("allowed.test.", ResponseCode::NoError),
        ("denied.test.", ResponseCode::NXDomain),
    ] {
        let q = query(name);
        c.write_u16(q.len() as u16).await.unwrap();
        c.write_all(&q).await.unwrap();
        let len = c.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(
            Message::from_vec(&buf).unwrap().response_code(),
            code,
            "{name}"
        );
    }
    assert_eq!(lock(&pinned).len(), 1);
}

#[tokio::test]
async fn an_update_keeps_only_pins_of_names_still_allowed() {
    let (up, _) = upstream().await;
    let (r, _) = resolver(vec![up]);
    let a = Arc::new(sandbox(&["allowed.test", "also.test"], &["0.0.0.0/0"]));
    lock(&r.sandboxes).insert("sb1".into(), a.clone());
    decode(answer(&r, &a, &query("allowed.test."), false).await);
    lock(&a.learned).insert(
        Ipv4Addr::new(192, 0, 2, 99),
        Learned {
            names: vec!["also.test".into()],
            until: Instant::now() + MIN_PIN,
        },
    );
    // The table does not exist here: only the bookkeeping changes.
    let rules = EgressRules {
        allow: vec!["also.test".into()],
        deny: vec!["0.0.0.0/0".into()],
        ..Default::default()
    };
    r.update("sb1", &rules).await.unwrap();
    let learned = lock(&a.learned).clone();
    assert_eq!(learned.len(), 1, "{learned:?}");
    assert!(learned.contains_key(&Ipv4Addr::new(192, 0, 2, 99)));
    assert_eq!(
        a.rules().policy.name_verdict("allowed.test"),
        NameVerdict::Deny
    );
    assert!(r
        .update(
            "sb1",
            &EgressRules {
                allow: vec!["bad name".into()],
                ..Default::default()
            }
        )
        .await
        .unwrap_err()
        .contains("not a valid domain name"));
}

fn deny_all_but(allow: &[&str]) -> EgressRules {
    EgressRules {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: vec!["0.0.0.0/0".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn an_update_refuses_an_answer_in_flight_for_a_name_it_revokes() {
    // The upstream takes 200 ms (within the 300 ms timeout) and hands out
    // a day-long TTL.
    let (up, count) = upstream_with(Duration::from_millis(200), 86_400, 1).await;
    let (r, pinned) = resolver(vec![up]);
    let a = Arc::new(sandbox(&["evil.test", "fine.test"], &["0.0.0.0/0"]));
    lock(&r.sandboxes).insert("sb1".into(), a.clone());
    let (r2, a2) = (r.clone(), a.clone());
    let in_flight =
        tokio::spawn(async move { answer(&r2, &a2, &query("evil.test."), false).await });
    while count.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The query is at the upstream: revoke the name.
    r.update("sb1", &deny_all_but(&["fine.test"]))
        .await
        .unwrap();
    let m = decode(in_flight.await.unwrap());
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert!(m.answers().is_empty());
    assert!(
        lock(&pinned).is_empty(),
        "pinned after the update: {:?}",
        lock(&pinned)
    );
    assert!(lock(&a.learned).is_empty());
}

#[tokio::test]
async fn pins_last_an_hour_at_most_and_so_do_the_answers() {
    let (up, _) = upstream_with(Duration::ZERO, 86_400, 1).await;
    let (r, pinned) = resolver(vec![up]);
    let a = sandbox(&["allowed.test"], &["0.0.0.0/0"]);
    let m = decode(answer(&r, &a, &query("allowed.test."), false).await);
    assert_eq!(m.answers()[0].ttl(), 3600);
    assert_eq!(lock(&pinned)[0].1[0].ttl, MAX_PIN);
    assert_eq!(MAX_PIN, Duration::from_secs(3600));
}

#[tokio::test]
async fn a_huge_answer_pins_and_carries_only_the_first_addresses() {
    let (up, _) = upstream_with(Duration::ZERO, 300, 1000).await;
    let (r, pinned) = resolver(vec![up]);
    let a = sandbox(&["allowed.test"], &["0.0.0.0/0"]);
    let m = decode(answer(&r, &a, &query("allowed.test."), true).await);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(m.answers().len(), MAX_PINS_PER_ANSWER);
    let p = lock(&pinned).clone();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].1.len(), MAX_PINS_PER_ANSWER);
    let answered: Vec<Ipv4Addr> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(x) => Some(x.0),
            _ => None,
        })
        .collect();
    let pins: Vec<Ipv4Addr> = p[0].1.iter().map(|p| p.addr).collect();
    assert_eq!(
        answered, pins,
        "the answer carries exactly the pinned addresses"
    );
    assert_eq!(lock(&a.learned).len(), MAX_PINS_PER_ANSWER);
}

#[tokio::test]
async fn repeated_queries_for_a_pinned_name_run_no_nft() {
    let (up, count) = upstream_with(Duration::ZERO, 300, 3).await;
    let (r, pinned) = resolver_with(Options {
        upstreams: vec![up],
        upstream_timeout: Duration::from_millis(300),
        ..Options::default()
    });
    let a = sandbox(&["allowed.test"], &["0.0.0.0/0"]);
    lock(&a.bucket).tokens = 400.0;
    for _ in 0..200 {
        let m = decode(answer(&r, &a, &query("allowed.test."), false).await);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert_eq!(m.answers().len(), 3);
    }
    assert_eq!(count.load(Ordering::SeqCst), 200);
    assert_eq!(lock(&pinned).len(), 1, "one pinning for 200 answers");
    // Past half of its time, an address is pinned again.
    for l in lock(&a.learned).values_mut() {
        l.until = Instant::now() + Duration::from_secs(100);
    }
    decode(answer(&r, &a, &query("allowed.test."), false).await);
    assert_eq!(lock(&pinned).len(), 2);
}

#[tokio::test]
async fn a_full_pin_set_is_servfail_and_pins_nothing() {
    let (up, _) = upstream().await;
    let (r, pinned) = resolver(vec![up]);
    let a = sandbox(&["allowed.test"], &["0.0.0.0/0"]);
    {
        let mut l = lock(&a.learned);
        for i in 0..MAX_LEARNED as u32 {
            l.insert(
                Ipv4Addr::from(0x0a00_0000 + i),
                Learned {
                    names: vec!["allowed.test".into()],
                    until: Instant::now() + MIN_PIN,
                },
            );
        }
    }
    let m = decode(answer(&r, &a, &query("allowed.test."), false).await);
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    assert!(lock(&pinned).is_empty());
    // Expired pins make room again.
    for l in lock(&a.learned).values_mut() {
        l.until = Instant::now();
    }
    let m = decode(answer(&r, &a, &query("allowed.test."), false).await);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(lock(&pinned).len(), 1);
    assert_eq!(lock(&a.learned).len(), 1);
}

#[tokio::test]
async fn an_address_shared_by_two_names_stays_while_one_is_allowed() {
    let (up, _) = upstream().await;
    let (r, pinned) = resolver(vec![up]);
    let a = Arc::new(sandbox(&["one.test", "two.test"], &["0.0.0.0/0"]));
    lock(&r.sandboxes).insert("sb1".into(), a.clone());
    decode(answer(&r, &a, &query("one.test."), false).await);
    decode(answer(&r, &a, &query("two.test."), false).await);
    assert_eq!(lock(&pinned).len(), 1, "the second name pins nothing new");
    r.update("sb1", &deny_all_but(&["two.test"])).await.unwrap();
    let l = lock(&a.learned).clone();
    assert_eq!(l[&Ipv4Addr::new(192, 0, 2, 10)].names, ["two.test"]);
    r.update("sb1", &deny_all_but(&[])).await.unwrap();
    assert!(lock(&a.learned).is_empty());
}

#[tokio::test]
async fn a_periodic_attach_does_not_bring_back_old_rules() {
    let (r, _) = resolver(vec![]);
    let a = Arc::new(sandbox(&["evil.test"], &["0.0.0.0/0"]));
    lock(&r.sandboxes).insert("sb1".into(), a.clone());
    r.update("sb1", &deny_all_but(&[])).await.unwrap();
    // A reconcile pass that read the record before the update.
    r.attach(
        "sb1",
        a.gateway,
        a.sandbox_ip,
        &deny_all_but(&["evil.test"]),
    )
    .await
    .unwrap();
    assert_eq!(
        a.rules().policy.name_verdict("evil.test"),
        NameVerdict::Deny
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_waiting_to_pin_are_pinned_in_one_run() {
    let (up, _) = upstream().await;
    let (r, pinned) = resolver_pinning_in(
        Options {
            upstreams: vec![up],
            upstream_timeout: Duration::from_millis(500),
            ..Options::default()
        },
        Duration::from_millis(200),
    );
    let a = Arc::new(sandbox(&["*.allowed.test"], &["0.0.0.0/0"]));
    let mut asks = Vec::new();
    for k in 0..20u8 {
        let (r, a) = (r.clone(), a.clone());
        asks.push(tokio::spawn(async move {
            let q = query(&format!("n{k}.allowed.test."));
            decode(answer(&r, &a, &q, false).await)
        }));
        // The first pin is running when the others come.
        if k == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for ask in asks {
        let m = ask.await.unwrap();
        assert_eq!(m.response_code(), ResponseCode::NoError);
    }
    let runs = lock(&pinned).clone();
    let addrs: usize = runs.iter().map(|(_, p)| p.len()).sum();
    assert_eq!(addrs, 20, "{runs:?}");
    assert!(runs.len() <= 3, "{} nft runs for 20 answers", runs.len());
    assert_eq!(lock(&a.learned).len(), 20);
}
