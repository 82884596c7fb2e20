//! Appends records to one WAL file and makes them durable, with writes and syncs overlapping.
//!
//! The commit pipeline's write stage appends through [`WalWriter`] (one owner at a time), while
//! the commit pipeline's sync task, and rotation and close, make bytes durable through
//! [`WalFile::sync_to`]. One fsync at a time runs per log; it covers everything written when it
//! started, so groups written while it runs share the next one.
//!
//! The writer may *buffer*: records of groups that ask for no fsync collect in memory and
//! reach the file with one write once `Options::wal_buffer_bytes` of them are waiting, or as
//! soon as anything needs them on disk (a synced write, a background sync, rotation, close).
//! One write per buffer instead of one per group takes the system call off most unsynced
//! writes (Pebble's log writer and fjall's journal buffer the same way). A process crash may
//! lose what is buffered: writes acknowledged without sync, which no promise covers until a
//! later fsync (see the README), and always a suffix of them, so recovery still finds a prefix.
//!
//! The writer may *preallocate*: write zeros ahead of the append offset, so that the fsyncs
//! that follow find the file's size and blocks already durable and need not journal a size
//! change (on ext4 this makes each fsync markedly cheaper). A log is cut back to its written
//! length, durably, before it is retired or sealed, because recovery reads any damage in a log
//! that is not the newest as corruption; only the newest log may end in zeros.
//!
//! Invariants: `synced_upto <= written`, and every byte below `synced_upto` was covered by a
//! successful `sync_data`, after the log's name was made durable (for a log `wal::create`
//! made, the first fsync syncs its directory first). After one failed sync the log is failed
//! for good: the kernel may have dropped the dirty pages and a retried fsync could report
//! success for data it lost. (Three planted bugs, `SyncBugs`, break these on purpose, to prove
//! the simulator notices.)

use crate::error::{Error, Result};
use crate::metrics::{SyncMeter, Timer};
use crate::options::{Options, PlantedBug};
use crate::runtime::{File, RuntimeRef};
use crate::signal::Signal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// One WAL file, shared by the write stage and the sync stage.
#[derive(Debug)]
pub(crate) struct WalFile {
    file: Box<dyn File>,
    path: PathBuf,
    number: u64,
    written: AtomicU64,
    sync: Mutex<SyncState>,
    bugs: SyncBugs,
}

/// The directory of a log whose name is not yet durable, and the runtime to sync it with.
#[derive(Clone)]
struct UnsyncedDir {
    rt: RuntimeRef,
    dir: PathBuf,
}

impl std::fmt::Debug for UnsyncedDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsyncedDir").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// The planted bugs a log's fsyncs (and its write buffer) obey. Without the `planted-bugs`
/// feature it is empty and every check of it is a constant `false`, so the fsync path pays
/// nothing for it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SyncBugs {
    #[cfg(feature = "planted-bugs")]
    retry_failed_fsync: bool,
    #[cfg(feature = "planted-bugs")]
    durable_mark_before_sync: bool,
    #[cfg(feature = "planted-bugs")]
    new_wal_name_not_synced: bool,
    #[cfg(feature = "planted-bugs")]
    drop_buffer_when_retired: bool,
}

impl SyncBugs {
    /// The bugs `options` plants in a WAL's fsyncs.
    pub(crate) fn of(options: &Options) -> Self {
        let _ = options;
        SyncBugs {
            #[cfg(feature = "planted-bugs")]
            retry_failed_fsync: options.has_bug(PlantedBug::RetryFailedFsync),
            #[cfg(feature = "planted-bugs")]
            durable_mark_before_sync: options.has_bug(PlantedBug::DurableMarkBeforeSync),
            #[cfg(feature = "planted-bugs")]
            new_wal_name_not_synced: options.has_bug(PlantedBug::NewWalNameNotSynced),
            #[cfg(feature = "planted-bugs")]
            drop_buffer_when_retired: options.has_bug(PlantedBug::WalBufferDroppedAtRotation),
        }
    }

