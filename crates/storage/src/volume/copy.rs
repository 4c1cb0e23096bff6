//! Copying a whole volume: a new volume with the content of an unmounted
//! one (memory-snapshot templates start many sandboxes from one saved
//! volume). Loop volumes are copied sparsely, extent by extent.

use std::fs::{File, OpenOptions};

use super::{sparse_copy, VolumeInfo, VolumeKind, VolumeManager};
use crate::error::{IoContext, Result, StorageError};

impl VolumeManager {
    /// Create volume `id` as a copy of volume `src`, which must not be
    /// mounted (its filesystem must be quiescent). The copy has the same
    /// size and is not mounted. On failure nothing of `id` is left.
    pub fn copy(&self, src: &str, id: &str) -> Result<VolumeInfo> {
        let from = self.info(src)?;
        if from.kind != VolumeKind::Loop {
            return Err(StorageError::Command {
                command: format!("copy volume {src}"),
                detail: "only loop volumes can be copied; this host gives directory volumes \
                         (run the daemon as root with /dev/loop-control)"
                    .into(),
            });
        }
        if from.mounted {
            return Err(StorageError::Command {
                command: format!("copy volume {src}"),
                detail: "it is mounted, so its filesystem may change during the copy; \
                         stop or hibernate its sandbox first"
                    .into(),
            });
        }
        let src_img = from.image.clone().expect("loop volumes have an image");
        let new = self.create(id, from.size_bytes)?;
        let result = (|| -> Result<()> {
            let dst_img = new.image.clone().expect("loop volumes have an image");
            let s = File::open(&src_img).ctx("open volume image", &src_img)?;
            let d = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&dst_img)
                .ctx("open volume image", &dst_img)?;
            sparse_copy::copy(&s, &d, from.size_bytes).ctx("copy volume image into", &dst_img)?;
            d.sync_all().ctx("fsync volume image", &dst_img)
        })();
        match result {
            Ok(()) => self.info(id),
            Err(e) => {
                let _ = self.delete(id);
                Err(e)
            }
        }
    }
}
