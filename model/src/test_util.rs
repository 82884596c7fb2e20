//! Helpers the model's unit tests share: operations and states written as string pairs, so a
//! test reads as the history it checks.

use crate::{Key, Op, Value};
use std::collections::BTreeMap;

pub fn put(key: &str, value: &str) -> Op {
    Op::Put(key.as_bytes().to_vec(), value.as_bytes().to_vec())
}

pub fn delete(key: &str) -> Op {
    Op::Delete(key.as_bytes().to_vec())
}

pub fn state(pairs: &[(&str, &str)]) -> BTreeMap<Key, Value> {
    pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
}
