//! OCI layout and `docker save` imports built in the test itself: layer
//! sharing, whiteouts and opaque directories (checked through a real
//! overlay mount), digest verification and path-safety refusals.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::{is_root, MountGuard};
use dwell_storage::{ExportFormat, ImageStore, StorageError};
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A tar entry to put in a test layer.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a str, u32, u64),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str),
    /// Written with a raw header so the tar writer's own checks do not
    /// stop it.
    RawFile(&'a str, &'a str),
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, data, mode, uid) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*uid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, data.as_bytes()).unwrap();
            }
            E::Sym(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Hard(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                h.set_mode(0o644);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Char(p) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_size(0);
                h.set_mode(0o666);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::RawFile(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                let name = &mut h.as_old_mut().name;
                name.fill(0);
                name[..p.len()].copy_from_slice(p.as_bytes());
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The three test layers, bottom first.
fn test_layers() -> Vec<Vec<u8>> {
    vec![
        layer(&[
            E::Dir("a"),
            E::File("a/keep.txt", "keep", 0o644, 0),
            E::File("a/gone.txt", "gone", 0o644, 0),
            E::Hard("a/hard.txt", "a/keep.txt"),
            E::Sym("a/sl", "keep.txt"),
            E::Dir("opq"),
            E::File("opq/old.txt", "old", 0o644, 0),
            E::Dir("bin"),
            E::File("bin/tool", "#!/bin/sh\n", 0o4755, 0),
            E::File("home/user/owned", "mine", 0o600, 1000),
            E::Char("dev/null"),
        ]),
        layer(&[
            E::File("a/.wh.gone.txt", "", 0o644, 0),
            E::File("opq/.wh..wh..opq", "", 0o644, 0),
            E::File("opq/new.txt", "new", 0o644, 0),
            E::File("a/new.txt", "new", 0o644, 0),
        ]),
        layer(&[E::Dir("c"), E::File("c/file", "top", 0o644, 0)]),
    ]
}

fn config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "FOO=bar"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/a"
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>()
        }
    }))
    .unwrap()
}

/// Writes an OCI layout with `layers` (the last one gzip-compressed).
fn write_oci(dir: &Path, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let h = sha(b);
        fs::write(blobs.join(&h), b).unwrap();
        h
    };
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let mut descs = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (blob, mt) = if i == layers.len() - 1 {
            (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (l.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let h = put(&blob);
        descs.push(serde_json::json!({"mediaType": mt, "digest": format!("sha256:{h}"), "size": blob.len()}));
    }
    let cfg = config(&diff_ids);
    let ch = put(&cfg);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{ch}"), "size": cfg.len()},
        "layers": descs
    }))
    .unwrap();
    let mh = put(&manifest);
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{mh}"), "size": manifest.len()}]
        }))
        .unwrap(),
    )
    .unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Writes a `docker save` tarball with `layers` (uncompressed).
fn write_docker_save(file: &Path, layers: &[Vec<u8>]) {
    write_docker_save_with(file, layers, config)
}

