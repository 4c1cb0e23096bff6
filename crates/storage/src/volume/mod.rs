//! Volumes: the unit of persistence. Each sandbox's writable layer lives in
//! its own volume with a hard size limit; a tenant's named volumes are
//! volumes of a second manager (up to [`MAX_NAMED_VOLUME_SIZE`]).
//!
//! Layout under the manager's root (e.g. `/var/lib/dwell/volumes`):
//!
//! ```text
//! <id>/volume.json   kind, size limit, creation time
//! <id>/volume.img    sparse ext4 image (loop volumes only)
//! <id>/snapshot-*.img reflinked copies of the image kept by snapshots
//!                     (control's `snapshots.rs`); discarded with the volume
//! <id>/mnt           mount point (loop) or the data itself (directory)
//! .templates/<size>.img   formatted ext4 of that size (a cache, see `template`)
//! ```
//!
//! A loop volume is an ext4 filesystem in a sparse file, attached to a loop
//! device with autoclear and mounted at `<id>/mnt`: writing past the limit
//! gives the writer ENOSPC and touches nothing else. Where loop devices are
//! impossible the manager falls back to plain directories (limit recorded,
//! usage reported, not enforced).
//!
//! A loop volume's image is a sparse copy of a per-size template formatted
//! once, re-stamped with its own UUID: a create costs a few milliseconds
//! instead of a `mkfs.ext4` run.

mod copy;
mod dir;
mod ext4;
#[path = "loop.rs"]
mod loopdev;
mod mount;
mod pool;
mod sparse_copy;
mod superblock;
mod template;

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{
    atomic_write, cpath, nonce, now_secs, rename_noreplace, validate_name, write_durable,
};

pub use loopdev::{bindings as loop_bindings, detach as detach_loop, LoopBinding};
pub use pool::PoolStatus;

/// Default size limit of a sandbox volume: 4 GiB.
pub const DEFAULT_VOLUME_SIZE: u64 = 4 << 30;
/// Smallest volume accepted (ext4 with a journal needs some room).
pub const MIN_VOLUME_SIZE: u64 = 16 << 20;
/// Largest sandbox volume accepted by default. ext4 with 4 KiB blocks and
/// without the `64bit` feature tops out at 16 TiB (2^32 blocks); the
/// templates are formatted with `64bit` (mke2fs's default for ext4), so the
/// filesystem itself goes further, but an image file on an ext4 data dir
/// cannot exceed 16 TiB (ext4's largest file with 4 KiB blocks). Managers
/// of bigger volumes raise the cap with [`VolumeManager::with_max_size`].
pub const MAX_VOLUME_SIZE: u64 = 16 << 40;
/// The largest named volume (the range of the issue: 32 MiB .. 64 TiB).
/// Needs a data dir whose filesystem holds files that large (xfs, btrfs,
/// tmpfs; not ext4, whose files end at 16 TiB).
pub const MAX_NAMED_VOLUME_SIZE: u64 = 64 << 40;

const META: &str = "volume.json";
const IMAGE: &str = "volume.img";
const MNT: &str = "mnt";
const CREATING: &str = ".creating-";
const DELETING: &str = ".deleting-";

/// How a volume is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// ext4 in a sparse image on a loop device: the limit is enforced.
    Loop,
    /// A plain directory: the limit is recorded but not enforced.
    Directory,
}

/// What `volume.json` records.
#[derive(Debug, Serialize, Deserialize)]
struct VolumeMeta {
    kind: VolumeKind,
    size_bytes: u64,
    created_at: u64,
    /// The boot (`/proc/sys/kernel/random/boot_id`) in which the image was
    /// copied from its template without an fsync. If the machine restarted
    /// before the volume's first mount, the image may be incomplete and is
    /// copied again at mount. Absent for images that were fsynced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unsynced_boot: Option<String>,
}

/// The state of one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// The volume id.
    pub id: String,
    /// How it is backed.
    pub kind: VolumeKind,
    /// The size limit in bytes.
    pub size_bytes: u64,
    /// Bytes in use: from statfs while mounted, otherwise the blocks the
    /// image file has allocated (directory volumes: the files' blocks).
    pub used_bytes: u64,
    /// Where the data is visible: the mount point, or the directory.
    pub path: PathBuf,
    /// The ext4 image file (loop volumes only).
    pub image: Option<PathBuf>,
    /// Whether the data is reachable at `path` now (always true for
    /// directory volumes).
    pub mounted: bool,
    /// Whether writing past `size_bytes` fails with ENOSPC (false for
    /// directory volumes: usage is only accounted).
    pub limit_enforced: bool,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
}

