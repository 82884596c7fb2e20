//! What a scenario's clients do, as data: every operation of every client of every cycle, and
//! the final process's writes, drawn from the seed up front (`ScenarioConfig::draw`) rather
//! than while the scenario runs. A scenario is then its configuration alone, which a scenario
//! file holds (`crate::scenario_file`), the shrinker cuts down (`crate::shrink`), and a replay
//! runs as it stands, whatever the generator draws for that seed later on.
//!
//! Keys are numbers (`process::key_name` names them); values are drawn as lengths, and filled at
//! run time with the scenario's next unique value number.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One put or delete of a write batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOp {
    Put { key: u32, len: u32 },
    Delete { key: u32 },
}

impl WriteOp {
    pub fn key(self) -> u32 {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        }
    }
}

/// A write: one batch, synced or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    pub ops: Vec<WriteOp>,
    pub sync: bool,
}

/// Where an iterator step seeks: a key, or just past it (the key with a byte appended).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub key: u32,
    pub between: bool,
}

/// One step of an iterator walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    First,
    Last,
    Seek(Target),
    SeekForPrev(Target),
    Next,
    Prev,
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Write(Write),
    Get {
        key: u32,
    },
    /// The keys `[from, to)`, by `scan` or by an iterator walked backward.
    Scan {
        from: u32,
        to: u32,
        by_iterator: bool,
    },
    /// An iterator over `[lower, upper)` (unbounded where absent), latest or at the client's
    /// snapshot (skipped if it has none), taking these steps.
    Walk {
        lower: Option<u32>,
        upper: Option<u32>,
        steps: Vec<Step>,
        at_snapshot: bool,
        /// Virtual milliseconds the walk holds its iterator between steps (a slow reader):
        /// flushes and compactions go on meanwhile, and every file the iterator's version names
        /// must stay readable. Absent in scenario files written before it: none.
        #[serde(default, skip_serializing_if = "is_zero")]
        pause_ms: u64,
    },
    /// The keys `[from, to)` read at the client's snapshot (skipped if it has none), walked
    /// forward or backward; one key is also read with `get`.
    SnapshotRead {
        from: u32,
        to: u32,
        reverse: bool,
    },
    /// Takes a snapshot (replacing the client's last one).
    TakeSnapshot,
    /// `compact_range` over `[from, to]`.
    CompactRange {
        from: u32,
        to: u32,
    },
    Flush,
}

/// A client operation, and the virtual milliseconds the client pauses after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientOp {
    pub action: Action,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pause_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a client does once its operations are done, if it holds a snapshot: read every key at
/// it, after a flush and a full compaction if `flush_first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndRead {
    pub flush_first: bool,
    pub reverse: bool,
}

/// One client's operations in one cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientPlan {
    pub ops: Vec<ClientOp>,
    #[serde(default)]
    pub end: Option<EndRead>,
}

/// The clients of one cycle. Its `Debug` says only how many operations they hold, so that a
/// failure's report prints a scenario's options, not its thousands of operations.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Clients(pub Vec<ClientPlan>);

impl fmt::Debug for Clients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops: usize = self.0.iter().map(|c| c.ops.len()).sum();
        write!(f, "{} clients, {ops} operations", self.0.len())
    }
}

/// The final process's work with faults off: `before` writes, a snapshot, `after` writes, a
/// flush, a full compaction, a read of every key at the snapshot, a clean close.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalPlan {
    pub before: Vec<Write>,
    pub after: Vec<Write>,
    pub reverse: bool,
}

impl fmt::Debug for FinalPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} + {} writes", self.before.len(), self.after.len())
    }
}

/// The operations that count toward a scenario's size: client operations (and their end reads)
/// and the final process's writes and its flush, compaction and read.
pub fn count_ops(cycles: &[&Clients], fin: &FinalPlan) -> usize {
    let clients: usize = cycles
        .iter()
        .flat_map(|c| &c.0)
        .map(|c| c.ops.len() + c.end.map_or(0, |e| 1 + 2 * usize::from(e.flush_first)))
        .sum();
    clients + fin.before.len() + fin.after.len() + 3
}

/// How a scenario draws its writes and reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mix {
    pub keys: usize,
    pub value_bytes_max: usize,
    /// Out of 1,000 values, how many may be as large as `value_bytes_max`; the rest stay
    /// under 200 bytes. 1,000 means every value is drawn up to the maximum.
    pub large_values_per_mille: u32,
    pub sync_percent: u32,
    pub read_percent: u32,
    /// Of client operations, the percentage that are `compact_range` or `flush` calls.
    pub compact_percent: u32,
    pub delete_percent: u32,
    pub batch_percent: u32,
    pub batch_ops_max: usize,
}

/// The name of key number `k`.
pub fn key_name(k: usize) -> Vec<u8> {
    format!("key{k:04}").into_bytes()
}

fn key(rng: &mut ChaCha8Rng, keys: usize) -> u32 {
    rng.gen_range(0..keys) as u32
}

