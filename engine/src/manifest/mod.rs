//! The MANIFEST: a log of version edits that says which table files make up the database, and
//! `CURRENT`, which names the live MANIFEST.
//!
//! A MANIFEST uses the WAL's record framing (`crate::wal`), with version edits as payloads, so
//! recovery tells a torn tail from corruption the same way. Every edit is followed by a sync, a
//! seal (an empty record attesting the edit durable) and another sync, and only then does the
//! engine act on it (delete a WAL, delete compaction inputs): a later bit flip in the edit that
//! allowed a deletion is then reported as corruption, never silently dropped as a torn tail.
//! The version an edit gives is installed between the two syncs: that deletes nothing, and a
//! flush's memtable makes room for writers one fsync sooner.
//!
//! A new MANIFEST starts with one edit describing the whole current version (a snapshot).
//! `CURRENT` is switched by writing a temporary file, syncing it, renaming it over `CURRENT` and
//! syncing the directory; the old MANIFEST is removed only after that, so a crash at any point
//! leaves a `CURRENT` that names a whole MANIFEST.

mod edit;

pub(crate) use crate::version::VersionEdit;

use crate::error::{Error, Result};
use crate::metrics::SyncMeter;
use crate::runtime::{FileSystem, Phase, PhaseGuard, Runtime};
use crate::version::Version;
use crate::wal::{self, WalWriter};
use std::path::Path;

/// The name of the file that names the live MANIFEST.
pub(crate) const CURRENT: &str = "CURRENT";
/// The temporary name `CURRENT` is written under before the rename.
pub(crate) const CURRENT_TEMP: &str = "CURRENT.dbtmp";

pub(crate) fn file_name(number: u64) -> String {
    format!("MANIFEST-{number:06}")
}

pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    wal::parse_numbered(name, "MANIFEST-", "")
}

/// The live MANIFEST, open for appending.
#[derive(Debug)]
pub(crate) struct Manifest {
    log: WalWriter,
    number: u64,
    buf: Vec<u8>,
    /// The newest log number and last sequence number any edit recorded, for snapshots.
    log_number: u64,
    last_seq: u64,
}

impl Manifest {
    /// Creates MANIFEST `number` holding `snapshot` (an edit describing the whole version and
    /// its bookkeeping) and makes `CURRENT` name it.
    pub(crate) async fn create(
        rt: &dyn Runtime,
        dir: &Path,
        number: u64,
        snapshot: &VersionEdit,
        syncs: SyncMeter<'_>,
    ) -> Result<Manifest> {
        let path = dir.join(file_name(number));
        let file = rt.fs().create(&path).await.map_err(|e| Error::io("creating", &path, e))?;
        let log = WalWriter::new(file, path, number, 0, 0);
        let mut manifest = Manifest { log, number, buf: Vec::new(), log_number: 0, last_seq: 0 };
        manifest.append(snapshot, syncs).await?;
        let _phase = PhaseGuard::enter(rt, Phase::CurrentReplacement);
        set_current(rt.fs(), dir, number).await?;
        Ok(manifest)
    }

    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    /// Bytes written so far; the engine starts a new MANIFEST once this passes a limit.
    pub(crate) fn bytes(&self) -> u64 {
        self.log.offset()
    }

    /// An edit that describes `version` and the bookkeeping whole: what a new MANIFEST starts
    /// with.
    pub(crate) fn snapshot_edit(&self, version: &Version, next_file_number: u64) -> VersionEdit {
        let counters = (self.log_number, next_file_number, self.last_seq);
        VersionEdit::snapshot(version, counters, wal::Format::WRITTEN.number())
    }

    /// Appends `edit` and makes it durable and attested; see the module header.
    pub(crate) async fn append(&mut self, edit: &VersionEdit, syncs: SyncMeter<'_>) -> Result<()> {
        self.append_unsealed(edit, syncs).await?;
        self.seal(syncs).await
    }

