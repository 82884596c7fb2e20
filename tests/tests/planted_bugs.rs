//! Proof the simulator has teeth: each planted bug must be found within seeds 0..2,000, and in
//! at least 5% of them (so that finding it is not luck), and its first failing seed must pass
//! without the bug. Runs only in the simulated build (`cargo sim-test`). The seeds run in
//! chunks and stop once 5% of 2,000 have failed; `cargo sim run --seeds 0..2000 --bug B` gives
//! a bug's full count (docs/simulation.md lists them).
#![cfg(madsim)]

use jadedb_sim::config::Bug;
use jadedb_sim::runner::{events_of_failure, run_one, run_seeds};
use jadedb_sim::trace::Trace;

/// The seeds the issue sets for finding each planted bug.
const SEEDS_MAX: u64 = 2_000;
/// The share of those seeds that must find it.
const SHARE_MIN: f64 = 0.05;

/// Seeds run at a time: a bug found often stops after its first chunks.
const CHUNK: u64 = 250;

fn assert_found(bug: Bug) {
    // In chunks, in seed order, stopping once the failures alone make the share: the share of
    // 0..SEEDS_MAX is then reached whatever the seeds not run would do, and a bug found in most
    // seeds costs a chunk instead of the whole range (CI time).
    let needed = (SHARE_MIN * SEEDS_MAX as f64).ceil() as usize;
    let mut failed = Vec::new();
    let mut ran = 0;
    while ran < SEEDS_MAX && failed.len() < needed {
        let sweep = run_seeds(ran..(ran + CHUNK).min(SEEDS_MAX), 2, Some(bug), true);
        failed.extend(sweep.failed_seeds());
        ran = (ran + CHUNK).min(SEEDS_MAX);
    }
    let first =
        *failed.first().unwrap_or_else(|| panic!("planted bug {bug} survived {SEEDS_MAX} seeds"));
    println!(
        "planted bug {bug}: found at seed {first}, in {} of the first {ran} seeds",
        failed.len()
    );
    assert!(
        failed.len() >= needed,
        "planted bug {bug} was found in only {} of {SEEDS_MAX} seeds ({:.1}%, at least {:.0}% \
         needed)",
        failed.len(),
        100.0 * failed.len() as f64 / SEEDS_MAX as f64,
        100.0 * SHARE_MIN
    );
    // A sweep's silent trace keeps no events; a failure's are found by running it again.
    let silent = run_one(first, Some(bug), Trace::silent());
    assert!(silent.failure.is_some(), "seed {first} failed in the sweep but not alone");
    assert!(silent.recent.is_empty(), "a silent trace kept events");
    let events = events_of_failure(&silent, Some(bug));
    assert!(
        !events.is_empty() && !events.iter().any(|e| e.contains("not deterministic")),
        "seed {first} run again did not show how it failed: {events:?}"
    );
    let clean = run_one(first, None, Trace::default());
    assert!(
        clean.failure.is_none(),
        "seed {first} fails even without the bug: {:?}",
        clean.failure
    );
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

#[test]
fn fsync_failure_retried_instead_of_failing_stop_is_found() {
    assert_found(Bug::RetryFailedFsync);
}

#[test]
fn durable_mark_raised_before_the_fsync_returns_is_found() {
    assert_found(Bug::DurableMarkEarly);
}

#[test]
fn any_bad_log_record_read_as_a_torn_tail_is_found() {
    assert_found(Bug::BadRecordAsTornTail);
}

#[test]
fn next_file_number_recovered_too_low_is_found() {
    assert_found(Bug::NextFileNumberTooLow);
}

#[test]
fn background_panic_not_poisoning_the_database_is_found() {
    assert_found(Bug::BackgroundPanicNotCaught);
}

#[test]
fn flushes_installed_out_of_order_are_found() {
    assert_found(Bug::FlushInstallOutOfOrder);
}

#[test]
fn a_new_logs_name_left_unsynced_is_found() {
    assert_found(Bug::NewWalNameNotSynced);
}

#[test]
fn a_write_buffer_dropped_when_its_log_is_retired_is_found() {
    assert_found(Bug::WalBufferDropped);
}

#[test]
fn a_new_log_created_before_the_old_one_is_synced_is_found() {
    assert_found(Bug::NewWalBeforeOldSynced);
}

#[test]
fn blob_garbage_that_ignores_snapshots_is_found() {
    assert_found(Bug::BlobGarbageIgnoresSnapshots);
}

#[test]
fn a_blob_file_left_unsynced_under_its_table_is_found() {
    assert_found(Bug::BlobNotSynced);
}

#[test]
fn blob_garbage_that_counts_a_live_value_is_found() {
    assert_found(Bug::BlobGarbageCountsLive);
}
