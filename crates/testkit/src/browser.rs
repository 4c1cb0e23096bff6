//! A real headless Chromium for the web console's tests: Debian's
//! `chromium` driven through its `chromedriver` (WebDriver, the
//! `fantoccini` client over plain HTTP on 127.0.0.1), behind a blocking
//! API for plain `#[test]` functions (a [`Browser`] owns its own tokio
//! runtime).
//!
//! The browser reaches nothing but this machine: it may only be sent to
//! `http://127.0.0.1` URLs ([`Browser::goto`] refuses others), every host
//! name but 127.0.0.1 resolves to nothing (`--host-resolver-rules`), and
//! the background services that phone home (component updates, sync,
//! metrics upload, safe browsing, translation) are off. Its profile, home
//! and crash-report dirs live in one temp dir.
//!
//! Nothing outlives a test: chromedriver leads a process group of its own
//! that holds chromium and its helpers; the crash handlers chromium
//! detaches are found by the temp dir on their command line. Dropping a
//! [`Browser`] (on a panic too) ends the session, kills all of them and
//! removes the dir; a reaper in its own process group does the same when
//! the test process dies without unwinding. Tests skip with the reason
//! printed when chromium or chromedriver is not installed.
//!
//! ```no_run
//! use std::time::Duration;
//! use dwell_testkit::browser::{screenshot_dir, Browser, ENTER};
//!
//! let Some(b) = Browser::start() else { return }; // skipped, reason printed
//! b.goto("http://127.0.0.1:8080/");
//! b.wait_for("#login", Duration::from_secs(10)).unwrap();
//! b.type_into("#token", &format!("secret{ENTER}"));
//! b.wait_text("h1", "Sandboxes", Duration::from_secs(10)).unwrap();
//! b.screenshot(screenshot_dir("console").join("list.png"));
//! ```

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::process::{free_port, host_processes_of, pid_alive, tail};
use crate::skip::skip;

/// The Enter key, for [`Browser::type_into`] (WebDriver's code point).
pub const ENTER: &str = "\u{E007}";
/// The Tab key.
pub const TAB: &str = "\u{E004}";
/// The Escape key.
pub const ESCAPE: &str = "\u{E00C}";
/// The Backspace key.
pub const BACKSPACE: &str = "\u{E003}";

/// How long one WebDriver command may take before the test fails.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// The size of the page's viewport in CSS pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
}

impl Viewport {
    /// A laptop screen: 1280x800 (the default).
    pub const DESKTOP: Viewport = Viewport {
        width: 1280,
        height: 800,
    };
    /// A phone held upright: 390x844.
    pub const PHONE: Viewport = Viewport {
        width: 390,
        height: 844,
    };
}

/// One cookie of the current page's site, as the browser stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None`; None when the browser reports none.
    pub same_site: Option<String>,
    pub path: Option<String>,
}

/// One line of the browser's console log: `console.*` calls and uncaught
/// errors of the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// `SEVERE` (console.error, uncaught errors), `WARNING`, `INFO`,
    /// `DEBUG`.
    pub level: String,
    pub message: String,
}

/// `<target dir>/console-screenshots/<suite>/`, created: where a suite
/// keeps the screenshots it takes for people to look at. The target dir
/// is the one the running test binary was built in.
pub fn screenshot_dir(suite: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("a test binary under target/<profile>/deps");
    let dir = target.join("console-screenshots").join(suite);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// The chromium binary: `DWELL_CHROMIUM`, or Debian's
/// `/usr/lib/chromium/chromium` (the program itself, not the
/// `/usr/bin/chromium` wrapper, whose `/etc/chromium.d` flags turn on
/// remote extensions and Google API keys).
pub fn chromium_path() -> PathBuf {
    std::env::var_os("DWELL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/chromium/chromium"))
}

