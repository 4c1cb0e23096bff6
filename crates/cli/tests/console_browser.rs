//! End to end in a real browser: headless Chromium (Debian's `chromium`,
//! driven through `chromium-driver` by `dwell_testkit::browser`) uses the
//! web console the way a person would: logs in with a `dwell ui` URL, finds
//! a sandbox the CLI made, pauses and resumes it from its page, runs a
//! command in the web terminal and reads the output, uploads a file that
//! `dwell exec` then finds; a reused login URL is refused; another tenant's
//! session sees none of it. Every page is saved as a screenshot in
//! `target/console-screenshots/browser/` (desktop and phone width) for
//! review.

mod common;

use std::time::Duration;

use common::*;
use dwell_testkit::browser::{screenshot_dir, Browser, Viewport, ENTER};

const WAIT: Duration = Duration::from_secs(30);

use common::console::Console;

impl Console {
    /// A one-time login URL from `dwell ui`, as `key`'s tenant.
    fn login_url(&self, key: &str) -> String {
        let url = self.ok(key, &["ui", "--no-open"]).trim().to_string();
        assert!(
            url.starts_with(&format!("http://{}/ui/login#token=", self.addr)),
            "{url}"
        );
        url
    }
}

/// Saves a screenshot of what `b` shows as `<name>.png`.
fn shot(b: &Browser, name: &str) {
    b.screenshot(screenshot_dir("browser").join(format!("{name}.png")));
}

/// Logs `b` in with `url` (the page asks first) and waits for the
/// sandbox list.
fn log_in(b: &Browser, url: &str) {
    b.goto(url);
    b.wait_for("[data-testid=link-login]", WAIT).unwrap();
    b.click("[data-testid=link-login]");
    b.wait_js(
        "return location.pathname === '/ui/' && !!document.querySelector('header nav')",
        WAIT,
    )
    .unwrap();
}

fn row(name: &str) -> String {
    format!("[data-testid=sandbox-row][data-name=\"{name}\"]")
}

fn state_of(c: &Console, key: &str, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&c.ok(key, &["inspect", name, "--json"])).unwrap();
    v["state"].as_str().unwrap().to_string()
}

/// Clicks a lifecycle button and, if the console asks, confirms.
fn act(b: &Browser, verb: &str) {
    b.click(&format!("[data-testid=action-{verb}]"));
    std::thread::sleep(Duration::from_millis(300));
    if b.exists("[data-testid=confirm-ok]") {
        b.click("[data-testid=confirm-ok]");
    }
}

