//! A sweep of seeds outside the CI sweep's range, with a floor on how many scenarios reach the
//! interesting states. A failure the simulator finds is shrunk (`cargo sim shrink --seed S`)
//! into a scenario file under `tests/scenarios/`, which `scenarios.rs` replays by content (a
//! seed's scenario changes whenever the generator does, so a seed alone is no lasting
//! regression test); earlier ones became named engine-level tests, such as
//! `leader_cancelled_in_its_commit_window_loses_nothing` in `engine_faults.rs`. Runs only in
//! the simulated build (`cargo sim-test`).
#![cfg(madsim)]

use jadedb_sim::runner::run_seeds;

#[test]
fn sweep_of_500_seeds_passes() {
    let s = run_seeds(10_000..10_500, 2, None, false);
    assert_eq!(s.failed, 0, "failing seeds: {:?}", s.failed_seeds());
    assert!(
        s.full_coverage > 400,
        "too few scenarios covered crash + recovery: {}",
        s.full_coverage
    );
}
