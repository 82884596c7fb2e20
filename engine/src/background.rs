//! The background scheduler: flushes memtables and compacts tables off the write path, in two
//! bounded pools of workers.
//!
//! `max_background_flushes` workers flush; `max_background_compactions` workers compact.
//! Priority follows from that and from picking: flushes never wait behind a compaction (they
//! free memtables, which writers may be stalled on); a compaction worker serves `compact_range`
//! requests first, then the level with the highest score (level 0's is its table count over
//! its trigger, a deeper level's its bytes over its target; level 0 first among equals, and
//! whatever the scores once writers are slowed for it). Concurrent compactions take disjoint inputs and never
//! write overlapping key ranges into one level (`compaction::Busy`, under whose lock they are
//! picked); concurrent flushes install oldest memtable first (`flush`). Their writes share one
//! rate limiter (`compaction_bytes_per_sec`, on the runtime clock). Version changes go through
//! the VersionSet (`crate::version_set`), which orders them.
//!
//! Each worker waits on its own doorbell; writers, rotation, publication and the end of every
//! job ring them all, and each worker looks for work its pool may take. A failure poisons the
//! database (fail-stop, like a failed WAL fsync): the state on disk is then whatever the last
//! durable MANIFEST edit says, which the next open recovers. A job that panics poisons the
//! database too and ends its worker (`crate::unwind`): the state it left may be half changed.
//!
//! Tables compactions made obsolete are deleted once no version a reader holds names them (the
//! VersionSet checks before and after every job); those still held when the database closes
//! are deleted at the next open.
//!
//! Once `close` has begun no worker starts a job (those running finish; queued work stays:
//! memtables in their sealed WALs, which the next open replays, and `compact_range` requests
//! fail with `Closed`), unless a writer is stalled for room. Workers hold only a `Weak`
//! reference to the database, so dropping every handle ends them; `close` stops and joins them
//! all, after the WAL is sealed.

use crate::compaction::{self, Busy, Compaction};
use crate::error::{Error, Result};
use crate::job::{FlushJob, JobEnv};
use crate::metrics::Running;
use crate::runtime::{buggify, JoinHandle};
use crate::signal::{Doorbell, Doorbells, Signal};
use crate::unwind::catch_panic;
use crate::version::LEVELS;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

/// A `compact_range` call: the range, and where to tell its caller the outcome.
#[derive(Debug)]
pub(crate) struct RangeRequest {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    /// The level whose tables in the range the next step compacts.
    pub level: usize,
    /// The last pass (rewriting the deepest level in place), once it has begun.
    pub bottom: Option<BottomPass>,
    /// Whether a step of this request is running: one at a time, so that the request ends
    /// only once every step it took is installed.
    pub stepping: bool,
    pub done: Done,
}

/// Where the last pass of a `compact_range` request stands.
#[derive(Clone, Debug)]
pub(crate) struct BottomPass {
    /// The level it rewrites.
    level: usize,
    /// The next file number when it began: it takes only tables numbered below, so it ends
    /// however many tables writes add to the level meanwhile.
    files_below: u64,
    /// The largest key of the last run it rewrote, which it goes on after: a run kept for a
    /// snapshot may qualify again.
    after: Option<Bytes>,
}

impl RangeRequest {
    pub(crate) fn new(start: &[u8], end: &[u8], done: Done) -> Self {
        let (start, end) = (start.to_vec(), end.to_vec());
        RangeRequest { start, end, level: 0, bottom: None, stepping: false, done }
    }
}

