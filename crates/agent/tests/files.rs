//! File operations through the real agent, including a 100 MiB transfer.

mod common;

use bytes::Bytes;
use common::Agent;
use dwell_proto::{ErrorKind, FileKind, WriteOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_op() {
    let a = Agent::start();
    let c = a.client().await;
    let root = a.dir.path().join("files");
    let root = root.to_str().unwrap();

    c.mkdir(&format!("{root}/a/b/c"), true).await.unwrap();
    c.mkdir(&format!("{root}/a/b/c"), true).await.unwrap();
    let e = c.mkdir(&format!("{root}/a"), false).await.unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::AlreadyExists), "{e}");
    let e = c.mkdir(&format!("{root}/x/y"), false).await.unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::NotFound), "{e}");

    let f = format!("{root}/a/hello.txt");
    let mut w = c
        .write_file(
            &f,
            WriteOptions {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.write(Bytes::from_static(b"hello ")).await.unwrap();
    w.write(Bytes::from_static(b"world")).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), 11);
    let mut w = c
        .write_file(
            &f,
            WriteOptions {
                append: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.write(Bytes::from_static(b"!\n")).await.unwrap();
    w.finish().await.unwrap();
    let r = c.read_file(&f).await.unwrap();
    assert_eq!(r.size(), 13);
    assert_eq!(r.read_to_end(1 << 24).await.unwrap(), b"hello world!\n");

    // Truncate, and create parents on demand.
    let g = format!("{root}/new/dir/g.bin");
    let e = c
        .write_file(&g, WriteOptions::default())
        .await
        .err()
        .unwrap();
    assert_eq!(e.remote_kind(), Some(ErrorKind::NotFound));
    let w = c
        .write_file(
            &g,
            WriteOptions {
                create_parents: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(w.finish().await.unwrap(), 0);

    let st = c.stat(&f).await.unwrap();
    assert_eq!(
        (st.kind, st.size, st.mode, st.name.as_str()),
        (FileKind::File, 13, 0o600, "hello.txt")
    );
    assert!(st.modified_ms > 1_600_000_000_000);
    std::os::unix::fs::symlink("hello.txt", format!("{root}/a/link")).unwrap();
    let st = c.stat(&format!("{root}/a/link")).await.unwrap();
    assert_eq!(
        (st.kind, st.symlink_target.as_deref()),
        (FileKind::Symlink, Some("hello.txt"))
    );
    let e = c.stat(&format!("{root}/missing")).await.unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::NotFound));

    let l = c.list_dir(&format!("{root}/a"), 1).await.unwrap();
    let names: Vec<_> = l.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["b", "hello.txt", "link"]);
    let l = c.list_dir(&format!("{root}/a"), 3).await.unwrap();
    let paths: Vec<_> = l
        .iter()
        .map(|e| e.path.strip_prefix(root).unwrap())
        .collect();
    assert_eq!(paths, ["/a/b", "/a/b/c", "/a/hello.txt", "/a/link"]);
    assert_eq!(
        c.list_dir(&f, 1).await.unwrap_err().remote_kind(),
        Some(ErrorKind::NotADirectory)
    );
    let e = c.read_file(&format!("{root}/a")).await.err().unwrap();
    assert_eq!(e.remote_kind(), Some(ErrorKind::IsADirectory));

    let f2 = format!("{root}/a/b/moved.txt");
    c.rename(&f, &f2).await.unwrap();
    assert_eq!(
        c.stat(&f).await.unwrap_err().remote_kind(),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(c.stat(&f2).await.unwrap().size, 13);
    let e = c.rename(&f, &f2).await.unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::NotFound));

    let e = c.remove(&format!("{root}/a"), false).await.unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::DirectoryNotEmpty), "{e}");
    c.remove(&f2, false).await.unwrap();
    c.remove(&format!("{root}/a"), true).await.unwrap();
    assert!(!std::path::Path::new(&format!("{root}/a")).exists());
    assert_eq!(
        c.remove(&format!("{root}/a"), true)
            .await
            .unwrap_err()
            .remote_kind(),
        Some(ErrorKind::NotFound)
    );
}

fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) * 7 % 251) as u8)
        .collect()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    st.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_streams_both_ways() {
    const SIZE: u64 = 100 * 1024 * 1024;
    const CHUNK: usize = 1024 * 1024;
    let a = Agent::start();
    let c = a.client().await;
    let path = a.dir.path().join("big.bin");
    let path = path.to_str().unwrap();

    let mut w = c.write_file(path, WriteOptions::default()).await.unwrap();
    let mut off = 0u64;
    while off < SIZE {
        w.write(Bytes::from(pattern(off, CHUNK))).await.unwrap();
        off += CHUNK as u64;
    }
    assert_eq!(w.finish().await.unwrap(), SIZE);
    assert_eq!(std::fs::metadata(path).unwrap().len(), SIZE);

    let mut r = c.read_file(path).await.unwrap();
    assert_eq!(r.size(), SIZE);
    let mut off = 0u64;
    while let Some(chunk) = r.next_chunk().await.unwrap() {
        assert_eq!(
            &chunk[..],
            &pattern(off, chunk.len())[..],
            "mismatch at {off}"
        );
        off += chunk.len() as u64;
    }
    assert_eq!(off, SIZE);
    // The agent streamed: its peak RSS stayed far below the file size.
    let hwm = rss_kib(a.pid(), "VmHWM:");
    println!("agent peak RSS during 100 MiB transfer: {hwm} KiB");
    assert!(hwm < 32 * 1024, "agent peak RSS {hwm} KiB");

    // A reader dropped half-way cancels the transfer; the connection keeps working.
    let mut r = c.read_file(path).await.unwrap();
    r.next_chunk().await.unwrap().unwrap();
    drop(r);
    assert!(c.health().await.is_ok());
}

/// `write_file` with `xattrs` replaces the attributes under the prefix
/// before the data, `stat`/`list_dir` report them; a refused set leaves no
/// new file and an existing one untouched; symlinks report their target's
/// kind; `health` names the feature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_attributes_and_symlink_kinds() {
    use dwell_proto::XattrSet;
    let a = Agent::start();
    let c = a.client().await;
    let h = c.health().await.unwrap();
    assert!(h.features.iter().any(|f| f == dwell_proto::FEATURE_XATTRS));
    let root = a.dir.path().join("x");
    std::fs::create_dir(&root).unwrap();
    let f = format!("{}/m.txt", root.display());
    let set = |pairs: &[(&str, &str)]| XattrSet {
        prefix: "user.t.".into(),
        set: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let write = |xs: XattrSet, data: &'static [u8]| {
        let c = c.clone();
        let f = f.clone();
        async move {
            let mut w = c
                .write_file_with(&f, WriteOptions::default(), None, Some(xs))
                .await?;
            w.write(Bytes::from_static(data)).await?;
            w.finish().await
        }
    };
    match write(set(&[("user.t.a", "1"), ("user.t.b", "2")]), b"one").await {
        Ok(_) => {}
        // The test directory's file system has no user attributes: the
        // error says so and the new file is gone.
        Err(e)
            if e.to_string()
                .contains("does not support user extended attributes") =>
        {
            assert!(!std::path::Path::new(&f).exists());
            return;
        }
        Err(e) => panic!("{e}"),
    }
    let st = c.stat_with(&f, Some("user.t.")).await.unwrap();
    assert_eq!(st.xattrs.len(), 2);
    assert_eq!(st.xattrs["user.t.a"], "1");
    assert!(
        c.stat(&f).await.unwrap().xattrs.is_empty(),
        "only when asked"
    );
    write(set(&[("user.t.b", "3")]), b"two").await.unwrap();
    let l = c
        .list_dir_with(root.to_str().unwrap(), 1, Some("user.t."))
        .await
        .unwrap();
    assert_eq!(l[0].xattrs.len(), 1);
    assert_eq!(l[0].xattrs["user.t.b"], "3");
    // Refused: a name outside the prefix. The existing file is untouched.
    let e = write(set(&[("user.other", "x")]), b"three")
        .await
        .unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::InvalidArgument), "{e}");
    assert_eq!(std::fs::read(&f).unwrap(), b"two");
    // Refused on a new file: nothing is left.
    let g = format!("{}/new.txt", root.display());
    let big = XattrSet {
        prefix: "user.t.".into(),
        set: [("user.t.a".to_string(), "x".repeat(5000))].into(),
    };
    let e = c
        .write_file_with(&g, WriteOptions::default(), None, Some(big))
        .await
        .err()
        .unwrap();
    assert_eq!(e.remote_kind(), Some(ErrorKind::InvalidArgument), "{e}");
    assert!(!std::path::Path::new(&g).exists());
    // Symlinks: their target's kind; none when dangling.
    std::os::unix::fs::symlink("m.txt", root.join("l")).unwrap();
    std::os::unix::fs::symlink("gone", root.join("d")).unwrap();
    let l = c.stat(&format!("{}/l", root.display())).await.unwrap();
    assert_eq!(
        (l.kind, l.target_kind),
        (FileKind::Symlink, Some(FileKind::File))
    );
    let d = c.stat(&format!("{}/d", root.display())).await.unwrap();
    assert_eq!(d.target_kind, None);
}
