//! The ways the engine can break an invariant, each carrying what a person needs to start
//! debugging: the keys, the sequence numbers and the writes involved.
//!
//! Keys and values print as quoted text when they are printable ASCII (the simulator's keys
//! usually are) and as hex otherwise, so a report is readable without losing bytes.

use std::fmt;

use crate::{Key, Value, WriteId};

/// An invariant the engine broke, or a check the model could not finish.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// Recovery reported a sequence number below the one the epoch started from.
    RecoveryWentBackwards { base_seq: u64, recovered_seq: u64 },
    /// An acked synced write ends after the recovered sequence number (invariant 1).
    SyncedWriteLost {
        write: WriteId,
        first_seq: u64,
        last_seq: u64,
        first_key: Key,
        recovered_seq: u64,
    },
    /// An acked batch straddles the recovered sequence number: only part of it survived.
    TornBatch { write: WriteId, first_seq: u64, last_seq: u64, recovered_seq: u64 },
    /// Sequence numbers in `gaps` (inclusive ranges) belong to no acked write, and no choice of
    /// the unknown-sequence writes fills them exactly: a hole or a reordering.
    SequenceHole { base_seq: u64, recovered_seq: u64, gaps: Vec<(u64, u64)>, unknown_writes: usize },
    /// No legal prefix gives the recovered state. `key` is the first key that differs from the
    /// closest legal prefix, which differs in `differing_keys` keys and includes the
    /// unknown-sequence writes `unknown_included`.
    StateMismatch {
        recovered_seq: u64,
        key: Key,
        expected: Option<Value>,
        got: Option<Value>,
        differing_keys: usize,
        unknown_included: Vec<WriteId>,
    },
    /// The search over placements of unknown-sequence writes gave up after `nodes` steps. Not
    /// proof of a bug, but the check could not pass, so the caller treats it as a failure.
    SearchLimit { recovered_seq: u64, nodes: u64, unknown_writes: usize },
    /// The engine acked a write at a sequence number the epoch had already used.
    SeqNotAboveBase { write: WriteId, first_seq: u64, base_seq: u64 },
    /// The engine acked two writes whose sequence ranges overlap.
    SeqOverlap {
        write: WriteId,
        first_seq: u64,
        last_seq: u64,
        other: WriteId,
        other_first_seq: u64,
        other_last_seq: u64,
    },
    /// A write got sequence numbers below those of `earlier`, which had been acked before the
    /// write was even issued.
    AckReordered { write: WriteId, first_seq: u64, earlier: WriteId, earlier_last_seq: u64 },
    /// A latest read returned a value that neither the last write acked before the read began
    /// (`latest`, or the base state if `None`) nor any concurrent write left in `key`.
    StaleRead {
        key: Key,
        got: Option<Value>,
        expected: Option<Value>,
        latest: Option<(WriteId, u64)>,
        concurrent_writes: usize,
    },
    /// A read at snapshot `snap_seq` returned something other than the state at that sequence
    /// number (or a value of an unknown-sequence write).
    StaleSnapshotRead { key: Key, snap_seq: u64, got: Option<Value>, expected: Option<Value> },
    /// A snapshot below the epoch's base sequence number was read: history before the last
    /// recovery is not something the engine can still show.
    SnapshotBelowBase { snap_seq: u64, base_seq: u64 },
    /// A read (an observation) is the state at no single legal sequence number. It may lie in
    /// `lo..=hi` (acked before it began, issued before it ended), at a batch boundary, not
    /// below `floor` (the sequence number of the client's previous read, or `lo`). At
    /// `closest_seq`, the legal candidate where the fewest keys (`differing_keys`) differ,
    /// `key` is the first that does: the read showed `got` where the model holds
    /// `expected_at_closest_seq`.
    ReadNotAtOneSequence {
        client: u64,
        key: Key,
        got: Option<Value>,
        expected_at_closest_seq: Option<Value>,
        closest_seq: u64,
        differing_keys: usize,
        lo: u64,
        hi: u64,
        floor: u64,
    },
    /// A client's read is the state at `seq`, below `floor`, the sequence number its previous
    /// read had already shown, and at no legal sequence number from `floor` on.
    ReadWentBackwards { client: u64, seq: u64, floor: u64 },
    /// A read through the snapshot at `snap_seq` is not the state at that sequence number:
    /// `key` is the first of `differing_keys` keys that differ.
    SnapshotReadNotAtItsSequence {
        client: u64,
        snap_seq: u64,
        key: Key,
        got: Option<Value>,
        expected: Option<Value>,
        differing_keys: usize,
    },
    /// A snapshot was pinned at `snap_seq`, below `acked_seq`, up to which `write` had been
    /// acked before the snapshot was created.
    SnapshotBelowAck { client: u64, snap_seq: u64, write: WriteId, acked_seq: u64 },
    /// A read returned `key`, which lies outside every interval it covered.
    KeyOutsideRead { client: u64, key: Key },
    /// A read showed `write` at model clock `seen_at` while its outcome was unknown, so it was
    /// published below every write issued after that; `later_write`, issued after it and
    /// starting at `later_first_seq`, is in the recovered prefix (a synced write always is),
    /// yet no legal prefix keeps `write` below it (invariant 7).
    SeenWriteLost {
        write: WriteId,
        seen_at: u64,
        later_write: WriteId,
        later_first_seq: u64,
        recovered_seq: u64,
    },
}