/// What the background workers need of the database they serve; they reach the database only
/// through this.
pub(crate) trait Host: Send + Sync + 'static {
    /// What jobs work with.
    fn job_env(&self) -> JobEnv<'_>;
    fn check_not_poisoned(&self) -> Result<()>;
    /// Latches the poisoned state (the first cause wins) and returns the error to report.
    fn poison(&self, cause: &str) -> Error;
    /// Whether to start another job (see `DbInner::background_work_wanted`).
    fn background_work_wanted(&self) -> bool;
    /// `compact_range` calls waiting for the workers, oldest first.
    fn range_requests(&self) -> &Mutex<Vec<RangeRequest>>;
    /// Rung when there may be work; stopping them ends the workers.
    fn work_bells(&self) -> &Doorbells;
    /// A worker's cycle of jobs has ended (it is no longer active), however it ended.
    fn job_ended(&self);
}

/// Which pool a worker belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    Flush,
    Compaction,
}

/// What the workers share.
#[derive(Debug)]
struct Shared {
    busy: Mutex<Busy>,
    /// One structure checker for all workers, each check run alone.
    #[cfg(feature = "invariants")]
    checker: crate::signal::AsyncLock<crate::invariants::Checker>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            busy: Mutex::default(),
            #[cfg(feature = "invariants")]
            checker: crate::signal::AsyncLock::new(crate::invariants::Checker::default()),
        }
    }

    fn busy(&self) -> MutexGuard<'_, Busy> {
        self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the workers of `db`'s two pools (each looks for work once at the start: the
/// recovered tree may already need a compaction).
pub(crate) fn start(db: &Arc<dyn Host>) -> Vec<JoinHandle> {
    let env = db.job_env();
    let shared = Arc::new(Shared::new());
    let pools = [
        (Pool::Flush, env.options.max_background_flushes),
        (Pool::Compaction, env.options.max_background_compactions),
    ];
    let mut handles = Vec::new();
    for (pool, workers) in pools {
        for i in 0..workers {
            let task = run(Arc::downgrade(db), db.work_bells().add(), pool, Arc::clone(&shared));
            let name = match pool {
                Pool::Flush => format!("jadedb-flush-{i}"),
                Pool::Compaction => format!("jadedb-compaction-{i}"),
            };
            handles.push(env.rt.spawn(&name, Box::pin(task)));
        }
    }
    handles
}

async fn run(db: Weak<dyn Host>, bell: Arc<Doorbell>, pool: Pool, shared: Arc<Shared>) {
    while bell.wait().await {
        let Some(db) = db.upgrade() else { break };
        let db = db.as_ref();
        // From here to the end of the cycle (its last deletion pass, after its last structure
        // check) this worker is active: `wait_for_compactions` waits for every worker to be
        // idle, so that what any job freed is deleted when it returns.
        let active = Active::start(db);
        while db.check_not_poisoned().is_ok() && db.background_work_wanted() {
            // Jobs and checks are boxed: inline, their state machines made this loop's future
            // 14 KiB, copied whole at every spawn and each job's 3 KiB copied twice on the way
            // into `catch_panic` (a twentieth of the simulator's instructions).
            let job = Box::pin(job(db, pool, &shared));
            match catch_panic(db.job_env().options, job).await {
                Ok(Ok(true)) => {
                    // What this job changed may let other workers start one.
                    db.work_bells().ring();
                    #[cfg(feature = "invariants")]
                    if db.check_not_poisoned().is_ok() {
                        let mut checker = shared.checker.lock().await;
                        Box::pin(crate::invariants::check_tree(&db.job_env(), &mut checker)).await;
                    }
                }
                Ok(Ok(false)) => break,
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "background work failed");
                    db.poison(&format!("background work failed: {err}"));
                }
                Err(panic) => {
                    panicked(db, &panic);
                    return;
                }
            }
        }
        let env = db.job_env();
        let removal = Box::pin(env.versions.remove_unreferenced(env.table_cache));
        if let Err(panic) = catch_panic(env.options, removal).await {
            panicked(db, &panic);
            return;
        }
        fail_requests(db);
        drop(active);
    }
}

/// Counts a worker as active for as long as it lives, however its cycle ends, and tells
/// `wait_for_compactions` when it stops being.
struct Active<'a>(&'a dyn Host);

