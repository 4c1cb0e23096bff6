//! dwell-storage: where sandboxes keep their files.
//!
//! - [`VolumeManager`]: per-sandbox volumes with a hard size limit (ext4 in
//!   a sparse image on an autoclearing loop device; a plain directory where
//!   loop devices are impossible).
//! - [`ImageStore`]: root filesystem images. The built-in image `host` is a
//!   read-only view of the host's `/usr` plus a curated skeleton (see
//!   `IMAGES.md`); other images are imported from OCI image layouts or
//!   `docker save` tarballs, their layers extracted once per digest and
//!   shared.

mod error;
mod fsutil;
pub mod image;
pub mod volume;

pub use error::{Result, StorageError};
pub use image::{
    digest_hex, is_builtin, unpack_untrusted, Access, ExportFormat, Healthcheck, Image, ImageStore,
    Pulled, Reference, StoreLock, HOST_IMAGE, HOST_USER_ACCOUNT, HOST_USER_ACCOUNT_ID,
    HOST_USER_IMAGE, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, MAX_UNTRUSTED_ENTRIES,
};
pub use volume::{
    detach_loop, has_cap_sys_resource, loop_bindings, LoopBinding, PoolStatus, VolumeInfo,
    VolumeKind, VolumeManager, DEFAULT_VOLUME_SIZE, MAX_NAMED_VOLUME_SIZE, MAX_VOLUME_SIZE,
    MIN_VOLUME_SIZE,
};
