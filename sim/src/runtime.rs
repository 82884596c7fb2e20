//! The simulated runtime: madsim's virtual clock and executor, and the crashing in-memory disk.
//!
//! Every file call first sleeps a latency on the virtual clock (seeded, or fixed for seeds that
//! measure commit latency), so that tasks interleave at every I/O and a crash can land between
//! any two calls. Calls and results are recorded in the scenario [`Trace`].
//!
//! A process's [`Control`] decides when its crash comes: at a virtual time (the supervisor's
//! deadline), right after the N-th file call of a kind, or after the N-th call made inside a
//! named engine phase. An aimed crash *freezes* the disk the moment its call completes: that
//! call never returns to the engine and every later call of any task waits forever, so the
//! crash image is exactly the disk after that call, whatever else is ready to run. The control
//! also records what the fail-stop check needs (file calls that failed in a way that leaves
//! durability unknown) and which engine tasks are alive.

use crate::config::{Buggify, CallKind, CrashPoint, Latency};
use crate::trace::Trace;
use jadedb::runtime::{
    BoxFuture, File, FileLock, FileSystem, IoFuture, JoinHandle, Phase, Runtime,
};
use jadedb_fault::{FaultFs, MemFs};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Virtual time since the scenario started, in nanoseconds.
pub fn now_ns() -> u128 {
    madsim::time::TimeHandle::current().elapsed().as_nanos()
}

/// The virtual clock of the scenario a runtime or file system serves, looked up once: madsim's
/// `TimeHandle::current` clones it out of a thread-local at every call, and the engine reads
/// the clock around every put and get, the file system at every call. Each scenario has its
/// own runtimes and file systems, so the first lookup's handle stays right.
#[derive(Default)]
struct Clock(OnceLock<madsim::time::TimeHandle>);

impl Clock {
    fn get(&self) -> &madsim::time::TimeHandle {
        self.0.get_or_init(madsim::time::TimeHandle::current)
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// Where a crash landed: what the process had just done and was in the middle of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashSite {
    /// The last file call that completed before the crash (the one it was aimed after, if any).
    pub after_call: Option<&'static str>,
    /// The engine phases in progress at the crash.
    pub phases: Vec<Phase>,
    /// Whether the crash came at its aimed point rather than at the deadline.
    pub aimed: bool,
}

/// Decides when one process crashes, and records what the checks need to know about it.
#[derive(Debug)]
pub struct Control {
    state: Mutex<ControlState>,
    /// Called right before every file or directory sync: the exhaustive mode takes the disk
    /// as it is then, with everything written since the last sync still unsynced.
    before_sync: std::sync::OnceLock<Hook>,
}

/// A function the file system calls back.
#[derive(Clone)]
pub struct Hook(pub Arc<dyn Fn() + Send + Sync>);

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hook")
    }
}

#[derive(Debug)]
struct ControlState {
    point: CrashPoint,
    /// Whether calls made during recovery count toward an `AfterCall` point (not in the first
    /// cycle, which must get its clients going).
    count_recovery: bool,
    /// Calls completed so far, by kind, that count toward an `AfterCall` point.
    calls: BTreeMap<CallKind, u32>,
    /// Calls completed while the aimed phase was in progress.
    phase_calls: u32,
    /// Phases in progress, with how many tasks are inside each.
    active: BTreeMap<Phase, u32>,
    last_call: Option<&'static str>,
    /// File calls completed so far: how the liveness check tells a long job from a hang.
    calls_completed: u64,
    crash: Option<CrashSite>,
    /// The supervisor, waiting for an aimed crash.
    waiter: Option<Waker>,
    /// Every live task of the process (engine and simulator alike), by the waker it left at
    /// its last poll: see [`Control::wake_all`].
    wakers: BTreeMap<u64, Waker>,
    next_task: u64,
    /// File calls that failed in a way that leaves durability unknown: a write, sync,
    /// directory sync or truncate. After one, the engine must acknowledge no write issued later.
    durability_failures: u64,
    /// File calls completed since the first durability failure, once there was one (for an
    /// `AfterFailure` point).
    since_failure: Option<u32>,
    /// Engine tasks alive, by name, with how many of each.
    tasks: BTreeMap<String, u32>,
    /// Panics of engine tasks, with their messages.
    panics: Vec<String>,
    /// Panics injected through the fault points.
    injected_panics: u64,
    /// What the file system saw the engine do that it must never do.
    violations: Vec<String>,
}