impl std::error::Error for Violation {}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::RecoveryWentBackwards { base_seq, recovered_seq } => write!(
                f,
                "recovery went backwards: recovered_seq {recovered_seq} is below the epoch's \
                 base seq {base_seq}"
            ),
            Violation::SyncedWriteLost { write, first_seq, last_seq, first_key, recovered_seq } => {
                write!(
                    f,
                    "synced write lost: {write} (seqs {first_seq}..={last_seq}, first key {}) was \
                     acked as synced but recovery stopped at seq {recovered_seq}",
                    Bytes(Some(first_key))
                )
            }
            Violation::TornBatch { write, first_seq, last_seq, recovered_seq } => write!(
                f,
                "batch torn: recovered_seq {recovered_seq} falls inside {write} \
                 (seqs {first_seq}..={last_seq}), so only part of the batch survived"
            ),
            Violation::SequenceHole { .. } => fmt_hole(self, f),
            Violation::StateMismatch { .. } => fmt_mismatch(self, f),
            Violation::SearchLimit { recovered_seq, nodes, unknown_writes } => write!(
                f,
                "recovery check gave up at recovered_seq {recovered_seq} after {nodes} search \
                 steps over {unknown_writes} unknown-seq writes"
            ),
            Violation::SeenWriteLost {
                write,
                seen_at,
                later_write,
                later_first_seq,
                recovered_seq,
            } => write!(
                f,
                "seen write lost: a read showed {write} (model clock {seen_at}) while its \
                 outcome was unknown, so it was published below every later write; \
                 {later_write}, issued after that read and starting at seq {later_first_seq}, \
                 is in the state recovered up to seq {recovered_seq}, yet no legal prefix \
                 keeps {write} below it"
            ),
            _ => fmt_ack_or_read(self, f),
        }
    }
}

fn fmt_hole(violation: &Violation, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let Violation::SequenceHole { base_seq, recovered_seq, gaps, unknown_writes } = violation
    else {
        unreachable!("fmt_hole takes a SequenceHole")
    };
    let gaps: Vec<String> = gaps.iter().map(|(first, last)| format!("{first}..={last}")).collect();
    write!(
        f,
        "hole in the sequence space: recovery reached seq {recovered_seq} from base \
         {base_seq}, but seqs {} belong to no acked write and no combination of the \
         {unknown_writes} unknown-seq writes fills them exactly",
        gaps.join(", ")
    )
}

fn fmt_mismatch(violation: &Violation, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let Violation::StateMismatch {
        recovered_seq,
        key,
        expected,
        got,
        differing_keys,
        unknown_included,
    } = violation
    else {
        unreachable!("fmt_mismatch takes a StateMismatch")
    };
    write!(
        f,
        "recovered state at seq {recovered_seq} is no legal prefix: key {} should be {} but is \
         {} ({differing_keys} keys differ from the closest prefix",
        Bytes(Some(key)),
        Bytes(expected.as_deref()),
        Bytes(got.as_deref())
    )?;
    if !unknown_included.is_empty() {
        let ids: Vec<String> = unknown_included.iter().map(ToString::to_string).collect();
        write!(f, ", which includes the unknown-seq {}", ids.join(", "))?;
    }
    write!(f, ")")
}

