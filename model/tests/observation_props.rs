//! Property tests of `Model::observe` against an independent oracle: histories of concurrent
//! batches, each acked with a sequence number the test chooses, read by clients whose reads
//! are built here from the true state at a sequence number a correct engine could have read
//! at. The model must accept every such read, and reject one that shows half of a batch.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};

use jadedb_model::{Key, Model, Observation, Op, Value, Violation};
use proptest::prelude::*;
use proptest::sample::Index;

type State = BTreeMap<Key, Value>;
type Interval = (Bound<Key>, Bound<Key>);

/// Keys `k0` to `k5` are written; `k6` to `k8` only ever appear in read intervals.
const WRITTEN_KEYS: u8 = 6;
const CLIENTS: usize = 2;

fn key(k: u8) -> Key {
    format!("k{k}").into_bytes()
}

/// One write batch: `(key, delete?)` per op; the value is made unique per write when the
/// history is built, as the simulator's are.
type Batch = Vec<(u8, bool)>;

/// Writes issued together, each with a key placing it in the commit order and one placing it
/// in the ack order.
type Round = Vec<(Batch, u16, u16)>;

fn batch() -> impl Strategy<Value = Batch> {
    prop::collection::vec((0..WRITTEN_KEYS, prop::bool::weighted(0.2)), 1..5)
}

/// A round: writes issued together, then committed and acked each in its own random order.
fn round() -> impl Strategy<Value = Round> {
    prop::collection::vec((batch(), any::<u16>(), any::<u16>()), 1..4)
}

fn interval() -> impl Strategy<Value = Interval> {
    let bound = (prop::option::of(0u8..9), any::<bool>()).prop_map(|(k, inclusive)| match k {
        None => Bound::Unbounded,
        Some(k) if inclusive => Bound::Included(key(k)),
        Some(k) => Bound::Excluded(key(k)),
    });
    (bound.clone(), bound)
}

/// Per client, the points in the history where its reads begin and end, and what each covers.
fn reads() -> impl Strategy<Value = Vec<Vec<(Index, Vec<Interval>, Index)>>> {
    let read = (any::<Index>(), prop::collection::vec(interval(), 1..4), any::<Index>());
    prop::collection::vec(prop::collection::vec(read, 0..4), CLIENTS)
}

/// What happens to the model, in order.
#[derive(Clone, Copy, Debug)]
enum Event {
    Issue(usize),
    Ack(usize),
}

/// A history as the engine ran it.
#[derive(Debug)]
struct History {
    base: (State, u64),
    writes: Vec<Vec<Op>>,
    /// First sequence number of each write.
    first_seqs: Vec<u64>,
    events: Vec<Event>,
}

impl History {
    fn build(base: (State, u64), rounds: &[Round]) -> History {
        let mut history =
            History { base, writes: Vec::new(), first_seqs: Vec::new(), events: Vec::new() };
        let mut next_seq = history.base.1 + 1;
        for round in rounds {
            let start = history.writes.len();
            for (w, (ops, _, _)) in round.iter().enumerate() {
                let index = start + w;
                let value = |o: usize| format!("w{index}o{o}").into_bytes();
                let ops = ops.iter().enumerate().map(|(o, &(k, delete))| match delete {
                    true => Op::Delete(key(k)),
                    false => Op::Put(key(k), value(o)),
                });
                history.writes.push(ops.collect());
                history.first_seqs.push(0);
                history.events.push(Event::Issue(index));
            }
            let mut commit: Vec<usize> = (0..round.len()).collect();
            commit.sort_by_key(|&w| (round[w].1, w));
            for w in commit {
                history.first_seqs[start + w] = next_seq;
                next_seq += round[w].0.len() as u64;
            }
            let mut acks: Vec<usize> = (0..round.len()).collect();
            acks.sort_by_key(|&w| (round[w].2, w));
            history.events.extend(acks.into_iter().map(|w| Event::Ack(start + w)));
        }
        history
    }

