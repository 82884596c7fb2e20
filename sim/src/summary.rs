//! What a sweep found, as counts that add up: one scenario's [`Stats`], and a sweep's
//! [`Summary`], which is a sum of scenarios' stats. A sweep's workers each keep their own
//! summary and absorb them into one at the end, and `merge` absorbs the summaries of a sweep's
//! shards the same way, so a merged report is the report of the whole sweep by construction.
//!
//! A summary is serialized as the `summary` of a sweep's JSON document (`crate::report`):
//! fields are only ever added, with defaults, so an older summary still reads.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counts of what a scenario did, for the run report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub crashes: u64,
    pub recoveries: u64,
    pub writes_acked: u64,
    pub synced_acked: u64,
    pub writes_failed: u64,
    pub reads: u64,
    pub clean_closes: u64,
    pub rotations: u64,
    pub torn_writes: u64,
    pub flushes: u64,
    pub compactions: u64,
    /// Crashes that landed while a flush, or a compaction, was running.
    pub crashes_in_flush: u64,
    pub crashes_in_compaction: u64,
    /// Crashes aimed soon after a failed write or sync that came there.
    pub crashes_after_failure: u64,
    /// Crashes that landed while two or more background jobs were running.
    pub crashes_in_concurrent_jobs: u64,
    /// The most background jobs, and compactions, that ran at once in a process.
    pub concurrent_jobs_max: u64,
    pub concurrent_compactions_max: u64,
    /// Virtual time compactions waited for their write limit, in µs.
    pub rate_limited_us: u64,
    pub compact_ranges: u64,
    pub user_flushes: u64,
    pub snapshot_reads: u64,
    pub scans: u64,
    /// Iterator walks with seeks and direction changes.
    pub walks: u64,
    pub power_losses: u64,
    pub process_crashes: u64,
    /// Crashes that came at their aimed point.
    pub aimed_crashes: u64,
    /// Crashes right after a file call of each kind ([`crate::config::CallKind::ALL`] order).
    pub crashes_after_call: [u64; 6],
    /// Crashes inside each engine phase ([`jadedb::runtime::Phase::ALL`] order).
    pub crashes_in_phase: [u64; 7],
    /// Faults that fired, by kind ([`crate::config::FaultKind::ALL`] order).
    pub faults_fired: [u64; 17],
    /// Unsynced blocks that landed sector by sector, and directory changes that survived out
    /// of order.
    pub torn_blocks: u64,
    pub dir_changes_out_of_order: u64,
    /// Opens refused (with `Corruption` or an I/O error) after data at rest was damaged.
    pub refusals_after_damage: u64,
    /// Synced acknowledgements whose WAL bytes were checked durable at that instant.
    pub acks_checked_durable: u64,
    /// Writes issued after a failed write or sync, all of which had to fail.
    pub writes_after_failure: u64,
    /// In-code fault points that fired.
    pub points_fired: u64,
    /// The most tables the tree held at once, and the most levels holding them.
    pub tables_max: u64,
    pub levels_max: u64,
    /// Client operations issued (writes, reads, flushes and compactions).
    pub ops: u64,
    /// Bytes of blob files written (key-value separation), and crashes that came while a blob
    /// file's bytes or name were not yet durable (inside a blob write).
    pub blob_bytes_written: u64,
    pub crashes_in_blob_write: u64,
}

