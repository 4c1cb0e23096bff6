//! The built-in image "host": the host's own `/usr` (and `/bin`, `/lib`...
//! where they are real directories) seen read-only, on top of a small
//! skeleton layer with a curated `/etc` and the package manager's state.
//! What is copied, rewritten and masked is documented in `IMAGES.md`.
//!
//! The skeleton is built once per host package state: its digest covers
//! `/var/lib/dpkg/status`, so installing or removing packages on the host
//! makes the next `host()` build a fresh one. Builds go to a staging
//! directory and are renamed into place, so a crash never leaves a half
//! image. Older skeletons stay (sandboxes may still use them) until the
//! image is removed.
//!
//! The built-in image "host-user" is the host image plus a thin layer with
//! an account `user` (uid/gid 1000, home `/home/user`, passwordless sudo
//! through `/etc/sudoers.d/user`, `/etc/sudo.conf` with core dumps left as
//! the runtime set them) as its default user, built once per skeleton from
//! the skeleton's account files.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{load, Image, ImageStore, StoreLock, HOST_IMAGE};
use crate::error::{IoContext, Result};
use crate::fsutil::{
    atomic_write, disk_usage, lchown, now_secs, remove_any, set_times, sha256_hex,
};

/// Bump when the skeleton's recipe changes, so old skeletons are rebuilt.
const RECIPE: &str = "dwell-host-skeleton-v1";
const DPKG_STATUS: &str = "/var/lib/dpkg/status";
/// Top-level directories that may hold host binaries and libraries.
const HOST_DIR_CANDIDATES: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Empty top-level directories of the skeleton and their modes.
const TOP_DIRS: [(&str, u32); 13] = [
    ("root", 0o700),
    ("home", 0o755),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("run", 0o755),
    ("srv", 0o755),
    ("opt", 0o755),
    ("mnt", 0o755),
    ("media", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("etc", 0o755),
];
/// Package-manager state copied from the host (world-readable parts only).
const STATE_TREES: [&str; 3] = ["var/lib/dpkg", "var/lib/apt", "var/cache/debconf"];
/// Paths under /etc never copied: secrets, host identity, our own config.
const ETC_MASKED: [&str; 20] = [
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "machine-id",
    "hostname",
    "hosts",
    "resolv.conf",
    "mtab",
    "dwell",
    "ssl/private",
    "sudoers.d",
    "security/opasswd",
    "apt/auth.conf",
    "apt/auth.conf.d",
    "NetworkManager/system-connections",
    "wireguard",
    "ipsec.secrets",
    "letsencrypt",
    "krb5.keytab",
];
/// Not world-readable but not secret either: copied anyway.
const ETC_ALLOWED_PRIVATE: [&str; 1] = ["sudoers"];

/// Cache of the status file's identity, to avoid hashing it on every call.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct StatusStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    digest: String,
}

/// What [`cached_dir`] found.
enum Cached {
    /// The directory and its metadata were stored.
    Stored(Box<Image>),
    /// The directory is there (built now, or earlier without metadata);
    /// the store stays locked while the caller writes the metadata.
    Built(StoreLock),
}

