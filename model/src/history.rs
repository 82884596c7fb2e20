//! The model's record of one epoch (the time between two recoveries): the state and sequence
//! number it started from, and every write issued since, with what became of it.
//!
//! Time inside an epoch is a logical clock that ticks on every issue, ack and failure. Reads do
//! not tick it (they take `&self`); a read started at clock `t` has seen exactly the acks stamped
//! before `t`. Each write also remembers the highest sequence number acked before it was issued
//! (its *floor*): the engine assigns sequence numbers in commit order, so a write cannot commit
//! below a write that had already returned before it was even issued.
//!
//! A floor can rise after the write was issued: when a read that ended before the issue is
//! later proven to have shown some sequence number (see `causal`), the write must lie above
//! that too. Floors never decrease along the issue order, which keeps raising them cheap.
//!
//! Problems the engine shows at ack time (a sequence number reused or out of real-time order)
//! cannot be returned from `ack_write`, so the first one is kept and reported by
//! [`Model::check_acks`] and [`Model::check_recovery`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::observations::Observations;
use crate::{Key, Op, Value, Violation, WriteId};

/// What became of a write so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Issued, no answer yet; indeterminate if the process crashes now.
    InFlight,
    /// The engine returned an error: indeterminate, its sequence number unknown.
    Failed,
    /// The engine returned Ok with this first sequence number at clock `acked_at`.
    Acked { first_seq: u64, acked_at: u64 },
}

/// One issued write batch.
#[derive(Clone, Debug)]
pub(crate) struct Write {
    pub(crate) id: WriteId,
    pub(crate) ops: Vec<Op>,
    pub(crate) sync: bool,
    /// Model clock at which the write was issued.
    pub(crate) issued_at: u64,
    /// Highest sequence number acked before this write was issued (the base if none), or
    /// proven visible to a read that ended before it was issued.
    pub(crate) floor_seq: u64,
    /// The write that ends at `floor_seq`, to name it in reports.
    pub(crate) floor_write: Option<WriteId>,
    pub(crate) status: Status,
    /// When a read first showed this write while its outcome was unknown.
    pub(crate) seen_at: SeenAt,
}

/// The earliest model clock at which a read proved a write visible while the write's outcome
/// was still unknown. An atomic only so that [`Model::check_read`], which takes `&self`, can
/// record it while `Model` stays `Sync`; the model is used by one thread at a time, so relaxed
/// ordering is all it needs.
#[derive(Debug)]
pub(crate) struct SeenAt(AtomicU64);

impl SeenAt {
    const NEVER: u64 = u64::MAX;

    fn never() -> SeenAt {
        SeenAt(AtomicU64::new(SeenAt::NEVER))
    }

    pub(crate) fn get(&self) -> Option<u64> {
        let at = self.0.load(Ordering::Relaxed);
        (at != SeenAt::NEVER).then_some(at)
    }

    /// Keeps the earlier of the recorded clock and `at`.
    pub(crate) fn record(&self, at: u64) {
        self.0.fetch_min(at, Ordering::Relaxed);
    }
}

impl Clone for SeenAt {
    fn clone(&self) -> SeenAt {
        SeenAt(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

// `check_read` records through `&self` (see `SeenAt`), yet the model stays plain data that can
// be shared and sent like before.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Model>();
};

impl Write {
    /// How many sequence numbers the batch takes.
    pub(crate) fn len(&self) -> u64 {
        self.ops.len() as u64
    }

    /// The first sequence number, if the engine told us.
    pub(crate) fn first_seq(&self) -> Option<u64> {
        match self.status {
            Status::Acked { first_seq, .. } => Some(first_seq),
            Status::InFlight | Status::Failed => None,
        }
    }

    /// The last sequence number the batch takes when it starts at `first_seq`.
    pub(crate) fn last_seq(&self, first_seq: u64) -> u64 {
        first_seq + self.len() - 1
    }

    /// Whether the engine has not answered (or failed) this write: its sequence number is
    /// unknown.
    pub(crate) fn unknown(&self) -> bool {
        matches!(self.status, Status::InFlight | Status::Failed)
    }

    /// Whether the engine acked this write before clock `at`.
    pub(crate) fn acked_before(&self, at: u64) -> bool {
        matches!(self.status, Status::Acked { acked_at, .. } if acked_at < at)
    }

    /// What the batch leaves in `key` (the last op on it wins); `None` if it does not touch it.
    pub(crate) fn final_value(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        let op = self.ops.iter().rev().find(|op| op.key() == key)?;
        Some(op.value())
    }

    /// The first key the batch touches, to name it in reports.
    pub(crate) fn first_key(&self) -> Key {
        self.ops[0].key().to_vec()
    }
}

/// Captured when a read starts: which acks the read must see, and in which epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadToken {
    pub(crate) epoch: u64,
    pub(crate) at: u64,
    /// Highest last sequence number acked before the read started (the base if none): the
    /// read cannot be at a lower one.
    pub(crate) acked_seq: u64,
}

/// Counts of this epoch's writes, and of the observations judged so far, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Writes issued.
    pub issued: u64,
    /// Writes the engine acknowledged.
    pub acked: u64,
    /// Writes the engine answered with an error.
    pub failed: u64,
    /// Writes still waiting for an answer.
    pub in_flight: u64,
    /// Acknowledged writes that asked for sync (the ones that must survive any crash).
    pub synced: u64,
    /// Observations judged since the model was created (not reset by a restart).
    pub observations_judged: u64,
    /// Observations dropped since the model was created, because a restart came while a
    /// write issued before them still had no answer (not reset by a restart).
    pub observations_dropped: u64,
}

