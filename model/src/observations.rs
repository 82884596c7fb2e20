//! Invariant 4 for whole reads, and invariant 7's "a scan shows the state at one sequence
//! number": each read is checked against the model's state at ONE sequence number, not key by
//! key, so a scan that shows half of a batch, or a client whose reads go back in time, is
//! caught.
//!
//! An observation is what one read showed over the key intervals it covered. The engine reads
//! at one sequence number S, publishes whole batches, publishes a batch before acking it and
//! never publishes a failed one, so for a read of the latest state:
//!
//! - S is at least the last sequence number acked before the read began (`lo`);
//! - S is at most the highest last sequence number of an acked write issued before the read
//!   ended (`hi`): a write issued later cannot be visible, and a failed write never is;
//! - S is a batch boundary: `lo`, or the last sequence number of an acked write;
//! - the reads of one client are sequential, so its S never decreases.
//!
//! The state at S is known only once every write issued before the read ended has an answer,
//! so an observation waits until then ([`Model::check_observations`] judges what it can); one
//! still waiting at a crash is dropped, since the write it waits for will never be answered. A
//! client's observations are judged in order, each at the smallest S that explains it and is
//! not below the S of the one before. The smallest, because it is the one S the read is proven
//! to have reached: the real one may be higher, never lower.
//!
//! Judging costs about as much as the read's keys and the writes between the candidates: the
//! state at the first candidate is built once, key by key, and each later candidate applies
//! only the batch that ends at it while keeping count of the keys that differ from the read.

use std::collections::{BTreeMap, VecDeque};
use std::mem;
use std::ops::Bound;

use crate::history::Write;
use crate::intervals;
use crate::{Key, Model, ReadToken, Value, Violation};

/// How many observations may wait per client (and for snapshots) before the oldest is
/// dropped. An observation waits only while a write issued before it has no answer, so the
/// bound is reached only if a write hangs for thousands of reads; dropping then makes the
/// check weaker, never wrong.
const PENDING_MAX: usize = 1 << 12;

/// What one read showed: for each interval of keys it covered, exactly the live entries in it.
///
/// A point read of `k` is the interval `[k, k]` with `seen` holding k's value or nothing; a
/// range scan `[a, b)` is one interval; an iterator walk with seeks and direction changes is
/// several (which may overlap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Who read. The reads of one client are sequential, so what they show never goes back.
    pub client: u64,
    /// The key intervals the read covered completely.
    pub intervals: Vec<(Bound<Key>, Bound<Key>)>,
    /// Every live entry the read returned inside those intervals (and nothing outside them).
    pub seen: BTreeMap<Key, Value>,
}

impl Observation {
    /// A point read of `key` that returned `value` (`None`: absent).
    pub fn point(client: u64, key: Key, value: Option<Value>) -> Observation {
        let intervals = vec![(Bound::Included(key.clone()), Bound::Included(key.clone()))];
        let seen = value.map(|value| (key, value)).into_iter().collect();
        Observation { client, intervals, seen }
    }

    /// A scan of `interval` that returned `seen`.
    pub fn scan(
        client: u64,
        interval: (Bound<Key>, Bound<Key>),
        seen: BTreeMap<Key, Value>,
    ) -> Observation {
        Observation { client, intervals: vec![interval], seen }
    }

    /// What the read showed in `key`.
    fn shown(&self, key: &[u8]) -> Option<&[u8]> {
        self.seen.get(key).map(Vec::as_slice)
    }
}

/// An observation waiting to be judged.
#[derive(Clone, Debug)]
struct Pending {
    /// With its intervals normalized (see `intervals`).
    obs: Observation,
    token: ReadToken,
    /// Model clock when the read returned.
    ended_at: u64,
}

/// The observations of an epoch not judged yet, and what the judged ones left behind.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observations {
    /// Latest-state reads, per client, in the order the client made them.
    latest: BTreeMap<u64, VecDeque<Pending>>,
    /// Snapshot reads, with the snapshot's sequence number.
    snapshots: Vec<(u64, Pending)>,
    /// For each client, the sequence number its last judged read was at.
    floors: BTreeMap<u64, u64>,
    /// The first observation handed in with a key outside its intervals.
    anomaly: Option<Violation>,
}

impl Observations {
    /// How many observations wait to be judged.
    pub(crate) fn pending(&self) -> u64 {
        let latest: usize = self.latest.values().map(VecDeque::len).sum();
        (latest + self.snapshots.len()) as u64
    }
}

