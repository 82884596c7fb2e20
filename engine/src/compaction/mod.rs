//! Leveled compaction: merging tables of one level into the next, so that reads consult few
//! tables and space held by overwritten and deleted versions is reclaimed.
//!
//! Picking (`pick`): level 0 is compacted into level 1 once it holds `l0_compaction_files`
//! tables (all of them, with the level-1 tables they overlap: level-0 tables overlap each
//! other, and moving only some could put an older version above a newer one). When those
//! level-0 tables share no user key with each other and level 1 holds nothing under them (as
//! with flushes of keys written in order), they move down whole, without a rewrite. A deeper
//! level `n` is compacted once its bytes pass its target (`level1_bytes_max` times 10 per level
//! below 1): one table, chosen round-robin by key, with the level `n + 1` tables it overlaps.
//! The level with the highest score goes first. Last come bottom-level tables (no deeper level
//! overlaps them) holding droppable entries (tombstones, versions below their key's newest)
//! that no live snapshot needs any more: each is rewritten in place, as RocksDB does with the
//! bottommost files it marks for compaction, so that space held for a released snapshot comes
//! back without a manual compaction.
//!
//! Running (`run`): the inputs are merged by [`merge::MergeIter`], which drops shadowed
//! versions and obsolete tombstones; outputs are cut at `target_file_bytes`, never inside one
//! user key (so tables of one level never share a key); between outputs a waiting memtable is
//! flushed. The outputs are synced and named durably, then one MANIFEST edit swaps inputs for
//! outputs; the inputs are deleted only once the edit is durable and no reader holds a version
//! naming them.

mod merge;

use crate::error::{Error, Result};
use crate::job::JobEnv;
use crate::manifest::VersionEdit;
use crate::metrics::{Counters, Timer};
use crate::runtime::{buggify, Phase, PhaseGuard};
use crate::sstable::{self, TableWriter};
use crate::version::{FileMeta, Version, LEVELS};
use bytes::Bytes;
use merge::{MergeIter, Retention};
use std::sync::Arc;

/// A compaction charges the rate limiter each time its output grows by this much.
const RATE_CHARGE_BYTES: u64 = 64 << 10;

/// The growth factor of level targets.
const LEVEL_SIZE_RATIO: u64 = 10;

/// One compaction: the input tables and where the output goes.
#[derive(Debug)]
pub(crate) struct Compaction {
    pub output_level: usize,
    /// Input tables with their levels: `output_level - 1` and `output_level`, or only
    /// `output_level` for a rewrite in place.
    pub inputs: Vec<(usize, Arc<FileMeta>)>,
    /// Whether one input with nothing to merge may move down whole instead of being rewritten.
    pub move_allowed: bool,
}

impl Compaction {
    /// The smallest and largest user key of the inputs.
    fn key_range(&self) -> (Bytes, Bytes) {
        let start = self.inputs.iter().map(|(_, f)| &f.smallest_key).min().cloned();
        let end = self.inputs.iter().map(|(_, f)| &f.largest_key).max().cloned();
        (start.unwrap_or_default(), end.unwrap_or_default())
    }

    /// Whether the compaction can move its inputs down without rewriting them: they all come
    /// from the level above (so none of the output level overlaps them) and no two share a
    /// user key (so no key has versions in two of them to be ordered). One table always
    /// qualifies; several level-0 tables do when their ranges are disjoint, as the flushes of
    /// keys written in order are (RocksDB moves such level-0 files down too).
    fn is_trivial_move(&self) -> bool {
        if !self.move_allowed || self.inputs.iter().any(|(l, _)| l + 1 != self.output_level) {
            return false;
        }
        let mut tables: Vec<&FileMeta> = self.inputs.iter().map(|(_, f)| f.as_ref()).collect();
        tables.sort_by(|a, b| a.smallest_key.cmp(&b.smallest_key));
        tables.windows(2).all(|w| w[0].largest_key < w[1].smallest_key)
    }
}

/// Whether `f` is well past the size compaction cuts its outputs at: a flush's table, or one
/// moved down whole. An output passes the target by its last entry and its metadata blocks
/// (index and filter, a few percent, and a few hundred bytes of properties and footer, which
/// dominate a tiny target): twice the target and 4 KiB leaves every output below.
fn oversized(f: &FileMeta, target_file_bytes: u64) -> bool {
    f.file_bytes > target_file_bytes.saturating_mul(2).saturating_add(4096)
}

