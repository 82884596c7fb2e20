//! Invariant 4: a read returns what the model says for the read's snapshot.
//!
//! A latest read may see any state between the one it started in and the one it ended in, so
//! besides the value every write acked before the read began leaves, it may see the value of
//! any write that had not been acked by then: those are concurrent with it. The model narrows
//! this where it can prove an order: a concurrent write whose (now known) sequence number is
//! below that of the latest write acked before the read began is shadowed by it, because an
//! acked write is visible (the engine publishes a batch before it returns Ok).
//!
//! Only the last op a batch applies to a key counts: batches are atomic, so an intermediate
//! value within a batch is never visible.
//!
//! These checks look at one key at a time and are permissive about writes whose outcome is
//! unknown; a whole read judged at one sequence number is `observations`' job. A latest read
//! whose value only an in-flight write can explain still proves that write visible, which
//! `causal` turns into ordering and durability facts.

use crate::history::{Status, Write};
use crate::{Model, ReadToken, Violation};

impl Model {
    /// Invariant 4 for a latest read: `result` (None = absent) must be the value of `key` after
    /// the highest-seq write to `key` acked before the read began (or the base state), or the
    /// value written to `key` by some write that was not acked before the read began (in
    /// flight, failed, or acked during the read): those are concurrent with the read.
    ///
    /// Call it when the read returns, before the model hears of later writes. If the value
    /// can only come from an in-flight write, the model records that the write was seen (see
    /// `causal`).
    pub fn check_read(
        &self,
        key: &[u8],
        token: &ReadToken,
        result: Option<&[u8]>,
    ) -> Result<(), Violation> {
        assert_eq!(token.epoch, self.epoch, "a read token from before a restart was checked");
        let writers = self.writers_of(key);
        let latest =
            writers.clone().filter(|w| w.acked_before(token.at)).max_by_key(|w| w.first_seq());
        let expected = match latest {
            Some(write) => write.final_value(key).flatten(),
            None => self.base_state.get(key).map(Vec::as_slice),
        };
        if result == expected {
            return Ok(());
        }
        let latest_seq = latest.and_then(Write::first_seq);
        let concurrent = writers.filter(|w| !w.acked_before(token.at));
        let visible = |w: &&Write| match (w.first_seq(), latest_seq) {
            (Some(seq), Some(latest_seq)) => seq > latest_seq,
            _ => true,
        };
        let concurrent: Vec<&Write> = concurrent.filter(visible).collect();
        let mut sources = concurrent.iter().filter(|w| w.final_value(key) == Some(result));
        if let Some(&source) = sources.next() {
            if source.status == Status::InFlight && self.only_source(source, key, result) {
                source.seen_at.record(self.clock());
            }
            return Ok(());
        }
        Err(Violation::StaleRead {
            key: key.to_vec(),
            got: result.map(<[u8]>::to_vec),
            expected: expected.map(<[u8]>::to_vec),
            latest: latest.map(|w| (w.id, latest_seq.unwrap_or_default())),
            concurrent_writes: concurrent.len(),
        })
    }

    /// Invariant 4 for a read at snapshot `snap_seq` (>= base_seq): `result` must be the value
    /// of `key` after applying, in seq order, every acked op with seq <= `snap_seq`, or the
    /// value an unknown-seq (in flight or failed) write leaves in `key`, if that write could
    /// have a seq at or below `snap_seq`. Permissive about unknown-seq writes on purpose: where
    /// exactly they fell is for [`Model::check_recovery`] to settle.
    pub fn check_snapshot_read(
        &self,
        key: &[u8],
        snap_seq: u64,
        result: Option<&[u8]>,
    ) -> Result<(), Violation> {
        if snap_seq < self.base_seq {
            return Err(Violation::SnapshotBelowBase { snap_seq, base_seq: self.base_seq });
        }
        let expected = self.value_at(key, snap_seq);
        if result == expected {
            return Ok(());
        }
        let unknown = self.writers_of(key).filter(|w| w.first_seq().is_none());
        // An unknown write cannot commit at or below its floor (see `history`).
        let mut possible = unknown.filter(|w| w.floor_seq < snap_seq);
        if possible.any(|w| w.final_value(key) == Some(result)) {
            return Ok(());
        }
        Err(Violation::StaleSnapshotRead {
            key: key.to_vec(),
            snap_seq,
            got: result.map(<[u8]>::to_vec),
            expected: expected.map(<[u8]>::to_vec),
        })
    }

