//! One seeded scenario: crash cycles of a database under concurrent clients, each checked
//! against the reference model.
//!
//! A cycle starts a simulated process (a madsim node) that opens the database, checks the
//! recovered state against the model (invariants 1-3), then runs the clients, whose every read
//! is checked on the spot (invariant 4). At a drawn virtual time the node is killed, dropping
//! every task mid-operation, and the disk is replaced by its crash image. After the last cycle
//! a final process recovers with faults off, must be able to write again (invariant 5), closes
//! cleanly, and a last recovery must hold every acknowledged write.

use crate::config::{Bug, Faults, ScenarioConfig};
use crate::runtime::{now_ns, SimFs, SimRuntime};
use crate::trace::Trace;
use jadedb::{Db, DbIterator, Options, PlantedBug, Snapshot, WriteBatch, WriteOptions};
use jadedb_fault::{Effect, FaultFs, MemFs, OpKind, Predicate};
use jadedb_model::{Model, Op};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Where the database lives on the simulated disk.
const DB_DIR: &str = "/db";

/// Counts of what a scenario did, for the run report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub crashes: u64,
    pub recoveries: u64,
    pub writes_acked: u64,
    pub synced_acked: u64,
    pub writes_failed: u64,
    pub reads: u64,
    pub clean_closes: u64,
    pub rotations: u64,
    pub torn_writes: u64,
    pub flushes: u64,
    pub compactions: u64,
    /// Crashes that landed while a flush, or a compaction, was running.
    pub crashes_in_flush: u64,
    pub crashes_in_compaction: u64,
    pub compact_ranges: u64,
    pub user_flushes: u64,
    pub snapshot_reads: u64,
    pub scans: u64,
}

/// How a scenario ended.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub failure: Option<String>,
    pub trace_hash: u64,
    pub stats: Stats,
    pub recent: Vec<String>,
    pub config: ScenarioConfig,
}

/// State shared by the supervisor and the simulated processes.
#[derive(Debug, Default)]
struct Shared {
    model: Mutex<Model>,
    failure: Mutex<Option<String>>,
    stats: Mutex<Stats>,
    /// After a clean close, every write acknowledged so far must survive: the lowest sequence
    /// number the next recovery may report.
    required_seq: Mutex<u64>,
    /// The database of the running process, so the supervisor can read its metrics before the
    /// crash.
    live_db: Mutex<Option<Db>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn fail(&self, trace: &Trace, why: String) {
        trace.event(now_ns(), || format!("FAILURE {why}"));
        lock(&self.failure).get_or_insert(why);
    }

    fn failed(&self) -> bool {
        lock(&self.failure).is_some()
    }
}

/// Runs the scenario of `seed` on the current thread.
pub fn run(seed: u64, bug: Option<Bug>, trace: Trace) -> Outcome {
    let config = ScenarioConfig::draw(seed, bug);
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let shared = Arc::new(Shared::default());
    rt.block_on(simulate(config.clone(), Arc::clone(&shared), trace.clone()));
    let failure = lock(&shared.failure).clone();
    let stats = *lock(&shared.stats);
    Outcome { seed, failure, trace_hash: trace.hash(), stats, recent: trace.recent(), config }
}

async fn simulate(config: ScenarioConfig, shared: Arc<Shared>, trace: Trace) {
    let handle = madsim::runtime::Handle::current();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed_d15c);
    let mut disk = MemFs::new();
    for cycle in 0..config.cycles {
        let faults = config.faults[cycle];
        let runtime = make_runtime(&disk, &config, faults, &mut rng, &trace);
        let node = handle.create_node().name(format!("db-{cycle}")).build();
        let process = Process {
            config: config.clone(),
            cycle,
            faults,
            rt: runtime,
            shared: Arc::clone(&shared),
            trace: trace.clone(),
        };
        node.spawn(process.run());
        madsim::time::sleep(Duration::from_millis(config.crash_after_ms[cycle])).await;
        if let Some(db) = lock(&shared.live_db).take() {
            let m = db.metrics();
            let mut stats = lock(&shared.stats);
            stats.rotations += m.memtable_rotations;
            stats.flushes += m.flushes;
            stats.compactions += m.compactions;
            stats.crashes_in_flush += u64::from(m.flushes_running > 0);
            stats.crashes_in_compaction += u64::from(m.compactions_running > 0);
        }
        handle.kill(node.id());
        trace.event(now_ns(), || format!("crash of cycle {cycle}"));
        disk.set_sync_fault(None);
        let (next, report) = disk.crash_with_report(&mut rng);
        disk = next;
        let mut stats = lock(&shared.stats);
        stats.crashes += 1;
        stats.torn_writes += report.torn_writes;
        drop(stats);
        if shared.failed() {
            return;
        }
    }
    final_check(&handle, disk, &config, &mut rng, &shared, &trace).await;
}

