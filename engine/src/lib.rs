//! JadeDB: an embeddable LSM-tree key-value engine.
//!
//! The engine reaches storage, time and tasks only through [`runtime::Runtime`], so the same
//! code runs on real files ([`runtime::StdRuntime`]) and under the seeded simulator.

pub mod runtime;
mod signal;
