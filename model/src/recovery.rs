//! Invariants 1 to 3 after a crash: is the recovered state, at the recovered sequence number,
//! one the engine was allowed to come back with?
//!
//! Acked writes have known sequence ranges; writes whose outcome is unknown (failed, or in
//! flight at the crash) may have taken any free range above their floor, or none. So the
//! interval `(base_seq, recovered_seq]` must be tiled exactly by the acked writes starting in
//! it plus some of the unknown writes put into the gaps between them, and the recovered state
//! must equal the base state with all those writes applied in sequence order, for at least one
//! such tiling. The tilings are searched by backtracking. Unknown writes are few in practice
//! (one per client in flight, plus failures), and the search gives up with
//! [`Violation::SearchLimit`] rather than run away.
//!
//! The state is not rebuilt per tiling: the acked writes are applied once, and a tiling only
//! changes the keys its unknown writes touch (where one of their ops lands above the last acked
//! op on that key), so each tiling costs about as much as its own ops.
//!
//! Invariant 7's "a write any reader saw before a later synced acknowledgement survives": an
//! unknown write a read showed lies below every write issued after that read, so a tiling
//! must place it below them, and must include it if one of them is in the prefix (see
//! `causal`). A tiling that breaks this is not legal. When no legal tiling exists but one
//! would without this rule, the rule is what the engine broke, and the report says so.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::causal::SeenRules;
use crate::history::Write;
use crate::{Key, Model, Value, Violation};

/// How many search steps a single check may take before it gives up; far above what a few
/// in-flight writes need (8 single-op writes in one gap take about 100,000).
const SEARCH_STEPS_MAX: u64 = 1 << 18;

/// An unknown write put at a first sequence number: (index into `Model::writes`, first seq).
type Placement = (usize, u64);

/// A state borrowed from the base state and the writes' ops, so that building the expected
/// state of a check copies no key or value.
type View<'a> = BTreeMap<&'a [u8], &'a [u8]>;

impl Model {
    /// Invariants 1 to 3 after a crash: is (`recovered`, `recovered_seq`) a legal state?
    ///
    /// Legal means: the sequence number did not go backwards, every acked synced write is at or
    /// below it, no acked batch straddles it, `(base_seq, recovered_seq]` is covered exactly by
    /// acked writes and some unknown-seq writes, and for one such covering the base state with
    /// those writes applied in sequence order equals `recovered`, and every unknown write a read
    /// showed is below the writes issued after that read, and in the covering if one of them is.
    pub fn check_recovery(
        &self,
        recovered: &BTreeMap<Key, Value>,
        recovered_seq: u64,
    ) -> Result<(), Violation> {
        self.check_acks()?;
        if recovered_seq < self.base_seq {
            let base_seq = self.base_seq;
            return Err(Violation::RecoveryWentBackwards { base_seq, recovered_seq });
        }
        self.check_synced_survived(recovered_seq)?;
        let layout = self.layout(recovered_seq)?;
        let candidates = self.candidates(&layout, recovered_seq);
        let judge = Judge::new(self, &layout.acked, &candidates, recovered, recovered_seq);
        let rules = SeenRules::new(self, &candidates, recovered_seq);
        let search = |rules: &SeenRules| {
            Search::new(self, layout.gaps.clone(), &candidates, &judge, rules).run()
        };
        if rules.is_empty() {
            return search(&rules).map(drop);
        }
        let violation = match rules.satisfiable().then(|| search(&rules)) {
            Some(Ok(_)) => return Ok(()),
            Some(Err(violation)) => Some(violation),
            None => None,
        };
        // No legal tiling. If the state is wrong whatever reads showed, that is the report;
        // otherwise a read-proven order is what the engine broke.
        let free = search(&SeenRules::none(candidates.len()))?;
        let why = rules.explain(self, &free, recovered_seq).or(violation);
        Err(why.expect("a rule no tiling can keep is broken by every tiling"))
    }

    /// Invariant 1: no acked synced write ends above `recovered_seq`.
    fn check_synced_survived(&self, recovered_seq: u64) -> Result<(), Violation> {
        if self.durable_frontier() <= recovered_seq {
            return Ok(());
        }
        for (&first_seq, &index) in self.acked_ranges.range(..) {
            let write = &self.writes[index];
            let last_seq = write.last_seq(first_seq);
            if write.sync && last_seq > recovered_seq {
                let (write, first_key) = (write.id, write.first_key());
                return Err(Violation::SyncedWriteLost {
                    write,
                    first_seq,
                    last_seq,
                    first_key,
                    recovered_seq,
                });
            }
        }
        unreachable!(
            "the durable frontier {} comes from an acked synced write",
            self.durable_frontier()
        )
    }

