//! The cluster case: two nodes of one cluster on this machine (started by
//! `scripts/bench.sh` on a private PostgreSQL and a moto S3 server).
//!
//! - Forwarded exec: one sandbox owned by the "direct" node; `exec true` over
//!   a kept-alive API connection to that node's socket (direct) and to the
//!   other node's socket (which forwards it over the node channel), one of
//!   each in turn so that both see the same machine load.
//! - Cold move: a sandbox with N MiB of fresh random data written moves to
//!   the other node (`POST /v1/sandboxes/{id}/move`), timed from the request
//!   until it runs on the target, next to a raw upload and download of as
//!   many random bytes to the same S3 endpoint (boto3's `upload_file` /
//!   `download_file`, what `aws s3 cp` does: 8 MiB parts, 10 at a time).
//!   Each round is a new sandbox with new data (chunks already in the store
//!   need no upload; a file rewritten in place leaves old blocks in the
//!   volume image, which a move carries too). Skipped, with the reason
//!   printed, when the daemon has no move route.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};

use crate::api::Api;
use crate::error::{Error, Result};
use crate::stats::Samples;

/// The bar of issue 17: a forwarded exec's p50 at most this much above a direct one's.
pub const FORWARD_TARGET_MS: f64 = 2.0;

/// Where the two nodes and their object store are.
pub struct ClusterTarget {
    /// The socket of the node that owns the sandboxes (placement puts them there).
    pub direct: PathBuf,
    /// The socket of the other node (forwards to the owner).
    pub forwarded: PathBuf,
    /// The nodes' `--s3-endpoint` (the raw transfers go there too).
    pub s3: Option<String>,
    /// The bucket of the nodes' `--object-store`.
    pub bucket: String,
    /// Where the raw transfers' file of random bytes is made.
    pub scratch: PathBuf,
}

/// How much to measure.
pub struct ClusterOpts {
    pub warmup: usize,
    /// Execs each way.
    pub iterations: usize,
    /// MiB written before each move (0 skips the moves).
    pub move_mib: usize,
    /// Moves (a new sandbox each) and raw transfers, alternating.
    pub move_rounds: usize,
}

/// One move and the raw transfers next to it.
pub struct MoveRound {
    pub from: String,
    pub to: String,
    /// The move's HTTP status (200: answered once running; 202: polled).
    pub status: u16,
    pub moved: Duration,
    pub raw_put: Duration,
    pub raw_get: Duration,
}

pub enum Moves {
    Measured {
        mib: usize,
        rounds: Vec<MoveRound>,
    },
    /// A move failed (or lost data): the rounds before it, and why. The
    /// report says so rather than losing the rest of a full run.
    Failed {
        mib: usize,
        rounds: Vec<MoveRound>,
        error: String,
    },
    Skipped(String),
}

pub struct ClusterResults {
    /// The owner's node name and the forwarding node's.
    pub owner: String,
    pub via: String,
    pub direct: Samples,
    pub forwarded: Samples,
    pub moves: Moves,
}

impl ClusterResults {
    /// Why a move failed, if one did.
    pub fn failure(&self) -> Option<&str> {
        match &self.moves {
            Moves::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
}

fn other(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("cluster case: {what}: {e}"))
}

/// A unique sandbox name for this run.
fn name(kind: &str) -> String {
    format!("bench-{}-{kind}", std::process::id())
}

/// The name of the node serving `api` (its `this_node` in `GET /v1/nodes`).
async fn node_name(api: &mut Api, socket: &Path) -> Result<String> {
    let nodes = api.call(Method::GET, "/v1/nodes", None).await?;
    nodes
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["this_node"] == true)
        .and_then(|n| n["name"].as_str())
        .map(String::from)
        .ok_or_else(|| {
            other(
                &format!("the daemon at {}", socket.display()),
                format!(
                    "it is not a cluster node (GET /v1/nodes answered {nodes}); start it with \
                     `dwell serve --cluster ...` (scripts/bench.sh does when `serve` has --cluster)"
                ),
            )
        })
}

