//! Directory watches through the real agent: create, write, chmod, rename
//! and remove under a recursive watch, a new subdirectory being picked up,
//! the watch ending when its directory goes, and errors for bad paths;
//! flushes, and what a directory already holds when it joins the watch.

mod common;

use std::time::Duration;

use common::Agent;
use dwell_proto::{ErrorKind, FsChange, FsEvent, WatchItem, Watcher};

/// Events until `want` is seen (or 5 s pass).
async fn until(w: &mut Watcher, want: &FsEvent) -> Vec<FsEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains(want) {
        match tokio::time::timeout_at(deadline, w.next()).await {
            Ok(Ok(Some(e))) => seen.push(e),
            other => panic!("waiting for {want:?}: got {other:?} after {seen:?}"),
        }
    }
    seen
}

fn ev(name: &str, change: FsChange) -> FsEvent {
    FsEvent {
        name: name.into(),
        change,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_watch_reports_changes() {
    let a = Agent::start();
    let c = a.client().await;
    let root = a.dir.path().join("watched");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let root_s = root.to_str().unwrap();
    let mut w = c.watch(root_s, true).await.unwrap();

    std::fs::write(root.join("a.txt"), b"1").unwrap();
    until(&mut w, &ev("a.txt", FsChange::Create)).await;
    until(&mut w, &ev("a.txt", FsChange::Write)).await;
    std::fs::write(root.join("sub/deep.txt"), b"2").unwrap();
    until(&mut w, &ev("sub/deep.txt", FsChange::Create)).await;

    std::fs::create_dir(root.join("new")).unwrap();
    until(&mut w, &ev("new", FsChange::Create)).await;
    // The new directory is watched too.
    std::fs::write(root.join("new/n.txt"), b"3").unwrap();
    until(&mut w, &ev("new/n.txt", FsChange::Create)).await;

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    until(&mut w, &ev("a.txt", FsChange::Chmod)).await;
    std::fs::rename(root.join("a.txt"), root.join("b.txt")).unwrap();
    until(&mut w, &ev("a.txt", FsChange::Rename)).await;
    until(&mut w, &ev("b.txt", FsChange::Create)).await;
    std::fs::remove_file(root.join("b.txt")).unwrap();
    until(&mut w, &ev("b.txt", FsChange::Remove)).await;

    // Removing the watched directory ends the watch.
    std::fs::remove_dir_all(&root).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match w.next().await {
                Ok(Some(_)) => continue,
                r => return r,
            }
        }
    })
    .await
    .expect("the watch ends when its directory is removed");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_watch_ignores_subdirectories_and_bad_paths_fail() {
    let a = Agent::start();
    let c = a.client().await;
    let root = a.dir.path().join("flat");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let mut w = c.watch(root.to_str().unwrap(), false).await.unwrap();
    std::fs::write(root.join("sub/x"), b"x").unwrap();
    std::fs::write(root.join("top"), b"x").unwrap();
    let seen = until(&mut w, &ev("top", FsChange::Create)).await;
    assert!(seen.iter().all(|e| !e.name.starts_with("sub/")), "{seen:?}");
    drop(w);

    let e = c
        .watch(root.join("missing").to_str().unwrap(), false)
        .await
        .err()
        .unwrap();
    assert_eq!(e.remote_kind(), Some(ErrorKind::NotFound), "{e}");
    let e = c
        .watch(root.join("top").to_str().unwrap(), false)
        .await
        .err()
        .unwrap();
    assert_eq!(e.remote_kind(), Some(ErrorKind::NotADirectory), "{e}");
    // The connection still serves requests after a dropped watch.
    c.health().await.unwrap();
}

/// A recursive watch of a tree with more directories than one watch covers
/// fails with a clear error, and the agent stays responsive meanwhile (the
/// walk is not on its event loop). Pseudo file systems are not descended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_trees_fail_and_pseudo_filesystems_are_skipped() {
    let a = Agent::start();
    let c = a.client().await;
    let root = a.dir.path().join("big");
    for i in 0..90 {
        for j in 0..92 {
            std::fs::create_dir_all(root.join(format!("{i}/{j}"))).unwrap();
        }
    }
    let root_s = root.to_str().unwrap().to_string();
    let c2 = c.clone();
    let watch = tokio::spawn(async move { c2.watch(&root_s, true).await });
    c.health().await.expect("the agent answers during the walk");
    let e = watch.await.unwrap().err().expect("too many directories");
    assert_eq!(e.remote_kind(), Some(ErrorKind::InvalidArgument), "{e}");
    assert!(e.to_string().contains("directories to watch"), "{e}");

    // /proc below a watched directory is not walked (it would be huge);
    // /proc itself can be watched directly.
    let w = c.watch("/proc", false).await;
    assert!(w.is_ok(), "{:?}", w.err());
}

/// Items until the answer to flush `seq` (or 5 s pass).
async fn until_flushed(w: &mut Watcher, seq: u64) -> Vec<FsEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, w.next_item()).await {
            Ok(Ok(Some(WatchItem::Fs(e)))) => seen.push(e),
            Ok(Ok(Some(WatchItem::Flushed(n)))) if n == seq => return seen,
            Ok(Ok(Some(WatchItem::Flushed(_)))) => {}
            other => panic!("waiting for flush {seq}: got {other:?} after {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_answers_after_every_change_made_before_it() {
    let a = Agent::start();
    let c = a.client().await;
    let root = a.dir.path().join("flushed");
    std::fs::create_dir_all(&root).unwrap();
    let mut w = c.watch(root.to_str().unwrap(), true).await.unwrap();
    assert!(w.can_flush());
    let f = w.flusher().unwrap();
    for i in 0..20u64 {
        // A directory made and filled at once: its file may be written
        // before the agent watches it, and is reported all the same.
        let sub = format!("d{i}");
        std::fs::create_dir_all(root.join(&sub).join("deep")).unwrap();
        std::fs::write(root.join(&sub).join("deep/f.txt"), b"x").unwrap();
        f.flush(i).unwrap();
        let seen = until_flushed(&mut w, i).await;
        for want in [
            ev(&sub, FsChange::Create),
            ev(&format!("{sub}/deep"), FsChange::Create),
            ev(&format!("{sub}/deep/f.txt"), FsChange::Create),
            ev(&format!("{sub}/deep/f.txt"), FsChange::Write),
        ] {
            assert!(seen.contains(&want), "round {i}: {want:?} not in {seen:?}");
        }
        for name in [sub.clone(), format!("{sub}/deep")] {
            let creates = seen
                .iter()
                .filter(|e| **e == ev(&name, FsChange::Create))
                .count();
            assert_eq!(creates, 1, "round {i}: {name} in {seen:?}");
        }
    }
}