/// The runtime of one process: the disk with this cycle's faults, latency and tracing.
fn make_runtime(
    disk: &MemFs,
    config: &ScenarioConfig,
    faults: Faults,
    rng: &mut ChaCha8Rng,
    trace: &Trace,
) -> Arc<SimRuntime> {
    let mut fault_fs = FaultFs::new(disk.clone()).with_seed(rng.gen());
    // Faults hit every file the engine writes: WALs, tables, MANIFESTs and CURRENT.
    if faults.fsync_fail > 0.0 {
        disk.set_sync_fault(Some(Predicate::probability(faults.fsync_fail, rng.gen())));
    }
    if faults.write_fail > 0.0 {
        let when = Predicate::probability(faults.write_fail, rng.gen());
        fault_fs = fault_fs.with_rule(OpKind::Write, when, Effect::ENOSPC);
    }
    if faults.read_flip > 0.0 {
        let when = Predicate::probability(faults.read_flip, rng.gen());
        fault_fs = fault_fs.with_rule(OpKind::Read, when, Effect::BitFlip);
    }
    if config.bug == Some(Bug::SyncNoop) {
        fault_fs = fault_fs.with_rule(OpKind::Sync, Predicate::always(), Effect::SkipSilently);
    }
    let fs = SimFs::new(fault_fs, rng.gen(), trace.clone());
    Arc::new(SimRuntime::new(fs, rng.gen()))
}

fn options(config: &ScenarioConfig, cycle: usize) -> Options {
    let planted = match config.bug {
        Some(Bug::AckBeforeSync) => Some(PlantedBug::AckBeforeSync),
        Some(Bug::AcceptTornWal) => Some(PlantedBug::AcceptTornWalRecord),
        Some(Bug::DeleteWalEarly) => Some(PlantedBug::DeleteWalBeforeManifest),
        Some(Bug::CompactionIgnoresSnapshots) => Some(PlantedBug::CompactionIgnoresSnapshots),
        Some(Bug::SyncNoop) | None => None,
    };
    let cycle = cycle.min(config.cycles - 1);
    let tables = &config.tables[cycle];
    Options::default()
        .memtable_bytes_max(config.memtable_bytes_max[cycle])
        .memtables_max(tables.memtables_max)
        .table_block_bytes(tables.block_bytes)
        .bloom_bits_per_key(tables.bloom_bits_per_key)
        .block_cache_bytes(tables.block_cache_bytes)
        .open_tables_max(tables.open_tables_max)
        .manifest_bytes_max(tables.manifest_bytes_max)
        .l0_compaction_files(tables.l0_compaction_files)
        .l0_stall_files(tables.l0_stall_files.0, tables.l0_stall_files.1)
        .level1_bytes_max(tables.level1_bytes_max)
        .target_file_bytes(tables.target_file_bytes)
        .commit_group_bytes_max(config.group_bytes_max)
        .commit_window(Duration::from_micros(config.commit_window_us))
        .wal_preallocate_bytes(config.wal_preallocate_bytes)
        .planted_bug(planted)
}

/// One simulated process: recover, check, run the clients.
struct Process {
    config: ScenarioConfig,
    cycle: usize,
    faults: Faults,
    rt: Arc<SimRuntime>,
    shared: Arc<Shared>,
    trace: Trace,
}

impl Process {
    async fn run(self) {
        let Some(db) = self.open_and_check().await else { return };
        let this = Arc::new(self);
        let mut clients = Vec::new();
        for client in 0..this.config.clients {
            let (this, db) = (Arc::clone(&this), db.clone());
            clients.push(madsim::task::spawn(async move { this.client(client, db).await }));
        }
        for c in clients {
            let _ = c.await;
        }
        if this.config.close_before_crash[this.cycle] {
            this.close_cleanly(&db).await;
            lock(&this.shared.stats).clean_closes += 1;
        }
    }

