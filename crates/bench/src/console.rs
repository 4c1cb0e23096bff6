//! The web console's two speed bars (issue 18), measured in a real
//! headless Chromium while the density case's idle namespace sandboxes all
//! exist (before their teardown): (a) the console's first load transfers
//! less than 1 MiB, (b) it renders the list of 1,000 sandboxes in less
//! than 1 s.
//!
//! How: the daemon also listens on TCP (`--listen`, passed here as
//! `--console ADDR`), where it serves the console at `/ui/`. A one-time
//! login URL comes from `POST /v1/console/logins` on the unix socket. The
//! browser is `dwell_testkit::browser::Browser` (Debian's chromium driven
//! through chromedriver), with a fresh profile, so the first load starts
//! from an empty cache; the link's page logs in when its "Log in with this
//! link" button is clicked, and lands on the list. Before any page script
//! runs, a script added with
//! DevTools' `Page.addScriptToEvaluateOnNewDocument` watches the page with
//! a MutationObserver and notes `performance.now()` (ms since the
//! navigation started) each time the number of
//! `[data-testid=sandbox-row]` rows changes, and again at the next frame
//! (painted). The list counts as rendered once the rows have kept their
//! number for a second; its time is when that number was first reached.
//! Bytes are the Resource Timing API's `transferSize` (on the wire:
//! headers plus the body as sent, gzip or not) and `decodedBodySize` of the
//! navigation and every resource entry, the console's own files (`/ui/`)
//! apart from the API calls (`/v1/`). The first load (login included) is
//! followed by a visit of `/ui/` with the browser's cache cleared (cold,
//! logged in), then [`VISITS`] more visits (warm cache), each timed the same
//! way, with the Resource Timing entry of its `GET /v1/sandboxes?stats=true`.
//!
//! Without chromium or chromedriver, or without `--console`, the section
//! says it was skipped and why; the rest of the run goes on.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::Method;
use serde_json::Value;

use crate::api::Api;
use crate::stats::Samples;

/// Bar (a): the console's own files of the first load, on the wire.
pub const FIRST_LOAD_BAR_BYTES: u64 = 1 << 20;
/// Bar (b): navigation start to the list's rows on screen.
pub const RENDER_BAR_MS: f64 = 1000.0;
/// Visits of `/ui/` after the first load, each timed.
pub const VISITS: usize = 5;
/// How long the rows must keep their number to count as rendered.
const STABLE_MS: u64 = 1000;
/// How long a page may take to show its rows before the case fails.
const PAGE_LIMIT: Duration = Duration::from_secs(60);

/// Installed in every document before its own scripts: records each change
/// in the number of list rows with the time it was in the DOM and the time
/// of the next frame.
const WATCH_JS: &str = r#"(() => {
  if (window.__dwellBench) return;
  const b = (window.__dwellBench = { changes: [] });
  let last = -1;
  const check = () => {
    const n = document.querySelectorAll("[data-testid=sandbox-row]").length;
    if (n === last) return;
    last = n;
    const c = { rows: n, dom: performance.now(), paint: null };
    b.changes.push(c);
    requestAnimationFrame(() => setTimeout(() => { c.paint = performance.now(); }, 0));
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true });
  document.addEventListener("click", () => { if (b.clicked === undefined) b.clicked = performance.now(); }, true);
})();"#;