impl Control {
    /// A control crashing at `point` (and at the supervisor's deadline at the latest).
    pub fn new(point: CrashPoint, count_recovery: bool) -> Arc<Self> {
        let state = ControlState {
            point,
            count_recovery,
            calls: BTreeMap::new(),
            phase_calls: 0,
            active: BTreeMap::new(),
            last_call: None,
            calls_completed: 0,
            crash: None,
            waiter: None,
            wakers: BTreeMap::new(),
            next_task: 0,
            durability_failures: 0,
            since_failure: None,
            tasks: BTreeMap::new(),
            panics: Vec::new(),
            injected_panics: 0,
            violations: Vec::new(),
        };
        Arc::new(Control { state: Mutex::new(state), before_sync: std::sync::OnceLock::new() })
    }

    /// Has `hook` called right before every sync of a file or directory (once per control).
    pub fn set_before_sync(&self, hook: Hook) {
        let _ = self.before_sync.set(hook);
    }

    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the disk is frozen for the crash.
    fn frozen(&self) -> bool {
        self.lock().crash.is_some()
    }

    /// Records a completed call; returns true if the crash comes right after it.
    fn after_call(&self, op: &'static str, failed_durability: bool) -> bool {
        let mut st = self.lock();
        if st.crash.is_some() {
            return true;
        }
        st.last_call = Some(op);
        st.calls_completed += 1;
        st.durability_failures += u64::from(failed_durability);
        let aimed = match st.point {
            CrashPoint::Time => false,
            CrashPoint::AfterCall { kind, nth } => {
                let counts = st.count_recovery || !st.active.contains_key(&Phase::Recovery);
                if CallKind::of(op) == Some(kind) && counts {
                    let n = st.calls.entry(kind).or_insert(0);
                    *n += 1;
                    *n == nth
                } else {
                    false
                }
            }
            CrashPoint::InPhase { phase, nth } => {
                if st.active.contains_key(&phase) {
                    st.phase_calls += 1;
                    st.phase_calls == nth
                } else {
                    false
                }
            }
            CrashPoint::AfterFailure { calls } => {
                st.since_failure = match st.since_failure {
                    Some(n) => Some(n + 1),
                    None if failed_durability => Some(0),
                    None => None,
                };
                st.since_failure == Some(calls)
            }
        };
        if aimed {
            freeze(&mut st, true);
        }
        aimed
    }

    fn phase(&self, phase: Phase, entered: bool) {
        let mut st = self.lock();
        if st.crash.is_some() {
            return; // a dead process's phases end as its tasks are dropped
        }
        if entered {
            *st.active.entry(phase).or_insert(0) += 1;
        } else if let Some(n) = st.active.get_mut(&phase) {
            *n -= 1;
            if *n == 0 {
                st.active.remove(&phase);
            }
        }
    }

    /// Completes once an aimed crash has frozen the disk.
    pub fn crashed(self: &Arc<Self>) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut st = self.lock();
            if st.crash.is_some() {
                return Poll::Ready(());
            }
            st.waiter = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    /// Freezes the disk now, if an aimed crash has not already, and says where the crash
    /// landed.
    pub fn crash_now(&self) -> CrashSite {
        let mut st = self.lock();
        if st.crash.is_none() {
            freeze(&mut st, false);
        }
        st.crash.clone().expect("just frozen")
    }

    /// Wraps a task of this process so that [`Control::wake_all`] can reach it.
    pub fn wakeable<F: Future>(self: &Arc<Self>, future: F) -> Wakeable<F> {
        let mut st = self.lock();
        let id = st.next_task;
        st.next_task += 1;
        Wakeable { future: Box::pin(future), id, control: Arc::clone(self) }
    }

    /// Wakes every task of the process, once its node has been killed: madsim drops a dead
    /// node's task only when the task is next polled, and one never woken again (hanging on the
    /// frozen disk, or waiting for a signal only another dead task could give) would leak with
    /// all its future holds (see `scenario::teardown`).
    pub fn wake_all(&self) {
        let wakers = std::mem::take(&mut self.lock().wakers);
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    /// File calls completed so far by every task of the process.
    pub fn calls_completed(&self) -> u64 {
        self.lock().calls_completed
    }

    /// Failed writes, syncs, directory syncs and truncates so far.
    pub fn durability_failures(&self) -> u64 {
        self.lock().durability_failures
    }

    /// Engine tasks still alive, by name.
    pub fn live_tasks(&self) -> Vec<String> {
        self.lock().tasks.keys().cloned().collect()
    }

    /// Messages of the panics that ended engine tasks. The engine catches the panics the fault
    /// points inject, so one of those here escaped it too.
    pub fn task_panics(&self) -> Vec<String> {
        self.lock().panics.clone()
    }

    /// What the file system saw the engine do that it must never do.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    fn violated(&self, why: String) {
        self.lock().violations.push(why);
    }