    /// Whether `e` may come from a read under this cycle's faults: with bit flips on reads, a
    /// checksum catches the flip and the read fails, which is right; wrong data never is.
    fn read_error_allowed(&self, e: &jadedb::Error) -> bool {
        self.faults.read_flip > 0.0 && (e.is_corruption() || matches!(e, jadedb::Error::Io { .. }))
    }

    /// Opens the database and checks what it recovered (invariants 1-3).
    async fn open_and_check(&self) -> Option<Db> {
        let rt: jadedb::runtime::RuntimeRef = self.rt.clone();
        let db = match Db::open_async(DB_DIR, options(&self.config, self.cycle), rt).await {
            Ok(db) => db,
            Err(e) if (self.faults.any() && !e.is_corruption()) || self.read_error_allowed(&e) => {
                self.trace.event(now_ns(), || format!("open failed under faults: {e}"));
                return None;
            }
            Err(e) => {
                self.shared.fail(&self.trace, format!("recovery failed: {e}"));
                return None;
            }
        };
        if !check_recovered(&db, &self.shared, &self.trace, self.faults.read_flip > 0.0).await {
            return None;
        }
        *lock(&self.shared.live_db) = Some(db.clone());
        Some(db)
    }

    async fn close_cleanly(&self, db: &Db) {
        let acked_upto = db.latest_sequence();
        match db.close_async().await {
            Ok(()) => {
                self.trace.event(now_ns(), || format!("closed cleanly at seq {acked_upto}"));
                *lock(&self.shared.required_seq) = acked_upto;
            }
            Err(e) if self.faults.any() => {
                self.trace.event(now_ns(), || format!("close failed under faults: {e}"));
            }
            Err(e) => self.shared.fail(&self.trace, format!("close failed: {e}")),
        }
    }

    async fn client(&self, client: usize, db: Db) {
        let seed = self.config.seed ^ ((self.cycle as u64) << 32) ^ ((client as u64) << 48);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut seen_seq = db.latest_sequence();
        let mut snapshot = None;
        for op in 0..self.config.ops_per_client {
            if self.shared.failed() {
                return;
            }
            let first_two = (client, op) == (0, 0) || (client, op) == (0, 1);
            if !first_two && rng.gen_range(0..100) < self.config.compact_percent {
                if rng.gen_bool(0.5) {
                    self.compact_range(&db, &mut rng).await;
                } else {
                    self.flush(&db).await;
                }
            } else if !first_two && rng.gen_range(0..100) < self.config.read_percent {
                match rng.gen_range(0..10) {
                    0 | 1 if snapshot.is_none() => snapshot = Some(db.snapshot()),
                    0 => snapshot = Some(db.snapshot()),
                    1 | 2 => self.scan(&db, &mut rng).await,
                    3..=5 if snapshot.is_some() => {
                        let snap = snapshot.as_ref().expect("checked");
                        self.snapshot_read(snap, &mut rng, false).await;
                    }
                    _ => self.read(&db, &mut rng, &mut seen_seq).await,
                }
            } else {
                self.write(&db, &mut rng, client, op).await;
            }
            if rng.gen_bool(0.3) {
                madsim::time::sleep(Duration::from_millis(rng.gen_range(1..4))).await;
            }
        }
        // A snapshot read last, after whatever flushes and compactions ran meanwhile.
        if let Some(snap) = &snapshot {
            // Often push everything written since the snapshot through a flush and a
            // compaction first: the versions the snapshot reads must survive both.
            if !self.shared.failed() && rng.gen_bool(0.5) {
                self.flush(&db).await;
                self.compact_all(&db).await;
            }
            if !self.shared.failed() {
                self.snapshot_read(snap, &mut rng, true).await;
            }
        }
    }

    async fn read(&self, db: &Db, rng: &mut ChaCha8Rng, seen_seq: &mut u64) {
        let key = key_name(rng.gen_range(0..self.config.keys));
        let token = lock(&self.shared.model).begin_read();
        let result = db.get_async(&key).await;
        lock(&self.shared.stats).reads += 1;
        let value = match result {
            Ok(value) => value,
            Err(e) if self.read_error_allowed(&e) => return,
            Err(e) => return self.shared.fail(&self.trace, format!("get failed: {e}")),
        };
        let shown =
            value.as_ref().map(|v| String::from_utf8_lossy(&v[..v.len().min(24)]).into_owned());
        self.trace
            .event(now_ns(), || format!("get {} -> {shown:?}", String::from_utf8_lossy(&key)));
        if let Err(v) = lock(&self.shared.model).check_read(&key, &token, value.as_deref()) {
            return self.shared.fail(&self.trace, format!("read check: {v}"));
        }
        let now = db.latest_sequence();
        if now < *seen_seq {
            let why = format!("visible sequence went backwards: {now} after {seen_seq}");
            return self.shared.fail(&self.trace, why);
        }
        *seen_seq = now;
    }

