//! `FaultFs` over `MemFs`: rules fire exactly when their predicates say, and each effect does
//! what it claims (and nothing more).

mod common;

use common::*;
use jadedb::runtime::FileSystem;
use jadedb_fault::{Effect, FaultFs, MemFs, OpKind, Predicate};
use std::io;

fn wrapped() -> (MemFs, FaultFs<MemFs>) {
    let disk = MemFs::new();
    mkdir(&disk, "/db");
    sync_dir(&disk, "/");
    (disk.clone(), FaultFs::new(disk))
}

fn sync_results(file: &dyn jadedb::runtime::File, calls: usize) -> Vec<bool> {
    (0..calls).map(|_| sync(file).is_ok()).collect()
}

#[test]
fn nth_fires_once_on_the_nth_call() {
    let (_, fs) = wrapped();
    let fs = fs.with_rule(OpKind::Sync, Predicate::nth(3), Effect::EIO);
    let file = create(&fs, "/db/1.log");
    assert_eq!(sync_results(&*file, 6), [true, true, false, true, true, true]);
    assert_eq!(fs.fired(), 1);
}

#[test]
fn path_predicates_fire_only_on_matching_paths() {
    let (_, fs) = wrapped();
    let fs = fs.with_rule(OpKind::Write, Predicate::path_ends_with(".log"), Effect::ENOSPC);
    let sst = create(&fs, "/db/1.sst");
    let log = create(&fs, "/db/1.log");
    pollster::block_on(sst.write_at(0, b"ok")).expect("an .sst write is not faulted");
    let err = pollster::block_on(log.write_at(0, b"no")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(28));
    assert_eq!(read(&*log), b"", "a failed write writes nothing");
    assert_eq!(fs.fired(), 1);
}

#[test]
fn and_counts_only_matching_paths() {
    let (_, fs) = wrapped();
    let when = Predicate::path_contains(".log").and(Predicate::nth(2));
    let fs = fs.with_rule(OpKind::Sync, when, Effect::EIO);
    let sst = create(&fs, "/db/1.sst");
    let log = create(&fs, "/db/1.log");
    assert!(sync(&*sst).is_ok() && sync(&*sst).is_ok());
    assert!(sync(&*log).is_ok());
    assert!(sync(&*log).is_err(), "the 2nd sync of a .log file fails");
}

#[test]
fn probability_faults_are_fixed_by_the_seed() {
    let pattern = |seed| {
        let (_, fs) = wrapped();
        let fs = fs.with_rule(OpKind::Read, Predicate::probability(0.25, seed), Effect::EIO);
        let file = create(&fs, "/db/f");
        write(&*file, 0, b"abc");
        let mut buf = [0u8; 3];
        (0..100).map(|_| pollster::block_on(file.read_at(0, &mut buf)).is_ok()).collect::<Vec<_>>()
    };
    assert_eq!(pattern(42), pattern(42));
    assert_ne!(pattern(42), pattern(43));
    let failures = pattern(42).iter().filter(|ok| !**ok).count();
    assert!((5..=50).contains(&failures), "p=0.25 over 100 reads failed {failures} times");
}

#[test]
fn bit_flip_changes_exactly_one_bit() {
    for seed in 0..SEEDS {
        let (_, fs) = wrapped();
        let fs = fs.with_seed(seed).with_rule(OpKind::Read, Predicate::always(), Effect::BitFlip);
        let file = create(&fs, "/db/f");
        let data = vec![0x5A; 4096];
        write(&*file, 0, &data);
        let got = read(&*file);
        let flipped: u32 = got.iter().zip(&data).map(|(a, b)| (a ^ b).count_ones()).sum();
        assert_eq!(flipped, 1, "seed={seed}");
    }
}

#[test]
fn short_reads_return_less_but_something() {
    let (_, fs) = wrapped();
    let fs = fs.with_rule(OpKind::Read, Predicate::always(), Effect::ShortRead);
    let file = create(&fs, "/db/f");
    write(&*file, 0, &[1u8; 100]);
    for _ in 0..50 {
        let mut buf = [0u8; 100];
        let n = pollster::block_on(file.read_at(0, &mut buf)).unwrap();
        assert!((1..100).contains(&n), "short read of {n}");
    }
    assert_eq!(read(&*file), [1u8; 100], "read_exact_at loops over short reads");
}

#[test]
fn a_silently_skipped_sync_leaves_data_to_be_lost() {
    let (disk, fs) = wrapped();
    let fs = fs.with_rule(OpKind::Sync, Predicate::always(), Effect::SkipSilently);
    let file = create(&fs, "/db/f");
    sync_dir(&fs, "/db");
    write(&*file, 0, b"acknowledged");
    sync(&*file).expect("the planted bug reports success");
    assert_eq!(disk.stats().syncs, 0, "the disk never saw the sync");
    let after = disk.crash_keep_nothing();
    assert_eq!(contents(&after, "/db/f").unwrap(), b"", "the skipped sync made nothing durable");
}

#[test]
fn rules_switch_at_run_time_across_clones() {
    let (_, fs) = wrapped();
    let handle = fs.clone();
    let file = create(&fs, "/db/f");
    handle.add_rule(OpKind::Write, Predicate::never(), Effect::EIO);
    handle.add_rule(OpKind::Sync, Predicate::always(), Effect::Error(io::ErrorKind::Other));
    assert!(sync(&*file).is_err(), "a rule added through a clone reaches open files");
    assert_eq!(fs.fired_per_rule(), [0, 1], "each rule counts its own firings");
    handle.set_enabled(false);
    assert!(sync(&*file).is_ok());
    handle.set_enabled(true);
    assert!(sync(&*file).is_err());
    handle.clear_rules();
    assert!(sync(&*file).is_ok());
    assert_eq!(fs.fired(), 2);
}

#[test]
fn namespace_calls_are_faulted_too() {
    let (_, fs) = wrapped();
    let fs =
        fs.with_rule(OpKind::Rename, Predicate::path_ends_with("CURRENT"), Effect::EIO).with_rule(
            OpKind::Create,
            Predicate::nth(1),
            Effect::Error(io::ErrorKind::PermissionDenied),
        );
    let err = pollster::block_on(fs.create(std::path::Path::new("/db/a"))).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    create(&fs, "/db/tmp");
    let rename = fs.rename(std::path::Path::new("/db/tmp"), std::path::Path::new("/db/CURRENT"));
    assert!(pollster::block_on(rename).is_err(), "the rename target matches the path rule");
    assert_eq!(list(&fs, "/db"), ["tmp"]);
}

#[test]
#[should_panic(expected = "cannot apply")]
fn a_meaningless_rule_is_refused() {
    let (_, fs) = wrapped();
    fs.add_rule(OpKind::Open, Predicate::always(), Effect::SkipSilently);
}

#[test]
fn rules_carry_over_to_the_next_boot() {
    let (disk, fs) = wrapped();
    let fs = fs.with_rule(OpKind::Sync, Predicate::path_ends_with(".log"), Effect::EIO);
    let next = fs.with_same_rules(disk.crash(&mut rng(0)));
    let file = create(&next, "/db/2.log");
    assert!(sync(&*file).is_err());
    assert_eq!(fs.fired(), 1, "counters are shared with the original wrapper");
}
