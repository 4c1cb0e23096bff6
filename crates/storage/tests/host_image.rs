//! The built-in host image: skeleton content, masking, caching.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use common::is_root;
use dwell_storage::{ImageStore, HOST_IMAGE, HOST_USER_IMAGE};

#[test]
fn host_image_is_a_safe_view_of_the_host() {
    if !is_root() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("dwell-img-test")
        .tempdir_in("/var/tmp")
        .unwrap();
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    let t = Instant::now();
    let img = store.host().unwrap();
    println!("first host() (build) took {:?}", t.elapsed());
    let t = Instant::now();
    let again = store.host().unwrap();
    println!("second host() took {:?}", t.elapsed());
    assert_eq!(img, again);
    assert_eq!(img.name, HOST_IMAGE);
    assert!(img.id.starts_with("sha256:"));
    assert_eq!(img.layers.len(), 1);
    assert!(img.host_dirs.contains(&Path::new("/usr").to_path_buf()));
    let sk = &img.layers[0];

    // Host dirs: real dirs are in host_dirs (with a mount point in the
    // skeleton), symlinks are recreated.
    for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(d);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                assert_eq!(
                    fs::read_link(sk.join(d)).unwrap(),
                    fs::read_link(&host).unwrap()
                );
                assert!(!img.host_dirs.contains(&host));
            }
            Ok(m) if m.is_dir() => {
                assert!(sk.join(d).is_dir());
                assert!(img.host_dirs.contains(&host));
            }
            _ => assert!(fs::symlink_metadata(sk.join(d)).is_err()),
        }
    }
    assert!(sk.join("usr").is_dir());
    assert_eq!(fs::read_dir(sk.join("usr")).unwrap().count(), 0);
    for d in [
        "root", "home", "var", "run", "srv", "opt", "mnt", "media", "proc", "sys", "dev",
    ] {
        assert!(sk.join(d).is_dir(), "{d}");
    }
    let tmp_mode = fs::metadata(sk.join("tmp")).unwrap().permissions().mode();
    assert_eq!(tmp_mode & 0o7777, 0o1777);

    // /etc: curated copy, secrets masked, identity fresh.
    assert!(sk.join("etc/passwd").is_file());
    let shadow = fs::read_to_string(sk.join("etc/shadow")).unwrap();
    assert!(shadow.starts_with("root:*:"), "{shadow}");
    if let Ok(host_shadow) = fs::read_to_string("/etc/shadow") {
        for line in host_shadow.lines() {
            let hash = line.split(':').nth(1).unwrap_or("");
            if hash.len() > 2 {
                assert!(!shadow.contains(hash), "host password hash leaked");
            }
        }
    }
    assert!(shadow.lines().all(|l| l.split(':').nth(1) == Some("*")));
    assert_eq!(fs::read(sk.join("etc/machine-id")).unwrap().len(), 0);
    assert_eq!(
        fs::read_to_string(sk.join("etc/hostname")).unwrap(),
        "sandbox\n"
    );
    assert!(!sk.join("etc/ssl/private").exists());
    assert!(!sk.join("etc/dwell").exists());
    if let Ok(rd) = fs::read_dir(sk.join("etc/ssh")) {
        for e in rd.flatten() {
            assert!(!e.file_name().to_string_lossy().starts_with("ssh_host_"));
        }
    }
    assert_eq!(fs::read_dir(sk.join("etc/sudoers.d")).unwrap().count(), 0);
    assert_eq!(
        fs::read_link(sk.join("etc/mtab")).unwrap(),
        Path::new("../proc/self/mounts")
    );
    // Nothing private was copied.
    for e in walk(&sk.join("etc")) {
        let m = fs::symlink_metadata(&e).unwrap();
        if m.is_file()
            && !e.ends_with("etc/sudoers")
            && !e.ends_with("etc/shadow")
            && !e.ends_with("etc/gshadow")
        {
            assert!(
                m.mode() & 0o004 != 0,
                "private file copied: {}",
                e.display()
            );
        }
    }

    // Package-manager state.
    if Path::new("/var/lib/dpkg/status").exists() {
        assert_eq!(
            fs::read(sk.join("var/lib/dpkg/status")).unwrap(),
            fs::read("/var/lib/dpkg/status").unwrap()
        );
    }
    assert!(sk.join("var/cache/apt/archives/partial").is_dir());
    assert!(sk.join("var/lib/apt/lists/partial").is_dir());
    assert!(sk.join("var/log").is_dir());
    assert!(sk.join("var/tmp").is_dir());

    assert_eq!(store.get("host").unwrap(), img);
    assert_eq!(store.list().unwrap()[0], img);

    // Removing "host" drops the skeleton; the next use rebuilds it.
    store.remove("host").unwrap();
    assert!(!sk.exists());
    let rebuilt = store.host().unwrap();
    assert_eq!(rebuilt.id, img.id);
    assert!(rebuilt.layers[0].join("etc/passwd").exists());
    assert_eq!(
        fs::read_dir(dir.path().join("images/tmp")).unwrap().count(),
        0,
        "staging is empty"
    );
}

