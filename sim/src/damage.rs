//! Damage at rest: bits of synced data that rot, and sectors that become unreadable, applied to
//! the disk at a boot; and the record of which log bytes the engine can prove were synced.
//!
//! The engine must report damage it can detect (`Corruption` naming the file and offset, or the
//! I/O error of a bad sector) and never return wrong data or silently drop a synced write. One
//! place is exempt, because no log with a single copy of each record can tell rot there from a
//! write torn by the crash: the newest log's bytes that no durable later record attests. A
//! record written after a write W was acknowledged can carry the proof that everything up to W
//! was synced (JadeDB's records do, in their `synced_upto` field), so W's bytes are provably
//! synced once a write issued after W's acknowledgement lies whole in the durable image of the
//! same log. [`Attestations`] works that out from what the simulator sees (acknowledgements,
//! and where the written values are on disk, which it finds by their unique bytes), and damage
//! lands in the newest log only below it. Every other synced byte of every file kind (older
//! logs, tables, MANIFESTs, `CURRENT`) may be damaged.

use jadedb_fault::MemFs;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// How many of the latest acknowledged writes are remembered: enough to cover a log (a log
/// holds one memtable's worth of writes), few enough that working out a log's proof stays cheap.
const ACKED_KEPT: usize = 1_000;

/// How many bytes of a value find it on disk: values start with a number unique in the
/// scenario, so a short prefix is unique too.
const NEEDLE_BYTES: usize = 32;

/// What the simulator knows to work out each log's provably synced prefix, and which files it
/// has damaged already.
#[derive(Debug, Default)]
pub struct Attestations {
    /// The latest acknowledged writes that put a value, oldest first.
    acked: VecDeque<Acked>,
    /// Writes acknowledged so far: the index the next one gets.
    acks: u64,
    /// Logs a clean close sealed: the seal attests each whole.
    sealed: BTreeSet<PathBuf>,
    /// What each log's durable records attested when the last crash came: worked out then,
    /// while the disk still tells durable bytes from written ones (a crash image holds torn
    /// writes that look whole).
    at_crash: BTreeMap<PathBuf, u64>,
}

/// The first bytes of a value, which find it on disk, and its length.
#[derive(Clone, Debug)]
pub struct Needle {
    pub bytes: Vec<u8>,
    pub len: u64,
}

impl Needle {
    pub fn of(value: &[u8]) -> Needle {
        Needle { bytes: value[..value.len().min(NEEDLE_BYTES)].to_vec(), len: value.len() as u64 }
    }
}

/// One acknowledged write, as the simulator can find it on disk.
#[derive(Debug)]
struct Acked {
    /// Its place in acknowledgement order.
    index: u64,
    /// How many writes had been acknowledged when it was issued: those it can attest.
    acks_at_issue: u64,
    /// Whether it was acknowledged as synced: then its bytes, and every byte of the log
    /// before them, were durable when it was acknowledged.
    synced: bool,
    /// Its first value: where it lies in a log.
    first: Needle,
    /// Its last operation's value, if that is a put: its record ends there, so the record is
    /// whole on disk if everything up to that end is durable.
    last: Option<Needle>,
}

/// Taken when a write is issued: the writes acknowledged before it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Issued(u64);

impl Attestations {
    /// Taken when a write is issued.
    pub fn issued(&self) -> Issued {
        Issued(self.acks)
    }

    /// A write issued at `issued` was acknowledged (as `synced` or not): `first` is its first
    /// value and `last` its last operation's, if these are puts.
    pub fn acknowledged(
        &mut self,
        issued: Issued,
        synced: bool,
        first: Option<Needle>,
        last: Option<Needle>,
    ) {
        let index = self.acks;
        self.acks += 1;
        let Some(first) = first else { return };
        let acks_at_issue = issued.0;
        self.acked.push_back(Acked { index, acks_at_issue, synced, first, last });
        if self.acked.len() > ACKED_KEPT {
            self.acked.pop_front();
        }
    }

