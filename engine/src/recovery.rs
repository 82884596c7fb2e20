//! Opening a database: lock it, recover the tables from the MANIFEST, replay the newer WALs
//! and flush them to tables, and start a fresh WAL and MANIFEST.
//!
//! Replayed writes are flushed to level-0 tables at open instead of being kept in memtables
//! over their old WALs: after a process crash, the old WALs may hold pages the kernel never
//! wrote (a failed fsync marks them clean), so only a freshly written, synced table makes the
//! replayed state durable. Order matters for crash safety: the tables are synced and named
//! durably, then a new MANIFEST naming them (and the new WAL number) is made current, and only
//! then are the old WALs, the old MANIFEST and unreferenced files deleted. A crash anywhere in
//! between leaves a `CURRENT` naming a whole MANIFEST whose WALs still exist.

use crate::blob;
use crate::error::{Error, Result};
use crate::manifest::{self, Manifest, VersionEdit};
use crate::memtable::Memtable;
use crate::metrics::{Counters, SyncMeter};
use crate::options::{Options, PlantedBug};
use crate::runtime::{parent_dir, FileLock, FileSystem, Phase, PhaseGuard, RuntimeRef};
use crate::sstable;
use crate::version::Version;
use crate::version_set::Unneeded;
use crate::wal::{self, WalWriter};
use std::path::{Component, Path, PathBuf};

/// The name of the lock file that keeps two processes from opening one database.
const LOCK_FILE: &str = "LOCK";

/// What recovery hands to the new `Db`.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub rt: RuntimeRef,
    pub options: Options,
    pub dir: PathBuf,
    pub lock: Box<dyn FileLock>,
    /// What the database's [`crate::version_set::VersionSet`] starts from.
    pub versions: crate::version_set::Recovered,
    pub last_seq: u64,
    pub wal: WalWriter,
    pub counters: Counters,
}

/// The state a MANIFEST (or its absence, for a new database) gives.
struct Base {
    version: Version,
    log_number: u64,
    next_file_number: u64,
    last_seq: u64,
    /// The format of the WALs to replay.
    wal_format: wal::Format,
}

pub(crate) async fn open(dir: &Path, options: Options, rt: RuntimeRef) -> Result<Recovered> {
    let options = options.resolved();
    let observer = RuntimeRef::clone(&rt);
    let _phase = PhaseGuard::enter(observer.as_ref(), Phase::Recovery);
    let fs = rt.fs();
    create_dir_durably(fs, dir).await?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = fs.lock(&lock_path).await.map_err(|e| Error::io("locking", &lock_path, e))?;
    let names = fs.list(dir).await.map_err(|e| Error::io("listing", dir, e))?;
    let current = manifest::read_current(fs, dir).await?;
    check_existence(dir, &options, current.is_some())?;
    let mut base = match current {
        Some(number) => {
            let bad_record_as_torn = options.has_bug(PlantedBug::BadRecordAsTornTail);
            let r = manifest::replay(fs, dir, number, bad_record_as_torn).await?;
            check_tables_exist(dir, number, &r.version, &names)?;
            Base {
                version: r.version,
                log_number: r.log_number,
                next_file_number: r.next_file_number,
                last_seq: r.last_seq,
                wal_format: r.wal_format,
            }
        }
        None => {
            if let Some(name) = names.iter().find(|n| is_data_file(n)) {
                let why = format!(
                    "{name} exists but CURRENT does not: not a database this version can open"
                );
                return Err(Error::corruption(dir.join(manifest::CURRENT), 0, why));
            }
            Base {
                version: Version::default(),
                log_number: 0,
                next_file_number: 1,
                last_seq: 0,
                wal_format: wal::Format::WRITTEN,
            }
        }
    };
    // Never reuse a number a file on disk already has, referenced or not.
    let highest = names.iter().filter_map(|n| file_number(n)).max().unwrap_or(0);
    if !options.has_bug(PlantedBug::NextFileNumberFromManifest) {
        base.next_file_number = base.next_file_number.max(highest + 1);
    }

    let counters = Counters::default();
    let mut edit = VersionEdit::default();
    let logs = live_logs(&names, base.log_number);
    for (i, &number) in logs.iter().enumerate() {
        let newest = i + 1 == logs.len();
        let log = LogToReplay { number, format: base.wal_format, newest };
        let mem = replay_one(&rt, dir, log, &options, &mut base.last_seq).await?;
        let table = base.next_file_number;
        base.next_file_number += 1;
        let mut next = base.next_file_number;
        let mut blob_number = || {
            next += 1;
            next - 1
        };
        let flushed =
            crate::flush::write_table(rt.as_ref(), dir, &options, table, &mem, &mut blob_number)
                .await?;
        base.next_file_number = next;
        if flushed.table.is_some() {
            Counters::add(&counters.flushes, 1);
        }
        flushed.add_to(&mut edit, &counters);
    }
    let wal_number = base.next_file_number;
    let manifest_number = wal_number + 1;
    base.next_file_number += 2;
    let version = base.version.apply(&edit).map_err(|why| Error::corruption(dir, 0, why))?;
    // The logs just replayed are deleted once this MANIFEST is current; every log from here on
    // is written in this version's format.
    let numbers = (wal_number, base.next_file_number, base.last_seq);
    let snapshot = VersionEdit::snapshot(&version, numbers, wal::Format::WRITTEN.number());
    let syncs = SyncMeter::manifest(&counters, rt.as_ref());
    let manifest = Manifest::create(rt.as_ref(), dir, manifest_number, &snapshot, syncs).await?;
    Counters::add(&counters.manifest_bytes, manifest.bytes());
    let wal = wal::create(&rt, dir, wal_number, &options).await?;
    let undeleted = remove_obsolete(&rt, dir, &names, &version, manifest_number).await;
    tracing::debug!(logs = logs.len(), last_seq = base.last_seq, wal = wal_number, "opened");
    Ok(Recovered {
        rt,
        options,
        dir: dir.to_path_buf(),
        lock,
        versions: crate::version_set::Recovered {
            version,
            next_file_number: base.next_file_number,
            manifest,
            log_number: wal_number,
            undeleted,
        },
        last_seq: base.last_seq,
        wal,
        counters,
    })
}

