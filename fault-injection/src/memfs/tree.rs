//! The namespace of the in-memory disk: directories mapping names to files and directories,
//! each with a current and a durable set of entries.
//!
//! Invariants: directories are never removed or renamed (the engine needs neither, and leaving
//! them out keeps the durable namespace a tree), so every directory id named by an entry, current
//! or durable, is in `dirs`. Files are shared through `Arc`, so a handle keeps a file's data alive
//! after its last name is gone, and a crash can find a file under its durable name even when its
//! current name is different.

use super::crash::{self, CrashReport, Mode};
use super::image::FileData;
use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

/// The id of the root directory, which exists on every boot.
const ROOT: u64 = 0;

/// A file's identity and contents, shared by its names and its open handles.
#[derive(Debug)]
pub(super) struct FileCell {
    pub(super) ino: u64,
    pub(super) data: Mutex<FileData>,
}

impl FileCell {
    pub(super) fn data(&self) -> std::sync::MutexGuard<'_, FileData> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Clone)]
enum Node {
    File(Arc<FileCell>),
    Dir(u64),
}

#[derive(Debug, Default)]
struct Dir {
    /// What `list` and lookups see.
    current: BTreeMap<String, Node>,
    /// What surely survives a crash: the entries as of the last `sync_dir`.
    durable: BTreeMap<String, Node>,
    /// The changes made since, in order: a crash keeps a seeded prefix of them.
    pending: Vec<Change>,
}

/// One change to a directory's entries.
#[derive(Debug, Clone)]
enum Change {
    Put(String, Node),
    Remove(String),
    /// From, to, and the file moved.
    Rename(String, String, Node),
}

impl Dir {
    fn put(&mut self, name: &str, node: Node) {
        self.current.insert(name.to_string(), node.clone());
        self.pending.push(Change::Put(name.to_string(), node));
    }

    fn take(&mut self, name: &str) {
        self.current.remove(name);
        self.pending.push(Change::Remove(name.to_string()));
    }

    /// The durable entries with the pending changes `kept` marks applied, in order.
    fn after_crash(&self, kept: &[bool]) -> BTreeMap<String, Node> {
        let mut entries = self.durable.clone();
        let survivors = self.pending.iter().zip(kept).filter(|(_, &k)| k).map(|(c, _)| c);
        for change in survivors {
            change.clone().apply(&mut entries);
        }
        entries
    }

    /// Makes every pending change durable: the durable entries become the current ones. Only
    /// the changes are applied, not the directory copied: a directory of hundreds of tables is
    /// synced after each one is created.
    fn sync(&mut self) {
        for change in self.pending.drain(..) {
            change.apply(&mut self.durable);
        }
        debug_assert!(
            self.durable.len() == self.current.len() && self.durable.keys().eq(self.current.keys()),
            "the durable entries with every change applied are the current ones"
        );
    }
}

impl Change {
    fn apply(self, entries: &mut BTreeMap<String, Node>) {
        match self {
            Change::Put(name, node) => {
                entries.insert(name, node);
            }
            Change::Remove(name) => {
                entries.remove(&name);
            }
            Change::Rename(from, to, node) => {
                entries.remove(&from);
                entries.insert(to, node);
            }
        }
    }
}

/// Every directory of one disk, by id.
#[derive(Debug)]
pub(super) struct Tree {
    dirs: BTreeMap<u64, Dir>,
    next_ino: u64,
}

impl Tree {
    /// A disk holding only the root directory.
    pub(super) fn new() -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(ROOT, Dir::default());
        Tree { dirs, next_ino: ROOT + 1 }
    }

    pub(super) fn create(&mut self, path: &Path) -> io::Result<Arc<FileCell>> {
        let (dir, name) = self.parent_of(path)?;
        match self.dir(dir).current.get(name) {
            Some(Node::File(cell)) => {
                cell.data().truncate(0)?;
                Ok(cell.clone())
            }
            Some(Node::Dir(_)) => Err(error(ErrorKind::IsADirectory, path)),
            None => Ok(self.add_file(dir, name)),
        }
    }

    pub(super) fn open(&self, path: &Path) -> io::Result<Arc<FileCell>> {
        self.find(path)?.ok_or_else(|| error(ErrorKind::NotFound, path))
    }

    /// Opens `path`, creating it empty if it does not exist (but never truncating it). Goes
    /// through `find`, not `open`: most calls create, and a not-found error formats the path.
    pub(super) fn open_or_create(&mut self, path: &Path) -> io::Result<Arc<FileCell>> {
        match self.find(path)? {
            Some(cell) => Ok(cell),
            None => {
                let (dir, name) = self.parent_of(path)?;
                Ok(self.add_file(dir, name))
            }
        }
    }

    /// The file at `path`, or `None` if its directory holds nothing by that name.
    pub(super) fn find(&self, path: &Path) -> io::Result<Option<Arc<FileCell>>> {
        let (dir, name) = self.parent_of(path)?;
        match self.dir(dir).current.get(name) {
            Some(Node::File(cell)) => Ok(Some(cell.clone())),
            Some(Node::Dir(_)) => Err(error(ErrorKind::IsADirectory, path)),
            None => Ok(None),
        }
    }

