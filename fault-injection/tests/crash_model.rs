//! The crash model of `MemFs`, checked over many seeds: what must survive a crash, what may
//! vanish, and that every permitted outcome actually happens on some seed (a model that never
//! loses anything would pass the first half and prove nothing).

mod common;

use common::*;
use jadedb::runtime::FileSystem;
use jadedb_fault::memfs::{BLOCK_SIZE, SECTOR_SIZE};
use jadedb_fault::{CrashModel, MemFs, Predicate};
use std::collections::BTreeSet;
use std::io;
use std::path::Path;

/// A disk with `/db` durable in the root, as an engine leaves it after creating its directory.
fn disk() -> MemFs {
    let fs = MemFs::new();
    mkdir(&fs, "/db");
    sync_dir(&fs, "/");
    fs
}

/// A file `/db/f` whose name and `old` contents are durable.
fn durable_file(fs: &MemFs, old: &[u8]) -> Box<dyn jadedb::runtime::File> {
    let file = create(fs, "/db/f");
    sync_dir(fs, "/db");
    write(&*file, 0, old);
    sync(&*file).unwrap();
    file
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
}

#[test]
fn synced_data_always_survives() {
    for seed in 0..SEEDS {
        let fs = disk();
        let data = pattern(10_000, 1);
        let file = durable_file(&fs, &data);
        // Unsynced appends afterwards must not disturb the synced prefix.
        write(&*file, 10_000, &pattern(5_000, 2));
        let after = fs.crash(&mut rng(seed));
        let got = contents(&after, "/db/f").unwrap_or_else(|| panic!("seed={seed}: file lost"));
        assert!(got.len() >= data.len(), "seed={seed}: synced size lost");
        assert_eq!(got[..data.len()], data[..], "seed={seed}: synced bytes changed");
    }
}

#[test]
fn an_unsynced_create_may_vanish_and_a_synced_one_stays() {
    let mut outcomes = BTreeSet::new();
    for seed in 0..SEEDS {
        for dir_synced in [false, true] {
            let fs = disk();
            let file = create(&fs, "/db/new");
            write(&*file, 0, b"payload");
            sync(&*file).unwrap();
            if dir_synced {
                sync_dir(&fs, "/db");
            }
            let after = fs.crash(&mut rng(seed));
            let got = contents(&after, "/db/new");
            if dir_synced {
                assert_eq!(got.as_deref(), Some(&b"payload"[..]), "seed={seed}");
            } else {
                assert!(got.is_none() || got.as_deref() == Some(b"payload"), "seed={seed}");
                outcomes.insert(got.is_some());
            }
        }
    }
    assert_eq!(outcomes.len(), 2, "an unsynced create both vanished and survived over the seeds");
}

#[test]
fn unsynced_directory_changes_survive_as_a_prefix_in_order() {
    let mut kept = BTreeSet::new();
    for seed in 0..SEEDS {
        let fs = disk();
        for name in ["a", "b", "c"] {
            drop(create(&fs, &format!("/db/{name}")));
        }
        let after = fs.crash(&mut rng(seed));
        let present: Vec<bool> = ["a", "b", "c"]
            .iter()
            .map(|n| contents(&after, &format!("/db/{n}")).is_some())
            .collect();
        // A later change never survives without the earlier ones.
        assert!(present.windows(2).all(|w| w[0] || !w[1]), "seed={seed}: {present:?}");
        kept.insert(present.iter().filter(|&&p| p).count());
    }
    assert_eq!(kept.len(), 4, "every prefix length occurs over the seeds: {kept:?}");
}

#[test]
fn a_directory_survives_only_if_its_parent_was_synced() {
    let fs = MemFs::new();
    mkdir(&fs, "/a/b");
    sync_dir(&fs, "/a");
    let after = fs.crash_keep_nothing();
    assert!(list(&after, "/").is_empty(), "/a was never made durable in /");
}

