//! The reconciler's transitions and crash recovery, without root: the
//! control plane drives a runtime double (it records every call, keeps
//! the observed state of each sandbox in a file so it outlives a "daemon",
//! and fails an operation on demand) over real SQLite and real directory
//! volumes.
//!
//! Crash points are the daemon's own (`DWELL_CRASH_AT`, see
//! `dwell_control::crashpoint`): a crash test runs the operation in a child
//! process (this test binary again, its `crash_child` case), which kills
//! itself at the named point; the test then opens a new controller on the
//! same data and checks what its first reconcile pass makes of it.
//!
//! Sandboxes use a one-layer OCI image built here with files owned by
//! whoever runs the test (the `host` image copies root-owned files, which
//! needs root), so the whole file runs as an unprivileged user too.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dwell_control::clock::ManualClock;
use dwell_control::model::CreateRequest;
use dwell_control::policy::PolicyArgs;
use dwell_control::{Controller, ControllerOptions, Mode, State};
use dwell_runtime::{Kind, Observed, Runtime, SandboxConfig, Started, Stats};
use dwell_storage::{ImageStore, VolumeKind, VolumeManager};
use dwell_store::Store;

/// A runtime that cannot hibernate (the default) and one that can.
fn plain() -> Kind {
    Kind::ALL
        .into_iter()
        .find(|k| k.capabilities().hibernate.is_none())
        .unwrap()
}

fn hibernating() -> Kind {
    Kind::ALL
        .into_iter()
        .find(|k| k.capabilities().hibernate.is_some())
        .unwrap()
}

/// The file whose presence marks a complete saved state.
fn checkpoint_file() -> &'static str {
    hibernating()
        .capabilities()
        .hibernate
        .unwrap()
        .complete_file
}

/// A runtime double: the observed state of each sandbox (kept in a JSON
/// file, as processes outlive the daemon), every call made, and the
/// operations told to fail.
struct Fake {
    name: &'static str,
    file: PathBuf,
    calls: Mutex<Vec<(String, String)>>,
    fail: Mutex<HashMap<&'static str, String>>,
}

impl Fake {
    fn new(kind: Kind, dir: &Path) -> Arc<Fake> {
        let name = kind.name();
        Arc::new(Fake {
            name,
            file: dir.join(format!("fake-{name}.json")),
            calls: Mutex::default(),
            fail: Mutex::default(),
        })
    }

    fn states(&self) -> HashMap<String, Observed> {
        std::fs::read(&self.file)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or_default()
    }

    fn observed(&self, id: &str) -> Observed {
        self.states().get(id).copied().unwrap_or(Observed::Stopped)
    }

    fn set(&self, id: &str, o: Observed) {
        let mut s = self.states();
        s.insert(id.to_string(), o);
        std::fs::write(&self.file, serde_json::to_vec(&s).unwrap()).unwrap();
    }

    /// Make the next calls of `op` fail with `why`.
    fn fail(&self, op: &'static str, why: &str) {
        self.fail.lock().unwrap().insert(op, why.to_string());
    }

    fn heal(&self) {
        self.fail.lock().unwrap().clear();
    }

    /// The operations called on sandbox `id`, in order.
    fn calls(&self, id: &str) -> Vec<String> {
        let c = self.calls.lock().unwrap();
        c.iter()
            .filter(|(_, i)| i == id)
            .map(|(op, _)| op.clone())
            .collect()
    }

    fn call(&self, op: &'static str, id: &str) -> dwell_runtime::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push((op.to_string(), id.to_string()));
        match self.fail.lock().unwrap().get(op) {
            Some(why) => Err(dwell_runtime::Error::Other(why.clone())),
            None => Ok(()),
        }
    }
}

