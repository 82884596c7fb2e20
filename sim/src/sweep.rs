//! Which seeds a sweep runs: a range, cut into shards so that many machines can share one
//! sweep, and split into the standard scenarios and the scale share.
//!
//! Seed `s` of a range belongs to shard `s % n` of `n`: every seed is in exactly one shard
//! whatever the range, and each shard gets its share of the scale seeds (which are spread
//! evenly through the seeds) instead of one shard drawing a block of them.

use crate::config::{Bug, ScenarioConfig};
use std::fmt;
use std::ops::Range;

/// Which scenarios of a range of seeds a sweep runs: a CI matrix can give the scale share its
/// own runners, and a measure of the standard sweep's speed need not wait for the scale share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    #[default]
    All,
    Standard,
    Scale,
}

/// Shard `index` of `count` (`--shard index/count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The seeds of `seeds` in `shard` that `only` names, as (standard, scale), each ascending.
/// `bug` is the planted bug, if any (it is part of what a seed draws).
pub fn select(
    seeds: Range<u64>,
    only: Only,
    shard: Shard,
    bug: Option<Bug>,
) -> (Vec<u64>, Vec<u64>) {
    let (scale, standard): (Vec<u64>, Vec<u64>) = seeds
        .filter(|&seed| shard.holds(seed))
        .partition(|&seed| ScenarioConfig::draw(seed, bug).scale);
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
            let (whole_standard, whole_scale) =
                select(range.clone(), Only::All, Shard::WHOLE, None);
            let mut standard = Vec::new();
            let mut scale = Vec::new();
            for index in 0..n {
                let (s, l) = select(range.clone(), Only::All, Shard { index, count: n }, None);
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
        let (_, whole) = select(0..8000, Only::All, Shard::WHOLE, None);
        assert!(whole.len() > 200, "about 5% of 8,000 seeds run at scale");
        for index in 0..4 {
            let (_, scale) = select(0..8000, Only::All, Shard { index, count: 4 }, None);
            let share = scale.len() as f64 / whole.len() as f64;
            assert!(
                (0.15..0.35).contains(&share),
                "shard {index} has {share:.2} of the scale seeds"
            );
        }
    }

    #[test]
    fn only_picks_one_class() {
        let (standard, scale) = select(0..2000, Only::All, Shard::WHOLE, None);
        assert_eq!(select(0..2000, Only::Standard, Shard::WHOLE, None), (standard, Vec::new()));
        assert_eq!(select(0..2000, Only::Scale, Shard::WHOLE, None), (Vec::new(), scale));
    }
}