    fn has(self, bug: PlantedBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            match bug {
                PlantedBug::RetryFailedFsync => self.retry_failed_fsync,
                PlantedBug::DurableMarkBeforeSync => self.durable_mark_before_sync,
                PlantedBug::NewWalNameNotSynced => self.new_wal_name_not_synced,
                PlantedBug::WalBufferDroppedAtRotation => self.drop_buffer_when_retired,
                _ => false,
            }
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = (self, bug);
            false
        }
    }
}

#[derive(Debug, Default)]
struct SyncState {
    /// Set while the log's name is not durable: the next fsync syncs the directory first.
    unsynced_dir: Option<UnsyncedDir>,
    synced_upto: u64,
    /// How many fsyncs were started; each fsync's ordinal is the value after its start.
    started: u64,
    /// The ordinal of the newest fsync that returned `Ok` (fsyncs run one at a time, in order).
    completed: u64,
    in_progress: bool,
    failed: bool,
    /// Callers waiting for the running fsync to end; each re-checks what it needs.
    waiters: Vec<Arc<Signal<()>>>,
}

impl WalFile {
    /// Bytes known durable; written into each record as its attestation.
    pub(crate) fn synced_upto(&self) -> u64 {
        self.lock().synced_upto
    }

    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once the first `target` bytes are durable, running an fsync if none in progress
    /// covers them. `syncs` counts and times the fsyncs actually issued.
    pub(crate) async fn sync_to(&self, target: u64, syncs: SyncMeter<'_>) -> Result<()> {
        self.sync_until(syncs, |st| st.synced_upto >= target).await
    }

    /// Returns once an fsync that started after this call has returned `Ok`: what `sync_to`
    /// cannot promise for a change that is not an append, such as a truncation.
    async fn sync_fresh(&self, syncs: SyncMeter<'_>) -> Result<()> {
        let needed = self.lock().started + 1;
        self.sync_until(syncs, |st| st.completed >= needed).await
    }

    /// Runs fsyncs, one at a time across all callers, until `done` holds.
    async fn sync_until(
        &self,
        syncs: SyncMeter<'_>,
        done: impl Fn(&SyncState) -> bool,
    ) -> Result<()> {
        loop {
            let step = {
                let mut st = self.lock();
                if st.failed {
                    return Err(self.failed_error());
                }
                if done(&st) {
                    return Ok(());
                }
                if st.in_progress {
                    let signal = Signal::new();
                    st.waiters.push(Arc::clone(&signal));
                    Step::Wait(signal)
                } else {
                    st.in_progress = true;
                    st.started += 1;
                    Step::Run(st.started)
                }
            };
            match step {
                Step::Wait(signal) => signal.wait().await,
                Step::Run(ordinal) => self.run_one(ordinal, syncs).await?,
            }
        }
    }

    /// Runs fsync number `ordinal`, which the caller has marked in progress.
    async fn run_one(&self, ordinal: u64, syncs: SyncMeter<'_>) -> Result<()> {
        let mut guard = SyncGuard { wal: self, done: false };
        // No byte of the log counts as durable before its name is.
        let unsynced_dir = self.lock().unsynced_dir.clone();
        // Planted: the name is left to whatever syncs the directory next, if anything.
        let unsynced_dir = unsynced_dir.filter(|_| !self.bugs.has(PlantedBug::NewWalNameNotSynced));
        if let Some(UnsyncedDir { rt, dir }) = unsynced_dir {
            // A failure fails the log as a failed fsync does: the guard, left undone, does it.
            rt.fs().sync_dir(&dir).await.map_err(|e| Error::io("syncing directory", &dir, e))?;
            self.lock().unsynced_dir = None;
        }
        let upto = self.written.load(Ordering::Acquire);
        syncs.count.fetch_add(1, Ordering::Relaxed);
        let timer = Timer::start(syncs.rt, syncs.latency);
        if self.bugs.has(PlantedBug::DurableMarkBeforeSync) {
            // Planted: the bytes count as durable while the fsync runs, whatever it returns.
            let mut st = self.lock();
            st.synced_upto = st.synced_upto.max(upto);
        }
        let result = self.file.sync_data().await;
        timer.stop();
        guard.done = true;
        let mut st = self.lock();
        st.in_progress = false;
        let outcome = match result {
            Ok(()) => {
                st.synced_upto = st.synced_upto.max(upto);
                st.completed = ordinal;
                Ok(())
            }
            Err(e) if self.bugs.has(PlantedBug::RetryFailedFsync) => {
                // Planted: the failure is forgotten. `sync_until` finds the bytes not yet
                // durable and runs another fsync, whose success says nothing of the pages
                // this one dropped.
                tracing::warn!(log = %self.path.display(), error = %e, "retrying a failed fsync");
                Ok(())
            }
            Err(e) => {
                st.failed = true;
                Err(Error::io("syncing", &self.path, e))
            }
        };
        wake_all(&mut st);
        outcome
    }

