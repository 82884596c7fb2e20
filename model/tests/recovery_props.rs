//! Property tests of `Model::check_recovery` against an independent oracle: the state after a
//! cut is computed here by folding the writes in order, without the model's search, and the
//! model must accept it and reject any change to it that makes it a different state.

use std::collections::BTreeMap;

use jadedb_model::{Key, Model, Op, Value, Violation};
use proptest::prelude::*;
use proptest::sample::Index;

type State = BTreeMap<Key, Value>;

/// A small key space, so that writes overwrite and delete each other's keys often.
fn key() -> impl Strategy<Value = Key> {
    (0u8..6).prop_map(|k| vec![b'k', k])
}

fn op() -> impl Strategy<Value = Op> {
    let value = (0u8..4).prop_map(|v| vec![b'v', v]);
    prop_oneof![
        3 => (key(), value).prop_map(|(k, v)| Op::Put(k, v)),
        1 => key().prop_map(Op::Delete),
    ]
}

/// A write batch and whether it asks for sync.
fn write() -> impl Strategy<Value = (Vec<Op>, bool)> {
    (prop::collection::vec(op(), 1..4), prop::bool::weighted(0.25))
}

/// Where a previous epoch left off.
fn base() -> impl Strategy<Value = (State, u64)> {
    let value = (0u8..4).prop_map(|v| vec![b'v', v]);
    (prop::collection::btree_map(key(), value, 0..4), 0u64..100)
}

fn apply(state: &mut State, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Put(key, value) => state.insert(key.clone(), value.clone()),
            Op::Delete(key) => state.remove(key),
        };
    }
}

fn model_at(base: &(State, u64)) -> Model {
    let mut model = Model::new();
    model.restart(base.0.clone(), base.1);
    model
}

