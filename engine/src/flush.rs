//! Flush: writing a memtable out as a level-0 table, and retiring the memtable and its WAL.
//!
//! Order is what makes a flush crash-safe: the table is written and synced, its name made
//! durable by a directory sync, then the MANIFEST durably records it (with the WALs it replaces
//! as obsolete); only then does the new version replace the memtable for readers, and only once
//! the edit's seal is durable too (see `manifest`) is the WAL deleted. A crash before the
//! MANIFEST edit leaves an unreferenced table (deleted at the next open) and the WAL, which is
//! replayed.

use crate::blob::BlobWriter;
use crate::error::{Error, Result};
use crate::job::{FlushJob, JobEnv};
use crate::manifest::VersionEdit;
use crate::memtable::Memtable;
use crate::metrics::{Counters, Running, Timer};
use crate::options::{Options, PlantedBug};
use crate::runtime::{Phase, PhaseGuard, Runtime};
use crate::sstable::{self, TableProperties, TableWriter};
use crate::version::{BlobFileMeta, FileMeta};
use std::path::Path;
use std::sync::Arc;

/// Memtable entries a flush copies out at a time.
const FLUSH_CHUNK_ENTRIES: usize = 1024;

/// What a flush wrote: a table, and the blob file its large values went to, if any.
#[derive(Debug, Default)]
pub(crate) struct Flushed {
    pub table: Option<FileMeta>,
    pub blob: Option<BlobFileMeta>,
}

impl Flushed {
    /// Adds what was written to `edit`, as level 0's newest table.
    pub(crate) fn add_to(self, edit: &mut VersionEdit, counters: &Counters) {
        if let Some(blob) = self.blob {
            Counters::add(&counters.blob_bytes_written, blob.file_bytes);
            edit.added_blobs.push(blob);
        }
        if let Some(meta) = self.table {
            Counters::add(&counters.flush_bytes, meta.file_bytes);
            Counters::add(&counters.level_bytes_written[0], meta.file_bytes);
            edit.added.push((0, meta));
        }
    }
}

/// Writes `mem` as table `number` in `dir`, synced and named durably, with its values of at
/// least `Options::min_blob_size` bytes in a blob file numbered by `blob_number` (asked for
/// only if one is written). Nothing if `mem` is empty.
pub(crate) async fn write_table(
    rt: &dyn Runtime,
    dir: &Path,
    options: &Options,
    number: u64,
    mem: &Memtable,
    blob_number: &mut (dyn FnMut() -> u64 + Send),
) -> Result<Flushed> {
    if mem.is_empty() {
        return Ok(Flushed::default());
    }
    let path = dir.join(sstable::file_name(number));
    let file = rt.fs().create(&path).await.map_err(|e| Error::io("creating", &path, e))?;
    let mut writer = TableWriter::new(file, path, options.table_options());
    let mut blobs: Option<BlobWriter> = None;
    let mut pointer = Vec::new();
    // A chunk at a time: a copy of a whole 64 MiB memtable's entries was tens of MiB more
    // memory per flush, and unmapping it stalled writers' page faults for milliseconds.
    let mut chunk = Vec::with_capacity(mem.len().min(FLUSH_CHUNK_ENTRIES));
    let mut last = None;
    loop {
        mem.entries_after(last.as_ref(), FLUSH_CHUNK_ENTRIES, &mut chunk);
        touch(&chunk);
        for (key, slot) in &chunk {
            let large = |v: &&[u8]| options.min_blob_size.is_some_and(|min| v.len() >= min);
            let Some(value) = slot.as_deref().filter(large) else {
                writer.add(&key.user_key, key.seq, slot.as_deref()).await?;
                continue;
            };
            let blob = match &mut blobs {
                Some(blob) => blob,
                None => blobs.insert(new_blob_file(rt, dir, options, blob_number()).await?),
            };
            pointer.clear();
            blob.add(&key.user_key, value).await?.encode(&mut pointer);
            writer.add_blob(&key.user_key, key.seq, &pointer).await?;
        }
        if chunk.len() < FLUSH_CHUNK_ENTRIES {
            break;
        }
        last = chunk.pop().map(|(key, _)| key);
    }
    // The blob file is synced before the table, and both before the directory sync that makes
    // their names durable: the MANIFEST names neither before then.
    let blob = match blobs {
        Some(blob) => Some(blob.finish().await?),
        None => None,
    };
    let droppable = writer.droppable();
    let props = writer.finish().await?;
    // The table's name must be durable before the MANIFEST names it.
    rt.fs().sync_dir(dir).await.map_err(|e| Error::io("syncing directory", dir, e))?;
    Ok(Flushed { table: Some(file_meta(number, &props, droppable)), blob })
}

async fn new_blob_file(
    rt: &dyn Runtime,
    dir: &Path,
    options: &Options,
    number: u64,
) -> Result<BlobWriter> {
    let path = dir.join(crate::blob::file_name(number));
    let file = rt.fs().create(&path).await.map_err(|e| Error::io("creating", &path, e))?;
    let planted = options.has_bug(PlantedBug::BlobNotSynced);
    Ok(BlobWriter::new(file, path, number).skipping_sync(planted))
}

