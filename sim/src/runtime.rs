//! The simulated runtime: madsim's virtual clock and executor, and the crashing in-memory disk.
//!
//! Every file call first sleeps a seeded latency on the virtual clock, so that tasks interleave
//! at every I/O and a crash (killing the node) can land between any two of them. Calls and
//! results are recorded in the scenario [`Trace`].

use crate::trace::Trace;
use jadedb::runtime::{BoxFuture, File, FileLock, FileSystem, IoFuture, JoinHandle, Runtime};
use jadedb_fault::{FaultFs, MemFs};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Virtual time since the scenario started, in nanoseconds.
pub fn now_ns() -> u128 {
    madsim::time::TimeHandle::current().elapsed().as_nanos()
}

/// Seeded latencies for file calls.
#[derive(Debug)]
struct Latency {
    rng: Mutex<ChaCha8Rng>,
}

impl Latency {
    fn draw(&self, op: &str) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        // madsim sleeps at least 1 ms, so virtual time is in milliseconds: an fsync costs a few
        // of them, everything else one.
        let ms = match op {
            "sync" | "sync_dir" => rng.gen_range(1..=4),
            _ => 1,
        };
        Duration::from_millis(ms)
    }
}

/// The file system the engine sees in a scenario: latency and tracing over fault injection
/// over the crashing in-memory disk.
#[derive(Clone, Debug)]
pub struct SimFs {
    inner: FaultFs<MemFs>,
    latency: Arc<Latency>,
    trace: Trace,
}

impl SimFs {
    pub fn new(inner: FaultFs<MemFs>, seed: u64, trace: Trace) -> Self {
        let latency = Latency { rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)) };
        SimFs { inner, latency: Arc::new(latency), trace }
    }

    async fn delay(&self, op: &str) {
        madsim::time::sleep(self.latency.draw(op)).await;
    }

    fn record<T>(&self, op: &str, path: &Path, detail: &str, result: &io::Result<T>) {
        self.trace.event(now_ns(), || match result {
            Ok(_) => format!("fs {op} {} {detail}", path.display()),
            Err(e) => format!("fs {op} {} {detail} -> error {e}", path.display()),
        });
    }
}

impl FileSystem for SimFs {
    fn create<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        Box::pin(async move {
            self.delay("create").await;
            let r = self.inner.create(path).await;
            self.record("create", path, "", &r);
            Ok(Box::new(SimFile { inner: r?, fs: self.clone(), path: path.to_path_buf() })
                as Box<dyn File>)
        })
    }

    fn open<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        Box::pin(async move {
            self.delay("open").await;
            let r = self.inner.open(path).await;
            self.record("open", path, "", &r);
            Ok(Box::new(SimFile { inner: r?, fs: self.clone(), path: path.to_path_buf() })
                as Box<dyn File>)
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.delay("remove").await;
            let r = self.inner.remove(path).await;
            self.record("remove", path, "", &r);
            r
        })
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.delay("rename").await;
            let r = self.inner.rename(from, to).await;
            self.record("rename", from, &to.display().to_string(), &r);
            r
        })
    }

    fn list<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        Box::pin(async move {
            self.delay("list").await;
            let r = self.inner.list(dir).await;
            let detail = r.as_ref().map(|names| names.join(",")).unwrap_or_default();
            self.record("list", dir, &detail, &r);
            r
        })
    }

    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.delay("mkdir").await;
            let r = self.inner.create_dir_all(dir).await;
            self.record("mkdir", dir, "", &r);
            r
        })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.delay("sync_dir").await;
            let r = self.inner.sync_dir(dir).await;
            self.record("sync_dir", dir, "", &r);
            r
        })
    }

    fn lock<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn FileLock>> {
        Box::pin(async move {
            let r = self.inner.lock(path).await;
            self.record("lock", path, "", &r);
            r
        })
    }
}

/// A file of a [`SimFs`].
struct SimFile {
    inner: Box<dyn File>,
    fs: SimFs,
    path: std::path::PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimFile({})", self.path.display())
    }
}

impl File for SimFile {
    fn read_at<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> IoFuture<'a, usize> {
        Box::pin(async move {
            self.fs.delay("read").await;
            let r = self.inner.read_at(offset, buf).await;
            let detail = format!("@{offset} len {}", buf.len());
            self.fs.record("read", &self.path, &detail, &r);
            r
        })
    }

    fn write_at<'a>(&'a self, offset: u64, data: &'a [u8]) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.fs.delay("write").await;
            let r = self.inner.write_at(offset, data).await;
            let detail = format!("@{offset} len {}", data.len());
            self.fs.record("write", &self.path, &detail, &r);
            r
        })
    }

    fn sync_data(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.fs.delay("sync").await;
            let r = self.inner.sync_data().await;
            self.fs.record("sync", &self.path, "", &r);
            r
        })
    }

    fn truncate(&self, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.fs.delay("truncate").await;
            let r = self.inner.truncate(len).await;
            self.fs.record("truncate", &self.path, &len.to_string(), &r);
            r
        })
    }

    fn size(&self) -> IoFuture<'_, u64> {
        self.inner.size()
    }
}

/// The runtime a simulated process runs on.
#[derive(Debug)]
pub struct SimRuntime {
    fs: SimFs,
    rng: Mutex<ChaCha8Rng>,
}

impl SimRuntime {
    pub fn new(fs: SimFs, seed: u64) -> Self {
        SimRuntime { fs, rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)) }
    }
}

impl Runtime for SimRuntime {
    fn fs(&self) -> &dyn FileSystem {
        &self.fs
    }

    fn now(&self) -> Duration {
        madsim::time::TimeHandle::current().elapsed()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(madsim::time::sleep(duration))
    }

    fn spawn(&self, name: &str, task: BoxFuture<'static, ()>) -> JoinHandle {
        let handle = madsim::task::Builder::new().name(name).spawn(task);
        JoinHandle::new(Box::pin(async move {
            let _ = handle.await;
        }))
    }

    fn random_u64(&self) -> u64 {
        self.rng.lock().unwrap_or_else(PoisonError::into_inner).gen()
    }
}