    /// A read at a snapshot: one key, or a range scan checked key by key; every key if
    /// `whole`.
    async fn snapshot_read(&self, snap: &Snapshot, rng: &mut ChaCha8Rng, whole: bool) {
        let seq = snap.sequence();
        let keys: Vec<Vec<u8>> = if whole {
            (0..self.config.keys).map(key_name).collect()
        } else if rng.gen_bool(0.5) {
            vec![key_name(rng.gen_range(0..self.config.keys))]
        } else {
            let a = rng.gen_range(0..self.config.keys);
            let b = rng.gen_range(a..=self.config.keys);
            (a..b).map(key_name).collect()
        };
        let (Some(first), Some(last)) = (keys.first(), keys.last()) else { return };
        let end = successor(last);
        let reverse = rng.gen_bool(0.5);
        let walked = match snap.iter_async(Some(first), Some(&end)).await {
            Ok(it) => walk(it, reverse).await,
            Err(e) => Err(e),
        };
        let got = match walked {
            Ok(got) => got,
            Err(e) if self.read_error_allowed(&e) => return,
            Err(e) => return self.shared.fail(&self.trace, format!("snapshot scan failed: {e}")),
        };
        if keys.len() == 1 {
            match snap.get_async(first).await {
                Ok(v) if v.as_deref() == got.get(first).map(Vec::as_slice) => {}
                Ok(v) => {
                    let why = format!(
                        "snapshot get {first:?} gave {v:?} but its scan {:?}",
                        got.get(first)
                    );
                    return self.shared.fail(&self.trace, why);
                }
                Err(e) if self.read_error_allowed(&e) => return,
                Err(e) => {
                    return self.shared.fail(&self.trace, format!("snapshot get failed: {e}"))
                }
            }
        }
        self.trace.event(now_ns(), || format!("snapshot read at {seq}: {} keys", got.len()));
        lock(&self.shared.stats).snapshot_reads += 1;
        let model = lock(&self.shared.model);
        for key in &keys {
            if let Err(v) = model.check_snapshot_read(key, seq, got.get(key).map(Vec::as_slice)) {
                drop(model);
                return self.shared.fail(&self.trace, format!("snapshot read check: {v}"));
            }
        }
        if let Some(stray) = got.keys().find(|k| !keys.contains(k)) {
            drop(model);
            self.shared.fail(&self.trace, format!("scan returned {stray:?}, outside its range"));
        }
    }

    /// A `compact_range` over a random range; under faults it may fail (the database is then
    /// poisoned), otherwise it must succeed.
    async fn compact_range(&self, db: &Db, rng: &mut ChaCha8Rng) {
        let a = rng.gen_range(0..self.config.keys);
        let b = rng.gen_range(a..self.config.keys);
        let result = db.compact_range_async(&key_name(a), &key_name(b)).await;
        self.trace.event(now_ns(), || format!("compact_range [{a}, {b}] -> {result:?}"));
        lock(&self.shared.stats).compact_ranges += 1;
        if let Err(e) = result {
            if !self.faults.any() {
                self.shared.fail(&self.trace, format!("compact_range failed without faults: {e}"));
            }
        }
    }

    /// A `compact_range` over every key.
    async fn compact_all(&self, db: &Db) {
        let result = db.compact_range_async(b"", b"\xff").await;
        self.trace.event(now_ns(), || format!("compact_range all -> {result:?}"));
        lock(&self.shared.stats).compact_ranges += 1;
        if let Err(e) = result {
            if !self.faults.any() {
                self.shared.fail(&self.trace, format!("compact_range failed without faults: {e}"));
            }
        }
    }