impl Stats {
    /// Adds `other`'s counts to these; the per-scenario maxima take the larger.
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            crashes,
            recoveries,
            writes_acked,
            synced_acked,
            writes_failed,
            reads,
            clean_closes,
            rotations,
            torn_writes,
            flushes,
            compactions,
            crashes_in_flush,
            crashes_in_compaction,
            crashes_after_failure,
            crashes_in_concurrent_jobs,
            concurrent_jobs_max,
            concurrent_compactions_max,
            rate_limited_us,
            compact_ranges,
            user_flushes,
            snapshot_reads,
            scans,
            walks,
            power_losses,
            process_crashes,
            aimed_crashes,
            crashes_after_call,
            crashes_in_phase,
            faults_fired,
            torn_blocks,
            dir_changes_out_of_order,
            refusals_after_damage,
            acks_checked_durable,
            writes_after_failure,
            points_fired,
            tables_max,
            levels_max,
            ops,
            blob_bytes_written,
            crashes_in_blob_write,
        } = other;
        // Destructured, so that a new field cannot be forgotten here.
        for (into, from) in [
            (&mut self.crashes, crashes),
            (&mut self.recoveries, recoveries),
            (&mut self.writes_acked, writes_acked),
            (&mut self.synced_acked, synced_acked),
            (&mut self.writes_failed, writes_failed),
            (&mut self.reads, reads),
            (&mut self.clean_closes, clean_closes),
            (&mut self.rotations, rotations),
            (&mut self.torn_writes, torn_writes),
            (&mut self.flushes, flushes),
            (&mut self.compactions, compactions),
            (&mut self.crashes_in_flush, crashes_in_flush),
            (&mut self.blob_bytes_written, blob_bytes_written),
            (&mut self.crashes_in_blob_write, crashes_in_blob_write),
            (&mut self.crashes_in_compaction, crashes_in_compaction),
            (&mut self.crashes_after_failure, crashes_after_failure),
            (&mut self.crashes_in_concurrent_jobs, crashes_in_concurrent_jobs),
            (&mut self.rate_limited_us, rate_limited_us),
            (&mut self.compact_ranges, compact_ranges),
            (&mut self.user_flushes, user_flushes),
            (&mut self.snapshot_reads, snapshot_reads),
            (&mut self.scans, scans),
            (&mut self.walks, walks),
            (&mut self.power_losses, power_losses),
            (&mut self.process_crashes, process_crashes),
            (&mut self.aimed_crashes, aimed_crashes),
            (&mut self.torn_blocks, torn_blocks),
            (&mut self.dir_changes_out_of_order, dir_changes_out_of_order),
            (&mut self.refusals_after_damage, refusals_after_damage),
            (&mut self.acks_checked_durable, acks_checked_durable),
            (&mut self.writes_after_failure, writes_after_failure),
            (&mut self.points_fired, points_fired),
            (&mut self.ops, ops),
        ] {
            *into += from;
        }
        add_all(&mut self.crashes_after_call, crashes_after_call);
        add_all(&mut self.crashes_in_phase, crashes_in_phase);
        add_all(&mut self.faults_fired, faults_fired);
        self.tables_max = self.tables_max.max(*tables_max);
        self.levels_max = self.levels_max.max(*levels_max);
        self.concurrent_jobs_max = self.concurrent_jobs_max.max(*concurrent_jobs_max);
        self.concurrent_compactions_max =
            self.concurrent_compactions_max.max(*concurrent_compactions_max);
    }
}

/// A failed scenario: its seed and why it failed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Failure {
    pub seed: u64,
    pub reason: String,
}