/// The reference model: the state the engine started the epoch from, and every write since.
#[derive(Clone, Debug)]
pub struct Model {
    pub(crate) base_seq: u64,
    pub(crate) base_state: BTreeMap<Key, Value>,
    pub(crate) epoch: u64,
    clock: u64,
    /// Id of `writes[0]`; ids below it belong to earlier epochs.
    first_id: u64,
    pub(crate) writes: Vec<Write>,
    /// For each key, the indices (into `writes`) of the writes touching it, in issue order, so
    /// a read looks only at the writes that matter to it.
    pub(crate) by_key: BTreeMap<Key, Vec<usize>>,
    /// Acked writes by first sequence number; their ranges never overlap (an overlapping ack is
    /// an anomaly and is left out).
    pub(crate) acked_ranges: BTreeMap<u64, usize>,
    /// Writes still waiting for an answer, by index; the first is the oldest, which decides
    /// which observations can be judged.
    pub(crate) in_flight: BTreeSet<usize>,
    /// Highest last sequence number acked so far, and by whom.
    max_acked: Option<(u64, WriteId)>,
    frontier: u64,
    pub(crate) ack_anomaly: Option<Violation>,
    pub(crate) observations: Observations,
    pub(crate) stats: ModelStats,
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

impl Model {
    /// An empty model: empty state, base sequence number 0.
    pub fn new() -> Model {
        Model {
            base_seq: 0,
            base_state: BTreeMap::new(),
            epoch: 0,
            clock: 0,
            first_id: 0,
            writes: Vec::new(),
            by_key: BTreeMap::new(),
            acked_ranges: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            max_acked: None,
            frontier: 0,
            ack_anomaly: None,
            observations: Observations::default(),
            stats: ModelStats::default(),
        }
    }

    /// The sequence number this epoch started from (the last recovered one).
    pub fn base_seq(&self) -> u64 {
        self.base_seq
    }

    /// The state this epoch started from (the last recovered one).
    pub fn base_state(&self) -> &BTreeMap<Key, Value> {
        &self.base_state
    }

    /// Records a write batch about to be handed to the engine. Call it before the engine call,
    /// so that the model never believes a write began later than it did.
    pub fn issue_write(&mut self, ops: Vec<Op>, sync: bool) -> WriteId {
        assert!(!ops.is_empty(), "a write batch needs at least one op");
        let index = self.writes.len();
        let id = WriteId(self.first_id + index as u64);
        for key in ops.iter().map(Op::key) {
            let writers = self.by_key.entry(key.to_vec()).or_default();
            if writers.last() != Some(&index) {
                writers.push(index);
            }
        }
        let (floor_seq, floor_write) = match self.max_acked {
            Some((seq, write)) => (seq, Some(write)),
            None => (self.base_seq, None),
        };
        let (status, issued_at, seen_at) = (Status::InFlight, self.clock, SeenAt::never());
        self.writes.push(Write {
            id,
            ops,
            sync,
            issued_at,
            floor_seq,
            floor_write,
            status,
            seen_at,
        });
        self.in_flight.insert(index);
        self.clock += 1;
        self.stats.issued += 1;
        self.stats.in_flight += 1;
        id
    }

    /// Records that the engine returned Ok for `id`, which took sequence numbers
    /// `first_seq .. first_seq + ops`.
    pub fn ack_write(&mut self, id: WriteId, first_seq: u64) {
        let index = self.index_of(id).unwrap_or_else(|| panic!("{id} was acked after a restart"));
        self.expect_in_flight(index, "acked");
        let acked_at = self.clock;
        self.clock += 1;
        self.in_flight.remove(&index);
        let write = &mut self.writes[index];
        write.status = Status::Acked { first_seq, acked_at };
        let (sync, last_seq, seen_at) =
            (write.sync, write.last_seq(first_seq), write.seen_at.get());
        self.stats.in_flight -= 1;
        self.stats.acked += 1;
        if sync {
            self.stats.synced += 1;
            self.frontier = self.frontier.max(last_seq);
        }
        if let Err(violation) = self.place_ack(index, first_seq, last_seq) {
            self.ack_anomaly.get_or_insert(violation);
        }
        if self.max_acked.is_none_or(|(seq, _)| seq < last_seq) {
            self.max_acked = Some((last_seq, id));
        }
        // A read showed this write before its ack: whatever was issued after that read must
        // lie above it.
        if let Some(seen_at) = seen_at {
            self.prove_visible(seen_at, last_seq);
        }
    }