    /// How many panics the fault points injected.
    pub fn injected_panics(&self) -> u64 {
        self.lock().injected_panics
    }

    fn task_started(&self, name: &str) {
        *self.lock().tasks.entry(name.to_string()).or_insert(0) += 1;
    }

    fn task_ended(&self, name: &str, panic: Option<String>) {
        let mut st = self.lock();
        if let Some(n) = st.tasks.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                st.tasks.remove(name);
            }
        }
        st.panics.extend(panic);
    }
}

fn freeze(st: &mut ControlState, aimed: bool) {
    let phases = st.active.keys().copied().collect();
    st.crash = Some(CrashSite { after_call: st.last_call, phases, aimed });
    if let Some(waker) = st.waiter.take() {
        waker.wake();
    }
}

/// Never completes: what a call on a frozen disk does, until the node is killed.
async fn hang<T>() -> T {
    std::future::pending().await
}

/// A task of one process, known to its [`Control`] by the waker it last left.
pub struct Wakeable<F> {
    future: Pin<Box<F>>,
    id: u64,
    control: Arc<Control>,
}

impl<F> fmt::Debug for Wakeable<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wakeable").field("id", &self.id).finish_non_exhaustive()
    }
}

impl<F: Future> Future for Wakeable<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        {
            let mut st = self.control.lock();
            if !st.wakers.get(&self.id).is_some_and(|w| w.will_wake(cx.waker())) {
                st.wakers.insert(self.id, cx.waker().clone());
            }
        }
        self.future.as_mut().poll(cx)
    }
}

impl<F> Drop for Wakeable<F> {
    fn drop(&mut self) {
        self.control.lock().wakers.remove(&self.id);
    }
}

/// File-call latencies.
#[derive(Debug)]
struct Latencies {
    profile: Latency,
    rng: Mutex<ChaCha8Rng>,
    clock: Clock,
}

impl Latencies {
    fn draw(&self, op: &str) -> Duration {
        let sync = matches!(op, "sync" | "sync_dir");
        // madsim sleeps at least 1 ms, so virtual time is in milliseconds: an fsync costs a few
        // of them, everything else one.
        let ms = match self.profile {
            Latency::FixedSync(ms) if sync => ms,
            Latency::Random if sync => {
                self.rng.lock().unwrap_or_else(PoisonError::into_inner).gen_range(1..=4)
            }
            _ => 1,
        };
        Duration::from_millis(ms)
    }
}

/// The file system the engine sees in a scenario: latency, crash control and tracing over fault
/// injection over the crashing in-memory disk.
#[derive(Clone, Debug)]
pub struct SimFs {
    inner: FaultFs<MemFs>,
    latency: Arc<Latencies>,
    control: Arc<Control>,
    trace: Trace,
}

impl SimFs {
    pub fn new(
        inner: FaultFs<MemFs>,
        latency: Latency,
        seed: u64,
        control: Arc<Control>,
        trace: Trace,
    ) -> Self {
        let rng = Mutex::new(ChaCha8Rng::seed_from_u64(seed));
        let latency = Arc::new(Latencies { profile: latency, rng, clock: Clock::default() });
        SimFs { inner, latency, control, trace }
    }

    /// Runs one file call: its latency, then (unless the disk is frozen) the call itself, its
    /// trace line, and the crash if it comes right after this call.
    async fn call<T>(
        &self,
        op: &'static str,
        path: &Path,
        detail: impl FnOnce(&io::Result<T>, &mut String),
        call: impl Future<Output = io::Result<T>>,
    ) -> io::Result<T> {
        self.latency.clock.get().sleep(self.latency.draw(op)).await;
        if self.control.frozen() {
            return hang().await;
        }
        if let (Some(hook), "sync" | "sync_dir") = (self.control.before_sync.get(), op) {
            (hook.0)();
        }
        let result = call.await;
        self.record(op, path, detail, &result);
        let failed_durability =
            result.is_err() && matches!(op, "write" | "sync" | "sync_dir" | "truncate");
        if self.control.after_call(op, failed_durability) {
            self.trace.event(now_ns(), format_args!("crash point reached after {op}"));
            return hang().await;
        }
        result
    }

