//! `create`, `ls`, `inspect`, `stats`, `start`/`stop`/`pause`/`resume`, `rm`.

use anyhow::Result;
use dwell_contract::sandbox::{
    Change, Drift, DurationArg, NetworkMode, PolicyArgs, Precedence, SandboxSpec, SizeArg,
    UpdateBody,
};
use dwell_contract::{CreateRequest, Mode, Sandbox, State};

use super::key_values;

use crate::cli::{
    CreateArgs, KeepaliveArgs, LsArgs, NameJson, Names, PolicyFlags, RmArgs, UpdateArgs,
};
use crate::client::{enc, Client};
use crate::output;

pub async fn create(c: &Client, a: CreateArgs) -> Result<i32> {
    // A registry image not stored yet is pulled first, with a progress bar
    // (the daemon would pull it anyway, without one).
    if !dwell_storage::is_builtin(&a.image) && a.from.is_none() {
        super::image::pull(c, &a.image, true, !a.json).await?;
    }
    let req = CreateRequest {
        name: a.name,
        image: Some(a.image),
        mode: Some(if a.ephemeral {
            Mode::Ephemeral
        } else {
            Mode::Persistent
        }),
        vcpus: a.cpus,
        memory: a.memory.map(SizeArg::Text),
        pids: a.pids,
        disk: a.disk.map(SizeArg::Text),
        env: key_values(&a.env, "env")?,
        labels: key_values(&a.labels, "label")?,
        // Unset without --net: the daemon's default (loopback only), or
        // the network a warm copy's saved memory has.
        network: a.net.then_some(NetworkMode::Nat),
        runtime: a.isolation.clone(),
        policies: Some(policy_args(&a.policies)).filter(|p| !p.is_empty()),
        secret_env: secret_vars(&a.secret_env)?,
        from: a.from.clone(),
        allow_raw_sockets: a.allow_raw_sockets.then_some(true),
        allow_core_dumps: a.allow_core_dumps.then_some(true),
        allow_out: a.allow_out.as_deref().map(non_empty),
        deny_out: a.deny_out.as_deref().map(non_empty),
        networks: a.networks.clone(),
        volumes: a
            .volumes
            .iter()
            .map(|v| volume_mount(v))
            .collect::<Result<_>>()?,
        service: super::service::args(&a.service, &a.command)?,
        node_selector: key_values(&a.node_selector, "node-selector")?,
        backup_every: a.backup_every.clone().map(DurationArg::Text),
    };
    if a.count == 0 {
        anyhow::bail!("--count 0 creates nothing; give 1 or more");
    }
    if a.count > 1 {
        let base = req.name.clone().ok_or_else(|| {
            anyhow::anyhow!("--count needs --name: the sandboxes are named NAME-1 ... NAME-N")
        })?;
        let mut made = Vec::new();
        for i in 1..=a.count {
            let mut r = req.clone();
            r.name = Some(format!("{base}-{i}"));
            match c.post::<Sandbox>("/v1/sandboxes", &r).await {
                Ok(sb) => {
                    if !a.json {
                        println!("{}", sb.name);
                    }
                    made.push(sb);
                }
                Err(e) => {
                    if a.json {
                        output::json(&made)?;
                    }
                    return Err(e.context(format!(
                        "created {} of {} sandboxes",
                        made.len(),
                        a.count
                    )));
                }
            }
        }
        if a.json {
            output::json(&made)?;
        }
        return Ok(0);
    }
    let sb: Sandbox = c.post("/v1/sandboxes", &req).await?;
    if a.json {
        output::json(&sb)?;
    } else {
        println!("{}", sb.name);
        eprintln!(
            "created {} ({}, {}), id {}",
            sb.name,
            sb.mode.as_str(),
            sb.state.as_str(),
            sb.id
        );
    }
    Ok(0)
}