/// A directory of the host images, built once: `dir` with its metadata
/// `meta` when both are stored; otherwise, under the store's lock, `build`
/// into a staging directory (`what` names it) renamed into place, and
/// removed on failure.
fn cached_dir(
    store: &ImageStore,
    dir: &Path,
    meta: &Path,
    what: &str,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<Cached> {
    if dir.is_dir() {
        if let Some(img) = load(meta)? {
            return Ok(Cached::Stored(Box::new(img)));
        }
    }
    let lock = store.lock()?;
    if dir.is_dir() {
        return Ok(match load(meta)? {
            Some(img) => Cached::Stored(Box::new(img)),
            None => Cached::Built(lock),
        });
    }
    let staging = store.tmp_path(what);
    let built = build(&staging)
        .and_then(|()| fs::rename(&staging, dir).ctx("move a built host layer into place at", dir));
    if let Err(e) = built {
        let _ = remove_any(&staging);
        return Err(e);
    }
    Ok(Cached::Built(lock))
}

/// Returns the current host image, building its skeleton when needed.
pub(crate) fn get_or_build(store: &ImageStore) -> Result<Image> {
    let digest = current_digest(store)?;
    let dir = store.root.join("host");
    let skeleton = dir.join(&digest);
    let meta = dir.join(format!("{digest}.json"));
    let _lock = match cached_dir(store, &skeleton, &meta, "host", build)? {
        Cached::Stored(img) => return Ok(*img),
        Cached::Built(lock) => lock,
    };
    let image = Image {
        name: HOST_IMAGE.to_string(),
        reference: None,
        digest: None,
        blobs: Vec::new(),
        tenants: None,
        id: format!("sha256:{digest}"),
        layers: vec![skeleton.clone()],
        host_dirs: host_dirs(),
        created_at: now_secs(),
        size_bytes: disk_usage(&skeleton),
        source: format!("host:{DPKG_STATUS}"),
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            "HOME=/root".to_string(),
            "LANG=C.UTF-8".to_string(),
        ],
        entrypoint: Vec::new(),
        cmd: vec!["/bin/bash".to_string()],
        workdir: Some("/root".to_string()),
        user: None,
        labels: Default::default(),
        exposed_ports: Vec::new(),
        healthcheck: None,
        stop_signal: None,
    };
    let json = serde_json::to_vec_pretty(&image).expect("image metadata serializes");
    atomic_write(&meta, &json)?;
    Ok(image)
}

/// Removes every built layer of the host images (they are rebuilt on
/// next use).
pub(crate) fn remove_all(store: &ImageStore) -> Result<()> {
    remove_where(store, |_| true)
}

/// Removes every built account layer of [`super::HOST_USER_IMAGE`] (the
/// next `host_user()` rebuilds); the host skeletons stay.
pub(crate) fn remove_user_layers(store: &ImageStore) -> Result<()> {
    remove_where(store, is_account_layer)
}

/// Removes the entries of the store's `host/` directory that `chosen`
/// picks, each moved aside first so a crash leaves no half-removed layer.
fn remove_where(store: &ImageStore, chosen: impl Fn(&Path) -> bool) -> Result<()> {
    let dir = store.root.join("host");
    for e in fs::read_dir(&dir).ctx("list", &dir)?.flatten() {
        if !chosen(&e.path()) {
            continue;
        }
        let trash = store.tmp_path("gc");
        fs::rename(e.path(), &trash).ctx("move aside", &e.path())?;
        remove_any(&trash).ctx("remove", &trash)?;
    }
    Ok(())
}

/// Whether `path` (a layer of some image) is one of the built-in images'
/// own: under the store's `host/` directory, which [`remove_all`] empties.
pub(crate) fn is_builtin_layer(store: &ImageStore, path: &Path) -> bool {
    path.parent() == Some(store.root.join("host").as_path())
}

/// Whether `path` (a layer of some image) is an account layer of
/// [`super::HOST_USER_IMAGE`] ([`remove_user_layers`] removes those).
pub(crate) fn is_account_layer(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().contains(ACCOUNT_LAYER_MARK))
}

/// The host directories a sandbox sees through per-directory overlays:
/// the candidates that are real directories (not symlinks) on this host.
pub(crate) fn host_dirs() -> Vec<PathBuf> {
    HOST_DIR_CANDIDATES
        .iter()
        .map(|d| Path::new("/").join(d))
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        .collect()
}

