//! End to end: pulls from a real registry (Debian's `docker-registry` on
//! 127.0.0.1, started per test) fed with images built here from local files
//! (busybox and a few text files) and pushed with `skopeo`: anonymous and
//! htpasswd pulls, tags and digests, shared layers, a multi-arch index, a
//! tampered blob, a pull killed midway that resumes, a create that pulls,
//! mirrors, and export read back by skopeo.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;
use dwell_testkit::registry::Registry;
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(b)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The files under the store's `downloads/` (kept in one directory per
/// tenant).
fn download_files(downloads: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(downloads).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(
                std::fs::read_dir(e.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|f| f.path()),
            );
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A tar layer of `files` (path, content, mode) and `links` (path, target).
fn layer(files: &[(&str, &[u8], u32)], links: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for p in files.iter().map(|f| f.0).chain(links.iter().map(|l| l.0)) {
        let mut cur = Path::new(p).parent();
        while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            cur = d.parent();
        }
    }
    for d in dirs {
        let mut h = header();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("{}/", d.display()), &[][..])
            .unwrap();
    }
    for (path, data, mode) in files {
        let mut h = header();
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, *data).unwrap();
    }
    for (path, target) in links {
        let mut h = header();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, path, target).unwrap();
    }
    b.into_inner().unwrap()
}

fn header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// The busybox base layer: /bin/busybox and a few applets.
fn base_layer() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let links: Vec<(String, String)> = ["sh", "cat", "echo", "ls", "uname", "sleep", "wc"]
        .iter()
        .map(|t| (format!("bin/{t}"), "busybox".to_string()))
        .collect();
    let links: Vec<(&str, &str)> = links
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    layer(
        &[
            ("bin/busybox", &bb, 0o755),
            ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ],
        &links,
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Writes blobs into an OCI layout at `dir`.
struct Layout<'a> {
    dir: &'a Path,
}

impl Layout<'_> {
    fn put(&self, data: &[u8]) -> String {
        let d = sha(data);
        let p = self.dir.join("blobs/sha256");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join(&d[7..]), data).unwrap();
        d
    }

    /// An image manifest of `layers` (uncompressed tars; gzipped when
    /// `gz`) for `arch`; returns (manifest bytes, digest).
    fn image(&self, layers: &[Vec<u8>], arch: &str, env: &str, gz: bool) -> (Vec<u8>, String) {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for l in layers {
            diff_ids.push(sha(l));
            let (blob, mt) = if gz {
                (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
            } else {
                (l.clone(), "application/vnd.oci.image.layer.v1.tar")
            };
            let d = self.put(&blob);
            descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": blob.len()}));
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/bin", env], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .unwrap();
        let cd = self.put(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": descs
        }))
        .unwrap();
        let md = self.put(&manifest);
        (manifest, md)
    }

    /// index.json naming one manifest (or index) of `media_type`.
    fn index(&self, bytes: &[u8], digest: &str, media_type: &str) {
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{"mediaType": media_type, "digest": digest, "size": bytes.len()}]
            }))
            .unwrap(),
        )
        .unwrap();
        std::fs::write(
            self.dir.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An OCI layout in `dir` of the base layer plus one with `files`.
fn simple_image(dir: &Path, files: &[(&str, &[u8], u32)], env: &str) -> String {
    let l = Layout { dir };
    let (m, d) = l.image(&[base_layer(), layer(files, &[])], "amd64", env, true);
    l.index(&m, &d, OCI_MANIFEST);
    d
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `N reused, ... downloaded` from `image pull`'s summary line.
fn reused(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("pulled "))
        .unwrap_or_else(|| panic!("no summary in {stderr:?}"));
    let before = line.split(" reused").next().unwrap();
    before
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no reused count in {line:?}"))
}

fn tmpdir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("dwell-{what}-"))
        .tempdir_in("/var/tmp")
        .unwrap()
}

