//! Round trips of whole tables against a sorted-vector model, the golden bytes of a small table,
//! and the writer's refusals.

use super::*;
use crate::cache::BlockCache;
use crate::error::{Error, Result};
use crate::testing::{hex_dump, MemFile};
use proptest::prelude::*;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// One version: user key, sequence number, value (`None` = tombstone).
pub(super) type Entry = (Vec<u8>, u64, Option<Vec<u8>>);

pub(super) const PATH: &str = "/db/000001.sst";

/// A writer of a table to a fresh in-memory file, and the file.
fn writer(options: TableOptions) -> (Arc<MemFile>, TableWriter) {
    let file = MemFile::new();
    let w = TableWriter::new(Box::new(Arc::clone(&file)), PathBuf::from(PATH), options);
    (file, w)
}

/// Writes `entries` (in internal order) to a fresh in-memory file.
pub(super) async fn write(
    entries: &[Entry],
    options: TableOptions,
) -> (Arc<MemFile>, TableProperties) {
    let (file, mut w) = writer(options);
    for (k, seq, v) in entries {
        w.add(k, *seq, v.as_deref()).await.unwrap();
    }
    assert_eq!(w.entries(), entries.len() as u64);
    let props = w.finish().await.unwrap();
    assert_eq!(file.durable_len(), props.file_bytes, "finish syncs the whole table");
    (file, props)
}

pub(super) async fn open(
    file: &Arc<MemFile>,
    cache: Option<Arc<BlockCache>>,
    stats: Arc<ReadStats>,
) -> Result<Arc<Table>> {
    let f = Box::new(Arc::clone(file));
    Table::open(f, PathBuf::from(PATH), 1, file.len(), cache, stats).await.map(Arc::new)
}

/// Sorts and dedups versions into internal order, as a writer needs them.
pub(super) fn internal_order(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by(|a, b| key::compare(&a.0, a.1, &b.0, b.1));
    entries.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    entries
}

/// Index of the first model entry at or after `(k, seq)`.
fn model_seek(model: &[Entry], k: &[u8], seq: u64) -> usize {
    model.partition_point(|e| key::compare(&e.0, e.1, k, seq) == Ordering::Less)
}

/// What `Table::get` must return, from the model.
fn model_get(model: &[Entry], k: &[u8], read_seq: u64) -> Option<(u64, Option<Vec<u8>>)> {
    let e = model.get(model_seek(model, k, read_seq))?;
    (e.0 == k).then(|| (e.1, e.2.clone()))
}

fn current(it: &TableIter) -> Option<Entry> {
    it.valid().then(|| (it.user_key().to_vec(), it.seq(), it.value().map(<[u8]>::to_vec)))
}

async fn scan_forward(it: &mut TableIter) -> Vec<Entry> {
    let mut out = Vec::new();
    it.seek_to_first().await.unwrap();
    while let Some(e) = current(it) {
        out.push(e);
        it.next().await.unwrap();
    }
    out
}

async fn scan_backward(it: &mut TableIter) -> Vec<Entry> {
    let mut out = Vec::new();
    it.seek_to_last().await.unwrap();
    while let Some(e) = current(it) {
        out.push(e);
        it.prev().await.unwrap();
    }
    out.reverse();
    out
}

/// Checks every way of reading `table` against `model` at the given probe keys and seqs.
async fn check_against_model(table: &Arc<Table>, model: &[Entry], probes: &[(Vec<u8>, u64)]) {
    let mut it = table.iter();
    assert_eq!(scan_forward(&mut it).await, model);
    assert_eq!(scan_backward(&mut it).await, model);
    for (k, seq) in probes {
        let got = table.get(k, *seq).await.unwrap();
        let got = got.map(|(s, v)| (s, v.map(|b| b.to_vec())));
        assert_eq!(got, model_get(model, k, *seq), "get({k:?}, {seq})");
        it.seek(k, *seq).await.unwrap();
        assert_eq!(
            current(&it),
            model.get(model_seek(model, k, *seq)).cloned(),
            "seek({k:?}, {seq})"
        );
        it.seek_before(k, *seq).await.unwrap();
        let before = model_seek(model, k, *seq).checked_sub(1).map(|i| model[i].clone());
        assert_eq!(current(&it), before, "seek_before({k:?}, {seq})");
    }
}

