//! Creating and restoring snapshots.
//!
//! `create` reads the image in batches of chunk cells: every worker reads and hashes cells
//! (all-zero cells become holes), the batch's chunk ids go into the writer's lease, and then the
//! workers store the chunks the store lacks. Chunks already present are skipped, which makes
//! every snapshot incremental against everything already stored. After the last batch the store
//! is synced and only then is the manifest published, in one atomic put.
//!
//! `restore` writes into a temporary file beside the target, fetching and verifying every chunk
//! (authentication, decompression, length, hash) and writing only non-zero blocks so holes stay
//! holes; the target is replaced by a rename only when every chunk was good.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::chunker::{is_zero, Cell, Image, DEFAULT_CHUNK_SIZE};
use crate::codec;
use crate::crypt::TenantKey;
use crate::error::{Error, Result};
use crate::lease::{CreateLease, DEFAULT_LEASE_TTL};
use crate::manifest::{
    push_extent, validate_attachment_name, validate_id, version_for, Attachment, ChunkId,
    Encryption, Extent, Manifest, Sizes, Source,
};
use crate::par;
use crate::progress::{Phase, Progress, ProgressFn};
use crate::store::ChunkStore;

/// Bytes of image hashed per batch: the lease is republished once per batch.
const BATCH_BYTES: u64 = 256 << 20;

thread_local! {
    /// Per-thread read buffer for hashing, reused across chunks (no allocation, no page faults).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Block size below which restore does not bother keeping zeros sparse.
const SPARSE_BLOCK: usize = 4096;

/// What to record in a new snapshot and how to make it.
#[derive(Clone)]
pub struct CreateOptions<'a> {
    /// Snapshot id; a random `snap-<hex>` when `None`.
    pub id: Option<String>,
    /// Owning tenant.
    pub tenant: String,
    /// The sandbox the image belongs to.
    pub sandbox: Option<String>,
    /// How long the source was frozen for the capture, recorded in the manifest.
    pub freeze: Option<Duration>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Encrypt at rest with this tenant key.
    pub key: Option<&'a TenantKey>,
    /// Chunk size in bytes (default 1 MiB).
    pub chunk_size: u64,
    /// zstd level (default 1).
    pub zstd_level: i32,
    /// Worker threads (default: the store's parallelism).
    pub threads: Option<usize>,
    /// Lease time-to-live (see `lease.rs`).
    pub lease_ttl: Duration,
    /// Progress callback.
    pub progress: Option<ProgressFn<'a>>,
    /// A published snapshot (usually the previous one of the same volume) whose chunks may be
    /// taken as present without asking the store chunk by chunk: one manifest read per batch
    /// replaces a `head` per unchanged chunk, which matters on S3. Ignored if it was deleted.
    pub parent: Option<&'a Manifest>,
    /// Byte ranges of the image known to hold the same bytes as `parent`'s image (sorted, e.g.
    /// from [`same_ranges`](crate::same_ranges) against a reflinked copy of the parent's
    /// image). Cells inside them are taken from `parent` without being read, so an incremental
    /// snapshot reads only what changed. Ignored without a compatible `parent` (same chunk size,
    /// volume size and key) or if the parent was deleted meanwhile.
    pub same_as_parent: Option<&'a [std::ops::Range<u64>]>,
    /// Files stored with the image as named attachments (format version 2): `(name, path)`.
    /// Each is chunked, deduplicated and encrypted like the image and restored with
    /// [`restore_attachment`].
    pub attachments: Vec<(String, PathBuf)>,
}

impl Default for CreateOptions<'_> {
    fn default() -> Self {
        CreateOptions {
            id: None,
            tenant: "default".into(),
            sandbox: None,
            freeze: None,
            labels: BTreeMap::new(),
            key: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            zstd_level: 1,
            threads: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            progress: None,
            parent: None,
            same_as_parent: None,
            attachments: Vec::new(),
        }
    }
}

/// How to restore.
#[derive(Clone, Default)]
pub struct RestoreOptions<'a> {
    /// The tenant key, required for encrypted snapshots.
    pub key: Option<&'a TenantKey>,
    /// Worker threads (default: the store's parallelism).
    pub threads: Option<usize>,
    /// Progress callback.
    pub progress: Option<ProgressFn<'a>>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn random_id() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source works");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("snap-{hex}")
}

/// The parent's content by cell, for the cells [`CreateOptions::same_as_parent`] covers.
struct Reuse {
    /// Cell offset to the parent's chunk there (`None`: a hole in the parent).
    cells: std::collections::HashMap<u64, Option<ChunkId>>,
}

