//! The sync task: a background task that makes queued groups durable, one fsync after another,
//! and finishes the logs that rotations retire (`super::finish_retired`). A lone synced
//! writer's leader runs its own fsync instead when the task is idle (`super::sync_inline`);
//! the two never run fsyncs at once.
//!
//! A leader that queues a group waiting for durability rings the task's doorbell. The task then
//! runs fsyncs back to back for as long as some group wants bytes that are not yet durable, and
//! after each one publishes what became ready. One task running every commit fsync means no
//! thread wake-up sits between two consecutive fsyncs, and the writers are woken straight from
//! the thread that saw the fsync return.
//!
//! The adaptive commit window: when an fsync returns, the writers it served come back with
//! their next writes a moment later (a thread wake-up each). Started at once, the next fsync
//! would serve only the writers already waiting, and the rest would wait for all of the one
//! after: with 16 synced writers each fsync served about 7. So the task remembers how many
//! synced writers were about (those the last fsync served, and those that came while it ran)
//! and, if two or more, holds the next fsync until that many wait or half the last fsync's
//! duration has passed (at most [`WINDOW_MAX`]). A single writer never waits: the count is
//! then one.
//!
//! Whether the wait pays depends on the disk: behind a 5 ms fsync, the writers' wake-ups cost
//! little and every fsync saved is a write's worth of latency for all of them; behind a
//! 100 µs one (a disk with a write cache), the wake-ups cost as much as the fsync saved. So
//! the window measures itself: it runs in trials of [`TRIAL_SYNCS`] fsyncs and at least
//! [`TRIAL_TIME`], on or off, keeps
//! the writes made durable per second of the latest trial of each, runs the better, and every
//! [`RETRY_EVERY`] trials runs the other again.
//!
//! The task holds only a `Weak` reference to the database, so dropping every handle ends it;
//! `close` stops and joins it. If it is dropped while the database is still open (a cancelled
//! task), nothing would sync queued groups any more, so the database is poisoned and they fail;
//! likewise if it panics (`crate::unwind`), naming the panic.

use super::Host;
use crate::metrics::{Counters, SyncMeter};
use crate::runtime::{buggify, JoinHandle};
use crate::signal::Doorbell;
use crate::unwind::catch_panic;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Starts the sync task of `db`.
pub(crate) fn start(db: &Arc<dyn Host>) -> JoinHandle {
    let task = run(Arc::downgrade(db), Arc::clone(db.sync_bell()));
    db.rt().spawn("jadedb-wal-sync", Box::pin(task))
}

async fn run(db: Weak<dyn Host>, bell: Arc<Doorbell>) {
    let mut guard = TaskGuard { db: db.clone(), stopped: false };
    let mut pacing = Pacing::default();
    while bell.wait().await {
        // Upgraded only while there is work, so that dropping every handle ends the task.
        let Some(db) = db.upgrade() else { break };
        if let Err(panic) = catch_panic(db.options(), sync_wanted(db.as_ref(), &mut pacing)).await {
            // The fsync's outcome is unknown (its log is failed if it was running), so nothing
            // queued may be acknowledged: poisoned, the queued groups fail, and the task ends.
            tracing::error!(panic = %panic, "the WAL sync task panicked");
            db.poison(&format!("the WAL sync task panicked: {panic}"));
            db.publish_queue().publish_ready(db.as_ref());
            break;
        }
    }
    guard.stopped = true;
}

/// The longest an fsync is held back for more writers.
const WINDOW_MAX: Duration = Duration::from_millis(1);
/// Fsyncs per trial of the window, on or off, at the least, and the least time it lasts: long
/// enough that a trial's rate is not one unlucky fsync's.
const TRIAL_SYNCS: u32 = 64;
const TRIAL_TIME: Duration = Duration::from_millis(100);
/// Every this many trials, the mode that measured worse is tried again: the disk, the writers
/// or the machine's load may have changed.
const RETRY_EVERY: u32 = 8;