    /// The acked writes inside `(base_seq, recovered_seq]` in seq order, and the gaps between
    /// them; fails if one straddles `recovered_seq`.
    fn layout(&self, recovered_seq: u64) -> Result<Layout, Violation> {
        let mut layout = Layout { acked: Vec::new(), gaps: Vec::new() };
        let mut next = self.base_seq + 1;
        // Excluded..Included is an empty range, not a panic, when nothing was recovered.
        let inside = (Bound::Excluded(self.base_seq), Bound::Included(recovered_seq));
        for (&first_seq, &index) in self.acked_ranges.range(inside) {
            let write = &self.writes[index];
            let last_seq = write.last_seq(first_seq);
            if last_seq > recovered_seq {
                let write = write.id;
                return Err(Violation::TornBatch { write, first_seq, last_seq, recovered_seq });
            }
            if first_seq > next {
                layout.gaps.push(Gap { first_seq: next, len: first_seq - next });
            }
            layout.acked.push((index, first_seq));
            next = last_seq + 1;
        }
        if next <= recovered_seq {
            layout.gaps.push(Gap { first_seq: next, len: recovered_seq - next + 1 });
        }
        Ok(layout)
    }

    /// The unknown writes that could fit somewhere in the gaps.
    fn candidates(&self, layout: &Layout, recovered_seq: u64) -> Vec<usize> {
        let widest = layout.gaps.iter().map(|gap| gap.len).max().unwrap_or(0);
        let fits = |write: &Write| write.len() <= widest && write.floor_seq < recovered_seq;
        (0..self.writes.len())
            .filter(|&index| self.writes[index].unknown() && fits(&self.writes[index]))
            .collect()
    }
}

/// Sequence numbers `first_seq .. first_seq + len` that no acked write took.
#[derive(Clone, Copy, Debug)]
struct Gap {
    first_seq: u64,
    len: u64,
}

#[derive(Debug)]
struct Layout {
    /// Acked writes inside the recovered range, in seq order, as (index, first seq).
    acked: Vec<Placement>,
    gaps: Vec<Gap>,
}

/// Compares the state a tiling gives with the recovered one.
#[derive(Debug)]
struct Judge<'a> {
    model: &'a Model,
    recovered: &'a BTreeMap<Key, Value>,
    recovered_seq: u64,
    /// The base state with every acked write of the tiling applied.
    known: View<'a>,
    /// For each key an acked write touched, the seq of the last such op.
    last_acked_seq: BTreeMap<&'a [u8], u64>,
    /// Keys some candidate touches: the only ones a tiling can change.
    open_keys: BTreeSet<&'a [u8]>,
    /// Keys that differ in every tiling: outside `open_keys` where `known` and `recovered`
    /// differ, or inside where the recovered value is neither the known one nor one a candidate
    /// leaves (the usual shape of a real bug: a value from nowhere, or a resurrected one).
    certain_mismatches: usize,
}

