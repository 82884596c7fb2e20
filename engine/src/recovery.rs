//! Opening a database: lock it, replay its WALs, and start a fresh WAL.
//!
//! Order matters for crash safety: a torn tail is truncated and the truncation synced *before*
//! a newer WAL is created, because once a newer log exists recovery reads every older log as
//! wholly synced and reports any damage in it as corruption.

use crate::db::{apply_ops, create_wal, Db};
use crate::error::{Error, Result};
use crate::memtable::Memtable;
use crate::options::{Options, PlantedBug};
use crate::runtime::{parent_dir, FileLock, RuntimeRef};
use crate::wal::{self, WalWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of the lock file that keeps two processes from opening one database.
const LOCK_FILE: &str = "LOCK";

/// What recovery hands to the new `Db`.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub rt: RuntimeRef,
    pub options: Options,
    pub dir: PathBuf,
    pub lock: Box<dyn FileLock>,
    /// One memtable per replayed log, oldest first.
    pub memtables: Vec<Arc<Memtable>>,
    pub last_seq: u64,
    pub wal: WalWriter,
}

pub(crate) async fn open(dir: &Path, options: Options, rt: RuntimeRef) -> Result<Db> {
    let fs = rt.fs();
    fs.create_dir_all(dir).await.map_err(|e| Error::io("creating directory", dir, e))?;
    let parent = parent_dir(dir);
    fs.sync_dir(&parent).await.map_err(|e| Error::io("syncing directory", &parent, e))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = fs.lock(&lock_path).await.map_err(|e| Error::io("locking", &lock_path, e))?;
    let names = fs.list(dir).await.map_err(|e| Error::io("listing", dir, e))?;
    let mut logs: Vec<u64> = names.iter().filter_map(|n| wal::parse_file_name(n)).collect();
    logs.sort_unstable();
    check_existence(dir, &options, !logs.is_empty())?;

    let mut memtables = Vec::with_capacity(logs.len());
    let mut last_seq = 0u64;
    for (i, &number) in logs.iter().enumerate() {
        let newest = i + 1 == logs.len();
        let memtable = replay_one(&rt, dir, number, newest, &options, &mut last_seq).await?;
        memtables.push(Arc::new(memtable));
    }
    let number = logs.last().map_or(1, |n| n + 1);
    let wal = create_wal(rt.as_ref(), dir, number, options.wal_preallocate_bytes).await?;
    tracing::debug!(logs = logs.len(), last_seq, wal = number, "opened");
    Ok(Db::from_recovered(Recovered {
        rt,
        options,
        dir: dir.to_path_buf(),
        lock,
        memtables,
        last_seq,
        wal,
    }))
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

/// Replays log `number` into a new memtable, cutting a torn tail (or preallocated zeros) off
/// the newest log.
async fn replay_one(
    rt: &RuntimeRef,
    dir: &Path,
    number: u64,
    newest: bool,
    options: &Options,
    last_seq: &mut u64,
) -> Result<Memtable> {
    let path = dir.join(wal::file_name(number));
    let accept_bad_crc = options.has_bug(PlantedBug::AcceptTornWalRecord);
    let log =
        wal::replay(rt.fs(), &path, number, newest, Some(*last_seq + 1), accept_bad_crc).await?;
    let memtable = Memtable::new(number);
    for batch in log.batches {
        let count = batch.ops.len() as u64;
        apply_ops(&memtable, batch.first_seq, batch.ops);
        *last_seq = batch.first_seq + count - 1;
    }
    if newest {
        // What was just replayed may sit only in the page cache (the process died, the machine
        // did not), yet once a newer log exists this one is read as wholly synced. So the
        // newest log is always made durable here, its torn tail cut off first.
        let file = rt.fs().open(&path).await.map_err(|e| Error::io("opening", &path, e))?;
        if log.torn {
            tracing::info!(log = %path.display(), valid_len = log.valid_len, "cutting WAL tail");
            file.truncate(log.valid_len).await.map_err(|e| Error::io("truncating", &path, e))?;
        }
        file.sync_data().await.map_err(|e| Error::io("syncing", &path, e))?;
    }
    Ok(memtable)
}
