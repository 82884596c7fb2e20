//! The publication queue: written groups wait here, in the order they were written, until they
//! may become visible and their writers be told.
//!
//! A group is *ready* once its writes are in its memtable and, if it waits for durability, a
//! successful fsync of its log covers its end. Whoever makes progress (a leader that applied its
//! group, the sync task after an fsync, a leader that rotated or sealed the log) publishes the
//! ready groups at the head: it advances the visible sequence number to each group's last, then
//! completes the group's members. A ready group behind one that is not ready waits for it.
//!
//! Invariants: groups are published strictly in write order, so the visible sequence number
//! only grows and never exposes a group before an earlier one. Once the database is poisoned no
//! queued group is published: each is failed as soon as its writes are applied. The queue holds
//! at most one group per writer blocked in the pipeline, which bounds it.

use super::Host;
use super::{clone_refusal, Outcome, Pending};
use crate::error::Error;
use crate::signal::Signal;
use crate::wal::WalFile;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// One writer of a queued group: how to tell it, and its first sequence number.
#[derive(Debug)]
pub(crate) struct Member {
    signal: Arc<Signal<Outcome>>,
    first: u64,
}

impl Member {
    pub(crate) fn of(pending: &Pending) -> Self {
        Member { signal: Arc::clone(&pending.signal), first: pending.first }
    }
}

/// A written group, as the queue keeps it.
#[derive(Debug)]
pub(crate) struct Group {
    /// The last sequence number the group assigned; published when the group is.
    pub last_seq: u64,
    /// If publication waits for an fsync: the log that holds the group, and where the group
    /// ends in it, which the fsync must cover.
    pub durable_at: Option<(Arc<WalFile>, u64)>,
    pub members: Vec<Member>,
}

impl Group {
    /// Whether the group waits for an fsync that has not yet covered it.
    fn awaits_sync(&self) -> bool {
        self.durable_at.as_ref().is_some_and(|(wal, end)| wal.synced_upto() < *end)
    }
}

#[derive(Debug)]
struct Queued {
    group: Group,
    /// Whether the group's writes are in its memtable; until then it is never ready.
    applied: bool,
}

impl Queued {
    fn ready(&self) -> bool {
        self.applied && !self.group.awaits_sync()
    }
}

#[derive(Debug, Default)]
pub(crate) struct PublishQueue {
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Groups in write order; the front one's ticket is `head_ticket`.
    groups: VecDeque<Queued>,
    head_ticket: u64,
    /// The farthest offset that some group wants durable, in the newest log that has one.
    sync_wanted: Option<(Arc<WalFile>, u64)>,
}

impl PublishQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a written group whose writes are not yet applied, and returns its ticket. Only
    /// the pipeline's leader calls this, so queue order is write order. `want_sync`, the log
    /// and offset the group ends at, asks the sync task to make the group durable (it may be
    /// asked without the group's publication waiting for it: a background sync, or a planted
    /// bug that acknowledges before the fsync).
    pub(crate) fn push(&self, group: Group, want_sync: Option<(Arc<WalFile>, u64)>) -> u64 {
        let mut st = self.lock();
        if let Some((group_wal, group_end)) = want_sync {
            let newer = match &st.sync_wanted {
                Some((wal, end)) => {
                    wal.number() < group_wal.number()
                        || (wal.number() == group_wal.number() && *end < group_end)
                }
                None => true,
            };
            if newer {
                st.sync_wanted = Some((group_wal, group_end));
            }
        }
        let ticket = st.head_ticket + st.groups.len() as u64;
        st.groups.push_back(Queued { group, applied: false });
        ticket
    }

    /// Records that group `ticket` has its writes in its memtable (or, poisoned, that its
    /// leader has gone and the group may be failed).
    pub(crate) fn mark_applied(&self, ticket: u64) {
        let mut st = self.lock();
        // Groups leave the queue only once applied, so the group is still in it.
        let index = ticket.checked_sub(st.head_ticket).expect("an unpublished group's ticket");
        let queued = st.groups.get_mut(index as usize).expect("a queued group's ticket");
        queued.applied = true;
    }

    /// The log and offset the sync task should make durable next: `None` once every wanted
    /// byte is durable. The caller does not sync for a poisoned database.
    pub(crate) fn sync_wanted(&self) -> Option<(Arc<WalFile>, u64)> {
        let mut st = self.lock();
        let (wal, end) = st.sync_wanted.as_ref()?;
        if wal.synced_upto() < *end {
            return Some((Arc::clone(wal), *end));
        }
        // Nothing newer was wanted meanwhile (the lock is held): let go of the log.
        st.sync_wanted = None;
        None
    }

    /// How many writers wait for an fsync: the members of queued groups that need one and
    /// whose end is not yet durable.
    pub(crate) fn waiting_for_sync(&self) -> usize {
        let st = self.lock();
        let waiting = |q: &&Queued| q.group.awaits_sync();
        st.groups.iter().filter(waiting).map(|q| q.group.members.len()).sum()
    }

    /// Publishes every ready group at the head, or fails every applied one if the database is
    /// poisoned, then tells their members.
    pub(crate) fn publish_ready(&self, db: &dyn Host) {
        self.take(db).tell_all();
    }

    /// As `publish_ready`, but tells only one member and hands it the others to tell: for the
    /// sync task, which then starts its next fsync instead of spending a thread wake-up on each
    /// member first.
    pub(crate) fn publish_ready_relayed(&self, db: &dyn Host) {
        self.take(db).relay();
    }

    fn take(&self, db: &dyn Host) -> Completions {
        self.take_ready(|| db.check_not_poisoned().err(), |seq| db.publish(seq))
    }

    /// Takes the groups to complete off the head of the queue: the ready ones, published
    /// through `publish` while the lock keeps publications in order; or, if `refusal` gives
    /// the database's poisoning, every applied one, failed.
    fn take_ready(
        &self,
        refusal: impl FnOnce() -> Option<Error>,
        mut publish: impl FnMut(u64),
    ) -> Completions {
        let mut groups = Vec::new();
        let mut st = self.lock();
        // Read under the lock: once a thread has failed a group, no thread may then publish a
        // group behind it (that would make the failed group's writes visible).
        let refusal = refusal();
        while let Some(head) = st.groups.front() {
            if !head.applied || (refusal.is_none() && !head.ready()) {
                break;
            }
            let Some(Queued { group, .. }) = st.groups.pop_front() else { break };
            st.head_ticket += 1;
            if refusal.is_none() {
                publish(group.last_seq);
            }
            groups.push(group);
        }
        drop(st);
        Completions { groups, refusal }
    }
}