impl Runtime for Fake {
    fn name(&self) -> &'static str {
        self.name
    }
    fn start(&self, c: &SandboxConfig) -> dwell_runtime::Result<Started> {
        self.call("start", &c.id)?;
        self.set(&c.id, Observed::Running);
        Ok(Started {
            pid: 1,
            agent_socket: c.state_dir.join("run/agent.sock"),
        })
    }
    fn observe(&self, c: &SandboxConfig) -> dwell_runtime::Result<Observed> {
        Ok(self.observed(&c.id))
    }
    fn pause(&self, c: &SandboxConfig) -> dwell_runtime::Result<()> {
        self.call("pause", &c.id)?;
        self.set(&c.id, Observed::Paused);
        Ok(())
    }
    fn resume(&self, c: &SandboxConfig) -> dwell_runtime::Result<()> {
        self.call("resume", &c.id)?;
        self.set(&c.id, Observed::Running);
        Ok(())
    }
    fn stop(&self, c: &SandboxConfig) -> dwell_runtime::Result<()> {
        self.call("stop", &c.id)?;
        self.set(&c.id, Observed::Stopped);
        Ok(())
    }
    fn stats(&self, _: &SandboxConfig) -> dwell_runtime::Result<Stats> {
        Ok(Stats::default())
    }
    fn list_host(&self) -> dwell_runtime::Result<Vec<String>> {
        Ok(self
            .states()
            .into_iter()
            .filter(|(_, o)| *o != Observed::Stopped)
            .map(|(id, _)| id)
            .collect())
    }
    fn hibernate(&self, c: &SandboxConfig, image_dir: &Path) -> dwell_runtime::Result<()> {
        self.call("hibernate", &c.id)?;
        std::fs::create_dir_all(image_dir).unwrap();
        std::fs::write(image_dir.join("pages.img"), b"memory").unwrap();
        std::fs::write(image_dir.join(checkpoint_file()), b"state").unwrap();
        self.set(&c.id, Observed::Stopped);
        Ok(())
    }
    fn restore(&self, c: &SandboxConfig, image_dir: &Path) -> dwell_runtime::Result<Started> {
        self.call("restore", &c.id)?;
        assert!(
            image_dir.join(checkpoint_file()).is_file(),
            "restore from an incomplete image"
        );
        self.set(&c.id, Observed::Running);
        Ok(Started {
            pid: 1,
            agent_socket: c.state_dir.join("run/agent.sock"),
        })
    }
}

/// A controller over a data dir, as the daemon wires it.
struct Env {
    dir: PathBuf,
    ctl: Controller,
    ns: Arc<Fake>,
    hib: Arc<Fake>,
}

/// The image the test's sandboxes use.
const IMAGE: &str = "tiny";

/// Import [`IMAGE`] into `images` (once per data dir): an OCI layout with
/// one uncompressed layer, `etc/hostname` in `etc/`, owned by the user
/// running the test.
fn import_tiny_image(images: &ImageStore, dir: &Path) {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    if images.get(IMAGE).is_ok() {
        return;
    }
    let me = std::fs::metadata(dir).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data, kind) in [
        ("etc", "", tar::EntryType::Directory),
        ("etc/hostname", "sandbox\n", tar::EntryType::Regular),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(me.uid().into());
        h.set_gid(me.gid().into());
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data.as_bytes()).unwrap();
    }
    let layer = tar.into_inner().unwrap();
    let layout = dir.join("tiny-oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let h: String = Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        std::fs::write(blobs.join(&h), b).unwrap();
        (format!("sha256:{h}"), b.len())
    };
    let (layer_digest, layer_size) = put(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
    }))
    .unwrap();
    let (config_digest, config_size) = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}]
    }))
    .unwrap();
    let (manifest_digest, manifest_size) = put(&manifest);
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": manifest_digest, "size": manifest_size}]
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    images.import(IMAGE, &layout).unwrap();
}

