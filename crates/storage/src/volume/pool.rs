//! A pool of sandbox volumes made ahead of time: a template copy with its
//! own UUID and its `volume.json`, so that a sandbox created with the
//! pool's size skips the copy and the metadata's fsyncs on its start path
//! (only the loop device and the mount remain).
//!
//! Each pooled volume lives in `<root>/.pooled-<pid>-<n>-<t>/` (the same
//! files as a volume: `volume.json`, `volume.img`, `mnt`) until a create
//! claims it by renaming that directory to the sandbox's id: the volume is
//! used by that one sandbox and deleted with it, never returned to the
//! pool, so nothing written by one tenant can reach another. A pooled
//! volume was never attached or mounted, so it holds nothing but a fresh
//! filesystem, and the pool holds no mount and no loop device. Only the
//! pool's exact size is claimed; other sizes are made as before.
//!
//! Cleanup: [`VolumeManager::drain_pool`] (daemon shutdown, and drop)
//! deletes what is left; after a crash the next manager on the same root
//! finds the directories of a dead process and removes them (see
//! `remove_leftovers`).

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{ext4, loopdev, mount, VolumeManager, IMAGE, MNT};
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{nonce, rename_noreplace, validate_name};

/// Name prefix of a pooled volume's directory (with the pid of the process
/// that made it: leftovers of a dead one are removed).
pub(crate) const POOLED: &str = ".pooled-";

/// The pool's settings and its ready volumes.
#[derive(Debug)]
pub(crate) struct Pool {
    /// How many ready volumes the pool keeps.
    pub(crate) target: usize,
    /// Their size (rounded up to 4 KiB).
    pub(crate) size_bytes: u64,
    /// Directory names (under the root) of ready volumes, oldest first.
    ready: Mutex<Vec<String>>,
    /// A fill is running (fills do not overlap).
    filling: AtomicBool,
    /// The pool was drained for good: no more fills.
    closed: AtomicBool,
}

/// What the pool holds, for `dwell doctor` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Ready volumes kept (0: no pool).
    pub target: usize,
    /// Ready volumes now.
    pub ready: usize,
    /// Their size in bytes.
    pub size_bytes: u64,
}

impl Pool {
    pub(crate) fn new(target: usize, size_bytes: u64) -> Pool {
        Pool {
            target,
            size_bytes: size_bytes.div_ceil(4096) * 4096,
            ready: Mutex::new(Vec::new()),
            filling: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl VolumeManager {
    /// The same manager keeping `count` volumes of `size_bytes` made ahead
    /// of time (0 turns the pool off). Loop volumes only; the pool is
    /// filled by [`VolumeManager::fill_pool`].
    pub fn with_pool(mut self, count: usize, size_bytes: u64) -> Self {
        self.pool = (count > 0
            && self.kind == super::VolumeKind::Loop
            && (super::MIN_VOLUME_SIZE..=self.max_size).contains(&size_bytes))
        .then(|| Pool::new(count, size_bytes));
        self
    }

    /// What the pool holds.
    pub fn pool_status(&self) -> PoolStatus {
        match &self.pool {
            Some(p) => PoolStatus {
                target: p.target,
                ready: p.ready().len(),
                size_bytes: p.size_bytes,
            },
            None => PoolStatus {
                target: 0,
                ready: 0,
                size_bytes: 0,
            },
        }
    }

    /// Makes pooled volumes until the pool holds its target; returns how
    /// many it made. Returns at once when another fill runs or the pool is
    /// drained. Blocking (a few milliseconds per volume): run it off the
    /// request path.
    pub fn fill_pool(&self) -> Result<usize> {
        let Some(pool) = &self.pool else {
            return Ok(0);
        };
        if pool.filling.swap(true, Ordering::AcqRel) {
            return Ok(0);
        }
        let mut made = 0;
        let result = loop {
            if pool.closed.load(Ordering::Acquire) || pool.ready().len() >= pool.target {
                break Ok(made);
            }
            match self.make_pooled(pool) {
                Ok(()) => made += 1,
                Err(e) => break Err(e),
            }
        };
        pool.filling.store(false, Ordering::Release);
        result
    }

    /// One pooled volume, built like a create (not attached, not mounted).
    fn make_pooled(&self, pool: &Pool) -> Result<()> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        fs::create_dir_all(&self.root).ctx("create volume root", &self.root)?;
        let name = format!("{POOLED}{}", nonce());
        let dir = self.root.join(&name);
        if let Err(e) = self.build(&dir, pool.size_bytes) {
            remove_pooled(&dir);
            return Err(e);
        }
        let mut ready = pool.ready();
        if pool.closed.load(Ordering::Acquire) {
            drop(ready);
            remove_pooled(&dir);
            return Ok(());
        }
        ready.push(name);
        Ok(())
    }

    /// Creates volume `id` and makes it reachable, like [`create`] then
    /// [`mount`]: from the pool when it holds a volume of exactly this
    /// size (rounded up to 4 KiB), otherwise made now. Returns whether the
    /// volume came from the pool. Only for a volume that is used mounted
    /// right away (a restore that writes the image itself uses `create`).
    ///
    /// [`create`]: VolumeManager::create
    /// [`mount`]: VolumeManager::mount
    pub fn create_mounted(&self, id: &str, size_bytes: u64) -> Result<bool> {
        validate_name("volume id", id)?;
        if self.claim(id, size_bytes)? {
            // Never attached before: no device to look for, attach anew
            // (on failure `mount` below says why, after its own checks).
            if self.mount_claimed(id).is_err() {
                self.mount(id)?;
            }
            return Ok(true);
        }
        self.create(id, size_bytes)?;
        self.mount(id)?;
        Ok(false)
    }

    /// Attaches and mounts a volume just claimed from the pool.
    fn mount_claimed(&self, id: &str) -> Result<()> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.root.join(id);
        let dev = loopdev::attach(&dir.join(IMAGE))?;
        mount::mount_ext4(dev.path(), &dir.join(MNT), ext4::MOUNT_OPTIONS, self.nosuid)
    }

    /// Moves a ready pooled volume into place as `id`, if there is one of
    /// this size.
    fn claim(&self, id: &str, size_bytes: u64) -> Result<bool> {
        let Some(pool) = &self.pool else {
            return Ok(false);
        };
        if size_bytes.div_ceil(4096) * 4096 != pool.size_bytes {
            return Ok(false);
        }
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.root.join(id);
        if fs::symlink_metadata(&dir).is_ok() {
            return Err(StorageError::VolumeExists(id.to_string()));
        }
        let Some(name) = pool.ready().pop() else {
            return Ok(false);
        };
        let pooled = self.root.join(&name);
        if let Err(e) = rename_noreplace(&pooled, &dir) {
            remove_pooled(&pooled);
            return Err(StorageError::Io {
                op: "move pooled volume into place at",
                path: dir,
                source: e,
            });
        }
        Ok(true)
    }

    /// Deletes every pooled volume, and makes no more.
    pub fn drain_pool(&self) {
        let Some(pool) = &self.pool else {
            return;
        };
        pool.closed.store(true, Ordering::Release);
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let names: Vec<String> = std::mem::take(&mut *pool.ready());
        for name in names {
            remove_pooled(&self.root.join(name));
        }
    }
}

/// Deletes one pooled volume's directory. A pooled volume was never handed
/// out, attached or mounted: there is no data to discard.
pub(crate) fn remove_pooled(dir: &std::path::Path) {
    let _ = dwell_hostfs::remove_tree(dir);
}
