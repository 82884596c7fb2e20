//! The background worker: flushes memtables and compacts tables off the write path.
//!
//! One task does all background work, in priority order: flushes first (they free memtables,
//! which writers may be stalled on), then `compact_range` requests, then the compaction the
//! tree needs most. Version changes go through the VersionSet (`crate::version_set`), which
//! orders them. Writers, rotation and publication ring its doorbell. A failure poisons the database (fail-stop, like a failed WAL fsync): the state on
//! disk is then whatever the last durable MANIFEST edit says, which the next open recovers.
//!
//! Tables a compaction made obsolete are deleted once no version a reader holds names them
//! (the VersionSet checks before and after every job); those still held when the database
//! closes are deleted at the next open.
//!
//! A job that panics poisons the database too, and ends the worker (`crate::unwind`): the
//! state it left may be half changed. Once `close` has begun the worker starts no new job (the
//! one in progress finishes), unless a writer is stalled for room.
//!
//! The task holds only a `Weak` reference to the database, so dropping every handle ends it;
//! `close` stops and joins it, after the WAL is sealed.

use crate::compaction::{self, Pointers};
use crate::db::DbInner;
use crate::error::{Error, Result};
use crate::metrics::Running;
use crate::runtime::{buggify, JoinHandle};
use crate::signal::{Doorbell, Signal};
use crate::unwind::catch_panic;
use crate::version::LEVELS;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

/// A `compact_range` call: the range, and where to tell its caller the outcome.
#[derive(Debug)]
pub(crate) struct RangeRequest {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    /// The level whose tables in the range the next step compacts.
    pub level: usize,
    pub done: Arc<Signal<Result<()>>>,
}

/// What the worker keeps between jobs.
struct Worker {
    pointers: Pointers,
    #[cfg(feature = "invariants")]
    checker: crate::invariants::Checker,
}

/// Starts the background worker of `db`.
pub(crate) fn start(db: &Arc<DbInner>) -> JoinHandle {
    let worker = Worker {
        pointers: Pointers::default(),
        #[cfg(feature = "invariants")]
        checker: crate::invariants::Checker::default(),
    };
    let task = run(Arc::downgrade(db), Arc::clone(&db.work_bell), worker);
    let handle = db.rt.spawn("jadedb-background", Box::pin(task));
    // The recovered tree may already need a compaction.
    db.work_bell.ring();
    handle
}

async fn run(db: Weak<DbInner>, bell: Arc<Doorbell>, mut worker: Worker) {
    while bell.wait().await {
        let Some(db) = db.upgrade() else { break };
        while db.check_not_poisoned().is_ok() && db.background_work_wanted() {
            match catch_panic(&db.options, worker.job(&db)).await {
                Ok(Ok(true)) => {
                    #[cfg(feature = "invariants")]
                    crate::invariants::check_tree(&db.job_env(), &mut worker.checker).await;
                }
                Ok(Ok(false)) => break,
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "background work failed");
                    db.poison(&format!("background work failed: {err}"));
                }
                Err(panic) => {
                    panicked(&db, &panic);
                    return;
                }
            }
        }
        let removal = db.versions.remove_unreferenced(&db.table_cache);
        if let Err(panic) = catch_panic(&db.options, removal).await {
            panicked(&db, &panic);
            return;
        }
        fail_requests(&db);
    }
}

/// A job panicked. What it was changing may be half done, so the worker stops for good: the
/// database is poisoned (which wakes writers stalled for room and `flush` callers) and waiting
/// `compact_range` calls fail. The next open recovers from what the MANIFEST made durable.
fn panicked(db: &DbInner, message: &str) {
    tracing::error!(panic = message, "a background job panicked");
    db.poison(&format!("a background job panicked: {message}"));
    fail_requests(db);
}

