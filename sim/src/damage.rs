//! Damage at rest: bits of synced data that rot, and sectors that become unreadable, applied to
//! the disk at a boot; and the record of which log bytes the engine can prove were synced.
//!
//! The engine must report damage it can detect (`Corruption` naming the file and offset, or the
//! I/O error of a bad sector) and never return wrong data or silently drop a synced write. One
//! place is exempt, because no log with a single copy of each record can tell rot there from a
//! write torn by the crash: the newest log's bytes that no durable later write attests. A
//! record written after a synced write was acknowledged can carry the proof that everything
//! before it was synced (JadeDB's records do, in their `synced_upto` field), so the bytes below
//! the end of a synced write W are provable once another synced write, issued after W's
//! acknowledgement, is itself acknowledged in the same log. [`Attestations`] tracks exactly
//! that from what the simulator sees (acknowledgements and where the bytes are on disk), and
//! damage lands in the newest log only below it. Every other synced byte of every file kind
//! (older logs, tables, MANIFESTs, `CURRENT`) may be damaged.

use jadedb_fault::MemFs;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the simulator knows about each log's provably synced prefix.
#[derive(Debug, Default)]
pub struct Attestations {
    logs: BTreeMap<PathBuf, LogBytes>,
}

#[derive(Clone, Copy, Debug, Default)]
struct LogBytes {
    /// The farthest end of a synced write acknowledged in this log.
    synced_end: u64,
    /// Bytes below this are attested by a durable record written after they were synced.
    attested: u64,
}

/// The synced ends of every log when a synced write was issued: what a record written for it
/// may attest.
#[derive(Clone, Debug, Default)]
pub struct IssueSnapshot(BTreeMap<PathBuf, u64>);

impl Attestations {
    /// Taken when a synced write is issued.
    pub fn snapshot(&self) -> IssueSnapshot {
        IssueSnapshot(self.logs.iter().map(|(p, b)| (p.clone(), b.synced_end)).collect())
    }

    /// A synced write issued at `snapshot` was acknowledged, its bytes ending at `end` of `log`.
    pub fn acknowledged(&mut self, snapshot: &IssueSnapshot, log: &Path, end: u64) {
        let bytes = self.logs.entry(log.to_path_buf()).or_default();
        bytes.attested = bytes.attested.max(snapshot.0.get(log).copied().unwrap_or(0));
        bytes.synced_end = bytes.synced_end.max(end);
    }

    /// A clean close sealed every log: each is attested whole.
    pub fn sealed_all(&mut self, logs: impl IntoIterator<Item = PathBuf>) {
        for log in logs {
            self.logs.entry(log).or_default().attested = u64::MAX;
        }
    }

    fn attested(&self, log: &Path) -> u64 {
        self.logs.get(log).map_or(0, |b| b.attested)
    }
}

/// The kind of file a damaged byte belongs to, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Wal,
    Table,
    Manifest,
    Current,
}

impl FileKind {
    fn of(name: &str) -> Option<FileKind> {
        if name.ends_with(".log") {
            Some(FileKind::Wal)
        } else if name.ends_with(".sst") {
            Some(FileKind::Table)
        } else if name.starts_with("MANIFEST-") {
            Some(FileKind::Manifest)
        } else if name == "CURRENT" {
            Some(FileKind::Current)
        } else {
            None
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

/// Damages one synced byte of a file of `dir` (a file kind chosen first, so that rarer kinds
/// such as `CURRENT` are hit as often as tables); returns where, or `None` if no byte could be
/// damaged.
pub fn damage(
    disk: &MemFs,
    dir: &Path,
    attest: &Attestations,
    what: Damage,
    rng: &mut ChaCha8Rng,
) -> Option<(PathBuf, u64, FileKind)> {
    let files = disk.files(dir).ok()?;
    let newest_log = files.iter().filter(|f| f.name.ends_with(".log")).map(|f| &f.name).max();
    let mut targets: BTreeMap<&'static str, Vec<(PathBuf, u64, FileKind)>> = BTreeMap::new();
    for f in &files {
        let Some(kind) = FileKind::of(&f.name) else { continue };
        let path = dir.join(&f.name);
        let mut limit = f.durable_len;
        if Some(&f.name) == newest_log {
            limit = limit.min(attest.attested(&path));
        }
        if limit > 0 {
            targets.entry(kind_key(kind)).or_default().push((path, limit, kind));
        }
    }
    for _ in 0..8 {
        let kinds: Vec<_> = targets.values().collect();
        if kinds.is_empty() {
            return None;
        }
        let files = kinds[rng.gen_range(0..kinds.len())];
        let (path, limit, kind) = &files[rng.gen_range(0..files.len())];
        let offset = rng.gen_range(0..*limit);
        let done = match what {
            Damage::Rot => disk.rot_at_rest(path, offset, 1 << rng.gen_range(0..8)),
            Damage::BadSector => disk.break_sector(path, offset),
        };
        // A byte in a block that unsynced data shares (after a process crash) is not at rest.
        if done.unwrap_or(false) {
            return Some((path.clone(), offset, *kind));
        }
    }
    None
}

fn kind_key(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Wal => "wal",
        FileKind::Table => "table",
        FileKind::Manifest => "manifest",
        FileKind::Current => "current",
    }
}
