//! The scenario trace: every engine-visible event, hashed, and printed when replaying.
//!
//! The hash covers file-system calls (kind, path, sizes, results), client operations and their
//! results, crashes and recoveries, each stamped with virtual time. The same seed must give the
//! same hash, bit for bit: that is invariant 6, and the determinism check compares these hashes.
//! A ring of the most recent events is kept so a failure can show what led to it.
//!
//! A sweep runs its scenarios with a [`Trace::silent`] trace, which formats nothing: the text
//! of millions of events was a tenth of a sweep's time, and only a failure needs it. The runner
//! then runs a failed seed again with a recording trace to show its last events (the same seed
//! gives the same run).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// How many recent events a failure report shows.
const RECENT_EVENTS_MAX: usize = 40;

/// A shared, cloneable trace.
#[derive(Clone, Debug)]
pub struct Trace {
    inner: Arc<Mutex<TraceInner>>,
    /// Whether events are recorded at all (see [`Trace::silent`]).
    on: bool,
}

impl Default for Trace {
    /// A trace that hashes every event and keeps the latest ones.
    fn default() -> Self {
        Trace { inner: Arc::default(), on: true }
    }
}

#[derive(Debug)]
struct TraceInner {
    hash: u64,
    events: u64,
    print: bool,
    /// Virtual time and text of the latest events, formatted only when asked for.
    recent: VecDeque<(u128, String)>,
}

impl Default for TraceInner {
    fn default() -> Self {
        TraceInner { hash: FNV_OFFSET, events: 0, print: false, recent: VecDeque::new() }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Folds `bytes` into `hash` eight bytes at a time (FNV's multiply, on words instead of bytes:
/// a determinism check hashes every file call, and a byte at a time was a tenth of its time).
/// Stable across machines and runs, which is all a trace hash needs.
fn mix(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        hash = (hash ^ word).wrapping_mul(FNV_PRIME).rotate_left(29);
    }
    for &byte in chunks.remainder() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
    }
    // The length, so that "ab" + "c" and "a" + "bc" differ.
    (hash ^ bytes.len() as u64).wrapping_mul(FNV_PRIME)
}

impl Trace {
    /// A trace that also prints each event as it happens.
    pub fn printing() -> Self {
        let trace = Trace::default();
        trace.lock().print = true;
        trace
    }

    /// A trace that records nothing: its hash and event count stay at their start, and it has
    /// no recent events. What a sweep uses.
    pub fn silent() -> Self {
        Trace { inner: Arc::default(), on: false }
    }

    /// Whether events are recorded: a caller with costly text to make can skip it when not.
    pub fn on(&self) -> bool {
        self.on
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TraceInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one event at virtual time `now_ns` (nothing, if the trace is silent). The text is
    /// formatted into the oldest slot of the ring of recent events, so a run of millions of
    /// events allocates nothing for them.
    pub fn event(&self, now_ns: u128, text: fmt::Arguments<'_>) {
        if !self.on {
            return;
        }
        let mut t = self.lock();
        let mut slot = match t.recent.len() {
            RECENT_EVENTS_MAX => t.recent.pop_front().map(|(_, s)| s).unwrap_or_default(),
            _ => String::new(),
        };
        slot.clear();
        // Writing into a String cannot fail.
        let _ = fmt::write(&mut slot, text);
        t.hash = mix(t.hash, &now_ns.to_le_bytes());
        t.hash = mix(t.hash, slot.as_bytes());
        t.events += 1;
        if t.print {
            println!("{:>12.6}ms  {slot}", now_ns as f64 / 1e6);
        }
        t.recent.push_back((now_ns, slot));
    }

    /// The hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.lock().hash
    }

    /// How many events were recorded.
    pub fn events(&self) -> u64 {
        self.lock().events
    }

    /// The most recent events, oldest first.
    pub fn recent(&self) -> Vec<String> {
        let t = self.lock();
        t.recent.iter().map(|(ns, text)| format!("{:.6}ms {text}", *ns as f64 / 1e6)).collect()
    }
}