/// Truthy once the rows have kept their number for STABLE_MS: the first
/// time that number was reached, what the page says it lists, and the
/// Resource Timing entry of the first `GET /v1/sandboxes?stats=true`.
const RENDERED_JS: &str = r#"
const b = window.__dwellBench;
if (!b) throw new Error("the watcher script did not run in this page");
const c = b.changes;
const last = c[c.length - 1];
if (!last || last.rows === 0 || last.paint === null || performance.now() - last.dom < STABLE) return null;
const first = c.find((x) => x.rows === last.rows);
const text = (document.querySelector("main") || document.body).innerText;
const m = text.match(/(\d[\d,]*)\s+(?:of\s+(\d[\d,]*)\s+)?sandboxes/i);
const more = document.querySelector("[data-testid=show-more]");
const entries = performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource"));
const list = entries.find((e) => {
  const u = new URL(e.name);
  return u.pathname === "/v1/sandboxes" && u.searchParams.get("stats") === "true";
});
const ui = entries.filter((e) => new URL(e.name).pathname.startsWith("/ui/")).reduce((n, e) => n + e.transferSize, 0);
return {
  rows: last.rows,
  dom: first.dom,
  paint: first.paint,
  stated: m ? Number((m[2] || m[1]).replace(/,/g, "")) : null,
  more: more ? more.innerText : null,
  clicked: b.clicked === undefined ? null : b.clicked,
  ui,
  list: list ? { start: list.startTime, end: list.responseEnd, transfer: list.transferSize,
                 decoded: list.decodedBodySize } : null,
};"#;

/// The navigation entry and every resource entry of the page.
const ENTRIES_JS: &str = r#"
return performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource"))
  .map((e) => ({ name: e.name, start: e.startTime, end: e.responseEnd, transfer: e.transferSize,
                 encoded: e.encodedBodySize, decoded: e.decodedBodySize }));"#;

/// One request of the page, from its Resource Timing entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// Path and query (no scheme, host or fragment).
    pub path: String,
    /// ms since navigation start: request start and response end.
    pub start_ms: f64,
    pub end_ms: f64,
    /// On the wire (headers + body as sent), the body as sent, the body
    /// decoded.
    pub transfer: u64,
    pub encoded: u64,
    pub decoded: u64,
}

/// One timed page: when its list rows were in place.
#[derive(Debug, Clone, PartialEq)]
pub struct Render {
    /// ms since navigation start: the rows in the DOM, and the next frame.
    pub dom_ms: f64,
    pub painted_ms: f64,
    /// Rows in the DOM, and the total the page says it lists.
    pub rows: usize,
    pub stated: Option<usize>,
    /// The "show more" button's text, when there is one.
    pub more: Option<String>,
    /// The page's first `GET /v1/sandboxes?stats=true`.
    pub list: Option<Transfer>,
    /// ms since navigation start of the first click in the page (the
    /// login link's button), if any.
    pub clicked_ms: Option<f64>,
    /// The console's files (`/ui/`) of this page on the wire.
    pub ui_wire: u64,
}

/// Everything measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The browser's user agent.
    pub browser: String,
    /// Sandboxes the API listed, and the bytes of that list's JSON
    /// (`GET /v1/sandboxes?stats=true` on the unix socket).
    pub listed: usize,
    pub list_json_bytes: usize,
    /// The first load's requests: the console's own files, the API calls
    /// made until the list was rendered, anything else.
    pub files: Vec<Transfer>,
    pub api: Vec<Transfer>,
    pub other: Vec<Transfer>,
    /// The first load (from the login URL), a visit with the cache
    /// cleared, and the visits after it.
    pub first: Render,
    pub cold: Render,
    pub visits: Vec<Render>,
}

/// The case's outcome.
#[derive(Debug, Clone)]
pub enum Console {
    Measured(Box<Measured>),
    /// Not run, and why.
    Skipped(String),
    /// Run and failed, and why.
    Failed(String),
}