    /// The value of `key` after every acked op with seq <= `snap_seq`, over the base state.
    /// Ops count one by one (each has its own seq), which equals whole batches whenever the
    /// snapshot sits on a batch boundary, as the engine's snapshots do.
    fn value_at(&self, key: &[u8], snap_seq: u64) -> Option<&[u8]> {
        let writers = self.by_key.get(key).map_or(&[][..], Vec::as_slice);
        let acked = self.acked_value_among(key, writers, snap_seq);
        acked.unwrap_or_else(|| self.base_state.get(key).map(Vec::as_slice))
    }

    /// As `value_at`, given the writers of `key` (indices into `writes`), without the base
    /// state: `None` if no acked op on `key` has a seq <= `snap_seq`.
    pub(crate) fn acked_value_among(
        &self,
        key: &[u8],
        writers: &[usize],
        snap_seq: u64,
    ) -> Option<Option<&[u8]>> {
        let mut best: Option<(u64, Option<&[u8]>)> = None;
        for write in writers.iter().map(|&index| &self.writes[index]) {
            let Status::Acked { first_seq, .. } = write.status else {
                continue;
            };
            for (offset, op) in write.ops.iter().enumerate() {
                let seq = first_seq + offset as u64;
                if op.key() == key && seq <= snap_seq && best.is_none_or(|(b, _)| b < seq) {
                    best = Some((seq, op.value()));
                }
            }
        }
        best.map(|(_, value)| value)
    }