#[test]
fn a_tenant_drives_its_sandbox_from_the_browser() {
    let Some(c) = Console::start() else { return };
    let Some(b) = Browser::start() else { return };
    let acme = c.d.tenant_key("acme");
    c.ok(
        &acme,
        &[
            "create", "--name", "web1", "--memory", "256M", "--disk", "512M",
        ],
    );

    // The one-time URL logs in once; the session cookie is HttpOnly and
    // SameSite=Strict; the list shows the sandbox with its state.
    let url = c.login_url(&acme);
    log_in(&b, &url);
    let cookie = b
        .cookies()
        .into_iter()
        .find(|k| k.name == "dwell_session")
        .expect("the session cookie");
    assert!(cookie.http_only, "{cookie:?}");
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"), "{cookie:?}");
    b.wait_for(&row("web1"), WAIT).unwrap();
    b.wait_text(
        &format!("{} [data-testid=state]", row("web1")),
        "running",
        WAIT,
    )
    .unwrap();
    shot(&b, "list");

    // Pause and resume from the sandbox's page.
    b.click(&format!("{} a", row("web1")));
    b.wait_for("[data-testid=action-pause]", WAIT).unwrap();
    shot(&b, "sandbox");
    act(&b, "pause");
    b.wait_for("[data-testid=action-resume]", WAIT).unwrap();
    wait_for(30, "web1 paused", || {
        state_of(&c, &acme, "web1") == "paused"
    });
    act(&b, "resume");
    b.wait_for("[data-testid=action-pause]", WAIT).unwrap();
    wait_for(30, "web1 running", || {
        state_of(&c, &acme, "web1") == "running"
    });

    // The terminal: a real shell on a PTY, its output read back from the
    // terminal emulator's buffer.
    b.click("[data-testid=tab-terminal]");
    b.wait_for("[data-testid=terminal] .xterm", WAIT).unwrap();
    b.wait_js("return !!window.__dwellTerminal", WAIT).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    b.eval("window.__dwellTerminal.focus(); return true");
    b.type_into(
        "[data-testid=terminal] textarea",
        &format!("echo console-$((6*7)){ENTER}"),
    );
    let read_screen = "const buf = window.__dwellTerminal.buffer.active; let s = ''; \
                       for (let i = 0; i < buf.length; i++) { const l = buf.getLine(i); \
                       if (l) s += l.translateToString(true) + '\\n'; } \
                       return s.includes('console-42') ? s : ''";
    b.wait_js(read_screen, WAIT).unwrap();
    shot(&b, "terminal");

    // Upload a file from the files tab; `dwell exec` finds it.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("from-browser.txt");
    std::fs::write(&local, "uploaded through the console\n").unwrap();
    b.click("[data-testid=tab-files]");
    b.wait_for("[data-testid=upload]", WAIT).unwrap();
    b.set_file_input("[data-testid=upload]", &local);
    b.wait_for(
        "[data-testid=file-row][data-name=\"from-browser.txt\"]",
        WAIT,
    )
    .unwrap();
    shot(&b, "files");
    let found = c.ok(
        &acme,
        &[
            "exec",
            "web1",
            "--",
            "sh",
            "-c",
            "cat \"$(find / -xdev -name from-browser.txt 2>/dev/null | head -1)\"",
        ],
    );
    assert_eq!(found, "uploaded through the console\n");

    // Usage over time as charts, once the sandbox has been metered.
    wait_for(60, "web1's usage metered", || {
        let v: serde_json::Value =
            serde_json::from_str(&c.ok(&acme, &["usage", "--by", "hour", "--json"])).unwrap();
        v["points"].as_array().is_some_and(|p| !p.is_empty())
    });
    b.goto(&format!("http://{}/ui/usage", c.addr));
    b.wait_for("[data-testid=chart-vcpu_hours] .uplot", WAIT)
        .unwrap();
    b.wait_for("[data-testid=quota][data-tenant=acme]", WAIT)
        .unwrap();
    // The other pages render (screenshots for review).
    for (path, name) in [
        ("/ui/usage", "usage"),
        ("/ui/audit", "audit"),
        ("/ui/sessions", "sessions"),
        ("/ui/create", "create"),
    ] {
        b.goto(&format!("http://{}{path}", c.addr));
        b.wait_for("main#main", WAIT).unwrap();
        std::thread::sleep(Duration::from_millis(800));
        shot(&b, name);
    }
    let errors: Vec<_> = b
        .console_log()
        .into_iter()
        .filter(|e| e.level.eq_ignore_ascii_case("severe") && !e.message.contains("401"))
        .collect();
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");

    // The same URL again is refused: the login page says why.
    let again = Browser::start().unwrap();
    again.goto(&url);
    again.wait_for("[data-testid=link-login]", WAIT).unwrap();
    // The token is out of the address bar before anything is sent.
    assert!(
        !again.current_url().contains("token="),
        "{}",
        again.current_url()
    );
    again.click("[data-testid=link-login]");
    again
        .wait_text("[data-testid=error]", "already used", WAIT)
        .unwrap();
    shot(&again, "reused-link");
    drop(again);

    // A link someone else made, opened in a logged-in browser: the page
    // names the session it would replace and spends nothing unasked.
    let other = c.d.tenant_key("other");
    let foreign = c.login_url(&other);
    b.goto(&foreign);
    b.wait_text("[data-testid=current-session]", "acme", WAIT)
        .unwrap();
    shot(&b, "foreign-link");
    b.goto(&format!("http://{}/ui/", c.addr));
    b.wait_for(&row("web1"), WAIT).unwrap();

    // Another tenant's session sees none of it.
    let o = Browser::start_with(Viewport::PHONE).unwrap();
    log_in(&o, &c.login_url(&other));
    o.wait_for("[data-testid=empty]", WAIT).unwrap();
    assert!(!o.exists(&row("web1")));
    shot(&o, "other-tenant-phone");
    o.goto(&format!("http://{}/ui/sandboxes/web1", c.addr));
    o.wait_for("[data-testid=error]", WAIT).unwrap();
    assert!(!o.exists("[data-testid=action-pause]"));
    c.ok(&acme, &["rm", "-f", "web1"]);
}