impl Console {
    /// Why the run failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        match self {
            Console::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// Measures the console of the daemon behind `api`, served at `addr`
/// (`None`: skipped). Never fails the run: a failure is the outcome.
pub async fn run(api: &mut Api, addr: Option<SocketAddr>) -> Console {
    let Some(addr) = addr else {
        return Console::Skipped(
            "no --console ADDR (scripts/bench.sh passes the daemon's --listen address)".into(),
        );
    };
    if let Some(why) = browser_missing() {
        return Console::Skipped(why);
    }
    crate::step("console: first load and the sandbox list in headless Chromium");
    match measure(api, addr).await {
        Ok(m) => Console::Measured(Box::new(m)),
        Err(e) => {
            eprintln!("dwell-bench: console: {e}");
            Console::Failed(e)
        }
    }
}

/// Why the browser cannot run here (nothing when it can).
fn browser_missing() -> Option<String> {
    use dwell_testkit::browser::{chromedriver_path, chromium_path};
    for (bin, package) in [
        (chromium_path(), "chromium"),
        (chromedriver_path(), "chromium-driver"),
    ] {
        if !bin.is_file() {
            return Some(format!(
                "{} is not installed (apt-get install {package}, or scripts/install-deps.sh)",
                bin.display()
            ));
        }
    }
    None
}

async fn measure(api: &mut Api, addr: SocketAddr) -> Result<Measured, String> {
    let list = api
        .call_raw(Method::GET, "/v1/sandboxes?stats=true", None)
        .await
        .map_err(|e| e.to_string())?;
    let listed = serde_json::from_slice::<Value>(&list)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .ok_or("GET /v1/sandboxes?stats=true did not answer a JSON array")?;
    let link = api
        .call(Method::POST, "/v1/console/logins", None)
        .await
        .map_err(|e| e.to_string())?;
    let url = link["url"]
        .as_str()
        .ok_or_else(|| format!("POST /v1/console/logins answered no \"url\": {link}"))?
        .to_string();
    if !url.starts_with(&format!("http://{addr}/")) {
        return Err(format!(
            "the login URL {} is not on --console {addr}: pass the daemon's --listen address",
            url.split('#').next().unwrap_or_default()
        ));
    }
    // The browser's blocking API runs a tokio runtime of its own: on a
    // thread of its own, waited for without blocking this runtime.
    let browsing = std::thread::Builder::new()
        .name("console".into())
        .spawn(move || browse(&url, addr))
        .map_err(|e| format!("cannot start a thread for the browser: {e}"))?;
    while !browsing.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (browser, entries, first, cold, visits) = match browsing.join() {
        Ok(r) => r?,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the browser thread panicked".into());
            return Err(msg);
        }
    };
    let (files, api_calls, other) = split(entries, first.dom_ms);
    Ok(Measured {
        browser,
        listed,
        list_json_bytes: list.len(),
        files,
        api: api_calls,
        other,
        first,
        cold,
        visits,
    })
}

type Browsed = (String, Vec<Transfer>, Render, Render, Vec<Render>);

/// The browser's part: the first load from the login URL, its requests,
/// a visit of `/ui/` with the cache cleared, then [`VISITS`] more.
fn browse(login: &str, addr: SocketAddr) -> Result<Browsed, String> {
    let b = dwell_testkit::browser::Browser::start()
        .ok_or("chromium or chromedriver is not installed")?;
    b.on_new_document(WATCH_JS)
        .map_err(|e| format!("cannot add the watcher script to the page: {e}"))?;
    let agent = b
        .try_eval("return navigator.userAgent")?
        .as_str()
        .unwrap_or_default()
        .to_string();
    b.goto(login);
    // The link's page logs in on a click (a link alone must not log a
    // browser in); an older console logged in at once.
    let next = b
        .wait_js(
            "return document.querySelector('[data-testid=link-login]') ? 'click' : \
             document.querySelector('[data-testid=sandbox-row]') ? 'rows' : null",
            PAGE_LIMIT,
        )
        .map_err(|e| {
            format!(
                "the login link's page showed no login button: {}",
                redact(&e)
            )
        })?;
    if next == "click" {
        b.click("[data-testid=link-login]");
    }
    let first = rendered(&b)?;
    let entries = b.try_eval(ENTRIES_JS)?;
    let entries = entries
        .as_array()
        .ok_or("the page's performance entries are not a list")?
        .iter()
        .filter_map(transfer)
        .collect();
    b.cdp("Network.clearBrowserCache", serde_json::json!({}))
        .map_err(|e| format!("cannot clear the browser's cache: {e}"))?;
    b.goto(&format!("http://{addr}/ui/"));
    let cold = rendered(&b)?;
    let mut visits = Vec::with_capacity(VISITS);
    for _ in 0..VISITS {
        b.goto(&format!("http://{addr}/ui/"));
        visits.push(rendered(&b)?);
    }
    Ok((agent, entries, first, cold, visits))
}

