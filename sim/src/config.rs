//! What a scenario does, drawn from its seed ("swarm testing"): each seed picks its own mix of
//! clients, key space, sync ratio, engine options, crash plans and faults, so rare combinations
//! get explored.
//!
//! A scenario is a few crash cycles. Each cycle starts a process that opens the database, runs
//! the clients and is then crashed, either at a virtual time or at an engine event (right after
//! the N-th file call of a kind, or inside a named phase of the engine's work), by one of two
//! kinds of crash (power loss or process crash). Faults are a per-seed palette: each kind of
//! fault is in it or not, and each faulty cycle draws a rate for every kind in the palette.

use crate::plan::{Clients, FinalPlan, Mix};
use jadedb::runtime::Phase;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
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
    /// A failed WAL fsync is retried instead of failing stop.
    RetryFailedFsync,
    /// The WAL's durable mark is raised before its fsync returns.
    DurableMarkEarly,
    /// The WAL and MANIFEST readers take any bad record for a torn tail.
    BadRecordAsTornTail,
    /// Recovery takes the next file number from the MANIFEST alone.
    NextFileNumberTooLow,
    /// A panicking background job kills its task silently instead of poisoning the database.
    BackgroundPanicNotCaught,
    /// Concurrent flushes install their tables in the order they finish, not oldest first.
    FlushInstallOutOfOrder,
    /// A new WAL's first fsync leaves its directory unsynced.
    NewWalNameNotSynced,
    /// Retiring a WAL drops the records still in its write buffer.
    WalBufferDropped,
    /// A rotation creates the new WAL before the old one is wholly synced.
    NewWalBeforeOldSynced,
    /// A compaction counts the blob records of versions kept only for snapshots as garbage.
    BlobGarbageIgnoresSnapshots,
    /// A blob file is not synced before the table pointing into it is recorded.
    BlobNotSynced,
    /// A compaction counts the blob records of the entries it keeps as garbage.
    BlobGarbageCountsLive,
}

impl Bug {
    /// Every plantable bug.
    pub const ALL: [Bug; 17] = [
        Bug::SyncNoop,
        Bug::AcceptTornWal,
        Bug::AckBeforeSync,
        Bug::DeleteWalEarly,
        Bug::CompactionIgnoresSnapshots,
        Bug::RetryFailedFsync,
        Bug::DurableMarkEarly,
        Bug::BadRecordAsTornTail,
        Bug::NextFileNumberTooLow,
        Bug::BackgroundPanicNotCaught,
        Bug::FlushInstallOutOfOrder,
        Bug::NewWalNameNotSynced,
        Bug::WalBufferDropped,
        Bug::NewWalBeforeOldSynced,
        Bug::BlobGarbageIgnoresSnapshots,
        Bug::BlobNotSynced,
        Bug::BlobGarbageCountsLive,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::SyncNoop => "sync-noop",
            Bug::AcceptTornWal => "accept-torn-wal",
            Bug::AckBeforeSync => "ack-before-sync",
            Bug::DeleteWalEarly => "delete-wal-early",
            Bug::CompactionIgnoresSnapshots => "compaction-ignores-snapshots",
            Bug::RetryFailedFsync => "retry-failed-fsync",
            Bug::DurableMarkEarly => "durable-mark-early",
            Bug::BadRecordAsTornTail => "bad-record-as-torn-tail",
            Bug::NextFileNumberTooLow => "next-file-number-too-low",
            Bug::BackgroundPanicNotCaught => "background-panic-not-caught",
            Bug::FlushInstallOutOfOrder => "flush-install-out-of-order",
            Bug::NewWalNameNotSynced => "new-wal-name-not-synced",
            Bug::WalBufferDropped => "wal-buffer-dropped",
            Bug::NewWalBeforeOldSynced => "new-wal-before-old-synced",
            Bug::BlobGarbageIgnoresSnapshots => "blob-garbage-ignores-snapshots",
            Bug::BlobNotSynced => "blob-not-synced",
            Bug::BlobGarbageCountsLive => "blob-garbage-counts-live",
        }
    }

    /// The engine's switch for this bug; `None` for bugs planted in the simulated disk.
    pub fn planted(self) -> Option<jadedb::PlantedBug> {
        use jadedb::PlantedBug as P;
        Some(match self {
            Bug::SyncNoop => return None,
            Bug::AcceptTornWal => P::AcceptTornWalRecord,
            Bug::AckBeforeSync => P::AckBeforeSync,
            Bug::DeleteWalEarly => P::DeleteWalBeforeManifest,
            Bug::CompactionIgnoresSnapshots => P::CompactionIgnoresSnapshots,
            Bug::RetryFailedFsync => P::RetryFailedFsync,
            Bug::DurableMarkEarly => P::DurableMarkBeforeSync,
            Bug::BadRecordAsTornTail => P::BadRecordAsTornTail,
            Bug::NextFileNumberTooLow => P::NextFileNumberFromManifest,
            Bug::BackgroundPanicNotCaught => P::BackgroundPanicNotCaught,
            Bug::FlushInstallOutOfOrder => P::FlushInstallOutOfOrder,
            Bug::NewWalNameNotSynced => P::NewWalNameNotSynced,
            Bug::WalBufferDropped => P::WalBufferDroppedAtRotation,
            Bug::NewWalBeforeOldSynced => P::NewWalBeforeOldSynced,
            Bug::BlobGarbageIgnoresSnapshots => P::BlobGarbageIgnoresSnapshots,
            Bug::BlobNotSynced => P::BlobNotSynced,
            Bug::BlobGarbageCountsLive => P::BlobGarbageCountsLive,
        })
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Result<Bug, String> {
        Bug::ALL.into_iter().find(|b| b.name() == name).ok_or_else(|| {
            let names: Vec<_> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("unknown bug {name:?}; known: {}", names.join(", "))
        })
    }
}

