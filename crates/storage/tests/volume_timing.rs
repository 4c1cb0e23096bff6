//! Create latency of loop volumes: p50 and max over 20 creates of the
//! default size, and of create plus first mount (printed; run with
//! `--nocapture` to see it).

mod common;

use std::time::{Duration, Instant};

use common::has_loop;
use dwell_storage::{VolumeKind, VolumeManager, DEFAULT_VOLUME_SIZE};

#[test]
fn create_timing_p50_of_20() {
    if !has_loop() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("dwell-vol-timing")
        .tempdir_in("/var/tmp")
        .unwrap();
    let mgr = VolumeManager::with_kind(dir.path().join("volumes"), VolumeKind::Loop);
    // Deletes every volume made here, even when an assertion fails.
    struct Cleanup<'a>(&'a VolumeManager);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            for id in self.0.list().unwrap_or_default() {
                let _ = self.0.delete(&id);
            }
        }
    }
    let _cleanup = Cleanup(&mgr);
    let first = Instant::now();
    mgr.create("warm", DEFAULT_VOLUME_SIZE).unwrap();
    let first = first.elapsed();
    let mut times: Vec<Duration> = (0..20)
        .map(|i| {
            let t = Instant::now();
            mgr.create(&format!("t{i}"), DEFAULT_VOLUME_SIZE).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "create of a {} GiB volume: first {first:?}, then p50 {:?}, min {:?}, max {:?} (20 creates)",
        DEFAULT_VOLUME_SIZE >> 30,
        times[10],
        times[0],
        times[19]
    );
    assert!(times[10] < Duration::from_secs(2), "create too slow");

    // Create plus first mount: the copy's data reaches the disk when the
    // mount writes its superblock, so this shows where that cost went.
    let mut both: Vec<Duration> = (0..10)
        .map(|i| {
            let t = Instant::now();
            let id = format!("m{i}");
            mgr.create(&id, DEFAULT_VOLUME_SIZE).unwrap();
            mgr.mount(&id).unwrap();
            t.elapsed()
        })
        .collect();
    both.sort();
    println!(
        "create + first mount: p50 {:?}, min {:?}, max {:?} (10 runs)",
        both[5], both[0], both[9]
    );
}