/// Creates, mounts, measures and deletes volumes under one root directory.
#[derive(Debug)]
pub struct VolumeManager {
    root: PathBuf,
    kind: VolumeKind,
    max_size: u64,
    /// Keep each size's formatted template for the next create of that
    /// size (sandbox volumes: few sizes, many creates). Off for managers
    /// whose callers pick arbitrary sizes (named volumes), whose templates
    /// would pile up: each create formats afresh.
    cache_templates: bool,
    /// Mount with `nosuid` as well as `nodev` (named volumes: what a
    /// sandbox writes there must not be set-id on the host; the binds given
    /// to sandboxes are nosuid anyway).
    nosuid: bool,
    lock: Mutex<()>,
    /// Volumes being grown: the slow part (e2fsck, resize2fs) runs
    /// without `lock`, so mounts and creates of other volumes go on;
    /// these volumes are not mounted or deleted meanwhile.
    resizing: Mutex<std::collections::HashSet<String>>,
    /// Volumes made ahead of time (see [`pool`]).
    pool: Option<pool::Pool>,
}

impl Drop for VolumeManager {
    /// Pooled volumes go with their manager (nothing else would claim them).
    fn drop(&mut self) {
        self.drain_pool();
    }
}

impl VolumeManager {
    /// A manager for volumes under `root` (created on first use). New
    /// volumes are loop volumes when this process can use loop devices
    /// (root and `/dev/loop-control`), directory volumes otherwise.
    pub fn new(root: PathBuf) -> Self {
        let kind = if loopdev::supported() {
            VolumeKind::Loop
        } else {
            VolumeKind::Directory
        };
        Self::with_kind(root, kind)
    }

    /// A manager that creates volumes of the given kind. Asking for
    /// [`VolumeKind::Loop`] where loop devices are unusable makes `create`
    /// and `mount` fail with the reason.
    pub fn with_kind(root: PathBuf, kind: VolumeKind) -> Self {
        let m = Self {
            root,
            kind,
            max_size: MAX_VOLUME_SIZE,
            cache_templates: true,
            nosuid: false,
            lock: Mutex::new(()),
            resizing: Default::default(),
            pool: None,
        };
        m.remove_leftovers();
        m
    }

    /// The same manager with a different largest size (at most
    /// [`MAX_NAMED_VOLUME_SIZE`]).
    pub fn with_max_size(mut self, max_size: u64) -> Self {
        self.max_size = max_size.min(MAX_NAMED_VOLUME_SIZE);
        self
    }

    /// The same manager keeping no template once a create is done (see
    /// `cache_templates`).
    pub fn without_template_cache(mut self) -> Self {
        self.cache_templates = false;
        self
    }

    /// The same manager mounting its volumes host-side with `nosuid` (set-id
    /// files a sandbox writes are inert on the host). A volume already
    /// mounted keeps its flags until it is next mounted.
    pub fn with_nosuid(mut self) -> Self {
        self.nosuid = true;
        self
    }

    /// The largest volume this manager creates or grows to.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The kind `create` makes.
    pub fn kind(&self) -> VolumeKind {
        self.kind
    }

    /// Where volume `id`'s data is visible (mount point or directory).
    pub fn mount_path(&self, id: &str) -> PathBuf {
        self.root.join(id).join(MNT)
    }

