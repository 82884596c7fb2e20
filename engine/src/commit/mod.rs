//! The commit pipeline: concurrent writers are coalesced into groups; one WAL append serves a
//! whole group, one fsync serves every group written before it started, and the next group is
//! written while earlier ones wait for their fsync.
//!
//! Writers queue up; the writer at the head of the queue is the *leader*. The leader takes a
//! group from the head of the queue (up to `commit_group_bytes_max` bytes, optionally after
//! waiting `commit_window` for more writers), and the group goes through these stages:
//! 1. write (exclusive, holding the [`LeadToken`]): assign each batch a contiguous range of
//!    sequence numbers, encode every batch into one buffer, append it with one write, and put
//!    the group in the publication queue ([`publish`]), which keeps write order; then pass
//!    leadership on, so the next group is written at once, and, if any member asked for
//!    durability, ring the sync task's doorbell;
//! 2. memtable apply, by the leader: insert every operation into the memtable of the group's
//!    log (invisible until published, because readers filter by the visible sequence number),
//!    then mark the group applied in the queue;
//! 3. sync, by the background sync task ([`sync_task`]): fsyncs run back to back while a
//!    queued group wants bytes that are not yet durable (one fsync at a time per log, each
//!    covering every group written before it started);
//! 4. publish, by whoever made a group ready (the leader after applying, the sync task after an
//!    fsync): every ready group at the head of the queue, in write order, advances the visible
//!    sequence number and then completes its members, the leader included, who waits for its
//!    own outcome like any member. The sync task tells one member and hands it the others to
//!    tell, so that its next fsync does not wait behind a thread wake-up per member.
//!
//! Invariants: sequence numbers are gap-free and published in order; a member that asked for
//! sync is completed only after an fsync covering it returned `Ok`; after any WAL failure the
//! database is poisoned, so no later write is acknowledged (a retried fsync could report
//! success for data the kernel already dropped) and every group still queued fails. A future
//! dropped at any `.await` loses nothing: leadership passes on ([`LeadToken`]) and a group
//! dropped in flight poisons the database and fails its members (`GroupGuard`).

mod publish;
pub(crate) mod sync_task;

pub(crate) use publish::PublishQueue;

use crate::batch::WriteBatch;
use crate::error::{Error, Result};
use crate::memtable::Memtable;
use crate::metrics::{sampled, Counters, Sampled, SyncMeter, Timer};
use crate::options::{Options, PlantedBug};
use crate::runtime::{buggify, Phase, PhaseGuard, Runtime};
use crate::signal::{AsyncLock, Doorbell, Doorbells, Notify, Signal, Wait};
use crate::version_set::VersionSet;
use crate::wal::WalWriter;
use publish::{Completions, Group, Member};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What the commit pipeline needs of the database it serves (as Pebble's `commitEnv` does):
/// its own queues, the memtable set it writes into, and the database's health. The pipeline
/// reaches the database only through this.
pub(crate) trait Host: Send + Sync + std::fmt::Debug + 'static {
    fn pipeline(&self) -> &Pipeline;
    fn publish_queue(&self) -> &PublishQueue;
    /// Wakes the sync task; stopping it ends the task.
    fn sync_bell(&self) -> &Arc<Doorbell>;
    /// The runtime as a shared handle, for a new WAL to sync its directory with later.
    fn runtime(&self) -> &crate::runtime::RuntimeRef;
    fn rt(&self) -> &dyn Runtime {
        self.runtime().as_ref()
    }
    fn options(&self) -> &Options;
    fn counters(&self) -> &Counters;
    /// File numbers for new WALs, and the level-0 table count writes are throttled by.
    fn versions(&self) -> &VersionSet;
    fn dir(&self) -> &Path;

    fn check_not_poisoned(&self) -> Result<()>;
    /// Latches the poisoned state (the first cause wins) and returns the error to report.
    fn poison(&self, cause: &str) -> Error;
    /// Makes every write up to `seq` visible to reads.
    fn publish(&self, seq: u64);

    /// The memtable that takes writes.
    fn active_memtable(&self) -> Arc<Memtable>;
    /// How many memtables are held, the active one included.
    fn memtable_count(&self) -> usize;
    /// Retires the active memtable, whose last write is `last_seq`, for one over WAL
    /// `wal_number`, and tells the background worker.
    fn install_memtable(&self, wal_number: u64, last_seq: u64);

    /// Told when a flush or compaction makes room, and when the database is poisoned.
    fn changed(&self) -> &Notify;
    /// Writers waiting for room: a closing database's background worker still serves them.
    fn writers_stalled(&self) -> &AtomicU64;
    /// Wakes the background workers.
    fn work_bells(&self) -> &Doorbells;

    fn active_memtable_full(&self) -> bool {
        self.active_memtable().approximate_bytes() >= self.options().memtable_bytes_max
    }
}

