//! Appends records to one WAL file and makes them durable, with writes and syncs overlapping.
//!
//! The commit pipeline's write stage appends through [`WalWriter`] (one owner at a time), while
//! any number of groups wait in [`WalFile::sync_to`] for their bytes to become durable. One
//! fsync at a time runs per log; it covers everything written when it started, so a group that
//! arrives during a sync usually finds its bytes covered by the next one, shared with others.
//!
//! Invariants: `synced_upto <= written`, and every byte below `synced_upto` was covered by a
//! successful `sync_data`. After one failed sync the log is failed for good: the kernel may
//! have dropped the dirty pages and a retried fsync could report success for data it lost.

use crate::error::{Error, Result};
use crate::runtime::File;
use crate::signal::Signal;
use std::path::PathBuf;
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
}

#[derive(Debug, Default)]
struct SyncState {
    synced_upto: u64,
    in_progress: bool,
    failed: bool,
    /// Each waiter's target offset and its wake-up.
    waiters: Vec<(u64, Arc<Signal<()>>)>,
}

impl WalFile {
    /// Bytes known durable; written into each record as its attestation.
    pub(crate) fn synced_upto(&self) -> u64 {
        self.lock().synced_upto
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once the first `target` bytes are durable, running an fsync if none in progress
    /// covers them. `syncs` counts the fsyncs actually issued.
    pub(crate) async fn sync_to(&self, target: u64, syncs: &AtomicU64) -> Result<()> {
        loop {
            let waiter = {
                let mut st = self.lock();
                if st.failed {
                    return Err(self.failed_error());
                }
                if st.synced_upto >= target {
                    return Ok(());
                }
                if st.in_progress {
                    let signal = Signal::new();
                    st.waiters.push((target, Arc::clone(&signal)));
                    Some(signal)
                } else {
                    st.in_progress = true;
                    None
                }
            };
            match waiter {
                Some(signal) => signal.wait().await,
                None => return self.run_syncs(syncs).await,
            }
        }
    }

    /// Runs fsyncs back to back while waiters remain uncovered (at most `SYNC_ROUNDS_MAX` of
    /// them, so the runner's own caller is not held for long): handing the next fsync to a
    /// waiter would put a thread wake-up between every two fsyncs.
    async fn run_syncs(&self, syncs: &AtomicU64) -> Result<()> {
        let mut guard = SyncGuard { wal: self, done: false };
        for round in 1.. {
            let upto = self.written.load(Ordering::Acquire);
            syncs.fetch_add(1, Ordering::Relaxed);
            let result = self.file.sync_data().await;
            let mut st = self.lock();
            match result {
                Ok(()) => st.synced_upto = st.synced_upto.max(upto),
                Err(e) => {
                    st.failed = true;
                    st.in_progress = false;
                    wake_covered(&mut st, u64::MAX);
                    guard.done = true;
                    return Err(Error::io("syncing", &self.path, e));
                }
            }
            let synced = st.synced_upto;
            wake_covered(&mut st, synced);
            if st.waiters.is_empty() || round >= SYNC_ROUNDS_MAX {
                // Whoever is left takes over: each waiter re-checks and one becomes the runner.
                st.in_progress = false;
                wake_covered(&mut st, u64::MAX);
                break;
            }
        }
        guard.done = true;
        Ok(())
    }

    fn failed_error(&self) -> Error {
        Error::Poisoned(Arc::from(format!("an earlier fsync of {} failed", self.path.display())))
    }
}

/// How many fsyncs one runner issues back to back before handing over.
const SYNC_ROUNDS_MAX: u32 = 8;

/// Wakes the waiters whose target is at or below `upto`.
fn wake_covered(st: &mut SyncState, upto: u64) {
    st.waiters.retain(|(target, signal)| {
        if *target <= upto {
            let _ = signal.fill(());
            false
        } else {
            true
        }
    });
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
            wake_covered(&mut st, u64::MAX);
        }
    }
}

/// The append side of the open WAL, owned by the commit leader.
#[derive(Debug)]
pub(crate) struct WalWriter {
    shared: Arc<WalFile>,
    offset: u64,
}

impl WalWriter {
    /// Wraps `file`, whose first `offset` bytes are already durable.
    pub(crate) fn new(file: Box<dyn File>, path: PathBuf, number: u64, offset: u64) -> Self {
        let sync = SyncState { synced_upto: offset, ..SyncState::default() };
        let shared =
            WalFile { file, path, number, written: AtomicU64::new(offset), sync: sync.into() };
        WalWriter { shared: Arc::new(shared), offset }
    }

    pub(crate) fn number(&self) -> u64 {
        self.shared.number
    }

    /// The shared file, for the sync stage.
    pub(crate) fn file(&self) -> &Arc<WalFile> {
        &self.shared
    }

    /// Bytes appended so far.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends encoded records with one write.
    pub(crate) async fn append(&mut self, records: &[u8]) -> Result<()> {
        let wal = &self.shared;
        wal.file
            .write_at(self.offset, records)
            .await
            .map_err(|e| Error::io("appending to", &wal.path, e))?;
        self.offset += records.len() as u64;
        wal.written.store(self.offset, Ordering::Release);
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub(crate) async fn sync(&self, syncs: &AtomicU64) -> Result<()> {
        self.shared.sync_to(self.offset, syncs).await
    }

    /// Syncs, then appends and syncs a seal that attests the whole log durable, so that damage
    /// anywhere in it is later reported as corruption rather than taken for a torn tail. Done
    /// when the database is closed.
    pub(crate) async fn seal(&mut self, scratch: &mut Vec<u8>, syncs: &AtomicU64) -> Result<()> {
        self.sync(syncs).await?;
        scratch.clear();
        super::encode_seal_record(scratch, self.number(), self.shared.synced_upto());
        self.append(scratch).await?;
        self.sync(syncs).await
    }
}
