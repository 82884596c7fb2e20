//! A sweep's report: the JSON document `run --json` writes, the text lines the run (and
//! `merge`) print, and the merge of the documents of a sweep's shards into the document of the
//! whole sweep.
//!
//! The text lines are parsed by CI scripts and users: lines are only ever added, never reworded.
//! The JSON document says what was swept (range, shards, planted bug) beside the counts, so
//! that `merge` can refuse documents of different sweeps and name the shards that are missing.

use crate::config::{Bug, CallKind, FaultKind};
use crate::summary::Summary;
use crate::sweep::{fmt_duration, Only, Shard};
use jadedb::runtime::Phase;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The format of the JSON document, written into it: a reader refuses any other.
pub const FORMAT: &str = "jadedb-sim-summary/1";

/// A sweep's JSON document: what was swept and what it found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepDoc {
    pub format: String,
    /// The range swept, `start..end`, and whether its start was drawn at random.
    pub start: u64,
    pub end: u64,
    pub random_start: bool,
    pub only: Only,
    pub bug: Option<Bug>,
    /// How many shards the range was cut into, and which of them this document holds (all of
    /// them for a sweep that was not sharded, or a merge of every shard).
    pub shard_count: u64,
    pub shards: Vec<u64>,
    /// Workers per shard (the most of any shard, in a merge).
    pub jobs: usize,
    pub time_budget_secs: Option<f64>,
    /// Standard scenarios per second of one shard (what the `speed:` line says).
    #[serde(default)]
    pub standard_per_second: f64,
    pub summary: Summary,
}

impl SweepDoc {
    /// The document of one run (one shard of `shard.count`).
    #[allow(clippy::too_many_arguments)] // each is a fact of the run the document records
    pub fn of_run(
        range: std::ops::Range<u64>,
        random_start: bool,
        only: Only,
        bug: Option<Bug>,
        shard: Shard,
        jobs: usize,
        time_budget: Option<Duration>,
        summary: Summary,
    ) -> SweepDoc {
        SweepDoc {
            format: FORMAT.to_string(),
            start: range.start,
            end: range.end,
            random_start,
            only,
            bug,
            shard_count: shard.count,
            shards: vec![shard.index],
            jobs,
            time_budget_secs: time_budget.map(|d| d.as_secs_f64()),
            standard_per_second: summary.standard_per_second(),
            summary,
        }
    }

    /// Reads a document, refusing any of another format.
    pub fn from_json(text: &str) -> Result<SweepDoc, String> {
        read_versioned(text, FORMAT)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a summary serializes")
    }

    fn range(&self) -> String {
        format!("{}..{}", self.start, self.end)
    }
}

/// Reads a JSON document whose `format` field must be `format`: a document of another format
/// is refused before anything else of it is read.
pub(crate) fn read_versioned<T: serde::de::DeserializeOwned>(
    text: &str,
    format: &str,
) -> Result<T, String> {
    #[derive(Deserialize)]
    struct Head {
        format: String,
    }
    let head: Head = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if head.format != format {
        return Err(format!("format {:?}, not {format:?}", head.format));
    }
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Merges the documents of a sweep's shards (each named, for errors, by where it came from)
/// into the document of the whole sweep. Refuses documents of different sweeps, a shard given
/// twice, and a sweep with shards missing: a merged report must be the whole sweep's.
pub fn merge(docs: &[(String, SweepDoc)]) -> Result<SweepDoc, String> {
    let (first_name, first) = docs.first().ok_or("no summaries to merge")?;
    let mut merged = SweepDoc { shards: Vec::new(), summary: Summary::default(), ..first.clone() };
    for (name, doc) in docs {
        let same_sweep = (doc.start, doc.end, doc.only, doc.bug, doc.shard_count)
            == (first.start, first.end, first.only, first.bug, first.shard_count);
        if !same_sweep {
            return Err(format!(
                "{name} is of another sweep than {first_name}: {} in {} shards, only {:?}, bug \
                 {:?}, against {} in {} shards, only {:?}, bug {:?}",
                doc.range(),
                doc.shard_count,
                doc.only,
                doc.bug,
                first.range(),
                first.shard_count,
                first.only,
                first.bug
            ));
        }
        for &index in &doc.shards {
            if merged.shards.contains(&index) {
                return Err(format!("shard {index}/{} is given twice ({name})", doc.shard_count));
            }
            merged.shards.push(index);
        }
        merged.jobs = merged.jobs.max(doc.jobs);
        merged.summary.absorb(&doc.summary);
    }
    merged.shards.sort_unstable();
    merged.standard_per_second = merged.summary.standard_per_second();
    let missing: Vec<String> = (0..first.shard_count)
        .filter(|i| !merged.shards.contains(i))
        .map(|i| format!("{i}/{}", first.shard_count))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "shards {} of {} are missing: a merged report covers the whole sweep",
            missing.join(", "),
            first.range()
        ));
    }
    Ok(merged)
}