    /// The writes of this epoch that touch `key`, in issue order.
    pub(crate) fn writers_of(&self, key: &[u8]) -> impl Iterator<Item = &Write> + Clone {
        let indices = self.by_key.get(key).map_or(&[][..], Vec::as_slice);
        indices.iter().map(|&index| &self.writes[index])
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::put;
    use crate::{Model, Op, Violation};

    fn acked(model: &mut Model, ops: Vec<Op>, first_seq: u64) {
        let id = model.issue_write(ops, false);
        model.ack_write(id, first_seq);
    }

    #[test]
    fn a_stale_value_after_a_completed_overwrite_is_rejected() {
        let mut model = Model::new();
        acked(&mut model, vec![put("a", "1")], 1);
        acked(&mut model, vec![put("a", "2")], 2);
        let token = model.begin_read();
        assert_eq!(model.check_read(b"a", &token, Some(b"2")), Ok(()));
        let stale = model.check_read(b"a", &token, Some(b"1")).unwrap_err();
        assert!(matches!(stale, Violation::StaleRead { latest: Some((_, 2)), .. }), "{stale}");
        assert!(stale.to_string().contains("key \"a\" returned \"1\""), "{stale}");
        assert!(model.check_read(b"a", &token, None).is_err());
    }

    #[test]
    fn a_value_from_a_concurrent_write_is_accepted() {
        let mut model = Model::new();
        acked(&mut model, vec![put("a", "1")], 1);
        let before_read = model.issue_write(vec![put("a", "2")], false);
        let token = model.begin_read();
        let during_read = model.issue_write(vec![put("a", "3")], false);
        let failed = model.issue_write(vec![Op::Delete(b"a".to_vec())], false);
        model.fail_write(failed);
        for result in [Some(&b"1"[..]), Some(b"2"), Some(b"3"), None] {
            assert_eq!(model.check_read(b"a", &token, result), Ok(()), "{result:?}");
        }
        model.ack_write(before_read, 2);
        model.ack_write(during_read, 3);
        assert_eq!(model.check_read(b"a", &token, Some(b"2")), Ok(()));
        assert_eq!(model.check_read(b"a", &token, Some(b"3")), Ok(()));
        // A read that starts now has seen both acks.
        let later = model.begin_read();
        assert!(model.check_read(b"a", &later, Some(b"2")).is_err());
        assert_eq!(model.check_read(b"a", &later, Some(b"3")), Ok(()));
    }

    #[test]
    fn a_value_never_written_is_rejected() {
        let mut model = Model::new();
        let token = model.begin_read();
        assert_eq!(model.check_read(b"a", &token, None), Ok(()));
        assert!(model.check_read(b"a", &token, Some(b"9")).is_err());
        acked(&mut model, vec![put("a", "1")], 1);
        model.issue_write(vec![put("b", "9")], false);
        let token = model.begin_read();
        let never = model.check_read(b"a", &token, Some(b"9")).unwrap_err();
        assert!(matches!(never, Violation::StaleRead { concurrent_writes: 0, .. }));
    }

    #[test]
    fn a_value_inside_a_batch_is_never_visible() {
        let mut model = Model::new();
        model.issue_write(vec![put("a", "1"), put("a", "2")], false);
        let token = model.begin_read();
        assert_eq!(model.check_read(b"a", &token, Some(b"2")), Ok(()));
        assert!(model.check_read(b"a", &token, Some(b"1")).is_err());
    }

    #[test]
    fn a_concurrent_write_below_the_latest_ack_is_shadowed() {
        let mut model = Model::new();
        let slow = model.issue_write(vec![put("a", "slow")], false);
        acked(&mut model, vec![put("a", "fast")], 2);
        let token = model.begin_read();
        assert_eq!(model.check_read(b"a", &token, Some(b"slow")), Ok(()));
        model.ack_write(slow, 1);
        assert!(model.check_read(b"a", &token, Some(b"slow")).is_err());
        assert_eq!(model.check_read(b"a", &token, Some(b"fast")), Ok(()));
    }

    #[test]
    fn a_snapshot_read_sees_exactly_its_seq() {
        let mut model = Model::new();
        acked(&mut model, vec![put("a", "1")], 1);
        acked(&mut model, vec![put("a", "2"), put("b", "2")], 2);
        assert_eq!(model.check_snapshot_read(b"a", 0, None), Ok(()));
        assert_eq!(model.check_snapshot_read(b"a", 1, Some(b"1")), Ok(()));
        let stale = model.check_snapshot_read(b"a", 3, Some(b"1")).unwrap_err();
        let expected = Violation::StaleSnapshotRead {
            key: b"a".to_vec(),
            snap_seq: 3,
            got: Some(b"1".to_vec()),
            expected: Some(b"2".to_vec()),
        };
        assert_eq!(stale, expected);
        assert!(model.check_snapshot_read(b"a", 1, Some(b"2")).is_err());
        assert!(model.check_snapshot_read(b"b", 1, Some(b"2")).is_err());
        // An unknown write may fall at or below the snapshot only above its floor (seq 3).
        model.issue_write(vec![put("a", "3")], false);
        assert!(model.check_snapshot_read(b"a", 3, Some(b"3")).is_err());
        assert_eq!(model.check_snapshot_read(b"a", 4, Some(b"3")), Ok(()));
    }

    #[test]
    fn a_snapshot_below_the_base_is_rejected() {
        let mut model = Model::new();
        model.restart([(b"a".to_vec(), b"1".to_vec())].into_iter().collect(), 7);
        assert_eq!(model.check_snapshot_read(b"a", 7, Some(b"1")), Ok(()));
        let below = model.check_snapshot_read(b"a", 6, Some(b"1"));
        assert_eq!(below, Err(Violation::SnapshotBelowBase { snap_seq: 6, base_seq: 7 }));
        let token = model.begin_read();
        assert_eq!(model.check_read(b"a", &token, Some(b"1")), Ok(()));
    }

    #[test]
    #[should_panic(expected = "before a restart")]
    fn a_token_from_an_old_epoch_panics() {
        let mut model = Model::new();
        let token = model.begin_read();
        model.restart(Default::default(), 0);
        let _ = model.check_read(b"a", &token, None);
    }
}