/// Digest of everything the skeleton is made from that may change.
fn current_digest(store: &ImageStore) -> Result<String> {
    let stamp_path = store.root.join("host").join("status.stamp");
    let stat = fs::metadata(DPKG_STATUS).ok();
    if let Some(m) = &stat {
        if let Ok(data) = fs::read(&stamp_path) {
            if let Ok(old) = serde_json::from_slice::<StatusStamp>(&data) {
                if (old.dev, old.ino, old.size, old.mtime_ns)
                    == (
                        m.dev(),
                        m.ino(),
                        m.size(),
                        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                    )
                {
                    return Ok(old.digest);
                }
            }
        }
    }
    let mut input = format!("{RECIPE}\n").into_bytes();
    for d in HOST_DIR_CANDIDATES {
        let link = fs::read_link(Path::new("/").join(d)).ok();
        input.extend(format!("{d}={link:?}\n").bytes());
    }
    match fs::read(DPKG_STATUS) {
        Ok(s) => input.extend(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).ctx("read host package database", Path::new(DPKG_STATUS)),
    }
    let digest = sha256_hex(&input);
    if let Some(m) = stat {
        let stamp = StatusStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            digest: digest.clone(),
        };
        let _ = atomic_write(
            &stamp_path,
            &serde_json::to_vec(&stamp).expect("stamp serializes"),
        );
    }
    Ok(digest)
}

/// Builds a skeleton into `out` (which must not exist).
fn build(out: &Path) -> Result<()> {
    mkdir(out, 0o755)?;
    for (d, mode) in TOP_DIRS {
        mkdir(&out.join(d), mode)?;
    }
    // /usr and friends: an empty mount point when real, the same symlink
    // when the host has merged /usr.
    for d in HOST_DIR_CANDIDATES {
        let host = Path::new("/").join(d);
        let Ok(m) = fs::symlink_metadata(&host) else {
            continue;
        };
        let target = out.join(d);
        if m.file_type().is_symlink() {
            let link = fs::read_link(&host).ctx("read symlink", &host)?;
            std::os::unix::fs::symlink(&link, &target).ctx("create symlink", &target)?;
        } else if m.is_dir() {
            mkdir(&target, m.mode() & 0o7777)?;
        }
    }

    copy_tree(Path::new("/etc"), &out.join("etc"), &|rel, m| {
        etc_allowed(rel, m)
    })?;
    write_etc(&out.join("etc"))?;

    for t in STATE_TREES {
        let src = Path::new("/").join(t);
        if src.is_dir() {
            ensure_dirs(out, Path::new(t).parent().unwrap_or(Path::new("")))?;
            copy_tree(&src, &out.join(t), &|_, m| world_readable(m))?;
        }
    }
    for (d, mode) in [
        ("var/lib/apt/lists/partial", 0o700),
        ("var/cache/apt/archives/partial", 0o700),
        ("var/log", 0o755),
        ("var/tmp", 0o1777),
        ("run/lock", 0o1777),
    ] {
        ensure_dirs(out, Path::new(d))?;
        fs::set_permissions(out.join(d), fs::Permissions::from_mode(mode))
            .ctx("chmod", &out.join(d))?;
    }
    for (link, target) in [("var/run", "/run"), ("var/lock", "/run/lock")] {
        let p = out.join(link);
        if fs::symlink_metadata(&p).is_err() {
            std::os::unix::fs::symlink(target, &p).ctx("create symlink", &p)?;
        }
    }
    Ok(())
}

/// Whether an /etc entry (path relative to /etc) is copied.
fn etc_allowed(rel: &Path, m: &fs::Metadata) -> bool {
    if ETC_MASKED.iter().any(|x| rel == Path::new(x)) {
        return false;
    }
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if rel.starts_with("ssh") && name.starts_with("ssh_host_") {
        return false;
    }
    if [
        "secret",
        "credential",
        "keytab",
        "id_rsa",
        "id_ed25519",
        "id_ecdsa",
    ]
    .iter()
    .any(|w| name.contains(w))
        || name.ends_with(".key")
    {
        return false;
    }
    if ETC_ALLOWED_PRIVATE.iter().any(|x| rel == Path::new(x)) {
        return true;
    }
    world_readable(m)
}

