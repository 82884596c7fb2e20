//! Shrinking a failing scenario to a small one that fails the same check: fewer cycles,
//! clients and operations, smaller batches and values, fewer faults, plainer options.
//!
//! A scenario is its configuration (`crate::plan`), so shrinking edits the configuration and
//! runs it again: a candidate is kept if it still fails, and fails the same check
//! (`scenario_file::check_of`). Passes go from coarse to fine (whole cycles, whole clients,
//! halves of a client's operations down to single ones, then each operation's details, faults
//! and options) and repeat until a round changes nothing or the run budget is spent. The seed
//! stays: it drives what the scenario leaves to chance, so each candidate replays exactly.

use crate::config::{CrashPoint, ScenarioConfig, TableConfig};
use crate::plan::{Action, ClientOp, Write, WriteOp};
use crate::runner::run_config_within;
use crate::scenario_file::check_of;
use crate::trace::Trace;
use std::time::Duration;

/// How long one candidate may run: far above a standard scenario's milliseconds.
const CANDIDATE_BUDGET: Duration = Duration::from_secs(30);

/// A shrunk scenario.
#[derive(Debug)]
pub struct Shrunk {
    pub config: ScenarioConfig,
    /// The check it fails, and the failure's full reason.
    pub check: String,
    pub reason: String,
    /// Scenarios run while shrinking, and the operations before and after.
    pub runs: u64,
    pub ops_before: usize,
    pub ops_after: usize,
}

struct Shrinker<'a> {
    best: ScenarioConfig,
    check: String,
    reason: String,
    runs: u64,
    max_runs: u64,
    progress: &'a mut dyn FnMut(&str),
}

/// Shrinks `config`, which must fail, running at most `max_runs` candidates; `progress` hears
/// of every step kept.
pub fn shrink(
    config: ScenarioConfig,
    max_runs: u64,
    progress: &mut dyn FnMut(&str),
) -> Result<Shrunk, String> {
    let first = run_config_within(config.clone(), Trace::silent(), CANDIDATE_BUDGET);
    let Some(reason) = first.failure else {
        return Err("the scenario passes: there is no failure to shrink".to_string());
    };
    let ops_before = config.ops();
    let mut s =
        Shrinker { check: check_of(&reason), best: config, reason, runs: 1, max_runs, progress };
    loop {
        let before = s.best.clone();
        s.cycles();
        s.clients();
        s.operations();
        s.final_writes();
        s.details();
        s.faults();
        s.options();
        if s.best == before || s.runs >= s.max_runs {
            break;
        }
    }
    let ops_after = s.best.ops();
    Ok(Shrunk {
        config: s.best,
        check: s.check,
        reason: s.reason,
        runs: s.runs,
        ops_before,
        ops_after,
    })
}