impl Reuse {
    /// `None` unless the options name a parent whose cells line up with this image's and
    /// whose chunk ids were made with the same key.
    fn new(opts: &CreateOptions, total: u64, key: Option<&TenantKey>) -> Option<Reuse> {
        let (p, same) = (opts.parent?, opts.same_as_parent?);
        let same_key = match (&p.encryption, key) {
            (None, None) => true,
            (Some(e), Some(k)) => e.key_id == k.fingerprint(),
            _ => false,
        };
        if p.chunk_size != opts.chunk_size || p.source.volume_size != total || !same_key {
            return None;
        }
        let covered = |off: u64, len: u64| {
            let i = same.partition_point(|r| r.end <= off);
            same.get(i)
                .is_some_and(|r| r.start <= off && off + len <= r.end)
        };
        let mut cells = std::collections::HashMap::new();
        for x in &p.extents {
            let mut off = x.offset;
            while off < x.offset + x.length {
                let len = opts.chunk_size.min(total - off);
                // A chunk extent is exactly one cell; a hole may span many.
                if off % opts.chunk_size == 0 && covered(off, len) {
                    if x.chunk.is_some() && x.length == len {
                        cells.insert(off, x.chunk);
                    } else if x.chunk.is_none() && off + len <= x.offset + x.length {
                        cells.insert(off, None);
                    }
                }
                off += len;
            }
        }
        Some(Reuse { cells })
    }

    /// The parent's content of `c`, if known to be unchanged.
    fn get(&self, c: &Cell) -> Option<Option<ChunkId>> {
        self.cells.get(&c.offset).copied()
    }
}