/// The state only the leader touches.
#[derive(Debug)]
pub(crate) struct LeaderState {
    /// The newest log that has a file.
    pub wal: WalWriter,
    /// After a rotation, until the retired log is finished: the new log, whose file does not
    /// exist yet (see `rotate`).
    next: Option<NextLog>,
    /// The last sequence number assigned.
    pub last_seq: u64,
    /// Reused for encoding each group's WAL records: the hot path allocates nothing once warm.
    buf: Vec<u8>,
    /// Set once `close` has sealed the WAL; every later write fails with `Closed`.
    sealed: bool,
    /// How far into the current WAL the sync task was last asked to sync.
    sync_asked: u64,
}

impl LeaderState {
    pub(crate) fn new(wal: WalWriter, last_seq: u64) -> Self {
        LeaderState { wal, next: None, last_seq, buf: Vec::new(), sealed: false, sync_asked: 0 }
    }

    /// The log the next group goes to: its number, the offset the group starts at, and how
    /// many of its bytes are durable (the attestation its records carry).
    fn log_position(&self) -> (u64, u64, u64) {
        match &self.next {
            Some(next) => (next.number, next.records.len() as u64, 0),
            None => (self.wal.number(), self.wal.offset(), self.wal.file().synced_upto()),
        }
    }

    /// Whether to ask the sync task to sync the log in the background, as no group of
    /// `wal_bytes_per_sync` bytes up to the `appending` bytes about to be appended asked it to:
    /// then the fsync that retires the log at its rotation, which every writer waits for, has
    /// at most that many bytes left to write.
    fn background_sync_due(
        &mut self,
        bytes_per_sync: u64,
        group_asked: bool,
        appending: usize,
    ) -> bool {
        let end = self.wal.offset() + appending as u64;
        let due = !group_asked && bytes_per_sync > 0 && end - self.sync_asked >= bytes_per_sync;
        if due || group_asked {
            self.sync_asked = end;
        }
        due
    }
}

/// A log begun by a rotation whose file waits until the log it replaced is finished: recovery
/// reads damage in any log but the newest as corruption, which is only true if a log is wholly
/// synced before a newer one exists. Writers go on meanwhile; their records wait here.
#[derive(Debug)]
struct NextLog {
    number: u64,
    /// The log's records, from its start: written to the file when it is created.
    records: Vec<u8>,
    /// The log it replaces, being finished by the sync task.
    retiring: Arc<Retiring>,
}

/// How many bytes of records a new log may hold in memory while the log it replaces is
/// finished; a group that would pass it waits for the finish (a pause, counted as a
/// rotation's), as does every group when `Options::wal_buffer_bytes` is 0.
/// About 100 ms of writes at the speeds the peer benchmark measures: enough to cover an fsync
/// queued behind compaction I/O, a small bound on memory that no budget counts.
const NEXT_LOG_BYTES_MAX: usize = 4 << 20;

/// A log retired by a rotation, handed to the sync task to finish (sync whole and cut back).
#[derive(Debug)]
pub(crate) struct Retiring {
    log: crate::wal::Retired,
    /// Set once the log is finished.
    finished: std::sync::atomic::AtomicBool,
}

impl Retiring {
    fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}

/// A writer in the pipeline.
#[derive(Debug)]
pub(crate) struct Pending {
    batch: WriteBatch,
    sync: bool,
    /// What the writer asks of the pipeline besides its batch.
    barrier: Barrier,
    /// Where the writer hears its outcome.
    signal: Arc<Signal<Outcome>>,
    /// The batch's first sequence number, once the write stage has assigned it.
    first: u64,
}

/// A request a commit carries besides its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Barrier {
    /// Just the batch.
    None,
    /// `flush`'s: retire the active memtable (if it holds anything) before this write. Always
    /// leads its own group, so no other writer's batch goes to the memtable being retired.
    Rotate,
    /// `close`'s: seal the WAL after this member; it always ends its group.
    Seal,
}

/// What a waiting writer is told.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Your write is done: its first sequence number, or why it failed; and maybe other
    /// writers for you to tell in turn.
    Done(Result<u64>, Option<Completions>),
    /// You are now the leader; here is your own write back, taken off the queue.
    Lead(LeadToken, Pending),
}

