//! The commit pipeline: concurrent writers are coalesced into groups; one WAL append and at
//! most one fsync serve a whole group, and the next group is written while this one syncs.
//!
//! Writers queue up; the writer at the head of the queue is the *leader*. The leader takes a
//! group from the head of the queue (up to `commit_group_bytes_max` bytes, optionally after
//! waiting `commit_window` for more writers) and runs the stages:
//! 1. write (exclusive, holding the [`LeadToken`]): assign each batch a contiguous range of
//!    sequence numbers, encode every batch into one buffer, append it with one write, take a
//!    publication ticket; then pass leadership on, so the next group can be written at once;
//! 2. sync: if any member asked for durability, wait until an fsync covers the group's bytes
//!    (one fsync runs at a time per log and covers every group written before it started);
//! 3. memtable apply: insert every operation into the memtable of the group's log (invisible
//!    until published, because readers filter by the visible sequence number);
//! 4. publish, in ticket order: advance the visible sequence number, then complete members.
//!
//! Invariants: sequence numbers are gap-free and published in order; a member that asked for
//! sync is completed only after an fsync covering it returned `Ok`; after any WAL failure the
//! database is poisoned, so no later write is acknowledged (a retried fsync could report
//! success for data the kernel already dropped).

use crate::batch::{decode_ops, WriteBatch};
use crate::db::DbInner;
use crate::error::{Error, Result};
use crate::memtable::Memtable;
use crate::metrics::Counters;
use crate::options::PlantedBug;
use crate::signal::Signal;
use crate::wal::{WalFile, WalWriter};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// The state only the leader touches.
#[derive(Debug)]
pub(crate) struct LeaderState {
    pub wal: WalWriter,
    /// The last sequence number assigned.
    pub last_seq: u64,
    /// The number the next new file gets.
    pub next_file_number: u64,
    /// Reused for encoding each group's WAL records: the hot path allocates nothing once warm.
    buf: Vec<u8>,
    /// Set once `close` has sealed the WAL; every later write fails with `Closed`.
    sealed: bool,
    /// The publication ticket the next group gets.
    next_ticket: u64,
}

impl LeaderState {
    pub(crate) fn new(wal: WalWriter, last_seq: u64, next_file_number: u64) -> Self {
        LeaderState {
            wal,
            last_seq,
            next_file_number,
            buf: Vec::new(),
            sealed: false,
            next_ticket: 0,
        }
    }
}

/// A writer waiting in the queue.
#[derive(Debug)]
struct Pending {
    batch: WriteBatch,
    sync: bool,
    /// Close's barrier: seal the WAL after this member; it always ends its group.
    seal: bool,
    signal: Arc<Signal<Outcome>>,
}

/// What a waiting writer is told.
#[derive(Debug)]
enum Outcome {
    /// Your write is done: its first sequence number, or why it failed.
    Done(Result<u64>),
    /// You are now the leader.
    Lead(LeadToken),
}

/// The writers' queue and, while no leader runs, the idle leader state.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    queue: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Pending>,
    /// `Some` exactly when no leader is running; then `waiting` is empty.
    idle: Option<Box<LeaderState>>,
}

impl Pipeline {
    pub(crate) fn new(state: LeaderState) -> Self {
        Pipeline {
            queue: Mutex::new(Queue { waiting: VecDeque::new(), idle: Some(Box::new(state)) }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a writer; returns the leader state if the writer is now the leader.
    fn enqueue(&self, pending: Pending) -> Option<Box<LeaderState>> {
        let mut q = self.lock();
        q.waiting.push_back(pending);
        let idle = q.idle.take();
        debug_assert!(idle.is_none() || q.waiting.len() == 1);
        idle
    }

    /// Takes the leader's group from the head of the queue. The leader itself is the head.
    fn take_group(&self, bytes_max: usize) -> Vec<Pending> {
        let mut q = self.lock();
        let mut group: Vec<Pending> = Vec::new();
        let mut bytes = 0usize;
        while let Some(next) = q.waiting.front() {
            let size = next.batch.encoded_len();
            if !group.is_empty() && bytes + size > bytes_max {
                break;
            }
            bytes += size;
            let seal = next.seal;
            group.extend(q.waiting.pop_front());
            if seal {
                break;
            }
        }
        group
    }

    /// Passes leadership to the first waiting writer that is still there, or parks it.
    fn release(&self, db: &Arc<DbInner>, mut state: Box<LeaderState>) {
        let mut q = self.lock();
        loop {
            let Some(front) = q.waiting.front() else {
                q.idle = Some(state);
                return;
            };
            let token = LeadToken { state: Some(state), db: Arc::clone(db) };
            match front.signal.fill(Outcome::Lead(token)) {
                Ok(()) => return,
                Err(outcome) => {
                    // That writer's future was dropped: its write is abandoned, never started.
                    q.waiting.pop_front();
                    let Outcome::Lead(mut token) = outcome else { unreachable!() };
                    state = token.state.take().expect("a fresh token holds the state");
                }
            }
        }
    }
}

/// Leadership of the pipeline. Dropping it, by completion or cancellation, passes it on.
#[derive(Debug)]
pub(crate) struct LeadToken {
    state: Option<Box<LeaderState>>,
    db: Arc<DbInner>,
}

impl LeadToken {
    fn state(&mut self) -> &mut LeaderState {
        self.state.as_mut().expect("a live token holds the state")
    }
}

impl Drop for LeadToken {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.db.pipeline.release(&self.db, state);
        }
    }
}

/// Orders publication: groups publish in the order they were written.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    state: Mutex<PublishState>,
}