#[test]
fn the_list_reads_well_on_a_phone() {
    let Some(c) = Console::start() else { return };
    let Some(b) = Browser::start_with(Viewport::PHONE) else {
        return;
    };
    let admin = c.d.admin_key();
    c.ok(
        &admin,
        &[
            "create", "--name", "phone1", "--memory", "128M", "--disk", "256M",
        ],
    );
    log_in(&b, &c.login_url(&admin));
    b.wait_for(&row("phone1"), WAIT).unwrap();
    // Nothing wider than the screen: the page does not scroll sideways.
    let wide = b.eval("return document.documentElement.scrollWidth");
    assert!(
        wide.as_u64().unwrap() <= 390,
        "the page is {wide} px wide on a 390 px screen"
    );
    shot(&b, "list-phone");
    c.ok(&admin, &["rm", "-f", "phone1"]);
}

/// What a sandbox controls shows up in the console: file names, process
/// command lines, a service's output. A sandbox that writes markup there
/// (as root inside, on every runtime) must not get it run in the console's
/// page, where it would act with the viewer's session.
#[test]
fn markup_a_sandbox_writes_is_shown_as_text_not_run() {
    let Some(c) = Console::start() else { return };
    let Some(b) = Browser::start() else { return };
    let admin = c.d.admin_key();
    log_in(&b, &c.login_url(&admin));
    let payload = "<img src=x onerror=window.__pwned=1>";
    for rt in runtimes() {
        let name = format!("xss-{rt}");
        c.ok(
            &admin,
            &[
                "create",
                "--name",
                &name,
                "--isolation",
                rt,
                "--memory",
                "256M",
                "--disk",
                "512M",
            ],
        );
        // A file named with markup in /, and a background process whose
        // command line carries it.
        c.ok(
            &admin,
            &[
                "exec",
                &name,
                "--",
                "sh",
                "-c",
                &format!("touch '/{payload}'; echo ok"),
            ],
        );
        c.ok(
            &admin,
            &["exec", "-d", "--tag", payload, &name, "--", "sleep", "300"],
        );
        for tab in ["files", "events", "overview", "processes"] {
            b.goto(&format!("http://{}/ui/sandboxes/{name}/{tab}", c.addr));
            b.wait_for("main#main", WAIT).unwrap();
            if tab == "files" {
                b.wait_for("[data-testid=file-row]", WAIT).unwrap();
            }
            std::thread::sleep(Duration::from_millis(1500));
            let pwned = b.eval("return window.__pwned === 1");
            assert_eq!(
                pwned, false,
                "{rt}: markup from the sandbox ran on the {tab} tab"
            );
        }
        let shown = b.eval("return document.body.innerText.includes('onerror=window.__pwned')");
        assert_eq!(
            shown, true,
            "{rt}: the tag is shown as text on the processes tab"
        );
        shot(&b, &format!("xss-{rt}"));
        c.ok(&admin, &["rm", "-f", &name]);
    }
}