/// Writes a `docker save` tarball whose config `make_config` makes from
/// the diff_ids.
fn write_docker_save_with(file: &Path, layers: &[Vec<u8>], make_config: fn(&[String]) -> Vec<u8>) {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let cfg = make_config(&diff_ids);
    let cfg_name = format!("{}.json", sha(&cfg));
    let mut b = tar::Builder::new(fs::File::create(file).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let n = format!("layer{i}/layer.tar");
        add(&n, l);
        names.push(n);
    }
    add(&cfg_name, &cfg);
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": cfg_name, "RepoTags": ["test:latest"], "Layers": names}
    ]))
    .unwrap();
    add("manifest.json", &manifest);
    b.into_inner().unwrap().sync_all().unwrap();
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = CString::new(p.to_str().unwrap()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid strings and buffer.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

struct Fixture {
    dir: tempfile::TempDir,
    store: ImageStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("dwell-oci-test")
        .tempdir_in("/var/tmp")
        .unwrap();
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    Fixture { dir, store }
}

#[test]
fn oci_and_docker_imports_share_layers_and_whiteouts_work() {
    if !is_root() {
        return;
    }
    let fx = fixture();
    let layers = test_layers();
    let oci = fx.dir.path().join("oci");
    write_oci(&oci, &layers);
    let tarball = fx.dir.path().join("save.tar");
    write_docker_save(&tarball, &layers);

    let a = fx.store.import("from-oci", &oci).unwrap();
    let b = fx.store.import("from-docker:v1", &tarball).unwrap();
    assert_eq!(a.layers.len(), 3);
    assert_eq!(a.layers, b.layers, "layers are stored once and shared");
    assert_eq!(a.id, b.id);
    assert_eq!(a.env, vec!["PATH=/usr/bin:/bin", "FOO=bar"]);
    assert_eq!(a.cmd, vec!["/bin/sh"]);
    assert_eq!(a.workdir.as_deref(), Some("/a"));
    assert!(a.source.starts_with("oci-layout:"));
    assert!(b.source.starts_with("docker-archive:"));
    assert_eq!(
        fs::read_dir(fx.store.root().join("layers"))
            .unwrap()
            .count(),
        3
    );
    // Topmost first.
    let (top, mid, bottom) = (&a.layers[0], &a.layers[1], &a.layers[2]);
    assert!(top.join("c/file").is_file());
    assert!(bottom.join("a/keep.txt").is_file());

    // Bottom layer: modes, owners, links; device nodes skipped.
    let tool = fs::metadata(bottom.join("bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4755);
    let owned = fs::metadata(bottom.join("home/user/owned")).unwrap();
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o777),
        (1000, 1000, 0o600)
    );
    assert_eq!(
        fs::metadata(bottom.join("a/hard.txt")).unwrap().ino(),
        fs::metadata(bottom.join("a/keep.txt")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(bottom.join("a/sl")).unwrap(),
        Path::new("keep.txt")
    );
    assert!(!bottom.join("dev/null").exists());

    // Middle layer: overlay whiteout and opaque dir.
    let wh = fs::symlink_metadata(mid.join("a/gone.txt")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!mid.join("a/.wh.gone.txt").exists());
    assert_eq!(
        getxattr(&mid.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!mid.join("opq/.wh..wh..opq").exists());

    // Through a real overlay mount the whiteouts hide the lower files.
    let target = fx.dir.path().join("merged");
    fs::create_dir(&target).unwrap();
    let lower: Vec<String> = a.layers.iter().map(|p| p.display().to_string()).collect();
    let opts = CString::new(format!("lowerdir={}", lower.join(":"))).unwrap();
    let tgt = CString::new(target.to_str().unwrap()).unwrap();
    // SAFETY: valid C strings.
    let rc = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            tgt.as_ptr(),
            c"overlay".as_ptr(),
            libc::MS_RDONLY,
            opts.as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "overlay mount: {}", std::io::Error::last_os_error());
    let _guard = MountGuard(target.clone());
    assert_eq!(
        fs::read_to_string(target.join("a/keep.txt")).unwrap(),
        "keep"
    );
    assert!(
        !target.join("a/gone.txt").exists(),
        "whiteout hides the file"
    );
    assert!(target.join("a/new.txt").exists());
    assert!(
        !target.join("opq/old.txt").exists(),
        "opaque dir hides lower content"
    );
    assert!(target.join("opq/new.txt").exists());
    assert_eq!(fs::read_to_string(target.join("c/file")).unwrap(), "top");
    drop(_guard);

    // Listing, removal and layer garbage collection.
    let names: Vec<String> = fx
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec!["host", "from-docker:v1", "from-oci:latest"]);
    assert!(matches!(
        fx.store.import("docker.io/library/from-oci", &oci),
        Err(StorageError::ImageExists(_))
    ));
    fx.store.remove("from-oci").unwrap();
    assert!(
        a.layers.iter().all(|l| l.is_dir()),
        "still used by from-docker:v1"
    );
    assert!(matches!(
        fx.store.get("from-oci"),
        Err(StorageError::ImageNotFound(_))
    ));
    fx.store.remove("from-docker:v1").unwrap();
    assert_eq!(
        fs::read_dir(fx.store.root().join("layers"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(fx.store.root().join("tmp")).unwrap().count(),
        0
    );
    assert_eq!(
        fs::read_dir(fx.store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0,
        "blobs are collected with their last image"
    );
}

/// References find images under every spelling; blobs are kept once and
/// exported back as an OCI layout or a docker-save archive that imports
/// again; images stored before references keep working; prune keeps what
/// is in use.
#[test]
fn references_blobs_export_and_prune() {
    if !is_root() {
        return;
    }
    let fx = fixture();
    let layers = test_layers();
    let oci = fx.dir.path().join("oci");
    write_oci(&oci, &layers);
    let a = fx.store.import("team/tool:1", &oci).unwrap();
    assert_eq!(a.name, "team/tool:1");
    assert_eq!(a.reference.as_deref(), Some("docker.io/team/tool:1"));
    let digest = a.digest.clone().unwrap();
    for r in [
        "team/tool:1".to_string(),
        "docker.io/team/tool:1".to_string(),
        "index.docker.io/team/tool:1".to_string(),
        format!("team/tool@{digest}"),
        format!("docker.io/team/tool:9@{digest}"),
    ] {
        assert_eq!(fx.store.get(&r).unwrap().id, a.id, "{r}");
    }
    assert!(matches!(
        fx.store.get("team/tool:2"),
        Err(StorageError::ImageNotFound(_))
    ));
    let unknown = format!("team/tool@sha256:{}", "0".repeat(64));
    assert!(matches!(
        fx.store.get(&unknown),
        Err(StorageError::ImageNotFound(_))
    ));
    assert!(matches!(
        fx.store.get("Bad//Ref"),
        Err(StorageError::InvalidReference { .. })
    ));
    // 3 layers + config + manifest, once each.
    let blobs = fx.store.root().join("blobs/sha256");
    assert_eq!(fs::read_dir(&blobs).unwrap().count(), 5);

    // Export as a layout (hard links) and import it back under a new name.
    let out = fx.dir.path().join("exported");
    fx.store.export_layout("team/tool:1", &out).unwrap();
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], digest.as_str());
    assert_eq!(
        idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    assert!(out.join("oci-layout").is_file());
    assert!(
        fx.store.export_layout("team/tool:1", &out).is_err(),
        "not empty"
    );
    let b = fx.store.import("copy:1", &out).unwrap();
    assert_eq!(
        (b.id.clone(), b.layers.clone()),
        (a.id.clone(), a.layers.clone())
    );
    assert_eq!(b.digest, a.digest);
    assert_eq!(fs::read_dir(&blobs).unwrap().count(), 5, "shared");

    // A docker-save archive of it imports too.
    let tarball = fx.dir.path().join("saved.tar");
    let mut f = fs::File::create(&tarball).unwrap();
    fx.store
        .export_archive("copy:1", ExportFormat::Docker, &mut f)
        .unwrap();
    drop(f);
    let c = fx.store.import("from-archive:1", &tarball).unwrap();
    assert_eq!(c.id, a.id);
    assert!(fx
        .store
        .export_layout("host", &fx.dir.path().join("h"))
        .is_err());

    // An image stored before references: found by its old name.
    let mut legacy = a.clone();
    legacy.name = "Old_Name".to_string();
    legacy.reference = None;
    legacy.digest = None;
    legacy.blobs.clear();
    fs::write(
        fx.store.root().join("images/Old_Name.json"),
        serde_json::to_vec(&legacy).unwrap(),
    )
    .unwrap();
    assert_eq!(fx.store.get("Old_Name").unwrap().name, "Old_Name");
    assert_eq!(
        fx.store.key_of("Old_Name").unwrap().as_deref(),
        Some("Old_Name")
    );
    assert_eq!(
        fx.store.key_of("docker.io/team/tool:1").unwrap(),
        fx.store.key_of(&format!("team/tool@{digest}")).unwrap()
    );

    // Prune keeps what is in use (here: copy:1) and collects the rest.
    let removed = fx.store.prune(&|i| i.name == "copy:1").unwrap();
    let mut names: Vec<String> = removed.into_iter().map(|i| i.name).collect();
    names.sort();
    assert_eq!(names, vec!["Old_Name", "from-archive:1", "team/tool:1"]);
    assert_eq!(fs::read_dir(&blobs).unwrap().count(), 5);
    assert!(b.layers.iter().all(|l| l.is_dir()));
    fx.store.remove("copy:1").unwrap();
    assert_eq!(fs::read_dir(&blobs).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(fx.store.root().join("layers"))
            .unwrap()
            .count(),
        0
    );
}

/// Imports must fail for each malicious layer and leave nothing behind.
#[test]
fn unsafe_layers_are_refused() {
    if !is_root() {
        return;
    }
    let fx = fixture();
    let outside = fx.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            layer(&[E::Dir("a"), E::RawFile("../evil", "pwned")]),
        ),
        (
            "nested-dotdot",
            layer(&[E::RawFile("a/../../evil", "pwned")]),
        ),
        (
            "absolute",
            layer(&[E::RawFile("/tmp/dwell-evil-abs", "pwned")]),
        ),
        (
            "symlink-trick",
            layer(&[
                E::Sym("esc", outside.to_str().unwrap()),
                E::RawFile("esc/evil", "pwned"),
            ]),
        ),
        (
            "hardlink-escape",
            layer(&[E::Hard("h", "../../../../etc/passwd")]),
        ),
    ];
    for (name, bad) in cases {
        let src = fx.dir.path().join(format!("oci-{name}"));
        write_oci(&src, &[test_layers().remove(0), bad]);
        let err = fx.store.import(name, &src).unwrap_err();
        println!("{name}: {err}");
        assert!(
            matches!(err, StorageError::UnsafePath { .. }),
            "{name}: {err}"
        );
        assert!(matches!(
            fx.store.get(name),
            Err(StorageError::ImageNotFound(_))
        ));
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!Path::new("/tmp/dwell-evil-abs").exists());
    let tmp = fx.store.root().join("tmp");
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "staging cleaned");
    let layers = fx.store.root().join("layers");
    assert_eq!(
        fs::read_dir(&layers).unwrap().count(),
        0,
        "no orphan layers"
    );
    assert!(!fx.store.root().join("evil").exists());
    assert!(!fx.store.root().join("tmp/../evil").exists());
    assert!(!fx.dir.path().join("evil").exists());
}

