//! An in-memory file system that crashes the way a real disk under a page cache does.
//!
//! The fault model, which is the contract the engine is tested against:
//! - Each file has a current image, which reads see, and a durable image, which survives a
//!   crash. A successful `sync_data` makes that file's current data and size durable, and
//!   nothing else.
//! - Each directory has current entries and durable entries. `create`, `rename`, `remove` and
//!   `create_dir_all` change only the current entries; `sync_dir` makes a directory's current
//!   entries durable. A directory survives a crash only if its name is durable in its parent.
//! - Changes to a directory's entries that no `sync_dir` has made durable yet may still
//!   survive a crash, as an ordered journal (ext4's) may commit them on its own: the crash keeps
//!   a seeded prefix of each directory's unsynced changes, in the order they were made. So a
//!   name removed without a directory sync may be gone after the crash, or back.
//! - A crash builds the next boot's disk from that namespace. Each surviving file gets
//!   its durable image plus, chosen by the seed, some of the 4 KiB blocks written since its last
//!   sync: each such block independently keeps its new content, keeps its old content, or (past
//!   the durable end) turns to garbage. The size lands between the durable and the current size;
//!   bytes past the durable end that no kept block covers read as zeros. The last unsynced write
//!   may also be torn: only a prefix, or an arbitrary subset, of its 512-byte sectors landed.
//! - A failed `sync_data` returns an error once. The blocks it covered are marked clean without
//!   becoming durable, as on ext4 and XFS: reads still return the new bytes, a later successful
//!   sync does not make them durable, and a crash reverts them to their durable content.
//! - After a crash the old disk is dead: every call on it or on a file opened from it fails, so
//!   a task that outlived the crash cannot change the next boot's disk. Locks do not survive.
//!
//! Every call completes inline. Iteration is over `BTreeMap`s, so a crash is a function of the
//! disk's history and the seed alone.

mod crash;
mod image;
mod tree;

pub use crash::CrashReport;
pub use image::{BLOCK_SIZE, FILE_SIZE_MAX, SECTOR_SIZE};

use crate::predicate::{Call, OpKind, Predicate};
use crash::Mode;
use jadedb::runtime::{File, FileLock, FileSystem, IoFuture};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tree::{FileCell, Tree};

/// Linux's EIO, what a failed fsync returns.
const EIO: i32 = 5;

/// Counts of what was done to one disk since it was created or booted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemFsStats {
    /// `sync_data` calls that succeeded.
    pub syncs: u64,
    /// `sync_data` calls that failed (each lost the data it covered).
    pub failed_syncs: u64,
    /// `sync_dir` calls.
    pub dir_syncs: u64,
    /// `write_at` calls.
    pub writes: u64,
    /// Bytes passed to `write_at`.
    pub bytes_written: u64,
}

/// A handle to an in-memory disk; clones share the disk.
#[derive(Clone)]
pub struct MemFs {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    /// Set by a crash; from then on every call fails.
    crashed: bool,
    tree: Tree,
    /// Inodes of the files currently locked.
    locks: BTreeSet<u64>,
    sync_fault: Option<Predicate>,
    stats: MemFsStats,
}

impl MemFs {
    /// An empty disk holding only the root directory `/`.
    pub fn new() -> Self {
        Self::from_tree(Tree::new())
    }

    fn from_tree(tree: Tree) -> Self {
        let state = State {
            crashed: false,
            tree,
            locks: BTreeSet::new(),
            sync_fault: None,
            stats: MemFsStats::default(),
        };
        MemFs { shared: Arc::new(Shared { state: Mutex::new(state) }) }
    }

    /// Crashes this disk and returns the next boot's, keeping a seeded subset of unsynced data
    /// (see the module comment). This disk is dead afterwards.
    ///
    /// Panics if this disk has already crashed: two boots from one disk would fork its history.
    pub fn crash(&self, rng: &mut ChaCha8Rng) -> MemFs {
        self.crash_with_report(rng).0
    }

    /// [`MemFs::crash`], also saying what happened to unsynced data.
    pub fn crash_with_report(&self, rng: &mut ChaCha8Rng) -> (MemFs, CrashReport) {
        self.reboot(Mode::Seeded(rng))
    }

    /// Crashes this disk keeping exactly the durable state: every unsynced byte and name is
    /// lost. Deterministic, so tests can state what must be there.
    pub fn crash_keep_nothing(&self) -> MemFs {
        self.reboot(Mode::DurableOnly).0
    }

    /// Makes `sync_data` fail when `fault` fires (asked with [`OpKind::Sync`] and the path the
    /// file was opened under); `None` switches failures off. The next boot starts without one.
    pub fn set_sync_fault(&self, fault: Option<Predicate>) {
        self.shared.lock().sync_fault = fault;
    }

    /// What has been done to this disk so far. The next boot starts from zero.
    pub fn stats(&self) -> MemFsStats {
        self.shared.lock().stats
    }

    /// True once this disk has crashed.
    pub fn is_crashed(&self) -> bool {
        self.shared.lock().crashed
    }

