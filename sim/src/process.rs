//! One simulated process: open the database, check what it recovered, run the clients, maybe
//! close; and the final process that checks the engine recovers and makes progress once faults
//! stop.
//!
//! Every client operation is checked the moment it returns: reads against the model (one
//! sequence number per read, never going back for one client), writes for fail-stop (no write
//! issued after a failed write or sync may be acknowledged) and durability at acknowledgement
//! (a synced write's WAL bytes, and everything before them in the log, are in the disk's
//! durable image when it returns). Every operation must finish within a bound of virtual time
//! (liveness); errors are accepted only where the cycle's faults can cause them.

use crate::config::{Cycle, FaultKind, Faults, Latency, ScenarioConfig};
use crate::damage::Needle;
use crate::plan::{self, key_name, Action, ClientPlan, Clients, Step, Write, WriteOp};
use crate::runtime::{now_ns, Control, SimRuntime};
use crate::scenario::{lock, FaultSwitch, Shared};
use crate::trace::Trace;
use jadedb::{Db, DbIterator, Options, Snapshot, WriteBatch, WriteOptions};
use jadedb_fault::MemFs;
use jadedb_model::{Observation, Op, ReadToken};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long an operation may wait while the process makes no file call at all before it counts
/// as hung: every legitimate wait (a stall for a flush or a compaction, a commit window, a
/// delayed background job) is a wait for I/O that keeps going, and the longest pause between
/// two file calls is tens of milliseconds.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(5);
/// How long an operation may take at all, however busy the disk: a livelock of file calls.
/// One `compact_range` of a standard scenario may rewrite a hundred one-key tables on each of
/// six levels, a few virtual seconds; at scale, megabytes as hundreds of small tables.
pub const OPERATION_MAX: Duration = Duration::from_secs(60);
pub const OPERATION_MAX_SCALE: Duration = Duration::from_secs(1200);

/// How long the final process may run in all, in virtual time: past every bound an operation
/// has, below the scenario's limit.
const FINAL_MAX: Duration = Duration::from_secs(1800);

/// Writes a client may have refused before it stops writing (it goes on reading: a database
/// that can no longer write must keep serving reads): enough to see fail-stop hold.
const REFUSALS_MAX: usize = 3;

/// One simulated process.
#[derive(Debug)]
pub struct Process {
    config: Arc<ScenarioConfig>,
    /// The cycle this process runs: its options, faults and clients.
    plan: Cycle,
    faults: Faults,
    close: bool,
    rt: Arc<SimRuntime>,
    disk: MemFs,
    /// Turns the cycle's faults on once the database is open (if they are not on already).
    switch: FaultSwitch,
    /// Operations in flight, for the watchdog.
    watch: Mutex<Watch>,
    shared: Arc<Shared>,
    trace: Trace,
}

