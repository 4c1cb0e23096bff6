//! Progress bars for long snapshot operations (snapshot, restore, archive,
//! start of an archived sandbox). While the request runs, the CLI polls
//! `GET /v1/sandboxes/{id}/progress` and draws what the daemon reports on
//! stderr. Only when stderr is a terminal: otherwise nothing extra is
//! printed and nothing is polled.

use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;
use dwell_contract::sandbox::OpProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::{enc, Client};

const POLL: Duration = Duration::from_millis(200);

/// Run `request` (an operation on `sandbox`), drawing its progress.
pub async fn track<T>(
    c: &Client,
    sandbox: &str,
    request: impl Future<Output = Result<T>>,
) -> Result<T> {
    if !std::io::stderr().is_terminal() {
        return request.await;
    }
    tokio::pin!(request);
    let mut bar: Option<ProgressBar> = None;
    let path = format!("/v1/sandboxes/{}/progress", enc(sandbox));
    let result = loop {
        tokio::select! {
            r = &mut request => break r,
            _ = tokio::time::sleep(POLL) => {
                // A failed poll (old daemon, sandbox gone) only means no bar.
                let Ok(Some(p)) = c.get::<Option<OpProgress>>(&path).await else { continue };
                if p.total == 0 {
                    continue;
                }
                let b = bar.get_or_insert_with(|| new_bar(&p));
                b.set_length(p.total);
                b.set_position(p.done);
                b.set_message(label(&p.op));
            }
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result
}

fn new_bar(p: &OpProgress) -> ProgressBar {
    let b = ProgressBar::with_draw_target(Some(p.total), ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    b
}

fn label(op: &str) -> &'static str {
    match op {
        "snapshot" => "snapshotting",
        "restore" => "restoring",
        "archive" => "archiving",
        "unarchive" => "unarchiving",
        _ => "working",
    }
}