    /// Puts a file call and its result in the trace (formatted only if the trace records).
    fn record<T>(
        &self,
        op: &'static str,
        path: &Path,
        detail: impl FnOnce(&io::Result<T>, &mut String),
        result: &io::Result<T>,
    ) {
        if !self.trace.on() {
            return;
        }
        DETAIL.with_borrow_mut(|text| {
            text.clear();
            detail(result, text);
            let path = path.display();
            match result {
                Ok(_) => self.trace.event(now_ns(), format_args!("fs {op} {path} {text}")),
                Err(e) => {
                    let line = format_args!("fs {op} {path} {text} -> error {e}");
                    self.trace.event(now_ns(), line)
                }
            }
        });
    }

    fn file(&self, inner: Box<dyn File>, path: &Path) -> Box<dyn File> {
        Box::new(SimFile { inner, fs: self.clone(), path: path.to_path_buf() })
    }
}

thread_local! {
    /// Where a file call's trace detail is written, reused call after call.
    static DETAIL: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn none<T>(_: &io::Result<T>, _: &mut String) {}

impl FileSystem for SimFs {
    fn create<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        Box::pin(async move {
            // File numbers are never reused (DESIGN.md's names; Pebble and RocksDB hold to it
            // too): creating a numbered file that exists replaces what may still be needed,
            // and a later deletion of the old name takes the new file.
            let numbered = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.ends_with(".log")
                    || n.ends_with(".sst")
                    || n.ends_with(".blob")
                    || n.starts_with("MANIFEST-")
            });
            if numbered && !self.control.frozen() && self.inner.inner().exists(path) {
                let why = format!("created {} again: a file number reused", path.display());
                self.control.violated(why);
            }
            let file = self.call("create", path, none, self.inner.create(path)).await?;
            Ok(self.file(file, path))
        })
    }

    fn open<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        Box::pin(async move {
            let file = self.call("open", path, none, self.inner.open(path)).await?;
            Ok(self.file(file, path))
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(self.call("remove", path, none, self.inner.remove(path)))
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        let detail = move |_: &io::Result<()>, text: &mut String| {
            let _ = write!(text, "{}", to.display());
        };
        Box::pin(self.call("rename", from, detail, self.inner.rename(from, to)))
    }

    fn list<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        let detail = |r: &io::Result<Vec<String>>, text: &mut String| {
            for (i, name) in r.iter().flatten().enumerate() {
                text.push_str(if i == 0 { "" } else { "," });
                text.push_str(name);
            }
        };
        Box::pin(self.call("list", dir, detail, self.inner.list(dir)))
    }

    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(self.call("mkdir", dir, none, self.inner.create_dir_all(dir)))
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(self.call("sync_dir", dir, none, self.inner.sync_dir(dir)))
    }

    fn lock<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn FileLock>> {
        Box::pin(async move {
            if self.control.frozen() {
                return hang().await;
            }
            let r = self.inner.lock(path).await;
            self.trace.event(now_ns(), format_args!("fs lock {} {:?}", path.display(), r.is_ok()));
            r
        })
    }
}

/// A file of a [`SimFs`].
struct SimFile {
    inner: Box<dyn File>,
    fs: SimFs,
    path: std::path::PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimFile({})", self.path.display())
    }
}

impl File for SimFile {
    fn read_at<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> IoFuture<'a, usize> {
        let len = buf.len();
        let detail = move |_: &io::Result<usize>, text: &mut String| {
            let _ = write!(text, "@{offset} len {len}");
        };
        Box::pin(self.fs.call("read", &self.path, detail, self.inner.read_at(offset, buf)))
    }

    fn write_at<'a>(&'a self, offset: u64, data: &'a [u8]) -> IoFuture<'a, ()> {
        let detail = move |_: &io::Result<()>, text: &mut String| {
            let _ = write!(text, "@{offset} len {}", data.len());
        };
        Box::pin(self.fs.call("write", &self.path, detail, self.inner.write_at(offset, data)))
    }

    fn sync_data(&self) -> IoFuture<'_, ()> {
        Box::pin(self.fs.call("sync", &self.path, none, self.inner.sync_data()))
    }

    fn truncate(&self, len: u64) -> IoFuture<'_, ()> {
        let detail = move |_: &io::Result<()>, text: &mut String| {
            let _ = write!(text, "{len}");
        };
        Box::pin(self.fs.call("truncate", &self.path, detail, self.inner.truncate(len)))
    }

    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(async move {
            if self.fs.control.frozen() {
                return hang().await;
            }
            self.inner.size().await
        })
    }
}