impl Model {
    /// Records what a read of the latest state showed. `token` is from [`Model::begin_read`]
    /// taken before the engine call; call this right after the engine answered, before the
    /// model hears of anything else, then [`Model::check_observations`].
    pub fn observe(&mut self, token: ReadToken, obs: Observation) {
        let pending = self.admit(token, obs);
        let queue = self.observations.latest.entry(pending.obs.client).or_default();
        if queue.len() >= PENDING_MAX {
            queue.pop_front();
            self.stats.observations_dropped += 1;
        }
        queue.push_back(pending);
    }

    /// Records what a read through a snapshot pinned at `snap_seq` showed. `token` is from
    /// [`Model::begin_read`] taken right before the snapshot was created, with nothing in
    /// between: every write issued before it may lie below `snap_seq`, none issued after.
    pub fn observe_snapshot(&mut self, snap_seq: u64, token: ReadToken, obs: Observation) {
        let pending = self.admit(token, obs);
        if self.observations.snapshots.len() >= PENDING_MAX {
            self.observations.snapshots.remove(0);
            self.stats.observations_dropped += 1;
        }
        self.observations.snapshots.push((snap_seq, pending));
    }

    /// Judges every observation that can now be judged: the ones all of whose earlier writes
    /// have an answer. Call it after every ack, failure and observation. Reports the first
    /// observation no legal sequence number explains, and any ack a judged read showed to be
    /// out of order.
    pub fn check_observations(&mut self) -> Result<(), Violation> {
        self.check_acks()?;
        if let Some(violation) = &self.observations.anomaly {
            return Err(violation.clone());
        }
        self.judge_latest_reads()?;
        self.judge_snapshot_reads()?;
        // A judged read raises the floors of the writes issued after it, which may show that
        // one of them had been acked below what the read saw.
        self.check_acks()
    }

    /// Normalizes an observation, checks its keys lie inside its intervals and records the
    /// in-flight writes it proves visible.
    fn admit(&mut self, token: ReadToken, mut obs: Observation) -> Pending {
        assert_eq!(token.epoch, self.epoch, "a read token from before a restart was observed");
        obs.intervals = intervals::normalize(mem::take(&mut obs.intervals));
        let stray = obs.seen.keys().find(|key| !intervals::contains(&obs.intervals, key));
        if let Some(key) = stray {
            let violation = Violation::KeyOutsideRead { client: obs.client, key: key.clone() };
            self.observations.anomaly.get_or_insert(violation);
        }
        let ended_at = self.clock();
        self.note_shown_writes(&obs.intervals, &obs.seen, ended_at);
        Pending { obs, token, ended_at }
    }

    fn judge_latest_reads(&mut self) -> Result<(), Violation> {
        let clients: Vec<u64> = self.observations.latest.keys().copied().collect();
        for client in clients {
            while let Some(pending) = self.next_judgeable(client) {
                self.stats.observations_judged += 1;
                let floor = self.observations.floors.get(&client).copied();
                let seq = self.judge_latest(&pending, floor)?;
                self.observations.floors.insert(client, seq);
                self.prove_visible(pending.ended_at, seq);
            }
        }
        Ok(())
    }

    /// The client's oldest waiting observation, if every write issued before it ended has an
    /// answer.
    fn next_judgeable(&mut self, client: u64) -> Option<Pending> {
        let ended_at = self.observations.latest.get(&client)?.front()?.ended_at;
        if !self.settled_before(ended_at) {
            return None;
        }
        self.observations.latest.get_mut(&client)?.pop_front()
    }

    fn judge_snapshot_reads(&mut self) -> Result<(), Violation> {
        let waiting = mem::take(&mut self.observations.snapshots);
        // Writes issued after the snapshot was created lie above it, so only the earlier ones
        // need an answer.
        let (ready, waiting): (Vec<_>, Vec<_>) =
            waiting.into_iter().partition(|(_, pending)| self.settled_before(pending.token.at));
        self.observations.snapshots = waiting;
        for (snap_seq, pending) in ready {
            self.stats.observations_judged += 1;
            self.judge_snapshot(snap_seq, &pending)?;
            self.prove_visible(pending.ended_at, snap_seq);
        }
        Ok(())
    }