#[test]
fn unsynced_blocks_may_survive_or_vanish() {
    let (mut kept, mut lost, mut sizes) = (0, 0, std::collections::BTreeSet::new());
    for seed in 0..SEEDS {
        let fs = disk();
        let old = vec![0xAA; BLOCK_SIZE];
        let file = durable_file(&fs, &old);
        let new = vec![0xBB; 3 * BLOCK_SIZE];
        write(&*file, 0, &new);
        let after = fs.crash(&mut rng(seed));
        let got = contents(&after, "/db/f").unwrap();
        assert!(
            (BLOCK_SIZE..=3 * BLOCK_SIZE).contains(&got.len()),
            "seed={seed}: size {}",
            got.len()
        );
        sizes.insert(got.len());
        if got[..BLOCK_SIZE].iter().all(|&b| b == 0xBB) {
            kept += 1;
        }
        if got[..BLOCK_SIZE].iter().all(|&b| b == 0xAA) {
            lost += 1;
        }
    }
    assert!(kept > 0 && lost > 0, "kept {kept}, lost {lost}: both outcomes must occur");
    assert!(sizes.len() > 2, "the size after a crash should vary, saw {sizes:?}");
}

#[test]
fn the_last_write_tears_at_sector_boundaries() {
    let mut torn = 0;
    for seed in 0..SEEDS {
        let fs = disk();
        let file = durable_file(&fs, &vec![0xAA; BLOCK_SIZE]);
        write(&*file, 0, &vec![0xBB; BLOCK_SIZE]);
        let (after, report) = fs.crash_with_report(&mut rng(seed));
        let got = contents(&after, "/db/f").unwrap();
        let sectors: Vec<u8> = got.chunks(SECTOR_SIZE).map(|s| sector_value(s, seed)).collect();
        if sectors.contains(&0xAA) && sectors.contains(&0xBB) {
            torn += 1;
            assert!(report.torn_writes > 0, "seed={seed}: a mixed block must come from a tear");
        }
    }
    assert!(torn > 0, "no seed tore the last write");
}

/// The single value a sector holds; a torn write never splits a sector.
fn sector_value(sector: &[u8], seed: u64) -> u8 {
    assert!(sector.iter().all(|&b| b == sector[0]), "seed={seed}: a sector was split");
    sector[0]
}

#[test]
fn a_failed_sync_loses_data_that_reads_still_see() {
    for seed in 0..SEEDS {
        let fs = disk();
        let file = durable_file(&fs, b"old!");
        fs.set_sync_fault(Some(Predicate::nth(1)));
        write(&*file, 0, b"new!");
        let err = sync(&*file).expect_err("the injected fsync failure");
        assert_eq!(err.raw_os_error(), Some(5));
        assert_eq!(read(&*file), b"new!", "reads still see the lost data");
        sync(&*file).expect("the failure is reported once");
        assert_eq!(fs.stats().failed_syncs, 1);
        let after = fs.crash(&mut rng(seed));
        assert_eq!(contents(&after, "/db/f").unwrap(), b"old!", "seed={seed}");
    }
}

#[test]
fn a_rename_over_a_name_is_atomic_across_a_crash() {
    let mut outcomes = BTreeSet::new();
    for seed in 0..SEEDS {
        for dir_synced in [false, true] {
            let fs = disk();
            let old = durable_file(&fs, b"old CURRENT");
            drop(old);
            let tmp = create(&fs, "/db/tmp");
            write(&*tmp, 0, b"new CURRENT");
            sync(&*tmp).unwrap();
            rename(&fs, "/db/tmp", "/db/f");
            if dir_synced {
                sync_dir(&fs, "/db");
            }
            let after = fs.crash(&mut rng(seed));
            let got =
                contents(&after, "/db/f").unwrap_or_else(|| panic!("seed={seed}: name missing"));
            if dir_synced {
                assert_eq!(got, b"new CURRENT", "seed={seed}");
            } else {
                assert!(got == b"new CURRENT" || got == b"old CURRENT", "seed={seed}: torn rename");
                outcomes.insert(got);
            }
        }
    }
    assert_eq!(outcomes.len(), 2, "an unsynced rename both landed and did not over the seeds");
}

