//! The deterministic simulator for JadeDB.
//!
//! Split by role: `config` draws a scenario from a seed, `runtime` is the simulated runtime
//! (virtual time, the crashing disk), `scenario` runs the crash cycles and checks them against
//! the reference model, `runner` runs many seeds (`sweep` says which, `progress` shows how far
//! it is), `summary` adds up what they found and `report` writes it as text and JSON and
//! merges shards; `trace` hashes every event. `damage`, `process`, `runner`, `runtime` and
//! `scenario` need madsim, which exists only under `--cfg madsim` (`cargo sim`).

pub mod config;
#[cfg(madsim)]
pub mod damage;
#[cfg(madsim)]
pub mod exhaustive;
pub mod plan;
#[cfg(madsim)]
pub mod process;
pub mod progress;
pub mod report;
#[cfg(madsim)]
pub mod runner;
#[cfg(madsim)]
pub mod runtime;
#[cfg(madsim)]
pub mod scenario;
pub mod scenario_file;
#[cfg(madsim)]
pub mod shrink;
pub mod summary;
pub mod sweep;
pub mod trace;
