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
             been acked up to seq {earlier_last_seq} before {write} was issued"
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
        _ => unreachable!("every other variant is formatted by Display::fmt"),
    }
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