/// host-user: the host skeleton plus an account layer with `user` (1000),
/// its home and passwordless sudo; built once, cached, never the host's own
/// files; its name cannot be taken by an import.
#[test]
fn host_user_is_the_host_image_with_an_account() {
    if !is_root() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("dwell-img-test")
        .tempdir_in("/var/tmp")
        .unwrap();
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    let host_passwd = fs::read("/etc/passwd").unwrap();
    let img = store.get(HOST_USER_IMAGE).unwrap();
    let host = store.host().unwrap();
    assert_eq!(img.name, HOST_USER_IMAGE);
    assert_eq!(img.layers.len(), 2);
    assert_eq!(
        img.layers[1], host.layers[0],
        "stacked on the host skeleton"
    );
    assert_eq!(img.host_dirs, host.host_dirs);
    assert_eq!(img.user.as_deref(), Some("user"));
    assert_eq!(img.workdir.as_deref(), Some("/home/user"));
    assert!(img.env.contains(&"HOME=/home/user".to_string()));
    assert!(img.cmd.is_empty(), "no service");
    assert_ne!(img.id, host.id);
    assert!(dwell_storage::is_builtin(HOST_USER_IMAGE) && dwell_storage::is_builtin("host"));

    let layer = &img.layers[0];
    let passwd = fs::read_to_string(layer.join("etc/passwd")).unwrap();
    let users: Vec<&str> = passwd
        .lines()
        .filter(|l| l.split(':').nth(2) == Some("1000"))
        .collect();
    assert_eq!(
        users,
        ["user:x:1000:1000::/home/user:/bin/bash"],
        "{passwd}"
    );
    let group = fs::read_to_string(layer.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l == "user:x:1000:"));
    assert_eq!(
        group
            .lines()
            .filter(|l| l.split(':').nth(2) == Some("1000"))
            .count(),
        1
    );
    assert!(fs::read_to_string(layer.join("etc/shadow"))
        .unwrap()
        .contains("user:*:"));
    let sudoers = layer.join("etc/sudoers.d/user");
    let m = fs::metadata(&sudoers).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o440, 0));
    assert!(fs::read_to_string(&sudoers)
        .unwrap()
        .starts_with("user ALL=(ALL:ALL) NOPASSWD: ALL\n"));
    let home = fs::metadata(layer.join("home/user")).unwrap();
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o777),
        (1000, 1000, 0o755)
    );
    assert_eq!(
        fs::metadata(layer.join("etc")).unwrap().mode() & 0o777,
        0o755
    );
    // The host's own account files are untouched.
    assert_eq!(fs::read("/etc/passwd").unwrap(), host_passwd);

    // Cached: the same image again; removing it drops only its layer.
    assert_eq!(store.host_user().unwrap(), img);
    assert_eq!(
        store.key_of(HOST_USER_IMAGE).unwrap().as_deref(),
        Some(HOST_USER_IMAGE)
    );
    assert!(store.lookup(HOST_USER_IMAGE).unwrap().is_none());
    store.remove(HOST_USER_IMAGE).unwrap();
    assert!(!layer.exists() && host.layers[0].exists());
    assert_eq!(
        store.host_user().unwrap().layers,
        img.layers,
        "rebuilt in place"
    );
    assert!(
        store.import(HOST_USER_IMAGE, dir.path()).is_err(),
        "the name is reserved"
    );
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk(&path));
            }
            out.push(path);
        }
    }
    out
}