/// The writers' queue and, while no leader runs, the idle leader state.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    queue: Mutex<Queue>,
    /// A log a rotation retired, for the sync task to finish.
    retiring: Mutex<Option<Arc<Retiring>>>,
    /// Held by whoever runs commit fsyncs: the sync task, or a lone synced writer's leader
    /// (see `sync_inline`). One at a time, so that fsyncs and publications keep their order.
    pub(crate) syncing: AsyncLock<()>,
    /// Synced writers about at the last commit fsync: those it served and those waiting when
    /// it returned. A writer syncs its own group only while this is at most one, so that many
    /// writers keep the sync task's batching (and its commit window).
    pub(crate) synced_writers: AtomicUsize,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Pending>,
    /// `Some` exactly when no leader is running; then `waiting` is empty.
    idle: Option<Box<LeaderState>>,
    /// Whether the running leader is encoding and appending its group (not stalled for room,
    /// not rotating the log).
    appending: bool,
    /// Told when the running leader's append ends.
    append_watcher: Option<Arc<Signal<()>>>,
}

/// What `Pipeline::enqueue` decided.
enum Enqueued {
    /// No leader was running: the writer leads, with its own write.
    Lead(Box<LeaderState>, Pending),
    /// The writer waits on its signal.
    Queued,
}

impl Pipeline {
    pub(crate) fn new(state: LeaderState) -> Self {
        let queue = Queue { idle: Some(Box::new(state)), ..Queue::default() };
        Pipeline { queue: Mutex::new(queue), ..Pipeline::default() }
    }

    /// Hands a log a rotation retired to the sync task (which `take_retiring` gives it).
    fn retire(&self, retiring: Arc<Retiring>) {
        *self.retiring.lock().unwrap_or_else(PoisonError::into_inner) = Some(retiring);
    }

    /// Whether a log a rotation retired waits for the sync task.
    fn has_retiring(&self) -> bool {
        self.retiring.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// The log a rotation retired, if the sync task has not taken it yet.
    pub(crate) fn take_retiring(&self) -> Option<Arc<Retiring>> {
        self.retiring.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a writer, unless it becomes the leader at once.
    fn enqueue(&self, pending: Pending) -> Enqueued {
        let mut q = self.lock();
        match q.idle.take() {
            Some(state) => {
                debug_assert!(q.waiting.is_empty());
                Enqueued::Lead(state, pending)
            }
            None => {
                q.waiting.push_back(pending);
                Enqueued::Queued
            }
        }
    }

    /// Adds writers from the head of the queue to the leader's group, which holds the leader's
    /// own write.
    fn take_group(&self, group: &mut Vec<Pending>, bytes_max: usize) {
        let mut bytes: usize = group.iter().map(|m| m.batch.encoded_len()).sum();
        if group.last().is_some_and(|m| m.barrier != Barrier::None) {
            return;
        }
        let mut q = self.lock();
        while let Some(next) = q.waiting.front() {
            let size = next.batch.encoded_len();
            if bytes + size > bytes_max {
                break;
            }
            bytes += size;
            if next.barrier == Barrier::Rotate {
                break; // it leads a group of its own
            }
            let seal = next.barrier == Barrier::Seal;
            group.extend(q.waiting.pop_front());
            if seal {
                break;
            }
        }
    }

    /// Passes leadership to the first waiting writer that is still there, or parks it.
    fn release(&self, db: &Arc<dyn Host>, state: Box<LeaderState>) {
        let mut q = self.lock();
        Self::hand_over(&mut q, db, state);
    }

    fn hand_over(q: &mut Queue, db: &Arc<dyn Host>, mut state: Box<LeaderState>) {
        loop {
            let Some(next) = q.waiting.pop_front() else {
                q.idle = Some(state);
                return;
            };
            let signal = Arc::clone(&next.signal);
            let token = LeadToken { state: Some(state), db: Arc::clone(db) };
            match signal.fill(Outcome::Lead(token, next)) {
                Ok(()) => return,
                Err(outcome) => {
                    // That writer's future was dropped: its write is abandoned, never started.
                    let Outcome::Lead(mut token, _abandoned) = outcome else { unreachable!() };
                    state = token.state.take().expect("a fresh token holds the state");
                }
            }
        }
    }

    /// Marks the leader as appending its group until the returned guard is dropped.
    fn appending(&self) -> Appending<'_> {
        self.lock().appending = true;
        Appending(self)
    }

    /// If the leader is appending a group, a signal told when its append ends (the group's
    /// bytes then written). One watcher at a time: the sync task. A leader that is stalled for
    /// room, or rotating the log, is not waited for: that can last as long as a compaction,
    /// and groups already written would wait for their fsync all that time.
    fn watch_append(&self) -> Option<Arc<Signal<()>>> {
        let mut q = self.lock();
        if !q.appending {
            return None;
        }
        let signal = Signal::new();
        q.append_watcher = Some(Arc::clone(&signal));
        Some(signal)
    }
}

/// A leader's append in progress; dropping it, however the append ends, tells the watcher.
struct Appending<'a>(&'a Pipeline);

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        let watcher = {
            let mut q = self.0.lock();
            q.appending = false;
            q.append_watcher.take()
        };
        if let Some(watcher) = watcher {
            // A watcher that went away (its task was dropped) needs no wake-up.
            let _ = watcher.fill(());
        }
    }
}