impl Worker {
    /// Does the most urgent job, if any, with the deletions around it; returns whether it did
    /// one.
    async fn job(&mut self, db: &Arc<DbInner>) -> Result<bool> {
        // Before each job as well as after: a job that ends a caller's wait (a flush, a
        // `compact_range`) then comes after every deletion its readers allowed.
        db.versions.remove_unreferenced(&db.table_cache).await;
        if buggify(db.rt.as_ref(), "background.panic") {
            // A bug in a job: the database must end up poisoned, never with a dead worker that
            // writers and `close` wait for. The simulator knows injected panics by this prefix.
            panic!("{} in a background job", crate::runtime::INJECTED_PANIC);
        }
        let did = self.step(db).await?;
        if did {
            db.versions.remove_unreferenced(&db.table_cache).await;
        }
        Ok(did)
    }

    /// Does the most urgent job, if any; returns whether it did one.
    async fn step(&mut self, db: &Arc<DbInner>) -> Result<bool> {
        if buggify(db.rt.as_ref(), "background.delay") {
            // A slow disk or a busy machine: every job may start late.
            db.rt.sleep(Duration::from_millis(1 + db.rt.random_u64() % 20)).await;
        }
        if crate::flush::flush_oldest(&db.job_env()).await? {
            return Ok(true);
        }
        if self.range_step(db).await? {
            return Ok(true);
        }
        let version = db.versions.current();
        let o = &db.options;
        // Level 0 is compacted at the slowdown threshold at the latest, or writes would stall
        // for a compaction that never comes.
        let l0_files = o.l0_compaction_files.min(o.l0_slowdown_files);
        let Some(c) = compaction::pick(&version, l0_files, o.level1_bytes_max, &mut self.pointers)
        else {
            return Ok(false);
        };
        drop(version);
        self.compact(db, c).await?;
        Ok(true)
    }

    async fn compact(&mut self, db: &Arc<DbInner>, c: compaction::Compaction) -> Result<()> {
        let _running = Running::start(&db.counters.compactions_running);
        compaction::run(&db.job_env(), c).await
    }

    /// Does the next step of the oldest `compact_range` request: one pass per level, from
    /// level 0 down to the level above the deepest one holding data (level 1 at least), each
    /// compacting that level's tables in the range into the next. One pass per level bounds
    /// the request even while writes keep adding tables.
    async fn range_step(&mut self, db: &Arc<DbInner>) -> Result<bool> {
        let (start, end, mut level) = {
            let requests = db.range_requests.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(r) = requests.first() else { return Ok(false) };
            (r.start.clone(), r.end.clone(), r.level)
        };
        let version = db.versions.current();
        // Data only in level 0 still moves to level 1, where it no longer overlaps itself.
        let deepest =
            (0..LEVELS).rev().find(|&l| !version.levels[l].is_empty()).unwrap_or(0).max(1);
        let mut next = None;
        while next.is_none() && level < deepest {
            next = compaction::pick_range(&version, level, &start, &end);
            level += 1;
        }
        drop(version);
        let finished = {
            let mut requests = db.range_requests.lock().unwrap_or_else(PoisonError::into_inner);
            if next.is_some() {
                if let Some(r) = requests.first_mut() {
                    r.level = level;
                }
                None
            } else {
                Some(requests.remove(0))
            }
        };
        match (next, finished) {
            (Some(c), _) => self.compact(db, c).await?,
            (None, Some(request)) => {
                let _ = request.done.fill(Ok(()));
            }
            (None, None) => {}
        }
        Ok(true)
    }
}

/// Once poisoned, fails every waiting `compact_range`.
fn fail_requests(db: &DbInner) {
    let Err(err) = db.check_not_poisoned() else { return };
    let requests =
        std::mem::take(&mut *db.range_requests.lock().unwrap_or_else(PoisonError::into_inner));
    for r in requests {
        let copy = match &err {
            Error::Poisoned(cause) => Error::Poisoned(Arc::clone(cause)),
            _ => Error::Closed,
        };
        let _ = r.done.fill(Err(copy));
    }
}