    /// Appends `edit` and makes it durable, not yet attested: the version it gives may be
    /// installed, but nothing may be deleted on its word until [`Manifest::seal`] returns.
    pub(crate) async fn append_unsealed(
        &mut self,
        edit: &VersionEdit,
        syncs: SyncMeter<'_>,
    ) -> Result<()> {
        self.log_number = self.log_number.max(edit.log_number.unwrap_or(0));
        self.last_seq = self.last_seq.max(edit.last_seq.unwrap_or(0));
        let mut payload = Vec::new();
        edit.encode(&mut payload);
        self.buf.clear();
        let synced = self.log.file().synced_upto();
        wal::encode_v1_record(&mut self.buf, self.number, synced, &payload);
        self.log.append(&self.buf, true).await?;
        self.log.file().sync_to(self.log.offset(), syncs).await
    }

    /// Attests, durably, every edit appended so far.
    pub(crate) async fn seal(&mut self, syncs: SyncMeter<'_>) -> Result<()> {
        self.buf.clear();
        wal::encode_v1_seal_record(&mut self.buf, self.number, self.log.file().synced_upto());
        self.log.append(&self.buf, true).await?;
        self.log.file().sync_to(self.log.offset(), syncs).await
    }
}

/// Points `CURRENT` at MANIFEST `number`, atomically and durably.
///
/// The directory is synced before the rename as well as after: on a file system without
/// ordered metadata the rename could otherwise become durable while the new MANIFEST's own
/// name does not, and `CURRENT` would name a file that is gone after a power loss.
async fn set_current(fs: &dyn FileSystem, dir: &Path, number: u64) -> Result<()> {
    let temp = dir.join(CURRENT_TEMP);
    let current = dir.join(CURRENT);
    let contents = current_contents(number);
    let file = fs.create(&temp).await.map_err(|e| Error::io("creating", &temp, e))?;
    file.write_at(0, contents.as_bytes()).await.map_err(|e| Error::io("writing", &temp, e))?;
    file.sync_data().await.map_err(|e| Error::io("syncing", &temp, e))?;
    fs.sync_dir(dir).await.map_err(|e| Error::io("syncing directory", dir, e))?;
    fs.rename(&temp, &current).await.map_err(|e| Error::io("renaming", &temp, e))?;
    fs.sync_dir(dir).await.map_err(|e| Error::io("syncing directory", dir, e))
}

/// The number of the MANIFEST that `CURRENT` names, or `None` if there is no `CURRENT`.
/// What `CURRENT` holds when it names MANIFEST `number`: the name on one line, and on the
/// next the crc32 of the first line in hex. The checksum matters more here than anywhere: a
/// damaged `CURRENT` that still named an older MANIFEST would make every newer table look
/// unreferenced, and open would delete them.
fn current_contents(number: u64) -> String {
    let name = file_name(number);
    format!("{name}\n{:08x}\n", crc32fast::hash(name.as_bytes()))
}

/// The MANIFEST number `data` (the bytes of `CURRENT`) names, if it is well formed.
fn parse_current(data: &[u8]) -> Option<u64> {
    let number = parse_file_name(std::str::from_utf8(data).ok()?.lines().next()?)?;
    (current_contents(number).as_bytes() == data).then_some(number)
}

/// The number of the MANIFEST that `CURRENT` names, or `None` if there is no `CURRENT`. A
/// damaged `CURRENT` is corruption; if a second read disagrees, an I/O error (a transient read
/// fault) instead, so the open can be retried.
pub(crate) async fn read_current(fs: &dyn FileSystem, dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(CURRENT);
    let data = match wal::read_log(fs, &path).await {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        other => other?,
    };
    match parse_current(&data) {
        Some(number) => Ok(Some(number)),
        None => {
            wal::confirm_read(fs, &path, &data).await?;
            Err(Error::corruption(
                &path,
                0,
                "CURRENT does not name a MANIFEST with a matching checksum",
            ))
        }
    }
}

/// What replaying a MANIFEST gives.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub version: Version,
    pub log_number: u64,
    pub next_file_number: u64,
    pub last_seq: u64,
    /// The format of the WALs the MANIFEST covers.
    pub wal_format: wal::Format,
}

