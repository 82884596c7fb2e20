//! Damaged input: every decoder fed arbitrary and mutated bytes must return an error or a
//! result, never panic or spin; every single-bit flip of a table must surface as `Corruption`
//! naming the file and the offset of the damaged block, and reads that succeed before it must
//! return the right data.

use super::block::{seal, Block, BlockBuilder, BlockIter, BlockType, BLOCK_TRAILER_BYTES};
use super::filter::{BloomFilter, Layout};
use super::footer::{BlockHandle, Footer, FOOTER_BYTES, FORMAT_VERSION};
use super::tests::{golden_entries, golden_options, internal_order, open, write, Entry, PATH};
use super::*;
use crate::error::{Error, Result};
use crate::runtime::File;
use crate::testing::MemFile;
use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;

/// Cursor steps any test allows before calling it an endless loop; far above the entry count
/// of any table here (an entry takes at least 20 bytes).
const STEPS_MAX: usize = 10_000;

/// Walks a block both ways and seeks in it; the walks must end within the bound their size
/// implies, since every entry takes at least a 12-byte header.
fn exercise_block(contents: &[u8], probes: &[(Vec<u8>, u64)]) {
    let Ok(block) = Block::new(Bytes::copy_from_slice(contents)) else { return };
    let steps_max = contents.len() / 12 + 1;
    let mut it = BlockIter::new(block, BlockType::Data);
    let walk = |it: &mut BlockIter, step: fn(&mut BlockIter) -> Result<(), _>| {
        let mut steps = 0;
        while it.valid() && step(it).is_ok() {
            steps += 1;
            assert!(steps <= steps_max, "a block walk did not end");
            let _ = (it.user_key(), it.seq(), it.value(), it.is_tombstone());
        }
    };
    if it.seek_to_first().is_ok() {
        walk(&mut it, BlockIter::next);
    }
    if it.seek_to_last().is_ok() {
        walk(&mut it, BlockIter::prev);
    }
    for (k, s) in probes {
        if it.seek(k, *s).is_ok() && it.valid() {
            let _ = it.prev();
            let _ = it.next();
        }
    }
}

fn valid_block(entries: &[Entry], restart_interval: usize) -> Vec<u8> {
    let mut b = BlockBuilder::new(restart_interval);
    let mut k = Vec::new();
    for (user, seq, value) in entries {
        k.clear();
        key::encode(&mut k, user, *seq, key::kind_of(value.as_deref()));
        b.add(&k, value.as_deref().unwrap_or_default());
    }
    let mut sealed = b.finish_sealed(BlockType::Data);
    sealed.truncate(sealed.len() - BLOCK_TRAILER_BYTES);
    sealed
}

fn small_entries() -> impl Strategy<Value = Vec<Entry>> {
    let user = proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b')], 0..4);
    let value = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8));
    proptest::collection::vec((user, 0..20u64, value), 1..30).prop_map(internal_order)
}

fn probes() -> impl Strategy<Value = Vec<(Vec<u8>, u64)>> {
    let user = proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b')], 0..4);
    proptest::collection::vec((user, prop_oneof![0..20u64, Just(u64::MAX)]), 0..6)
}

/// Applies `(position, xor)` mutations to `bytes[range]`.
fn mutate(bytes: &mut [u8], start: usize, len: usize, mutations: &[(usize, u8)]) {
    for &(at, xor) in mutations {
        if len > 0 {
            bytes[start + at % len] ^= xor.max(1);
        }
    }
}

/// A file holding `bytes`.
fn mem_file(bytes: &[u8]) -> Arc<MemFile> {
    let file = MemFile::new();
    pollster::block_on(file.write_at(0, bytes)).unwrap();
    file
}

/// Opens the table in `file` and reads all of it: point reads of every `model` key and the
/// probes, a scan each way, and seeks. With a model, everything that succeeds must agree with it
/// (the first error ends the read). Scans are bounded, so an endless loop fails the test.
async fn read_everything(
    file: &Arc<MemFile>,
    model: Option<&[Entry]>,
    probes: &[(Vec<u8>, u64)],
) -> Result<()> {
    let table = open(file, None, Arc::default()).await?;
    let keys = model
        .unwrap_or_default()
        .iter()
        .flat_map(|(k, s, _)| [(k.clone(), *s), (k.clone(), u64::MAX)]);
    for (k, s) in keys.chain(probes.iter().cloned()) {
        let got = table.get(&k, s).await?;
        if let Some(model) = model {
            let at = model.partition_point(|e| key::compare(&e.0, e.1, &k, s).is_lt());
            let want = model.get(at).filter(|e| e.0 == k).map(|e| (e.1, e.2.clone()));
            assert_eq!(got.map(|(s, v)| (s, v.map(|b| b.to_vec()))), want);
        }
    }
    let mut it = table.iter();
    for backwards in [false, true] {
        let mut seen = Vec::new();
        if backwards {
            it.seek_to_last().await?
        } else {
            it.seek_to_first().await?
        }
        while it.valid() {
            seen.push((it.user_key().to_vec(), it.seq(), it.value().map(<[u8]>::to_vec)));
            assert!(seen.len() <= STEPS_MAX, "a table scan did not end");
            if backwards {
                it.prev().await?
            } else {
                it.next().await?
            }
        }
        if backwards {
            seen.reverse();
        }
        if let Some(model) = model {
            assert_eq!(seen, model);
        }
    }
    for (k, s) in probes {
        it.seek(k, *s).await?;
        it.seek_before(k, *s).await?;
    }
    Ok(())
}

