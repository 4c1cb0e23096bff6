//! Registry pulls: a ~100 MiB image (a busybox layer plus one of random,
//! incompressible bytes) pushed to a local `docker-registry`, pulled by the
//! daemon (`POST /v1/images/pull`: download, verify, extract) against
//! `skopeo copy` of the same image to a local directory (download and
//! verify), rounds alternating; the image is removed between dwell rounds
//! so each one downloads everything. Then create-to-first-exec from the
//! pulled image against the built-in `host` image, alternating too.
//!
//! Skipped (with the reason printed) when `docker-registry` or `skopeo` is
//! missing. The registry and every file it made are removed at the end.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use sha2::{Digest, Sha256};

use crate::api::Api;
use crate::error::{Error, Result};
use crate::report::{header, row};
use crate::stats::Samples;

const REGISTRY: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "/usr/bin/skopeo";

pub struct PullResults {
    pub mib: usize,
    pub dwell: Samples,
    pub skopeo: Samples,
    pub from_pulled: Samples,
    pub from_host: Samples,
}

/// Whether the tools are here (prints why not).
pub fn available() -> bool {
    for t in [REGISTRY, SKOPEO] {
        if !Path::new(t).exists() {
            eprintln!("dwell-bench: skipping registry pulls: {t} is not installed");
            return false;
        }
    }
    true
}

/// A registry on a free port with its storage under `dir`; killed on drop.
struct LocalRegistry {
    child: Child,
    port: u16,
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Result<LocalRegistry> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Other(format!("no free port: {e}")))?;
    let cfg = dir.join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: dwell-bench\n",
            dir.join("data").display()
        ),
    )
    .map_err(|e| Error::Other(format!("write {}: {e}", cfg.display())))?;
    let child = Command::new(REGISTRY)
        .arg("serve")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Other(format!("start {REGISTRY}: {e}")))?;
    let reg = LocalRegistry { child, port };
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(Error::Other(
                "docker-registry did not listen within 30 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(reg)
}

fn sha(b: &[u8]) -> String {
    let d = Sha256::digest(b);
    format!(
        "sha256:{}",
        d.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// A tar of `files` (path, bytes, mode) and symlinks (path, target).
fn tar_of(files: &[(&str, &[u8], u32)], links: &[(&str, &str)]) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| Error::Other(format!("build a layer: {e}"));
    let mut b = tar::Builder::new(Vec::new());
    let head = |kind, size, mode| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    for d in ["bin/", "data/", "etc/"] {
        b.append_data(&mut head(tar::EntryType::Directory, 0, 0o755), d, &[][..])
            .map_err(io)?;
    }
    for (p, data, mode) in files {
        b.append_data(
            &mut head(tar::EntryType::Regular, data.len() as u64, *mode),
            p,
            *data,
        )
        .map_err(io)?;
    }
    for (p, t) in links {
        b.append_link(&mut head(tar::EntryType::Symlink, 0, 0o777), p, t)
            .map_err(io)?;
    }
    b.into_inner().map_err(io)
}

/// Writes the OCI layout of the benchmark image into `dir`.
fn build_layout(dir: &Path, mib: usize) -> Result<()> {
    let io = |e: std::io::Error| Error::Other(format!("write the image layout: {e}"));
    let bb = std::fs::read("/bin/busybox").map_err(|e| {
        Error::Other(format!(
            "/bin/busybox is needed for the pull case's image (busybox-static): {e}"
        ))
    })?;
    let base = tar_of(
        &[("bin/busybox", &bb, 0o755)],
        &[("bin/sh", "busybox"), ("bin/true", "busybox")],
    )?;
    let mut big = vec![0u8; mib << 20];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for c in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    let data = tar_of(&[("data/blob", &big, 0o644)], &[])?;
    drop(big);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io)?;
    let put = |b: &[u8]| -> Result<String> {
        let d = sha(b);
        std::fs::write(blobs.join(&d[7..]), b).map_err(io)?;
        Ok(d)
    };
    let mut layers = Vec::new();
    for l in [&base, &data] {
        let d = put(l)?;
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()
        }));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&base), sha(&data)]}
    }))
    .map_err(|e| Error::Other(e.to_string()))?;
    let cd = put(&config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": layers
    }))
    .map_err(|e| Error::Other(e.to_string()))?;
    let md = put(&manifest)?;
    std::fs::write(
        dir.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len()
        }]})
        .to_string(),
    )
    .map_err(io)?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)
}