/// The command that replays `seed`.
pub fn replay_command(seed: u64, bug: Option<Bug>) -> String {
    match bug {
        Some(bug) => format!("cargo sim replay --seed {seed} --bug {bug}"),
        None => format!("cargo sim replay --seed {seed}"),
    }
}

/// The command that shrinks the failing scenario of `seed` into a scenario file.
pub fn shrink_command(seed: u64, bug: Option<Bug>) -> String {
    replay_command(seed, bug).replacen("replay", "shrink", 1)
}

/// The text report of a sweep, ending with the `sim:` line.
pub fn lines(doc: &SweepDoc) -> Vec<String> {
    let s = &doc.summary;
    let count = s.count();
    let merged = doc.shards.len() > 1;
    let mut out = Vec::new();
    if merged {
        out.push(format!(
            "merge: {} shard summaries of {} ({count} seeds); times and speeds below are \
             summed over the shards, so the speed is one shard's",
            doc.shards.len(),
            doc.range()
        ));
    } else if doc.shard_count > 1 {
        let shard = Shard { index: doc.shards[0], count: doc.shard_count };
        out.push(format!("shard: {shard} of {}, {count} seeds", doc.range()));
    }
    let t = &s.totals;
    out.push(format!(
        "coverage: {} of {count} scenarios crashed and recovered with synced and unsynced writes; \
         memtable rotation in {}, torn write in {}, failed writes (faults) in {}, clean close in {}",
        s.full_coverage, s.with_rotation, s.with_torn_write, s.with_failed_writes, s.with_clean_close
    ));
    out.push(format!(
        "tables: flush in {} scenarios, a crash during a flush in {}; compaction in {}, a crash \
         during a compaction in {}",
        s.with_flush, s.with_crash_in_flush, s.with_compaction, s.with_crash_in_compaction
    ));
    let share = |n: u64| format!("{n} ({:.1}%)", 100.0 * n as f64 / count.max(1) as f64);
    out.push(format!(
        "background: jobs ran at once in {} scenarios, two or more compactions at once in {}; a \
         crash while two or more jobs ran in {}; compactions waited for their write limit in {}",
        share(s.with_concurrent_jobs),
        share(s.with_concurrent_compactions),
        share(s.with_crash_in_concurrent_jobs),
        share(s.with_rate_limit_wait),
    ));
    out.push(format!(
        "totals: {} crashes, {} recoveries checked, {} writes acked ({} synced), {} failed, {} \
         reads, {} scans and {} snapshot reads checked, {} flushes, {} compactions, {} \
         compact_range and {} flush calls",
        t.crashes,
        t.recoveries,
        t.writes_acked,
        t.synced_acked,
        t.writes_failed,
        t.reads,
        t.scans,
        t.snapshot_reads,
        t.flushes,
        t.compactions,
        t.compact_ranges,
        t.user_flushes
    ));
    out.extend(coverage_lines(s, count));
    out.extend(latency_line(s));
    out.push(format!(
        "scale: {} scenarios at scale ({:.1}%), {} writes and {} tables flushed, in {:.1}s ({:.1} \
         per second); each ran at least {} operations, and a tree reached {} tables over {} \
         levels",
        s.scale,
        100.0 * s.scale as f64 / count.max(1) as f64,
        s.scale_writes,
        s.scale_tables_flushed,
        s.scale_secs,
        s.scale as f64 / s.scale_secs.max(1e-9),
        s.scale_ops_min,
        s.scale_tables_max,
        s.scale_levels_max
    ));
    // The standard scenarios alone: the scale share is timed apart and reported above.
    out.push(format!(
        "speed: {:.0} scenarios per second ({} in {:.1}s on {} jobs)",
        s.standard_per_second(),
        s.standard,
        s.standard_secs,
        doc.jobs
    ));
    if let Some(budget) = doc.time_budget_secs {
        let line = time_budget_line(s, Duration::from_secs_f64(budget));
        // Each shard ran its own lowest seeds.
        out.push(if merged { format!("{line} (in each shard)") } else { line });
    }
    if merged {
        for f in &s.failures {
            out.push(format!(
                "failed seed {}: {}; replay with: {}",
                f.seed,
                f.reason,
                replay_command(f.seed, doc.bug)
            ));
        }
    }
    if let Some(first) = s.failures.first() {
        out.push(format!(
            "first failing seed: {}; replay with: {}",
            first.seed,
            replay_command(first.seed, doc.bug)
        ));
    }
    out.push(format!("sim: {} passed, {} failed", s.passed, s.failed));
    out
}

