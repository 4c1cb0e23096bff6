//! Progress reporting: long operations call a caller-supplied function with bytes done and bytes
//! total, so the CLI can draw progress bars. Calls come from worker threads, in no strict order of
//! `done` between threads but never beyond `total`.

/// What is being measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading, hashing and uploading an image (bytes of the image scanned).
    Create,
    /// Downloading, verifying and writing an image (bytes of the image restored).
    Restore,
}

/// One progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Which operation.
    pub phase: Phase,
    /// Bytes of the image handled so far.
    pub done: u64,
    /// Bytes of the image in total.
    pub total: u64,
}

/// A progress callback.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Sync);