    pub(super) fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.open(path)?;
        let (dir, name) = self.parent_of(path)?;
        self.dir_mut(dir).take(name);
        Ok(())
    }

    /// Moves the file at `from` to `to`, replacing any file there in one step.
    pub(super) fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let cell = self.open(from)?;
        let (from_dir, from_name) = self.parent_of(from)?;
        let (to_dir, to_name) = self.parent_of(to)?;
        if let Some(Node::Dir(_)) = self.dir(to_dir).current.get(to_name) {
            return Err(error(ErrorKind::IsADirectory, to));
        }
        if (from_dir, from_name) == (to_dir, to_name) {
            return Ok(());
        }
        // Within one directory, one change in its journal: the new name and the old name's
        // removal survive together or not at all. (Across directories, which the engine never
        // does, they are two changes.)
        if from_dir == to_dir {
            let dir = self.dir_mut(to_dir);
            dir.current.remove(from_name);
            dir.current.insert(to_name.to_string(), Node::File(cell.clone()));
            dir.pending.push(Change::Rename(
                from_name.to_string(),
                to_name.to_string(),
                Node::File(cell),
            ));
        } else {
            self.dir_mut(from_dir).take(from_name);
            self.dir_mut(to_dir).put(to_name, Node::File(cell));
        }
        Ok(())
    }

    /// Whether the name of the file at `path` survives a power loss: its parent directory's
    /// durable entries hold it (the parent's own name aside).
    pub(super) fn is_durable_name(&self, path: &Path) -> io::Result<bool> {
        let (dir, name) = self.parent_of(path)?;
        Ok(self.dir(dir).durable.contains_key(name))
    }

    pub(super) fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let id = self.resolve_dir(&components(dir)?, dir)?;
        Ok(self.dir(id).current.keys().cloned().collect())
    }

    /// The files directly in `dir`, by name in order, without copying the names.
    pub(super) fn files_in(
        &self,
        dir: &Path,
    ) -> io::Result<impl DoubleEndedIterator<Item = (&str, &Arc<FileCell>)> + '_> {
        let id = self.resolve_dir(&components(dir)?, dir)?;
        Ok(self.dir(id).current.iter().filter_map(|(name, node)| match node {
            Node::File(cell) => Some((name.as_str(), cell)),
            Node::Dir(_) => None,
        }))
    }

    pub(super) fn create_dir_all(&mut self, dir: &Path) -> io::Result<()> {
        let mut id = ROOT;
        for name in components(dir)? {
            id = match self.dir(id).current.get(name) {
                Some(Node::Dir(child)) => *child,
                Some(Node::File(_)) => return Err(error(ErrorKind::NotADirectory, dir)),
                None => self.add_dir(id, name),
            };
        }
        Ok(())
    }

    /// Makes the current entries of `dir` its durable ones.
    pub(super) fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        let id = self.resolve_dir(&components(dir)?, dir)?;
        self.dir_mut(id).sync();
        Ok(())
    }

    /// The next boot's namespace: the surviving entries (durable ones plus a seeded prefix of
    /// the pending changes) of every directory reachable through surviving entries from the
    /// root, each file replaced by its crash image.
    pub(super) fn reboot(&self, mode: &mut Mode<'_>, report: &mut CrashReport) -> Tree {
        let mut boot =
            Boot { old: self, new: BTreeMap::new(), files: BTreeMap::new(), mode, report };
        boot.copy_dir(ROOT);
        Tree { dirs: boot.new, next_ino: self.next_ino }
    }

    /// A copy of this namespace and of every file's data, unsynced state included, sharing
    /// nothing with it: what the disk is at this moment, to crash in every way later.
    pub(super) fn fork(&self) -> Tree {
        let mut files = BTreeMap::new();
        let mut node = |n: &Node| match n {
            Node::File(cell) => {
                Node::File(Arc::clone(files.entry(cell.ino).or_insert_with(|| {
                    Arc::new(FileCell { ino: cell.ino, data: Mutex::new(cell.data().clone()) })
                })))
            }
            Node::Dir(id) => Node::Dir(*id),
        };
        let mut dirs = BTreeMap::new();
        for (&id, dir) in &self.dirs {
            let copy = Dir {
                current: dir.current.iter().map(|(k, n)| (k.clone(), node(n))).collect(),
                durable: dir.durable.iter().map(|(k, n)| (k.clone(), node(n))).collect(),
                pending: dir
                    .pending
                    .iter()
                    .map(|c| match c {
                        Change::Put(name, n) => Change::Put(name.clone(), node(n)),
                        Change::Remove(name) => Change::Remove(name.clone()),
                        Change::Rename(from, to, n) => {
                            Change::Rename(from.clone(), to.clone(), node(n))
                        }
                    })
                    .collect(),
            };
            dirs.insert(id, copy);
        }
        Tree { dirs, next_ino: self.next_ino }
    }

    /// The parent directory's id and the last component of a file path.
    fn parent_of<'p>(&self, path: &'p Path) -> io::Result<(u64, &'p str)> {
        let comps = components(path)?;
        let Some((name, parents)) = comps.split_last() else {
            return Err(error(ErrorKind::IsADirectory, path));
        };
        Ok((self.resolve_dir(parents, path)?, name))
    }

    fn resolve_dir(&self, comps: &[&str], path: &Path) -> io::Result<u64> {
        let mut id = ROOT;
        for name in comps {
            id = match self.dir(id).current.get(*name) {
                Some(Node::Dir(child)) => *child,
                Some(Node::File(_)) => return Err(error(ErrorKind::NotADirectory, path)),
                None => return Err(error(ErrorKind::NotFound, path)),
            };
        }
        Ok(id)
    }

    fn add_file(&mut self, dir: u64, name: &str) -> Arc<FileCell> {
        let ino = self.alloc_ino();
        let cell = Arc::new(FileCell { ino, data: Mutex::default() });
        self.dir_mut(dir).put(name, Node::File(cell.clone()));
        cell
    }

    fn add_dir(&mut self, parent: u64, name: &str) -> u64 {
        let id = self.alloc_ino();
        self.dirs.insert(id, Dir::default());
        self.dir_mut(parent).put(name, Node::Dir(id));
        id
    }

    fn alloc_ino(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    fn dir(&self, id: u64) -> &Dir {
        self.dirs.get(&id).expect("every directory named by an entry exists")
    }

    fn dir_mut(&mut self, id: u64) -> &mut Dir {
        self.dirs.get_mut(&id).expect("every directory named by an entry exists")
    }
}

