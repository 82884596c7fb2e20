//! Alerts: the engine watches its own health and raises a `tracing` warning when a threshold is
//! passed (the monitoring section of the plan JadeDB follows): write P99 over 50 ms, memory over
//! 80% of what the options size it for, the disk over 90% full, more than 10,000 background
//! jobs queued and running.
//!
//! An alert is raised once when it turns on (a warning) and once when it clears (an info event),
//! not on every check, so a log is not flooded while a condition lasts; it turns on or off only
//! after `sustain` checks in a row agree (3 by default). The write latency is judged over the
//! puts since the last judgement (at least 100 of them), not since open: a database that was
//! slow an hour ago and is fast now raises nothing.
//!
//! Checks run at most once per interval of the runtime's clock, from the write path and from
//! `Db::metrics`; each costs a copy of the put histogram. The disk's usage is read by the
//! background workers after each job, never on the write path.

use super::latency::Histogram;
use super::ratio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Thresholds past which the engine raises an alert. The defaults are the plan's.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct AlertThresholds {
    /// The 99th percentile of put latency over one check interval (default 50 ms).
    pub write_p99: Duration,
    /// Memory held (`Metrics::memory_bytes`) as a share of what the options size it for: the
    /// memory budget if there is one, else `memtables_max * memtable_bytes_max +
    /// block_cache_bytes` (default 0.8).
    pub memory_share: f64,
    /// The used share of the file system holding the database (default 0.9).
    pub disk_share: f64,
    /// Background jobs queued and running (default 10,000).
    pub background_jobs: u64,
    /// How often, at most, the thresholds are checked (default 1 s).
    pub check_interval: Duration,
    /// Checks in a row that must find a threshold passed before its alert turns on, and
    /// within it before the alert turns off (default 3): memory rises and falls with each
    /// memtable flushed, and an alert that came and went with every flush would say nothing.
    pub sustain: u32,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds {
            write_p99: Duration::from_millis(50),
            memory_share: 0.8,
            disk_share: 0.9,
            background_jobs: 10_000,
            check_interval: Duration::from_secs(1),
            sustain: 3,
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

    /// Sets [`AlertThresholds::check_interval`]. `Duration::MAX` turns the checks off.
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// Sets [`AlertThresholds::sustain`] (at least 1).
    pub fn sustain(mut self, checks: u32) -> Self {
        self.sustain = checks.max(1);
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
    pub puts: &'a Histogram,
    pub memory_bytes: u64,
    pub memory_sized_for: u64,
    /// The file system's size and free bytes, if known (read in the background, not here).
    pub disk: Option<(u64, u64)>,
    pub background_jobs: u64,
}

/// Puts an interval must hold before its P99 is judged: the P99 of a handful says little, and
/// a quiet interval's puts are carried over to the next until there are this many.
const PUTS_PER_JUDGEMENT: u64 = 100;

/// The alert state of one database.
#[derive(Debug)]
pub(crate) struct Watch {
    thresholds: AlertThresholds,
    /// The runtime-clock time (ns) before which no check runs; a check claims its turn by
    /// moving it forward, so one check runs per interval however many threads see it due.
    next_check_ns: AtomicU64,
    state: Mutex<State>,
    raised: AtomicU64,
    /// The file system's size and free bytes, as last read (`set_disk`).
    disk: Mutex<Option<(u64, u64)>>,
}

#[derive(Debug, Default)]
struct State {
    /// The put histogram when the last judged interval ended, subtracted to judge the puts
    /// since then alone.
    puts_before: Option<hdrhistogram::Histogram<u64>>,
    on: Alerts,
    /// Consecutive checks that disagreed with each alert's state, per alert (the order of
    /// `Kind`): an alert turns on or off only after `sustain` of them in a row.
    streaks: [u32; 4],
}

/// The alerts, in the order of `State::streaks`.
#[derive(Clone, Copy)]
enum Kind {
    WriteLatency = 0,
    Memory = 1,
    Disk = 2,
    BackgroundJobs = 3,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::WriteLatency => "write latency P99",
            Kind::Memory => "memory",
            Kind::Disk => "disk usage",
            Kind::BackgroundJobs => "background jobs",
        }
    }

    fn flag(self, on: &mut Alerts) -> &mut bool {
        match self {
            Kind::WriteLatency => &mut on.write_latency,
            Kind::Memory => &mut on.memory,
            Kind::Disk => &mut on.disk,
            Kind::BackgroundJobs => &mut on.background_jobs,
        }
    }
}