/// Says whether a time budget stopped the sweep, and which seeds then ran.
fn time_budget_line(s: &Summary, budget: Duration) -> String {
    if !s.cut_short() {
        return format!("time budget: {}: every selected seed ran", fmt_duration(budget));
    }
    let ran = |class: &str, n: u64, of: u64, last: Option<u64>| match last {
        _ if n == of => format!("all {of} {class} seeds"),
        Some(seed) if n > 0 => format!("the lowest {n} of {of} {class} seeds, through seed {seed}"),
        _ => format!("none of {of} {class} seeds"),
    };
    format!(
        "time budget: {} reached: ran {} and {}",
        fmt_duration(budget),
        ran("standard", s.standard, s.standard_selected, s.standard_through),
        ran("scale", s.scale, s.scale_selected, s.scale_through)
    )
}

/// The report lines that say how often each crash kind, crash point and fault happened.
pub fn coverage_lines(s: &Summary, count: u64) -> Vec<String> {
    let pct = |n: u64| format!("{n} ({:.1}%)", 100.0 * n as f64 / count.max(1) as f64);
    let calls: Vec<String> = CallKind::ALL
        .iter()
        .zip(&s.with_crash_after_call)
        .map(|(k, &n)| format!("{} {}", k.name(), pct(n)))
        .collect();
    let phases: Vec<String> = Phase::ALL
        .iter()
        .zip(&s.with_crash_in_phase)
        .map(|(p, &n)| format!("{} {}", p.name(), pct(n)))
        .collect();
    let faults: Vec<String> = FaultKind::ALL
        .iter()
        .zip(&s.with_fault)
        .map(|(k, &n)| format!("{} {}", k.name(), pct(n)))
        .collect();
    let t = &s.totals;
    vec![
        format!(
            "crash kinds: power loss in {} scenarios, process crash in {}; {} of {} crashes came \
             at their aimed point",
            pct(s.with_power_loss),
            pct(s.with_process_crash),
            t.aimed_crashes,
            t.crashes
        ),
        format!("crash points: right after {}; inside {}", calls.join(", "), phases.join(", ")),
        format!(
            "after failures: a crash aimed within a few calls of a failed write or sync came \
             there in {} scenarios",
            pct(s.with_crash_after_failure)
        ),
        format!(
            "faults (scenarios where each fired): {}; sector-torn blocks {}, directory changes \
             out of order {}; {} opens refused after damage at rest",
            faults.join(", "),
            pct(s.with_torn_blocks),
            pct(s.with_dirs_out_of_order),
            t.refusals_after_damage
        ),
        format!(
            "checks: {} synced acknowledgements found durable at that instant, {} writes issued \
             after a failed write or sync (none may be acknowledged), {} iterator walks, {} \
             in-code fault points fired",
            t.acks_checked_durable, t.writes_after_failure, t.walks, t.points_fired
        ),
        format!(
            "blobs: blob files written in {} scenarios ({} bytes), a crash inside a blob write \
             in {}",
            pct(s.with_blob_files),
            t.blob_bytes_written,
            pct(s.with_crash_in_blob_write)
        ),
    ]
}