/// A deterministic mix: 300 keys sharing prefixes, 1 to 4 versions each, a quarter tombstones,
/// values from empty to 40 bytes.
fn many_versions() -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut seq = 1u64;
    for i in 0..300u64 {
        let k = format!("key{:04}", (i * 7919) % 1000).into_bytes();
        for v in 0..=(i % 4) {
            seq += 1 + (i * v) % 5;
            let value = (!seq.is_multiple_of(4))
                .then(|| vec![b'a' + (seq % 26) as u8; (seq % 41) as usize]);
            entries.push((k.clone(), seq, value));
        }
    }
    internal_order(entries)
}

fn probes_for(model: &[Entry]) -> Vec<(Vec<u8>, u64)> {
    let mut probes = Vec::new();
    for (i, (k, seq, _)) in model.iter().enumerate().step_by(3) {
        probes.extend([(k.clone(), *seq), (k.clone(), seq - 1), (k.clone(), u64::MAX)]);
        probes.push((k.clone(), seq + (i as u64 % 3)));
        let mut absent = k.clone();
        absent.push(0);
        probes.push((absent, u64::MAX));
    }
    probes.extend([(vec![], u64::MAX), (b"zzz".to_vec(), 0), (b"key".to_vec(), 5)]);
    probes
}

#[test]
fn many_versions_round_trip_at_every_restart_interval() {
    let model = many_versions();
    let probes = probes_for(&model);
    for restart_interval in 1..=16 {
        let options = TableOptions { block_bytes: 64, restart_interval, bloom_bits_per_key: 10 };
        pollster::block_on(async {
            let (file, props) = write(&model, options).await;
            assert!(props.data_blocks > 100, "tiny blocks: {}", props.data_blocks);
            let table = open(&file, None, Arc::default()).await.unwrap();
            assert_eq!(table.properties(), &props);
            check_against_model(&table, &model, &probes).await;
        });
    }
}

#[test]
fn properties_describe_the_table() {
    let model = many_versions();
    let (_, props) = pollster::block_on(write(&model, TableOptions::default()));
    let first = model.first().unwrap();
    let last = model.last().unwrap();
    assert_eq!((&props.smallest_key[..], props.smallest_seq), (&first.0[..], first.1));
    assert_eq!((&props.largest_key[..], props.largest_seq), (&last.0[..], last.1));
    assert_eq!(props.min_seq, model.iter().map(|e| e.1).min().unwrap());
    assert_eq!(props.max_seq, model.iter().map(|e| e.1).max().unwrap());
    assert_eq!(props.entries, model.len() as u64);
    assert_eq!(props.tombstones, model.iter().filter(|e| e.2.is_none()).count() as u64);
}

#[test]
fn the_block_cache_serves_repeated_reads_and_the_filter_skips_absent_keys() {
    let model = many_versions();
    let options = TableOptions { block_bytes: 256, ..TableOptions::default() };
    pollster::block_on(async {
        let (file, props) = write(&model, options).await;
        let cache = Arc::new(BlockCache::new(1 << 20));
        let stats = Arc::new(ReadStats::default());
        let table = open(&file, Some(Arc::clone(&cache)), Arc::clone(&stats)).await.unwrap();
        let mut it = table.iter();
        assert_eq!(scan_forward(&mut it).await, model);
        assert_eq!(stats.data_block_reads.load(Relaxed), props.data_blocks);
        assert_eq!(scan_backward(&mut it).await, model);
        assert_eq!(stats.data_block_reads.load(Relaxed), props.data_blocks, "all hits");
        assert!(cache.hits() > 0);
        for (k, _, _) in &model {
            assert!(table.may_contain(k));
        }
        let reads_before = stats.data_block_reads.load(Relaxed);
        let bytes_before = stats.bytes_read.load(Relaxed);
        for i in 0..1000 {
            assert_eq!(table.get(format!("absent{i}").as_bytes(), u64::MAX).await.unwrap(), None);
        }
        assert_eq!(stats.bloom_checks.load(Relaxed), 1000);
        assert!(stats.bloom_negatives.load(Relaxed) > 950);
        assert_eq!(stats.data_block_reads.load(Relaxed), reads_before, "cached or filtered");
        assert_eq!(stats.bytes_read.load(Relaxed), bytes_before);
    });
}

#[test]
fn a_table_without_a_filter_reads_every_probe() {
    let model = many_versions();
    let options = TableOptions { bloom_bits_per_key: 0, ..TableOptions::default() };
    pollster::block_on(async {
        let (file, _) = write(&model, options).await;
        let stats = Arc::new(ReadStats::default());
        let table = open(&file, None, Arc::clone(&stats)).await.unwrap();
        assert!(table.may_contain(b"anything"));
        check_against_model(&table, &model, &probes_for(&model)).await;
        assert_eq!(stats.bloom_checks.load(Relaxed), 0);
    });
}

