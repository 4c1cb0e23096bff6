//! COPY and ADD: which files of a source tree (the build context or
//! another stage) a step copies, a hash of them for the cache key, and the
//! layer that holds them at their destination.
//!
//! Sources are cleaned relative paths (a leading `/` is the tree's root; a
//! `..` that would leave the tree is refused), globs are matched one
//! segment at a time, `.dockerignore` applies to the context. Symlinks are
//! copied as symlinks and never followed, also not on the way to a source.
//! ADD unpacks a local tar (plain or gzip) with every entry checked to stay
//! below the destination; ADD of a URL is refused.

use std::collections::BTreeSet;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use dwell_hostfs::{FileKind, Stat};
use sha2::{Digest, Sha256};

use crate::ignore::{has_glob, segment_match, Ignore, MAX_PATTERN};
use crate::layer::{hex, LayerWriter, Meta, MAX_LINK};
use crate::tree::{Found, Tree};
use crate::BuildError;

/// A COPY or ADD step, expanded.
#[derive(Debug, Clone, Default)]
pub struct CopyArgs {
    pub srcs: Vec<String>,
    /// Absolute destination inside the image (WORKDIR applied).
    pub dest: String,
    pub chown: Option<(u32, u32)>,
    pub chmod: Option<u32>,
    /// ADD: unpack local archives.
    pub add: bool,
    /// Copying from the build context (owner becomes root unless chowned;
    /// `.dockerignore` applies).
    pub from_context: bool,
}

/// One path to copy.
pub struct Item<'t> {
    pub found: Found<'t>,
    /// Path inside the image, relative to `/`.
    pub dest: PathBuf,
    /// ADD of an archive: unpack it at `dest` (a dir).
    pub unpack: bool,
}

/// The most entries one COPY walks.
pub const MAX_ITEMS: usize = 1_000_000;

/// Clean a source path: relative to the tree's root, no `..` out of it.
pub fn clean_src(src: &str) -> Result<PathBuf, BuildError> {
    let mut out = PathBuf::new();
    for c in Path::new(src).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if !out.pop() => {
                return Err(BuildError::Invalid(format!(
                    "source {src:?} is outside the build context; copy only files inside it"
                )));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@")
}

/// Expand a source (glob or plain) into paths present in `tree`.
fn matches(tree: &Tree, pat: &Path, ignore: Option<&Ignore>) -> Result<Vec<PathBuf>, BuildError> {
    let len = pat.as_os_str().len();
    if len > MAX_PATTERN {
        return Err(BuildError::Invalid(format!(
            "a COPY/ADD source is {len} bytes, over the limit of {MAX_PATTERN}; shorten it"
        )));
    }
    let segs: Vec<String> = pat
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let mut cur = vec![PathBuf::new()];
    for s in &segs {
        let mut next = Vec::new();
        for base in cur {
            if has_glob(s) {
                for (name, st) in tree.list(&base)? {
                    let n = name.to_string_lossy();
                    if segment_match(s, &n) {
                        let p = base.join(&name);
                        if st.kind == FileKind::Symlink && segs.last() != Some(s) {
                            continue;
                        }
                        next.push(p);
                    }
                }
            } else {
                next.push(base.join(s));
            }
        }
        cur = next;
    }
    let mut out = Vec::new();
    for p in cur {
        if let Some(i) = ignore {
            if !p.as_os_str().is_empty() && i.excluded(&p.to_string_lossy()) {
                continue;
            }
        }
        if tree.stat(&p)?.is_some() {
            out.push(p);
        }
    }
    Ok(out)
}

fn looks_like_tar(found: &Found<'_>) -> Result<bool, BuildError> {
    if found.stat.kind != FileKind::File || found.stat.size < 512 {
        return Ok(false);
    }
    let mut f = Tree::open_file(found)?;
    let mut head = [0u8; 2];
    f.read_exact(&mut head)
        .map_err(|e| BuildError::io("read", &found.rel, e))?;
    let f = Tree::open_file(found)?;
    let mut r: Box<dyn Read> = if head == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::new(f))
    };
    let mut block = [0u8; 512];
    if r.read_exact(&mut block).is_err() {
        return Ok(false);
    }
    Ok(&block[257..262] == b"ustar")
}