/// Snapshots the image at `image` (and the files of [`CreateOptions::attachments`]) into
/// `store` and returns the published manifest.
pub fn create(image: &Path, store: &dyn ChunkStore, opts: &CreateOptions) -> Result<Manifest> {
    let id = opts.id.clone().unwrap_or_else(random_id);
    validate_id(&id)?;
    if opts.chunk_size < 4096 || opts.chunk_size > (64 << 20) {
        return Err(Error::Config(format!(
            "chunk size {} is out of range; use 4 KiB to 64 MiB",
            opts.chunk_size
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, path) in &opts.attachments {
        validate_attachment_name(name).map_err(|reason| Error::BadImage {
            path: path.clone(),
            reason,
        })?;
        if !seen.insert(name.as_str()) {
            return Err(Error::BadImage {
                path: path.clone(),
                reason: format!("attachment name {name:?} is given twice"),
            });
        }
    }
    let mkey = Manifest::key_for(&id);
    if store.head(&mkey)?.is_some() {
        return Err(Error::SnapshotExists {
            id,
            store: store.describe(),
        });
    }
    let img = Image::open(image)?;
    let total = img.size();
    let extra: Vec<Image> = opts
        .attachments
        .iter()
        .map(|(_, p)| Image::open(p))
        .collect::<Result<_>>()?;
    let all_bytes = total + extra.iter().map(Image::size).sum::<u64>();
    let mut lease = CreateLease::acquire(store, &id, opts.lease_ttl)?;
    let mut run = Run {
        store,
        opts,
        threads: opts.threads.unwrap_or_else(|| store.parallelism()).max(1),
        parent_chunks: opts
            .parent
            .map(|p| {
                p.extents
                    .iter()
                    .filter_map(|x| x.chunk.map(|c| (c, x.stored)))
                    .collect()
            })
            .unwrap_or_default(),
        lease: &mut lease,
        uploaded: 0,
        stored_by_chunk: BTreeMap::new(),
        done: 0,
        all_bytes,
        times: [Duration::ZERO; 3],
    };
    let reuse = Reuse::new(opts, total, opts.key);
    let extents = run.chunk_file(&img, reuse.as_ref())?;
    let mut attachments = Vec::with_capacity(extra.len());
    for ((name, _), file) in opts.attachments.iter().zip(&extra) {
        attachments.push(Attachment {
            name: name.clone(),
            size: file.size(),
            extents: run.chunk_file(file, None)?,
        });
    }
    let (uploaded, stored, [t_hash, t_lease, t_store]) =
        (run.uploaded, run.stored_by_chunk.values().sum(), run.times);
    let trace = std::env::var_os("DWELL_SNAPSHOT_TRACE").is_some();
    let key = opts.key;

    let data = extents
        .iter()
        .filter(|x| !x.is_hole())
        .map(|x| x.length)
        .sum();
    let manifest = Manifest {
        version: version_for(
            !attachments.is_empty(),
            key.is_some_and(|k| k.derivation().is_some()),
        ),
        id: id.clone(),
        created_at: now_rfc3339(),
        tenant: opts.tenant.clone(),
        source: Source {
            sandbox: opts.sandbox.clone(),
            volume_size: total,
        },
        chunk_size: opts.chunk_size,
        compression: "zstd".into(),
        encryption: key.map(|k| Encryption {
            algorithm: "xchacha20poly1305".into(),
            chunk_id: "blake3-keyed".into(),
            key_id: k.fingerprint().to_string(),
            key_derivation: k.derivation().map(str::to_string),
        }),
        freeze_us: opts.freeze.map(|d| d.as_micros() as u64),
        sizes: Sizes {
            total,
            data,
            stored,
            uploaded,
        },
        labels: opts.labels.clone(),
        extents,
        attachments,
    };
    manifest.validate().map_err(|reason| Error::BadManifest {
        id: id.clone(),
        reason: format!("built an inconsistent manifest (a bug): {reason}"),
    })?;
    // Chunks durable first, then the manifest, while the lease still protects the chunks.
    let t3 = std::time::Instant::now();
    store.sync()?;
    let t4 = std::time::Instant::now();
    lease.check_fresh()?;
    store.put(&mkey, &manifest.to_json())?;
    lease.release()?;
    if trace {
        eprintln!(
            "snapshot {id}: read+hash {t_hash:?}, lease {t_lease:?}, store {t_store:?}, sync {:?}, publish {:?}",
            t4 - t3,
            t4.elapsed()
        );
    }
    Ok(manifest)
}

/// One `create` in progress: what every file of it (the image, then each attachment) shares.
struct Run<'a, 'o> {
    store: &'a dyn ChunkStore,
    opts: &'a CreateOptions<'o>,
    threads: usize,
    /// The parent's chunks and their stored sizes.
    parent_chunks: std::collections::HashMap<ChunkId, u64>,
    lease: &'a mut CreateLease<'o>,
    uploaded: u64,
    stored_by_chunk: BTreeMap<ChunkId, u64>,
    /// Bytes of all files done, for progress.
    done: u64,
    all_bytes: u64,
    /// Time spent reading and hashing, protecting ids, storing.
    times: [Duration; 3],
}

impl Run<'_, '_> {
    /// Cut `img` into chunks, store the missing ones, and return its extents.
    fn chunk_file(&mut self, img: &Image, reuse: Option<&Reuse>) -> Result<Vec<Extent>> {
        let (store, opts, threads) = (self.store, self.opts, self.threads);
        let key = opts.key;
        let cells = img.plan(opts.chunk_size)?;
        let per_batch = (BATCH_BYTES / opts.chunk_size).max(threads as u64) as usize;
        let image = img.path();
        let total = self.all_bytes;
        let mut extents: Vec<Extent> = Vec::new();
        let parent_published = || -> Result<bool> {
            match opts.parent {
                Some(p) => match load(store, &p.id, None) {
                    Ok(now) => Ok(now == *p),
                    Err(Error::SnapshotNotFound { .. }) => Ok(false),
                    Err(e) => Err(e),
                },
                None => Ok(false),
            }
        };
        for batch in cells.chunks(per_batch) {
            let t0 = std::time::Instant::now();
            // Phase 1: read and hash into a reused per-thread buffer (holes and zero cells: None);
            // cells known unchanged since the parent are taken from it unread.
            let hash_batch = |reuse: Option<&Reuse>| {
                par::map(batch, threads, |c: &Cell| {
                    if !c.has_data {
                        return Ok(None);
                    }
                    if let Some(known) = reuse.and_then(|r| r.get(c)) {
                        return Ok(known);
                    }
                    SCRATCH.with(|b| {
                        let mut buf = b.borrow_mut();
                        buf.resize(c.length as usize, 0);
                        img.read_at(c.offset, &mut buf)?;
                        Ok((!is_zero(&buf)).then(|| codec::chunk_id(key, &buf)))
                    })
                })
            };
            let reusing = match reuse {
                Some(r) if parent_published()? => Some(r),
                _ => None,
            };
            let mut hashed: Vec<Option<ChunkId>> = hash_batch(reusing)?;
            // Phase 2: protect the ids, then store what is missing (read again: it is in the page
            // cache, and usually only a few chunks are missing).
            let t1 = std::time::Instant::now();
            self.lease.protect(hashed.iter().flatten().copied())?;
            let t2 = std::time::Instant::now();
            let work: Vec<(&Cell, ChunkId)> = batch
                .iter()
                .zip(&hashed)
                .filter_map(|(c, h)| h.map(|h| (c, h)))
                .collect();
            // Progress: the batch's holes now, each chunk when stored or found present.
            let progress_done = AtomicU64::new(
                self.done
                    + batch
                        .iter()
                        .zip(&hashed)
                        .filter(|(_, h)| h.is_none())
                        .map(|(c, _)| c.length)
                        .sum::<u64>(),
            );
            let report = |len: u64| {
                let d = progress_done.fetch_add(len, Ordering::Relaxed) + len;
                if let Some(p) = opts.progress {
                    p(Progress {
                        phase: Phase::Create,
                        done: d,
                        total,
                    });
                }
            };
            // The parent's chunks are present if the parent is still published now, after our lease
            // covers them: a collector removes a manifest before its chunks, and would then see our
            // lease (lease.rs).
            let parent_ok = !self.parent_chunks.is_empty() && parent_published()?;
            if reusing.is_some() && !parent_ok {
                // The parent went away while this batch took chunk ids from it: its chunks may be
                // collected, so read this batch after all.
                hashed = hash_batch(None)?;
                self.lease.protect(hashed.iter().flatten().copied())?;
            }
            let results: Vec<(u64, u64)> = par::map(&work, threads, |(c, cid)| {
                if parent_ok {
                    if let Some(&stored) = self.parent_chunks.get(cid) {
                        report(c.length);
                        return Ok((stored, 0));
                    }
                }
                let ckey = cid.key();
                if let Some(info) = store.head(&ckey)? {
                    report(c.length);
                    return Ok((info.size, 0));
                }
                let mut data = vec![0u8; c.length as usize];
                img.read_at(c.offset, &mut data)?;
                if codec::chunk_id(key, &data) != *cid {
                    return Err(Error::BadImage {
                        path: image.to_path_buf(),
                        reason: format!(
                            "the bytes at offset {} changed while the snapshot was being taken; \
                             snapshot a frozen sandbox or a copy of its volume",
                            c.offset
                        ),
                    });
                }
                let blob = codec::encode(key, cid, &data, opts.zstd_level)
                    .map_err(|e| Error::io("compress chunk of", image, e))?;
                store.put(&ckey, &blob)?;
                report(c.length);
                Ok((blob.len() as u64, blob.len() as u64))
            })?;
            self.times[0] += t1 - t0;
            self.times[1] += t2 - t1;
            self.times[2] += t2.elapsed();
            let mut r = results.into_iter();
            for (c, h) in batch.iter().zip(&hashed) {
                let x = match h {
                    Some(cid) => {
                        let (stored, up) = r.next().expect("one result per chunk");
                        self.uploaded += up;
                        self.stored_by_chunk.insert(*cid, stored);
                        Extent {
                            offset: c.offset,
                            length: c.length,
                            chunk: Some(*cid),
                            stored,
                        }
                    }
                    None => Extent {
                        offset: c.offset,
                        length: c.length,
                        chunk: None,
                        stored: 0,
                    },
                };
                push_extent(&mut extents, x);
                self.done += c.length;
            }
            if work.is_empty() {
                report(0); // a batch of holes only
            }
        }
        Ok(extents)
    }
}

/// Reads a snapshot's manifest. With `tenant`, a snapshot of another tenant is reported as not
/// found, so tenants cannot see each other's snapshots.
pub fn load(store: &dyn ChunkStore, id: &str, tenant: Option<&str>) -> Result<Manifest> {
    validate_id(id)?;
    let not_found = || Error::SnapshotNotFound {
        id: id.to_string(),
        store: store.describe(),
    };
    let bytes = store.get(&Manifest::key_for(id))?.ok_or_else(not_found)?;
    let m = Manifest::from_json(id, &bytes)?;
    if m.id != id {
        return Err(Error::BadManifest {
            id: id.to_string(),
            reason: format!("stored under {id:?} but names itself {:?}", m.id),
        });
    }
    if tenant.is_some_and(|t| t != m.tenant) {
        return Err(not_found());
    }
    Ok(m)
}

/// Every published snapshot, oldest first, optionally only one tenant's.
pub fn list(store: &dyn ChunkStore, tenant: Option<&str>) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for o in store.list("manifests/")? {
        let Some(id) = o
            .key
            .strip_prefix("manifests/")
            .and_then(|k| k.strip_suffix(".json"))
        else {
            continue;
        };
        match load(store, id, tenant) {
            Ok(m) => out.push(m),
            Err(Error::SnapshotNotFound { .. }) => {} // another tenant's, or deleted meanwhile
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
    Ok(out)
}

/// Removes the temporary file unless the restore succeeded.
struct TmpGuard(Option<PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Writes the non-zero runs of `data` at `offset`, leaving zero blocks as holes.
fn write_sparse(f: &File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let mut i = 0;
    while i < data.len() {
        let end = (i + SPARSE_BLOCK).min(data.len());
        if is_zero(&data[i..end]) {
            i = end;
            continue;
        }
        let start = i;
        while i < data.len() {
            let e = (i + SPARSE_BLOCK).min(data.len());
            if is_zero(&data[i..e]) {
                break;
            }
            i = e;
        }
        f.write_all_at(&data[start..i], offset + start as u64)?;
    }
    Ok(())
}

/// Restores `manifest` from `store` into a sparse image at `target`, replacing it atomically.
/// On any error (missing or corrupt chunk, wrong key, I/O) the target is left as it was.
pub fn restore(
    manifest: &Manifest,
    store: &dyn ChunkStore,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<()> {
    let file = Part {
        what: "the volume image".into(),
        size: manifest.source.volume_size,
        extents: &manifest.extents,
    };
    restore_file(manifest, file, store, target, opts)
}

/// Restores the attachment `name` of `manifest` into `target` like [`restore`]: every chunk
/// verified, the target replaced atomically and only if every chunk was good.
pub fn restore_attachment(
    manifest: &Manifest,
    name: &str,
    store: &dyn ChunkStore,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<()> {
    let a = manifest
        .attachment(name)
        .ok_or_else(|| Error::BadManifest {
            id: manifest.id.clone(),
            reason: format!("it has no attachment {name:?}"),
        })?;
    let file = Part {
        what: format!("attachment {name}"),
        size: a.size,
        extents: &a.extents,
    };
    restore_file(manifest, file, store, target, opts)
}

/// One part of a snapshot: the image or an attachment.
struct Part<'a> {
    what: String,
    size: u64,
    extents: &'a [Extent],
}

fn restore_file(
    manifest: &Manifest,
    file: Part,
    store: &dyn ChunkStore,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<()> {
    manifest.validate().map_err(|reason| Error::BadManifest {
        id: manifest.id.clone(),
        reason,
    })?;
    let key = match (&manifest.encryption, opts.key) {
        (None, _) => None,
        (Some(e), Some(k)) if e.key_id == k.fingerprint() => Some(k),
        (Some(e), given) => {
            return Err(Error::WrongKey {
                snapshot: manifest.id.clone(),
                expected: e.key_id.clone(),
                given: match given {
                    Some(k) => format!("the given key is {}", k.fingerprint()),
                    None => "no key was given".into(),
                },
            })
        }
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .ok_or_else(|| Error::BadImage {
            path: target.to_path_buf(),
            reason: "the restore target has no file name".into(),
        })?
        .to_string_lossy();
    static RESTORES: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{name}.restore.{}.{}",
        std::process::id(),
        RESTORES.fetch_add(1, Ordering::Relaxed)
    ));
    let mut guard = TmpGuard(Some(tmp.clone()));
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.set_len(file.size)
        .map_err(|e| Error::io("size", &tmp, e))?;

    let total = file.size;
    let done = AtomicU64::new(
        file.extents
            .iter()
            .filter(|x| x.is_hole())
            .map(|x| x.length)
            .sum(),
    );
    let data: Vec<&Extent> = file.extents.iter().filter(|x| !x.is_hole()).collect();
    let threads = opts.threads.unwrap_or_else(|| store.parallelism()).max(1);
    par::map(&data, threads, |x: &&Extent| {
        let cid = x.chunk.expect("data extents have a chunk");
        let stored = store.get(&cid.key())?.ok_or_else(|| Error::MissingChunk {
            snapshot: manifest.id.clone(),
            chunk: cid.to_hex(),
            file: file.what.clone(),
            offset: x.offset,
            store: store.describe(),
        })?;
        let plain = codec::decode(key, &cid, &stored, x.length as usize).map_err(|reason| {
            Error::CorruptChunk {
                snapshot: manifest.id.clone(),
                chunk: cid.to_hex(),
                file: file.what.clone(),
                offset: x.offset,
                reason,
            }
        })?;
        write_sparse(&f, x.offset, &plain).map_err(|e| Error::io("write", &tmp, e))?;
        let d = done.fetch_add(x.length, Ordering::Relaxed) + x.length;
        if let Some(p) = opts.progress {
            p(Progress {
                phase: Phase::Restore,
                done: d,
                total,
            });
        }
        Ok(())
    })?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, target).map_err(|e| Error::io("rename restored image to", target, e))?;
    guard.0 = None;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", &dir, e))?;
    Ok(())
}