/// The result of a sweep over seeds (or of several sweeps, absorbed into one).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub passed: u64,
    pub failed: u64,
    /// The failed scenarios, in ascending order of seed.
    pub failures: Vec<Failure>,
    pub totals: Stats,
    /// Scenarios with at least one crash, one recovery, a synced and an unsynced write.
    pub full_coverage: u64,
    pub with_rotation: u64,
    pub with_flush: u64,
    pub with_crash_in_flush: u64,
    pub with_compaction: u64,
    pub with_crash_in_compaction: u64,
    /// Scenarios where background jobs ran at once, two or more compactions did, a crash
    /// landed while two or more jobs ran, and compactions waited for their write limit.
    pub with_concurrent_jobs: u64,
    pub with_concurrent_compactions: u64,
    pub with_crash_in_concurrent_jobs: u64,
    pub with_rate_limit_wait: u64,
    /// Scenarios with a crash that came soon after a failed write or sync, aimed there.
    pub with_crash_after_failure: u64,
    pub with_torn_write: u64,
    pub with_failed_writes: u64,
    pub with_clean_close: u64,
    pub with_power_loss: u64,
    pub with_process_crash: u64,
    /// Scenarios with a crash right after a call of each kind ([`crate::config::CallKind::ALL`]).
    pub with_crash_after_call: [u64; 6],
    /// Scenarios with a crash inside each phase ([`jadedb::runtime::Phase::ALL`]).
    pub with_crash_in_phase: [u64; 7],
    /// Scenarios in which each fault kind fired ([`crate::config::FaultKind::ALL`]).
    pub with_fault: [u64; 17],
    pub with_torn_blocks: u64,
    pub with_dirs_out_of_order: u64,
    /// Scenarios that wrote blob files, and those with a crash inside a blob write.
    pub with_blob_files: u64,
    pub with_crash_in_blob_write: u64,
    /// The seeds of each class the sweep was to run, and those it ran (fewer only when a time
    /// budget ran out: then the ones run are the lowest of their class).
    pub standard_selected: u64,
    pub scale_selected: u64,
    /// Standard scenarios run, and the wall-clock seconds their batch took (summed over
    /// shards in a merged summary).
    pub standard: u64,
    pub standard_secs: f64,
    /// Scale scenarios, the seconds their batch took, and their operations and tables.
    pub scale: u64,
    pub scale_secs: f64,
    pub scale_writes: u64,
    pub scale_tables_flushed: u64,
    /// Per scale scenario: the fewest operations, the most tables at once, the most levels.
    pub scale_ops_min: u64,
    pub scale_tables_max: u64,
    pub scale_levels_max: u64,
    /// Scenarios that measured commit latency, and how many commits took each latency (in
    /// virtual microseconds): counts, so that shards merge into exact percentiles.
    pub latency_scenarios: u64,
    pub latency_us_counts: BTreeMap<u64, u64>,
    /// The highest seed of each class run (with a time budget the sweep may stop early).
    pub standard_through: Option<u64>,
    pub scale_through: Option<u64>,
}

impl Summary {
    /// Scenarios run.
    pub fn count(&self) -> u64 {
        self.standard + self.scale
    }

    /// Standard scenarios per wall-clock second of their batch (of one shard, in a merge).
    pub fn standard_per_second(&self) -> f64 {
        self.standard as f64 / self.standard_secs.max(1e-9)
    }

    /// Whether a time budget stopped the sweep before it ran every seed it selected.
    pub fn cut_short(&self) -> bool {
        self.standard < self.standard_selected || self.scale < self.scale_selected
    }

    /// The failed seeds, ascending.
    pub fn failed_seeds(&self) -> Vec<u64> {
        self.failures.iter().map(|f| f.seed).collect()
    }

