//! The browser harness against a page this test serves itself from a
//! 127.0.0.1 listener: typing, clicking, keys, a file input, async
//! scripts, cookies, the console log, viewports and screenshots, and no
//! process or dir left once the browser is dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dwell_testkit::browser::{BACKSPACE, ENTER, ESCAPE};
use dwell_testkit::{pid_alive, screenshot_dir, Browser, Viewport};

const PAGE: &str = r#"<!doctype html>
<html><head><title>harness page</title></head><body>
<input id="name">
<button id="greet" onclick="document.getElementById('out').textContent = 'hello, ' + document.getElementById('name').value">greet</button>
<p id="out">nothing yet</p>
<input id="cmd" onkeydown="if (event.key === 'Enter') document.getElementById('ran').textContent = 'ran ' + this.value">
<p id="ran"></p>
<input type="file" id="file" onchange="document.getElementById('chosen').textContent = this.files[0].name">
<p id="chosen"></p>
<input type="file" id="hidden-file" style="display: none">
<script>console.error("page says boom");</script>
</body></html>"#;

/// Serves `PAGE` at `/` (setting a session-like cookie) and 404 for
/// anything else, until `stop` is set.
fn serve(listener: TcpListener, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => answer(conn),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn answer(conn: TcpStream) {
    conn.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, extra, body) = if path == "/" {
        (
            "200 OK",
            "Content-Type: text/html; charset=utf-8\r\nSet-Cookie: sid=s3cret; Path=/; HttpOnly; SameSite=Strict\r\n",
            PAGE,
        )
    } else {
        ("404 Not Found", "Content-Type: text/plain\r\n", "not found")
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[test]
fn browser_drives_a_local_page_and_leaves_nothing_behind() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || serve(listener, stop))
    };

    // Chromium's own temp dirs (singleton sockets) in /tmp before the run:
    // its must all live in the browser's dir.
    let chromium_tmp = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir("/tmp")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("org.chromium."))
            .collect()
    };
    let tmp_before = chromium_tmp();
    let Some(browser) = Browser::start() else {
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        return;
    };
    let wait = Duration::from_secs(10);
    browser.goto(&url);
    assert_eq!(browser.current_url(), url);
    browser.wait_for("#greet", wait).unwrap();
    assert_eq!(browser.eval("return document.title"), "harness page");

    // Typing and clicking: the button's handler reads the input.
    browser.type_into("#name", "dwell");
    browser.click("#greet");
    browser.wait_text("#out", "hello, dwell", wait).unwrap();
    assert_eq!(browser.text("#out"), "hello, dwell");

    // Waiting for what never comes fails, naming it.
    let err = browser
        .wait_for("#never", Duration::from_millis(300))
        .unwrap_err();
    assert!(err.contains("#never") && err.contains(&url), "{err}");
    // ... with the page's console errors, to see why.
    assert!(err.contains("page says boom"), "{err}");
    let err = browser
        .wait_text("#out", "goodbye", Duration::from_millis(300))
        .unwrap_err();
    assert!(err.contains("hello, dwell"), "{err}");
    assert!(!browser.exists("#never"));
    browser.wait_gone("#never", wait).unwrap();

    // Special keys reach the page as key events.
    browser.type_into("#cmd", &format!("ls -la{ENTER}"));
    assert_eq!(
        browser.wait_text("#ran", "ran", wait).unwrap(),
        "ran ls -la"
    );
    assert_eq!(browser.value("#cmd"), "ls -la");
    browser.clear("#cmd");
    assert_eq!(browser.value("#cmd"), "");
    browser.type_into("#cmd", &format!("lx{BACKSPACE}s{ESCAPE}"));
    assert_eq!(browser.value("#cmd"), "ls");

    // A script condition polled until it holds.
    browser.eval("setTimeout(() => { window.ready = 'yes' }, 200); return null");
    assert_eq!(browser.wait_js("return window.ready", wait).unwrap(), "yes");
    let err = browser
        .wait_js("return window.never", Duration::from_millis(300))
        .unwrap_err();
    assert!(err.contains("window.never"), "{err}");

    // A file input: the page sees the file's name, and an async script
    // reads its content.
    let upload = tempfile::Builder::new()
        .prefix("upload-")
        .suffix(".txt")
        .tempfile()
        .unwrap();
    std::fs::write(upload.path(), "file body").unwrap();
    browser.set_file_input("#file", upload.path());
    let name = upload.path().file_name().unwrap().to_str().unwrap();
    browser.wait_text("#chosen", name, wait).unwrap();
    assert_eq!(
        browser.eval("return document.getElementById('file').files[0].name"),
        name
    );
    assert_eq!(
        browser.eval("return await document.getElementById('file').files[0].text()"),
        "file body"
    );
    // A hidden file input (behind a styled button, say) takes one too.
    browser.set_file_input("#hidden-file", upload.path());
    assert_eq!(
        browser.eval("return document.getElementById('hidden-file').files[0].name"),
        name
    );
    // A promise is awaited; an exception is an error.
    assert_eq!(
        browser.eval("return new Promise(r => setTimeout(() => r({n: 42}), 50))"),
        serde_json::json!({"n": 42})
    );
    let err = browser
        .try_eval("throw new Error('on purpose')")
        .unwrap_err();
    assert!(err.contains("on purpose"), "{err}");

    // The cookie the page set, with its flags (script cannot see it).
    let cookies = browser.cookies();
    let sid = cookies
        .iter()
        .find(|c| c.name == "sid")
        .expect("the sid cookie");
    assert_eq!(sid.value, "s3cret");
    assert!(sid.http_only);
    assert_eq!(sid.same_site.as_deref(), Some("Strict"));
    assert_eq!(browser.eval("return document.cookie"), "");

    // The console log holds the page's console calls and uncaught errors.
    browser.eval(
        "console.warn('a warning'); setTimeout(() => { throw new Error('uncaught one') }); \
         await new Promise(r => setTimeout(r, 100)); return null",
    );
    let log = browser.console_log();
    let has = |level: &str, text: &str| {
        log.iter()
            .any(|e| e.level == level && e.message.contains(text))
    };
    assert!(has("WARNING", "a warning"), "{log:?}");
    assert!(has("SEVERE", "uncaught one"), "{log:?}");
    assert!(browser.console_log().is_empty(), "read once");

    // Viewports: the desktop default, then a phone.
    let size = |b: &Browser| b.eval("return [innerWidth, innerHeight]");
    assert_eq!(size(&browser), serde_json::json!([1280, 800]));
    browser.resize(Viewport::PHONE.width, Viewport::PHONE.height);
    assert_eq!(size(&browser), serde_json::json!([390, 844]));
    assert_eq!(
        browser.eval("return matchMedia('(max-width: 400px)').matches"),
        true
    );

    // A screenshot is a PNG of the phone viewport.
    let shot = screenshot_dir("testkit-browser").join("harness-page.png");
    browser.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert_eq!(width, 390);
    std::fs::remove_file(&shot).unwrap();

    // A script added for new documents runs in the next one before the
    // page's own (no script element parsed yet), not in the current one.
    browser
        .on_new_document("window.early = document.scripts.length;")
        .unwrap();
    assert_eq!(browser.eval("return window.early ?? 'unset'"), "unset");
    browser.goto(&url);
    assert_eq!(browser.eval("return window.early"), 0);
    assert_eq!(browser.eval("return document.scripts.length"), 1);
    // A DevTools command answers; an unknown one is an error.
    let evaluated = browser
        .cdp(
            "Runtime.evaluate",
            serde_json::json!({"expression": "6 * 7"}),
        )
        .unwrap();
    assert_eq!(evaluated["result"]["value"], 42, "{evaluated}");
    let err = browser
        .cdp("No.suchCommand", serde_json::json!({}))
        .unwrap_err();
    assert!(err.contains("No.suchCommand"), "{err}");

    // No host name resolves, not even localhost (which /etc/hosts has),
    // while 127.0.0.1 is reached.
    let fetch = |host: &str| {
        browser.eval(&format!(
            "try {{ await fetch('http://{host}:{port}/', {{mode: 'no-cors'}}); return 'reached' }} \
             catch (e) {{ return 'failed' }}",
            port = url.trim_end_matches('/').rsplit(':').next().unwrap()
        ))
    };
    assert_eq!(fetch("127.0.0.1"), "reached");
    assert_eq!(fetch("localhost"), "failed");

    // Only 127.0.0.1 may be browsed.
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        browser.goto("http://example.com/")
    }));
    assert!(refused.is_err());

    // Dropping it ends every process it started and removes its dir.
    let pids = browser.pids();
    assert!(
        pids.len() > 2,
        "chromedriver, chromium and helpers: {pids:?}"
    );
    let dir = browser.dir().to_path_buf();
    drop(browser);
    let alive: Vec<i32> = pids.into_iter().filter(|&p| pid_alive(p)).collect();
    assert!(alive.is_empty(), "left running after drop: {alive:?}");
    assert!(dwell_testkit::host_processes_of(&dir.to_string_lossy()).is_empty());
    assert!(!dir.exists(), "{} left behind", dir.display());
    let new_tmp: Vec<String> = chromium_tmp().difference(&tmp_before).cloned().collect();
    assert!(
        new_tmp.is_empty(),
        "chromium left temp dirs in /tmp: {new_tmp:?}"
    );

    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

#[test]
fn browser_starts_with_a_phone_viewport() {
    let Some(browser) = Browser::start_with(Viewport::PHONE) else {
        return;
    };
    assert_eq!(
        browser.eval("return [innerWidth, innerHeight]"),
        serde_json::json!([390, 844])
    );
}
