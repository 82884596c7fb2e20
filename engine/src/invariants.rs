//! The structure checker: expensive self-checks of the LSM tree, compiled in only with the
//! `invariants` feature (the simulator and the tests turn it on), run after every version
//! change the background workers make.
//!
//! It checks what the version invariants (`Version::check`) cannot see without reading the
//! tables: every table the version names exists and no table on disk is unaccounted for (each
//! is live, or obsolete and waiting for readers to let go), and for every user key the sequence
//! numbers fall strictly in the order reads consult the tables (level 0 newest first, then each
//! deeper level), which is what makes "the first version found is the newest" true.
//! A violation panics, so the simulator reports the seed.
//!
//! Tables never change once written, so the checker reads each one once and keeps its keys and
//! sequence numbers for as long as a version names it: a check after a job then reads only the
//! tables the job wrote. It checks the key order of only the keys those tables hold, too: a key
//! no new table holds is in the tables it was in at the last check, less any removed, and a
//! subsequence of a strictly falling sequence falls strictly. This rests on tables never
//! changing, holding each key's versions newest first, and keeping their order within a level
//! (level 0 by sequence number, deeper levels by disjoint key ranges). A table moved to another
//! level counts as new, and so does any table read for this check; a check whose reads failed
//! leaves the next one to cover its changes. The first check after an open walks every key.
//! At scale the full walk after every job was a tenth of a simulation's time.
//!
//! With key-value separation it checks the blob files' accounts too: every blob file the
//! version names is on disk, no blob file on disk is unaccounted for, and for each blob file the
//! bytes of the records its version's tables point to plus the garbage the version counts are
//! exactly its record bytes. A compaction that counts a live value as garbage, or forgets to
//! count a dropped one, breaks that sum at once (the first would also let the file be deleted
//! while a table still points into it).

use crate::job::JobEnv;
use crate::runtime::FileSystem;
use crate::sstable::Table;
use crate::version::FileMeta;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A table's keys and sequence numbers, in table order.
type Entries = Arc<[(Vec<u8>, u64)]>;

/// Bytes of blob records a table's entries point to, by blob file.
type BlobRefs = Arc<BTreeMap<u64, u64>>;

/// The entries of each table checked so far, by file number.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    tables: BTreeMap<u64, (Entries, BlobRefs)>,
    /// The tables (level, number) of the last version whose key order was checked, if any.
    verified: Option<BTreeSet<(usize, u64)>>,
}

/// Runs every check; panics on a violation.
pub(crate) async fn check_tree(db: &JobEnv<'_>, checker: &mut Checker) {
    if let Err(why) = check(db, checker).await {
        panic!("LSM structure violated: {why}");
    }
}

async fn check(db: &JobEnv<'_>, checker: &mut Checker) -> Result<(), String> {
    // The MANIFEST must not declare obsolete the WAL of a memtable not yet flushed: the next
    // open would skip it. The log number first: it rises only after the memtables it covers
    // are gone, so an install in between cannot make this fail.
    let log_number = db.versions.log_number();
    let oldest = db.reads.oldest_wal();
    if log_number > oldest {
        return Err(format!(
            "the MANIFEST's log number {log_number} is past WAL {oldest}, whose memtable is not \
             flushed yet"
        ));
    }
    let fs = db.rt.checker_fs().unwrap_or(db.rt.fs());
    // Jobs may run meanwhile: the version set is read in one step between two listings (see
    // below for why that suffices).
    let before = tables_on_disk(fs, db.dir).await?;
    let snapshot = db.versions.snapshot();
    let after = tables_on_disk(fs, db.dir).await?;
    let version = snapshot.current;
    version.check()?;
    let mut live: BTreeSet<u64> = version.files().map(|(_, f)| f.number).collect();
    // The snapshot holds the version, so none of its tables can be deleted before `after`.
    for (level, f) in version.files() {
        if !after.contains(&f.number) {
            return Err(format!("table {} of level {level} is not on disk", f.number));
        }
    }
    for &number in version.blobs.keys() {
        if !after.contains(&number) {
            return Err(format!("blob file {number} is not on disk"));
        }
    }
    live.extend(version.blobs.keys());
    // A table is pending, live or obsolete from before it is created until after it is
    // deleted, moving between them under one lock: one on disk at both listings was in one of
    // them at the snapshot between.
    for number in before.intersection(&after) {
        let waiting = snapshot.obsolete.contains(number) || snapshot.pending.contains(number);
        if !live.contains(number) && !waiting {
            return Err(format!(
                "table or blob file {number} is on disk but neither live, pending nor obsolete"
            ));
        }
    }
    // Tables no version names any more are forgotten.
    checker.tables.retain(|number, _| live.contains(number));
    match check_key_order(db, fs, checker, &version).await {
        Ok(result) => result,
        // A read that fails (an injected read fault the checksum caught) leaves the order
        // unverified; it says nothing against the structure.
        Err(e) => {
            tracing::debug!(error = %e, "structure check skipped the key order: a read failed");
            Ok(())
        }
    }
}