/// The operations of a process in flight: what each is and when it started.
#[derive(Debug, Default)]
struct Watch {
    next: u64,
    ops: BTreeMap<u64, (&'static str, Duration)>,
}

/// A key interval a read covered completely.
type Interval = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// What a read showed: the intervals it covered, and every live entry it returned in them.
#[derive(Debug, Default)]
struct Shown {
    intervals: Vec<Interval>,
    seen: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Process {
    pub fn new(
        config: &Arc<ScenarioConfig>,
        plan: Cycle,
        rt: Arc<SimRuntime>,
        disk: &MemFs,
        switch: FaultSwitch,
        shared: &Arc<Shared>,
        trace: &Trace,
    ) -> Self {
        Process {
            config: Arc::clone(config),
            faults: plan.faults.clone(),
            close: plan.close,
            plan,
            rt,
            disk: disk.clone(),
            switch,
            watch: Mutex::default(),
            shared: Arc::clone(shared),
            trace: trace.clone(),
        }
    }

    fn control(&self) -> &Arc<Control> {
        self.rt.control()
    }

    pub async fn run(self) {
        let this = Arc::new(self);
        madsim::task::spawn(this.control().wakeable(Arc::clone(&this).watchdog()));
        let Some(db) = this.open_and_check().await else { return };
        let mut clients = Vec::new();
        for client in 0..this.plan.clients.0.len() {
            let (this, db) = (Arc::clone(&this), db.clone());
            let control = Arc::clone(this.control());
            let client = control.wakeable(async move { this.client(client, db).await });
            clients.push(madsim::task::spawn(client));
        }
        for c in clients {
            let _ = c.await;
        }
        if this.close && !this.shared.failed() {
            this.close_cleanly(&db).await;
        }
    }

    /// Runs `op` under the watchdog's eye (see [`Process::watchdog`]).
    async fn bounded<T>(&self, what: &'static str, op: impl Future<Output = T>) -> T {
        let id = {
            let mut watch = lock(&self.watch);
            watch.next += 1;
            let id = watch.next;
            watch.ops.insert(id, (what, madsim::time::TimeHandle::current().elapsed()));
            id
        };
        let out = op.await;
        lock(&self.watch).ops.remove(&id);
        out
    }

    /// Fails the scenario if an operation hangs: if [`LIVENESS_BOUND`] of virtual time passes
    /// without a single file call of the process completing while it waits, or if it runs past
    /// [`OPERATION_MAX`] however busy the disk is. The engine must never hang, whatever faults
    /// it met. One task watches every operation of the process, waking once per bound: a
    /// timeout per operation would leave a timer behind for every one of them.
    pub async fn watchdog(self: Arc<Self>) {
        let max = if self.config.scale { OPERATION_MAX_SCALE } else { OPERATION_MAX };
        let mut calls = self.control().calls_completed();
        loop {
            madsim::time::sleep(LIVENESS_BOUND).await;
            let now = madsim::time::TimeHandle::current().elapsed();
            let idle = self.control().calls_completed() == calls;
            calls = self.control().calls_completed();
            let watch = lock(&self.watch);
            let stuck = watch.ops.values().find_map(|&(what, started)| {
                let age = now.saturating_sub(started);
                if idle && age >= LIVENESS_BOUND {
                    Some(format!(
                        "{what} did not finish: {LIVENESS_BOUND:?} passed without a file call"
                    ))
                } else if age >= max {
                    Some(format!("{what} did not finish: it ran past {max:?} of virtual time"))
                } else {
                    None
                }
            });
            drop(watch);
            if let Some(stuck) = stuck {
                let tasks = self.control().live_tasks().join(", ");
                let why = format!("liveness: {stuck} (engine tasks alive: {tasks})");
                return self.shared.fail(&self.trace, why);
            }
        }
    }

    /// Whether a read may fail with `e` (with `Corruption` or an I/O error, never wrong data):
    /// if the cycle's faults are on and reach what reads see, or if it reports the damage at
    /// rest (it names the damaged file).
    fn read_error_allowed(&self, e: &jadedb::Error) -> bool {
        let faulty = self.switch.is_on() && self.faults.may_fail_reads();
        let kind = e.is_corruption() || matches!(e, jadedb::Error::Io { .. });
        (faulty && kind) || self.shared.reports_damage(e)
    }

    /// Whether a write, flush, compaction or close may fail: under any fault, or once data at
    /// rest is damaged (a compaction that meets it poisons the database). Without faults every
    /// one must succeed.
    fn write_error_allowed(&self) -> bool {
        self.faults.any() || self.shared.damaged()
    }

    /// Whether opening may fail with `e`: if faults are on during recovery (`Corruption` only
    /// if reads may flip bits), or if it reports the damage at rest.
    fn open_error_allowed(&self, e: &jadedb::Error) -> bool {
        if self.shared.reports_damage(e) {
            return true;
        }
        if !self.switch.is_on() {
            return false;
        }
        if e.is_corruption() {
            return self.faults.rate(FaultKind::ReadFlip) > 0.0;
        }
        self.faults.kinds().any(|k| !matches!(k, FaultKind::ShortRead | FaultKind::Panic))
    }

    /// Opens the database and checks what it recovered (invariants 1-3).
    async fn open_and_check(&self) -> Option<Db> {
        let rt: jadedb::runtime::RuntimeRef = self.rt.clone();
        let opened = Db::open_async(&self.config.db_dir, options(&self.config, &self.plan), rt);
        let db = match self.bounded("open", opened).await {
            Ok(db) => db,
            Err(e) if self.open_error_allowed(&e) => {
                self.trace.event(now_ns(), format_args!("open failed under faults: {e}"));
                if self.shared.damaged() {
                    lock(&self.shared.stats).refusals_after_damage += 1;
                }
                return None;
            }
            Err(e) => {
                self.shared.fail(&self.trace, format!("recovery failed: {e}"));
                return None;
            }
        };
        if !self.check_recovered(&db).await {
            // Released before anything opens the database again (the final process does).
            let _ = self.bounded("a close after a failed check", db.close_async()).await;
            return None;
        }
        self.switch.on();
        *lock(&self.shared.live_db) = Some(db.clone());
        Some(db)
    }

    /// Checks a freshly opened database against the model and starts the model's next epoch.
    /// If a read fails where the faults allow it, the check is skipped and the model stays as
    /// it was for the next recovery to check.
    async fn check_recovered(&self, db: &Db) -> bool {
        let scanned = self.bounded("the scan after recovery", db.scan_async(b"", None)).await;
        let recovered: BTreeMap<Vec<u8>, Vec<u8>> = match scanned {
            Ok(pairs) => pairs.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
            Err(e) if self.read_error_allowed(&e) => {
                self.trace.event(now_ns(), format_args!("scan after recovery failed: {e}"));
                return false;
            }
            Err(e) => {
                self.shared.fail(&self.trace, format!("scan after recovery failed: {e}"));
                return false;
            }
        };
        let seq = db.latest_sequence();
        self.trace.event(now_ns(), format_args!("recovered {} keys at seq {seq}", recovered.len()));
        let required = *lock(&self.shared.required_seq);
        if seq < required {
            let why = format!(
                "recovered seq {seq} is below {required}, acknowledged before a clean close"
            );
            self.shared.fail(&self.trace, why);
            return false;
        }
        let mut model = lock(&self.shared.model);
        if let Err(v) = model.check_recovery(&recovered, seq) {
            drop(model);
            self.shared.fail(&self.trace, format!("recovery check: {v}"));
            return false;
        }
        model.restart(recovered, seq);
        drop(model);
        lock(&self.shared.stats).recoveries += 1;
        true
    }

    async fn close_cleanly(&self, db: &Db) {
        let acked_upto = db.latest_sequence();
        let result = self.bounded("close", db.close_async()).await;
        match result {
            Ok(()) => {
                self.trace.event(now_ns(), format_args!("closed cleanly at seq {acked_upto}"));
                *lock(&self.shared.required_seq) = acked_upto;
                lock(&self.shared.stats).clean_closes += 1;
                // The seal attests every log whole: damage anywhere in them is detectable.
                if let Ok(files) = self.disk.files(Path::new(&self.config.db_dir)) {
                    let dir = Path::new(&self.config.db_dir);
                    let logs = files.into_iter().filter(|f| f.name.ends_with(".log"));
                    lock(&self.shared.attest).sealed_all(logs.map(|f| dir.join(f.name)));
                }
            }
            Err(e) if self.write_error_allowed() => {
                self.trace.event(now_ns(), format_args!("close failed under faults: {e}"));
            }
            Err(e) => self.shared.fail(&self.trace, format!("close failed: {e}")),
        }
    }

    async fn client(&self, client: usize, db: Db) {
        let plan: &ClientPlan = &self.plan.clients.0[client];
        let mut seen_seq = db.latest_sequence();
        let mut snapshot = None;
        // A database that refuses writes (poisoned by a fault) has shown what fail-stop needs
        // after a few refusals; the rest of the client's writes would only be refused again,
        // so it only reads from then on.
        let mut refused = 0;
        for op in &plan.ops {
            if self.shared.failed() {
                return;
            }
            lock(&self.shared.stats).ops += 1;
            match &op.action {
                Action::Write(w) => {
                    if refused < REFUSALS_MAX && !self.write(&db, client, w).await {
                        refused += 1;
                    }
                }
                Action::Get { key } => self.read(&db, client, *key, &mut seen_seq).await,
                &Action::Scan { from, to, by_iterator } => {
                    self.scan(&db, client, from, to, by_iterator).await
                }
                Action::Walk { lower, upper, steps, at_snapshot, pause_ms } => {
                    let snap = if *at_snapshot {
                        let Some(snap) = &snapshot else { continue };
                        Some(snap)
                    } else {
                        None
                    };
                    let pause = Duration::from_millis(*pause_ms);
                    self.walk(&db, snap, client, (*lower, *upper), steps, pause).await
                }
                &Action::SnapshotRead { from, to, reverse } => {
                    let Some(snap) = &snapshot else { continue };
                    self.snapshot_read(snap, client, from..to, reverse).await
                }
                Action::TakeSnapshot => snapshot = Some(self.snapshot(&db)),
                &Action::CompactRange { from, to } => self.compact_range(&db, from, to).await,
                Action::Flush => self.flush(&db).await,
            }
            if op.pause_ms > 0 {
                madsim::time::sleep(Duration::from_millis(op.pause_ms)).await;
            }
        }
        // A snapshot read last, after whatever flushes and compactions ran meanwhile.
        if let (Some(snap), Some(end)) = (&snapshot, plan.end) {
            if !self.shared.failed() && end.flush_first {
                self.flush(&db).await;
                self.compact_all(&db).await;
            }
            if !self.shared.failed() {
                self.snapshot_read(snap, client, 0..self.config.mix.keys as u32, end.reverse).await;
            }
        }
    }

    /// A snapshot, with the read token taken right before it: the model's view of what the
    /// snapshot must contain.
    fn snapshot(&self, db: &Db) -> (Snapshot, ReadToken) {
        let token = lock(&self.shared.model).begin_read();
        (db.snapshot(), token)
    }

    async fn read(&self, db: &Db, client: usize, key: u32, seen_seq: &mut u64) {
        let key = key_name(key as usize);
        let token = lock(&self.shared.model).begin_read();
        let result = self.bounded("get", db.get_async(&key)).await;
        lock(&self.shared.stats).reads += 1;
        let value = match result {
            Ok(value) => value,
            Err(e) if self.read_error_allowed(&e) => return,
            Err(e) => return self.shared.fail(&self.trace, format!("get failed: {e}")),
        };
        let shown =
            value.as_ref().map(|v| String::from_utf8_lossy(&v[..v.len().min(24)]).into_owned());
        self.trace
            .event(now_ns(), format_args!("get {} -> {shown:?}", String::from_utf8_lossy(&key)));
        let mut model = lock(&self.shared.model);
        if let Err(v) = model.check_read(&key, &token, value.as_deref()) {
            drop(model);
            return self.shared.fail(&self.trace, format!("read check: {v}"));
        }
        let value = value.map(|v| v.to_vec());
        model.observe(token, Observation::point(client as u64, key.clone(), value));
        if let Err(v) = model.check_observations() {
            drop(model);
            return self.shared.fail(&self.trace, format!("read check: {v}"));
        }
        drop(model);
        let now = db.latest_sequence();
        if now < *seen_seq {
            let why = format!("visible sequence went backwards: {now} after {seen_seq}");
            return self.shared.fail(&self.trace, why);
        }
        *seen_seq = now;
    }

    /// A read at a snapshot of the keys `keys`, by an iterator walked forward or backward and
    /// checked key by key; a single key is also read with `get`.
    async fn snapshot_read(
        &self,
        (snap, token): &(Snapshot, ReadToken),
        client: usize,
        keys: std::ops::Range<u32>,
        reverse: bool,
    ) {
        let seq = snap.sequence();
        let keys: Vec<Vec<u8>> = keys.map(|k| key_name(k as usize)).collect();
        let (Some(first), Some(last)) = (keys.first(), keys.last()) else { return };
        let end = successor(last);
        let walked = async {
            let it = snap.iter_async(Some(first), Some(&end)).await?;
            walk_all(it, reverse).await
        };
        let walked = self.bounded("a snapshot scan", walked).await;
        let got = match walked {
            Ok(got) => got,
            Err(e) if self.read_error_allowed(&e) => return,
            Err(e) => return self.shared.fail(&self.trace, format!("snapshot scan failed: {e}")),
        };
        if keys.len() == 1 {
            let got_one = self.bounded("a snapshot get", snap.get_async(first)).await;
            match got_one {
                Ok(v) if v.as_deref() == got.get(first).map(Vec::as_slice) => {}
                Ok(v) => {
                    let why = format!(
                        "snapshot get {first:?} gave {v:?} but its scan {:?}",
                        got.get(first)
                    );
                    return self.shared.fail(&self.trace, why);
                }
                Err(e) if self.read_error_allowed(&e) => return,
                Err(e) => {
                    return self.shared.fail(&self.trace, format!("snapshot get failed: {e}"))
                }
            }
        }
        self.trace.event(now_ns(), format_args!("snapshot read at {seq}: {} keys", got.len()));
        lock(&self.shared.stats).snapshot_reads += 1;
        let shown = Shown {
            intervals: vec![(Bound::Included(first.clone()), Bound::Excluded(end))],
            seen: got,
        };
        self.check_shown(shown, client, Reading::Snapshot(seq, *token));
    }

    /// A random walk of an iterator over random bounds, latest or at a snapshot: seeks to
    /// either end and to keys, `seek_for_prev`, steps both ways; every answer is checked
    /// against the model at one sequence number.
    async fn walk(
        &self,
        db: &Db,
        snap: Option<&(Snapshot, ReadToken)>,
        client: usize,
        (lower, upper): (Option<u32>, Option<u32>),
        plan: &[Step],
        pause: Duration,
    ) {
        let lower = lower.map(|k| key_name(k as usize));
        let upper = upper.map(|k| key_name(k as usize));
        let token = lock(&self.shared.model).begin_read();
        let steps = plan.len();
        let walked = async {
            let it = match snap {
                Some((s, _)) => s.iter_async(lower.as_deref(), upper.as_deref()).await?,
                None => db.iter_async(lower.as_deref(), upper.as_deref()).await?,
            };
            walk_steps(it, &lower, &upper, plan, pause).await
        };
        let walked = self.bounded("an iterator walk", walked).await;
        let shown = match walked {
            Ok(Ok(shown)) => shown,
            Ok(Err(why)) => return self.shared.fail(&self.trace, why),
            Err(e) if self.read_error_allowed(&e) => return,
            Err(e) => return self.shared.fail(&self.trace, format!("iterator walk failed: {e}")),
        };
        self.trace.event(
            now_ns(),
            format_args!(
                "walk of {steps} steps showed {} keys in {} intervals",
                shown.seen.len(),
                shown.intervals.len()
            ),
        );
        lock(&self.shared.stats).walks += 1;
        match snap {
            Some((s, snap_token)) => {
                self.check_shown(shown, client, Reading::Snapshot(s.sequence(), *snap_token))
            }
            None => self.check_shown(shown, client, Reading::Latest(token)),
        }
    }

    /// Checks what a read showed against the model: every value it returned at once, key by
    /// key, and the whole read (every key of its intervals, present or absent, at one sequence
    /// number never behind the client's previous read) once every write it may have seen has
    /// an answer.
    fn check_shown(&self, shown: Shown, client: usize, reading: Reading) {
        let mut model = lock(&self.shared.model);
        for (key, value) in &shown.seen {
            let got = Some(value.as_slice());
            let checked = match &reading {
                Reading::Latest(token) => model.check_read(key, token, got),
                Reading::Snapshot(seq, _) => model.check_snapshot_read(key, *seq, got),
            };
            if let Err(v) = checked {
                drop(model);
                return self.shared.fail(&self.trace, format!("read check: {v}"));
            }
        }
        let obs =
            Observation { client: client as u64, intervals: shown.intervals, seen: shown.seen };
        match reading {
            Reading::Latest(token) => model.observe(token, obs),
            Reading::Snapshot(seq, token) => model.observe_snapshot(seq, token, obs),
        }
        if let Err(v) = model.check_observations() {
            drop(model);
            self.shared.fail(&self.trace, format!("read check: {v}"));
        }
    }

    /// A `compact_range` over a random range; under faults it may fail (the database is then
    /// poisoned), otherwise it must succeed.
    async fn compact_range(&self, db: &Db, a: u32, b: u32) {
        let (start, end) = (key_name(a as usize), key_name(b as usize));
        let compacted = db.compact_range_async(&start, &end);
        let result = self.bounded("compact_range", compacted).await;
        self.trace.event(now_ns(), format_args!("compact_range [{a}, {b}] -> {result:?}"));
        lock(&self.shared.stats).compact_ranges += 1;
        if let Err(e) = result {
            if !self.write_error_allowed() {
                self.shared.fail(&self.trace, format!("compact_range failed without faults: {e}"));
            }
        }
    }

    /// A `compact_range` over every key.
    async fn compact_all(&self, db: &Db) {
        let compacted = db.compact_range_async(b"", b"\xff");
        let result = self.bounded("compact_range of everything", compacted).await;
        self.trace.event(now_ns(), format_args!("compact_range all -> {result:?}"));
        lock(&self.shared.stats).compact_ranges += 1;
        if let Err(e) = result {
            if !self.write_error_allowed() {
                self.shared.fail(&self.trace, format!("compact_range failed without faults: {e}"));
            }
        }
    }

    /// A `flush`; as `compact_range`, it may fail only under faults.
    async fn flush(&self, db: &Db) {
        let result = self.bounded("flush", db.flush_async()).await;
        self.trace.event(now_ns(), format_args!("flush -> {result:?}"));
        lock(&self.shared.stats).user_flushes += 1;
        if let Err(e) = result {
            if !self.write_error_allowed() {
                self.shared.fail(&self.trace, format!("flush failed without faults: {e}"));
            }
        }
    }

    /// A range scan at the latest sequence number, through `scan` or a full iterator walk.
    async fn scan(&self, db: &Db, client: usize, a: u32, b: u32, by_iterator: bool) {
        let (start, end) = (key_name(a as usize), key_name(b as usize));
        let token = lock(&self.shared.model).begin_read();
        let scanned = async {
            if !by_iterator {
                let pairs = db.scan_async(&start, Some(&end)).await?;
                Ok(pairs.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
            } else {
                walk_all(db.iter_async(Some(&start), Some(&end)).await?, true).await
            }
        };
        let got = self.bounded("a scan", scanned).await;
        let got = match got {
            Ok(got) => got,
            Err(e) if self.read_error_allowed(&e) => return,
            Err(e) => return self.shared.fail(&self.trace, format!("scan failed: {e}")),
        };
        self.trace.event(now_ns(), format_args!("scan [{a}, {b}) -> {} keys", got.len()));
        lock(&self.shared.stats).scans += 1;
        let shown =
            Shown { intervals: vec![(Bound::Included(start), Bound::Excluded(end))], seen: got };
        self.check_shown(shown, client, Reading::Latest(token));
    }

    /// Issues one write and checks what became of it; returns whether the engine acknowledged it.
    pub async fn write(&self, db: &Db, client: usize, planned: &Write) -> bool {
        let ops = self.values_of(planned);
        let sync = planned.sync;
        let mut batch = WriteBatch::new();
        for o in &ops {
            let added = match o {
                Op::Put(k, v) => batch.put(k, v),
                Op::Delete(k) => batch.delete(k),
            };
            if let Err(e) = added {
                self.shared.fail(&self.trace, format!("batch refused: {e}"));
                return false;
            }
        }
        let n = ops.len();
        let first = ops.iter().find_map(Op::value).map(Needle::of);
        let last = ops.last().and_then(Op::value).map(Needle::of);
        let failures_before = self.control().durability_failures();
        let issued = lock(&self.shared.attest).issued();
        let issued_ns = now_ns();
        let id = lock(&self.shared.model).issue_write(ops, sync);
        self.trace.event(now_ns(), format_args!("client {client} write {id} ops {n} sync {sync}"));
        let written = db.write_async(batch, WriteOptions { sync });
        let result = self.bounded("a write", written).await;
        self.trace.event(now_ns(), format_args!("client {client} write {id} -> {result:?}"));
        match result {
            Ok(seq) => {
                let judged = {
                    let mut model = lock(&self.shared.model);
                    model.ack_write(id, seq);
                    model.check_observations()
                };
                if let Err(v) = judged {
                    self.shared.fail(&self.trace, format!("read check: {v}"));
                    return true;
                }
                let mut stats = lock(&self.shared.stats);
                stats.writes_acked += 1;
                stats.synced_acked += u64::from(sync);
                stats.writes_after_failure += u64::from(failures_before > 0);
                drop(stats);
                if failures_before > 0 {
                    let why = format!(
                        "fail-stop: {id} was acknowledged though a write or sync had failed \
                         before it was issued; nothing may be acknowledged until reopen"
                    );
                    self.shared.fail(&self.trace, why);
                    return true;
                }
                if sync {
                    // The last value ends the batch's record, when it is a put: then the whole
                    // record must be durable; otherwise up to the end of the first value.
                    self.check_durable_at_ack(id, last.as_ref().or(first.as_ref()));
                    self.record_latency(issued_ns);
                }
                lock(&self.shared.attest).acknowledged(issued, sync, first, last);
                true
            }
            Err(e) => {
                let judged = {
                    let mut model = lock(&self.shared.model);
                    model.fail_write(id);
                    model.check_observations()
                };
                if let Err(v) = judged {
                    self.shared.fail(&self.trace, format!("read check: {v}"));
                    return false;
                }
                let mut stats = lock(&self.shared.stats);
                stats.writes_failed += 1;
                stats.writes_after_failure += u64::from(failures_before > 0);
                drop(stats);
                if !self.write_error_allowed() {
                    self.shared.fail(&self.trace, format!("write failed without faults: {e}"));
                }
                false
            }
        }
    }

    /// Invariant 7: when a synced write is acknowledged, its bytes in the log, and everything
    /// before them, are in the disk's durable image at that instant.
    fn check_durable_at_ack(&self, id: jadedb_model::WriteId, value: Option<&Needle>) {
        // A batch of deletes writes no bytes unique to it; its durability is checked by crashes.
        let Some(value) = value else { return };
        let dir = Path::new(&self.config.db_dir);
        let found = match self.disk.find(dir, ".log", &value.bytes, value.len) {
            Ok(found) => found,
            Err(e) => {
                return self.shared.fail(&self.trace, format!("cannot inspect the disk: {e}"))
            }
        };
        let Some(found) = found else {
            let why = format!("{id} was acknowledged as synced but no WAL holds it");
            return self.shared.fail(&self.trace, why);
        };
        if !found.durable {
            let why = format!(
                "{id} was acknowledged as synced before {} was durable up to its end (offset {})",
                found.path.display(),
                found.offset + value.len
            );
            return self.shared.fail(&self.trace, why);
        }
        if !found.durable_name {
            // A power loss now would take the file, synced bytes and all: a new log's name is
            // durable only once its directory is synced.
            let why = format!(
                "{id} was acknowledged as synced before the name of {} was durable (its \
                 directory not synced since it was created)",
                found.path.display()
            );
            return self.shared.fail(&self.trace, why);
        }
        lock(&self.shared.stats).acks_checked_durable += 1;
    }

    /// Commit latency of a synced write, in the fault-free cycles of a scenario that fixes the
    /// fsync latency.
    fn record_latency(&self, issued_ns: u128) {
        if self.config.latency == Latency::Random || self.faults.any() {
            return;
        }
        let us = u64::try_from((now_ns() - issued_ns) / 1000).unwrap_or(u64::MAX);
        lock(&self.shared.latencies_us).push(us);
    }

    /// The puts and deletes of a planned write, each put with a value unique in the scenario.
    fn values_of(&self, planned: &Write) -> Vec<Op> {
        (planned.ops.iter().enumerate())
            .map(|(i, op)| match *op {
                WriteOp::Delete { key } => Op::Delete(key_name(key as usize)),
                WriteOp::Put { key, len } => {
                    let number = {
                        let mut next = lock(&self.shared.next_value);
                        *next += 1;
                        *next
                    };
                    Op::Put(key_name(key as usize), value(number, i, len as usize))
                }
            })
            .collect()
    }
}

/// How a read was taken: at the latest sequence number (from this token on), or at a snapshot
/// (its sequence number, and the token taken right before it was created).
enum Reading {
    Latest(ReadToken),
    Snapshot(u64, ReadToken),
}

/// The options of cycle `cycle`.
fn options(config: &ScenarioConfig, plan: &Cycle) -> Options {
    let planted = config.bug.and_then(crate::config::Bug::planted);
    let tables = &plan.tables;
    let options = Options::default()
        .memtable_bytes_max(plan.memtable_bytes_max)
        .memtables_max(tables.memtables_max)
        .table_block_bytes(tables.block_bytes)
        .bloom_bits_per_key(tables.bloom_bits_per_key)
        .block_cache_bytes(tables.block_cache_bytes)
        .open_tables_max(tables.open_tables_max)
        .manifest_bytes_max(tables.manifest_bytes_max)
        .l0_compaction_files(tables.l0_compaction_files)
        .l0_stall_files(tables.l0_stall_files.0, tables.l0_stall_files.1)
        .level1_bytes_max(tables.level1_bytes_max)
        .target_file_bytes(tables.target_file_bytes)
        .max_background_flushes(tables.background_flushes)
        .max_background_compactions(tables.background_compactions)
        .compaction_bytes_per_sec(tables.compaction_bytes_per_sec)
        .wal_bytes_per_sync(tables.wal_bytes_per_sync)
        .wal_buffer_bytes(tables.wal_buffer_bytes)
        .min_blob_size(tables.min_blob_size)
        .commit_group_bytes_max(config.group_bytes_max)
        .commit_window(Duration::from_micros(config.commit_window_us))
        .wal_preallocate_bytes(config.wal_preallocate_bytes)
        .planted_bug(planted);
    match tables.memory_budget {
        0 => options,
        budget => options.memory_budget(budget),
    }
}

fn above_lower(key: &[u8], lo: &Bound<Vec<u8>>) -> bool {
    match lo {
        Bound::Included(l) => key >= l.as_slice(),
        Bound::Excluded(l) => key > l.as_slice(),
        Bound::Unbounded => true,
    }
}

fn below_upper(key: &[u8], hi: &Bound<Vec<u8>>) -> bool {
    match hi {
        Bound::Included(h) => key <= h.as_slice(),
        Bound::Excluded(h) => key < h.as_slice(),
        Bound::Unbounded => true,
    }
}

fn within(key: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    above_lower(key, lo) && below_upper(key, hi)
}

/// Where a step seeks.
fn target_key(t: plan::Target) -> Vec<u8> {
    let mut key = key_name(t.key as usize);
    if t.between {
        key.push(b'+');
    }
    key
}

/// Runs `plan` on an iterator over [`lower`, `upper`) and says what it showed: each answer
/// covers an interval (a seek to `t` answering `k` shows there is nothing live in `[t, k)`).
/// An answer out of order or out of bounds is returned as the failure it is.
async fn walk_steps(
    mut it: DbIterator,
    lower: &Option<Vec<u8>>,
    upper: &Option<Vec<u8>>,
    plan: &[Step],
    pause: Duration,
) -> jadedb::Result<Result<Shown, String>> {
    let lo = lower.clone().map_or(Bound::Unbounded, Bound::Included);
    let hi = upper.clone().map_or(Bound::Unbounded, Bound::Excluded);
    let mut shown = Shown::default();
    for &step in plan {
        if !pause.is_zero() {
            madsim::time::sleep(pause).await;
        }
        let before = it.entry().map(|(k, _)| k.to_vec());
        let interval_to = |k: &Option<Vec<u8>>| k.clone().map_or(hi.clone(), Bound::Included);
        let interval_from = |k: &Option<Vec<u8>>| k.clone().map_or(lo.clone(), Bound::Included);
        let (from, to) = match step {
            Step::First => {
                it.seek_to_first_async().await?;
                (lo.clone(), interval_to(&current(&it)))
            }
            Step::Last => {
                it.seek_to_last_async().await?;
                (interval_from(&current(&it)), hi.clone())
            }
            Step::Seek(t) => {
                let t = target_key(t);
                it.seek_async(&t).await?;
                (max_lower(&lo, &t), interval_to(&current(&it)))
            }
            Step::SeekForPrev(t) => {
                let t = target_key(t);
                it.seek_for_prev_async(&t).await?;
                (interval_from(&current(&it)), min_upper(&hi, &t))
            }
            Step::Next => {
                let Some(from) = before else { continue };
                it.next_async().await?;
                (Bound::Excluded(from), interval_to(&current(&it)))
            }
            Step::Prev => {
                let Some(from) = before else { continue };
                it.prev_async().await?;
                (interval_from(&current(&it)), Bound::Excluded(from))
            }
        };
        if let Some((k, v)) = it.entry() {
            if !within(k, &from, &to) || !within(k, &lo, &hi) {
                return Ok(Err(format!(
                    "iterator step {step:?} answered {k:?}, outside {from:?}..{to:?}"
                )));
            }
            if let Some(old) = shown.seen.insert(k.to_vec(), v.to_vec()) {
                if old != v.as_ref() {
                    return Ok(Err(format!("one iterator showed two values of {k:?}")));
                }
            }
        }
        shown.intervals.push((from, to));
    }
    Ok(Ok(shown))
}

fn current(it: &DbIterator) -> Option<Vec<u8>> {
    it.entry().map(|(k, _)| k.to_vec())
}

/// The tighter of a lower bound and `Included(t)`.
fn max_lower(lo: &Bound<Vec<u8>>, t: &[u8]) -> Bound<Vec<u8>> {
    match lo {
        Bound::Included(l) if l.as_slice() > t => lo.clone(),
        _ => Bound::Included(t.to_vec()),
    }
}

/// The tighter of an upper bound and `Included(t)`.
fn min_upper(hi: &Bound<Vec<u8>>, t: &[u8]) -> Bound<Vec<u8>> {
    match hi {
        Bound::Excluded(h) if h.as_slice() <= t => hi.clone(),
        _ => Bound::Included(t.to_vec()),
    }
}

/// Everything an iterator shows, walking forward from the first key or backward from the last.
async fn walk_all(mut it: DbIterator, reverse: bool) -> jadedb::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut got = BTreeMap::new();
    if reverse {
        it.seek_to_last_async().await?;
    } else {
        it.seek_to_first_async().await?;
    }
    let mut last: Option<Vec<u8>> = None;
    while let Some((k, v)) = it.entry() {
        // Keys must come strictly in the walk's order: the map would hide a repeat.
        if last.as_ref().is_some_and(|last| (k.as_ref() > last.as_slice()) == reverse) {
            return Err(jadedb::Error::InvalidArgument(format!(
                "iterator showed {k:?} out of order"
            )));
        }
        last = Some(k.to_vec());
        got.insert(k.to_vec(), v.to_vec());
        if reverse {
            it.prev_async().await?;
        } else {
            it.next_async().await?;
        }
    }
    Ok(got)
}

/// The smallest key greater than `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// A value unique in the scenario (`number` counts every value written), padded to `len`.
fn value(number: u64, i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("v{number}.{i}:").into_bytes();
    v.resize(len.max(v.len()), b'.');
    v
}

/// What the final process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalWork {
    /// Recover, write, flush, compact, read, close and recover again.
    All,
    /// Recover, check and close.
    RecoverOnly,
}

/// With faults off: recover, write, flush, compact and read again within the liveness bound
/// (invariant 5), close leaving no engine task behind, and recover everything.
///
/// With [`FinalWork::RecoverOnly`], only recover, check what was recovered against the model
/// (invariants 1-3) and close: the exhaustive mode runs that on every crash image.
pub async fn final_check(
    handle: &madsim::runtime::Handle,
    disk: MemFs,
    config: &Arc<ScenarioConfig>,
    rng: &mut ChaCha8Rng,
    shared: &Arc<Shared>,
    trace: &Trace,
    work: FinalWork,
) {
    let exercise = work == FinalWork::All;
    crate::scenario::damage_at_boot(&disk, config, config.cycles.len(), shared, rng, trace);
    // The last cycle's options, with faults off, no clients and a clean close.
    let last = config.cycles.last().expect("at least one cycle");
    let plan = Cycle {
        faults: Faults::default(),
        faults_during_recovery: false,
        close: true,
        point: crate::config::CrashPoint::Time,
        clients: Clients::default(),
        ..last.without_clients()
    };
    let control = Control::new(crate::config::CrashPoint::Time, true);
    let (runtime, _, _, switch) =
        crate::scenario::make_runtime(&disk, config, &plan, &control, rng, trace);
    let node = handle.create_node().name("final").build();
    lock(&shared.processes).push((node.id(), Arc::clone(&control)));
    let process = Process::new(config, plan, runtime, &disk, switch, shared, trace);
    let process = Arc::new(process);
    let watched = Arc::clone(&process);
    let done = node.spawn(control.wakeable(async move {
        madsim::task::spawn(watched.control().wakeable(Arc::clone(&watched).watchdog()));
        for round in 0..2 {
            if watched.shared.failed() {
                return;
            }
            if round == 1 {
                watched.heal();
            }
            let Some(db) = watched.open_and_check().await else { continue };
            if !exercise {
                return watched.close_cleanly(&db).await;
            }
            if round == 0 {
                watched.exercise(&db).await;
            }
        }
    }));
    // A hang the watchdog reports leaves the process waiting forever: the timeout ends the
    // wait (virtual time jumps straight to it once nothing else is left to run).
    let _ = madsim::time::timeout(FINAL_MAX, done).await;
    crate::scenario::check_panics(shared, &control, trace);
}

impl Process {
    /// Undoes the damage at rest, as a repair from a backup would: the last recovery must then
    /// find every acknowledged write, so that the damage cost availability and never data (a
    /// refusing engine must not have destroyed anything meanwhile).
    fn heal(&self) {
        let Some(damaged) = lock(&self.shared.damage).take() else { return };
        let path = damaged.path.display();
        if damaged.heal(&self.disk) {
            self.trace.event(now_ns(), format_args!("healed the damage in {path}"));
        } else {
            self.trace.event(now_ns(), format_args!("no damage left to heal in {path}"));
        }
    }