/// Leadership of the pipeline. Dropping it, by completion or cancellation, passes it on.
#[derive(Debug)]
pub(crate) struct LeadToken {
    state: Option<Box<LeaderState>>,
    db: Arc<dyn Host>,
}

impl LeadToken {
    fn state(&mut self) -> &mut LeaderState {
        self.state.as_mut().expect("a live token holds the state")
    }
}

impl Drop for LeadToken {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.db.pipeline().release(&self.db, state);
        }
    }
}

/// The members of a group in flight. If the leader's future is dropped (or panics) before the
/// group is queued and applied, nobody knows what reached the WAL or the memtable: the database
/// is poisoned and the members failed.
struct GroupGuard<'a> {
    db: &'a dyn Host,
    members: Vec<Pending>,
    /// The group's ticket once it is in the publication queue, which then tells the members.
    ticket: Option<u64>,
}

impl Drop for GroupGuard<'_> {
    fn drop(&mut self) {
        if self.members.is_empty() {
            return;
        }
        let err = self.db.poison("a commit was cancelled while in flight");
        match self.ticket {
            // Poisoned, the queue fails the group once it may pass it.
            Some(ticket) => self.db.publish_queue().mark_applied(ticket),
            None => fail_members(&self.members, &err),
        }
        self.db.publish_queue().publish_ready(self.db);
    }
}

/// Commits `batch`, returning its first sequence number (or the last assigned one for an empty
/// batch, which only syncs or seals).
pub(crate) async fn commit(
    db: &Arc<dyn Host>,
    batch: WriteBatch,
    sync: bool,
    barrier: Barrier,
) -> Result<u64> {
    let signal = Signal::new();
    let waiting = signal.wait();
    let pending = Pending { batch, sync, barrier, signal, first: 0 };
    let (token, own, outcome) = match db.pipeline().enqueue(pending) {
        Enqueued::Lead(state, own) => {
            (LeadToken { state: Some(state), db: Arc::clone(db) }, own, waiting)
        }
        Enqueued::Queued => match waiting.await {
            Outcome::Done(result, relayed) => return told(result, relayed),
            Outcome::Lead(token, mut own) => {
                // The signal that brought leadership is spent; the outcome needs a fresh one.
                own.signal = Signal::new();
                let outcome = own.signal.wait();
                (token, own, outcome)
            }
        },
    };
    lead(db, token, own).await;
    own_outcome(outcome).await
}

/// The leader's own outcome, told like any member's once its group is published or failed.
async fn own_outcome(outcome: Wait<Outcome>) -> Result<u64> {
    match outcome.await {
        Outcome::Done(result, relayed) => told(result, relayed),
        Outcome::Lead(..) => unreachable!("a leader's own write is off the queue"),
    }
}

/// Tells the writers relayed to this one, then returns this one's result.
fn told(result: Result<u64>, relayed: Option<Completions>) -> Result<u64> {
    if let Some(others) = relayed {
        others.tell_all();
    }
    result
}

/// Runs one group as its leader, up to handing it to the publication queue.
async fn lead(db: &Arc<dyn Host>, mut token: LeadToken, own: Pending) {
    if !db.options().commit_window.is_zero() {
        db.rt().sleep(db.options().commit_window).await;
    }
    let mut members = vec![own];
    // A group of one: the smallest group the pipeline must handle.
    let bytes_max = if buggify(db.rt(), "commit.small_group") {
        1
    } else {
        db.options().commit_group_bytes_max
    };
    db.pipeline().take_group(&mut members, bytes_max);
    let timer =
        sampled(Sampled::Commit).then(|| Timer::start(db.rt(), &db.counters().latency.commit));
    let mut group = GroupGuard { db: db.as_ref(), members, ticket: None };
    let written = write_stage(db, token.state(), &mut group.members).await;
    drop(token);
    match written {
        Ok(Written { ticket, memtable, want_sync }) => {
            group.ticket = Some(ticket);
            let synced = group.members.iter().any(|m| m.sync);
            // A lone synced writer syncs its own group: two thread wake-ups (to the sync task
            // and back) were a tenth of its write's time behind a fast fsync.
            let inline = want_sync && synced && lone(db.as_ref(), group.members.len());
            if want_sync && !inline {
                // After the group is queued: the sync task then finds it wanting durability.
                db.sync_bell().ring();
            }
            if buggify(db.rt(), "commit.yield_before_apply") {
                // The next group is written, applied or published while this one waits; a
                // cancellation here is handled by the guard like any other.
                crate::runtime::yield_now().await;
            }
            // Nothing below awaits, so the group cannot be cancelled halfway through.
            apply(db.as_ref(), &memtable, &mut group.members);
            db.publish_queue().mark_applied(ticket);
            group.members.clear();
            db.publish_queue().publish_ready(db.as_ref());
            if inline {
                sync_inline(db.as_ref()).await;
            }
            timer.map(Timer::stop);
        }
        Err(err) => {
            let members = std::mem::take(&mut group.members);
            fail_members(&members, &fail_stop(db.as_ref(), err));
        }
    }
}