/// Entries without world read access (and for directories, search) are
/// treated as private and not copied; symlinks are always copied.
fn world_readable(m: &fs::Metadata) -> bool {
    if m.file_type().is_symlink() {
        return true;
    }
    let need = if m.is_dir() { 0o005 } else { 0o004 };
    m.mode() & need == need
}

/// Writes the files that must not come from the host.
fn write_etc(etc: &Path) -> Result<()> {
    let put = |name: &str, data: &str, mode: u32, gid: u32| -> Result<()> {
        let p = etc.join(name);
        remove_any(&p).ctx("replace", &p)?;
        fs::write(&p, data).ctx("write", &p)?;
        lchown(&p, 0, gid).ctx("chown", &p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).ctx("chmod", &p)
    };
    put("hostname", "sandbox\n", 0o644, 0)?;
    put(
        "hosts",
        "127.0.0.1\tlocalhost\n127.0.1.1\tsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
        0o644,
        0,
    )?;
    put("machine-id", "", 0o444, 0)?;
    let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    put("resolv.conf", &resolv, 0o644, 0)?;

    // Every account locked: no password hash from the host survives.
    let passwd = fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let group = fs::read_to_string(etc.join("group")).unwrap_or_default();
    let names = |s: &str| -> Vec<String> {
        s.lines()
            .filter_map(|l| l.split(':').next())
            .filter(|n| !n.is_empty() && !n.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let shadow_gid = group
        .lines()
        .find(|l| l.starts_with("shadow:"))
        .and_then(|l| l.split(':').nth(2))
        .and_then(|g| g.parse().ok())
        .unwrap_or(0);
    let mut users = names(&passwd);
    if !users.iter().any(|u| u == "root") {
        users.insert(0, "root".to_string());
    }
    let shadow: String = users
        .iter()
        .map(|u| format!("{u}:*:19000:0:99999:7:::\n"))
        .collect();
    put("shadow", &shadow, 0o640, shadow_gid)?;
    let gshadow: String = names(&group).iter().map(|g| format!("{g}:*::\n")).collect();
    put("gshadow", &gshadow, 0o640, shadow_gid)?;
    fs::create_dir(etc.join("sudoers.d")).ctx("create", &etc.join("sudoers.d"))?;
    fs::set_permissions(etc.join("sudoers.d"), fs::Permissions::from_mode(0o755))
        .ctx("chmod", &etc.join("sudoers.d"))?;
    let mtab = etc.join("mtab");
    std::os::unix::fs::symlink("../proc/self/mounts", &mtab).ctx("create symlink", &mtab)
}

/// Copies a tree preserving modes, owners, times and symlinks; `keep`
/// decides per entry (path relative to `src`). Sockets, fifos and devices
/// are skipped; hardlinks become separate copies.
fn copy_tree(src: &Path, dst: &Path, keep: &dyn Fn(&Path, &fs::Metadata) -> bool) -> Result<()> {
    fn walk(
        src: &Path,
        dst: &Path,
        rel: &Path,
        keep: &dyn Fn(&Path, &fs::Metadata) -> bool,
    ) -> Result<()> {
        let from = src.join(rel);
        let to = dst.join(rel);
        let m = fs::symlink_metadata(&from).ctx("stat", &from)?;
        if !rel.as_os_str().is_empty() && !keep(rel, &m) {
            return Ok(());
        }
        let ft = m.file_type();
        if ft.is_dir() {
            if fs::symlink_metadata(&to).is_err() {
                fs::create_dir(&to).ctx("create directory", &to)?;
            }
            let mut names: Vec<_> = fs::read_dir(&from)
                .ctx("list", &from)?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for n in names {
                walk(src, dst, &rel.join(n), keep)?;
            }
        } else if ft.is_symlink() {
            let link = fs::read_link(&from).ctx("read symlink", &from)?;
            std::os::unix::fs::symlink(&link, &to).ctx("create symlink", &to)?;
        } else if ft.is_file() {
            fs::copy(&from, &to).ctx("copy", &to)?;
        } else {
            return Ok(());
        }
        lchown(&to, m.uid(), m.gid()).ctx("chown", &to)?;
        if !ft.is_symlink() {
            fs::set_permissions(&to, fs::Permissions::from_mode(m.mode() & 0o7777))
                .ctx("chmod", &to)?;
        }
        let _ = set_times(&to, m.atime(), m.mtime());
        Ok(())
    }
    walk(src, dst, Path::new(""), keep)
}

fn mkdir(p: &Path, mode: u32) -> Result<()> {
    match fs::create_dir(p) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).ctx("create directory", p),
    }
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).ctx("chmod", p)
}

