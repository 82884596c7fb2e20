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
//! - There are two kinds of crash, and each keeps something different:
//!   - A *power loss* ([`MemFs::crash`]) builds the next boot's disk from that namespace. Each
//!     surviving file gets its durable image plus, chosen by the seed, some of the 4 KiB blocks
//!     written since its last sync: each such block independently keeps its new content, keeps
//!     its old content, or (past the durable end) turns to garbage. The size lands between the
//!     durable and the current size; bytes past the durable end that no kept block covers read
//!     as zeros. The last unsynced write may also be torn: only a prefix, or an arbitrary
//!     subset, of its 512-byte sectors landed. Everything then is durable.
//!   - A *process crash* ([`MemFs::process_crash`]) kills only the process: the page cache
//!     survives, so the next boot reads every completed write and sees every name as the dead
//!     process left it, including data whose fsync failed. Nothing becomes more durable than it
//!     was: unsynced bytes, names and failed-fsync pages are still lost by a later power loss.
//! - [`CrashModel`] switches two behaviours real file systems differ on: whether unsynced blocks
//!   land sector by sector (so any unsynced write may be torn, not only the last), and whether
//!   unsynced directory changes survive out of order (no ordered metadata journal).
//! - A failed `sync_data` returns an error once. The blocks it covered are marked clean without
//!   becoming durable, as on ext4 and XFS: reads still return the new bytes, a later successful
//!   sync does not make them durable, and a power loss reverts them to their durable content.
//! - Data at rest can be damaged ([`MemFs::rot_at_rest`], [`MemFs::break_sector`]): a synced
//!   byte may rot (bits flip in the stored copy, persistently, in every later read and crash
//!   image), and a sector holding synced data may become unreadable (reads touching it fail with
//!   EIO, across crashes, until a write covering the whole sector remaps it).
//! - After a crash of either kind the old disk is dead: every call on it or on a file opened
//!   from it fails, so a task that outlived the crash cannot change the next boot's disk. Locks
//!   do not survive.
//!
//! Every call completes inline. Iteration is over `BTreeMap`s, so a crash is a function of the
//! disk's history and the seed alone.

mod crash;
mod image;
mod tree;

pub use crash::{CrashModel, CrashReport};
pub use image::{BLOCK_SIZE, FILE_SIZE_MAX, SECTOR_SIZE};

use crate::predicate::{Call, OpKind, Predicate};
use crash::{Mode, Tape};
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
    /// Carried from boot to boot: it is what the file system is, not what happened to it.
    model: CrashModel,
}

impl MemFs {
    /// An empty disk holding only the root directory `/`.
    pub fn new() -> Self {
        Self::from_tree(Tree::new(), CrashModel::default())
    }

    /// Chooses how later power losses treat unsynced data and directory changes. Kept by every
    /// later boot of this disk.
    pub fn set_crash_model(&self, model: CrashModel) {
        self.shared.lock().model = model;
    }

