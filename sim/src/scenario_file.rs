//! Scenario files: a scenario as content, not as a seed. A file holds the whole configuration
//! of a scenario (options, crash cycles with their crash points and faults, every client
//! operation, the final process's writes) and the seed that drives what the scenario leaves to
//! chance as it runs (task scheduling, latencies, which faults fire, what a power loss keeps).
//! It replays exactly however the generator draws seeds later on, which a bare seed does not.
//!
//! `cargo sim shrink` writes them (into `tests/scenarios/`, where `tests/tests/scenarios.rs`
//! replays every one); `cargo sim replay --file F` runs one. The format is JSON, versioned by
//! its `format` field; fields are only ever added, with defaults.

use crate::config::ScenarioConfig;
use crate::plan::{key_name, Action, Step, Write, WriteOp};
use serde::{Deserialize, Serialize};

/// The format of a scenario file, written into it: a reader refuses any other.
pub const FORMAT: &str = "jadedb-sim-scenario/1";

/// A scenario file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioFile {
    pub format: String,
    /// What the scenario shows, for a reader of the file.
    pub about: String,
    /// The check the scenario failed when it was written (with `config.bug` planted, if any):
    /// a replay with the bug must fail this check, and one without it must pass.
    pub check: String,
    /// The seed whose scenario was shrunk into this one, if any.
    #[serde(default)]
    pub shrunk_from_seed: Option<u64>,
    pub config: ScenarioConfig,
}

impl ScenarioFile {
    /// Reads a scenario file, refusing any of another format.
    pub fn from_json(text: &str) -> Result<ScenarioFile, String> {
        let file: ScenarioFile = crate::report::read_versioned(text, FORMAT)?;
        if file.config.cycles.is_empty() {
            return Err("a scenario needs at least one crash cycle".to_string());
        }
        Ok(file)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a scenario serializes") + "\n"
    }
}

