//! The run directory: the files a run writes into it, whether a new run may start there, and
//! clearing an older run's files. (Its resume file is `super::resume`'s.)

use crate::error::{Error, Result};
use crate::record::Stage;
use std::path::{Path, PathBuf};

/// The files a training run writes into its directory (besides `eval-*/` folders).
pub const RUN_FILES: [&str; 14] = [
    "best.safetensors",
    "best.json",
    "last.safetensors",
    "last.json",
    "history.csv",
    "curves.png",
    "confusion.png",
    "mistakes.png",
    "augment_preview.png",
    "per_class.csv",
    "per_class.json",
    "report.html",
    super::resume::FILE,
    // Written by `compare` when a run finishes: a new run in the directory is not that run.
    "result.json",
];

/// What a run directory already holds: an interrupted run (its resume state) or another run's
/// files. A new run may only start in it with `--overwrite`.
pub fn check_out_dir(dir: &Path, stage: Stage, overwrite: bool) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = RUN_FILES
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        found.extend(entries.flatten().map(|e| e.path()).filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("eval-"))
        }));
    }
    if found.is_empty() || overwrite {
        return Ok(found);
    }
    let command = stage.command();
    if super::resume::exists(dir) {
        return Err(Error::invalid(format!(
            "{} holds an interrupted run: continue it with `warmstart {command} --resume {}`, or \
             pass --overwrite to discard it and start a new run there",
            dir.display(),
            dir.display()
        )));
    }
    let names: Vec<String> = found
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    Err(Error::invalid(format!(
        "{} holds another run's results ({}): pass --overwrite to replace them, or choose another --out",
        dir.display(),
        names.join(", ")
    )))
}

/// Removes an older run's files before a new run writes its own, so none is left beside them.
pub fn clear(found: &[PathBuf]) -> Result<()> {
    for p in found {
        let r = if p.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
        r.map_err(|e| Error::io(p, e))?;
    }
    Ok(())
}