/// What the adaptive commit window knows: the last fsync, and how many writes per second
/// were made durable with the window on and with it off.
#[derive(Debug, Default)]
struct Pacing {
    /// Synced writers about at once: those the last fsync served and those that came while it
    /// ran.
    writers: usize,
    /// How long the last fsync took.
    last_sync: Duration,
    /// Whether the window is on for the current trial.
    on: bool,
    /// Writes made durable per second in the latest trial of each mode (off, on).
    rate: [Option<f64>; 2],
    trials: u32,
    /// The current trial: fsyncs, writes served, and when it started (`None`: not started).
    syncs: u32,
    served: u64,
    started: Option<Duration>,
}

impl Pacing {
    /// Holds the next fsync back until `self.writers` writers wait for it or the window
    /// closes; nothing when the window is off or fewer than two writers were about.
    async fn gather(&self, db: &dyn Host) {
        if self.writers < 2 || !db.options().adaptive_commit_window {
            return;
        }
        // A trial takes longer than most simulated scenarios last: the simulator also opens
        // the window at random, so that crashes and faults meet it.
        if !self.on && !buggify(db.rt(), "sync.window") {
            return;
        }
        let window = (self.last_sync / 2).min(WINDOW_MAX);
        let rt = db.rt();
        let start = rt.now();
        let mut waited = false;
        // Polled in slices: the runtime has no wait with a timeout, and a wake-up per
        // arriving writer would cost the task more than the slices do.
        let slice = (window / 4).max(Duration::from_micros(10));
        while db.publish_queue().waiting_for_sync() < self.writers {
            let elapsed = rt.now().saturating_sub(start);
            if elapsed >= window || db.check_not_poisoned().is_err() {
                break;
            }
            waited = true;
            rt.sleep(slice.min(window - elapsed)).await;
        }
        if waited {
            let counters = db.counters();
            Counters::add(&counters.commit_window_waits, 1);
            let us = rt.now().saturating_sub(start).as_micros() as u64;
            Counters::add(&counters.commit_window_us, us);
        }
    }

    /// Records an fsync that made `served` writes durable, ending at `now`; at the end of a
    /// trial, picks the mode of the next one. Only fsyncs with two or more writers about
    /// count: for a single writer the window never waits, so there is nothing to measure.
    fn synced(&mut self, served: usize, now: Duration) {
        if self.writers < 2 {
            self.started = None;
            return;
        }
        let Some(started) = self.started else {
            (self.started, self.syncs, self.served) = (Some(now), 0, 0);
            return;
        };
        self.syncs += 1;
        self.served += served as u64;
        let elapsed = now.saturating_sub(started);
        if self.syncs < TRIAL_SYNCS || elapsed < TRIAL_TIME {
            return;
        }
        let seconds = elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.rate[usize::from(self.on)] = Some(self.served as f64 / seconds);
        }
        self.trials += 1;
        self.on = match self.rate {
            // Each mode is measured before either is preferred.
            [None, _] => false,
            [_, None] => true,
            [Some(off), Some(on)] => {
                let better = on > off;
                // Now and then the worse one is tried again.
                better != self.trials.is_multiple_of(RETRY_EVERY)
            }
        };
        (self.started, self.syncs, self.served) = (Some(now), 0, 0);
    }
}

/// Syncs until no queued group wants more bytes durable, publishing after every fsync.
async fn sync_wanted(db: &dyn Host, pacing: &mut Pacing) {
    // A lone writer's leader may be running an fsync itself (`super::sync_inline`).
    let _syncing = db.pipeline().syncing.lock().await;
    // Writers may have run their own fsyncs since the task's last one.
    pacing.writers = db.pipeline().synced_writers.load(Ordering::Relaxed);
    // A trial measures a busy stretch: the idle time before this one is not in it.
    pacing.started = None;
    while db.check_not_poisoned().is_ok() {
        // A retired log first: the next log's file, and so any fsync of it, waits for it.
        if let Err(err) = super::finish_retired(db).await {
            super::fail_stop(db, err);
            return;
        }
        if let Some(append) = db.pipeline().watch_append() {
            // A group being appended now would miss this fsync and wait for all of the next
            // one; waiting for its append costs far less. Only an append is waited for, never
            // a leader stalled for room: groups already written would wait behind the stall.
            append.wait().await;
        }
        if buggify(db.rt(), "sync.delay") {
            // A slow fsync queue: more groups pile up behind the next fsync.
            db.rt().sleep(Duration::from_millis(1 + db.rt().random_u64() % 4)).await;
        }
        pacing.gather(db).await;
        let started = db.rt().now();
        let fsync = match sync_once(db).await {
            Ok(Some(fsync)) => fsync,
            Ok(None) => break,
            Err(err) => {
                super::fail_stop(db, err);
                return;
            }
        };
        let now = db.rt().now();
        pacing.last_sync = now.saturating_sub(started);
        pacing.writers = fsync.about;
        db.publish_queue().publish_ready_relayed(db);
        pacing.synced(fsync.served, now);
    }
    // Groups that a rotation or a seal made durable meanwhile.
    db.publish_queue().publish_ready(db);
}