/// The ways a recovered state can be changed by one edit.
#[derive(Clone, Debug)]
enum Mutation {
    Change(Index, Value),
    Add(Key, Value),
    Remove(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = (0u8..5).prop_map(|v| vec![b'v', v]);
    prop_oneof![
        (any::<Index>(), value.clone()).prop_map(|(i, v)| Mutation::Change(i, v)),
        ((0u8..8).prop_map(|k| vec![b'k', k]), value).prop_map(|(k, v)| Mutation::Add(k, v)),
        any::<Index>().prop_map(Mutation::Remove),
    ]
}

fn mutate(state: &State, mutation: &Mutation) -> State {
    let mut mutated = state.clone();
    // Index::index panics on an empty range, so an empty state has no nth key.
    let nth_key = |index: &Index| {
        let len = state.len();
        (len > 0).then(|| state.keys().nth(index.index(len)).cloned()).flatten()
    };
    match mutation {
        Mutation::Change(index, value) => {
            if let Some(key) = nth_key(index) {
                mutated.insert(key, value.clone());
            }
        }
        Mutation::Add(key, value) => {
            mutated.entry(key.clone()).or_insert_with(|| value.clone());
        }
        Mutation::Remove(index) => {
            if let Some(key) = nth_key(index) {
                mutated.remove(&key);
            }
        }
    }
    mutated
}

/// What became of a write in the engine, as the test decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Acked,
    /// The engine returned an error, or was still working when it crashed, yet gave the write
    /// seqs (it may be recovered).
    UnknownApplied {
        failed: bool,
    },
    /// As above, but the write never got seqs.
    UnknownDropped {
        failed: bool,
    },
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => Just(Outcome::Acked),
        1 => any::<bool>().prop_map(|failed| Outcome::UnknownApplied { failed }),
        1 => any::<bool>().prop_map(|failed| Outcome::UnknownDropped { failed }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// With every write acked, exactly one state is legal for each batch boundary at or above
    /// the durable frontier.
    #[test]
    fn acked_prefixes_pass_and_mutations_fail(
        base in base(),
        writes in prop::collection::vec(write(), 1..20),
        cut in any::<Index>(),
        mutation in mutation(),
    ) {
        let mut model = model_at(&base);
        let mut ends = vec![base.1];
        for (ops, sync) in &writes {
            let id = model.issue_write(ops.clone(), *sync);
            let first_seq = ends[ends.len() - 1] + 1;
            model.ack_write(id, first_seq);
            ends.push(first_seq + ops.len() as u64 - 1);
        }
        let must_keep = writes.iter().rposition(|(_, sync)| *sync).map_or(0, |i| i + 1);
        prop_assert_eq!(model.durable_frontier(), ends[must_keep]);
        let kept = must_keep + cut.index(writes.len() - must_keep + 1);
        let mut state = base.0.clone();
        for (ops, _) in &writes[..kept] {
            apply(&mut state, ops);
        }
        let recovered_seq = ends[kept];
        prop_assert_eq!(model.check_recovery(&state, recovered_seq), Ok(()));

        let mutated = mutate(&state, &mutation);
        if mutated != state {
            let rejected = model.check_recovery(&mutated, recovered_seq);
            prop_assert!(matches!(rejected, Err(Violation::StateMismatch { .. })), "{:?}", rejected);
        }
        if must_keep > 0 {
            let mut short = base.0.clone();
            for (ops, _) in &writes[..must_keep - 1] {
                apply(&mut short, ops);
            }
            let lost = model.check_recovery(&short, ends[must_keep - 1]);
            prop_assert!(matches!(lost, Err(Violation::SyncedWriteLost { .. })), "{:?}", lost);
        }
        if let Some(batch) = writes[kept..].iter().position(|(ops, _)| ops.len() > 1) {
            let inside = ends[kept + batch] + 1;
            prop_assert!(model.check_recovery(&state, inside).is_err());
        }
    }

    /// Unknown-seq writes, whether the engine applied them or not, never make a true prefix
    /// fail; a value or key no write ever produced is still caught.
    #[test]
    fn prefixes_with_unknown_writes_pass(
        base in base(),
        writes in prop::collection::vec((write(), outcome()), 1..16),
        cut in any::<Index>(),
    ) {
        let mut model = model_at(&base);
        // (index into writes, last seq) of the writes the engine gave seqs, in seq order.
        let mut applied: Vec<(usize, u64)> = Vec::new();
        let mut frontier_at = 0;
        for (index, ((ops, sync), outcome)) in writes.iter().enumerate() {
            let id = model.issue_write(ops.clone(), *sync);
            let first_seq = applied.last().map_or(base.1, |&(_, last)| last) + 1;
            match outcome {
                Outcome::Acked => model.ack_write(id, first_seq),
                Outcome::UnknownApplied { failed: true } | Outcome::UnknownDropped { failed: true } => {
                    model.fail_write(id)
                }
                _ => {}
            }
            if !matches!(outcome, Outcome::UnknownDropped { .. }) {
                applied.push((index, first_seq + ops.len() as u64 - 1));
                if *outcome == Outcome::Acked && *sync {
                    frontier_at = applied.len();
                }
            }
        }
        let kept = frontier_at + cut.index(applied.len() - frontier_at + 1);
        let mut state = base.0.clone();
        for &(index, _) in &applied[..kept] {
            apply(&mut state, &writes[index].0.0);
        }
        let recovered_seq = applied[..kept].last().map_or(base.1, |&(_, last)| last);
        prop_assert_eq!(model.check_recovery(&state, recovered_seq), Ok(()));

        let mut foreign_value = state.clone();
        foreign_value.insert(vec![b'k', 0], b"never written".to_vec());
        prop_assert!(model.check_recovery(&foreign_value, recovered_seq).is_err());
        let mut foreign_key = state.clone();
        foreign_key.insert(b"never written".to_vec(), vec![b'v', 0]);
        prop_assert!(model.check_recovery(&foreign_key, recovered_seq).is_err());
    }
}