// A bug is written by name in a sweep's JSON summary.
impl serde::Serialize for Bug {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Bug {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bug, D::Error> {
        let name = String::deserialize(d)?;
        Bug::parse(&name).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of fault the simulator injects. Each is in a seed's palette or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FaultKind {
    /// An fsync fails with EIO and the data it covered is lost, though reads still see it.
    Sync,
    /// A directory fsync fails with EIO.
    SyncDir,
    /// A read fails with EIO.
    ReadEio,
    /// A write fails with EIO.
    WriteEio,
    /// Creating a file fails with EIO.
    Create,
    /// Opening a file fails with EIO.
    Open,
    /// A rename fails with EIO.
    Rename,
    /// A remove fails with EIO.
    Remove,
    /// Listing a directory fails with EIO.
    List,
    /// A truncate fails with EIO.
    Truncate,
    /// A write fails with ENOSPC.
    NoSpaceWrite,
    /// Creating a file or directory, or renaming one, fails with ENOSPC.
    NoSpaceMeta,
    /// A read returns fewer bytes than asked.
    ShortRead,
    /// A read returns one flipped bit (transient: the next read is fine).
    ReadFlip,
    /// Bits of synced data rot at rest, persistently (applied at a boot).
    BitRot,
    /// A sector holding synced data becomes unreadable, persistently (applied at a boot).
    BadSector,
    /// A background job panics (an in-code fault point).
    Panic,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 17] = [
        FaultKind::Sync,
        FaultKind::SyncDir,
        FaultKind::ReadEio,
        FaultKind::WriteEio,
        FaultKind::Create,
        FaultKind::Open,
        FaultKind::Rename,
        FaultKind::Remove,
        FaultKind::List,
        FaultKind::Truncate,
        FaultKind::NoSpaceWrite,
        FaultKind::NoSpaceMeta,
        FaultKind::ShortRead,
        FaultKind::ReadFlip,
        FaultKind::BitRot,
        FaultKind::BadSector,
        FaultKind::Panic,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Sync => "fsync EIO",
            FaultKind::SyncDir => "sync_dir EIO",
            FaultKind::ReadEio => "read EIO",
            FaultKind::WriteEio => "write EIO",
            FaultKind::Create => "create EIO",
            FaultKind::Open => "open EIO",
            FaultKind::Rename => "rename EIO",
            FaultKind::Remove => "remove EIO",
            FaultKind::List => "list EIO",
            FaultKind::Truncate => "truncate EIO",
            FaultKind::NoSpaceWrite => "ENOSPC on writes",
            FaultKind::NoSpaceMeta => "ENOSPC on metadata",
            FaultKind::ShortRead => "short reads",
            FaultKind::ReadFlip => "read bit flips",
            FaultKind::BitRot => "bit rot at rest",
            FaultKind::BadSector => "bad sectors",
            FaultKind::Panic => "background panics",
        }
    }

    /// Whether a read through the engine may fail while this fault is on: the fault reaches
    /// what reads see. ENOSPC, failed syncs and failed metadata calls never may: a database
    /// that can no longer write must keep serving reads.
    pub fn may_fail_reads(self) -> bool {
        // Damage at rest is judged apart: a failed read must then name the damaged file.
        matches!(self, FaultKind::ReadEio | FaultKind::Open | FaultKind::ReadFlip)
    }