/// Creates `dir` and any missing parents, and makes every name on the way durable: a directory
/// whose entry in its parent was never synced can vanish in a power loss, with everything under
/// it, synced writes included. Every ancestor's entry is synced at every open, not only the
/// ones this open creates: an earlier open may have created them and died (the process alone)
/// before syncing, leaving them in the page cache only. That costs a directory sync per level
/// of the path, once per open.
async fn create_dir_durably(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    fs.create_dir_all(dir).await.map_err(|e| Error::io("creating directory", dir, e))?;
    let mut at = PathBuf::new();
    for component in dir.components() {
        at.push(component);
        if matches!(component, Component::Normal(_)) {
            let parent = parent_dir(&at);
            fs.sync_dir(&parent).await.map_err(|e| Error::io("syncing directory", &parent, e))?;
        }
    }
    Ok(())
}

/// Whether `name` is a file that holds data: a WAL, a table or a blob file.
fn is_data_file(name: &str) -> bool {
    wal::parse_file_name(name).is_some()
        || sstable::parse_file_name(name).is_some()
        || blob::parse_file_name(name).is_some()
}

fn file_number(name: &str) -> Option<u64> {
    wal::parse_file_name(name)
        .or_else(|| sstable::parse_file_name(name))
        .or_else(|| blob::parse_file_name(name))
        .or_else(|| manifest::parse_file_name(name))
}

/// The WALs at or above `log_number`, oldest first.
fn live_logs(names: &[String], log_number: u64) -> Vec<u64> {
    let mut logs: Vec<u64> =
        names.iter().filter_map(|n| wal::parse_file_name(n)).filter(|&n| n >= log_number).collect();
    logs.sort_unstable();
    logs
}

/// Every table and blob file the version names must be on disk: a missing one is lost data,
/// reported by name.
fn check_tables_exist(
    dir: &Path,
    manifest: u64,
    version: &Version,
    names: &[String],
) -> Result<()> {
    for (level, file) in version.files() {
        let name = sstable::file_name(file.number);
        if !names.contains(&name) {
            let why = format!("table {name} (level {level}) named by the MANIFEST is missing");
            return Err(Error::corruption(dir.join(manifest::file_name(manifest)), 0, why));
        }
    }
    for &number in version.blobs.keys() {
        let name = blob::file_name(number);
        if !names.contains(&name) {
            let why = format!("blob file {name} named by the MANIFEST is missing");
            return Err(Error::corruption(dir.join(manifest::file_name(manifest)), 0, why));
        }
    }
    Ok(())
}