/// Waits until the page shows its list rows; when they came.
fn rendered(b: &dwell_testkit::browser::Browser) -> Result<Render, String> {
    let js = RENDERED_JS.replace("STABLE", &STABLE_MS.to_string());
    let t0 = std::time::Instant::now();
    let v = loop {
        let v = b.try_eval(&js).map_err(|e| redact(&e))?;
        if !v.is_null() {
            break v;
        }
        if t0.elapsed() > PAGE_LIMIT {
            return Err(not_rendered(b));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let ms = |k: &str| v[k].as_f64();
    Ok(Render {
        dom_ms: ms("dom").ok_or("no row time")?,
        painted_ms: ms("paint").ok_or("no paint time")?,
        rows: v["rows"].as_u64().unwrap_or(0) as usize,
        stated: v["stated"].as_u64().map(|n| n as usize),
        more: v["more"].as_str().map(str::to_string),
        clicked_ms: v["clicked"].as_f64(),
        ui_wire: v["ui"].as_u64().unwrap_or(0),
        list: v["list"].as_object().map(|l| Transfer {
            path: "/v1/sandboxes?stats=true".into(),
            start_ms: l["start"].as_f64().unwrap_or(f64::NAN),
            end_ms: l["end"].as_f64().unwrap_or(f64::NAN),
            transfer: l["transfer"].as_u64().unwrap_or(0),
            encoded: 0,
            decoded: l["decoded"].as_u64().unwrap_or(0),
        }),
    })
}

/// What the page showed when its rows did not come: its path, its row
/// count, the start of its text and its console errors.
fn not_rendered(b: &dwell_testkit::browser::Browser) -> String {
    let state = b
        .try_eval(
            "return { path: location.pathname, \
               rows: document.querySelectorAll('[data-testid=sandbox-row]').length, \
               text: document.body ? document.body.innerText.slice(0, 300) : '' }",
        )
        .unwrap_or_default();
    let errors: Vec<String> = b
        .console_log()
        .into_iter()
        .filter(|e| e.level == "SEVERE")
        .map(|e| e.message)
        .collect();
    redact(&format!(
        "the sandbox list did not show its rows within {PAGE_LIMIT:?}: the page {} had {} \
         `[data-testid=sandbox-row]` rows and read {:?}; its console errors: {}",
        state["path"].as_str().unwrap_or("?"),
        state["rows"],
        state["text"].as_str().unwrap_or_default(),
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(" | ")
        }
    ))
}

/// `text` without the token of a login URL (`#token=...`).
fn redact(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("#token=") {
        out.push_str(&rest[..i]);
        out.push_str("#token=(redacted)");
        rest = &rest[i + "#token=".len()..];
        rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    }
    out.push_str(rest);
    out
}

/// One performance entry (as ENTRIES_JS gives it) as a [`Transfer`].
fn transfer(e: &Value) -> Option<Transfer> {
    Some(Transfer {
        path: path_of(e["name"].as_str()?),
        start_ms: e["start"].as_f64()?,
        end_ms: e["end"].as_f64()?,
        transfer: e["transfer"].as_u64()?,
        encoded: e["encoded"].as_u64()?,
        decoded: e["decoded"].as_u64()?,
    })
}

/// The path and query of a URL, without its fragment (a login URL's
/// fragment holds its token).
fn path_of(url: &str) -> String {
    let url = url.split('#').next().unwrap_or_default();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".into(),
    }
}