    /// The chance that a faulty seed's palette holds this kind. A palette holds two or three
    /// kinds on average: the first fault that fires usually stops the database's writes, so a
    /// short palette gives each kind its own chance. The faults a storage engine is most often
    /// wrong about (a failed fsync, a crashing background job, rot at rest) are drawn most.
    fn weight(self) -> f64 {
        match self {
            FaultKind::Sync => 0.9,
            FaultKind::Panic => 0.6,
            FaultKind::BitRot => 0.8,
            _ => 0.1,
        }
    }

    /// Whether this fault damages data at rest (the engine may then refuse with `Corruption`
    /// or an I/O error, forever, but never lose data silently).
    pub fn at_rest(self) -> bool {
        matches!(self, FaultKind::BitRot | FaultKind::BadSector)
    }

    /// The per-call probability range a faulty cycle draws a rate from: calls a cycle makes
    /// a handful of times (renames, listings, directory syncs) fail more often per call than
    /// calls it makes thousands of times (reads, writes), so each kind fires in a fair share
    /// of the cycles that have it.
    fn rates(self) -> (f64, f64) {
        match self {
            FaultKind::Sync => (0.02, 0.3),
            FaultKind::ReadFlip => (0.005, 0.05),
            FaultKind::ReadEio | FaultKind::WriteEio | FaultKind::NoSpaceWrite => (0.005, 0.05),
            FaultKind::ShortRead => (0.05, 0.5),
            // Rot and bad sectors: the chance that a boot damages one place.
            FaultKind::BitRot | FaultKind::BadSector => (0.7, 1.0),
            FaultKind::Panic => (0.05, 0.4),
            FaultKind::SyncDir
            | FaultKind::Create
            | FaultKind::Open
            | FaultKind::Rename
            | FaultKind::Remove
            | FaultKind::List
            | FaultKind::Truncate
            | FaultKind::NoSpaceMeta => (0.05, 0.5),
        }
    }
}

/// The per-call rates of each fault kind in one cycle; zero means off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Faults {
    rates: Vec<(FaultKind, f64)>,
}

impl Faults {
    /// The rate of `kind` (zero if it is off).
    pub fn rate(&self, kind: FaultKind) -> f64 {
        self.rates.iter().find(|(k, _)| *k == kind).map_or(0.0, |(_, r)| *r)
    }

    /// Whether any fault is on.
    pub fn any(&self) -> bool {
        !self.rates.is_empty()
    }

    /// Whether a read may fail under these faults (see [`FaultKind::may_fail_reads`]).
    pub fn may_fail_reads(&self) -> bool {
        self.rates.iter().any(|(k, _)| k.may_fail_reads())
    }

    /// The kinds that are on.
    pub fn kinds(&self) -> impl Iterator<Item = FaultKind> + '_ {
        self.rates.iter().map(|(k, _)| *k)
    }

    /// These faults without `kind`.
    pub fn without(&self, kind: FaultKind) -> Faults {
        Faults { rates: self.rates.iter().copied().filter(|(k, _)| *k != kind).collect() }
    }
}

/// What a crash keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrashKind {
    /// The machine loses power: only synced data and names survive (and a seeded choice of the
    /// rest, as `MemFs::crash` says).
    PowerLoss,
    /// Only the process dies: the page cache survives, with every completed write, including
    /// pages whose fsync failed.
    ProcessCrash,
}

/// File calls a crash may be aimed right after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CallKind {
    /// A write: a crash right after an append and before its fsync leaves the tail that a
    /// power loss tears.
    Write,
    Sync,
    SyncDir,
    Rename,
    Remove,
    Create,
}

impl CallKind {
    /// Every kind, in report order.
    pub const ALL: [CallKind; 6] = [
        CallKind::Write,
        CallKind::Sync,
        CallKind::SyncDir,
        CallKind::Rename,
        CallKind::Remove,
        CallKind::Create,
    ];

    /// The name of the file call, as the trace writes it.
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Write => "write",
            CallKind::Sync => "sync",
            CallKind::SyncDir => "sync_dir",
            CallKind::Rename => "rename",
            CallKind::Remove => "remove",
            CallKind::Create => "create",
        }
    }

    /// The call kind a file call's trace name stands for, if a crash can be aimed after it.
    pub fn of(op: &str) -> Option<CallKind> {
        CallKind::ALL.into_iter().find(|k| k.name() == op)
    }

    /// How many calls of this kind a cycle typically makes: the N of "after the N-th" is drawn
    /// up to this.
    fn typical(self) -> u32 {
        match self {
            CallKind::Write => 60,
            CallKind::Sync => 40,
            CallKind::SyncDir => 10,
            CallKind::Rename => 2,
            CallKind::Remove => 4,
            CallKind::Create => 10,
        }
    }
}

