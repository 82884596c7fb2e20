//! What reads prove about the order of writes, and invariant 7's last clause: a write any
//! reader saw before a later synced acknowledgement survives every crash.
//!
//! The engine makes a batch visible only once it has its sequence numbers, and hands out
//! sequence numbers in commit order. So when a read shows a write, every write issued after
//! that read ended gets higher sequence numbers. Two uses follow:
//!
//! - A write issued after a read that showed sequence number S must commit above S: its floor
//!   (see `history`) rises to S ([`Model::prove_visible`]), even when the model learns S only
//!   later (an observation judged once its writes are answered, a seen write acked late), in
//!   which case an ack already below S is reported as reordered.
//! - A write whose outcome is still unknown but which a read showed ([`SeenAt`]) lies below
//!   every write issued after that read. If one of those is in the recovered prefix (a synced
//!   one always is), the seen write must be in it too, below it. [`SeenRules`] hands these
//!   constraints to recovery's tiling search.
//!
//! The model learns that a read showed an unknown write from a value: the simulator's values
//! are unique per write, so a value that only one write can have left in a key, that write
//! still in flight, proves it visible. Where the base state or another write could explain the
//! value, nothing is recorded; the rules only ever narrow what is legal with proven facts.
//!
//! [`SeenAt`]: crate::history::SeenAt

use std::collections::BTreeMap;

use crate::history::Write;
use crate::intervals::{self, Interval};
use crate::{Key, Model, Value, Violation};

impl Model {
    /// Records that a read ending at clock `at` showed sequence number `seq`: every write
    /// issued at or after `at` must commit above the acked batch boundary at or below `seq`.
    pub(crate) fn prove_visible(&mut self, at: u64, seq: u64) {
        let Some((last_seq, by)) = self.acked_boundary_at_or_below(seq) else {
            return;
        };
        let by_write = &self.writes[by];
        // A write issued after the read cannot be what it showed; with unique values that
        // never happens, and its own floor is no proof of anything.
        if by_write.issued_at >= at {
            return;
        }
        let earlier = by_write.id;
        let start = self.writes.partition_point(|write| write.issued_at < at);
        for write in &mut self.writes[start..] {
            // Floors never decrease along the issue order, so the first one high enough ends
            // the writes to raise.
            if write.floor_seq >= last_seq {
                break;
            }
            write.floor_seq = last_seq;
            write.floor_write = Some(earlier);
            if let Some(first_seq) = write.first_seq().filter(|&first_seq| first_seq <= last_seq) {
                let write = write.id;
                let violation = Violation::AckReordered {
                    write,
                    first_seq,
                    earlier,
                    earlier_last_seq: last_seq,
                };
                self.ack_anomaly.get_or_insert(violation);
            }
        }
    }

    /// The highest last sequence number of an acked write at or below `seq`, and that write.
    pub(crate) fn acked_boundary_at_or_below(&self, seq: u64) -> Option<(u64, usize)> {
        let below = self.acked_ranges.range(..=seq).rev();
        // Acked ranges never overlap, so at most the first one straddles `seq`.
        let boundary =
            |(&first_seq, &index): (&u64, &usize)| (self.writes[index].last_seq(first_seq), index);
        below.map(boundary).find(|&(last_seq, _)| last_seq <= seq)
    }

    /// Records, for every in-flight write that alone explains a value a read ending at clock
    /// `at` showed inside `covered`, that the read saw it.
    pub(crate) fn note_shown_writes(
        &self,
        covered: &[Interval],
        seen: &BTreeMap<Key, Value>,
        at: u64,
    ) {
        for &index in &self.in_flight {
            let write = &self.writes[index];
            let shown = |key: &[u8]| seen.get(key).map(Vec::as_slice);
            let proves = write.ops.iter().map(|op| op.key()).any(|key| {
                intervals::contains(covered, key) && self.only_source(write, key, shown(key))
            });
            if proves {
                write.seen_at.record(at);
            }
        }
    }

    /// Whether `write` is the only thing that can have left `shown` in `key`: it leaves it,
    /// and neither the base state nor any other write of the epoch does.
    pub(crate) fn only_source(&self, write: &Write, key: &[u8], shown: Option<&[u8]>) -> bool {
        let leaves = |other: &Write| other.final_value(key) == Some(shown);
        leaves(write)
            && self.base_state.get(key).map(Vec::as_slice) != shown
            && self.writers_of(key).filter(|other| leaves(other)).count() == 1
    }