    /// The smallest legal sequence number, not below the client's `floor`, at which the state
    /// is what the read showed.
    fn judge_latest(&self, pending: &Pending, floor: Option<u64>) -> Result<u64, Violation> {
        let lo = pending.token.acked_seq;
        let hi = self.last_seq_issued_before(pending.ended_at).max(lo);
        let from = floor.map_or(lo, |floor| floor.max(lo));
        let mut closest = None;
        if from <= hi {
            let (differing, seq) = self.sweep(&pending.obs, from, hi);
            if differing == 0 {
                return Ok(seq);
            }
            closest = Some((differing, seq));
        }
        if from > lo {
            // Nothing at or above the floor explains the read: is it an older state?
            let below = self.sweep(&pending.obs, lo, hi.min(from - 1));
            if below.0 == 0 {
                let client = pending.obs.client;
                return Err(Violation::ReadWentBackwards { client, seq: below.1, floor: from });
            }
            closest = Some(closest.map_or(below, |closest| closest.min(below)));
        }
        let closest = closest.expect("from <= hi or from > lo, since hi >= lo");
        Err(self.not_at_one_seq(pending, closest, (lo, hi), floor))
    }

    /// Judges a snapshot read: the state at exactly `snap_seq`.
    fn judge_snapshot(&self, snap_seq: u64, pending: &Pending) -> Result<(), Violation> {
        let (base_seq, client) = (self.base_seq, pending.obs.client);
        if snap_seq < base_seq {
            return Err(Violation::SnapshotBelowBase { snap_seq, base_seq });
        }
        let acked_seq = pending.token.acked_seq;
        if snap_seq < acked_seq {
            let (_, index) = self.acked_boundary_at_or_below(acked_seq).expect("acked above base");
            let write = self.writes[index].id;
            return Err(Violation::SnapshotBelowAck { client, snap_seq, write, acked_seq });
        }
        let (differing_keys, _) = self.sweep(&pending.obs, snap_seq, snap_seq);
        if differing_keys == 0 {
            return Ok(());
        }
        let (key, expected) = self.first_difference(&pending.obs, snap_seq);
        let got = pending.obs.shown(key).map(<[u8]>::to_vec);
        Err(Violation::SnapshotReadNotAtItsSequence {
            client,
            snap_seq,
            key: key.to_vec(),
            got,
            expected: expected.map(<[u8]>::to_vec),
            differing_keys,
        })
    }

    /// Walks the candidates in `[from, to]` (`from` and every acked batch boundary above it)
    /// and returns the first where the state equals the read, as `(0, seq)`, or else the one
    /// where the fewest keys differ, as `(differing keys, seq)`.
    fn sweep(&self, obs: &Observation, from: u64, to: u64) -> (usize, u64) {
        let window = self.acked_between(from, to);
        let mut replay = Replay::new(self, obs, from, &window);
        let mut closest = (replay.differing, from);
        for &(first_seq, index) in &window {
            if closest.0 == 0 {
                break;
            }
            let write = &self.writes[index];
            replay.apply(write);
            if replay.differing < closest.0 {
                closest = (replay.differing, write.last_seq(first_seq));
            }
        }
        closest
    }

    /// The acked writes lying wholly inside `(from, to]`, in sequence order.
    fn acked_between(&self, from: u64, to: u64) -> Vec<(u64, usize)> {
        if to <= from {
            return Vec::new();
        }
        let inside =
            |&(first_seq, index): &(u64, usize)| self.writes[index].last_seq(first_seq) <= to;
        let ranges = self.acked_ranges.range(from + 1..=to);
        ranges.map(|(&first_seq, &index)| (first_seq, index)).take_while(inside).collect()
    }

    /// The highest last sequence number of an acked write issued before clock `at` (the base
    /// if none): no read ending at `at` can be above it.
    fn last_seq_issued_before(&self, at: u64) -> u64 {
        let issued_before = |&(_, &index): &(&u64, &usize)| self.writes[index].issued_at < at;
        let latest = self.acked_ranges.iter().rev().find(issued_before);
        latest.map_or(self.base_seq, |(&first_seq, &index)| self.writes[index].last_seq(first_seq))
    }