/// Creates `rel` and its parents under `root` (mode 0755).
fn ensure_dirs(root: &Path, rel: &Path) -> Result<()> {
    let p = root.join(rel);
    fs::create_dir_all(&p).ctx("create directory", &p)
}

/// Bump when the account layer's recipe changes, so old ones are rebuilt
/// (it names the layer: `host/<digest>-dwell-host-user-vN/`).
const ACCOUNT_RECIPE: &str = "dwell-host-user-v2";
/// What every account layer's (and its metadata's) name contains.
const ACCOUNT_LAYER_MARK: &str = "-dwell-host-user-";
/// The account of [`super::HOST_USER_IMAGE`], its uid and gid.
pub const ACCOUNT: &str = "user";
pub const ACCOUNT_ID: u32 = 1000;
/// Its sudoers drop-in (mode 0440): passwordless sudo, and RLIMIT_CORE
/// left as it is (the sandbox's seccomp filter refuses changes of it).
const SUDOERS_LINE: &str = "user ALL=(ALL:ALL) NOPASSWD: ALL\nDefaults rlimit_core=default\n";

/// Returns the host image with an account `user` on top: the current
/// host skeleton plus a thin layer (its own `/etc/passwd`, `group`,
/// `shadow`, `gshadow`, a sudoers drop-in and `/home/user`), built once per
/// skeleton and cached next to it.
pub(crate) fn get_or_build_user(store: &ImageStore) -> Result<Image> {
    let host = get_or_build(store)?;
    let digest = host.id.trim_start_matches("sha256:");
    let dir = store.root.join("host");
    let skeleton = host
        .layers
        .first()
        .cloned()
        .ok_or_else(|| crate::error::StorageError::Metadata {
            path: dir.join(format!("{digest}.json")),
            reason: "the host image has no skeleton layer; remove it (dwell image rm host) so it is rebuilt".into(),
        })?;
    let layer = dir.join(format!("{digest}-{ACCOUNT_RECIPE}"));
    let meta = dir.join(format!("{digest}-{ACCOUNT_RECIPE}.json"));
    let built = cached_dir(store, &layer, &meta, "host-user", |staging| {
        build_account_layer(&skeleton, staging)
    })?;
    let _lock = match built {
        Cached::Stored(img) => return Ok(*img),
        Cached::Built(lock) => lock,
    };
    let image = Image {
        name: super::HOST_USER_IMAGE.to_string(),
        id: format!(
            "sha256:{}",
            sha256_hex(format!("{ACCOUNT_RECIPE}\n{digest}").as_bytes())
        ),
        layers: vec![layer.clone(), skeleton],
        size_bytes: host.size_bytes + disk_usage(&layer),
        created_at: now_secs(),
        source: format!("host:{DPKG_STATUS} + account {ACCOUNT}"),
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            format!("HOME=/home/{ACCOUNT}"),
            "LANG=C.UTF-8".to_string(),
        ],
        // No command: like `host`, it is not a service image.
        cmd: Vec::new(),
        workdir: Some(format!("/home/{ACCOUNT}")),
        user: Some(ACCOUNT.to_string()),
        ..host
    };
    let json = serde_json::to_vec_pretty(&image).expect("image metadata serializes");
    atomic_write(&meta, &json)?;
    Ok(image)
}

