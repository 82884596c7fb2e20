//! What one file holds on the next boot: its durable image plus a seeded choice of its unsynced
//! blocks (or, with [`CrashModel::tear_sectors`], of their 512-byte sectors), a possibly torn
//! last write, and holes of zeros or garbage; and which unsynced directory changes survive.
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
    /// Unsynced blocks whose sectors landed independently, some new and some old
    /// ([`CrashModel::tear_sectors`]): any unsynced write, not only the last, may be torn.
    pub blocks_torn: u64,
    /// Unsynced directory changes that survived while an earlier one of the same directory did
    /// not ([`CrashModel::unordered_dirs`]).
    pub dir_changes_out_of_order: u64,
}

/// Which of the crash behaviours that real file systems differ on this disk shows. The default
/// is the behaviour of ext4 with its ordered journal on a disk with atomic 4 KiB blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashModel {
    /// Unsynced blocks may land sector by sector: each 512-byte sector of a block written since
    /// the last sync independently keeps its new or its old content, so every unsynced write,
    /// not only the last, may come back torn (a disk without atomic 4 KiB writes).
    pub tear_sectors: bool,
    /// Unsynced directory changes survive as any subset, not only as a prefix in the order
    /// they were made (a file system without ordered metadata, such as ext2 or ext4 with
    /// `data=writeback`): a rename may survive without the create before it.
    pub unordered_dirs: bool,
}