impl Env {
    fn open(dir: &Path) -> Env {
        let (ns, hib) = (Fake::new(plain(), dir), Fake::new(hibernating(), dir));
        let images = ImageStore::open(dir.join("images")).unwrap();
        import_tiny_image(&images, dir);
        let ctl = Controller::new(ControllerOptions {
            store: Store::open(&dir.join("dwell.db")).unwrap(),
            runtimes: vec![(plain(), Ok(ns.clone())), (hibernating(), Ok(hib.clone()))],
            default_isolation: plain(),
            volumes: VolumeManager::with_kind(dir.join("volumes"), VolumeKind::Directory),
            images,
            agent_binary: dir.join("agent"),
            resync_every: Duration::from_secs(3600),
            clock: Arc::new(ManualClock::default()),
            default_policies: PolicyArgs::default(),
            prices: Default::default(),
            audit_retention: Duration::from_secs(90 * 86400),
            snapshots: Arc::new(dwell_snapshot::LocalStore::open(dir.join("snapshots")).unwrap()),
            snapshot_settings: Default::default(),
            limits: Default::default(),
            dns: None,
            default_egress: Default::default(),
            data_dir: dir.to_path_buf(),
        });
        Env {
            dir: dir.to_path_buf(),
            ctl,
            ns,
            hib,
        }
    }

