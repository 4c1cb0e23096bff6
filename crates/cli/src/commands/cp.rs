//! `cp`: copy a file into or out of a sandbox. Contents stream through the
//! daemon to the agent, which does the file work inside the sandbox.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dwell_contract::files::{FileInfo, FileKind};
use http_body_util::{BodyExt, Empty};
use hyper::Method;
use tokio::io::AsyncWriteExt;

use crate::cli::CpArgs;
use crate::client::{check, enc, Client};

/// `SANDBOX:/path` or a local path.
enum Loc {
    Local(PathBuf),
    Remote { sandbox: String, path: String },
}

fn parse(s: &str) -> Result<Loc> {
    match s.split_once(':') {
        Some((sb, path)) if !sb.is_empty() && !sb.contains('/') => {
            if !path.starts_with('/') {
                bail!(
                    "{s:?}: the path inside the sandbox must be absolute, like {sb}:/root/{path}"
                );
            }
            Ok(Loc::Remote {
                sandbox: sb.into(),
                path: path.into(),
            })
        }
        _ => Ok(Loc::Local(PathBuf::from(s))),
    }
}

fn base_name(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

pub async fn run(c: &Client, a: CpArgs) -> Result<i32> {
    match (parse(&a.src)?, parse(&a.dst)?) {
        (Loc::Local(src), Loc::Remote { sandbox, path }) => upload(c, &src, &sandbox, &path).await,
        (Loc::Remote { sandbox, path }, Loc::Local(dst)) => {
            download(c, &sandbox, &path, &dst).await
        }
        (Loc::Local(_), Loc::Local(_)) => {
            bail!("neither side names a sandbox; write one side as SANDBOX:/path")
        }
        (Loc::Remote { .. }, Loc::Remote { .. }) => {
            bail!("copying between two sandboxes is not supported; copy to this machine first")
        }
    }
}

/// An upload that failed without the daemon's answer (the connection went
/// while the file was still being sent, past what the daemon reads of a
/// refused upload) says why when the sandbox is the reason; the daemon's
/// own errors are shown as they are.
async fn explain_failed_upload(c: &Client, sandbox: &str, e: anyhow::Error) -> anyhow::Error {
    if e.downcast_ref::<crate::client::ApiFailure>().is_some() {
        return e;
    }
    let sb = c
        .get::<dwell_contract::Sandbox>(&format!("/v1/sandboxes/{}", enc(sandbox)))
        .await;
    match sb {
        Ok(sb) if sb.state != dwell_contract::State::Running => e.context(format!(
            "sandbox {sandbox} is {}, so the daemon refused the upload; start or resume it (`dwell resume {sandbox}` / `dwell start {sandbox}`) and copy again",
            sb.state.as_str()
        )),
        Err(why) => e.context(format!("the upload failed, and so did asking about sandbox {sandbox}: {why}")),
        Ok(_) => e,
    }
}

async fn upload(c: &Client, src: &Path, sandbox: &str, dest: &str) -> Result<i32> {
    let meta = tokio::fs::metadata(src)
        .await
        .with_context(|| format!("cannot read {}", src.display()))?;
    if meta.is_dir() {
        bail!(
            "{} is a directory; cp copies files. Copy a directory with: tar -C {} -c . | dwell exec -i {sandbox} -- tar -x -C {dest}",
            src.display(),
            src.display()
        );
    }
    let name = src.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut target = dest.to_string();
    if dest.ends_with('/') {
        target = format!("{dest}{name}");
    } else {
        let st: Result<FileInfo> = c
            .get(&format!(
                "/v1/sandboxes/{}/fs/stat?path={}",
                enc(sandbox),
                enc(dest)
            ))
            .await;
        if let Ok(info) = st {
            if info.kind == FileKind::Dir {
                target = format!("{dest}/{name}");
            }
        }
    }
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o7777
    };
    let file = tokio::fs::File::open(src)
        .await
        .with_context(|| format!("cannot open {}", src.display()))?;
    let sent = c
        .upload(
            &format!(
                "/v1/sandboxes/{}/files?path={}&mode={:o}",
                enc(sandbox),
                enc(&target),
                mode
            ),
            file,
        )
        .await;
    if let Err(e) = sent {
        return Err(explain_failed_upload(c, sandbox, e).await);
    }
    eprintln!(
        "{} -> {sandbox}:{target} ({} bytes)",
        src.display(),
        meta.len()
    );
    Ok(0)
}

async fn download(c: &Client, sandbox: &str, path: &str, dst: &Path) -> Result<i32> {
    let resp = c
        .send(
            Method::GET,
            &format!("/v1/sandboxes/{}/files?path={}", enc(sandbox), enc(path)),
            "application/json",
            Empty::<bytes::Bytes>::new(),
        )
        .await?;
    let resp = check(resp).await?;
    let mut body = resp.into_body();
    if dst == Path::new("-") {
        let mut out = tokio::io::stdout();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.write_all(&data).await?;
            }
        }
        out.flush().await?;
        return Ok(0);
    }
    let mut target = dst.to_path_buf();
    if dst.to_string_lossy().ends_with('/') || dst.is_dir() {
        target = dst.join(base_name(path));
    }
    let tmp = target.with_file_name(format!(
        ".{}.dwell-partial",
        target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("download")
    ));
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut n = 0u64;
    let result: Result<()> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.context("the download broke off")?;
            if let Ok(data) = frame.into_data() {
                n += data.len() as u64;
                file.write_all(&data).await?;
            }
        }
        file.flush().await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    tokio::fs::rename(&tmp, &target).await?;
    eprintln!("{sandbox}:{path} -> {} ({n} bytes)", target.display());
    Ok(0)
}