    fn failed_error(&self) -> Error {
        Error::Poisoned(Arc::from(format!("an earlier fsync of {} failed", self.path.display())))
    }
}

/// What a caller of `sync_until` does next.
enum Step {
    Wait(Arc<Signal<()>>),
    Run(u64),
}

/// Wakes every waiter: each re-checks, and one of those still uncovered runs the next fsync.
fn wake_all(st: &mut SyncState) {
    for signal in st.waiters.drain(..) {
        let _ = signal.fill(());
    }
}

/// If the task running an fsync is dropped mid-call, nobody knows whether it completed: the
/// log is failed, and the waiters are woken to see it.
struct SyncGuard<'a> {
    wal: &'a WalFile,
    done: bool,
}

impl Drop for SyncGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut st = self.wal.lock();
            st.in_progress = false;
            st.failed = true;
            wake_all(&mut st);
        }
    }
}

/// A log whose writer has written its last record: what is left is to make it durable, and
/// exactly `len` bytes long.
#[derive(Debug)]
pub(crate) struct Retired {
    shared: Arc<WalFile>,
    len: u64,
    /// Whether zeros preallocated past `len` are to be cut off.
    cut: bool,
}

impl Retired {
    /// Syncs the log whole and, if zeros were preallocated past its end, cuts them off
    /// durably.
    pub(crate) async fn finish(&self, syncs: SyncMeter<'_>) -> Result<()> {
        let wal = &self.shared;
        if !self.cut {
            return wal.sync_to(self.len, syncs).await;
        }
        wal.file.truncate(self.len).await.map_err(|e| Error::io("truncating", &wal.path, e))?;
        wal.sync_fresh(syncs).await
    }
}

/// Zeros written per call when preallocating.
const ZEROS_BYTES: usize = 64 << 10;
static ZEROS: [u8; ZEROS_BYTES] = [0; ZEROS_BYTES];

/// The append side of the open WAL, owned by the commit leader.
#[derive(Debug)]
pub(crate) struct WalWriter {
    shared: Arc<WalFile>,
    /// Bytes appended so far, buffered ones included: where the next record goes.
    offset: u64,
    /// Records appended but not yet written to the file: the last `buffered.len()` bytes
    /// before `offset`.
    buffered: Vec<u8>,
    /// How many bytes may wait in `buffered`; 0 writes every append at once.
    buffer_bytes: usize,
    /// The file's size: `offset` plus the zeros preallocated past it.
    allocated: u64,
    /// How far past the append offset to preallocate when the zeros run out; 0 for never.
    preallocate_bytes: u64,
    /// Whether a synced write has come to this log: only then are zeros written ahead (see
    /// `expect_syncs`).
    syncs_expected: bool,
}

impl WalWriter {
    /// Wraps `file`, whose first `offset` bytes are already durable and which is `offset` bytes
    /// long. Preallocates `preallocate_bytes` at a time (0 for never).
    pub(crate) fn new(
        file: Box<dyn File>,
        path: PathBuf,
        number: u64,
        offset: u64,
        preallocate_bytes: u64,
    ) -> Self {
        let sync = SyncState { synced_upto: offset, ..SyncState::default() };
        let shared = WalFile {
            file,
            path,
            number,
            written: AtomicU64::new(offset),
            sync: sync.into(),
            bugs: SyncBugs::default(),
        };
        let syncs_expected = false;
        WalWriter {
            shared: Arc::new(shared),
            offset,
            buffered: Vec::new(),
            buffer_bytes: 0,
            allocated: offset,
            preallocate_bytes,
            syncs_expected,
        }
    }