    /// Records that the engine returned an error for `id`: it may or may not have taken effect.
    /// A write forgotten by a restart is ignored: the crash already made it indeterminate.
    pub fn fail_write(&mut self, id: WriteId) {
        let Some(index) = self.index_of(id) else {
            return;
        };
        self.expect_in_flight(index, "failed");
        self.clock += 1;
        self.in_flight.remove(&index);
        self.writes[index].status = Status::Failed;
        self.stats.in_flight -= 1;
        self.stats.failed += 1;
    }

    /// Captures the moment a read starts; pass the token to [`Model::check_read`] or
    /// [`Model::observe`] (or, taken when a snapshot is created, to
    /// [`Model::observe_snapshot`]).
    pub fn begin_read(&self) -> ReadToken {
        let acked_seq = self.max_acked.map_or(self.base_seq, |(seq, _)| seq.max(self.base_seq));
        ReadToken { epoch: self.epoch, at: self.clock, acked_seq }
    }

    /// Starts a new epoch after a successful [`Model::check_recovery`]: the recovered state
    /// becomes the base and every write of the old epoch is forgotten (the ones that survived
    /// are in the base now; the others are gone for good). Observations not judged yet are
    /// dropped: a write they depend on was in flight at the crash and will never be answered.
    pub fn restart(&mut self, recovered: BTreeMap<Key, Value>, recovered_seq: u64) {
        let next_id = self.first_id + self.writes.len() as u64;
        let epoch = self.epoch + 1;
        let judged = self.stats.observations_judged;
        let dropped = self.stats.observations_dropped + self.observations.pending();
        *self = Model::new();
        self.stats.observations_judged = judged;
        self.stats.observations_dropped = dropped;
        self.base_state = recovered;
        self.base_seq = recovered_seq;
        self.frontier = recovered_seq;
        self.epoch = epoch;
        self.first_id = next_id;
    }

    /// Highest sequence number that must survive a crash: the largest last sequence number of
    /// an acked synced write, or the base sequence number if there is none.
    pub fn durable_frontier(&self) -> u64 {
        self.frontier
    }

    /// Counts of this epoch's writes, for reports.
    pub fn stats(&self) -> ModelStats {
        self.stats
    }

    /// The first sequence-number anomaly the engine showed when acking (a sequence number at or
    /// below the base, two acked batches overlapping, or a batch committed below one that had
    /// returned before it was issued). [`Model::check_recovery`] reports it too.
    pub fn check_acks(&self) -> Result<(), Violation> {
        match &self.ack_anomaly {
            Some(violation) => Err(violation.clone()),
            None => Ok(()),
        }
    }

    /// Whether every write issued before clock `at` has an answer, so that the sequence
    /// numbers a read ending at `at` may show are all known.
    pub(crate) fn settled_before(&self, at: u64) -> bool {
        self.in_flight.first().is_none_or(|&oldest| self.writes[oldest].issued_at >= at)
    }

    /// The model clock now: a read that returns now ends at it.
    pub(crate) fn clock(&self) -> u64 {
        self.clock
    }

    fn index_of(&self, id: WriteId) -> Option<usize> {
        let next_id = self.first_id + self.writes.len() as u64;
        assert!(id.0 < next_id, "{id} was never issued");
        id.0.checked_sub(self.first_id).map(|index| index as usize)
    }

    fn expect_in_flight(&self, index: usize, what: &str) {
        let write = &self.writes[index];
        assert!(
            write.status == Status::InFlight,
            "{} {what} twice (it was already {:?})",
            write.id,
            write.status
        );
    }

    /// Checks a fresh ack against the base, the other acks and real time, then indexes it.
    fn place_ack(&mut self, index: usize, first_seq: u64, last_seq: u64) -> Result<(), Violation> {
        let write = &self.writes[index];
        if first_seq <= self.base_seq {
            let base_seq = self.base_seq;
            return Err(Violation::SeqNotAboveBase { write: write.id, first_seq, base_seq });
        }
        if let Some(other) = self.overlapping_ack(first_seq, last_seq) {
            let other = &self.writes[other];
            let other_first_seq = other.first_seq().unwrap_or_default();
            return Err(Violation::SeqOverlap {
                write: write.id,
                first_seq,
                last_seq,
                other: other.id,
                other_first_seq,
                other_last_seq: other.last_seq(other_first_seq),
            });
        }
        self.acked_ranges.insert(first_seq, index);
        match write.floor_write {
            Some(earlier) if first_seq <= write.floor_seq => Err(Violation::AckReordered {
                write: write.id,
                first_seq,
                earlier,
                earlier_last_seq: write.floor_seq,
            }),
            _ => Ok(()),
        }
    }

    /// An acked write whose range shares a sequence number with `first_seq..=last_seq`.
    fn overlapping_ack(&self, first_seq: u64, last_seq: u64) -> Option<usize> {
        let before = self.acked_ranges.range(..=first_seq).next_back();
        if let Some((&other_first, &other)) = before {
            if self.writes[other].last_seq(other_first) >= first_seq {
                return Some(other);
            }
        }
        let after = self.acked_ranges.range(first_seq..).next();
        after.filter(|(&other_first, _)| other_first <= last_seq).map(|(_, &other)| other)
    }
}