/// An alert that turned on (`true`) or off, with what the check saw.
struct Change {
    kind: Kind,
    on: bool,
    detail: String,
}

impl Watch {
    pub(crate) fn new(thresholds: AlertThresholds) -> Self {
        Watch {
            thresholds,
            next_check_ns: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            raised: AtomicU64::new(0),
            disk: Mutex::new(None),
        }
    }

    /// Keeps the file system's size and free bytes for the next checks.
    pub(crate) fn set_disk(&self, disk: Option<(u64, u64)>) {
        *self.disk.lock().unwrap_or_else(PoisonError::into_inner) = disk;
    }

    /// The file system's size and free bytes, as last kept.
    pub(crate) fn disk(&self) -> Option<(u64, u64)> {
        *self.disk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a check is due at `now`, claiming it if so: one relaxed load when it is not,
    /// for the write path. Of the threads that see it due at once, one wins.
    pub(crate) fn claim(&self, now: Duration) -> bool {
        let due = self.next_check_ns.load(Ordering::Relaxed);
        if nanos(now) < due {
            return false;
        }
        let next = nanos(now.saturating_add(self.thresholds.check_interval));
        self.next_check_ns
            .compare_exchange(
                due,
                next.max(due.saturating_add(1)),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// The alerts on, and how many were raised since open.
    pub(crate) fn status(&self) -> (Alerts, u64) {
        let on = self.state.lock().unwrap_or_else(PoisonError::into_inner).on;
        (on, self.raised.load(Ordering::Relaxed))
    }

    /// Checks every threshold against `reading` (after a successful `claim`), raising and
    /// clearing alerts, and tells `tracing` of each change once the state is unlocked (so a
    /// subscriber may read the metrics).
    pub(crate) fn check(&self, reading: &Reading<'_>) {
        let changes = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            self.judge(&mut state, reading)
        };
        for change in changes {
            let what = change.kind.name();
            if change.on {
                tracing::warn!(
                    alert = what,
                    "jadedb alert: {what} over its threshold: {}",
                    change.detail
                );
            } else {
                tracing::info!(alert = what, "jadedb alert cleared: {what}: {}", change.detail);
            }
        }
    }

    fn judge(&self, state: &mut State, reading: &Reading<'_>) -> Vec<Change> {
        let t = &self.thresholds;
        let mut changes = Vec::new();
        let (puts_now, _) = reading.puts.merged();
        let mut interval = puts_now.clone();
        if let Some(before) = &state.puts_before {
            // `before` is an earlier copy of the same counts, so it is a subset of them.
            let _ = interval.subtract(before);
        }
        if interval.len() >= PUTS_PER_JUDGEMENT {
            state.puts_before = Some(puts_now);
            let p99 = Duration::from_nanos(interval.value_at_quantile(0.99));
            self.update(state, Kind::WriteLatency, p99 > t.write_p99, &mut changes, || {
                format!(
                    "{:.1} ms over the last {} puts (threshold {:.1} ms)",
                    ms(p99),
                    interval.len(),
                    ms(t.write_p99)
                )
            });
        }
        let memory_share = ratio(reading.memory_bytes, reading.memory_sized_for);
        self.update(state, Kind::Memory, memory_share > t.memory_share, &mut changes, || {
            format!(
                "{} bytes held, {:.0}% of the {} the options size the engine for (threshold {:.0}%)",
                reading.memory_bytes,
                memory_share * 100.0,
                reading.memory_sized_for,
                t.memory_share * 100.0
            )
        });
        if let Some((size, free)) = reading.disk {
            let used = ratio(size.saturating_sub(free), size);
            self.update(state, Kind::Disk, used > t.disk_share, &mut changes, || {
                format!(
                    "{:.1}% of the file system used (threshold {:.0}%)",
                    used * 100.0,
                    t.disk_share * 100.0
                )
            });
        }
        let jobs = reading.background_jobs;
        self.update(state, Kind::BackgroundJobs, jobs > t.background_jobs, &mut changes, || {
            format!("{jobs} queued and running (threshold {})", t.background_jobs)
        });
        changes
    }

    /// Counts one check that found `kind` over its threshold or not, and turns the alert on or
    /// off once `sustain` checks in a row disagreed with it.
    fn update(
        &self,
        state: &mut State,
        kind: Kind,
        over: bool,
        changes: &mut Vec<Change>,
        detail: impl FnOnce() -> String,
    ) {
        let streak = &mut state.streaks[kind as usize];
        let flag = kind.flag(&mut state.on);
        if over == *flag {
            *streak = 0;
            return;
        }
        *streak += 1;
        if *streak < self.thresholds.sustain.max(1) {
            return;
        }
        *streak = 0;
        *flag = over;
        if over {
            self.raised.fetch_add(1, Ordering::Relaxed);
        }
        changes.push(Change { kind, on: over, detail: detail() });
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(now_s: u64, puts: &Histogram) -> Reading<'_> {
        let _ = now_s; // which check it is, for the reader of the test
        Reading {
            puts,
            memory_bytes: 10,
            memory_sized_for: 100,
            disk: Some((1000, 500)),
            background_jobs: 0,
        }
    }

    fn record(puts: &Histogram, n: usize, each: Duration) {
        for _ in 0..n {
            puts.record(each);
        }
    }

    #[test]
    fn the_write_alert_judges_the_puts_since_the_last_judgement() {
        let watch = Watch::new(AlertThresholds::default().sustain(1));
        let puts = Histogram::new(1);
        record(&puts, 100, Duration::from_millis(80));
        assert!(watch.claim(Duration::ZERO));
        watch.check(&reading(0, &puts));
        assert_eq!(watch.status(), (Alerts { write_latency: true, ..Alerts::default() }, 1));
        assert!(!watch.claim(Duration::from_millis(999)), "one check per interval");
        // Fewer than 100 fast puts: not judged yet, carried over.
        record(&puts, 60, Duration::from_micros(20));
        assert!(watch.claim(Duration::from_secs(1)));
        watch.check(&reading(1, &puts));
        assert!(watch.status().0.write_latency);
        // With the next 60, the 120 fast puts since the slow ones are judged: the slow ones
        // before no longer count.
        record(&puts, 60, Duration::from_micros(20));
        watch.check(&reading(2, &puts));
        assert_eq!(watch.status(), (Alerts::default(), 1));
    }

    #[test]
    fn alerts_turn_on_and_off_only_when_checks_in_a_row_agree() {
        let watch = Watch::new(AlertThresholds::default().background_jobs(3));
        let puts = Histogram::new(1);
        let over = |now| Reading {
            memory_bytes: 81,
            disk: Some((1000, 99)),
            background_jobs: 4,
            ..reading(now, &puts)
        };
        let all = Alerts { memory: true, disk: true, background_jobs: true, ..Alerts::default() };
        watch.check(&over(0));
        watch.check(&over(1));
        assert_eq!(watch.status(), (Alerts::default(), 0), "two checks are not three");
        // A check under the thresholds starts the count again.
        watch.check(&reading(2, &puts));
        watch.check(&over(3));
        watch.check(&over(4));
        assert_eq!(watch.status(), (Alerts::default(), 0));
        watch.check(&over(5));
        assert_eq!(watch.status(), (all, 3));
        watch.check(&reading(6, &puts));
        watch.check(&reading(7, &puts));
        assert_eq!(watch.status(), (all, 3));
        watch.check(&reading(8, &puts));
        assert_eq!(watch.status(), (Alerts::default(), 3));
        assert!(!watch.status().0.any());
    }

    #[test]
    fn claims_go_to_one_caller_per_interval_and_a_huge_interval_turns_checks_off() {
        let watch = Watch::new(AlertThresholds::default());
        assert!(watch.claim(Duration::from_secs(5)));
        assert!(!watch.claim(Duration::from_secs(5)), "the same moment is claimed once");
        assert!(watch.claim(Duration::from_secs(6)));
        let off = Watch::new(AlertThresholds::default().check_interval(Duration::MAX));
        assert!(off.claim(Duration::from_secs(1)));
        assert!(!off.claim(Duration::from_secs(1_000_000)));
    }
}
