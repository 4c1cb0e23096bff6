//! Host files are private (issue 11, item 6): what a sandbox leaves on the
//! host (its volume, runtime configs with its environment, snapshot chunks)
//! and the daemon's secrets are readable by root only; snapshots are
//! encrypted by default with per-tenant keys, so neither a host user nor
//! another tenant learns their content or whether it was stored before;
//! snapshots written before the change still restore.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::*;

/// A string written inside sandboxes that must never appear on the host in
/// clear (split so this test binary itself does not contain it whole).
fn marker() -> String {
    format!("{}-{}", "dwell-host-files", "plaintext-7f3a")
}

/// Write the marker once, between random bytes (so no compressor hides it),
/// into a file of the sandbox's volume.
fn plant_marker(d: &Daemon, sb: &str) {
    d.sh(
        sb,
        &format!(
            "head -c 100000 /dev/urandom > /root/m && printf %s {} >> /root/m && \
             head -c 100000 /dev/urandom >> /root/m && sync",
            marker()
        ),
    );
}

/// Every regular file and directory under `root`, not crossing into other
/// file systems (mounted volumes and rootfs overlays are the sandboxes'
/// own files) and not following symlinks.
fn walk(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let dev = std::fs::metadata(root).unwrap().dev();
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.dev() != dev {
                continue;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), m));
        }
    }
    out
}

/// Why a path may be open to group/others, or `None` if it may not.
fn allowed_open(data: &Path, p: &Path) -> Option<&'static str> {
    let rel = p.strip_prefix(data).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = p.file_name()?.to_str()?;
    if first == "bin" && name.starts_with("dwell-agent-") {
        // Bind-mounted as every sandbox's PID 1; a sandbox's root may be an
        // unprivileged host uid, which needs read and execute on the file.
        return Some("the agent binary is executed inside sandboxes");
    }
    if first == "images" && rel.components().count() >= 3 {
        // images/<kind>/<id>/...: the files sandboxes see as their image
        // (the overlay's lower layers, from their root directory down), with
        // the modes they have in it. Image metadata (images/<name>.json) is
        // private like the rest.
        return Some("image content keeps the modes sandboxes see");
    }
    None
}

fn assert_private(d: &Daemon) {
    let data = &d.data;
    let mode = std::fs::metadata(data).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700, "the data dir is {mode:o}, not 0700");
    let mut open = Vec::new();
    for (p, m) in walk(data) {
        if m.mode() & 0o077 != 0 && !m.file_type().is_symlink() && allowed_open(data, &p).is_none()
        {
            open.push(format!("{} {:o}", p.display(), m.mode() & 0o7777));
        }
    }
    assert!(
        open.is_empty(),
        "open to group/others:\n{}",
        open.join("\n")
    );
    let secret = |p: PathBuf| {
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(m.is_file(), "{}", p.display());
        assert_eq!(m.permissions().mode() & 0o7777, 0o600, "{}", p.display());
    };
    for f in ["dwell.db", "secret.key", "snapshot.key"] {
        secret(data.join(f));
    }
    for e in std::fs::read_dir(data.join("sandboxes")).unwrap().flatten() {
        for f in ["config.json", "sandbox.json", "bundle/config.json"] {
            if e.path().join(f).exists() {
                secret(e.path().join(f));
            }
        }
    }
}

/// Every chunk object of the local store.
fn chunk_files(d: &Daemon) -> Vec<PathBuf> {
    walk(&d.data.join("snapshots/chunks"))
        .into_iter()
        .filter(|(_, m)| m.is_file())
        .map(|(p, _)| p)
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Host-side overlay mounts (gVisor's rootfs) under the data dir: (mount
/// point, options).
fn overlays_under(data: &Path) -> Vec<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let data = data.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            (f.get(sep + 1) == Some(&"overlay") && f[4].starts_with(data.as_str()))
                .then(|| (f[4].to_string(), f[5].to_string()))
        })
        .collect()
}

/// What `snapshot inspect` tells the snapshot's tenant.
fn summary(d: &Daemon, snap: &str) -> serde_json::Value {
    serde_json::from_str(&d.ok(&["snapshot", "inspect", snap, "--json"])).unwrap()
}