/// Whether a group of `members` writers is the only one waiting for an fsync, with no other
/// synced writer about: its leader may then run the fsync itself (`sync_inline`). With more
/// writers the sync task batches them (and its commit window may wait for more).
fn lone(db: &dyn Host, members: usize) -> bool {
    db.options().lone_writer_syncs
        && db.pipeline().synced_writers.load(Ordering::Relaxed) <= 1
        && db.publish_queue().waiting_for_sync() <= members
        && !db.pipeline().has_retiring()
        // The simulator sends lone writers through the sync task too.
        && !buggify(db.rt(), "commit.sync_task_for_lone_writer")
}

/// One fsync run by a lone synced writer's leader, in place of the sync task: what the task's
/// loop does once, without its commit window. If the task is running fsyncs, or a retired log
/// waits for it, or more is wanted after this fsync, the task is rung instead or as well.
/// While the leader holds the lock, the task waits for it: a runtime that stopped polling the
/// leader's future would hold up every other writer's fsync (`Options::lone_writer_syncs`
/// turns this off).
async fn sync_inline(db: &dyn Host) {
    // Declared before the lock, so dropped after it: if this future is dropped at an await
    // (a caller's timeout), the sync task is rung and takes over (and fails stop, as for its
    // own fsync, if the log was failed by the interrupted one).
    let mut handover = Handover { db, armed: true };
    let Some(syncing) = db.pipeline().syncing.try_lock() else { return };
    if db.pipeline().has_retiring() {
        return;
    }
    // The sync task syncs nothing for a poisoned database either; publishing fails the rest.
    let poisoned = db.check_not_poisoned().is_err();
    if !poisoned {
        // A panic here is the sync task's kind of panic: the fsync's outcome is unknown, so
        // the database is poisoned and nothing queued is acknowledged.
        match crate::unwind::catch_panic(db.options(), sync_task::sync_once(db)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                handover.armed = false;
                fail_stop(db, err);
                return;
            }
            Err(panic) => {
                handover.armed = false;
                tracing::error!(panic = %panic, "a writer's WAL fsync panicked");
                db.poison(&format!("a writer's WAL fsync panicked: {panic}"));
                db.publish_queue().publish_ready(db);
                return;
            }
        }
    }
    db.publish_queue().publish_ready(db);
    drop(syncing);
    // More wanted meanwhile: the sync task's (the drop rings it).
    handover.armed = db.publish_queue().sync_wanted().is_some();
}

/// Rings the sync task when dropped armed: whatever `sync_inline` leaves undone (the lock was
/// taken, a retired log waits, the future was dropped halfway) becomes the task's.
struct Handover<'a> {
    db: &'a dyn Host,
    armed: bool,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.db.sync_bell().ring();
        }
    }
}

/// What the write stage did with a group.
struct Written {
    ticket: u64,
    /// The memtable the group's writes go to.
    memtable: Arc<Memtable>,
    /// Whether the group asked the sync task to make it durable (to publish it, or in the
    /// background).
    want_sync: bool,
}