impl Mix {
    /// The operations of `client` in one cycle. Client 0 opens each cycle with one unsynced and
    /// one synced write, so every scenario that gets past recovery mixes both, whatever its
    /// drawn ratio.
    pub fn draw_client(&self, rng: &mut ChaCha8Rng, client: usize, ops: usize) -> ClientPlan {
        let mut plan = ClientPlan::default();
        let mut snapshot = false;
        for op in 0..ops {
            let first_two = client == 0 && op < 2;
            let action = if !first_two && rng.gen_range(0..100) < self.compact_percent {
                if rng.gen_bool(0.5) {
                    let from = key(rng, self.keys);
                    let to = rng.gen_range(from as usize..self.keys) as u32;
                    Action::CompactRange { from, to }
                } else {
                    Action::Flush
                }
            } else if !first_two && rng.gen_range(0..100) < self.read_percent {
                match rng.gen_range(0..12) {
                    0 | 1 if !snapshot => {
                        snapshot = true;
                        Action::TakeSnapshot
                    }
                    0 => Action::TakeSnapshot,
                    1 | 2 => self.draw_scan(rng),
                    3 | 4 => self.draw_walk(rng, false),
                    5..=7 if snapshot => {
                        if rng.gen_bool(0.5) {
                            self.draw_walk(rng, true)
                        } else {
                            self.draw_snapshot_read(rng)
                        }
                    }
                    _ => Action::Get { key: key(rng, self.keys) },
                }
            } else {
                Action::Write(self.draw_write(rng, client, op))
            };
            let pause_ms = if rng.gen_bool(0.3) { rng.gen_range(1..4) } else { 0 };
            plan.ops.push(ClientOp { action, pause_ms });
        }
        // A snapshot read last, often after a flush and a compaction of everything written
        // since: the versions the snapshot reads must survive both.
        plan.end = snapshot
            .then(|| EndRead { flush_first: rng.gen_bool(0.5), reverse: rng.gen_bool(0.5) });
        plan
    }

    /// The final process's writes: as client 0 at the start of a cycle, one unsynced write and
    /// a synced one before the snapshot, up to six more after it.
    pub fn draw_final(&self, rng: &mut ChaCha8Rng) -> FinalPlan {
        let before = (0..2).map(|op| self.draw_write(rng, 0, op)).collect();
        let after = (2..2 + self.keys.min(6)).map(|op| self.draw_write(rng, 0, op)).collect();
        FinalPlan { before, after, reverse: rng.gen_bool(0.5) }
    }

    fn draw_write(&self, rng: &mut ChaCha8Rng, client: usize, op: usize) -> Write {
        let n = if rng.gen_range(0..100) < self.batch_percent {
            rng.gen_range(2..=self.batch_ops_max)
        } else {
            1
        };
        let ops = (0..n)
            .map(|_| {
                let key = key(rng, self.keys);
                if rng.gen_range(0..100) < self.delete_percent {
                    WriteOp::Delete { key }
                } else {
                    let large = rng.gen_range(0..1000) < self.large_values_per_mille;
                    let max =
                        if large { self.value_bytes_max } else { self.value_bytes_max.min(200) };
                    WriteOp::Put { key, len: rng.gen_range(1..=max) as u32 }
                }
            })
            .collect();
        let sync = match (client, op) {
            (0, 0) => false,
            (0, 1) => true,
            _ => rng.gen_range(0..100) < self.sync_percent,
        };
        Write { ops, sync }
    }

    fn draw_scan(&self, rng: &mut ChaCha8Rng) -> Action {
        let from = rng.gen_range(0..self.keys);
        let to = rng.gen_range(from..=self.keys.min(from + 300));
        Action::Scan { from: from as u32, to: to as u32, by_iterator: !rng.gen_bool(0.5) }
    }

    fn draw_snapshot_read(&self, rng: &mut ChaCha8Rng) -> Action {
        let (from, to) = if rng.gen_bool(0.5) {
            let k = rng.gen_range(0..self.keys);
            (k, k + 1)
        } else {
            let a = rng.gen_range(0..self.keys);
            (a, rng.gen_range(a..=self.keys.min(a + 200)))
        };
        Action::SnapshotRead { from: from as u32, to: to as u32, reverse: rng.gen_bool(0.5) }
    }

    fn draw_walk(&self, rng: &mut ChaCha8Rng, at_snapshot: bool) -> Action {
        let keys = self.keys;
        let lower = rng.gen_bool(0.6).then(|| rng.gen_range(0..keys));
        let upper = rng.gen_bool(0.6).then(|| {
            let from = lower.map_or(0, |_| rng.gen_range(0..keys));
            from.max(rng.gen_range(0..=keys))
        });
        // Bounds compare as key names, as the iterator sees them.
        let name = key_name;
        let (lower, upper) = match (lower, upper) {
            (Some(l), Some(u)) if name(u) < name(l) => (Some(u), Some(l)),
            other => other,
        };
        // Drawn aside, so that every other draw of every seed stays as it was.
        let pause_ms =
            *crate::config::pick(&mut crate::config::side_lane(rng, 7), &[0, 0, 0, 2, 10, 50]);
        let steps = (0..rng.gen_range(1..=12)).map(|_| draw_step(rng, keys)).collect();
        Action::Walk {
            lower: lower.map(|k| k as u32),
            upper: upper.map(|k| k as u32),
            steps,
            at_snapshot,
            pause_ms,
        }
    }
}

/// Targets fall on keys and between them (a key with a byte appended).
fn draw_step(rng: &mut ChaCha8Rng, keys: usize) -> Step {
    let target = Target { key: rng.gen_range(0..=keys) as u32, between: rng.gen_bool(0.3) };
    match rng.gen_range(0..10) {
        0 => Step::First,
        1 => Step::Last,
        2 | 3 => Step::Seek(target),
        4 => Step::SeekForPrev(target),
        5..=7 => Step::Next,
        _ => Step::Prev,
    }
}
