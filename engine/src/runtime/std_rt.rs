//! The production runtime: real files, the monotonic clock and OS threads.
//!
//! This is the one module of the engine allowed to touch `std::fs`, threads, clocks and OS
//! randomness. File calls complete inline (the returned futures are ready at once), so the
//! async seam costs a boxed future per call and nothing else.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use super::{BoxFuture, DiskSpace, File, FileLock, FileSystem, IoFuture, JoinHandle, Runtime};
use crate::signal::Signal;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Real files, the monotonic clock and OS threads.
#[derive(Debug)]
pub struct StdRuntime {
    fs: StdFs,
    origin: Instant,
    rng: Mutex<ChaCha8Rng>,
}

impl StdRuntime {
    /// A runtime on the machine's file system, seeded from the OS.
    pub fn new() -> Self {
        // std's RandomState draws its keys from the OS; hashing the clock with it gives a seed
        // without another dependency.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        StdRuntime {
            fs: StdFs,
            origin: Instant::now(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(h.finish())),
        }
    }
}

impl Default for StdRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime for StdRuntime {
    fn fs(&self) -> &dyn FileSystem {
        &self.fs
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move { std::thread::sleep(duration) })
    }

    fn spawn(&self, name: &str, task: BoxFuture<'static, ()>) -> JoinHandle {
        let done = Signal::new();
        let finished = Finished(done.clone());
        // A background task that cannot start would silently stop flushes and compactions;
        // failing loudly is the only safe answer when the OS has no thread left to give.
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                // Dropped however the task ends, a panic included.
                let _finished = finished;
                crate::blocking::block_on(task);
            })
            .expect("the OS refused to start a background thread");
        JoinHandle::new(Box::pin(async move { done.wait().await }))
    }

    fn random_u64(&self) -> u64 {
        self.rng.lock().unwrap_or_else(PoisonError::into_inner).next_u64()
    }
}

/// Completes a task's `JoinHandle` when dropped: at the end of the task's thread, whether the
/// task returned or panicked, so that no join waits forever on a thread that is gone.
struct Finished(std::sync::Arc<Signal<()>>);

impl Drop for Finished {
    fn drop(&mut self) {
        // A handle that was dropped (a detached task) is not listening.
        let _ = self.0.fill(());
    }
}

/// The machine's file system.
#[derive(Debug)]
struct StdFs;

fn ready<'a, T: Send + 'a>(r: io::Result<T>) -> IoFuture<'a, T> {
    Box::pin(std::future::ready(r))
}

fn open_file(path: &Path, create: bool) -> io::Result<Box<dyn File>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(create)
        .open(path)?;
    Ok(Box::new(StdFile { file }))
}

impl FileSystem for StdFs {
    fn create<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        ready(open_file(path, true))
    }

    fn open<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        ready(open_file(path, false))
    }

    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        ready(std::fs::remove_file(path))
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        ready(std::fs::rename(from, to))
    }

    fn list<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        ready((|| {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(dir)? {
                if let Ok(name) = entry?.file_name().into_string() {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names)
        })())
    }

    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        ready(std::fs::create_dir_all(dir))
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        ready(std::fs::File::open(dir).and_then(|d| d.sync_all()))
    }

    fn space(&self, dir: &Path) -> io::Result<Option<DiskSpace>> {
        StdFs::statvfs(dir).map(Some)
    }

    fn lock<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn FileLock>> {
        ready((|| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            match file.try_lock() {
                Ok(()) => Ok(Box::new(StdLock { _file: file }) as Box<dyn FileLock>),
                Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked by another process", path.display()),
                )),
                Err(std::fs::TryLockError::Error(e)) => Err(e),
            }
        })())
    }
}

impl StdFs {
    fn statvfs(dir: &Path) -> io::Result<DiskSpace> {
        let st = rustix::fs::statvfs(dir)?;
        let block = st.f_frsize;
        Ok(DiskSpace {
            total_bytes: st.f_blocks.saturating_mul(block),
            free_bytes: st.f_bavail.saturating_mul(block),
        })
    }
}

#[derive(Debug)]
struct StdFile {
    file: std::fs::File,
}

impl File for StdFile {
    fn read_at<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> IoFuture<'a, usize> {
        ready(self.file.read_at(buf, offset))
    }

    fn write_at<'a>(&'a self, offset: u64, data: &'a [u8]) -> IoFuture<'a, ()> {
        ready(self.file.write_all_at(data, offset))
    }

    fn sync_data(&self) -> IoFuture<'_, ()> {
        ready(self.file.sync_data())
    }

    fn truncate(&self, len: u64) -> IoFuture<'_, ()> {
        ready(self.file.set_len(len))
    }

    fn size(&self) -> IoFuture<'_, u64> {
        ready(self.file.metadata().map(|m| m.len()))
    }

    /// `posix_fadvise(DONTNEED)` on the range: Linux starts writing its dirty pages back (not
    /// waiting for them) and drops those already clean, which bytes just written are not. (Linux
    /// has `sync_file_range` for the first half alone, which rustix does not wrap.) Elsewhere
    /// the hint is not given: what other systems do with `DONTNEED` differs.
    #[cfg(target_os = "linux")]
    fn write_behind(&self, offset: u64, len: u64) -> IoFuture<'_, ()> {
        let Some(len) = std::num::NonZeroU64::new(len) else { return ready(Ok(())) };
        let advice = rustix::fs::Advice::DontNeed;
        ready(rustix::fs::fadvise(&self.file, offset, Some(len), advice).map_err(io::Error::from))
    }
}

/// The lock is released when the file is closed.
#[derive(Debug)]
struct StdLock {
    _file: std::fs::File,
}

impl FileLock for StdLock {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Regression: a task that panicked left its `JoinHandle` pending forever, so `close`
    /// hung joining a background task that had died.
    #[test]
    fn joining_a_task_that_panicked_completes() {
        let rt = StdRuntime::new();
        let handle = rt.spawn("panics", Box::pin(async { panic!("test: the task died") }));
        let (tx, rx) = mpsc::channel();
        // The join runs on its own thread, so a join that hangs fails the test instead.
        std::thread::spawn(move || {
            crate::blocking::block_on(handle.join());
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(20)).expect("the join hung");
    }

    #[test]
    fn the_disk_holding_a_directory_has_a_size_and_free_space() {
        let space = StdRuntime::new().fs().space(&std::env::temp_dir()).unwrap().unwrap();
        assert!(space.total_bytes > 0);
        assert!(space.free_bytes <= space.total_bytes, "{space:?}");
        assert!(StdRuntime::new().fs().space(Path::new("/no/such/directory")).is_err());
    }

    /// Writing back is only a hint: it succeeds on bytes just written, changes none of them,
    /// and a sync still makes them durable.
    #[test]
    fn written_bytes_can_be_written_back_unchanged() {
        let path = std::env::temp_dir().join(format!("jadedb-write-behind-{}", std::process::id()));
        let rt = StdRuntime::new();
        let data: Vec<u8> = (0..3u32 << 20).map(|i| i as u8).collect();
        crate::blocking::block_on(async {
            let file = rt.fs().create(&path).await.unwrap();
            file.write_at(0, &data).await.unwrap();
            file.write_behind(0, 2 << 20).await.unwrap();
            file.write_behind(2 << 20, 0).await.unwrap();
            file.sync_data().await.unwrap();
            let mut back = vec![0; data.len()];
            crate::runtime::read_exact_at(file.as_ref(), 0, &mut back).await.unwrap();
            assert!(back == data, "the bytes changed");
        });
        std::fs::remove_file(&path).unwrap();
    }
}