    /// The final process's work: as client 0 at the start of a cycle, one unsynced write and a
    /// synced one; a snapshot that must outlive overwrites, a flush and a full compaction; then
    /// a clean close that must leave no engine task running.
    async fn exercise(&self, db: &Db) {
        let config = Arc::clone(&self.config);
        let plan = &config.final_plan;
        for w in &plan.before {
            self.write(db, 0, w).await;
        }
        let snapshot = self.snapshot(db);
        for w in &plan.after {
            self.write(db, 0, w).await;
        }
        self.flush(db).await;
        // As a user tidying up: everything on disk compacted down, then checked again by the
        // next recovery.
        self.compact_all(db).await;
        self.snapshot_read(&snapshot, 0, 0..self.config.mix.keys as u32, plan.reverse).await;
        drop(snapshot);
        let m = db.metrics();
        {
            let mut stats = lock(&self.shared.stats);
            stats.flushes += m.flushes;
            stats.compactions += m.compactions;
            crate::scenario::record_tree(&mut stats, &m);
        }
        self.close_cleanly(db).await;
        let alive = self.control().live_tasks();
        if !alive.is_empty() && !self.shared.failed() && !self.shared.damaged() {
            let why = format!("liveness: engine tasks still running after close: {alive:?}");
            self.shared.fail(&self.trace, why);
        }
    }
}
