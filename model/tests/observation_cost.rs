//! What judging observations costs at the simulator's largest scale: 1,000 scans of 1,000 keys
//! each over an epoch of 5,000 writes on 10,000 keys, every scan concurrent with the 5 writes
//! issued while it runs. Ignored by default; run it with
//! `cargo test --release -p jadedb-model --test observation_cost -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use jadedb_model::{Key, Model, Observation, Op, Value};

const KEYS: u64 = 10_000;
const WRITES: u64 = 5_000;
const WRITES_PER_SCAN: u64 = 5;
const SCAN_KEYS: u64 = 1_000;

/// A small deterministic generator (xorshift64), so the test needs no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn key(k: u64) -> Key {
    format!("key{k:05}").into_bytes()
}

#[test]
#[ignore = "a measurement, not a check; run it in release"]
// The measurement needs the real clock; the ban on it is for the engine's simulated time.
#[allow(clippy::disallowed_methods)]
fn judging_a_thousand_scans_of_a_thousand_keys() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut model = Model::new();
    let mut truth: BTreeMap<Key, Value> = BTreeMap::new();
    let (mut next_seq, mut observing, mut judging, mut dropping, mut scans) =
        (1, Duration::ZERO, Duration::ZERO, Duration::ZERO, 0);
    for round in 0..WRITES / WRITES_PER_SCAN {
        let token = model.begin_read();
        let start = rng.below(KEYS - SCAN_KEYS);
        let interval = (Bound::Included(key(start)), Bound::Excluded(key(start + SCAN_KEYS)));
        let seen: BTreeMap<Key, Value> =
            truth.range(interval.clone()).map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut batch = Vec::new();
        for w in 0..WRITES_PER_SCAN {
            let ops: Vec<Op> = (0..1 + rng.below(4))
                .map(|o| Op::Put(key(rng.below(KEYS)), format!("r{round}w{w}o{o}").into_bytes()))
                .collect();
            batch.push((model.issue_write(ops.clone(), false), ops));
        }
        // The scan ran while the writes were in flight, and saw none of them.
        // For comparison: what freeing a copy of the read's entries costs.
        let copy = seen.clone();
        let clock = Instant::now();
        drop(copy);
        dropping += clock.elapsed();
        let clock = Instant::now();
        model.observe(token, Observation::scan(0, interval, seen));
        observing += clock.elapsed();
        let clock = Instant::now();
        model.check_observations().unwrap();
        judging += clock.elapsed();
        for (id, ops) in batch {
            model.ack_write(id, next_seq);
            next_seq += ops.len() as u64;
            for op in ops {
                if let Op::Put(k, v) = op {
                    truth.insert(k, v);
                }
            }
            let clock = Instant::now();
            model.check_observations().unwrap();
            judging += clock.elapsed();
        }
        scans += 1;
    }
    assert_eq!(model.stats().observations_judged, scans);
    let total = observing + judging;
    println!(
        "{scans} scans of {SCAN_KEYS} keys over {WRITES} writes on {KEYS} keys: {total:?} \
         ({:?} per scan), of which observe {observing:?} and check_observations {judging:?} \
         (judging, and dropping each judged observation; dropping a copy of each read's \
         entries alone takes {dropping:?})",
        total / scans as u32
    );
}
