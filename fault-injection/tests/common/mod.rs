//! Helpers shared by the integration tests: synchronous wrappers over the async seam, so each
//! test reads as the sequence of disk operations it checks.
#![allow(dead_code)] // Each test binary uses a different subset.

use jadedb::runtime::{read_all, File, FileSystem};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::io;
use std::path::Path;

/// How many seeds each crash property is checked over.
pub const SEEDS: u64 = 200;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn create(fs: &dyn FileSystem, path: &str) -> Box<dyn File> {
    pollster::block_on(fs.create(Path::new(path))).expect("create")
}

pub fn open(fs: &dyn FileSystem, path: &str) -> io::Result<Box<dyn File>> {
    pollster::block_on(fs.open(Path::new(path)))
}

pub fn mkdir(fs: &dyn FileSystem, path: &str) {
    pollster::block_on(fs.create_dir_all(Path::new(path))).expect("create_dir_all");
}

pub fn sync_dir(fs: &dyn FileSystem, path: &str) {
    pollster::block_on(fs.sync_dir(Path::new(path))).expect("sync_dir");
}

pub fn write(file: &dyn File, offset: u64, data: &[u8]) {
    pollster::block_on(file.write_at(offset, data)).expect("write_at");
}

pub fn sync(file: &dyn File) -> io::Result<()> {
    pollster::block_on(file.sync_data())
}

pub fn read(file: &dyn File) -> Vec<u8> {
    pollster::block_on(read_all(file)).expect("read_all")
}

/// The whole contents of `path`, or `None` if it does not exist.
pub fn contents(fs: &dyn FileSystem, path: &str) -> Option<Vec<u8>> {
    match open(fs, path) {
        Ok(file) => Some(read(&*file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => panic!("open {path}: {e}"),
    }
}

pub fn list(fs: &dyn FileSystem, dir: &str) -> Vec<String> {
    pollster::block_on(fs.list(Path::new(dir))).expect("list")
}