/// Where each block (with its trailer) and the footer lie in a valid table: they must tile the
/// file exactly, which is what makes every byte checksummed.
fn regions(bytes: &[u8]) -> Vec<(u64, usize)> {
    let footer_at = bytes.len() - FOOTER_BYTES;
    let footer = Footer::decode(&bytes[footer_at..], footer_at as u64).unwrap();
    let sealed = |h: BlockHandle| (h.offset, h.sealed_len());
    let contents =
        |h: BlockHandle| Bytes::copy_from_slice(&bytes[h.offset as usize..][..h.size as usize]);
    let mut it = BlockIter::new(Block::new(contents(footer.index)).unwrap(), BlockType::Index);
    let mut out = Vec::new();
    it.seek_to_first().unwrap();
    while it.valid() {
        out.push(sealed(BlockHandle::decode(it.value()).unwrap()));
        it.next().unwrap();
    }
    out.extend(footer.filter.map(sealed));
    out.extend([sealed(footer.index), sealed(footer.properties), (footer_at as u64, FOOTER_BYTES)]);
    out.sort();
    let mut end = 0;
    for &(offset, len) in &out {
        assert_eq!(offset, end, "a gap or overlap before offset {offset}");
        end += len as u64;
    }
    assert_eq!(end, bytes.len() as u64);
    out
}

fn golden_bytes() -> (Vec<u8>, Vec<Entry>) {
    let model = golden_entries();
    let (file, _) = pollster::block_on(write(&model, golden_options()));
    (pollster::block_on(crate::runtime::read_all(&file)).unwrap(), model)
}

#[test]
fn every_single_bit_flip_is_reported_as_corruption_of_its_block() {
    let (clean, model) = golden_bytes();
    let regions = regions(&clean);
    assert_eq!(regions.len(), 3 + 4, "three data blocks, filter, index, properties, footer");
    let probes = [(b"apricot".to_vec(), 4), (b"blueberry".to_vec(), u64::MAX)];
    pollster::block_on(read_everything(&mem_file(&clean), Some(&model), &probes)).unwrap();
    for bit in 0..clean.len() * 8 {
        let mut bytes = clean.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let result = pollster::block_on(read_everything(&mem_file(&bytes), Some(&model), &probes));
        let (region, _) = *regions.iter().rfind(|(offset, _)| *offset <= (bit / 8) as u64).unwrap();
        match result {
            Err(Error::Corruption { file, offset, reason }) => {
                assert_eq!(file, Path::new(PATH), "bit {bit}");
                assert_eq!(offset, region, "bit {bit}: {reason}");
            }
            other => panic!("bit {bit} (byte {}): expected corruption, got {other:?}", bit / 8),
        }
    }
}

#[test]
fn truncated_or_extended_tables_are_corrupt() {
    let (clean, _) = golden_bytes();
    for len in (0..clean.len()).chain([clean.len() + 1, clean.len() + 4096]) {
        let mut bytes = clean.clone();
        bytes.resize(len, 0);
        let err = pollster::block_on(read_everything(&mem_file(&bytes), None, &[])).unwrap_err();
        assert!(err.is_corruption(), "length {len}: {err}");
    }
    // A file whose size differs from the recorded one is corrupt too.
    let file = mem_file(&clean);
    let f = Box::new(Arc::clone(&file));
    let opened = pollster::block_on(Table::open(
        f,
        PATH.into(),
        1,
        clean.len() as u64 - 1,
        None,
        Arc::default(),
    ));
    assert!(opened.unwrap_err().is_corruption());
}

