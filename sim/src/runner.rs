//! Runs many seeds in parallel and reports, one fresh thread per scenario so nothing from one
//! seed leaks into the next (madsim keeps per-thread state; std's hasher seeds are per thread).
//!
//! Standard scenarios run first and scale scenarios (a small share of seeds, each hundreds of
//! times larger) after them, each batch timed on its own: the speed of the standard sweep is
//! then a figure that the scale share does not blur. Each scenario also has a wall-clock budget,
//! so one livelocked seed cannot stall a sweep.

use crate::config::{Bug, ScenarioConfig};
use crate::progress::{self, Progress};
use crate::report::{replay_command, shrink_command};
use crate::scenario::{self, Outcome, Stats};
use crate::summary::{Failure, Summary};
use crate::sweep::{select, Only, Shard};
use crate::trace::Trace;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The wall-clock time one scenario may take before it counts as livelocked. Standard
/// scenarios take milliseconds and scale scenarios about a second on the 2-core machine.
pub const SEED_BUDGET: Duration = Duration::from_secs(120);

/// How the failure of a scenario that ran past [`SEED_BUDGET`] begins.
const PAST_BUDGET: &str = "the scenario ran past its wall-clock budget";

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
    run_one_within(seed, bug, trace, SEED_BUDGET)
}

/// Runs one scenario on a fresh thread; a panic, or running past `budget`, is a failure.
pub fn run_one_within(seed: u64, bug: Option<Bug>, trace: Trace, budget: Duration) -> Outcome {
    run_config_within(ScenarioConfig::draw(seed, bug), trace, budget)
}

/// Runs the scenario `config` describes on a fresh thread, as [`run_one_within`] does.
pub fn run_config_within(config: ScenarioConfig, trace: Trace, budget: Duration) -> Outcome {
    quiet_injected_panics();
    let seed = config.seed;
    let t = trace.clone();
    let done = Arc::new((Mutex::new(None), Condvar::new()));
    let sender = Arc::clone(&done);
    let config = Arc::new(config);
    let mine = Arc::clone(&config);
    #[allow(clippy::disallowed_methods)] // the fresh thread per scenario is the point
    let thread = std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || {
            let result = std::panic::catch_unwind(|| scenario::run_config(mine, t));
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
        config: Arc::clone(&config),
        commit_latencies_us: Vec::new(),
    };
    let (slot, ready) = &*done;
    let result = ready
        .wait_timeout_while(slot.lock().unwrap_or_else(PoisonError::into_inner), budget, |r| {
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
        None => failed(format!("{PAST_BUDGET} of {budget:?}: a livelock?")),
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

/// How a sweep runs its seeds.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Worker threads, each running one scenario at a time.
    pub jobs: usize,
    /// The planted bug, if any.
    pub bug: Option<Bug>,
    /// Print nothing while running (no failures as found, no progress).
    pub quiet: bool,
    /// Keep a progress line on standard error (for a terminal).
    pub progress: bool,
    /// The wall-clock time the whole sweep may take: once it has passed no new seed starts.
    pub time_budget: Option<Duration>,
    /// The wall-clock time one scenario may take before it fails as livelocked.
    pub seed_budget: Duration,
}

impl SweepOptions {
    /// `jobs` workers, failures printed as found, no progress line, no time budget.
    pub fn new(jobs: usize, bug: Option<Bug>) -> SweepOptions {
        SweepOptions {
            jobs,
            bug,
            quiet: false,
            progress: false,
            time_budget: None,
            seed_budget: SEED_BUDGET,
        }
    }
}

/// Runs `seeds` on `jobs` threads, standard scenarios first, then scale ones. Failures are
/// printed as they are found, unless `quiet`.
pub fn run_seeds(seeds: Range<u64>, jobs: usize, bug: Option<Bug>, quiet: bool) -> Summary {
    let options = SweepOptions { quiet, ..SweepOptions::new(jobs, bug) };
    run_seeds_of(seeds, Only::All, Shard::WHOLE, &options)
}

/// Runs the scenarios of `seeds` in `shard` that `only` names: the standard ones first, then
/// the scale ones, each batch timed on its own.
///
/// With a time budget, the standard batch may take at most half of it when scale seeds follow
/// (they take nine tenths of an unbounded sweep's time, so a budget spent in seed order would
/// hardly ever reach one) and the scale batch the rest. Each batch starts its seeds in
/// ascending order and stops starting them when its time is up, so the seeds run are the
/// lowest of each class.
pub fn run_seeds_of(
    seeds: Range<u64>,
    only: Only,
    shard: Shard,
    options: &SweepOptions,
) -> Summary {
    let (standard, scale) = select(seeds, only, shard);
    #[allow(clippy::disallowed_methods)] // the sweep's wall-clock budget
    let started = Instant::now();
    let deadline = options.time_budget.map(|b| started + b);
    let standard_deadline = match options.time_budget {
        Some(budget) if !scale.is_empty() => Some(started + budget / 2),
        _ => deadline,
    };
    let progress =
        (options.progress && !options.quiet).then(|| Progress::start(&standard, &scale, deadline));
    let mut summary = Summary {
        standard_selected: standard.len() as u64,
        scale_selected: scale.len() as u64,
        ..Summary::default()
    };
    let (s, secs) = run_batch(&standard, options, standard_deadline, progress.as_ref());
    summary.absorb(&s);
    summary.standard_secs = secs;
    if let Some(p) = &progress {
        p.scale_started();
    }
    let (s, secs) = run_batch(&scale, options, deadline, progress.as_ref());
    summary.absorb(&s);
    summary.scale_secs = secs;
    if let Some(p) = progress {
        p.finish();
    }
    summary
}

/// Runs `seeds` on the sweep's workers, each seed once, in ascending order until `deadline`;
/// returns what they found and the wall-clock seconds it took.
fn run_batch(
    seeds: &[u64],
    options: &SweepOptions,
    deadline: Option<Instant>,
    progress: Option<&Progress>,
) -> (Summary, f64) {
    #[allow(clippy::disallowed_methods)] // the sweep reports wall-clock speed
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let show_uncovered = std::env::var_os("JADEDB_SIM_SHOW_UNCOVERED").is_some();
    let mut summary = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..options.jobs.max(1))
            .map(|_| {
                let next = &next;
                // Each worker keeps its own summary: no lock between scenarios.
                scope.spawn(move || {
                    let mut mine = Summary::default();
                    loop {
                        // The deadline is read before a seed is taken, so that every seed
                        // below the highest one taken runs.
                        #[allow(clippy::disallowed_methods)] // the sweep's wall-clock budget
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            break;
                        }
                        let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        let mut outcome =
                            run_one_within(seed, options.bug, Trace::silent(), options.seed_budget);
                        if outcome.failure.is_some() && !options.quiet {
                            // The run again counts in the batch's time: failures are rare, and
                            // a sweep that finds one is not measuring speed.
                            outcome.recent = events_of_failure(&outcome, options.bug);
                            let _out = progress::hold_output();
                            print_failure(&outcome);
                        }
                        if show_uncovered && !covered(&outcome.stats) {
                            let _out = progress::hold_output();
                            println!("uncovered seed {}: {:?}", outcome.seed, outcome.stats);
                        }
                        tally(&mut mine, &outcome);
                        if let Some(p) = progress {
                            p.done(outcome.failure.is_some());
                        }
                    }
                    mine
                })
            })
            .collect();
        let mut summary = Summary::default();
        for w in workers {
            summary.absorb(&w.join().expect("sweep worker"));
        }
        summary
    });
    // Seeds are taken in order and every seed taken runs: those run are the lowest ones.
    let ran = next.load(Ordering::Relaxed).min(seeds.len());
    let through = ran.checked_sub(1).map(|i| seeds[i]);
    if summary.scale > 0 {
        summary.scale_through = through;
    } else {
        summary.standard_through = through;
    }
    (summary, started.elapsed().as_secs_f64())
}