#[test]
fn pulls_share_layers_pin_digests_export_and_guard_removal() {
    if !can_run() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let work = tmpdir("reg-images");
    let a = work.path().join("a");
    let b = work.path().join("b");
    simple_image(&a, &[("etc/motd", b"image a\n", 0o644)], "WHICH=a");
    simple_image(&b, &[("etc/motd", b"image b\n", 0o644)], "WHICH=b");
    reg.push_layout(&a, "test/a:1");
    reg.push_layout(&b, "test/b:1");
    // Docker Hub short names through a mirror: `tiny:1` is
    // docker.io/library/tiny:1, served by the local registry.
    reg.push_layout(&a, "library/tiny:1");
    let mirror = format!("docker.io=http://{}", reg.host());
    let d = Daemon::start_with(&["--registry-mirror", &mirror]);
    let host = reg.host();
    let ra = format!("{host}/test/a:1");
    let rb = format!("{host}/test/b:1");

    let img: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "pull", &ra, "--json"])).unwrap();
    assert_eq!(img["name"], ra.as_str());
    assert_eq!(img["layers"].as_array().unwrap().len(), 2);
    let digest = img["digest"].as_str().unwrap().to_string();
    // The second image downloads only its own layer.
    let out = d.run(&["image", "pull", &rb]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(reused(&stderr_of(&out)), 1, "{}", stderr_of(&out));
    // By digest: the same image, nothing downloaded.
    let by_digest = format!("{host}/test/a@{digest}");
    let again: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "pull", &by_digest, "--json"])).unwrap();
    assert_eq!(again["id"], img["id"]);
    // Through the mirror, by short name.
    let tiny: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "pull", "tiny:1", "--json"])).unwrap();
    assert_eq!(tiny["name"], "tiny:1");
    assert_eq!(tiny["reference"], "docker.io/library/tiny:1");
    assert_eq!(tiny["id"], img["id"]);

    d.create("sa", &["--image", &ra]);
    assert_eq!(d.ok(&["exec", "sa", "--", "cat", "/etc/motd"]), "image a\n");
    assert_eq!(d.sh("sa", "echo $WHICH"), "a\n");
    assert!(d.inspect("sa")["image"]
        .as_str()
        .unwrap()
        .ends_with(&digest));

    // A create with an image not pulled yet pulls it first.
    let c = work.path().join("c");
    simple_image(&c, &[("etc/motd", b"image c\n", 0o644)], "WHICH=c");
    reg.push_layout(&c, "test/c:1");
    let rc = format!("{host}/test/c:1");
    d.create("sc", &["--image", &rc]);
    assert_eq!(d.ok(&["exec", "sc", "--", "cat", "/etc/motd"]), "image c\n");

    // Export: an OCI layout and a docker-save tarball skopeo reads back
    // (skopeo verifies every blob against its digest while copying).
    let layout = work.path().join("exported");
    d.ok(&["image", "export", &ra, "-o", layout.to_str().unwrap()]);
    let copy = work.path().join("copied");
    let st = std::process::Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}", layout.display()))
        .arg(format!("dir:{}", copy.display()))
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", stderr_of(&st));
    let tarball = work.path().join("saved.tar");
    d.ok(&[
        "image",
        "export",
        &ra,
        "-o",
        tarball.to_str().unwrap(),
        "--format",
        "docker",
    ]);
    let inspect = std::process::Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", tarball.display()))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", stderr_of(&inspect));
    let meta: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(meta["Layers"].as_array().unwrap().len(), 2);
    // And dwell imports its own export.
    d.ok(&["image", "import", "roundtrip:1", tarball.to_str().unwrap()]);
    d.create("sr", &["--image", "roundtrip:1"]);
    assert_eq!(d.ok(&["exec", "sr", "--", "cat", "/etc/motd"]), "image a\n");

    // Removal: refused while a sandbox uses the image (by any name).
    let out = d.run(&["image", "rm", &by_digest]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("sa"), "{}", stderr_of(&out));
    d.ok(&["rm", "-f", "sa"]);
    d.ok(&["image", "rm", &ra]);
    let ls = d.ok(&["image", "ls"]);
    assert!(!ls.contains(&ra), "{ls}");
    assert!(
        ls.contains("tiny:1"),
        "the same content under another name stays"
    );
    // Prune removes what no sandbox uses; sc's and sr's images stay.
    let pruned = d.ok(&["image", "prune"]);
    assert!(
        pruned.contains(&rb) && pruned.contains("tiny:1"),
        "{pruned}"
    );
    let ls = d.ok(&["image", "ls"]);
    assert!(ls.contains(&rc) && ls.contains("roundtrip:1"), "{ls}");
    assert_eq!(d.ok(&["exec", "sc", "--", "cat", "/etc/motd"]), "image c\n");
}