fn rename(fs: &MemFs, from: &str, to: &str) {
    pollster::block_on(fs.rename(Path::new(from), Path::new(to))).expect("rename");
}

#[test]
fn a_removed_file_stays_readable_and_returns_unless_the_dir_is_synced() {
    let fs = disk();
    let file = durable_file(&fs, b"data");
    pollster::block_on(fs.remove(Path::new("/db/f"))).unwrap();
    assert_eq!(read(&*file), b"data", "an open handle keeps the file");
    assert_eq!(contents(&fs, "/db/f"), None);
    let after = fs.crash_keep_nothing();
    assert_eq!(contents(&after, "/db/f").as_deref(), Some(&b"data"[..]));
}

#[test]
fn the_old_disk_is_dead_after_a_crash() {
    let fs = disk();
    let file = durable_file(&fs, b"data");
    let after = fs.crash(&mut rng(1));
    assert!(fs.is_crashed());
    assert!(pollster::block_on(file.write_at(0, b"late")).is_err());
    assert!(pollster::block_on(file.sync_data()).is_err());
    assert!(pollster::block_on(fs.create(Path::new("/db/g"))).is_err());
    assert!(pollster::block_on(fs.list(Path::new("/db"))).is_err());
    assert_eq!(contents(&after, "/db/f").unwrap(), b"data", "the new disk is unaffected");
}

#[test]
fn the_same_seed_gives_the_same_disk() {
    let run = |seed| {
        let fs = disk();
        let file = durable_file(&fs, &pattern(9_000, 3));
        write(&*file, 4_000, &pattern(20_000, 4));
        let other = create(&fs, "/db/g");
        write(&*other, 0, &pattern(6_000, 5));
        sync_dir(&fs, "/db");
        let after = fs.crash(&mut rng(seed));
        (contents(&after, "/db/f"), contents(&after, "/db/g"))
    };
    for seed in 0..20 {
        assert_eq!(run(seed), run(seed), "seed={seed}");
    }
}

