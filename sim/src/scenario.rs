//! One seeded scenario: crash cycles of a database under concurrent clients, each checked
//! against the reference model.
//!
//! A cycle boots the disk (damaging data at rest first, if the seed's faults say so), starts a
//! simulated process (a madsim node) that opens the database, checks the recovered state
//! against the model (invariants 1-3) and runs the clients, whose every operation is checked on
//! the spot ([`crate::process`]). The crash comes at the cycle's aimed point or its deadline,
//! whichever is first: the node is killed, dropping every task mid-operation, and the disk is
//! replaced by its crash image, after a power loss or a process crash. After the last cycle a
//! final process recovers with faults off, must write, flush, compact and read again within a
//! bound of virtual time (invariant 5), closes cleanly leaving no task behind, and a last
//! recovery must hold every acknowledged write.

use crate::config::{
    CallKind, CrashKind, CrashPoint, FaultKind, ScenarioConfig, LATENCY_P99_BOUND,
};
use crate::damage::{self, Attestations, Damage};
use crate::process::Process;
use crate::runtime::{now_ns, Control, CrashSite, Hook, SimFs, SimRuntime};
pub use crate::summary::Stats;
use crate::trace::Trace;
use jadedb::runtime::Phase;
use jadedb::Db;
use jadedb_fault::{Effect, FaultFs, MemFs, OpKind, Predicate};
use jadedb_model::Model;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How a scenario ended.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub failure: Option<String>,
    pub trace_hash: u64,
    pub stats: Stats,
    pub recent: Vec<String>,
    pub config: Arc<ScenarioConfig>,
    /// Virtual microseconds from issue to acknowledgement of each synced write, in the
    /// fault-free cycles of a scenario that fixes the fsync latency.
    pub commit_latencies_us: Vec<u64>,
}

/// State shared by the supervisor and the simulated processes.
#[derive(Debug, Default)]
pub struct Shared {
    pub model: Mutex<Model>,
    failure: Mutex<Option<String>>,
    pub stats: Mutex<Stats>,
    /// After a clean close, every write acknowledged so far must survive: the lowest sequence
    /// number the next recovery may report.
    pub required_seq: Mutex<u64>,
    /// The database of the running process, so the supervisor can read its metrics before the
    /// crash.
    pub live_db: Mutex<Option<Db>>,
    /// Which log bytes the engine can prove were synced (where damage at rest may land).
    pub attest: Mutex<Attestations>,
    /// The damage at rest, once done: from then on the engine may refuse, naming the file.
    pub damage: Mutex<Option<crate::damage::Damaged>>,
    /// Numbers every value written, so each is unique in the scenario.
    pub next_value: Mutex<u64>,
    pub latencies_us: Mutex<Vec<u64>>,
    /// Every process started, with its control: the teardown kills them all.
    pub processes: Mutex<Vec<(madsim::task::NodeId, Arc<Control>)>>,
    /// In exhaustive mode, the disk before every sync of the crash cycles and at each crash,
    /// with the model then (`crate::exhaustive`); `None` otherwise.
    pub points: Mutex<Option<Vec<crate::exhaustive::Point>>>,
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn fail(&self, trace: &Trace, why: String) {
        trace.event(now_ns(), format_args!("FAILURE {why}"));
        lock(&self.failure).get_or_insert(why);
    }

    /// Why the scenario failed, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    pub fn failed(&self) -> bool {
        lock(&self.failure).is_some()
    }

    pub fn damaged(&self) -> bool {
        lock(&self.damage).is_some()
    }

    /// Whether `e` reports the damage at rest: it names the damaged file.
    pub fn reports_damage(&self, e: &jadedb::Error) -> bool {
        lock(&self.damage).as_ref().is_some_and(|d| d.named_by(e))
    }
}

/// The virtual time a scenario may take at most: far beyond any legitimate run, so only a
/// livelock that keeps virtual time moving reaches it.
const VIRTUAL_TIME_MAX: Duration = Duration::from_secs(3600);

