//! End to end: the HTTP API itself: TCP needs an API key; the OpenAPI
//! document is served.

mod common;

use common::*;

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
    let key = d.admin_key();
    let r = http::request(&addr, "GET", "/v1/sandboxes", &[], b"");
    assert_eq!(r.status, 401, "{r}");
    assert!(r.text().contains("API key"));
    let wrong = [("Authorization", "Bearer wrong")];
    let r = http::request(&addr, "GET", "/v1/sandboxes", &wrong, b"");
    assert_eq!(r.status, 401, "{r}");
    let bearer = format!("Bearer {key}");
    let r = http::request(
        &addr,
        "GET",
        "/v1/sandboxes",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 200, "{r}");
    let r = http::request(&addr, "GET", "/openapi.json", &[], b"");
    assert!(r.text().contains("\"openapi\""));
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

/// A daemon on TCP with two tenants: `acme` (at most 2 sandboxes, 512M of
/// memory, 2 vCPUs), which has sandbox `a1`, and `other`.
struct Tenants {
    addr: String,
    acme: String,
    other: String,
    a1_id: String,
    d: Daemon,
}

impl Tenants {
    fn start() -> Tenants {
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
        let mut t = Tenants {
            addr,
            acme,
            other,
            a1_id: String::new(),
            d,
        };
        let out = t.as_(
            &t.acme,
            &[
                "create", "--name", "a1", "--memory", "256M", "--disk", "256M", "--json",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let a1: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        t.a1_id = a1["id"].as_str().unwrap().to_string();
        t
    }

    /// `dwell ARGS` over TCP with API key `key`.
    fn as_(&self, key: &str, args: &[&str]) -> std::process::Output {
        self.d
            .cmd(args)
            .env("DWELL_HOST", &self.addr)
            .env("DWELL_API_KEY", key)
            .output()
            .unwrap()
    }
}

#[test]
fn tenants_have_quotas_and_cannot_see_each_other() {
    if !can_run() {
        return;
    }
    cases!(
        &Tenants::start();
        a_quota_refuses_what_would_exceed_it,
        another_tenant_sees_nothing_of_acmes,
        an_operator_sees_and_controls_every_tenant,
        only_an_admin_acts_for_another_tenant_and_only_one_that_exists,
        tenants_are_admin_only_and_usage_is_per_tenant,
        metrics_count_each_tenants_sandboxes,
        the_audit_log_knows_who_did_what,
        the_admin_removes_a_tenants_sandboxes_for_it,
    );
}

/// Quota: 256M more would pass, 512M more would not; nothing is created.
/// The sandbox count is a quota too.
fn a_quota_refuses_what_would_exceed_it(t: &Tenants) {
    let out = t.as_(
        &t.acme,
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
        stdout(&t.as_(&t.acme, &["ls", "-q"])).lines().count() == 1,
        "a rejected create left a sandbox"
    );
    t.as_(
        &t.acme,
        &[
            "create", "--name", "a2", "--memory", "128M", "--disk", "256M",
        ],
    );
    let out = t.as_(
        &t.acme,
        &[
            "create", "--name", "a3", "--memory", "64M", "--disk", "256M",
        ],
    );
    assert!(stderr(&out).contains("sandboxes quota"), "{}", stderr(&out));
}

/// Another tenant sees nothing of acme's, by name or by id, and cannot act
/// on it; neither does the local admin, which is tenant `default`.
fn another_tenant_sees_nothing_of_acmes(t: &Tenants) {
    assert!(stdout(&t.as_(&t.other, &["ls", "-q"])).trim().is_empty());
    for target in ["a1", t.a1_id.as_str()] {
        for args in [
            vec!["inspect", target],
            vec!["exec", target, "--", "true"],
            vec!["rm", "-f", target],
            vec!["stop", target],
        ] {
            let out = t.as_(&t.other, &args);
            assert!(!out.status.success());
            assert!(
                stderr(&out).contains("no sandbox named"),
                "{args:?}: {}",
                stderr(&out)
            );
        }
    }
    assert!(
        !t.d.run(&["inspect", &t.a1_id]).status.success(),
        "the local admin is tenant `default` and does not see acme's either"
    );
}

/// ... unless it acts for acme: an operator sees and controls every tenant.
fn an_operator_sees_and_controls_every_tenant(t: &Tenants) {
    let ls = t.d.ok(&["--as-tenant", "acme", "ls", "-q"]);
    assert_eq!(ls.lines().count(), 2, "{ls}");
    assert!(ls.contains(&t.a1_id), "{ls}");
    t.d.ok(&["--as-tenant", "acme", "inspect", "a1"]);
}

/// Only admins may act for another tenant, and only for one that exists.
fn only_an_admin_acts_for_another_tenant_and_only_one_that_exists(t: &Tenants) {
    let out = t.as_(&t.other, &["--as-tenant", "acme", "ls"]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("only an admin API key may act for another tenant"),
        "{}",
        stderr(&out)
    );
    let out = t.d.run(&["--as-tenant", "bad\nname", "ls"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a tenant name"),
        "{}",
        stderr(&out)
    );
    let out = t.d.run(&["--as-tenant", "nosuch", "ls"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no tenant named \"nosuch\""),
        "{}",
        stderr(&out)
    );
}

/// Tenants are admin-only; usage is per tenant.
fn tenants_are_admin_only_and_usage_is_per_tenant(t: &Tenants) {
    let out = t.as_(&t.acme, &["tenant", "ls"]);
    assert_eq!(out.status.code(), Some(77));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let usage: serde_json::Value =
        serde_json::from_slice(&t.as_(&t.acme, &["usage", "--json"]).stdout).unwrap();
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
    let out = t.as_(&t.acme, &["usage", "--tenant", "other"]);
    assert!(!out.status.success());
    let all = t.d.ok(&["usage", "--since", "2026-01-01"]);
    assert!(all.contains("acme") && all.contains("TOTAL"), "{all}");
}

/// The metrics count each tenant's sandboxes, memory and cost.
fn metrics_count_each_tenants_sandboxes(t: &Tenants) {
    let bearer = format!("Bearer {}", t.d.admin_key());
    let metrics = http::request(
        &t.addr,
        "GET",
        "/metrics",
        &[("Authorization", &bearer)],
        b"",
    )
    .text();
    assert!(
        metrics
            .contains("dwell_sandboxes{tenant=\"acme\",state=\"running\",mode=\"persistent\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("dwell_sandbox_memory_bytes{tenant=\"acme\""));
    assert!(metrics.contains("dwell_usage_cost_usd_total{tenant=\"acme\"}"));
}

/// The audit log knows who did what, including refused requests; a tenant
/// sees only its own entries.
fn the_audit_log_knows_who_did_what(t: &Tenants) {
    let audit: serde_json::Value = serde_json::from_str(&t.d.ok(&["audit", "--json"])).unwrap();
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
        serde_json::from_slice(&t.as_(&t.acme, &["audit", "--json"]).stdout).unwrap();
    assert!(own
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["tenant"] == "acme"));
}

/// The admin removes acme's sandboxes for it (the harness would too); the
/// audit log files that under acme, marked as the admin's doing, and
/// acting for a tenant gives that tenant's view, not the admin's.
fn the_admin_removes_a_tenants_sandboxes_for_it(t: &Tenants) {
    for n in ["a1", "a2"] {
        t.d.ok(&["--as-tenant", "acme", "rm", "-f", n]);
    }
    assert!(t
        .d
        .ok(&["--as-tenant", "acme", "ls", "-q"])
        .trim()
        .is_empty());
    let audit: serde_json::Value = serde_json::from_str(&t.d.ok(&["audit", "--json"])).unwrap();
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
    let usage = t.d.ok(&["--as-tenant", "other", "usage"]);
    assert!(!usage.contains("acme"), "{usage}");
}
