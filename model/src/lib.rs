//! The reference model JadeDB's simulator checks the engine against.
//!
//! The model knows nothing of the engine: it only hears what clients asked for (a write batch
//! issued), what the engine answered (acked with a first sequence number, or failed), and what
//! the engine showed (a read result, or the state found after a crash). From that it decides
//! whether the engine kept the invariants of DESIGN.md ("Invariants the simulator checks
//! against the model"):
//!
//! 1. every write acknowledged as synced survives any crash ([`Model::check_recovery`]);
//! 2. after recovery the state equals the model after some prefix of the committed writes that
//!    includes every synced one: no holes, no reordering, batches whole or absent
//!    ([`Model::check_recovery`]);
//! 3. deleted keys never come back, no key appears that was never written (a special case of 2:
//!    such a key shows up as a mismatch against every legal prefix);
//! 4. a read returns what the model says for the read's snapshot, key by key
//!    ([`Model::check_read`], [`Model::check_snapshot_read`]);
//! 5. a whole read (a point read, a scan, an iterator walk) is the state at ONE sequence number
//!    it may have read at: not below what was acked before it began, not above what was issued
//!    before it ended, on a batch boundary, never showing a failed write, and never below the
//!    previous read of the same client; a snapshot read is the state at exactly the snapshot's
//!    sequence number ([`Model::observe`], [`Model::observe_snapshot`], judged by
//!    [`Model::check_observations`] once every write they depend on has an answer; DESIGN.md's
//!    invariants 4 and 7);
//! 6. a write a reader saw survives every crash once a write issued after that read is
//!    recovered (a synced one always is), and lies below every such write
//!    ([`Model::check_recovery`]); a write issued after a read commits above what the read
//!    showed ([`Model::check_acks`]; DESIGN.md's invariant 7).
//!
//! Writes whose outcome the client could not learn (failed, or in flight at a crash) are
//! *indeterminate*: they may or may not have taken effect, at any sequence number the acked
//! writes leave free and not before a write that was acked before they were issued. The model
//! never guesses about them; it searches the few ways they could have been placed. What reads
//! showed narrows this only with proven facts: a value only one in-flight write can have put
//! in a key proves that write visible.
//!
//! Everything is ordered (`BTreeMap`), so the model's answers never depend on a hash seed and a
//! seed replays bit for bit.
//!
//! The order of calls matters, and mistakes in it only ever make the model more permissive:
//! issue a write before handing it to the engine, ack or fail it after the engine answers,
//! begin a read before calling the engine (for a snapshot, right before creating it) and
//! check or observe it when the engine answers. Call [`Model::check_observations`] after every
//! ack, failure and observation: it judges what has become judgeable and reports the first
//! problem. Observations still waiting at a crash are dropped by [`Model::restart`].
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::ops::Bound;
//! use jadedb_model::{Model, Observation, Op};
//!
//! let mut model = Model::new();
//! let id = model.issue_write(vec![Op::Put(b"k".to_vec(), b"v".to_vec())], true);
//! model.ack_write(id, 1); // the engine said Ok, first seq 1
//! model.check_observations().unwrap();
//! let read = model.begin_read();
//! assert!(model.check_read(b"k", &read, Some(b"v")).is_ok());
//!
//! // A scan of every key by client 7 that returned nothing missed the acked write.
//! let (token, everything) = (model.begin_read(), (Bound::Unbounded, Bound::Unbounded));
//! model.observe(token, Observation::scan(7, everything, BTreeMap::new()));
//! assert!(model.check_observations().is_err());
//!
//! // After a crash the engine recovered nothing: the synced write was lost.
//! assert!(model.check_recovery(&BTreeMap::new(), 0).is_err());
//! let recovered = BTreeMap::from([(b"k".to_vec(), b"v".to_vec())]);
//! model.check_recovery(&recovered, 1).unwrap();
//! model.restart(recovered, 1);
//! assert_eq!(model.base_seq(), 1);
//! ```

mod causal;
mod history;
mod intervals;
mod observations;
mod reads;
mod recovery;
mod violation;

#[cfg(test)]
mod test_util;

use std::fmt;

pub use history::{Model, ModelStats, ReadToken};
pub use observations::Observation;
pub use violation::Violation;

/// A key as the engine stores it.
pub type Key = Vec<u8>;
/// A value as the engine stores it.
pub type Value = Vec<u8>;

/// One operation of a write batch; the ops of a batch take consecutive sequence numbers in
/// order, so a later op on the same key in the same batch wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`.
    Put(Key, Value),
    /// Removes `key`.
    Delete(Key),
}

impl Op {
    /// The key this op touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put(key, _) | Op::Delete(key) => key,
        }
    }

    /// The value this op leaves behind: `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Op::Put(_, value) => Some(value),
            Op::Delete(_) => None,
        }
    }
}

/// Names one issued write. Ids keep counting across epochs, so an id from before a crash can
/// never be mistaken for a write of the new epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WriteId(pub u64);

impl fmt::Display for WriteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "write #{}", self.0)
    }
}