fn skopeo(args: &[String]) -> Result<()> {
    let out = Command::new(SKOPEO)
        .args(args)
        .output()
        .map_err(|e| Error::Other(format!("run skopeo: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "skopeo {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// One pull through the API; fails unless the stream ends with `done`.
async fn pull(api: &mut Api, reference: &str) -> Result<()> {
    let body = serde_json::json!({ "reference": reference });
    let bytes = api
        .call_raw(Method::POST, "/v1/images/pull", Some(&body))
        .await?;
    let last = bytes
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(last).map_err(|e| Error::BadAnswer {
        what: "POST /v1/images/pull".into(),
        detail: e.to_string(),
    })?;
    if v["event"] == "done" {
        Ok(())
    } else {
        Err(Error::Other(format!("the pull of {reference} failed: {v}")))
    }
}

/// Runs the case: `rounds` pulls each way (after one unmeasured warm-up
/// of each), then `n` create-to-first-exec runs from each image.
pub async fn run(
    api: &mut Api,
    mib: usize,
    rounds: usize,
    warmup: usize,
    n: usize,
) -> Result<PullResults> {
    let dir = PathBuf::from(format!("/var/tmp/dwell-bench-pull-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::Other(format!("{}: {e}", dir.display())))?;
    let r = run_in(api, &dir, mib, rounds, warmup, n).await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

async fn run_in(
    api: &mut Api,
    dir: &Path,
    mib: usize,
    rounds: usize,
    warmup: usize,
    n: usize,
) -> Result<PullResults> {
    let reg = start_registry(dir)?;
    let layout = dir.join("layout");
    build_layout(&layout, mib)?;
    let reference = format!("127.0.0.1:{}/bench/pull:1", reg.port);
    skopeo(&[
        "copy".into(),
        "--quiet".into(),
        "--dest-tls-verify=false".into(),
        format!("oci:{}", layout.display()),
        format!("docker://{reference}"),
    ])?;
    let _ = std::fs::remove_dir_all(&layout);
    let mut r = PullResults {
        mib,
        dwell: Samples::default(),
        skopeo: Samples::default(),
        from_pulled: Samples::default(),
        from_host: Samples::default(),
    };
    let remove = format!("/v1/images?ref={}", reference.replace('/', "%2F"));
    let copy = dir.join("skopeo-dir");
    for i in 0..1 + rounds {
        let _ = std::fs::remove_dir_all(&copy);
        let t = Instant::now();
        skopeo(&[
            "copy".into(),
            "--quiet".into(),
            "--src-tls-verify=false".into(),
            format!("docker://{reference}"),
            format!("dir:{}", copy.display()),
        ])?;
        let s = t.elapsed();
        let _ = std::fs::remove_dir_all(&copy);
        let t = Instant::now();
        pull(api, &reference).await?;
        let d = t.elapsed();
        if i > 0 {
            r.skopeo.push(s);
            r.dwell.push(d);
        }
        if i < rounds {
            // Removing the image drops its blobs and layers: the next
            // round downloads everything again.
            api.call(Method::DELETE, &remove, None).await?;
        }
    }
    let names = |img: &str, i: usize| format!("bench-{}-pull-{img}-{i}", std::process::id());
    for i in 0..warmup + n {
        for (image, samples) in [("pulled", true), ("host", false)] {
            let body = serde_json::json!({
                "name": names(image, i),
                "image": if samples { reference.as_str() } else { "host" },
            });
            let t = Instant::now();
            let v = api.call(Method::POST, "/v1/sandboxes", Some(&body)).await?;
            let id = v["id"].as_str().unwrap_or_default().to_string();
            api.track(id.clone());
            api.exec(&id, &["true"]).await?;
            let took = t.elapsed();
            api.delete(&id).await?;
            if i >= warmup {
                if samples {
                    r.from_pulled.push(took);
                } else {
                    r.from_host.push(took);
                }
            }
        }
    }
    api.call(Method::DELETE, &remove, None).await?;
    drop(reg);
    Ok(r)
}

pub fn render(r: &PullResults) -> String {
    let mut o = String::new();
    let p50 = |s: &Samples| s.summary().map_or(f64::NAN, |m| m.p50);
    let _ = writeln!(o, "### 8. Registry pulls\n");
    let _ = writeln!(
        o,
        "A {} MiB image (busybox plus one incompressible layer) in a local `docker-registry` \
         on loopback: `dwell image pull` through the API (download, verify every digest, \
         extract) against `skopeo copy docker://... dir:` (download and verify), rounds \
         alternating, the image removed between dwell rounds. Then create to first exec from \
         the pulled image against the built-in `host` image, alternating.\n",
        r.mib
    );
    header(&mut o);
    row(&mut o, "dwell pull", &r.dwell);
    row(&mut o, "skopeo copy to a dir", &r.skopeo);
    row(&mut o, "create to first exec, pulled image", &r.from_pulled);
    row(&mut o, "create to first exec, `host` image", &r.from_host);
    o.push('\n');
    let ratio = p50(&r.dwell) / p50(&r.skopeo);
    let _ = writeln!(
        o,
        "- Pull: dwell p50 is {ratio:.2}x skopeo's (bar: within 1.5x: {}).",
        if ratio <= 1.5 {
            "**met**"
        } else {
            "**missed**"
        }
    );
    let c = p50(&r.from_pulled) / p50(&r.from_host);
    let _ = writeln!(
        o,
        "- Create to first exec from the pulled image: {c:.2}x the `host` image's p50 (bar: \
         within 10%: {}).\n",
        if c <= 1.10 { "**met**" } else { "**missed**" }
    );
    o
}
