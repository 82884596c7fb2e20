//! Runs many seeds in parallel and reports, one fresh thread per scenario so nothing from one
//! seed leaks into the next (madsim keeps per-thread state; std's hasher seeds are per thread).
//!
//! Standard scenarios run first and scale scenarios (a small share of seeds, each hundreds of
//! times larger) after them, each batch timed on its own: the speed of the standard sweep is
//! then a figure that the scale share does not blur. Each scenario also has a wall-clock budget,
//! so one livelocked seed cannot stall a sweep.

use crate::config::{Bug, FaultKind, ScenarioConfig};
use crate::scenario::{self, Outcome, Stats};
use crate::sweep::{select, Only, Shard};
use crate::trace::Trace;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// The wall-clock time one scenario may take before it counts as livelocked. Standard
/// scenarios take milliseconds and scale scenarios about a second on the 2-core machine.
pub const SEED_BUDGET: Duration = Duration::from_secs(120);

/// How the failure of a scenario that ran past [`SEED_BUDGET`] begins.
const PAST_BUDGET: &str = "the scenario ran past its wall-clock budget";

/// The result of a sweep over seeds.
#[derive(Debug, Default)]
pub struct Summary {
    pub passed: u64,
    pub failed: u64,
    /// Failed seeds in ascending order.
    pub failed_seeds: Vec<u64>,
    pub totals: Stats,
    /// Scenarios with at least one crash, one recovery, a synced and an unsynced write.
    pub full_coverage: u64,
    pub with_rotation: u64,
    pub with_flush: u64,
    pub with_crash_in_flush: u64,
    pub with_compaction: u64,
    pub with_crash_in_compaction: u64,
    pub with_torn_write: u64,
    pub with_failed_writes: u64,
    pub with_clean_close: u64,
    pub with_power_loss: u64,
    pub with_process_crash: u64,
    /// Scenarios with a crash right after a call of each kind ([`crate::config::CallKind::ALL`]).
    pub with_crash_after_call: [u64; 6],
    /// Scenarios with a crash inside each phase ([`jadedb::runtime::Phase::ALL`]).
    pub with_crash_in_phase: [u64; 7],
    /// Scenarios in which each fault kind fired ([`FaultKind::ALL`]).
    pub with_fault: [u64; 17],
    pub with_torn_blocks: u64,
    pub with_dirs_out_of_order: u64,
    /// Standard scenarios, and the wall-clock seconds their batch took.
    pub standard: u64,
    pub standard_secs: f64,
    /// Scale scenarios, the seconds their batch took, and their operations and tables.
    pub scale: u64,
    pub scale_secs: f64,
    pub scale_writes: u64,
    pub scale_tables_flushed: u64,
    /// Per scale scenario: the fewest operations, the most tables at once, the most levels.
    pub scale_ops_min: u64,
    pub scale_tables_max: u64,
    pub scale_levels_max: u64,
    /// Scenarios that measured commit latency, and every latency they measured.
    pub latency_scenarios: u64,
    pub latencies_us: Vec<u64>,
}

/// Keeps panics that the engine's fault points inject (and the engine catches) out of the
/// output: a sweep meets thousands. Every other panic is reported as before.
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = jadedb::runtime::panic_message(info.payload());
            if !msg.starts_with(jadedb::runtime::INJECTED_PANIC) {
                report(info);
            }
        }));
    });
}

