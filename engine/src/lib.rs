//! JadeDB: an embeddable LSM-tree key-value engine.
//!
//! The engine reaches storage, time and tasks only through [`runtime::Runtime`], so the same
//! code runs on real files ([`runtime::StdRuntime`]) and under the seeded simulator.
//!
//! ```
//! use jadedb::{Db, Options, WriteOptions, runtime::StdRuntime};
//! use std::sync::Arc;
//!
//! # let dir = std::env::temp_dir().join(format!("jadedb-doc-{}", std::process::id()));
//! let db = Db::open(&dir, Options::default(), Arc::new(StdRuntime::new()))?;
//! db.put(b"hello", b"world", WriteOptions::synced())?;
//! assert_eq!(db.get(b"hello")?.as_deref(), Some(&b"world"[..]));
//! db.close()?;
//! # Ok::<(), jadedb::Error>(())
//! ```

mod background;
mod batch;
mod blob;
mod blocking;
mod cache;
mod commit;
mod compaction;
mod db;
mod error;
mod flush;
#[cfg(feature = "invariants")]
mod invariants;
mod iterator;
mod job;
mod lru;
mod manifest;
mod memory;
mod memtable;
mod metrics;
mod options;
mod rate_limit;
mod recovery;
pub mod runtime;
mod signal;
mod sstable;
mod table_cache;
#[cfg(test)]
mod testing;
mod unwind;
mod varint;
mod version;
mod version_set;
mod wal;

pub use batch::{WriteBatch, BATCH_BYTES_MAX, KEY_BYTES_MAX, VALUE_BYTES_MAX};
pub use bytes::Bytes;
pub use db::{Db, Snapshot};
pub use error::{Error, Result};
pub use iterator::DbIterator;
pub use metrics::{AlertThresholds, Alerts, Latency, Metrics};
pub use options::{Options, PlantedBug, WriteOptions};
