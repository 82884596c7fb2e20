//! Proof the simulator has teeth: each planted bug must be found within 2,000 seeds, and the
//! same seeds must pass without it. Runs only in the simulated build (`cargo sim-test`).
#![cfg(madsim)]

use jadedb_sim::config::Bug;
use jadedb_sim::runner::run_one;
use jadedb_sim::trace::Trace;

/// The budget the issue sets for finding each planted bug.
const SEEDS_MAX: u64 = 2_000;

fn first_failing_seed(bug: Bug) -> Option<u64> {
    (0..SEEDS_MAX).find(|&seed| run_one(seed, Some(bug), Trace::default()).failure.is_some())
}

fn assert_found(bug: Bug) {
    let seed = first_failing_seed(bug)
        .unwrap_or_else(|| panic!("planted bug {bug} survived {SEEDS_MAX} seeds"));
    println!("planted bug {bug} found at seed {seed}");
    let clean = run_one(seed, None, Trace::default());
    assert!(clean.failure.is_none(), "seed {seed} fails even without the bug: {:?}", clean.failure);
}

#[test]
fn sync_that_does_nothing_is_found() {
    assert_found(Bug::SyncNoop);
}

#[test]
fn wal_reader_accepting_a_torn_record_is_found() {
    assert_found(Bug::AcceptTornWal);
}

#[test]
fn ack_before_fsync_is_found() {
    assert_found(Bug::AckBeforeSync);
}

#[test]
fn wal_deleted_before_the_manifest_names_its_table_is_found() {
    assert_found(Bug::DeleteWalEarly);
}

#[test]
fn compaction_that_ignores_snapshots_is_found() {
    assert_found(Bug::CompactionIgnoresSnapshots);
}