/// Runs one scenario on a fresh thread; a panic, or running past [`SEED_BUDGET`], is a failure.
pub fn run_one(seed: u64, bug: Option<Bug>, trace: Trace) -> Outcome {
    quiet_injected_panics();
    let t = trace.clone();
    let done = Arc::new((Mutex::new(None), Condvar::new()));
    let sender = Arc::clone(&done);
    #[allow(clippy::disallowed_methods)] // the fresh thread per scenario is the point
    let thread = std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || {
            let result = std::panic::catch_unwind(|| scenario::run(seed, bug, t));
            let (slot, ready) = &*sender;
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
            ready.notify_one();
        })
        .expect("start a scenario thread");
    let failed = |why: String| Outcome {
        seed,
        failure: Some(why),
        trace_hash: trace.hash(),
        stats: Stats::default(),
        recent: trace.recent(),
        config: ScenarioConfig::draw(seed, bug),
        commit_latencies_us: Vec::new(),
    };
    let (slot, ready) = &*done;
    let result = ready
        .wait_timeout_while(slot.lock().unwrap_or_else(PoisonError::into_inner), SEED_BUDGET, |r| {
            r.is_none()
        })
        .unwrap_or_else(PoisonError::into_inner)
        .0
        .take();
    match result {
        Some(result) => {
            // The thread has finished its scenario (its runtime and state are dropped); wait
            // for it to exit, so the next scenario's thread does not start beside it.
            let _ = thread.join();
            match result {
                Ok(outcome) => outcome,
                Err(panic) => {
                    failed(format!("panic: {}", jadedb::runtime::panic_message(panic.as_ref())))
                }
            }
        }
        // The thread is left behind (a thread cannot be killed); the sweep goes on.
        None => failed(format!("{PAST_BUDGET} of {SEED_BUDGET:?}: a livelock?")),
    }
}

/// The last events of a failed scenario that ran with a silent trace: its seed runs again with
/// a recording one. Not for a scenario that ran out of its wall-clock budget (the run again
/// would take as long; `cargo sim replay` prints its events as they happen).
pub fn events_of_failure(failed: &Outcome, bug: Option<Bug>) -> Vec<String> {
    let past_budget =
        |o: &Outcome| o.failure.as_deref().is_some_and(|w| w.starts_with(PAST_BUDGET));
    if past_budget(failed) {
        return vec!["(none kept: replay the seed to see them as they happen)".to_string()];
    }
    let again = run_one(failed.seed, bug, Trace::default());
    let again_past_budget = past_budget(&again);
    let mut recent = again.recent;
    if again_past_budget {
        recent.push(
            "(the seed run again to show these events ran past its wall-clock budget)".to_string(),
        );
    } else if again.failure != failed.failure {
        recent.push(format!(
            "(the seed run again to show these events ended otherwise: {:?}; the simulation \
             is not deterministic)",
            again.failure
        ));
    }
    recent
}

/// Runs `seeds` on `jobs` threads, standard scenarios first, then scale ones. Failures are
/// printed as they are found, unless `quiet`.
pub fn run_seeds(seeds: Range<u64>, jobs: usize, bug: Option<Bug>, quiet: bool) -> Summary {
    run_seeds_of(seeds, Only::All, Shard::WHOLE, jobs, bug, quiet)
}

/// Runs the scenarios of `seeds` in `shard` that `only` names, as [`run_seeds`] does.
pub fn run_seeds_of(
    seeds: Range<u64>,
    only: Only,
    shard: Shard,
    jobs: usize,
    bug: Option<Bug>,
    quiet: bool,
) -> Summary {
    let (standard, scale) = select(seeds, only, shard, bug);
    let summary = Arc::new(Mutex::new(Summary::default()));
    let standard_secs = run_batch(&standard, jobs, bug, quiet, &summary);
    let scale_secs = run_batch(&scale, jobs, bug, quiet, &summary);
    let mut summary = Arc::try_unwrap(summary)
        .expect("workers done")
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    summary.failed_seeds.sort_unstable();
    summary.standard_secs = standard_secs;
    summary.scale_secs = scale_secs;
    summary
}