impl<'a> Judge<'a> {
    fn new(
        model: &'a Model,
        acked: &[Placement],
        candidates: &[usize],
        recovered: &'a BTreeMap<Key, Value>,
        recovered_seq: u64,
    ) -> Judge<'a> {
        let mut known: View<'a> = model
            .base_state
            .iter()
            .map(|(key, value)| (key.as_slice(), value.as_slice()))
            .collect();
        let mut last_acked_seq = BTreeMap::new();
        for &(index, first_seq) in acked {
            for (seq, op) in (first_seq..).zip(&model.writes[index].ops) {
                apply(&mut known, op.key(), op.value());
                last_acked_seq.insert(op.key(), seq);
            }
        }
        let open_keys: BTreeSet<&[u8]> = candidates
            .iter()
            .flat_map(|&index| model.writes[index].ops.iter().map(|op| op.key()))
            .collect();
        let mut judge = Judge {
            model,
            recovered,
            recovered_seq,
            known,
            last_acked_seq,
            open_keys,
            certain_mismatches: 0,
        };
        judge.certain_mismatches = judge.count_certain_mismatches(candidates);
        judge
    }

    /// Counts the keys that differ in every tiling (see `certain_mismatches`). A tiling leaves
    /// in a key either the known value or the last value one of its unknown writes puts there.
    fn count_certain_mismatches(&self, candidates: &[usize]) -> usize {
        let reachable = |key: &[u8]| {
            let got = self.recovered.get(key).map(Vec::as_slice);
            let leaves_got =
                |&index: &usize| self.model.writes[index].final_value(key) == Some(got);
            self.open_keys.contains(key) && candidates.iter().any(leaves_got)
        };
        differing_keys(&self.known, self.recovered)
            .into_iter()
            .filter(|&key| !reachable(key))
            .count()
    }

    /// What the unknown writes of a tiling change: for each key, the value of the last of their
    /// ops that lands above the last acked op on that key.
    fn overlay(&self, placed: &[Placement]) -> BTreeMap<&'a [u8], Option<&'a [u8]>> {
        let mut overlay = BTreeMap::new();
        for &(index, first_seq) in placed {
            for (seq, op) in (first_seq..).zip(&self.model.writes[index].ops) {
                let shadowed = self.last_acked_seq.get(op.key()).is_some_and(|&last| last > seq);
                if !shadowed {
                    overlay.insert(op.key(), op.value());
                }
            }
        }
        overlay
    }

    /// How many keys differ between the tiling's state and the recovered one.
    fn mismatches(&self, placed: &[Placement]) -> usize {
        let overlay = self.overlay(placed);
        let open_mismatches = self.open_keys.iter().filter(|&&key| {
            let expected = match overlay.get(key) {
                Some(&value) => value,
                None => self.known.get(key).copied(),
            };
            expected != self.recovered.get(key).map(Vec::as_slice)
        });
        self.certain_mismatches + open_mismatches.count()
    }

    /// The violation for the closest tiling: its first differing key.
    fn report(&self, placed: &[Placement]) -> Violation {
        let mut expected = self.known.clone();
        for (key, value) in self.overlay(placed) {
            apply(&mut expected, key, value);
        }
        let differing = differing_keys(&expected, self.recovered);
        let key = *differing.first().expect("a reported tiling has a mismatch");
        Violation::StateMismatch {
            recovered_seq: self.recovered_seq,
            key: key.to_vec(),
            expected: expected.get(key).map(|value| value.to_vec()),
            got: self.recovered.get(key).cloned(),
            differing_keys: differing.len(),
            unknown_included: placed
                .iter()
                .map(|&(index, _)| self.model.writes[index].id)
                .collect(),
        }
    }
}

/// Backtracking over tilings of the gaps by unknown writes, in seq order.
#[derive(Debug)]
struct Search<'a> {
    model: &'a Model,
    gaps: Vec<Gap>,
    /// `need_after[g]`: total length of the gaps after gap `g`.
    need_after: Vec<u64>,
    candidates: &'a [usize],
    /// What reads proved about where the candidates may go.
    rules: &'a SeenRules,
    /// For each candidate, the nearest earlier candidate with the same ops, floor and rules:
    /// twins give the same states, so a twin is only used after the one before it, and each
    /// set of twins is tried once instead of in every order.
    twin_of: Vec<Option<usize>>,
    used: Vec<bool>,
    /// Total length of the unused candidates.
    supply: u64,
    placed: Vec<Placement>,
    steps: u64,
    judge: &'a Judge<'a>,
    /// The tiling with the fewest mismatches so far, and their number.
    best: Option<(usize, Vec<Placement>)>,
    /// Set once no further tiling can change the answer.
    done: bool,
}

