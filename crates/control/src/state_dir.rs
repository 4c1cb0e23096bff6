//! What the daemon keeps of one sandbox on the host, under
//! `<data-dir>/sandboxes/<id>/`: the runtime config (`sandbox.json`, see
//! [`crate::reconcile::config`]), the run dir with the agent's socket, and
//! the markers of interrupted work (fill, archive pointer, saved state).
//! Every path into it is made here.

use std::path::{Path, PathBuf};

/// The state dir of sandbox `id`.
pub(crate) fn path(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("sandboxes").join(id)
}