/// The most tables one in-place rewrite of `compact_range` takes: the merge picks among its
/// inputs at every entry, so a run of thousands in one step would cost their square.
const IN_PLACE_TABLES_MAX: usize = 16;

/// Whether no level below `level` holds a table overlapping `f`'s key range: a tombstone in
/// `f` then hides nothing a compaction does not see.
fn is_bottom(version: &Version, level: usize, f: &FileMeta) -> bool {
    // Deeper levels hold disjoint ranges in key order: only the first table that does not end
    // before `f` starts can overlap it.
    let deeper = version.levels.get(level + 1..).unwrap_or_default();
    !deeper.iter().any(|files| {
        let at = files.partition_point(|g| g.largest_key < f.smallest_key);
        files.get(at).is_some_and(|g| g.overlaps(&f.smallest_key, &f.largest_key))
    })
}

/// A rewrite in place of `inputs`, tables of `level`.
fn in_place(level: usize, inputs: Vec<Arc<FileMeta>>) -> Compaction {
    let inputs = inputs.into_iter().map(|f| (level, f)).collect();
    Compaction { output_level: level, inputs, move_allowed: false }
}

/// Where each level's round-robin choice resumes: the largest key of the last table chosen.
#[derive(Debug, Default)]
pub(crate) struct Pointers {
    next_key: [Vec<u8>; LEVELS],
}

/// The compactions running now, which a new one must not collide with: it may take no table
/// another one takes, and may not write into a level a running one writes into over an
/// overlapping key range (their outputs would overlap within the level). With today's picks the
/// second rule follows from the first (a compaction takes every table of its output level its
/// range overlaps, so two whose ranges overlap there share one); it stands for picks that take
/// part of a level, as Pebble's do. The pools' workers share it, with the round-robin pointers,
/// and pick under its lock.
#[derive(Debug, Default)]
pub(crate) struct Busy {
    running: Vec<Claim>,
    pub pointers: Pointers,
}

/// One running compaction's footprint.
#[derive(Debug, Clone)]
struct Claim {
    id: u64,
    output_level: usize,
    start: Bytes,
    end: Bytes,
    inputs: Vec<u64>,
}

impl Busy {
    /// Whether `c` may run now, alongside the running compactions.
    pub(crate) fn allows(&self, c: &Compaction) -> bool {
        let (start, end) = c.key_range();
        self.running.iter().all(|r| {
            let shared = c.inputs.iter().any(|(_, f)| r.inputs.contains(&f.number));
            let same_target = r.output_level == c.output_level
                && r.start.as_ref() <= end.as_ref()
                && r.end.as_ref() >= start.as_ref();
            !shared && !same_target
        })
    }

    /// Records `c` as running, under a new id; [`Busy::finish`] forgets it.
    pub(crate) fn claim(&mut self, c: &Compaction) -> u64 {
        let id = self.running.iter().map(|r| r.id + 1).max().unwrap_or(0);
        let (start, end) = c.key_range();
        let inputs = c.inputs.iter().map(|(_, f)| f.number).collect();
        self.running.push(Claim { id, output_level: c.output_level, start, end, inputs });
        id
    }

    pub(crate) fn finish(&mut self, id: u64) {
        self.running.retain(|r| r.id != id);
    }
}

/// The byte target of `level` (1 and deeper).
fn level_target_bytes(level1_bytes_max: u64, level: usize) -> u64 {
    let exp = u32::try_from(level.saturating_sub(1)).unwrap_or(u32::MAX);
    level1_bytes_max.saturating_mul(LEVEL_SIZE_RATIO.saturating_pow(exp))
}

/// When level 0 is due for a compaction, and when it goes before every deeper level.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Level0 {
    /// Tables at which level 0 is due (its score is its tables over this).
    pub due_files: usize,
    /// Tables at which writers slow down: level 0 then goes first whatever the scores.
    pub urgent_files: usize,
}