    /// Calls `visit` with every key inside the observation's intervals that the state at `at`
    /// or the read may hold, the model's value for it at `at` and what the read showed; each
    /// key once, in key order. One merge of the written keys, the base state and the read,
    /// so that a large scan costs no lookup per key.
    fn visit_state<'a>(
        &'a self,
        obs: &'a Observation,
        at: u64,
        mut visit: impl FnMut(&'a [u8], Option<&'a [u8]>, Option<&'a [u8]>),
    ) {
        for interval in &obs.intervals {
            let mut written = intervals::range(&self.by_key, interval).peekable();
            let mut base = intervals::range(&self.base_state, interval).peekable();
            let mut seen = intervals::range(&obs.seen, interval).peekable();
            loop {
                let heads = [written.peek().map(|e| e.0), base.peek().map(|e| e.0)];
                let Some(key) = heads.into_iter().chain([seen.peek().map(|e| e.0)]).flatten().min()
                else {
                    break;
                };
                let writers = written.next_if(|e| e.0 == key).map(|(_, writers)| writers);
                let base_value = base.next_if(|e| e.0 == key).map(|(_, value)| value.as_slice());
                let shown = seen.next_if(|e| e.0 == key).map(|(_, value)| value.as_slice());
                let acked = writers.and_then(|writers| self.acked_value_among(key, writers, at));
                visit(key, acked.unwrap_or(base_value), shown);
            }
        }
    }

    /// The first key (in key order) where the state at `at` differs from the read, and its
    /// value in that state.
    fn first_difference<'a>(
        &'a self,
        obs: &'a Observation,
        at: u64,
    ) -> (&'a [u8], Option<&'a [u8]>) {
        let mut first: Option<(&[u8], Option<&[u8]>)> = None;
        self.visit_state(obs, at, |key, expected, shown| {
            if expected != shown && first.is_none() {
                first = Some((key, expected));
            }
        });
        first.expect("a reported state differs from the read")
    }

    fn not_at_one_seq(
        &self,
        pending: &Pending,
        (differing_keys, closest_seq): (usize, u64),
        (lo, hi): (u64, u64),
        floor: Option<u64>,
    ) -> Violation {
        let (key, expected) = self.first_difference(&pending.obs, closest_seq);
        Violation::ReadNotAtOneSequence {
            client: pending.obs.client,
            key: key.to_vec(),
            got: pending.obs.shown(key).map(<[u8]>::to_vec),
            expected_at_closest_seq: expected.map(<[u8]>::to_vec),
            closest_seq,
            differing_keys,
            lo,
            hi,
            floor: floor.map_or(lo, |floor| floor.max(lo)),
        }
    }
}

/// The state of a read's keys at one sequence number, moved forward batch by batch, with the
/// number of keys where it differs from what the read showed.
struct Replay<'a> {
    obs: &'a Observation,
    /// The keys inside the read's intervals that the batches still to apply touch, with their
    /// value now; no other key can change.
    open: BTreeMap<&'a [u8], Option<&'a [u8]>>,
    differing: usize,
}

impl<'a> Replay<'a> {
    /// The state at `at`; `window` holds the batches that will be applied, in order.
    fn new(model: &'a Model, obs: &'a Observation, at: u64, window: &[(u64, usize)]) -> Self {
        let mut open = BTreeMap::new();
        for &(_, index) in window {
            let keys = model.writes[index].ops.iter().map(|op| op.key());
            for key in keys.filter(|key| intervals::contains(&obs.intervals, key)) {
                open.insert(key, None);
            }
        }
        let mut differing = 0;
        // Both the visit and `open` go in key order: one cursor fills `open` as keys pass.
        let mut slots = open.iter_mut().peekable();
        model.visit_state(obs, at, |key, expected, shown| {
            if expected != shown {
                differing += 1;
            }
            while slots.next_if(|(slot_key, _)| **slot_key < key).is_some() {}
            if let Some((_, slot)) = slots.next_if(|(slot_key, _)| **slot_key == key) {
                *slot = expected;
            }
        });
        Replay { obs, open, differing }
    }