/// The numbers of the tables and blob files in `dir`.
async fn tables_on_disk(
    fs: &dyn FileSystem,
    dir: &std::path::Path,
) -> Result<BTreeSet<u64>, String> {
    let names = fs.list(dir).await.map_err(|e| format!("listing: {e}"))?;
    let number =
        |n: &String| crate::sstable::parse_file_name(n).or_else(|| crate::blob::parse_file_name(n));
    Ok(names.iter().filter_map(number).collect())
}

/// For every user key, checks that sequence numbers fall in the order reads consult the
/// tables. The outer error is a failed read; the inner one a violation.
async fn check_key_order(
    db: &JobEnv<'_>,
    fs: &dyn FileSystem,
    checker: &mut Checker,
    version: &crate::version::Version,
) -> crate::Result<Result<(), String>> {
    // Sorted runs in the order reads consult them: each level-0 table alone, then each deeper
    // level as one run (its tables hold disjoint key ranges, in key order).
    let mut runs: Vec<Vec<(u64, Entries)>> = Vec::new();
    let mut run_level = None;
    let mut tables = BTreeSet::new();
    let mut new_tables = Vec::new();
    let mut blob_refs: BTreeMap<u64, u64> = BTreeMap::new();
    for (level, f) in version.files() {
        let known = checker.tables.get(&f.number).cloned();
        // A table read now is new even if a table of its number and level was verified: the
        // number may have been reused (a bug the file-number checks look for) after a check
        // whose reads failed left `verified` behind.
        let fresh = known.is_none();
        let (table, refs) = match known {
            Some(table) => table,
            None => {
                let read = read_table(db, fs, f).await?;
                if let Err(why) = check_bounds(f, &read.0) {
                    return Ok(Err(why));
                }
                checker.tables.insert(f.number, read.clone());
                read
            }
        };
        for (&blob, &bytes) in refs.iter() {
            let pointed = blob_refs.entry(blob).or_default();
            *pointed = pointed.saturating_add(bytes);
        }
        tables.insert((level, f.number));
        if fresh || !checker.verified.as_ref().is_some_and(|v| v.contains(&(level, f.number))) {
            new_tables.push(Arc::clone(&table));
        }
        if level == 0 || run_level != Some(level) {
            runs.push(Vec::new());
            run_level = Some(level);
        }
        runs.last_mut().expect("just pushed").push((f.number, table));
    }
    if let Err(why) = check_blob_accounts(version, &blob_refs) {
        return Ok(Err(why));
    }
    // Looking a key up costs a binary search per run, walking past it a comparison or two: the
    // keys of new tables are looked up only while they are a small part of the tree.
    let total: usize = runs.iter().flatten().map(|(_, e)| e.len()).sum();
    let new_entries: usize = new_tables.iter().map(|e| e.len()).sum();
    let result = if checker.verified.is_none() || new_entries.saturating_mul(8) > total {
        merge_in_read_order(&runs)
    } else {
        check_keys(&runs, new_tables.iter().flat_map(|t| t.iter().map(|(k, _)| k.as_slice())))
    };
    if result.is_ok() {
        checker.verified = Some(tables);
    }
    Ok(result)
}