/// How a crash treats unsynced data.
pub(super) enum Mode<'a> {
    /// Keep a seeded subset of it.
    Seeded(&'a mut ChaCha8Rng, CrashModel),
    /// Drop all of it: the next boot sees exactly the durable images.
    DurableOnly,
    /// Make the choices the tape says; [`Tape::advance`] moves to the next combination, so
    /// that crashing again and again enumerates every crash image (see [`every_image`]).
    Every(&'a mut Tape, CrashModel),
}

/// The choices of one crash image, made one after another: each choice is among a number of
/// options known when it is made, and may decide which choices follow. Advancing the tape like
/// an odometer (the last choice first) walks every combination once, in depth-first order.
#[derive(Debug, Default)]
pub struct Tape {
    /// Each choice made: the option taken, and of how many.
    choices: Vec<(usize, usize)>,
    /// The next choice to make.
    at: usize,
    /// Set once enumerating is given up: every choice is then drawn from it instead, so the
    /// images left to make are spread over every choice, not only the last ones.
    random: Option<ChaCha8Rng>,
}

impl Tape {
    /// The option taken among `of` (0 for a choice of at most one).
    fn pick(&mut self, of: usize) -> usize {
        if of <= 1 {
            return 0;
        }
        if let Some(rng) = &mut self.random {
            return rng.gen_range(0..of);
        }
        let taken = match self.choices.get(self.at) {
            Some(&(taken, n)) => {
                debug_assert_eq!(n, of, "a replayed choice changed its options");
                taken
            }
            None => {
                self.choices.push((0, of));
                0
            }
        };
        self.at += 1;
        taken
    }

    /// Starts the next crash image's choices from the first.
    pub(super) fn rewind(&mut self) {
        self.at = 0;
    }

    /// Whether choices are drawn at random rather than enumerated.
    pub(super) fn is_random(&self) -> bool {
        self.random.is_some()
    }

    /// From now on, draws every choice from a generator seeded with `seed`.
    pub(super) fn randomize(&mut self, seed: u64) {
        self.random = Some(rand::SeedableRng::seed_from_u64(seed));
    }

    /// Moves to the next combination: the last choice with an option left takes its next one
    /// and every choice after it starts over. Returns false once every combination was made.
    pub(super) fn advance(&mut self) -> bool {
        self.choices.truncate(self.at);
        while let Some((taken, of)) = self.choices.pop() {
            if taken + 1 < of {
                self.choices.push((taken + 1, of));
                return true;
            }
        }
        false
    }
}

/// Which of a directory's `pending` unsynced changes survive, in the order they were made: a
/// seeded prefix, or with [`CrashModel::unordered_dirs`] a seeded subset.
pub(super) fn changes_kept(
    mode: &mut Mode<'_>,
    pending: usize,
    report: &mut CrashReport,
) -> Vec<bool> {
    match mode {
        Mode::Seeded(rng, model) if pending > 0 => {
            if model.unordered_dirs && rng.gen_bool(0.5) {
                let kept: Vec<bool> = (0..pending).map(|_| rng.gen_bool(0.5)).collect();
                let first_lost = kept.iter().position(|&k| !k).unwrap_or(pending);
                let later_kept = kept[first_lost..].iter().filter(|&&k| k).count();
                report.dir_changes_out_of_order += later_kept as u64;
                kept
            } else {
                let n = rng.gen_range(0..=pending);
                (0..pending).map(|i| i < n).collect()
            }
        }
        Mode::Every(tape, model) if pending > 0 => {
            if model.unordered_dirs {
                (0..pending).map(|_| tape.pick(2) == 1).collect()
            } else {
                let n = tape.pick(pending + 1);
                (0..pending).map(|i| i < n).collect()
            }
        }
        _ => vec![false; pending],
    }
}

/// The contents of `file` on the next boot.
pub(super) fn image(file: &FileData, mode: &mut Mode<'_>, report: &mut CrashReport) -> Vec<u8> {
    report.files += 1;
    match mode {
        Mode::Seeded(rng, model) => seeded_image(file, rng, *model, report),
        Mode::DurableOnly => file.durable.clone(),
        Mode::Every(tape, model) => every_image(file, tape, *model),
    }
}

/// One of every image a crash may leave of `file`, as `tape` chooses: a length (the durable
/// one, the current one, or a sector boundary between them), then for each unsynced block
/// within it new, old, or garbage where it lies past the durable end (with
/// [`CrashModel::tear_sectors`]: each of its sectors new or old), then the last write as its
/// blocks left it, wholly landed, landed up to each of its sectors, or any subset of its
/// sectors landed. These are the outcomes the seeded crash draws from, at sector granularity
/// (its lengths fall anywhere, these at sector boundaries), with garbage one fixed pattern
/// rather than every possible byte; some combinations give the same image.
fn every_image(file: &FileData, tape: &mut Tape, model: CrashModel) -> Vec<u8> {
    let (durable, current) = (file.durable.len(), file.current.len());
    let (lo, hi) = (durable.min(current), durable.max(current));
    let mut lens = vec![lo, hi];
    lens.extend((lo / SECTOR_SIZE + 1..).map(|s| s * SECTOR_SIZE).take_while(|&l| l < hi));
    lens.sort_unstable();
    lens.dedup();
    let len = lens[tape.pick(lens.len())];
    let mut img = file.durable.clone();
    img.resize(len, 0);
    for range in unsynced_blocks(file, len) {
        if model.tear_sectors {
            land_sectors(&mut img, file, range, |_| tape.pick(2) == 0);
            continue;
        }
        let garbage_from = range.start.max(file.durable.len());
        let fates = if garbage_from < range.end { 3 } else { 2 };
        match tape.pick(fates) {
            0 => copy_new(&mut img, file, range),
            // `img` already holds the durable bytes there, and zeros past the durable end.
            1 => {}
            _ => {
                for (i, byte) in img[garbage_from..range.end].iter_mut().enumerate() {
                    *byte = (i as u8).wrapping_mul(151).wrapping_add(0x5a);
                }
            }
        }
    }
    if let Some(write) = &file.last_write {
        let write = write.start..write.end.min(img.len());
        if !write.is_empty() {
            let sectors = sectors_of(&write);
            match tape.pick(if sectors > 1 { 4 } else { 2 }) {
                // As the blocks left it.
                0 => {}
                1 => land_sectors(&mut img, file, write, |_| true),
                2 => {
                    let landed = tape.pick(sectors - 1) + 1;
                    land_sectors(&mut img, file, write, |i| i < landed);
                }
                _ => land_sectors(&mut img, file, write, |_| tape.pick(2) == 1),
            }
        }
    }
    img
}

/// The byte ranges of the blocks written since the last sync, in order, cut at `len`.
fn unsynced_blocks(file: &FileData, len: usize) -> impl Iterator<Item = Range<usize>> + '_ {
    // `dirty` is sorted, so the first block past the new end ends the walk.
    file.dirty.iter().map(move |&block| block_range(block, len)).take_while(|r| !r.is_empty())
}

/// How many sectors the byte range `write` (not empty) touches.
fn sectors_of(write: &Range<usize>) -> usize {
    (write.end - 1) / SECTOR_SIZE - write.start / SECTOR_SIZE + 1
}

/// Lands the sectors of `write` (a write, or an unsynced block) that `landed` names, by their
/// index in it, in order: each sector it touches is then wholly new or wholly old within it.
fn land_sectors(
    img: &mut [u8],
    file: &FileData,
    write: Range<usize>,
    mut landed: impl FnMut(usize) -> bool,
) {
    let first = write.start / SECTOR_SIZE;
    for i in 0..sectors_of(&write) {
        let sector = (first + i) * SECTOR_SIZE;
        let range = sector.max(write.start)..(sector + SECTOR_SIZE).min(write.end);
        if landed(i) {
            copy_new(img, file, range);
        } else {
            copy_old(img, file, range);
        }
    }
}