    /// A clean close sealed every log: the seal attests every record before it.
    pub fn sealed_all(&mut self, logs: impl IntoIterator<Item = PathBuf>) {
        self.sealed.extend(logs);
    }

    /// Works out, as a crash comes, what each log of `dir` that nothing attests yet has
    /// attested by then (see `at_crash`). A log's attestation is worked out once, at the first
    /// crash after it was written: only the process that created a log appends to it, and later
    /// crash images cannot tell torn records from whole ones.
    pub fn freeze(&mut self, disk: &MemFs, dir: &Path) {
        let Ok(files) = disk.files(dir) else { return };
        for f in files.iter().filter(|f| f.name.ends_with(".log")) {
            let log = dir.join(&f.name);
            if !self.at_crash.contains_key(&log) {
                let attested = self.attested(disk, dir, &log);
                self.at_crash.insert(log, attested);
            }
        }
    }

    /// How many bytes from the start of `log` (a file of `dir` on `disk`) a durable record
    /// attests as synced: a write issued after a synced write's acknowledgement whose record
    /// is durable whole (everything from the log's start to its end is durable).
    fn attested(&self, disk: &MemFs, dir: &Path, log: &Path) -> u64 {
        let Some(name) = log.file_name().and_then(|n| n.to_str()) else { return 0 };
        let sealed = self.sealed.contains(log);
        let in_log = |needle: &Needle| {
            let found = disk.find(dir, name, &needle.bytes, needle.len).ok().flatten();
            found.filter(|found| found.path == log)
        };
        // For each synced write in this log, the end of its first value (its record ends at or
        // after it): synced when it was acknowledged. For each write whose whole record is
        // durable, the acknowledgements before it was issued: the synced ends it can attest.
        let mut ends = Vec::new();
        let mut attesters = Vec::new();
        for a in &self.acked {
            let Some(found) = in_log(&a.first) else { continue };
            if a.synced || sealed {
                ends.push((a.index, found.offset + a.first.len));
            }
            let whole = a.last.as_ref().and_then(|last| in_log(last).filter(|f| f.durable));
            if whole.is_some() {
                attesters.push(a.acks_at_issue);
            }
        }
        if sealed {
            // The seal follows every record: it attests every write in the log (but not itself).
            return ends.iter().map(|(_, e)| *e).max().unwrap_or(0);
        }
        attesters
            .iter()
            .filter_map(|&before| ends.iter().filter(|(i, _)| *i < before).map(|(_, e)| *e).max())
            .max()
            .unwrap_or(0)
    }
}

/// Where damage lands, by kind of file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    /// The newest WAL, in the bytes a durable later record attests: where telling rot from a
    /// torn tail matters most, since synced writes live there.
    NewestWal,
    /// An older WAL, wholly synced before a newer one was created.
    OlderWal,
    Manifest,
    Table,
    Current,
    /// A blob file (key-value separation): a damaged record must read as corruption naming
    /// it, never as another value.
    Blob,
}

impl FileKind {
    /// How often damage lands in this kind of file, relative to the others. The logs are hit
    /// most: their readers must tell damage from a torn tail, where a table or `CURRENT` only
    /// has checksums to check.
    fn weight(self) -> u32 {
        match self {
            FileKind::NewestWal => 40,
            FileKind::Manifest => 4,
            FileKind::Table => 3,
            FileKind::OlderWal => 2,
            FileKind::Current => 1,
            FileKind::Blob => 3,
        }
    }
}

/// What to do to the chosen byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Flip one bit of it.
    Rot,
    /// Make its sector unreadable.
    BadSector,
}

/// Damage done: where, and how to undo it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damaged {
    pub path: PathBuf,
    pub offset: u64,
    pub kind: FileKind,
    pub what: Damage,
    /// The bits flipped, for rot.
    pub mask: u8,
    /// The damaged file's inode, its byte as damaged and a hash of its durable bytes up to
    /// that one (`MemFs::stored_byte`): healing touches only that.
    pub stored: (u64, Option<u8>, u64),
}