    /// A `flush`; as `compact_range`, it may fail only under faults.
    async fn flush(&self, db: &Db) {
        let result = db.flush_async().await;
        self.trace.event(now_ns(), || format!("flush -> {result:?}"));
        lock(&self.shared.stats).user_flushes += 1;
        if let Err(e) = result {
            if !self.faults.any() {
                self.shared.fail(&self.trace, format!("flush failed without faults: {e}"));
            }
        }
    }

    /// A range scan at the latest sequence number, checked key by key like a latest read.
    async fn scan(&self, db: &Db, rng: &mut ChaCha8Rng) {
        let a = rng.gen_range(0..self.config.keys);
        let b = rng.gen_range(a..=self.config.keys);
        let (start, end) = (key_name(a), key_name(b));
        let token = lock(&self.shared.model).begin_read();
        let got = if rng.gen_bool(0.5) {
            db.scan_async(&start, Some(&end))
                .await
                .map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
        } else {
            match db.iter_async(Some(&start), Some(&end)).await {
                Ok(it) => walk(it, true).await,
                Err(e) => Err(e),
            }
        };
        let got = match got {
            Ok(got) => got,
            Err(e) if self.read_error_allowed(&e) => return,
            Err(e) => return self.shared.fail(&self.trace, format!("scan failed: {e}")),
        };
        self.trace.event(now_ns(), || format!("scan [{a}, {b}) -> {} keys", got.len()));
        lock(&self.shared.stats).scans += 1;
        let model = lock(&self.shared.model);
        for key in (a..b).map(key_name) {
            if let Err(v) = model.check_read(&key, &token, got.get(&key).map(Vec::as_slice)) {
                drop(model);
                return self.shared.fail(&self.trace, format!("scan check: {v}"));
            }
        }
        if got.len() > b - a || got.keys().any(|k| *k < start || *k >= end) {
            drop(model);
            self.shared.fail(&self.trace, format!("scan [{a}, {b}) returned keys outside it"));
        }
    }

    async fn write(&self, db: &Db, rng: &mut ChaCha8Rng, client: usize, op: usize) {
        let ops = self.draw_ops(rng, client, op);
        // Client 0 opens each cycle with one unsynced and one synced write, so every scenario
        // that gets past recovery mixes both, whatever its drawn ratio.
        let sync = match (client, op) {
            (0, 0) => false,
            (0, 1) => true,
            _ => rng.gen_range(0..100) < self.config.sync_percent,
        };
        let mut batch = WriteBatch::new();
        for o in &ops {
            let added = match o {
                Op::Put(k, v) => batch.put(k, v),
                Op::Delete(k) => batch.delete(k),
            };
            if let Err(e) = added {
                return self.shared.fail(&self.trace, format!("batch refused: {e}"));
            }
        }
        let n = ops.len();
        let id = lock(&self.shared.model).issue_write(ops, sync);
        self.trace.event(now_ns(), || format!("client {client} write {id} ops {n} sync {sync}"));
        let result = db.write_async(batch, WriteOptions { sync }).await;
        self.trace.event(now_ns(), || format!("client {client} write {id} -> {result:?}"));
        match result {
            Ok(seq) => {
                lock(&self.shared.model).ack_write(id, seq);
                let mut stats = lock(&self.shared.stats);
                stats.writes_acked += 1;
                stats.synced_acked += u64::from(sync);
            }
            Err(e) => {
                lock(&self.shared.model).fail_write(id);
                lock(&self.shared.stats).writes_failed += 1;
                if !self.faults.any() {
                    self.shared.fail(&self.trace, format!("write failed without faults: {e}"));
                }
            }
        }
    }

    fn draw_ops(&self, rng: &mut ChaCha8Rng, client: usize, op: usize) -> Vec<Op> {
        let n = if rng.gen_range(0..100) < self.config.batch_percent {
            rng.gen_range(2..=self.config.batch_ops_max)
        } else {
            1
        };
        (0..n)
            .map(|i| {
                let key = key_name(rng.gen_range(0..self.config.keys));
                if rng.gen_range(0..100) < self.config.delete_percent {
                    Op::Delete(key)
                } else {
                    let len = rng.gen_range(1..=self.config.value_bytes_max);
                    Op::Put(key, value(self.cycle, client, op, i, len))
                }
            })
            .collect()
    }
}

fn key_name(k: usize) -> Vec<u8> {
    format!("key{k:04}").into_bytes()
}