    fn from_tree(tree: Tree, model: CrashModel) -> Self {
        let state = State {
            crashed: false,
            tree,
            locks: BTreeSet::new(),
            sync_fault: None,
            stats: MemFsStats::default(),
            model,
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
        let model = self.shared.lock().model;
        self.reboot(Mode::Seeded(rng, model))
    }

    /// A copy of this disk as it is now, unsynced data and pending directory changes
    /// included, sharing nothing with it (no open handle reaches the copy): crashing the copy
    /// later gives the images a crash now would.
    pub fn fork(&self) -> MemFs {
        let state = self.shared.lock();
        MemFs::from_tree(state.tree.fork(), state.model)
    }

    /// Every disk a power loss now could leave (see `crash::every_image` for the choices made
    /// per file, and each prefix of a directory's unsynced changes, or each subset with
    /// [`CrashModel::unordered_dirs`]), up to `max` of them; and whether that was all of them.
    /// When there are more, the first half of `max` are enumerated and the rest drawn at random
    /// (from a fixed seed): enumeration varies the last choices first, and would otherwise never
    /// leave the first ones (a directory's changes, say).
    /// Unlike [`MemFs::crash`], this disk lives on: exhaustive checks take the images of one
    /// moment and let the run go on to the next.
    pub fn crash_images(&self, max: usize) -> (Vec<MemFs>, bool) {
        let state = self.shared.lock();
        assert!(!state.crashed, "this disk already crashed");
        let mut tape = Tape::default();
        let mut images = Vec::new();
        loop {
            tape.rewind();
            let mode = Mode::Every(&mut tape, state.model);
            let tree = state.tree.reboot(&mut { mode }, &mut CrashReport::default());
            images.push(MemFs::from_tree(tree, state.model));
            if images.len() >= max {
                return (images, false);
            }
            if !tape.is_random() && !tape.advance() {
                return (images, true);
            }
            if !tape.is_random() && images.len() >= max / 2 {
                tape.randomize(max as u64);
            }
        }
    }

    /// Kills the process using this disk, not the machine, and returns the disk its next run
    /// sees: every completed write and name change, durable or not (see the module comment).
    /// This disk handle and every file opened from it are dead afterwards.
    ///
    /// Panics if this disk has already crashed.
    pub fn process_crash(&self) -> MemFs {
        let mut state = self.shared.lock();
        assert!(!state.crashed, "this disk already crashed; crash the one its crash returned");
        state.crashed = true;
        // The files themselves carry over: the dead handles cannot reach them any more, because
        // every call through them checks this (now crashed) state first.
        let tree = std::mem::replace(&mut state.tree, Tree::new());
        MemFs::from_tree(tree, state.model)
    }

    /// Rots the byte at `offset` of `path` at rest, flipping the bits of `mask`, if it is synced
    /// (in the durable image, in a block no unsynced write touched). Returns whether it rotted.
    pub fn rot_at_rest(&self, path: &Path, offset: u64, mask: u8) -> io::Result<bool> {
        let state = self.shared.live()?;
        let cell = state.tree.open(path)?;
        let rotted = usize::try_from(offset).is_ok_and(|at| cell.data().rot(at, mask));
        Ok(rotted)
    }

    /// The inode of `path`, its stored byte at `offset` (`None` past the durable image) and a
    /// hash of its durable bytes up to that one: what tells whether damage done at rest is
    /// still there to undo, or the file was replaced or rewritten since. Inodes outlive crashes
    /// and a new file never reuses one, but a file created again under its name (truncated and
    /// written anew) keeps its inode, and its byte at `offset` may match by chance; the bytes
    /// before it, as a whole, do not. (Bytes appended after it, as to a log, change nothing.)
    pub fn stored_byte(&self, path: &Path, offset: u64) -> io::Result<(u64, Option<u8>, u64)> {
        let state = self.shared.live()?;
        let cell = state.tree.open(path)?;
        let data = cell.data();
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        let byte = data.durable.get(at).copied();
        let prefix = &data.durable[..at.saturating_add(1).min(data.durable.len())];
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(prefix, &mut hasher);
        Ok((cell.ino, byte, std::hash::Hasher::finish(&hasher)))
    }

    /// Makes the sector holding byte `offset` of `path` unreadable (a latent sector error), if
    /// that byte is synced. Returns whether it broke.
    pub fn break_sector(&self, path: &Path, offset: u64) -> io::Result<bool> {
        let state = self.shared.live()?;
        let cell = state.tree.open(path)?;
        let broke = usize::try_from(offset).is_ok_and(|at| cell.data().break_sector(at));
        Ok(broke)
    }

    /// Makes the sector holding byte `offset` of `path` readable again, its data intact: undoes
    /// [`MemFs::break_sector`]. Returns whether it was bad.
    pub fn heal_sector(&self, path: &Path, offset: u64) -> io::Result<bool> {
        let state = self.shared.live()?;
        let cell = state.tree.open(path)?;
        let healed = usize::try_from(offset).is_ok_and(|at| cell.data().heal_sector(at));
        Ok(healed)
    }

    /// Whether `path` names a file now, as an open would find it. Unlike a failed open, a
    /// missing file costs no error message: the simulator asks before every create.
    pub fn exists(&self, path: &Path) -> bool {
        self.shared.live().is_ok_and(|s| matches!(s.tree.find(path), Ok(Some(_))))
    }

    /// The files directly in `dir` with their sizes, for choosing where damage lands.
    pub fn files(&self, dir: &Path) -> io::Result<Vec<FileInfo>> {
        let state = self.shared.live()?;
        let mut files = Vec::new();
        for (name, cell) in state.tree.files_in(dir)? {
            let data = cell.data();
            let (durable_len, current_len) = (data.durable.len() as u64, data.current.len() as u64);
            let durable_name = state.tree.is_durable_name(&dir.join(name))?;
            let name = name.to_string();
            files.push(FileInfo { name, durable_len, current_len, durable_name });
        }
        Ok(files)
    }

    /// Looks for `needle` in the files of `dir` whose names end with `suffix`, as reads see
    /// them (the last name in order first: with numbered names, the newest file), and says
    /// where it is and whether the `extent` bytes from its start, and everything before them,
    /// are durable: what a simulator checks when a write is acknowledged as synced.
    pub fn find(
        &self,
        dir: &Path,
        suffix: &str,
        needle: &[u8],
        extent: u64,
    ) -> io::Result<Option<Found>> {
        let state = self.shared.live()?;
        if needle.is_empty() {
            return Ok(None);
        }
        let finder = memchr::memmem::Finder::new(needle);
        for (name, cell) in state.tree.files_in(dir)?.rev() {
            if !name.ends_with(suffix) {
                continue;
            }
            let data = cell.data();
            if let Some(at) = finder.find(&data.current) {
                let path = dir.join(name);
                let end = (at as u64).saturating_add(extent.max(needle.len() as u64));
                let durable = usize::try_from(end).ok().is_some_and(|end| {
                    end <= data.durable.len()
                        && end <= data.current.len()
                        && data.durable[..end] == data.current[..end]
                });
                let durable_name = state.tree.is_durable_name(&path)?;
                return Ok(Some(Found { path, offset: at as u64, durable, durable_name }));
            }
        }
        Ok(None)
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
        (MemFs::from_tree(tree, state.model), report)
    }

    fn file(&self, cell: Arc<FileCell>, path: &Path) -> Box<dyn File> {
        Box::new(MemFile { shared: self.shared.clone(), cell, path: path.to_path_buf() })
    }
}

/// A file of a directory, as [`MemFs::files`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// The file's name in the directory.
    pub name: String,
    /// Bytes that survive a power loss.
    pub durable_len: u64,
    /// Bytes reads see.
    pub current_len: u64,
    /// Whether the name survives a power loss (its directory was synced since it appeared).
    pub durable_name: bool,
}

/// Where [`MemFs::find`] found its needle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The file holding it.
    pub path: PathBuf,
    /// Where it starts.
    pub offset: u64,
    /// Whether the file's durable image holds exactly what reads see, from its start to the
    /// end of the extent asked about: a power loss now would keep all of it, if it kept the
    /// file.
    pub durable: bool,
    /// Whether the file's name survives a power loss (its directory was synced since the name
    /// appeared): without it, durable bytes are lost with the file.
    pub durable_name: bool,
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
        ready(self.with(|_, data| data.read(offset, buf)))
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
