//! Options for opening a database and for each write.
//!
//! Each setter documents its default and the trade-off it controls.

use std::time::Duration;

/// How a database is opened and tuned. Build with `Options::default()` and the setters.
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) create_if_missing: bool,
    pub(crate) error_if_exists: bool,
    pub(crate) memtable_bytes_max: usize,
    pub(crate) commit_group_bytes_max: usize,
    pub(crate) commit_window: Duration,
    pub(crate) adaptive_commit_window: bool,
    pub(crate) lone_writer_syncs: bool,
    pub(crate) wal_preallocate_bytes: u64,
    pub(crate) wal_bytes_per_sync: u64,
    pub(crate) wal_buffer_bytes: usize,
    pub(crate) memtables_max: usize,
    pub(crate) table_block_bytes: usize,
    pub(crate) bloom_bits_per_key: usize,
    pub(crate) min_blob_size: Option<usize>,
    pub(crate) block_cache_bytes: usize,
    pub(crate) memory_budget: Option<u64>,
    pub(crate) open_tables_max: usize,
    pub(crate) manifest_bytes_max: u64,
    pub(crate) l0_compaction_files: usize,
    pub(crate) l0_slowdown_files: usize,
    pub(crate) l0_stop_files: usize,
    pub(crate) level1_bytes_max: u64,
    pub(crate) target_file_bytes: u64,
    pub(crate) max_background_flushes: usize,
    pub(crate) max_background_compactions: usize,
    pub(crate) compaction_bytes_per_sec: u64,
    pub(crate) alert_thresholds: crate::metrics::AlertThresholds,
    #[cfg(feature = "planted-bugs")]
    pub(crate) planted_bug: Option<PlantedBug>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create_if_missing: true,
            error_if_exists: false,
            memtable_bytes_max: 64 << 20,
            commit_group_bytes_max: 1 << 20,
            commit_window: Duration::ZERO,
            adaptive_commit_window: true,
            lone_writer_syncs: true,
            wal_preallocate_bytes: 1 << 20,
            wal_bytes_per_sync: 1 << 20,
            wal_buffer_bytes: 32 << 10,
            memtables_max: 2,
            table_block_bytes: 4096,
            bloom_bits_per_key: 10,
            min_blob_size: None,
            block_cache_bytes: 8 << 20,
            memory_budget: None,
            open_tables_max: 1000,
            manifest_bytes_max: 64 << 20,
            l0_compaction_files: 4,
            l0_slowdown_files: 20,
            l0_stop_files: 36,
            level1_bytes_max: 64 << 20,
            target_file_bytes: 8 << 20,
            max_background_flushes: 1,
            max_background_compactions: 1,
            compaction_bytes_per_sec: 0,
            alert_thresholds: crate::metrics::AlertThresholds::default(),
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}

impl Options {
    /// Key-value separation: values of at least `bytes` bytes are moved out of the tables into
    /// blob files when their memtable is flushed, and the tables keep a pointer of about 12
    /// bytes in their place, so that compactions rewrite keys and pointers instead of the
    /// values (RocksDB's `enable_blob_files` with `min_blob_size`). Reads of such a value take
    /// one more file read unless the block cache holds it. Default `None`: every value stays in
    /// the tables. Blob files written while it was on stay readable when it is turned off.
    pub fn min_blob_size(mut self, bytes: Option<usize>) -> Self {
        self.min_blob_size = bytes.map(|b| b.max(1));
        self
    }

    /// Create the database if the directory holds none. Default `true`.
    pub fn create_if_missing(mut self, yes: bool) -> Self {
        self.create_if_missing = yes;
        self
    }

    /// Fail to open if a database already exists. Default `false`.
    pub fn error_if_exists(mut self, yes: bool) -> Self {
        self.error_if_exists = yes;
        self
    }

    /// Size at which the active memtable is retired and a new one (with a new WAL) started.
    /// Default 64 MiB. Larger means fewer, larger flushes and more memory and replay time.
    pub fn memtable_bytes_max(mut self, bytes: usize) -> Self {
        self.memtable_bytes_max = bytes.max(1);
        self
    }

    /// Most bytes of batches one commit group writes to the WAL in one append. Default 1 MiB.
    /// Larger groups amortize a write and an fsync over more writers but make each wait longer.
    pub fn commit_group_bytes_max(mut self, bytes: usize) -> Self {
        self.commit_group_bytes_max = bytes.max(1);
        self
    }

    /// How long a commit leader waits for more writers to join its group before writing.
    /// Default zero: groups form naturally while the previous group's I/O is in progress. A
    /// small window (tens of microseconds) can raise throughput of many small synced writers at
    /// the cost of that much latency on every write.
    pub fn commit_window(mut self, window: Duration) -> Self {
        self.commit_window = window;
        self
    }

