//! The one error type of the crate.
//!
//! `Corruption` (bytes on disk are not what the engine wrote) is kept apart from `Io` (the
//! operating system refused an operation), because callers react differently: an I/O error may
//! pass, corruption needs a human. Every variant carries enough context to act on.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in JadeDB.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The operating system failed an operation on `path`.
    Io {
        /// What the engine was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The error the OS gave.
        source: io::Error,
    },
    /// The bytes of `file` at `offset` are not what the engine wrote.
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record or block.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The caller passed something the engine cannot store (an oversized key, say).
    InvalidArgument(String),
    /// An earlier write failed in a way that leaves durability unknown (a failed fsync, say),
    /// so the database accepts no more writes until it is reopened.
    Poisoned(Arc<str>),
    /// The database has been closed.
    Closed,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption { file: file.into(), offset, reason: reason.into() }
    }

    /// Whether this error reports damaged data on disk.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(f, "I/O error while {op} {}: {source}", path.display())
            }
            Error::Corruption { file, offset, reason } => {
                write!(f, "corruption in {} at offset {offset}: {reason}", file.display())
            }
            Error::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            Error::Poisoned(cause) => write!(
                f,
                "the database accepts no more writes after an earlier failure ({cause}); reopen it"
            ),
            Error::Closed => f.write_str("the database is closed"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
