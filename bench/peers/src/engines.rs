//! The engines behind one interface: what the workloads need of each, with each engine's own
//! way of flushing its memtable and waiting for its background work.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What a workload does to an engine. Errors abort the child: a benchmark of a failing engine
/// measures nothing.
pub trait Engine: Send + Sync {
    fn put(&self, key: &[u8], value: &[u8], sync: bool);
    /// Writes `kvs` as one atomic batch, unsynced.
    fn write_batch(&self, kvs: &[(Vec<u8>, Vec<u8>)]);
    /// Whether `key` is present.
    fn get(&self, key: &[u8]) -> bool;
    /// Walks every entry in key order; returns how many there were.
    fn scan(&self) -> u64;
    /// Flushes the memtables and waits until background compactions have settled.
    fn settle(&self);
    /// What the engine itself reports of its writers' pauses, for the child's `notes` line.
    fn pause_notes(&self) -> Option<String> {
        None
    }
}

pub fn open(engine: &str, dir: &Path, memtable_bytes: u64, cache_bytes: u64) -> Box<dyn Engine> {
    match engine {
        "jadedb" => Box::new(Jade::open(dir, memtable_bytes, cache_bytes)),
        "rocksdb" => Box::new(Rocks::open(dir, memtable_bytes, cache_bytes)),
        "fjall" => Box::new(Fjall::open(dir, memtable_bytes, cache_bytes)),
        _ => panic!("unknown engine {engine} (jadedb, rocksdb, fjall)"),
    }
}

struct Jade(jadedb::Db);

impl Jade {
    fn open(dir: &Path, memtable_bytes: u64, cache_bytes: u64) -> Self {
        let options = jadedb::Options::default()
            .memtable_bytes_max(memtable_bytes as usize)
            .block_cache_bytes(cache_bytes as usize);
        let rt = Arc::new(jadedb::runtime::StdRuntime::new());
        Jade(jadedb::Db::open(dir, options, rt).expect("open jadedb"))
    }
}

impl Engine for Jade {
    fn put(&self, key: &[u8], value: &[u8], sync: bool) {
        self.0.put(key, value, jadedb::WriteOptions { sync }).expect("jadedb put");
    }

    fn write_batch(&self, kvs: &[(Vec<u8>, Vec<u8>)]) {
        let mut batch = jadedb::WriteBatch::new();
        for (k, v) in kvs {
            batch.put(k, v).expect("jadedb batch put");
        }
        self.0.write(batch, jadedb::WriteOptions { sync: false }).expect("jadedb write");
    }

    fn get(&self, key: &[u8]) -> bool {
        self.0.get(key).expect("jadedb get").is_some()
    }

    fn pause_notes(&self) -> Option<String> {
        let m = self.0.metrics();
        let ms = |us: u64| us as f64 / 1e3;
        // What a writer's pause waits on: a flush, itself mostly fsyncs.
        let spread = |l: jadedb::Latency| {
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            format!("{:.1}/{:.1}/{:.1}", ms(l.p50), ms(l.p99), ms(l.max))
        };
        Some(format!(
            "longest_pause_ms={:.2} (memtable_wait={:.2} level0_stop={:.2} rotation={:.2}) \
             stalls={} stall_ms={:.1} rotation_ms={:.1} p50/p99/max_ms: flush={} \
             wal_sync={} manifest_sync={}",
            ms(m.write_pause_max_us),
            ms(m.memtable_wait_max_us),
            ms(m.level0_stop_max_us),
            ms(m.wal_rotation_max_us),
            m.write_stalls,
            ms(m.write_stall_us),
            ms(m.wal_rotation_us),
            spread(m.flush_latency),
            spread(m.wal_sync_latency),
            spread(m.manifest_sync_latency),
        ))
    }

    fn scan(&self) -> u64 {
        let mut it = self.0.iter(None, None).expect("jadedb iter");
        it.seek_to_first().expect("jadedb seek");
        let mut n = 0;
        while it.valid() {
            n += 1;
            it.next().expect("jadedb next");
        }
        n
    }