    /// Whether the sync task may hold an fsync back, briefly, for synced writers it expects to
    /// join it (default on). Once an fsync returns, its writers take a moment to come back
    /// with their next writes; an fsync started at once would cover only those already
    /// written, and the others would wait for all of the one after. With the window the task
    /// waits until as many synced writers are waiting as the last fsync served and found
    /// waiting after it, or for half the last fsync's duration (at most 1 ms), whichever comes
    /// first. It turns itself on only when two or more synced writers ran at once, so a single
    /// writer never waits. `Metrics::commit_window_waits` counts the waits.
    pub fn adaptive_commit_window(mut self, yes: bool) -> Self {
        self.adaptive_commit_window = yes;
        self
    }

    /// Whether a synced write that is the only one waiting for an fsync runs that fsync on its
    /// own thread when the sync task is idle (default on), as a RocksDB write group's leader
    /// does. It saves the two thread wake-ups of a hand-off to the sync task and back, about a
    /// tenth of a synced put behind a fast fsync. With more synced writers about, the sync task
    /// runs every fsync (and may batch them). Off, every fsync is the sync task's.
    pub fn lone_writer_syncs(mut self, yes: bool) -> Self {
        self.lone_writer_syncs = yes;
        self
    }

    /// How far ahead of the last record the WAL is extended with zeros when it runs out of
    /// room, once a synced write has come to the log. Default 1 MiB. An fsync that must also
    /// make a larger file size durable journals metadata and costs more; with the space written
    /// ahead, most fsyncs write data only. The price is every byte of the log written twice,
    /// and a log that ends in zeros after a crash (cut back at the next open), so a log that
    /// only takes unsynced writes (synced in the background and at rotation, where no writer
    /// waits on a single fsync) is not preallocated. Zero turns preallocation off.
    pub fn wal_preallocate_bytes(mut self, bytes: u64) -> Self {
        self.wal_preallocate_bytes = bytes;
        self
    }

    /// How many bytes written to the WAL without an fsync make the sync task sync it in the
    /// background (RocksDB's `wal_bytes_per_sync`). Default 1 MiB. Rotating to a new WAL must
    /// first make the old one wholly durable: the sync task does that while writers go on into
    /// the new log in memory, but a synced write that comes meanwhile waits for that fsync, as
    /// do unsynced ones once 4 MiB wait. Without background syncs it writes a whole memtable's
    /// worth of log (tens of milliseconds for 64 MiB), with them at most this much. The price
    /// is an fsync per this many bytes, off the writers' path. Unsynced writes are no more
    /// durable for it than before: a crash may still lose any of them. Zero turns it off.
    pub fn wal_bytes_per_sync(mut self, bytes: u64) -> Self {
        self.wal_bytes_per_sync = bytes;
        self
    }

    /// How many bytes of WAL records written without `sync` may wait in memory before they are
    /// written to the log file with one call. Default 32 KiB. A write that asks for no fsync
    /// then costs no system call most of the time (Pebble's log writer and fjall's journal
    /// buffer likewise). The records reach the file when the buffer fills, and before any
    /// fsync of the log: a synced write, `sync_wal`, a background sync (`wal_bytes_per_sync`),
    /// a memtable rotation or `flush`, `close`. Until then a process crash loses them, as a
    /// power loss may lose any write not yet synced; what recovery finds is still a prefix of
    /// the writes. After a memtable rotation, while the old log's last fsync runs, the new
    /// log's records (at most 4 MiB) also wait in memory, for its file. Zero writes every
    /// group to the file at once (RocksDB's default), after a rotation too, so that unsynced
    /// writes survive a process crash (not a power loss) as soon as they are acknowledged.
    pub fn wal_buffer_bytes(mut self, bytes: usize) -> Self {
        self.wal_buffer_bytes = bytes;
        self
    }

    /// Most memtables held at once, the active one included. Default 2. When the active one fills
    /// and this many are already held, writes stall until a flush frees one (counted in
    /// `Metrics::write_stalls`). More absorbs longer bursts at the cost of memory. At least 2.
    pub fn memtables_max(mut self, n: usize) -> Self {
        self.memtables_max = n.max(2);
        self
    }

    /// Target size of a table's data block before it is cut. Default 4096. Smaller blocks read
    /// fewer bytes per point lookup; larger ones compress key prefixes better and need a
    /// smaller index. At least 1.
    pub fn table_block_bytes(mut self, bytes: usize) -> Self {
        self.table_block_bytes = bytes.max(1);
        self
    }

    /// Bloom filter bits per key in each table. Default 10 (about 1% false positives). Zero
    /// builds no filters, so every lookup of an absent key reads a data block per table.
    pub fn bloom_bits_per_key(mut self, bits: usize) -> Self {
        self.bloom_bits_per_key = bits;
        self
    }