#[derive(Debug, Default)]
struct PublishState {
    /// The ticket whose turn it is.
    next: u64,
    waiting: BTreeMap<u64, Arc<Signal<()>>>,
    /// Tickets whose groups were cancelled; their turn is skipped.
    abandoned: BTreeSet<u64>,
}

impl Publisher {
    fn lock(&self) -> std::sync::MutexGuard<'_, PublishState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn wait_turn(&self, ticket: u64) {
        let signal = {
            let mut st = self.lock();
            if st.next == ticket {
                return;
            }
            let signal = Signal::new();
            st.waiting.insert(ticket, Arc::clone(&signal));
            signal
        };
        signal.wait().await;
    }

    fn pass_turn(&self, ticket: u64) {
        let mut st = self.lock();
        if st.next != ticket {
            st.abandoned.insert(ticket);
            return;
        }
        st.next += 1;
        loop {
            let next = st.next;
            if !st.abandoned.remove(&next) {
                break;
            }
            st.next += 1;
        }
        let next = st.next;
        if let Some(signal) = st.waiting.remove(&next) {
            let _ = signal.fill(());
        }
    }
}

/// The members of a group in flight. If the leader's future is dropped midway, nobody knows
/// what reached the WAL, so the database is poisoned, the members told so, and the group's
/// publication turn given up.
struct GroupGuard<'a> {
    db: &'a DbInner,
    members: Vec<Pending>,
    ticket: Option<u64>,
}

impl Drop for GroupGuard<'_> {
    fn drop(&mut self) {
        if !self.members.is_empty() {
            let err = self.db.poison("a commit was cancelled while in flight");
            fail_members(&mut self.members[1..], &err);
        }
        if let Some(ticket) = self.ticket.take() {
            self.db.publisher.pass_turn(ticket);
        }
    }
}

/// What the write stage produced for one group.
struct Written {
    firsts: Vec<u64>,
    last_seq: u64,
    ticket: u64,
    wal: Arc<WalFile>,
    end: u64,
    memtable: Arc<Memtable>,
}

/// Commits `batch`, returning its first sequence number (or the last assigned one for an empty
/// batch, which only syncs or seals).
pub(crate) async fn commit(
    db: &Arc<DbInner>,
    batch: WriteBatch,
    sync: bool,
    seal: bool,
) -> Result<u64> {
    let signal = Signal::new();
    let waiting = signal.wait();
    let pending = Pending { batch, sync, seal, signal };
    let token = match db.pipeline.enqueue(pending) {
        Some(state) => {
            drop(waiting);
            LeadToken { state: Some(state), db: Arc::clone(db) }
        }
        None => match waiting.await {
            Outcome::Done(result) => return result,
            Outcome::Lead(token) => token,
        },
    };
    lead(db, token).await
}

/// Runs one group as its leader and returns the leader's own result.
async fn lead(db: &Arc<DbInner>, mut token: LeadToken) -> Result<u64> {
    if !db.options.commit_window.is_zero() {
        db.rt.sleep(db.options.commit_window).await;
    }
    let members = db.pipeline.take_group(db.options.commit_group_bytes_max);
    let mut group = GroupGuard { db, members, ticket: None };
    let written = write_stage(db, token.state(), &group.members).await;
    drop(token);
    let written = match written {
        Ok(written) => written,
        Err(err) => {
            let err = refuse_or_poison(db, err);
            let mut members = std::mem::take(&mut group.members);
            fail_members(&mut members[1..], &err);
            return Err(err);
        }
    };
    group.ticket = Some(written.ticket);
    let need_sync = group.members.iter().any(|m| m.sync);
    let ack_early = need_sync && db.options.has_bug(PlantedBug::AckBeforeSync);
    let mut synced = Ok(());
    if need_sync && !ack_early {
        synced = written.wal.sync_to(written.end, &db.counters.wal_syncs).await;
    }
    if synced.is_ok() {
        apply(db, &written.memtable, &mut group.members, &written.firsts);
    }
    db.publisher.wait_turn(written.ticket).await;
    let outcome = synced.and_then(|()| db.check_not_poisoned());
    if outcome.is_ok() {
        db.publish(written.last_seq);
    }
    group.ticket = None;
    db.publisher.pass_turn(written.ticket);
    let mut members = std::mem::take(&mut group.members);
    drop(group);
    finish(db, &mut members, &written.firsts, outcome)?;
    if ack_early {
        written.wal.sync_to(written.end, &db.counters.wal_syncs).await?;
    }
    Ok(written.firsts[0])
}