#[test]
fn locks_exclude_until_dropped_and_never_survive_a_crash() {
    let fs = disk();
    let lock = |fs: &MemFs| pollster::block_on(fs.lock(Path::new("/db/LOCK")));
    let held = lock(&fs).expect("first lock");
    assert_eq!(lock(&fs).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    drop(held);
    let held = lock(&fs).expect("relock after release");
    sync_dir(&fs, "/db");
    let after = fs.crash_keep_nothing();
    lock(&after).expect("a lock is not data");
    drop(held);
}

#[test]
fn namespace_errors_have_proper_kinds() {
    let fs = disk();
    assert_eq!(open(&fs, "/db/none").unwrap_err().kind(), io::ErrorKind::NotFound);
    let missing_dir = pollster::block_on(fs.create(Path::new("/nodir/f"))).unwrap_err();
    assert_eq!(missing_dir.kind(), io::ErrorKind::NotFound);
    create(&fs, "/db/b");
    create(&fs, "/db/a");
    mkdir(&fs, "/db/sub");
    assert_eq!(list(&fs, "/db"), ["a", "b", "sub"]);
    assert_eq!(list(&fs, "db"), ["a", "b", "sub"], "relative paths start at the root");
}

#[test]
fn a_process_crash_keeps_every_completed_write_and_a_later_power_loss_still_drops_them() {
    for seed in 0..SEEDS {
        let fs = disk();
        let file = durable_file(&fs, b"old!");
        fs.set_sync_fault(Some(Predicate::nth(1)));
        write(&*file, 0, b"new!");
        sync(&*file).expect_err("the injected fsync failure");
        let unsynced = create(&fs, "/db/unsynced");
        write(&*unsynced, 0, b"cached");

        let restarted = fs.process_crash();
        assert!(fs.is_crashed());
        assert!(pollster::block_on(file.write_at(0, b"late")).is_err(), "old handles are dead");
        // The page cache outlived the process: the page whose fsync failed is still readable,
        // and so is the file whose name was never synced.
        assert_eq!(contents(&restarted, "/db/f").unwrap(), b"new!", "seed={seed}");
        assert_eq!(contents(&restarted, "/db/unsynced").unwrap(), b"cached", "seed={seed}");
        // Nothing became durable by the restart.
        let after = restarted.crash(&mut rng(seed));
        assert_eq!(contents(&after, "/db/f").unwrap(), b"old!", "seed={seed}");
        // Its name and bytes were never synced: gone, or any crash image of them.
        let lost = contents(&after, "/db/unsynced");
        assert!(lost.is_none_or(|bytes| bytes.len() <= b"cached".len()), "seed={seed}");
    }
}

#[test]
fn with_sector_tearing_any_unsynced_write_may_come_back_torn() {
    let mut torn_first = 0;
    for seed in 0..SEEDS {
        let fs = disk();
        fs.set_crash_model(CrashModel { tear_sectors: true, ..CrashModel::default() });
        let file = durable_file(&fs, &vec![0xAA; 2 * BLOCK_SIZE]);
        // Two unsynced writes: the first is not the last write, so only sector tearing of
        // unsynced blocks can split it.
        write(&*file, 0, &vec![0xBB; BLOCK_SIZE]);
        write(&*file, BLOCK_SIZE as u64, &vec![0xCC; BLOCK_SIZE]);
        let (after, report) = fs.crash_with_report(&mut rng(seed));
        let got = contents(&after, "/db/f").unwrap();
        let first: Vec<u8> =
            got[..BLOCK_SIZE].chunks(SECTOR_SIZE).map(|s| sector_value(s, seed)).collect();
        if first.contains(&0xAA) && first.contains(&0xBB) {
            torn_first += 1;
            assert!(report.blocks_torn > 0, "seed={seed}");
        }
    }
    assert!(torn_first > 0, "no seed tore a write that was not the last");
}

#[test]
fn without_ordered_metadata_a_later_change_may_survive_an_earlier_one() {
    let mut out_of_order = 0;
    for seed in 0..SEEDS {
        let fs = disk();
        fs.set_crash_model(CrashModel { unordered_dirs: true, ..CrashModel::default() });
        for name in ["a", "b", "c"] {
            drop(create(&fs, &format!("/db/{name}")));
        }
        let (after, report) = fs.crash_with_report(&mut rng(seed));
        let present: Vec<bool> = ["a", "b", "c"]
            .iter()
            .map(|n| contents(&after, &format!("/db/{n}")).is_some())
            .collect();
        if !present.windows(2).all(|w| w[0] || !w[1]) {
            out_of_order += 1;
            assert!(report.dir_changes_out_of_order > 0, "seed={seed}: {present:?}");
        }
    }
    assert!(out_of_order > 0, "no seed kept a later change without an earlier one");
}

#[test]
fn damage_at_rest_persists_across_crashes_and_only_hits_synced_bytes() {
    let fs = disk();
    let file = durable_file(&fs, &pattern(3 * SECTOR_SIZE, 7));
    // A later unsynced write dirties the block it lands in: nothing there is at rest.
    let other = create(&fs, "/db/g");
    sync_dir(&fs, "/db");
    write(&*other, 0, b"synced");
    sync(&*other).unwrap();
    write(&*other, 6, b" and an unsynced tail");
    assert!(!fs.rot_at_rest(Path::new("/db/g"), 2, 0x01).unwrap(), "not at rest");
    let path = Path::new("/db/f");
    assert!(fs.rot_at_rest(path, 5, 0x10).unwrap());
    assert!(fs.break_sector(path, SECTOR_SIZE as u64 * 2 + 9).unwrap());
    let mut expected = pattern(3 * SECTOR_SIZE, 7);
    expected[5] ^= 0x10;
    let mut buf = vec![0u8; 2 * SECTOR_SIZE];
    pollster::block_on(jadedb::runtime::read_exact_at(&*file, 0, &mut buf)).unwrap();
    assert_eq!(buf, expected[..2 * SECTOR_SIZE], "reads see the rot");
    let err = pollster::block_on(file.read_at(2 * SECTOR_SIZE as u64, &mut buf)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5));

    let after = fs.crash(&mut rng(3)).process_crash();
    let reopened = open(&after, "/db/f").unwrap();
    let mut buf = vec![0u8; 16];
    pollster::block_on(jadedb::runtime::read_exact_at(&*reopened, 0, &mut buf)).unwrap();
    assert_eq!(buf, expected[..16], "the rot outlived both kinds of crash");
    assert!(pollster::block_on(reopened.read_at(2 * SECTOR_SIZE as u64, &mut buf)).is_err());
    assert!(after.heal_sector(path, SECTOR_SIZE as u64 * 2).unwrap());
    assert_eq!(pollster::block_on(reopened.read_at(2 * SECTOR_SIZE as u64, &mut buf)).unwrap(), 16);
    assert!(after.rot_at_rest(path, 5, 0x10).unwrap(), "rotting the same bit back heals it");
    pollster::block_on(jadedb::runtime::read_exact_at(&*reopened, 0, &mut buf)).unwrap();
    assert_eq!(buf, pattern(3 * SECTOR_SIZE, 7)[..16]);
}

