//! The progress line of a long sweep: seeds done, rate, time left and failures so far, kept
//! on one line of standard error and redrawn a few times a second. Only a terminal gets it
//! (the caller decides); a log gets the report alone.
//!
//! Standard and scale seeds differ in cost by hundreds of times, so the line gives the rate and
//! the time left of the batch running now, and how many seeds of the next batch wait.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::sweep::fmt_duration;

/// Held while anything is printed during a sweep, so that a failure's report and the progress
/// line do not interleave.
static OUTPUT: Mutex<()> = Mutex::new(());

/// Whether a progress line may be on screen (it is cleared before other output).
static SHOWN: AtomicBool = AtomicBool::new(false);

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(250);

/// Takes the output for a report printed during a sweep, clearing the progress line first.
pub fn hold_output() -> MutexGuard<'static, ()> {
    let guard = OUTPUT.lock().unwrap_or_else(PoisonError::into_inner);
    if SHOWN.load(Ordering::Relaxed) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
    guard
}

#[derive(Debug)]
struct Counts {
    standard: u64,
    scale: u64,
    done: AtomicU64,
    failed: AtomicU64,
    /// Scenarios done when the scale batch started (`u64::MAX` before): a time budget may end
    /// the standard batch before all of its seeds ran.
    scale_from: AtomicU64,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// A running progress line; [`Progress::finish`] clears it.
#[derive(Debug)]
pub struct Progress {
    counts: Arc<Counts>,
    drawer: std::thread::JoinHandle<()>,
}

impl Progress {
    /// Starts drawing the progress of a sweep of these seeds, which must end by `deadline`.
    pub fn start(standard: &[u64], scale: &[u64], deadline: Option<Instant>) -> Progress {
        let counts = Arc::new(Counts {
            standard: standard.len() as u64,
            scale: scale.len() as u64,
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            scale_from: AtomicU64::new(u64::MAX),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let c = Arc::clone(&counts);
        #[allow(clippy::disallowed_methods)] // a thread of the sweep, outside any simulation
        let drawer = std::thread::spawn(move || draw(&c, deadline));
        Progress { counts, drawer }
    }

    /// Says the scale batch starts now.
    pub fn scale_started(&self) {
        let done = self.counts.done.load(Ordering::Relaxed);
        self.counts.scale_from.store(done, Ordering::Relaxed);
    }

    /// Counts a scenario done.
    pub fn done(&self, failed: bool) {
        self.counts.done.fetch_add(1, Ordering::Relaxed);
        self.counts.failed.fetch_add(u64::from(failed), Ordering::Relaxed);
    }

    /// Stops drawing and clears the line.
    pub fn finish(self) {
        *self.counts.stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.counts.wake.notify_all();
        let _ = self.drawer.join();
        drop(hold_output());
        SHOWN.store(false, Ordering::Relaxed);
    }
}

#[allow(clippy::disallowed_methods)] // wall-clock rate and time left of the sweep
fn draw(c: &Counts, deadline: Option<Instant>) {
    let mut batch_started = Instant::now();
    let mut in_scale = false;
    let mut stop = c.stop.lock().unwrap_or_else(PoisonError::into_inner);
    while !*stop {
        stop = c.wake.wait_timeout(stop, EVERY).unwrap_or_else(PoisonError::into_inner).0;
        if *stop {
            break;
        }
        let done = c.done.load(Ordering::Relaxed);
        let scale_from = c.scale_from.load(Ordering::Relaxed);
        if !in_scale && scale_from != u64::MAX {
            in_scale = true;
            batch_started = Instant::now();
        }
        let (name, of, batch_done) = if in_scale {
            ("scale", c.scale, done.saturating_sub(scale_from))
        } else {
            ("standard", c.standard, done)
        };
        let line = line(LineFacts {
            name,
            batch_done,
            of,
            elapsed: batch_started.elapsed(),
            next: if in_scale { 0 } else { c.scale },
            failed: c.failed.load(Ordering::Relaxed),
            budget_left: deadline.map(|d| d.saturating_duration_since(Instant::now())),
        });
        let _out = OUTPUT.lock().unwrap_or_else(PoisonError::into_inner);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
        SHOWN.store(true, Ordering::Relaxed);
    }
}

/// What a progress line says.
struct LineFacts {
    name: &'static str,
    batch_done: u64,
    of: u64,
    elapsed: Duration,
    /// Scale seeds still to come after this batch.
    next: u64,
    failed: u64,
    budget_left: Option<Duration>,
}

fn line(f: LineFacts) -> String {
    let rate = f.batch_done as f64 / f.elapsed.as_secs_f64().max(1e-3);
    let mut line = format!(
        "{} seeds {}/{} ({:.0}%), {:.1}/s",
        f.name,
        f.batch_done,
        f.of,
        100.0 * f.batch_done as f64 / f.of.max(1) as f64,
        rate
    );
    if f.batch_done > 0 {
        let left = Duration::from_secs_f64((f.of - f.batch_done) as f64 / rate);
        line += &format!(", ETA {}", fmt_duration(left));
    }
    if f.next > 0 {
        line += &format!(" (then {} scale seeds)", f.next);
    }
    match f.budget_left {
        Some(Duration::ZERO) => line += ", time budget spent: finishing the seeds running",
        Some(left) => line += &format!(", {} of the time budget left", fmt_duration(left)),
        None => {}
    }
    line + &format!(", {} failed", f.failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_gives_done_rate_time_left_and_failures() {
        let facts = |batch_done, next, budget_left| LineFacts {
            name: "standard",
            batch_done,
            of: 1000,
            elapsed: Duration::from_secs(2),
            next,
            failed: 1,
            budget_left,
        };
        assert_eq!(
            line(facts(250, 50, None)),
            "standard seeds 250/1000 (25%), 125.0/s, ETA 6.0s (then 50 scale seeds), 1 failed"
        );
        assert_eq!(
            line(facts(0, 0, Some(Duration::from_secs(90)))),
            "standard seeds 0/1000 (0%), 0.0/s, 1m30s of the time budget left, 1 failed"
        );
    }
}