/// Stage 1, exclusive: sequence, encode, append, take a ticket.
async fn write_stage(
    db: &Arc<DbInner>,
    state: &mut LeaderState,
    members: &[Pending],
) -> Result<Written> {
    db.check_not_poisoned()?;
    if state.sealed {
        return Err(Error::Closed);
    }
    if db.active_memtable_full() {
        rotate(db, state).await?;
    }
    let firsts = encode_group(state, members);
    if !state.buf.is_empty() {
        state.wal.append(&state.buf).await?;
        Counters::add(&db.counters.wal_bytes, state.buf.len() as u64);
    }
    Counters::add(&db.counters.commit_groups, 1);
    if members.last().is_some_and(|m| m.seal) {
        state.wal.seal(&mut state.buf, &db.counters.wal_syncs).await?;
        state.sealed = true;
    }
    let ticket = state.next_ticket;
    state.next_ticket += 1;
    Ok(Written {
        firsts,
        last_seq: state.last_seq,
        ticket,
        wal: Arc::clone(state.wal.file()),
        end: state.wal.offset(),
        memtable: db.active_memtable(),
    })
}

/// Assigns sequence numbers and encodes the group's WAL records into the reused buffer.
fn encode_group(state: &mut LeaderState, members: &[Pending]) -> Vec<u64> {
    state.buf.clear();
    let attested = state.wal.file().synced_upto();
    let mut firsts = Vec::with_capacity(members.len());
    for m in members {
        if m.batch.is_empty() {
            firsts.push(state.last_seq);
            continue;
        }
        let first = state.last_seq + 1;
        crate::wal::encode_batch_record(
            &mut state.buf,
            state.wal.number(),
            attested,
            first,
            m.batch.count(),
            m.batch.rep(),
        );
        state.last_seq += u64::from(m.batch.count());
        firsts.push(first);
    }
    firsts
}

/// Stage 3: insert every operation into the group's memtable.
fn apply(db: &DbInner, memtable: &Memtable, members: &mut [Pending], firsts: &[u64]) {
    for (member, &first) in members.iter_mut().zip(firsts) {
        if member.batch.is_empty() {
            continue;
        }
        let count = member.batch.count();
        let rep = Bytes::from(std::mem::take(&mut member.batch).into_rep());
        let ops = decode_ops(&rep, count).expect("a WriteBatch always holds well-formed ops");
        crate::db::apply_ops(memtable, first, ops);
        Counters::add(&db.counters.batches, 1);
    }
}

/// Completes the members other than the leader and returns the leader's outcome.
fn finish(
    db: &DbInner,
    members: &mut [Pending],
    firsts: &[u64],
    outcome: Result<()>,
) -> Result<()> {
    match outcome {
        Ok(()) => {
            for (member, &first) in members.iter().zip(firsts).skip(1) {
                // A member whose future was dropped is no longer listening; its write stands.
                let _ = member.signal.fill(Outcome::Done(Ok(first)));
            }
            Ok(())
        }
        Err(err) => {
            let err = refuse_or_poison(db, err);
            fail_members(&mut members[1..], &err);
            Err(err)
        }
    }
}

/// Retires the full memtable and its WAL and starts new ones.
async fn rotate(db: &Arc<DbInner>, state: &mut LeaderState) -> Result<()> {
    // Recovery treats any damage in a log that is not the newest as corruption, which is only
    // true if that log was wholly synced before a newer one could exist.
    state.wal.sync(&db.counters.wal_syncs).await?;
    let number = state.next_file_number;
    state.next_file_number += 1;
    state.wal = db.create_wal(number).await?;
    db.install_memtable(number);
    Counters::add(&db.counters.memtable_rotations, 1);
    Ok(())
}

/// A refusal (closed, already poisoned) is passed on as is; any other failure poisons.
fn refuse_or_poison(db: &DbInner, err: Error) -> Error {
    match err {
        Error::Poisoned(_) | Error::Closed => err,
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

fn fail_members(members: &mut [Pending], err: &Error) {
    for member in members {
        let _ = member.signal.fill(Outcome::Done(Err(clone_refusal(err))));
    }
}