    /// The acked write with the lowest sequence numbers among those issued at or after clock
    /// `at`: `(first seq, index)`.
    fn first_acked_issued_from(&self, at: u64) -> Option<(u64, usize)> {
        let issued_after = |&(_, &index): &(&u64, &usize)| self.writes[index].issued_at >= at;
        self.acked_ranges.iter().find(issued_after).map(|(&first_seq, &index)| (first_seq, index))
    }
}

/// An unknown-seq write a read showed.
#[derive(Clone, Copy, Debug)]
struct Seen {
    write: usize,
    seen_at: u64,
    /// The first acked write issued after the read, `(first seq, index)`: the seen write ends
    /// below its first seq.
    later: Option<(u64, usize)>,
}

/// What reads proved about the unknown-seq writes a recovery's tiling may place, per candidate
/// (by position in the search's candidate list).
#[derive(Debug)]
pub(crate) struct SeenRules {
    seen: Vec<Seen>,
    /// The sequence number each candidate must end below, if a read showed it.
    pub(crate) ceiling: Vec<Option<u64>>,
    /// For each candidate, the candidates that must be placed before it: the ones a read
    /// showed before it was issued.
    pub(crate) after: Vec<Vec<usize>>,
    /// Candidates that can never be placed: a read showed a write before they were issued,
    /// and that write cannot be placed at all.
    pub(crate) barred: Vec<bool>,
    /// Seen writes that must be in the prefix, because an acked write issued after the read
    /// that showed them is: `(index into seen, candidate position if a candidate)`.
    pub(crate) required: Vec<(usize, Option<usize>)>,
}

impl SeenRules {
    /// No rules: every tiling of the candidates is legal as far as reads go.
    pub(crate) fn none(candidates: usize) -> SeenRules {
        SeenRules {
            seen: Vec::new(),
            ceiling: vec![None; candidates],
            after: vec![Vec::new(); candidates],
            barred: vec![false; candidates],
            required: Vec::new(),
        }
    }

    /// The rules for a recovery to `recovered_seq` whose search places `candidates`.
    pub(crate) fn new(model: &Model, candidates: &[usize], recovered_seq: u64) -> SeenRules {
        let mut rules = SeenRules::none(candidates.len());
        let position: BTreeMap<usize, usize> =
            candidates.iter().enumerate().map(|(position, &index)| (index, position)).collect();
        for (index, write) in model.writes.iter().enumerate().filter(|(_, write)| write.unknown()) {
            let Some(seen_at) = write.seen_at.get() else {
                continue;
            };
            let later = model.first_acked_issued_from(seen_at);
            let me = position.get(&index).copied();
            rules.add(Seen { write: index, seen_at, later }, me, recovered_seq);
            for (other, &other_index) in candidates.iter().enumerate() {
                if model.writes[other_index].issued_at >= seen_at {
                    match me {
                        Some(me) => rules.after[other].push(me),
                        None => rules.barred[other] = true,
                    }
                }
            }
        }
        rules
    }

    fn add(&mut self, seen: Seen, me: Option<usize>, recovered_seq: u64) {
        if let (Some(me), Some((first_seq, _))) = (me, seen.later) {
            self.ceiling[me] = Some(first_seq);
        }
        if seen.later.is_some_and(|(first_seq, _)| first_seq <= recovered_seq) {
            self.required.push((self.seen.len(), me));
        }
        self.seen.push(seen);
    }

    /// Whether no read constrains the tiling.
    pub(crate) fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Whether every required write can be placed at all.
    pub(crate) fn satisfiable(&self) -> bool {
        self.required.iter().all(|&(_, candidate)| candidate.is_some())
    }

