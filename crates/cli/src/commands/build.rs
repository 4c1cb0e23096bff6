//! `dwell build`: tar the context (less what `.dockerignore` excludes; the
//! Dockerfile and `.dockerignore` always go), send it to `POST /v1/builds`
//! and print the daemon's events as they come: docker-like step lines and
//! RUN output, `--json` for the events themselves, `-q` for the digest
//! only. A failed build exits with the failing RUN's exit code (1 for other
//! failures).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use dwell_build::ignore::Ignore;
use dwell_contract::builds::{BuildEvent, OutputStream};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Method;

use crate::cli::BuildArgs;
use crate::client::{check, enc, tokio_util_like, Client};

/// Name of a Dockerfile from outside the context, inside the sent tar.
const OUTSIDE_DOCKERFILE: &str = ".dwell-build.Dockerfile";

/// Write the context into the tar file `out`; returns the Dockerfile's
/// path inside it.
fn tar_context(ctx: &Path, dockerfile: &Path, out: std::fs::File) -> Result<String> {
    let ignore = match std::fs::read_to_string(ctx.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t).map_err(anyhow::Error::msg)?,
        Err(_) => Ignore::default(),
    };
    let mut b = tar::Builder::new(std::io::BufWriter::new(out));
    b.follow_symlinks(false);
    let df_abs = std::fs::canonicalize(dockerfile)
        .with_context(|| format!("cannot read the Dockerfile {}", dockerfile.display()))?;
    let ctx_abs = std::fs::canonicalize(ctx)
        .with_context(|| format!("cannot read the build context {}", ctx.display()))?;
    let df_rel = df_abs
        .strip_prefix(&ctx_abs)
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let keep = |rel: &str| {
        rel == ".dockerignore" || Some(rel) == df_rel.as_deref() || !ignore.excluded(rel)
    };
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let full = ctx_abs.join(&dir);
        let mut entries: Vec<_> = std::fs::read_dir(&full)
            .with_context(|| format!("cannot list {}", full.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let rel = dir.join(e.file_name());
            let rel_s = rel.to_string_lossy().into_owned();
            let meta = e.path().symlink_metadata()?;
            if meta.is_dir() {
                // An excluded dir may still hold `!`-included files.
                if keep(&rel_s) {
                    b.append_path_with_name(e.path(), &rel)?;
                }
                if keep(&rel_s) || ignore.has_exceptions() {
                    stack.push(rel);
                }
            } else if keep(&rel_s) && (meta.is_file() || meta.file_type().is_symlink()) {
                b.append_path_with_name(e.path(), &rel)?;
            }
        }
    }
    let inside = match df_rel {
        Some(r) => r,
        None => {
            let data = std::fs::read(&df_abs)?;
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, OUTSIDE_DOCKERFILE, data.as_slice())?;
            OUTSIDE_DOCKERFILE.to_string()
        }
    };
    b.into_inner()?.flush()?;
    Ok(inside)
}

pub async fn run(c: &Client, a: BuildArgs) -> Result<i32> {
    if !a.context.is_dir() {
        bail!(
            "the build context {} is not a directory; give the directory to send (often .)",
            a.context.display()
        );
    }
    let dockerfile = a
        .file
        .clone()
        .unwrap_or_else(|| a.context.join("Dockerfile"));
    let mut args = BTreeMap::new();
    for kv in &a.build_args {
        match kv.split_once('=') {
            Some((k, v)) => args.insert(k.to_string(), v.to_string()),
            None => match std::env::var(kv) {
                Ok(v) => args.insert(kv.clone(), v),
                Err(_) => continue,
            },
        };
    }
    let tmp = tempfile::tempfile().context("cannot create a temporary file for the context")?;
    let (ctx, df, t2) = (a.context.clone(), dockerfile.clone(), tmp.try_clone()?);
    let inside = tokio::task::spawn_blocking(move || tar_context(&ctx, &df, t2)).await??;
    let mut q = format!(
        "/v1/builds?t={}&dockerfile={}",
        enc(&a.tags.join(",")),
        enc(&inside)
    );
    if !args.is_empty() {
        q.push_str(&format!(
            "&build_args={}",
            enc(&serde_json::to_string(&args)?)
        ));
    }
    for (k, v) in [
        ("target", a.target.clone()),
        ("isolation", a.isolation.clone()),
        ("allow_out", a.allow_out.as_ref().map(|v| v.join(","))),
        ("deny_out", a.deny_out.as_ref().map(|v| v.join(","))),
        ("disk", a.disk.clone()),
        ("memory", a.memory.clone()),
        ("timeout", a.timeout.map(|t| t.to_string())),
    ] {
        if let Some(v) = v {
            q.push_str(&format!("&{k}={}", enc(&v)));
        }
    }
    if a.no_cache {
        q.push_str("&no_cache=true");
    }
    if a.net {
        q.push_str("&net=true");
    }
    let mut file = tokio::fs::File::from_std(tmp);
    tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(0)).await?;
    let stream = tokio_util_like::reader_stream(file);
    let body = StreamBody::new(futures_util::StreamExt::map(stream, |r| r.map(Frame::data)));
    let resp = c.send(Method::POST, &q, "application/x-tar", body).await?;
    let resp = check(resp).await?;
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut code = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the daemon's build stream broke")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if let Some(c) = show(&line, &a)? {
                code = Some(c);
            }
        }
    }
    match code {
        Some(c) => Ok(c),
        None => bail!("the daemon ended the build stream without a result; see its log"),
    }
}

/// Print one event line; `Some(exit code)` at the end.
fn show(line: &[u8], a: &BuildArgs) -> Result<Option<i32>> {
    let line = Bytes::copy_from_slice(line);
    let ev: BuildEvent = serde_json::from_slice(&line)
        .with_context(|| "the daemon sent a build event this CLI does not understand")?;
    if a.json {
        let mut out = std::io::stdout().lock();
        out.write_all(&line)?;
        out.flush()?;
    }
    let quiet = a.quiet || a.json;
    match ev {
        BuildEvent::Step { index, count, text } if !quiet => {
            println!("Step {index}/{count} : {text}")
        }
        BuildEvent::Cached { .. } if !quiet => println!(" ---> cached"),
        BuildEvent::Output { stream, text, .. } if !quiet => match stream {
            OutputStream::Stdout => {
                print!("{text}");
                std::io::stdout().flush()?;
            }
            OutputStream::Stderr => eprint!("{text}"),
        },
        BuildEvent::Warning { message, .. } if !quiet => eprintln!("warning: {message}"),
        BuildEvent::StepDone { layer: Some(l), .. } if !quiet => {
            println!(" ---> layer {}", &l[..l.len().min(19)])
        }
        BuildEvent::Done { digest, tags, .. } => {
            if a.quiet && !a.json {
                println!("{digest}");
            } else if !a.json {
                println!("Built {digest}");
                for t in tags {
                    println!("Tagged {t}");
                }
            }
            return Ok(Some(0));
        }
        BuildEvent::Error {
            message, exit_code, ..
        } => {
            if !a.json {
                eprintln!("error: {message}");
            }
            return Ok(Some(match exit_code {
                Some(c) if (1..=255).contains(&c) => c,
                _ => 1,
            }));
        }
        _ => {}
    }
    Ok(None)
}