/// Writes the account layer over `skeleton` into `out` (which must not
/// exist). Whatever account or group had uid/gid 1000 in the skeleton's
/// copy of the host's files is renumbered to a free id in the copy (the
/// host's own files are never touched).
fn build_account_layer(skeleton: &Path, out: &Path) -> Result<()> {
    let sk_etc = skeleton.join("etc");
    let read = |name: &str| -> Result<String> {
        let p = sk_etc.join(name);
        match fs::read_to_string(&p) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).ctx("read", &p),
        }
    };
    let (passwd, group) = with_account(&read("passwd")?, &read("group")?);
    let shadow = with_line(&read("shadow")?, &format!("{ACCOUNT}:*:19000:0:99999:7:::"));
    let gshadow = with_line(&read("gshadow")?, &format!("{ACCOUNT}:!::"));
    let shadow_gid = fs::metadata(sk_etc.join("shadow"))
        .map(|m| m.gid())
        .unwrap_or(0);

    mkdir(out, 0o755)?;
    let etc = out.join("etc");
    mkdir(&etc, 0o755)?;
    let put = |p: &Path, data: &str, mode: u32, uid: u32, gid: u32| -> Result<()> {
        fs::write(p, data).ctx("write", p)?;
        lchown(p, uid, gid).ctx("chown", p)?;
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).ctx("chmod", p)
    };
    put(&etc.join("passwd"), &passwd, 0o644, 0, 0)?;
    put(&etc.join("group"), &group, 0o644, 0, 0)?;
    put(&etc.join("shadow"), &shadow, 0o640, 0, shadow_gid)?;
    put(&etc.join("gshadow"), &gshadow, 0o640, 0, shadow_gid)?;
    let sudoers = etc.join("sudoers.d");
    mkdir(&sudoers, 0o755)?;
    put(&sudoers.join(ACCOUNT), SUDOERS_LINE, 0o440, 0, 0)?;
    // sudo lowers RLIMIT_CORE to 0 around the command, which the sandbox's
    // seccomp filter refuses (0 would pipe core dumps again; the runtime
    // keeps it at 1): without this every sudo warns about it.
    let mut conf = read("sudo.conf")?;
    if !conf.is_empty() && !conf.ends_with('\n') {
        conf.push('\n');
    }
    conf.push_str("# dwell: the sandbox keeps RLIMIT_CORE at 1 and refuses changes\nSet disable_coredump false\n");
    put(&etc.join("sudo.conf"), &conf, 0o644, 0, 0)?;

    let home = out.join("home");
    mkdir(&home, 0o755)?;
    let user_home = home.join(ACCOUNT);
    mkdir(&user_home, 0o755)?;
    lchown(&user_home, ACCOUNT_ID, ACCOUNT_ID).ctx("chown", &user_home)?;
    // The shell's start files, from the skeleton's copy of /etc/skel.
    let skel = sk_etc.join("skel");
    if skel.is_dir() {
        for e in fs::read_dir(&skel).ctx("list", &skel)?.flatten() {
            let m = fs::symlink_metadata(e.path()).ctx("stat", &e.path())?;
            if !m.is_file() {
                continue;
            }
            let to = user_home.join(e.file_name());
            fs::copy(e.path(), &to).ctx("copy", &to)?;
            lchown(&to, ACCOUNT_ID, ACCOUNT_ID).ctx("chown", &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(m.mode() & 0o777))
                .ctx("chmod", &to)?;
        }
    }
    Ok(())
}

/// `text` without a line for [`ACCOUNT`], plus `line`.
fn with_line(text: &str, line: &str) -> String {
    let mut out: String = text
        .lines()
        .filter(|l| l.split(':').next() != Some(ACCOUNT))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(line);
    out.push('\n');
    out
}