/// Members of published or failed groups that are still to be told their outcome. Whoever
/// holds this tells them, at the latest when dropping it, so no member is left waiting even if
/// the writer it was relayed to has gone. Telling happens without the queue's lock, so leaders
/// queueing new groups do not wait behind the wake-ups.
#[derive(Debug)]
pub(crate) struct Completions {
    groups: Vec<Group>,
    /// Why the groups failed; `None` if they were published.
    refusal: Option<Error>,
}

impl Completions {
    /// Tells every member.
    pub(crate) fn tell_all(mut self) {
        self.tell();
    }

    /// Tells one member its outcome, handing it the rest to tell.
    fn relay(mut self) {
        let Some(group) = self.groups.iter_mut().find(|g| !g.members.is_empty()) else {
            return;
        };
        let member = group.members.swap_remove(0);
        let result = self.result(&member);
        if let Err(Outcome::Done(_, Some(rest))) =
            member.signal.fill(Outcome::Done(result, Some(self)))
        {
            // That writer's future was dropped: tell the others here.
            rest.tell_all();
        }
    }

    fn result(&self, member: &Member) -> crate::Result<u64> {
        match &self.refusal {
            Some(err) => Err(clone_refusal(err)),
            None => Ok(member.first),
        }
    }

    fn tell(&mut self) {
        for group in std::mem::take(&mut self.groups) {
            for member in group.members {
                let result = self.result(&member);
                // A member whose future was dropped is no longer listening; its write stands.
                let _ = member.signal.fill(Outcome::Done(result, None));
            }
        }
    }
}

impl Drop for Completions {
    fn drop(&mut self) {
        self.tell();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Counters, SyncMeter};
    use crate::signal::Wait;
    use crate::testing::{MemFile, MemRuntime};
    use crate::wal::WalWriter;
    use std::future::Future;

    /// A log whose fsyncs always succeed, in memory.
    fn wal(number: u64) -> WalWriter {
        WalWriter::new(Box::new(MemFile::new()), "test.log".into(), number, 0, 0)
    }

    fn group(w: &WalWriter, last_seq: u64, need_sync: bool) -> (Group, Wait<Outcome>) {
        let signal = Signal::new();
        let member = Member { signal: Arc::clone(&signal), first: last_seq };
        let durable_at = need_sync.then(|| (Arc::clone(w.file()), w.offset()));
        (Group { last_seq, durable_at, members: vec![member] }, signal.wait())
    }

    /// Queues a group that asks the sync task for the fsync it waits for.
    fn push_wanting_sync(q: &PublishQueue, g: Group) -> u64 {
        let wanted = g.durable_at.clone();
        q.push(g, wanted)
    }

    fn poisoned() -> Option<Error> {
        Some(Error::Poisoned(Arc::from("test")))
    }