    fn last_seq(&self, write: usize) -> u64 {
        self.first_seqs[write] + self.writes[write].len() as u64 - 1
    }

    /// The state after every write ending at or below `seq`, folded here in seq order.
    fn state_at(&self, seq: u64) -> State {
        let mut order: Vec<usize> = (0..self.writes.len()).collect();
        order.sort_by_key(|&w| self.first_seqs[w]);
        let mut state = self.base.0.clone();
        for w in order.into_iter().filter(|&w| self.last_seq(w) <= seq) {
            for op in &self.writes[w] {
                match op {
                    Op::Put(key, value) => state.insert(key.clone(), value.clone()),
                    Op::Delete(key) => state.remove(key),
                };
            }
        }
        state
    }

    /// The sequence numbers a correct engine could read at between event positions `begin`
    /// and `end`: batch boundaries at or above every write acked before `begin`, such that
    /// every write at or below them was issued before `end`.
    fn legal_seqs(&self, begin: usize, end: usize) -> Vec<u64> {
        let acked_before = self.events[..begin].iter().filter_map(|event| match event {
            Event::Ack(w) => Some(self.last_seq(*w)),
            Event::Issue(_) => None,
        });
        let lo = acked_before.max().unwrap_or(self.base.1).max(self.base.1);
        let issued_by_end: Vec<bool> = (0..self.writes.len())
            .map(|w| self.events[..end].iter().any(|e| matches!(e, Event::Issue(i) if *i == w)))
            .collect();
        let visible_only_if_issued =
            |seq: u64| (0..self.writes.len()).all(|w| self.last_seq(w) > seq || issued_by_end[w]);
        let boundaries = (0..self.writes.len()).map(|w| self.last_seq(w)).filter(|&s| s > lo);
        let mut seqs: Vec<u64> = std::iter::once(lo).chain(boundaries).collect();
        seqs.retain(|&seq| visible_only_if_issued(seq));
        seqs.sort_unstable();
        seqs
    }
}

/// One read as the test plans it.
#[derive(Clone, Debug)]
struct Read {
    client: u64,
    begin: usize,
    end: usize,
    seq: u64,
    obs: Observation,
}

