//! Which seeds a sweep runs: a range, cut into shards so that many machines can share one
//! sweep, and split into the standard scenarios and the scale share.
//!
//! Seed `s` of a range belongs to shard `s % n` of `n`: every seed is in exactly one shard
//! whatever the range, and each shard gets its share of the scale seeds (which are spread
//! evenly through the seeds) instead of one shard drawing a block of them.
//!
//! A sweep's seeds are a range `A..B` or a random start (`random:N`: `N` seeds from a start
//! drawn from the operating system's entropy), which is resolved to a range and printed before
//! anything runs, so that every failure of a random sweep still replays.

use crate::config::ScenarioConfig;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;
use std::time::Duration;

/// Which scenarios of a range of seeds a sweep runs: a CI matrix can give the scale share its
/// own runners, and a measure of the standard sweep's speed need not wait for the scale share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Only {
    #[default]
    All,
    Standard,
    Scale,
}

/// Shard `index` of `count` (`--shard index/count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// The whole range, as one shard.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parses `i/n`, with `n` at least 1 and `i` below `n`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad =
            || format!("expected a shard as INDEX/COUNT with INDEX < COUNT, e.g. 0/4, not {s:?}");
        let (index, count) = s.split_once('/').ok_or_else(bad)?;
        let index: u64 = index.trim().parse().map_err(|_| bad())?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether `seed` is in this shard.
    pub fn holds(&self, seed: u64) -> bool {
        seed % self.count == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The seeds a sweep was asked for (`--seeds`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seeds {
    /// `START..END`, END excluded.
    Range(Range<u64>),
    /// `random:N`: N seeds from a random start.
    Random(u64),
}

/// Random starts lie below this, so that a start plus any count stays a plain integer (and one
/// that a JSON reader with 53-bit numbers still reads exactly).
const RANDOM_START_MAX: u64 = 1 << 52;

impl Seeds {
    /// Parses `START..END` (END above START) or `random:N` (N at least 1).
    pub fn parse(s: &str) -> Result<Seeds, String> {
        if let Some(n) = s.strip_prefix("random:") {
            let n: u64 = n.parse().map_err(|e| format!("bad count in {s:?}: {e}"))?;
            if n == 0 || n > RANDOM_START_MAX {
                return Err(format!("random:N needs N from 1 to {RANDOM_START_MAX}"));
            }
            return Ok(Seeds::Random(n));
        }
        let (a, b) = s.split_once("..").ok_or("expected START..END or random:N")?;
        let a: u64 = a.parse().map_err(|e| format!("bad start: {e}"))?;
        let b: u64 = b.parse().map_err(|e| format!("bad end: {e}"))?;
        if a >= b {
            return Err("START must be below END".into());
        }
        Ok(Seeds::Range(a..b))
    }

    /// The range these seeds name: a random start is drawn from `entropy`.
    pub fn resolve(&self, entropy: impl FnOnce() -> u64) -> Range<u64> {
        match self {
            Seeds::Range(r) => r.clone(),
            Seeds::Random(n) => {
                let start = entropy() % RANDOM_START_MAX;
                start..start + n
            }
        }
    }
}

/// Eight bytes of the operating system's entropy, for a random start. The sweep runs outside
/// any simulation, and reading `/dev/urandom` is a plain file read that no simulator
/// intercepts (JadeDB runs on Unix only).
pub fn os_entropy() -> std::io::Result<u64> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    #[allow(clippy::disallowed_types)] // the sweep's own input, not the engine's files
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

/// Parses a duration as a sequence of numbers with units `h`, `m`, `s` or `ms`: `90s`, `10m`,
/// `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration such as 90s, 10m or 1h30m, not {s:?}");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            _ => return Err(bad()),
        };
        let n = u32::try_from(n).map_err(|_| bad())?;
        total = unit.checked_mul(n).and_then(|d| total.checked_add(d)).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A duration as `1h02m03s`, `4m05s` or `6.7s`, for reports and progress lines.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..=59 => format!("{:.1}s", d.as_secs_f64()),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60),
    }
}

