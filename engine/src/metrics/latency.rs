//! Latency histograms: how long puts, gets, commits, WAL fsyncs, flushes, compactions and
//! writer pauses took, as percentiles users can read.
//!
//! Each histogram is an HdrHistogram (values in nanoseconds, 16 sub-buckets per power of two,
//! so each percentile is within 1/16 of the true value, finer than RocksDB's 1.5x buckets) that
//! grows its buckets only as far as the largest value recorded: a few kilobytes at most. Fewer
//! sub-buckets keep `Db::metrics` cheap: it walks every histogram's buckets at each call. Hot paths that many threads record into
//! (puts, gets) are split into shards picked per thread, so that readers on different threads
//! do not queue on one lock; a snapshot adds the shards up.

use hdrhistogram::Histogram as Hdr;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// One significant digit: HdrHistogram then keeps 16 sub-buckets per power of two (a
/// precision of 1/16; two digits would keep 128, and cost 8 times as much to read).
const SIGNIFICANT_DIGITS: u8 = 1;

/// Values above an hour are recorded as an hour: it bounds the buckets (and so the memory) a
/// histogram can grow to, and nothing the engine times takes that long when healthy.
const VALUE_NS_MAX: u64 = 3_600 * 1_000_000_000;

/// Shards of the histograms that every user thread records into.
pub(crate) const SHARDS_HOT: usize = 4;

/// A latency histogram shared by the threads that record into it.
#[derive(Debug)]
pub(crate) struct Histogram {
    shards: Box<[Mutex<Shard>]>,
}

/// One shard: the buckets, and the exact sum of the values (HdrHistogram's own mean walks
/// every bucket, which `Db::metrics` would pay for each histogram at each call).
#[derive(Debug)]
struct Shard {
    hdr: Hdr<u64>,
    sum_ns: u64,
}

impl Histogram {
    /// A histogram with `shards` independently locked parts.
    pub(crate) fn new(shards: usize) -> Self {
        let shards =
            (0..shards.max(1)).map(|_| Mutex::new(Shard { hdr: empty(), sum_ns: 0 })).collect();
        Histogram { shards }
    }

    /// Records one duration.
    pub(crate) fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).min(VALUE_NS_MAX);
        let shard = &self.shards[shard_index() % self.shards.len()];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        // Auto-resizing only fails past `u64` buckets, which the cap above rules out.
        let _ = shard.hdr.record(ns);
        shard.sum_ns = shard.sum_ns.saturating_add(ns);
    }

    /// Every shard added into one histogram, and the sum of the values.
    pub(crate) fn merged(&self) -> (Hdr<u64>, u64) {
        let mut all = empty();
        let mut sum_ns = 0u64;
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            // Both auto-resize, so adding cannot run out of range.
            let _ = all.add(&shard.hdr);
            sum_ns = sum_ns.saturating_add(shard.sum_ns);
        }
        (all, sum_ns)
    }

    /// The percentiles users read.
    pub(crate) fn summary(&self) -> Latency {
        if let [only] = &*self.shards {
            let shard = only.lock().unwrap_or_else(PoisonError::into_inner);
            return Latency::of(&shard.hdr, shard.sum_ns);
        }
        let (all, sum_ns) = self.merged();
        Latency::of(&all, sum_ns)
    }
}

fn empty() -> Hdr<u64> {
    Hdr::new(SIGNIFICANT_DIGITS).expect("one significant digit is a valid precision")
}

/// What is timed by sample rather than every time.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Sampled {
    /// Point reads.
    Get = 0,
    /// Commit groups' leader work.
    Commit = 1,
}

/// Whether this thread should time its next `kind`: one in `SAMPLE_EVERY` is (the first, the
/// ninth, ...), counted per thread and kind. A get that finds nothing takes a few hundred
/// nanoseconds, and two clock reads and a histogram record would add about 15% to it; a
/// sample of one in eight keeps the percentiles (each sampled read is as likely slow as any)
/// at a cost of about 2%. A put already reads the clock twice for its own latency; a commit
/// group's two more are sampled too.
pub(crate) fn sampled(kind: Sampled) -> bool {
    thread_local! {
        static SEEN: [Cell<u32>; 2] = const { [Cell::new(0), Cell::new(0)] };
    }
    SEEN.with(|seen| {
        let seen = &seen[kind as usize];
        let n = seen.get();
        seen.set(n.wrapping_add(1));
        n % SAMPLE_EVERY == 0
    })
}

/// One in this many sampled events is timed.
const SAMPLE_EVERY: u32 = 8;

/// This thread's shard: threads are numbered in the order they first record.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
    }
    INDEX.with(|index| {
        index.get().unwrap_or_else(|| {
            let i = NEXT.fetch_add(1, Ordering::Relaxed);
            index.set(Some(i));
            i
        })
    })
}

/// Percentiles of one kind of latency since the database was opened (not over a sliding
/// window: take differences of `count` and `sum` between two readings for a recent mean). Each percentile and
/// `max` is within 1/16 (6.25%) above the true value; `mean` is exact. All are zero when
/// nothing was recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latency {
    /// How many were recorded, and their exact sum (what a Prometheus summary's `_sum` is).
    pub count: u64,
    pub sum: Duration,
    pub mean: Duration,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Latency {
    /// The summary of `h`, whose values add up to `sum_ns`.
    pub(crate) fn of(h: &Hdr<u64>, sum_ns: u64) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        // One walk of the buckets for all four.
        let mut at = h.value_at_quantiles([0.50, 0.95, 0.99, 0.999]).map(Duration::from_nanos);
        let mut next = || at.next().unwrap_or_default();
        Latency {
            count: h.len(),
            sum: Duration::from_nanos(sum_ns),
            mean: Duration::from_nanos(sum_ns / h.len()),
            p50: next(),
            p95: next(),
            p99: next(),
            p999: next(),
            max: Duration::from_nanos(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_every_shard() {
        let h = Histogram::new(SHARDS_HOT);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let h = &h;
                s.spawn(move || {
                    for i in 0..250u64 {
                        // Thread t records t*250+1 ..= t*250+250 microseconds.
                        h.record(Duration::from_micros(t * 250 + i + 1));
                    }
                });
            }
        });
        let l = h.summary();
        assert_eq!(l.count, 1000);
        let near = |d: Duration, us: u64| {
            let want = us as f64;
            let got = d.as_nanos() as f64 / 1000.0;
            assert!(
                got >= want - 1.0 && got <= want * 1.0625 + 1.0,
                "{got} µs is not about {want} µs"
            );
        };
        near(l.p50, 500);
        near(l.p95, 950);
        near(l.p99, 990);
        near(l.p999, 999);
        near(l.max, 1000);
        near(l.mean, 500);
    }

    #[test]
    fn an_empty_histogram_reads_as_zero_and_huge_values_are_capped() {
        let h = Histogram::new(1);
        assert_eq!(h.summary(), Latency::default());
        h.record(Duration::from_secs(10 * 3600));
        let l = h.summary();
        assert_eq!(l.count, 1);
        assert!(l.max <= Duration::from_secs(3600 * 17 / 16), "{:?}", l.max);
        assert!(l.max >= Duration::from_secs(3600), "{:?}", l.max);
    }
}