/// The items a COPY/ADD copies from `src` into the image whose current
/// view is `image` (to tell whether the destination is a directory).
pub fn plan<'t>(
    src: &'t Tree,
    image: &Tree,
    args: &CopyArgs,
    ignore: Option<&Ignore>,
) -> Result<Vec<Item<'t>>, BuildError> {
    let dest_abs = args.dest.clone();
    let dest_rel = clean_src(&dest_abs).map_err(|_| {
        BuildError::Invalid(format!("destination {dest_abs:?} is not a clean path"))
    })?;
    let mut sources = Vec::new();
    for s in &args.srcs {
        if is_url(s) {
            return Err(BuildError::Invalid(format!(
                "{} of a URL ({s}) is not supported by dwell build: download it in a RUN step \
                 (build with --net) or put the file in the build context",
                if args.add { "ADD" } else { "COPY" }
            )));
        }
        let p = clean_src(s)?;
        let found = matches(src, &p, ignore)?;
        if found.is_empty() {
            return Err(BuildError::Invalid(format!(
                "source {s:?} not found{}{}",
                if args.from_context {
                    " in the build context"
                } else {
                    ""
                },
                if args.from_context && ignore.is_some() {
                    " (or excluded by .dockerignore)"
                } else {
                    ""
                }
            )));
        }
        let glob = has_glob(s);
        for f in found {
            sources.push((f, glob));
        }
    }
    let dest_dir_syntax = dest_abs.ends_with('/') || dest_abs.ends_with("/.");
    let several = sources.len() > 1 || sources.iter().any(|(_, g)| *g);
    if several && !dest_dir_syntax {
        let is_dir = matches!(image.stat(&dest_rel), Ok(Some(f)) if f.stat.kind == FileKind::Dir);
        if !is_dir {
            return Err(BuildError::Invalid(format!(
                "several sources are copied, so the destination {dest_abs:?} must be a \
                 directory: end it with /"
            )));
        }
    }
    let dest_is_dir = dest_dir_syntax
        || several
        || matches!(image.stat(&dest_rel), Ok(Some(f)) if f.stat.kind == FileKind::Dir);
    let mut out = Vec::new();
    for (p, _) in sources {
        let found = src.stat(&p)?.ok_or_else(|| {
            BuildError::Invalid(format!("source /{} vanished while planning", p.display()))
        })?;
        if found.stat.kind == FileKind::Dir {
            walk_dir(src, &p, &dest_rel, ignore, &mut out)?;
        } else {
            let unpack = args.add && looks_like_tar(&found)?;
            let dest = if unpack {
                dest_rel.clone()
            } else if dest_is_dir {
                dest_rel.join(p.file_name().unwrap_or_default())
            } else {
                dest_rel.clone()
            };
            if dest.as_os_str().is_empty() && !unpack {
                return Err(BuildError::Invalid(
                    "a file cannot be copied to / itself; name a path".into(),
                ));
            }
            out.push(Item {
                found,
                dest,
                unpack,
            });
        }
        if out.len() > MAX_ITEMS {
            return Err(BuildError::TooLarge(format!(
                "the step copies more than {MAX_ITEMS} files"
            )));
        }
    }
    Ok(out)
}