/// Runs the scenario of `seed` on the current thread.
pub fn run(seed: u64, bug: Option<crate::config::Bug>, trace: Trace) -> Outcome {
    run_config(Arc::new(ScenarioConfig::draw(seed, bug)), trace)
}

/// Runs the scenario `config` describes (a seed's, or a scenario file's) on the current thread.
pub fn run_config(config: Arc<ScenarioConfig>, trace: Trace) -> Outcome {
    run_with(config, trace, Arc::new(Shared::default()))
}

/// Runs `config` on the current thread, with the state the checks share set up as `shared`
/// (the exhaustive mode records the disk's crash points in it).
pub fn run_with(config: Arc<ScenarioConfig>, trace: Trace, shared: Arc<Shared>) -> Outcome {
    let seed = config.seed;
    let mut rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.set_time_limit(VIRTUAL_TIME_MAX);
    rt.block_on(async {
        simulate(Arc::clone(&config), Arc::clone(&shared), trace.clone()).await;
        teardown(&shared).await;
    });
    let failure = lock(&shared.failure).clone();
    let stats = lock(&shared.stats).clone();
    let commit_latencies_us = std::mem::take(&mut *lock(&shared.latencies_us));
    Outcome {
        seed,
        failure,
        trace_hash: trace.hash(),
        stats,
        recent: trace.recent(),
        config: Arc::clone(&config),
        commit_latencies_us,
    }
}

/// Kills every process and lets the executor drop their tasks. madsim drops a dead node's task
/// only when the task is next polled, and the runtime does not drop the tasks left in its queue
/// when it is dropped: a task still queued keeps the queue alive, and the queue every task in
/// it, so without this each scenario leaked its engines and disks (half a megabyte a scenario
/// on average, tens at scale: a sweep of 100,000 seeds ran out of memory).
pub(crate) async fn teardown(shared: &Shared) {
    let handle = madsim::runtime::Handle::current();
    let processes = std::mem::take(&mut *lock(&shared.processes));
    for (node, control) in processes {
        handle.kill(node);
        control.wake_all();
    }
    // Every task woken is polled, found dead and dropped before the sleep ends.
    madsim::time::sleep(Duration::from_millis(1)).await;
}

async fn simulate(config: Arc<ScenarioConfig>, shared: Arc<Shared>, trace: Trace) {
    let handle = madsim::runtime::Handle::current();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed_d15c);
    let mut disk = MemFs::new();
    disk.set_crash_model(config.crash_model);
    for (index, cycle) in config.cycles.iter().enumerate() {
        damage_at_boot(&disk, &config, index, &shared, &mut rng, &trace);
        let control = Control::new(cycle.point, index > 0);
        let (runtime, fault_fs, rules, switch) =
            make_runtime(&disk, &config, cycle, &control, &mut rng, &trace);
        if lock(&shared.points).is_some() {
            let (disk, shared) = (disk.clone(), Arc::downgrade(&shared));
            control.set_before_sync(Hook(Arc::new(move || {
                if let Some(shared) = shared.upgrade() {
                    crate::exhaustive::record_point(&disk, &shared);
                }
            })));
        }
        let node = handle.create_node().name(format!("db-{index}")).build();
        lock(&shared.processes).push((node.id(), Arc::clone(&control)));
        let process = Process::new(
            &config,
            cycle.clone(),
            Arc::clone(&runtime),
            &disk,
            switch,
            &shared,
            &trace,
        );
        node.spawn(control.wakeable(process.run()));
        let deadline = Duration::from_millis(cycle.deadline_ms);
        let _ = madsim::time::timeout(deadline, control.crashed()).await;
        let site = control.crash_now();
        crate::exhaustive::record_point(&disk, &shared);
        record_metrics_at_crash(&shared);
        handle.kill(node.id());
        control.wake_all();
        trace.event(now_ns(), format_args!("{:?} of cycle {index} at {site:?}", cycle.crash_kind));
        record_crash(&shared, &config, index, &site, &control, &runtime, &fault_fs, &rules, &disk);
        check_panics(&shared, &control, &trace);
        disk.set_sync_fault(None);
        if config.damages_at_rest() {
            lock(&shared.attest).freeze(&disk, Path::new(&config.db_dir));
        }
        disk = match cycle.crash_kind {
            CrashKind::PowerLoss => {
                let (next, report) = disk.crash_with_report(&mut rng);
                let mut stats = lock(&shared.stats);
                stats.torn_writes += report.torn_writes;
                stats.torn_blocks += report.blocks_torn;
                stats.dir_changes_out_of_order += report.dir_changes_out_of_order;
                next
            }
            CrashKind::ProcessCrash => disk.process_crash(),
        };
        if shared.failed() {
            return;
        }
    }
    let work = crate::process::FinalWork::All;
    crate::process::final_check(&handle, disk, &config, &mut rng, &shared, &trace, work).await;
    check_latency(&shared, &trace);
}

