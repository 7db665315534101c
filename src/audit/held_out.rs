//! A fold's out-of-fold predictions, kept in its folder (`folds/fold-K/held-out.json`) with what
//! made them, so that a fold trained elsewhere (a Slurm task, a line of `--on list`) or before an
//! interruption is read back instead of trained again, and one made with other flags or data is
//! never mixed in.

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::record::Fingerprint;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The file's name in the fold's folder.
pub const FILE: &str = "held-out.json";

/// One fold's predictions of the images it held out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    /// The training flags' settings (as a comparison's runs record them).
    pub settings: Value,
    /// The audit's number of folds.
    pub folds: usize,
    /// The fold's data: the images it trained on and those it held out, their labels, classes.
    pub fingerprint: Fingerprint,
    /// Class probabilities of each held-out image, in index order.
    pub probs: Vec<f32>,
    /// Training seconds.
    pub seconds: f64,
}

/// The fold's file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The fold's predictions when `dir` holds them for the same settings, folds and data; `None`
/// when it holds none, or (with `overwrite`) others. Without `overwrite`, others are refused.
pub fn read(dir: &Path, want: &HeldOut, overwrite: bool) -> Result<Option<HeldOut>> {
    let p = path(dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&p, e)),
    };
    let same = serde_json::from_slice::<HeldOut>(&bytes).ok().filter(|h| {
        h.settings == want.settings
            && h.folds == want.folds
            && h.fingerprint == want.fingerprint
            && h.probs.len() == want.probs.len()
    });
    match same {
        Some(h) => Ok(Some(h)),
        None if overwrite => Ok(None),
        None => Err(Error::format(
            &p,
            "this fold was trained by an audit with other flags, folds or data: run that audit's \
             command again, pass --overwrite to train it anew, or choose another --out",
        )),
    }
}

/// Writes the fold's predictions.
pub fn write(dir: &Path, h: &HeldOut) -> Result<()> {
    let json = serde_json::to_vec(h).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(&path(dir), &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(settings: &str) -> HeldOut {
        HeldOut {
            settings: Value::String(settings.into()),
            folds: 3,
            fingerprint: Fingerprint {
                train: 4,
                val: 2,
                test: None,
                sha256: "ab".into(),
            },
            probs: vec![0.25; 4],
            seconds: 1.0,
        }
    }

    #[test]
    fn only_the_same_fold_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), &held("a"), false).unwrap(), None);
        write(dir.path(), &held("a")).unwrap();
        assert_eq!(
            read(dir.path(), &held("a"), false).unwrap(),
            Some(held("a"))
        );
        let e = read(dir.path(), &held("b"), false).unwrap_err().to_string();
        assert!(e.contains("other flags") && e.contains(FILE), "{e}");
        assert_eq!(read(dir.path(), &held("b"), true).unwrap(), None);
    }
}
