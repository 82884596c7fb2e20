//! The VersionSet: the current version of the table tree and everything that changes it, in
//! the shape of Pebble's `versionSet` and RocksDB's `VersionSet`.
//!
//! It owns the current version, the file-number counter, the MANIFEST, `log_and_apply` (the
//! one way a version changes) and the deletion of tables no version needs any more. Flush,
//! compaction and recovery go through it; nothing else writes the MANIFEST or installs a
//! version.
//!
//! `log_and_apply` holds the MANIFEST's lock from computing the new version until it is
//! installed, so edits apply in the order they become durable, each to the version the one
//! before it made; concurrent jobs simply take turns there. A caller that must change other
//! state in the same step as the version (a flush drops its memtable as its table arrives, so
//! that a read sees every write exactly once) passes that change as `install`, which runs
//! under the lock on the version set's state.
//!
//! Every table file is, at every moment from the time its number is handed out until it is
//! deleted, in exactly one of three sets, moved between them under one lock: *pending* (a job
//! is writing it: [`VersionSet::new_table`]), *live* (the current version names it), and
//! *obsolete* (an installed edit dropped it). The structure checker relies on that while jobs
//! run concurrently. A table whose job failed stays pending for as long as the database is
//! open, and its file (if any) on disk until the next open deletes what no version names: the
//! failure may have come while the MANIFEST was being written, so the edit naming the table
//! may yet be durable, and deleting the table could lose it.
//!
//! An obsolete table leaves the disk only once the MANIFEST edit that dropped it is durable and
//! sealed (see `manifest`), and no version a reader still holds names it (its `FileMeta` is
//! then held by this set alone).
//! Those still held when the database closes are deleted by the next open. Blob files go
//! through the same three sets and the same rules (their numbers come from `new_table` too).

use crate::error::{Error, Result};
use crate::manifest::{self, Manifest, VersionEdit};
use crate::metrics::{Counters, SyncMeter};
use crate::runtime::{Phase, PhaseGuard, RuntimeRef};
use crate::signal::AsyncLock;
use crate::table_cache::TableCache;
use crate::version::{BlobFileMeta, FileMeta, Version};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

#[derive(Debug)]
pub(crate) struct VersionSet {
    rt: RuntimeRef,
    dir: PathBuf,
    /// The MANIFEST is rewritten as a snapshot once it grows past this.
    manifest_bytes_max: u64,
    counters: Arc<Counters>,
    next_file_number: AtomicU64,
    /// The newest log number an installed edit recorded: WALs below it hold nothing that is
    /// not in a table. Raised after the version it came with is installed.
    log_number: AtomicU64,
    /// `log_number` once the edit that recorded it is sealed.
    sealed_log_number: AtomicU64,
    /// The MANIFEST, or why an earlier write to it failed: the failed edit may be durable or
    /// not, so no later edit (computed without it) may follow it into the file.
    manifest: AsyncLock<std::result::Result<Manifest, Arc<str>>>,
    state: Mutex<State>,
}

/// The tables an installed edit dropped, held (so never deleted) until its seal is durable.
/// However that fails to come (an error, a panic, the future dropped), they stay held for as
/// long as the database is open, and the next open decides.
struct Unsealed<'a> {
    versions: &'a VersionSet,
    held: Vec<Arc<FileMeta>>,
    held_blobs: Vec<Arc<BlobFileMeta>>,
}

impl Unsealed<'_> {
    /// The seal is durable: the files may go once no reader holds them.
    fn sealed(mut self) {
        self.held.clear();
        self.held_blobs.clear();
    }
}

impl Drop for Unsealed<'_> {
    fn drop(&mut self) {
        if !self.held.is_empty() || !self.held_blobs.is_empty() {
            let mut state = self.versions.lock();
            state.unsealed.append(&mut self.held);
            state.unsealed_blobs.append(&mut self.held_blobs);
        }
    }
}

/// A file no version needs, to be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unneeded {
    Table(u64),
    Blob(u64),
}

impl Unneeded {
    pub(crate) fn number(self) -> u64 {
        match self {
            Unneeded::Table(n) | Unneeded::Blob(n) => n,
        }
    }

    fn name(self) -> String {
        match self {
            Unneeded::Table(n) => crate::sstable::file_name(n),
            Unneeded::Blob(n) => crate::blob::file_name(n),
        }
    }
}

/// The version and the tables on their way in or out, changed together.
#[derive(Debug)]
struct State {
    current: Arc<Version>,
    /// Tables jobs are writing.
    pending: BTreeSet<u64>,
    /// Dropped from the current version, perhaps still named by a version a reader holds.
    obsolete: Vec<Arc<FileMeta>>,
    obsolete_blobs: Vec<Arc<BlobFileMeta>>,
    /// Obsolete files no reader holds whose deletion is yet to be tried, or failed (here or at
    /// open): tried again before and after every job.
    undeleted: Vec<Unneeded>,
    /// Those of `undeleted` a call is deleting now, by number: others leave them alone.
    deleting: BTreeSet<u64>,
    /// Files dropped by an edit whose seal failed, held (so never deleted) until the close.
    unsealed: Vec<Arc<FileMeta>>,
    unsealed_blobs: Vec<Arc<BlobFileMeta>>,
}