/// passwd and group contents with the account `user` (uid and gid
/// [`ACCOUNT_ID`], home `/home/user`, bash) and its group: an existing
/// `user` entry is replaced; another account or group holding id 1000 is
/// moved to the first id from 1001 that neither file uses (a user whose
/// primary group moved follows it).
pub(crate) fn with_account(passwd: &str, group: &str) -> (String, String) {
    let fields = |l: &str| -> Vec<String> { l.split(':').map(str::to_string).collect() };
    let mut users: Vec<Vec<String>> = passwd
        .lines()
        .filter(|l| !l.is_empty())
        .map(fields)
        .filter(|f| f[0] != ACCOUNT)
        .collect();
    let mut groups: Vec<Vec<String>> = group
        .lines()
        .filter(|l| !l.is_empty())
        .map(fields)
        .filter(|f| f[0] != ACCOUNT)
        .collect();
    let id = ACCOUNT_ID.to_string();
    let taken = |users: &[Vec<String>], groups: &[Vec<String>], n: u32| {
        let s = n.to_string();
        users.iter().any(|f| f.get(2) == Some(&s)) || groups.iter().any(|f| f.get(2) == Some(&s))
    };
    let free = |users: &[Vec<String>], groups: &[Vec<String>]| {
        (ACCOUNT_ID + 1..60000)
            .find(|n| !taken(users, groups, *n))
            .unwrap_or(60000)
    };
    if groups.iter().any(|f| f.get(2) == Some(&id)) {
        let new = free(&users, &groups).to_string();
        for g in groups.iter_mut().filter(|f| f.get(2) == Some(&id)) {
            g[2] = new.clone();
        }
        for u in users.iter_mut().filter(|f| f.get(3) == Some(&id)) {
            u[3] = new.clone();
        }
    }
    if users.iter().any(|f| f.get(2) == Some(&id)) {
        let new = free(&users, &groups).to_string();
        for u in users.iter_mut().filter(|f| f.get(2) == Some(&id)) {
            u[2] = new.clone();
        }
    }
    let join = |rows: &[Vec<String>]| -> String {
        rows.iter().map(|f| format!("{}\n", f.join(":"))).collect()
    };
    let mut p = join(&users);
    p.push_str(&format!(
        "{ACCOUNT}:x:{ACCOUNT_ID}:{ACCOUNT_ID}::/home/{ACCOUNT}:/bin/bash\n"
    ));
    let mut g = join(&groups);
    g.push_str(&format!("{ACCOUNT}:x:{ACCOUNT_ID}:\n"));
    (p, g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_takes_id_1000_and_a_clash_moves() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      cloudsdk:x:1000:1000::/home/cloudsdk:/bin/bash\n\
                      other:x:1001:1000::/home/other:/bin/sh\n\
                      user:x:1500:1500::/old:/bin/sh\n";
        let group = "root:x:0:\ncloudsdk:x:1000:\nsudo:x:27:cloudsdk\nuser:x:1500:\n";
        let (p, g) = with_account(passwd, group);
        assert_eq!(
            p,
            "root:x:0:0:root:/root:/bin/bash\n\
             cloudsdk:x:1003:1002::/home/cloudsdk:/bin/bash\n\
             other:x:1001:1002::/home/other:/bin/sh\n\
             user:x:1000:1000::/home/user:/bin/bash\n"
        );
        assert_eq!(
            g,
            "root:x:0:\ncloudsdk:x:1002:\nsudo:x:27:cloudsdk\nuser:x:1000:\n"
        );
        // Without a clash nothing else changes.
        let (p, g) = with_account("root:x:0:0::/root:/bin/sh\n", "root:x:0:\n");
        assert!(p.ends_with("user:x:1000:1000::/home/user:/bin/bash\n"));
        assert_eq!(g, "root:x:0:\nuser:x:1000:\n");
        assert_eq!(
            with_line("root:*:1::\nuser:old\n", "user:*:2::"),
            "root:*:1::\nuser:*:2::\n"
        );
    }
}