/// Stage 1, exclusive: sequence, encode, append, queue for publication.
async fn write_stage(
    db: &Arc<dyn Host>,
    state: &mut LeaderState,
    members: &mut [Pending],
) -> Result<Written> {
    db.check_not_poisoned()?;
    if state.sealed {
        return Err(Error::Closed);
    }
    throttle_for_level0(db).await?;
    // The new log's file, if the log it replaced is finished by now.
    settle(db, state, false).await?;
    let asked = members[0].barrier == Barrier::Rotate && !db.active_memtable().is_empty();
    // A rotation (and so a flush) at an odd moment: any memtable may be retired early.
    let early =
        !asked && buggify(db.rt(), "commit.rotate_early") && !db.active_memtable().is_empty();
    if asked || early || db.active_memtable_full() {
        rotate(db, state).await?;
    }
    let want_sync = members.iter().any(|m| m.sync);
    let seal = members.last().is_some_and(|m| m.barrier == Barrier::Seal);
    let next_full = state.next.as_ref().is_some_and(|n| {
        // A record takes its batch and at most 40 bytes of framing (crc and five varints).
        let group_bytes: usize = members.iter().map(|m| m.batch.encoded_len() + 40).sum();
        n.records.len().saturating_add(group_bytes) > NEXT_LOG_BYTES_MAX
    });
    // Without a write buffer, an unsynced write is promised to be in the file (so to survive a
    // process crash) once acknowledged: it may not wait in memory for the new log's file.
    let unbuffered = db.options().wal_buffer_bytes == 0;
    if want_sync || seal || next_full || unbuffered {
        // Only a log with a file can be synced or sealed.
        settle(db, state, true).await?;
    }
    let background_sync;
    {
        let _appending = db.pipeline().appending();
        encode_group(state, members);
        if let Some(next) = &mut state.next {
            // Nothing here asks for an fsync, so nothing needs the file yet.
            next.records.extend_from_slice(&state.buf);
            background_sync = false;
        } else {
            if want_sync {
                state.wal.expect_syncs();
            }
            let bytes_per_sync = db.options().wal_bytes_per_sync;
            let appending = state.buf.len();
            background_sync = state.background_sync_due(bytes_per_sync, want_sync, appending);
            // Only bytes in the file can be synced: a group that asks for an fsync takes what
            // the log buffered to the file with its own records.
            let to_file = want_sync || background_sync;
            if !state.buf.is_empty() {
                state.wal.append(&state.buf, to_file).await?;
            } else if to_file {
                state.wal.write_buffered().await?;
            }
        }
        Counters::add(&db.counters().wal_bytes, state.buf.len() as u64);
    }
    Counters::add(&db.counters().commit_groups, 1);
    if seal {
        state.wal.seal(&mut state.buf, SyncMeter::wal(db.counters(), db.rt())).await?;
        state.sealed = true;
    }
    let ack_early = want_sync && db.options().has_bug(PlantedBug::AckBeforeSync);
    // A background sync makes the sync task sync up to this group without the group waiting.
    let ask_sync = want_sync || background_sync;
    let at = || (Arc::clone(state.wal.file()), state.wal.offset());
    let group = Group {
        last_seq: state.last_seq,
        durable_at: (want_sync && !ack_early).then(at),
        members: members.iter().map(Member::of).collect(),
    };
    let ticket = db.publish_queue().push(group, ask_sync.then(at));
    Ok(Written { ticket, memtable: db.active_memtable(), want_sync: ask_sync })
}

/// Assigns sequence numbers and encodes the group's WAL records into the reused buffer.
fn encode_group(state: &mut LeaderState, members: &mut [Pending]) {
    state.buf.clear();
    let (number, start, attested) = state.log_position();
    for m in members {
        if m.batch.is_empty() {
            m.first = state.last_seq;
            continue;
        }
        m.first = state.last_seq + 1;
        // The buffer is appended at the log's end, so this is where the record will sit.
        let at = start + state.buf.len() as u64;
        crate::wal::encode_batch_record(
            &mut state.buf,
            number,
            at,
            attested,
            m.first,
            m.batch.count(),
            m.batch.rep(),
        );
        state.last_seq += u64::from(m.batch.count());
    }
}

/// Stage 2: insert every operation into the group's memtable.
fn apply(db: &dyn Host, memtable: &Memtable, members: &mut [Pending]) {
    for member in members {
        if member.batch.is_empty() {
            continue;
        }
        let batch = std::mem::take(&mut member.batch);
        let applied = memtable.apply_encoded(member.first, batch.rep(), batch.count());
        let user_bytes = applied.expect("a WriteBatch always holds well-formed ops");
        Counters::add(&db.counters().batches, 1);
        Counters::add(&db.counters().user_bytes, user_bytes as u64);
    }
}