impl<'a> Search<'a> {
    fn new(
        model: &'a Model,
        gaps: Vec<Gap>,
        candidates: &'a [usize],
        judge: &'a Judge<'a>,
        rules: &'a SeenRules,
    ) -> Search<'a> {
        let mut need_after = vec![0; gaps.len()];
        for g in (1..gaps.len()).rev() {
            need_after[g - 1] = need_after[g] + gaps[g].len;
        }
        let twin_of = twins(model, candidates, rules);
        let supply = candidates.iter().map(|&index| model.writes[index].len()).sum();
        let used = vec![false; candidates.len()];
        let (placed, steps, best, done) = (Vec::new(), 0, None, false);
        Search {
            model,
            gaps,
            need_after,
            candidates,
            rules,
            twin_of,
            used,
            supply,
            placed,
            steps,
            judge,
            best,
            done,
        }
    }

    /// The unknown writes a perfect legal tiling places, if there is one.
    fn run(mut self) -> Result<Vec<Placement>, Violation> {
        let first_len = self.gaps.first().map_or(0, |gap| gap.len);
        if self.gaps.first().is_none_or(|_| self.supply >= first_len + self.need_after[0]) {
            self.fill(0, first_len)?;
        }
        match self.best.take() {
            None => Err(self.hole()),
            Some((0, placed)) => Ok(placed),
            Some((_, placed)) => Err(self.judge.report(&placed)),
        }
    }

    /// Fills gap `gap`, of which `left` seqs remain, then the gaps after it.
    fn fill(&mut self, gap: usize, left: u64) -> Result<(), Violation> {
        self.steps += 1;
        if self.steps > SEARCH_STEPS_MAX {
            let (recovered_seq, nodes) = (self.judge.recovered_seq, self.steps);
            return Err(Violation::SearchLimit {
                recovered_seq,
                nodes,
                unknown_writes: self.candidates.len(),
            });
        }
        let Some(&Gap { first_seq, len }) = self.gaps.get(gap) else {
            self.evaluate();
            return Ok(());
        };
        if left == 0 {
            let next_len = self.gaps.get(gap + 1).map_or(0, |next| next.len);
            return self.fill(gap + 1, next_len);
        }
        if self.supply < left + self.need_after[gap] {
            return Ok(());
        }
        let seq = first_seq + (len - left);
        if self.required_passed(seq) {
            return Ok(());
        }
        for candidate in 0..self.candidates.len() {
            if !self.may_place(candidate, seq, left) {
                continue;
            }
            let write_len = self.set_used(candidate, seq, true);
            self.fill(gap, left - write_len)?;
            self.set_used(candidate, seq, false);
            if self.done {
                break;
            }
        }
        Ok(())
    }

    fn may_place(&self, candidate: usize, seq: u64, left: u64) -> bool {
        let write = &self.model.writes[self.candidates[candidate]];
        !self.used[candidate]
            && write.len() <= left
            && write.floor_seq < seq
            && self.twin_of[candidate].is_none_or(|twin| self.used[twin])
            && self.fits_what_reads_saw(candidate, seq)
    }

    /// Whether a candidate placed at `seq` keeps what reads proved: it ends below its
    /// ceiling, and every write a read showed before it was issued is already placed.
    fn fits_what_reads_saw(&self, candidate: usize, seq: u64) -> bool {
        let len = self.model.writes[self.candidates[candidate]].len();
        !self.rules.barred[candidate]
            && self.rules.ceiling[candidate].is_none_or(|ceiling| seq + len <= ceiling)
            && self.rules.after[candidate].iter().all(|&before| self.used[before])
    }

    /// Whether some required write is still unplaced though it could only start below `seq`.
    fn required_passed(&self, seq: u64) -> bool {
        self.rules.required.iter().filter_map(|&(_, candidate)| candidate).any(|candidate| {
            let len = self.model.writes[self.candidates[candidate]].len();
            let ceiling = self.rules.ceiling[candidate].expect("a required write has a ceiling");
            !self.used[candidate] && seq + len > ceiling
        })
    }

    /// Places (or takes back) a candidate at `seq`; returns its length.
    fn set_used(&mut self, candidate: usize, seq: u64, used: bool) -> u64 {
        let index = self.candidates[candidate];
        let len = self.model.writes[index].len();
        self.used[candidate] = used;
        if used {
            self.supply -= len;
            self.placed.push((index, seq));
        } else {
            self.supply += len;
            self.placed.pop();
        }
        len
    }

    /// Scores a complete tiling. A perfect one ends the search; so does any tiling when some
    /// key differs in every tiling, since then none can be perfect and the first will do.
    fn evaluate(&mut self) {
        let placed = |&(_, candidate): &(usize, Option<usize>)| {
            candidate.is_some_and(|candidate| self.used[candidate])
        };
        if !self.rules.required.iter().all(placed) {
            return;
        }
        let mismatches = self.judge.mismatches(&self.placed);
        if self.best.as_ref().is_none_or(|(best, _)| mismatches < *best) {
            self.best = Some((mismatches, self.placed.clone()));
        }
        self.done = mismatches == 0 || self.judge.certain_mismatches > 0;
    }

    fn hole(&self) -> Violation {
        Violation::SequenceHole {
            base_seq: self.model.base_seq,
            recovered_seq: self.judge.recovered_seq,
            gaps: self
                .gaps
                .iter()
                .map(|gap| (gap.first_seq, gap.first_seq + gap.len - 1))
                .collect(),
            unknown_writes: self.candidates.len(),
        }
    }
}