    /// Capacity of the block cache shared by all tables. Default 8 MiB. Zero caches nothing.
    pub fn block_cache_bytes(mut self, bytes: usize) -> Self {
        self.block_cache_bytes = bytes;
        self
    }

    /// One bound on the memory the engine holds: memtables (each entry charged its key, value
    /// and skiplist node), the block cache, open tables' index and filter blocks, and the data
    /// blocks iterators hold outside the cache (compaction inputs). Default none: each is then
    /// bounded by its own option alone.
    ///
    /// With a budget the memtables get at most half of it (each memtable is cut at `budget /
    /// (2 * memtables_max)` bytes when `memtable_bytes_max` is larger), open tables what the
    /// memtables and iterators leave (the least recently used are closed beyond it), and the
    /// block cache whatever is left at each moment, shrinking as soon as the others grow;
    /// `block_cache_bytes` is then ignored. What readers keep alive on their own (a value
    /// returned by `get`, the block under a live iterator) stays outside the bound. The memory
    /// alert compares the memory held with the budget.
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// Most table files held open at once. Default 1000. At least 1.
    pub fn open_tables_max(mut self, n: usize) -> Self {
        self.open_tables_max = n.max(1);
        self
    }

    /// Size past which the MANIFEST is rewritten as a fresh snapshot. Default 64 MiB. A larger
    /// MANIFEST takes longer to replay at open.
    pub fn manifest_bytes_max(mut self, bytes: u64) -> Self {
        self.manifest_bytes_max = bytes;
        self
    }

    /// Level-0 tables that trigger a compaction into level 1. Default 4. Fewer keeps point reads
    /// cheaper (each level-0 table may be consulted) at the cost of more compaction work.
    pub fn l0_compaction_files(mut self, n: usize) -> Self {
        self.l0_compaction_files = n.max(1);
        self
    }

    /// Level-0 tables at which each write group is delayed by a millisecond, and at which
    /// writes stop until compaction catches up (both counted in `Metrics::write_stalls`).
    /// Defaults 20 and 36. They bound how far flushes may run ahead of compaction.
    pub fn l0_stall_files(mut self, slowdown: usize, stop: usize) -> Self {
        self.l0_slowdown_files = slowdown.max(1);
        self.l0_stop_files = stop.max(self.l0_slowdown_files);
        self
    }

    /// Target bytes of level 1; each deeper level's target is 10 times the one above. Default
    /// 64 MiB. A level past its target is compacted into the next.
    pub fn level1_bytes_max(mut self, bytes: u64) -> Self {
        self.level1_bytes_max = bytes.max(1);
        self
    }

    /// Size at which a compaction cuts its output table. Default 8 MiB. Smaller tables make
    /// each compaction step smaller and the MANIFEST and table cache busier.
    pub fn target_file_bytes(mut self, bytes: u64) -> Self {
        self.target_file_bytes = bytes.max(1);
        self
    }

    /// Flushes that may run at once. Default 1. At least 1. Tables of concurrent flushes are
    /// installed oldest memtable first, whichever finishes writing first.
    pub fn max_background_flushes(mut self, n: usize) -> Self {
        self.max_background_flushes = n.max(1);
        self
    }

    /// Compactions that may run at once, on inputs that do not overlap. Default 1. At least 1.
    /// More lets deeper levels be compacted while level 0 is, at the cost of CPU and disk
    /// bandwidth taken from writers.
    pub fn max_background_compactions(mut self, n: usize) -> Self {
        self.max_background_compactions = n.max(1);
        self
    }

    /// Bytes per second all compactions together may write, measured on the runtime's clock;
    /// 0 (the default) for no limit. A limit smooths the disk bandwidth compactions take from
    /// writers and readers; too low a limit lets level 0 fill and writes stall.
    pub fn compaction_bytes_per_sec(mut self, bytes: u64) -> Self {
        self.compaction_bytes_per_sec = bytes;
        self
    }

    /// When the engine raises an alert (a `tracing` warning, and `Metrics::alerts`): write P99
    /// over 50 ms, memory over 80% of what these options size it for, the disk over 90% full,
    /// more than 10,000 background jobs. See [`crate::AlertThresholds`].
    pub fn alert_thresholds(mut self, thresholds: crate::metrics::AlertThresholds) -> Self {
        self.alert_thresholds = thresholds;
        self
    }

    /// The memory the options size the engine for: what the memory alert compares the memory
    /// held with. The budget if there is one, else the memtables and the block cache.
    pub(crate) fn memory_sized_for(&self) -> u64 {
        if let Some(budget) = self.memory_budget {
            return budget;
        }
        let memtables = self.memtables_max.saturating_mul(self.memtable_bytes_max);
        memtables.saturating_add(self.block_cache_bytes) as u64
    }