#[test]
fn basic_auth_logins_are_per_tenant() {
    if !can_run() {
        return;
    }
    let Some(reg) = Registry::start(Some(("alice", "s3cret"))) else {
        return;
    };
    let work = tmpdir("reg-auth");
    let a = work.path().join("a");
    simple_image(&a, &[("etc/motd", b"private\n", 0o644)], "WHICH=p");
    reg.push_layout(&a, "team/private:1");
    let d = Daemon::start();
    let r = format!("{}/team/private:1", reg.host());

    let out = d.run(&["image", "pull", &r]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("registry login"),
        "{}",
        stderr_of(&out)
    );

    let login = |pass: &str| {
        let mut cmd = d.cmd(&[
            "registry",
            "login",
            &reg.host(),
            "-u",
            "alice",
            "--password-stdin",
        ]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{pass}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    };
    login("wrong");
    let out = d.run(&["image", "pull", &r]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("refused the stored login"),
        "{}",
        stderr_of(&out)
    );
    login("s3cret");
    let ls = d.ok(&["registry", "ls"]);
    assert!(ls.contains(&reg.host()) && ls.contains("alice") && !ls.contains("s3cret"));
    d.ok(&["image", "pull", &r]);
    d.create("p", &["--image", &r]);
    assert_eq!(d.ok(&["exec", "p", "--", "cat", "/etc/motd"]), "private\n");

    // Another tenant neither sees nor uses the image pulled with the
    // default tenant's login, and its own pull has no login to use.
    d.ok(&["tenant", "create", "bob"]);
    let ls = d.ok(&["--as-tenant", "bob", "image", "ls"]);
    assert!(!ls.contains("team/private"), "{ls}");
    let out = d.run(&["--as-tenant", "bob", "create", "--name", "b", "--image", &r]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr_of(&out));
    let stolen = work.path().join("stolen.tar");
    let out = d.run(&[
        "--as-tenant",
        "bob",
        "image",
        "export",
        &r,
        "-o",
        stolen.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(!stolen.exists());
    d.ok(&["registry", "logout", &reg.host()]);
    assert!(!d.ok(&["registry", "ls"]).contains("alice"));
}

#[test]
fn index_resolves_to_amd64_and_tampered_blobs_are_refused() {
    if !can_run() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let work = tmpdir("reg-index");
    let dir = work.path().join("multi");
    let l = Layout { dir: &dir };
    let base = base_layer();
    let (m64, d64) = l.image(
        &[base.clone(), layer(&[("etc/arch", b"amd64\n", 0o644)], &[])],
        "amd64",
        "ARCH=amd64",
        true,
    );
    let (marm, darm) = l.image(
        &[base.clone(), layer(&[("etc/arch", b"arm64\n", 0o644)], &[])],
        "arm64",
        "ARCH=arm64",
        true,
    );
    // arm64 first: the pull must pick by platform, not position.
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": darm, "size": marm.len(),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": OCI_MANIFEST, "digest": d64, "size": m64.len(),
             "platform": {"architecture": "amd64", "os": "linux"}}
        ]
    }))
    .unwrap();
    let di = l.put(&index);
    l.index(&index, &di, "application/vnd.oci.image.index.v1+json");
    reg.push_layout(&dir, "multi/arch:1");

    let d = Daemon::start();
    let r = format!("{}/multi/arch:1", reg.host());
    let img: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "pull", &r, "--json"])).unwrap();
    assert_eq!(img["digest"], d64.as_str());
    d.create("m", &["--image", &r]);
    assert_eq!(d.ok(&["exec", "m", "--", "cat", "/etc/arch"]), "amd64\n");

    // A layer tampered with in the registry's storage is refused, and
    // nothing of it is kept.
    let t = work.path().join("t");
    simple_image(&t, &[("etc/motd", b"tamper me\n", 0o644)], "WHICH=t");
    reg.push_layout(&t, "bad/image:1");
    let manifest: serde_json::Value = {
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(t.join("index.json")).unwrap()).unwrap();
        let md = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
        serde_json::from_slice(&std::fs::read(t.join("blobs/sha256").join(&md[7..])).unwrap())
            .unwrap()
    };
    let top = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = reg.blob_file(&top);
    let mut data = std::fs::read(&blob).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&blob, &data).unwrap();
    let rb = format!("{}/bad/image:1", reg.host());
    let out = d.run(&["image", "pull", &rb]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("digest"), "{}", stderr_of(&out));
    assert!(!d.ok(&["image", "ls"]).contains("bad/image"));
    let left = download_files(&d.data.join("images/downloads"));
    assert!(left.is_empty(), "downloads left: {left:?}");
    assert!(!d.data.join("images/blobs/sha256").join(&top[7..]).exists());
}