/// Run the case on fresh connections to both nodes; every sandbox it made
/// is deleted again, also when a step fails.
pub async fn run(t: &ClusterTarget, o: &ClusterOpts) -> Result<ClusterResults> {
    let mut direct = Api::new(&t.direct);
    let mut forwarded = Api::new(&t.forwarded);
    let r = measure(&mut direct, &mut forwarded, t, o).await;
    let mut leftovers = forwarded.delete_all().await;
    leftovers.extend(direct.delete_all().await);
    match (r, leftovers.into_iter().next()) {
        (Err(e), _) => Err(e),
        (Ok(_), Some(e)) => Err(other("removing its sandboxes", e)),
        (Ok(r), None) => Ok(r),
    }
}

async fn measure(
    direct: &mut Api,
    forwarded: &mut Api,
    t: &ClusterTarget,
    o: &ClusterOpts,
) -> Result<ClusterResults> {
    let owner = node_name(direct, &t.direct).await?;
    let via = node_name(forwarded, &t.forwarded).await?;
    if owner == via {
        return Err(other(
            "the two sockets",
            format!("both are node {owner}; give the sockets of two different nodes"),
        ));
    }

    // Created through the forwarding node: placement must put it on the owner.
    let id = forwarded.create_with(json!({ "name": name("fx") })).await?;
    let placed = sandbox(forwarded, &id).await?;
    if placed["node"].as_str() != Some(owner.as_str()) {
        return Err(other(
            "placement",
            format!(
                "the sandbox went to node {} instead of {owner}; give {owner} the most \
                 memory in --node-capacity (scripts/bench.sh does)",
                placed["node"]
            ),
        ));
    }
    let (mut d, mut f) = (Samples::default(), Samples::default());
    for i in 0..o.warmup + o.iterations {
        let t0 = Instant::now();
        direct.exec(&id, &["true"]).await?;
        let t1 = Instant::now();
        forwarded.exec(&id, &["true"]).await?;
        let t2 = Instant::now();
        if i >= o.warmup {
            d.push(t1 - t0);
            f.push(t2 - t1);
        }
    }
    forwarded.delete(&id).await?;

    let moves = if o.move_mib == 0 {
        Moves::Skipped("--cluster-move-mib 0".into())
    } else {
        moves(direct, forwarded, [&owner, &via], t, o).await?
    };
    Ok(ClusterResults {
        owner,
        via,
        direct: d,
        forwarded: f,
        moves,
    })
}

/// `GET /v1/sandboxes/{id}`.
async fn sandbox(api: &mut Api, id: &str) -> Result<Value> {
    api.call(Method::GET, &format!("/v1/sandboxes/{id}"), None)
        .await
}

/// Why a 404 answer means the daemon has no such route (not an unknown
/// sandbox or node): the API's fallback says "no route".
fn no_route(status: u16, body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    (status == 404 && text.contains("no route")).then(|| {
        format!(
            "this dwell has no move route (POST /v1/sandboxes/{{id}}/move answered 404: {}); \
             moves are not merged yet",
            text.trim()
        )
    })
}

async fn moves(
    direct: &mut Api,
    forwarded: &mut Api,
    names: [&String; 2],
    t: &ClusterTarget,
    o: &ClusterOpts,
) -> Result<Moves> {
    let mib = o.move_mib;
    // Ask the route first with a node that does not exist, so that a daemon
    // without moves costs no gigabyte written.
    let id = direct.create_with(json!({ "name": name("mv0") })).await?;
    let path = format!("/v1/sandboxes/{id}/move");
    let (status, body) = direct
        .request(
            Method::POST,
            &path,
            Some(&json!({ "to": "dwell-bench-no-such-node" })),
        )
        .await?;
    direct.delete(&id).await?;
    if let Some(why) = no_route(status, &body) {
        return Ok(Moves::Skipped(why));
    }
    if (200..300).contains(&status) {
        return Err(other(
            &format!("POST {path} to a node that does not exist"),
            format!(
                "it answered {status} ({}) instead of refusing",
                String::from_utf8_lossy(&body)
            ),
        ));
    }

    let mut rounds = Vec::new();
    for round in 0..o.move_rounds.max(1) {
        match move_round(direct, forwarded, names, t, mib, round).await {
            Ok(Ok(r)) => rounds.push(r),
            Ok(Err(why)) => return Ok(Moves::Skipped(why)),
            Err(e) => {
                return Ok(Moves::Failed {
                    mib,
                    rounds,
                    error: e.to_string(),
                })
            }
        }
    }
    Ok(Moves::Measured { mib, rounds })
}