    /// Creates volume `id` with a size limit of `size_bytes` (rounded up to
    /// 4 KiB). Fails if it exists; on failure nothing is left behind. The
    /// new volume is not mounted.
    pub fn create(&self, id: &str, size_bytes: u64) -> Result<VolumeInfo> {
        validate_name("volume id", id)?;
        if !(MIN_VOLUME_SIZE..=self.max_size).contains(&size_bytes) {
            return Err(StorageError::InvalidSize {
                size: size_bytes,
                reason: format!(
                    "volumes must be between {} MiB and {} TiB",
                    MIN_VOLUME_SIZE >> 20,
                    self.max_size >> 40
                ),
            });
        }
        let size_bytes = size_bytes.div_ceil(4096) * 4096;
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.root.join(id);
        if fs::symlink_metadata(&dir).is_ok() {
            return Err(StorageError::VolumeExists(id.to_string()));
        }
        fs::create_dir_all(&self.root).ctx("create volume root", &self.root)?;
        let tmp = self.root.join(format!("{CREATING}{}-{id}", nonce()));
        let result = self.build(&tmp, size_bytes).and_then(|()| {
            rename_noreplace(&tmp, &dir).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists
                    || e.raw_os_error() == Some(libc::ENOTEMPTY)
                {
                    StorageError::VolumeExists(id.to_string())
                } else {
                    StorageError::Io {
                        op: "move new volume into place at",
                        path: dir.clone(),
                        source: e,
                    }
                }
            })
        });
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        drop(_g);
        self.info(id)
    }

    /// Fills a fresh staging directory for a volume.
    fn build(&self, tmp: &Path, size_bytes: u64) -> Result<()> {
        fs::create_dir(tmp).ctx("create directory", tmp)?;
        let mut unsynced_boot = None;
        match self.kind {
            VolumeKind::Loop => {
                let img = tmp.join(IMAGE);
                let made = template::instantiate(&self.root, size_bytes, &img);
                if !self.cache_templates {
                    // (Under the manager's lock: no other create of this
                    // manager uses it meanwhile.)
                    let _ = fs::remove_file(template::path(&self.root, size_bytes));
                }
                made?;
                // Without a boot id a lost copy could not be recognised
                // after a crash: make it durable now instead.
                unsynced_boot = template::boot_id();
                if unsynced_boot.is_none() {
                    fs::File::open(&img)
                        .and_then(|f| f.sync_all())
                        .ctx("fsync volume image", &img)?;
                }
                fs::create_dir(tmp.join(MNT)).ctx("create mount point", &tmp.join(MNT))?;
            }
            VolumeKind::Directory => dir::create(&tmp.join(MNT))?,
        }
        let meta = VolumeMeta {
            kind: self.kind,
            size_bytes,
            created_at: now_secs(),
            unsynced_boot,
        };
        let json = serde_json::to_vec_pretty(&meta).expect("volume metadata serializes");
        // The staging directory is invisible until renamed into place, so
        // no atomic replace is needed here: one fsync of the file, one of
        // the directory (which finds the journal already committed).
        write_durable(&tmp.join(META), &json)
    }

    fn meta(&self, id: &str) -> Result<VolumeMeta> {
        validate_name("volume id", id)?;
        let path = self.root.join(id).join(META);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::VolumeNotFound(id.to_string()))
            }
            Err(e) => return Err(e).ctx("read", &path),
        };
        serde_json::from_slice(&data).map_err(|e| StorageError::Metadata {
            path,
            reason: e.to_string(),
        })
    }

    /// Makes volume `id`'s data reachable and returns where. Idempotent:
    /// an already mounted volume just returns its mount point.
    pub fn mount(&self, id: &str) -> Result<PathBuf> {
        let meta = self.meta(id)?;
        let mnt = self.mount_path(id);
        if meta.kind == VolumeKind::Directory {
            return Ok(mnt);
        }
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if mount::is_mountpoint(&mnt) {
            return Ok(mnt);
        }
        self.not_resizing(id)?;
        if !loopdev::supported() {
            return Err(StorageError::Loop(format!(
                "volume {id:?} is a loop volume but this process cannot use loop devices \
                 (needs root and /dev/loop-control)"
            )));
        }
        let img = self.root.join(id).join(IMAGE);
        // If the image is still attached (mounted in another mount
        // namespace, e.g. by a sandbox that outlived a daemon restart),
        // mount that same device: a second loop device on the same file
        // would mean two ext4 instances writing one image.
        let canonical = img.canonicalize().ctx("resolve volume image", &img)?;
        let attached = loopdev::bindings()
            .into_iter()
            .find(|b| b.backing_file == canonical && !b.backing_deleted);
        if let Some(b) = attached {
            if mount::mount_ext4(&b.device, &mnt, ext4::MOUNT_OPTIONS, self.nosuid).is_ok() {
                return Ok(mnt);
            }
            // It went away meanwhile (autoclear): attach afresh below.
        }
        if let Some(boot) = &meta.unsynced_boot {
            if template::needs_recopy(&img, boot) {
                let fresh = self
                    .root
                    .join(id)
                    .join(format!(".{IMAGE}.recopy-{}", nonce()));
                let made = template::instantiate(&self.root, meta.size_bytes, &fresh)
                    .and_then(|_| fs::rename(&fresh, &img).ctx("replace lost volume image", &img));
                if !self.cache_templates {
                    let _ = fs::remove_file(template::path(&self.root, meta.size_bytes));
                }
                if made.is_err() {
                    let _ = fs::remove_file(&fresh);
                }
                made?;
            }
        }
        let dev = loopdev::attach(&img)?;
        mount::mount_ext4(dev.path(), &mnt, ext4::MOUNT_OPTIONS, self.nosuid)?;
        // Dropping `dev` closes our handle; the mount keeps the device, and
        // autoclear detaches it when the filesystem is finally released.
        drop(dev);
        Ok(mnt)
    }

    /// Unmounts volume `id` (lazily, so copies of the mount in other mount
    /// namespaces do not block). Idempotent.
    pub fn unmount(&self, id: &str) -> Result<()> {
        let meta = self.meta(id)?;
        if meta.kind == VolumeKind::Directory {
            return Ok(());
        }
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        mount::unmount_all(&self.mount_path(id))
    }

    /// Deletes volume `id`: unmounts it, discards its data (the image's
    /// blocks are punched out and truncated before unlinking, so nothing
    /// can be read back through a later volume) and removes its directory.
    /// Deleting a missing volume succeeds.
    pub fn delete(&self, id: &str) -> Result<()> {
        validate_name("volume id", id)?;
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.not_resizing(id)?;
        let dir = self.root.join(id);
        if fs::symlink_metadata(&dir).is_err() {
            return Ok(());
        }
        let mnt = dir.join(MNT);
        mount::unmount_all(&mnt)?;
        wait_loop_detached(&dir.join(IMAGE), LOOP_DETACH_WAIT);
        // The image and any copies of it beside it (snapshot clones and
        // bases) hold the sandbox's data: discard them all.
        for entry in fs::read_dir(&dir).ctx("list volume", &dir)?.flatten() {
            let path = entry.path();
            let is_image = path.extension().is_some_and(|e| e == "img");
            if is_image && entry.file_type().is_ok_and(|t| t.is_file()) {
                discard(&path)?;
            }
        }
        let trash = self.root.join(format!("{DELETING}{}-{id}", nonce()));
        fs::rename(&dir, &trash).ctx("move volume aside for deletion", &dir)?;
        // A directory volume holds what the sandbox wrote: no symlink in it
        // is followed, and a mount still there is an error, not emptied.
        dwell_hostfs::remove_tree(&trash)
            .map_err(io::Error::from)
            .ctx("remove deleted volume", &trash)
    }

    /// The state of volume `id`.
    pub fn info(&self, id: &str) -> Result<VolumeInfo> {
        let meta = self.meta(id)?;
        let dir = self.root.join(id);
        let mnt = dir.join(MNT);
        let (used, mounted, image) = match meta.kind {
            VolumeKind::Directory => (dir::used_bytes(&mnt), true, None),
            VolumeKind::Loop => {
                let img = dir.join(IMAGE);
                if mount::is_mountpoint(&mnt) {
                    (statfs_used(&mnt)?, true, Some(img))
                } else {
                    let m = fs::metadata(&img).ctx("stat volume image", &img)?;
                    (m.blocks() * 512, false, Some(img))
                }
            }
        };
        Ok(VolumeInfo {
            id: id.to_string(),
            kind: meta.kind,
            size_bytes: meta.size_bytes,
            used_bytes: used,
            path: mnt,
            image,
            mounted,
            limit_enforced: meta.kind == VolumeKind::Loop,
            created_at: meta.created_at,
        })
    }

    /// Raises volume `id`'s size limit to `new_size` bytes (rounded up to
    /// 4 KiB). Shrinking is refused. A loop volume that is not attached is
    /// grown offline (`e2fsck -f`, `resize2fs` on the image); one mounted
    /// here (in this process's mount namespace) is grown online: the image
    /// file is extended, the loop device told its new capacity
    /// (LOOP_SET_CAPACITY) and `resize2fs` grows the mounted ext4, which
    /// its users see at once. One attached but mounted only elsewhere (in a
    /// sandbox's namespace after a daemon restart) is refused: resize2fs
    /// would take it for unmounted. Online growth needs CAP_SYS_RESOURCE;
    /// without it a mounted volume is refused with that reason.
    pub fn resize(&self, id: &str, new_size: u64) -> Result<VolumeInfo> {
        let meta = self.meta(id)?;
        let new_size = new_size.div_ceil(4096) * 4096;
        if new_size < meta.size_bytes || new_size > self.max_size {
            return Err(StorageError::InvalidSize {
                size: new_size,
                reason: format!(
                    "volumes can only grow (now {} bytes) up to {} TiB; shrinking is not \
                     supported (copy the data to a smaller volume instead)",
                    meta.size_bytes,
                    self.max_size >> 40
                ),
            });
        }
        let g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.not_resizing(id)?;
        if meta.kind == VolumeKind::Loop && new_size > meta.size_bytes {
            let img = self.root.join(id).join(IMAGE);
            let canonical = img.canonicalize().ctx("resolve volume image", &img)?;
            let attached = loopdev::bindings()
                .into_iter()
                .find(|b| b.backing_file == canonical && !b.backing_deleted);
            let online = match &attached {
                Some(b) if mount::is_mountpoint(&self.mount_path(id)) => Some(b.device.clone()),
                Some(b) => {
                    return Err(StorageError::Loop(format!(
                        "volume {id:?} is in use ({} is attached, mounted in a sandbox but \
                         not here); stop its users before resizing",
                        b.device.display()
                    )));
                }
                None => None,
            };
            if online.is_some() && !has_cap_sys_resource() {
                return Err(StorageError::Loop(format!(
                    "volume {id:?} is mounted (in use), and growing a mounted ext4 needs the \
                     CAP_SYS_RESOURCE capability, which this daemon does not have; stop the \
                     sandboxes that use it and resize again (it then grows offline), or run \
                     the daemon with CAP_SYS_RESOURCE"
                )));
            }
            // The slow part without the manager's lock: this volume is
            // marked, so nothing mounts or deletes it meanwhile; other
            // volumes carry on.
            self.resizing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_string());
            drop(g);
            let grown = (|| -> Result<()> {
                grow_file(&img, new_size)?;
                match online {
                    Some(dev) => {
                        loopdev::set_capacity(&dev)?;
                        ext4::grow_online(&dev)
                    }
                    None => ext4::grow_offline(&img),
                }
            })();
            let g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.resizing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
            grown?;
            return self.write_size(id, meta, new_size, g);
        }
        self.write_size(id, meta, new_size, g)
    }

    /// Records volume `id`'s new size (with the manager's lock `g`).
    fn write_size(
        &self,
        id: &str,
        mut meta: VolumeMeta,
        new_size: u64,
        g: std::sync::MutexGuard<'_, ()>,
    ) -> Result<VolumeInfo> {
        meta.size_bytes = new_size;
        let json = serde_json::to_vec_pretty(&meta).expect("volume metadata serializes");
        atomic_write(&self.root.join(id).join(META), &json)?;
        drop(g);
        self.info(id)
    }

    /// Fails when volume `id` is being grown.
    fn not_resizing(&self, id: &str) -> Result<()> {
        if self
            .resizing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
        {
            return Err(StorageError::Loop(format!(
                "volume {id:?} is being resized; try again when that finishes"
            )));
        }
        Ok(())
    }

    /// The ids of all volumes, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx("list volumes in", &self.root),
        };
        let mut ids: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| validate_name("volume id", n).is_ok())
            .filter(|n| self.root.join(n).join(META).is_file())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Loop devices whose backing file lies under this root but which no
    /// mounted volume explains: the image was deleted, the volume is gone,
    /// or it is not mounted in this namespace. Devices still mounted in
    /// another mount namespace also show up here; callers that know of
    /// such sandboxes should filter them before detaching.
    pub fn stray_loops(&self) -> Vec<LoopBinding> {
        loopdev::bindings()
            .into_iter()
            .filter(|b| {
                let Ok(rest) = b.backing_file.strip_prefix(&self.root) else {
                    return false;
                };
                let mut parts = rest.components();
                let id = parts
                    .next()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned());
                let file = parts.next().map(|c| c.as_os_str().to_owned());
                let explained = match (id, file) {
                    (Some(id), Some(f)) if f == IMAGE && !b.backing_deleted => {
                        mount::is_mountpoint(&self.mount_path(&id))
                    }
                    _ => false,
                };
                !explained
            })
            .collect()
    }

    /// Removes staging and trash directories of operations interrupted by a
    /// crash, and pooled volumes (unmounted first) of a daemon that died
    /// (their process no longer exists).
    fn remove_leftovers(&self) {
        template::remove_leftovers(&self.root);
        let Ok(rd) = fs::read_dir(&self.root) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix(CREATING)
                .or_else(|| name.strip_prefix(DELETING))
                .or_else(|| name.strip_prefix(pool::POOLED))
            else {
                continue;
            };
            let pid: i32 = rest
                .split('-')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if !process_alive(pid) {
                let p = e.path();
                let _ = mount::unmount_all(&p.join(MNT));
                let _ = dwell_hostfs::remove_tree(&p);
            }
        }
    }
}