pub async fn ls(c: &Client, a: LsArgs) -> Result<i32> {
    let path = match &a.state {
        Some(s) => format!("/v1/sandboxes?state={}", enc(s)),
        None => "/v1/sandboxes".into(),
    };
    let list: Vec<Sandbox> = c.get(&path).await?;
    if a.json {
        output::json(&list)?;
    } else if a.quiet {
        for s in &list {
            println!("{}", s.id);
        }
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.id.clone(),
                    match (&s.archive, s.saved_state_bytes) {
                        // The archive's stored size is what it occupies now.
                        (Some(a), _) => format!("archived ({})", output::size(a.stored_bytes)),
                        (None, Some(b)) => format!("{} ({})", s.state.as_str(), output::size(b)),
                        (None, None) => s.state.as_str().into(),
                    },
                    s.mode.as_str().into(),
                    s.image.clone(),
                    format!("{}", s.spec.vcpus),
                    output::size(s.spec.memory_bytes),
                    output::size(s.spec.disk_bytes),
                    output::ago(s.created_at),
                ]
            })
            .collect();
        output::table(
            &[
                "NAME", "ID", "STATE", "MODE", "IMAGE", "CPUS", "MEMORY", "DISK", "CREATED",
            ],
            &rows,
        );
    }
    Ok(0)
}