/// Deletes what no longer belongs to the database: WALs already in tables, tables and blob
/// files no version names (a flush or compaction that crashed before its MANIFEST edit), old
/// MANIFESTs and a leftover temporary `CURRENT`. Failing to delete costs only space, so
/// failures are logged; the tables and blob files among them are returned for the background
/// worker to retry (the other files are found and deleted again by the next open).
async fn remove_obsolete(
    rt: &RuntimeRef,
    dir: &Path,
    names: &[String],
    version: &Version,
    manifest: u64,
) -> Vec<Unneeded> {
    let live_table = |n: u64| version.files().any(|(_, f)| f.number == n);
    let mut undeleted = Vec::new();
    for name in names {
        let table = sstable::parse_file_name(name).map(Unneeded::Table);
        let blob = blob::parse_file_name(name).map(Unneeded::Blob);
        let obsolete = wal::parse_file_name(name).is_some()
            || table.is_some_and(|t| !live_table(t.number()))
            || blob.is_some_and(|b| !version.blobs.contains_key(&b.number()))
            || manifest::parse_file_name(name).is_some_and(|n| n != manifest)
            || name == manifest::CURRENT_TEMP;
        if obsolete {
            let path = dir.join(name);
            if let Err(e) = rt.fs().remove(&path).await {
                tracing::warn!(file = %path.display(), error = %e, "could not delete an obsolete file");
                undeleted.extend(table.or(blob));
            }
        }
    }
    undeleted
}

fn check_existence(dir: &Path, options: &Options, exists: bool) -> Result<()> {
    if !exists && !options.create_if_missing {
        return Err(Error::InvalidArgument(format!(
            "no database in {} and create_if_missing is off",
            dir.display()
        )));
    }
    if exists && options.error_if_exists {
        return Err(Error::InvalidArgument(format!(
            "a database already exists in {} and error_if_exists is on",
            dir.display()
        )));
    }
    Ok(())
}

/// A WAL that recovery replays.
#[derive(Clone, Copy)]
struct LogToReplay {
    number: u64,
    format: wal::Format,
    /// Whether it is the newest log: the only one that may end in a torn tail.
    newest: bool,
}

/// Replays a log into a new memtable. A torn tail (or preallocated zeros) is accepted only in
/// the newest log; the log itself is deleted once its writes are in a table.
async fn replay_one(
    rt: &RuntimeRef,
    dir: &Path,
    log: LogToReplay,
    options: &Options,
    last_seq: &mut u64,
) -> Result<Memtable> {
    let LogToReplay { number, format, newest } = log;
    let path = dir.join(wal::file_name(number));
    let leniency = wal::Leniency {
        accept_bad_crc: options.has_bug(PlantedBug::AcceptTornWalRecord),
        bad_record_as_torn: options.has_bug(PlantedBug::BadRecordAsTornTail),
    };
    let next_seq = Some(*last_seq + 1);
    let log = wal::replay(rt.fs(), &path, number, format, newest, next_seq, leniency).await?;
    if log.torn {
        tracing::info!(log = %path.display(), valid_len = log.valid_len, "ignoring WAL tail");
    }
    let memtable = Memtable::new(number);
    for batch in log.batches {
        let count = batch.ops.len() as u64;
        memtable.apply_all(batch.first_seq, batch.ops);
        *last_seq = batch.first_seq + count - 1;
    }
    Ok(memtable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtime;
    use crate::testing::MemRuntime;
    use crate::Db;
    use std::sync::Arc;

    /// Opens `/db` again after leaving a stray table numbered 50 in it (as a flush that crashed
    /// before its MANIFEST edit would), and returns the number of the WAL the open created.
    fn wal_number_after_stray_table(options: Options) -> u64 {
        let rt = Arc::new(MemRuntime::default());
        let open = |options: Options| {
            Db::open("/db", options, Arc::clone(&rt) as RuntimeRef).expect("open")
        };
        open(options.clone()).close().expect("close");
        let stray = Path::new("/db").join(sstable::file_name(50));
        crate::blocking::block_on(rt.fs().create(&stray)).expect("create");
        let db = open(options);
        let names = crate::blocking::block_on(rt.fs().list(Path::new("/db"))).expect("list");
        db.close().expect("close");
        names.iter().filter_map(|n| wal::parse_file_name(n)).max().expect("a WAL")
    }

    #[test]
    fn no_file_number_on_disk_is_used_again() {
        assert!(wal_number_after_stray_table(Options::default()) > 50);
    }

    #[cfg(feature = "planted-bugs")]
    #[test]
    fn the_planted_bug_takes_the_next_file_number_from_the_manifest() {
        let bug = Some(PlantedBug::NextFileNumberFromManifest);
        assert!(wal_number_after_stray_table(Options::default().planted_bug(bug)) < 50);
    }
}
