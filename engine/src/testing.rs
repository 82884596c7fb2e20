//! Test doubles shared by the unit tests of several modules: an in-memory file whose syncs can
//! be made to fail, and a runtime whose file system holds such files (its tasks are threads).

use crate::runtime::{
    BoxFuture, File, FileLock, FileSystem, IoFuture, JoinHandle, Runtime, StdRuntime,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A file in memory whose durable size is observable and whose next sync can be made to fail.
#[derive(Debug, Default)]
pub(crate) struct MemFile {
    data: Mutex<Vec<u8>>,
    durable_len: AtomicU64,
    fail_next_sync: AtomicBool,
    /// Every range asked to be written back (`File::write_behind`), in order.
    written_behind: Mutex<Vec<(u64, u64)>>,
}

impl MemFile {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(MemFile::default())
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current size.
    pub(crate) fn len(&self) -> u64 {
        self.data().len() as u64
    }

    /// What the file holds.
    pub(crate) fn contents(&self) -> Vec<u8> {
        self.data().clone()
    }

    /// The size as of the last successful sync.
    pub(crate) fn durable_len(&self) -> u64 {
        self.durable_len.load(Ordering::Relaxed)
    }

    pub(crate) fn fail_next_sync(&self) {
        self.fail_next_sync.store(true, Ordering::Relaxed);
    }

    /// Every range asked to be written back, as (offset, length), in order.
    pub(crate) fn written_behind(&self) -> Vec<(u64, u64)> {
        self.written_behind.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn ready<'a, T: Send + 'a>(r: io::Result<T>) -> IoFuture<'a, T> {
    Box::pin(std::future::ready(r))
}

impl File for Arc<MemFile> {
    fn read_at<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> IoFuture<'a, usize> {
        let data = self.data();
        let start = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        ready(Ok(n))
    }

    fn write_at<'a>(&'a self, offset: u64, bytes: &'a [u8]) -> IoFuture<'a, ()> {
        let mut data = self.data();
        let end = offset as usize + bytes.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(bytes);
        ready(Ok(()))
    }

    fn sync_data(&self) -> IoFuture<'_, ()> {
        if self.fail_next_sync.swap(false, Ordering::Relaxed) {
            return ready(Err(io::Error::other("injected fsync failure")));
        }
        self.durable_len.store(self.len(), Ordering::Relaxed);
        ready(Ok(()))
    }

    fn truncate(&self, len: u64) -> IoFuture<'_, ()> {
        self.data().resize(len as usize, 0);
        ready(Ok(()))
    }

    fn size(&self) -> IoFuture<'_, u64> {
        ready(Ok(self.len()))
    }

    fn write_behind(&self, offset: u64, len: u64) -> IoFuture<'_, ()> {
        assert!(offset + len <= self.len(), "asked to write back bytes not yet written");
        self.written_behind.lock().unwrap_or_else(PoisonError::into_inner).push((offset, len));
        ready(Ok(()))
    }
}

/// A runtime whose files live in memory; time, tasks and randomness are the std runtime's.
#[derive(Debug, Default)]
pub(crate) struct MemRuntime {
    fs: MemFs,
    std: StdRuntime,
    /// Tasks started with `spawn` that have finished.
    pub tasks_finished: Arc<AtomicUsize>,
}

impl MemRuntime {
    /// The file at `path`; panics if there is none.
    pub(crate) fn file(&self, path: &Path) -> Arc<MemFile> {
        Arc::clone(lock(&self.fs.files).get(path).expect("the file exists"))
    }
}

impl Runtime for MemRuntime {
    fn fs(&self) -> &dyn FileSystem {
        &self.fs
    }

    fn now(&self) -> Duration {
        self.std.now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.std.sleep(duration)
    }

    fn spawn(&self, name: &str, task: BoxFuture<'static, ()>) -> JoinHandle {
        let finished = Arc::clone(&self.tasks_finished);
        self.std.spawn(
            name,
            Box::pin(async move {
                task.await;
                finished.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    fn random_u64(&self) -> u64 {
        self.std.random_u64()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Files by path; directories exist implicitly, and every name is durable at once.
#[derive(Debug, Default)]
struct MemFs {
    files: Mutex<BTreeMap<PathBuf, Arc<MemFile>>>,
    locks: Arc<Mutex<BTreeSet<PathBuf>>>,
}

#[derive(Debug)]
struct MemLock {
    path: PathBuf,
    locks: Arc<Mutex<BTreeSet<PathBuf>>>,
}

impl FileLock for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        lock(&self.locks).remove(&self.path);
    }
}

impl FileSystem for MemFs {
    fn create<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        let file = MemFile::new();
        lock(&self.files).insert(path.to_path_buf(), Arc::clone(&file));
        ready(Ok(Box::new(file) as Box<dyn File>))
    }

    fn open<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        ready(match lock(&self.files).get(path) {
            Some(file) => Ok(Box::new(Arc::clone(file)) as Box<dyn File>),
            None => Err(io::Error::new(io::ErrorKind::NotFound, path.display().to_string())),
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        lock(&self.files).remove(path);
        ready(Ok(()))
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        let mut files = lock(&self.files);
        let result = match files.remove(from) {
            Some(file) => {
                files.insert(to.to_path_buf(), file);
                Ok(())
            }
            None => Err(io::Error::new(io::ErrorKind::NotFound, from.display().to_string())),
        };
        ready(result)
    }

    fn list<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        let files = lock(&self.files);
        let names = files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| Some(p.file_name()?.to_str()?.to_string()))
            .collect();
        ready(Ok(names))
    }

    fn create_dir_all<'a>(&'a self, _: &'a Path) -> IoFuture<'a, ()> {
        ready(Ok(()))
    }

    fn sync_dir<'a>(&'a self, _: &'a Path) -> IoFuture<'a, ()> {
        ready(Ok(()))
    }

    fn lock<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn FileLock>> {
        let fresh = lock(&self.locks).insert(path.to_path_buf());
        ready(if fresh {
            let locks = Arc::clone(&self.locks);
            Ok(Box::new(MemLock { path: path.to_path_buf(), locks }) as Box<dyn FileLock>)
        } else {
            Err(io::Error::new(io::ErrorKind::WouldBlock, "locked"))
        })
    }
}

/// A hex dump with offsets and printable bytes, for golden snapshots of file bytes.
pub(crate) fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        let text: String =
            line.iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect();
        out.push_str(&format!("{:06x}  {:<47}  {text}\n", i * 16, hex.join(" ")));
    }
    out
}
