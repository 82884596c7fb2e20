//! When a fault fires: small composable predicates over a file-system call.
//!
//! A fault is described as "on the 3rd sync of a `.log` file" rather than as a flag inside the
//! engine, so the engine code under test stays free of test hooks (Pebble's `errorfs` works the
//! same way). Predicates carry their own state (call counters, a seeded random stream), so the
//! same predicate evaluated against the same sequence of calls always gives the same answers.
//!
//! Invariant: a predicate's answers depend only on its construction arguments and on the calls
//! it has been asked about, in order; never on time, threads or a randomly seeded hasher.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The kinds of call a fault rule can be keyed by, one per method of the seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// `FileSystem::create`.
    Create,
    /// `FileSystem::open`.
    Open,
    /// `FileSystem::remove`.
    Remove,
    /// `FileSystem::rename`.
    Rename,
    /// `FileSystem::list`.
    List,
    /// `FileSystem::create_dir_all`.
    CreateDir,
    /// `FileSystem::sync_dir`.
    SyncDir,
    /// `FileSystem::lock`.
    Lock,
    /// `File::read_at`.
    Read,
    /// `File::write_at`.
    Write,
    /// `File::sync_data`.
    Sync,
    /// `File::truncate`.
    Truncate,
    /// `File::size`.
    Size,
}

/// The call a predicate is asked about.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Which method is being called.
    pub op: OpKind,
    /// The path it names; for calls on an open file, the path the file was opened under.
    pub path: &'a Path,
    /// The second path of a call that has one (the target of a rename).
    pub to: Option<&'a Path>,
}

impl<'a> Call<'a> {
    /// A call naming a single path.
    pub fn new(op: OpKind, path: &'a Path) -> Self {
        Call { op, path, to: None }
    }

    /// True if either path of the call satisfies `test`.
    fn any_path(&self, test: impl Fn(&str) -> bool) -> bool {
        let matches = |p: &Path| test(&p.to_string_lossy());
        matches(self.path) || self.to.is_some_and(matches)
    }
}

/// Decides, call by call, whether a fault fires.
///
/// Combinators short-circuit, and counting predicates count only the calls that reach them:
/// in `path_contains(".log").and(nth(3))`, `nth` sees only `.log` calls, so the rule reads
/// "the 3rd call on a `.log` file". In `a.or(b)`, `b` sees only the calls `a` rejected.
pub struct Predicate {
    kind: Kind,
}

enum Kind {
    Always,
    Never,
    Nth { n: u64, seen: AtomicU64 },
    FromNth { n: u64, seen: AtomicU64 },
    EveryNth { n: u64, seen: AtomicU64 },
    PathContains(String),
    PathEndsWith(String),
    // Boxed: a ChaCha state is ten times the size of every other variant.
    Probability { p: f64, rng: Box<Mutex<ChaCha8Rng>> },
    WhileOn(Arc<AtomicBool>),
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    Not(Box<Predicate>),
}

impl Predicate {
    /// Fires on every call.
    pub fn always() -> Self {
        Predicate { kind: Kind::Always }
    }

    /// Never fires (a placeholder that keeps a rule in place while switched off).
    pub fn never() -> Self {
        Predicate { kind: Kind::Never }
    }

    /// Fires on the `n`-th call that reaches it (1-based), and on no other.
    pub fn nth(n: u64) -> Self {
        assert!(n >= 1, "Predicate::nth counts from 1");
        let seen = AtomicU64::new(0);
        Predicate { kind: Kind::Nth { n, seen } }
    }

    /// Fires on the `n`-th call that reaches it (1-based) and on every later one: a device that
    /// breaks and stays broken.
    pub fn from_nth(n: u64) -> Self {
        assert!(n >= 1, "Predicate::from_nth counts from 1");
        let seen = AtomicU64::new(0);
        Predicate { kind: Kind::FromNth { n, seen } }
    }

    /// Fires on calls `n`, `2n`, `3n`, ... among those that reach it.
    pub fn every_nth(n: u64) -> Self {
        assert!(n >= 1, "Predicate::every_nth needs a period of at least 1");
        let seen = AtomicU64::new(0);
        Predicate { kind: Kind::EveryNth { n, seen } }
    }

    /// Fires when a path of the call contains `needle`.
    pub fn path_contains(needle: &str) -> Self {
        Predicate { kind: Kind::PathContains(needle.to_string()) }
    }

    /// Fires when a path of the call ends with `suffix` (as a string, so ".log" matches).
    pub fn path_ends_with(suffix: &str) -> Self {
        Predicate { kind: Kind::PathEndsWith(suffix.to_string()) }
    }

