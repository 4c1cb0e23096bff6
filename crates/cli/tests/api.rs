//! End to end: the HTTP API itself: TCP needs an API key; the OpenAPI
//! document is served.

mod common;

use std::io::{Read, Write};

use common::*;

fn http(addr: &str, req: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn tcp_needs_an_api_key_and_the_cli_uses_it() {
    if !can_run() {
        return;
    }
    let port = 20000 + (std::process::id() % 20000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_with(&["--listen", &addr]);
    wait_for(10, "admin key and TCP listener", || {
        d.data.join("admin.key").exists() && std::net::TcpStream::connect(&addr).is_ok()
    });
    let key = std::fs::read_to_string(d.data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let r = http(
        &addr,
        "GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(r.contains("API key"));
    let r = http(&addr, "GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = http(&addr, &format!("GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = http(
        &addr,
        "GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.contains("\"openapi\""));
    // The CLI over TCP.
    let out = d
        .cmd(&[
            "create", "--name", "remote", "--memory", "128M", "--disk", "256M",
        ])
        .env("DWELL_HOST", &addr)
        .env("DWELL_API_KEY", &key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = d
        .cmd(&["exec", "remote", "--", "echo", "over tcp"])
        .env("DWELL_HOST", &addr)
        .env("DWELL_API_KEY", &key)
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "over tcp\n");
    let out = d
        .cmd(&["ls"])
        .env("DWELL_HOST", &addr)
        .env("DWELL_API_KEY", "nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77));
    // The unix socket is for root only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn tenants_have_quotas_and_cannot_see_each_other() {
    if !can_run() {
        return;
    }
    let port = 20000 + ((std::process::id() + 7) % 20000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_with(&["--listen", &addr, "--resync-secs", "1"]);
    wait_for(10, "TCP listener", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let acme = d
        .ok(&[
            "tenant",
            "create",
            "acme",
            "--max-sandboxes",
            "2",
            "--max-memory",
            "512M",
            "--max-vcpus",
            "2",
        ])
        .trim()
        .to_string();
    let other = d.ok(&["tenant", "create", "other"]).trim().to_string();
    assert!(acme.starts_with("dwk_") && other.starts_with("dwk_"));
    let as_ = |key: &str, args: &[&str]| {
        d.cmd(args)
            .env("DWELL_HOST", &addr)
            .env("DWELL_API_KEY", key)
            .output()
            .unwrap()
    };
    let out = as_(
        &acme,
        &[
            "create", "--name", "a1", "--memory", "256M", "--disk", "256M", "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let a1: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a1_id = a1["id"].as_str().unwrap().to_string();
    // Quota: 256M more would pass, 512M more would not; nothing is created.
    let out = as_(
        &acme,
        &[
            "create", "--name", "a2", "--memory", "384M", "--disk", "256M",
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("memory quota")
            && err.contains("512MiB")
            && err.contains("256MiB")
            && err.contains("384MiB"),
        "{err}"
    );
    assert!(
        stdout(&as_(&acme, &["ls", "-q"])).lines().count() == 1,
        "a rejected create left a sandbox"
    );
    as_(
        &acme,
        &[
            "create", "--name", "a2", "--memory", "128M", "--disk", "256M",
        ],
    );
    let out = as_(
        &acme,
        &[
            "create", "--name", "a3", "--memory", "64M", "--disk", "256M",
        ],
    );
    assert!(stderr(&out).contains("sandboxes quota"), "{}", stderr(&out));
    // Another tenant sees nothing of acme's, by name or by id, and cannot act on it.
    assert!(stdout(&as_(&other, &["ls", "-q"])).trim().is_empty());
    for target in ["a1", a1_id.as_str()] {
        for args in [
            vec!["inspect", target],
            vec!["exec", target, "--", "true"],
            vec!["rm", "-f", target],
            vec!["stop", target],
        ] {
            let out = as_(&other, &args);
            assert!(!out.status.success());
            assert!(
                stderr(&out).contains("no sandbox named"),
                "{args:?}: {}",
                stderr(&out)
            );
        }
    }
    assert!(
        !d.run(&["inspect", &a1_id]).status.success(),
        "the local admin is tenant `default` and does not see acme's either"
    );
    // ... unless it acts for acme: an operator sees and controls every tenant.
    let ls = d.ok(&["--as-tenant", "acme", "ls", "-q"]);
    assert_eq!(ls.lines().count(), 2, "{ls}");
    assert!(ls.contains(&a1_id), "{ls}");
    d.ok(&["--as-tenant", "acme", "inspect", "a1"]);
    // Only admins may act for another tenant, and only for one that exists.
    let out = as_(&other, &["--as-tenant", "acme", "ls"]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("only an admin API key may act for another tenant"),
        "{}",
        stderr(&out)
    );
    let out = d.run(&["--as-tenant", "bad\nname", "ls"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a tenant name"),
        "{}",
        stderr(&out)
    );
    let out = d.run(&["--as-tenant", "nosuch", "ls"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no tenant named \"nosuch\""),
        "{}",
        stderr(&out)
    );
    // Tenants are admin-only; usage is per tenant.
    let out = as_(&acme, &["tenant", "ls"]);
    assert_eq!(out.status.code(), Some(77));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let usage: serde_json::Value =
        serde_json::from_slice(&as_(&acme, &["usage", "--json"]).stdout).unwrap();
    assert!(
        usage["total"]["vcpu_hours"].as_f64().unwrap() > 0.0,
        "{usage}"
    );
    assert!(usage["total"]["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(usage["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["tenant"] == "acme"));
    let out = as_(&acme, &["usage", "--tenant", "other"]);
    assert!(!out.status.success());
    let all = d.ok(&["usage", "--since", "2026-01-01"]);
    assert!(all.contains("acme") && all.contains("TOTAL"), "{all}");
    let metrics = {
        let key = std::fs::read_to_string(d.data.join("admin.key")).unwrap();
        http(&addr, &format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", key.trim()))
    };
    assert!(
        metrics
            .contains("dwell_sandboxes{tenant=\"acme\",state=\"running\",mode=\"persistent\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("dwell_sandbox_memory_bytes{tenant=\"acme\""));
    assert!(metrics.contains("dwell_usage_cost_usd_total{tenant=\"acme\"}"));
    // The audit log knows who did what, including refused requests.
    let audit: serde_json::Value = serde_json::from_str(&d.ok(&["audit", "--json"])).unwrap();
    let entries = audit.as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["tenant"] == "acme"
            && e["method"] == "POST"
            && e["path"] == "/v1/sandboxes"
            && e["status"] == 403),
        "{audit}"
    );
    assert!(entries
        .iter()
        .any(|e| e["tenant"] == "default" && e["key_id"] == "local" && e["path"] == "/v1/tenants"));
    let own: serde_json::Value =
        serde_json::from_slice(&as_(&acme, &["audit", "--json"]).stdout).unwrap();
    assert!(own
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["tenant"] == "acme"));
    // The admin removes acme's sandboxes for it (the harness would too).
    for n in ["a1", "a2"] {
        d.ok(&["--as-tenant", "acme", "rm", "-f", n]);
    }
    assert!(d.ok(&["--as-tenant", "acme", "ls", "-q"]).trim().is_empty());
    // The audit log files it under acme, marked as the admin's doing.
    let audit: serde_json::Value = serde_json::from_str(&d.ok(&["audit", "--json"])).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["tenant"] == "acme"
                && e["key_id"] == "admin:local"
                && e["method"] == "DELETE"),
        "{audit}"
    );
    // Acting for a tenant gives that tenant's view, not the admin's.
    let usage = d.ok(&["--as-tenant", "other", "usage"]);
    assert!(!usage.contains("acme"), "{usage}");
}