impl<'a> Active<'a> {
    fn start(db: &'a dyn Host) -> Self {
        db.job_env().counters.workers_active.fetch_add(1, Ordering::SeqCst);
        Active(db)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let gauge = &self.0.job_env().counters.workers_active;
        gauge.fetch_sub(1, Ordering::SeqCst);
        self.0.job_ended();
    }
}

/// A job panicked. What it was changing may be half done, so its worker stops for good: the
/// database is poisoned (which wakes writers stalled for room, `flush` callers and the other
/// workers) and waiting `compact_range` calls fail. The next open recovers from what the
/// MANIFEST made durable.
fn panicked(db: &dyn Host, message: &str) {
    tracing::error!(panic = message, "a background job panicked");
    db.poison(&format!("a background job panicked: {message}"));
    fail_requests(db);
    db.work_bells().ring();
}

/// Work a worker has taken: claimed, so no other worker takes it.
enum Work<'a> {
    Flush(FlushJob),
    /// A compaction claimed in `Busy` (released when the guard drops), perhaps a step of a
    /// `compact_range` request (whose `stepping` mark the guard clears).
    Compact(Claimed<'a>, Compaction),
}

/// What the oldest `compact_range` request no worker is stepping needs next.
enum RangeNext<'a> {
    /// Its next step, claimed.
    Step(Work<'a>),
    /// Nothing: it is off the list, to be told it is done.
    Finish(RangeRequest),
}

/// Does the most urgent job of `pool`, if any, with the deletions around it; returns whether
/// it did one. The work is taken first: a worker with nothing to do draws no fault point and
/// deletes nothing.
async fn job(db: &dyn Host, pool: Pool, shared: &Shared) -> Result<bool> {
    let env = db.job_env();
    let work = match pool {
        Pool::Flush => env.reads.flush_candidate().map(Work::Flush),
        Pool::Compaction => match next_range_step(db, &env, shared) {
            Some(RangeNext::Step(work)) => Some(work),
            Some(RangeNext::Finish(request)) => {
                // Off the list already: told here, before anything that could fail or panic,
                // and after every deletion its readers allowed.
                env.versions.remove_unreferenced(env.table_cache).await;
                let _ = request.done.fill(Ok(()));
                return Ok(true);
            }
            None => pick_auto(&env, shared),
        },
    };
    let Some(work) = work else { return Ok(false) };
    // Before each job as well as after: a job that ends a caller's wait (a flush, a
    // `compact_range`) then comes after every deletion its readers allowed.
    env.versions.remove_unreferenced(env.table_cache).await;
    if buggify(env.rt, "background.panic") {
        // A bug in a job: the database must end up poisoned, never with a dead worker that
        // writers and `close` wait for. The simulator knows injected panics by this prefix.
        panic!("{} in a background job", crate::runtime::INJECTED_PANIC);
    }
    if buggify(env.rt, "background.delay") {
        // A slow disk or a busy machine: every job may start late.
        env.rt.sleep(Duration::from_millis(1 + env.rt.random_u64() % 20)).await;
    }
    match work {
        Work::Flush(job) => crate::flush::run(&env, job).await?,
        Work::Compact(claimed, c) => {
            let _running = Running::compaction(env.counters);
            compaction::run(&env, c).await?;
            drop(claimed);
        }
    }
    env.versions.remove_unreferenced(env.table_cache).await;
    Ok(true)
}

/// A compaction's claim, released however the job ends; for a `compact_range` step, with the
/// request whose `stepping` mark to clear.
struct Claimed<'a> {
    shared: &'a Shared,
    id: u64,
    request: Option<(&'a Mutex<Vec<RangeRequest>>, Done)>,
}

