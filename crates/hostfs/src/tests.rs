//! Attacks a sandbox can plant in a tree the daemon reads, each run with
//! both resolvers (`openat2` and the `O_NOFOLLOW` walk).

use super::*;
use std::os::unix::fs::symlink;

const BOTH: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];

/// A root with `secret` outside it (what an attack aims at) and
/// `root/dir/file` inside.
struct Fixture {
    _t: tempfile::TempDir,
    outside: PathBuf,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    let root = t.path().join("root");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "host secret").unwrap();
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::write(root.join("dir/file"), "inside").unwrap();
    Fixture {
        _t: t,
        outside,
        root,
    }
}

fn refused_as(e: Error, want: fn(&Reason) -> bool) {
    assert!(want(&e.reason), "unexpected refusal: {e}");
    assert!(e.is_refused());
}

fn symlink_refused(e: Error) {
    let msg = e.to_string();
    assert!(msg.contains("symlink"), "{msg}");
    refused_as(e, |r| matches!(r, Reason::Symlink));
}

#[test]
fn openat2_is_detected_where_the_kernel_has_it() {
    // SAFETY: uname fills the buffer.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::uname(&mut u) }, 0);
    // SAFETY: the kernel NUL-terminates the release.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    // openat2 came with Linux 5.6; the walk is only the fallback.
    if (major, minor) >= (5, 6) {
        assert_eq!(Resolver::detect(), Resolver::Openat2, "kernel {release}");
    }
}

#[test]
fn reads_plain_files_and_dirs() {
    for r in BOTH {
        let f = fixture();
        let b = Beneath::open_with(&f.root, r).unwrap();
        assert_eq!(b.read_capped("dir/file", 100).unwrap(), b"inside");
        assert_eq!(b.read_string_capped("./dir/file", 6).unwrap(), "inside");
        let names: Vec<_> = b
            .read_dir("dir")
            .unwrap()
            .map(|e| e.unwrap().name)
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("file")]);
        assert_eq!(b.stat("dir").unwrap().kind, FileKind::Dir);
        assert_eq!(b.stat("").unwrap().kind, FileKind::Dir);
        assert!(b.try_stat("dir/none").unwrap().is_none());
        assert!(b.try_stat("none/none").unwrap().is_none());
        assert_eq!(
            b.open_dir("dir").unwrap().read_capped("file", 6).unwrap(),
            b"inside"
        );
    }
}