#[test]
fn the_writer_refuses_what_would_make_a_bad_table() {
    pollster::block_on(async {
        let file = MemFile::new();
        let mut w = TableWriter::new(Box::new(file), PathBuf::from(PATH), TableOptions::default());
        w.add(b"b", 5, Some(b"v")).await.unwrap();
        for (k, seq) in [(&b"b"[..], 5), (b"b", 6), (b"a", 1)] {
            let err = w.add(k, seq, None).await.unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{k:?} {seq}: {err}");
        }
        let err = w.add(b"c", key::SEQ_MAX + 1, None).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        w.add(b"c", key::SEQ_MAX, None).await.unwrap();
        assert_eq!(w.entries(), 2);
        assert!(w.estimated_bytes() > 0);
        let empty = TableWriter::new(
            Box::new(MemFile::new()),
            PathBuf::from(PATH),
            TableOptions::default(),
        );
        assert!(matches!(empty.finish().await, Err(Error::InvalidArgument(_))));
    });
}

#[test]
fn a_failed_sync_fails_finish() {
    pollster::block_on(async {
        let (file, mut w) = writer(TableOptions::default());
        w.add(b"k", 1, Some(b"v")).await.unwrap();
        file.fail_next_sync();
        assert!(matches!(w.finish().await, Err(Error::Io { op: "syncing", .. })));
    });
}

#[test]
fn estimated_bytes_tracks_the_file() {
    pollster::block_on(async {
        let (file, mut w) = writer(TableOptions { block_bytes: 128, ..TableOptions::default() });
        let mut last = 0;
        for i in 0..100u64 {
            w.add(format!("k{i:03}").as_bytes(), 1, Some(&[0u8; 20])).await.unwrap();
            assert!(w.estimated_bytes() >= last);
            assert!(w.estimated_bytes() >= file.len());
            last = w.estimated_bytes();
        }
        let props = w.finish().await.unwrap();
        assert!(
            props.file_bytes > last && props.file_bytes < last * 2,
            "{} vs {last}",
            props.file_bytes
        );
    });
}

/// A large table asks the file system to write its bytes back as it goes, every megabyte
/// once written, in order and without gaps, so that the sync at its end has little left.
#[test]
fn a_large_table_is_written_back_as_it_goes() {
    pollster::block_on(async {
        let (file, mut w) = writer(TableOptions::default());
        for i in 0..40_000u64 {
            w.add(format!("k{i:08}").as_bytes(), 1, Some(&[7u8; 100])).await.unwrap();
        }
        let props = w.finish().await.unwrap();
        let hints = file.written_behind();
        assert!(hints.len() >= 3, "{} bytes, hints {hints:?}", props.file_bytes);
        let mut next = 0;
        for &(offset, len) in &hints {
            assert_eq!(offset, next, "hints follow one another: {hints:?}");
            assert!(len >= 1 << 20, "{hints:?}");
            next = offset + len;
        }
        // Less than a megabyte was left unhinted before `finish` wrote the index and filter.
        let tail = (1 << 20) + (256 << 10);
        assert!(props.file_bytes - next < tail, "all but the tail: {hints:?}");
    });
}

// ---- golden bytes ----

/// The small table of the snapshot and of the example in `docs/format.md`.
pub(super) fn golden_entries() -> Vec<Entry> {
    let e = |k: &str, seq, v: Option<&str>| {
        (k.as_bytes().to_vec(), seq, v.map(|v| v.as_bytes().to_vec()))
    };
    vec![
        e("apple", 7, Some("red")),
        e("apple", 3, None),
        e("apricot", 5, Some("orange")),
        e("banana", 9, Some("yellow")),
        e("cherry", 2, Some("dark red")),
    ]
}

pub(super) fn golden_options() -> TableOptions {
    TableOptions { block_bytes: 48, restart_interval: 2, bloom_bits_per_key: 10 }
}

#[test]
fn golden_table_bytes() {
    let (file, props) = pollster::block_on(write(&golden_entries(), golden_options()));
    let bytes = pollster::block_on(crate::runtime::read_all(&file)).unwrap();
    assert_eq!(props.data_blocks, 3);
    insta::assert_snapshot!("golden_table_bytes", hex_dump(&bytes));
    insta::assert_debug_snapshot!("golden_table_properties", props);
}

