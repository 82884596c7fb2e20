//! The metrics in Prometheus' text exposition format (version 0.0.4), for a scrape endpoint or
//! a node exporter's textfile collector: every metric with its `# HELP` and `# TYPE` lines,
//! names prefixed `jadedb_`, counters ending in `_total`, byte counts in `_bytes`, latencies as
//! summaries in seconds with the quantiles 0.5, 0.95, 0.99 and 0.999 since the database was
//! opened (rates of `_sum` and `_count` give recent means).

use super::{Latency, Metrics};
use std::fmt::Write;

pub(super) fn render(m: &Metrics) -> String {
    let mut out = Out(String::with_capacity(8192));
    let counters: [(&str, u64, &str); 22] = [
        ("batches_total", m.batches, "Write batches committed."),
        ("commit_groups_total", m.commit_groups, "Commit groups (one WAL append each)."),
        ("user_bytes_total", m.user_bytes, "Key and value bytes of the operations committed."),
        ("wal_bytes_written_total", m.wal_bytes, "Bytes appended to WALs."),
        ("wal_syncs_total", m.wal_syncs, "WAL fsyncs."),
        ("manifest_bytes_written_total", m.manifest_bytes, "Bytes appended to MANIFESTs."),
        ("manifest_syncs_total", m.manifest_syncs, "MANIFEST fsyncs."),
        ("memtable_rotations_total", m.memtable_rotations, "Memtables retired when full."),
        ("flushes_total", m.flushes, "Memtables flushed to level-0 tables."),
        ("flush_bytes_written_total", m.flush_bytes, "Table bytes written by flushes."),
        ("compactions_total", m.compactions, "Compactions done."),
        ("compaction_bytes_read_total", m.compaction_bytes_read, "Table bytes compactions read."),
        (
            "compaction_bytes_written_total",
            m.compaction_bytes_written,
            "Table bytes compactions wrote.",
        ),
        ("blob_bytes_written_total", m.blob_bytes_written, "Bytes of blob files written."),
        ("table_bytes_read_total", m.table_bytes_read, "Bytes read from table files."),
        ("data_block_reads_total", m.data_block_reads, "Data blocks read from table files."),
        ("block_cache_hits_total", m.block_cache_hits, "Block cache lookups that hit."),
        ("block_cache_misses_total", m.block_cache_misses, "Block cache lookups that missed."),
        ("bloom_checks_total", m.bloom_checks, "Point lookups that consulted a bloom filter."),
        ("bloom_negatives_total", m.bloom_negatives, "Bloom filter checks that said absent."),
        ("write_stalls_total", m.write_stalls, "Times writes stopped to wait for a flush."),
        (
            "commit_window_waits_total",
            m.commit_window_waits,
            "Times an fsync was held back for more synced writers to join it.",
        ),
    ];
    for (name, value, help) in counters {
        out.metric(name, "counter", help, &[("", value as f64)]);
    }
    let seconds: [(&str, u64, &str); 4] = [
        ("write_stall_seconds_total", m.write_stall_us, "Time writers waited in stalls."),
        ("wal_rotation_seconds_total", m.wal_rotation_us, "Time writers waited in WAL rotations."),
        (
            "commit_window_seconds_total",
            m.commit_window_us,
            "Time fsyncs were held back for more synced writers.",
        ),
        (
            "compaction_rate_limited_seconds_total",
            m.compaction_rate_limited_us,
            "Time compactions waited for the rate limit.",
        ),
    ];
    for (name, us, help) in seconds {
        out.metric(name, "counter", help, &[("", us as f64 / 1e6)]);
    }
    out.metric(
        "alerts_raised_total",
        "counter",
        "Alerts raised since open.",
        &[("", m.alerts_raised as f64)],
    );
    let gauges: [(&str, u64, &str); 17] = [
        (
            "memory_bytes",
            m.memory_bytes,
            "Memory held by memtables, the block cache, open tables and iterators.",
        ),
        ("memory_budget_bytes", m.memory_budget, "The memory budget; 0 for none."),
        ("memtable_bytes", m.memtable_bytes, "Memory charged to the memtables."),
        ("block_cache_bytes", m.block_cache_bytes, "Bytes of blocks the block cache holds."),
        ("table_memory_bytes", m.table_memory_bytes, "Index and filter blocks of open tables."),
        (
            "iterator_memory_bytes",
            m.iterator_memory_bytes,
            "Data blocks iterators hold outside the block cache.",
        ),
        ("tables_open", m.tables_open, "Table files open."),
        ("blob_files", m.blob_files, "Blob files in the current version."),
        ("blob_bytes", m.blob_bytes, "Bytes of the blob files in the current version."),
        (
            "blob_garbage_bytes",
            m.blob_garbage_bytes,
            "Bytes of blob records no table of the current version points to.",
        ),
        ("flushes_running", m.flushes_running, "Flushes running."),
        ("compactions_running", m.compactions_running, "Compactions running."),
        ("flushes_running_max", m.flushes_running_max, "The most flushes that ran at once."),
        (
            "compactions_running_max",
            m.compactions_running_max,
            "The most compactions that ran at once.",
        ),
        (
            "background_jobs_running_max",
            m.background_jobs_running_max,
            "The most flushes and compactions that ran at once.",
        ),
        ("flushes_queued", m.flushes_queued, "Retired memtables waiting for a flush."),
        (
            "range_compactions_queued",
            m.range_compactions_queued,
            "compact_range calls waiting for the background.",
        ),
    ];
    for (name, value, help) in gauges {
        out.metric(name, "gauge", help, &[("", value as f64)]);
    }
    out.metric(
        "write_pause_max_seconds",
        "gauge",
        "The longest time writers were held.",
        &[("", m.write_pause_max_us as f64 / 1e6)],
    );
    let kinds = [
        ("memtable_wait", m.memtable_wait_max_us),
        ("level0_stop", m.level0_stop_max_us),
        ("wal_rotation", m.wal_rotation_max_us),
    ];
    let kinds: Vec<(String, f64)> =
        kinds.iter().map(|(k, us)| (format!("kind=\"{k}\""), *us as f64 / 1e6)).collect();
    out.labelled(
        "write_pause_kind_max_seconds",
        "gauge",
        "The longest time writers were held, by what they waited for.",
        &kinds,
    );
    let alerts = [
        ("write_latency", m.alerts.write_latency),
        ("memory", m.alerts.memory),
        ("disk", m.alerts.disk),
        ("background_jobs", m.alerts.background_jobs),
    ];
    let alerts: Vec<(String, f64)> =
        alerts.iter().map(|(a, on)| (format!("alert=\"{a}\""), f64::from(u8::from(*on)))).collect();
    out.labelled("alert_active", "gauge", "Whether each alert is on (1) or off (0).", &alerts);
    for (series, values, help) in [
        ("level_files", &m.level_files, "Tables per level."),
        ("level_bytes", &m.level_bytes, "Table bytes per level."),
    ] {
        let rows = by_level(values);
        out.labelled(series, "gauge", help, &rows);
    }
    let rows = by_level(&m.level_bytes_written);
    out.labelled("level_bytes_written_total", "counter", "Table bytes written per level.", &rows);
    let latencies: [(&str, &Latency, &str); 8] = [
        ("put_latency_seconds", &m.put_latency, "put, delete and write calls."),
        ("get_latency_seconds", &m.get_latency, "Point reads, one in eight per thread."),
        (
            "commit_latency_seconds",
            &m.commit_latency,
            "Commit groups' WAL write and apply, one in eight per thread.",
        ),
        ("wal_sync_latency_seconds", &m.wal_sync_latency, "WAL fsyncs."),
        ("manifest_sync_latency_seconds", &m.manifest_sync_latency, "MANIFEST fsyncs."),
        ("flush_latency_seconds", &m.flush_latency, "Flushes."),
        ("compaction_latency_seconds", &m.compaction_latency, "Compactions."),
        ("write_pause_seconds", &m.write_pause_latency, "Times writers were held."),
    ];
    for (name, l, help) in latencies {
        out.summary(name, help, l);
    }
    out.0
}

