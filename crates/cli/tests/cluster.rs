//! A cluster of three dwell daemons on one PostgreSQL and one S3 bucket
//! (moto), on this machine: nodes register and show in `node ls`;
//! placement puts a new sandbox on the node with room (and the labels
//! asked for), never on a draining one; every request for a sandbox is
//! served by its owner through whichever node the client reached (exec,
//! streams, files, lifecycle, remove); quotas hold across nodes.

mod common;

use common::*;
use dwell_testkit::cluster::Cluster;

/// Three nodes: n1 small (1 GiB), n2 big (8 GiB, zone=b), n3 medium (4 GiB).
fn three() -> Option<Cluster> {
    Cluster::start(3, |i| {
        let (mem, zone) = [("1G", "a"), ("8G", "b"), ("4G", "a")][i];
        vec![
            "--node-capacity".into(),
            format!("vcpus=8,memory={mem},disk=50G"),
            "--node-label".into(),
            format!("zone={zone}"),
        ]
    })
}

#[test]
fn placement_forwarding_drain_and_quotas_across_nodes() {
    if !can_run() {
        return;
    }
    let Some(c) = three() else { return };
    let (n1, n2, n3) = (c.node(0), c.node(1), c.node(2));
    // Every node sees every node, up.
    let nodes = c.node_list(2);
    let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["n1", "n2", "n3"]);
    assert!(nodes.iter().all(|n| n["state"] == "up"), "{nodes:?}");
    assert_eq!(
        nodes.iter().filter(|n| n["this_node"] == true).count(),
        1,
        "{nodes:?}"
    );

    // Placement: the node with the most room left (n2), whichever node
    // took the request.
    n1.create("w", &[]);
    assert_eq!(c.owner(0, "w"), "n2");
    assert_eq!(c.owner(2, "w"), "n2");
    // Served by its owner through any node: exec, files, lifecycle.
    assert_eq!(n1.sh("w", "echo hi from $(hostname)"), "hi from w\n");
    n3.sh("w", "echo kept > /root/f");
    assert_eq!(n1.sh("w", "cat /root/f"), "kept\n");
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), b"up through n3\n").unwrap();
    n3.ok(&["cp", local.path().to_str().unwrap(), "w:/root/up"]);
    assert_eq!(n1.sh("w", "cat /root/up"), "up through n3\n");
    n1.ok(&["stop", "w"]);
    assert_eq!(n3.inspect("w")["state"], "stopped");
    n3.ok(&["start", "w"]);
    assert_eq!(n1.sh("w", "cat /root/f"), "kept\n");
    // A streamed exec (WebSocket) through a node that does not own it.
    let out = n3.run(&[
        "exec",
        "w",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do echo $i; done; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1\n2\n3\n");
    // Lists are the cluster's, from any node.
    assert!(n3
        .ok(&["ls", "-q"])
        .contains(&n1.inspect("w")["id"].as_str().unwrap().to_string()));

    // Labels: a selector places on a node that has them.
    n1.create("z", &["--node-selector", "zone=a"]);
    assert_eq!(c.owner(1, "z"), "n3", "n3 has the most room of zone a");
    let out = n1.run(&[
        "create",
        "--name",
        "nowhere",
        "--node-selector",
        "zone=c",
        "--memory",
        "256M",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no label zone=c"), "{}", stderr(&out));

    // Draining n2: new sandboxes go elsewhere, and what it runs moves off
    // (`cluster_moves` tests moves and drains in depth).
    n3.ok(&["node", "drain", "n2", "--wait", "--timeout", "120s"]);
    let n2_state = c
        .node_list(0)
        .into_iter()
        .find(|n| n["name"] == "n2")
        .unwrap()["state"]
        .clone();
    assert_eq!(n2_state, "draining");
    n2.create("v", &[]);
    assert_ne!(c.owner(0, "v"), "n2");
    assert_ne!(c.owner(0, "w"), "n2");
    assert_eq!(n2.sh("w", "cat /root/f"), "kept\n");
    n1.ok(&["node", "undrain", "n2"]);

    // Too big for any node: refused, naming why for each.
    let out = n1.run(&["create", "--name", "huge", "--memory", "16G"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no node of the cluster can take"),
        "{}",
        stderr(&out)
    );

    // Removal through a node that does not own it.
    for sb in ["w", "z", "v"] {
        n1.ok(&["rm", "-f", sb]);
    }
    assert!(n2.ok(&["ls", "-q"]).trim().is_empty());
}

#[test]
fn quotas_hold_across_nodes() {
    if !can_run() {
        return;
    }
    let Some(c) = Cluster::start(2, |_| Vec::new()) else {
        return;
    };
    let (n1, n2) = (c.node(0), c.node(1));
    n1.ok(&["tenant", "create", "acme", "--max-sandboxes", "2"]);
    let as_acme = |d: &Daemon, args: &[&str]| {
        let mut cmd = d.cmd(args);
        cmd.env("DWELL_AS_TENANT", "acme");
        cmd.output().unwrap()
    };
    for (d, name) in [(n1, "a1"), (n2, "a2")] {
        let out = as_acme(
            d,
            &[
                "create", "--name", name, "--memory", "256M", "--disk", "512M",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = as_acme(
        n2,
        &[
            "create", "--name", "a3", "--memory", "256M", "--disk", "512M",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("quota"), "{}", stderr(&out));
    // Both are the tenant's, whichever node lists them.
    let out = as_acme(n1, &["ls", "-q"]);
    assert_eq!(stdout(&out).lines().count(), 2);
    // Racing for the last slot through two nodes at once: one wins.
    for name in ["a1", "a2"] {
        assert!(as_acme(n1, &["rm", "-f", name]).status.success());
    }
    n2.ok(&["tenant", "update", "acme", "--max-sandboxes", "1"]);
    for round in 0..3 {
        let outs: Vec<std::process::Output> = std::thread::scope(|s| {
            let hs: Vec<_> = [(n1, "r1"), (n2, "r2")]
                .into_iter()
                .map(|(d, name)| {
                    let name = format!("{name}-{round}");
                    s.spawn(move || {
                        as_acme(
                            d,
                            &[
                                "create", "--name", &name, "--memory", "256M", "--disk", "512M",
                            ],
                        )
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(
            won,
            1,
            "round {round}: {:?}",
            outs.iter().map(stderr).collect::<Vec<_>>()
        );
        let ids = stdout(&as_acme(n1, &["ls", "-q"]));
        for id in ids.lines() {
            assert!(as_acme(n2, &["rm", "-f", id]).status.success());
        }
    }
}

/// A tenant reaching a node over TCP cannot pass for another tenant or an
/// admin on the owner: whatever it sends as the forwarded caller is
/// replaced by its own; an admin acting for a tenant is that tenant on the
/// owner too; another tenant's sandbox is not found, through any node.
#[test]
fn forwarded_requests_carry_the_callers_own_identity() {
    if !can_run() {
        return;
    }
    let ports = [free_port(), free_port()];
    let Some(c) = Cluster::start(2, |i| {
        vec![
            "--listen".into(),
            format!("127.0.0.1:{}", ports[i]),
            "--node-capacity".into(),
            ["vcpus=8,memory=1G", "vcpus=8,memory=8G"][i].into(),
            "--credential-recheck".into(),
            "1s".into(),
        ]
    }) else {
        return;
    };
    let n1 = c.node(0);
    let api1 = format!("127.0.0.1:{}", ports[0]);
    let alice = n1.tenant_key("alice");
    let bob = n1.tenant_key("bob");
    // Alice's sandbox, owned by n2.
    let mut cmd = n1.cmd(&[
        "create", "--name", "secret", "--memory", "256M", "--disk", "512M",
    ]);
    cmd.env("DWELL_AS_TENANT", "alice");
    assert!(cmd.output().unwrap().status.success());
    assert!(
        !n1.run(&["inspect", "secret"]).status.success(),
        "not the default tenant's"
    );
    let auth = |k: &str| format!("Bearer {k}");
    // Bob through n1, claiming to be alice (and an admin) in the headers
    // nodes use between themselves.
    let bob_auth = auth(&bob);
    for path in ["/v1/sandboxes/secret", "/v1/sandboxes/secret/exec"] {
        let r = http::request(
            &api1,
            if path.ends_with("exec") {
                "POST"
            } else {
                "GET"
            },
            path,
            &[
                ("authorization", &bob_auth),
                ("x-dwell-forwarded-tenant", "alice"),
                ("x-dwell-forwarded-admin", "1"),
                ("x-dwell-forwarded-key-id", "local"),
                ("content-type", "application/json"),
            ],
            br#"{"argv": ["cat", "/etc/hostname"]}"#,
        );
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    // Alice reaches her sandbox through n1 (served by n2).
    let alice_auth = auth(&alice);
    let r = http::request(
        &api1,
        "GET",
        "/v1/sandboxes/secret",
        &[("authorization", &alice_auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["node"], "n2");
    // The admin, acting for bob, does not see alice's sandbox either, and
    // bob's key cannot drain nodes.
    let admin = format!("Bearer {}", n1.admin_key());
    let r = http::request(
        &api1,
        "GET",
        "/v1/sandboxes/secret",
        &[("authorization", &admin), ("x-dwell-tenant", "bob")],
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = http::request(
        &api1,
        "POST",
        "/v1/nodes/n2/drain",
        &[
            ("authorization", &bob_auth),
            ("x-dwell-forwarded-admin", "1"),
        ],
        b"",
    );
    assert_eq!(r.status, 403, "{}", r.text());
    revoked_credentials_end_forwarded_terminals(n1, &api1, &alice);
}

/// What alice opens through n1 on her sandbox of n2 ends when her console
/// session, then her API key, is revoked: n2 re-checks the credential n1
/// forwarded (n1 only relays the WebSocket).
fn revoked_credentials_end_forwarded_terminals(n1: &Daemon, api1: &str, alice: &str) {
    use futures_util::{SinkExt, StreamExt};
    use std::time::{Duration, Instant};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let login = http::request(
        api1,
        "POST",
        "/v1/console/sessions",
        &[("content-type", "application/json")],
        format!(r#"{{"api_key":"{alice}"}}"#).as_bytes(),
    );
    assert_eq!(login.status, 201, "{login}");
    let cookie = login.cookie();
    let (session, key_id) = {
        let v = login.json();
        (
            v["id"].as_str().unwrap().to_string(),
            v["key_id"].as_str().unwrap().to_string(),
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ws_case = async {
        let mut req = format!("ws://{api1}/v1/sandboxes/secret/exec")
            .into_client_request()
            .unwrap();
        let h = req.headers_mut();
        h.insert("cookie", cookie.parse().unwrap());
        h.insert("origin", format!("http://{api1}").parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(api1).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        ws.send(Message::Text(r#"{"argv":["sleep","300"]}"#.into()))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => assert!(t.contains("started"), "{t}"),
            other => panic!("no start of the forwarded exec: {other:?}"),
        }
        // Open a few rechecks while the session holds.
        assert!(
            tokio::time::timeout(Duration::from_secs(3), ws.next())
                .await
                .is_err(),
            "the forwarded terminal ended early"
        );
        let r = http::request(
            api1,
            "DELETE",
            &format!("/v1/console/sessions/{session}"),
            &[("authorization", &format!("Bearer {alice}"))],
            b"",
        );
        assert!(r.status < 300, "{r}");
        let t0 = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
                Err(_) => {
                    panic!("the forwarded terminal still open 20 s after the session's revocation")
                }
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => break,
                Ok(Some(Ok(_))) => assert!(t0.elapsed() < Duration::from_secs(20)),
            }
        }
    };
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), ws_case)
            .await
            .expect("the forwarded WebSocket case took over 120 s")
    });
    // Closed by the revocation, not by a broken node: the sandbox answers.
    let mut cmd = n1.cmd(&["exec", "secret", "--", "true"]);
    cmd.env("DWELL_AS_TENANT", "alice");
    assert!(cmd.output().unwrap().status.success());
    // The key: a terminal and an exec still running, both through n1.
    let spawn = |args: &[&str]| {
        KillOnDrop(
            n1.cmd(args)
                .env("DWELL_HOST", api1)
                .env("DWELL_API_KEY", alice)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let open = [
        spawn(&["exec", "secret", "--", "sleep", "300"]),
        spawn(&["exec", "--json", "secret", "--", "sleep", "300"]),
    ];
    let mut open = open;
    std::thread::sleep(Duration::from_secs(3));
    for child in &mut open {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "a forwarded exec ended early"
        );
    }
    n1.ok(&["tenant", "key", "revoke", "alice", &key_id]);
    let deadline = Instant::now() + Duration::from_secs(20);
    for child in &mut open {
        let status = child
            .exit_by(deadline)
            .expect("a forwarded exec still open 20 s after its key was revoked");
        assert!(!status.success());
    }
}

/// A second daemon given a node name another daemon holds (its lease
/// live) is refused at start, naming the fix; the holder keeps its lease.
#[test]
fn a_node_name_in_use_is_refused() {
    if !can_run() {
        return;
    }
    let Some(c) = Cluster::start(1, |_| Vec::new()) else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("dwell-e2e-")
        .tempdir_in("/tmp")
        .unwrap();
    let args = c.node_args("n1", &format!("127.0.0.1:{}", free_port()));
    let mut cmd = std::process::Command::new(dwell_bin());
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--agent")
        .arg(agent_bin())
        .args(["--gvisor-pool", "0"])
        .args(&args);
    let out = output_within(cmd, "a second serve as n1", String::new);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("held by another daemon"), "{err}");
    assert!(err.contains("--node-name"), "{err}");
    let nodes = c.node_list(0);
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["state"], "up");
}
