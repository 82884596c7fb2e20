//! The compaction iterator: merges the input tables in internal order and decides which entries
//! the output keeps.
//!
//! Snapshots cut the sequence space into *stripes*: stripe `i` holds the sequence numbers above
//! snapshot `i - 1` and at or below snapshot `i`, and the last stripe everything above the
//! newest snapshot. A read at any snapshot (or at the latest sequence number) sees, of each
//! key, only the newest version in or below its stripe, so within one stripe every version but
//! the newest is shadowed for every reader and is dropped. A tombstone that is the newest
//! version of the oldest stripe hides nothing any reader could see except older versions in
//! the inputs (dropped with it) and versions in deeper levels; if no deeper level can hold the
//! key, the tombstone is dropped too.
//!
//! A dropped entry whose value is in a blob file makes that value's record garbage: the merge
//! counts its bytes per blob file, for the compaction's edit (see `blob`).

use crate::blob::BlobPointer;
use crate::error::{Error, Result};
use crate::sstable::TableIter;
use std::collections::BTreeMap;

/// Which versions the output keeps, given the live snapshots.
#[derive(Debug)]
pub(crate) struct Retention {
    /// Pinned sequence numbers, ascending, without duplicates.
    snapshots: Vec<u64>,
}

impl Retention {
    pub(crate) fn new(mut snapshots: Vec<u64>) -> Self {
        snapshots.sort_unstable();
        snapshots.dedup();
        Retention { snapshots }
    }

    /// The stripe of `seq`: the index of the oldest snapshot that sees it.
    fn stripe(&self, seq: u64) -> usize {
        self.snapshots.partition_point(|&s| s < seq)
    }
}

/// One entry the output keeps.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Kept<'a> {
    pub user_key: &'a [u8],
    pub seq: u64,
    pub value: Option<&'a [u8]>,
    /// Whether `value` is a blob pointer.
    pub blob: bool,
}

/// Merges table cursors (each already positioned at its first entry) in internal order.
#[derive(Debug)]
pub(crate) struct MergeIter {
    inputs: Vec<TableIter>,
    /// The input holding the current entry, if any.
    current: Option<usize>,
    /// The user key and stripe of the last version seen, to drop the versions it shadows.
    last_key: Vec<u8>,
    last_stripe: Option<usize>,
    /// Bytes of blob records that dropped entries pointed to, by blob file.
    garbage: BTreeMap<u64, u64>,
    /// Planted (`PlantedBug::BlobGarbageIgnoresSnapshots`): versions kept only for snapshots
    /// count as garbage too.
    snapshot_versions_are_garbage: bool,
}

impl MergeIter {
    pub(crate) fn new(inputs: Vec<TableIter>) -> Self {
        let mut it = MergeIter {
            inputs,
            current: None,
            last_key: Vec::new(),
            last_stripe: None,
            garbage: BTreeMap::new(),
            snapshot_versions_are_garbage: false,
        };
        it.pick();
        it
    }

    /// Points `current` at the input with the smallest entry in internal order. Inputs never
    /// hold the same (key, seq): sequence numbers are unique.
    fn pick(&mut self) {
        self.current = None;
        for (i, input) in self.inputs.iter().enumerate() {
            if !input.valid() {
                continue;
            }
            let better = match self.current {
                None => true,
                Some(c) => {
                    let best = &self.inputs[c];
                    (input.user_key(), std::cmp::Reverse(input.seq()))
                        < (best.user_key(), std::cmp::Reverse(best.seq()))
                }
            };
            if better {
                self.current = Some(i);
            }
        }
    }

    /// Advances to the next entry that `retention` keeps, and returns it. `key_may_be_deeper`
    /// says whether a level below the output may hold a user key. `None` at the end.
    pub(crate) async fn next_kept(
        &mut self,
        retention: &Retention,
        key_may_be_deeper: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<Kept<'_>>> {
        loop {
            let Some(c) = self.current else { return Ok(None) };
            let input = &self.inputs[c];
            let stripe = retention.stripe(input.seq());
            let same_key = self.last_stripe.is_some() && self.last_key == input.user_key();
            let shadowed = same_key && self.last_stripe == Some(stripe);
            if !same_key {
                self.last_key.clear();
                self.last_key.extend_from_slice(input.user_key());
            }
            self.last_stripe = Some(stripe);
            let obsolete_tombstone =
                input.value().is_none() && stripe == 0 && !key_may_be_deeper(input.user_key());
            let dropped = shadowed || obsolete_tombstone;
            if input.is_blob() && (dropped || (same_key && self.snapshot_versions_are_garbage)) {
                let pointer = input.value().and_then(BlobPointer::decode).ok_or_else(|| {
                    let why = format!("a malformed blob pointer for key {:?}", input.user_key());
                    Error::corruption(input.path(), 0, why)
                })?;
                let counted = self.garbage.entry(pointer.file).or_default();
                *counted = counted.saturating_add(pointer.len);
            }
            if dropped {
                self.advance().await?;
                continue;
            }
            // Returned before advancing: the caller copies it out, then calls `advance`.
            return Ok(Some(self.peek()));
        }
    }

    fn peek(&self) -> Kept<'_> {
        let input = &self.inputs[self.current.expect("positioned")];
        Kept {
            user_key: input.user_key(),
            seq: input.seq(),
            value: input.value(),
            blob: input.is_blob(),
        }
    }

    /// Plants `PlantedBug::BlobGarbageIgnoresSnapshots` if `yes`.
    pub(crate) fn planting_snapshot_garbage(mut self, yes: bool) -> Self {
        self.snapshot_versions_are_garbage = yes;
        self
    }

    /// The blob record bytes the dropped entries pointed to, by blob file.
    pub(crate) fn garbage(&self) -> Vec<(u64, u64)> {
        self.garbage.iter().map(|(&file, &bytes)| (file, bytes)).collect()
    }

    /// Moves past the current entry.
    pub(crate) async fn advance(&mut self) -> Result<()> {
        if let Some(c) = self.current {
            self.inputs[c].next().await?;
            self.pick();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_follow_snapshots() {
        let r = Retention::new(vec![10, 5, 10]);
        assert_eq!([1, 5, 6, 10, 11].map(|s| r.stripe(s)), [0, 0, 1, 1, 2]);
        assert_eq!(Retention::new(Vec::new()).stripe(7), 0);
    }
}