/// Runs `seeds` on `jobs` threads; returns the wall-clock seconds it took.
fn run_batch(
    seeds: &[u64],
    jobs: usize,
    bug: Option<Bug>,
    quiet: bool,
    summary: &Arc<Mutex<Summary>>,
) -> f64 {
    #[allow(clippy::disallowed_methods)] // the sweep reports wall-clock speed
    let started = std::time::Instant::now();
    let seeds: Arc<[u64]> = seeds.into();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let (next, summary, seeds) = (Arc::clone(&next), Arc::clone(summary), seeds.clone());
            #[allow(clippy::disallowed_methods)]
            // worker threads of the sweep, outside any simulation
            std::thread::spawn(move || {
                while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let mut outcome = run_one(seed, bug, Trace::silent());
                    if outcome.failure.is_some() && !quiet {
                        // The run again counts in the batch's time: failures are rare, and a
                        // sweep that finds one is not measuring speed.
                        outcome.recent = events_of_failure(&outcome, bug);
                        print_failure(&outcome);
                    }
                    if std::env::var_os("JADEDB_SIM_SHOW_UNCOVERED").is_some()
                        && !covered(&outcome.stats)
                    {
                        println!("uncovered seed {}: {:?}", outcome.seed, outcome.stats);
                    }
                    tally(&mut summary.lock().unwrap_or_else(PoisonError::into_inner), &outcome);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("sweep worker");
    }
    started.elapsed().as_secs_f64()
}

fn tally(s: &mut Summary, o: &Outcome) {
    if o.failure.is_some() {
        s.failed += 1;
        s.failed_seeds.push(o.seed);
    } else {
        s.passed += 1;
    }
    let st = &o.stats;
    add_stats(&mut s.totals, st);
    let unsynced = st.writes_acked > st.synced_acked;
    s.full_coverage +=
        u64::from(st.crashes > 0 && st.recoveries > 1 && st.synced_acked > 0 && unsynced);
    s.with_rotation += u64::from(st.rotations > 0);
    s.with_flush += u64::from(st.flushes > 0);
    s.with_crash_in_flush += u64::from(st.crashes_in_flush > 0);
    s.with_compaction += u64::from(st.compactions > 0);
    s.with_crash_in_compaction += u64::from(st.crashes_in_compaction > 0);
    s.with_torn_write += u64::from(st.torn_writes > 0);
    s.with_failed_writes += u64::from(st.writes_failed > 0);
    s.with_clean_close += u64::from(st.clean_closes > 0);
    s.with_power_loss += u64::from(st.power_losses > 0);
    s.with_process_crash += u64::from(st.process_crashes > 0);
    count_nonzero(&mut s.with_crash_after_call, &st.crashes_after_call);
    count_nonzero(&mut s.with_crash_in_phase, &st.crashes_in_phase);
    count_nonzero(&mut s.with_fault, &st.faults_fired);
    s.with_torn_blocks += u64::from(st.torn_blocks > 0);
    s.with_dirs_out_of_order += u64::from(st.dir_changes_out_of_order > 0);
    if o.config.scale {
        s.scale_ops_min = if s.scale == 0 { st.ops } else { s.scale_ops_min.min(st.ops) };
        s.scale += 1;
        s.scale_writes += st.writes_acked + st.writes_failed;
        s.scale_tables_flushed += st.flushes;
        s.scale_tables_max = s.scale_tables_max.max(st.tables_max);
        s.scale_levels_max = s.scale_levels_max.max(st.levels_max);
    } else {
        s.standard += 1;
    }
    if o.config.latency != crate::config::Latency::Random {
        s.latency_scenarios += 1;
        s.latencies_us.extend(&o.commit_latencies_us);
    }
}

/// Adds one scenario's counts to the totals.
fn add_stats(t: &mut Stats, st: &Stats) {
    t.crashes += st.crashes;
    t.recoveries += st.recoveries;
    t.writes_acked += st.writes_acked;
    t.synced_acked += st.synced_acked;
    t.writes_failed += st.writes_failed;
    t.reads += st.reads;
    t.clean_closes += st.clean_closes;
    t.rotations += st.rotations;
    t.torn_writes += st.torn_writes;
    t.flushes += st.flushes;
    t.crashes_in_flush += st.crashes_in_flush;
    t.compactions += st.compactions;
    t.crashes_in_compaction += st.crashes_in_compaction;
    t.compact_ranges += st.compact_ranges;
    t.user_flushes += st.user_flushes;
    t.snapshot_reads += st.snapshot_reads;
    t.scans += st.scans;
    t.walks += st.walks;
    t.power_losses += st.power_losses;
    t.process_crashes += st.process_crashes;
    t.aimed_crashes += st.aimed_crashes;
    t.torn_blocks += st.torn_blocks;
    t.dir_changes_out_of_order += st.dir_changes_out_of_order;
    t.refusals_after_damage += st.refusals_after_damage;
    t.acks_checked_durable += st.acks_checked_durable;
    t.writes_after_failure += st.writes_after_failure;
    t.points_fired += st.points_fired;
    t.ops += st.ops;
    add_all(&mut t.crashes_after_call, &st.crashes_after_call);
    add_all(&mut t.crashes_in_phase, &st.crashes_in_phase);
    add_all(&mut t.faults_fired, &st.faults_fired);
}

fn add_all(into: &mut [u64], from: &[u64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

fn count_nonzero(into: &mut [u64], from: &[u64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += u64::from(*b > 0);
    }
}

/// Whether a scenario crashed with synced and unsynced writes acknowledged and recovered.
fn covered(st: &Stats) -> bool {
    let unsynced = st.writes_acked > st.synced_acked;
    st.crashes > 0 && st.recoveries > 1 && st.synced_acked > 0 && unsynced
}

/// The command that replays `seed`.
pub fn replay_command(seed: u64, bug: Option<Bug>) -> String {
    match bug {
        Some(bug) => format!("cargo sim replay --seed {seed} --bug {bug}"),
        None => format!("cargo sim replay --seed {seed}"),
    }
}

/// Prints what a new user needs to chase a failure.
pub fn print_failure(o: &Outcome) {
    let why = o.failure.as_deref().unwrap_or("none");
    println!("FAILED seed={} : {why}", o.seed);
    println!("  options: {:?}", o.config);
    println!("  last events:");
    for e in &o.recent {
        println!("    {e}");
    }
    println!("  reproduce with seed={}: {}", o.seed, replay_command(o.seed, o.config.bug));
}

/// The report lines that say how often each crash kind, crash point and fault happened.
pub fn coverage_lines(s: &Summary, count: u64) -> Vec<String> {
    use crate::config::CallKind;
    use jadedb::runtime::Phase;
    let pct = |n: u64| format!("{n} ({:.1}%)", 100.0 * n as f64 / count.max(1) as f64);
    let calls: Vec<String> = CallKind::ALL
        .iter()
        .zip(&s.with_crash_after_call)
        .map(|(k, &n)| format!("{} {}", k.name(), pct(n)))
        .collect();
    let phases: Vec<String> = Phase::ALL
        .iter()
        .zip(&s.with_crash_in_phase)
        .map(|(p, &n)| format!("{} {}", p.name(), pct(n)))
        .collect();
    let faults: Vec<String> = FaultKind::ALL
        .iter()
        .zip(&s.with_fault)
        .map(|(k, &n)| format!("{} {}", k.name(), pct(n)))
        .collect();
    let t = &s.totals;
    vec![
        format!(
            "crash kinds: power loss in {} scenarios, process crash in {}; {} of {} crashes came \
             at their aimed point",
            pct(s.with_power_loss),
            pct(s.with_process_crash),
            t.aimed_crashes,
            t.crashes
        ),
        format!("crash points: right after {}; inside {}", calls.join(", "), phases.join(", ")),
        format!(
            "faults (scenarios where each fired): {}; sector-torn blocks {}, directory changes \
             out of order {}; {} opens refused after damage at rest",
            faults.join(", "),
            pct(s.with_torn_blocks),
            pct(s.with_dirs_out_of_order),
            t.refusals_after_damage
        ),
        format!(
            "checks: {} synced acknowledgements found durable at that instant, {} writes issued \
             after a failed write or sync (none may be acknowledged), {} iterator walks, {} \
             in-code fault points fired",
            t.acks_checked_durable, t.writes_after_failure, t.walks, t.points_fired
        ),
    ]
}

/// The line reporting commit latency of the scenarios that fix the fsync latency.
pub fn latency_line(s: &Summary) -> Option<String> {
    if s.latencies_us.is_empty() {
        return None;
    }
    let mut sorted = s.latencies_us.clone();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    Some(format!(
        "latency: {} scenarios with a fixed {} ms fsync: synced commit p50 {:.1} ms, p99 {:.1} \
         ms, worst {:.1} ms over {} commits (bound: p99 at most {} ms in every scenario)",
        s.latency_scenarios,
        crate::config::FIXED_SYNC_MS,
        at(0.5),
        at(0.99),
        at(1.0),
        sorted.len(),
        scenario::LATENCY_P99_BOUND.as_millis()
    ))
}