#[test]
fn a_killed_pull_resumes_where_it_stopped() {
    if !can_run() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let work = tmpdir("reg-resume");
    let dir = work.path().join("big");
    // 160 MiB that do not compress, in an uncompressed layer.
    let mut big = vec![0u8; 160 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let l = Layout { dir: &dir };
    let big_layer = layer(&[("data/big", &big, 0o644)], &[]);
    drop(big);
    let size = big_layer.len() as u64;
    let (m, md) = l.image(&[base_layer(), big_layer], "amd64", "WHICH=big", false);
    l.index(&m, &md, OCI_MANIFEST);
    reg.push_layout(&dir, "big/image:1");
    std::fs::remove_dir_all(&dir).unwrap();

    let mut d = Daemon::start();
    let r = format!("{}/big/image:1", reg.host());
    let downloads = d.data.join("images/downloads");
    let mut pull = d.cmd(&["image", "pull", &r]);
    pull.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = KillOnDrop(pull.spawn().unwrap());
    // Kill the daemon once part of the big layer is on disk.
    let partial_len = || {
        download_files(&downloads)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .max()
    };
    wait_for(60, "part of the layer downloaded", || {
        partial_len().is_some_and(|n| n > (8 << 20))
    });
    d.kill9();
    drop(child);
    let had = partial_len().expect("the partial download is kept");
    assert!(had < size, "the pull finished before it was killed");
    d.restart();
    let out = d.run(&["image", "pull", &r]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    let line = err.lines().find(|l| l.starts_with("pulled ")).unwrap();
    // "(2 layers, 0 reused, 150.0MiB downloaded)": less than the layer.
    let amount = line
        .split(", ")
        .last()
        .unwrap()
        .trim_end_matches(" downloaded)");
    let (num, unit) = amount.split_at(amount.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let mult: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        u => panic!("unit {u:?} in {line:?}"),
    };
    let fetched = (num.parse::<f64>().unwrap() * mult as f64) as u64;
    assert!(
        fetched + (had / 2) < size + (2 << 20),
        "the resumed pull fetched {fetched} bytes; {had} of {size} were already there: {line}"
    );
    d.create("big", &["--image", &r]);
    assert_eq!(d.sh("big", "wc -c < /data/big"), format!("{}\n", 160 << 20));
}

/// A bearer-token front for a registry, as Docker Hub works: `/v2/`
/// requests without the token get 401 with a `Bearer realm=...` challenge;
/// the realm hands out the token for basic credentials `user:pass`; with
/// the token, requests go through to the registry (one per connection).
struct TokenFront {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

const TOKEN: &str = "t0k3n-for-tests";

impl TokenFront {
    fn start(upstream: u16, user: &str, pass: &str) -> TokenFront {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let basic = format!("Basic {}", b64(format!("{user}:{pass}").as_bytes()));
        let halt = stop.clone();
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let basic = basic.clone();
                        std::thread::spawn(move || serve_front(conn, upstream, port, &basic));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        TokenFront { port, stop }
    }
}

impl Drop for TokenFront {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn serve_front(mut conn: std::net::TcpStream, upstream: u16, port: u16, basic: &str) {
    use std::io::Read;
    conn.set_nonblocking(false).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text.split(' ').nth(1).unwrap_or("").to_string();
    let auth = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let reply = |conn: &mut std::net::TcpStream, status: &str, extra: &str, body: &str| {
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n{extra}\r\n{body}",
            body.len()
        );
    };
    if path.starts_with("/token") {
        if auth == basic {
            reply(
                &mut conn,
                "200 OK",
                "",
                &format!("{{\"token\":\"{TOKEN}\"}}"),
            );
        } else {
            reply(
                &mut conn,
                "401 Unauthorized",
                "",
                "{\"details\":\"bad credentials\"}",
            );
        }
        return;
    }
    if auth != format!("Bearer {TOKEN}") {
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"dwell-test\"\r\n"
        );
        reply(
            &mut conn,
            "401 Unauthorized",
            &challenge,
            "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}",
        );
        return;
    }
    let Ok(mut up) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let mut forwarded = String::new();
    for line in text.trim_end().lines() {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("authorization:") {
            continue;
        }
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    if up.write_all(forwarded.as_bytes()).is_err() {
        return;
    }
    let _ = std::io::copy(&mut up, &mut conn);
}

#[test]
fn bearer_token_auth() {
    if !can_run() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let work = tmpdir("reg-bearer");
    let a = work.path().join("a");
    simple_image(&a, &[("etc/motd", b"behind a token\n", 0o644)], "WHICH=t");
    reg.push_layout(&a, "team/tokened:1");
    let front = TokenFront::start(reg.port, "carol", "pw");
    let host = format!("127.0.0.1:{}", front.port);
    let r = format!("{host}/team/tokened:1");
    let d = Daemon::start();

    let out = d.run(&["image", "pull", &r]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr_of(&out));
    let login = |pass: &str| {
        let mut cmd = d.cmd(&[
            "registry",
            "login",
            &host,
            "-u",
            "carol",
            "--password-stdin",
        ]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pass.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    login("not-it");
    let out = d.run(&["image", "pull", &r]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr_of(&out));
    login("pw");
    let img: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "pull", &r, "--json"])).unwrap();
    assert_eq!(img["layers"].as_array().unwrap().len(), 2);
    d.create("t", &["--image", &r]);
    assert_eq!(
        d.ok(&["exec", "t", "--", "cat", "/etc/motd"]),
        "behind a token\n"
    );
}

#[test]
fn daemons_share_pulled_layers_through_the_object_store() {
    if !can_run() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let Some(moto) = Moto::start_for_daemons() else {
        return;
    };
    let work = tmpdir("reg-share");
    let a = work.path().join("a");
    simple_image(&a, &[("etc/motd", b"shared\n", 0o644)], "WHICH=s");
    reg.push_layout(&a, "team/shared:1");
    let endpoint = moto.endpoint();
    let flags = [
        "--object-store",
        "s3://dwell/images",
        "--s3-endpoint",
        &endpoint,
    ];
    let one = Daemon::start_with(&flags);
    let two = Daemon::start_with(&flags);
    let r = format!("{}/team/shared:1", reg.host());
    one.ok(&["image", "pull", &r]);
    // Tamper with every layer in the registry: the second daemon can only
    // succeed by taking the layers from the object store (the registry
    // still answers the manifest and config, as it decides access).
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("index.json")).unwrap()).unwrap();
    let md = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("blobs/sha256").join(&md[7..])).unwrap())
            .unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        let blob = reg.blob_file(l["digest"].as_str().unwrap());
        let mut data = std::fs::read(&blob).unwrap();
        let n = data.len();
        data[n / 2] ^= 0xff;
        std::fs::write(&blob, &data).unwrap();
    }
    let out = two.run(&["image", "pull", &r]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("2 from the object store"),
        "{}",
        stderr_of(&out)
    );
    two.create("s", &["--image", &r]);
    assert_eq!(two.ok(&["exec", "s", "--", "cat", "/etc/motd"]), "shared\n");
}