/// Reads a byte at each end of every entry's key and value, and nothing else. The arena holds
/// entries in arrival order and a flush takes them in key order, so each entry's bytes are a
/// cache miss: met one at a time inside the table writer's work, each miss stalled it, while
/// these loads, independent of one another, are issued back to back and wait together. A
/// chunk's bytes then fit in the cache for the writer. (A prefetch instruction would need
/// `unsafe`.)
fn touch(chunk: &[(crate::memtable::InternalKey, crate::memtable::Slot)]) {
    let ends = |b: &[u8]| b.first().copied().unwrap_or(0) ^ b.last().copied().unwrap_or(0);
    let folded = chunk
        .iter()
        .fold(0u8, |acc, (key, slot)| acc ^ ends(&key.user_key) ^ slot.as_deref().map_or(0, ends));
    std::hint::black_box(folded);
}

/// What the version keeps of a table, from its properties.
pub(crate) fn file_meta(number: u64, props: &TableProperties, droppable: u64) -> FileMeta {
    FileMeta {
        number,
        file_bytes: props.file_bytes,
        smallest_key: props.smallest_key.clone(),
        smallest_seq: props.smallest_seq,
        largest_key: props.largest_key.clone(),
        largest_seq: props.largest_seq,
        min_seq: props.min_seq,
        max_seq: props.max_seq,
        droppable,
    }
}

/// Flushes `job`'s memtable, taken by `ReadState::flush_candidate`. Concurrent flushes write
/// their tables at once but install them oldest memtable first: a newer memtable's edit names
/// the next WAL as the oldest needed, which would drop an older memtable's WAL before its
/// table is in the version.
///
/// The memtable is freed by whoever lets go of it last (this job, or a reader holding it), all
/// at once: one skiplist node per entry and its arena's blocks (see `memtable::Arena`, which
/// took the writers' 20-60 ms pauses behind such frees to about 2 ms). It was once freed in
/// chunks through `SkipMap::pop_front` instead, but entries removed that way go to
/// crossbeam's epoch collector, which never freed them under load (docs/BENCHMARKS.md).
pub(crate) async fn run(env: &JobEnv<'_>, job: FlushJob) -> Result<()> {
    let _running = Running::flush(env.counters);
    let timer = Timer::start(env.rt, &env.counters.latency.flush);
    let number = env.versions.new_table();
    let mut blob_number = || env.versions.new_table();
    let flushed =
        write_table(env.rt, env.dir, env.options, number, &job.mem, &mut blob_number).await?;
    if flushed.table.is_none() {
        env.versions.table_unused(number);
    }
    if !env.options.has_bug(PlantedBug::FlushInstallOutOfOrder) {
        wait_turn(env, &job.mem).await?;
    }
    let mut edit = VersionEdit {
        log_number: Some(job.next_log),
        next_file_number: Some(env.versions.peek_next_file_number()),
        last_seq: Some(job.last_seq),
        ..VersionEdit::default()
    };
    flushed.add_to(&mut edit, env.counters);
    let wal_number = job.mem.wal_number();
    let wal = env.dir.join(crate::wal::file_name(wal_number));
    let _phase = PhaseGuard::enter(env.rt, Phase::FlushInstall);
    if env.options.has_bug(PlantedBug::DeleteWalBeforeManifest) {
        remove_wal(env.rt, &wal).await;
    }
    let install = |v: &_| env.reads.install_version(v, Some(&job.mem));
    env.versions.log_and_apply(edit, install).await?;
    // Freed here unless a reader still holds it: after the MANIFEST's lock is released, as
    // giving back a large memtable takes milliseconds that the next edit should not wait for.
    drop(job);
    Counters::add(&env.counters.flushes, 1);
    timer.stop();
    tracing::debug!(table = number, wal = wal_number, "flushed");
    // `Db::flush` callers wait for the seal, not the install.
    env.reads.changed().notify_all();
    remove_wal(env.rt, &wal).await;
    Ok(())
}

/// Waits until every memtable older than `mem` is flushed (see `run`).
async fn wait_turn(env: &JobEnv<'_>, mem: &Arc<Memtable>) -> Result<()> {
    loop {
        // Listening before checking: an install in between still wakes this wait.
        let changed = env.reads.changed().listen();
        env.reads.check_not_poisoned()?;
        if env.reads.is_oldest(mem) {
            return Ok(());
        }
        changed.await;
    }
}

/// Deletes a WAL the MANIFEST no longer needs. Failing costs only space (the next open deletes
/// it), so a failure is logged.
async fn remove_wal(rt: &dyn Runtime, wal: &Path) {
    match rt.fs().remove(wal).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(wal = %wal.display(), error = %e, "could not delete a flushed WAL")
        }
    }
}
