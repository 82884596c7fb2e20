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
use crate::error::{Error, Result};
use crate::job::JobEnv;
use crate::metrics::Running;
use crate::runtime::{buggify, JoinHandle};
use crate::signal::{Doorbell, Signal};
use crate::unwind::catch_panic;
use crate::version::LEVELS;
use std::sync::{Arc, Mutex, PoisonError, Weak};
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

/// What the background worker needs of the database it serves; it reaches the database only
/// through this.
pub(crate) trait Host: Send + Sync + 'static {
    /// What jobs work with.
    fn job_env(&self) -> JobEnv<'_>;
    fn check_not_poisoned(&self) -> Result<()>;
    /// Latches the poisoned state (the first cause wins) and returns the error to report.
    fn poison(&self, cause: &str) -> Error;
    /// Whether to start another job (see `DbInner::background_work_wanted`).
    fn background_work_wanted(&self) -> bool;
    /// `compact_range` calls waiting for the worker, oldest first.
    fn range_requests(&self) -> &Mutex<Vec<RangeRequest>>;
    /// Rung when there may be work; stopping it ends the worker.
    fn work_bell(&self) -> &Arc<Doorbell>;
}

/// What the worker keeps between jobs.
struct Worker {
    pointers: Pointers,
    #[cfg(feature = "invariants")]
    checker: crate::invariants::Checker,
}

/// Starts the background worker of `db`.
pub(crate) fn start(db: &Arc<dyn Host>) -> JoinHandle {
    let worker = Worker {
        pointers: Pointers::default(),
        #[cfg(feature = "invariants")]
        checker: crate::invariants::Checker::default(),
    };
    let task = run(Arc::downgrade(db), Arc::clone(db.work_bell()), worker);
    let handle = db.job_env().rt.spawn("jadedb-background", Box::pin(task));
    // The recovered tree may already need a compaction.
    db.work_bell().ring();
    handle
}

async fn run(db: Weak<dyn Host>, bell: Arc<Doorbell>, mut worker: Worker) {
    while bell.wait().await {
        let Some(db) = db.upgrade() else { break };
        while db.check_not_poisoned().is_ok() && db.background_work_wanted() {
            match catch_panic(db.job_env().options, worker.job(db.as_ref())).await {
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
                    panicked(db.as_ref(), &panic);
                    return;
                }
            }
        }
        let env = db.job_env();
        let removal = env.versions.remove_unreferenced(env.table_cache);
        if let Err(panic) = catch_panic(env.options, removal).await {
            panicked(db.as_ref(), &panic);
            return;
        }
        fail_requests(db.as_ref());
    }
}

/// A job panicked. What it was changing may be half done, so the worker stops for good: the
/// database is poisoned (which wakes writers stalled for room and `flush` callers) and waiting
/// `compact_range` calls fail. The next open recovers from what the MANIFEST made durable.
fn panicked(db: &dyn Host, message: &str) {
    tracing::error!(panic = message, "a background job panicked");
    db.poison(&format!("a background job panicked: {message}"));
    fail_requests(db);
}

impl Worker {
    /// Does the most urgent job, if any, with the deletions around it; returns whether it did
    /// one.
    async fn job(&mut self, db: &dyn Host) -> Result<bool> {
        let env = db.job_env();
        // Before each job as well as after: a job that ends a caller's wait (a flush, a
        // `compact_range`) then comes after every deletion its readers allowed.
        env.versions.remove_unreferenced(env.table_cache).await;
        if buggify(env.rt, "background.panic") {
            // A bug in a job: the database must end up poisoned, never with a dead worker that
            // writers and `close` wait for. The simulator knows injected panics by this prefix.
            panic!("{} in a background job", crate::runtime::INJECTED_PANIC);
        }
        let did = self.step(db).await?;
        if did {
            env.versions.remove_unreferenced(env.table_cache).await;
        }
        Ok(did)
    }

    /// Does the most urgent job, if any; returns whether it did one.
    async fn step(&mut self, db: &dyn Host) -> Result<bool> {
        let env = db.job_env();
        if buggify(env.rt, "background.delay") {
            // A slow disk or a busy machine: every job may start late.
            env.rt.sleep(Duration::from_millis(1 + env.rt.random_u64() % 20)).await;
        }
        if crate::flush::flush_oldest(&env).await? {
            return Ok(true);
        }
        if self.range_step(db).await? {
            return Ok(true);
        }
        let version = env.versions.current();
        let o = env.options;
        // Level 0 is compacted at the slowdown threshold at the latest, or writes would stall
        // for a compaction that never comes.
        let l0_files = o.l0_compaction_files.min(o.l0_slowdown_files);
        let Some(c) = compaction::pick(&version, l0_files, o.level1_bytes_max, &mut self.pointers)
        else {
            return Ok(false);
        };
        drop(version);
        compact(&env, c).await?;
        Ok(true)
    }

    /// Does the next step of the oldest `compact_range` request: one pass per level, from
    /// level 0 down to the level above the deepest one holding data (level 1 at least), each
    /// compacting that level's tables in the range into the next. One pass per level bounds
    /// the request even while writes keep adding tables.
    async fn range_step(&mut self, db: &dyn Host) -> Result<bool> {
        let env = db.job_env();
        let (start, end, mut level) = {
            let requests = db.range_requests().lock().unwrap_or_else(PoisonError::into_inner);
            let Some(r) = requests.first() else { return Ok(false) };
            (r.start.clone(), r.end.clone(), r.level)
        };
        let version = env.versions.current();
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
            let mut requests = db.range_requests().lock().unwrap_or_else(PoisonError::into_inner);
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
            (Some(c), _) => compact(&env, c).await?,
            (None, Some(request)) => {
                let _ = request.done.fill(Ok(()));
            }
            (None, None) => {}
        }
        Ok(true)
    }
}

/// Runs a compaction, counted as running for as long as it does.
async fn compact(env: &JobEnv<'_>, c: compaction::Compaction) -> Result<()> {
    let _running = Running::start(&env.counters.compactions_running);
    compaction::run(env, c).await
}

/// Once poisoned, fails every waiting `compact_range`.
fn fail_requests(db: &dyn Host) {
    let Err(err) = db.check_not_poisoned() else { return };
    let requests =
        std::mem::take(&mut *db.range_requests().lock().unwrap_or_else(PoisonError::into_inner));
    for r in requests {
        let copy = match &err {
            Error::Poisoned(cause) => Error::Poisoned(Arc::clone(cause)),
            _ => Error::Closed,
        };
        let _ = r.done.fill(Err(copy));
    }
}