/// The line reporting commit latency of the scenarios that fix the fsync latency.
pub fn latency_line(s: &Summary) -> Option<String> {
    let at = |q: f64| s.latency_quantile_us(q).map(|us| us as f64 / 1000.0);
    let (p50, p99, worst) = (at(0.5)?, at(0.99)?, at(1.0)?);
    Some(format!(
        "latency: {} scenarios with a fixed {} ms fsync: synced commit p50 {p50:.1} ms, p99 \
         {p99:.1} ms, worst {worst:.1} ms over {} commits (bound: p99 at most {} ms in every \
         scenario)",
        s.latency_scenarios,
        crate::config::FIXED_SYNC_MS,
        s.latency_us_counts.values().sum::<u64>(),
        crate::config::LATENCY_P99_BOUND.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::Failure;

    fn doc(index: u64, count: u64, passed: u64) -> SweepDoc {
        let mut summary = Summary {
            passed,
            standard: passed,
            standard_selected: passed,
            standard_secs: 1.0,
            ..Summary::default()
        };
        summary.latency_us_counts.insert(2000 + index, 3);
        SweepDoc::of_run(0..4000, false, Only::All, None, Shard { index, count }, 2, None, summary)
    }

    #[test]
    fn documents_round_trip_through_json_and_refuse_other_formats() {
        let mut d = doc(1, 4, 10);
        d.bug = Some(Bug::SyncNoop);
        d.summary.failed = 1;
        d.summary.failures.push(Failure { seed: 7, reason: "lost a write".into() });
        assert_eq!(SweepDoc::from_json(&d.to_json()), Ok(d.clone()));
        let other = d.to_json().replace(FORMAT, "jadedb-sim-summary/0");
        assert!(SweepDoc::from_json(&other).unwrap_err().contains("format"));
        assert!(SweepDoc::from_json("{").is_err());
    }

    #[test]
    fn merge_adds_the_shards_and_refuses_what_is_not_one_whole_sweep() {
        let named = |docs: Vec<SweepDoc>| -> Vec<(String, SweepDoc)> {
            docs.into_iter().enumerate().map(|(i, d)| (format!("s{i}.json"), d)).collect()
        };
        let whole = merge(&named((0..4).map(|i| doc(i, 4, 10 + i)).collect())).unwrap();
        assert_eq!(whole.shards, vec![0, 1, 2, 3]);
        assert_eq!(whole.summary.passed, 46);
        assert_eq!(whole.summary.standard_secs, 4.0);
        assert_eq!(whole.summary.latency_us_counts.values().sum::<u64>(), 12);
        assert!(lines(&whole)[0].starts_with("merge: 4 shard summaries of 0..4000 (46 seeds)"));
        assert_eq!(lines(&whole).last().unwrap(), "sim: 46 passed, 0 failed");

        let missing = merge(&named(vec![doc(0, 4, 1), doc(2, 4, 1)])).unwrap_err();
        assert!(missing.contains("shards 1/4, 3/4"), "{missing}");
        let twice = merge(&named(vec![doc(0, 2, 1), doc(0, 2, 1)])).unwrap_err();
        assert!(twice.contains("shard 0/2 is given twice"), "{twice}");
        let mut other = doc(1, 2, 1);
        other.end = 5000;
        let other = merge(&named(vec![doc(0, 2, 1), other])).unwrap_err();
        assert!(other.contains("another sweep"), "{other}");
        assert!(merge(&[]).is_err());
    }

    #[test]
    fn a_time_budget_that_ran_out_says_which_seeds_ran() {
        let mut d = doc(0, 1, 0);
        d.time_budget_secs = Some(60.0);
        d.summary = Summary {
            standard: 5,
            standard_selected: 9,
            standard_through: Some(6),
            scale_selected: 1,
            ..Summary::default()
        };
        let line = lines(&d).into_iter().find(|l| l.starts_with("time budget:")).unwrap();
        assert_eq!(
            line,
            "time budget: 1m00s reached: ran the lowest 5 of 9 standard seeds, through seed 6 \
             and none of 1 scale seeds"
        );
    }
}