    fn settle(&self) {
        self.0.flush().expect("jadedb flush");
        self.0.wait_for_compactions().expect("jadedb wait");
    }
}

impl Drop for Jade {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

struct Rocks(rocksdb::DB);

impl Rocks {
    fn open(dir: &Path, memtable_bytes: u64, cache_bytes: u64) -> Self {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.set_write_buffer_size(memtable_bytes as usize);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&rocksdb::Cache::new_lru_cache(cache_bytes as usize).expect("cache"));
        table.set_bloom_filter(10.0, false);
        options.set_block_based_table_factory(&table);
        options.set_compression_type(rocksdb::DBCompressionType::None);
        Rocks(rocksdb::DB::open(&options, dir).expect("open rocksdb"))
    }

    fn property(&self, name: &str) -> u64 {
        self.0.property_int_value(name).ok().flatten().unwrap_or(0)
    }
}

impl Engine for Rocks {
    fn put(&self, key: &[u8], value: &[u8], sync: bool) {
        let mut w = rocksdb::WriteOptions::default();
        w.set_sync(sync);
        self.0.put_opt(key, value, &w).expect("rocksdb put");
    }

    fn write_batch(&self, kvs: &[(Vec<u8>, Vec<u8>)]) {
        let mut batch = rocksdb::WriteBatch::default();
        for (k, v) in kvs {
            batch.put(k, v);
        }
        self.0.write(batch).expect("rocksdb write");
    }

    fn get(&self, key: &[u8]) -> bool {
        self.0.get_pinned(key).expect("rocksdb get").is_some()
    }

    fn scan(&self) -> u64 {
        let mut it = self.0.raw_iterator();
        it.seek_to_first();
        let mut n = 0;
        while it.valid() {
            n += 1;
            it.next();
        }
        it.status().expect("rocksdb scan");
        n
    }

    fn settle(&self) {
        self.0.flush().expect("rocksdb flush");
        // RocksDB has no call that waits for compactions (in this version): its properties
        // are polled.
        while self.property("rocksdb.compaction-pending") > 0
            || self.property("rocksdb.num-running-compactions") > 0
            || self.property("rocksdb.num-running-flushes") > 0
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

struct Fjall {
    db: fjall::Database,
    items: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path, memtable_bytes: u64, cache_bytes: u64) -> Self {
        let db = fjall::Database::builder(dir).cache_size(cache_bytes).open().expect("open fjall");
        let options =
            move || fjall::KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes);
        let items = db.keyspace("items", options).expect("fjall keyspace");
        Fjall { db, items }
    }
}

impl Engine for Fjall {
    fn put(&self, key: &[u8], value: &[u8], sync: bool) {
        self.items.insert(key, value).expect("fjall insert");
        if sync {
            self.db.persist(fjall::PersistMode::SyncData).expect("fjall persist");
        }
    }

    fn write_batch(&self, kvs: &[(Vec<u8>, Vec<u8>)]) {
        let mut batch = self.db.batch();
        for (k, v) in kvs {
            batch.insert(&self.items, k.as_slice(), v.as_slice());
        }
        batch.commit().expect("fjall batch");
    }

    fn get(&self, key: &[u8]) -> bool {
        self.items.get(key).expect("fjall get").is_some()
    }

    fn scan(&self) -> u64 {
        let mut n = 0;
        for kv in self.items.iter() {
            kv.into_inner().expect("fjall scan");
            n += 1;
        }
        n
    }

    fn settle(&self) {
        self.items.rotate_memtable_and_wait().expect("fjall flush");
        // fjall has no call that waits for compactions: its table count is polled until it
        // holds still for half a second.
        let mut last = (usize::MAX, 0);
        while last.1 < 5 {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.items.table_count();
            last = if now == last.0 { (now, last.1 + 1) } else { (now, 0) };
        }
    }
}