/// Retires the full memtable and its WAL and starts new ones, first waiting (stalling every
/// writer, since the leader holds the pipeline) while `memtables_max` memtables are held.
///
/// The retired log must be wholly synced before the new log's file exists (see `NextLog`), but
/// writers do not wait for that fsync, which queues behind whatever else the disk is doing
/// (tens of milliseconds behind a compaction's writes): the sync task finishes the old log,
/// and the new log's records wait in memory until `settle` creates its file. Only a write
/// that needs the new log on disk (a synced write, `close`) waits for the finish.
async fn rotate(db: &Arc<dyn Host>, state: &mut LeaderState) -> Result<()> {
    // The previous rotation's log must have its file before it can be retired in turn.
    settle(db, state, true).await?;
    let memtables_max = db.options().memtables_max;
    let wait_max = &db.counters().memtable_wait_max_us;
    stall_until(db, wait_max, |db| db.memtable_count() < memtables_max).await?;
    let _phase = PhaseGuard::enter(db.rt(), Phase::WalRotation);
    // Writers wait from here to the new log: a pause, counted as one.
    let pause = Pause::start(db.as_ref());
    let log = state.wal.retire().await?;
    let retiring = Arc::new(Retiring { log, finished: false.into() });
    db.pipeline().retire(Arc::clone(&retiring));
    db.sync_bell().ring();
    let number = db.versions().new_file_number();
    state.next = Some(NextLog { number, records: Vec::new(), retiring });
    state.sync_asked = 0;
    db.install_memtable(number, state.last_seq);
    Counters::add(&db.counters().memtable_rotations, 1);
    pause.end_kind(&db.counters().wal_rotation_us, &db.counters().wal_rotation_max_us);
    Ok(())
}

/// Creates the file of the log a rotation began, once the log it replaced is finished, and
/// writes the records that waited for it. With `wait`, waits for the finish first (a pause for
/// every writer, counted as a rotation's); without, does nothing until then.
async fn settle(db: &Arc<dyn Host>, state: &mut LeaderState, wait: bool) -> Result<()> {
    let Some(next) = &state.next else { return Ok(()) };
    // Planted: the new log gets its file whether or not the old one is finished.
    let early = db.options().has_bug(PlantedBug::NewWalBeforeOldSynced);
    if !next.retiring.is_finished() && !early {
        if !wait {
            return Ok(());
        }
        let pause = Pause::start(db.as_ref());
        loop {
            // Listening before checking: the sync task tells `changed` once it has finished
            // the log, or poisoned the database trying.
            let changed = db.changed().listen();
            db.check_not_poisoned()?;
            if next.retiring.is_finished() {
                break;
            }
            changed.await;
        }
        pause.end_kind(&db.counters().wal_rotation_us, &db.counters().wal_rotation_max_us);
    }
    let number = next.number;
    let mut wal = crate::wal::create(db.runtime(), db.dir(), number, db.options()).await?;
    let next = state.next.take().expect("checked above");
    wal.append(&next.records, false).await?;
    state.wal = wal;
    Ok(())
}

/// Finishes the log a rotation retired, if there is one: for the sync task, so that neither
/// the leader nor any writer waits for its fsync. Then the groups that waited for that fsync
/// are published, and a leader waiting to create the next log is told.
pub(crate) async fn finish_retired(db: &dyn Host) -> Result<()> {
    let Some(retiring) = db.pipeline().take_retiring() else { return Ok(()) };
    let _phase = PhaseGuard::enter(db.rt(), Phase::WalRotation);
    retiring.log.finish(SyncMeter::wal(db.counters(), db.rt())).await?;
    retiring.finished.store(true, Ordering::Release);
    db.publish_queue().publish_ready(db);
    db.changed().notify_all();
    Ok(())
}

/// Slows writes down while level 0 holds `l0_slowdown_files` tables, and stops them while it
/// holds `l0_stop_files`, so that flushes cannot run unboundedly ahead of compaction (every
/// level-0 table costs every read a lookup).
async fn throttle_for_level0(db: &Arc<dyn Host>) -> Result<()> {
    let level0 = |db: &dyn Host| db.versions().current().levels[0].len();
    if level0(db.as_ref()) >= db.options().l0_stop_files {
        let stop_max = &db.counters().level0_stop_max_us;
        return stall_until(db, stop_max, |db| level0(db) < db.options().l0_stop_files).await;
    }
    if level0(db.as_ref()) >= db.options().l0_slowdown_files {
        Counters::add(&db.counters().write_stalls, 1);
        let pause = Pause::start(db.as_ref());
        db.rt().sleep(std::time::Duration::from_millis(1)).await;
        pause.end(&db.counters().write_stall_us);
    }
    Ok(())
}

