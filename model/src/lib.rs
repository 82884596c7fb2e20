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
//! 4. a read returns what the model says for the read's snapshot ([`Model::check_read`],
//!    [`Model::check_snapshot_read`]).
//!
//! Writes whose outcome the client could not learn (failed, or in flight at a crash) are
//! *indeterminate*: they may or may not have taken effect, at any sequence number the acked
//! writes leave free and not before a write that was acked before they were issued. The model
//! never guesses about them; it searches the few ways they could have been placed.
//!
//! Everything is ordered (`BTreeMap`), so the model's answers never depend on a hash seed and a
//! seed replays bit for bit.
//!
//! The order of calls matters, and mistakes in it only ever make the model more permissive:
//! issue a write before handing it to the engine, ack or fail it after the engine answers,
//! begin a read before calling the engine and check it when the engine answers.
//!
//! ```
//! use std::collections::BTreeMap;
//! use jadedb_model::{Model, Op};
//!
//! let mut model = Model::new();
//! let id = model.issue_write(vec![Op::Put(b"k".to_vec(), b"v".to_vec())], true);
//! model.ack_write(id, 1); // the engine said Ok, first seq 1
//! let read = model.begin_read();
//! assert!(model.check_read(b"k", &read, Some(b"v")).is_ok());
//!
//! // After a crash the engine recovered nothing: the synced write was lost.
//! assert!(model.check_recovery(&BTreeMap::new(), 0).is_err());
//! let recovered = BTreeMap::from([(b"k".to_vec(), b"v".to_vec())]);
//! model.check_recovery(&recovered, 1).unwrap();
//! model.restart(recovered, 1);
//! assert_eq!(model.base_seq(), 1);
//! ```

mod history;
mod reads;
mod recovery;
mod violation;

use std::fmt;

pub use history::{Model, ModelStats, ReadToken};
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
