//! Benchmark: snapshot of a 1 GiB image full of random data, a second snapshot after changing
//! 10 MiB, restore of the 1 GiB, against `tar | zstd` and `cp --reflink=auto` of the same image.
//!
//! `cargo run --release -p dwell-snapshot --no-default-features --example bench [-- DIR [MiB]]`
//! DIR defaults to /var/tmp (use a directory on the disk you care about); the page cache is left
//! as it is (warm), since dropping it would disturb everything else on the machine.
//! With the `s3` feature and `DWELL_BENCH_S3=http://127.0.0.1:PORT/bucket` (an existing bucket on
//! an S3-compatible server), it also times a full snapshot, an incremental one and a restore
//! against that server.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dwell_snapshot::*;

const MIB: u64 = 1 << 20;

fn fill_random(f: &std::fs::File, offset: u64, len: u64, seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; MIB as usize];
    let mut off = 0;
    while off < len {
        for c in buf.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            c.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = (len - off).min(MIB) as usize;
        f.write_all_at(&buf[..n], offset + off).unwrap();
        off += n as u64;
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

fn sh(cmd: &str) -> Duration {
    let t = Instant::now();
    let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "{cmd} failed");
    t.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args.get(1).map(String::as_str).unwrap_or("/var/tmp");
    let size_mib: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(1024);
    let dir = tempfile::Builder::new()
        .prefix("dwell-snapshot-bench.")
        .tempdir_in(base)
        .unwrap();
    let d = dir.path();
    let img = d.join("volume.img");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&img)
        .unwrap();
    let size = size_mib * MIB;
    f.set_len(size).unwrap();
    let t = Instant::now();
    fill_random(&f, 0, size, 1);
    f.sync_all().unwrap();
    println!(
        "image: {} of random data in {} (written in {})",
        mib(size),
        d.display(),
        secs(t.elapsed())
    );
    println!("| operation | chunk size | time | stored / uploaded |");
    println!("|---|---|---|---|");
    for chunk in [MIB, 4 * MIB] {
        let store = LocalStore::open(d.join(format!("store-{}", chunk / MIB))).unwrap();
        let t = Instant::now();
        let a = create(
            &img,
            &store,
            &CreateOptions {
                id: Some("full".into()),
                chunk_size: chunk,
                ..CreateOptions::default()
            },
        )
        .unwrap();
        println!(
            "| snapshot (full) | {} | {} | {} |",
            mib(chunk),
            secs(t.elapsed()),
            mib(a.sizes.uploaded)
        );
        fill_random(&f, size / 2, 10 * MIB, 2 + chunk);
        f.sync_all().unwrap();
        let t = Instant::now();
        let b = create(
            &img,
            &store,
            &CreateOptions {
                id: Some("incr".into()),
                chunk_size: chunk,
                parent: Some(&a),
                ..CreateOptions::default()
            },
        )
        .unwrap();
        println!(
            "| snapshot after changing 10 MiB | {} | {} | {} |",
            mib(chunk),
            secs(t.elapsed()),
            mib(b.sizes.uploaded)
        );
        // Scattered change: 10 x 1 MiB spread over the image.
        for i in 0..10 {
            fill_random(&f, i * (size / 10) + 3 * MIB, MIB, 50 + i + chunk);
        }
        f.sync_all().unwrap();
        let t = Instant::now();
        let c = create(
            &img,
            &store,
            &CreateOptions {
                id: Some("scattered".into()),
                chunk_size: chunk,
                parent: Some(&b),
                ..CreateOptions::default()
            },
        )
        .unwrap();
        println!(
            "| snapshot after changing 10 x 1 MiB scattered | {} | {} | {} |",
            mib(chunk),
            secs(t.elapsed()),
            mib(c.sizes.uploaded)
        );
        let out = d.join("restored.img");
        let t = Instant::now();
        restore(&c, &store, &out, &RestoreOptions::default()).unwrap();
        println!(
            "| restore (verified, fsynced) | {} | {} | |",
            mib(chunk),
            secs(t.elapsed())
        );
        std::fs::remove_file(&out).unwrap();
        std::fs::remove_dir_all(store.root()).unwrap();
    }
    #[cfg(feature = "s3")]
    if let Ok(url) = std::env::var("DWELL_BENCH_S3") {
        bench_s3(&url, &img, &f, size, d);
    }
    let p = |x: &Path| x.display().to_string();
    let tz = d.join("volume.tar.zst");
    let t = sh(&format!(
        "tar -C {} -cSf - volume.img | zstd -q -1 -T2 -o {} && sync -f {}",
        p(d),
        p(&tz),
        p(&tz)
    ));
    let tz_size = std::fs::metadata(&tz).unwrap().len();
    println!(
        "| tar -S, zstd -1 -T2 (full every time) | | {} | {} |",
        secs(t),
        mib(tz_size)
    );
    let t = sh(&format!(
        "mkdir {0}/x && zstd -q -d -c {1} | tar -C {0}/x -xSf - && sync -f {0}/x/volume.img",
        p(d),
        p(&tz)
    ));
    println!("| untar (restore) | | {} | |", secs(t));
    let t = sh(&format!(
        "cp --reflink=auto {} {}/copy.img && sync -f {}/copy.img",
        p(&img),
        p(d),
        p(d)
    ));
    println!(
        "| cp --reflink=auto (+ sync) | | {} | {} |",
        secs(t),
        mib(size)
    );
}

#[cfg(feature = "s3")]
fn bench_s3(url: &str, img: &Path, f: &std::fs::File, size: u64, d: &Path) {
    let (endpoint, bucket) = url.rsplit_once('/').expect("http://host:port/bucket");
    let mut cfg = S3Config::from_url(&format!("s3://{bucket}/bench")).unwrap();
    cfg.endpoint = Some(endpoint.to_string());
    cfg.allow_http = true;
    cfg.access_key_id = Some("bench".into());
    cfg.secret_access_key = Some("bench".into());
    let store = S3Store::new(&cfg).unwrap();
    let run = |id: &str, parent: Option<&Manifest>| {
        let t = Instant::now();
        let m = create(
            img,
            &store,
            &CreateOptions {
                id: Some(id.into()),
                parent,
                ..CreateOptions::default()
            },
        )
        .unwrap();
        (t.elapsed(), m)
    };
    let (t, a) = run("s3-full", None);
    println!(
        "| S3 snapshot (full, 8 parallel PUTs) | 1.0 MiB | {} | {} |",
        secs(t),
        mib(size)
    );
    fill_random(f, size / 3, 10 * MIB, 4242);
    f.sync_all().unwrap();
    let (t, m) = run("s3-incr", None);
    println!(
        "| S3 snapshot after changing 10 MiB (HEAD per chunk) | 1.0 MiB | {} | {} |",
        secs(t),
        mib(m.sizes.uploaded)
    );
    fill_random(f, size / 4, 10 * MIB, 4343);
    f.sync_all().unwrap();
    let (t, m) = run("s3-incr2", Some(&a));
    println!(
        "| S3 snapshot after changing 10 MiB (parent hint) | 1.0 MiB | {} | {} |",
        secs(t),
        mib(m.sizes.uploaded)
    );
    let out = d.join("s3-restored.img");
    let t = Instant::now();
    restore(&m, &store, &out, &RestoreOptions::default()).unwrap();
    println!(
        "| S3 restore (8 parallel GETs) | 1.0 MiB | {} | |",
        secs(t.elapsed())
    );
    std::fs::remove_file(out).unwrap();
}