/// Fails the scenario if its 99th-percentile synced commit latency passed the bound.
fn check_latency(shared: &Shared, trace: &Trace) {
    let Some(p99) = p99(&lock(&shared.latencies_us)) else { return };
    if p99.as_millis() > LATENCY_P99_BOUND.as_millis() {
        let why = format!(
            "latency: p99 synced commit latency {p99:?} is over the bound of \
             {LATENCY_P99_BOUND:?} with a fixed fsync latency"
        );
        shared.fail(trace, why);
    }
}

/// Damages data at rest before cycle `index` boots, if it is the last cycle or the final
/// process (`index` past the last cycle) and the last cycle's faults include it: the engine may
/// refuse to open from then on, so earlier cycles are spared for the other faults. One place is
/// damaged per scenario: a second could only add a refusal for a reason already given.
pub(crate) fn damage_at_boot(
    disk: &MemFs,
    config: &ScenarioConfig,
    index: usize,
    shared: &Shared,
    rng: &mut ChaCha8Rng,
    trace: &Trace,
) {
    if index + 1 < config.cycles.len() {
        return;
    }
    let faults = &config.cycles[config.cycles.len() - 1].faults;
    for (kind, what) in
        [(FaultKind::BitRot, Damage::Rot), (FaultKind::BadSector, Damage::BadSector)]
    {
        let rate = faults.rate(kind);
        if shared.damaged() || rate == 0.0 || !rng.gen_bool(rate) {
            continue;
        }
        // The last cycle's boot waits, most of the time, for a newest WAL worth damaging; the
        // final process's boot takes what there is.
        let defer = index < config.cycles.len() && rng.gen_bool(0.6);
        let attest = lock(&shared.attest);
        let Some(damaged) =
            damage::damage(disk, Path::new(&config.db_dir), &attest, what, defer, rng)
        else {
            continue;
        };
        drop(attest);
        let (path, offset, file) = (damaged.path.display(), damaged.offset, damaged.kind);
        trace.event(now_ns(), format_args!("{what:?} at rest in {path} at {offset} ({file:?})"));
        *lock(&shared.damage) = Some(damaged);
        lock(&shared.stats).faults_fired[fault_index(kind)] += 1;
    }
}

/// Rules added to the fault wrapper, with the kind each stands for.
pub type Rules = Vec<FaultKind>;

/// The switch that turns a cycle's faults on: at boot, or once the database is open.
#[derive(Clone, Debug, Default)]
pub struct FaultSwitch(Arc<AtomicBool>);