/// The compaction the tree needs most that may run alongside the running ones, if any: the
/// level with the highest score, as in RocksDB, level 0's being its table count over
/// `level0.due_files` and a deeper level's its bytes over its target; level 0 first among
/// equals (its tables cost every read a lookup), and first whatever the scores once writers
/// are slowed for it. With no level due, a bottom-level table whose droppable entries no
/// snapshot needs (`oldest_snapshot` is the oldest pinned sequence number) is rewritten. Putting level 0 first whenever it was due starved level 1 under a steady
/// load with one compaction worker: level 1 grew far past its target and every level-0
/// compaction rewrote all of it (a 3M-key load: write amplification 9.9 against 8.7 by score,
/// 232,000 against 314,000 puts/s).
pub(crate) fn pick(
    version: &Version,
    level0: Level0,
    level1_bytes_max: u64,
    oldest_snapshot: Option<u64>,
    busy: &mut Busy,
) -> Option<Compaction> {
    let mut scored: Vec<(f64, usize)> = (1..LEVELS - 1)
        .map(|level| {
            let bytes: u64 = version.levels[level].iter().map(|f| f.file_bytes).sum();
            (bytes as f64 / level_target_bytes(level1_bytes_max, level) as f64, level)
        })
        .filter(|&(score, _)| score >= 1.0)
        .collect();
    let files = version.levels[0].len();
    if files >= level0.urgent_files.max(1) {
        // Writers are slowed or stopped until level 0 shrinks: it goes first.
        scored.push((f64::INFINITY, 0));
    } else if files >= level0.due_files.max(1) {
        scored.push((files as f64 / level0.due_files.max(1) as f64, 0));
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for level in scored.into_iter().map(|(_, l)| l) {
        if level == 0 {
            let c = with_overlaps(version, 0, version.levels[0].clone());
            if busy.allows(&c) {
                return Some(c);
            }
            continue;
        }
        // Round-robin by key from where the last choice at this level ended, skipping tables
        // a running compaction holds.
        let files = &version.levels[level];
        let after = busy.pointers.next_key[level].clone();
        let start = files.iter().position(|f| f.smallest_key.as_ref() > after.as_slice());
        let order =
            files.iter().skip(start.unwrap_or(0)).chain(files.iter().take(start.unwrap_or(0)));
        for file in order {
            let c = with_overlaps(version, level, vec![Arc::clone(file)]);
            if busy.allows(&c) {
                busy.pointers.next_key[level] = file.largest_key.to_vec();
                return Some(c);
            }
        }
    }
    pick_droppable(version, oldest_snapshot, busy)
}

/// A bottom-level table (level 1 or deeper) holding droppable entries that no snapshot needs:
/// every entry is at or below the oldest snapshot, so all versions of a key fall in one stripe
/// and a rewrite drops every droppable entry (the output counts none, and is not picked again).
fn pick_droppable(
    version: &Version,
    oldest_snapshot: Option<u64>,
    busy: &Busy,
) -> Option<Compaction> {
    let unneeded = |f: &FileMeta| oldest_snapshot.is_none_or(|oldest| f.max_seq <= oldest);
    (1..LEVELS)
        .flat_map(|level| version.levels[level].iter().map(move |f| (level, f)))
        .filter(|(level, f)| f.droppable > 0 && unneeded(f) && is_bottom(version, *level, f))
        .map(|(level, f)| in_place(level, vec![Arc::clone(f)]))
        .find(|c| busy.allows(c))
}

/// [`pick`] under `options`. Level 0 is compacted at the slowdown threshold at the latest,
/// or writes would stall for a compaction that never comes.
pub(crate) fn pick_due(
    version: &Version,
    options: &crate::options::Options,
    oldest_snapshot: Option<u64>,
    busy: &mut Busy,
) -> Option<Compaction> {
    let l0_files = options.l0_compaction_files.min(options.l0_slowdown_files);
    let l0 = Level0 { due_files: l0_files, urgent_files: options.l0_slowdown_files };
    pick(version, l0, options.level1_bytes_max, oldest_snapshot, busy)
}

/// Whether `version` needs a compaction under `options`.
pub(crate) fn due(
    version: &Version,
    options: &crate::options::Options,
    oldest_snapshot: Option<u64>,
) -> bool {
    pick_due(version, options, oldest_snapshot, &mut Busy::default()).is_some()
}

/// A compaction of `chosen` (tables of `level`) with the tables of `level + 1` they overlap.
fn with_overlaps(version: &Version, level: usize, chosen: Vec<Arc<FileMeta>>) -> Compaction {
    let start = chosen.iter().map(|f| f.smallest_key.clone()).min().unwrap_or_default();
    let end = chosen.iter().map(|f| f.largest_key.clone()).max().unwrap_or_default();
    let mut inputs: Vec<_> = chosen.into_iter().map(|f| (level, f)).collect();
    for f in &version.levels[level + 1] {
        if f.overlaps(&start, &end) {
            inputs.push((level + 1, Arc::clone(f)));
        }
    }
    Compaction { output_level: level + 1, inputs, move_allowed: true }
}

/// The compactions `compact_range(start, end)` needs at `level`: its tables overlapping the
/// range (all of level 0, for the reason in the module header) into `level + 1`. A table
/// larger than `target_file_bytes` allows is rewritten, not moved down whole: a manual
/// compaction's outputs respect the target.
pub(crate) fn pick_range(
    version: &Version,
    level: usize,
    start: &[u8],
    end: &[u8],
    target_file_bytes: u64,
) -> Option<Compaction> {
    let files = &version.levels[level];
    let chosen: Vec<Arc<FileMeta>> = if level == 0 {
        if files.iter().any(|f| f.overlaps(start, end)) {
            files.clone()
        } else {
            Vec::new()
        }
    } else {
        files.iter().filter(|f| f.overlaps(start, end)).cloned().collect()
    };
    let oversized = chosen.iter().any(|f| oversized(f, target_file_bytes));
    (!chosen.is_empty())
        .then(|| Compaction { move_allowed: !oversized, ..with_overlaps(version, level, chosen) })
}

/// A step of the last pass of `compact_range(start, end)`, at `level`, the deepest holding
/// data: the first run of neighbouring tables in the range, past the key `after` if given and
/// numbered below `files_below`, that hold droppable entries or are larger than
/// `target_file_bytes` allows, rewritten in place (RocksDB's `bottommost_level_compaction = kForce`, limited to the tables it can
/// change). One run, not every such table at once: merged across a table left alone, an output
/// could span it, and tables of one level must not overlap. Under a snapshot that still needs
/// the entries the rewrite keeps them, and the background takes them once it is released.
pub(crate) fn pick_range_bottom(
    version: &Version,
    level: usize,
    (start, end): (&[u8], &[u8]),
    after: Option<&[u8]>,
    files_below: u64,
    target_file_bytes: u64,
) -> Option<Compaction> {
    let rewrite = |f: &&Arc<FileMeta>| {
        f.number < files_below && (f.droppable > 0 || oversized(f, target_file_bytes))
    };
    let chosen: Vec<Arc<FileMeta>> = version.levels[level]
        .iter()
        .filter(|f| f.overlaps(start, end))
        .filter(|f| after.is_none_or(|after| f.smallest_key.as_ref() > after))
        .skip_while(|f| !rewrite(f))
        .take_while(rewrite)
        .take(IN_PLACE_TABLES_MAX)
        .cloned()
        .collect();
    (!chosen.is_empty()).then(|| in_place(level, chosen))
}

/// Runs `c`; its input tables, now obsolete, go to the VersionSet to be deleted once no
/// reader holds them.
pub(crate) async fn run(env: &JobEnv<'_>, c: Compaction) -> Result<()> {
    let mut edit = VersionEdit {
        next_file_number: None,
        deleted: c.inputs.iter().map(|(l, f)| (*l as u8, f.number)).collect(),
        ..VersionEdit::default()
    };
    if c.is_trivial_move() {
        let moved = c.inputs.iter().map(|(_, f)| (c.output_level as u8, FileMeta::clone(f)));
        edit.added.extend(moved);
        let _phase = PhaseGuard::enter(env.rt, Phase::CompactionInstall);
        env.versions.log_and_apply(edit, |v| env.reads.install_version(v, None)).await?;
        tracing::debug!(tables = c.inputs.len(), level = c.output_level, "moved");
        return Ok(());
    }
    let timer = Timer::start(env.rt, &env.counters.latency.compaction);
    let (outputs, garbage) = write_outputs(env, &c).await?;
    edit.blob_garbage = garbage;
    let written: u64 = outputs.iter().map(|f| f.file_bytes).sum();
    let read: u64 = c.inputs.iter().map(|(_, f)| f.file_bytes).sum();
    Counters::add(&env.counters.compaction_bytes_read, read);
    Counters::add(&env.counters.compaction_bytes_written, written);
    Counters::add(&env.counters.level_bytes_written[c.output_level], written);
    edit.next_file_number = Some(env.versions.peek_next_file_number());
    edit.added.extend(outputs.into_iter().map(|f| (c.output_level as u8, f)));
    let _phase = PhaseGuard::enter(env.rt, Phase::CompactionInstall);
    env.versions.log_and_apply(edit, |v| env.reads.install_version(v, None)).await?;
    Counters::add(&env.counters.compactions, 1);
    timer.stop();
    tracing::debug!(inputs = c.inputs.len(), level = c.output_level, read, written, "compacted");
    Ok(())
}

/// Merges the inputs into new tables of the output level, synced and named durably (their
/// numbers pending until the edit naming them is installed). Writes go through the compaction rate limiter, charged every
/// `RATE_CHARGE_BYTES`. Flushes run meanwhile in their own pool: a flush only adds a level-0
/// table newer than every input, which changes nothing the compaction decided.
/// Returns the outputs and the blob record bytes that entries it dropped pointed to.
async fn write_outputs(
    env: &JobEnv<'_>,
    c: &Compaction,
) -> Result<(Vec<FileMeta>, Vec<(u64, u64)>)> {
    let mut pinned = env.reads.pinned_snapshots();
    if env.options.has_bug(crate::options::PlantedBug::CompactionIgnoresSnapshots) {
        pinned.clear();
    }
    let retention = Retention::new(pinned);
    let version = env.versions.current();
    let deeper = &version.levels[c.output_level + 1..];
    let key_may_be_deeper =
        |key: &[u8]| deeper.iter().any(|files| files.iter().any(|f| f.contains_key(key)));
    let mut cursors = Vec::with_capacity(c.inputs.len());
    for (_, f) in &c.inputs {
        let table = env.table_cache.get(f.number, f.file_bytes).await?;
        let mut it = table.iter_uncached();
        it.seek_to_first().await?;
        cursors.push(it);
    }
    let planted = env.options.has_bug(crate::options::PlantedBug::BlobGarbageIgnoresSnapshots);
    let mut merge = MergeIter::new(cursors).planting_snapshot_garbage(planted);
    let mut outputs = Vec::new();
    let mut writer: Option<(u64, TableWriter)> = None;
    // Bytes of the current output already charged to the rate limiter.
    let mut charged = 0;
    let mut last_key = Vec::new();
    // Planted: the records of kept pointers are counted as garbage too.
    let count_kept = env.options.has_bug(crate::options::PlantedBug::BlobGarbageCountsLive);
    let mut kept_garbage = std::collections::BTreeMap::<u64, u64>::new();
    while let Some(kept) = merge.next_kept(&retention, key_may_be_deeper).await? {
        let new_key = kept.user_key != last_key.as_slice();
        let full = writer
            .as_ref()
            .is_some_and(|(_, w)| w.estimated_bytes() >= env.options.target_file_bytes);
        if new_key && full {
            let (number, w) = writer.take().expect("checked");
            outputs.push(finish_output(env, number, w, charged).await?);
            charged = 0;
            if buggify(env.rt, "compaction.delay") {
                // A long compaction: flushes and writes keep going meanwhile.
                env.rt.sleep(std::time::Duration::from_millis(1 + env.rt.random_u64() % 10)).await;
            }
        }
        if new_key {
            last_key.clear();
            last_key.extend_from_slice(kept.user_key);
        }
        if writer.is_none() {
            writer = Some(new_output(env).await?);
        }
        let (seq, blob, value) = (kept.seq, kept.blob, kept.value.map(<[u8]>::to_vec));
        if let Some(pointer) = value.as_deref().filter(|_| blob && count_kept) {
            if let Some(p) = crate::blob::BlobPointer::decode(pointer) {
                let counted = kept_garbage.entry(p.file).or_default();
                *counted = counted.saturating_add(p.len);
            }
        }
        let (_, w) = writer.as_mut().expect("just made");
        match value {
            Some(pointer) if blob => w.add_blob(&last_key, seq, &pointer).await?,
            value => w.add(&last_key, seq, value.as_deref()).await?,
        }
        let owed = w.estimated_bytes().saturating_sub(charged);
        if owed >= RATE_CHARGE_BYTES {
            env.compaction_limiter.charge(env.rt, env.counters, owed).await;
            charged += owed;
        }
        merge.advance().await?;
    }
    if let Some((number, w)) = writer {
        outputs.push(finish_output(env, number, w, charged).await?);
    }
    if !outputs.is_empty() {
        // The outputs' names must be durable before the MANIFEST names them.
        let dir = env.dir;
        env.rt.fs().sync_dir(dir).await.map_err(|e| Error::io("syncing directory", dir, e))?;
    }
    let mut garbage = merge.garbage();
    for (file, bytes) in kept_garbage {
        match garbage.iter_mut().find(|(f, _)| *f == file) {
            Some((_, counted)) => *counted = counted.saturating_add(bytes),
            None => garbage.push((file, bytes)),
        }
    }
    Ok((outputs, garbage))
}

async fn new_output(env: &JobEnv<'_>) -> Result<(u64, TableWriter)> {
    let number = env.versions.new_table();
    let path = env.dir.join(sstable::file_name(number));
    let file = env.rt.fs().create(&path).await.map_err(|e| Error::io("creating", &path, e))?;
    Ok((number, TableWriter::new(file, path, env.options.table_options())))
}

/// Finishes output table `number`, charging the rate limiter what `charged` has not covered.
async fn finish_output(
    env: &JobEnv<'_>,
    number: u64,
    w: TableWriter,
    charged: u64,
) -> Result<FileMeta> {
    let droppable = w.droppable();
    let props = w.finish().await?;
    let rest = props.file_bytes.saturating_sub(charged);
    env.compaction_limiter.charge(env.rt, env.counters, rest).await;
    Ok(crate::flush::file_meta(number, &props, droppable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::meta;

    /// Level 0 due at `files` tables, never urgent.
    fn due(files: usize) -> Level0 {
        Level0 { due_files: files, urgent_files: usize::MAX }
    }

    #[test]
    fn the_highest_score_goes_first_and_level_zero_once_writers_are_slowed() {
        // Two level-0 tables against a trigger of 2 (score 1); level 1 holds 300 bytes against
        // a 100-byte target (score 3).
        let v = version(vec![
            (0, meta(1, "a", "b", (8, 8))),
            (0, meta(2, "a", "b", (9, 9))),
            (1, meta(3, "c", "d", (1, 1))),
            (1, meta(4, "e", "f", (2, 2))),
            (1, meta(5, "g", "h", (3, 3))),
        ]);
        let c = pick(&v, due(2), 100, None, &mut Busy::default()).unwrap();
        assert_eq!(c.output_level, 2, "level 1 is furthest past its target");
        let slowed = Level0 { due_files: 2, urgent_files: 2 };
        let c = pick(&v, slowed, 100, None, &mut Busy::default()).unwrap();
        assert_eq!(c.output_level, 1, "writers wait on level 0");
    }

    fn version(files: Vec<(u8, FileMeta)>) -> Version {
        let edit = VersionEdit { added: files, ..VersionEdit::default() };
        Version::default().apply(&edit).unwrap()
    }

    #[test]
    fn level_zero_goes_whole_with_its_level_one_overlaps() {
        let v = version(vec![
            (0, meta(1, "c", "f", (1, 2))),
            (0, meta(2, "e", "h", (3, 4))),
            (1, meta(3, "a", "b", (0, 0))),
            (1, meta(4, "g", "k", (0, 0))),
        ]);
        assert!(pick(&v, due(3), 1 << 30, None, &mut Busy::default()).is_none());
        let c = pick(&v, due(2), 1 << 30, None, &mut Busy::default()).unwrap();
        assert_eq!(c.output_level, 1);
        let numbers: Vec<u64> = c.inputs.iter().map(|(_, f)| f.number).collect();
        assert_eq!(numbers, [2, 1, 4]);
    }

    #[test]
    fn level_zero_tables_that_share_no_key_move_down_whole() {
        // Flushes of keys written in order: disjoint, and nothing in level 1 under them.
        let disjoint = version(vec![
            (0, meta(1, "a", "c", (1, 2))),
            (0, meta(2, "d", "f", (3, 4))),
            (0, meta(3, "g", "h", (5, 6))),
            (1, meta(4, "x", "z", (0, 0))),
        ]);
        let c = pick(&disjoint, due(3), 1 << 30, None, &mut Busy::default()).unwrap();
        assert_eq!(c.inputs.len(), 3);
        assert!(c.is_trivial_move());
        // Two of them touch at "c": one key in both, so they are merged.
        let touching =
            version(vec![(0, meta(1, "a", "c", (1, 2))), (0, meta(2, "c", "f", (3, 4)))]);
        let c = pick(&touching, due(2), 1 << 30, None, &mut Busy::default()).unwrap();
        assert!(!c.is_trivial_move());
        // A level-1 table under one of them: merged too.
        let under = version(vec![
            (0, meta(1, "a", "c", (1, 2))),
            (0, meta(2, "d", "f", (3, 4))),
            (1, meta(3, "e", "e", (0, 0))),
        ]);
        let c = pick(&under, due(2), 1 << 30, None, &mut Busy::default()).unwrap();
        assert_eq!(c.inputs.len(), 3);
        assert!(!c.is_trivial_move());
    }

    #[test]
    fn deeper_levels_go_round_robin_by_key() {
        let v = version(vec![
            (1, meta(1, "a", "b", (1, 1))),
            (1, meta(2, "c", "d", (2, 2))),
            (2, meta(3, "c", "c", (0, 0))),
        ]);
        let mut busy = Busy::default();
        // 200 bytes against a 150-byte level-1 target.
        let first = pick(&v, due(4), 150, None, &mut busy).unwrap();
        assert_eq!(first.inputs.iter().map(|(_, f)| f.number).collect::<Vec<_>>(), [1]);
        assert!(first.is_trivial_move());
        let second = pick(&v, due(4), 150, None, &mut busy).unwrap();
        assert_eq!(second.inputs.iter().map(|(_, f)| f.number).collect::<Vec<_>>(), [2, 3]);
        let third = pick(&v, due(4), 150, None, &mut busy).unwrap();
        assert_eq!(third.inputs[0].1.number, 1, "wraps around");
    }

    #[test]
    fn running_compactions_keep_their_tables_and_their_output_ranges() {
        let v = version(vec![
            (0, meta(1, "a", "z", (9, 9))),
            (1, meta(2, "a", "c", (1, 1))),
            (1, meta(3, "m", "p", (2, 2))),
            (1, meta(4, "x", "y", (3, 3))),
            (2, meta(5, "b", "b", (0, 0))),
        ]);
        let mut busy = Busy::default();
        // 300 bytes against a 100-byte level-1 target; level 0 (one table) not due.
        let first = pick(&v, due(4), 100, None, &mut busy).unwrap();
        assert_eq!(first.inputs.iter().map(|(_, f)| f.number).collect::<Vec<_>>(), [2, 5]);
        let id = busy.claim(&first);
        let second = pick(&v, due(4), 100, None, &mut busy).unwrap();
        assert_eq!(second.inputs[0].1.number, 3, "the next table, not one already taken");
        busy.claim(&second);
        // Level 0 into level 1 would take tables 2 and 3, which run: it waits.
        assert!(pick(&v, due(1), 1 << 30, None, &mut busy).is_none());
        // A range that writes into level 2 over [b, c] collides with the first compaction's
        // output even though it shares no table with it.
        let gap = with_overlaps(&v, 1, vec![Arc::new(meta(9, "c", "c", (5, 5)))]);
        assert!(!busy.allows(&gap));
        busy.finish(id);
        assert!(busy.allows(&gap));
    }

    /// `f` counting `n` droppable entries.
    fn droppable(mut f: FileMeta, n: u64) -> FileMeta {
        f.droppable = n;
        f
    }

    #[test]
    fn a_bottom_table_is_rewritten_once_no_snapshot_needs_what_it_could_drop() {
        let v = version(vec![
            // Over table 3's range: not at the bottom, its tombstones may hide table 3's keys.
            (1, droppable(meta(1, "a", "c", (5, 9)), 4)),
            (1, droppable(meta(2, "m", "p", (6, 20)), 3)),
            (1, meta(4, "x", "y", (1, 2))),
            (2, meta(3, "b", "b", (0, 0))),
        ]);
        let pick_with = |oldest| pick(&v, due(8), 1 << 30, oldest, &mut Busy::default());
        // A snapshot at 19 still reads versions table 2 holds below its newer ones.
        assert!(pick_with(Some(19)).is_none());
        for oldest in [Some(20), None] {
            let c = pick_with(oldest).expect("table 2 is due");
            assert_eq!(c.output_level, 1);
            assert_eq!(c.inputs.iter().map(|(l, f)| (*l, f.number)).collect::<Vec<_>>(), [(1, 2)]);
            assert!(!c.is_trivial_move());
        }
        // Levels due go first.
        assert_eq!(pick(&v, due(8), 100, None, &mut Busy::default()).unwrap().output_level, 2);
    }

    #[test]
    fn a_manual_compaction_rewrites_what_it_would_otherwise_move_or_leave() {
        let mut big = meta(1, "a", "c", (1, 1));
        big.file_bytes = 20_000;
        let mut garbage = meta(2, "m", "p", (2, 2));
        garbage.droppable = 1;
        let v = version(vec![(1, big), (2, garbage), (2, meta(3, "x", "y", (3, 3)))]);
        let c = pick_range(&v, 1, b"a", b"c", 4_000).unwrap();
        assert!(!c.is_trivial_move(), "a table of 20,000 bytes against a 4,000-byte target");
        assert!(pick_range(&v, 1, b"a", b"c", 8_000).unwrap().is_trivial_move());
        let all: (&[u8], &[u8]) = (b"", b"\xff");
        let bottom = pick_range_bottom(&v, 2, all, None, u64::MAX, 4_000).unwrap();
        assert_eq!(bottom.inputs.iter().map(|(_, f)| f.number).collect::<Vec<_>>(), [2]);
        assert_eq!(bottom.output_level, 2);
        assert!(pick_range_bottom(&v, 2, (b"q", b"z"), None, u64::MAX, 4_000).is_none());
        assert!(pick_range_bottom(&v, 2, all, Some(b"p"), u64::MAX, 4_000).is_none());
    }

    #[test]
    fn a_manual_rewrite_in_place_takes_neighbours_only() {
        let with = droppable;
        let v = version(vec![
            (3, with(meta(1, "a", "b", (1, 1)), 1)),
            (3, with(meta(2, "c", "d", (2, 2)), 1)),
            (3, meta(3, "e", "f", (3, 3))),
            (3, with(meta(4, "g", "h", (4, 4)), 1)),
        ]);
        let all: (&[u8], &[u8]) = (b"", b"\xff");
        let numbers = |c: Compaction| c.inputs.iter().map(|(_, f)| f.number).collect::<Vec<_>>();
        // Tables 1 and 4 merged could write an output spanning table 3.
        assert_eq!(
            numbers(pick_range_bottom(&v, 3, all, None, u64::MAX, 1 << 20).unwrap()),
            [1, 2]
        );
        assert_eq!(
            numbers(pick_range_bottom(&v, 3, all, Some(b"d"), u64::MAX, 1 << 20).unwrap()),
            [4]
        );
        assert!(pick_range_bottom(&v, 3, all, Some(b"h"), u64::MAX, 1 << 20).is_none());
        // Tables numbered from where the pass began on (written since) are not its to take.
        assert_eq!(numbers(pick_range_bottom(&v, 3, all, None, 2, 1 << 20).unwrap()), [1]);
        // A long run is taken a bounded part at a time.
        let run: Vec<(u8, FileMeta)> = (0..40u64)
            .map(|i| (4, with(meta(10 + i, &format!("k{i:02}a"), &format!("k{i:02}b"), (i, i)), 1)))
            .collect();
        let v = version(run);
        let first = numbers(pick_range_bottom(&v, 4, all, None, u64::MAX, 1 << 20).unwrap());
        assert_eq!(first, (10..10 + IN_PLACE_TABLES_MAX as u64).collect::<Vec<_>>());
    }

    #[test]
    fn level_targets_grow_tenfold() {
        assert_eq!(level_target_bytes(100, 1), 100);
        assert_eq!(level_target_bytes(100, 3), 10_000);
        assert_eq!(level_target_bytes(u64::MAX, 5), u64::MAX);
    }
}