/// Where a cycle's crash is aimed. Whatever the aim, the crash comes at the cycle's deadline
/// at the latest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrashPoint {
    /// At the cycle's deadline, wherever the engine is then.
    Time,
    /// Right after the `nth` file call of `kind` completes on disk (the process never sees it
    /// return).
    AfterCall { kind: CallKind, nth: u32 },
    /// Right after the `nth` file call made while the engine is inside `phase`.
    InPhase {
        #[serde(with = "phase_name")]
        phase: Phase,
        nth: u32,
    },
    /// `calls` file calls after the first write, sync, directory sync or truncate that failed
    /// (right after it for 0), or at the deadline if none fails: the moments right after a
    /// failure are where the engine's handling of it (never retrying an fsync, never
    /// acknowledging what it may have lost) is put to the test, before a flush makes the
    /// question moot.
    AfterFailure { calls: u32 },
}

/// A phase is written by name in a scenario file.
mod phase_name {
    use jadedb::runtime::Phase;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(phase: &Phase, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(phase.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Phase, D::Error> {
        let name = String::deserialize(d)?;
        Phase::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown phase {name:?}")))
    }
}

/// How a power loss treats unsynced data, in a scenario file.
#[derive(Serialize, Deserialize)]
#[serde(remote = "jadedb_fault::CrashModel")]
struct CrashModelDef {
    tear_sectors: bool,
    unordered_dirs: bool,
}

/// How many file calls a phase typically makes: the N of "inside, after the N-th call" is drawn
/// up to this.
fn typical_calls(phase: Phase) -> u32 {
    match phase {
        Phase::Recovery => 30,
        Phase::WalRotation => 3,
        Phase::FlushInstall => 4,
        Phase::CompactionInstall => 5,
        Phase::ManifestRotation => 12,
        Phase::CurrentReplacement => 5,
        Phase::Close => 2,
        _ => 4,
    }
}

/// The table-layer options of one cycle: extreme values so flushes happen in almost every
/// scenario and every cache and limit is exercised at its edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The background pools' sizes, and the compaction write limit (0 for none). Absent in
    /// scenario files written before the pools: one of each, no limit.
    #[serde(default = "one")]
    pub background_flushes: usize,
    #[serde(default = "one")]
    pub background_compactions: usize,
    #[serde(default)]
    pub compaction_bytes_per_sec: u64,
    /// `Options::wal_bytes_per_sync` (0 for none). Absent in scenario files written before
    /// background WAL syncs: none.
    #[serde(default)]
    pub wal_bytes_per_sync: u64,
    /// `Options::memory_budget` (0 for none). Absent in scenario files written before the
    /// budget: none.
    #[serde(default)]
    pub memory_budget: u64,
    /// `Options::wal_buffer_bytes` (0 writes every group at once). Absent in scenario files
    /// written before the buffer: 0, as those versions wrote.
    #[serde(default)]
    pub wal_buffer_bytes: usize,
    /// `Options::min_blob_size` (`None` keeps every value in the tables). Absent in scenario
    /// files written before key-value separation: none.
    #[serde(default)]
    pub min_blob_size: Option<usize>,
}

/// A generator for a draw added after the others, seeded from `rng`'s seed and position
/// without advancing it: adding the draw changed no other draw of any seed, so every seed that
/// draws the old behaviour runs exactly as before.
fn side_stream(rng: &ChaCha8Rng) -> ChaCha8Rng {
    side_lane(rng, 0)
}

/// A side stream of its own for each later draw at one position (`lane` 0 is
/// [`side_stream`]'s), so that the draws are independent of each other.
pub(crate) fn side_lane(rng: &ChaCha8Rng, lane: u8) -> ChaCha8Rng {
    let mut seed = rng.get_seed();
    for (s, p) in seed.iter_mut().zip(rng.get_word_pos().to_le_bytes()) {
        *s ^= p;
    }
    // Apart from the main stream even at its start.
    seed[31] ^= 0x5a;
    seed[30] ^= lane;
    ChaCha8Rng::from_seed(seed)
}

fn one() -> usize {
    1
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
            background_flushes: *pick(rng, &[1, 2]),
            background_compactions: *pick(rng, &[1, 2, 3]),
            // Virtual bytes per second: the slower stretches a compaction over many other
            // events (a full compaction of a standard scenario's tree still ends in seconds),
            // the faster barely shows.
            compaction_bytes_per_sec: *pick(rng, &[0, 0, 0, 256 << 10, 4 << 20]),
            // A standard scenario's logs hold a few KiB: either size syncs some of them in the
            // background. Off in most seeds: logs synced in the background leave fewer torn
            // tails for recovery to tell from corruption, and each sync is a simulated call.
            wal_bytes_per_sync: *pick(&mut side_stream(rng), &[0, 0, 0, 0, 0, 0, 0, 0, 1024, 4096]),
            // A budget a standard scenario's memtables, tables and cache all press against:
            // memtables cut smaller, the cache and the table cache giving way to them.
            memory_budget: *pick(
                &mut side_lane(rng, 1),
                &[0, 0, 0, 0, 0, 0, 0, 0, 8 << 10, 64 << 10],
            ),
            // Unsynced records held back from the file: the default size (which holds all of
            // a standard scenario's unsynced writes until a sync or rotation takes them to the
            // file, so a process crash loses them), sizes that fill within a scenario, and
            // none, as RocksDB writes.
            wal_buffer_bytes: *pick(&mut side_lane(rng, 2), &[0, 0, 256, 4096, 32 << 10, 32 << 10]),
            // Key-value separation in half the seeds: every value (1), most of them, or only
            // the large ones in blob files.
            min_blob_size: *pick(
                &mut side_lane(rng, 3),
                &[None, None, None, Some(1), Some(32), Some(200)],
            ),
        }
    }

    /// Options at scale: small enough tables that a run makes hundreds of them over several
    /// levels, with limits (one open table at the least) still at their edges, but no extreme
    /// that throttles ten thousand operations to a crawl.
    fn for_scale(rng: &mut ChaCha8Rng) -> Self {
        TableConfig {
            memtables_max: *pick(rng, &[3, 5]),
            block_bytes: *pick(rng, &[512, 4096]),
            l0_compaction_files: 4,
            l0_stall_files: (20, 36),
            level1_bytes_max: 128 << 10,
            target_file_bytes: 8 << 10,
            manifest_bytes_max: *pick(rng, &[4096, 64 << 20]),
            // A limit would throttle ten thousand operations to a crawl, by design.
            compaction_bytes_per_sec: 0,
            memory_budget: 0,
            ..TableConfig::draw(rng)
        }
    }

    /// Options for measuring commit latency: no extreme that stalls writers by design, and
    /// memtables enough to absorb a burst while the background compacts.
    fn for_latency(rng: &mut ChaCha8Rng) -> Self {
        TableConfig {
            memtables_max: 5,
            block_bytes: 4096,
            l0_stall_files: (20, 36),
            level1_bytes_max: 64 << 10,
            target_file_bytes: 16 << 10,
            manifest_bytes_max: 64 << 20,
            compaction_bytes_per_sec: 0,
            memory_budget: 0,
            // Kept comparable with measurements from before key-value separation.
            min_blob_size: None,
            ..TableConfig::draw(rng)
        }
    }
}