#[test]
fn a_symlink_to_a_host_file_is_not_followed() {
    for r in BOTH {
        let f = fixture();
        symlink(f.outside.join("secret"), f.root.join("status")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        symlink_refused(b.read_capped("status", 1 << 20).unwrap_err());
        symlink_refused(b.open_file("status").unwrap_err());
        // lstat sees the link itself.
        assert_eq!(b.stat("status").unwrap().kind, FileKind::Symlink);
    }
}

#[test]
fn a_symlink_even_one_that_stays_beneath_is_not_followed() {
    for r in BOTH {
        let f = fixture();
        symlink("dir/file", f.root.join("inner")).unwrap();
        symlink("dir", f.root.join("inner_dir")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        symlink_refused(b.read_capped("inner", 100).unwrap_err());
        symlink_refused(b.read_capped("inner_dir/file", 100).unwrap_err());
    }
}

#[test]
fn an_absolute_symlink_on_the_way_is_not_followed() {
    for r in BOTH {
        let f = fixture();
        std::fs::create_dir_all(f.root.join("var/lib")).unwrap();
        symlink(&f.outside, f.root.join("var/lib/dpkg")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        symlink_refused(b.read_capped("var/lib/dpkg/secret", 100).unwrap_err());
        symlink_refused(b.read_dir("var/lib/dpkg").unwrap_err());
        symlink_refused(b.stat("var/lib/dpkg/secret").unwrap_err());
        symlink_refused(b.remove("var/lib/dpkg/secret").unwrap_err());
        assert!(f.outside.join("secret").exists());
    }
}

#[test]
fn dot_dot_and_absolute_paths_are_refused() {
    for r in BOTH {
        let f = fixture();
        symlink("../outside", f.root.join("up")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        for p in [
            "../outside/secret",
            "dir/../../outside/secret",
            "/etc/passwd",
            "..",
        ] {
            let e = b.read_capped(p, 100).unwrap_err();
            assert!(e.to_string().contains("leaves its root"), "{e}");
            refused_as(e, |r| matches!(r, Reason::Escape));
        }
        symlink_refused(b.read_capped("up/secret", 100).unwrap_err());
    }
}

#[test]
fn magic_links_are_not_followed() {
    for r in BOTH {
        // /proc/self/root is a magic link to the host's root.
        let proc_self = Beneath::open_with(format!("/proc/{}", std::process::id()), r).unwrap();
        symlink_refused(
            proc_self
                .read_capped("root/etc/hostname", 4096)
                .unwrap_err(),
        );
        symlink_refused(proc_self.read_dir("cwd").unwrap_err());
        // And planted as a plain symlink into a sandbox's tree.
        let f = fixture();
        symlink("/proc/self/root", f.root.join("hostroot")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        symlink_refused(b.read_capped("hostroot/etc/hostname", 4096).unwrap_err());
    }
}

#[test]
fn the_root_itself_must_not_be_a_symlink() {
    let f = fixture();
    let link = f.root.parent().unwrap().join("link");
    symlink(&f.outside, &link).unwrap();
    symlink_refused(Beneath::open(&link).unwrap_err());
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    for r in BOTH {
        let f = fixture();
        let fifo = CString::new(f.root.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let b = Beneath::open_with(&f.root, r).unwrap();
        // Without O_NONBLOCK this open would wait for a writer forever.
        let e = b.read_capped("fifo", 100).unwrap_err();
        assert!(e.to_string().contains("fifo"), "{e}");
        refused_as(e, |r| matches!(r, Reason::Special(FileKind::Fifo)));
    }
}

#[test]
fn devices_are_refused_before_a_byte_is_read() {
    for r in BOTH {
        let dev = Beneath::open_with("/dev", r).unwrap();
        for name in ["zero", "null", "full"] {
            let e = dev.read_capped(name, 100).unwrap_err();
            assert!(e.to_string().contains("character device"), "{e}");
            refused_as(e, |r| matches!(r, Reason::Special(FileKind::CharDevice)));
        }
        // A symlink to /dev/zero planted in a sandbox's tree.
        let f = fixture();
        symlink("/dev/zero", f.root.join("status")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        symlink_refused(b.read_capped("status", 100).unwrap_err());
    }
}

#[test]
fn open_path_reaches_a_socket_but_no_symlink() {
    for r in BOTH {
        let f = fixture();
        let _l = std::os::unix::net::UnixListener::bind(f.root.join("dir/sock")).unwrap();
        symlink(f.root.join("dir/sock"), f.root.join("link")).unwrap();
        symlink(f.root.join("dir"), f.root.join("dirlink")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        let fd = b.open_path("dir/sock").unwrap();
        assert!(
            matches!(fstat(fd.as_raw_fd()), Ok(st) if st.kind == FileKind::Socket),
            "{r:?}"
        );
        // A trailing symlink is the link itself (O_PATH | O_NOFOLLOW),
        // never its target.
        let link = b.open_path("link").unwrap();
        assert!(
            matches!(fstat(link.as_raw_fd()), Ok(st) if st.kind == FileKind::Symlink),
            "{r:?}"
        );
        symlink_refused(b.open_path("dirlink/sock").unwrap_err());
        assert!(b.open_path("../secret").is_err(), "{r:?}");
    }
}

#[test]
fn a_unix_socket_is_refused() {
    for r in BOTH {
        let f = fixture();
        let _l = std::os::unix::net::UnixListener::bind(f.root.join("sock")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        let e = b.read_capped("sock", 100).unwrap_err();
        // Opening a socket fails (ENXIO) or is refused as special: never read.
        assert!(e.to_string().contains("sock"), "{e}");
        assert_eq!(b.stat("sock").unwrap().kind, FileKind::Socket);
    }
}

#[test]
fn reads_over_the_cap_are_refused() {
    for r in BOTH {
        let f = fixture();
        std::fs::write(f.root.join("big"), vec![b'x'; 4097]).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        assert_eq!(b.read_capped("big", 4097).unwrap().len(), 4097);
        let e = b.read_capped("big", 4096).unwrap_err();
        assert!(e.to_string().contains("larger than the 4096 bytes"), "{e}");
        refused_as(e, |r| matches!(r, Reason::TooLarge { cap: 4096 }));
        let dir = b.read_capped("dir", 10).unwrap_err();
        refused_as(dir, |r| matches!(r, Reason::WrongKind { .. }));
    }
}

#[test]
fn listing_reports_symlinks_as_symlinks() {
    for r in BOTH {
        let f = fixture();
        symlink(&f.outside, f.root.join("dir/link")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        let mut kinds: Vec<_> = b
            .read_dir("dir")
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.name.into_string().unwrap(), e.stat.kind))
            .collect();
        kinds.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            kinds,
            vec![
                ("file".into(), FileKind::File),
                ("link".into(), FileKind::Symlink)
            ]
        );
    }
}

#[test]
fn remove_tree_removes_links_not_their_targets() {
    for r in BOTH {
        let f = fixture();
        std::fs::create_dir_all(f.root.join("dir/deep/er")).unwrap();
        symlink(&f.outside, f.root.join("dir/deep/er/out")).unwrap();
        symlink(f.outside.join("secret"), f.root.join("dir/secret")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        b.remove_tree("dir").unwrap();
        assert!(!f.root.join("dir").exists());
        assert_eq!(
            std::fs::read_to_string(f.outside.join("secret")).unwrap(),
            "host secret"
        );
        // A symlink as the tree itself is removed as a link.
        symlink(&f.outside, f.root.join("dir")).unwrap();
        b.remove_tree("dir").unwrap();
        assert!(f.outside.join("secret").exists());
    }
}

#[test]
fn remove_tree_stops_at_a_mount_point() {
    let f = fixture();
    let mnt = f.root.join("dir/mnt");
    std::fs::create_dir(&mnt).unwrap();
    let c = CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings. Skipped when not allowed to mount.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    std::fs::write(mnt.join("kept"), "x").unwrap();
    let b = Beneath::open(&f.root).unwrap();
    let e = b.remove_tree("dir").unwrap_err();
    // SAFETY: a valid C string.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    assert!(e.to_string().contains("mount point"), "{e}");
}

#[test]
fn chown_changes_the_link_not_its_target() {
    for r in BOTH {
        let f = fixture();
        symlink(f.outside.join("secret"), f.root.join("link")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        b.chown("link", 4242, 4242).unwrap();
        assert_eq!(b.stat("link").unwrap().uid, 4242);
        let host = std::fs::metadata(f.outside.join("secret")).unwrap();
        assert_ne!(std::os::unix::fs::MetadataExt::uid(&host), 4242);
        symlink(&f.outside, f.root.join("via")).unwrap();
        symlink_refused(b.chown("via/secret", 4242, 4242).unwrap_err());
    }
}

#[test]
fn create_is_exclusive_and_never_through_a_link() {
    for r in BOTH {
        let f = fixture();
        symlink(f.outside.join("new"), f.root.join("dangling")).unwrap();
        symlink(&f.outside, f.root.join("via")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        assert!(b.create("dangling", 0o600).is_err());
        symlink_refused(b.create("via/new", 0o600).unwrap_err());
        assert!(!f.outside.join("new").exists());
        std::io::Write::write_all(&mut b.create("dir/new", 0o600).unwrap(), b"ok").unwrap();
        assert!(b.create("dir/new", 0o600).is_err());
        b.mkdir("dir/sub", 0o700).unwrap();
        symlink_refused(b.mkdir("via/sub", 0o700).unwrap_err());
        assert!(!f.outside.join("sub").exists());
    }
}

#[test]
fn rename_moves_links_as_links_and_refuses_linked_parents() {
    for r in BOTH {
        let f = fixture();
        symlink(f.outside.join("secret"), f.root.join("link")).unwrap();
        symlink(&f.outside, f.root.join("via")).unwrap();
        let b = Beneath::open_with(&f.root, r).unwrap();
        b.rename("link", "dir/moved").unwrap();
        assert_eq!(b.stat("dir/moved").unwrap().kind, FileKind::Symlink);
        symlink_refused(b.rename("dir/file", "via/stolen").unwrap_err());
        assert!(!f.outside.join("stolen").exists());
    }
}

#[test]
fn errors_convert_to_io_errors_that_keep_the_message() {
    let f = fixture();
    symlink("/etc/passwd", f.root.join("l")).unwrap();
    let b = Beneath::open(&f.root).unwrap();
    let e: std::io::Error = b.read_capped("l", 10).unwrap_err().into();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(e.to_string().contains("never follows symlinks"), "{e}");
    let nf: std::io::Error = b.read_capped("none", 10).unwrap_err().into();
    assert_eq!(nf.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn remove_tree_by_path() {
    let f = fixture();
    symlink(&f.outside, f.root.join("dir/out")).unwrap();
    remove_tree(&f.root).unwrap();
    assert!(!f.root.exists());
    assert!(f.outside.join("secret").exists());
    assert!(remove_tree(&f.root).unwrap_err().is_not_found());
}

#[test]
fn remove_tree_handles_trees_deeper_than_its_open_dirs() {
    for r in BOTH {
        let f = fixture();
        // Deeper than a path can name (PATH_MAX) and than MAX_OPEN_DIRS.
        let mut d = std::fs::File::open(&f.root).unwrap();
        let name = "d".repeat(200);
        for i in 0..(MAX_OPEN_DIRS * 3) {
            let c = CString::new(name.as_str()).unwrap();
            // SAFETY: a valid dir fd and C string.
            assert_eq!(
                unsafe { libc::mkdirat(d.as_raw_fd(), c.as_ptr(), 0o755) },
                0
            );
            let fd = unsafe {
                libc::openat(
                    d.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                )
            };
            assert!(fd >= 0);
            // SAFETY: a new fd we own.
            d = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            if i % 7 == 0 {
                let l = CString::new("link").unwrap();
                let t = CString::new(f.outside.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: valid C strings and dir fd.
                assert_eq!(
                    unsafe { libc::symlinkat(t.as_ptr(), d.as_raw_fd(), l.as_ptr()) },
                    0
                );
            }
        }
        drop(d);
        let b = Beneath::open_with(&f.root, r).unwrap();
        b.remove_tree("dir").unwrap();
        b.remove_tree(&name).unwrap();
        assert_eq!(std::fs::read_dir(&f.root).unwrap().count(), 0);
        assert!(f.outside.join("secret").exists());
    }
}
