//! [`MemRuntime`]: the crashing in-memory disk (or any file system, fault wrappers included)
//! with the std runtime's clock and threads, so tests can drive the engine's real concurrency
//! over a disk they can crash and break.

use crate::MemFs;
use jadedb::runtime::{BoxFuture, FileSystem, JoinHandle, Runtime, StdRuntime};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A runtime whose files live on an in-memory file system and whose tasks are OS threads.
pub struct MemRuntime {
    fs: Box<dyn FileSystem>,
    std: StdRuntime,
}

impl MemRuntime {
    /// A runtime over `fs` (a handle to the same disk: crash it through the caller's handle).
    pub fn new(fs: &MemFs) -> Arc<Self> {
        Self::over(fs.clone())
    }

    /// A runtime over any file system, such as a [`crate::FaultFs`] wrapping a [`MemFs`].
    pub fn over(fs: impl FileSystem + 'static) -> Arc<Self> {
        Arc::new(MemRuntime { fs: Box::new(fs), std: StdRuntime::new() })
    }
}

impl fmt::Debug for MemRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemRuntime").finish_non_exhaustive()
    }
}

impl Runtime for MemRuntime {
    fn fs(&self) -> &dyn FileSystem {
        self.fs.as_ref()
    }
    fn now(&self) -> Duration {
        self.std.now()
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.std.sleep(d)
    }
    fn spawn(&self, name: &str, task: BoxFuture<'static, ()>) -> JoinHandle {
        self.std.spawn(name, task)
    }
    fn random_u64(&self) -> u64 {
        self.std.random_u64()
    }
}