impl Shrinker<'_> {
    /// Runs `candidate`; keeps it if it fails the same check. Returns whether it was kept.
    fn try_candidate(&mut self, candidate: ScenarioConfig, what: &str) -> bool {
        if self.runs >= self.max_runs || candidate == self.best {
            return false;
        }
        self.runs += 1;
        let outcome = run_config_within(candidate.clone(), Trace::silent(), CANDIDATE_BUDGET);
        match outcome.failure {
            Some(reason) if check_of(&reason) == self.check => {
                let line =
                    format!("shrink: {what}: {} operations (run {})", candidate.ops(), self.runs);
                (self.progress)(&line);
                self.best = candidate;
                self.reason = reason;
                true
            }
            _ => false,
        }
    }

    /// Tries `edit` on a copy of the best scenario (if it applies) and keeps what still fails.
    fn attempt(&mut self, what: &str, edit: impl FnOnce(&mut ScenarioConfig) -> bool) -> bool {
        let mut candidate = self.best.clone();
        edit(&mut candidate) && self.try_candidate(candidate, what)
    }

    fn cycles(&mut self) {
        let mut index = self.best.cycles.len();
        while index > 0 {
            index -= 1;
            if self.best.cycles.len() > 1 {
                self.attempt("dropped a cycle", |c| {
                    c.cycles.remove(index);
                    true
                });
            }
        }
    }

    fn clients(&mut self) {
        for cycle in 0..self.best.cycles.len() {
            let mut client = self.best.cycles[cycle].clients.0.len();
            while client > 0 {
                client -= 1;
                self.attempt("dropped a client", |c| {
                    c.cycles[cycle].clients.0.remove(client);
                    true
                });
            }
        }
    }

    /// Each client's operations, in halves, quarters, ... down to single ones.
    fn operations(&mut self) {
        for cycle in 0..self.best.cycles.len() {
            for client in 0..self.best.cycles[cycle].clients.0.len() {
                let ops = |c: &ScenarioConfig| c.cycles[cycle].clients.0[client].ops.len();
                let mut chunk = ops(&self.best).div_ceil(2);
                while chunk > 0 {
                    let mut start = ops(&self.best).saturating_sub(1) / chunk * chunk;
                    loop {
                        self.attempt("dropped operations", |c| {
                            let list = &mut c.cycles[cycle].clients.0[client].ops;
                            if start >= list.len() {
                                return false;
                            }
                            list.drain(start..(start + chunk).min(list.len()));
                            true
                        });
                        if start == 0 {
                            break;
                        }
                        start -= chunk;
                    }
                    chunk /= 2;
                }
                self.attempt("dropped a client's last read", |c| {
                    c.cycles[cycle].clients.0[client].end.take().is_some()
                });
            }
        }
    }

    fn final_writes(&mut self) {
        for after in [true, false] {
            let mut index = self.list(after).len();
            while index > 0 {
                index -= 1;
                self.attempt("dropped a final write", |c| {
                    let list =
                        if after { &mut c.final_plan.after } else { &mut c.final_plan.before };
                    list.remove(index);
                    true
                });
            }
        }
    }

    fn list(&self, after: bool) -> &[Write] {
        if after {
            &self.best.final_plan.after
        } else {
            &self.best.final_plan.before
        }
    }

    /// Each operation made plainer: no pause, smaller batches, one-byte values, fewer iterator
    /// steps, no flush before a last read.
    fn details(&mut self) {
        for cycle in 0..self.best.cycles.len() {
            for client in 0..self.best.cycles[cycle].clients.0.len() {
                let count = self.best.cycles[cycle].clients.0[client].ops.len();
                for op in 0..count {
                    self.simplify_op(cycle, client, op);
                }
                self.attempt("no flush before a last read", |c| {
                    match &mut c.cycles[cycle].clients.0[client].end {
                        Some(end) if end.flush_first => {
                            end.flush_first = false;
                            true
                        }
                        _ => false,
                    }
                });
            }
        }
        for after in [true, false] {
            for index in 0..self.list(after).len() {
                self.simplify_write(WriteAt::Final { after, index });
            }
        }
    }

    fn simplify_op(&mut self, cycle: usize, client: usize, op: usize) {
        let at = (cycle, client, op);
        self.attempt("no pause", |c| std::mem::take(&mut op_at(c, at).pause_ms) > 0);
        match self.best.cycles[cycle].clients.0[client].ops[op].action.clone() {
            Action::Write(_) => self.simplify_write(WriteAt::Client(at)),
            Action::Walk { steps, .. } => {
                let mut index = steps.len();
                while index > 0 {
                    index -= 1;
                    self.attempt("fewer iterator steps", |c| match &mut op_at(c, at).action {
                        Action::Walk { steps, .. } if steps.len() > 1 => {
                            steps.remove(index);
                            true
                        }
                        _ => false,
                    });
                }
            }
            _ => {}
        }
    }

    fn simplify_write(&mut self, at: WriteAt) {
        let get = |c: &mut ScenarioConfig| -> usize { write_at(c, at).ops.len() };
        let len = get(&mut self.best.clone());
        let mut index = len;
        while index > 0 {
            index -= 1;
            self.attempt("a smaller batch", |c| {
                let w = write_at(c, at);
                if w.ops.len() < 2 {
                    return false;
                }
                w.ops.remove(index);
                true
            });
        }
        let len = get(&mut self.best.clone());
        for index in 0..len {
            self.attempt("a one-byte value", |c| match &mut write_at(c, at).ops[index] {
                WriteOp::Put { len, .. } if *len > 1 => {
                    *len = 1;
                    true
                }
                _ => false,
            });
        }
    }

    /// Each fault kind of each cycle, and faults from boot.
    fn faults(&mut self) {
        for cycle in 0..self.best.cycles.len() {
            let kinds: Vec<_> = self.best.cycles[cycle].faults.kinds().collect();
            for kind in kinds {
                self.attempt("dropped a fault", |c| {
                    c.cycles[cycle].faults = c.cycles[cycle].faults.without(kind);
                    true
                });
            }
            self.attempt("faults only once open", |c| {
                std::mem::take(&mut c.cycles[cycle].faults_during_recovery)
            });
        }
        self.attempt("no in-code fault points", |c| c.buggify.take().is_some());
    }

    /// Plainer options, one at a time: a plain crash model, no commit window, ordinary table
    /// options, a crash at the deadline, no clean close.
    fn options(&mut self) {
        self.attempt("whole sectors", |c| std::mem::take(&mut c.crash_model.tear_sectors));
        self.attempt("ordered directories", |c| std::mem::take(&mut c.crash_model.unordered_dirs));
        self.attempt("no commit window", |c| std::mem::take(&mut c.commit_window_us) > 0);
        self.attempt("no WAL preallocation", |c| std::mem::take(&mut c.wal_preallocate_bytes) > 0);
        self.attempt("a shallow directory", |c| {
            c.db_dir != "/db" && {
                c.db_dir = "/db".to_string();
                true
            }
        });
        let plain = TableConfig {
            memtables_max: 2,
            block_bytes: 4096,
            bloom_bits_per_key: 10,
            block_cache_bytes: 1 << 20,
            open_tables_max: 1000,
            manifest_bytes_max: 64 << 20,
            l0_compaction_files: 4,
            l0_stall_files: (20, 36),
            level1_bytes_max: 64 << 20,
            target_file_bytes: 8 << 20,
            background_flushes: 1,
            background_compactions: 1,
            compaction_bytes_per_sec: 0,
            wal_bytes_per_sync: 0,
            memory_budget: 0,
            wal_buffer_bytes: 0,
            min_blob_size: None,
        };
        for cycle in 0..self.best.cycles.len() {
            self.attempt("a crash at the deadline", |c| {
                let point = &mut c.cycles[cycle].point;
                *point != CrashPoint::Time && {
                    *point = CrashPoint::Time;
                    true
                }
            });
            self.attempt("no clean close", |c| std::mem::take(&mut c.cycles[cycle].close));
            type Field = fn(&mut TableConfig, &TableConfig) -> bool;
            let fields: [Field; 17] = [
                |t, p| set(&mut t.memtables_max, p.memtables_max),
                |t, p| set(&mut t.block_bytes, p.block_bytes),
                |t, p| set(&mut t.bloom_bits_per_key, p.bloom_bits_per_key),
                |t, p| set(&mut t.block_cache_bytes, p.block_cache_bytes),
                |t, p| set(&mut t.open_tables_max, p.open_tables_max),
                |t, p| set(&mut t.manifest_bytes_max, p.manifest_bytes_max),
                |t, p| set(&mut t.l0_compaction_files, p.l0_compaction_files),
                |t, p| set(&mut t.l0_stall_files, p.l0_stall_files),
                |t, p| set(&mut t.level1_bytes_max, p.level1_bytes_max),
                |t, p| set(&mut t.target_file_bytes, p.target_file_bytes),
                |t, p| set(&mut t.background_flushes, p.background_flushes),
                |t, p| set(&mut t.background_compactions, p.background_compactions),
                |t, p| set(&mut t.compaction_bytes_per_sec, p.compaction_bytes_per_sec),
                |t, p| set(&mut t.wal_bytes_per_sync, p.wal_bytes_per_sync),
                |t, p| set(&mut t.memory_budget, p.memory_budget),
                |t, p| set(&mut t.wal_buffer_bytes, p.wal_buffer_bytes),
                |t, p| set(&mut t.min_blob_size, p.min_blob_size),
            ];
            for field in fields {
                self.attempt("an ordinary table option", |c| {
                    field(&mut c.cycles[cycle].tables, &plain)
                });
            }
        }
    }
}

/// Where a write is in a scenario: an operation of a client, or a write of the final process.
#[derive(Clone, Copy, Debug)]
enum WriteAt {
    Client((usize, usize, usize)),
    Final { after: bool, index: usize },
}

/// Operation `op` of client `client` of cycle `cycle`.
fn op_at(c: &mut ScenarioConfig, (cycle, client, op): (usize, usize, usize)) -> &mut ClientOp {
    &mut c.cycles[cycle].clients.0[client].ops[op]
}

fn write_at(c: &mut ScenarioConfig, at: WriteAt) -> &mut Write {
    match at {
        WriteAt::Client(at) => match &mut op_at(c, at).action {
            Action::Write(w) => w,
            other => unreachable!("shrinking a write that is {other:?}"),
        },
        WriteAt::Final { after: true, index } => &mut c.final_plan.after[index],
        WriteAt::Final { after: false, index } => &mut c.final_plan.before[index],
    }
}

/// Sets `field` to `value`; says whether that changed it.
fn set<T: PartialEq>(field: &mut T, value: T) -> bool {
    *field != value && {
        *field = value;
        true
    }
}
