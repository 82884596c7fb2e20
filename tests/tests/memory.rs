//! `Options::memory_budget`, end to end: one bound over the memtables, the block cache, open
//! tables and iterator blocks, held through writes, reads, scans and compactions, with the
//! block cache giving way to the memtables as they fill and taking the room back after a flush.

use jadedb::{Db, Metrics, Options, WriteBatch, WriteOptions};
use jadedb_fault::{MemFs, MemRuntime};

const BUDGET: u64 = 2 << 20;
/// What may run past the budget for a moment: the batch a memtable takes before it is found
/// full (each memtable once), and the one table the table cache always keeps open.
const SLACK: u64 = 96 << 10;

fn key(k: u64) -> Vec<u8> {
    // Spread over the key space, so that reads touch many blocks and tables.
    format!("key{:016x}", k.wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes()
}

fn held(m: &Metrics) -> u64 {
    m.memtable_bytes + m.block_cache_bytes + m.table_memory_bytes + m.iterator_memory_bytes
}

fn within_budget(m: &Metrics, when: &str) {
    assert_eq!(m.memory_bytes, held(m), "{when}: memory is the sum of its components");
    assert!(
        m.memory_bytes <= BUDGET + SLACK,
        "{when}: {} bytes held against a budget of {BUDGET}: {m:?}",
        m.memory_bytes
    );
}

fn write_range(db: &Db, keys: std::ops::Range<u64>) {
    let value = vec![b'v'; 200];
    for chunk in keys.collect::<Vec<_>>().chunks(50) {
        let mut batch = WriteBatch::new();
        for &k in chunk {
            batch.put(&key(k), &value).unwrap();
        }
        db.write(batch, WriteOptions::default()).unwrap();
    }
}

#[test]
fn memory_stays_within_the_budget_through_writes_reads_and_compactions() {
    let fs = MemFs::new();
    // Each option alone would allow far more than the budget: 2 x 64 MiB of memtables and a
    // 256 MiB cache.
    let options = Options::default()
        .memory_budget(BUDGET)
        .block_cache_bytes(256 << 20)
        .target_file_bytes(256 << 10)
        .level1_bytes_max(1 << 20);
    let db = Db::open("/db", options, MemRuntime::new(&fs)).unwrap();
    let keys = 40_000;
    for step in 0..8 {
        write_range(&db, step * keys / 8..(step + 1) * keys / 8);
        within_budget(&db.metrics(), "writing");
    }
    let m = db.metrics();
    assert_eq!(m.memory_budget, BUDGET);
    assert!(m.memtable_rotations > 10, "memtables were cut at their share: {m:?}");
    for k in (0..keys).step_by(7) {
        assert!(db.get(&key(k)).unwrap().is_some());
    }
    let m = db.metrics();
    within_budget(&m, "reading");
    assert!(m.block_cache_bytes > BUDGET / 4, "reads fill what the budget leaves: {m:?}");
    let mut it = db.iter(None, None).unwrap();
    it.seek_to_first().unwrap();
    let mut walked = 0;
    while it.valid() {
        walked += 1;
        if walked % 5000 == 0 {
            within_budget(&db.metrics(), "scanning");
        }
        it.next().unwrap();
    }
    assert_eq!(walked, keys);
    drop(it);
    db.compact_range(b"", b"\xff").unwrap();
    db.wait_for_compactions().unwrap();
    within_budget(&db.metrics(), "after a full compaction");
    db.close().unwrap();
}

#[test]
fn the_block_cache_gives_way_to_filling_memtables_and_takes_the_room_back() {
    let fs = MemFs::new();
    let options = Options::default().memory_budget(BUDGET).target_file_bytes(256 << 10);
    let db = Db::open("/db", options, MemRuntime::new(&fs)).unwrap();
    write_range(&db, 0..20_000);
    db.flush().unwrap();
    for k in 0..20_000 {
        db.get(&key(k)).unwrap();
    }
    let full = db.metrics();
    within_budget(&full, "cache filled");
    assert!(full.memtable_bytes < 4096, "everything is flushed: {full:?}");
    // New writes fill the memtables (no flush: less than one memtable's share); the cache
    // shrinks to make room as they do.
    write_range(&db, 20_000..21_500);
    let writing = db.metrics();
    within_budget(&writing, "memtables filling");
    assert!(writing.memtable_bytes > 200 << 10, "{writing:?}");
    assert!(writing.block_cache_bytes < full.block_cache_bytes, "{full:?} then {writing:?}");
    // Flushed, the memtables hand the room back: reads fill the cache again.
    db.flush().unwrap();
    for k in 0..20_000 {
        db.get(&key(k)).unwrap();
    }
    let after = db.metrics();
    within_budget(&after, "after the flush");
    assert!(after.block_cache_bytes > writing.block_cache_bytes, "{writing:?} then {after:?}");
    db.close().unwrap();
}

#[test]
fn without_a_budget_each_component_keeps_its_own_bound() {
    let fs = MemFs::new();
    let options = Options::default().block_cache_bytes(64 << 10).memtable_bytes_max(1 << 20);
    let db = Db::open("/db", options, MemRuntime::new(&fs)).unwrap();
    write_range(&db, 0..5000);
    db.flush().unwrap();
    for k in 0..5000 {
        db.get(&key(k)).unwrap();
    }
    let m = db.metrics();
    assert_eq!(m.memory_budget, 0);
    assert_eq!(m.memory_bytes, held(&m));
    assert!(m.block_cache_bytes <= 64 << 10 && m.block_cache_bytes > 32 << 10, "{m:?}");
    assert!(m.table_memory_bytes > 0, "{m:?}");
    db.close().unwrap();
}
