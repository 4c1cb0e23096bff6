//! `image ls`, `image import`, `image pull`, `image rm`, `image prune`,
//! `image export`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use dwell_contract::images::{Image, ImportBody};
use http_body_util::BodyExt;

use crate::cli::ImageCommand;
use crate::client::{check, enc, Client};
use crate::output;

pub async fn run(c: &Client, cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Ls(a) => {
            let list: Vec<Image> = c.get("/v1/images").await?;
            if a.json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            i.id.chars().take(19).collect(),
                            i.layers.len().to_string(),
                            output::size(i.size_bytes),
                            i.source.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "ID", "LAYERS", "SIZE", "SOURCE"], &rows);
            }
        }
        ImageCommand::Import { name, path } => {
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            let img: Image = c
                .post(
                    "/v1/images",
                    &ImportBody {
                        name,
                        path: path.display().to_string(),
                    },
                )
                .await?;
            println!("{}", img.name);
            eprintln!(
                "imported {} ({} layers, {})",
                img.name,
                img.layers.len(),
                output::size(img.size_bytes)
            );
        }
        ImageCommand::Pull { reference, json } => {
            let img = pull(c, &reference, false, !json).await?;
            if json {
                output::json(&img)?;
            } else {
                println!("{}", img.name);
            }
        }
        ImageCommand::Rm { reference, json } => {
            let img: Image = c
                .json(
                    hyper::Method::DELETE,
                    &format!("/v1/images?ref={}", enc(&reference)),
                    None::<&()>,
                )
                .await?;
            if json {
                output::json(&img)?;
            } else {
                println!("removed {}", img.name);
            }
        }
        ImageCommand::Prune(a) => {
            let removed: Vec<Image> = c.post("/v1/images/prune", &()).await?;
            if a.json {
                output::json(&removed)?;
            } else {
                for i in &removed {
                    println!("removed {}", i.name);
                }
                eprintln!("{} images removed", removed.len());
            }
        }
        ImageCommand::Export {
            reference,
            output,
            format,
        } => export(c, &reference, &output, &format).await?,
    }
    Ok(0)
}

/// Pulls `reference` through the daemon (only when missing with
/// `if_missing`), drawing a progress bar on a terminal stderr when `bar`.
pub async fn pull(c: &Client, reference: &str, if_missing: bool, bar: bool) -> Result<Image> {
    use dwell_contract::images::{PullBody, PullEvent};
    use std::io::IsTerminal;
    let body = serde_json::to_vec(&PullBody {
        reference: reference.to_string(),
        if_missing,
    })?;
    let resp = c
        .send(
            hyper::Method::POST,
            "/v1/images/pull",
            "application/json",
            http_body_util::Full::new(bytes::Bytes::from(body)),
        )
        .await?;
    let mut body = check(resp).await?.into_body();
    let draw = bar && std::io::stderr().is_terminal();
    let mut progress = Progress::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut result = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the pull's progress stream broke off; pull again to resume")?;
        let Some(d) = frame.data_ref() else { continue };
        buf.extend_from_slice(d);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let ev: PullEvent = match serde_json::from_slice(&line) {
                Ok(ev) => ev,
                Err(_) => continue,
            };
            match ev {
                PullEvent::Resolved {
                    source,
                    digest,
                    layers,
                } => {
                    if draw {
                        progress.start(&source, &digest, &layers);
                    }
                }
                PullEvent::Progress { digest, done, .. } => progress.set(&digest, done),
                PullEvent::Downloaded { .. } => {}
                PullEvent::Extracting => progress.extracting(),
                PullEvent::Done {
                    image,
                    fetched_bytes,
                    reused_layers,
                    shared_layers,
                } => {
                    progress.finish();
                    if bar {
                        let shared = if shared_layers > 0 {
                            format!(", {shared_layers} from the object store")
                        } else {
                            String::new()
                        };
                        eprintln!(
                            "pulled {} ({} layers, {} reused{shared}, {} downloaded)",
                            image.name,
                            image.layers.len(),
                            reused_layers,
                            output::size(fetched_bytes)
                        );
                    }
                    result = Some(*image);
                }
                PullEvent::Error {
                    code,
                    message,
                    status,
                } => {
                    progress.finish();
                    return Err(crate::client::ApiFailure {
                        status: hyper::StatusCode::from_u16(status)
                            .unwrap_or(hyper::StatusCode::BAD_GATEWAY),
                        code,
                        message,
                        facts: Default::default(),
                    }
                    .into());
                }
            }
        }
    }
    progress.finish();
    result.ok_or_else(|| {
        anyhow::anyhow!("the daemon ended the pull without a result; pull again to resume")
    })
}

