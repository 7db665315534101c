//! The library's error type: every variant that comes from user input names the file at fault.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory that could not be opened or read. The error is shown in the message,
    /// not chained, so it is printed once.
    #[error("{}: {err}", path.display())]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// What the operating system said.
        err: std::io::Error,
    },
    /// A file that could not be written (with a hint when the disk or a quota is full).
    #[error("{}: cannot write: {err}{}", path.display(), full_hint(err))]
    Write {
        /// The file at fault.
        path: PathBuf,
        /// What the operating system said.
        err: std::io::Error,
    },
    /// A file that was read but whose contents are wrong.
    #[error("{}: {msg}", path.display())]
    Format {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A bad option or a combination of inputs that cannot work together.
    #[error("{0}")]
    Invalid(String),
    /// Training produced a non-finite loss.
    #[error("{0}")]
    Numerical(String),
    /// Training was stopped by a signal after saving a resumable state.
    #[error(
        "interrupted in epoch {epoch} after {batch} batches; progress saved in {}: continue with \
         `warmstart {command} --resume {}`",
        dir.display(),
        dir.display()
    )]
    Interrupted {
        /// The command that continues it: `pretrain` or `train`.
        command: &'static str,
        /// The run directory holding the resumable state.
        dir: PathBuf,
        /// The epoch in progress (1-based).
        epoch: usize,
        /// Batches of that epoch already trained.
        batch: usize,
    },
    /// Work stopped by Ctrl-C or SIGTERM before it wrote anything.
    #[error("stopped by Ctrl-C or SIGTERM while {0}; nothing was written")]
    Cancelled(&'static str),
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// ENOSPC (28), EFBIG (27) and EDQUOT (122) mean the disk, a file-size limit or a quota is full.
fn full_hint(err: &std::io::Error) -> &'static str {
    if matches!(err.raw_os_error(), Some(27 | 28 | 122)) {
        " (disk or quota full?); any previous version of the file is intact"
    } else {
        ""
    }
}

impl Error {
    /// A file that could not be opened or read.
    pub fn io(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            err,
        }
    }

    /// A file that could not be written.
    pub fn write(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        Error::Write {
            path: path.as_ref().to_path_buf(),
            err,
        }
    }

    /// A file whose contents are wrong, and what is wrong with them.
    pub fn format(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// A bad option or combination of inputs.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// Whether the error is a stop asked for by a signal (the shell's exit code 130).
    pub fn is_interruption(&self) -> bool {
        matches!(self, Error::Interrupted { .. } | Error::Cancelled(_))
    }
}