/// For each candidate, the nearest earlier one with the same ops, floor and rules: a read
/// that showed one of them, or one issued between them, sets them apart.
fn twins(model: &Model, candidates: &[usize], rules: &SeenRules) -> Vec<Option<usize>> {
    let same = |a: usize, b: usize| {
        let (write_a, write_b) = (&model.writes[candidates[a]], &model.writes[candidates[b]]);
        write_a.floor_seq == write_b.floor_seq
            && write_a.ops == write_b.ops
            && write_a.seen_at.get() == write_b.seen_at.get()
            && rules.ceiling[a] == rules.ceiling[b]
            && rules.barred[a] == rules.barred[b]
            && rules.after[a] == rules.after[b]
    };
    let twin_of = |c: usize| (0..c).rev().find(|&earlier| same(earlier, c));
    (0..candidates.len()).map(twin_of).collect()
}

fn apply<'a>(state: &mut View<'a>, key: &'a [u8], value: Option<&'a [u8]>) {
    match value {
        Some(value) => state.insert(key, value),
        None => state.remove(key),
    };
}

/// The keys whose values differ between an expected state and the recovered one, in key
/// order: one merge pass, since both are sorted by key.
fn differing_keys<'a>(expected: &View<'a>, recovered: &'a BTreeMap<Key, Value>) -> Vec<&'a [u8]> {
    let mut left = expected.iter().map(|(&key, &value)| (key, value)).peekable();
    let mut right =
        recovered.iter().map(|(key, value)| (key.as_slice(), value.as_slice())).peekable();
    let mut differing = Vec::new();
    loop {
        let key = match (left.peek().copied(), right.peek().copied()) {
            (None, None) => return differing,
            (Some((l, l_value)), Some((r, r_value))) if l == r => {
                left.next();
                right.next();
                if l_value == r_value {
                    continue;
                }
                l
            }
            (Some((l, _)), Some((r, _))) if l < r => {
                left.next();
                l
            }
            (Some((l, _)), None) => {
                left.next();
                l
            }
            (_, Some((r, _))) => {
                right.next();
                r
            }
        };
        differing.push(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{delete, put, state};
    use crate::{Op, WriteId};

    /// Issues and acks each write in turn, at consecutive seqs after the current ones.
    fn ack_all(model: &mut Model, writes: Vec<(Vec<Op>, bool)>) -> Vec<WriteId> {
        let mut next_seq = model.base_seq() + 1;
        let mut ids = Vec::new();
        for (ops, sync) in writes {
            let len = ops.len() as u64;
            let id = model.issue_write(ops, sync);
            model.ack_write(id, next_seq);
            next_seq += len;
            ids.push(id);
        }
        ids
    }

    fn three_writes(model: &mut Model) -> Vec<WriteId> {
        let writes = vec![
            (vec![put("a", "1")], false),
            (vec![put("b", "2")], true),
            (vec![put("c", "3")], false),
        ];
        ack_all(model, writes)
    }

    #[test]
    fn prefix_with_every_synced_write_passes() {
        let mut model = Model::new();
        three_writes(&mut model);
        assert_eq!(model.durable_frontier(), 2);
        assert_eq!(model.check_recovery(&state(&[("a", "1"), ("b", "2")]), 2), Ok(()));
        assert_eq!(model.check_recovery(&state(&[("a", "1"), ("b", "2"), ("c", "3")]), 3), Ok(()));
    }

    #[test]
    fn dropping_a_synced_write_fails() {
        let mut model = Model::new();
        let ids = three_writes(&mut model);
        let lost = model.check_recovery(&state(&[("a", "1")]), 1).unwrap_err();
        let expected = Violation::SyncedWriteLost {
            write: ids[1],
            first_seq: 2,
            last_seq: 2,
            first_key: b"b".to_vec(),
            recovered_seq: 1,
        };
        assert_eq!(lost, expected);
        assert!(lost
            .to_string()
            .contains("synced write lost: write #1 (seqs 2..=2, first key \"b\")"));
        // Claiming the seq without the data is no better.
        let missing = model.check_recovery(&state(&[("a", "1")]), 2).unwrap_err();
        assert!(matches!(missing, Violation::StateMismatch { ref key, .. } if key == b"b"));
    }

    #[test]
    fn a_hole_fails() {
        let mut model = Model::new();
        three_writes(&mut model);
        let recovered = state(&[("a", "1"), ("c", "3")]);
        let hole = model.check_recovery(&recovered, 3).unwrap_err();
        let expected = Violation::StateMismatch {
            recovered_seq: 3,
            key: b"b".to_vec(),
            expected: Some(b"2".to_vec()),
            got: None,
            differing_keys: 1,
            unknown_included: Vec::new(),
        };
        assert_eq!(hole, expected);
        assert!(model.check_recovery(&recovered, 2).is_err());
    }

    #[test]
    fn a_seq_no_write_can_fill_is_a_hole() {
        let mut model = Model::new();
        let first = model.issue_write(vec![put("a", "1")], false);
        model.ack_write(first, 1);
        let third = model.issue_write(vec![put("c", "3")], false);
        model.ack_write(third, 3);
        let hole = model.check_recovery(&state(&[("a", "1"), ("c", "3")]), 3).unwrap_err();
        let expected = Violation::SequenceHole {
            base_seq: 0,
            recovered_seq: 3,
            gaps: vec![(2, 2)],
            unknown_writes: 0,
        };
        assert_eq!(hole, expected);
        assert!(hole.to_string().contains("seqs 2..=2 belong to no acked write"));
        assert_eq!(model.check_recovery(&state(&[("a", "1")]), 1), Ok(()));
    }

    #[test]
    fn a_partly_applied_batch_fails() {
        let mut model = Model::new();
        let ids = ack_all(&mut model, vec![(vec![put("a", "1"), put("b", "2")], false)]);
        let partial = state(&[("a", "1")]);
        let torn = model.check_recovery(&partial, 1).unwrap_err();
        let expected =
            Violation::TornBatch { write: ids[0], first_seq: 1, last_seq: 2, recovered_seq: 1 };
        assert_eq!(torn, expected);
        assert!(model.check_recovery(&partial, 2).is_err());
        assert_eq!(model.check_recovery(&state(&[]), 0), Ok(()));
        assert_eq!(model.check_recovery(&state(&[("a", "1"), ("b", "2")]), 2), Ok(()));
    }

    #[test]
    fn a_deleted_key_coming_back_fails() {
        let mut model = Model::new();
        ack_all(&mut model, vec![(vec![put("a", "1")], false), (vec![delete("a")], false)]);
        let back = model.check_recovery(&state(&[("a", "1")]), 2).unwrap_err();
        assert!(
            matches!(back, Violation::StateMismatch { ref expected, .. } if expected.is_none())
        );
        assert!(back.to_string().contains("key \"a\" should be absent but is \"1\""));
        assert_eq!(model.check_recovery(&state(&[]), 2), Ok(()));
    }

    #[test]
    fn a_never_written_key_fails() {
        let mut model = Model::new();
        ack_all(&mut model, vec![(vec![put("a", "1")], false)]);
        let extra = model.check_recovery(&state(&[("a", "1"), ("z", "9")]), 1).unwrap_err();
        assert!(matches!(extra, Violation::StateMismatch { ref key, .. } if key == b"z"));
    }

    #[test]
    fn unknown_writes_fill_a_gap_in_either_order() {
        let mut model = Model::new();
        let first = model.issue_write(vec![put("a", "1")], false);
        model.ack_write(first, 1);
        model.issue_write(vec![put("k", "x")], false); // still in flight at the crash
        let failed = model.issue_write(vec![put("k", "y")], true);
        model.fail_write(failed);
        let last = model.issue_write(vec![put("b", "2")], false);
        model.ack_write(last, 4);
        for value in ["x", "y"] {
            let recovered = state(&[("a", "1"), ("k", value), ("b", "2")]);
            assert_eq!(model.check_recovery(&recovered, 4), Ok(()), "k = {value}");
            assert_eq!(model.check_recovery(&state(&[("a", "1"), ("k", value)]), 2), Ok(()));
        }
        let both_missing = model.check_recovery(&state(&[("a", "1"), ("b", "2")]), 4);
        assert!(
            matches!(both_missing, Err(Violation::StateMismatch { ref key, .. }) if key == b"k")
        );
        let unwritten =
            model.check_recovery(&state(&[("a", "1"), ("k", "z"), ("b", "2")]), 4).unwrap_err();
        assert!(
            matches!(unwritten, Violation::StateMismatch { unknown_included: ref u, .. } if u.len() == 2)
        );
        assert_eq!(model.check_recovery(&state(&[("a", "1")]), 1), Ok(()));
    }

    #[test]
    fn unknown_writes_fill_several_gaps_by_size() {
        let mut model = Model::new();
        let pair = model.issue_write(vec![put("p", "1"), put("q", "1")], false);
        let single = model.issue_write(vec![put("s", "1")], false);
        model.fail_write(pair);
        let acked = model.issue_write(vec![put("a", "1")], true);
        model.ack_write(acked, 3);
        let recovered = state(&[("p", "1"), ("q", "1"), ("a", "1"), ("s", "1")]);
        assert_eq!(model.check_recovery(&recovered, 4), Ok(()));
        // The single op alone cannot fill the gap of two before the acked write.
        let swapped = model.check_recovery(&state(&[("s", "1"), ("a", "1")]), 3).unwrap_err();
        assert!(
            matches!(swapped, Violation::StateMismatch { ref unknown_included, .. } if unknown_included == &[pair])
        );
        let _ = single;
    }

    #[test]
    fn an_unknown_write_cannot_land_below_a_write_acked_before_it_was_issued() {
        let mut before = Model::new();
        before.issue_write(vec![put("u", "1")], false);
        let acked = before.issue_write(vec![put("a", "1")], false);
        before.ack_write(acked, 2);
        assert_eq!(before.check_recovery(&state(&[("u", "1"), ("a", "1")]), 2), Ok(()));

        let mut after = Model::new();
        let acked = after.issue_write(vec![put("a", "1")], false);
        after.ack_write(acked, 2);
        after.issue_write(vec![put("u", "1")], false);
        let hole = after.check_recovery(&state(&[("u", "1"), ("a", "1")]), 2);
        assert!(matches!(hole, Err(Violation::SequenceHole { .. })));
    }

    #[test]
    fn a_later_acked_write_shadows_an_unknown_one() {
        let mut model = Model::new();
        let unknown = model.issue_write(vec![put("a", "old")], false);
        let acked = model.issue_write(vec![put("a", "new")], false);
        model.ack_write(acked, 2);
        model.fail_write(unknown);
        assert_eq!(model.check_recovery(&state(&[("a", "new")]), 2), Ok(()));
        assert!(model.check_recovery(&state(&[("a", "old")]), 2).is_err());
        assert_eq!(model.check_recovery(&state(&[("a", "old")]), 1), Ok(()));
        assert_eq!(model.check_recovery(&state(&[]), 0), Ok(()));
    }

    #[test]
    fn recovered_seq_below_base_fails() {
        let mut model = Model::new();
        model.restart(state(&[("a", "1")]), 5);
        assert_eq!(model.base_seq(), 5);
        assert_eq!(model.durable_frontier(), 5);
        let back = model.check_recovery(&state(&[("a", "1")]), 4).unwrap_err();
        assert_eq!(back, Violation::RecoveryWentBackwards { base_seq: 5, recovered_seq: 4 });
        assert_eq!(model.check_recovery(&state(&[("a", "1")]), 5), Ok(()));
    }

    #[test]
    fn acks_that_reuse_or_reorder_seqs_fail() {
        let mut model = Model::new();
        model.restart(state(&[]), 5);
        let reused = model.issue_write(vec![put("a", "1")], false);
        model.ack_write(reused, 5);
        let expected = Violation::SeqNotAboveBase { write: reused, first_seq: 5, base_seq: 5 };
        assert_eq!(model.check_acks(), Err(expected.clone()));
        assert_eq!(model.check_recovery(&state(&[]), 5), Err(expected));

        let mut model = Model::new();
        let first = model.issue_write(vec![put("a", "1"), put("b", "1")], false);
        model.ack_write(first, 1);
        let second = model.issue_write(vec![put("c", "1")], false);
        model.ack_write(second, 2);
        assert!(
            matches!(model.check_acks(), Err(Violation::SeqOverlap { other, .. }) if other == first)
        );

        let mut model = Model::new();
        let first = model.issue_write(vec![put("a", "1")], false);
        model.ack_write(first, 3);
        let second = model.issue_write(vec![put("b", "1")], false);
        model.ack_write(second, 1);
        let reordered = Violation::AckReordered {
            write: second,
            first_seq: 1,
            earlier: first,
            earlier_last_seq: 3,
        };
        assert_eq!(model.check_acks(), Err(reordered));
    }

    #[test]
    fn a_runaway_search_gives_up() {
        let mut model = Model::new();
        for key in 0..24 {
            model.issue_write(vec![put(&format!("k{key}"), "v")], false);
        }
        let acked = model.issue_write(vec![put("a", "1")], false);
        model.ack_write(acked, 21);
        // Every key is reachable alone, but 24 one-op writes cannot fit in 20 seqs, and the
        // search has to learn that tiling by tiling.
        let mut recovered: BTreeMap<Key, Value> =
            (0..24).map(|key| (format!("k{key}").into_bytes(), b"v".to_vec())).collect();
        recovered.insert(b"a".to_vec(), b"1".to_vec());
        let limit = model.check_recovery(&recovered, 21).unwrap_err();
        assert!(matches!(limit, Violation::SearchLimit { unknown_writes: 24, .. }), "{limit}");
    }

    #[test]
    fn a_value_no_write_left_fails_without_a_search() {
        let mut model = Model::new();
        for key in 0..24 {
            model.issue_write(vec![put(&format!("k{key}"), "v")], false);
        }
        let acked = model.issue_write(vec![put("a", "1")], false);
        model.ack_write(acked, 21);
        let recovered = state(&[("k0", "other"), ("a", "1")]);
        let wrong = model.check_recovery(&recovered, 21).unwrap_err();
        assert!(
            matches!(wrong, Violation::StateMismatch { ref key, .. } if key == b"k0"),
            "{wrong}"
        );
    }

    #[test]
    fn twin_unknown_writes_are_tried_once() {
        let mut model = Model::new();
        for _ in 0..12 {
            model.issue_write(vec![put("k", "v")], false);
        }
        let acked = model.issue_write(vec![put("a", "1")], false);
        model.ack_write(acked, 11);
        assert_eq!(model.check_recovery(&state(&[("k", "v"), ("a", "1")]), 11), Ok(()));
        let never = model.check_recovery(&state(&[("k", "w"), ("a", "1")]), 11);
        assert!(matches!(never, Err(Violation::StateMismatch { .. })), "{never:?}");
    }

    #[test]
    fn restart_forgets_the_old_epoch() {
        let mut model = Model::new();
        let ids = three_writes(&mut model);
        let in_flight = model.issue_write(vec![put("d", "4")], true);
        let recovered = state(&[("a", "1"), ("b", "2")]);
        model.check_recovery(&recovered, 2).unwrap();
        model.restart(recovered.clone(), 2);
        model.fail_write(in_flight); // ignored: the crash already made it indeterminate
        assert_eq!(model.stats(), crate::ModelStats::default());
        assert_eq!(model.base_state(), &recovered);
        let next = model.issue_write(vec![put("e", "5")], false);
        assert!(next > ids[2] && next > in_flight);
        model.ack_write(next, 3);
        assert_eq!(model.check_recovery(&state(&[("a", "1"), ("b", "2"), ("e", "5")]), 3), Ok(()));
        assert!(model.check_recovery(&state(&[("a", "1"), ("b", "2"), ("c", "3")]), 3).is_err());
    }

    #[test]
    fn stats_count_this_epoch() {
        let mut model = Model::new();
        three_writes(&mut model);
        let failed = model.issue_write(vec![put("x", "1")], true);
        model.fail_write(failed);
        model.issue_write(vec![put("y", "1")], false);
        let expected = crate::ModelStats {
            issued: 5,
            acked: 3,
            failed: 1,
            in_flight: 1,
            synced: 1,
            ..crate::ModelStats::default()
        };
        assert_eq!(model.stats(), expected);
    }
}