/// The chromedriver binary: `DWELL_CHROMEDRIVER`, or
/// `/usr/bin/chromedriver`.
pub fn chromedriver_path() -> PathBuf {
    std::env::var_os("DWELL_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

/// A WebDriver command fantoccini has no method for: a method, a path
/// under the session and a JSON body.
#[derive(Debug)]
struct Raw {
    method: hyper::Method,
    path: &'static str,
    body: Option<Value>,
}

impl WebDriverCompatibleCommand for Raw {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (hyper::Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(Value::to_string),
        )
    }
}

/// A headless Chromium with one WebDriver session; see the module doc.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    /// chromedriver, leader of the process group chromium runs in.
    driver: Option<Child>,
    /// The reaper: told "done" on a clean drop, cleans up on EOF.
    reaper: Option<(Child, ChildStdin)>,
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
}

impl Browser {
    /// A browser with a [`Viewport::DESKTOP`] viewport; `None` (with the
    /// reason printed) when chromium or chromedriver is not installed.
    /// Panics when they are but the browser does not start.
    pub fn start() -> Option<Browser> {
        Browser::start_with(Viewport::DESKTOP)
    }

    /// [`Browser::start`] with the given viewport.
    pub fn start_with(viewport: Viewport) -> Option<Browser> {
        for (bin, package) in [
            (chromium_path(), "chromium"),
            (chromedriver_path(), "chromium-driver"),
        ] {
            if !bin.is_file() {
                skip(&format!(
                    "{} is not installed; the browser tests need it (scripts/install-deps.sh, or apt-get install {package})",
                    bin.display()
                ));
                return None;
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("dwell-browser-")
            .tempdir()
            .expect("create a temp dir for the browser");
        let dir_path = dir.path().to_path_buf();
        let home = dir_path.join("home");
        std::fs::create_dir_all(&home).expect("create the browser's home dir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the WebDriver client");
        let mut browser = Browser {
            rt,
            client: None,
            driver: None,
            reaper: None,
            dir: Some(dir),
            dir_path,
        };
        browser.start_reaper();
        let port = browser.start_driver(&home);
        browser.connect(port, viewport);
        Some(browser)
    }

    /// The reaper, started before anything it must clean up: it reads
    /// chromedriver's process group, then waits; on "done" it leaves,
    /// on EOF (this process died without dropping the browser) it kills
    /// the group and every process naming the temp dir, and removes it.
    fn start_reaper(&mut self) {
        let script = r#"pgid=
while read -r line; do
  [ "$line" = done ] && exit 0
  pgid=$line
done
[ -n "$pgid" ] && [ "$pgid" -gt 1 ] && kill -KILL -- "-$pgid" 2>/dev/null
for p in /proc/[0-9]*; do
  [ "${p#/proc/}" = "$$" ] && continue
  grep -qaF -- "$DWELL_BROWSER_DIR" "$p/cmdline" 2>/dev/null && kill -KILL "${p#/proc/}" 2>/dev/null
done
rm -rf -- "$DWELL_BROWSER_DIR"
"#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("DWELL_BROWSER_DIR", &self.dir_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the browser's reaper (sh): {e}"));
        let stdin = child.stdin.take().expect("piped");
        self.reaper = Some((child, stdin));
    }