/// Checks that each blob file's record bytes are exactly those the version's tables point to
/// plus the garbage the version counts, and that no table points into a blob file the version
/// does not hold.
fn check_blob_accounts(
    version: &crate::version::Version,
    refs: &BTreeMap<u64, u64>,
) -> Result<(), String> {
    for (&number, &pointed) in refs {
        if !version.blobs.contains_key(&number) {
            return Err(format!(
                "tables point to {pointed} bytes of blob file {number}, which the version does \
                 not hold"
            ));
        }
    }
    for (number, blob) in &version.blobs {
        let pointed = refs.get(number).copied().unwrap_or(0);
        if pointed.saturating_add(blob.garbage_bytes) != blob.file.record_bytes {
            return Err(format!(
                "blob file {number}: tables point to {pointed} bytes and {} are garbage, but it \
                 holds {} record bytes",
                blob.garbage_bytes, blob.file.record_bytes
            ));
        }
    }
    Ok(())
}

/// Checks that the keys of table `f` lie within the range its metadata gives: reads skip a
/// table whose range does not cover a key, and the checks below find a key's entries in a
/// level by the tables' order.
fn check_bounds(f: &FileMeta, entries: &[(Vec<u8>, u64)]) -> Result<(), String> {
    let (Some((first, _)), Some((last, _))) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    if first.as_slice() < f.smallest_key.as_ref() || last.as_slice() > f.largest_key.as_ref() {
        return Err(format!(
            "table {} holds keys {first:?}..={last:?} outside its range {:?}..={:?}",
            f.number, f.smallest_key, f.largest_key
        ));
    }
    Ok(())
}

/// Checks, for each of `keys`, that its sequence numbers fall strictly as reads consult the
/// tables: what [`merge_in_read_order`] checks for every key, for these alone.
fn check_keys<'k>(
    runs: &[Vec<(u64, Entries)>],
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Result<(), String> {
    let mut previous = None;
    for key in keys {
        // A table holds a key's versions together: each key once (a key in two tables is
        // checked twice, which is harmless).
        if previous == Some(key) {
            continue;
        }
        previous = Some(key);
        // The lowest sequence number seen for this key so far, and in which table.
        let mut lowest: Option<(u64, u64)> = None;
        for run in runs {
            // The first table whose last key is at or past `key`; its entries may go on into
            // the next tables of the run.
            let first =
                run.partition_point(|(_, e)| e.last().is_some_and(|(k, _)| k.as_slice() < key));
            'tables: for (number, entries) in &run[first..] {
                let start = entries.partition_point(|(k, _)| k.as_slice() < key);
                for (k, seq) in &entries[start..] {
                    if k.as_slice() != key {
                        break 'tables;
                    }
                    if let Some((low, table)) = lowest {
                        if table != *number && *seq >= low {
                            return Err(violation(key, *seq, *number, low, table));
                        }
                    }
                    lowest = Some((*seq, *number));
                }
            }
        }
    }
    Ok(())
}

fn violation(key: &[u8], seq: u64, number: u64, low: u64, table: u64) -> String {
    format!(
        "key {key:?}: sequence {seq} in table {number} is consulted after {low} in table {table}"
    )
}

/// Walks the runs together, key by key (a handful of runs: a linear scan for the smallest key
/// costs less than a heap), checking that each key's sequence numbers fall strictly as reads
/// consult the tables.
fn merge_in_read_order(runs: &[Vec<(u64, Entries)>]) -> Result<(), String> {
    // Each run's position: the table within the run, and the entry within the table.
    let mut at = vec![(0usize, 0usize); runs.len()];
    let entry = |run: usize, (table, i): (usize, usize)| {
        let (number, entries) = runs[run].get(table)?;
        entries.get(i).map(|(key, seq)| (key.as_slice(), *seq, *number))
    };
    let next = |run: usize, (table, i): (usize, usize)| {
        if i + 1 < runs[run][table].1.len() {
            (table, i + 1)
        } else {
            (table + 1, 0)
        }
    };
    loop {
        let smallest = (0..runs.len()).filter_map(|r| entry(r, at[r]).map(|(k, ..)| k)).min();
        let Some(key) = smallest else { return Ok(()) };
        // The lowest sequence number seen for this key so far, and in which table.
        let mut lowest: Option<(u64, u64)> = None;
        for (run, pos) in at.iter_mut().enumerate() {
            while let Some((k, seq, number)) = entry(run, *pos) {
                if k != key {
                    break;
                }
                if let Some((low, table)) = lowest {
                    if table != number && seq >= low {
                        return Err(violation(key, seq, number, low, table));
                    }
                }
                lowest = Some((seq, number));
                *pos = next(run, *pos);
            }
        }
    }
}

