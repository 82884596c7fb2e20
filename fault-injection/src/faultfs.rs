//! A fault-injecting wrapper over any [`FileSystem`]: rules keyed by operation kind, each with a
//! predicate saying when it fires and an effect saying what happens then.
//!
//! Keeping faults in a wrapper, rather than as flags inside the engine or the disk, lets the same
//! faults run over the in-memory disk in the simulator and over real files in crash tests.
//!
//! Invariants: a call that no rule fires on is passed to the inner file system unchanged; rules
//! are tried in the order they were added and the first that fires decides the call; when the
//! wrapper is disabled no predicate is asked, so counters and random streams do not advance.
//!
//! An error effect on a sync fails the call before it reaches the disk, so the dirty pages stay
//! dirty and a later sync may still persist them: this is the kinder kernel. The harsher one,
//! where a failed fsync leaves the pages it covered marked clean but unwritten (Linux on ext4
//! and XFS, PostgreSQL's "fsyncgate"), is the in-memory disk's own sync fault
//! (`MemFs::set_sync_fault`), not a rule here.

use crate::predicate::{Call, OpKind, Predicate};
use jadedb::runtime::{File, FileLock, FileSystem, IoFuture};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What happens to a call when its rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The call fails with an error of this kind and does nothing.
    Error(io::ErrorKind),
    /// The call fails with this OS error code (28 is ENOSPC, 5 is EIO) and does nothing.
    OsError(i32),
    /// A read returns fewer bytes than asked (at least one, when more than one was asked).
    ShortRead,
    /// A read returns its data with one seeded bit flipped; a write stores its data so.
    BitFlip,
    /// The call returns `Ok` without doing anything: a sync that never reaches the disk. Only
    /// for calls that return nothing.
    SkipSilently,
}

impl Effect {
    /// No space left on the device.
    pub const ENOSPC: Effect = Effect::OsError(28);
    /// A device I/O error.
    pub const EIO: Effect = Effect::OsError(5);

    /// True if this effect means something for `op`.
    pub fn applies_to(self, op: OpKind) -> bool {
        use OpKind::*;
        match self {
            Effect::Error(_) | Effect::OsError(_) => true,
            Effect::ShortRead => op == Read,
            Effect::BitFlip => matches!(op, Read | Write),
            Effect::SkipSilently => {
                matches!(op, Remove | Rename | CreateDir | SyncDir | Write | Sync | Truncate)
            }
        }
    }
}

#[derive(Debug)]
struct Rule {
    op: OpKind,
    when: Predicate,
    effect: Effect,
    /// How many times this rule fired.
    fired: AtomicU64,
}

/// The state every clone of a wrapper and every file it opened share.
#[derive(Debug)]
struct Control {
    enabled: AtomicBool,
    rules: Mutex<Vec<Rule>>,
    fired: AtomicU64,
    /// Picks which bit flips and how short a read is.
    rng: Mutex<ChaCha8Rng>,
}

impl Control {
    /// The effect of the first rule for `call.op` whose predicate fires, if any.
    fn check(&self, call: &Call<'_>) -> Option<Effect> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        let rule = rules.iter().find(|r| r.op == call.op && r.when.matches(call))?;
        self.fired.fetch_add(1, Ordering::Relaxed);
        rule.fired.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(op = ?call.op, path = %call.path.display(), effect = ?rule.effect, "injected fault");
        Some(rule.effect)
    }

    /// Fails the call if an error rule fires; otherwise returns the effect to apply, if any.
    fn gate(&self, call: &Call<'_>) -> io::Result<Option<Effect>> {
        match self.check(call) {
            Some(Effect::Error(kind)) => {
                let msg = format!("injected {:?} fault on {}", call.op, call.path.display());
                Err(io::Error::new(kind, msg))
            }
            Some(Effect::OsError(code)) => Err(io::Error::from_raw_os_error(code)),
            other => Ok(other),
        }
    }

    fn draw(&self, below: usize) -> usize {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        rng.gen_range(0..below)
    }

