//! The key intervals a read covered, as a sorted list of disjoint intervals.
//!
//! A read hands in its intervals as it walked them: a scan gives one, an iterator that seeks
//! back and forth gives several, possibly overlapping. The model keeps them sorted by start and
//! merged wherever they share a key, so that every key lies in at most one interval: a state is
//! then compared key by key without counting a key twice, and "is this key covered" is one
//! binary search.

use std::cmp::Ordering;
use std::collections::btree_map::Range;
use std::collections::BTreeMap;
use std::ops::Bound::{self, Excluded, Included, Unbounded};

use crate::Key;

/// An interval of keys, as `BTreeMap::range` takes it.
pub(crate) type Interval = (Bound<Key>, Bound<Key>);

/// Sorts `intervals` by start, drops the empty ones and merges the ones that share a key.
pub(crate) fn normalize(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.retain(|interval| !is_empty(interval));
    intervals.sort_by(|a, b| cmp_starts(&a.0, &b.0));
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for (start, end) in intervals {
        match merged.last_mut() {
            Some(last) if !gap_between(&last.1, &start) => {
                if cmp_ends(&end, &last.1) == Ordering::Greater {
                    last.1 = end;
                }
            }
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Whether `key` lies in one of `intervals` (normalized).
pub(crate) fn contains(intervals: &[Interval], key: &[u8]) -> bool {
    // Normalized intervals are disjoint and sorted, so the ones whose start admits `key` form
    // a prefix, and only the last of them can hold it.
    let admitting = intervals.partition_point(|(start, _)| start_admits(start, key));
    admitting > 0 && end_admits(&intervals[admitting - 1].1, key)
}

/// The entries of `map` inside `interval` (non-empty, as normalized ones are).
pub(crate) fn range<'a, V>(map: &'a BTreeMap<Key, V>, interval: &Interval) -> Range<'a, Key, V> {
    let bounds = (as_slice(&interval.0), as_slice(&interval.1));
    map.range::<[u8], _>(bounds)
}

fn as_slice(bound: &Bound<Key>) -> Bound<&[u8]> {
    bound.as_ref().map(Vec::as_slice)
}

fn start_admits(start: &Bound<Key>, key: &[u8]) -> bool {
    match start {
        Unbounded => true,
        Included(start) => start.as_slice() <= key,
        Excluded(start) => start.as_slice() < key,
    }
}

fn end_admits(end: &Bound<Key>, key: &[u8]) -> bool {
    match end {
        Unbounded => true,
        Included(end) => key <= end.as_slice(),
        Excluded(end) => key < end.as_slice(),
    }
}

/// Whether an interval holds no key. Errs towards "not empty" for `(a, a + [0])` exclusive on
/// both ends, which is harmless: an interval kept without keys changes no comparison. Empty
/// intervals must go, since `BTreeMap::range` panics on a start above its end.
fn is_empty((start, end): &Interval) -> bool {
    match (start, end) {
        (Included(start), Included(end)) => start > end,
        (Included(start) | Excluded(start), Included(end) | Excluded(end)) => start >= end,
        (Unbounded, _) | (_, Unbounded) => false,
    }
}

/// Whether some key lies after an interval ending at `end` and before one starting at `start`
/// (given that the second does not start before the first). Errs towards "there is a gap"
/// between `..=a` and `b..` when no key lies between them but `a < b`: the intervals then stay
/// apart, which is as good, since they are still disjoint.
fn gap_between(end: &Bound<Key>, start: &Bound<Key>) -> bool {
    match (end, start) {
        (Unbounded, _) | (_, Unbounded) => false,
        // Key `a` itself lies between `..a` and `(b..` when a <= b.
        (Excluded(a), Excluded(b)) => a <= b,
        (Included(a) | Excluded(a), Included(b) | Excluded(b)) => a < b,
    }
}

/// Orders interval starts by the first key they admit (unbounded first).
fn cmp_starts(a: &Bound<Key>, b: &Bound<Key>) -> Ordering {
    fn rank(bound: &Bound<Key>) -> Option<(&[u8], u8)> {
        match bound {
            Unbounded => None,
            Included(key) => Some((key, 0)),
            Excluded(key) => Some((key, 1)),
        }
    }
    rank(a).cmp(&rank(b))
}

/// Orders interval ends by the last key they admit (unbounded last).
fn cmp_ends(a: &Bound<Key>, b: &Bound<Key>) -> Ordering {
    fn rank(bound: &Bound<Key>) -> Option<(&[u8], u8)> {
        match bound {
            Unbounded => None,
            Excluded(key) => Some((key, 0)),
            Included(key) => Some((key, 1)),
        }
    }
    match (rank(a), rank(b)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => a.cmp(&b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Key {
        text.as_bytes().to_vec()
    }

    #[test]
    fn overlapping_and_touching_intervals_merge() {
        let intervals = vec![
            (Included(key("m")), Excluded(key("p"))),
            (Included(key("a")), Excluded(key("c"))),
            (Included(key("c")), Included(key("d"))),
            (Excluded(key("b")), Included(key("c"))),
            (Included(key("n")), Included(key("n"))),
        ];
        let expected = vec![
            (Included(key("a")), Included(key("d"))),
            (Included(key("m")), Excluded(key("p"))),
        ];
        assert_eq!(normalize(intervals), expected);
        let unbounded = vec![(Included(key("x")), Unbounded), (Unbounded, Excluded(key("b")))];
        assert_eq!(normalize(unbounded.clone()), unbounded.into_iter().rev().collect::<Vec<_>>());
    }

    #[test]
    fn a_key_between_two_exclusive_ends_keeps_them_apart() {
        let intervals = vec![
            (Included(key("a")), Excluded(key("c"))),
            (Excluded(key("c")), Included(key("e"))),
            (Included(key("x")), Excluded(key("x"))),
            (Included(key("z")), Included(key("y"))),
        ];
        let normalized = normalize(intervals);
        assert_eq!(normalized.len(), 2);
        assert!(contains(&normalized, b"a"));
        assert!(contains(&normalized, b"b"));
        assert!(!contains(&normalized, b"c"));
        assert!(contains(&normalized, b"c\0"));
        assert!(contains(&normalized, b"e"));
        assert!(!contains(&normalized, b"e\0"));
        assert!(!contains(&normalized, b"x"));
        assert!(!contains(&[], b"a"));
        let map: BTreeMap<Key, ()> = ["a", "c", "d", "f"].iter().map(|k| (key(k), ())).collect();
        let keys: Vec<&Key> =
            normalized.iter().flat_map(|i| range(&map, i)).map(|(k, _)| k).collect();
        assert_eq!(keys, [&key("a"), &key("d")]);
    }
}