/// The first load's requests: the console's own files (`/ui/`), the API
/// calls (`/v1/`) started before the list was rendered (at `rendered_ms`;
/// later ones are the list's polls), and anything else.
fn split(
    entries: Vec<Transfer>,
    rendered_ms: f64,
) -> (Vec<Transfer>, Vec<Transfer>, Vec<Transfer>) {
    let (mut files, mut api, mut other) = (Vec::new(), Vec::new(), Vec::new());
    for t in entries {
        if t.path.starts_with("/ui/") || t.path == "/ui" {
            files.push(t);
        } else if t.path.starts_with("/v1/") {
            if t.start_ms <= rendered_ms {
                api.push(t);
            }
        } else {
            other.push(t);
        }
    }
    (files, api, other)
}

fn kib(b: u64) -> String {
    format!("{:.1} KiB", b as f64 / 1024.0)
}

fn sum(t: &[Transfer], f: impl Fn(&Transfer) -> u64) -> u64 {
    t.iter().map(f).sum()
}

fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**missed**"
    }
}

fn ms_samples(v: impl Iterator<Item = f64>) -> Samples {
    let mut s = Samples::default();
    for ms in v {
        s.push(Duration::from_secs_f64(ms.max(0.0) / 1e3));
    }
    s
}

/// Section 13 of the report.
pub fn render(c: &Console) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "### 13. Web console: first load and the sandbox list\n");
    let m = match c {
        Console::Skipped(why) => {
            let _ = writeln!(o, "Skipped: {why}.\n");
            return o;
        }
        Console::Failed(why) => {
            let _ = writeln!(o, "**Failed**: {why}\n");
            return o;
        }
        Console::Measured(m) => m,
    };
    let _ = writeln!(
        o,
        "Measured while the density case's {} idle sandboxes existed (before their teardown), \
         in headless Chromium (`{}`) driven through chromedriver, against the daemon's \
         `--listen` address. First load: a fresh browser profile (empty cache) opened a one-time \
         login URL (`POST /v1/console/logins`) and clicked its \"Log in with this link\" button, \
         which logs in and lands on the sandbox list. Bytes \
         are the Resource Timing API's `transferSize` (on the wire: headers plus the body as \
         sent, gzip-compressed or not) and `decodedBodySize`, summed over the navigation and \
         every resource entry: the console's own files (`/ui/`: HTML, JS, CSS) apart from the API \
         calls (`/v1/`) made until the list was rendered. Render: a script added with DevTools' \
         `Page.addScriptToEvaluateOnNewDocument` runs before the page's own and, with a \
         MutationObserver, notes `performance.now()` (ms since navigation start) whenever the \
         number of `[data-testid=sandbox-row]` rows changes, and again at the next frame \
         (`requestAnimationFrame`, then `setTimeout 0`): the render time is that frame's time \
         when the rows first reached the number they then kept for {} s. The first load is \
         followed by a visit of `/ui/` with the browser's cache cleared (DevTools' \
         `Network.clearBrowserCache`: cold cache, logged in) and {} more visits (warm cache), \
         timed the same way; the list request's time is its Resource Timing entry's \
         `responseEnd - startTime`.\n",
        m.listed,
        m.browser,
        STABLE_MS / 1000,
        m.visits.len(),
    );

    // (a) first load
    let files_wire = sum(&m.files, |t| t.transfer);
    let all_wire = files_wire + sum(&m.api, |t| t.transfer) + sum(&m.other, |t| t.transfer);
    let _ = writeln!(
        o,
        "Bar: the first load transfers < 1 MiB of the console's files: {} ({} on the wire, {} \
         decoded, {} files; with the API calls until the list was rendered, {} in all, {} 1 MiB).\n",
        verdict(files_wire < FIRST_LOAD_BAR_BYTES),
        kib(files_wire),
        kib(sum(&m.files, |t| t.decoded)),
        m.files.len(),
        kib(all_wire),
        if all_wire < FIRST_LOAD_BAR_BYTES {
            "under"
        } else {
            "over"
        }
    );
    o.push_str("| first load | requests | on the wire | body as sent | decoded |\n");
    o.push_str("|---|---:|---:|---:|---:|\n");
    let line = |o: &mut String, label: &str, t: &[Transfer]| {
        let _ = writeln!(
            o,
            "| {label} | {} | {} | {} | {} |",
            t.len(),
            kib(sum(t, |t| t.transfer)),
            kib(sum(t, |t| t.encoded)),
            kib(sum(t, |t| t.decoded))
        );
    };
    line(&mut o, "console files (`/ui/`)", &m.files);
    for f in &m.files {
        line(
            &mut o,
            &format!("&nbsp;&nbsp;`{}`", f.path),
            std::slice::from_ref(f),
        );
    }
    line(&mut o, "API calls until the list was rendered", &m.api);
    for a in &m.api {
        line(
            &mut o,
            &format!("&nbsp;&nbsp;`{}`", a.path),
            std::slice::from_ref(a),
        );
    }
    if !m.other.is_empty() {
        line(&mut o, "other requests", &m.other);
        // The browser's own (a /favicon.ico per page, say), by path.
        let mut paths: Vec<&str> = m.other.iter().map(|t| t.path.as_str()).collect();
        paths.dedup();
        paths.sort_unstable();
        paths.dedup();
        for p in paths {
            let same: Vec<Transfer> = m.other.iter().filter(|t| t.path == p).cloned().collect();
            line(&mut o, &format!("&nbsp;&nbsp;`{p}`"), &same);
        }
    }
    let all: Vec<Transfer> = m
        .files
        .iter()
        .chain(&m.api)
        .chain(&m.other)
        .cloned()
        .collect();
    line(&mut o, "total", &all);
    let json = m.list_json_bytes as u64;
    let list_wire = m.first.list.as_ref().map_or(0, |l| l.transfer);
    // Compressed when clearly smaller on the wire than decoded.
    let gzipped = list_wire + 1024 < json;
    let _ = write!(
        o,
        "\nThe API's JSON of the list of {} sandboxes (`GET /v1/sandboxes?stats=true`) is {} \
         decoded ({} bytes, {} bytes a sandbox); the browser received it as {} on the wire ({}).",
        m.listed,
        kib(json),
        json,
        json / m.listed.max(1) as u64,
        kib(list_wire),
        if gzipped { "gzip" } else { "uncompressed" }
    );
    if json >= FIRST_LOAD_BAR_BYTES {
        o.push_str(" Decoded, it is more than 1 MiB on its own.");
    }
    if list_wire > files_wire {
        let _ = write!(
            o,
            " On the wire it is more than the console's own files ({}), and it is fetched again \
             at every refresh of the list: the bar counts the console's files only, but the \
             list's data is the larger part of what a first load transfers.",
            kib(files_wire)
        );
    }
    o.push_str("\n\n");

    // (b) render
    let painted = ms_samples(m.visits.iter().map(|r| r.painted_ms));
    let requests = ms_samples(
        m.visits
            .iter()
            .filter_map(|r| r.list.as_ref().map(|l| l.end_ms - l.start_ms)),
    );
    let (p50, max) = painted
        .summary()
        .map_or((f64::NAN, f64::NAN), |s| (s.p50, s.max));
    let rows = m.visits.first().map_or(m.cold.rows, |r| r.rows);
    let stated = m.visits.first().and_then(|r| r.stated).or(m.cold.stated);
    let after_click = m
        .first
        .clicked_ms
        .map(|c| {
            format!(
                ", {:.0} ms after the click on the login button",
                m.first.painted_ms - c
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "Bar: the list of {} sandboxes renders in < 1 s: {} (median {p50:.0} ms, max {max:.0} \
         ms over {} warm visits; {:.0} ms with the cache cleared; judged on all of them). The \
         first load with the login link showed it {:.0} ms after navigation start{after_click}. \
         The page rendered {rows} rows and says it lists {}{}.\n",
        m.listed,
        verdict(max < RENDER_BAR_MS && m.cold.painted_ms < RENDER_BAR_MS),
        m.visits.len(),
        m.cold.painted_ms,
        m.first.painted_ms,
        stated.map_or("(no count found on the page)".to_string(), |n| format!(
            "{n} sandboxes"
        )),
        match m.visits.first().and_then(|r| r.more.as_deref()) {
            Some(more) => format!(" (the rest behind a \"{}\" button)", more.trim()),
            None => String::new(),
        },
    );
    o.push_str(
        "| page | console files on the wire | rows in the DOM | rows in the DOM at ms | \
         painted at ms | GET /v1/sandboxes?stats=true ms | its bytes on the wire |\n",
    );
    o.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    let visit = |o: &mut String, label: &str, r: &Render| {
        let (req, wire) = match &r.list {
            Some(l) => (format!("{:.0}", l.end_ms - l.start_ms), kib(l.transfer)),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            o,
            "| {label} | {} | {} | {:.0} | {:.0} | {req} | {wire} |",
            kib(r.ui_wire),
            r.rows,
            r.dom_ms,
            r.painted_ms
        );
    };
    let first = match m.first.clicked_ms {
        Some(c) => format!("first load: login link (button clicked at {c:.0} ms)"),
        None => "first load: login link".into(),
    };
    visit(&mut o, &first, &m.first);
    visit(&mut o, "visit with the cache cleared", &m.cold);
    for (i, r) in m.visits.iter().enumerate() {
        visit(&mut o, &format!("visit {}", i + 1), r);
    }
    if let Some(s) = requests.summary() {
        let _ = writeln!(
            o,
            "\nThe list request alone over the {} visits: median {:.0} ms, max {:.0} ms.",
            s.n, s.p50, s.max
        );
    }
    o.push('\n');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str, start: f64, wire: u64, decoded: u64) -> Transfer {
        Transfer {
            path: path.into(),
            start_ms: start,
            end_ms: start + 5.0,
            transfer: wire,
            encoded: wire.saturating_sub(300),
            decoded,
        }
    }

    fn render_at(ms: f64, list_wire: u64) -> Render {
        Render {
            dom_ms: ms - 10.0,
            painted_ms: ms,
            rows: 200,
            stated: Some(1000),
            more: Some("Show more (800 more)".into()),
            list: Some(t("/v1/sandboxes?stats=true", 50.0, list_wire, list_wire)),
            clicked_ms: None,
            ui_wire: 600,
        }
    }

    #[test]
    fn paths_drop_host_and_fragment() {
        assert_eq!(
            path_of("http://127.0.0.1:7070/ui/login#token=dwl_secret"),
            "/ui/login"
        );
        assert_eq!(
            path_of("http://127.0.0.1:7070/v1/sandboxes?stats=true"),
            "/v1/sandboxes?stats=true"
        );
        assert_eq!(path_of("http://127.0.0.1:7070"), "/");
    }

    #[test]
    fn splits_files_from_api_calls_and_later_polls() {
        let (files, api, other) = split(
            vec![
                t("/ui/login", 0.0, 1000, 900),
                t("/ui/main-X.js", 10.0, 30_000, 90_000),
                t("/v1/console/sessions", 40.0, 500, 300),
                t("/v1/sandboxes?stats=true", 50.0, 900_000, 900_000),
                t("/v1/sandboxes?stats=true", 3050.0, 900_000, 900_000),
                t("/favicon.ico", 20.0, 100, 0),
            ],
            400.0,
        );
        assert_eq!(files.len(), 2);
        assert_eq!(api.len(), 2, "the poll after the render is not counted");
        assert_eq!(other.len(), 1);
    }

    #[test]
    fn login_tokens_are_redacted() {
        assert_eq!(
            redact("page http://127.0.0.1:1/ui/login#token=dwl_ab12-_x); next #token="),
            "page http://127.0.0.1:1/ui/login#token=(redacted)); next #token=(redacted)"
        );
        assert_eq!(redact("nothing here"), "nothing here");
    }

    #[test]
    fn a_transfer_needs_every_field() {
        let v = serde_json::json!({"name": "http://127.0.0.1:1/ui/", "start": 0.0, "end": 3.5,
            "transfer": 700, "encoded": 400, "decoded": 1200});
        assert_eq!(transfer(&v).unwrap().decoded, 1200);
        let mut w = v.clone();
        w["transfer"] = Value::Null;
        assert!(transfer(&w).is_none());
    }

    fn measured(
        files_wire: u64,
        cold: f64,
        painted: [f64; 5],
        json: usize,
        list_wire: u64,
    ) -> Console {
        Console::Measured(Box::new(Measured {
            browser: "HeadlessChrome".into(),
            listed: 1000,
            list_json_bytes: json,
            files: vec![t("/ui/", 0.0, files_wire, files_wire * 3)],
            api: vec![t(
                "/v1/sandboxes?stats=true",
                50.0,
                json as u64,
                json as u64,
            )],
            other: vec![],
            first: Render {
                clicked_ms: Some(400.0),
                ..render_at(900.0, list_wire)
            },
            cold: render_at(cold, list_wire),
            visits: painted.iter().map(|&p| render_at(p, list_wire)).collect(),
        }))
    }

    #[test]
    fn bars_are_judged() {
        let good = render(&measured(
            200 << 10,
            700.0,
            [300.0, 310.0, 290.0, 305.0, 600.0],
            500,
            500,
        ));
        assert!(good.starts_with("### 13. Web console"), "{good}");
        assert!(
            good.contains("transfers < 1 MiB of the console's files: **met** (200.0 KiB"),
            "{good}"
        );
        assert!(
            good.contains("renders in < 1 s: **met** (median 305 ms, max 600 ms"),
            "{good}"
        );
        assert!(good.contains("says it lists 1000 sandboxes"), "{good}");
        assert!(
            good.contains("900 ms after navigation start, 500 ms after the click"),
            "{good}"
        );
        assert!(
            good.contains("| first load: login link (button clicked at 400 ms) | 0.6 KiB | 200 |"),
            "{good}"
        );
        assert!(good.contains("(uncompressed)"), "{good}");
        assert!(!good.contains("the larger part"), "{good}");
        let bad = render(&measured(
            2 << 20,
            700.0,
            [900.0, 1200.0, 950.0, 980.0, 990.0],
            2 << 20,
            2 << 20,
        ));
        assert!(bad.contains("console's files: **missed**"), "{bad}");
        assert!(
            bad.contains("renders in < 1 s: **missed** (median 980 ms, max 1200 ms"),
            "{bad}"
        );
        assert!(bad.contains("more than 1 MiB on its own"), "{bad}");
        assert!(bad.contains("(uncompressed)"), "{bad}");
        assert!(
            !bad.contains("the larger part"),
            "no larger than the files: {bad}"
        );
        let gz = render(&measured(30 << 10, 1100.0, [300.0; 5], 800 << 10, 60 << 10));
        assert!(gz.contains("on the wire (gzip)"), "{gz}");
        // A cold visit over the bar misses it, whatever the warm ones do.
        assert!(
            gz.contains("renders in < 1 s: **missed** (median 300 ms, max 300 ms"),
            "{gz}"
        );
        assert!(gz.contains("1100 ms with the cache cleared"), "{gz}");
        assert!(!gz.contains("more than 1 MiB"), "{gz}");
        assert!(gz.contains("the larger part"), "{gz}");
    }

    #[test]
    fn skips_and_failures_say_why() {
        let s = render(&Console::Skipped("no chromium".into()));
        assert!(
            s.contains("### 13.") && s.contains("Skipped: no chromium."),
            "{s}"
        );
        let f = Console::Failed("the sandbox list did not show its rows".into());
        assert_eq!(f.failure(), Some("the sandbox list did not show its rows"));
        assert!(render(&f).contains("**Failed**: the sandbox list"));
    }
}
