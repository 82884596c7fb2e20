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
//! before it made. A caller that must change other state in the same step as the version (a
//! flush drops its memtable as its table arrives, so that a read sees every write exactly
//! once) passes that change as `install`, which runs under the lock on the current version.
//!
//! A table leaves the disk only once the MANIFEST edit that dropped it is durable and no
//! version a reader still holds names it (its `FileMeta` is then held by this set alone).
//! Those still held when the database closes are deleted by the next open.

use crate::error::{Error, Result};
use crate::manifest::{self, Manifest, VersionEdit};
use crate::metrics::Counters;
use crate::runtime::{Phase, PhaseGuard, RuntimeRef};
use crate::signal::AsyncLock;
use crate::table_cache::TableCache;
use crate::version::{FileMeta, Version};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug)]
pub(crate) struct VersionSet {
    rt: RuntimeRef,
    dir: PathBuf,
    /// The MANIFEST is rewritten as a snapshot once it grows past this.
    manifest_bytes_max: u64,
    counters: Arc<Counters>,
    current: Mutex<Arc<Version>>,
    next_file_number: AtomicU64,
    manifest: AsyncLock<Manifest>,
    obsolete: Mutex<Obsolete>,
}

/// Tables on their way off the disk.
#[derive(Debug, Default)]
struct Obsolete {
    /// Dropped from the current version, perhaps still named by a version a reader holds.
    held: Vec<Arc<FileMeta>>,
    /// No reader holds them, but deleting them failed (here or at open): tried again later.
    undeleted: Vec<u64>,
}

/// What a new [`VersionSet`] starts from: recovery's outcome.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub version: Version,
    pub next_file_number: u64,
    pub manifest: Manifest,
    /// Tables no version names whose deletion at open failed.
    pub undeleted: Vec<u64>,
}

impl VersionSet {
    pub(crate) fn new(
        rt: RuntimeRef,
        dir: PathBuf,
        manifest_bytes_max: u64,
        counters: Arc<Counters>,
        r: Recovered,
    ) -> Self {
        VersionSet {
            rt,
            dir,
            manifest_bytes_max,
            counters,
            current: Mutex::new(Arc::new(r.version)),
            next_file_number: AtomicU64::new(r.next_file_number),
            manifest: AsyncLock::new(r.manifest),
            obsolete: Mutex::new(Obsolete { held: Vec::new(), undeleted: r.undeleted }),
        }
    }

    /// The current version.
    pub(crate) fn current(&self) -> Arc<Version> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A fresh file number for a WAL, a table or a MANIFEST.
    pub(crate) fn new_file_number(&self) -> u64 {
        self.next_file_number.fetch_add(1, Ordering::Relaxed)
    }

    /// The number the next `new_file_number` would give: what an edit records, so that the
    /// next open never reuses a number in use.
    pub(crate) fn peek_next_file_number(&self) -> u64 {
        self.next_file_number.load(Ordering::Relaxed)
    }

    /// Writes `edit` to the MANIFEST, durably, then makes the version it gives current, running
    /// `install` with it in the same step; rewrites the MANIFEST as a fresh snapshot once it has
    /// grown past its limit. An edit that does not apply to the current version is corruption
    /// of the MANIFEST's state, reported against it.
    pub(crate) async fn log_and_apply(
        &self,
        edit: VersionEdit,
        install: impl FnOnce(&Arc<Version>),
    ) -> Result<()> {
        let mut manifest = self.manifest.lock().await;
        let version = self.current().apply(&edit).map_err(|why| {
            let path = self.dir.join(manifest::file_name(manifest.number()));
            Error::corruption(path, manifest.bytes(), why)
        })?;
        manifest.append(&edit, &self.counters.manifest_syncs).await?;
        {
            let version = Arc::new(version);
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            *current = Arc::clone(&version);
            install(&version);
        }
        if manifest.bytes() > self.manifest_bytes_max {
            self.rotate(&mut manifest).await?;
        }
        Ok(())
    }

    /// Starts a new MANIFEST holding the current version whole, and deletes the old one.
    async fn rotate(&self, manifest: &mut Manifest) -> Result<()> {
        let _phase = PhaseGuard::enter(self.rt.as_ref(), Phase::ManifestRotation);
        let number = self.new_file_number();
        let snapshot = manifest.snapshot_edit(&self.current(), self.peek_next_file_number());
        let old = manifest.number();
        let syncs = &self.counters.manifest_syncs;
        *manifest = Manifest::create(self.rt.as_ref(), &self.dir, number, &snapshot, syncs).await?;
        let path = self.dir.join(manifest::file_name(old));
        if let Err(e) = self.rt.fs().remove(&path).await {
            tracing::warn!(manifest = %path.display(), error = %e, "could not delete an old MANIFEST");
        }
        Ok(())
    }

    /// Hands over tables a MANIFEST edit has dropped, to be deleted once no reader holds them.
    pub(crate) fn retire(&self, tables: impl IntoIterator<Item = Arc<FileMeta>>) {
        self.lock_obsolete().held.extend(tables);
    }

    /// Deletes the retired tables no version names any more, and those whose deletion failed
    /// before. A failure costs only space: the table is tried again by the next call (and by
    /// the next open, which deletes what no version names).
    pub(crate) async fn remove_unreferenced(&self, table_cache: &TableCache) {
        let free = {
            let mut obsolete = self.lock_obsolete();
            let (free, held): (Vec<_>, Vec<_>) = std::mem::take(&mut obsolete.held)
                .into_iter()
                .partition(|f| Arc::strong_count(f) == 1);
            obsolete.held = held;
            let mut free: Vec<u64> = free.iter().map(|f| f.number).collect();
            free.append(&mut obsolete.undeleted);
            free
        };
        for number in free {
            table_cache.evict(number);
            let path = self.dir.join(crate::sstable::file_name(number));
            match self.rt.fs().remove(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(table = %path.display(), error = %e, "could not delete a table");
                    self.lock_obsolete().undeleted.push(number);
                }
            }
        }
    }

    /// The numbers of the tables waiting to be deleted: retired ones still held by a reader,
    /// and those whose deletion failed.
    #[cfg(feature = "invariants")]
    pub(crate) fn obsolete_tables(&self) -> (Vec<u64>, Vec<u64>) {
        let obsolete = self.lock_obsolete();
        (obsolete.held.iter().map(|f| f.number).collect(), obsolete.undeleted.clone())
    }

    fn lock_obsolete(&self) -> std::sync::MutexGuard<'_, Obsolete> {
        self.obsolete.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