    /// The member's outcome, if it has been told.
    fn outcome(wait: &mut Wait<Outcome>) -> Option<crate::Result<u64>> {
        let waker = std::task::Waker::noop();
        match std::pin::Pin::new(wait).poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(Outcome::Done(result, relayed)) => {
                drop(relayed);
                Some(result)
            }
            std::task::Poll::Ready(Outcome::Lead(..)) => panic!("a member is never made leader"),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn groups_publish_in_write_order_whatever_order_they_become_ready() {
        let q = PublishQueue::default();
        let mut w = wal(1);
        let (counters, rt) = (Counters::default(), MemRuntime::default());
        pollster::block_on(w.append(&[1; 10], true)).unwrap();
        let (g1, mut s1) = group(&w, 1, true);
        let t1 = push_wanting_sync(&q, g1);
        let (g2, mut s2) = group(&w, 2, false);
        let t2 = q.push(g2, None);
        let mut published = Vec::new();

        // The second group is ready first; it must wait for the first.
        q.mark_applied(t2);
        assert!(q.take_ready(|| None, |s| published.push(s)).groups.is_empty());
        q.mark_applied(t1);
        let taken = q.take_ready(|| None, |s| published.push(s));
        assert!(taken.groups.is_empty(), "the first needs sync");
        assert_eq!(q.sync_wanted().map(|(_, end)| end), Some(10));

        pollster::block_on(w.file().sync_to(10, SyncMeter::wal(&counters, &rt))).unwrap();
        assert!(q.sync_wanted().is_none());
        let taken = q.take_ready(|| None, |s| published.push(s));
        assert_eq!(published, [1, 2]);
        assert!(outcome(&mut s1).is_none(), "members are told only after the lock is released");
        taken.tell_all();
        assert_eq!(outcome(&mut s1).unwrap().unwrap(), 1);
        assert_eq!(outcome(&mut s2).unwrap().unwrap(), 2);
    }

    #[test]
    fn a_group_not_yet_applied_holds_back_ready_groups_behind_it() {
        let q = PublishQueue::default();
        let w = wal(1);
        let (g1, _) = group(&w, 1, false);
        let (g2, _) = group(&w, 2, false);
        let t1 = q.push(g1, None);
        let t2 = q.push(g2, None);
        q.mark_applied(t2);
        assert!(q.take_ready(poisoned, |_| panic!("poisoned")).groups.is_empty());
        q.mark_applied(t1);
        let taken = q.take_ready(|| None, |_| {});
        assert!(taken.refusal.is_none());
        assert_eq!(taken.groups.iter().map(|g| g.last_seq).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn relayed_members_are_told_by_the_first_or_when_it_has_gone() {
        let w = wal(1);
        let (mut g, mut first) = group(&w, 1, false);
        let (g2, mut second) = group(&w, 2, false);
        g.members.extend(g2.members);
        let (g3, mut third) = group(&w, 3, false);
        Completions { groups: vec![g, g3], refusal: None }.relay();
        assert!(outcome(&mut second).is_none() && outcome(&mut third).is_none());
        // `outcome` drops what was relayed to the first member, which tells the others.
        assert_eq!(outcome(&mut first).unwrap().unwrap(), 1);
        assert_eq!(outcome(&mut second).unwrap().unwrap(), 2);
        assert_eq!(outcome(&mut third).unwrap().unwrap(), 3);

        let (mut g, gone) = group(&w, 1, false);
        let (g2, mut second) = group(&w, 2, false);
        g.members.extend(g2.members);
        drop(gone);
        Completions { groups: vec![g], refusal: None }.relay();
        assert_eq!(outcome(&mut second).unwrap().unwrap(), 2);
    }

    #[test]
    fn once_poisoned_every_applied_group_fails_and_none_is_published() {
        let q = PublishQueue::default();
        let mut w = wal(1);
        pollster::block_on(w.append(&[1; 10], true)).unwrap();
        let (g1, mut s1) = group(&w, 1, true);
        let (g2, mut s2) = group(&w, 2, false);
        q.mark_applied(push_wanting_sync(&q, g1));
        q.mark_applied(q.push(g2, None));
        q.take_ready(poisoned, |_| panic!("a poisoned queue publishes nothing")).tell_all();
        assert!(matches!(outcome(&mut s1), Some(Err(Error::Poisoned(_)))));
        assert!(matches!(outcome(&mut s2), Some(Err(Error::Poisoned(_)))));
    }

    #[test]
    fn sync_wanted_moves_only_forward() {
        let q = PublishQueue::default();
        let mut old = wal(1);
        let mut new = wal(2);
        pollster::block_on(old.append(&[1; 30], true)).unwrap();
        pollster::block_on(new.append(&[1; 5], true)).unwrap();
        let (g_new, _) = group(&new, 2, true);
        let (g_old, _) = group(&old, 1, true);
        push_wanting_sync(&q, g_new);
        push_wanting_sync(&q, g_old);
        let (wal, end) = q.sync_wanted().unwrap();
        assert_eq!((wal.number(), end), (2, 5));
    }
}
