//! The structure checker: expensive self-checks of the LSM tree, compiled in only with the
//! `invariants` feature (the simulator and the tests turn it on), run after every version
//! change the background worker makes.
//!
//! It checks what the version invariants (`Version::check`) cannot see without reading the
//! tables: every table the version names exists and no table on disk is unaccounted for (each
//! is live, or obsolete and waiting for readers to let go), and for every user key the sequence
//! numbers fall strictly in the order reads consult the tables (level 0 newest first, then each
//! deeper level), which is what makes "the first version found is the newest" true.
//! A violation panics, so the simulator reports the seed.

use crate::db::DbInner;
use crate::runtime::FileSystem;
use crate::sstable::Table;
use crate::version::FileMeta;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs every check; panics on a violation. `obsolete` are the tables waiting for readers to
/// let go of them, `undeleted` those whose deletion failed and waits for a retry.
pub(crate) async fn check_tree(db: &DbInner, obsolete: &[Arc<FileMeta>], undeleted: &[u64]) {
    if let Err(why) = check(db, obsolete, undeleted).await {
        panic!("LSM structure violated: {why}");
    }
}

async fn check(db: &DbInner, obsolete: &[Arc<FileMeta>], undeleted: &[u64]) -> Result<(), String> {
    let version = db.current();
    version.check()?;
    let fs = db.rt.checker_fs().unwrap_or(db.rt.fs());
    let names = fs.list(&db.dir).await.map_err(|e| format!("listing: {e}"))?;
    let on_disk: Vec<u64> =
        names.iter().filter_map(|n| crate::sstable::parse_file_name(n)).collect();
    for (level, f) in version.files() {
        if !on_disk.contains(&f.number) {
            return Err(format!("table {} of level {level} is not on disk", f.number));
        }
    }
    for &number in &on_disk {
        let live = version.files().any(|(_, f)| f.number == number);
        let waiting = obsolete.iter().any(|f| f.number == number) || undeleted.contains(&number);
        if !live && !waiting {
            return Err(format!("table {number} is on disk but neither live nor obsolete"));
        }
    }
    match check_key_order(db, fs, &version).await {
        Ok(result) => result,
        // A read that fails (an injected read fault the checksum caught) leaves the order
        // unverified; it says nothing against the structure.
        Err(e) => {
            tracing::debug!(error = %e, "structure check skipped the key order: a read failed");
            Ok(())
        }
    }
}

/// For every user key, checks that sequence numbers fall in the order reads consult the
/// tables. The outer error is a failed read; the inner one a violation.
async fn check_key_order(
    db: &DbInner,
    fs: &dyn FileSystem,
    version: &crate::version::Version,
) -> crate::Result<Result<(), String>> {
    // For each key: the lowest sequence number seen so far, and in which table.
    let mut seen: BTreeMap<Vec<u8>, (u64, u64)> = BTreeMap::new();
    for (_, f) in version.files() {
        // Opened apart from the table cache, so the check changes neither what it holds nor
        // its counters.
        let path = db.dir.join(crate::sstable::file_name(f.number));
        let file = fs.open(&path).await.map_err(|e| crate::Error::io("opening", &path, e))?;
        let stats = Arc::new(crate::sstable::ReadStats::default());
        let table = Arc::new(Table::open(file, path, f.number, f.file_bytes, None, stats).await?);
        let mut it = table.iter();
        it.seek_to_first().await?;
        while it.valid() {
            let (key, seq) = (it.user_key(), it.seq());
            match seen.get_mut(key) {
                Some((lowest, table)) if *table != f.number && seq >= *lowest => {
                    return Ok(Err(format!(
                        "key {key:?}: sequence {seq} in table {} is consulted after {lowest} in table {table}",
                        f.number
                    )));
                }
                Some(entry) => *entry = (seq, f.number),
                None => {
                    seen.insert(key.to_vec(), (seq, f.number));
                }
            }
            it.next().await?;
        }
    }
    Ok(Ok(()))
}
