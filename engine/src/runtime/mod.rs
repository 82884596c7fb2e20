//! The runtime seam: the only way the engine reaches files, time, tasks and randomness.
//!
//! Production uses [`StdRuntime`] (real files, the monotonic clock, OS threads); the simulator
//! supplies its own implementation with a crashing in-memory disk and virtual time. Because the
//! same engine code runs on both, every file operation is a point where the simulator may switch
//! tasks or crash the process, which is why every method that touches storage is async.
//!
//! Invariant: nothing in the engine outside `runtime::std_rt` calls `std::fs`, spawns a thread,
//! reads a clock or draws OS randomness (clippy's `disallowed-methods` enforces it).

mod std_rt;

pub use std_rt::StdRuntime;

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed future, as returned by the object-safe methods of the seam.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of a file-system call.
pub type IoFuture<'a, T> = BoxFuture<'a, io::Result<T>>;

/// The runtime the engine runs on: a file system, a clock, a task spawner and seeded randomness.
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// The file system holding the database.
    fn fs(&self) -> &dyn FileSystem;

    /// Monotonic time since an arbitrary fixed origin. Never goes backwards.
    fn now(&self) -> Duration;

    /// Completes after at least `duration` has passed on this runtime's clock.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;

    /// Starts `task` in the background under `name` (for traces and thread names). The returned
    /// handle completes when the task has finished; dropping the handle detaches the task.
    fn spawn(&self, name: &str, task: BoxFuture<'static, ()>) -> JoinHandle;

    /// A random number. Under the simulator the sequence is fixed by the scenario's seed.
    fn random_u64(&self) -> u64;

    /// Told when the engine enters (`entered`) or leaves a named [`Phase`] of its work. For
    /// observers: the simulator crashes the process inside chosen phases and counts where its
    /// crashes landed. Phases nest and may overlap across tasks. The default does nothing.
    fn phase(&self, phase: Phase, entered: bool) {
        let _ = (phase, entered);
    }

    /// Whether the in-code fault point `point` fires now (FoundationDB's BUGGIFY): a background
    /// job delayed, a memtable rotated early, a smaller commit group, a yield between steps that
    /// usually run back to back. The engine asks only when built with its `buggify` feature,
    /// which only the simulator enables; the default never fires.
    fn buggify(&self, point: &'static str) -> bool {
        let _ = point;
        false
    }

    /// The same files as [`Runtime::fs`], seen without simulated latency or injected faults:
    /// for the engine's structure checker (its `invariants` feature), whose reads are a test's
    /// oracle and must not change the run they check (its timing, its fault draws). `None`, the
    /// default, makes the checker read through `fs`.
    fn checker_fs(&self) -> Option<&dyn FileSystem> {
        None
    }
}

/// Named stretches of engine work that a crash may land inside, reported through
/// [`Runtime::phase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Opening a database: reading `CURRENT`, the MANIFEST and the WALs, flushing the replayed
    /// writes, writing a fresh MANIFEST and WAL, deleting what is obsolete.
    Recovery,
    /// Retiring a full memtable: finishing its WAL and creating the next one.
    WalRotation,
    /// Recording a flushed table in the MANIFEST, swapping it for its memtable and deleting the
    /// memtable's WAL.
    FlushInstall,
    /// Recording a compaction's outputs (or a moved table) in the MANIFEST and swapping them for
    /// its inputs.
    CompactionInstall,
    /// Writing a fresh MANIFEST once the live one has grown past its limit, and deleting the old.
    ManifestRotation,
    /// Pointing `CURRENT` at a new MANIFEST: temporary file, sync, rename, directory sync.
    CurrentReplacement,
    /// `Db::close`: sealing the WAL and stopping the background tasks.
    Close,
}

impl Phase {
    /// Every phase.
    pub const ALL: [Phase; 7] = [
        Phase::Recovery,
        Phase::WalRotation,
        Phase::FlushInstall,
        Phase::CompactionInstall,
        Phase::ManifestRotation,
        Phase::CurrentReplacement,
        Phase::Close,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Recovery => "recovery",
            Phase::WalRotation => "WAL rotation",
            Phase::FlushInstall => "flush install",
            Phase::CompactionInstall => "compaction install",
            Phase::ManifestRotation => "MANIFEST rotation",
            Phase::CurrentReplacement => "CURRENT replacement",
            Phase::Close => "close",
        }
    }
}

/// Reports a phase to the runtime for as long as it lives: entered when made, left when
/// dropped, however the work ends (a returned error, a cancelled future).
pub(crate) struct PhaseGuard<'a> {
    rt: &'a dyn Runtime,
    phase: Phase,
}

impl<'a> PhaseGuard<'a> {
    pub(crate) fn enter(rt: &'a dyn Runtime, phase: Phase) -> Self {
        rt.phase(phase, true);
        PhaseGuard { rt, phase }
    }
}

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        self.rt.phase(self.phase, false);
    }
}

/// Whether the in-code fault point `point` fires (see [`Runtime::buggify`]). Without the
/// `buggify` feature this is `false` and the code behind it compiles away.
#[inline]
pub(crate) fn buggify(rt: &dyn Runtime, point: &'static str) -> bool {
    #[cfg(feature = "buggify")]
    {
        rt.buggify(point)
    }
    #[cfg(not(feature = "buggify"))]
    {
        let _ = (rt, point);
        false
    }
}

/// What a panic injected through an in-code fault point says first: a runtime that lets a
/// panicking task die, as an OS thread would, can tell injected panics from real ones.
pub const INJECTED_PANIC: &str = "buggify: injected panic";