    /// Tells the writer that synced writes come to this log, so that it preallocates from now
    /// on. Zeros written ahead make a writer's fsync cheaper (no size change to journal), but
    /// every byte of the log is then written twice; a log that only ever takes unsynced writes
    /// is synced in the background (`wal_bytes_per_sync`) and at rotation, where a size change
    /// costs little, so it is not preallocated.
    pub(crate) fn expect_syncs(&mut self) {
        self.syncs_expected = true;
    }

    /// Lets up to `bytes` of records that need not be on disk yet wait in memory, to be
    /// written with one call; for a writer just made.
    pub(crate) fn with_buffer(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        // It holds at most `bytes` and then the records that pass it.
        self.buffered = Vec::with_capacity(2 * bytes);
        self
    }

    /// Plants `bugs` in this log's fsyncs; for a writer just made.
    pub(crate) fn with_bugs(mut self, bugs: SyncBugs) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("a new writer's file is not shared");
        shared.bugs = bugs;
        self
    }

    /// Marks the log's name as not yet durable in `dir`: its first fsync syncs `dir` first.
    /// For a writer just made.
    pub(crate) fn with_directory_unsynced(self, rt: RuntimeRef, dir: &Path) -> Self {
        self.shared.lock().unsynced_dir = Some(UnsyncedDir { rt, dir: dir.to_path_buf() });
        self
    }

    pub(crate) fn number(&self) -> u64 {
        self.shared.number
    }

    /// The shared file, for the sync stage.
    pub(crate) fn file(&self) -> &Arc<WalFile> {
        &self.shared
    }

    /// Bytes appended so far, buffered ones included.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends encoded records. They wait in the buffer until it passes its size or `to_file`
    /// asks for them now, and then go to the file with everything buffered before them, in one
    /// call; records larger than the buffer go after what waits, as they are. Only written
    /// bytes can be synced, so a caller that will ask for an fsync covering these records
    /// passes `to_file`.
    pub(crate) async fn append(&mut self, records: &[u8], to_file: bool) -> Result<()> {
        if records.len() > self.buffer_bytes {
            self.write_buffered().await?;
            return self.write_through(records).await;
        }
        self.buffered.extend_from_slice(records);
        self.offset += records.len() as u64;
        if to_file || self.buffered.len() > self.buffer_bytes {
            self.write_buffered().await?;
        }
        Ok(())
    }

    /// Writes whatever is buffered to the file.
    pub(crate) async fn write_buffered(&mut self) -> Result<()> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        let mut buffered = std::mem::take(&mut self.buffered);
        self.offset -= buffered.len() as u64;
        let written = self.write_through(&buffered).await;
        // The allocation is kept for the next records, whatever the write's outcome (a failed
        // write poisons the database: nothing appends after it).
        buffered.clear();
        self.buffered = buffered;
        written
    }

    /// Writes `records` at the end of the file, preallocating first if they would not fit.
    async fn write_through(&mut self, records: &[u8]) -> Result<()> {
        let end = self.offset + records.len() as u64;
        if end > self.allocated && self.preallocate_bytes > 0 && self.syncs_expected {
            self.preallocate(end + self.preallocate_bytes).await?;
        }
        self.write_at_end(records).await
    }

    async fn write_at_end(&mut self, records: &[u8]) -> Result<()> {
        let wal = &self.shared;
        wal.file
            .write_at(self.offset, records)
            .await
            .map_err(|e| Error::io("appending to", &wal.path, e))?;
        self.offset += records.len() as u64;
        self.allocated = self.allocated.max(self.offset);
        wal.written.store(self.offset, Ordering::Release);
        Ok(())
    }

    /// Extends the file with zeros to `size` bytes. The zeros become durable with the next
    /// fsync of this log, which then makes the new size durable once for many appends.
    async fn preallocate(&mut self, size: u64) -> Result<()> {
        while self.allocated < size {
            let n = (size - self.allocated).min(ZEROS_BYTES as u64);
            // `n` is at most ZEROS_BYTES, so the cast cannot truncate.
            let zeros = &ZEROS[..n as usize];
            let wal = &self.shared;
            wal.file
                .write_at(self.allocated, zeros)
                .await
                .map_err(|e| Error::io("preallocating", &wal.path, e))?;
            self.allocated += n;
        }
        Ok(())
    }

    /// Makes everything appended so far durable, and the file exactly that long: done before
    /// the log is retired for a newer one, which makes any damage in it read as corruption.
    pub(crate) async fn finish(&mut self, syncs: SyncMeter<'_>) -> Result<()> {
        self.retire().await?.finish(syncs).await
    }

    /// Writes what the buffer holds and returns the log as it is to be finished (synced and
    /// cut back to its length), which rotation leaves to the sync task: no record is appended
    /// to this writer after this.
    pub(crate) async fn retire(&mut self) -> Result<Retired> {
        if self.shared.bugs.has(PlantedBug::WalBufferDroppedAtRotation) {
            // Planted: the buffered records are forgotten, as if never appended.
            self.offset -= self.buffered.len() as u64;
            self.buffered.clear();
        }
        self.write_buffered().await?;
        let cut = self.allocated != self.offset;
        // The finish cuts the zeros off; the writer is not used past it.
        self.allocated = self.offset;
        Ok(Retired { shared: Arc::clone(&self.shared), len: self.offset, cut })
    }

    /// Syncs, then appends a seal that attests the whole log durable, so that damage anywhere
    /// in it is later reported as corruption rather than taken for a torn tail, and finishes
    /// the log. Done when the database is closed.
    pub(crate) async fn seal(&mut self, scratch: &mut Vec<u8>, syncs: SyncMeter<'_>) -> Result<()> {
        self.write_buffered().await?;
        self.shared.sync_to(self.offset, syncs).await?;
        scratch.clear();
        super::encode_seal_record(scratch, self.number(), self.offset, self.shared.synced_upto());
        // No preallocation: the log is cut back to its length right after.
        self.write_at_end(scratch).await?;
        self.finish(syncs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Counters;
    use crate::testing::{MemFile, MemRuntime};

    fn writer(preallocate: u64) -> (Arc<MemFile>, WalWriter) {
        let file = MemFile::new();
        let w = WalWriter::new(Box::new(Arc::clone(&file)), "000001.log".into(), 1, 0, preallocate);
        (file, w)
    }

    #[test]
    fn buffered_records_reach_the_file_in_order_when_it_fills_or_a_sync_needs_them() {
        let file = MemFile::new();
        let w = WalWriter::new(Box::new(Arc::clone(&file)), "000001.log".into(), 1, 0, 0);
        let mut w = w.with_buffer(250);
        let (counters, rt) = (Counters::default(), MemRuntime::default());
        let syncs = SyncMeter::wal(&counters, &rt);
        pollster::block_on(async {
            w.append(&[1; 100], false).await.unwrap();
            w.append(&[2; 100], false).await.unwrap();
            assert_eq!((w.offset(), file.len()), (200, 0), "both wait in the buffer");
            // A third would pass 250 bytes: all three are written with one call.
            w.append(&[3; 100], false).await.unwrap();
            assert_eq!((w.offset(), file.len()), (300, 300));
            w.append(&[4; 10], false).await.unwrap();
            assert_eq!(file.len(), 300);
            // A group that will ask for an fsync takes the buffer to the file with it.
            w.append(&[5; 10], true).await.unwrap();
            assert_eq!(file.len(), 320);
            w.append(&[6; 10], false).await.unwrap();
            w.finish(syncs).await.unwrap();
        });
        assert_eq!(file.durable_len(), 330, "finishing writes the buffer before its fsync");
        let expected: Vec<u8> = [(1, 100), (2, 100), (3, 100), (4, 10), (5, 10), (6, 10)]
            .iter()
            .flat_map(|&(b, n)| std::iter::repeat_n(b, n))
            .collect();
        assert_eq!(file.contents(), expected);
    }

    #[test]
    fn a_log_without_synced_writes_is_not_preallocated() {
        let (file, mut w) = writer(1000);
        pollster::block_on(w.append(&[7; 100], true)).unwrap();
        assert_eq!(file.len(), 100);
        w.expect_syncs();
        pollster::block_on(w.append(&[7; 100], true)).unwrap();
        assert_eq!(file.len(), 1200, "zeros ahead once synced writes come");
    }

    #[test]
    fn preallocated_log_is_cut_back_durably_when_finished() {
        let (file, mut w) = writer(1000);
        w.expect_syncs();
        let (counters, rt) = (Counters::default(), MemRuntime::default());
        let syncs = SyncMeter::wal(&counters, &rt);
        pollster::block_on(async {
            w.append(&[7; 100], true).await.unwrap();
            assert_eq!(file.len(), 1100);
            w.file().sync_to(100, syncs).await.unwrap();
            assert_eq!(file.durable_len(), 1100);
            // Covered already; finishing must still make the shorter size durable.
            w.finish(syncs).await.unwrap();
        });
        assert_eq!(file.len(), 100);
        assert_eq!(file.durable_len(), 100);
        assert_eq!(counters.wal_syncs.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn without_preallocation_finish_syncs_only_what_is_uncovered() {
        let (file, mut w) = writer(0);
        let (counters, rt) = (Counters::default(), MemRuntime::default());
        let syncs = SyncMeter::wal(&counters, &rt);
        pollster::block_on(async {
            w.append(&[7; 100], true).await.unwrap();
            w.finish(syncs).await.unwrap();
            w.finish(syncs).await.unwrap();
        });
        assert_eq!(file.durable_len(), 100);
        assert_eq!(counters.wal_syncs.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_failed_sync_is_never_retried() {
        let (file, mut w) = writer(0);
        let (counters, rt) = (Counters::default(), MemRuntime::default());
        let syncs = SyncMeter::wal(&counters, &rt);
        file.fail_next_sync();
        pollster::block_on(async {
            w.append(&[7; 10], true).await.unwrap();
            assert!(w.file().sync_to(10, syncs).await.is_err());
            assert!(matches!(w.file().sync_to(10, syncs).await, Err(Error::Poisoned(_))));
            assert!(w.finish(syncs).await.is_err());
        });
        assert_eq!(counters.wal_syncs.load(Ordering::Relaxed), 1);
        assert_eq!(file.durable_len(), 0);
    }
}

#[cfg(all(test, feature = "planted-bugs"))]
mod planted_tests {
    use super::*;
    use crate::metrics::Counters;
    use crate::testing::{MemFile, MemRuntime};

    fn writer_with(bug: PlantedBug) -> (Arc<MemFile>, WalWriter) {
        let file = MemFile::new();
        let bugs = SyncBugs::of(&Options::default().planted_bug(Some(bug)));
        let w = WalWriter::new(Box::new(Arc::clone(&file)), "000001.log".into(), 1, 0, 0);
        (file, w.with_bugs(bugs))
    }

    #[test]
    fn retry_failed_fsync_runs_another_and_reports_success() {
        let (file, mut w) = writer_with(PlantedBug::RetryFailedFsync);
        let (counters, rt) = (Counters::default(), MemRuntime::default());
        let syncs = SyncMeter::wal(&counters, &rt);
        file.fail_next_sync();
        pollster::block_on(async {
            w.append(&[7; 10], true).await.unwrap();
            w.file().sync_to(10, syncs).await.unwrap();
        });
        assert_eq!(counters.wal_syncs.load(Ordering::Relaxed), 2);
        assert_eq!(w.file().synced_upto(), 10);
    }

    #[test]
    fn durable_mark_before_sync_marks_bytes_a_failed_fsync_covered() {
        let (file, mut w) = writer_with(PlantedBug::DurableMarkBeforeSync);
        let (counters, rt) = (Counters::default(), MemRuntime::default());
        let syncs = SyncMeter::wal(&counters, &rt);
        file.fail_next_sync();
        pollster::block_on(async {
            w.append(&[7; 10], true).await.unwrap();
            assert!(w.file().sync_to(10, syncs).await.is_err());
        });
        assert_eq!(w.file().synced_upto(), 10, "marked durable before the fsync's outcome");
    }
}