    /// Adds `other` to this summary, as if its scenarios had run in this sweep.
    pub fn absorb(&mut self, other: &Summary) {
        let Summary {
            passed,
            failed,
            failures,
            totals,
            full_coverage,
            with_rotation,
            with_flush,
            with_crash_in_flush,
            with_compaction,
            with_crash_in_compaction,
            with_concurrent_jobs,
            with_concurrent_compactions,
            with_crash_in_concurrent_jobs,
            with_rate_limit_wait,
            with_crash_after_failure,
            with_torn_write,
            with_failed_writes,
            with_clean_close,
            with_power_loss,
            with_process_crash,
            with_crash_after_call,
            with_crash_in_phase,
            with_fault,
            with_torn_blocks,
            with_dirs_out_of_order,
            with_blob_files,
            with_crash_in_blob_write,
            standard_selected,
            scale_selected,
            standard,
            standard_secs,
            scale,
            scale_secs,
            scale_writes,
            scale_tables_flushed,
            scale_ops_min,
            scale_tables_max,
            scale_levels_max,
            latency_scenarios,
            latency_us_counts,
            standard_through,
            scale_through,
        } = other;
        // The fewest operations of a scale scenario: only summaries that ran one count.
        if *scale > 0 {
            self.scale_ops_min = if self.scale == 0 {
                *scale_ops_min
            } else {
                self.scale_ops_min.min(*scale_ops_min)
            };
        }
        for (into, from) in [
            (&mut self.passed, passed),
            (&mut self.failed, failed),
            (&mut self.full_coverage, full_coverage),
            (&mut self.with_rotation, with_rotation),
            (&mut self.with_flush, with_flush),
            (&mut self.with_crash_in_flush, with_crash_in_flush),
            (&mut self.with_compaction, with_compaction),
            (&mut self.with_crash_in_compaction, with_crash_in_compaction),
            (&mut self.with_concurrent_jobs, with_concurrent_jobs),
            (&mut self.with_concurrent_compactions, with_concurrent_compactions),
            (&mut self.with_crash_in_concurrent_jobs, with_crash_in_concurrent_jobs),
            (&mut self.with_rate_limit_wait, with_rate_limit_wait),
            (&mut self.with_crash_after_failure, with_crash_after_failure),
            (&mut self.with_torn_write, with_torn_write),
            (&mut self.with_failed_writes, with_failed_writes),
            (&mut self.with_clean_close, with_clean_close),
            (&mut self.with_power_loss, with_power_loss),
            (&mut self.with_process_crash, with_process_crash),
            (&mut self.with_torn_blocks, with_torn_blocks),
            (&mut self.with_dirs_out_of_order, with_dirs_out_of_order),
            (&mut self.with_blob_files, with_blob_files),
            (&mut self.with_crash_in_blob_write, with_crash_in_blob_write),
            (&mut self.standard_selected, standard_selected),
            (&mut self.scale_selected, scale_selected),
            (&mut self.standard, standard),
            (&mut self.scale, scale),
            (&mut self.scale_writes, scale_writes),
            (&mut self.scale_tables_flushed, scale_tables_flushed),
            (&mut self.latency_scenarios, latency_scenarios),
        ] {
            *into += from;
        }
        self.failures.extend(failures.iter().cloned());
        self.failures.sort_unstable();
        self.totals.add(totals);
        add_all(&mut self.with_crash_after_call, with_crash_after_call);
        add_all(&mut self.with_crash_in_phase, with_crash_in_phase);
        add_all(&mut self.with_fault, with_fault);
        self.standard_secs += standard_secs;
        self.scale_secs += scale_secs;
        self.scale_tables_max = self.scale_tables_max.max(*scale_tables_max);
        self.scale_levels_max = self.scale_levels_max.max(*scale_levels_max);
        for (us, n) in latency_us_counts {
            *self.latency_us_counts.entry(*us).or_default() += n;
        }
        self.standard_through = self.standard_through.max(*standard_through);
        self.scale_through = self.scale_through.max(*scale_through);
    }

    /// The commit latency (virtual microseconds) at quantile `q` of those counted, if any.
    pub fn latency_quantile_us(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency_us_counts.values().sum();
        let rank = ((total.checked_sub(1)?) as f64 * q) as u64;
        let mut seen = 0;
        for (&us, &n) in &self.latency_us_counts {
            seen += n;
            if seen > rank {
                return Some(us);
            }
        }
        None
    }
}

fn add_all(into: &mut [u64], from: &[u64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_those_of_the_sorted_values() {
        let values = [5u64, 1, 9, 9, 3, 7, 7, 7, 2, 11];
        let mut s = Summary::default();
        for v in values {
            *s.latency_us_counts.entry(v).or_default() += 1;
        }
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        for q in [0.0, 0.5, 0.99, 1.0] {
            let want = sorted[((sorted.len() - 1) as f64 * q) as usize];
            assert_eq!(s.latency_quantile_us(q), Some(want), "q = {q}");
        }
        assert_eq!(Summary::default().latency_quantile_us(0.5), None);
    }

    #[test]
    fn absorbing_adds_counts_and_keeps_extremes() {
        let mut a = Summary { passed: 3, scale: 1, scale_ops_min: 900, ..Summary::default() };
        a.failures.push(Failure { seed: 9, reason: "x".into() });
        a.totals.tables_max = 4;
        let mut b = Summary { passed: 2, scale: 2, scale_ops_min: 700, ..Summary::default() };
        b.failures.push(Failure { seed: 2, reason: "y".into() });
        b.totals.crashes = 5;
        let none_at_scale = Summary { scale_ops_min: 0, ..Summary::default() };
        let mut m = Summary::default();
        for s in [&none_at_scale, &a, &b, &none_at_scale] {
            m.absorb(s);
        }
        assert_eq!((m.passed, m.scale, m.scale_ops_min), (5, 3, 700));
        assert_eq!(m.failed_seeds(), vec![2, 9]);
        assert_eq!((m.totals.crashes, m.totals.tables_max), (5, 4));
    }
}
