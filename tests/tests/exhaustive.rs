//! The exhaustive mode checks every crash state of a small workload (`jadedb_sim::exhaustive`):
//! it must find the planted bugs that only some crash images expose (a sync that does nothing, a
//! WAL reader that accepts a torn record) among the states themselves, and find nothing in the
//! engine as it is. Runs only in the simulated build (`cargo sim-test`).
#![cfg(madsim)]

use jadedb_sim::config::{Bug, ScenarioConfig};
use jadedb_sim::exhaustive;

#[test]
fn the_crash_states_of_a_small_workload_expose_sync_noop_and_torn_records() {
    for bug in [Bug::SyncNoop, Bug::AcceptTornWal] {
        for seed in 0..3 {
            let config = ScenarioConfig::draw(seed, Some(bug));
            let report = exhaustive::run(&config, 1000, true);
            let (point, image, why) = report.failures.first().unwrap_or_else(|| {
                panic!("{bug}, seed {seed}: no failing state among {}", report.states)
            });
            println!(
                "{bug}, seed {seed}: moment {point}, image {image} of {}: {why}",
                report.states
            );
            assert!(report.ops < 150, "a small workload: {} operations", report.ops);
        }
    }
}

#[test]
fn every_crash_state_of_small_workloads_recovers_a_legal_state() {
    for seed in 0..4 {
        let report = exhaustive::run(&ScenarioConfig::draw(seed, None), 150, false);
        assert_eq!(report.recording_failure, None, "seed {seed}");
        assert!(report.failures.is_empty(), "seed {seed}: {:?}", report.failures.first());
        assert!(report.points >= 5 && report.states >= 50, "seed {seed}: {report:?}");
    }
}
