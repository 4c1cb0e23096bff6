//! `chown` through the real agent: files, directories and symlinks (the
//! link itself), and the error for a missing path.

mod common;

use std::os::unix::fs::MetadataExt;

use common::Agent;
use dwell_proto::ErrorKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chown_files_dirs_and_links() {
    let a = Agent::start();
    let c = a.client().await;
    let root = a.dir.path().join("own");
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("f"), b"x").unwrap();
    std::os::unix::fs::symlink(root.join("f"), root.join("l")).unwrap();
    let p = |n: &str| root.join(n).to_str().unwrap().to_string();

    c.chown(&p("f"), 1234, 5678).await.unwrap();
    c.chown(&p("d"), 1234, 5678).await.unwrap();
    c.chown(&p("l"), 4321, 8765).await.unwrap();
    let md = |n: &str| std::fs::symlink_metadata(root.join(n)).unwrap();
    assert_eq!((md("f").uid(), md("f").gid()), (1234, 5678));
    assert_eq!((md("d").uid(), md("d").gid()), (1234, 5678));
    assert_eq!((md("l").uid(), md("l").gid()), (4321, 8765));
    assert_eq!(md("f").uid(), 1234, "the link's target keeps its owner");

    let e = c.chown(&p("missing"), 1, 1).await.unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::NotFound), "{e}");
}