/// One crash cycle: a process from open to crash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cycle {
    pub crash_kind: CrashKind,
    pub point: CrashPoint,
    /// Virtual milliseconds from the start of the process to the crash, if the aimed point has
    /// not come by then.
    pub deadline_ms: u64,
    /// Close the database cleanly once the clients finish.
    pub close: bool,
    pub faults: Faults,
    /// Whether the faults are on from boot, so recovery meets them too; otherwise they start
    /// once the database is open (a disk that breaks while the engine runs).
    pub faults_during_recovery: bool,
    pub memtable_bytes_max: usize,
    /// Reopening may change every table option.
    pub tables: TableConfig,
    /// What each client does.
    pub clients: Clients,
}

impl Cycle {
    /// This cycle with no client operations (cheaper than a clone, which copies them all).
    pub fn without_clients(&self) -> Cycle {
        Cycle {
            crash_kind: self.crash_kind,
            point: self.point,
            deadline_ms: self.deadline_ms,
            close: self.close,
            faults: self.faults.clone(),
            faults_during_recovery: self.faults_during_recovery,
            memtable_bytes_max: self.memtable_bytes_max,
            tables: self.tables,
            clients: Clients::default(),
        }
    }
}

/// File-call latencies of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Latency {
    /// Seeded: an fsync costs 1 to 4 virtual milliseconds, everything else one.
    Random,
    /// Every fsync costs exactly this many milliseconds and everything else one: commit
    /// latency is then measured against it.
    FixedSync(u64),
}