pub async fn inspect(c: &Client, a: NameJson) -> Result<i32> {
    let sb: Sandbox = c.get(&format!("/v1/sandboxes/{}", enc(&a.sandbox))).await?;
    if a.json {
        output::json(&sb)?;
        return Ok(0);
    }
    println!("name:        {}", sb.name);
    println!("id:          {}", sb.id);
    println!(
        "state:       {} (since {}; {})",
        sb.state.as_str(),
        output::time(sb.state_changed_at),
        sb.reason
    );
    if sb.desired_state != sb.state {
        println!("desired:     {}", sb.desired_state.as_str());
    }
    println!("mode:        {}", sb.mode.as_str());
    println!("image:       {}", sb.image);
    println!("runtime:     {}", sb.runtime);
    if let Some(b) = sb.saved_state_bytes {
        println!(
            "saved state: {} of memory and processes on disk",
            output::size(b)
        );
    }
    println!(
        "resources:   {} vCPU, {} memory, {} pids, {} disk",
        sb.spec.vcpus,
        output::size(sb.spec.memory_bytes),
        sb.spec.pids,
        output::size(sb.spec.disk_bytes)
    );
    println!(
        "network:     {}",
        match sb.spec.network {
            NetworkMode::None => "none (loopback only)",
            NetworkMode::Nat => "nat (outbound)",
        }
    );
    for n in &sb.networks {
        println!(
            "private net: {} {} ({} inside, subnet {}); peers reach it as {} and {}.{}",
            n.network, n.address, n.interface, n.subnet, sb.name, sb.name, n.network
        );
    }
    for v in &sb.spec.volumes {
        println!(
            "volume:      {} at {}{}",
            v.name,
            v.path,
            if v.read_only { " (read-only)" } else { "" }
        );
    }
    println!("privileges:  {}", privileges(&sb.spec));
    for e in &sb.ports {
        let what = if e.port == 0 {
            "every port".to_string()
        } else {
            format!("port {}", e.port)
        };
        println!(
            "exposed:     {what} ({}){}",
            if e.public { "public" } else { "private" },
            e.url
                .as_deref()
                .map(|u| format!(" {u}"))
                .unwrap_or_default()
        );
    }
    if let Some(v) = &sb.volume {
        println!(
            "volume:      {} ({}), {} used of {}{}",
            v.kind,
            if v.limit_enforced {
                "hard limit"
            } else {
                "limit NOT enforced: usage accounting only"
            },
            output::size(v.used_bytes),
            output::size(v.size_bytes),
            if v.mounted { "" } else { ", not mounted" }
        );
    }
    if let Some(a) = &sb.archive {
        println!(
            "archive:     snapshot {} of {} ({} of data, {} stored{}), taken {}; `dwell start {}` restores it{}",
            a.snapshot,
            output::size(a.volume_size),
            output::size(a.data_bytes),
            output::size(a.stored_bytes),
            if a.hibernated { ", with saved memory" } else { "" },
            a.archived_at,
            sb.name,
            if a.hibernated { " and resumes its processes" } else { "" }
        );
    }
    if let Some(every) = sb.spec.backup_every_ms {
        println!(
            "backups:     every {}, the newest 2 kept; {}",
            humantime::format_duration(std::time::Duration::from_millis(every / 1000 * 1000)),
            match sb.last_backup_at {
                Some(t) => format!("last {} ({})", output::time(t), output::ago(t)),
                None => "none yet".to_string(),
            }
        );
    }
    if let Some(s) = &sb.stats {
        println!(
            "usage:       {} memory, {:.1}s CPU, {} pids, {} OOM kills",
            output::size(s.memory_bytes),
            s.cpu_usage_ns as f64 / 1e9,
            s.pids,
            s.oom_kills
        );
    }
    for (k, v) in &sb.spec.labels {
        println!("label:       {k}={v}");
    }
    if let Some(ic) = &sb.image_config {
        for (k, v) in &ic.labels {
            println!("image label: {k}={v}");
        }
        if let Some(w) = &ic.workdir {
            println!("workdir:     {w} (the image's; default of commands)");
        }
        if let Some(u) = &ic.user {
            println!("user:        {u} (the image's; default of commands)");
        }
        if !ic.exposed_ports.is_empty() {
            println!(
                "image ports: {} (declared by the image; `dwell port {} PORT` exposes one)",
                ic.exposed_ports.join(", "),
                sb.name
            );
        }
    }
    if let Some(svc) = &sb.spec.service {
        println!(
            "command:     {} (restart {}{})",
            svc.command.join(" "),
            match svc.restart {
                dwell_contract::service::RestartPolicy::No => "no",
                dwell_contract::service::RestartPolicy::OnFailure => "on-failure",
                dwell_contract::service::RestartPolicy::Always => "always",
            },
            svc.max_retries
                .map(|n| format!(", at most {n} times"))
                .unwrap_or_default()
        );
        match &sb.service {
            Some(st) => println!("service:     {}", super::service::summary(st)),
            None => println!(
                "service:     not running (the sandbox is {})",
                sb.state.as_str()
            ),
        }
    }
    let p = &sb.spec.policies;
    let human = |ms: Option<u64>| ms.map(dwell_control::policy::human);
    let set: Vec<String> = [
        ("ttl", human(p.ttl_ms)),
        ("idle-timeout", human(p.idle_timeout_ms)),
        ("pause-after", human(p.pause_after_ms)),
        ("archive-after", human(p.archive_after_ms)),
        ("delete-after", human(p.delete_after_ms)),
        ("max-lifetime", human(p.max_lifetime_ms)),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
    .collect();
    println!(
        "policies:    {}",
        if set.is_empty() {
            "none".to_string()
        } else {
            set.join(", ")
        }
    );
    println!(
        "auto-resume: {}",
        match (p.auto_resume, sb.wakes_on_use) {
            (_, Some(true)) => "on: an exec, file operation or connection wakes it",
            (_, Some(false)) => "off: it stays asleep until resumed",
            (Some(true), None) => "on (wakes on use when paused or hibernated)",
            (Some(false), None) => "off (stays asleep until resumed)",
            (None, None) => "default (wakes on use after a policy paused it, not after a user did)",
        }
    );
    print_egress(&sb);
    for s in &sb.schedule {
        let when = s.at - dwell_store::now_ms();
        let rel = if when <= 0 {
            "due now".to_string()
        } else {
            format!("in {}", dwell_control::policy::human(when as u64))
        };
        println!(
            "next:        {} -> {:?} at {} ({rel})",
            s.policy,
            s.action,
            output::time(s.at)
        );
    }
    if let Some(at) = sb.last_activity_at {
        println!("activity:    {} ({})", output::time(at), output::ago(at));
    }
    if let Some(h) = sb.hold_until.filter(|h| *h > dwell_store::now_ms()) {
        println!("keepalive:   until {}", output::time(h));
    }
    for k in sb.spec.env.keys() {
        println!("env:         {k}=…");
    }
    for k in &sb.spec.secret_env_names {
        println!("secret env:  {k} (sealed; value never shown)");
    }
    println!(
        "created:     {} ({})",
        output::time(sb.created_at),
        output::ago(sb.created_at)
    );
    Ok(0)
}

pub async fn stats(c: &Client, a: NameJson) -> Result<i32> {
    let s: dwell_runtime::Stats = c
        .get(&format!("/v1/sandboxes/{}/stats", enc(&a.sandbox)))
        .await?;
    if a.json {
        output::json(&s)?;
    } else {
        output::table(
            &["MEMORY", "LIMIT", "CPU", "PIDS", "OOM KILLS"],
            &[vec![
                output::size(s.memory_bytes),
                output::size(s.memory_limit_bytes),
                format!("{:.2}s", s.cpu_usage_ns as f64 / 1e9),
                s.pids.to_string(),
                s.oom_kills.to_string(),
            ]],
        );
    }
    Ok(0)
}

pub async fn lifecycle(c: &Client, a: Names, op: &str) -> Result<i32> {
    let mut failed = 0;
    for name in &a.sandboxes {
        let (path, body) = (
            format!("/v1/sandboxes/{}/{op}", enc(name)),
            serde_json::json!({}),
        );
        let req = c.post::<Sandbox>(&path, &body);
        // Archiving, and starting an archived sandbox, move whole volumes.
        let res = if matches!(op, "archive" | "start") {
            crate::progress::track(c, name, req).await
        } else {
            req.await
        };
        match res {
            Ok(sb) if a.json => output::json(&sb)?,
            Ok(sb) => {
                if sb.state == State::Deleted {
                    println!("{}: deleted (ephemeral)", sb.name);
                } else {
                    println!("{}: {}", sb.name, sb.state.as_str());
                }
            }
            Err(e) => {
                eprintln!("dwell: {name}: {e:#}");
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

pub async fn rm(c: &Client, a: RmArgs) -> Result<i32> {
    let mut failed = 0;
    for name in &a.sandboxes {
        let path = format!(
            "/v1/sandboxes/{}{}",
            enc(name),
            if a.force { "?force=true" } else { "" }
        );
        match c
            .json::<serde_json::Value>(hyper::Method::DELETE, &path, None::<&()>)
            .await
        {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("dwell: {name}: {e:#}");
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Policy flags as the API's policy arguments.
pub fn policy_args(f: &PolicyFlags) -> PolicyArgs {
    let d = |v: &Option<String>| v.clone().map(DurationArg::Text);
    PolicyArgs {
        ttl: d(&f.ttl),
        idle_timeout: d(&f.idle_timeout),
        pause_after: d(&f.pause_after),
        archive_after: d(&f.archive_after),
        delete_after: d(&f.delete_after),
        max_lifetime: d(&f.max_lifetime),
        ttl_action: None,
        auto_resume: f.auto_resume,
    }
}

pub async fn keepalive(c: &Client, a: KeepaliveArgs) -> Result<i32> {
    let sb: Sandbox = c
        .post(
            &format!("/v1/sandboxes/{}/keepalive", enc(&a.sandbox)),
            &serde_json::json!({ "duration": a.duration }),
        )
        .await?;
    if a.json {
        output::json(&sb)?;
    } else if let Some(h) = sb.hold_until {
        println!(
            "{}: idle and TTL policies held until {}",
            sb.name,
            output::time(h)
        );
    }
    Ok(0)
}

/// The entries of a list flag, without empty ones (`--allow-out ''` is an
/// empty list).
fn non_empty(v: &[String]) -> Vec<String> {
    v.iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

pub async fn update(c: &Client, a: UpdateArgs) -> Result<i32> {
    let args = policy_args(&a.policies);
    let egress = a.allow_out.is_some() || a.deny_out.is_some();
    let networks = !a.network_add.is_empty() || !a.network_rm.is_empty();
    if args.is_empty() && !egress && !networks {
        anyhow::bail!("nothing to change; give a policy flag like --idle-timeout 10m, egress rules like --allow-out pypi.org or --network-add NETWORK (see `dwell update --help`)");
    }
    let mut last: Option<Sandbox> = None;
    for (n, method) in a
        .network_add
        .iter()
        .map(|n| (n, hyper::Method::POST))
        .chain(a.network_rm.iter().map(|n| (n, hyper::Method::DELETE)))
    {
        let path = format!("/v1/sandboxes/{}/networks/{}", enc(&a.sandbox), enc(n));
        let sb: Sandbox = c.json(method.clone(), &path, None::<&()>).await?;
        if !a.json {
            let verb = if method == hyper::Method::POST {
                "joined"
            } else {
                "left"
            };
            println!("{}: {verb} network {n}", sb.name);
        }
        last = Some(sb);
    }
    if !args.is_empty() || egress {
        let body = UpdateBody {
            policies: (!args.is_empty()).then_some(args),
            allow_out: a.allow_out.as_deref().map(non_empty),
            deny_out: a.deny_out.as_deref().map(non_empty),
        };
        let sb: Sandbox = c
            .json(
                hyper::Method::PATCH,
                &format!("/v1/sandboxes/{}", enc(&a.sandbox)),
                Some(&body),
            )
            .await?;
        if !a.json {
            if egress {
                println!("{}: egress rules updated", sb.name);
                print_egress(&sb);
            }
            if body.policies.is_some() {
                println!("{}: policies updated", sb.name);
            }
            for s in &sb.schedule {
                println!("  {} -> {:?} at {}", s.policy, s.action, output::time(s.at));
            }
        }
        last = Some(sb);
    }
    if let (true, Some(sb)) = (a.json, &last) {
        output::json(sb)?;
    }
    Ok(0)
}

/// `KEY=VALUE`, or `KEY` with the value from this process's environment.
fn secret_vars(items: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            None if !item.is_empty() => std::env::var(item)
                .map(|v| (item.clone(), v))
                .map_err(|_| anyhow::anyhow!("--secret-env {item}: {item} is not set in this environment; export it or write {item}=VALUE")),
            _ => anyhow::bail!("--secret-env {item:?} is not KEY=VALUE or KEY"),
        })
        .collect()
}

pub async fn diff(c: &Client, a: NameJson) -> Result<i32> {
    let d: Drift = c
        .get(&format!("/v1/sandboxes/{}/diff", enc(&a.sandbox)))
        .await?;
    if a.json {
        output::json(&d)?;
        return Ok(0);
    }
    let p = &d.packages;
    for x in &p.installed {
        println!("+ package {} {}", x.name, x.version);
    }
    for x in &p.changed {
        println!(
            "~ package {} {} (was {})",
            x.name,
            x.version,
            x.was.as_deref().unwrap_or("?")
        );
    }
    for x in &p.removed {
        println!("- package {} {}", x.name, x.version);
    }
    for f in &d.files {
        let mark = match f.change {
            Change::Added => "A",
            Change::Changed => "C",
            Change::Deleted => "D",
        };
        if f.dir {
            println!("{mark} {}/", f.path);
        } else if f.change == Change::Deleted {
            println!("{mark} {}", f.path);
        } else {
            println!("{mark} {} ({})", f.path, output::size(f.size));
        }
    }
    eprintln!(
        "{} packages installed, {} changed, {} removed; {} paths changed, {} written",
        p.installed.len(),
        p.changed.len(),
        p.removed.len(),
        d.files.len(),
        output::size(d.bytes)
    );
    Ok(0)
}

/// The opt-in privileges of a sandbox, for `inspect`.
fn privileges(spec: &SandboxSpec) -> String {
    let granted: Vec<&str> = [
        (spec.allow_raw_sockets, "raw sockets (CAP_NET_RAW)"),
        (spec.allow_core_dumps, "core dumps"),
    ]
    .into_iter()
    .filter_map(|(on, what)| on.then_some(what))
    .collect();
    if granted.is_empty() {
        "default (no raw sockets, no core dumps)".into()
    } else {
        granted.join(", ")
    }
}

/// The egress lines of `inspect` (NAT sandboxes only).
fn print_egress(sb: &Sandbox) {
    if sb.spec.network != NetworkMode::Nat {
        return;
    }
    match &sb.spec.egress {
        None => println!("egress:      open (all but the host, metadata and link-local)"),
        Some(e) => {
            let list = |l: &[String]| {
                if l.is_empty() {
                    "-".to_string()
                } else {
                    l.join(", ")
                }
            };
            let wins = match e.precedence {
                Precedence::DenyWins => "deny wins",
                Precedence::AllowWins => "allow wins",
            };
            println!("allow-out:   {}", list(&e.allow));
            println!("deny-out:    {} ({wins})", list(&e.deny));
        }
    }
}

/// `NAME:/path[:ro]` of `--volume`, checked as the daemon checks it.
fn volume_mount(s: &str) -> Result<dwell_contract::VolumeMount> {
    let m = dwell_control::volumes::parse_mount(s).map_err(|e| anyhow::anyhow!("--volume {e}"))?;
    Ok(dwell_contract::VolumeMount {
        name: m.name,
        path: m.path,
        read_only: m.read_only,
    })
}
