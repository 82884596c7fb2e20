//! Alerts: the engine watches its own health and raises a `tracing` warning when a threshold is
//! passed (the monitoring section of the plan JadeDB follows): write P99 over 50 ms, memory over
//! 80% of what the options size it for, the disk over 90% full, more than 10,000 background
//! jobs queued and running.
//!
//! An alert is raised once when it turns on (a warning) and once when it clears (an info event),
//! not on every check, so a log is not flooded while a condition lasts. The write latency is
//! judged over the last check interval, not since open: a database that was slow an hour ago
//! and is fast now raises nothing.
//!
//! Checks run at most once per interval of the runtime's clock, from the write path and from
//! `Db::metrics`; each costs a copy of the put histogram and, on real files, one `statvfs`.

use super::latency::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Thresholds past which the engine raises an alert. The defaults are the plan's.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct AlertThresholds {
    /// The 99th percentile of put latency over one check interval (default 50 ms).
    pub write_p99: Duration,
    /// Memory held (memtables and block cache) as a share of what the options size them for:
    /// `memtables_max * memtable_bytes_max + block_cache_bytes` (default 0.8).
    pub memory_share: f64,
    /// The used share of the file system holding the database (default 0.9).
    pub disk_share: f64,
    /// Background jobs queued and running (default 10,000).
    pub background_jobs: u64,
    /// How often, at most, the thresholds are checked (default 1 s).
    pub check_interval: Duration,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds {
            write_p99: Duration::from_millis(50),
            memory_share: 0.8,
            disk_share: 0.9,
            background_jobs: 10_000,
            check_interval: Duration::from_secs(1),
        }
    }
}

impl AlertThresholds {
    /// Sets [`AlertThresholds::write_p99`].
    pub fn write_p99(mut self, p99: Duration) -> Self {
        self.write_p99 = p99;
        self
    }

    /// Sets [`AlertThresholds::memory_share`].
    pub fn memory_share(mut self, share: f64) -> Self {
        self.memory_share = share;
        self
    }

    /// Sets [`AlertThresholds::disk_share`].
    pub fn disk_share(mut self, share: f64) -> Self {
        self.disk_share = share;
        self
    }

    /// Sets [`AlertThresholds::background_jobs`].
    pub fn background_jobs(mut self, jobs: u64) -> Self {
        self.background_jobs = jobs;
        self
    }

    /// Sets [`AlertThresholds::check_interval`].
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }
}

/// Which alerts are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Alerts {
    pub write_latency: bool,
    pub memory: bool,
    pub disk: bool,
    pub background_jobs: bool,
}

impl Alerts {
    /// Whether any alert is on.
    pub fn any(&self) -> bool {
        self.write_latency || self.memory || self.disk || self.background_jobs
    }
}

/// What one check looks at.
pub(crate) struct Reading<'a> {
    pub now: Duration,
    pub puts: &'a Histogram,
    pub memory_bytes: u64,
    pub memory_sized_for: u64,
    /// The file system's size and free bytes, if the runtime knows them.
    pub disk: Option<(u64, u64)>,
    pub background_jobs: u64,
}

/// The alert state of one database.
#[derive(Debug)]
pub(crate) struct Watch {
    thresholds: AlertThresholds,
    /// The runtime-clock time (ns) before which no check runs.
    next_check_ns: AtomicU64,
    state: Mutex<State>,
    raised: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// The put histogram at the previous check, subtracted to judge the last interval alone.
    puts_before: Option<hdrhistogram::Histogram<u64>>,
    on: Alerts,
}

impl Watch {
    pub(crate) fn new(thresholds: AlertThresholds) -> Self {
        Watch {
            thresholds,
            next_check_ns: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            raised: AtomicU64::new(0),
        }
    }

    /// Whether a check is due at `now`: one relaxed load, for the write path.
    pub(crate) fn due(&self, now: Duration) -> bool {
        nanos(now) >= self.next_check_ns.load(Ordering::Relaxed)
    }

    /// The alerts on, and how many were raised since open.
    pub(crate) fn status(&self) -> (Alerts, u64) {
        let on = self.state.lock().unwrap_or_else(PoisonError::into_inner).on;
        (on, self.raised.load(Ordering::Relaxed))
    }