/// One round: a new sandbox on the owner (`direct`) with `mib` MiB written
/// moves to the other node; the raw transfers run just before. A new
/// sandbox each time, so that every move carries the data written and no
/// more (a file rewritten in place leaves its old blocks in the volume
/// image, which an archive carries too). `Err(why)` inside: no move route.
async fn move_round(
    direct: &mut Api,
    forwarded: &mut Api,
    names: [&String; 2],
    t: &ClusterTarget,
    mib: usize,
    round: usize,
) -> Result<std::result::Result<MoveRound, String>> {
    let [from, to] = names;
    let id = direct
        .create_with(json!({ "name": name(&format!("mv{}", round + 1)) }))
        .await?;
    let path = format!("/v1/sandboxes/{id}/move");
    let written = write_random(direct, &id, mib).await?;
    let (raw_put, raw_get) = raw_transfer(t, mib, round)?;

    let t0 = Instant::now();
    let (status, body) = direct
        .request(Method::POST, &path, Some(&json!({ "to": to })))
        .await?;
    if let Some(why) = no_route(status, &body) {
        return Ok(Err(why));
    }
    if !(200..300).contains(&status) {
        return Err(Error::Api {
            what: format!("POST {path} {{\"to\": {to:?}}}"),
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !runs_on(&answer, to) {
        wait_running(forwarded, &id, to, mib).await?;
    }
    let moved = t0.elapsed();

    let now = checksum(forwarded, &id).await?;
    if now != written {
        return Err(other(
            &format!("the move of {id} from {from} to {to}"),
            format!(
                "/root/big changed: sha256 {written} before, {now} after; the daemons' logs say why"
            ),
        ));
    }
    eprintln!(
        "dwell-bench: cluster: moved {mib} MiB {from} -> {to} in {:.1} s (raw PUT {:.1} s, GET {:.1} s)",
        moved.as_secs_f64(),
        raw_put.as_secs_f64(),
        raw_get.as_secs_f64()
    );
    // Through the node it runs on now (the direct client would forward).
    forwarded.track(id.clone());
    forwarded.delete(&id).await?;
    direct.untrack(&id);
    Ok(Ok(MoveRound {
        from: from.clone(),
        to: to.clone(),
        status,
        moved,
        raw_put,
        raw_get,
    }))
}

/// Whether sandbox view `v` runs on `node`.
fn runs_on(v: &Value, node: &str) -> bool {
    v["node"].as_str() == Some(node) && v["state"] == "running"
}

/// Poll (through `api`, the target) until the sandbox runs on `node`.
async fn wait_running(api: &mut Api, id: &str, node: &str, mib: usize) -> Result<()> {
    let limit = Duration::from_secs(120 + mib as u64);
    let t0 = Instant::now();
    loop {
        let v = sandbox(api, id).await?;
        if runs_on(&v, node) {
            return Ok(());
        }
        if v["state"] == "error" || t0.elapsed() > limit {
            let events = api
                .call(Method::GET, &format!("/v1/sandboxes/{id}/events"), None)
                .await
                .ok()
                .and_then(|e| e.as_array().and_then(|a| a.last().cloned()))
                .unwrap_or(Value::Null);
            return Err(other(
                &format!("the move of {id} to {node}"),
                format!(
                    "after {:.0} s it is {} on node {} (last event: {events}); the daemons' \
                     logs say why",
                    t0.elapsed().as_secs_f64(),
                    v["state"],
                    v["node"]
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Write `mib` MiB of fresh random data to /root/big in the sandbox (on its
/// volume, flushed); returns its sha256.
async fn write_random(api: &mut Api, id: &str, mib: usize) -> Result<String> {
    api.exec(
        id,
        &[
            "sh",
            "-c",
            &format!("dd if=/dev/urandom of=/root/big bs=1M count={mib} conv=fsync 2>/dev/null"),
        ],
    )
    .await?;
    checksum(api, id).await
}

/// The sha256 of /root/big in the sandbox, or `missing`.
async fn checksum(api: &mut Api, id: &str) -> Result<String> {
    let v = api
        .exec(
            id,
            &[
                "sh",
                "-c",
                "sha256sum /root/big 2>/dev/null || echo missing",
            ],
        )
        .await?;
    let out = v["stdout"].as_str().unwrap_or_default();
    out.split_whitespace()
        .next()
        .map(String::from)
        .ok_or_else(|| {
            other(
                "sha256sum /root/big in the sandbox",
                format!("no sum in {v}"),
            )
        })
}

/// Upload, then download, `mib` MiB of random bytes with boto3 the way
/// `aws s3 cp` does; deletes the object and the file again.
const RAW: &str = r#"
import os, sys, tempfile, time
import boto3
from boto3.s3.transfer import TransferConfig
endpoint, bucket, key, mib, scratch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
s3 = boto3.client("s3", endpoint_url=endpoint or None,
                  region_name=os.environ.get("AWS_REGION", "us-east-1"))
cfg = TransferConfig()  # aws s3 cp's defaults: 8 MiB parts, 10 at a time
fd, path = tempfile.mkstemp(dir=scratch, prefix="dwell-bench-raw-")
try:
    with os.fdopen(fd, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    t = time.monotonic()
    s3.upload_file(path, bucket, key, Config=cfg)
    put = time.monotonic() - t
    t = time.monotonic()
    s3.download_file(bucket, key, path, Config=cfg)
    get = time.monotonic() - t
    if os.path.getsize(path) != mib << 20:
        sys.exit("the downloaded object has %d bytes, not %d" % (os.path.getsize(path), mib << 20))
    print(put, get)
except Exception as e:  # one line for the bench's error, not a traceback
    sys.exit("%s: %s" % (type(e).__name__, e))
finally:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    try:
        s3.delete_object(Bucket=bucket, Key=key)
    except Exception:
        pass
"#;

/// The raw upload and download times of round `round`.
fn raw_transfer(t: &ClusterTarget, mib: usize, round: usize) -> Result<(Duration, Duration)> {
    let key = format!("dwell-bench-raw/{}-{round}", std::process::id());
    let out = Command::new("python3")
        .arg("-c")
        .arg(RAW)
        .arg(t.s3.as_deref().unwrap_or(""))
        .arg(&t.bucket)
        .arg(&key)
        .arg(mib.to_string())
        .arg(&t.scratch)
        .output()
        .map_err(|source| Error::Spawn {
            cmd: "python3".into(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let secs: Vec<f64> = stdout
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    match (out.status.success(), secs.as_slice()) {
        (true, [put, get]) => Ok((Duration::from_secs_f64(*put), Duration::from_secs_f64(*get))),
        _ => Err(other(
            &format!(
                "the raw upload of {mib} MiB to s3://{}/{key}{}",
                t.bucket,
                t.s3.as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            ),
            format!(
                "python3 with boto3 failed ({}): {}{}; boto3 must be installed (pip install \
                 boto3) and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY set (scripts/bench.sh \
                 sets moto's)",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )),
    }
}

fn mib_s(mib: usize, d: Duration) -> f64 {
    mib as f64 / d.as_secs_f64()
}

/// The median of `v` (the lower middle of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(f64::NAN)
}

/// The report's section.
pub fn render(r: &ClusterResults) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "### 12. Cluster: forwarded exec and cold moves\n");
    let _ = writeln!(
        o,
        "Two nodes of one cluster on this machine, `{}` and `{}`: daemons with their own data \
         dir and socket, sharing a private PostgreSQL server (Debian's, default settings, \
         loopback) and a `moto_server` S3 endpoint (in memory, loopback) as object store; the \
         node channel between them is mutual TLS over loopback.\n",
        r.via, r.owner
    );
    let gap = match (r.direct.summary(), r.forwarded.summary()) {
        (Some(d), Some(f)) => Some((f.p50 - d.p50, f.p99 - d.p99)),
        _ => None,
    };
    let _ = writeln!(
        o,
        "Forwarded exec: one namespace sandbox owned by `{owner}`; `exec true` over one \
         kept-alive API connection to `{owner}`'s socket (direct) and to `{via}`'s (which \
         forwards it to `{owner}` over the node channel), one of each in turn.\n",
        owner = r.owner,
        via = r.via
    );
    if let Some((p50, _)) = gap {
        let _ = writeln!(
            o,
            "Target: a forwarded exec within {FORWARD_TARGET_MS} ms p50 of a direct one: {} \
             (p50 {p50:+.2} ms).\n",
            if p50 <= FORWARD_TARGET_MS {
                "**met**"
            } else {
                "**missed**"
            }
        );
    }
    crate::report::header(&mut o);
    crate::report::row(
        &mut o,
        &format!("exec `true` on `{}`'s socket (direct)", r.owner),
        &r.direct,
    );
    crate::report::row(
        &mut o,
        &format!(
            "exec `true` on `{}`'s socket (forwarded to `{}`)",
            r.via, r.owner
        ),
        &r.forwarded,
    );
    if let Some((p50, p99)) = gap {
        let _ = writeln!(
            o,
            "\nOverhead of forwarding: p50 {p50:+.2} ms, p99 {p99:+.2} ms.\n"
        );
    } else {
        o.push('\n');
    }

    match &r.moves {
        Moves::Skipped(why) => {
            let _ = writeln!(o, "Cold move: not measured: {why}.\n");
        }
        Moves::Measured { mib, rounds } => render_moves(&mut o, *mib, rounds, None),
        Moves::Failed { mib, rounds, error } => render_moves(&mut o, *mib, rounds, Some(error)),
    }
    o
}

/// The cold move part: what was done, the rounds, and a failure if any.
fn render_moves(o: &mut String, mib: usize, rounds: &[MoveRound], error: Option<&String>) {
    let _ = writeln!(
        o,
        "Cold move: a running namespace sandbox with {mib} MiB of fresh random data written to \
         its volume (`dd if=/dev/urandom`, flushed; new data every round, so no chunk is in the \
         store already) moves to the other node with `POST /v1/sandboxes/{{id}}/move` (timed \
         from the request until it runs on the target; the data's sha256 is checked after), \
         next to a raw upload and download of {mib} MiB of random bytes to the same S3 endpoint \
         (boto3 `upload_file` / `download_file`, what `aws s3 cp` does: 8 MiB parts, 10 at a \
         time), alternating; each round a new sandbox moves from the node that owns it to \
         the other.\n"
    );
    if let Some(e) = error {
        let _ = writeln!(o, "**Failed** in round {}: {e}\n", rounds.len() + 1);
    }
    if rounds.is_empty() {
        return;
    }
    o.push_str(
        "| round | move | answer | dwell move s | MiB/s | raw PUT s | MiB/s | raw GET s | MiB/s |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, m) in rounds.iter().enumerate() {
        let _ = writeln!(
            o,
            "| {} | {} -> {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            i + 1,
            m.from,
            m.to,
            m.status,
            m.moved.as_secs_f64(),
            mib_s(mib, m.moved),
            m.raw_put.as_secs_f64(),
            mib_s(mib, m.raw_put),
            m.raw_get.as_secs_f64(),
            mib_s(mib, m.raw_get),
        );
    }
    let mv = median(rounds.iter().map(|m| mib_s(mib, m.moved)).collect());
    let put = median(rounds.iter().map(|m| mib_s(mib, m.raw_put)).collect());
    let both = median(
        rounds
            .iter()
            .map(|m| mib_s(mib, m.raw_put + m.raw_get))
            .collect(),
    );
    let _ = writeln!(
        o,
        "\nMedian over {} round(s): dwell move {mv:.1} MiB/s = {:.0}% of the raw upload's \
         {put:.1} MiB/s, {:.0}% of a raw upload then download ({both:.1} MiB/s).\n",
        rounds.len(),
        100.0 * mv / put,
        100.0 * mv / both
    );
    o.push_str(
        "What differs: a move stops the sandbox, archives its volume (1 MiB chunks of the volume \
         image that hold data, each hashed, zstd-compressed, encrypted and uploaded), hands it \
         over in PostgreSQL, and the target downloads and verifies every chunk, restores the \
         volume and starts the sandbox: an upload and a download plus the stop and start. A raw \
         PUT only uploads bytes from a file. Answer 200: the move answered once the sandbox ran \
         on the target; 202: the target took it over in its next pass and the bench polled.\n\n",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_route_is_told_from_a_refusal() {
        let fallback = br#"{"error":{"code":"not_found","message":"no route /v1/sandboxes/x/move; the routes are listed in /openapi.json"}}"#;
        assert!(no_route(404, fallback).unwrap().contains("not merged yet"));
        let refusal =
            br#"{"error":{"code":"not_found","message":"no node dwell-bench-no-such-node"}}"#;
        assert!(no_route(404, refusal).is_none());
        assert!(no_route(400, fallback).is_none());
    }

    #[test]
    fn renders_both_parts_and_the_verdict() {
        let mut direct = Samples::default();
        let mut forwarded = Samples::default();
        for ms in 1..=10 {
            direct.push(Duration::from_millis(ms));
            forwarded.push(Duration::from_millis(ms + 3));
        }
        let r = ClusterResults {
            owner: "n2".into(),
            via: "n1".into(),
            direct,
            forwarded,
            moves: Moves::Measured {
                mib: 1024,
                rounds: vec![MoveRound {
                    from: "n2".into(),
                    to: "n1".into(),
                    status: 202,
                    moved: Duration::from_secs(16),
                    raw_put: Duration::from_secs(8),
                    raw_get: Duration::from_secs(4),
                }],
            },
        };
        let s = render(&r);
        assert!(s.contains("### 12. Cluster"), "{s}");
        assert!(s.contains("**missed** (p50 +3.00 ms)"), "{s}");
        assert!(
            s.contains("| 1 | n2 -> n1 | 202 | 16.0 | 64.0 | 8.0 | 128.0 | 4.0 | 256.0 |"),
            "{s}"
        );
        assert!(
            s.contains("round(s): dwell move 64.0 MiB/s = 50% of the raw upload's 128.0 MiB/s"),
            "{s}"
        );
        let r = ClusterResults {
            moves: Moves::Skipped("no route".into()),
            ..r
        };
        assert!(render(&r).contains("Cold move: not measured: no route."));
        assert!(r.failure().is_none());
        let r = ClusterResults {
            moves: Moves::Failed {
                mib: 64,
                rounds: Vec::new(),
                error: "/root/big changed".into(),
            },
            ..r
        };
        let s = render(&r);
        assert!(
            s.contains("**Failed** in round 1: /root/big changed"),
            "{s}"
        );
        assert!(!s.contains("| round |"), "{s}");
        assert_eq!(r.failure(), Some("/root/big changed"));
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 1.0);
        assert!(median(vec![]).is_nan());
    }
}