/// The layer digests of the image manifest `digest` in the layout `dir`.
fn layer_digests(dir: &Path, digest: &str) -> Vec<String> {
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap(),
    )
    .unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn private_layers_never_reach_another_tenant_by_digest() {
    if !can_run() {
        return;
    }
    let Some(private) = Registry::start(Some(("alice", "s3cret"))) else {
        return;
    };
    let Some(own) = Registry::start(None) else {
        return;
    };
    let work = tmpdir("reg-leak");
    let secret: &[u8] = b"top secret of the default tenant\n";
    let a = work.path().join("a");
    let digest_a = simple_image(&a, &[("etc/secret", secret, 0o644)], "WHICH=a");
    private.push_layout(&a, "team/private:1");
    let d = Daemon::start();
    let mut cmd = d.cmd(&[
        "registry",
        "login",
        &private.host(),
        "-u",
        "alice",
        "--password-stdin",
    ]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    d.ok(&[
        "image",
        "pull",
        &format!("{}/team/private:1", private.host()),
    ]);

    // The attacker's own anonymous registry serves a manifest (with its
    // own config) naming the private layers, whose blobs it does not have.
    let b = work.path().join("b");
    let digest_b = simple_image(&b, &[("etc/secret", secret, 0o644)], "WHICH=b");
    own.push_layout(&b, "bob/steal:1");
    let layers = layer_digests(&b, &digest_b);
    assert_eq!(
        layers,
        layer_digests(&a, &digest_a),
        "same layers as the private image"
    );
    for l in &layers {
        std::fs::remove_file(own.blob_file(l)).unwrap();
    }
    let stolen = format!("{}/bob/steal:1", own.host());
    d.ok(&["tenant", "create", "bob"]);
    let out = d.run(&["--as-tenant", "bob", "image", "pull", &stolen]);
    assert!(
        !out.status.success(),
        "bob's pull reused the private layers: {}",
        stderr_of(&out)
    );
    let ls = d.ok(&["--as-tenant", "bob", "image", "ls"]);
    assert!(!ls.contains("bob/steal"), "{ls}");
    let out = d.run(&[
        "--as-tenant",
        "bob",
        "create",
        "--name",
        "b",
        "--image",
        &stolen,
    ]);
    assert!(!out.status.success(), "{}", stderr_of(&out));

    // By digest, with no login: the private registry says no.
    let by_digest = format!("{}/team/private@{digest_a}", private.host());
    let out = d.run(&["--as-tenant", "bob", "image", "pull", &by_digest]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr_of(&out));
    assert!(!d
        .ok(&["--as-tenant", "bob", "image", "ls"])
        .contains("team/private"));

    // The owner may reuse its own layers through the same manifest; the
    // image stays the owner's, so bob still cannot use or export it.
    let out = d.run(&["image", "pull", &stolen]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        reused(&stderr_of(&out)),
        layers.len(),
        "{}",
        stderr_of(&out)
    );
    let ls = d.ok(&["--as-tenant", "bob", "image", "ls"]);
    assert!(!ls.contains("bob/steal"), "{ls}");
    let file = work.path().join("stolen.tar");
    let out = d.run(&[
        "--as-tenant",
        "bob",
        "image",
        "export",
        &stolen,
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(!file.exists());
    let out = d.run(&["--as-tenant", "bob", "image", "pull", &stolen]);
    assert!(!out.status.success(), "{}", stderr_of(&out));
}