/// The pull's progress bar: bytes of all layers to download.
#[derive(Default)]
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    done: std::collections::HashMap<String, u64>,
}

impl Progress {
    fn start(&mut self, source: &str, digest: &str, layers: &[dwell_contract::images::PullLayer]) {
        let total: u64 = layers.iter().filter(|l| !l.present).map(|l| l.size).sum();
        let fetch = layers.iter().filter(|l| !l.present).count();
        eprintln!(
            "pulling {source} ({}, {} of {} layers to download)",
            &digest[..digest.len().min(19)],
            fetch,
            layers.len()
        );
        let b = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        b.set_message("downloading");
        self.bar = Some(b);
    }

    fn set(&mut self, digest: &str, done: u64) {
        self.done.insert(digest.to_string(), done);
        if let Some(b) = &self.bar {
            b.set_position(self.done.values().sum());
        }
    }

    fn extracting(&mut self) {
        if let Some(b) = &self.bar {
            b.set_message("extracting");
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

async fn export(c: &Client, reference: &str, out: &Path, format: &str) -> Result<()> {
    let to_stdout = out == Path::new("-");
    let as_file = to_stdout
        || format == "docker"
        || out.extension().is_some_and(|e| e == "tar" || e == "TAR");
    if !as_file {
        if let Ok(mut rd) = std::fs::read_dir(out) {
            if rd.next().is_some() {
                bail!(
                    "{} is a directory that is not empty; name a new or empty directory, or a \
                     file ending in .tar",
                    out.display()
                );
            }
        }
    } else if !to_stdout && out.exists() {
        bail!("{} exists; remove it or name another file", out.display());
    }
    let resp = c
        .send(
            hyper::Method::GET,
            &format!(
                "/v1/images/export?ref={}&format={}",
                enc(reference),
                enc(format)
            ),
            "application/json",
            http_body_util::Empty::<bytes::Bytes>::new(),
        )
        .await?;
    let mut body = check(resp).await?.into_body();
    // Spool the archive to a temporary file next to the output, then move
    // it into place (or unpack it): a broken transfer leaves nothing.
    let dir = if to_stdout {
        std::env::temp_dir()
    } else {
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the export broke off; try again")?;
        if let Some(d) = frame.data_ref() {
            std::io::Write::write_all(&mut tmp, d)?;
            bytes += d.len() as u64;
        }
    }
    std::io::Write::flush(&mut tmp)?;
    let shown = if to_stdout {
        let mut f = std::fs::File::open(tmp.path())?;
        std::io::copy(&mut f, &mut std::io::stdout().lock())?;
        "stdout".to_string()
    } else if as_file {
        tmp.persist_noclobber(out)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", out.display()))?;
        out.display().to_string()
    } else {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut ar = tar::Archive::new(std::fs::File::open(tmp.path())?);
        for entry in ar.entries()? {
            let mut entry = entry?;
            let kind = entry.header().entry_type();
            if !(kind.is_file() || kind.is_dir()) {
                bail!("the daemon sent an archive with an unexpected entry; try again");
            }
            if !entry.unpack_in(out)? {
                bail!("the daemon sent an archive with an unsafe path; try again");
            }
        }
        out.display().to_string()
    };
    eprintln!("exported {reference} to {shown} ({})", output::size(bytes));
    Ok(())
}