#[test]
fn corrupt_blobs_and_bad_sources_fail_loudly() {
    if !is_root() {
        return;
    }
    let fx = fixture();
    let layers = test_layers();
    let oci = fx.dir.path().join("oci");
    write_oci(&oci, &layers);
    // Corrupt the bottom layer blob in place (its name keeps the old digest).
    // Once in a header (the tar breaks), once in file content (it does not).
    let blob = oci.join("blobs/sha256").join(sha(&layers[0]));
    let original = fs::read(&blob).unwrap();
    for needle in [&b"keep.txt"[..], &b"#!/bin/sh"[..]] {
        let mut data = original.clone();
        let pos = data
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        data[pos] ^= 0x20;
        fs::write(&blob, &data).unwrap();
        let err = fx.store.import("corrupt", &oci).unwrap_err();
        println!("{err}");
        assert!(matches!(err, StorageError::DigestMismatch { .. }), "{err}");
        assert_eq!(
            fs::read_dir(fx.store.root().join("layers"))
                .unwrap()
                .count(),
            0
        );
    }
    fs::write(&blob, &original).unwrap();

    let empty: PathBuf = fx.dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let err = fx.store.import("empty", &empty).unwrap_err();
    println!("{err}");
    assert!(matches!(err, StorageError::BadImage { .. }));
    assert!(matches!(
        fx.store.import("host", &oci),
        Err(StorageError::InvalidName { .. })
    ));
    assert!(matches!(
        fx.store.import("A//b", &oci),
        Err(StorageError::InvalidReference { .. })
    ));
    assert!(matches!(
        fx.store.import("missing", Path::new("/nonexistent/dwell")),
        Err(StorageError::BadImage { .. })
    ));
    assert_eq!(
        fs::read_dir(fx.store.root().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn a_config_with_huge_env_or_labels_is_refused() {
    if !is_root() {
        return;
    }
    // What a hostile registry or tarball would put in the metadata every
    // listing parses: 5 000 env entries, or 1 MiB of labels.
    fn many_env(diff_ids: &[String]) -> Vec<u8> {
        let mut c: serde_json::Value = serde_json::from_slice(&config(diff_ids)).unwrap();
        c["config"]["Env"] = (0..5000).map(|i| format!("V{i}=x")).collect();
        serde_json::to_vec(&c).unwrap()
    }
    fn big_labels(diff_ids: &[String]) -> Vec<u8> {
        let mut c: serde_json::Value = serde_json::from_slice(&config(diff_ids)).unwrap();
        c["config"]["Labels"] = serde_json::json!({"a": "x".repeat(1 << 20)});
        serde_json::to_vec(&c).unwrap()
    }
    let f = fixture();
    for (i, (make, says)) in [
        (many_env as fn(&[String]) -> Vec<u8>, "Env has 5000 entries"),
        (big_labels, "Labels has 1 entries"),
    ]
    .into_iter()
    .enumerate()
    {
        let tar = f.dir.path().join(format!("bad{i}.tar"));
        write_docker_save_with(&tar, &test_layers()[..1], make);
        let e = f
            .store
            .import(&format!("bad{i}"), &tar)
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{e}");
        assert!(
            f.store.get(&format!("bad{i}")).is_err(),
            "the image was kept"
        );
    }
    // The usual config still imports.
    let ok = f.dir.path().join("ok.tar");
    write_docker_save(&ok, &test_layers()[..1]);
    f.store.import("ok", &ok).unwrap();
}

/// An image built over a built-in image shares the built-in's own layer
/// directories, so removing the built-in one is refused while such an
/// image is stored (naming it); once it is gone, the removal goes through.
/// An image built over `host` blocks `host` but not `host-user`.
#[test]
fn a_builtin_image_with_images_built_on_it_is_not_removed() {
    if !is_root() {
        return;
    }
    let fx = fixture();
    let oci = fx.dir.path().join("oci");
    write_oci(&oci, &test_layers()[..1]);
    let user = fx.store.host_user().unwrap();
    let host = fx.store.host().unwrap();
    let built = fx
        .store
        .import_over("team/app:1", &oci, &user, false, None)
        .unwrap();
    assert!(built.layers.ends_with(&user.layers), "{:?}", built.layers);

    for builtin in ["host-user", "host"] {
        let e = fx.store.remove(builtin).unwrap_err();
        match &e {
            StorageError::ImageIsBase { image, dependents } => {
                assert_eq!(image, builtin);
                assert_eq!(dependents, &["team/app:1".to_string()]);
            }
            other => panic!("{builtin}: {other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("\"team/app:1\"") && msg.contains("dwell image rm"),
            "{msg}"
        );
    }
    for l in &built.layers {
        assert!(l.is_dir(), "{} went", l.display());
    }
    assert_eq!(fx.store.get("team/app:1").unwrap(), built);

    // Over `host` only: `host-user` may go (its layer is not shared), `host`
    // may not.
    fx.store.remove("team/app:1").unwrap();
    let on_host = fx
        .store
        .import_over("team/plain:1", &oci, &host, false, None)
        .unwrap();
    fx.store.remove("host-user").unwrap();
    assert!(!user.layers[0].exists(), "the account layer stayed");
    assert!(matches!(
        fx.store.remove("host"),
        Err(StorageError::ImageIsBase { .. })
    ));
    assert!(on_host.layers.iter().all(|l| l.is_dir()));

    // A base whose layers went meanwhile is refused, not stacked on.
    let e = fx
        .store
        .import_over("team/late:1", &oci, &user, false, None)
        .unwrap_err();
    assert!(
        matches!(e, StorageError::BadImage { .. }) && e.to_string().contains("build again"),
        "{e}"
    );
    assert!(fx.store.get("team/late:1").is_err());

    // No dependents left: both go.
    fx.store.remove("team/plain:1").unwrap();
    fx.store.remove("host").unwrap();
    assert!(!host.layers[0].exists());
}
