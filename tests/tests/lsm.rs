//! The LSM tree end to end over the in-memory disk with real threads: flushes and compactions
//! under a random workload checked against a `BTreeMap`, snapshots that outlive compactions,
//! tombstones that compaction drops, crash recovery through the MANIFEST, and damaged or
//! missing tables reported as corruption. The tests that check against a model run twice: with
//! every value in the tables, and with key-value separation (`Options::min_blob_size`) moving
//! about half of them to blob files.

use jadedb::runtime::FileSystem;
use jadedb::{Db, Error, Options, WriteBatch, WriteOptions};
use jadedb_fault::{MemFs, MemRuntime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::Path;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Options that make flushes and compactions happen every few hundred writes.
fn tiny() -> Options {
    Options::default()
        .memtable_bytes_max(4 << 10)
        .table_block_bytes(256)
        .l0_compaction_files(2)
        .level1_bytes_max(16 << 10)
        .target_file_bytes(4 << 10)
        .block_cache_bytes(64 << 10)
        .open_tables_max(4)
        .manifest_bytes_max(4 << 10)
}

/// `tiny()` with values of 40 bytes or more in blob files: about half of those `churn` writes.
fn tiny_blobs() -> Options {
    tiny().min_blob_size(Some(40))
}

fn open(fs: &MemFs, options: Options) -> Db {
    Db::open("/db", options, MemRuntime::new(fs)).expect("open")
}

fn key(k: usize) -> Vec<u8> {
    format!("key{k:05}").into_bytes()
}

/// Random puts, overwrites and deletes (some in batches) applied to the database and the model.
fn churn(db: &Db, model: &mut Model, rng: &mut ChaCha8Rng, ops: usize, keys: usize) {
    for i in 0..ops {
        let mut batch = WriteBatch::new();
        for _ in 0..rng.gen_range(1..=3) {
            let k = key(rng.gen_range(0..keys));
            if rng.gen_bool(0.2) {
                batch.delete(&k).unwrap();
                model.remove(&k);
            } else {
                let v = format!("v{i}-{}", "x".repeat(rng.gen_range(0..60))).into_bytes();
                batch.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        db.write(batch, WriteOptions { sync: i % 50 == 0 }).unwrap();
    }
}

/// Every key reads as the model says, and a full scan equals the model.
fn assert_matches(db: &Db, model: &Model, keys: usize) {
    for k in 0..keys {
        let k = key(k);
        assert_eq!(db.get(&k).unwrap().as_deref(), model.get(&k).map(Vec::as_slice), "key {k:?}");
    }
    let scanned: Model =
        db.scan(b"", None).unwrap().into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    assert_eq!(&scanned, model);
}

#[test]
fn flushes_and_compactions_keep_every_write_and_snapshots_keep_their_view() {
    flushes_and_compactions_keep_every_write(tiny());
}

#[test]
fn flushes_and_compactions_keep_every_write_with_values_in_blob_files() {
    let m = flushes_and_compactions_keep_every_write(tiny_blobs());
    assert!(m.blob_bytes_written > 0 && m.blob_files > 0, "{m:?}");
    assert!(m.blob_garbage_bytes < m.blob_bytes, "{m:?}");
    assert!(m.blob_space_amplification() >= 1.0, "{m:?}");
}

/// Returns the metrics before the close.
fn flushes_and_compactions_keep_every_write(options: Options) -> jadedb::Metrics {
    let fs = MemFs::new();
    let db = open(&fs, options.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut model = Model::new();
    let keys = 600;
    churn(&db, &mut model, &mut rng, 1500, keys);
    let snapshot = db.snapshot();
    let frozen = model.clone();
    churn(&db, &mut model, &mut rng, 3000, keys);
    // Flushed first: a memtable whose flush ends after the range passed level 0 (flushes run
    // beside compactions) would leave a level-0 table behind.
    db.flush().unwrap();
    db.compact_range(b"", b"\xff").unwrap();
    // Level 1, past its target after the range, is compacted on by the background.
    db.wait_for_compactions().unwrap();

    let m = db.metrics();
    assert!(m.flushes > 10, "flushes: {}", m.flushes);
    assert!(m.compactions > 3, "compactions: {}", m.compactions);
    assert_eq!(m.level_files[0], 0, "compact_range empties level 0: {:?}", m.level_files);
    assert!(
        m.level_files[2..].iter().sum::<u64>() > 0,
        "data reached level 2: {:?}",
        m.level_files
    );
    assert_matches(&db, &model, keys);
    // The snapshot still reads the state of its moment, after compactions rewrote everything.
    let seen: Model = snapshot
        .scan(b"", None)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(seen, frozen);
    for k in 0..keys {
        let k = key(k);
        assert_eq!(snapshot.get(&k).unwrap().as_deref(), frozen.get(&k).map(Vec::as_slice));
    }
    drop(snapshot);
    let metrics = db.metrics();
    db.close().unwrap();

    let db = open(&fs, options);
    assert_matches(&db, &model, keys);
    db.close().unwrap();
    metrics
}

#[test]
fn a_crash_keeps_every_synced_write_through_flushes_and_compactions() {
    crash_keeps_every_synced_write(tiny());
}

#[test]
fn a_crash_keeps_every_synced_write_with_values_in_blob_files() {
    crash_keeps_every_synced_write(tiny_blobs());
}

fn crash_keeps_every_synced_write(options: Options) {
    let fs = MemFs::new();
    let db = open(&fs, options.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut model = Model::new();
    churn(&db, &mut model, &mut rng, 2000, 300);
    db.sync_wal().unwrap();
    assert!(db.metrics().compactions > 0);
    // Power fails with the database open: only synced data survives, and all of it was synced.
    let after = fs.crash_keep_nothing();
    drop(db);
    let db = open(&after, options);
    assert_matches(&db, &model, 300);
    db.close().unwrap();
}

#[test]
fn compaction_drops_overwritten_versions_and_tombstones() {
    let fs = MemFs::new();
    let db = open(&fs, tiny());
    let value = vec![b'v'; 100];
    for round in 0..5 {
        for k in 0..200 {
            db.put(&key(k), &value, WriteOptions::default()).unwrap();
        }
        if round == 4 {
            for k in 0..200 {
                db.delete(&key(k), WriteOptions::default()).unwrap();
            }
        }
    }
    // The memtables are flushed first, so the deletions are compacted too.
    db.compact_range(b"", b"\xff").unwrap();
    let m = db.metrics();
    let table_bytes: u64 = m.level_bytes.iter().sum();
    // 1,000 versions of 100-byte values and 200 tombstones were written; none is left.
    assert_eq!(table_bytes, 0, "tables left: {:?}", m.level_bytes);
    for k in 0..200 {
        assert_eq!(db.get(&key(k)).unwrap(), None);
    }
    db.close().unwrap();
}

/// The files in the database directory whose names end with `suffix`.
fn files_ending(fs: &MemFs, suffix: &str) -> Vec<String> {
    let names = pollster::block_on(fs.list(Path::new("/db"))).unwrap();
    names.into_iter().filter(|n| n.ends_with(suffix)).collect()
}

/// The table files in the database directory.
fn tables(fs: &MemFs) -> Vec<String> {
    files_ending(fs, ".sst")
}

/// Flips one bit of a file in place.
fn flip_bit(fs: &MemFs, path: &str, offset: u64, bit: u8) {
    pollster::block_on(async {
        let file = fs.open(Path::new(path)).await.unwrap();
        let mut byte = [0u8];
        jadedb::runtime::read_exact_at(file.as_ref(), offset, &mut byte).await.unwrap();
        byte[0] ^= 1 << bit;
        file.write_at(offset, &byte).await.unwrap();
        file.sync_data().await.unwrap();
    });
}

#[test]
fn a_missing_table_is_reported_by_name_at_open() {
    assert_missing_file_reported(tiny(), ".sst");
}

/// Deletes the last file whose name ends with `suffix` from a database written with `options`:
/// the next open fails with corruption naming it.
fn assert_missing_file_reported(options: Options, suffix: &str) {
    let fs = MemFs::new();
    let db = open(&fs, options.clone());
    let mut model = Model::new();
    churn(&db, &mut model, &mut ChaCha8Rng::seed_from_u64(3), 500, 100);
    db.close().unwrap();
    let victim = files_ending(&fs, suffix).pop().expect("some such file");
    pollster::block_on(fs.remove(Path::new(&format!("/db/{victim}")))).unwrap();
    match Db::open("/db", options, MemRuntime::new(&fs)) {
        Err(Error::Corruption { reason, .. }) => assert!(reason.contains(&victim), "{reason}"),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("opened with {victim} missing"),
    }
}

#[test]
fn a_flipped_bit_in_a_table_is_corruption_naming_file_and_offset() {
    let fs = MemFs::new();
    let db = open(&fs, tiny());
    let mut model = Model::new();
    churn(&db, &mut model, &mut ChaCha8Rng::seed_from_u64(5), 800, 200);
    db.close().unwrap();
    let victim = tables(&fs).pop().expect("some table");
    let path = format!("/db/{victim}");
    flip_bit(&fs, &path, 100, 3);
    let db = open(&fs, tiny());
    let mut errors = Vec::new();
    for k in 0..200 {
        if let Err(e) = db.get(&key(k)) {
            errors.push(e);
        }
    }
    if let Err(e) = db.scan(b"", None) {
        errors.push(e);
    }
    assert!(!errors.is_empty(), "the damaged block was never reported");
    for e in errors {
        match e {
            Error::Corruption { file, offset, .. } => {
                assert!(file.ends_with(&victim), "{}", file.display());
                assert!(offset <= 100, "offset {offset} is past the damage");
            }
            other => panic!("expected corruption, got {other}"),
        }
    }
}

/// What an iterator over `[lower, upper)` of `model` must show at each step.
fn model_seek(
    model: &Model,
    lower: &[u8],
    upper: &[u8],
    target: &[u8],
    forward: bool,
) -> Option<Vec<u8>> {
    let in_range = model.range(lower.to_vec()..upper.to_vec()).map(|(k, _)| k);
    if forward {
        in_range.filter(|k| k.as_slice() >= target).min().cloned()
    } else {
        in_range.filter(|k| k.as_slice() <= target).max().cloned()
    }
}

#[test]
fn iterators_walk_both_ways_with_seeks_and_bounds_like_a_sorted_map() {
    iterators_walk_both_ways(tiny());
}

#[test]
fn iterators_walk_both_ways_over_values_in_blob_files() {
    iterators_walk_both_ways(tiny_blobs());
}

fn iterators_walk_both_ways(options: Options) {
    let fs = MemFs::new();
    let db = open(&fs, options);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut model = Model::new();
    let keys = 300;
    churn(&db, &mut model, &mut rng, 1200, keys);
    let snapshot = db.snapshot();
    let frozen = model.clone();
    // More churn: the memtables, level 0 and deeper levels all hold versions of the same keys.
    churn(&db, &mut model, &mut rng, 800, keys);
    for (round, (view, expect)) in
        [(None, &model), (Some(&snapshot), &frozen)].into_iter().enumerate()
    {
        for walk in 0..40 {
            let a = rng.gen_range(0..keys);
            let b = rng.gen_range(a..=keys);
            let (lower, upper) = (key(a), key(b));
            let mut it = match view {
                None => db.iter(Some(&lower), Some(&upper)).unwrap(),
                Some(s) => s.iter(Some(&lower), Some(&upper)).unwrap(),
            };
            let target = key(rng.gen_range(0..keys));
            let mut expected = if walk % 2 == 0 {
                it.seek(&target).unwrap();
                model_seek(expect, &lower, &upper, &target, true)
            } else {
                it.seek_for_prev(&target).unwrap();
                model_seek(expect, &lower, &upper, &target, false)
            };
            for step in 0..30 {
                let shown = it.entry().map(|(k, v)| (k.to_vec(), v.to_vec()));
                let wanted = expected.as_ref().map(|k| (k.clone(), expect[k].clone()));
                assert_eq!(shown, wanted, "round {round} walk {walk} step {step}");
                let Some(at) = expected.clone() else { break };
                let mut after = at.clone();
                after.push(0);
                if rng.gen_bool(0.5) {
                    it.next().unwrap();
                    expected = model_seek(expect, &lower, &upper, &after, true);
                } else {
                    it.prev().unwrap();
                    expected = expect.range(lower.clone()..at).map(|(k, _)| k.clone()).next_back();
                }
            }
        }
    }
    // Whole-range walks in both directions see exactly the model.
    let mut it = db.iter(None, None).unwrap();
    it.seek_to_first().unwrap();
    let mut forward = Vec::new();
    while it.valid() {
        forward.push(it.key().to_vec());
        it.next().unwrap();
    }
    assert_eq!(forward, model.keys().cloned().collect::<Vec<_>>());
    it.seek_to_last().unwrap();
    let mut backward = Vec::new();
    while it.valid() {
        backward.push(it.key().to_vec());
        it.prev().unwrap();
    }
    backward.reverse();
    assert_eq!(backward, forward);
    drop(snapshot);
    db.close().unwrap();
}

#[test]
fn flush_moves_the_memtables_into_tables_and_deletes_their_logs() {
    let fs = MemFs::new();
    let db = open(&fs, Options::default());
    db.flush().unwrap(); // nothing to flush: returns at once
    for k in 0..100 {
        db.put(&key(k), b"v", WriteOptions::default()).unwrap();
    }
    let logs_before = pollster::block_on(fs.list(Path::new("/db"))).unwrap();
    db.flush().unwrap();
    // The flush job deletes the WAL after the table is in: settled, it is gone.
    db.wait_for_compactions().unwrap();
    let m = db.metrics();
    assert_eq!(m.flushes, 1);
    assert_eq!(m.level_files[0], 1);
    // The new log's file is created once the old log is wholly synced, which a sync waits for.
    db.sync_wal().unwrap();
    let names = pollster::block_on(fs.list(Path::new("/db"))).unwrap();
    let logs: Vec<_> = names.iter().filter(|n| n.ends_with(".log")).collect();
    assert_eq!(logs.len(), 1, "only the new active log is left: {names:?}");
    assert!(!logs_before.contains(logs[0]), "the old log was replaced");
    for k in 0..100 {
        assert_eq!(db.get(&key(k)).unwrap().as_deref(), Some(&b"v"[..]));
    }
    // After a crash that keeps only synced data, the flushed writes are in the table.
    let after = fs.crash_keep_nothing();
    drop(db);
    let db = open(&after, Options::default());
    assert_eq!(db.scan(b"", None).unwrap().len(), 100);
    db.close().unwrap();
}

/// Regression (found in review): a table moved down a level without rewriting was deleted by a
/// later compaction while an older version, held by a reader, still named it.
#[test]
fn a_moved_table_stays_on_disk_while_a_reader_holds_a_version_naming_it() {
    let fs = MemFs::new();
    let db = open(&fs, Options::default());
    for i in 0..100 {
        db.put(&key(i), b"old", WriteOptions::default()).unwrap();
    }
    db.close().unwrap();
    // Reopening flushes the log into one level-0 table F.
    let db = open(&fs, Options::default().memtable_bytes_max(2048));
    let [f] = tables(&fs).try_into().expect("one table");
    let mut reader = db.iter(None, None).unwrap(); // holds the version with F in level 0
    db.compact_range(b"", b"\xff").unwrap(); // moves F to level 1 as it is
    assert_eq!(db.metrics().level_files[1], 1);
    for i in 0..100 {
        db.put(&key(i), &[b'n'; 64], WriteOptions::default()).unwrap();
    }
    db.compact_range(b"", b"\xff").unwrap(); // rewrites F with the new level-0 tables
    assert!(tables(&fs).contains(&f), "{f} deleted while a live version names it");
    reader.seek_to_first().unwrap();
    assert_eq!(reader.value(), b"old", "the reader still sees its own state");
    drop(reader);
    // Once the reader lets go, a background job deletes it: one runs, and the background
    // settles (a structure check may hold the version a moment longer).
    db.put(b"z", b"1", WriteOptions::default()).unwrap();
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    assert!(
        !tables(&fs).contains(&f),
        "{f} outlived every version naming it: {:?} {:?}",
        tables(&fs),
        db.metrics()
    );
    db.close().unwrap();
}

#[test]
fn concurrent_flushes_and_compactions_under_a_write_limit_keep_every_write() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut model = Model::new();
    let fs = MemFs::new();
    // Two flush workers and three compaction workers, sharing a compaction write limit well
    // above what this workload needs (so it shapes, not stalls, the run).
    let options = tiny()
        .max_background_flushes(2)
        .max_background_compactions(3)
        .compaction_bytes_per_sec(64 << 20);
    let db = open(&fs, options.clone());
    churn(&db, &mut model, &mut rng, 3000, 600);
    assert_matches(&db, &model, 600);
    db.compact_range(b"", b"\xff").unwrap();
    assert_matches(&db, &model, 600);
    let m = db.metrics();
    assert!(m.flushes > 0 && m.compactions > 0, "{m:?}");
    assert!(m.flushes_running_max <= 2 && m.compactions_running_max <= 3, "pools bounded: {m:?}");
    assert_eq!((m.flushes_running, m.compactions_running), (0, 0), "{m:?}");
    db.close().unwrap();
    let db = open(&fs, options);
    assert_matches(&db, &model, 600);
    db.close().unwrap();
}

#[test]
fn wait_for_compactions_returns_with_the_tree_settled() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut model = Model::new();
    let fs = MemFs::new();
    let options = tiny().max_background_compactions(2);
    let db = open(&fs, options);
    churn(&db, &mut model, &mut rng, 2000, 600);
    db.wait_for_compactions().unwrap();
    let m = db.metrics();
    assert_eq!((m.flushes_running, m.compactions_running, m.flushes_queued), (0, 0, 0), "{m:?}");
    assert!(m.level_files[0] < 2, "level 0 is below its trigger: {:?}", m.level_files);
    assert!(m.compactions > 0, "{m:?}");
    assert_matches(&db, &model, 600);
    db.close().unwrap();
    assert!(matches!(db.wait_for_compactions(), Err(Error::Closed)));
}

/// Bytes of every table of the database.
fn table_bytes(db: &Db) -> u64 {
    db.metrics().level_bytes.iter().sum()
}

/// Whether any table file of `/db` holds `needle`, as reads of the disk see it.
fn on_disk(fs: &MemFs, needle: &[u8]) -> bool {
    fs.find(Path::new("/db"), ".sst", needle, 0).expect("search the tables").is_some()
}

/// A value no other value contains, to look for on disk.
fn marked(tag: &str, k: usize) -> Vec<u8> {
    format!("{tag}-{k:05}-{}", "m".repeat(80)).into_bytes()
}

/// Ported from LevelDB's and RocksDB's space tests: a database compacted into its deepest
/// level, every key deleted while a snapshot holds the old values, the snapshot released and
/// everything compacted: the deepest level must be rewritten, leaving almost nothing.
#[test]
fn deleting_every_key_gives_the_space_back_once_the_snapshot_is_gone() {
    let fs = MemFs::new();
    let db = open(&fs, tiny());
    for k in 0..600 {
        db.put(&key(k), &marked("old", k), WriteOptions::default()).unwrap();
    }
    db.compact_range(b"", b"\xff").unwrap();
    let full = table_bytes(&db);
    assert!(full > 40_000, "{full} bytes of tables");
    let snapshot = db.snapshot();
    for k in 0..600 {
        db.delete(&key(k), WriteOptions::default()).unwrap();
    }
    // The snapshot still reads every value: compaction must keep them.
    db.compact_range(b"", b"\xff").unwrap();
    assert_eq!(snapshot.get(&key(7)).unwrap().as_deref(), Some(marked("old", 7).as_slice()));
    drop(snapshot);
    db.compact_range(b"", b"\xff").unwrap();
    let left = table_bytes(&db);
    assert!(left * 20 <= full, "{left} of {full} table bytes left: {:?}", db.metrics().level_bytes);
    assert!(!on_disk(&fs, b"old-00007"));
    assert_eq!(db.scan(b"", None).unwrap(), Vec::new());
    db.close().unwrap();
}

/// RocksDB marks bottom-level files whose garbage a released snapshot no longer needs: a value
/// overwritten while a snapshot held it leaves the disk once the snapshot goes and the
/// background settles, with no manual compaction.
#[test]
fn an_overwritten_value_leaves_the_disk_once_its_snapshot_is_released() {
    let fs = MemFs::new();
    let db = open(&fs, tiny());
    for k in 0..300 {
        db.put(&key(k), &marked("first", k), WriteOptions::default()).unwrap();
    }
    db.compact_range(b"", b"\xff").unwrap();
    let snapshot = db.snapshot();
    for k in 0..300 {
        db.put(&key(k), &marked("second", k), WriteOptions::default()).unwrap();
    }
    db.compact_range(b"", b"\xff").unwrap();
    assert!(on_disk(&fs, b"first-00042"), "the snapshot still reads the first values");
    assert_eq!(snapshot.get(&key(42)).unwrap().as_deref(), Some(marked("first", 42).as_slice()));
    drop(snapshot);
    db.wait_for_compactions().unwrap();
    for k in [0, 42, 299] {
        let first = format!("first-{k:05}");
        assert!(!on_disk(&fs, first.as_bytes()), "{first} is still on disk");
        assert_eq!(db.get(&key(k)).unwrap().as_deref(), Some(marked("second", k).as_slice()));
    }
    db.close().unwrap();
}

/// A manual compaction cuts its outputs at `target_file_bytes`, even where the background
/// would move a table down whole: a flush's table larger than the target comes out split.
#[test]
fn compact_range_splits_a_table_larger_than_the_target() {
    let fs = MemFs::new();
    let options = tiny().memtable_bytes_max(64 << 10).l0_compaction_files(8);
    let db = open(&fs, options);
    for k in 0..400 {
        db.put(&key(k), &marked("v", k), WriteOptions::default()).unwrap();
    }
    db.flush().unwrap();
    db.compact_range(b"", b"\xff").unwrap();
    let m = db.metrics();
    let tables: u64 = m.level_files.iter().sum();
    assert!(tables >= 5, "{tables} tables for {} bytes: {:?}", table_bytes(&db), m.level_files);
    db.close().unwrap();
}

/// Pebble's `levelIter`: an iterator opens one table per level below 0 at a time, so a walk
/// over 10,000 tables, both ways, keeps within `open_tables_max` (plus the one table each
/// level's cursor holds) and sees every key once, in order.
#[test]
fn a_walk_over_10_000_tables_keeps_within_the_open_tables_bound() {
    let fs = MemFs::new();
    let options = Options::default()
        .memtable_bytes_max(4 << 20)
        .table_block_bytes(256)
        .target_file_bytes(100)
        .open_tables_max(64)
        .block_cache_bytes(0);
    let db = open(&fs, options);
    let keys = 20_000;
    let value = |k: usize| format!("value{k:07}-{}", "v".repeat(40)).into_bytes();
    for k in 0..keys {
        db.put(&key(k), &value(k), WriteOptions::default()).unwrap();
    }
    // One flush's table, cut into thousands by the manual compaction.
    db.compact_range(b"", b"\xff").unwrap();
    let m = db.metrics();
    let tables: u64 = m.level_files.iter().sum();
    assert!(tables >= 10_000, "{tables} tables: {:?}", m.level_files);
    let bound = 64 + 7;
    let mut it = db.iter(None, None).unwrap();
    let (mut seen, mut open_max) = (0, 0);
    it.seek_to_first().unwrap();
    while it.valid() {
        assert_eq!(it.key(), key(seen).as_slice());
        assert_eq!(it.value(), value(seen).as_slice());
        seen += 1;
        open_max = open_max.max(db.metrics().tables_open);
        it.next().unwrap();
    }
    assert_eq!(seen, keys);
    it.seek_to_last().unwrap();
    while it.valid() {
        seen -= 1;
        assert_eq!(it.key(), key(seen).as_slice());
        open_max = open_max.max(db.metrics().tables_open);
        it.prev().unwrap();
    }
    assert_eq!(seen, 0);
    assert!(open_max <= bound, "{open_max} tables open at once");
    // Seeks land in the right table whichever way they come from.
    it.seek(&key(12_345)).unwrap();
    assert_eq!(it.key(), key(12_345).as_slice());
    it.seek_for_prev(&key(7_777)).unwrap();
    assert_eq!(it.key(), key(7_777).as_slice());
    it.prev().unwrap();
    assert_eq!(it.key(), key(7_776).as_slice());
    drop(it);
    db.close().unwrap();
}

/// RocksDB's `fill_cache = false` for compaction: a compaction reads every block of its inputs
/// once, and cached they would push out what users read. Blocks users read stay cached while
/// 40 KB of other tables pass through a compaction beside an 8 KB cache.
#[test]
fn compactions_read_around_the_block_cache() {
    let fs = MemFs::new();
    let db = open(&fs, tiny().block_cache_bytes(8 << 10));
    for k in 0..200 {
        db.put(&key(k), &marked("a", k), WriteOptions::default()).unwrap();
    }
    db.compact_range(b"", b"\xff").unwrap();
    let read_some = || {
        for k in 0..20 {
            assert_eq!(db.get(&key(k)).unwrap().as_deref(), Some(marked("a", k).as_slice()));
        }
    };
    read_some();
    let before = db.metrics();
    // Out of order, so that the flushed tables overlap and the compaction must read them (tables
    // of keys in order would move down whole).
    for i in 0..400 {
        let k = i * 7 % 400;
        db.put(format!("zz{k:05}").as_bytes(), &marked("b", k), WriteOptions::default()).unwrap();
    }
    db.compact_range(b"zz", b"zz\xff").unwrap();
    let compacted = db.metrics();
    assert!(compacted.compaction_bytes_read > before.compaction_bytes_read + 30_000);
    read_some();
    let after = db.metrics();
    assert_eq!(after.block_cache_misses, compacted.block_cache_misses, "user blocks pushed out");
    assert!(after.block_cache_hits > compacted.block_cache_hits);
    db.close().unwrap();
}

/// The blob files in the database directory.
fn blob_files(fs: &MemFs) -> Vec<String> {
    files_ending(fs, ".blob")
}

/// Whether any blob file of `/db` holds `needle`.
fn in_blob_files(fs: &MemFs, needle: &[u8]) -> bool {
    fs.find(Path::new("/db"), ".blob", needle, 0).expect("search the blob files").is_some()
}

/// A blob file whose values a snapshot still reads stays; once every value in it is
/// overwritten or deleted, the snapshot is gone and the tree compacted, it leaves the disk, and
/// the bytes of blob files left are the live values'.
#[test]
fn a_blob_file_leaves_the_disk_once_no_table_or_snapshot_needs_its_values() {
    let fs = MemFs::new();
    let db = open(&fs, tiny_blobs());
    for k in 0..300 {
        db.put(&key(k), &marked("first", k), WriteOptions::default()).unwrap();
    }
    db.compact_range(b"", b"\xff").unwrap();
    assert!(in_blob_files(&fs, b"first-00042"));
    assert!(!on_disk(&fs, b"first-00042"), "the tables hold pointers, not the values");
    let first_files = blob_files(&fs);
    let snapshot = db.snapshot();
    for k in 0..300 {
        if k % 2 == 0 {
            db.put(&key(k), &marked("second", k), WriteOptions::default()).unwrap();
        } else {
            db.delete(&key(k), WriteOptions::default()).unwrap();
        }
    }
    db.compact_range(b"", b"\xff").unwrap();
    db.wait_for_compactions().unwrap();
    assert_eq!(snapshot.get(&key(41)).unwrap().as_deref(), Some(marked("first", 41).as_slice()));
    for name in &first_files {
        assert!(blob_files(&fs).contains(name), "{name} went while the snapshot read it");
    }
    drop(snapshot);
    db.compact_range(b"", b"\xff").unwrap();
    db.wait_for_compactions().unwrap();
    let left = blob_files(&fs);
    for name in &first_files {
        assert!(!left.contains(name), "{name} is still on disk: {left:?}");
    }
    assert!(!in_blob_files(&fs, b"first-00042"));
    let m = db.metrics();
    assert_eq!(m.blob_garbage_bytes, 0, "{m:?}");
    assert_eq!(m.blob_space_amplification(), 1.0);
    assert_eq!(m.blob_files as usize, left.len());
    for k in [0, 41, 42, 299] {
        let want = (k % 2 == 0).then(|| marked("second", k));
        assert_eq!(db.get(&key(k)).unwrap().map(|v| v.to_vec()), want);
    }
    db.close().unwrap();
    let db = open(&fs, tiny_blobs());
    assert_eq!(db.get(&key(42)).unwrap().as_deref(), Some(marked("second", 42).as_slice()));
    assert_eq!(db.scan(b"", None).unwrap().len(), 150);
    db.close().unwrap();
}

#[test]
fn a_missing_blob_file_is_reported_by_name_at_open() {
    assert_missing_file_reported(tiny_blobs(), ".blob");
}

/// Every bit of a blob file's records flipped in turn: reads of the values it holds fail with
/// corruption naming the file (or, for the bits of a value's own bytes, still never return a
/// wrong value), and every other key still reads right.
#[test]
fn a_flipped_bit_in_a_blob_file_is_corruption_never_a_wrong_value() {
    let fs = MemFs::new();
    let options = tiny_blobs().block_cache_bytes(0);
    let db = open(&fs, options.clone());
    let mut model = Model::new();
    churn(&db, &mut model, &mut ChaCha8Rng::seed_from_u64(9), 600, 150);
    db.close().unwrap();
    let victim = blob_files(&fs).pop().expect("some blob file");
    let path = format!("/db/{victim}");
    let size = pollster::block_on(async {
        let file = fs.open(Path::new(&path)).await.unwrap();
        file.size().await.unwrap()
    });
    let mut corrupt = 0;
    for offset in (0..size).step_by(37) {
        flip_bit(&fs, &path, offset, (offset % 8) as u8);
        let db = match Db::open("/db", options.clone(), MemRuntime::new(&fs)) {
            Ok(db) => db,
            Err(Error::Corruption { file, .. }) => {
                assert!(file.ends_with(&victim), "{file:?}");
                corrupt += 1;
                flip_bit(&fs, &path, offset, (offset % 8) as u8);
                continue;
            }
            Err(other) => panic!("expected corruption, got {other}"),
        };
        for (k, v) in &model {
            match db.get(k) {
                Ok(got) => assert_eq!(got.as_deref(), Some(v.as_slice()), "key {k:?}"),
                Err(Error::Corruption { file, .. }) => {
                    assert!(file.ends_with(&victim), "{file:?}");
                    corrupt += 1;
                }
                Err(other) => panic!("expected corruption, got {other}"),
            }
        }
        db.close().unwrap();
        flip_bit(&fs, &path, offset, (offset % 8) as u8);
    }
    assert!(corrupt > 0, "no flip was noticed");
}

/// A blob file no version needs any more stays on disk while an iterator's version names it
/// (the iterator still reads its values), and goes once the iterator is dropped.
#[test]
fn a_blob_file_stays_while_an_iterator_reads_it() {
    let fs = MemFs::new();
    let db = open(&fs, tiny_blobs());
    for k in 0..200 {
        db.put(&key(k), &marked("first", k), WriteOptions::default()).unwrap();
    }
    db.compact_range(b"", b"\xff").unwrap();
    let first_files = blob_files(&fs);
    let mut it = db.iter(None, None).unwrap();
    for k in 0..200 {
        db.put(&key(k), &marked("second", k), WriteOptions::default()).unwrap();
    }
    db.compact_range(b"", b"\xff").unwrap();
    db.wait_for_compactions().unwrap();
    assert_eq!(db.metrics().blob_garbage_bytes, 0, "the first files left the version");
    it.seek_to_first().unwrap();
    let mut seen = 0;
    while let Some((k, v)) = it.entry() {
        assert_eq!(v.as_ref(), marked("first", seen).as_slice(), "{k:?}");
        seen += 1;
        it.next().unwrap();
    }
    assert_eq!(seen, 200);
    let left = blob_files(&fs);
    assert!(first_files.iter().all(|f| left.contains(f)), "deleted under the iterator");
    drop(it);
    // Any job deletes what no reader holds any more.
    db.put(b"z", b"z", WriteOptions::default()).unwrap();
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    let left = blob_files(&fs);
    assert!(first_files.iter().all(|f| !left.contains(f)), "{first_files:?} still in {left:?}");
    db.close().unwrap();
}