/// One crash in progress: copies the durable namespace of `old` into `new`.
struct Boot<'t, 'm, 'r> {
    old: &'t Tree,
    new: BTreeMap<u64, Dir>,
    /// Files already imaged, by inode: a file durable under two names (renamed, with both
    /// directories synced) must come back as one file, imaged once.
    files: BTreeMap<u64, Arc<FileCell>>,
    mode: &'m mut Mode<'r>,
    report: &'m mut CrashReport,
}

impl Boot<'_, '_, '_> {
    fn copy_dir(&mut self, id: u64) {
        let old = self.old;
        let dir = old.dir(id);
        let kept = crash::changes_kept(self.mode, dir.pending.len(), self.report);
        let mut entries = BTreeMap::new();
        // BTreeMap order makes the sequence of random draws, and so the crash, a function of
        // the seed alone.
        for (name, node) in &dir.after_crash(&kept) {
            let node = match node {
                Node::File(cell) => Node::File(self.copy_file(cell)),
                Node::Dir(child) => {
                    self.copy_dir(*child);
                    Node::Dir(*child)
                }
            };
            entries.insert(name.clone(), node);
        }
        let dir = Dir { current: entries.clone(), durable: entries, pending: Vec::new() };
        self.new.insert(id, dir);
    }

    fn copy_file(&mut self, cell: &FileCell) -> Arc<FileCell> {
        if let Some(done) = self.files.get(&cell.ino) {
            return done.clone();
        }
        let old = cell.data();
        let image = crash::image(&old, self.mode, self.report);
        let data = Mutex::new(FileData::booted(image, old.bad_sectors.clone()));
        drop(old);
        let copy = Arc::new(FileCell { ino: cell.ino, data });
        self.files.insert(cell.ino, copy.clone());
        copy
    }
}

/// The names along `path`, read lexically: `.` is skipped and `..` drops the previous name.
/// Relative paths are taken from the root, so `db/CURRENT` and `/db/CURRENT` are one file.
/// Split on `/` by hand: `Path::components` was about 3% of a simulation's instructions (every
/// file call that names a path resolves it). A name that is not UTF-8 is refused.
fn components(path: &Path) -> io::Result<Vec<&str>> {
    let Some(text) = path.to_str() else {
        return Err(error(ErrorKind::InvalidInput, path));
    };
    let mut names = Vec::with_capacity(4);
    for name in text.split('/') {
        match name {
            "" | "." => {}
            ".." => {
                names.pop();
            }
            name => names.push(name),
        }
    }
    Ok(names)
}

fn error(kind: ErrorKind, path: &Path) -> io::Error {
    io::Error::new(kind, format!("{}: {kind}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_lexically_from_the_root() {
        fn names(p: &str) -> Vec<&str> {
            components(Path::new(p)).unwrap()
        }
        assert_eq!(names("/db/CURRENT"), ["db", "CURRENT"]);
        assert_eq!(names("db/CURRENT"), ["db", "CURRENT"]);
        assert_eq!(names("./db//x/../MANIFEST-000001/"), ["db", "MANIFEST-000001"]);
        assert_eq!(names("/../.."), Vec::<&str>::new());
    }
}
