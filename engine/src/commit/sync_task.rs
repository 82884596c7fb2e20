//! The sync task: a background task that makes queued groups durable, one fsync after another.
//!
//! A leader that queues a group waiting for durability rings the task's doorbell. The task then
//! runs fsyncs back to back for as long as some group wants bytes that are not yet durable, and
//! after each one publishes what became ready. One task running every commit fsync means no
//! thread wake-up sits between two consecutive fsyncs, and the writers are woken straight from
//! the thread that saw the fsync return.
//!
//! The task holds only a `Weak` reference to the database, so dropping every handle ends it;
//! `close` stops and joins it. If it is dropped while the database is still open (a cancelled
//! task), nothing would sync queued groups any more, so the database is poisoned and they fail;
//! likewise if it panics (`crate::unwind`), naming the panic.

use super::Host;
use crate::metrics::SyncMeter;
use crate::runtime::{buggify, JoinHandle};
use crate::signal::Doorbell;
use crate::unwind::catch_panic;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Starts the sync task of `db`.
pub(crate) fn start(db: &Arc<dyn Host>) -> JoinHandle {
    let task = run(Arc::downgrade(db), Arc::clone(db.sync_bell()));
    db.rt().spawn("jadedb-wal-sync", Box::pin(task))
}

async fn run(db: Weak<dyn Host>, bell: Arc<Doorbell>) {
    let mut guard = TaskGuard { db: db.clone(), stopped: false };
    while bell.wait().await {
        // Upgraded only while there is work, so that dropping every handle ends the task.
        let Some(db) = db.upgrade() else { break };
        if let Err(panic) = catch_panic(db.options(), sync_wanted(db.as_ref())).await {
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

/// Syncs until no queued group wants more bytes durable, publishing after every fsync.
async fn sync_wanted(db: &dyn Host) {
    while db.check_not_poisoned().is_ok() {
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
        let Some((wal, end)) = db.publish_queue().sync_wanted() else { break };
        if let Err(err) = wal.sync_to(end, SyncMeter::wal(db.counters(), db.rt())).await {
            super::fail_stop(db, err);
            return;
        }
        db.publish_queue().publish_ready_relayed(db);
    }
    // Groups that a rotation or a seal made durable meanwhile.
    db.publish_queue().publish_ready(db);
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