fn restrict(state: &State, intervals: &[Interval]) -> State {
    let covered = |key: &Key| intervals.iter().any(|interval| interval.contains(key));
    state.iter().filter(|(key, _)| covered(key)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Turns each client's planned reads into reads of the true state at a legal sequence number,
/// never below that client's previous one.
fn plan_reads(
    history: &History,
    plans: &[Vec<(Index, Vec<Interval>, Index)>],
    pick: &[Index],
) -> Vec<Read> {
    let positions = history.events.len() + 1;
    let mut reads = Vec::new();
    for (client, plan) in plans.iter().enumerate() {
        let mut points: Vec<usize> = plan
            .iter()
            .flat_map(|(begin, _, end)| [begin.index(positions), end.index(positions)])
            .collect();
        points.sort_unstable();
        let mut floor = 0;
        for (r, (_, intervals, _)) in plan.iter().enumerate() {
            let (begin, end) = (points[2 * r], points[2 * r + 1]);
            let legal: Vec<u64> =
                history.legal_seqs(begin, end).into_iter().filter(|&s| s >= floor).collect();
            let seq = legal[pick[(client * 4 + r) % pick.len()].index(legal.len())];
            floor = seq;
            let seen = restrict(&history.state_at(seq), intervals);
            let obs = Observation { client: client as u64, intervals: intervals.clone(), seen };
            reads.push(Read { client: client as u64, begin, end, seq, obs });
        }
    }
    reads
}

/// Runs the history through a model with the reads, checking observations after every event;
/// returns the first violation.
fn run(history: &History, reads: &[Read]) -> Result<Model, Violation> {
    let mut model = Model::new();
    model.restart(history.base.0.clone(), history.base.1);
    let mut ids = Vec::new();
    let mut tokens = vec![None; reads.len()];
    for position in 0..=history.events.len() {
        // A read ending here returns before the next one of its client begins.
        for (r, read) in reads.iter().enumerate() {
            if read.end == position && read.begin < position {
                model.observe(tokens[r].take().expect("begun"), read.obs.clone());
                model.check_observations()?;
            }
        }
        for (r, read) in reads.iter().enumerate() {
            if read.begin == position {
                tokens[r] = Some(model.begin_read());
            }
            if read.end == position && read.begin == position {
                model.observe(tokens[r].take().expect("begun"), read.obs.clone());
                model.check_observations()?;
            }
        }
        match history.events.get(position) {
            Some(&Event::Issue(w)) => ids.push(model.issue_write(history.writes[w].clone(), false)),
            Some(&Event::Ack(w)) => model.ack_write(ids[w], history.first_seqs[w]),
            None => {}
        }
        model.check_observations()?;
    }
    Ok(model)
}

/// The read with one key of the batch it ends on shown as before that batch, if that makes a
/// state no sequence number has: another key of the batch shows the batch's (unique) value,
/// and the reverted key's old value cannot come back later in the read's window.
fn half_batch(history: &History, read: &Read) -> Option<Read> {
    let batch = (0..history.writes.len()).find(|&w| history.last_seq(w) == read.seq)?;
    let ops = &history.writes[batch];
    let covered = |key: &Key| read.obs.intervals.iter().any(|interval| interval.contains(key));
    let final_put = |key: &Key| {
        let last = ops.iter().rev().find(|op| op.key() == key.as_slice());
        matches!(last, Some(Op::Put(..)))
    };
    let before = history.state_at(history.first_seqs[batch] - 1);
    let touched_later = |key: &Key| {
        let later = (0..history.writes.len()).filter(|&w| history.first_seqs[w] > read.seq);
        later.into_iter().any(|w| history.writes[w].iter().any(|op| op.key() == key.as_slice()))
    };
    let keys: Vec<Key> = ops.iter().map(|op| op.key().to_vec()).filter(covered).collect();
    let shown = keys.iter().find(|key| final_put(key))?;
    let reverted = keys.iter().find(|&key| {
        key != shown
            && before.get(key) != read.obs.seen.get(key)
            && (before.contains_key(key) || !touched_later(key))
    })?;
    let mut half = read.clone();
    match before.get(reverted) {
        Some(value) => half.obs.seen.insert(reverted.clone(), value.clone()),
        None => half.obs.seen.remove(reverted),
    };
    Some(half)
}

/// Where a previous epoch left off; base values are unique too.
fn base() -> impl Strategy<Value = (State, u64)> {
    let keys = prop::collection::btree_set(0..WRITTEN_KEYS, 0..4);
    let state = keys.prop_map(|keys| {
        keys.into_iter().map(|k| (key(k), format!("base{k}").into_bytes())).collect()
    });
    (state, 0u64..50)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Reads of the true state at a legal sequence number always pass; the same history with
    /// one read showing half of the batch it ends on always fails, and names that client.
    #[test]
    fn true_reads_pass_and_half_batches_fail(
        base in base(),
        rounds in prop::collection::vec(round(), 1..8),
        plans in reads(),
        pick in prop::collection::vec(any::<Index>(), 8),
        broken in any::<Index>(),
    ) {
        let history = History::build(base, &rounds);
        let reads = plan_reads(&history, &plans, &pick);
        let model = run(&history, &reads);
        prop_assert!(model.is_ok(), "{:?}", model.err());
        prop_assert_eq!(model.unwrap().stats().observations_judged, reads.len() as u64);

        if reads.is_empty() {
            return Ok(());
        }
        let victim = broken.index(reads.len());
        if let Some(half) = half_batch(&history, &reads[victim]) {
            let mut broken_reads = reads.clone();
            broken_reads[victim] = half;
            let result = run(&history, &broken_reads);
            prop_assert!(
                matches!(
                    result,
                    Err(Violation::ReadNotAtOneSequence { client, .. }) if client == reads[victim].client
                ),
                "{:?}",
                result.err()
            );
        }
    }
}