/// Where a `compact_range` caller hears its outcome.
type Done = Arc<Signal<Result<()>>>;

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        self.shared.busy().finish(self.id);
        if let Some((requests, signal)) = &self.request {
            // Found by its signal: requests before it may have finished meanwhile (or all
            // failed).
            let mut requests = requests.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(r) = requests.iter_mut().find(|r| Arc::ptr_eq(&r.done, signal)) {
                r.stepping = false;
            }
        }
    }
}

/// Claims the compaction the tree needs most that may run now, if any.
fn pick_auto<'a>(env: &JobEnv<'_>, shared: &'a Shared) -> Option<Work<'a>> {
    // The version is read under the claims' lock: a compaction installs its edit before it
    // lets go of its inputs, so a version read after the lock is taken holds no table a
    // finished compaction dropped (read before, it could, and be compacted again).
    let oldest_snapshot = env.reads.oldest_snapshot();
    let mut busy = shared.busy();
    let version = env.versions.current();
    let c = compaction::pick_due(&version, env.options, oldest_snapshot, &mut busy)?;
    let id = busy.claim(&c);
    Some(Work::Compact(Claimed { shared, id, request: None }, c))
}

/// The next step of the oldest `compact_range` request no other worker is stepping, claimed:
/// one pass per level, from level 0 down to the level above the deepest one holding data
/// (level 1 at least), each compacting that level's tables in the range into the next, then
/// one pass rewriting the deepest level's tables in the range that hold droppable entries or
/// are oversized (so deleted and overwritten data leaves the disk). One pass per level bounds
/// the request even while writes keep adding tables. A step that would
/// collide with a running compaction waits for it (which rings the workers when it ends). A
/// request with no step left is taken off the list, to be told it is done.
fn next_range_step<'a>(
    db: &'a dyn Host,
    env: &JobEnv<'_>,
    shared: &'a Shared,
) -> Option<RangeNext<'a>> {
    let mut requests = db.range_requests().lock().unwrap_or_else(PoisonError::into_inner);
    let at = requests.iter().position(|r| !r.stepping)?;
    let r = &requests[at];
    // Under the claims' lock, as in `pick_auto`.
    let mut busy = shared.busy();
    let version = env.versions.current();
    // Data only in level 0 still moves to level 1, where it no longer overlaps itself.
    let deepest = (0..LEVELS).rev().find(|&l| !version.levels[l].is_empty()).unwrap_or(0).max(1);
    // The deepest level may have become shallower since the last step (a rewrite in place
    // emptied it): the last pass then runs at the new deepest level, not nowhere.
    let mut level = r.level.min(deepest);
    let mut next = None;
    let target = env.options.target_file_bytes;
    while next.is_none() && level < deepest {
        next = compaction::pick_range(&version, level, &r.start, &r.end, target);
        level += 1;
    }
    let mut bottom = None;
    if next.is_none() && level == deepest {
        let pass = match &r.bottom {
            Some(pass) if pass.level == level => pass.clone(),
            _ => {
                BottomPass { level, files_below: env.versions.peek_next_file_number(), after: None }
            }
        };
        let range = (r.start.as_slice(), r.end.as_slice());
        let (after, below) = (pass.after.as_deref(), pass.files_below);
        next = compaction::pick_range_bottom(&version, level, range, after, below, target);
        match next.as_ref().and_then(|c| c.inputs.last()) {
            Some((_, last)) => {
                bottom = Some(BottomPass { after: Some(last.largest_key.clone()), ..pass });
            }
            None => level += 1,
        }
    }
    let Some(c) = next else { return Some(RangeNext::Finish(requests.remove(at))) };
    if !busy.allows(&c) {
        return None;
    }
    let id = busy.claim(&c);
    let r = &mut requests[at];
    r.level = level;
    if bottom.is_some() {
        r.bottom = bottom;
    }
    r.stepping = true;
    let request = Some((db.range_requests(), Arc::clone(&r.done)));
    Some(RangeNext::Step(Work::Compact(Claimed { shared, id, request }, c)))
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