/// Every key and sequence number of table `f`, in table order. Opened apart from the table
/// cache, so the check changes neither what it holds nor its counters.
async fn read_table(
    db: &JobEnv<'_>,
    fs: &dyn FileSystem,
    f: &FileMeta,
) -> crate::Result<(Entries, BlobRefs)> {
    let path = db.dir.join(crate::sstable::file_name(f.number));
    let file = fs.open(&path).await.map_err(|e| crate::Error::io("opening", &path, e))?;
    let stats = Arc::new(crate::sstable::ReadStats::default());
    let table = Arc::new(Table::open(file, path, f.number, f.file_bytes, None, stats).await?);
    let mut it = table.iter();
    it.seek_to_first().await?;
    let mut entries = Vec::new();
    let mut blobs = BTreeMap::new();
    while it.valid() {
        entries.push((it.user_key().to_vec(), it.seq()));
        if it.is_blob() {
            let pointer = it.value().and_then(crate::blob::BlobPointer::decode);
            let pointer = pointer.ok_or_else(|| {
                crate::Error::corruption(table.path(), 0, "a malformed blob pointer")
            })?;
            let pointed = blobs.entry(pointer.file).or_default();
            *pointed = u64::saturating_add(*pointed, pointer.len);
        }
        it.next().await?;
    }
    Ok((entries.into(), Arc::new(blobs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(number: u64, entries: &[(&str, u64)]) -> (u64, Entries) {
        (number, entries.iter().map(|(k, s)| (k.as_bytes().to_vec(), *s)).collect())
    }

    fn keys<'a>(of: &[&'a str]) -> Vec<&'a [u8]> {
        of.iter().map(|k| k.as_bytes()).collect()
    }

    #[test]
    fn a_newer_version_consulted_after_an_older_one_is_a_violation() {
        // Level 0 holds b@5; level 1 holds b@9 (newer, but consulted later).
        let runs = vec![
            vec![table(7, &[("a", 4), ("b", 5)])],
            vec![table(3, &[("b", 9)]), table(4, &[("c", 1)])],
        ];
        assert!(merge_in_read_order(&runs).unwrap_err().contains("key [98]"));
        assert!(check_keys(&runs, keys(&["b"])).is_err());
        // Only the keys asked about are checked: what makes the check after a job cheap.
        assert!(check_keys(&runs, keys(&["a", "c"])).is_ok());
    }

    #[test]
    fn falling_sequences_pass_and_a_tables_own_versions_are_not_compared() {
        let runs = vec![
            vec![table(9, &[("a", 8), ("k", 7)])],
            vec![table(8, &[("a", 6), ("a", 2)]), table(5, &[("m", 1), ("z", 3)])],
        ];
        assert!(merge_in_read_order(&runs).is_ok());
        assert!(check_keys(&runs, keys(&["a", "k", "m", "z", "absent"])).is_ok());
    }

    #[test]
    fn a_key_found_in_a_later_table_of_a_run_is_checked() {
        // Level 1's second table holds d@9, newer than level 0's d@2.
        let runs = vec![
            vec![table(6, &[("d", 2)])],
            vec![table(4, &[("a", 1), ("c", 1)]), table(5, &[("d", 9)])],
        ];
        assert!(check_keys(&runs, keys(&["d"])).is_err());
        assert!(merge_in_read_order(&runs).is_err());
    }

    #[test]
    fn a_table_holding_keys_outside_its_range_is_a_violation() {
        let f = crate::version::meta(3, "b", "d", (1, 2));
        let inside: Vec<(Vec<u8>, u64)> = vec![(b"b".to_vec(), 2), (b"d".to_vec(), 1)];
        assert!(check_bounds(&f, &inside).is_ok());
        let past: Vec<(Vec<u8>, u64)> = vec![(b"c".to_vec(), 2), (b"e".to_vec(), 1)];
        assert!(check_bounds(&f, &past).unwrap_err().contains("table 3"));
        let before: Vec<(Vec<u8>, u64)> = vec![(b"a".to_vec(), 2)];
        assert!(check_bounds(&f, &before).is_err());
    }
}