/// In-code fault points (the engine's `buggify`): whether they fire in this scenario, and how
/// often an enabled point fires when asked.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Buggify {
    /// Each point is enabled for the whole scenario with this probability.
    pub enabled: f64,
    /// An enabled point fires with this probability each time the engine asks.
    pub fire: f64,
}

/// Everything a scenario does, fixed by its seed. The seed also drives what the scenario
/// leaves to chance as it runs (task scheduling, file-call latencies, which faults fire, what a
/// power loss keeps), so a configuration and its seed replay exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioConfig {
    pub seed: u64,
    /// Where the database lives; sometimes several directories deep, so that creating the
    /// directories must make each one durable.
    pub db_dir: String,
    /// How the clients' operations were drawn: key space, value sizes, and the shares of
    /// reads, writes, syncs and batches (its fields stand beside the others in a file).
    #[serde(flatten)]
    pub mix: Mix,
    pub group_bytes_max: usize,
    pub commit_window_us: u64,
    pub wal_preallocate_bytes: u64,
    pub cycles: Vec<Cycle>,
    /// How power losses treat unsynced data and directory changes.
    #[serde(with = "CrashModelDef")]
    pub crash_model: jadedb_fault::CrashModel,
    pub latency: Latency,
    pub buggify: Option<Buggify>,
    /// A scenario at scale: thousands of operations and keys, large values, hundreds of tables.
    pub scale: bool,
    pub bug: Option<Bug>,
    /// The final process's writes.
    pub final_plan: FinalPlan,
}

/// The share of seeds that run at scale.
const SCALE_SHARE: f64 = 0.05;
/// The share of seeds that measure commit latency against a fixed fsync latency.
const LATENCY_SHARE: f64 = 0.1;
/// The fixed fsync latency of those seeds, in virtual milliseconds.
pub const FIXED_SYNC_MS: u64 = 2;
/// The most a scenario's 99th-percentile synced commit latency may be when every fsync takes
/// [`crate::config::FIXED_SYNC_MS`] (2 ms) and every other file call 1 ms: a commit costs a WAL
/// write and at most two fsyncs (the one in flight when it arrives, then its own), and may wait
/// behind two WAL rotations (a full memtable's and a `flush`'s: each an fsync, a truncate, an
/// fsync, a create and a directory sync, 8 ms); anything past this bound is a writer waiting on
/// something it should not. Measured in whole milliseconds: the executor adds nanoseconds.
pub const LATENCY_P99_BOUND: std::time::Duration = std::time::Duration::from_millis(24);

impl ScenarioConfig {
    /// Whether the scenario of `seed` runs at scale (the first thing a seed draws).
    pub fn is_scale(seed: u64) -> bool {
        ChaCha8Rng::seed_from_u64(seed).gen_bool(SCALE_SHARE)
    }