/// The check a failure reason names, so that a shrunk scenario is known to fail the same way:
/// the reason's first line up to its first `:` or path, numbers blanked (`write # was
/// acknowledged as synced before`, `recovery check`, `liveness`).
pub fn check_of(reason: &str) -> String {
    let line = reason.lines().next().unwrap_or("");
    let cut = line.find([':', '/']).unwrap_or(line.len());
    let mut check = String::new();
    let mut in_number = false;
    for c in line[..cut].trim().chars().take(100) {
        if c.is_ascii_digit() {
            if !in_number && !check.ends_with('#') {
                check.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            check.push(c);
        }
    }
    check
}

/// A scenario as lines a person reads: its options, then each cycle's crash, faults and every
/// client's operations, then the final process.
pub fn describe(config: &ScenarioConfig) -> Vec<String> {
    let mut out = vec![format!(
        "scenario of seed {}: {} operations, {} keys, values up to {} bytes, database in {}, \
         bug {:?}, crash model {:?}, latency {:?}, buggify {:?}, group {} bytes, window {} us, \
         WAL preallocation {} bytes",
        config.seed,
        config.ops(),
        config.mix.keys,
        config.mix.value_bytes_max,
        config.db_dir,
        config.bug.map(|b| b.name()),
        config.crash_model,
        config.latency,
        config.buggify,
        config.group_bytes_max,
        config.commit_window_us,
        config.wal_preallocate_bytes
    )];
    for (index, cycle) in config.cycles.iter().enumerate() {
        out.push(format!(
            "cycle {index}: {:?} at {:?} (deadline {} ms){}, faults {:?}{}, memtable {} bytes, \
             tables {:?}",
            cycle.crash_kind,
            cycle.point,
            cycle.deadline_ms,
            if cycle.close { ", closing cleanly first" } else { "" },
            cycle.faults,
            if cycle.faults_during_recovery { " from boot" } else { "" },
            cycle.memtable_bytes_max,
            cycle.tables
        ));
        for (client, plan) in cycle.clients.0.iter().enumerate() {
            for op in &plan.ops {
                let pause =
                    if op.pause_ms > 0 { format!(", then {} ms", op.pause_ms) } else { "".into() };
                out.push(format!("  client {client}: {}{pause}", action(&op.action)));
            }
            if let Some(end) = plan.end {
                out.push(format!("  client {client}: at the end, {end:?}"));
            }
        }
    }
    let fin = &config.final_plan;
    for w in &fin.before {
        out.push(format!("  final: {}", write(w)));
    }
    out.push("  final: snapshot".to_string());
    for w in &fin.after {
        out.push(format!("  final: {}", write(w)));
    }
    out.push(format!(
        "  final: flush, compact everything, read every key at the snapshot{}, close, recover",
        if fin.reverse { " backward" } else { "" }
    ));
    out
}

fn name(k: u32) -> String {
    String::from_utf8_lossy(&key_name(k as usize)).into_owned()
}

fn write(w: &Write) -> String {
    let ops: Vec<String> = w
        .ops
        .iter()
        .map(|op| match *op {
            WriteOp::Put { key, len } => format!("put {} ({len} bytes)", name(key)),
            WriteOp::Delete { key } => format!("delete {}", name(key)),
        })
        .collect();
    format!("write [{}]{}", ops.join(", "), if w.sync { " synced" } else { "" })
}

fn action(a: &Action) -> String {
    match a {
        Action::Write(w) => write(w),
        Action::Get { key } => format!("get {}", name(*key)),
        Action::Scan { from, to, by_iterator } => format!(
            "scan [{}, {}){}",
            name(*from),
            name(*to),
            if *by_iterator { " by a backward iterator" } else { "" }
        ),
        Action::Walk { lower, upper, steps, at_snapshot, pause_ms } => {
            let steps: Vec<String> = steps.iter().map(step).collect();
            format!(
                "iterator{} over [{}, {}){}: {}",
                if *at_snapshot { " at the snapshot" } else { "" },
                lower.map_or("-".into(), name),
                upper.map_or("-".into(), name),
                if *pause_ms > 0 {
                    format!(", {pause_ms} ms between steps")
                } else {
                    String::new()
                },
                steps.join(", ")
            )
        }
        Action::SnapshotRead { from, to, reverse } => format!(
            "read [{}, {}) at the snapshot{}",
            name(*from),
            name(*to),
            if *reverse { " backward" } else { "" }
        ),
        Action::TakeSnapshot => "snapshot".to_string(),
        Action::CompactRange { from, to } => {
            format!("compact_range [{}, {}]", name(*from), name(*to))
        }
        Action::Flush => "flush".to_string(),
    }
}

fn step(s: &Step) -> String {
    let target =
        |t: &crate::plan::Target| format!("{}{}", name(t.key), if t.between { "+" } else { "" });
    match s {
        Step::First => "first".into(),
        Step::Last => "last".into(),
        Step::Seek(t) => format!("seek {}", target(t)),
        Step::SeekForPrev(t) => format!("seek_for_prev {}", target(t)),
        Step::Next => "next".into(),
        Step::Prev => "prev".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Bug;

    #[test]
    fn checks_name_the_failed_check_without_its_numbers_or_paths() {
        for (reason, check) in [
            ("recovery check: recovered state at seq 92 is no legal prefix", "recovery check"),
            (
                "write #10 was acknowledged as synced before /db/000001.log was durable",
                "write # was acknowledged as synced before",
            ),
            ("created /data/jade/db/000004.sst again", "created"),
            (
                "recovered seq 97 is below 108, acknowledged",
                "recovered seq # is below #, acknowledged",
            ),
            ("liveness: a write did not finish", "liveness"),
        ] {
            assert_eq!(check_of(reason), check, "{reason}");
        }
    }

    #[test]
    fn scenario_files_round_trip_and_refuse_other_formats() {
        let file = ScenarioFile {
            format: FORMAT.to_string(),
            about: "test".to_string(),
            check: "recovery check".to_string(),
            shrunk_from_seed: Some(7),
            config: ScenarioConfig::draw(7, Some(Bug::SyncNoop)),
        };
        let text = file.to_json();
        assert_eq!(ScenarioFile::from_json(&text), Ok(file.clone()));
        let other = text.replace(FORMAT, "jadedb-sim-scenario/0");
        assert!(ScenarioFile::from_json(&other).unwrap_err().contains("format"));
        assert!(describe(&file.config).len() > file.config.cycles.len());
    }
}