    /// Starts chromedriver on a free port in a process group of its own
    /// and waits (at most 30 s) until it listens; returns the port.
    fn start_driver(&mut self, home: &Path) -> u16 {
        let port = free_port();
        let log = self.dir_path.join("chromedriver.log");
        // Chromium's singleton socket dirs go to $TMPDIR: into our dir too,
        // or every browser would leave one in /tmp.
        let tmp = self.dir_path.join("tmp");
        std::fs::create_dir_all(&tmp).expect("the browser's temp dir");
        let child = Command::new(chromedriver_path())
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; is the chromium-driver package intact?",
                    chromedriver_path().display()
                )
            });
        let pgid = child.id();
        self.driver = Some(child);
        if let Some((_, stdin)) = &mut self.reaper {
            let _ = writeln!(stdin, "{pgid}");
        }
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(30) {
                panic!(
                    "chromedriver did not listen on 127.0.0.1:{port} within 30 s\n{}",
                    self.driver_log()
                );
            }
            if let Some(Ok(Some(st))) = self.driver.as_mut().map(|d| d.try_wait()) {
                panic!("chromedriver exited at start ({st})\n{}", self.driver_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        port
    }

    /// Opens the WebDriver session (which starts chromium) and sets the
    /// viewport.
    fn connect(&mut self, port: u16, viewport: Viewport) {
        let profile = self.dir_path.join("profile");
        let args = vec![
            "--headless=new".to_string(),
            // Chromium refuses to run as root with its sandbox on.
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-dev-shm-usage".to_string(),
            format!("--user-data-dir={}", profile.display()),
            window_size_arg(viewport),
            // Nothing but 127.0.0.1 resolves, and nothing runs that would
            // reach the internet on its own.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".to_string(),
            "--no-first-run".to_string(),
            "--no-default-browser-check".to_string(),
            "--no-pings".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-default-apps".to_string(),
            "--disable-extensions".to_string(),
            "--disable-domain-reliability".to_string(),
            "--disable-client-side-phishing-detection".to_string(),
            "--safebrowsing-disable-auto-update".to_string(),
            "--disable-crash-reporter".to_string(),
            "--disable-breakpad".to_string(),
            // Metrics are recorded in memory only, never uploaded.
            "--metrics-recording-only".to_string(),
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication"
                .to_string(),
            "--password-store=basic".to_string(),
            "--lang=en-US".to_string(),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_path(),
                "args": args,
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let url = format!("http://127.0.0.1:{port}");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let session = self.rt.block_on(async {
            tokio::time::timeout(
                COMMAND_LIMIT,
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&url),
            )
            .await
        });
        match session {
            Ok(Ok(client)) => self.client = Some(client),
            Ok(Err(e)) => panic!(
                "chromedriver could not start {}: {e}\n{}",
                chromium_path().display(),
                self.driver_log()
            ),
            Err(_) => panic!(
                "chromedriver did not start {} within {COMMAND_LIMIT:?}\n{}",
                chromium_path().display(),
                self.driver_log()
            ),
        }
        self.set_viewport(viewport);
    }

    /// The last lines of chromedriver's log (for failure messages).
    fn driver_log(&self) -> String {
        let log = std::fs::read_to_string(self.dir_path.join("chromedriver.log"))
            .unwrap_or_else(|e| format!("(no chromedriver log: {e})"));
        format!("chromedriver log (tail):\n{}", tail(&log, 30))
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a WebDriver session")
    }

    /// Runs one WebDriver call; a failure or a call still running after
    /// a minute fails the test, naming `what`.
    fn run<T, E: std::fmt::Display>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> T {
        match self.try_run(fut) {
            Ok(v) => v,
            Err(e) => panic!("browser: {what}: {e}"),
        }
    }

    /// [`Browser::run`] returning the failure instead.
    fn try_run<T, E: std::fmt::Display>(
        &self,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(COMMAND_LIMIT, fut).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer from chromedriver within {COMMAND_LIMIT:?}"
            )),
        }
    }

    /// A command fantoccini has no method for (`body` None for a GET).
    fn raw(
        &self,
        what: &str,
        method: hyper::Method,
        path: &'static str,
        body: Option<Value>,
    ) -> Value {
        self.try_raw(method, path, body)
            .unwrap_or_else(|e| panic!("browser: {what}: {e}"))
    }

    /// [`Browser::raw`] returning the failure instead.
    fn try_raw(
        &self,
        method: hyper::Method,
        path: &'static str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let cmd = Raw { method, path, body };
        self.try_run(self.client().issue_cmd(cmd))
    }

    /// Sets the page's viewport to exactly `viewport` (a headless window
    /// is at least 500 px wide and its page smaller than the window, so
    /// the size is set through DevTools' device metrics; media queries
    /// see it).
    fn set_viewport(&self, viewport: Viewport) {
        self.raw(
            "set the viewport",
            hyper::Method::POST,
            "goog/cdp/execute",
            Some(json!({
                "cmd": "Emulation.setDeviceMetricsOverride",
                "params": {
                    "width": viewport.width,
                    "height": viewport.height,
                    "deviceScaleFactor": 1,
                    "mobile": false,
                },
            })),
        );
    }

    /// Loads `url` and waits for the page's load event. Only
    /// `http://127.0.0.1` URLs are allowed: these tests browse nothing
    /// else.
    pub fn goto(&self, url: &str) {
        assert!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("http://127.0.0.1/"),
            "browser: refusing to load {url}: tests may only browse http://127.0.0.1 URLs"
        );
        self.run(&format!("load {url}"), self.client().goto(url));
    }

    /// The URL of the page shown.
    pub fn current_url(&self) -> String {
        self.run("read the URL", self.client().current_url())
            .to_string()
    }

    /// Changes the viewport (the window too, where it can be that size).
    pub fn resize(&self, width: u32, height: u32) {
        let (w, h) = window_size(Viewport { width, height });
        self.run("resize the window", self.client().set_window_size(w, h));
        self.set_viewport(Viewport { width, height });
    }

    /// Whether an element matches `css` now.
    pub fn exists(&self, css: &str) -> bool {
        self.count(css) > 0
    }

    /// How many elements match `css` now.
    pub fn count(&self, css: &str) -> usize {
        self.run(
            &format!("find `{css}`"),
            self.client().find_all(Locator::Css(css)),
        )
        .len()
    }

    /// Polls until an element matches `css`; the error names the selector,
    /// the page and how long it waited.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Result<(), String> {
        self.poll(timeout, || {
            let found = self.try_run(self.client().find_all(Locator::Css(css)))?;
            if found.is_empty() {
                Err(format!("no element matches `{css}`"))
            } else {
                Ok(Some(()))
            }
        })
    }

    /// Polls until no element matches `css`.
    pub fn wait_gone(&self, css: &str, timeout: Duration) -> Result<(), String> {
        self.poll(timeout, || {
            let found = self.try_run(self.client().find_all(Locator::Css(css)))?;
            if found.is_empty() {
                Ok(Some(()))
            } else {
                Err(format!("{} element(s) still match `{css}`", found.len()))
            }
        })
    }

    /// Polls until the first element matching `css` shows text containing
    /// `substring`; returns its whole text.
    pub fn wait_text(
        &self,
        css: &str,
        substring: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        self.poll(timeout, || {
            let el = self
                .try_run(self.client().find(Locator::Css(css)))
                .map_err(|_| format!("no element matches `{css}`"))?;
            let text = self.try_run(el.text())?;
            if text.contains(substring) {
                Ok(Some(text))
            } else {
                Err(format!("`{css}` shows {text:?}, not {substring:?}"))
            }
        })
    }

    /// Polls until `js` (run as [`Browser::eval`] runs it) returns a
    /// truthy value, and returns that value: `return
    /// document.querySelectorAll('.row').length >= 3 && true`.
    pub fn wait_js(&self, js: &str, timeout: Duration) -> Result<Value, String> {
        self.poll(timeout, || {
            let v = self.try_eval(js)?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(_) | Value::Object(_) => true,
            };
            if truthy {
                Ok(Some(v))
            } else {
                Err(format!("the script still returns {v}: {js}"))
            }
        })
    }

    /// Calls `step` every 100 ms until it gives a value or `timeout`
    /// passes; the error is the last step's, with the page's URL.
    fn poll<T>(
        &self,
        timeout: Duration,
        mut step: impl FnMut() -> Result<Option<T>, String>,
    ) -> Result<T, String> {
        let t0 = Instant::now();
        loop {
            let last = match step() {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => String::from("not yet"),
                Err(e) => e,
            };
            if t0.elapsed() >= timeout {
                let url = self
                    .try_run(self.client().current_url())
                    .map(|u| u.to_string())
                    .unwrap_or_else(|e| format!("(URL unknown: {e})"));
                let errors: Vec<String> = self
                    .try_console_log()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| e.level == "SEVERE")
                    .map(|e| e.message)
                    .collect();
                let errors = if errors.is_empty() {
                    String::new()
                } else {
                    format!("; the page's console errors: {}", errors.join(" | "))
                };
                return Err(format!("{last} after {timeout:?} (page {url}){errors}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The first element matching `css`; fails the test when none does.
    fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.run(
            &format!("find `{css}` on {}", self.current_url()),
            self.client().find(Locator::Css(css)),
        )
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.run(&format!("click `{css}`"), el.click());
    }

    /// Types `text` into the first element matching `css`, as key
    /// presses; special keys go in as [`ENTER`], [`TAB`], [`ESCAPE`],
    /// [`BACKSPACE`] (e.g. `&format!("ls{ENTER}")`).
    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.run(&format!("type into `{css}`"), el.send_keys(text));
    }

    /// Empties the input or textarea matching `css`.
    pub fn clear(&self, css: &str) {
        let el = self.find(css);
        self.run(&format!("clear `{css}`"), el.clear());
    }

    /// The visible text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        let el = self.find(css);
        self.run(&format!("read the text of `{css}`"), el.text())
    }

    /// The current value of the input, textarea or select matching `css`.
    pub fn value(&self, css: &str) -> String {
        let el = self.find(css);
        self.run(&format!("read the value of `{css}`"), el.prop("value"))
            .unwrap_or_default()
    }

    /// Runs `js` in the page as the body of an async function and returns
    /// what it returns (awaited when a promise), as JSON: `return
    /// document.title`, or `const r = await fetch('/x'); return r.status`.
    /// A script that throws fails the test.
    pub fn eval(&self, js: &str) -> Value {
        self.try_eval(js)
            .unwrap_or_else(|e| panic!("browser: script failed: {e}\nscript: {js}"))
    }

    /// [`Browser::eval`] returning the error (a thrown exception, say)
    /// instead of failing the test.
    pub fn try_eval(&self, js: &str) -> Result<Value, String> {
        let wrapped = format!("return await (async () => {{\n{js}\n}})();");
        self.try_run(self.client().execute(&wrapped, Vec::new()))
    }

    /// Saves a PNG of the viewport at `path` (its directory is created).
    pub fn screenshot(&self, path: impl AsRef<Path>) {
        let path = path.as_ref();
        let png = self.run("take a screenshot", self.client().screenshot());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("cannot write the screenshot {}: {e}", path.display()));
    }

    /// Chooses `file` in the `<input type=file>` matching `css` (as a user
    /// picking it would; the page gets its change event).
    pub fn set_file_input(&self, css: &str, file: impl AsRef<Path>) {
        let file = file.as_ref();
        let abs = std::fs::canonicalize(file)
            .unwrap_or_else(|e| panic!("cannot choose {}: {e}", file.display()));
        let el = self.find(css);
        self.run(
            &format!("choose {} in `{css}`", abs.display()),
            el.send_keys(&abs.to_string_lossy()),
        );
    }

    /// The cookies the browser holds for the current page, with their
    /// flags.
    pub fn cookies(&self) -> Vec<Cookie> {
        let v = self.raw("read the cookies", hyper::Method::GET, "cookie", None);
        let list = v.as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|c| Cookie {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                value: c["value"].as_str().unwrap_or_default().to_string(),
                http_only: c["httpOnly"].as_bool().unwrap_or(false),
                secure: c["secure"].as_bool().unwrap_or(false),
                same_site: c["sameSite"].as_str().map(str::to_string),
                path: c["path"].as_str().map(str::to_string),
            })
            .collect()
    }

    /// The browser console's entries since the last call: `console.*`
    /// output and uncaught errors of the page. (A failed wait reports the
    /// errors among them, and so takes them.)
    pub fn console_log(&self) -> Vec<LogEntry> {
        self.try_console_log()
            .unwrap_or_else(|e| panic!("browser: read the console log: {e}"))
    }

    fn try_console_log(&self) -> Result<Vec<LogEntry>, String> {
        let v = self.try_raw(
            hyper::Method::POST,
            "se/log",
            Some(json!({ "type": "browser" })),
        )?;
        Ok(v.as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| LogEntry {
                level: e["level"].as_str().unwrap_or_default().to_string(),
                message: e["message"].as_str().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// The processes of this browser: chromedriver's process group
    /// (chromedriver, chromium and its helpers) and whatever names the
    /// temp dir (the crash handlers chromium detaches).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = self
            .driver
            .as_ref()
            .map_or_else(Vec::new, |d| group_members(d.id() as i32));
        for p in host_processes_of(&self.dir_path.to_string_lossy()) {
            if !pids.contains(&p) {
                pids.push(p);
            }
        }
        pids
    }

    /// The temp dir holding the profile (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Runs one Chrome DevTools Protocol command on the page (through
    /// chromedriver's `goog/cdp/execute`) and returns its result, or the
    /// failure: `cdp("Network.setCacheDisabled", json!({"cacheDisabled": true}))`.
    pub fn cdp(&self, cmd: &str, params: Value) -> Result<Value, String> {
        self.try_raw(
            hyper::Method::POST,
            "goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
    }

    /// Runs `js` in every document the page loads from now on, before any
    /// of the document's own scripts (DevTools'
    /// `Page.addScriptToEvaluateOnNewDocument`; the page's CSP does not
    /// apply): to watch a page from its very start, e.g. with a
    /// MutationObserver that records when elements appear.
    pub fn on_new_document(&self, js: &str) -> Result<(), String> {
        self.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": js }),
        )
        .map(drop)
    }
}

/// The `--window-size` flag for `viewport`.
fn window_size_arg(viewport: Viewport) -> String {
    let (w, h) = window_size(viewport);
    format!("--window-size={w},{h}")
}

/// A window that holds `viewport`: headless windows are at least 500 px
/// wide.
fn window_size(viewport: Viewport) -> (u32, u32) {
    (viewport.width.max(500), viewport.height)
}

/// The live processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: state, ppid, pgrp.
        let group = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(2))
            .and_then(|g| g.parse::<i32>().ok());
        if group == Some(pgid) && pid_alive(pid) {
            out.push(pid);
        }
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ends the session: chromedriver quits chromium gracefully.
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        if let Some(mut driver) = self.driver.take() {
            let pgid = driver.id() as i32;
            let t0 = Instant::now();
            loop {
                // SAFETY: kill has no memory preconditions; pgid is
                // chromedriver's own group (its pid, > 1), not ours.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let mut left = group_members(pgid);
                left.extend(host_processes_of(&self.dir_path.to_string_lossy()));
                left.retain(|&p| p != pgid);
                if left.is_empty() {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    eprintln!("browser: processes {left:?} survived SIGKILL for 10 s");
                    break;
                }
                for p in left {
                    // SAFETY: as above; p is one of this browser's processes.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = driver.wait();
        }
        if let Some((mut child, mut stdin)) = self.reaper.take() {
            let _ = writeln!(stdin, "done");
            drop(stdin);
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_keys_are_webdrivers_code_points() {
        use fantoccini::key::Key;
        for (ours, theirs) in [
            (ENTER, Key::Enter),
            (TAB, Key::Tab),
            (ESCAPE, Key::Escape),
            (BACKSPACE, Key::Backspace),
        ] {
            assert_eq!(ours, char::from(theirs).to_string());
        }
    }

    #[test]
    fn a_phone_window_is_wide_enough_for_headless_chromium() {
        assert_eq!(window_size(Viewport::PHONE), (500, 844));
        assert_eq!(window_size(Viewport::DESKTOP), (1280, 800));
    }
}