/// The in-code fault points of one process: which are enabled (drawn the first time the
/// engine asks, so in a seeded order), and how often an enabled one fires.
#[derive(Debug)]
struct Points {
    config: Option<Buggify>,
    /// The chance that a background job panics each time the engine asks.
    panic_rate: f64,
    enabled: BTreeMap<&'static str, bool>,
    fired: u64,
}

/// The fault point that panics a background job.
const PANIC_POINT: &str = "background.panic";

/// The runtime a simulated process runs on.
#[derive(Debug)]
pub struct SimRuntime {
    fs: SimFs,
    clock: Clock,
    /// The bare disk, for the engine's structure checker: no latency, no faults, no trace.
    disk: MemFs,
    control: Arc<Control>,
    rng: Mutex<ChaCha8Rng>,
    points: Mutex<Points>,
}

impl SimRuntime {
    pub fn new(fs: SimFs, seed: u64, buggify: Option<Buggify>, panic_rate: f64) -> Self {
        let points = Points { config: buggify, panic_rate, enabled: BTreeMap::new(), fired: 0 };
        SimRuntime {
            clock: Clock::default(),
            control: Arc::clone(&fs.control),
            disk: fs.inner.inner().clone(),
            fs,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            points: Mutex::new(points),
        }
    }

    /// The crash control of this process.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// How many times a fault point fired in this process.
    pub fn points_fired(&self) -> u64 {
        self.points.lock().unwrap_or_else(PoisonError::into_inner).fired
    }

    fn draw(&self) -> f64 {
        self.rng.lock().unwrap_or_else(PoisonError::into_inner).gen()
    }
}

impl Runtime for SimRuntime {
    fn fs(&self) -> &dyn FileSystem {
        &self.fs
    }

    fn now(&self) -> Duration {
        self.clock.get().elapsed()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(madsim::time::sleep(duration))
    }

    fn spawn(&self, name: &str, task: BoxFuture<'static, ()>) -> JoinHandle {
        let control = Arc::clone(&self.control);
        let task_name = name.to_string();
        control.task_started(&task_name);
        let task = async move {
            // A panicking task ends as an OS thread would, and the process goes on: whether
            // the engine notices is what the checks find out.
            let panic = jadedb::runtime::catch_unwind(task).await.err();
            control.task_ended(&task_name, panic);
        };
        let handle = madsim::task::Builder::new().name(name).spawn(self.control.wakeable(task));
        JoinHandle::new(Box::pin(async move {
            let _ = handle.await;
        }))
    }

    fn random_u64(&self) -> u64 {
        self.rng.lock().unwrap_or_else(PoisonError::into_inner).gen()
    }

    fn checker_fs(&self) -> Option<&dyn FileSystem> {
        Some(&self.disk)
    }

    fn phase(&self, phase: Phase, entered: bool) {
        self.control.phase(phase, entered);
    }

    fn buggify(&self, point: &'static str) -> bool {
        let (enabled, fire) = {
            let mut points = self.points.lock().unwrap_or_else(PoisonError::into_inner);
            if point == PANIC_POINT {
                (points.panic_rate > 0.0, points.panic_rate)
            } else {
                let Some(config) = points.config else { return false };
                let enabled = match points.enabled.get(point) {
                    Some(&enabled) => enabled,
                    None => {
                        drop(points);
                        let enabled = self.draw() < config.enabled;
                        points = self.points.lock().unwrap_or_else(PoisonError::into_inner);
                        points.enabled.insert(point, enabled);
                        enabled
                    }
                };
                (enabled, config.fire)
            }
        };
        let fires = enabled && self.draw() < fire;
        if fires {
            self.points.lock().unwrap_or_else(PoisonError::into_inner).fired += 1;
            if point == PANIC_POINT {
                self.control.lock().injected_panics += 1;
            }
        }
        fires
    }
}