/// The seeds of `seeds` in `shard` that `only` names, as (standard, scale), each ascending.
pub fn select(seeds: Range<u64>, only: Only, shard: Shard) -> (Vec<u64>, Vec<u64>) {
    let (scale, standard): (Vec<u64>, Vec<u64>) =
        seeds.filter(|&seed| shard.holds(seed)).partition(|&seed| ScenarioConfig::is_scale(seed));
    match only {
        Only::All => (standard, scale),
        Only::Standard => (standard, Vec::new()),
        Only::Scale => (Vec::new(), scale),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_refuse_what_names_no_shard() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(Shard::parse("0/1"), Ok(Shard::WHOLE));
        for bad in ["4/4", "1/0", "2", "a/4", "1/b", "-1/4", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad:?} was taken as a shard");
        }
        assert_eq!(Shard { index: 3, count: 8 }.to_string(), "3/8");
    }

    #[test]
    fn the_shards_of_a_range_hold_each_of_its_seeds_exactly_once() {
        for (range, n) in [(0..4000, 4), (17..1017, 3), (5..6, 7)] {
            let (whole_standard, whole_scale) = select(range.clone(), Only::All, Shard::WHOLE);
            let mut standard = Vec::new();
            let mut scale = Vec::new();
            for index in 0..n {
                let (s, l) = select(range.clone(), Only::All, Shard { index, count: n });
                standard.extend(s);
                scale.extend(l);
            }
            let total = standard.len() + scale.len();
            standard.sort_unstable();
            scale.sort_unstable();
            assert_eq!(standard, whole_standard, "{range:?} in {n} shards");
            assert_eq!(scale, whole_scale, "{range:?} in {n} shards");
            assert_eq!(total, range.clone().count(), "no seed twice");
        }
    }

    #[test]
    fn each_shard_gets_its_share_of_the_scale_seeds() {
        let (_, whole) = select(0..8000, Only::All, Shard::WHOLE);
        assert!(whole.len() > 200, "about 5% of 8,000 seeds run at scale");
        for index in 0..4 {
            let (_, scale) = select(0..8000, Only::All, Shard { index, count: 4 });
            let share = scale.len() as f64 / whole.len() as f64;
            assert!(
                (0.15..0.35).contains(&share),
                "shard {index} has {share:.2} of the scale seeds"
            );
        }
    }

    #[test]
    fn seeds_parse_as_a_range_or_a_random_start() {
        assert_eq!(Seeds::parse("3..10"), Ok(Seeds::Range(3..10)));
        assert_eq!(Seeds::parse("random:500"), Ok(Seeds::Random(500)));
        for bad in ["10..3", "5..5", "random:0", "random:x", "7", "a..b", ""] {
            assert!(Seeds::parse(bad).is_err(), "{bad:?} was taken as seeds");
        }
        assert_eq!(Seeds::Range(3..10).resolve(|| unreachable!()), 3..10);
        let r = Seeds::Random(500).resolve(|| u64::MAX);
        assert_eq!(r.end - r.start, 500);
        assert!(r.end <= RANDOM_START_MAX + 500);
        assert_ne!(
            Seeds::Random(1).resolve(|| os_entropy().unwrap()),
            Seeds::Random(1).resolve(|| os_entropy().unwrap()),
            "two random starts drew the same seed (1 chance in 2^52)"
        );
    }

    #[test]
    fn durations_parse_and_print() {
        let secs = Duration::from_secs;
        assert_eq!(parse_duration("90s"), Ok(secs(90)));
        assert_eq!(parse_duration("10m"), Ok(secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "10", "m", "5x", "1h-2m", "s10", "99999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was taken as a duration");
        }
        assert_eq!(fmt_duration(Duration::from_millis(6_740)), "6.7s");
        assert_eq!(fmt_duration(secs(245)), "4m05s");
        assert_eq!(fmt_duration(secs(3723)), "1h02m03s");
    }

    #[test]
    fn only_picks_one_class() {
        let (standard, scale) = select(0..2000, Only::All, Shard::WHOLE);
        assert_eq!(select(0..2000, Only::Standard, Shard::WHOLE), (standard, Vec::new()));
        assert_eq!(select(0..2000, Only::Scale, Shard::WHOLE), (Vec::new(), scale));
    }
}