    async fn create(&self, name: &str, mode: Mode, runtime: Kind) -> String {
        let sb = self
            .ctl
            .create(
                "t",
                CreateRequest {
                    name: Some(name.into()),
                    image: Some(IMAGE.into()),
                    mode: Some(mode),
                    runtime: Some(runtime.name().into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(sb.state, State::Running, "{}", sb.reason);
        sb.id
    }

    fn state(&self, id: &str) -> State {
        self.ctl
            .get("t", id)
            .map(|s| s.state)
            .unwrap_or(State::Deleted)
    }

    fn reason(&self, id: &str) -> String {
        self.ctl.get("t", id).unwrap().reason
    }

    fn image_dir(&self, id: &str) -> PathBuf {
        self.dir.join("sandboxes").join(id).join("hibernate")
    }

    fn volume(&self, id: &str) -> PathBuf {
        self.dir.join("volumes").join(id)
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_stop_start_pause_resume_delete() {
    let d = tmp();
    let e = Env::open(d.path());
    let id = e.create("a", Mode::Persistent, plain()).await;
    assert_eq!(e.ns.observed(&id), Observed::Running);
    assert!(e.volume(&id).is_dir(), "create makes the volume");

    let sb = e.ctl.stop("t", "a").await.unwrap();
    assert_eq!(sb.state, State::Stopped);
    assert_eq!(e.ns.observed(&id), Observed::Stopped);
    assert!(
        e.volume(&id).is_dir(),
        "a persistent sandbox keeps its volume"
    );

    assert_eq!(e.ctl.start("t", "a").await.unwrap().state, State::Running);
    assert_eq!(e.ctl.pause("t", "a").await.unwrap().state, State::Paused);
    assert_eq!(e.ns.observed(&id), Observed::Paused);
    assert_eq!(e.ctl.resume("t", "a").await.unwrap().state, State::Running);
    assert_eq!(e.ns.observed(&id), Observed::Running);

    e.ctl.delete("t", "a", true).await.unwrap();
    assert_eq!(e.state(&id), State::Deleted);
    assert!(!e.volume(&id).exists(), "delete wipes the volume");
    assert!(!e.dir.join("sandboxes").join(&id).exists());
    assert_eq!(
        e.ns.calls(&id),
        ["start", "stop", "start", "pause", "resume", "stop"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guards_refuse_what_the_state_does_not_allow() {
    let d = tmp();
    let e = Env::open(d.path());
    let id = e.create("g", Mode::Persistent, plain()).await;
    let err = e.ctl.delete("t", "g", false).await.unwrap_err();
    assert_eq!(err.code(), "conflict", "{err}");
    e.ctl.pause("t", "g").await.unwrap();
    let err = e.ctl.start("t", "g").await.unwrap_err();
    assert_eq!(err.code(), "conflict", "a paused sandbox resumes: {err}");
    e.ctl.stop("t", "g").await.unwrap();
    let err = e.ctl.pause("t", "g").await.unwrap_err();
    assert_eq!(err.code(), "conflict", "{err}");
    let facts = err.facts();
    assert_eq!(
        (&*facts["sandbox"], &*facts["state"], &*facts["action"]),
        ("g", "stopped", "pause"),
        "what a client words its advice from"
    );
    let err = e.ctl.hibernate("t", "g").await.unwrap_err();
    assert_eq!(err.code(), "unsupported", "{err}");
    // Refused requests reach neither the runtime nor the record.
    assert_eq!(e.ns.calls(&id), ["start", "pause", "stop"]);
    assert_eq!(e.state(&id), State::Stopped);
    // Stopped, it may go without force.
    e.ctl.delete("t", "g", false).await.unwrap();
    assert_eq!(e.state(&id), State::Deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_ephemeral_sandbox_is_deleted_with_its_data() {
    let d = tmp();
    let e = Env::open(d.path());
    let id = e.create("job", Mode::Ephemeral, plain()).await;
    let err = e.ctl.archive("t", "job").await.unwrap_err();
    assert_eq!(err.code(), "conflict", "nothing to archive: {err}");
    e.ctl.stop("t", "job").await.unwrap();
    assert_eq!(e.state(&id), State::Deleted);
    assert!(!e.volume(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernate_saves_to_disk_and_resume_restores_it() {
    let d = tmp();
    let e = Env::open(d.path());
    let id = e.create("h", Mode::Persistent, hibernating()).await;
    let sb = e.ctl.hibernate("t", "h").await.unwrap();
    assert_eq!(sb.state, State::Hibernated, "{}", sb.reason);
    assert_eq!(e.hib.observed(&id), Observed::Stopped);
    assert!(e.image_dir(&id).join(checkpoint_file()).is_file());
    // The sweep leaves it as it is.
    e.ctl.sweep().await;
    assert_eq!(e.state(&id), State::Hibernated);

    let sb = e.ctl.resume("t", "h").await.unwrap();
    assert_eq!(sb.state, State::Running, "{}", sb.reason);
    assert_eq!(e.hib.observed(&id), Observed::Running);
    assert!(
        !e.image_dir(&id).exists(),
        "a restored image is discarded: it must never be restored twice"
    );
    assert_eq!(e.hib.calls(&id), ["start", "hibernate", "restore"]);

    // Stopped after a hibernation, it starts cold.
    e.ctl.hibernate("t", "h").await.unwrap();
    e.ctl.stop("t", "h").await.unwrap();
    assert!(!e.image_dir(&id).exists(), "stop discards saved memory");
    e.ctl.start("t", "h").await.unwrap();
    assert_eq!(
        e.hib.calls(&id),
        [
            "start",
            "hibernate",
            "restore",
            "hibernate",
            "stop",
            "start"
        ],
        "a cold start after stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_needs_a_persistent_sandbox_on_a_loop_volume() {
    let d = tmp();
    let e = Env::open(d.path());
    let id = e.create("ar", Mode::Persistent, plain()).await;
    let err = e.ctl.archive("t", "ar").await.unwrap_err();
    assert!(err.to_string().contains("loop-backed"), "{err}");
    // It failed before anything was freed: the volume stays.
    assert_eq!(e.state(&id), State::Error);
    assert!(e.volume(&id).is_dir());
    assert_eq!(e.ctl.start("t", "ar").await.unwrap().state, State::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_fill_that_fails_leaves_nothing_behind() {
    let d = tmp();
    let e = Env::open(d.path());
    e.create("tpl", Mode::Persistent, hibernating()).await;
    e.ctl.hibernate("t", "tpl").await.unwrap();
    let err = e
        .ctl
        .create(
            "t",
            CreateRequest {
                name: Some("copy".into()),
                from: Some("tpl".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("loop volumes"), "{err}");
    assert!(e.ctl.get("t", "copy").is_err(), "no half-created sandbox");
    let names: Vec<_> = e
        .ctl
        .list("t")
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["tpl"]);
    let dirs = std::fs::read_dir(e.dir.join("sandboxes")).unwrap().count();
    assert_eq!(dirs, 1, "only the template's state dir");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_start_fails_leaves_nothing_behind() {
    let d = tmp();
    let e = Env::open(d.path());
    e.ns.fail("start", "no cgroup for you");
    let err = e
        .ctl
        .create(
            "t",
            CreateRequest {
                image: Some(IMAGE.into()),
                name: Some("f".into()),
                mode: Some(Mode::Persistent),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no cgroup for you"), "{err}");
    assert!(e.ctl.get("t", "f").is_err(), "no half-created sandbox");
    assert!(e.ctl.list("t").unwrap().is_empty());
    assert_eq!(std::fs::read_dir(e.dir.join("volumes")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_runtime_marks_the_sandbox_failed_and_only_a_request_retries() {
    let d = tmp();
    let e = Env::open(d.path());
    let id = e.create("f", Mode::Persistent, plain()).await;
    e.ctl.stop("t", "f").await.unwrap();
    e.ns.fail("start", "no cgroup for you");
    let err = e.ctl.start("t", "f").await.unwrap_err();
    assert!(err.to_string().contains("no cgroup for you"), "{err}");
    assert_eq!(e.state(&id), State::Error);
    assert!(e.reason(&id).contains("no cgroup for you"));
    // A failed start leaves nothing running.
    assert_eq!(e.ns.calls(&id), ["start", "stop", "start", "stop"]);
    assert_eq!(e.ns.observed(&id), Observed::Stopped);
    // The sweep does not retry a failed sandbox; a request does.
    e.ns.heal();
    e.ctl.sweep().await;
    assert_eq!(e.state(&id), State::Error);
    assert_eq!(e.ns.calls(&id).len(), 4);
    assert_eq!(e.ctl.start("t", "f").await.unwrap().state, State::Running);

    e.ns.fail("pause", "frozen solid");
    let err = e.ctl.pause("t", "f").await.unwrap_err();
    assert!(err.to_string().contains("frozen solid"), "{err}");
    assert_eq!(e.state(&id), State::Error);
    assert_eq!(e.ns.observed(&id), Observed::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_that_vanish_are_noticed_by_the_sweep() {
    let d = tmp();
    let e = Env::open(d.path());
    let kept = e.create("kept", Mode::Persistent, plain()).await;
    let gone = e.create("gone", Mode::Ephemeral, plain()).await;
    e.ns.set(&kept, Observed::Stopped);
    e.ns.set(&gone, Observed::Stopped);
    e.ctl.sweep().await;
    assert_eq!(e.state(&kept), State::Error);
    assert!(
        e.reason(&kept).contains("ended outside"),
        "{}",
        e.reason(&kept)
    );
    assert!(e.volume(&kept).is_dir(), "its files are kept");
    assert_eq!(e.state(&gone), State::Deleted);
    assert!(!e.volume(&gone).exists());
    // A paused one found running (thawed behind the daemon's back) is
    // frozen again.
    let p = e.create("p", Mode::Persistent, plain()).await;
    e.ctl.pause("t", "p").await.unwrap();
    e.ns.set(&p, Observed::Running);
    e.ctl.sweep().await;
    assert_eq!(e.ns.observed(&p), Observed::Paused);
    assert_eq!(e.ns.calls(&p), ["start", "pause", "pause"]);
}

// --- crash points ---------------------------------------------------------

const CHILD_DIR: &str = "DWELL_TEST_CRASH_DIR";
const CHILD_OP: &str = "DWELL_TEST_CRASH_OP";

/// Run `op` on sandbox `name` in a child process that kills itself at
/// crash point `point`, and check that it did.
fn crash(dir: &Path, op: &str, name: &str, point: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env(CHILD_DIR, dir)
        .env(CHILD_OP, format!("{op} {name}"))
        .env("DWELL_CRASH_AT", point)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the child was to die at {point}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The child of the crash tests: does what `DWELL_TEST_CRASH_OP` says in
/// the data dir `DWELL_TEST_CRASH_DIR`, expecting to die on the way.
#[test]
#[ignore = "run by the crash tests in a child process"]
fn crash_child() {
    let (Ok(dir), Ok(op)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_OP)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let e = Env::open(Path::new(&dir));
        let (op, name) = op.split_once(' ').unwrap();
        let r = match op {
            "start" => e.ctl.start("t", name).await.map(drop),
            "hibernate" => e.ctl.hibernate("t", name).await.map(drop),
            "resume" => e.ctl.resume("t", name).await.map(drop),
            "delete" => e.ctl.delete("t", name, true).await,
            other => panic!("unknown op {other}"),
        };
        eprintln!("{op} {name} ended without a crash: {r:?}");
    });
}

/// A daemon restart on the same data: a new controller whose first pass
/// adopts and finishes what the dead one left.
async fn restart(dir: &Path) -> Env {
    let e = Env::open(dir);
    e.ctl.start_background().await;
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_killed_before_the_mount_is_started_again() {
    let d = tmp();
    let id = {
        let e = Env::open(d.path());
        let id = e.create("s", Mode::Persistent, plain()).await;
        e.ctl.stop("t", "s").await.unwrap();
        id
    };
    crash(d.path(), "start", "s", "start:before-mount");
    let e = restart(d.path()).await;
    assert_eq!(e.state(&id), State::Running, "{}", e.reason(&id));
    assert_eq!(e.ns.observed(&id), Observed::Running);
    assert_eq!(e.ns.calls(&id), ["start"], "started once, by the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_killed_after_the_runtime_is_adopted() {
    let d = tmp();
    let id = {
        let e = Env::open(d.path());
        let id = e.create("s", Mode::Persistent, plain()).await;
        e.ctl.stop("t", "s").await.unwrap();
        id
    };
    crash(d.path(), "start", "s", "start:after-runtime");
    let e = restart(d.path()).await;
    assert_eq!(e.state(&id), State::Running);
    assert!(e.reason(&id).contains("adopted"), "{}", e.reason(&id));
    assert!(
        e.ns.calls(&id).is_empty(),
        "what runs is adopted, not started again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_killed_after_the_stop_is_finished() {
    let d = tmp();
    let id = {
        let e = Env::open(d.path());
        e.create("x", Mode::Persistent, plain()).await
    };
    crash(d.path(), "delete", "x", "delete:after-stop");
    let e = restart(d.path()).await;
    assert_eq!(e.state(&id), State::Deleted);
    assert!(!e.volume(&id).exists());
    assert!(!e.dir.join("sandboxes").join(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hibernate_killed_after_the_checkpoint_is_adopted() {
    let d = tmp();
    let id = {
        let e = Env::open(d.path());
        e.create("h", Mode::Persistent, hibernating()).await
    };
    crash(d.path(), "hibernate", "h", "hibernate:after-checkpoint");
    let e = restart(d.path()).await;
    assert_eq!(e.state(&id), State::Hibernated, "{}", e.reason(&id));
    assert!(e.reason(&id).contains("adopted"), "{}", e.reason(&id));
    assert!(e.image_dir(&id).join(checkpoint_file()).is_file());
    assert_eq!(e.ctl.resume("t", "h").await.unwrap().state, State::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_killed_after_the_runtime_drops_the_old_image() {
    let d = tmp();
    let id = {
        let e = Env::open(d.path());
        let id = e.create("r", Mode::Persistent, hibernating()).await;
        e.ctl.hibernate("t", "r").await.unwrap();
        id
    };
    crash(d.path(), "resume", "r", "restore:after-runtime");
    assert!(e_image_left(d.path(), &id), "the crash left the image");
    let e = restart(d.path()).await;
    assert_eq!(e.state(&id), State::Running, "{}", e.reason(&id));
    assert!(e.reason(&id).contains("adopted"), "{}", e.reason(&id));
    assert!(
        !e.image_dir(&id).exists(),
        "an image older than what runs must never be restored"
    );
    assert!(e.hib.calls(&id).is_empty(), "adopted, not restored again");
}

fn e_image_left(dir: &Path, id: &str) -> bool {
    dir.join("sandboxes")
        .join(id)
        .join("hibernate")
        .join(checkpoint_file())
        .is_file()
}