/// Waits until `room` holds, woken by each flush and compaction, counting the stall and its
/// duration, in all and in `kind_max_us`, the longest stall of its kind.
async fn stall_until(
    db: &Arc<dyn Host>,
    kind_max_us: &AtomicU64,
    room: impl Fn(&dyn Host) -> bool,
) -> Result<()> {
    // When the stall began, and the count of stalled writers this one is in meanwhile.
    let mut stalled: Option<(Pause<'_>, Stalled<'_>)> = None;
    loop {
        // Listening before checking: a flush that ends in between still wakes this writer.
        let changed = db.changed().listen();
        db.check_not_poisoned()?;
        if room(db.as_ref()) {
            break;
        }
        if stalled.is_none() {
            // Counted before the worker is rung: a closing database's worker starts jobs only
            // for a stalled writer, and must see this one when it wakes.
            stalled = Some((Pause::start(db.as_ref()), Stalled::start(db.writers_stalled())));
            Counters::add(&db.counters().write_stalls, 1);
            tracing::debug!("writes stalled: waiting for background work");
            db.work_bells().ring();
        }
        changed.await;
    }
    if let Some((pause, _)) = stalled {
        pause.end_kind(&db.counters().write_stall_us, kind_max_us);
    }
    Ok(())
}

/// A time the pipeline holds every writer (a stall, a slowdown, a WAL rotation): `end` adds
/// its length to a counter and to the longest pause seen.
struct Pause<'a> {
    db: &'a dyn Host,
    since: std::time::Duration,
}

impl<'a> Pause<'a> {
    fn start(db: &'a dyn Host) -> Self {
        Pause { db, since: db.rt().now() }
    }

    fn end(self, total_us: &AtomicU64) -> u64 {
        let waited = self.db.rt().now().saturating_sub(self.since);
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.db.counters().latency.write_pause.record(waited);
        Counters::add(total_us, us);
        self.db.counters().write_pause_max_us.fetch_max(us, Ordering::Relaxed);
        us
    }

    /// As `end`, also raising `kind_max_us`, the longest pause of its kind.
    fn end_kind(self, total_us: &AtomicU64, kind_max_us: &AtomicU64) {
        let us = self.end(total_us);
        kind_max_us.fetch_max(us, Ordering::Relaxed);
    }
}

/// Counts a writer as stalled for as long as it waits, however the wait ends.
struct Stalled<'a>(&'a AtomicU64);

impl<'a> Stalled<'a> {
    fn start(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::SeqCst);
        Stalled(gauge)
    }
}

impl Drop for Stalled<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Poisons the database for any failure but a refusal, fails every group still queued, and
/// returns the error to report.
fn fail_stop(db: &dyn Host, err: Error) -> Error {
    let err = refuse_or_poison(db, err);
    db.publish_queue().publish_ready(db);
    err
}

/// A refusal (closed, already poisoned) is passed on as is; any other failure poisons.
fn refuse_or_poison(db: &dyn Host, err: Error) -> Error {
    match err {
        Error::Closed => err,
        // A failed log refuses before anyone has poisoned the database, possibly: latch it.
        Error::Poisoned(cause) => match db.check_not_poisoned() {
            Err(latched) => latched,
            Ok(()) => db.poison(&cause),
        },
        other => {
            tracing::warn!(error = %other, "commit failed");
            db.poison(&other.to_string())
        }
    }
}

fn clone_refusal(err: &Error) -> Error {
    match err {
        Error::Poisoned(cause) => Error::Poisoned(Arc::clone(cause)),
        _ => Error::Closed,
    }
}

fn fail_members(members: &[Pending], err: &Error) {
    for member in members {
        let _ = member.signal.fill(Outcome::Done(Err(clone_refusal(err)), None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemFile;

    fn leader() -> LeaderState {
        let wal = WalWriter::new(Box::new(MemFile::new()), "test.log".into(), 1, 0, 0);
        LeaderState::new(wal, 0)
    }

    fn append(state: &mut LeaderState, bytes: usize) {
        pollster::block_on(state.wal.append(&vec![1; bytes], true)).unwrap();
    }

    #[test]
    fn background_syncs_come_every_so_many_unsynced_bytes() {
        let mut state = leader();
        append(&mut state, 60);
        assert!(!state.background_sync_due(100, false, 0));
        append(&mut state, 60);
        assert!(state.background_sync_due(100, false, 0), "120 bytes unsynced");
        append(&mut state, 60);
        assert!(!state.background_sync_due(100, false, 0), "60 bytes since the last ask");
        // A group that asks for its own sync covers the bytes before it.
        append(&mut state, 60);
        assert!(!state.background_sync_due(100, true, 0));
        append(&mut state, 60);
        assert!(!state.background_sync_due(100, false, 0), "60 bytes since the group's sync");
    }

    #[test]
    fn no_background_syncs_when_turned_off() {
        let mut state = leader();
        append(&mut state, 1 << 20);
        assert!(!state.background_sync_due(0, false, 0));
    }
}