/// Runs `task` to completion, giving its output or the message of the panic it raised. The
/// engine runs each background job this way (a panic then poisons the database instead of
/// killing a task silently); a runtime can run tasks this way to let a panicking task end as
/// an OS thread does.
///
/// `AssertUnwindSafe`: the caller gets the panic instead of the output and must not use what
/// the task was changing as if it had finished.
pub async fn catch_unwind<F: Future>(task: F) -> Result<F::Output, String> {
    let mut task = std::pin::pin!(task);
    std::future::poll_fn(move |cx| {
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.as_mut().poll(cx)));
        match polled {
            Ok(std::task::Poll::Ready(output)) => std::task::Poll::Ready(Ok(output)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(payload) => std::task::Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    })
    .await
}

/// What a panic said: `panic!` gives a `&str` or a `String`; anything else is unnamed.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a payload that is not a message".to_string()
    }
}

/// Completes on its second poll: lets every other ready task run once between two steps that
/// usually run back to back (a `buggify` point).
pub(crate) async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// Waits for a task started with [`Runtime::spawn`].
pub struct JoinHandle(BoxFuture<'static, ()>);

impl JoinHandle {
    /// Wraps a future that completes when the task has finished.
    pub fn new(done: BoxFuture<'static, ()>) -> Self {
        JoinHandle(done)
    }

    /// Completes when the task has finished.
    pub async fn join(self) {
        self.0.await
    }
}

impl fmt::Debug for JoinHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinHandle")
    }
}

/// A directory tree of files with explicit durability.
///
/// Durability contract, shared by every implementation: data written to a file survives a crash
/// only after [`File::sync_data`] on that file has returned `Ok`. A new name (from `create`,
/// `rename` or `create_dir`) and the disappearance of a name (from `remove` or the source of
/// `rename`) survive a crash only after [`FileSystem::sync_dir`] on the parent directory has
/// returned `Ok`. Until then a crash may leave any mix of the old and new state of each
/// unsynced byte (in 4 KiB blocks, the last write possibly torn).
pub trait FileSystem: Send + Sync {
    /// Creates `path` empty for reading and writing, truncating it if it exists. The name is not
    /// durable until the parent directory is synced.
    fn create<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>>;

    /// Opens an existing file for reading and writing. `ErrorKind::NotFound` if it does not exist.
    fn open<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>>;

    /// Removes a file. Durable once the parent directory is synced.
    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()>;

    /// Atomically replaces `to` with `from`. Durable once the parent directory is synced; before
    /// that a crash leaves either the old or the new name, never neither file.
    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()>;

    /// The names (not paths) of the entries of `dir`, sorted.
    fn list<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>>;

    /// Creates `dir` and any missing parents. Each new directory's name is durable once its
    /// parent is synced.
    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()>;

    /// Makes the creation, renaming and removal of names in `dir` durable.
    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()>;

    /// Takes an exclusive lock on `path` (creating it if needed), held until the returned guard
    /// is dropped. Fails with `ErrorKind::WouldBlock` if another holder has it. A lock is not
    /// data: it never survives a crash.
    fn lock<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn FileLock>>;

    /// The size of the file system holding `dir` and the bytes free on it for unprivileged
    /// writers, if known: read by the disk alert only, never by a path data depends on. The
    /// default knows nothing (`Ok(None)`).
    fn space(&self, dir: &Path) -> io::Result<Option<DiskSpace>> {
        let _ = dir;
        Ok(None)
    }
}

/// A file system's size and free bytes ([`FileSystem::space`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// An open file. Positioned reads and writes take `&self`; callers order their own writes.
pub trait File: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    /// Reads see every completed write, durable or not.
    fn read_at<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> IoFuture<'a, usize>;

    /// Writes all of `data` at `offset`, extending the file if needed. Not durable until
    /// [`File::sync_data`] returns `Ok`.
    fn write_at<'a>(&'a self, offset: u64, data: &'a [u8]) -> IoFuture<'a, ()>;

    /// Makes every completed write and the current size durable. If it fails, the writes it
    /// covered may be lost even though reads still return them, and a later successful call does
    /// NOT make them durable (Linux fsync semantics): callers must treat the failure as final.
    fn sync_data(&self) -> IoFuture<'_, ()>;

    /// Sets the size to `len`, dropping or zero-extending. Durable after `sync_data`.
    fn truncate(&self, len: u64) -> IoFuture<'_, ()>;

    /// Starts writing the `len` bytes at `offset` back to the disk, without waiting for them
    /// and without making anything durable: a hint, so that the next `sync_data` finds little
    /// left to write (RocksDB's `bytes_per_sync`). Does nothing by default.
    fn write_behind(&self, offset: u64, len: u64) -> IoFuture<'_, ()> {
        let _ = (offset, len);
        Box::pin(std::future::ready(Ok(())))
    }

    /// The current size in bytes, durable or not.
    fn size(&self) -> IoFuture<'_, u64>;
}

/// Holds a lock from [`FileSystem::lock`] until dropped.
pub trait FileLock: Send + Sync + fmt::Debug {}

/// Reads exactly `buf.len()` bytes at `offset`, failing with `UnexpectedEof` if the file ends
/// first.
pub async fn read_exact_at(file: &dyn File, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = file.read_at(offset, buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file ended before the requested range",
            ));
        }
        offset += n as u64;
        buf = &mut buf[n..];
    }
    Ok(())
}

/// Reads a whole file into memory.
pub async fn read_all(file: &dyn File) -> io::Result<Vec<u8>> {
    let size = file.size().await?;
    let len = usize::try_from(size).map_err(|_| io::Error::other("file too large to read"))?;
    let mut buf = vec![0u8; len];
    read_exact_at(file, 0, &mut buf).await?;
    Ok(buf)
}

/// The parent directory of `path`, or `.` for a bare name.
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A shared runtime handle, as the engine holds it.
pub type RuntimeRef = Arc<dyn Runtime>;
