//! [`MemRuntime`]: the crashing in-memory disk with the std runtime's clock and threads, so
//! tests can drive the engine's real concurrency over a disk they can crash and break.

use crate::MemFs;
use jadedb::runtime::{BoxFuture, FileSystem, JoinHandle, Runtime, StdRuntime};
use std::sync::Arc;
use std::time::Duration;

/// A runtime whose files live on a [`MemFs`] and whose tasks are OS threads.
#[derive(Debug)]
pub struct MemRuntime {
    fs: MemFs,
    std: StdRuntime,
}

impl MemRuntime {
    /// A runtime over `fs` (a handle to the same disk: crash it through the caller's handle).
    pub fn new(fs: &MemFs) -> Arc<Self> {
        Arc::new(MemRuntime { fs: fs.clone(), std: StdRuntime::new() })
    }
}

impl Runtime for MemRuntime {
    fn fs(&self) -> &dyn FileSystem {
        &self.fs
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
