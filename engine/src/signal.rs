//! A one-shot value cell whose receiver is a future: the wait primitive of the engine.
//!
//! The engine never blocks a thread to wait (a blocked thread deadlocks the single-threaded
//! simulator), so every wait is on a [`Signal`]: one side fills it once, the other awaits it.
//! The mutex inside is held only for the few instructions that move the value or the waker.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

#[derive(Debug)]
enum State<T> {
    Empty(Option<Waker>),
    Full(T),
    Taken,
}

/// A cell filled at most once and awaited by one receiver.
#[derive(Debug)]
pub struct Signal<T> {
    state: Mutex<State<T>>,
}

impl<T> Signal<T> {
    /// A new empty cell, shared between the filler and the waiter.
    pub fn new() -> Arc<Self> {
        Arc::new(Signal {
            state: Mutex::new(State::Empty(None)),
        })
    }

    /// Fills the cell and wakes the waiter. Filling twice is a bug in the caller.
    pub fn fill(&self, value: T) {
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let previous = std::mem::replace(&mut *state, State::Full(value));
            match previous {
                State::Empty(waker) => waker,
                State::Full(_) | State::Taken => panic!("signal filled twice"),
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Completes with the value once the cell is filled.
    pub fn wait(self: &Arc<Self>) -> Wait<T> {
        Wait {
            signal: Arc::clone(self),
        }
    }
}

/// The future returned by [`Signal::wait`].
#[derive(Debug)]
pub struct Wait<T> {
    signal: Arc<Signal<T>>,
}

impl<T> Future for Wait<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = self
            .signal
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *state, State::Taken) {
            State::Full(value) => Poll::Ready(value),
            State::Empty(_) => {
                *state = State::Empty(Some(cx.waker().clone()));
                Poll::Pending
            }
            State::Taken => panic!("signal awaited after it completed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_before_wait_completes() {
        let s = Signal::new();
        s.fill(7);
        assert_eq!(pollster::block_on(s.wait()), 7);
    }

    #[test]
    fn wait_then_fill_from_another_thread() {
        let s = Signal::new();
        let filler = Arc::clone(&s);
        #[allow(clippy::disallowed_methods)] // a test of cross-thread wake-ups needs a thread
        let t = std::thread::spawn(move || filler.fill(9));
        assert_eq!(pollster::block_on(s.wait()), 9);
        t.join().unwrap();
    }
}