impl FaultSwitch {
    pub fn on(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Fires with probability `rate` while the switch is on.
    fn gate(&self, rate: f64, seed: u64) -> Predicate {
        Predicate::while_on(Arc::clone(&self.0)).and(Predicate::probability(rate, seed))
    }
}

/// The runtime of one process: the disk with this cycle's faults, latency, crash control and
/// tracing.
pub fn make_runtime(
    disk: &MemFs,
    config: &ScenarioConfig,
    cycle: &crate::config::Cycle,
    control: &Arc<Control>,
    rng: &mut ChaCha8Rng,
    trace: &Trace,
) -> (Arc<SimRuntime>, FaultFs<MemFs>, Rules, FaultSwitch) {
    let faults = &cycle.faults;
    let switch = FaultSwitch::default();
    if cycle.faults_during_recovery {
        switch.on();
    }
    let fault_fs = FaultFs::new(disk.clone()).with_seed(rng.gen());
    let mut rules = Rules::new();
    // Faults hit every file the engine uses: WALs, tables, MANIFESTs and CURRENT. Failed
    // fsyncs are aimed at one kind of file in a share of cycles: the background's table and
    // MANIFEST syncs outnumber the WAL's, and the first failure poisons the database, so
    // failures spread over every file would seldom test the WAL's or the MANIFEST's handling.
    if faults.rate(FaultKind::Sync) > 0.0 {
        let gate = switch.gate(faults.rate(FaultKind::Sync), rng.gen());
        let target = match rng.gen_range(0..10) {
            0..=4 => gate.and(Predicate::path_ends_with(".log")),
            5..=6 => gate.and(Predicate::path_contains("MANIFEST-")),
            _ => gate,
        };
        disk.set_sync_fault(Some(target));
    }
    let eio = Effect::EIO;
    let table: [(FaultKind, &[OpKind], Effect); 13] = [
        (FaultKind::SyncDir, &[OpKind::SyncDir], eio),
        (FaultKind::ReadEio, &[OpKind::Read], eio),
        (FaultKind::WriteEio, &[OpKind::Write], eio),
        (FaultKind::Create, &[OpKind::Create], eio),
        (FaultKind::Open, &[OpKind::Open], eio),
        (FaultKind::Rename, &[OpKind::Rename], eio),
        (FaultKind::Remove, &[OpKind::Remove], eio),
        (FaultKind::List, &[OpKind::List], eio),
        (FaultKind::Truncate, &[OpKind::Truncate], eio),
        (FaultKind::NoSpaceWrite, &[OpKind::Write], Effect::ENOSPC),
        (
            FaultKind::NoSpaceMeta,
            &[OpKind::Create, OpKind::Rename, OpKind::CreateDir],
            Effect::ENOSPC,
        ),
        (FaultKind::ShortRead, &[OpKind::Read], Effect::ShortRead),
        (FaultKind::ReadFlip, &[OpKind::Read], Effect::BitFlip),
    ];
    for (kind, ops, effect) in table {
        let rate = faults.rate(kind);
        if rate == 0.0 {
            continue;
        }
        for &op in ops {
            fault_fs.add_rule(op, switch.gate(rate, rng.gen()), effect);
            rules.push(kind);
        }
    }
    if config.bug == Some(crate::config::Bug::SyncNoop) {
        fault_fs.add_rule(OpKind::Sync, Predicate::always(), Effect::SkipSilently);
    }
    let fs =
        SimFs::new(fault_fs.clone(), config.latency, rng.gen(), Arc::clone(control), trace.clone());
    let panic_rate = faults.rate(FaultKind::Panic);
    let runtime = Arc::new(SimRuntime::new(fs, rng.gen(), config.buggify, panic_rate));
    (runtime, fault_fs, rules, switch)
}

fn record_metrics_at_crash(shared: &Shared) {
    if let Some(db) = lock(&shared.live_db).take() {
        let m = db.metrics();
        let mut stats = lock(&shared.stats);
        stats.rotations += m.memtable_rotations;
        stats.flushes += m.flushes;
        stats.compactions += m.compactions;
        stats.crashes_in_flush += u64::from(m.flushes_running > 0);
        stats.crashes_in_compaction += u64::from(m.compactions_running > 0);
        stats.blob_bytes_written += m.blob_bytes_written;
        stats.crashes_in_concurrent_jobs +=
            u64::from(m.flushes_running + m.compactions_running >= 2);
        record_tree(&mut stats, &m);
    }
}

/// Keeps the largest tree the scenario's processes had: its tables, and the levels holding them.
pub(crate) fn record_tree(stats: &mut Stats, m: &jadedb::Metrics) {
    let tables: u64 = m.level_files.iter().sum();
    let levels = m.level_files.iter().filter(|&&n| n > 0).count() as u64;
    stats.tables_max = stats.tables_max.max(tables);
    stats.levels_max = stats.levels_max.max(levels);
    stats.concurrent_jobs_max = stats.concurrent_jobs_max.max(m.background_jobs_running_max);
    stats.concurrent_compactions_max =
        stats.concurrent_compactions_max.max(m.compactions_running_max);
    stats.rate_limited_us += m.compaction_rate_limited_us;
}

/// Counts where the crash landed and which faults fired in the cycle.
#[allow(clippy::too_many_arguments)]
fn record_crash(
    shared: &Shared,
    config: &ScenarioConfig,
    index: usize,
    site: &CrashSite,
    control: &Control,
    runtime: &SimRuntime,
    fault_fs: &FaultFs<MemFs>,
    rules: &Rules,
    disk: &MemFs,
) {
    let mut stats = lock(&shared.stats);
    stats.crashes += 1;
    match config.cycles[index].crash_kind {
        CrashKind::PowerLoss => stats.power_losses += 1,
        CrashKind::ProcessCrash => stats.process_crashes += 1,
    }
    stats.aimed_crashes += u64::from(site.aimed);
    // A blob file whose bytes or name are not yet durable is being written.
    let blob_writing = disk.files(Path::new(&config.db_dir)).is_ok_and(|files| {
        files.iter().any(|f| {
            f.name.ends_with(".blob") && (f.durable_len < f.current_len || !f.durable_name)
        })
    });
    stats.crashes_in_blob_write += u64::from(blob_writing);
    let after_failure = matches!(config.cycles[index].point, CrashPoint::AfterFailure { .. });
    stats.crashes_after_failure += u64::from(site.aimed && after_failure);
    // Counted only where the crash was aimed there: a crash at a deadline comes after whatever
    // call happened to be last.
    if let Some(kind) = site.after_call.filter(|_| site.aimed).and_then(CallKind::of) {
        let i = CallKind::ALL.iter().position(|&k| k == kind).expect("a listed kind");
        stats.crashes_after_call[i] += 1;
    }
    for phase in &site.phases {
        if let Some(i) = Phase::ALL.iter().position(|p| p == phase) {
            stats.crashes_in_phase[i] += 1;
        }
    }
    for (kind, fired) in rules.iter().zip(fault_fs.fired_per_rule()) {
        stats.faults_fired[fault_index(*kind)] += fired;
    }
    stats.faults_fired[fault_index(FaultKind::Sync)] += disk.stats().failed_syncs;
    stats.faults_fired[fault_index(FaultKind::Panic)] += control.injected_panics();
    stats.points_fired += runtime.points_fired();
}

/// A panic of an engine task that no fault point injected is a bug in the engine, and so is
/// anything the file system saw it do that it must never do.
pub(crate) fn check_panics(shared: &Shared, control: &Control, trace: &Trace) {
    if let Some(msg) = control.task_panics().first() {
        let why = if msg.starts_with(jadedb::runtime::INJECTED_PANIC) {
            // A background job's panic must poison the database, not end its worker silently
            // (writers would wait for a flush that never comes).
            format!("an engine task died of a panic it should have caught: {msg}")
        } else {
            format!("an engine task panicked: {msg}")
        };
        shared.fail(trace, why);
    }
    if let Some(why) = control.violations().first() {
        shared.fail(trace, why.clone());
    }
}

/// The 99th percentile of `latencies_us`, if there are any.
fn p99(latencies_us: &[u64]) -> Option<Duration> {
    let mut sorted = latencies_us.to_vec();
    sorted.sort_unstable();
    let at = sorted.len().checked_sub(1)? * 99 / 100;
    Some(Duration::from_micros(sorted[at]))
}

/// The index of `kind` in [`FaultKind::ALL`], where the report counts it.
pub fn fault_index(kind: FaultKind) -> usize {
    FaultKind::ALL.iter().position(|&k| k == kind).expect("a listed kind")
}