#[test]
fn golden_table_reads_back() {
    pollster::block_on(async {
        let model = golden_entries();
        let (file, _) = write(&model, golden_options()).await;
        let table = open(&file, None, Arc::default()).await.unwrap();
        check_against_model(&table, &model, &probes_for(&model)).await;
    });
}

/// Pins the first data block as `docs/format.md` annotates it.
#[test]
fn documented_example_block() {
    let (file, _) = pollster::block_on(write(&golden_entries(), golden_options()));
    let bytes = pollster::block_on(crate::runtime::read_all(&file)).unwrap();
    let expected: &[u8] = &[
        0, 0, 0, 0, 13, 0, 0, 0, 3, 0, 0, 0, // shared 0, unshared 13, value 3
        b'a', b'p', b'p', b'l', b'e', 0x01, 7, 0, 0, 0, 0, 0, 0, b'r', b'e', b'd', 5, 0, 0, 0, 8,
        0, 0, 0, 0, 0, 0, 0, // shared 5 ("apple"), unshared 8, value 0
        0x00, 3, 0, 0, 0, 0, 0, 0, // trailer: seq 3, kind 0 (tombstone)
        0, 0, 0, 0, // restart offsets: 0
        1, 0, 0, 0, // restart count 1
        1, // block type: data
    ];
    assert_eq!(&bytes[..expected.len()], expected);
    let crc = crc32fast::hash(expected);
    assert_eq!(bytes[expected.len()..expected.len() + 4], crc.to_le_bytes());
    assert_eq!(&bytes[bytes.len() - 8..], b"jadedbst");
}

// ---- proptest: random tables against the model ----

#[derive(Clone, Debug)]
enum Op {
    First,
    Last,
    Next,
    Prev,
    Seek(Vec<u8>, u64),
    SeekBefore(Vec<u8>, u64),
}

fn user_key() -> impl Strategy<Value = Vec<u8>> {
    // A small alphabet so keys share prefixes and collide into many versions.
    proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0u8), Just(0xff)], 0..6)
}

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![0..40u64, Just(key::SEQ_MAX), Just(key::SEQ_MAX - 1)]
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    let value = proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..24));
    proptest::collection::vec((user_key(), seq(), value), 1..120).prop_map(internal_order)
}

fn op() -> impl Strategy<Value = Op> {
    let probe_seq = prop_oneof![seq(), Just(u64::MAX)];
    prop_oneof![
        1 => Just(Op::First),
        1 => Just(Op::Last),
        3 => Just(Op::Next),
        3 => Just(Op::Prev),
        2 => (user_key(), probe_seq.clone()).prop_map(|(k, s)| Op::Seek(k, s)),
        2 => (user_key(), probe_seq).prop_map(|(k, s)| Op::SeekBefore(k, s)),
    ]
}

/// Applies `op` to a model cursor over `model` (an index, `None` when not valid).
fn model_step(model: &[Entry], at: Option<usize>, op: &Op) -> Option<usize> {
    let valid = |i: usize| (i < model.len()).then_some(i);
    match op {
        Op::First => valid(0),
        Op::Last => model.len().checked_sub(1),
        Op::Next => at.and_then(|i| valid(i + 1)),
        Op::Prev => at.and_then(|i| i.checked_sub(1)),
        Op::Seek(k, s) => valid(model_seek(model, k, *s)),
        Op::SeekBefore(k, s) => model_seek(model, k, *s).checked_sub(1),
    }
}

