//! The deterministic simulator for JadeDB.
//!
//! Split by role: `config` draws a scenario from a seed, `runtime` is the simulated runtime
//! (virtual time, the crashing disk), `scenario` runs the crash cycles and checks them against
//! the reference model, `runner` runs many seeds and reports (`sweep` says which), `trace`
//! hashes every event. Everything but `config`, `sweep` and `trace` needs madsim, which exists only under `--cfg madsim` (`cargo sim`).

pub mod config;
#[cfg(madsim)]
pub mod damage;
#[cfg(madsim)]
pub mod process;
#[cfg(madsim)]
pub mod runner;
#[cfg(madsim)]
pub mod runtime;
#[cfg(madsim)]
pub mod scenario;
pub mod sweep;
pub mod trace;