    /// Flips one seeded bit of `data` (nothing to flip in an empty buffer).
    fn flip_bit(&self, data: &mut [u8]) {
        if !data.is_empty() {
            let bit = self.draw(data.len() * 8);
            data[bit / 8] ^= 1 << (bit % 8);
        }
    }
}

/// Wraps a file system and every file it opens, injecting faults by rule. Clones share the
/// inner file system and the rules, so a test can switch faults while the engine runs.
pub struct FaultFs<F: ?Sized> {
    inner: Arc<F>,
    ctl: Arc<Control>,
}

impl<F: FileSystem> FaultFs<F> {
    /// Wraps `inner` with no rules, enabled, with bit flips and short reads drawn from seed 0.
    pub fn new(inner: F) -> Self {
        Self::from_arc(Arc::new(inner))
    }
}

impl<F: FileSystem + ?Sized> FaultFs<F> {
    /// Wraps a shared file system, such as an `Arc<dyn FileSystem>`.
    pub fn from_arc(inner: Arc<F>) -> Self {
        let ctl = Control {
            enabled: AtomicBool::new(true),
            rules: Mutex::new(Vec::new()),
            fired: AtomicU64::new(0),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(0)),
        };
        FaultFs { inner, ctl: Arc::new(ctl) }
    }

    /// Reseeds the stream that picks flipped bits and short-read lengths.
    pub fn with_seed(self, seed: u64) -> Self {
        *self.ctl.rng.lock().unwrap_or_else(PoisonError::into_inner) =
            ChaCha8Rng::seed_from_u64(seed);
        self
    }

    /// Adds a rule: calls of kind `op` for which `when` fires get `effect`.
    pub fn with_rule(self, op: OpKind, when: Predicate, effect: Effect) -> Self {
        self.add_rule(op, when, effect);
        self
    }

    /// Adds a rule at run time, seen by every clone and every open file.
    ///
    /// Panics if `effect` means nothing for `op` (a short write, a skipped open): that is a
    /// mistake in the test, and ignoring it would silently test nothing.
    pub fn add_rule(&self, op: OpKind, when: Predicate, effect: Effect) {
        assert!(effect.applies_to(op), "{effect:?} cannot apply to {op:?}");
        let mut rules = self.ctl.rules.lock().unwrap_or_else(PoisonError::into_inner);
        rules.push(Rule { op, when, effect, fired: AtomicU64::new(0) });
    }

    /// How many times each rule fired, in the order the rules were added.
    pub fn fired_per_rule(&self) -> Vec<u64> {
        let rules = self.ctl.rules.lock().unwrap_or_else(PoisonError::into_inner);
        rules.iter().map(|r| r.fired.load(Ordering::Relaxed)).collect()
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        self.ctl.rules.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Switches all rules on or off without forgetting them.
    pub fn set_enabled(&self, enabled: bool) {
        self.ctl.enabled.store(enabled, Ordering::Relaxed);
    }

    /// How many faults have fired, over every clone and open file.
    pub fn fired(&self) -> u64 {
        self.ctl.fired.load(Ordering::Relaxed)
    }

    /// A wrapper over `inner` sharing this one's rules, switches and counters: after a crash,
    /// the next boot's disk keeps the faults the test set up.
    pub fn with_same_rules<G: FileSystem>(&self, inner: G) -> FaultFs<G> {
        FaultFs { inner: Arc::new(inner), ctl: self.ctl.clone() }
    }

    /// The wrapped file system (to crash it, for instance).
    pub fn inner(&self) -> &F {
        &self.inner
    }

    fn wrap(&self, inner: Box<dyn File>, path: &Path) -> Box<dyn File> {
        Box::new(FaultFile { inner, ctl: self.ctl.clone(), path: path.to_path_buf() })
    }
}

impl<F: ?Sized> Clone for FaultFs<F> {
    fn clone(&self) -> Self {
        FaultFs { inner: self.inner.clone(), ctl: self.ctl.clone() }
    }
}

