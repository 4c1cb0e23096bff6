//! `tenant create|update|ls|key [ls|revoke]` and `usage`.

use anyhow::Result;
use dwell_contract::tenants::{AuditEntry, Report, UsageSeries};

use crate::cli::{AuditArgs, KeyArgs, KeyCommand, TenantArgs, TenantCommand, UsageArgs};
use crate::client::{enc, Client};
use crate::output;

fn body(a: &TenantArgs) -> serde_json::Value {
    let defaults = a.defaults.to_args();
    let egress = !(a.default_allow_out.is_empty() && a.default_deny_out.is_empty());
    serde_json::json!({
        "default_policies": (!defaults.is_empty()).then_some(defaults),
        "default_egress": egress.then(|| serde_json::json!({
            "allow": a.default_allow_out,
            "deny": a.default_deny_out,
        })),
        "name": a.name,
        "max_sandboxes": a.max_sandboxes,
        "max_vcpus": a.max_vcpus,
        "max_memory": a.max_memory,
        "max_storage": a.max_storage,
    })
}

fn limit<T: ToString>(
    v: &serde_json::Value,
    f: impl Fn(&serde_json::Value) -> Option<T>,
) -> String {
    f(v).map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

pub async fn run(c: &Client, cmd: TenantCommand) -> Result<i32> {
    match cmd {
        TenantCommand::Create(a) => {
            let v: serde_json::Value = c.post("/v1/tenants", &body(&a)).await?;
            if a.json {
                output::json(&v)?;
            } else {
                println!("{}", v["api_key"].as_str().unwrap_or_default());
                eprintln!("created tenant {}; the line above is its API key, shown once (use it as DWELL_API_KEY; the E2B SDKs take it as E2B_API_KEY with `e2b_` in place of `dwk_`)", a.name);
            }
        }
        TenantCommand::Update(a) => {
            let v: serde_json::Value = c
                .json(
                    hyper::Method::PATCH,
                    &format!("/v1/tenants/{}", enc(&a.name)),
                    Some(&body(&a)),
                )
                .await?;
            if a.json {
                output::json(&v)?;
            } else {
                println!("{}: limits updated", a.name);
            }
        }
        TenantCommand::Key(KeyArgs {
            command: Some(k), ..
        }) => return keys(c, k).await,
        TenantCommand::Key(KeyArgs { name: None, .. }) => {
            anyhow::bail!("name the tenant: `dwell tenant key NAME` issues a key, `dwell tenant key ls NAME` lists them")
        }
        TenantCommand::Key(KeyArgs {
            name: Some(name), ..
        }) => {
            let v: serde_json::Value = c
                .post(
                    &format!("/v1/tenants/{}/keys", enc(&name)),
                    &serde_json::json!({}),
                )
                .await?;
            println!("{}", v["api_key"].as_str().unwrap_or_default());
        }
        TenantCommand::Ls(a) => {
            let v: Vec<serde_json::Value> = c.get("/v1/tenants").await?;
            if a.json {
                output::json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = v
                    .iter()
                    .map(|t| {
                        let h = &t["held"];
                        let name = t["name"].as_str().unwrap_or_default();
                        vec![
                            if t["default_quota"].as_bool() == Some(true) {
                                format!("{name} (default quota)")
                            } else {
                                name.to_string()
                            },
                            format!(
                                "{}/{}",
                                h["sandboxes"],
                                limit(t, |t| t["max_sandboxes"].as_u64())
                            ),
                            format!("{}/{}", h["vcpus"], limit(t, |t| t["max_vcpus"].as_f64())),
                            format!(
                                "{}/{}",
                                output::size(h["memory"].as_u64().unwrap_or(0)),
                                limit(t, |t| t["max_memory"].as_u64().map(output::size))
                            ),
                            format!(
                                "{}/{}",
                                output::size(h["storage"].as_u64().unwrap_or(0)),
                                limit(t, |t| t["max_storage"].as_u64().map(output::size))
                            ),
                        ]
                    })
                    .collect();
                output::table(
                    &["TENANT", "SANDBOXES", "VCPUS", "MEMORY", "STORAGE"],
                    &rows,
                );
            }
        }
    }
    Ok(0)
}

/// `tenant key ls|revoke`.
async fn keys(c: &Client, cmd: KeyCommand) -> Result<i32> {
    match cmd {
        KeyCommand::Ls { name, json } => {
            let v: Vec<serde_json::Value> =
                c.get(&format!("/v1/tenants/{}/keys", enc(&name))).await?;
            if json {
                return output::json(&v).map(|_| 0);
            }
            let when = |k: &serde_json::Value, f: &str| {
                k[f].as_i64()
                    .map(output::time)
                    .unwrap_or_else(|| "-".into())
            };
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|k| {
                    vec![
                        k["id"].as_str().unwrap_or_default().to_string(),
                        k["name"].as_str().unwrap_or_default().to_string(),
                        if k["admin"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        when(k, "created_at"),
                        when(k, "last_used_at"),
                        when(k, "revoked_at"),
                    ]
                })
                .collect();
            output::table(
                &["ID", "NAME", "ADMIN", "CREATED", "LAST USED", "REVOKED"],
                &rows,
            );
        }
        KeyCommand::Revoke { name, key_id } => {
            let _: serde_json::Value = c
                .json(
                    hyper::Method::DELETE,
                    &format!("/v1/tenants/{}/keys/{}", enc(&name), enc(&key_id)),
                    None::<&serde_json::Value>,
                )
                .await?;
            println!("revoked {key_id} of tenant {name}");
        }
    }
    Ok(0)
}

pub async fn usage(c: &Client, a: UsageArgs) -> Result<i32> {
    let mut q = Vec::new();
    if let Some(t) = &a.tenant {
        q.push(format!("tenant={}", enc(t)));
    }
    if let Some(s) = &a.since {
        q.push(format!("since={}", enc(s)));
    }
    if let Some(step) = &a.by {
        q.push(format!("step={step}"));
        return usage_series(c, &q, a.json).await;
    }
    let r: Report = c.get(&format!("/v1/usage?{}", q.join("&"))).await?;
    if a.json {
        output::json(&r)?;
        return Ok(0);
    }
    let mut rows: Vec<Vec<String>> = r
        .sandboxes
        .iter()
        .map(|s| {
            vec![
                s.tenant.clone(),
                s.name.clone(),
                format!("{:.4}", s.totals.vcpu_hours),
                format!("{:.4}", s.totals.memory_gib_hours),
                format!("{:.4}", s.totals.storage_gib_hours),
                format!("{:.4}", s.totals.cpu_used_hours),
                format!("${:.4}", s.totals.cost_usd),
            ]
        })
        .collect();
    rows.push(vec![
        "TOTAL".into(),
        String::new(),
        format!("{:.4}", r.total.vcpu_hours),
        format!("{:.4}", r.total.memory_gib_hours),
        format!("{:.4}", r.total.storage_gib_hours),
        format!("{:.4}", r.total.cpu_used_hours),
        format!("${:.4}", r.total.cost_usd),
    ]);
    output::table(
        &[
            "TENANT",
            "SANDBOX",
            "VCPU-H",
            "MEM GIB-H",
            "DISK GIB-H",
            "CPU USED-H",
            "COST",
        ],
        &rows,
    );
    Ok(0)
}

pub async fn audit(c: &Client, a: AuditArgs) -> Result<i32> {
    let q = a
        .since
        .as_deref()
        .map(|s| format!("?since={}", enc(s)))
        .unwrap_or_default();
    let entries: Vec<AuditEntry> = c.get(&format!("/v1/audit{q}")).await?;
    if a.json {
        output::json(&entries)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                output::time(e.at),
                e.tenant.clone(),
                e.key_id.clone(),
                e.status.to_string(),
                format!("{} {}", e.method, e.path),
            ]
        })
        .collect();
    output::table(&["TIME", "TENANT", "KEY", "STATUS", "REQUEST"], &rows);
    Ok(0)
}

/// `usage --by hour|day`: a row per tenant and bucket.
async fn usage_series(c: &Client, q: &[String], json: bool) -> Result<i32> {
    let r: UsageSeries = c.get(&format!("/v1/usage/series?{}", q.join("&"))).await?;
    if json {
        output::json(&r)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = r
        .points
        .iter()
        .map(|p| {
            vec![
                output::time(p.start),
                p.tenant.clone(),
                format!("{:.4}", p.totals.vcpu_hours),
                format!("{:.4}", p.totals.memory_gib_hours),
                format!("{:.4}", p.totals.storage_gib_hours),
                format!("{:.4}", p.totals.cpu_used_hours),
                format!("${:.4}", p.totals.cost_usd),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!("no usage metered in that window");
        return Ok(0);
    }
    output::table(
        &[
            "FROM",
            "TENANT",
            "VCPU-H",
            "GIB-H",
            "STORAGE GIB-H",
            "CPU USED-H",
            "COST",
        ],
        &rows,
    );
    Ok(0)
}
