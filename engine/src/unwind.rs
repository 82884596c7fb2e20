//! Catching a panic in a background job, so that it poisons the database instead of killing
//! its task silently.
//!
//! A background task (the worker, the WAL sync task) that dies of a panic leaves behind writers
//! stalled for a flush that never comes and a `close` that joins a task that never reports
//! back. Each job's future is therefore polled inside `catch_unwind`; the task turns a caught
//! panic into a poisoned database (fail-stop, as for a failed fsync) and stops, since the state
//! the job left behind may be inconsistent. The next open recovers from what is durable.
//!
//! `AssertUnwindSafe` is sound here because nothing the job touched is used as if the job had
//! finished: its task stops, and the database refuses every later write.

use crate::options::{Options, PlantedBug};
use std::future::Future;

/// Runs `job`, returning its output, or the message of the panic it raised. `options` may plant
/// the bug of not catching it.
pub(crate) async fn catch_panic<F: Future>(options: &Options, job: F) -> Result<F::Output, String> {
    if options.has_bug(PlantedBug::BackgroundPanicNotCaught) {
        return Ok(job.await);
    }
    crate::runtime::catch_unwind(job).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::panic_message;

    #[test]
    fn a_panic_message_is_kept_whatever_its_type() {
        let fixed = std::panic::catch_unwind(|| panic!("fixed")).unwrap_err();
        assert_eq!(panic_message(fixed.as_ref()), "fixed");
        let formatted = std::panic::catch_unwind(|| panic!("formatted {}", 7)).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "formatted 7");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert!(panic_message(other.as_ref()).contains("not a message"));
    }

    #[test]
    fn a_job_that_panics_gives_its_message_and_one_that_ends_its_output() {
        let options = Options::default();
        let caught = pollster::block_on(catch_panic(&options, async { panic!("job died") }));
        assert_eq!(caught, Err::<(), _>("job died".to_string()));
        let fine = pollster::block_on(catch_panic(&options, async {
            crate::runtime::yield_now().await;
            7
        }));
        assert_eq!(fine, Ok(7));
    }

    #[cfg(feature = "planted-bugs")]
    #[test]
    fn the_planted_bug_lets_the_panic_through() {
        let options = Options::default().planted_bug(Some(PlantedBug::BackgroundPanicNotCaught));
        let escaped = std::panic::catch_unwind(|| {
            pollster::block_on(catch_panic(&options, async { panic!("job died") }))
        });
        assert!(escaped.is_err(), "the panic reached the task");
    }
}