/// What one commit fsync did.
pub(super) struct Fsync {
    /// The groups waiting for it when it started.
    pub(super) served: usize,
    /// Synced writers about when it returned: those it served and those that came meanwhile.
    pub(super) about: usize,
}

/// Runs one fsync covering every byte a queued group wants durable, if any group wants one,
/// and records how many synced writers were about (`Pipeline::synced_writers`). The caller
/// holds `Pipeline::syncing` and publishes afterwards. One round of the sync task, and all of
/// a lone writer's own fsync (`super::sync_inline`).
pub(super) async fn sync_once(db: &dyn Host) -> crate::error::Result<Option<Fsync>> {
    let Some((wal, end)) = db.publish_queue().sync_wanted() else { return Ok(None) };
    let served = db.publish_queue().waiting_for_sync();
    wal.sync_to(end, SyncMeter::wal(db.counters(), db.rt())).await?;
    // Counted before the writers served are told: once told, one could come back and be
    // counted twice (a single writer would then seem two, and wait for itself).
    let about = served + db.publish_queue().waiting_for_sync();
    db.pipeline().synced_writers.store(about, Ordering::Relaxed);
    Ok(Some(Fsync { served, about }))
}

/// Poisons the database if the task ends while the database still needs it.
struct TaskGuard {
    db: Weak<dyn Host>,
    stopped: bool,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        if let Some(db) = self.db.upgrade() {
            db.poison("the WAL sync task ended while the database was open");
            db.publish_queue().publish_ready(db.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs fsyncs of `served` writes each, `gap` apart, until a trial ends.
    fn trial(p: &mut Pacing, now: &mut Duration, served: usize, gap: Duration) {
        p.writers = served;
        let trials = p.trials;
        while p.trials == trials {
            *now += gap;
            p.synced(served, *now);
        }
    }

    #[test]
    fn the_window_runs_in_whichever_mode_served_more_and_retries_the_other() {
        let (mut p, mut now) = (Pacing::default(), Duration::ZERO);
        assert!(!p.on, "off until measured");
        // Off: 4 writes per 1 ms fsync; on: 12 per 2 ms. On serves more.
        trial(&mut p, &mut now, 4, Duration::from_millis(1));
        assert!(p.on, "each mode is measured before either is preferred");
        let mut modes = Vec::new();
        for _ in 0..16 {
            let (served, gap) = if p.on { (12, 2) } else { (4, 1) };
            trial(&mut p, &mut now, served, Duration::from_millis(gap));
            modes.push(p.on);
        }
        let off = modes.iter().filter(|on| !**on).count();
        assert_eq!(off, 2, "off only when retried, once in {RETRY_EVERY} trials: {modes:?}");
        // The disk got faster: off now serves more, and the next retry finds it.
        for _ in 0..16 {
            let (served, gap) = if p.on { (12, 2) } else { (8, 1) };
            trial(&mut p, &mut now, served, Duration::from_millis(gap));
        }
        assert!(!p.on, "{:?}", p.rate);
    }

    #[test]
    fn a_single_writer_measures_nothing() {
        let (mut p, mut now) = (Pacing::default(), Duration::ZERO);
        for _ in 0..1000 {
            p.writers = 1;
            now += Duration::from_millis(1);
            p.synced(1, now);
        }
        assert_eq!((p.trials, p.on, p.started), (0, false, None));
    }
}