async fn table_step(it: &mut TableIter, op: &Op) -> Result<()> {
    match op {
        Op::First => it.seek_to_first().await,
        Op::Last => it.seek_to_last().await,
        Op::Next => it.next().await,
        Op::Prev => it.prev().await,
        Op::Seek(k, s) => it.seek(k, *s).await,
        Op::SeekBefore(k, s) => it.seek_before(k, *s).await,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_tables_match_the_model(
        model in entries(),
        block_bytes in 16usize..300,
        restart_interval in 1usize..17,
        bloom_bits_per_key in prop_oneof![Just(0usize), 1usize..20],
        ops in proptest::collection::vec(op(), 0..60),
        gets in proptest::collection::vec((user_key(), seq()), 0..30),
        cached in any::<bool>(),
    ) {
        pollster::block_on(async {
            let options = TableOptions { block_bytes, restart_interval, bloom_bits_per_key };
            let (file, _) = write(&model, options).await;
            let cache = cached.then(|| Arc::new(BlockCache::new(4096)));
            let table = open(&file, cache, Arc::default()).await.unwrap();
            let mut it = table.iter();
            prop_assert_eq!(scan_forward(&mut it).await, model.clone());
            prop_assert_eq!(scan_backward(&mut it).await, model.clone());
            let mut at = None;
            it.seek_to_first().await.unwrap();
            at = model_step(&model, at, &Op::First);
            for op in &ops {
                table_step(&mut it, op).await.unwrap();
                at = model_step(&model, at, op);
                prop_assert_eq!(current(&it), at.map(|i| model[i].clone()), "after {:?}", op);
            }
            for (k, s) in &gets {
                let got = table.get(k, *s).await.unwrap().map(|(s, v)| (s, v.map(|b| b.to_vec())));
                prop_assert_eq!(got, model_get(&model, k, *s));
            }
            Ok(())
        })?;
    }
}

#[test]
fn the_path_and_number_are_reported() {
    pollster::block_on(async {
        let (file, _) = write(&golden_entries(), golden_options()).await;
        let table = open(&file, None, Arc::default()).await.unwrap();
        assert_eq!(table.path(), Path::new(PATH));
        assert_eq!(table.file_number(), 1);
        assert!(format!("{table:?}").contains("000001.sst"));
        assert!(format!("{:?}", table.iter()).contains("TableIter"));
    });
}

#[test]
fn tables_and_their_futures_can_cross_threads() {
    fn send_sync_debug<T: Send + Sync + std::fmt::Debug>() {}
    fn send_debug<T: Send + std::fmt::Debug>() {}
    fn send<T: Send>(_: T) {}
    send_sync_debug::<Table>();
    send_sync_debug::<BlockCache>();
    send_sync_debug::<crate::table_cache::TableCache>();
    send_debug::<TableIter>();
    send_debug::<TableWriter>();
    pollster::block_on(async {
        let (file, _) = write(&golden_entries(), golden_options()).await;
        let table = open(&file, None, Arc::default()).await.unwrap();
        let mut it = table.iter();
        send(table.get(b"apple", 1));
        send(it.seek(b"apple", 1));
        send(it.seek_before(b"apple", 1));
        send(Table::open(Box::new(Arc::clone(&file)), PATH.into(), 1, 1, None, Arc::default()));
        let mut w = TableWriter::new(Box::new(MemFile::new()), PATH.into(), golden_options());
        send(w.add(b"k", 1, None));
        send(w.finish());
    });
}

/// Blob pointers (kind 2) read back as pointers, both from point lookups and from cursors, and
/// make the table format version 3; a table without them stays at version 2.
#[test]
fn blob_pointers_round_trip_and_mark_the_table_as_version_3() {
    use super::footer::{FOOTER_BYTES, FORMAT_VERSION, FORMAT_VERSION_BLOBS};
    pollster::block_on(async {
        let version_of = |file: &Arc<MemFile>| {
            let bytes = file.contents();
            let at = bytes.len() - FOOTER_BYTES + 48;
            u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
        };
        let (file, mut w) = writer(TableOptions::default());
        w.add(b"a", 3, Some(b"inline")).await.unwrap();
        w.add_blob(b"b", 2, b"\x05\x00\x0e\x01\x02\x03\x04").await.unwrap();
        w.add(b"c", 1, None).await.unwrap();
        w.finish().await.unwrap();
        assert_eq!(version_of(&file), FORMAT_VERSION_BLOBS);
        let table = open(&file, None, Arc::default()).await.unwrap();
        let hit = table.find(b"b", 9).await.unwrap().unwrap();
        assert!(hit.blob);
        assert_eq!(hit.value.as_deref(), Some(&b"\x05\x00\x0e\x01\x02\x03\x04"[..]));
        let hit = table.find(b"a", 9).await.unwrap().unwrap();
        assert!(!hit.blob);
        let mut it = table.iter();
        it.seek_to_first().await.unwrap();
        let mut kinds = Vec::new();
        while it.valid() {
            kinds.push((it.user_key().to_vec(), it.is_blob(), it.value().is_none()));
            it.next().await.unwrap();
        }
        assert_eq!(
            kinds,
            [
                (b"a".to_vec(), false, false),
                (b"b".to_vec(), true, false),
                (b"c".to_vec(), false, true)
            ]
        );
        let (plain, _) =
            write(&[(b"a".to_vec(), 1, Some(b"v".to_vec()))], TableOptions::default()).await;
        assert_eq!(version_of(&plain), FORMAT_VERSION);
    });
}