fn seeded_image(
    file: &FileData,
    rng: &mut ChaCha8Rng,
    model: CrashModel,
    report: &mut CrashReport,
) -> Vec<u8> {
    let len = crash_len(file, rng);
    let mut img = file.durable.clone();
    img.resize(len, 0);
    for range in unsynced_blocks(file, len) {
        if model.tear_sectors && rng.gen_bool(0.25) {
            tear_block(&mut img, file, range, rng);
            report.blocks_torn += 1;
        } else {
            apply_block(&mut img, file, range, rng, report);
        }
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

/// Lands an unsynced block sector by sector: each sector keeps its new or its old content
/// (zeros past the durable end).
fn tear_block(img: &mut [u8], file: &FileData, range: Range<usize>, rng: &mut ChaCha8Rng) {
    land_sectors(img, file, range, |_| rng.gen_bool(0.5));
}

/// Tears the last write at sector granularity: either a prefix of its sectors reached the
/// device, or an arbitrary subset did (the device reordered them). Each sector the write
/// touched is then wholly new or wholly old within the write's bytes.
fn tear(img: &mut [u8], file: &FileData, write: Range<usize>, rng: &mut ChaCha8Rng) {
    let write = write.start..write.end.min(img.len());
    if write.is_empty() {
        return;
    }
    let as_prefix = rng.gen_bool(0.5);
    let prefix = rng.gen_range(0..=sectors_of(&write));
    land_sectors(img, file, write, |i| if as_prefix { i < prefix } else { rng.gen_bool(0.5) });
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
            let img = image(
                &file,
                &mut Mode::Seeded(&mut rng, CrashModel::default()),
                &mut CrashReport::default(),
            );
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
            let img = image(
                &file,
                &mut Mode::Seeded(&mut rng, CrashModel::default()),
                &mut CrashReport::default(),
            );
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
            let img = image(
                &file,
                &mut Mode::Seeded(&mut rng, CrashModel::default()),
                &mut CrashReport::default(),
            );
            assert_eq!(img, file.durable, "seed={seed}");
        }
    }

    /// Every image `file` may come back as, by the tape (the first 200).
    fn every(file: &FileData, model: CrashModel) -> Vec<Vec<u8>> {
        let mut tape = Tape::default();
        let mut images = Vec::new();
        loop {
            tape.rewind();
            let mode = &mut Mode::Every(&mut tape, model);
            images.push(image(file, mode, &mut CrashReport::default()));
            if !tape.advance() || images.len() == 200 {
                return images;
            }
        }
    }

    #[test]
    fn every_image_changes_only_unsynced_blocks_and_the_size_within_bounds() {
        for seed in 0..40 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let file = random_file(&mut rng, true);
            let model = CrashModel { tear_sectors: seed % 2 == 0, unordered_dirs: false };
            let images = every(&file, model);
            let (d, c) = (file.durable.len(), file.current.len());
            for img in &images {
                assert!((d.min(c)..=d.max(c)).contains(&img.len()), "seed={seed}");
                for (i, &byte) in img.iter().enumerate() {
                    if !file.dirty.contains(&(i / BLOCK_SIZE)) {
                        assert_eq!(byte, file.durable.get(i).copied().unwrap_or(0), "seed={seed}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_image_of_one_unsynced_append_is_enumerated_once() {
        // 1,000 bytes appended to 100 durable ones, in one block. Lengths 100, 512, 1,024 and
        // 1,100; the block new or old (and garbage past byte 100, beyond length 100); the
        // append, over 0, 1, 2 or 3 sectors at those lengths: as the block left it, wholly
        // landed, and for more than one sector each prefix and each subset of its sectors:
        // 2 + 3 * 2 + 3 * (2 + 1 + 4) + 3 * (2 + 2 + 8).
        let mut file = FileData::default();
        file.write(0, &[1; 100]).unwrap();
        file.sync();
        file.write(100, &[2; 1000]).unwrap();
        let images = every(&file, CrashModel::default());
        assert_eq!(images.len(), 2 + 3 * 2 + 3 * (2 + 1 + 4) + 3 * (2 + 2 + 8));
        assert!(images.contains(&file.durable), "the durable image");
        assert!(images.contains(&file.current), "everything landed");
        let mut torn = file.current.clone();
        torn[512..].fill(0);
        assert!(images.contains(&torn), "torn after the first sector");
        let synced = every(
            &{
                let mut f = FileData::default();
                f.write(0, &[3; 700]).unwrap();
                f.sync();
                f
            },
            CrashModel::default(),
        );
        assert_eq!(synced.len(), 1, "a synced file has one image");
    }

    #[test]
    fn keep_nothing_is_the_durable_image() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let file = random_file(&mut rng, true);
        let img = image(&file, &mut Mode::DurableOnly, &mut CrashReport::default());
        assert_eq!(img, file.durable);
    }
}