    fn reboot(&self, mut mode: Mode<'_>) -> (MemFs, CrashReport) {
        let mut state = self.shared.lock();
        // Two boots from one disk would fork its history; the harness must crash the newest.
        assert!(!state.crashed, "this disk already crashed; crash the one its crash returned");
        state.crashed = true;
        let mut report = CrashReport::default();
        let tree = state.tree.reboot(&mut mode, &mut report);
        (MemFs::from_tree(tree), report)
    }

    fn file(&self, cell: Arc<FileCell>, path: &Path) -> Box<dyn File> {
        Box::new(MemFile { shared: self.shared.clone(), cell, path: path.to_path_buf() })
    }
}

// The simulator shares one disk between tasks and keeps it across a node's restart.
const _: fn() = || {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<MemFs>();
};

impl Default for MemFs {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("MemFs")
            .field("crashed", &state.crashed)
            .field("stats", &state.stats)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, unless the disk has crashed. Every call holds this guard throughout, so a
    /// crash happens wholly before or wholly after any call.
    fn live(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.lock();
        if state.crashed {
            return Err(io::Error::other("file system crashed"));
        }
        Ok(state)
    }
}

fn ready<'a, T: Send + 'a>(result: io::Result<T>) -> IoFuture<'a, T> {
    Box::pin(std::future::ready(result))
}

impl FileSystem for MemFs {
    fn create<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        let result = self.shared.live().and_then(|mut s| s.tree.create(path));
        ready(result.map(|cell| self.file(cell, path)))
    }

    fn open<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        let result = self.shared.live().and_then(|s| s.tree.open(path));
        ready(result.map(|cell| self.file(cell, path)))
    }

    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        ready(self.shared.live().and_then(|mut s| s.tree.remove(path)))
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        ready(self.shared.live().and_then(|mut s| s.tree.rename(from, to)))
    }

    fn list<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        ready(self.shared.live().and_then(|s| s.tree.list(dir)))
    }

    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        ready(self.shared.live().and_then(|mut s| s.tree.create_dir_all(dir)))
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        ready(self.shared.live().and_then(|mut s| {
            s.tree.sync_dir(dir)?;
            s.stats.dir_syncs += 1;
            Ok(())
        }))
    }

    fn lock<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn FileLock>> {
        ready(self.shared.live().and_then(|mut s| {
            let ino = s.tree.open_or_create(path)?.ino;
            if !s.locks.insert(ino) {
                let msg = format!("{} is locked by another holder", path.display());
                return Err(io::Error::new(io::ErrorKind::WouldBlock, msg));
            }
            let lock = MemLock { shared: self.shared.clone(), ino };
            Ok(Box::new(lock) as Box<dyn FileLock>)
        }))
    }
}

/// An open file: holds the file itself, so it stays readable after its name is removed.
struct MemFile {
    shared: Arc<Shared>,
    cell: Arc<FileCell>,
    /// The path it was opened under, which sync-fault predicates are asked about.
    path: PathBuf,
}

impl MemFile {
    /// Runs `op` on the file's data while holding the disk, if the disk is still alive.
    fn with<T>(
        &self,
        op: impl FnOnce(&mut State, &mut image::FileData) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.shared.live()?;
        let mut data = self.cell.data();
        op(&mut state, &mut data)
    }
}

impl State {
    fn sync_file(&mut self, data: &mut image::FileData, path: &Path) -> io::Result<()> {
        let call = Call::new(OpKind::Sync, path);
        if self.sync_fault.as_ref().is_some_and(|p| p.matches(&call)) {
            data.fail_sync();
            self.stats.failed_syncs += 1;
            tracing::debug!(path = %path.display(), "injected fsync failure");
            return Err(io::Error::from_raw_os_error(EIO));
        }
        data.sync();
        self.stats.syncs += 1;
        Ok(())
    }
}

impl File for MemFile {
    fn read_at<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> IoFuture<'a, usize> {
        ready(self.with(|_, data| Ok(data.read(offset, buf))))
    }

    fn write_at<'a>(&'a self, offset: u64, buf: &'a [u8]) -> IoFuture<'a, ()> {
        ready(self.with(|state, data| {
            data.write(offset, buf)?;
            state.stats.writes += 1;
            state.stats.bytes_written += buf.len() as u64;
            Ok(())
        }))
    }

    fn sync_data(&self) -> IoFuture<'_, ()> {
        ready(self.with(|state, data| state.sync_file(data, &self.path)))
    }

    fn truncate(&self, len: u64) -> IoFuture<'_, ()> {
        ready(self.with(|_, data| data.truncate(len)))
    }

    fn size(&self) -> IoFuture<'_, u64> {
        ready(self.with(|_, data| Ok(data.current.len() as u64)))
    }
}

impl fmt::Debug for MemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemFile")
            .field("path", &self.path)
            .field("ino", &self.cell.ino)
            .finish_non_exhaustive()
    }
}

/// A held lock; dropping it releases the file for the next holder.
struct MemLock {
    shared: Arc<Shared>,
    ino: u64,
}

impl Drop for MemLock {
    fn drop(&mut self) {
        // Releasing on a crashed disk is harmless: nothing will ask it again.
        self.shared.lock().locks.remove(&self.ino);
    }
}

impl fmt::Debug for MemLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemLock").field("ino", &self.ino).finish_non_exhaustive()
    }
}

impl FileLock for MemLock {}