impl Damaged {
    /// Undoes the damage, as a repair from a backup would. The file may be gone by now, or
    /// replaced under its name (a `CURRENT` written anew), or its byte rewritten: then there is
    /// nothing to undo, and flipping the bit would damage data that is sound.
    /// Returns whether there was damage to undo.
    pub fn heal(&self, disk: &MemFs) -> bool {
        if disk.stored_byte(&self.path, self.offset).ok() != Some(self.stored) {
            return false;
        }
        match self.what {
            Damage::Rot => disk.rot_at_rest(&self.path, self.offset, self.mask),
            Damage::BadSector => disk.heal_sector(&self.path, self.offset),
        }
        .unwrap_or(false)
    }

    /// Whether an error the engine gave names the damaged file: reporting damage means saying
    /// where it is.
    pub fn named_by(&self, e: &jadedb::Error) -> bool {
        match e {
            jadedb::Error::Corruption { file, .. } => *file == self.path,
            jadedb::Error::Io { path, .. } => *path == self.path,
            _ => false,
        }
    }
}

/// Damages one synced byte of a file of `dir` (a kind of file drawn first, by
/// [`FileKind::weight`]); returns where, or `None` if no byte could be damaged. With `defer`,
/// damages nothing unless the newest WAL has attested bytes to damage, the place that matters
/// most, so that a later boot may find it.
pub fn damage(
    disk: &MemFs,
    dir: &Path,
    attest: &Attestations,
    what: Damage,
    defer: bool,
    rng: &mut ChaCha8Rng,
) -> Option<Damaged> {
    let files = disk.files(dir).ok()?;
    // A log is older only if a newer one's name survives a power loss: otherwise a power loss
    // may make it the newest again, where a bad last record reads as a torn tail.
    let newest_durable =
        files.iter().filter(|f| f.name.ends_with(".log") && f.durable_name).map(|f| &f.name).max();
    let mut targets: BTreeMap<FileKind, Vec<(PathBuf, u64)>> = BTreeMap::new();
    for f in &files {
        let path = dir.join(&f.name);
        let older = newest_durable.is_some_and(|newest| f.name < *newest);
        let (kind, limit) = if f.name.ends_with(".log") && !older {
            let attested = attest.at_crash.get(&path).copied().unwrap_or(0);
            (FileKind::NewestWal, f.durable_len.min(attested))
        } else if f.name.ends_with(".log") {
            (FileKind::OlderWal, f.durable_len)
        } else if f.name.ends_with(".sst") {
            (FileKind::Table, f.durable_len)
        } else if f.name.starts_with("MANIFEST-") {
            (FileKind::Manifest, f.durable_len)
        } else if f.name == "CURRENT" {
            (FileKind::Current, f.durable_len)
        } else if f.name.ends_with(".blob") {
            (FileKind::Blob, f.durable_len)
        } else {
            continue;
        };
        if limit > 0 {
            targets.entry(kind).or_default().push((path, limit));
        }
    }
    if defer && !targets.contains_key(&FileKind::NewestWal) {
        return None;
    }
    let total: u32 = targets.keys().map(|k| k.weight()).sum();
    for _ in 0..8 {
        let mut roll = rng.gen_range(0..total.max(1));
        let (&kind, files) = targets.iter().find(|(k, _)| {
            let hit = roll < k.weight();
            roll = roll.saturating_sub(k.weight());
            hit
        })?;
        let (path, limit) = &files[rng.gen_range(0..files.len())];
        let offset = rng.gen_range(0..*limit);
        let mask = 1 << rng.gen_range(0..8);
        let done = match what {
            Damage::Rot => disk.rot_at_rest(path, offset, mask),
            Damage::BadSector => disk.break_sector(path, offset),
        };
        // A byte in a block that unsynced data shares (after a process crash) is not at rest.
        if done.unwrap_or(false) {
            let stored = disk.stored_byte(path, offset).ok()?;
            return Some(Damaged { path: path.clone(), offset, kind, what, mask, stored });
        }
    }
    None
}
