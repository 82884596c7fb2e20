//! What one file holds on the next boot: its durable image plus a seeded choice of its unsynced
//! blocks, a possibly torn last write, and holes of zeros or garbage.
//!
//! Invariant: a crash image differs from the durable image only inside blocks written since the
//! last successful sync, and only in its length within the range between the durable and the
//! current size. Synced bytes always come back exactly.

use super::image::{block_range, FileData, SECTOR_SIZE};
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use std::ops::Range;

/// What a crash did to unsynced data, summed over every surviving file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Files on the new disk.
    pub files: u64,
    /// Unsynced blocks whose new content survived.
    pub blocks_new: u64,
    /// Unsynced blocks that reverted to their durable content (zeros past the durable end).
    pub blocks_old: u64,
    /// Unsynced blocks whose part past the durable end became random garbage.
    pub blocks_garbage: u64,
    /// Last writes torn at sector granularity.
    pub torn_writes: u64,
}

/// How a crash treats unsynced data.
pub(super) enum Mode<'a> {
    /// Keep a seeded subset of it.
    Seeded(&'a mut ChaCha8Rng),
    /// Drop all of it: the next boot sees exactly the durable images.
    DurableOnly,
}

/// How many of a directory's `pending` unsynced changes survive: a seeded prefix length.
pub(super) fn changes_kept(mode: &mut Mode<'_>, pending: usize) -> usize {
    match mode {
        Mode::Seeded(rng) if pending > 0 => rng.gen_range(0..=pending),
        _ => 0,
    }
}

/// The contents of `file` on the next boot.
pub(super) fn image(file: &FileData, mode: &mut Mode<'_>, report: &mut CrashReport) -> Vec<u8> {
    report.files += 1;
    match mode {
        Mode::Seeded(rng) => seeded_image(file, rng, report),
        Mode::DurableOnly => file.durable.clone(),
    }
}

fn seeded_image(file: &FileData, rng: &mut ChaCha8Rng, report: &mut CrashReport) -> Vec<u8> {
    let len = crash_len(file, rng);
    let mut img = file.durable.clone();
    img.resize(len, 0);
    // `dirty` is sorted, so the first block past the new end ends the walk.
    for &block in &file.dirty {
        let range = block_range(block, len);
        if range.is_empty() {
            break;
        }
        apply_block(&mut img, file, range, rng, report);
    }
    if let Some(write) = &file.last_write {
        if rng.gen_bool(0.5) {
            tear(&mut img, file, write.clone(), rng);
            report.torn_writes += 1;
        }
    }
    img
}

/// A size between the durable and the current one. The two ends get a quarter of the draws
/// each, because "all of it" and "none of it" are the cases recovery code most often gets wrong.
fn crash_len(file: &FileData, rng: &mut ChaCha8Rng) -> usize {
    let (durable, current) = (file.durable.len(), file.current.len());
    let (lo, hi) = (durable.min(current), durable.max(current));
    if lo == hi {
        return lo;
    }
    match rng.gen_range(0..4u8) {
        0 => durable,
        1 => current,
        _ => rng.gen_range(lo..=hi),
    }
}

/// Decides one unsynced block: new content, old content, or garbage past the durable end.
fn apply_block(
    img: &mut [u8],
    file: &FileData,
    range: Range<usize>,
    rng: &mut ChaCha8Rng,
    report: &mut CrashReport,
) {
    match rng.gen_range(0..3u8) {
        0 => {
            copy_new(img, file, range);
            report.blocks_new += 1;
        }
        // `img` already holds the durable bytes there, and zeros past the durable end.
        1 => report.blocks_old += 1,
        _ => {
            let start = range.start.max(file.durable.len());
            if start < range.end {
                rng.fill_bytes(&mut img[start..range.end]);
            }
            report.blocks_garbage += 1;
        }
    }
}