/// Everything an iterator shows, walking forward from the first key or backward from the last.
async fn walk(mut it: DbIterator, reverse: bool) -> jadedb::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut got = BTreeMap::new();
    if reverse {
        it.seek_to_last_async().await?;
    } else {
        it.seek_to_first_async().await?;
    }
    let mut last: Option<Vec<u8>> = None;
    while let Some((k, v)) = it.entry() {
        // Keys must come strictly in the walk's order: the map would hide a repeat.
        if last.as_ref().is_some_and(|last| (k.as_ref() > last.as_slice()) == reverse) {
            return Err(jadedb::Error::InvalidArgument(format!(
                "iterator showed {k:?} out of order"
            )));
        }
        last = Some(k.to_vec());
        got.insert(k.to_vec(), v.to_vec());
        if reverse {
            it.prev_async().await?;
        } else {
            it.next_async().await?;
        }
    }
    Ok(got)
}

/// The smallest key greater than `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// A value that names its writer, padded to `len` bytes.
fn value(cycle: usize, client: usize, op: usize, i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("v{cycle}.{client}.{op}.{i}:").into_bytes();
    v.resize(len.max(v.len()), b'.');
    v
}

/// Checks a freshly opened database against the model and starts the model's next epoch.
/// With `read_flips`, a read may fail with a detected corruption (never return wrong data): the
/// check is then skipped, and the model stays as it was for the next recovery to check.
async fn check_recovered(db: &Db, shared: &Shared, trace: &Trace, read_flips: bool) -> bool {
    let recovered: BTreeMap<Vec<u8>, Vec<u8>> = match db.scan_async(b"", None).await {
        Ok(pairs) => pairs.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
        Err(e) if read_flips && e.is_corruption() => {
            trace.event(now_ns(), || format!("scan after recovery failed under read faults: {e}"));
            return false;
        }
        Err(e) => {
            shared.fail(trace, format!("scan after recovery failed: {e}"));
            return false;
        }
    };
    let seq = db.latest_sequence();
    trace.event(now_ns(), || format!("recovered {} keys at seq {seq}", recovered.len()));
    let required = *lock(&shared.required_seq);
    if seq < required {
        shared.fail(
            trace,
            format!("recovered seq {seq} is below {required}, acknowledged before a clean close"),
        );
        return false;
    }
    let mut model = lock(&shared.model);
    if let Err(v) = model.check_recovery(&recovered, seq) {
        drop(model);
        shared.fail(trace, format!("recovery check: {v}"));
        return false;
    }
    model.restart(recovered, seq);
    drop(model);
    lock(&shared.stats).recoveries += 1;
    true
}

/// With faults off: recover, write again (invariant 5), close, and recover everything.
async fn final_check(
    handle: &madsim::runtime::Handle,
    disk: MemFs,
    config: &ScenarioConfig,
    rng: &mut ChaCha8Rng,
    shared: &Arc<Shared>,
    trace: &Trace,
) {
    let runtime = make_runtime(&disk, config, Faults::default(), rng, trace);
    let node = handle.create_node().name("final").build();
    let process = Process {
        config: config.clone(),
        cycle: config.cycles - 1,
        faults: Faults::default(),
        rt: runtime,
        shared: Arc::clone(shared),
        trace: trace.clone(),
    };
    let done = node.spawn(async move {
        for round in 0..2 {
            let Some(db) = process.open_and_check().await else { return };
            if round == 0 {
                let mut rng = ChaCha8Rng::seed_from_u64(process.config.seed);
                // As client 0 at the start of a cycle: one unsynced write, then a synced one.
                for op in 0..2 {
                    process.write(&db, &mut rng, 0, op).await;
                }
                // A snapshot that must outlive overwrites, a flush and a full compaction:
                // every scenario checks that compaction keeps what snapshots read.
                let snapshot = db.snapshot();
                for op in 2..2 + process.config.keys.min(6) {
                    process.write(&db, &mut rng, 0, op).await;
                }
                process.flush(&db).await;
                // As a user tidying up: everything on disk compacted down, then checked again
                // by the next recovery.
                process.compact_all(&db).await;
                process.snapshot_read(&snapshot, &mut rng, true).await;
                drop(snapshot);
                let m = db.metrics();
                {
                    let mut stats = lock(&process.shared.stats);
                    stats.flushes += m.flushes;
                    stats.compactions += m.compactions;
                }
                process.close_cleanly(&db).await;
            }
        }
    });
    let _ = done.await;
}