/// Healing damage at rest must touch only the damaged file: `stored_byte` names a file by its
/// inode, which outlives crashes, and a file replaced under the same name (as `CURRENT` is at
/// every open) is another file. The simulator once flipped a bit of a sound, rewritten
/// `CURRENT` this way, "healing" damage that was already gone.
#[test]
fn stored_byte_tells_the_damaged_file_from_one_that_replaced_it() {
    let fs = disk();
    drop(durable_file(&fs, b"current"));
    let path = Path::new("/db/f");
    assert!(fs.rot_at_rest(path, 2, 0x01).unwrap());
    let damaged = fs.stored_byte(path, 2).unwrap();
    assert_eq!(damaged.1, Some(b'r' ^ 0x01));
    assert_eq!(fs.stored_byte(path, 7).unwrap().1, None, "past the durable image");
    let after = fs.crash(&mut rng(1)).process_crash();
    assert_eq!(after.stored_byte(path, 2).unwrap(), damaged, "the same file after crashes");
    let tmp = create(&after, "/db/f.tmp");
    write(&*tmp, 0, b"current");
    sync(&*tmp).unwrap();
    rename(&after, "/db/f.tmp", "/db/f");
    sync_dir(&after, "/db");
    let replaced = after.stored_byte(path, 2).unwrap();
    assert_ne!(replaced.0, damaged.0, "a file renamed over the name is another inode");
    assert_eq!(replaced.1, Some(b'r'));
}