/// Rewrites the trailer checksum of every region after `bytes` changed, so damage reaches the
/// decoders behind the checksums: what a buggy writer, not a bad disk, would produce.
fn reseal(bytes: &mut [u8], regions: &[(u64, usize)]) {
    let footer_at = bytes.len() - FOOTER_BYTES;
    for &(offset, len) in regions {
        let start = offset as usize;
        if start == footer_at {
            let crc = crc32fast::hash(&bytes[start..start + 52]);
            bytes[start + 52..start + 56].copy_from_slice(&crc.to_le_bytes());
        } else {
            let crc_at = start + len - 4;
            let crc = crc32fast::hash(&bytes[start..crc_at]);
            bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn blocks_of_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), probes in probes()) {
        exercise_block(&bytes, &probes);
    }

    #[test]
    fn mutated_valid_blocks_never_panic(
        entries in small_entries(),
        restart_interval in 1usize..5,
        mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        probes in probes(),
    ) {
        let mut contents = valid_block(&entries, restart_interval);
        let len = contents.len();
        mutate(&mut contents, 0, len, &mutations);
        exercise_block(&contents, &probes);
    }

    #[test]
    fn other_decoders_of_arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        footer_offset in any::<u64>(),
        user_key in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        for layout in [Layout::Blocked, Layout::Plain] {
            if let Ok(filter) = BloomFilter::decode(Bytes::copy_from_slice(&bytes), layout) {
                filter.may_contain(&user_key);
            }
        }
        let _ = properties::decode(&bytes);
        let _ = Footer::decode(&bytes, footer_offset);
        let _ = BlockHandle::decode(&bytes).map(|h| h.fits_before(footer_offset));
        let _ = block::unseal(Bytes::copy_from_slice(&bytes), BlockType::Data);
        let mut footer = [0u8; FOOTER_BYTES];
        let n = bytes.len().min(FOOTER_BYTES);
        footer[..n].copy_from_slice(&bytes[..n]);
        footer[FOOTER_BYTES - 8..].copy_from_slice(b"jadedbst");
        let _ = Footer::decode(&footer, footer_offset);
    }

    #[test]
    fn mutated_valid_properties_and_filters_never_panic(
        mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        entries in small_entries(),
    ) {
        let (clean, _) = golden_bytes();
        let footer_at = clean.len() - FOOTER_BYTES;
        let footer = Footer::decode(&clean[footer_at..], footer_at as u64).unwrap();
        for handle in [footer.properties, footer.filter.unwrap()] {
            let mut contents = clean[handle.offset as usize..][..handle.size as usize].to_vec();
            let len = contents.len();
            mutate(&mut contents, 0, len, &mutations);
            let _ = properties::decode(&contents);
            for layout in [Layout::Blocked, Layout::Plain] {
                if let Ok(filter) = BloomFilter::decode(Bytes::from(contents.clone()), layout) {
                    entries.iter().for_each(|e| { filter.may_contain(&e.0); });
                }
            }
        }
    }

    #[test]
    fn tables_of_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), probes in probes()) {
        let _ = pollster::block_on(read_everything(&mem_file(&bytes), None, &probes));
        // The same bytes behind a valid-looking footer reach the block checks.
        let mut with_footer = bytes.clone();
        let at = with_footer.len() as u64;
        let footer = Footer {
            index: BlockHandle { offset: 0, size: (at / 2).saturating_sub(5) },
            filter: None,
            properties: BlockHandle { offset: at / 2, size: (at - at / 2).saturating_sub(5) },
            version: FORMAT_VERSION,
        };
        with_footer.extend(footer.encode());
        let _ = pollster::block_on(read_everything(&mem_file(&with_footer), None, &probes));
    }

    #[test]
    fn damaged_tables_fail_or_read_right(
        mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<usize>()),
        probes in probes(),
    ) {
        let (mut bytes, model) = golden_bytes();
        let len = bytes.len();
        mutate(&mut bytes, 0, len, &mutations);
        if let Some(cut) = cut {
            bytes.truncate(cut % (len + 1));
        }
        let result = pollster::block_on(read_everything(&mem_file(&bytes), Some(&model), &probes));
        if let Err(e) = result {
            prop_assert!(e.is_corruption(), "{}", e);
        }
    }

    #[test]
    fn damaged_then_resealed_tables_never_panic(
        entries in small_entries(),
        block_bytes in 16usize..100,
        mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        region_pick in any::<usize>(),
        probes in probes(),
    ) {
        let options = TableOptions { block_bytes, restart_interval: 2, bloom_bits_per_key: 10 };
        let (file, _) = pollster::block_on(write(&entries, options));
        let mut bytes = pollster::block_on(crate::runtime::read_all(&file)).unwrap();
        let regions = regions(&bytes);
        let (offset, len) = regions[region_pick % regions.len()];
        // Damage the contents (and type byte) of one block or the footer, not its checksum.
        let damaged_len = len - 4;
        mutate(&mut bytes, offset as usize, damaged_len, &mutations);
        reseal(&mut bytes, &regions);
        let result = pollster::block_on(read_everything(&mem_file(&bytes), None, &probes));
        if let Err(e) = result {
            prop_assert!(e.is_corruption(), "{}", e);
        }
    }
}

#[test]
fn a_block_with_a_wrong_type_is_corrupt_even_with_a_good_checksum() {
    let (mut bytes, _) = golden_bytes();
    let regions = regions(&bytes);
    let (offset, len) = regions[0];
    let type_at = offset as usize + len - BLOCK_TRAILER_BYTES;
    assert_eq!(bytes[type_at], BlockType::Data as u8);
    bytes[type_at] = BlockType::Index as u8;
    let mut contents = bytes[offset as usize..type_at].to_vec();
    let start = 0;
    seal(&mut contents, start, BlockType::Index);
    bytes[offset as usize..offset as usize + len].copy_from_slice(&contents);
    let err = pollster::block_on(read_everything(&mem_file(&bytes), None, &[])).unwrap_err();
    match err {
        Error::Corruption { offset: at, reason, .. } => {
            assert_eq!(at, offset);
            assert!(reason.contains("unexpected block type"), "{reason}");
        }
        other => panic!("{other}"),
    }
}
