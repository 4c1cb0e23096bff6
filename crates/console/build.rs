//! Builds the web console (web/, a Preact app bundled by esbuild) into
//! `OUT_DIR/dist` and writes `OUT_DIR/assets.rs`, which embeds each file and
//! its gzip form in the binary. Nothing built here is committed: npm installs
//! the locked packages (`npm ci --ignore-scripts`: no package runs code at
//! install) into `OUT_DIR/npm`. `DWELL_CONSOLE_DIST=DIR` embeds a console
//! built elsewhere (`node web/build.mjs DIR`) instead.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let web = manifest.join("web");
    for f in ["src", "package.json", "package-lock.json", "build.mjs"] {
        println!("cargo:rerun-if-changed={}", web.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=DWELL_CONSOLE_DIST");

    let dist = match std::env::var_os("DWELL_CONSOLE_DIST") {
        Some(d) => PathBuf::from(d),
        None => build(&web, &out),
    };
    embed(&dist, &out);
}

/// Fails the build with what is missing and how to get it.
fn fail(what: &str) -> ! {
    panic!(
        "\n\nbuilding dwell's web console: {what}\n\
         The console is bundled from crates/console/web with Node.js (18 or newer) and npm at build \
         time: `apt-get install -y nodejs npm` (scripts/install-deps.sh does), and npm's registry \
         must be reachable on the first build. Or set DWELL_CONSOLE_DIST to a console built with \
         `node crates/console/web/build.mjs DIR`.\n\n"
    )
}

fn run(cmd: &mut Command, what: &str) {
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!("{what} failed ({s})")),
        Err(e) => fail(&format!("{what} could not start: {e}")),
    }
}

fn build(web: &Path, out: &Path) -> PathBuf {
    let npm_dir = out.join("npm");
    std::fs::create_dir_all(&npm_dir).unwrap();
    let lock = std::fs::read(web.join("package-lock.json"))
        .unwrap_or_else(|e| fail(&format!("cannot read web/package-lock.json: {e}")));
    // Install again only when the lock file changed.
    let installed = npm_dir.join("node_modules/.dwell-lock");
    if std::fs::read(&installed).ok().as_deref() != Some(&lock[..]) {
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(web.join(f), npm_dir.join(f)).unwrap();
        }
        run(
            Command::new("npm")
                .args([
                    "ci",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                ])
                .current_dir(&npm_dir),
            "`npm ci` (installing the console's locked packages)",
        );
        std::fs::write(&installed, &lock).unwrap();
    }
    std::fs::copy(web.join("build.mjs"), npm_dir.join("build.mjs")).unwrap();
    let dist = out.join("dist");
    run(
        Command::new("node")
            .arg(npm_dir.join("build.mjs"))
            .arg(&dist)
            .env("CONSOLE_SRC", web.join("src"))
            .current_dir(&npm_dir),
        "`node build.mjs` (bundling the console with esbuild)",
    );
    dist
}

fn mime(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "woff2" => "font/woff2",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

fn embed(dist: &Path, out: &Path) {
    use sha2::Digest;
    let gz_dir = out.join("gz");
    std::fs::create_dir_all(&gz_dir).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dist)
        .unwrap_or_else(|e| fail(&format!("no built console at {}: {e}", dist.display())))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    if !names.iter().any(|n| n == "index.html") {
        fail(&format!("{} has no index.html", dist.display()));
    }
    let mut code = String::from(
        "/// The console's files, built by build.rs.\npub static ASSETS: &[Asset] = &[\n",
    );
    for name in &names {
        let path = dist.join(name);
        let body = std::fs::read(&path).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&body).unwrap();
        let gz = gz.finish().unwrap();
        let gz_path = gz_dir.join(format!("{name}.gz"));
        std::fs::write(&gz_path, &gz).unwrap();
        let hash = sha2::Sha256::digest(&body);
        let etag: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
        writeln!(
            code,
            "    Asset {{ name: {name:?}, mime: {:?}, etag: \"\\\"{etag}\\\"\", body: include_bytes!({:?}), gzip: include_bytes!({:?}) }},",
            mime(name),
            path.display().to_string(),
            gz_path.display().to_string(),
        )
        .unwrap();
    }
    code.push_str("];\n");
    std::fs::write(out.join("assets.rs"), code).unwrap();
}