    /// Why `tiling` (the unknown writes it places, as `(index, first seq)`, from a search that
    /// ignored these rules)
    /// breaks them: the first seen write it leaves out though a later write is in, or places
    /// at or above a write issued after the read that showed it.
    pub(crate) fn explain(
        &self,
        model: &Model,
        tiling: &[(usize, u64)],
        recovered_seq: u64,
    ) -> Option<Violation> {
        let placed: BTreeMap<usize, u64> = tiling.iter().copied().collect();
        let lost = |seen: &Seen, later: usize, later_first_seq: u64| Violation::SeenWriteLost {
            write: model.writes[seen.write].id,
            seen_at: seen.seen_at,
            later_write: model.writes[later].id,
            later_first_seq,
            recovered_seq,
        };
        for seen in &self.seen {
            let write = &model.writes[seen.write];
            let end = placed.get(&seen.write).map(|&first_seq| write.last_seq(first_seq));
            if let Some((first_seq, later)) = seen.later {
                if first_seq <= recovered_seq && end.is_none_or(|end| end >= first_seq) {
                    return Some(lost(seen, later, first_seq));
                }
            }
            for (&other, &other_first_seq) in &placed {
                let issued_after = model.writes[other].issued_at >= seen.seen_at;
                if issued_after && end.is_none_or(|end| end >= other_first_seq) {
                    return Some(lost(seen, other, other_first_seq));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound::Unbounded;

    use crate::test_util::{put, state};
    use crate::{Model, Observation, Op, Violation, WriteId};

    /// A scan of every key by client 0 that returned `pairs`, handed to the model.
    fn scan_now(model: &mut Model, pairs: &[(&str, &str)]) {
        let token = model.begin_read();
        model.observe(token, Observation::scan(0, (Unbounded, Unbounded), state(pairs)));
        assert_eq!(model.check_observations(), Ok(()));
    }

    /// `x` in flight and seen by a read, `z` in flight and never seen, then a synced write
    /// issued after the read and acked at seq 2, leaving seq 1 to one of them.
    fn seen_then_synced(model: &mut Model, read: impl FnOnce(&mut Model)) -> (WriteId, WriteId) {
        let x = model.issue_write(vec![put("k", "x")], false);
        model.issue_write(vec![put("z", "1")], false);
        read(model);
        let synced = model.issue_write(vec![put("s", "1")], true);
        model.ack_write(synced, 2);
        (x, synced)
    }

    #[test]
    fn a_write_seen_before_a_later_synced_ack_must_survive() {
        let mut model = Model::new();
        let (x, synced) = seen_then_synced(&mut model, |model| scan_now(model, &[("k", "x")]));
        assert_eq!(model.check_recovery(&state(&[("k", "x"), ("s", "1")]), 2), Ok(()));
        // The unseen write could fill seq 1 as well, but then the seen one is lost.
        let lost = model.check_recovery(&state(&[("z", "1"), ("s", "1")]), 2).unwrap_err();
        let expected = Violation::SeenWriteLost {
            write: x,
            seen_at: 2,
            later_write: synced,
            later_first_seq: 2,
            recovered_seq: 2,
        };
        assert_eq!(lost, expected);
        let message = lost.to_string();
        assert!(message.contains("a read showed write #0 (model clock 2)"), "{message}");
        assert!(message.contains("write #2, issued after that read"), "{message}");
        // A state that is wrong anyway is reported as such.
        let wrong = model.check_recovery(&state(&[("z", "2"), ("s", "1")]), 2);
        assert!(matches!(wrong, Err(Violation::StateMismatch { .. })), "{wrong:?}");
    }

    #[test]
    fn a_point_read_proves_a_write_seen_too() {
        let mut model = Model::new();
        let (x, _) = seen_then_synced(&mut model, |model| {
            let token = model.begin_read();
            assert_eq!(model.check_read(b"k", &token, Some(b"x")), Ok(()));
        });
        let lost = model.check_recovery(&state(&[("z", "1"), ("s", "1")]), 2);
        assert!(matches!(lost, Err(Violation::SeenWriteLost { write, .. }) if write == x));
        assert_eq!(model.check_recovery(&state(&[("k", "x"), ("s", "1")]), 2), Ok(()));
    }

    #[test]
    fn a_seen_write_with_no_later_write_recovered_may_be_lost() {
        let mut model = Model::new();
        model.issue_write(vec![put("k", "x")], false);
        scan_now(&mut model, &[("k", "x")]);
        let later = model.issue_write(vec![put("w", "1")], false);
        model.ack_write(later, 2);
        assert_eq!(model.check_recovery(&state(&[]), 0), Ok(()));
        assert_eq!(model.check_recovery(&state(&[("k", "x")]), 1), Ok(()));
        // Once the later write is recovered, the seen one must be there, below it.
        assert_eq!(model.check_recovery(&state(&[("k", "x"), ("w", "1")]), 2), Ok(()));
    }

    #[test]
    fn a_seen_write_lies_below_every_write_issued_after_the_read() {
        let mut model = Model::new();
        let x = model.issue_write(vec![put("k", "x")], false);
        scan_now(&mut model, &[("k", "x")]);
        let later = model.issue_write(vec![put("w", "1")], false);
        model.ack_write(later, 1);
        // The only room for the seen write is above the later one.
        let above = model.check_recovery(&state(&[("w", "1"), ("k", "x")]), 2).unwrap_err();
        assert!(
            matches!(above, Violation::SeenWriteLost { write, later_write, .. } if write == x && later_write == later),
            "{above}"
        );
        assert_eq!(model.check_recovery(&state(&[]), 0), Ok(()));
    }

    #[test]
    fn a_seen_write_precedes_unknown_writes_issued_after_the_read() {
        let mut model = Model::new();
        let x = model.issue_write(vec![put("k", "x")], false);
        scan_now(&mut model, &[("k", "x")]);
        let y = model.issue_write(vec![put("k", "y")], false);
        assert_eq!(model.check_recovery(&state(&[("k", "x")]), 1), Ok(()));
        assert_eq!(model.check_recovery(&state(&[("k", "y")]), 2), Ok(()));
        // "y" alone at seq 1, or "y" below "x", needs the seen write above a later one.
        for (value, seq) in [("y", 1), ("x", 2)] {
            let lost = model.check_recovery(&state(&[("k", value)]), seq).unwrap_err();
            assert!(
                matches!(lost, Violation::SeenWriteLost { write, later_write, .. } if write == x && later_write == y),
                "k = {value} at {seq}: {lost}"
            );
        }
    }

    #[test]
    fn a_value_two_writes_could_explain_proves_nothing() {
        let mut model = Model::new();
        model.issue_write(vec![put("k", "x")], false);
        model.issue_write(vec![put("k", "x")], false);
        scan_now(&mut model, &[("k", "x")]);
        let synced = model.issue_write(vec![put("s", "1")], true);
        model.ack_write(synced, 1);
        assert_eq!(model.check_recovery(&state(&[("s", "1")]), 1), Ok(()));
    }

    #[test]
    fn a_seen_write_acked_late_raises_the_floor_of_later_writes() {
        for seen in [false, true] {
            let mut model = Model::new();
            let x = model.issue_write(vec![put("k", "x")], false);
            if seen {
                scan_now(&mut model, &[("k", "x")]);
            }
            let later = model.issue_write(vec![put("w", "1")], false);
            model.ack_write(later, 1);
            model.ack_write(x, 2);
            let expected = Violation::AckReordered {
                write: later,
                first_seq: 1,
                earlier: x,
                earlier_last_seq: 2,
            };
            let acks = model.check_acks();
            assert_eq!(acks, if seen { Err(expected) } else { Ok(()) }, "seen: {seen}");
        }
    }

    #[test]
    fn a_judged_read_raises_the_floor_of_writes_issued_after_it() {
        // The read shows "k" deleted, which an older write explains too, so only judging the
        // read (once the delete is acked) proves the delete visible.
        let mut model = Model::new();
        model.restart(state(&[("k", "0")]), 10);
        let older = model.issue_write(vec![Op::Delete(b"k".to_vec())], false);
        model.ack_write(older, 11);
        let put_back = model.issue_write(vec![put("k", "1")], false);
        model.ack_write(put_back, 12);
        let delete = model.issue_write(vec![Op::Delete(b"k".to_vec())], false);
        let token = model.begin_read();
        model.observe(token, Observation::point(0, b"k".to_vec(), None));
        let later = model.issue_write(vec![put("w", "1")], false);
        model.ack_write(later, 13);
        assert_eq!(model.check_observations(), Ok(()));
        model.ack_write(delete, 14);
        let reordered = model.check_observations();
        let expected = Violation::AckReordered {
            write: later,
            first_seq: 13,
            earlier: delete,
            earlier_last_seq: 14,
        };
        assert_eq!(reordered, Err(expected));
    }
}