    /// Applies the next batch of the window, op by op: the count is right once it is whole.
    fn apply(&mut self, write: &'a Write) {
        for op in &write.ops {
            let Some(slot) = self.open.get_mut(op.key()) else {
                continue;
            };
            let shown = self.obs.shown(op.key());
            match (*slot == shown, op.value() == shown) {
                (true, false) => self.differing += 1,
                (false, true) => self.differing -= 1,
                _ => {}
            }
            *slot = op.value();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ops::Bound::{Excluded, Included, Unbounded};

    use crate::test_util::{put, state};
    use crate::{Model, ModelStats, Observation, Violation};

    /// A scan of every key by `client` that returned `pairs`.
    fn scan_all(client: u64, pairs: &[(&str, &str)]) -> Observation {
        Observation::scan(client, (Unbounded, Unbounded), state(pairs))
    }

    /// A model whose base state holds `a` and `b` at "0", at seq 10.
    fn model() -> Model {
        let mut model = Model::new();
        model.restart(state(&[("a", "0"), ("b", "0")]), 10);
        model
    }

    /// Observes `obs` as a read that started and ended now, and judges it.
    fn read_now(model: &mut Model, obs: Observation) -> Result<(), Violation> {
        let token = model.begin_read();
        model.observe(token, obs);
        model.check_observations()
    }

    #[test]
    fn a_scan_showing_half_of_an_acked_batch_is_rejected() {
        let mut model = model();
        let batch = model.issue_write(vec![put("a", "1"), put("b", "1")], false);
        model.ack_write(batch, 11);
        let half = read_now(&mut model, scan_all(0, &[("a", "1"), ("b", "0")])).unwrap_err();
        let expected = Violation::ReadNotAtOneSequence {
            client: 0,
            key: b"b".to_vec(),
            got: Some(b"0".to_vec()),
            expected_at_closest_seq: Some(b"1".to_vec()),
            closest_seq: 12,
            differing_keys: 1,
            lo: 12,
            hi: 12,
            floor: 12,
        };
        assert_eq!(half, expected);
        let message = half.to_string();
        assert!(message.contains("key \"b\" as \"0\""), "{message}");
        assert!(message.contains("at seq 12"), "{message}");
        assert!(message.contains("the key is \"1\""), "{message}");
        // The whole batch, and only that, passes; so does a point read of either key.
        assert_eq!(read_now(&mut model, scan_all(1, &[("a", "1"), ("b", "1")])), Ok(()));
        let point = Observation::point(2, b"b".to_vec(), Some(b"1".to_vec()));
        assert_eq!(read_now(&mut model, point), Ok(()));
    }

    #[test]
    fn a_scan_concurrent_with_a_batch_sees_all_of_it_or_none() {
        let mut model = model();
        let token = model.begin_read();
        let batch = model.issue_write(vec![put("a", "1"), put("b", "1")], false);
        for (client, pairs) in [
            (0, &[("a", "0"), ("b", "0")]),
            (1, &[("a", "1"), ("b", "1")]),
            (2, &[("a", "1"), ("b", "0")]),
            (3, &[("a", "0"), ("b", "1")]),
        ] {
            model.observe(token, scan_all(client, pairs));
        }
        // Nothing can be judged while the batch has no answer.
        assert_eq!(model.check_observations(), Ok(()));
        assert_eq!(model.stats().observations_judged, 0);
        model.ack_write(batch, 11);
        let result = model.check_observations();
        assert!(matches!(result, Err(Violation::ReadNotAtOneSequence { client: 2, .. })));
        let result = model.check_observations();
        assert!(
            matches!(result, Err(Violation::ReadNotAtOneSequence { client: 3, ref key, .. }) if key == b"b"),
            "{result:?}"
        );
        assert_eq!(model.check_observations(), Ok(()));
        assert_eq!(model.stats().observations_judged, 4);
    }

    #[test]
    fn a_scan_at_an_older_but_allowed_seq_is_accepted() {
        let mut model = model();
        let token = model.begin_read();
        let first = model.issue_write(vec![put("a", "1")], false);
        let second = model.issue_write(vec![put("a", "2"), put("b", "2")], false);
        model.ack_write(first, 11);
        model.ack_write(second, 12);
        // Between the two writes: a state the engine held while the read ran.
        model.observe(token, scan_all(0, &[("a", "1"), ("b", "0")]));
        assert_eq!(model.check_observations(), Ok(()));
        // A write acked before the read began is not optional, though.
        let stale = read_now(&mut model, scan_all(1, &[("a", "1"), ("b", "0")])).unwrap_err();
        assert!(matches!(stale, Violation::ReadNotAtOneSequence { lo: 13, hi: 13, .. }), "{stale}");
    }

    #[test]
    fn a_write_issued_after_the_read_ended_is_never_visible() {
        let mut model = model();
        let token = model.begin_read();
        let obs = scan_all(0, &[("a", "1"), ("b", "0")]);
        model.observe(token, obs);
        let later = model.issue_write(vec![put("a", "1")], false);
        model.ack_write(later, 11);
        let result = model.check_observations();
        assert!(
            matches!(result, Err(Violation::ReadNotAtOneSequence { hi: 10, .. })),
            "{result:?}"
        );
    }

    #[test]
    fn a_failed_writes_value_is_rejected() {
        let mut model = model();
        let failed = model.issue_write(vec![put("a", "1")], false);
        let token = model.begin_read();
        model.observe(token, Observation::point(0, b"a".to_vec(), Some(b"1".to_vec())));
        assert_eq!(model.check_observations(), Ok(()));
        model.fail_write(failed);
        let result = model.check_observations();
        let expected = Violation::ReadNotAtOneSequence {
            client: 0,
            key: b"a".to_vec(),
            got: Some(b"1".to_vec()),
            expected_at_closest_seq: Some(b"0".to_vec()),
            closest_seq: 10,
            differing_keys: 1,
            lo: 10,
            hi: 10,
            floor: 10,
        };
        assert_eq!(result, Err(expected));
        // The per-key check stays permissive about it, as it always was.
        assert_eq!(model.check_read(b"a", &token, Some(b"1")), Ok(()));
    }

    #[test]
    fn a_clients_reads_never_go_back_but_clients_may_differ() {
        let mut model = model();
        let first = model.issue_write(vec![put("a", "1")], false);
        let second = model.issue_write(vec![put("a", "2")], false);
        let saw =
            |value: &str| Observation::point(0, b"a".to_vec(), Some(value.as_bytes().to_vec()));
        // Client 0 sees the second write, then the first: back in time, since the second
        // lands above the first. Client 1, reading meanwhile, sees the first: fine.
        let token = model.begin_read();
        model.observe(token, saw("2"));
        let other = model.begin_read();
        let token = model.begin_read();
        model.observe(token, saw("1"));
        let mut client_1 = saw("1");
        client_1.client = 1;
        model.observe(other, client_1);
        model.ack_write(first, 11);
        model.ack_write(second, 12);
        let result = model.check_observations();
        assert_eq!(result, Err(Violation::ReadWentBackwards { client: 0, seq: 11, floor: 12 }));
        let message = result.unwrap_err().to_string();
        assert!(message.contains("client 0's read is the state at seq 11, and at no"), "{message}");
        assert_eq!(model.check_observations(), Ok(()));
    }

    #[test]
    fn a_client_may_read_forward() {
        let mut model = model();
        let first = model.issue_write(vec![put("a", "1")], false);
        let second = model.issue_write(vec![put("a", "2")], false);
        for value in ["0", "1", "1", "2"] {
            let token = model.begin_read();
            let obs = Observation::point(0, b"a".to_vec(), Some(value.as_bytes().to_vec()));
            model.observe(token, obs);
        }
        model.ack_write(first, 11);
        model.ack_write(second, 12);
        assert_eq!(model.check_observations(), Ok(()));
        assert_eq!(model.stats().observations_judged, 4);
    }

    #[test]
    fn an_iterator_walk_covers_several_intervals() {
        let mut model = model();
        let batch = model.issue_write(vec![put("a", "1"), put("c", "1"), put("e", "1")], false);
        model.ack_write(batch, 11);
        // Forward over [a, b], a seek back to [a, a] and on to (c, e]: "c" is not covered,
        // so the read may miss it.
        let walk = |seen: &[(&str, &str)]| Observation {
            client: 0,
            intervals: vec![
                (Included(b"a".to_vec()), Included(b"b".to_vec())),
                (Excluded(b"c".to_vec()), Included(b"e".to_vec())),
                (Included(b"a".to_vec()), Included(b"a".to_vec())),
            ],
            seen: state(seen),
        };
        assert_eq!(read_now(&mut model, walk(&[("a", "1"), ("b", "0"), ("e", "1")])), Ok(()));
        let missed = read_now(&mut model, walk(&[("a", "1"), ("b", "0")])).unwrap_err();
        assert!(
            matches!(missed, Violation::ReadNotAtOneSequence { ref key, ref got, .. } if key == b"e" && got.is_none()),
            "{missed}"
        );
        let outside = read_now(&mut model, walk(&[("a", "1"), ("b", "0"), ("c", "1")]));
        let expected = Violation::KeyOutsideRead { client: 0, key: b"c".to_vec() };
        assert_eq!(outside, Err(expected));
    }

    #[test]
    fn a_key_nothing_wrote_is_rejected() {
        let mut model = model();
        let extra = read_now(&mut model, scan_all(0, &[("a", "0"), ("b", "0"), ("z", "9")]));
        assert!(
            matches!(extra, Err(Violation::ReadNotAtOneSequence { ref key, .. }) if key == b"z"),
            "{extra:?}"
        );
    }

    #[test]
    fn a_snapshot_read_is_the_state_at_its_seq() {
        let mut model = model();
        let first = model.issue_write(vec![put("a", "1"), put("b", "1")], false);
        model.ack_write(first, 11);
        let token = model.begin_read(); // the snapshot is created now, at seq 12
        let second = model.issue_write(vec![put("a", "2")], false);
        model.ack_write(second, 13);
        let at_12 = scan_all(0, &[("a", "1"), ("b", "1")]);
        model.observe_snapshot(12, token, at_12.clone());
        assert_eq!(model.check_observations(), Ok(()));
        model.observe_snapshot(12, token, scan_all(0, &[("a", "2"), ("b", "1")]));
        let newer = model.check_observations().unwrap_err();
        let expected = Violation::SnapshotReadNotAtItsSequence {
            client: 0,
            snap_seq: 12,
            key: b"a".to_vec(),
            got: Some(b"2".to_vec()),
            expected: Some(b"1".to_vec()),
            differing_keys: 1,
        };
        assert_eq!(newer, expected);
        // Half a batch: the snapshot is not on a batch boundary.
        model.observe_snapshot(11, token, scan_all(0, &[("a", "1"), ("b", "0")]));
        let below = model.check_observations().unwrap_err();
        assert!(matches!(below, Violation::SnapshotBelowAck { snap_seq: 11, acked_seq: 12, .. }));
        assert!(below.to_string().contains("write #0 had been acked up to seq 12"), "{below}");
        let old_token = model.begin_read();
        model.observe_snapshot(9, old_token, at_12);
        let below_base = model.check_observations();
        assert_eq!(below_base, Err(Violation::SnapshotBelowBase { snap_seq: 9, base_seq: 10 }));
    }

    #[test]
    fn a_snapshot_read_waits_only_for_writes_issued_before_the_snapshot() {
        let mut model = model();
        let before = model.issue_write(vec![put("a", "1")], false);
        let token = model.begin_read();
        let after = model.issue_write(vec![put("b", "1")], false);
        // The snapshot holds the write in flight when it was created: it was committed.
        model.observe_snapshot(11, token, scan_all(0, &[("a", "1"), ("b", "0")]));
        assert_eq!(model.check_observations(), Ok(()));
        assert_eq!(model.stats().observations_judged, 0);
        model.ack_write(before, 11);
        assert_eq!(model.check_observations(), Ok(()));
        assert_eq!(model.stats().observations_judged, 1);
        model.fail_write(after);
    }

    #[test]
    fn an_observation_waiting_at_a_crash_is_dropped() {
        let mut model = model();
        let lost = model.issue_write(vec![put("a", "1")], false);
        model.ack_write(lost, 11);
        read_now(&mut model, scan_all(0, &[("a", "1"), ("b", "0")])).unwrap();
        model.issue_write(vec![put("b", "2")], false);
        read_now(&mut model, scan_all(0, &[("a", "1"), ("b", "2")])).unwrap();
        let token = model.begin_read();
        model.observe_snapshot(11, token, scan_all(1, &[("a", "1"), ("b", "0")]));
        assert_eq!(model.check_observations(), Ok(()));
        // The crash loses both writes (neither was synced).
        model.restart(state(&[("a", "0"), ("b", "0")]), 10);
        let expected =
            ModelStats { observations_judged: 1, observations_dropped: 2, ..ModelStats::default() };
        assert_eq!(model.stats(), expected);
        // Client 0 had read at seq 11; that floor went with the epoch, as the write did.
        assert_eq!(read_now(&mut model, scan_all(0, &[("a", "0"), ("b", "0")])), Ok(()));
    }

    #[test]
    #[should_panic(expected = "before a restart")]
    fn an_observation_with_a_token_from_an_old_epoch_panics() {
        let mut model = model();
        let token = model.begin_read();
        model.restart(BTreeMap::new(), 10);
        model.observe(token, scan_all(0, &[]));
    }
}