/// Found by the simulator (seed 14267 of 10000..40000): a power loss undid the rename of a
/// damaged `CURRENT.dbtmp` over `CURRENT`; the next open created `CURRENT.dbtmp` again, which
/// truncates and rewrites the same inode, renamed it over `CURRENT`, and its new byte at the
/// damaged offset happened to equal the damaged one, so healing flipped a bit of a sound file.
/// The durable bytes up to the damaged one tell the rewritten file from the damaged one.
#[test]
fn stored_byte_tells_the_damaged_file_from_the_same_inode_rewritten() {
    let fs = disk();
    let path = Path::new("/db/f");
    drop(durable_file(&fs, b"abcdef"));
    assert!(fs.rot_at_rest(path, 2, 0x01).unwrap());
    let damaged = fs.stored_byte(path, 2).unwrap();
    // Created again: the same inode, truncated, and the damaged byte written back by chance.
    let again = create(&fs, "/db/f");
    write(&*again, 0, &[b'x', b'y', b'c' ^ 0x01, b'z']);
    sync(&*again).unwrap();
    let rewritten = fs.stored_byte(path, 2).unwrap();
    assert_eq!((rewritten.0, rewritten.1), (damaged.0, damaged.1), "same inode, same byte");
    assert_ne!(rewritten, damaged, "yet another file's contents");
    // Appending to the damaged file (a log, a MANIFEST) leaves it the damaged file.
    let fs = disk();
    let file = durable_file(&fs, b"abcdef");
    assert!(fs.rot_at_rest(path, 2, 0x01).unwrap());
    let damaged = fs.stored_byte(path, 2).unwrap();
    write(&*file, 6, b"ghi");
    sync(&*file).unwrap();
    assert_eq!(fs.stored_byte(path, 2).unwrap(), damaged, "appended to, still the same file");
}

#[test]
fn find_says_whether_a_needle_is_durable_up_to_its_end() {
    let fs = disk();
    let file = durable_file(&fs, b"....synced-needle....");
    write(&*file, 21, b"..unsynced-needle");
    let dir = Path::new("/db");
    let synced = fs.find(dir, "f", b"synced-needle", 0).unwrap().unwrap();
    assert_eq!((synced.offset, synced.durable), (4, true));
    let beyond = fs.find(dir, "f", b"synced-needle", 18).unwrap().unwrap();
    assert!(!beyond.durable, "the extent reaches unsynced bytes");
    let unsynced = fs.find(dir, "f", b"unsynced-needle", 0).unwrap().unwrap();
    assert_eq!((unsynced.offset, unsynced.durable), (23, false));
    assert_eq!(fs.find(dir, ".log", b"synced-needle", 0).unwrap(), None, "only matching names");
    let files = fs.files(dir).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!((files[0].durable_len, files[0].current_len), (21, 38));
    assert!(files[0].durable_name);
    drop(create(&fs, "/db/unsynced-name"));
    let names: Vec<(String, bool)> =
        fs.files(dir).unwrap().into_iter().map(|f| (f.name, f.durable_name)).collect();
    assert_eq!(names, [("f".to_string(), true), ("unsynced-name".to_string(), false)]);
}

#[test]
fn every_crash_image_is_one_a_seeded_crash_may_leave_and_the_extremes_are_among_them() {
    let fs = disk();
    let old = pattern(1000, 1);
    let file = durable_file(&fs, &old);
    let new = pattern(1500, 2);
    write(&*file, 1000, &new);
    let created = create(&fs, "/db/g");
    write(&*created, 0, b"x");
    // A fork taken now crashes as the disk would now, whatever the disk does next.
    let fork = fs.fork();
    write(&*file, 0, &pattern(3000, 3));
    let (images, complete) = fork.crash_images(10_000);
    assert!(complete);
    let seen: BTreeSet<Option<Vec<u8>>> = images.iter().map(|d| contents(d, "/db/f")).collect();
    let whole = [old.clone(), new.clone()].concat();
    assert!(seen.contains(&Some(old.clone())), "the durable image");
    assert!(seen.contains(&Some(whole.clone())), "everything written");
    for got in &seen {
        let got = got.as_ref().expect("a durable name survives");
        assert_eq!(&got[..1000], &old[..], "synced bytes come back exactly");
        assert!(got.len() <= whole.len());
    }
    // The unsynced create survives in some images and not in others.
    let g: BTreeSet<bool> = images.iter().map(|d| open(d, "/db/g").is_ok()).collect();
    assert_eq!(g.len(), 2, "the create is kept and lost");
    // The disk itself lives on.
    assert!(!fs.is_crashed());
    assert!(fork.crash_images(3).0.len() == 3 && !fork.crash_images(3).1, "capped at 3");
}