    /// The options as the engine runs them: under a memory budget, memtables cut small enough
    /// that all of them together hold at most half of it.
    pub(crate) fn resolved(mut self) -> Self {
        if let Some(budget) = self.memory_budget {
            let share = budget / 2 / self.memtables_max as u64;
            let share = usize::try_from(share).unwrap_or(usize::MAX).max(1);
            self.memtable_bytes_max = self.memtable_bytes_max.min(share);
        }
        self
    }

    pub(crate) fn table_options(&self) -> crate::sstable::TableOptions {
        crate::sstable::TableOptions {
            block_bytes: self.table_block_bytes,
            bloom_bits_per_key: self.bloom_bits_per_key,
            ..crate::sstable::TableOptions::default()
        }
    }

    /// Plants a known bug, for proving that the simulator finds it.
    #[cfg(feature = "planted-bugs")]
    #[doc(hidden)]
    pub fn planted_bug(mut self, bug: Option<PlantedBug>) -> Self {
        self.planted_bug = bug;
        self
    }

    pub(crate) fn has_bug(&self, _bug: PlantedBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.planted_bug == Some(_bug)
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            false
        }
    }
}

/// Known bugs that can be planted (only with the `planted-bugs` feature) to prove the
/// simulator catches them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum PlantedBug {
    /// The commit leader acknowledges synced writes before its fsync returns.
    AckBeforeSync,
    /// The WAL reader accepts a record whose checksum does not match (a torn record).
    AcceptTornWalRecord,
    /// A flush deletes the memtable's WAL before the MANIFEST edit naming its table is durable.
    DeleteWalBeforeManifest,
    /// Compaction ignores live snapshots, dropping every version but the newest of each key.
    CompactionIgnoresSnapshots,
    /// A failed WAL fsync is not final: the log is not failed, and the caller simply runs
    /// another fsync, which the kernel reports as a success for data it already dropped
    /// (`wal::writer`, `WalFile::run_one`).
    RetryFailedFsync,
    /// A WAL fsync marks the bytes it covers durable before it returns, so a group may be
    /// acknowledged while its fsync is still running, or after it failed (`WalFile::run_one`).
    DurableMarkBeforeSync,
    /// The WAL and MANIFEST reader takes every bad record for a torn tail, keeping the records
    /// before it and dropping the rest, even before data a later record attests synced or in
    /// an older log, where it is corruption (`wal::reader::parse_frames`).
    BadRecordAsTornTail,
    /// Open takes the next file number from the MANIFEST alone, ignoring higher-numbered files
    /// on disk (a table a crashed flush left, say), so a number can be used twice (`recovery`).
    NextFileNumberFromManifest,
    /// A panic in a background job (a flush, a compaction, a WAL fsync) is not caught: its task
    /// dies silently, leaving stalled writers and `close` waiting for it (`crate::unwind`).
    BackgroundPanicNotCaught,
    /// Concurrent flushes install their tables in the order they finish writing them, not
    /// oldest memtable first (`flush::run`): a newer memtable's edit names its
    /// successor's WAL as the oldest needed while an older memtable is still only in its WAL.
    FlushInstallOutOfOrder,
    /// A new WAL's first fsync does not sync its directory first, so a crash may lose the log
    /// whole, with the synced writes it holds (`wal::writer`, `WalFile::run_one`).
    NewWalNameNotSynced,
    /// Retiring a WAL (rotation, close) drops the records still in its write buffer instead of
    /// writing them, so a newer log holds writes that follow ones lost: a hole after a crash
    /// (`wal::writer`, `WalWriter::finish`).
    WalBufferDroppedAtRotation,
    /// A rotation's new WAL gets its file (and takes records) before the log it replaced is
    /// wholly synced, so a crash can leave an older log torn with a newer one after it, which
    /// recovery reads as corruption (`commit`, `settle`).
    NewWalBeforeOldSynced,
    /// A compaction counts the blob records of the versions it keeps only for snapshots (every
    /// version of a key below its newest) as garbage, so a blob file can leave the version, and
    /// the disk, while a snapshot still reads values in it (`compaction::merge`).
    BlobGarbageIgnoresSnapshots,
    /// A blob file is not synced before the table pointing into it is recorded, so a power loss
    /// can take values whose WAL is already gone (`blob`, `BlobWriter::finish`).
    BlobNotSynced,
    /// A compaction counts the blob records its kept entries point to as garbage too, so a blob
    /// file leaves the version (and the disk) while tables still point into it: the stand-in
    /// for garbage collection that drops a live value (`compaction::merge`).
    BlobGarbageCountsLive,
}

/// Per-write options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Wait until the write is durable (the WAL is fsynced) before returning. Default `false`:
    /// the write survives a process crash only once a later synced write or `close` has synced
    /// the WAL.
    pub sync: bool,
}

impl WriteOptions {
    /// Options for a write that is durable when it returns.
    pub fn synced() -> Self {
        WriteOptions { sync: true }
    }
}