impl<F: ?Sized> fmt::Debug for FaultFs<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFs").field("control", &self.ctl).finish_non_exhaustive()
    }
}

impl<F: FileSystem + ?Sized> FileSystem for FaultFs<F> {
    fn create<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        Box::pin(async move {
            self.ctl.gate(&Call::new(OpKind::Create, path))?;
            Ok(self.wrap(self.inner.create(path).await?, path))
        })
    }

    fn open<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn File>> {
        Box::pin(async move {
            self.ctl.gate(&Call::new(OpKind::Open, path))?;
            Ok(self.wrap(self.inner.open(path).await?, path))
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            if skipped(self.ctl.gate(&Call::new(OpKind::Remove, path))?) {
                return Ok(());
            }
            self.inner.remove(path).await
        })
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            let call = Call { op: OpKind::Rename, path: from, to: Some(to) };
            if skipped(self.ctl.gate(&call)?) {
                return Ok(());
            }
            self.inner.rename(from, to).await
        })
    }

    fn list<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        Box::pin(async move {
            self.ctl.gate(&Call::new(OpKind::List, dir))?;
            self.inner.list(dir).await
        })
    }

    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            if skipped(self.ctl.gate(&Call::new(OpKind::CreateDir, dir))?) {
                return Ok(());
            }
            self.inner.create_dir_all(dir).await
        })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            if skipped(self.ctl.gate(&Call::new(OpKind::SyncDir, dir))?) {
                return Ok(());
            }
            self.inner.sync_dir(dir).await
        })
    }

    fn lock<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Box<dyn FileLock>> {
        Box::pin(async move {
            self.ctl.gate(&Call::new(OpKind::Lock, path))?;
            self.inner.lock(path).await
        })
    }
}

fn skipped(effect: Option<Effect>) -> bool {
    effect == Some(Effect::SkipSilently)
}

/// A file opened through [`FaultFs`]; its calls go through the same rules.
struct FaultFile {
    inner: Box<dyn File>,
    ctl: Arc<Control>,
    path: PathBuf,
}

impl FaultFile {
    fn gate(&self, op: OpKind) -> io::Result<Option<Effect>> {
        self.ctl.gate(&Call::new(op, &self.path))
    }

    /// A read cut short: asks the inner file for fewer bytes, at least one.
    async fn short_read(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = if buf.len() > 1 { 1 + self.ctl.draw(buf.len() - 1) } else { buf.len() };
        self.inner.read_at(offset, &mut buf[..len]).await
    }
}

impl File for FaultFile {
    fn read_at<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> IoFuture<'a, usize> {
        Box::pin(async move {
            match self.gate(OpKind::Read)? {
                Some(Effect::ShortRead) => self.short_read(offset, buf).await,
                Some(Effect::BitFlip) => {
                    let n = self.inner.read_at(offset, buf).await?;
                    self.ctl.flip_bit(&mut buf[..n]);
                    Ok(n)
                }
                _ => self.inner.read_at(offset, buf).await,
            }
        })
    }

    fn write_at<'a>(&'a self, offset: u64, data: &'a [u8]) -> IoFuture<'a, ()> {
        Box::pin(async move {
            match self.gate(OpKind::Write)? {
                Some(Effect::SkipSilently) => Ok(()),
                Some(Effect::BitFlip) => {
                    let mut flipped = data.to_vec();
                    self.ctl.flip_bit(&mut flipped);
                    self.inner.write_at(offset, &flipped).await
                }
                _ => self.inner.write_at(offset, data).await,
            }
        })
    }

    fn sync_data(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            if skipped(self.gate(OpKind::Sync)?) {
                return Ok(());
            }
            self.inner.sync_data().await
        })
    }

    fn truncate(&self, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            if skipped(self.gate(OpKind::Truncate)?) {
                return Ok(());
            }
            self.inner.truncate(len).await
        })
    }

    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(async move {
            self.gate(OpKind::Size)?;
            self.inner.size().await
        })
    }
}

impl fmt::Debug for FaultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFile")
            .field("path", &self.path)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