fn tally(s: &mut Summary, o: &Outcome) {
    if let Some(why) = &o.failure {
        s.failed += 1;
        s.failures.push(Failure { seed: o.seed, reason: first_line(why) });
    } else {
        s.passed += 1;
    }
    let st = &o.stats;
    s.totals.add(st);
    let unsynced = st.writes_acked > st.synced_acked;
    s.full_coverage +=
        u64::from(st.crashes > 0 && st.recoveries > 1 && st.synced_acked > 0 && unsynced);
    s.with_rotation += u64::from(st.rotations > 0);
    s.with_flush += u64::from(st.flushes > 0);
    s.with_crash_in_flush += u64::from(st.crashes_in_flush > 0);
    s.with_compaction += u64::from(st.compactions > 0);
    s.with_crash_in_compaction += u64::from(st.crashes_in_compaction > 0);
    s.with_concurrent_jobs += u64::from(st.concurrent_jobs_max >= 2);
    s.with_concurrent_compactions += u64::from(st.concurrent_compactions_max >= 2);
    s.with_crash_in_concurrent_jobs += u64::from(st.crashes_in_concurrent_jobs > 0);
    s.with_rate_limit_wait += u64::from(st.rate_limited_us > 0);
    s.with_crash_after_failure += u64::from(st.crashes_after_failure > 0);
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
    s.with_blob_files += u64::from(st.blob_bytes_written > 0);
    s.with_crash_in_blob_write += u64::from(st.crashes_in_blob_write > 0);
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
        for &us in &o.commit_latencies_us {
            *s.latency_us_counts.entry(us).or_default() += 1;
        }
    }
}

/// The first line of a failure's reason, at most a few hundred bytes, for summaries.
fn first_line(why: &str) -> String {
    let line = why.lines().next().unwrap_or("");
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
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

/// Prints what a new user needs to chase a failure of a seed's scenario.
pub fn print_failure(o: &Outcome) {
    let replay = replay_command(o.seed, o.config.bug);
    let shrink = shrink_command(o.seed, o.config.bug);
    print_failure_with(o, &replay, Some(&shrink));
}

/// Prints a failure, with the command that replays it (and the one that shrinks it, if any).
pub fn print_failure_with(o: &Outcome, replay: &str, shrink: Option<&str>) {
    let why = o.failure.as_deref().unwrap_or("none");
    println!("FAILED seed={} : {why}", o.seed);
    println!("  options: {:?}", o.config);
    println!("  last events:");
    for e in &o.recent {
        println!("    {e}");
    }
    println!("  reproduce with seed={}: {replay}", o.seed);
    if let Some(shrink) = shrink {
        println!("  shrink it to a small scenario file: {shrink}");
    }
}
