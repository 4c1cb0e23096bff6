//! `ui`: the web console. Without a subcommand, a one-time login URL for
//! the caller (as Jupyter prints one), opened in a browser where one is at
//! hand; `ui sessions` and `ui revoke` manage the tenant's console sessions.

use anyhow::Result;
use dwell_contract::console::{ConsoleSession, LoginLink, LoginLinkRequest, Revoked};

use crate::cli::{UiArgs, UiCommand};
use crate::client::{enc, Client};
use crate::output;

pub async fn run(c: &Client, a: UiArgs) -> Result<i32> {
    match a.command {
        None => link(c, a.valid, a.no_open, a.json).await,
        Some(UiCommand::Sessions(j)) => {
            let sessions: Vec<ConsoleSession> = c.get("/v1/console/sessions").await?;
            if j.json {
                output::json(&sessions)?;
            } else if sessions.is_empty() {
                eprintln!("no live console sessions; `dwell ui` prints a login URL");
            } else {
                let rows: Vec<Vec<String>> = sessions
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            s.key_id.clone(),
                            output::time(s.created_at),
                            output::time(s.last_seen_at),
                            output::time(
                                s.expires_at
                                    .min(s.last_seen_at + s.idle_timeout_secs as i64 * 1000),
                            ),
                            s.user_agent.chars().take(40).collect(),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "KEY", "STARTED", "LAST SEEN", "ENDS", "BROWSER"],
                    &rows,
                );
            }
            Ok(0)
        }
        Some(UiCommand::Revoke { session, all }) => {
            if all {
                let r: Revoked = c
                    .json(hyper::Method::DELETE, "/v1/console/sessions", None::<&()>)
                    .await?;
                eprintln!("revoked {} console session(s)", r.revoked);
            } else {
                let id = session.expect("clap requires a session without --all");
                let () = c
                    .json(
                        hyper::Method::DELETE,
                        &format!("/v1/console/sessions/{}", enc(&id)),
                        None::<&()>,
                    )
                    .await?;
                eprintln!("revoked console session {id}");
            }
            Ok(0)
        }
    }
}

async fn link(c: &Client, valid_secs: u64, no_open: bool, json: bool) -> Result<i32> {
    let l: LoginLink = c
        .post(
            "/v1/console/logins",
            &LoginLinkRequest {
                valid_secs: Some(valid_secs),
            },
        )
        .await?;
    if json {
        output::json(&l)?;
        return Ok(0);
    }
    println!("{}", l.url);
    eprintln!(
        "a one-time login to the web console as tenant {}{}; valid until {} and for one login",
        l.tenant,
        if l.admin { " (admin)" } else { "" },
        output::time(l.expires_at)
    );
    if !no_open {
        open_browser(&l.url);
    }
    Ok(0)
}

/// Opens `url` with `$BROWSER`, or `xdg-open` in a graphical session;
/// otherwise (a server, SSH) the printed URL is all. The browser is given
/// a file of the caller's (0600) that redirects to the URL, not the URL:
/// a command line is readable by every user of the host, the token in it
/// would be too.
fn open_browser(url: &str) {
    let graphical =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let program = match std::env::var("BROWSER") {
        Ok(b) if !b.trim().is_empty() => b,
        _ if graphical => "xdg-open".to_string(),
        _ => return,
    };
    let page = match redirect_file(url) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "could not write the page that opens the console ({e}); open the URL yourself"
            );
            return;
        }
    };
    match std::process::Command::new(&program)
        .arg(&page)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(_) => eprintln!("opened it with {program}"),
        Err(e) => eprintln!("could not open a browser ({program}: {e}); open the URL yourself"),
    }
}

/// A new 0600 HTML file that sends a browser on to `url` (kept: the
/// browser reads it after this command has ended).
fn redirect_file(url: &str) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let escaped = url
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    // tempfile makes it new and 0600.
    let mut f = tempfile::Builder::new()
        .prefix("dwell-ui-")
        .suffix(".html")
        .tempfile_in(dir)?;
    writeln!(
        f,
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={escaped}\">\
         <title>dwell console</title><p><a href=\"{escaped}\">Open the dwell console</a></p>"
    )?;
    let (_, path) = f.keep().map_err(|e| e.error)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_page_is_private_and_names_the_url() {
        use std::os::unix::fs::PermissionsExt;
        let p = redirect_file("http://127.0.0.1:7070/ui/login#token=dwl_ab\"<x>").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(mode, 0o600);
        assert!(
            text.contains("url=http://127.0.0.1:7070/ui/login#token=dwl_ab&quot;&lt;x&gt;"),
            "{text}"
        );
    }
}