/// What a new [`VersionSet`] starts from: recovery's outcome.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub version: Version,
    pub next_file_number: u64,
    pub manifest: Manifest,
    /// The log number the new MANIFEST records.
    pub log_number: u64,
    /// Files no version names whose deletion at open failed.
    pub undeleted: Vec<Unneeded>,
}

/// What the set holds at one moment, for the structure checker.
#[cfg(feature = "invariants")]
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub current: Arc<Version>,
    pub pending: Vec<u64>,
    pub obsolete: Vec<u64>,
}

impl VersionSet {
    pub(crate) fn new(
        rt: RuntimeRef,
        dir: PathBuf,
        manifest_bytes_max: u64,
        counters: Arc<Counters>,
        r: Recovered,
    ) -> Self {
        let state = State {
            current: Arc::new(r.version),
            pending: BTreeSet::new(),
            obsolete: Vec::new(),
            obsolete_blobs: Vec::new(),
            undeleted: r.undeleted,
            deleting: BTreeSet::new(),
            unsealed: Vec::new(),
            unsealed_blobs: Vec::new(),
        };
        VersionSet {
            rt,
            dir,
            manifest_bytes_max,
            counters,
            next_file_number: AtomicU64::new(r.next_file_number),
            log_number: AtomicU64::new(r.log_number),
            sealed_log_number: AtomicU64::new(r.log_number),
            manifest: AsyncLock::new(Ok(r.manifest)),
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current version.
    pub(crate) fn current(&self) -> Arc<Version> {
        Arc::clone(&self.lock().current)
    }

    /// A fresh file number for a WAL or a MANIFEST.
    pub(crate) fn new_file_number(&self) -> u64 {
        self.next_file_number.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh number for a table a job is about to write, pending until an edit naming it is
    /// installed (see the module header).
    pub(crate) fn new_table(&self) -> u64 {
        let mut state = self.lock();
        let number = self.new_file_number();
        state.pending.insert(number);
        number
    }

    /// Table `number`, from [`VersionSet::new_table`], was never made (an empty memtable makes
    /// no table).
    pub(crate) fn table_unused(&self, number: u64) {
        self.lock().pending.remove(&number);
    }

    /// The number the next `new_file_number` would give: what an edit records, so that the
    /// next open never reuses a number in use.
    pub(crate) fn peek_next_file_number(&self) -> u64 {
        self.next_file_number.load(Ordering::Relaxed)
    }

    /// Writes `edit` to the MANIFEST, durably, then makes the version it gives current, running
    /// `install` with it in the same step; its added tables stop being pending and the tables
    /// it drops (unless it re-adds them: a move to another level) become obsolete. Returns once
    /// the edit's seal is durable as well: only then may the caller delete what the edit made
    /// unneeded (a WAL), and only then may the dropped tables be deleted. Rewrites the
    /// MANIFEST as a fresh snapshot once it has grown past its limit. An edit that does not
    /// apply to the current version is corruption of the MANIFEST's state, reported against it.
    pub(crate) async fn log_and_apply(
        &self,
        edit: VersionEdit,
        install: impl FnOnce(&Arc<Version>),
    ) -> Result<()> {
        let mut guard = self.manifest.lock().await;
        let manifest = match &mut *guard {
            Ok(manifest) => manifest,
            Err(cause) => return Err(Error::Poisoned(Arc::clone(cause))),
        };
        let old = self.current();
        let version = old.apply(&edit).map_err(|why| {
            let path = self.dir.join(manifest::file_name(manifest.number()));
            Error::corruption(path, manifest.bytes(), why)
        })?;
        let before = manifest.bytes();
        let syncs = SyncMeter::manifest(&self.counters, self.rt.as_ref());
        if let Err(e) = manifest.append_unsealed(&edit, syncs).await {
            *guard = Err(Arc::from(format!("a MANIFEST write failed: {e}")));
            return Err(e);
        }
        // Installed once the edit is durable, before its seal: a flush's memtable leaves (and
        // writers waiting for its room go on) one fsync sooner. The tables the edit drops stay
        // held until the seal is durable too, so none is deleted on the word of an edit a later
        // bit flip could make look like a torn tail.
        let held = {
            let version = Arc::new(version);
            let mut state = self.lock();
            state.current = Arc::clone(&version);
            for (_, f) in &edit.added {
                state.pending.remove(&f.number);
            }
            for b in &edit.added_blobs {
                state.pending.remove(&b.number);
            }
            let dropped_blobs: Vec<Arc<BlobFileMeta>> = old
                .blobs
                .iter()
                .filter(|(n, _)| !version.blobs.contains_key(n))
                .map(|(_, b)| Arc::clone(&b.file))
                .collect();
            state.obsolete_blobs.extend(dropped_blobs.iter().cloned());
            let moved = |n: u64| edit.added.iter().any(|(_, f)| f.number == n);
            let dropped = old.files().filter(|(level, f)| {
                !moved(f.number) && edit.deleted.contains(&(*level as u8, f.number))
            });
            let dropped: Vec<Arc<FileMeta>> = dropped.map(|(_, f)| Arc::clone(f)).collect();
            state.obsolete.extend(dropped.iter().cloned());
            install(&version);
            // After the install: whoever reads the new number then finds the memtables it
            // covers gone.
            if let Some(log) = edit.log_number {
                self.log_number.fetch_max(log, Ordering::SeqCst);
            }
            Unsealed { versions: self, held: dropped, held_blobs: dropped_blobs }
        };
        drop(old);
        let sealed = manifest.seal(syncs).await;
        Counters::add(&self.counters.manifest_bytes, manifest.bytes() - before);
        if let Err(e) = sealed {
            *guard = Err(Arc::from(format!("a MANIFEST write failed: {e}")));
            return Err(e);
        }
        held.sealed();
        if let Some(log) = edit.log_number {
            self.sealed_log_number.fetch_max(log, Ordering::SeqCst);
        }
        if manifest.bytes() > self.manifest_bytes_max {
            if let Err(e) = self.rotate(manifest).await {
                *guard = Err(Arc::from(format!("a MANIFEST rotation failed: {e}")));
                return Err(e);
            }
        }
        Ok(())
    }

    /// The newest log number a sealed edit recorded: every memtable of a WAL below it is in a
    /// table, attested in the MANIFEST (see [`crate::db::Db::flush`]).
    pub(crate) fn sealed_log_number(&self) -> u64 {
        self.sealed_log_number.load(Ordering::SeqCst)
    }

    /// Starts a new MANIFEST holding the current version whole, and deletes the old one.
    async fn rotate(&self, manifest: &mut Manifest) -> Result<()> {
        let _phase = PhaseGuard::enter(self.rt.as_ref(), Phase::ManifestRotation);
        let number = self.new_file_number();
        let snapshot = manifest.snapshot_edit(&self.current(), self.peek_next_file_number());
        let old = manifest.number();
        let syncs = SyncMeter::manifest(&self.counters, self.rt.as_ref());
        *manifest = Manifest::create(self.rt.as_ref(), &self.dir, number, &snapshot, syncs).await?;
        Counters::add(&self.counters.manifest_bytes, manifest.bytes());
        let path = self.dir.join(manifest::file_name(old));
        if let Err(e) = self.rt.fs().remove(&path).await {
            tracing::warn!(manifest = %path.display(), error = %e, "could not delete an old MANIFEST");
        }
        Ok(())
    }

    /// Deletes the obsolete tables and blob files no version names any more, and those whose
    /// deletion failed before. A failure costs only space: the file is tried again by the next
    /// call (and by the next open, which deletes what no version names). A file stays in the
    /// obsolete set until its deletion is done.
    pub(crate) async fn remove_unreferenced(&self, table_cache: &TableCache) {
        let claimed = {
            let mut state = self.lock();
            let (free, held): (Vec<_>, Vec<_>) = std::mem::take(&mut state.obsolete)
                .into_iter()
                .partition(|f| Arc::strong_count(f) == 1);
            state.obsolete = held;
            let (free_blobs, held): (Vec<_>, Vec<_>) = std::mem::take(&mut state.obsolete_blobs)
                .into_iter()
                .partition(|b| Arc::strong_count(b) == 1);
            state.obsolete_blobs = held;
            // The newly freed first, then the older failures.
            let mut order: Vec<Unneeded> = free.iter().map(|f| Unneeded::Table(f.number)).collect();
            order.extend(free_blobs.iter().map(|b| Unneeded::Blob(b.number)));
            let retry: Vec<Unneeded> = state
                .undeleted
                .iter()
                .copied()
                .filter(|u| !state.deleting.contains(&u.number()))
                .collect();
            state.undeleted.extend(order.iter().copied());
            order.extend(retry);
            state.deleting.extend(order.iter().map(|u| u.number()));
            order
        };
        for unneeded in claimed {
            match unneeded {
                Unneeded::Table(number) => table_cache.evict(number),
                Unneeded::Blob(number) => table_cache.blobs().evict(number),
            }
            let path = self.dir.join(unneeded.name());
            let gone = match self.rt.fs().remove(&path).await {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "could not delete a file");
                    false
                }
            };
            let mut state = self.lock();
            state.deleting.remove(&unneeded.number());
            if gone {
                state.undeleted.retain(|&u| u != unneeded);
            }
        }
    }

    /// The newest log number an installed edit recorded.
    #[cfg(feature = "invariants")]
    pub(crate) fn log_number(&self) -> u64 {
        self.log_number.load(Ordering::SeqCst)
    }

    /// The current version with the pending and obsolete tables, taken in one step.
    #[cfg(feature = "invariants")]
    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        let mut obsolete: Vec<u64> = state.obsolete.iter().map(|f| f.number).collect();
        obsolete.extend(state.obsolete_blobs.iter().map(|b| b.number));
        obsolete.extend(state.undeleted.iter().map(|u| u.number()));
        Snapshot {
            current: Arc::clone(&state.current),
            pending: state.pending.iter().copied().collect(),
            obsolete,
        }
    }
}