    /// Draws the scenario of `seed`.
    pub fn draw(seed: u64, bug: Option<Bug>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let scale = rng.gen_bool(SCALE_SHARE);
        let latency = if !scale && rng.gen_bool(LATENCY_SHARE) {
            Latency::FixedSync(FIXED_SYNC_MS)
        } else {
            Latency::Random
        };
        // At scale one cycle of ten thousand operations, then the final process.
        let cycle_count = if scale { 1 } else { rng.gen_range(2..=4) };
        let clients = rng.gen_range(2..=4);
        let ops_per_client =
            if scale { rng.gen_range(2_500..=3_500) } else { rng.gen_range(8..=30) };
        let palette = draw_palette(&mut rng, latency);
        let measuring = latency != Latency::Random;
        // Data rots at rest, while the database is closed: the cycles before the boots that
        // damage it (the last cycle's and the final process's) mostly end in a clean close.
        let damaging = palette.iter().any(|k| k.at_rest());
        let cycles = (0..cycle_count)
            .map(|cycle| {
                let rest_after = damaging && cycle + 2 >= cycle_count;
                draw_cycle(&mut rng, cycle, ops_per_client, &palette, scale, measuring, rest_after)
            })
            .collect();
        let crash_model = jadedb_fault::CrashModel {
            tear_sectors: rng.gen_bool(0.5),
            unordered_dirs: rng.gen_bool(0.3),
        };
        let buggify = (!measuring && rng.gen_bool(0.3))
            .then(|| Buggify { enabled: rng.gen_range(0.2..0.8), fire: rng.gen_range(0.02..0.25) });
        let (keys, value_bytes_max, large_values_per_mille) = if scale {
            (10_000, 64 << 10, 5)
        } else if measuring {
            (*pick(&mut rng, &[32, 128]), 1000, 1000)
        } else {
            (*pick(&mut rng, &[2, 8, 32, 128]), *pick(&mut rng, &[8, 100, 1000, 6000]), 1000)
        };
        let mut config = ScenarioConfig {
            seed,
            db_dir: if rng.gen_range(0..4) == 0 { "/data/jade/db" } else { "/db" }.to_string(),
            mix: Mix {
                keys,
                value_bytes_max,
                large_values_per_mille,
                // Every scenario mixes synced and unsynced writes; the mix varies.
                sync_percent: *pick(&mut rng, &[5, 20, 50, 80, 95]),
                read_percent: rng.gen_range(10..=50),
                compact_percent: if scale { 1 } else { *pick(&mut rng, &[1, 3, 6]) },
                delete_percent: rng.gen_range(0..=30),
                batch_percent: rng.gen_range(0..=50),
                batch_ops_max: rng.gen_range(2..=8),
            },
            group_bytes_max: *pick(&mut rng, &[1, 256, 4096, 1 << 20]),
            commit_window_us: if !measuring && rng.gen_bool(0.2) {
                rng.gen_range(1..3000)
            } else {
                0
            },
            wal_preallocate_bytes: *pick(&mut rng, &[0, 0, 512, 8192]),
            cycles,
            crash_model,
            latency,
            buggify,
            scale,
            bug,
            final_plan: FinalPlan::default(),
        };
        config.draw_plans(clients, ops_per_client);
        config
    }

    /// Draws every client's operations and the final process's writes, each client from a seed
    /// of its own.
    fn draw_plans(&mut self, clients: usize, ops_per_client: usize) {
        let mix = self.mix;
        for (index, cycle) in self.cycles.iter_mut().enumerate() {
            cycle.clients = Clients(
                (0..clients)
                    .map(|client| {
                        let seed = self.seed ^ ((index as u64) << 32) ^ ((client as u64) << 48);
                        let mut rng = ChaCha8Rng::seed_from_u64(seed);
                        mix.draw_client(&mut rng, client, ops_per_client)
                    })
                    .collect(),
            );
        }
        self.final_plan = mix.draw_final(&mut ChaCha8Rng::seed_from_u64(self.seed));
    }

    /// The operations the scenario runs (see [`crate::plan::count_ops`]).
    pub fn ops(&self) -> usize {
        let cycles: Vec<&Clients> = self.cycles.iter().map(|c| &c.clients).collect();
        crate::plan::count_ops(&cycles, &self.final_plan)
    }

    /// Whether some cycle damages data at rest: the engine may then refuse to open or to read,
    /// with `Corruption` or an I/O error, for the rest of the scenario.
    pub fn damages_at_rest(&self) -> bool {
        self.cycles.iter().any(|c| c.faults.kinds().any(FaultKind::at_rest))
    }
}

/// The fault kinds of a seed: most seeds have none; a faulty seed has a few kinds, each kept
/// with the same probability so every kind meets every other now and then.
fn draw_palette(rng: &mut ChaCha8Rng, latency: Latency) -> Vec<FaultKind> {
    if latency != Latency::Random || !rng.gen_bool(0.6) {
        return Vec::new();
    }
    let mut palette: Vec<FaultKind> =
        FaultKind::ALL.into_iter().filter(|k| rng.gen_bool(k.weight())).collect();
    if palette.is_empty() {
        palette.push(*pick(rng, &FaultKind::ALL));
    }
    palette
}

