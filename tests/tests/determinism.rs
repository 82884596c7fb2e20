//! Invariant 6: the same seed gives the same trace, bit for bit. Runs only in the simulated
//! build (`cargo sim-test`).
#![cfg(madsim)]

use jadedb_sim::runner::run_one;
use jadedb_sim::trace::Trace;

#[test]
fn same_seed_same_trace_hash() {
    for seed in 0..40 {
        let a = run_one(seed, None, Trace::default());
        let b = run_one(seed, None, Trace::default());
        assert!(a.failure.is_none(), "seed {seed} failed: {:?}", a.failure);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} is not deterministic");
    }
}

#[test]
fn different_seeds_give_different_traces() {
    let a = run_one(1, None, Trace::default()).trace_hash;
    let b = run_one(2, None, Trace::default()).trace_hash;
    assert_ne!(a, b);
}

/// A sweep runs with a silent trace: it must change nothing but the trace itself.
#[test]
fn a_silent_trace_changes_nothing_but_the_trace() {
    for seed in 0..40 {
        let heard = run_one(seed, None, Trace::default());
        let silent = run_one(seed, None, Trace::silent());
        assert_eq!(heard.failure, silent.failure, "seed {seed}");
        assert_eq!(format!("{:?}", heard.stats), format!("{:?}", silent.stats), "seed {seed}");
        assert!(silent.recent.is_empty() && !heard.recent.is_empty(), "seed {seed}");
    }
}