/// Tears the last write at sector granularity: either a prefix of its sectors reached the
/// device, or an arbitrary subset did (the device reordered them). Each sector the write
/// touched is then wholly new or wholly old within the write's bytes.
fn tear(img: &mut [u8], file: &FileData, write: Range<usize>, rng: &mut ChaCha8Rng) {
    let write = write.start..write.end.min(img.len());
    if write.is_empty() {
        return;
    }
    let first = write.start / SECTOR_SIZE;
    let sectors = (write.end - 1) / SECTOR_SIZE - first + 1;
    let as_prefix = rng.gen_bool(0.5);
    let prefix = rng.gen_range(0..=sectors);
    for i in 0..sectors {
        let landed = if as_prefix { i < prefix } else { rng.gen_bool(0.5) };
        let sector = (first + i) * SECTOR_SIZE;
        let range = sector.max(write.start)..(sector + SECTOR_SIZE).min(write.end);
        if landed {
            copy_new(img, file, range);
        } else {
            copy_old(img, file, range);
        }
    }
}

/// Copies the current bytes of `range` that exist (a truncate may have cut them off).
fn copy_new(img: &mut [u8], file: &FileData, range: Range<usize>) {
    let end = range.end.min(file.current.len());
    if range.start < end {
        img[range.start..end].copy_from_slice(&file.current[range.start..end]);
    }
}

/// Puts back the durable bytes of `range`, and zeros where the durable image ends.
fn copy_old(img: &mut [u8], file: &FileData, range: Range<usize>) {
    let split = range.end.min(file.durable.len()).max(range.start);
    if range.start < split {
        img[range.start..split].copy_from_slice(&file.durable[range.start..split]);
    }
    img[split..range.end].fill(0);
}

#[cfg(test)]
mod tests {
    use super::super::image::BLOCK_SIZE;
    use super::*;
    use rand::SeedableRng;

    /// A file after a random history of writes, truncates, syncs and (unless `failures` is
    /// false) failed syncs.
    fn random_file(rng: &mut ChaCha8Rng, failures: bool) -> FileData {
        let mut file = FileData::default();
        for _ in 0..rng.gen_range(1..40) {
            match rng.gen_range(0..10u8) {
                0..=5 => {
                    let mut data = vec![0u8; rng.gen_range(1..6_000)];
                    rng.fill_bytes(&mut data);
                    file.write(rng.gen_range(0..20_000), &data).unwrap();
                }
                6 => file.truncate(rng.gen_range(0..20_000)).unwrap(),
                9 if failures => file.fail_sync(),
                _ => file.sync(),
            }
        }
        file
    }

    #[test]
    fn a_crash_changes_only_unsynced_blocks_and_the_size_within_bounds() {
        for seed in 0..500 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let file = random_file(&mut rng, true);
            let img = image(&file, &mut Mode::Seeded(&mut rng), &mut CrashReport::default());
            let (d, c) = (file.durable.len(), file.current.len());
            assert!((d.min(c)..=d.max(c)).contains(&img.len()), "seed={seed}");
            for (i, &byte) in img.iter().enumerate() {
                if !file.dirty.contains(&(i / BLOCK_SIZE)) {
                    let durable = file.durable.get(i).copied().unwrap_or(0);
                    assert_eq!(byte, durable, "seed={seed}: clean byte {i} changed");
                }
            }
        }
    }

    #[test]
    fn a_synced_file_comes_back_exactly() {
        for seed in 0..200 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut file = random_file(&mut rng, false);
            file.sync();
            let img = image(&file, &mut Mode::Seeded(&mut rng), &mut CrashReport::default());
            assert_eq!(img, file.current, "seed={seed}");
        }
    }

    #[test]
    fn after_a_failed_sync_a_later_sync_keeps_only_what_it_covered() {
        for seed in 0..200 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut file = random_file(&mut rng, true);
            file.sync();
            // Nothing is unsynced now, so every seed gives the durable image, lost bytes and all.
            let img = image(&file, &mut Mode::Seeded(&mut rng), &mut CrashReport::default());
            assert_eq!(img, file.durable, "seed={seed}");
        }
    }

    #[test]
    fn keep_nothing_is_the_durable_image() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let file = random_file(&mut rng, true);
        let img = image(&file, &mut Mode::DurableOnly, &mut CrashReport::default());
        assert_eq!(img, file.durable);
    }
}