fn draw_cycle(
    rng: &mut ChaCha8Rng,
    cycle: usize,
    ops_per_client: usize,
    palette: &[FaultKind],
    scale: bool,
    measuring: bool,
    rest_after: bool,
) -> Cycle {
    // The first cycle runs fault-free and always gets its clients going, so every scenario
    // acknowledges synced and unsynced writes before its first crash; faults come after.
    // The cycles whose boots may damage data at rest are faulty more often: the damage comes
    // only with the last cycle's faults.
    let faulty = rng.gen_bool(if rest_after { 0.9 } else { 0.7 });
    let faults = if cycle > 0 && !palette.is_empty() && faulty {
        let rates = palette
            .iter()
            .map(|&kind| {
                let (lo, hi) = kind.rates();
                (kind, rng.gen_range(lo..hi))
            })
            .collect();
        Faults { rates }
    } else {
        Faults::default()
    };
    // At scale the crash comes late, so thousands of operations run first. Before data rots
    // at rest, the database is mostly closed cleanly and left: the crash comes long after.
    let at_rest_after_close = rest_after && rng.gen_bool(0.7);
    let point = if scale || at_rest_after_close {
        CrashPoint::Time
    } else {
        draw_point(rng, cycle, measuring, faults.any())
    };
    // Every file call costs at least a virtual millisecond, and a client op is a few of them:
    // this lands time crashes from early in the clients' run to after they are done. An aimed
    // crash gets room to find its point.
    let busy_ms = (ops_per_client as u64) * if scale { 3 } else { 8 };
    let deadline_ms = match point {
        // At scale the clients finish their ten thousand operations first.
        CrashPoint::Time if scale => 20 * busy_ms + rng.gen_range(0..=busy_ms),
        // Long enough for any stall the clients meet; once closed, waiting costs nothing.
        CrashPoint::Time if at_rest_after_close => 60_000,
        // Close comes after every client is done, however long stalls made them take.
        CrashPoint::InPhase { phase: Phase::Close, .. } => 500 + 4 * busy_ms,
        CrashPoint::Time if cycle > 0 && rng.gen_bool(0.15) => rng.gen_range(1..=12),
        CrashPoint::Time => rng.gen_range(30..=30 + busy_ms),
        _ => 60 + busy_ms + rng.gen_range(0..=busy_ms),
    };
    // A process with background panics, and a share of other faulty ones, lives past the
    // longest an operation may take (`process::OPERATION_MAX`, 60 s), so that a hang shows
    // before the crash. Waiting costs nothing: virtual time jumps to the next timer.
    let watched = faults.rate(FaultKind::Panic) > 0.0 || (faults.any() && rng.gen_bool(0.2));
    let deadline_ms = if watched { deadline_ms.max(65_000 + 2 * busy_ms) } else { deadline_ms };
    let close = matches!(point, CrashPoint::InPhase { phase: Phase::Close, .. })
        || at_rest_after_close
        || rng.gen_bool(0.2);
    let tables = if measuring {
        TableConfig::for_latency(rng)
    } else if scale {
        TableConfig::for_scale(rng)
    } else {
        TableConfig::draw(rng)
    };
    let memtable_bytes_max =
        if measuring || scale { 16 << 10 } else { *pick(rng, &[256, 512, 1024, 2048, 16 << 10]) };
    // Power loss more often: only it tears unsynced writes, which the WAL reader must tell
    // from corruption.
    let crash_kind = if rng.gen_bool(0.6) { CrashKind::PowerLoss } else { CrashKind::ProcessCrash };
    let faults_during_recovery = rng.gen_bool(0.3);
    Cycle {
        crash_kind,
        point,
        deadline_ms,
        close,
        faults,
        faults_during_recovery,
        memtable_bytes_max,
        tables,
        clients: Clients::default(),
    }
}

/// Where a cycle's crash is aimed: at a time, after a kind of file call, or inside a phase.
fn draw_point(rng: &mut ChaCha8Rng, cycle: usize, measuring: bool, faulty: bool) -> CrashPoint {
    let roll = rng.gen_range(0..100);
    if measuring || roll < 20 {
        // Of the crashes at a time, those of faulty cycles come soon after a failure, if any.
        if !measuring && faulty && roll < 10 {
            return CrashPoint::AfterFailure { calls: rng.gen_range(0..=6) };
        }
        return CrashPoint::Time;
    }
    if roll < 60 {
        // Renames are aimed at twice as often: a cycle makes only one or two.
        let kind = *pick(rng, &[CallKind::ALL.as_slice(), &[CallKind::Rename]].concat());
        return CrashPoint::AfterCall { kind, nth: rng.gen_range(1..=kind.typical()) };
    }
    // The first cycle never crashes inside its own recovery: it must get its clients going.
    // `close` is aimed at three times as often: only cycles that close can crash inside it.
    let phases: Vec<Phase> = Phase::ALL
        .into_iter()
        .chain([Phase::Close, Phase::Close])
        .filter(|&p| cycle > 0 || p != Phase::Recovery)
        .collect();
    let phase = *pick(rng, &phases);
    CrashPoint::InPhase { phase, nth: rng.gen_range(1..=typical_calls(phase)) }
}

pub(crate) fn pick<'a, T>(rng: &mut ChaCha8Rng, choices: &'a [T]) -> &'a T {
    &choices[rng.gen_range(0..choices.len())]
}
