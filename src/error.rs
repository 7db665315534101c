//! The library's error type: every variant that comes from user input names the file at fault.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The error is shown in the message, not chained, so it is printed once.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// A file that was read but whose contents are wrong.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// A bad option or a combination of inputs that cannot work together.
    #[error("{0}")]
    Invalid(String),
    /// Training produced a non-finite loss.
    #[error("{0}")]
    Numerical(String),
    /// Training was stopped by a signal after saving a resumable state.
    #[error(
        "interrupted in epoch {epoch} after {batch} batches; progress saved in {}: continue with --resume {}",
        dir.display(),
        dir.display()
    )]
    Interrupted {
        dir: PathBuf,
        epoch: usize,
        batch: usize,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            err,
        }
    }

    /// An error writing `path`, with a hint when the disk (or a file-size limit) is full.
    pub fn write(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        // ENOSPC (28), EFBIG (27), EDQUOT (122).
        let full = matches!(err.raw_os_error(), Some(27 | 28 | 122));
        let msg = if full {
            format!(
                "cannot write: {err} (disk or quota full?); any previous version of the file is intact"
            )
        } else {
            format!("cannot write: {err}")
        };
        Error::Format {
            path: path.as_ref().to_path_buf(),
            msg,
        }
    }

    pub fn format(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}