/// The stored manifest of the snapshot with id `id` (local store).
fn stored_manifest(d: &Daemon, id: &str) -> serde_json::Value {
    let p = d
        .data
        .join("snapshots/manifests")
        .join(format!("{id}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// The stored manifest of the default tenant's snapshot `snap`.
fn manifest(d: &Daemon, snap: &str) -> serde_json::Value {
    stored_manifest(d, summary(d, snap)["id"].as_str().unwrap())
}

fn chunk_ids(m: &serde_json::Value) -> BTreeSet<String> {
    m["extents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["chunk"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_data_dir_keys_configs_and_chunks_are_private_on_every_runtime() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--listen", &format!("127.0.0.1:{}", free_port())]);
    wait_for(10, "admin.key", || d.data.join("admin.key").exists());
    for rt in runtimes() {
        let sb = format!("hf-{rt}");
        d.create(
            &sb,
            &["--isolation", rt, "--env", "PLAIN_ENV=visible-to-root-only"],
        );
        // Inside, files are made with the usual 022 (the daemon's 077 is
        // its own).
        assert_eq!(d.sh(&sb, "umask").trim(), "0022", "{rt}");
        assert_eq!(
            d.sh(&sb, "rm -f /tmp/u && touch /tmp/u && mkdir -p /tmp/ud && stat -c %a /tmp/u /tmp/ud /tmp"),
            "644\n755\n1777\n",
            "{rt}"
        );
        plant_marker(&d, &sb);
        d.ok(&["snapshot", "create", &sb, "--name", &format!("snap-{rt}")]);
        let m = manifest(&d, &format!("snap-{rt}"));
        assert_eq!(m["version"], 3, "{m}");
        assert_eq!(m["encryption"]["key_derivation"], "master-tenant-v1", "{m}");
        if rt == "gvisor" {
            // A setuid file the sandbox makes lives on the host-side
            // overlay; it must be inert there.
            d.sh(&sb, "cp /bin/true /root/suid && chmod 4755 /root/suid");
            let ov = overlays_under(&d.data);
            assert!(!ov.is_empty(), "no host-side overlay of the gVisor sandbox");
            for (at, opts) in ov {
                let o: Vec<&str> = opts.split(',').collect();
                assert!(
                    o.contains(&"nosuid") && o.contains(&"nodev"),
                    "host-side overlay {at} is mounted {opts}"
                );
            }
        }
    }
    d.ok(&["snapshot", "create", "hf-namespace", "--name", "again"]);
    assert_private(&d);
    secret_file(&d.data.join("admin.key"));
    let chunks = chunk_files(&d);
    assert!(!chunks.is_empty());
    for c in &chunks {
        let bytes = std::fs::read(c).unwrap();
        assert!(
            !contains(&bytes, marker().as_bytes()),
            "{} holds the sandbox's data in clear",
            c.display()
        );
    }
    // The sandboxes and a neighbour still work; encrypted snapshots restore.
    d.create("hf-neighbour", &[]);
    assert_eq!(d.sh("hf-neighbour", "echo ok"), "ok\n");
    for rt in runtimes() {
        let copy = format!("hf-copy-{rt}");
        d.ok(&["create", "--from", &format!("snap-{rt}"), "--name", &copy]);
        let got = d.sh(&copy, &format!("grep -c {} /root/m", marker()));
        assert_eq!(got, "1\n", "{rt}");
        assert_eq!(d.sh(&format!("hf-{rt}"), "echo ok"), "ok\n");
    }
}

fn secret_file(p: &Path) {
    let m = std::fs::symlink_metadata(p).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o600, "{}", p.display());
}

#[test]
fn without_encryption_chunks_hold_plaintext() {
    // The control for the test above: the marker is findable in clear chunks,
    // so its absence there means something.
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--no-encrypt-snapshots"]);
    d.create("clear", &[]);
    plant_marker(&d, "clear");
    d.ok(&["snapshot", "create", "clear", "--name", "c"]);
    let m = manifest(&d, "c");
    assert!(m["encryption"].is_null(), "{m}");
    assert_eq!(m["version"], 1, "{m}");
    assert!(chunk_files(&d)
        .iter()
        .any(|c| contains(&std::fs::read(c).unwrap(), marker().as_bytes())));
    // Still private on the host.
    assert_private(&d);
}

#[test]
fn identical_content_in_two_tenants_shares_no_chunk() {
    if !can_run() {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(&["--listen", &addr]);
    wait_for(10, "TCP listener", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let ok = |key: &str, args: &[&str]| {
        let out = d
            .cmd(args)
            .env("DWELL_HOST", &addr)
            .env("DWELL_API_KEY", key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    // The same bytes in both tenants' volumes: 4 MiB of a fixed pattern.
    let same = "yes dwell-same-content-in-two-tenants | head -c 4194304 > /root/same && sync";
    let mut ids = Vec::new();
    for t in ["acme", "globex"] {
        let key = d.ok(&["tenant", "create", t]).trim().to_string();
        ok(
            &key,
            &["create", "--name", t, "--memory", "128M", "--disk", "256M"],
        );
        ok(&key, &["exec", t, "--", "sh", "-c", same]);
        ok(&key, &["snapshot", "create", t, "--name", "s1"]);
        ok(&key, &["snapshot", "create", t, "--name", "s2"]);
        let m = |s: &str| -> serde_json::Value {
            serde_json::from_str(&ok(&key, &["snapshot", "inspect", s, "--json"])).unwrap()
        };
        let (s1, s2) = (m("s1"), m("s2"));
        // What a tenant is told: it uploaded everything it stored the first
        // time (nothing counted as already there from the other tenant),
        // and within the tenant, dedup works.
        assert_eq!(s1["uploaded_bytes"], s1["stored_bytes"], "{t}: {s1}");
        assert!(
            s2["uploaded_bytes"].as_u64().unwrap() < s1["uploaded_bytes"].as_u64().unwrap(),
            "{t}: no dedup within the tenant: {s2}"
        );
        let (s1, s2) = (
            stored_manifest(&d, s1["id"].as_str().unwrap()),
            stored_manifest(&d, s2["id"].as_str().unwrap()),
        );
        assert!(!chunk_ids(&s1).is_disjoint(&chunk_ids(&s2)));
        ids.push(chunk_ids(&s1));
        ok(&key, &["rm", "-f", t]);
    }
    let shared: Vec<_> = ids[0].intersection(&ids[1]).collect();
    assert!(shared.is_empty(), "tenants share chunks: {shared:?}");
}

#[test]
fn snapshots_written_before_the_master_key_still_restore() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("old", &[]);
    plant_marker(&d, "old");
    d.ok(&["snapshot", "create", "old", "--name", "now"]);
    // Rebuild the same volume as the two formats older daemons wrote: a
    // plaintext version-1 snapshot and one sealed with the tenant key
    // derived from secret.key (versions 1 and 2).
    let store = dwell_snapshot::LocalStore::open(d.data.join("snapshots")).unwrap();
    let m = dwell_snapshot::load(&store, summary(&d, "now")["id"].as_str().unwrap(), None).unwrap();
    let master: [u8; 32] = std::fs::read(d.data.join("snapshot.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let master = dwell_snapshot::MasterKey::from_bytes(master).tenant("default");
    let scratch = tempfile::tempdir_in(&d.data).unwrap();
    let image = scratch.path().join("volume.img");
    dwell_snapshot::restore(
        &m,
        &store,
        &image,
        &dwell_snapshot::RestoreOptions {
            key: Some(&master),
            ..Default::default()
        },
    )
    .unwrap();
    let legacy = dwell_control::secrets::Sealer::load_or_create(&d.data.join("secret.key"))
        .unwrap()
        .snapshot_key("default");
    for (name, key) in [("old-plain", None), ("old-keyed", Some(&legacy))] {
        let opts = dwell_snapshot::CreateOptions {
            labels: [("name".to_string(), name.to_string())].into(),
            key,
            ..Default::default()
        };
        let old = dwell_snapshot::create(&image, &store, &opts).unwrap();
        assert_eq!(old.version, 1, "{name}");
        assert!(old
            .encryption
            .as_ref()
            .is_none_or(|e| e.key_derivation.is_none()));
        let sb = format!("from-{name}");
        d.ok(&["create", "--from", name, "--name", &sb]);
        assert_eq!(
            d.sh(&sb, &format!("grep -c {} /root/m", marker())),
            "1\n",
            "{name}"
        );
    }
    // A key that is neither is refused as a wrong key, not as corruption.
    let stranger = dwell_snapshot::MasterKey::from_bytes([9; 32]).tenant("default");
    let opts = dwell_snapshot::CreateOptions {
        labels: [("name".to_string(), "stranger".to_string())].into(),
        key: Some(&stranger),
        ..Default::default()
    };
    dwell_snapshot::create(&image, &store, &opts).unwrap();
    let out = d.run(&["create", "--from", "stranger", "--name", "nope"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains(stranger.fingerprint()), "{e}");
}
