//! A sweep cut into shards is the same sweep: the shards of a range run exactly its seeds, and
//! their JSON summaries, merged, give the unsharded sweep's summary, count for count (only the
//! wall-clock times differ). Runs only in the simulated build (`cargo sim-test`); the scripts
//! that the nightly workflow and the Kubernetes Job run are checked end to end by
//! `ci/check-sharding.sh`.
#![cfg(madsim)]

use jadedb_sim::report::{merge, SweepDoc};
use jadedb_sim::runner::{run_seeds_of, SweepOptions};
use jadedb_sim::summary::Summary;
use jadedb_sim::sweep::{Only, Shard};
use std::ops::Range;

fn without_times(mut s: Summary) -> Summary {
    s.standard_secs = 0.0;
    s.scale_secs = 0.0;
    s
}

fn assert_shards_merge_into_the_whole(seeds: Range<u64>, only: Only, count: u64) {
    let options = SweepOptions { quiet: true, ..SweepOptions::new(2, None) };
    let doc = |shard: Shard| {
        let summary = run_seeds_of(seeds.clone(), only, shard, &options);
        SweepDoc::of_run(seeds.clone(), false, only, None, shard, 2, None, summary)
    };
    let whole = doc(Shard::WHOLE);
    let shards: Vec<(String, SweepDoc)> = (0..count)
        .map(|index| {
            // Through JSON, as shards on other machines hand their summaries over.
            let json = doc(Shard { index, count }).to_json();
            (format!("shard {index}"), SweepDoc::from_json(&json).expect("a summary reads back"))
        })
        .collect();
    let ran: u64 = shards.iter().map(|(_, d)| d.summary.count()).sum();
    assert_eq!(ran, whole.summary.count(), "the shards ran as many seeds as the whole");
    let merged = merge(&shards).expect("the shards merge");
    assert_eq!(merged.shards, (0..count).collect::<Vec<_>>());
    assert!(whole.summary.passed > 0 && whole.summary.failed == 0);
    assert_eq!(
        without_times(merged.summary),
        without_times(whole.summary),
        "{seeds:?} in {count} shards, only {only:?}"
    );
}

#[test]
fn four_shards_of_4000_standard_seeds_merge_into_the_unsharded_summary() {
    assert_shards_merge_into_the_whole(0..4000, Only::Standard, 4);
}

#[test]
fn shards_with_scale_seeds_merge_into_the_unsharded_summary() {
    assert_shards_merge_into_the_whole(7_000..7_240, Only::All, 3);
}
