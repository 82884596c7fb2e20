//! What a scenario does, drawn from its seed ("swarm testing"): each seed picks its own mix of
//! clients, key space, sync ratio, engine options and faults, so rare combinations get explored.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;

/// Bugs the simulator can plant, to prove it finds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The file system's file sync silently does nothing.
    SyncNoop,
    /// The WAL reader accepts a record whose checksum fails (a torn record).
    AcceptTornWal,
    /// The engine acknowledges a synced write before its fsync returns.
    AckBeforeSync,
    /// A flush deletes its WAL before the MANIFEST durably names the table replacing it.
    DeleteWalEarly,
    /// Compaction drops versions that live snapshots still read.
    CompactionIgnoresSnapshots,
}

impl Bug {
    /// Every plantable bug.
    pub const ALL: [Bug; 5] = [
        Bug::SyncNoop,
        Bug::AcceptTornWal,
        Bug::AckBeforeSync,
        Bug::DeleteWalEarly,
        Bug::CompactionIgnoresSnapshots,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::SyncNoop => "sync-noop",
            Bug::AcceptTornWal => "accept-torn-wal",
            Bug::AckBeforeSync => "ack-before-sync",
            Bug::DeleteWalEarly => "delete-wal-early",
            Bug::CompactionIgnoresSnapshots => "compaction-ignores-snapshots",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Result<Bug, String> {
        Bug::ALL.into_iter().find(|b| b.name() == name).ok_or_else(|| {
            let names: Vec<_> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("unknown bug {name:?}; known: {}", names.join(", "))
        })
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The faults of one crash cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a WAL fsync fails (ext4 semantics: the data it covered is lost).
    pub fsync_fail: f64,
    /// Probability that a WAL write fails with ENOSPC.
    pub write_fail: f64,
    /// Probability that a read returns one flipped bit (a transient fault: the disk is fine).
    pub read_flip: f64,
}

impl Faults {
    pub fn any(&self) -> bool {
        self.fsync_fail > 0.0 || self.write_fail > 0.0 || self.read_flip > 0.0
    }
}

/// The table-layer options of one cycle: extreme values so flushes happen in almost every
/// scenario and every cache and limit is exercised at its edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    pub memtables_max: usize,
    pub block_bytes: usize,
    pub bloom_bits_per_key: usize,
    pub block_cache_bytes: usize,
    pub open_tables_max: usize,
    pub manifest_bytes_max: u64,
    pub l0_compaction_files: usize,
    /// Level-0 tables at which writes slow down, and stop.
    pub l0_stall_files: (usize, usize),
    pub level1_bytes_max: u64,
    pub target_file_bytes: u64,
}

impl TableConfig {
    fn draw(rng: &mut ChaCha8Rng) -> Self {
        TableConfig {
            memtables_max: *pick(rng, &[2, 2, 3, 5]),
            block_bytes: *pick(rng, &[1, 64, 512, 4096]),
            bloom_bits_per_key: *pick(rng, &[0, 4, 10]),
            block_cache_bytes: *pick(rng, &[0, 1024, 1 << 20]),
            open_tables_max: *pick(rng, &[1, 3, 1000]),
            manifest_bytes_max: *pick(rng, &[1, 512, 64 << 20]),
            l0_compaction_files: *pick(rng, &[1, 2, 2, 3, 4]),
            l0_stall_files: *pick(rng, &[(2, 3), (3, 6), (20, 36)]),
            level1_bytes_max: *pick(rng, &[1, 1024, 8 << 10, 64 << 20]),
            target_file_bytes: *pick(rng, &[1, 512, 4096, 8 << 20]),
        }
    }
}

/// Everything a scenario does, fixed by its seed.
#[derive(Clone, Debug)]
pub struct ScenarioConfig {
    pub seed: u64,
    pub clients: usize,
    pub ops_per_client: usize,
    pub cycles: usize,
    pub keys: usize,
    pub value_bytes_max: usize,
    pub sync_percent: u32,
    pub read_percent: u32,
    /// Of client operations, the percentage that are `compact_range` calls.
    pub compact_percent: u32,
    pub delete_percent: u32,
    pub batch_percent: u32,
    pub batch_ops_max: usize,
    pub memtable_bytes_max: Vec<usize>,
    /// Per cycle: reopening may change every table option.
    pub tables: Vec<TableConfig>,
    pub group_bytes_max: usize,
    pub commit_window_us: u64,
    pub wal_preallocate_bytes: u64,
    pub faults: Vec<Faults>,
    /// Per cycle: close the database cleanly once the clients finish, before the crash.
    pub close_before_crash: Vec<bool>,
    /// Per cycle: virtual milliseconds from the start of the process to the crash.
    pub crash_after_ms: Vec<u64>,
    pub bug: Option<Bug>,
}

impl ScenarioConfig {
    /// Draws the scenario of `seed`.
    pub fn draw(seed: u64, bug: Option<Bug>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let cycles = rng.gen_range(2..=4);
        let clients = rng.gen_range(2..=4);
        let ops_per_client = rng.gen_range(8..=30);
        let faulty = rng.gen_bool(0.25);
        // The first cycle runs fault-free, so every scenario acknowledges synced and unsynced
        // writes before its first crash; faults come in the cycles after.
        let faults = (0..cycles)
            .map(|cycle| {
                if cycle > 0 && faulty && rng.gen_bool(0.7) {
                    Faults {
                        fsync_fail: rng.gen_range(0.02..0.3),
                        write_fail: if rng.gen_bool(0.3) { rng.gen_range(0.01..0.1) } else { 0.0 },
                        read_flip: if rng.gen_bool(0.3) { rng.gen_range(0.005..0.05) } else { 0.0 },
                    }
                } else {
                    Faults::default()
                }
            })
            .collect();
        ScenarioConfig {
            seed,
            clients,
            ops_per_client,
            cycles,
            keys: *pick(&mut rng, &[2, 8, 32, 128]),
            value_bytes_max: *pick(&mut rng, &[8, 100, 1000, 6000]),
            // Every scenario mixes synced and unsynced writes; the mix varies.
            sync_percent: *pick(&mut rng, &[5, 20, 50, 80, 95]),
            read_percent: rng.gen_range(10..=50),
            compact_percent: *pick(&mut rng, &[1, 3, 6]),
            delete_percent: rng.gen_range(0..=30),
            batch_percent: rng.gen_range(0..=50),
            batch_ops_max: rng.gen_range(2..=8),
            memtable_bytes_max: (0..cycles)
                .map(|_| *pick(&mut rng, &[256, 512, 1024, 2048, 16 << 10]))
                .collect(),
            tables: (0..cycles).map(|_| TableConfig::draw(&mut rng)).collect(),
            group_bytes_max: *pick(&mut rng, &[1, 256, 4096, 1 << 20]),
            commit_window_us: if rng.gen_bool(0.2) { rng.gen_range(1..3000) } else { 0 },
            wal_preallocate_bytes: *pick(&mut rng, &[0, 0, 512, 8192]),
            faults,
            close_before_crash: (0..cycles).map(|_| rng.gen_bool(0.2)).collect(),
            // Every file call costs at least a virtual millisecond: a client op is a few of them,
            // so this lands crashes from inside recovery to after the clients are done.
            // Some crashes land inside recovery itself, the rest while clients run or after.
            crash_after_ms: (0..cycles)
                .map(|cycle| {
                    // The first cycle always gets its clients going, so every scenario crashes
                    // with writes in flight at least once.
                    if cycle > 0 && rng.gen_bool(0.15) {
                        rng.gen_range(1..=12)
                    } else {
                        rng.gen_range(30..=30 + (ops_per_client as u64) * 8)
                    }
                })
                .collect(),
            bug,
        }
    }
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, choices: &'a [T]) -> &'a T {
    &choices[rng.gen_range(0..choices.len())]
}
