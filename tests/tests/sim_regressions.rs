//! Seeds that once failed stay in the suite as named regressions, and a short sweep runs in
//! every test run. Runs only in the simulated build (`cargo sim-test`).
#![cfg(madsim)]

use jadedb_sim::runner::{print_failure, run_one, run_seeds};
use jadedb_sim::trace::Trace;

/// Seeds 8 and 19 hung the simulator: a commit leader cancelled during its commit window
/// handed leadership to itself. Fixed in `Signal::fill`.
#[test]
fn cancelled_leader_in_commit_window() {
    for seed in [8, 19] {
        let o = run_one(seed, None, Trace::default());
        if o.failure.is_some() {
            print_failure(&o);
        }
        assert!(o.failure.is_none(), "seed {seed}");
    }
}

#[test]
fn sweep_of_500_seeds_passes() {
    let s = run_seeds(10_000..10_500, 2, None, false);
    assert_eq!(s.failed, 0, "failing seeds: {:?}", s.failed_seeds);
    assert!(
        s.full_coverage > 400,
        "too few scenarios covered crash + recovery: {}",
        s.full_coverage
    );
}
