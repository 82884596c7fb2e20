//! A one-shot value cell whose receiver is a future: the wait primitive of the engine.
//!
//! The engine never blocks a thread to wait (a blocked thread deadlocks the single-threaded
//! simulator), so every wait is on a [`Signal`]: one side fills it once, the other awaits it.
//! The mutex inside is held only for the few instructions that move the value or the waker.
//! A [`Doorbell`] builds a re-armable wake-up for a background task out of signals.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

#[derive(Debug)]
enum State<T> {
    Empty(Option<Waker>),
    Full(T),
    Taken,
    /// The waiter went away before the value came (its future was dropped).
    Abandoned,
}

/// A cell filled at most once and awaited by one receiver.
#[derive(Debug)]
pub struct Signal<T> {
    state: Mutex<State<T>>,
}

impl<T> Signal<T> {
    /// A new empty cell, shared between the filler and the waiter.
    pub fn new() -> Arc<Self> {
        Arc::new(Signal { state: Mutex::new(State::Empty(None)) })
    }

    /// Fills the cell and wakes the waiter. Gives the value back if the waiter is not listening, so
    /// that nothing it carried (leadership of the commit pipeline, say) is lost. Filling twice
    /// is a bug in the caller.
    pub fn fill(&self, value: T) -> Result<(), T> {
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match &mut *state {
                State::Empty(waker) => {
                    let waker = waker.take();
                    *state = State::Full(value);
                    waker
                }
                // Either way the waiter is no longer listening: it went away, or it already
                // took a value and moved on (a leader cancelled before it took its group).
                State::Abandoned | State::Taken => return Err(value),
                State::Full(_) => panic!("signal filled twice"),
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Completes with the value once the cell is filled.
    pub fn wait(self: &Arc<Self>) -> Wait<T> {
        Wait { signal: Arc::clone(self), done: false }
    }
}

/// The future returned by [`Signal::wait`].
#[derive(Debug)]
pub struct Wait<T> {
    signal: Arc<Signal<T>>,
    done: bool,
}

impl<T> Future for Wait<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = self.signal.state.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *state, State::Taken) {
            State::Full(value) => {
                drop(state);
                self.done = true;
                Poll::Ready(value)
            }
            State::Empty(_) => {
                *state = State::Empty(Some(cx.waker().clone()));
                Poll::Pending
            }
            State::Taken | State::Abandoned => panic!("signal awaited after it completed"),
        }
    }
}

impl<T> Drop for Wait<T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // An empty cell is marked so that the filler gets its value back. A value that arrived
        // but was never taken is dropped here; values that must not be lost (a `LeadToken`)
        // pass themselves on when dropped.
        let mut state = self.signal.state.lock().unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::replace(&mut *state, State::Abandoned);
        drop(state);
        drop(old);
    }
}

/// Wakes one background task that waits for work: rings are remembered until the task next
/// waits, so a ring that comes while the task is busy is never lost, and many rings coalesce.
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    state: Mutex<Bell>,
}

#[derive(Debug, Default)]
struct Bell {
    rung: bool,
    stopped: bool,
    waiter: Option<Arc<Signal<()>>>,
}

impl Doorbell {
    fn lock(&self) -> std::sync::MutexGuard<'_, Bell> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the task there may be work. Cheap when the task is busy: it only sets a flag.
    pub(crate) fn ring(&self) {
        let waiter = {
            let mut bell = self.lock();
            bell.rung = true;
            bell.waiter.take()
        };
        if let Some(waiter) = waiter {
            // A waiter that went away (its task was dropped) needs no wake-up.
            let _ = waiter.fill(());
        }
    }

    /// Tells the task to stop; every later `wait` returns `false`.
    pub(crate) fn stop(&self) {
        let waiter = {
            let mut bell = self.lock();
            bell.stopped = true;
            bell.waiter.take()
        };
        if let Some(waiter) = waiter {
            let _ = waiter.fill(());
        }
    }

    /// Waits until the bell has rung since the last `wait` returned (`true`) or it is stopped
    /// (`false`). Meant for one waiting task at a time.
    pub(crate) async fn wait(&self) -> bool {
        loop {
            let signal = {
                let mut bell = self.lock();
                if bell.stopped {
                    return false;
                }
                if std::mem::take(&mut bell.rung) {
                    return true;
                }
                let signal = Signal::new();
                bell.waiter = Some(Arc::clone(&signal));
                signal
            };
            signal.wait().await;
        }
    }
}

/// Rings a pool of workers, each waiting on a doorbell of its own: a ring wakes them all (each
/// then looks for work it may take), a stop stops them all, and one added after a stop starts
/// stopped.
#[derive(Debug, Default)]
pub(crate) struct Doorbells {
    state: Mutex<(Vec<Arc<Doorbell>>, bool)>,
}

impl Doorbells {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Arc<Doorbell>>, bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new member's doorbell, rung (so that it looks for work once at the start).
    pub(crate) fn add(&self) -> Arc<Doorbell> {
        let bell = Arc::new(Doorbell::default());
        let mut state = self.lock();
        if state.1 {
            bell.stop();
        } else {
            bell.ring();
        }
        state.0.push(Arc::clone(&bell));
        bell
    }