/// Whether process `pid` exists and has not exited: a killed daemon whose
/// parent has not reaped it yet (a zombie) made its last volume already.
fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    // The state follows the command name's closing parenthesis.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
        Err(_) => false,
    }
}

/// How long [`VolumeManager::delete`] waits for the kernel to detach a
/// volume's loop device.
const LOOP_DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits, at most `max`, until no loop device is backed by `img`. The
/// unmount is lazy and the device autoclears: the kernel detaches it once
/// the last user of the filesystem is gone, and a sandbox's processes (or
/// runsc's gofer) may still be exiting, holding a copy of the mount in their
/// namespace. A delete that returns with nothing attached leaves nothing
/// for a caller to find; past `max` autoclear still detaches it later.
fn wait_loop_detached(img: &Path, max: std::time::Duration) {
    let Ok(img) = img.canonicalize() else {
        return; // no image: nothing was attached
    };
    let bound = |b: &loopdev::LoopBinding| b.backing_file == img && !b.backing_deleted;
    // One scan of every loop device finds it; then only it is watched
    // (a scan per poll grew with the sandboxes on the host).
    let Some(dev) = loopdev::bindings().into_iter().find(|b| bound(b)) else {
        return;
    };
    let t0 = std::time::Instant::now();
    while loopdev::binding_of(&dev.device).is_some_and(|b| bound(&b)) && t0.elapsed() < max {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether this process may grow a mounted ext4 (the kernel's online
/// resize asks for CAP_SYS_RESOURCE).
pub fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// Extends a sparse image file to `size` bytes; a data dir whose
/// filesystem cannot hold a file that large is named with the fix.
fn grow_file(img: &Path, size: u64) -> Result<()> {
    let f = OpenOptions::new().write(true).open(img).ctx("open", img)?;
    f.set_len(size).map_err(|e| too_large(img, size, e))
}

/// EFBIG from extending an image: the data dir's filesystem caps file
/// sizes (ext4: 16 TiB).
pub(crate) fn too_large(img: &Path, size: u64, e: io::Error) -> StorageError {
    if e.raw_os_error() == Some(libc::EFBIG) {
        return StorageError::InvalidSize {
            size,
            reason: format!(
                "the filesystem holding {} cannot hold a file that large (ext4 files end at \
                 16 TiB); put the volumes on xfs or btrfs for volumes above 16 TiB, or choose \
                 a smaller size",
                img.parent().unwrap_or(img).display()
            ),
        };
    }
    StorageError::Io {
        op: "grow volume image",
        path: img.to_path_buf(),
        source: e,
    }
}

/// Throws away an image's data blocks: punch them out, then truncate.
fn discard(img: &Path) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(img)
        .ctx("open for discard", img)?;
    let len = f.metadata().ctx("stat", img)?.len();
    if len > 0 {
        // SAFETY: plain syscall on an owned descriptor.
        let rc = unsafe {
            libc::fallocate(
                f.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                len as libc::off_t,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // Filesystems without hole punching: truncation below still
            // frees the blocks.
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(e).ctx("discard volume data (punch hole)", img);
            }
        }
    }
    f.set_len(0).ctx("discard volume data (truncate)", img)
}

/// Used bytes of a mounted filesystem.
fn statfs_used(mnt: &Path) -> Result<u64> {
    let c = cpath(mnt).ctx("statfs", mnt)?;
    // SAFETY: zeroed statfs is valid; the pointer lives across the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error()).ctx("statfs", mnt);
    }
    let bsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * bsize)
}