/// The contents of dir `p` (not the dir itself) to `dest`.
fn walk_dir<'t>(
    src: &'t Tree,
    p: &Path,
    dest: &Path,
    ignore: Option<&Ignore>,
    out: &mut Vec<Item<'t>>,
) -> Result<(), BuildError> {
    let mut stack = vec![(p.to_path_buf(), dest.to_path_buf())];
    if !dest.as_os_str().is_empty() {
        let found = src.stat(p)?.expect("checked by the caller");
        out.push(Item {
            found,
            dest: dest.to_path_buf(),
            unpack: false,
        });
    }
    while let Some((dir, to)) = stack.pop() {
        let list = src.list(&dir)?;
        let mut subdirs = Vec::new();
        for (name, st) in list {
            let from = dir.join(&name);
            let excluded = ignore.is_some_and(|i| i.excluded(&from.to_string_lossy()));
            // An excluded dir is still walked when `!` rules may take
            // files below it back.
            let walk = st.kind == FileKind::Dir
                && (!excluded || ignore.is_some_and(|i| i.has_exceptions()));
            if excluded && !walk {
                continue;
            }
            let Some(found) = src.stat(&from)? else {
                continue;
            };
            let target = to.join(&name);
            if !excluded {
                out.push(Item {
                    found,
                    dest: target.clone(),
                    unpack: false,
                });
            }
            if walk {
                subdirs.push((from, target));
            }
            if out.len() > MAX_ITEMS {
                return Err(BuildError::TooLarge(format!(
                    "the step copies more than {MAX_ITEMS} files"
                )));
            }
        }
        // Popped in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// A hash of what `items` copy: names, destinations, kinds, modes, owners,
/// link targets and contents (for the cache key).
pub fn hash(items: &[Item<'_>], args: &CopyArgs) -> Result<String, BuildError> {
    let mut h = Sha256::new();
    h.update(format!("{:?}{:?}{}", args.chown, args.chmod, args.add).as_bytes());
    for it in items {
        let st = &it.found.stat;
        h.update(it.dest.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(it.found.rel.as_os_str().as_encoded_bytes());
        h.update(
            format!(
                "\0{:?}{}{}{}{}\0",
                st.kind,
                st.mode,
                st.size,
                it.unpack,
                if args.from_context {
                    0
                } else {
                    st.uid as u64 * 65536 + st.gid as u64
                }
            )
            .as_bytes(),
        );
        match st.kind {
            FileKind::File => {
                let mut f = Tree::open_file(&it.found)?.take(st.size);
                std::io::copy(&mut f, &mut h)
                    .map_err(|e| BuildError::io("read", &it.found.rel, e))?;
            }
            FileKind::Symlink => {
                let t = it
                    .found
                    .root
                    .read_link(&it.found.rel, MAX_LINK)
                    .map_err(|e| BuildError::Refused(e.to_string()))?;
                h.update(t.as_encoded_bytes());
            }
            _ => {}
        }
    }
    Ok(hex(&h.finalize()))
}

fn meta(st: &Stat, args: &CopyArgs) -> Meta {
    let (uid, gid) = match args.chown {
        Some(o) => o,
        None if args.from_context => (0, 0),
        None => (st.uid, st.gid),
    };
    Meta {
        mode: args.chmod.unwrap_or(st.mode),
        uid,
        gid,
        mtime: st.mtime,
    }
}

/// Parent dirs of `rel` (outermost first), as the image has them.
pub fn parents(
    image: &Tree,
    rel: &Path,
    done: &mut BTreeSet<PathBuf>,
    w: &mut LayerWriter,
) -> Result<(), BuildError> {
    let mut chain: Vec<&Path> = rel.ancestors().skip(1).collect();
    chain.reverse();
    for p in chain {
        if p.as_os_str().is_empty() || !done.insert(p.to_path_buf()) {
            continue;
        }
        let m = match image.stat(p) {
            Ok(Some(f)) if f.stat.kind == FileKind::Dir => Meta {
                mode: f.stat.mode,
                uid: f.stat.uid,
                gid: f.stat.gid,
                mtime: f.stat.mtime,
            },
            Ok(Some(_)) => {
                return Err(BuildError::Invalid(format!(
                    "/{} exists in the image and is not a directory",
                    p.display()
                )))
            }
            Ok(None) => Meta {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
            },
            Err(e) => return Err(e),
        };
        w.dir(p, m)?;
    }
    Ok(())
}

/// Write `items` into `w`.
pub fn write(
    items: &[Item<'_>],
    image: &Tree,
    args: &CopyArgs,
    w: &mut LayerWriter,
) -> Result<(), BuildError> {
    let mut done = BTreeSet::new();
    for it in items {
        parents(image, &it.dest, &mut done, w)?;
        let st = &it.found.stat;
        let m = meta(st, args);
        if it.unpack {
            unpack(it, args, &mut done, w)?;
            continue;
        }
        match st.kind {
            FileKind::Dir => {
                if done.insert(it.dest.clone()) {
                    w.dir(&it.dest, m)?;
                }
            }
            FileKind::File => {
                let f = Tree::open_file(&it.found)?;
                w.file(&it.dest, m, st.size, f)?;
            }
            FileKind::Symlink => {
                let t = it
                    .found
                    .root
                    .read_link(&it.found.rel, MAX_LINK)
                    .map_err(|e| BuildError::Refused(e.to_string()))?;
                w.symlink(&it.dest, m, Path::new(&t))?;
            }
            k => w.skip(format!("/{} ({k})", it.found.rel.display())),
        }
    }
    Ok(())
}

/// ADD of a local archive: its entries below `it.dest`, each path checked.
fn unpack(
    it: &Item<'_>,
    args: &CopyArgs,
    done: &mut BTreeSet<PathBuf>,
    w: &mut LayerWriter,
) -> Result<(), BuildError> {
    let name = it.found.rel.display().to_string();
    let refuse = |entry: &str, why: &str| {
        BuildError::Refused(format!(
            "archive {name}: entry {entry:?} {why}; ADD refuses it"
        ))
    };
    let f = Tree::open_file(&it.found)?;
    let mut head = [0u8; 2];
    Tree::open_file(&it.found)?
        .read_exact(&mut head)
        .map_err(|e| BuildError::io("read", &it.found.rel, e))?;
    let r: Box<dyn Read> = if head == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::new(f))
    };
    let bad =
        |e: std::io::Error| BuildError::Invalid(format!("archive {name} is not a valid tar: {e}"));
    let mut ar = tar::Archive::new(r);
    if !it.dest.as_os_str().is_empty() && done.insert(it.dest.clone()) {
        w.dir(
            &it.dest,
            Meta {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
            },
        )?;
    }
    for e in ar.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let raw = e.path().map_err(bad)?.into_owned();
        let shown = raw.display().to_string();
        let mut rel = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(n) => rel.push(n),
                Component::CurDir => {}
                _ => return Err(refuse(&shown, "is absolute or holds ..")),
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = it.dest.join(&rel);
        let h = e.header();
        let (uid, gid) = args
            .chown
            .unwrap_or((h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32));
        let m = Meta {
            mode: args.chmod.unwrap_or(h.mode().unwrap_or(0o644) & 0o7777),
            uid,
            gid,
            mtime: h.mtime().unwrap_or(0) as i64,
        };
        match h.entry_type() {
            tar::EntryType::Directory => {
                if done.insert(dest.clone()) {
                    w.dir(&dest, m)?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = h.size().map_err(bad)?;
                w.file(&dest, m, size, &mut e)?;
            }
            tar::EntryType::Symlink => {
                let t = e
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| refuse(&shown, "is a symlink without a target"))?
                    .into_owned();
                w.symlink(&dest, m, &t)?;
            }
            tar::EntryType::Link => {
                let t = e
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| refuse(&shown, "is a hard link without a target"))?
                    .into_owned();
                let mut trel = PathBuf::new();
                for c in t.components() {
                    match c {
                        Component::Normal(n) => trel.push(n),
                        Component::CurDir => {}
                        _ => return Err(refuse(&shown, "is a hard link out of the archive")),
                    }
                }
                w.hardlink(&dest, m, &it.dest.join(trel))?;
            }
            tar::EntryType::Fifo => w.fifo(&dest, m)?,
            _ => w.skip(format!("{name}: {shown} (device or unsupported entry)")),
        }
    }
    Ok(())
}

/// Parse `--chown=user[:group]` with names looked up in the image's
/// `/etc/passwd` and `/etc/group` (numeric ids need no lookup).
pub fn chown(spec: &str, image: &Tree) -> Result<(u32, u32), BuildError> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str| -> Result<(u32, Option<u32>), BuildError> {
        if let Ok(n) = name.parse::<u32>() {
            return Ok((n, None));
        }
        let text = image
            .read_capped(Path::new(file), 4 << 20)?
            .unwrap_or_default();
        for line in String::from_utf8_lossy(&text).lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[0] == name {
                let id = f[2].parse().ok();
                let gid = f[3].parse().ok();
                if let Some(id) = id {
                    return Ok((id, gid));
                }
            }
        }
        Err(BuildError::Invalid(format!(
            "--chown: {name:?} is not in the image's /{file}; use a numeric id or create it first"
        )))
    };
    let (uid, primary) = lookup("etc/passwd", u)?;
    let gid = match g {
        Some(g) => lookup("etc/group", g)?.0,
        None => primary.unwrap_or(uid),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> (tempfile::TempDir, Tree, Tree) {
        let t = tempfile::tempdir().unwrap();
        let c = t.path().join("ctx");
        std::fs::create_dir_all(c.join("src/sub")).unwrap();
        std::fs::write(c.join("a.txt"), "a").unwrap();
        std::fs::write(c.join("b.txt"), "b").unwrap();
        std::fs::write(c.join("src/main.rs"), "m").unwrap();
        std::fs::write(c.join("src/sub/x"), "x").unwrap();
        let img = t.path().join("img");
        std::fs::create_dir_all(img.join("opt/app")).unwrap();
        let (ct, it) = (Tree::dir(&c).unwrap(), Tree::image(&[img], &[]).unwrap());
        (t, ct, it)
    }

    fn dests(items: &[Item<'_>]) -> Vec<String> {
        items.iter().map(|i| i.dest.display().to_string()).collect()
    }

    fn args(srcs: &[&str], dest: &str) -> CopyArgs {
        CopyArgs {
            srcs: srcs.iter().map(|s| s.to_string()).collect(),
            dest: dest.into(),
            from_context: true,
            ..Default::default()
        }
    }

    #[test]
    fn destinations_follow_docker_rules() {
        let (_t, c, i) = ctx();
        // A file to a path, to a dir (trailing / or existing dir).
        assert_eq!(
            dests(&plan(&c, &i, &args(&["a.txt"], "/opt/f"), None).unwrap()),
            ["opt/f"]
        );
        assert_eq!(
            dests(&plan(&c, &i, &args(&["a.txt"], "/opt/new/"), None).unwrap()),
            ["opt/new/a.txt"]
        );
        assert_eq!(
            dests(&plan(&c, &i, &args(&["a.txt"], "/opt/app"), None).unwrap()),
            ["opt/app/a.txt"]
        );
        // A dir copies its contents.
        let d = dests(&plan(&c, &i, &args(&["src"], "/s"), None).unwrap());
        assert_eq!(d, ["s", "s/main.rs", "s/sub", "s/sub/x"]);
        // Globs and several sources need a dir destination.
        let d = dests(&plan(&c, &i, &args(&["*.txt"], "/t/"), None).unwrap());
        assert_eq!(d, ["t/a.txt", "t/b.txt"]);
        assert!(plan(&c, &i, &args(&["a.txt", "b.txt"], "/t"), None).is_err());
        // Missing, outside the context, URLs.
        let e = plan(&c, &i, &args(&["nope"], "/x"), None).err().unwrap();
        assert!(e.to_string().contains("not found"), "{e}");
        let e = plan(&c, &i, &args(&["../etc/passwd"], "/x"), None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("outside the build context"), "{e}");
        let mut a = args(&["https://example.com/x"], "/x");
        a.add = true;
        let e = plan(&c, &i, &a, None).err().unwrap();
        assert!(e.to_string().contains("URL"), "{e}");
        // .dockerignore hides files.
        let ign = Ignore::parse("src/sub\n").unwrap();
        let d = dests(&plan(&c, &i, &args(&["src"], "/s"), Some(&ign)).unwrap());
        assert_eq!(d, ["s", "s/main.rs"]);
        let e = plan(&c, &i, &args(&["src/sub/x"], "/x"), Some(&ign))
            .err()
            .unwrap();
        assert!(e.to_string().contains(".dockerignore"), "{e}");
    }
}