    pub(crate) fn ring(&self) {
        for bell in self.lock().0.iter() {
            bell.ring();
        }
    }

    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.1 = true;
        for bell in state.0.iter() {
            bell.stop();
        }
    }
}

/// Wakes every task waiting for some state to change (a flush that made room for writes, a
/// poisoning). A waiter listens *before* checking the state, so a change between the check and
/// the wait is never missed.
#[derive(Debug, Default)]
pub(crate) struct Notify {
    waiters: Mutex<Vec<Arc<Signal<()>>>>,
}

impl Notify {
    /// A future that completes at the next `notify_all`.
    pub(crate) fn listen(&self) -> Wait<()> {
        let signal = Signal::new();
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::clone(&signal));
        signal.wait()
    }

    pub(crate) fn notify_all(&self) {
        let waiters =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for waiter in waiters {
            // A waiter that went away needs no wake-up.
            let _ = waiter.fill(());
        }
    }
}

/// A lock whose holder may await while holding it (the MANIFEST writer is held across its
/// appends and fsyncs). Waiters park on a [`Notify`] and try again when a holder lets go; no
/// thread ever blocks. Not fair: a waiter woken late may lose to a newcomer, which a handful
/// of background jobs can afford.
#[derive(Debug)]
pub(crate) struct AsyncLock<T> {
    slot: Mutex<Option<T>>,
    released: Notify,
}

/// Holds an [`AsyncLock`]'s value; dropping it (however the holder ends) gives the value back.
#[derive(Debug)]
pub(crate) struct AsyncLockGuard<'a, T> {
    lock: &'a AsyncLock<T>,
    value: Option<T>,
}

impl<T> AsyncLock<T> {
    pub(crate) fn new(value: T) -> Self {
        AsyncLock { slot: Mutex::new(Some(value)), released: Notify::default() }
    }

    /// Takes the value if no one else holds it.
    pub(crate) fn try_lock(&self) -> Option<AsyncLockGuard<'_, T>> {
        let taken = self.slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        taken.map(|value| AsyncLockGuard { lock: self, value: Some(value) })
    }

    /// Waits until no one else holds the value, and takes it.
    pub(crate) async fn lock(&self) -> AsyncLockGuard<'_, T> {
        loop {
            // Listening before trying: a release in between still wakes this wait.
            let released = self.released.listen();
            let taken = self.slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(value) = taken {
                return AsyncLockGuard { lock: self, value: Some(value) };
            }
            released.await;
        }
    }
}

impl<T: Default> Default for AsyncLock<T> {
    fn default() -> Self {
        AsyncLock::new(T::default())
    }
}

impl<T> std::ops::Deref for AsyncLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("held until dropped")
    }
}

impl<T> std::ops::DerefMut for AsyncLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("held until dropped")
    }
}

impl<T> Drop for AsyncLockGuard<'_, T> {
    fn drop(&mut self) {
        *self.lock.slot.lock().unwrap_or_else(PoisonError::into_inner) = self.value.take();
        self.lock.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_before_wait_completes() {
        let s = Signal::new();
        s.fill(7).unwrap();
        assert_eq!(pollster::block_on(s.wait()), 7);
    }

    #[test]
    fn wait_then_fill_from_another_thread() {
        let s = Signal::new();
        let filler = Arc::clone(&s);
        #[allow(clippy::disallowed_methods)] // a test of cross-thread wake-ups needs a thread
        let t = std::thread::spawn(move || filler.fill(9).unwrap());
        assert_eq!(pollster::block_on(s.wait()), 9);
        t.join().unwrap();
    }

    #[test]
    fn filling_an_abandoned_signal_gives_the_value_back() {
        let s = Signal::new();
        let wait = s.wait();
        drop(wait);
        assert_eq!(s.fill(5), Err(5));
    }

    #[test]
    fn an_async_lock_waits_for_its_holder_to_let_go() {
        let lock = AsyncLock::new(1);
        let mut held = pollster::block_on(lock.lock());
        let mut waiter = Box::pin(lock.lock());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiter.as_mut().poll(&mut cx).is_pending(), "held elsewhere");
        *held += 1;
        drop(held);
        match waiter.as_mut().poll(&mut cx) {
            Poll::Ready(guard) => assert_eq!(*guard, 2),
            Poll::Pending => panic!("the value was given back"),
        };
    }

    #[test]
    fn doorbell_remembers_a_ring_until_the_next_wait() {
        let bell = Doorbell::default();
        bell.ring();
        bell.ring();
        assert!(pollster::block_on(bell.wait()));
        let bell = Arc::new(bell);
        let ringer = Arc::clone(&bell);
        #[allow(clippy::disallowed_methods)] // the ring must come while the waiter is parked
        let t = std::thread::spawn(move || ringer.ring());
        assert!(pollster::block_on(bell.wait()));
        t.join().unwrap();
        bell.stop();
        bell.ring();
        assert!(!pollster::block_on(bell.wait()));
    }
}
