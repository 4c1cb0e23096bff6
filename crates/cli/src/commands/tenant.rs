//! `tenant create|update|ls|key` and `usage`.

use anyhow::Result;
use dwell_control::metering::Report;

use crate::cli::{AuditArgs, TenantArgs, TenantCommand, UsageArgs};
use crate::client::{enc, Client};
use crate::output;

fn body(a: &TenantArgs) -> serde_json::Value {
    let defaults = a.defaults.to_args();
    serde_json::json!({
        "default_policies": (!defaults.is_empty()).then_some(defaults),
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
                eprintln!("created tenant {}; the line above is its API key, shown once (use it as DWELL_API_KEY)", a.name);
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
        TenantCommand::Key { name } => {
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

pub async fn usage(c: &Client, a: UsageArgs) -> Result<i32> {
    let mut q = Vec::new();
    if let Some(t) = &a.tenant {
        q.push(format!("tenant={}", enc(t)));
    }
    if let Some(s) = &a.since {
        q.push(format!("since={}", enc(s)));
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
    let entries: Vec<dwell_store::AuditEntry> = c.get(&format!("/v1/audit{q}")).await?;
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
