//! The background worker: flushes memtables (and, later, compacts tables) off the write path.
//!
//! One task does all background work, flushes first, so version changes and MANIFEST writes
//! are serialized without a lock held across I/O; it owns the MANIFEST. Writers, rotation and
//! publication ring its doorbell. A failure poisons the database (fail-stop, like a failed WAL
//! fsync): the state on disk is then whatever the last durable MANIFEST edit says, which the
//! next open recovers.
//!
//! The task holds only a `Weak` reference to the database, so dropping every handle ends it;
//! `close` stops and joins it, after the WAL is sealed.

use crate::db::DbInner;
use crate::manifest::Manifest;
use crate::runtime::JoinHandle;
use crate::signal::Doorbell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Counts a background job as running for as long as it lives, however it ends.
struct Running<'a>(&'a AtomicU64);

impl<'a> Running<'a> {
    fn start(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Running(gauge)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts the background worker of `db`, which takes ownership of the MANIFEST.
pub(crate) fn start(db: &Arc<DbInner>, manifest: Manifest) -> JoinHandle {
    let task = run(Arc::downgrade(db), Arc::clone(&db.work_bell), manifest);
    db.rt.spawn("jadedb-background", Box::pin(task))
}

async fn run(db: Weak<DbInner>, bell: Arc<Doorbell>, mut manifest: Manifest) {
    while bell.wait().await {
        let Some(db) = db.upgrade() else { break };
        while db.check_not_poisoned().is_ok() {
            let running = Running::start(&db.counters.background_jobs_running);
            let flushed = crate::flush::flush_oldest(&db, &mut manifest).await;
            drop(running);
            match flushed {
                Ok(true) => continue,
                Ok(false) => break,
                Err(err) => {
                    tracing::error!(error = %err, "background flush failed");
                    db.poison(&format!("a flush failed: {err}"));
                }
            }
        }
    }
}