    /// Fires with probability `p` per call, drawn from a ChaCha8 stream seeded with `seed`.
    pub fn probability(p: f64, seed: u64) -> Self {
        assert!((0.0..=1.0).contains(&p), "a probability lies in [0, 1], got {p}");
        let rng = Box::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed)));
        Predicate { kind: Kind::Probability { p, rng } }
    }

    /// Fires while `switch` is set: a fault that starts (or stops) at a moment the test
    /// chooses, such as once a database has opened. Combine it first (`while_on(s).and(p)`), so
    /// that `p` counts and draws only while the switch is on.
    pub fn while_on(switch: Arc<AtomicBool>) -> Self {
        Predicate { kind: Kind::WhileOn(switch) }
    }

    /// Fires when both fire; `other` sees only the calls `self` accepted.
    pub fn and(self, other: Predicate) -> Self {
        Predicate { kind: Kind::And(Box::new(self), Box::new(other)) }
    }

    /// Fires when either fires; `other` sees only the calls `self` rejected.
    pub fn or(self, other: Predicate) -> Self {
        Predicate { kind: Kind::Or(Box::new(self), Box::new(other)) }
    }

    /// Fires when `self` does not.
    #[allow(clippy::should_implement_trait)] // `!pred` would hide that the state advances.
    pub fn not(self) -> Self {
        Predicate { kind: Kind::Not(Box::new(self)) }
    }

    /// Asks whether the fault fires for `call`, advancing any counters and random streams.
    pub fn matches(&self, call: &Call<'_>) -> bool {
        match &self.kind {
            Kind::Always => true,
            Kind::Never => false,
            Kind::Nth { n, seen } => bump(seen) == *n,
            Kind::FromNth { n, seen } => bump(seen) >= *n,
            Kind::EveryNth { n, seen } => bump(seen).is_multiple_of(*n),
            Kind::PathContains(needle) => call.any_path(|p| p.contains(needle.as_str())),
            Kind::PathEndsWith(suffix) => call.any_path(|p| p.ends_with(suffix.as_str())),
            Kind::Probability { p, rng } => {
                let mut rng = rng.lock().unwrap_or_else(PoisonError::into_inner);
                rng.gen::<f64>() < *p
            }
            Kind::WhileOn(switch) => switch.load(Ordering::SeqCst),
            Kind::And(a, b) => a.matches(call) && b.matches(call),
            Kind::Or(a, b) => a.matches(call) || b.matches(call),
            Kind::Not(a) => !a.matches(call),
        }
    }
}

/// Counts one more call and returns the new count (1-based).
fn bump(seen: &AtomicU64) -> u64 {
    seen.fetch_add(1, Ordering::Relaxed) + 1
}

impl fmt::Debug for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Always => f.write_str("always"),
            Kind::Never => f.write_str("never"),
            Kind::Nth { n, .. } => write!(f, "nth({n})"),
            Kind::FromNth { n, .. } => write!(f, "from_nth({n})"),
            Kind::EveryNth { n, .. } => write!(f, "every_nth({n})"),
            Kind::PathContains(s) => write!(f, "path_contains({s:?})"),
            Kind::PathEndsWith(s) => write!(f, "path_ends_with({s:?})"),
            Kind::Probability { p, .. } => write!(f, "probability({p})"),
            Kind::WhileOn(switch) => write!(f, "while_on({})", switch.load(Ordering::SeqCst)),
            Kind::And(a, b) => write!(f, "({a:?} and {b:?})"),
            Kind::Or(a, b) => write!(f, "({a:?} or {b:?})"),
            Kind::Not(a) => write!(f, "not {a:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(path: &str) -> Call<'_> {
        Call::new(OpKind::Sync, Path::new(path))
    }

    fn fires(p: &Predicate, paths: &[&str]) -> Vec<bool> {
        paths.iter().map(|path| p.matches(&call(path))).collect()
    }

    #[test]
    fn nth_fires_once_on_the_nth_call() {
        let p = Predicate::nth(3);
        let got = fires(&p, &["/a"; 6]);
        assert_eq!(got, [false, false, true, false, false, false]);
    }

    #[test]
    fn from_nth_stays_on() {
        let p = Predicate::from_nth(2);
        assert_eq!(fires(&p, &["/a"; 4]), [false, true, true, true]);
    }

    #[test]
    fn every_nth_is_periodic() {
        let p = Predicate::every_nth(2);
        assert_eq!(fires(&p, &["/a"; 5]), [false, true, false, true, false]);
    }

    #[test]
    fn and_counts_only_calls_the_left_side_accepted() {
        let p = Predicate::path_ends_with(".log").and(Predicate::nth(2));
        let paths = ["/1.sst", "/1.log", "/2.sst", "/3.sst", "/2.log", "/3.log"];
        assert_eq!(fires(&p, &paths), [false, false, false, false, true, false]);
    }

    #[test]
    fn or_and_not_combine() {
        let p = Predicate::path_contains("CURRENT").or(Predicate::path_ends_with(".sst"));
        assert_eq!(fires(&p, &["/db/CURRENT", "/db/1.sst", "/db/1.log"]), [true, true, false]);
        let q = Predicate::path_contains("CURRENT").not();
        assert_eq!(fires(&q, &["/db/CURRENT", "/db/1.log"]), [false, true]);
    }

    #[test]
    fn rename_target_counts_as_a_path() {
        let p = Predicate::path_ends_with("CURRENT");
        let c = Call {
            op: OpKind::Rename,
            path: Path::new("/db/tmp"),
            to: Some(Path::new("/db/CURRENT")),
        };
        assert!(p.matches(&c));
    }

    #[test]
    fn while_on_gates_what_follows_it() {
        let switch = Arc::new(AtomicBool::new(false));
        let p = Predicate::while_on(Arc::clone(&switch)).and(Predicate::nth(2));
        assert_eq!(fires(&p, &["/a"; 3]), [false, false, false], "off: nth sees nothing");
        switch.store(true, Ordering::SeqCst);
        assert_eq!(fires(&p, &["/a"; 3]), [false, true, false]);
    }

    #[test]
    fn probability_is_fixed_by_its_seed() {
        let draw = |seed| fires(&Predicate::probability(0.3, seed), &["/a"; 200]);
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let hits = draw(7).iter().filter(|&&b| b).count();
        assert!((30..=90).contains(&hits), "p=0.3 over 200 calls fired {hits} times");
    }
}