/// Rows labelled `level="0"` to `level="6"`.
fn by_level(values: &[u64; 7]) -> Vec<(String, f64)> {
    values.iter().enumerate().map(|(i, v)| (format!("level=\"{i}\""), *v as f64)).collect()
}

struct Out(String);

impl Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a `String` cannot fail.
        let _ = writeln!(self.0, "# HELP jadedb_{name} {help}");
        let _ = writeln!(self.0, "# TYPE jadedb_{name} {kind}");
    }

    fn metric(&mut self, name: &str, kind: &str, help: &str, rows: &[(&str, f64)]) {
        self.header(name, kind, help);
        for (suffix, value) in rows {
            let _ = writeln!(self.0, "jadedb_{name}{suffix} {value}");
        }
    }

    fn labelled(&mut self, name: &str, kind: &str, help: &str, rows: &[(String, f64)]) {
        self.header(name, kind, help);
        for (labels, value) in rows {
            let _ = writeln!(self.0, "jadedb_{name}{{{labels}}} {value}");
        }
    }

    fn summary(&mut self, name: &str, help: &str, l: &Latency) {
        self.header(name, "summary", help);
        for (q, d) in [("0.5", l.p50), ("0.95", l.p95), ("0.99", l.p99), ("0.999", l.p999)] {
            // No observation yet: the quantiles are unknown, which Prometheus spells NaN.
            let value = if l.count == 0 { f64::NAN } else { d.as_secs_f64() };
            let _ = writeln!(self.0, "jadedb_{name}{{quantile=\"{q}\"}} {value}");
        }
        let _ = writeln!(self.0, "jadedb_{name}_sum {}", l.sum.as_secs_f64());
        let _ = writeln!(self.0, "jadedb_{name}_count {}", l.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::time::Duration;

    /// Every line is a comment or `name{labels} value` with a float value, every sample's
    /// metric was declared by a `# TYPE` line before it, and no metric is declared twice.
    #[test]
    fn the_exposition_is_well_formed() {
        let mut m = Metrics { batches: 7, user_bytes: 1000, ..Metrics::default() };
        m.level_bytes_written[1] = 42;
        m.put_latency = Latency {
            count: 3,
            sum: Duration::from_micros(30),
            mean: Duration::from_micros(10),
            p99: Duration::from_micros(30),
            ..Latency::default()
        };
        m.alerts.memory = true;
        let text = m.prometheus();
        let mut declared = BTreeSet::new();
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("a type line has a kind");
                assert!(["counter", "gauge", "summary"].contains(&kind), "{line}");
                assert!(declared.insert(name.to_string()), "{name} declared twice");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line}"));
            assert!(value != "NaN" || line.contains("quantile="), "{line}");
            let name = series.split('{').next().unwrap();
            let base = name.strip_suffix("_sum").or(name.strip_suffix("_count")).unwrap_or(name);
            assert!(
                declared.contains(name) || declared.contains(base),
                "{name} has no # TYPE line"
            );
            assert!(name.starts_with("jadedb_"), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
            samples += 1;
        }
        assert!(samples > 60, "{samples} samples");
        assert!(text.contains("jadedb_batches_total 7\n"));
        assert!(text.contains("jadedb_level_bytes_written_total{level=\"1\"} 42\n"));
        assert!(text.contains("jadedb_put_latency_seconds{quantile=\"0.99\"} 0.00003\n"));
        assert!(text.contains("jadedb_put_latency_seconds_count 3\n"));
        assert!(text.contains("jadedb_put_latency_seconds_sum 0.00003\n"));
        assert!(text.contains("jadedb_get_latency_seconds{quantile=\"0.5\"} NaN\n"));
        assert!(text.contains("jadedb_alert_active{alert=\"memory\"} 1\n"));
    }
}