fn fmt_ack_or_read(violation: &Violation, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match violation {
        Violation::SeqNotAboveBase { write, first_seq, base_seq } => write!(
            f,
            "sequence number reused: {write} was acked at seq {first_seq}, but the epoch \
             started at seq {base_seq}"
        ),
        Violation::SeqOverlap {
            write,
            first_seq,
            last_seq,
            other,
            other_first_seq,
            other_last_seq,
        } => {
            write!(
                f,
                "sequence numbers overlap: {write} was acked with seqs {first_seq}..={last_seq} \
                 and {other} with seqs {other_first_seq}..={other_last_seq}"
            )
        }
        Violation::AckReordered { write, first_seq, earlier, earlier_last_seq } => write!(
            f,
            "writes reordered: {write} got first seq {first_seq}, yet {earlier} had already \
             been acked (or shown by a read) up to seq {earlier_last_seq} before {write} was \
             issued"
        ),
        Violation::StaleRead { .. } => fmt_stale_read(violation, f),
        Violation::StaleSnapshotRead { key, snap_seq, got, expected } => write!(
            f,
            "snapshot read of key {} at seq {snap_seq} returned {}, but the state at that seq \
             holds {} and no unknown-seq write wrote that",
            Bytes(Some(key)),
            Bytes(got.as_deref()),
            Bytes(expected.as_deref())
        ),
        Violation::SnapshotBelowBase { snap_seq, base_seq } => {
            write!(f, "snapshot at seq {snap_seq} is below the epoch's base seq {base_seq}")
        }
        _ => fmt_observation(violation, f),
    }
}

fn fmt_observation(violation: &Violation, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match violation {
        Violation::ReadNotAtOneSequence { .. } => fmt_not_at_one_seq(violation, f),
        Violation::ReadWentBackwards { client, seq, floor } => write!(
            f,
            "read went backwards: client {client}'s read is the state at seq {seq}, and at no \
             legal seq from {floor} on, which its previous read had already shown"
        ),
        Violation::SnapshotReadNotAtItsSequence {
            client,
            snap_seq,
            key,
            got,
            expected,
            differing_keys,
        } => write!(
            f,
            "snapshot read not at its seq: client {client} read through the snapshot at seq \
             {snap_seq} and got {} for key {}, but the state at that seq holds {} \
             ({differing_keys} keys differ)",
            Bytes(got.as_deref()),
            Bytes(Some(key)),
            Bytes(expected.as_deref())
        ),
        Violation::SnapshotBelowAck { client, snap_seq, write, acked_seq } => write!(
            f,
            "snapshot misses an ack: client {client}'s snapshot is at seq {snap_seq}, but \
             {write} had been acked up to seq {acked_seq} before the snapshot was created"
        ),
        Violation::KeyOutsideRead { client, key } => write!(
            f,
            "read returned a key it did not cover: client {client}'s read returned key {}, \
             outside every key interval it covered",
            Bytes(Some(key))
        ),
        _ => unreachable!("every other variant is formatted by Display::fmt"),
    }
}

fn fmt_not_at_one_seq(violation: &Violation, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let Violation::ReadNotAtOneSequence {
        client,
        key,
        got,
        expected_at_closest_seq,
        closest_seq,
        differing_keys,
        lo,
        hi,
        floor,
    } = violation
    else {
        unreachable!("fmt_not_at_one_seq takes a ReadNotAtOneSequence")
    };
    let floor = match floor > lo {
        true => format!(", not below seq {floor} of the client's previous read"),
        false => String::new(),
    };
    write!(
        f,
        "read not at one seq: client {client}'s read showed key {} as {}, but the read may \
         only be at a batch boundary in seqs {lo}..={hi}{floor}, and at seq {closest_seq}, \
         the closest, the key is {} ({differing_keys} keys differ there)",
        Bytes(Some(key)),
        Bytes(got.as_deref()),
        Bytes(expected_at_closest_seq.as_deref()),
    )
}

fn fmt_stale_read(violation: &Violation, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let Violation::StaleRead { key, got, expected, latest, concurrent_writes } = violation else {
        unreachable!("fmt_stale_read takes a StaleRead")
    };
    let source = match latest {
        Some((write, seq)) => {
            format!("{write} at seq {seq}, the latest acked before the read began,")
        }
        None => "the base state (no write to it was acked before the read began)".to_string(),
    };
    write!(
        f,
        "stale read: key {} returned {}, but {source} left {}, and none of the \
         {concurrent_writes} concurrent writes to it wrote that",
        Bytes(Some(key)),
        Bytes(got.as_deref()),
        Bytes(expected.as_deref())
    )
}

/// Prints a key or value as `"text"` when printable ASCII, as `0x..` hex otherwise, and a
/// missing value as `absent`.
pub(crate) struct Bytes<'a>(pub(crate) Option<&'a [u8]>);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(bytes) = self.0 else {
            return write!(f, "absent");
        };
        if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return write!(f, "\"{}\"", String::from_utf8_lossy(bytes));
        }
        write!(f, "0x")?;
        bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