/// Replays MANIFEST `number` of `dir`. `bad_record_as_torn` plants the bug of taking any bad
/// record for a torn tail (`PlantedBug::BadRecordAsTornTail`).
pub(crate) async fn replay(
    fs: &dyn FileSystem,
    dir: &Path,
    number: u64,
    bad_record_as_torn: bool,
) -> Result<Replayed> {
    let path = dir.join(file_name(number));
    let data = match wal::read_log(fs, &path).await {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let why = format!("{} is missing", path.display());
            return Err(Error::corruption(dir.join(CURRENT), 0, why));
        }
        other => other?,
    };
    let leniency = wal::Leniency { bad_record_as_torn, ..wal::Leniency::default() };
    let replayed = replay_edits(&data, &path, number, leniency);
    // Damage is acted on (a torn tail dropped, corruption reported) only if a second read
    // agrees; see `wal::confirm_read`.
    let damaged = match &replayed {
        Ok((_, torn)) => *torn,
        Err(e) => e.is_corruption(),
    };
    if damaged {
        wal::confirm_read(fs, &path, &data).await?;
    }
    replayed.map(|(r, _)| r)
}

/// Applies the edits of a MANIFEST's bytes; also says whether its tail was torn.
fn replay_edits(
    data: &[u8],
    path: &Path,
    number: u64,
    leniency: wal::Leniency,
) -> Result<(Replayed, bool)> {
    // Always the newest MANIFEST: only it may have a torn tail (a crash mid-edit).
    let framed =
        wal::parse_frames(data, path, number, wal::Format::V1, true, leniency, "MANIFEST")?;
    let mut r = Replayed {
        version: Version::default(),
        log_number: 0,
        next_file_number: 0,
        last_seq: 0,
        wal_format: wal::Format::V1,
    };
    let mut edits = 0;
    for &(offset, payload) in framed.records.iter().filter(|(_, p)| !p.is_empty()) {
        let bad = |why: String| Error::corruption(path, offset, why);
        let edit = VersionEdit::decode(payload).map_err(bad)?;
        if let Some(number) = edit.wal_format {
            r.wal_format = wal::Format::from_number(number).ok_or_else(|| {
                bad(format!("WALs of format {number}, which this version cannot read"))
            })?;
        }
        r.version = r.version.apply(&edit).map_err(bad)?;
        r.log_number = r.log_number.max(edit.log_number.unwrap_or(0));
        r.next_file_number = r.next_file_number.max(edit.next_file_number.unwrap_or(0));
        r.last_seq = r.last_seq.max(edit.last_seq.unwrap_or(0));
        edits += 1;
    }
    if edits == 0 || r.next_file_number == 0 {
        return Err(Error::corruption(path, 0, "MANIFEST holds no snapshot of the database"));
    }
    Ok((r, framed.torn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_names_its_manifest_with_a_checksum_that_catches_any_flip() {
        // The example in docs/format.md.
        assert_eq!(current_contents(2), "MANIFEST-000002\nc30c0e99\n");
        let good = current_contents(12);
        assert_eq!(parse_current(good.as_bytes()), Some(12));
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone().into_bytes();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(parse_current(&bad), None, "flip of bit {bit} went unnoticed");
        }
        assert_eq!(parse_current(b"MANIFEST-000012\n"), None, "no checksum");
        assert_eq!(parse_current(b""), None);
    }

    /// A MANIFEST holding `edit` as its only record.
    fn manifest_of(edit: &VersionEdit) -> Vec<u8> {
        let mut payload = Vec::new();
        edit.encode(&mut payload);
        let mut out = Vec::new();
        wal::encode_v1_record(&mut out, 5, 0, &payload);
        out
    }

    #[test]
    fn the_wal_format_is_named_by_the_snapshot_and_format_1_without_it() {
        let replay = |wal_format| {
            let edit =
                VersionEdit { next_file_number: Some(9), wal_format, ..VersionEdit::default() };
            replay_edits(&manifest_of(&edit), Path::new("MANIFEST-000005"), 5, Default::default())
        };
        assert_eq!(replay(None).unwrap().0.wal_format, wal::Format::V1);
        assert_eq!(replay(Some(2)).unwrap().0.wal_format, wal::Format::V2);
        let err = replay(Some(3)).unwrap_err();
        assert!(err.is_corruption() && err.to_string().contains("WALs of format 3"), "{err}");
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(3), "MANIFEST-000003");
        assert_eq!(parse_file_name("MANIFEST-000003"), Some(3));
        assert_eq!(parse_file_name("MANIFEST-"), None);
        assert_eq!(parse_file_name("MANIFEST-3x"), None);
    }
}
