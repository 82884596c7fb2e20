//! Fault injection for JadeDB's runtime seam: a crashing in-memory disk ([`MemFs`]) and a wrapper
//! that injects faults into any [`jadedb::runtime::FileSystem`] ([`FaultFs`]).
//!
//! Both are deterministic: what they do depends only on the calls made and on explicit seeds,
//! so a failing simulator seed replays exactly.

pub mod faultfs;
pub mod memfs;
pub mod predicate;
pub mod runtime;

pub use faultfs::{Effect, FaultFs};
pub use memfs::{CrashModel, CrashReport, FileInfo, Found, MemFs, MemFsStats};
pub use predicate::{Call, OpKind, Predicate};
pub use runtime::MemRuntime;
