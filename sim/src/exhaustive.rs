//! Exhaustive crash states: for a small workload, every disk a power loss could leave at every
//! moment between two syncs, each checked by a recovery, in the spirit of ALICE and B3.
//!
//! A seeded scenario crashes once per cycle, at one point, into one of the images the crash
//! model allows. Here the workload (a scenario's first cycle, faults off, run to its deadline)
//! is recorded instead: right before every file and directory sync, and at the crash, the disk
//! is forked with everything written since the last sync still unsynced, together with the
//! model of what was acknowledged by then (`record_point`). Then every crash image of each
//! fork (`MemFs::crash_images`: each length at sector boundaries, each unsynced block new, old
//! or garbage, each tear of the last write, each prefix of each directory's changes, or each
//! subset when directories are unordered) boots a process that recovers, must show a state
//! the model allows, and closes. A crash between two syncs leaves the durable data of the
//! earlier one plus some of what came after, so these images cover every crash in between.

use crate::config::{CrashPoint, Faults, ScenarioConfig};
use crate::runtime::now_ns;
use crate::scenario::{lock, Shared};
use crate::trace::Trace;
use jadedb_fault::MemFs;
use jadedb_model::Model;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::time::Instant;

/// The disk and the model at one moment of the recorded workload.
#[derive(Debug)]
pub struct Point {
    /// The disk then, unsynced data included.
    pub disk: MemFs,
    pub model: Model,
    /// The lowest sequence number a recovery may report (after a clean close).
    pub required_seq: u64,
    /// Virtual nanoseconds into the scenario.
    pub at_ns: u128,
}

/// Records the disk and the model now, if the scenario is recording (see the module comment).
pub(crate) fn record_point(disk: &MemFs, shared: &Shared) {
    let mut points = lock(&shared.points);
    let Some(points) = points.as_mut() else { return };
    let point = Point {
        disk: disk.fork(),
        model: lock(&shared.model).clone(),
        required_seq: *lock(&shared.required_seq),
        at_ns: now_ns(),
    };
    points.push(point);
}

/// What an exhaustive run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Moments recorded (before each sync, and at the crash).
    pub points: usize,
    /// Crash states checked, and the moments whose states were more than the limit.
    pub states: u64,
    pub capped_points: usize,
    /// Client operations of the workload.
    pub ops: usize,
    /// Each failing state: its moment, its image, and why it failed.
    pub failures: Vec<(usize, usize, String)>,
    /// Why the recording run itself failed, if it did (a seeded check caught something first).
    pub recording_failure: Option<String>,
    /// Wall-clock seconds recording, and checking the states.
    pub record_secs: f64,
    pub check_secs: f64,
}

/// The workload of `config`: its first cycle, faults off, run until its deadline with no
/// aimed crash.
pub fn workload(config: &ScenarioConfig) -> ScenarioConfig {
    let mut w = config.clone();
    w.cycles.truncate(1);
    let cycle = &mut w.cycles[0];
    cycle.faults = Faults::default();
    cycle.faults_during_recovery = false;
    cycle.point = CrashPoint::Time;
    w
}

/// Checks every crash state of the workload of `config`, at most `max_states` per moment,
/// stopping at the first failure if `first_only`.
pub fn run(config: &ScenarioConfig, max_states: usize, first_only: bool) -> Report {
    let workload = workload(config);
    let mut report = Report { ops: workload.ops(), ..Report::default() };
    #[allow(clippy::disallowed_methods)] // wall-clock speed of the checks
    let started = Instant::now();
    let recorded = on_fresh_thread({
        let workload = workload.clone();
        move || {
            let shared = Arc::new(Shared::default());
            *lock(&shared.points) = Some(Vec::new());
            let outcome =
                crate::scenario::run_with(Arc::new(workload), Trace::silent(), Arc::clone(&shared));
            let points = lock(&shared.points).take().unwrap_or_default();
            (outcome.failure, points)
        }
    });
    let (failure, points) = recorded.unwrap_or_else(|why| (Some(why), Vec::new()));
    report.recording_failure = failure;
    report.points = points.len();
    report.record_secs = started.elapsed().as_secs_f64();
    #[allow(clippy::disallowed_methods)] // wall-clock speed of the checks
    let started = Instant::now();
    let workload = Arc::new(workload);
    'points: for (index, point) in points.iter().enumerate() {
        let (images, complete) = point.disk.crash_images(max_states);
        report.capped_points += usize::from(!complete);
        for (image_index, image) in images.into_iter().enumerate() {
            report.states += 1;
            let failure = check(&workload, image, point, (index * 1_000_003 + image_index) as u64);
            if let Some(why) = failure {
                report.failures.push((index, image_index, why));
                if first_only {
                    break 'points;
                }
            }
        }
    }
    report.check_secs = started.elapsed().as_secs_f64();
    report
}

/// Recovers from `image` in a fresh simulation and checks the result against the model of
/// `point`; returns why it failed, if it did.
fn check(workload: &Arc<ScenarioConfig>, image: MemFs, point: &Point, salt: u64) -> Option<String> {
    let config = Arc::clone(workload);
    let model = point.model.clone();
    let required = point.required_seq;
    on_fresh_thread(move || {
        let seed = config.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        let shared = Arc::new(Shared::default());
        *lock(&shared.model) = model;
        *lock(&shared.required_seq) = required;
        let trace = Trace::silent();
        let s = Arc::clone(&shared);
        rt.block_on(async move {
            let handle = madsim::runtime::Handle::current();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let work = crate::process::FinalWork::RecoverOnly;
            crate::process::final_check(&handle, image, &config, &mut rng, &s, &trace, work).await;
            crate::scenario::teardown(&s).await;
        });
        shared.failure()
    })
    .unwrap_or_else(Some)
}

/// Runs `f` on a fresh thread (madsim keeps per-thread state) and returns what it returns, or
/// the message of its panic.
fn on_fresh_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    #[allow(clippy::disallowed_methods)] // a fresh thread per simulation is the point
    let thread = std::thread::spawn(f);
    thread.join().map_err(|p| format!("panic: {}", jadedb::runtime::panic_message(p.as_ref())))
}
