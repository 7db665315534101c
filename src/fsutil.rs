//! Atomic file output: a crash or a full disk never leaves a half-written file in place of a good one.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: not a file path", path.display())))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::write(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::write(path, e))?;
    // Temporary files are private (0600); the result should be as readable as any other output.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perm = std::fs::Permissions::from_mode(0o644);
        tmp.as_file()
            .set_permissions(perm)
            .map_err(|e| Error::io(path, e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::write(path, e))?;
    tmp.persist(path).map_err(|e| Error::write(path, e.error))?;
    // Make the rename itself durable; not every platform can open a directory, so failure is ignored.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `p` with symlinks and `..` resolved; for a path that does not exist yet, its parent's canonical
/// form joined with its name.
fn canonical(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Some(c);
    }
    let parent = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some(std::fs::canonicalize(parent).ok()?.join(p.file_name()?))
}

/// Whether `path` is `dir` or lies inside it, by canonical paths (symlinks resolved, `a/../b` is
/// `b`): what a command checks before it writes into, or deletes, `dir`.
pub fn within(path: &Path, dir: &Path) -> bool {
    match (canonical(path), canonical(dir)) {
        (Some(p), Some(d)) => p.starts_with(d),
        _ => false,
    }
}

/// Checks that a command may write its output file `out`: never one of the files it reads
/// (`inputs`, compared by their canonical paths, so `./a.csv` is `a.csv`), and not a file that
/// already exists unless `overwrite` (the user asked to replace it).
pub fn check_output(out: &Path, overwrite: bool, inputs: &[&Path]) -> Result<()> {
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if let Some(input) = inputs.iter().find(|i| same(out, i)) {
        return Err(Error::invalid(format!(
            "--out {} is {}, which this command reads: choose another file",
            out.display(),
            input.display()
        )));
    }
    if out.is_dir() {
        return Err(Error::invalid(format!(
            "--out {} is a directory: give a file name",
            out.display()
        )));
    }
    if out.exists() && !overwrite {
        return Err(Error::invalid(format!(
            "{} exists: pass --overwrite to replace it, or choose another --out",
            out.display()
        )));
    }
    Ok(())
}

/// Reads a whole file; a missing file is reported with `if_missing`, which says what it means for
/// the user, instead of the bare OS error.
pub fn read(path: &Path, if_missing: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::format(path, if_missing)
        } else {
            Error::io(path, e)
        }
    })
}

/// A CSV file's bytes: `header`, then `rows` (the csv crate quotes what needs quoting).
pub fn csv_bytes(header: &[String], rows: impl Iterator<Item = Vec<String>>) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let bad = |e: csv::Error| Error::invalid(format!("cannot write a CSV row: {e}"));
    w.write_record(header).map_err(bad)?;
    for r in rows {
        w.write_record(&r).map_err(bad)?;
    }
    w.into_inner()
        .map_err(|e| Error::invalid(format!("cannot write a CSV file: {e}")))
}

/// Removes the file at `path`; one that is not there is not an error.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Creates `dir` (and parents), with an error that names it.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// An exclusive lock on a run directory, held while a run writes into it and released when
/// dropped (or when the process dies: the operating system drops the lock of a dead process, so
/// a stale lock never blocks a new run).
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// The lock file's name inside a locked directory; it holds the holder's process id.
pub const LOCK_FILE: &str = ".warmstart.lock";

/// Locks `dir` (creating it) for this process, or says which process holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    create_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            return Err(Error::invalid(format!(
                "{} is in use by another warmstart run (process {}); wait for it to finish, or \
                 choose another --out",
                dir.display(),
                if holder.is_empty() { "unknown" } else { holder }
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    file.set_len(0).map_err(|e| Error::write(&path, e))?;
    writeln!(file, "{}", std::process::id()).map_err(|e| Error::write(&path, e))?;
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_existing_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn a_locked_directory_is_refused_until_the_lock_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let e = lock_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("in use by another warmstart run"), "{e}");
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        drop(held);
        lock_dir(dir.path()).unwrap();
    }

    #[test]
    fn unwritable_directory_is_an_error_naming_it() {
        let err = write_atomic(Path::new("/nonexistent-dir/x.bin"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir"), "{err}");
    }
}
