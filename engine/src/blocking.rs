//! The blocking facade's executor: drives one future to completion on the calling thread.
//!
//! The thread parks between polls and the future's waker unparks it. A park and an unpark are
//! one atomic operation each, plus a futex call only when the thread really sleeps; a
//! mutex-and-condvar executor (pollster) also makes the woken thread contend for the mutex
//! that its waker still holds, which costs a second sleep on every wake-up. Writers of a commit
//! group are woken once per write, so this is on the hot path.
//!
//! Only the blocking API and the std runtime's threads use this; the simulator drives the async
//! API on its own executor.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

struct Unparker(Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// One waker per thread, so that a blocking call allocates nothing for it.
    static WAKER: Waker = Waker::from(Arc::new(Unparker(std::thread::current())));
    /// How many `block_on` calls are running on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Polls `future` until it completes, parking the thread while it is pending.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let depth = DEPTH.with(|d| d.replace(d.get() + 1));
    let output = WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            // Returns at once if an unpark came since the last park, and may return spuriously:
            // either way the loop polls again.
            std::thread::park();
        }
    });
    DEPTH.with(|d| d.set(depth));
    if depth > 0 {
        // A nested call shares the thread's waker with the call around it and may have
        // consumed a wake-up meant for it: make that one poll again.
        std::thread::current().unpark();
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Signal;

    #[test]
    fn wakes_from_another_thread() {
        for i in 0..100 {
            let s = Signal::new();
            let filler = Arc::clone(&s);
            #[allow(clippy::disallowed_methods)] // a test of cross-thread wake-ups needs a thread
            let t = std::thread::spawn(move || filler.fill(i).unwrap());
            assert_eq!(block_on(s.wait()), i);
            t.join().unwrap();
        }
    }

    #[test]
    fn nested_calls_work() {
        assert_eq!(block_on(async { block_on(async { 3 }) + 1 }), 4);
    }
}