    /// Checks every threshold against `reading`, raising and clearing alerts. A check already
    /// running elsewhere makes this one return at once.
    pub(crate) fn check(&self, reading: &Reading<'_>) {
        let Ok(mut state) = self.state.try_lock() else {
            return;
        };
        self.next_check_ns
            .store(nanos(reading.now + self.thresholds.check_interval), Ordering::Relaxed);
        let t = &self.thresholds;
        let (puts_now, _) = reading.puts.merged();
        let p99 = {
            let mut interval = puts_now.clone();
            if let Some(before) = &state.puts_before {
                // `before` is an earlier copy of the same counts, so it is a subset of them.
                let _ = interval.subtract(before);
            }
            (!interval.is_empty()).then(|| Duration::from_nanos(interval.value_at_quantile(0.99)))
        };
        state.puts_before = Some(puts_now);
        let memory_share = share(reading.memory_bytes, reading.memory_sized_for);
        let disk_share = reading.disk.map(|(size, free)| share(size.saturating_sub(free), size));
        let mut on = state.on;
        // No puts in the interval: the write alert keeps its state, judged again on the next.
        if let Some(p99) = p99 {
            self.set(&mut on.write_latency, p99 > t.write_p99, "write latency P99", || {
                format!(
                    "{:.1} ms over the last interval (threshold {:.1} ms)",
                    ms(p99),
                    ms(t.write_p99)
                )
            });
        }
        self.set(&mut on.memory, memory_share > t.memory_share, "memory", || {
            format!(
                "{} bytes held, {:.0}% of the {} the options size the engine for (threshold {:.0}%)",
                reading.memory_bytes,
                memory_share * 100.0,
                reading.memory_sized_for,
                t.memory_share * 100.0
            )
        });
        if let Some(disk_share) = disk_share {
            self.set(&mut on.disk, disk_share > t.disk_share, "disk usage", || {
                format!(
                    "{:.1}% of the file system used (threshold {:.0}%)",
                    disk_share * 100.0,
                    t.disk_share * 100.0
                )
            });
        }
        let jobs = reading.background_jobs;
        self.set(&mut on.background_jobs, jobs > t.background_jobs, "background jobs", || {
            format!("{jobs} queued and running (threshold {})", t.background_jobs)
        });
        state.on = on;
    }

    /// Turns one alert on or off, telling `tracing` when it changes.
    fn set(&self, flag: &mut bool, over: bool, what: &str, detail: impl FnOnce() -> String) {
        if over && !*flag {
            self.raised.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(alert = what, "jadedb alert: {what} over its threshold: {}", detail());
        } else if !over && *flag {
            tracing::info!(alert = what, "jadedb alert cleared: {what}: {}", detail());
        }
        *flag = over;
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(now_s: u64, puts: &Histogram) -> Reading<'_> {
        Reading {
            now: Duration::from_secs(now_s),
            puts,
            memory_bytes: 10,
            memory_sized_for: 100,
            disk: Some((1000, 500)),
            background_jobs: 0,
        }
    }

    #[test]
    fn the_write_alert_judges_the_last_interval_only() {
        let watch = Watch::new(AlertThresholds::default());
        let puts = Histogram::new(1);
        for _ in 0..100 {
            puts.record(Duration::from_millis(80));
        }
        assert!(watch.due(Duration::ZERO));
        watch.check(&reading(0, &puts));
        assert_eq!(watch.status(), (Alerts { write_latency: true, ..Alerts::default() }, 1));
        assert!(!watch.due(Duration::from_millis(999)), "one check per interval");
        // The next interval's puts are fast: the slow ones before no longer count.
        for _ in 0..100 {
            puts.record(Duration::from_micros(20));
        }
        watch.check(&reading(1, &puts));
        assert_eq!(watch.status(), (Alerts::default(), 1));
        // An interval without puts leaves the alert as it was.
        watch.check(&reading(2, &puts));
        assert_eq!(watch.status(), (Alerts::default(), 1));
    }

    #[test]
    fn memory_disk_and_job_alerts_turn_on_and_off_with_their_readings() {
        let watch = Watch::new(AlertThresholds::default().background_jobs(3));
        let puts = Histogram::new(1);
        let mut r = reading(0, &puts);
        r.memory_bytes = 81;
        r.disk = Some((1000, 99));
        r.background_jobs = 4;
        watch.check(&r);
        let on = Alerts { memory: true, disk: true, background_jobs: true, ..Alerts::default() };
        assert_eq!(watch.status(), (on, 3));
        let r = reading(1, &puts);
        watch.check(&r);
        assert_eq!(watch.status(), (Alerts::default(), 3));
        assert!(!watch.status().0.any());
    }
}
