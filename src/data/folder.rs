//! Image folders: `PATH/<class>/*` or `PATH/{train,val,test}/<class>/*`, each image prepared
//! by [`super::prepare`]'s rule; hidden entries are ignored, unreadable files skipped with their
//! reason, and an empty class folder is an error.

use super::prepare::{Fit, Invert, load_image};
use super::{Images, RawDataset, Split};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Whether a directory entry is hidden (`.DS_Store`, `.ipynb_checkpoints`, `.git`): never data.
pub(super) fn hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// The visible entries of `dir`, sorted.
pub fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if !hidden(&p) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect())
}

fn dir_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads `dir/<class>/*` for the given class names, with each image's file. A file that is not a
/// readable image is skipped and reported; an empty class folder is an error.
fn read_split(
    dir: &Path,
    classes: &[String],
    invert: Invert,
    fit: Fit,
    skipped: &mut Vec<(PathBuf, String)>,
) -> Result<(Images, Vec<PathBuf>)> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut files = Vec::new();
    for sub in subdirs(dir)? {
        let name = dir_name(&sub);
        let label = classes.iter().position(|c| *c == name).ok_or_else(|| {
            Error::format(
                &sub,
                format!("class {name:?} is not among the training classes {classes:?}"),
            )
        })?;
        let (mut found, skipped_before) = (0, skipped.len());
        for f in sorted_entries(&sub)? {
            crate::cancel::check("loading images")?;
            // Follows symbolic links: a dangling or looping one is skipped like an unreadable file.
            match std::fs::metadata(&f) {
                Err(e) => {
                    skipped.push((f, format!("cannot be read ({e}); a broken symbolic link?")));
                    continue;
                }
                Ok(m) if m.is_dir() => {
                    skipped.push((f, "a directory inside a class folder".into()));
                    continue;
                }
                Ok(_) => {}
            }
            match load_image(&f, invert, fit) {
                Ok(px) => {
                    pixels.extend_from_slice(&px);
                    labels.push(label as u32);
                    files.push(f);
                    found += 1;
                }
                Err(e @ Error::Io { .. }) => return Err(e),
                Err(e) => {
                    let why = match e {
                        Error::Format { msg, .. } => msg,
                        other => other.to_string(),
                    };
                    skipped.push((f, why));
                }
            }
        }
        if found == 0 {
            // Say why, naming a file: the warnings for skipped files are never printed when
            // loading fails.
            let why = skipped[skipped_before..]
                .first()
                .map_or(String::new(), |(f, e)| {
                    let n = skipped.len() - skipped_before;
                    format!(" ({n} file(s) skipped, e.g. {}: {e})", f.display())
                });
            return Err(Error::format(
                &sub,
                format!("class folder has no readable images{why}"),
            ));
        }
    }
    Ok((Images::new(pixels, labels)?, files))
}

/// The part a folder of the split layout holds, from its name in any case (`Train/`, `TEST/`).
pub fn part_of(folder: &Path) -> Option<Split> {
    let name = dir_name(folder);
    [Split::Train, Split::Val, Split::Test]
        .into_iter()
        .find(|s| name.eq_ignore_ascii_case(s.name()))
}

/// `root`'s part folders when it has the `{train,val,test}/<class>` layout (a `train/` folder and
/// only part folders beside it, in any case), as the loader reads it; `None` for a folder of
/// class folders.
pub fn split_parts(root: &Path) -> Result<Option<Vec<(Split, PathBuf)>>> {
    let dirs = subdirs(root)?;
    let parts: Vec<(Split, PathBuf)> = dirs
        .iter()
        .filter_map(|d| Some((part_of(d)?, d.clone())))
        .collect();
    let layout = parts.len() == dirs.len() && parts.iter().any(|(s, _)| *s == Split::Train);
    Ok(layout.then_some(parts))
}

/// Loads an image-folder dataset.
pub fn load(root: &Path, invert: Invert, fit: Fit) -> Result<RawDataset> {
    let dirs = subdirs(root)?;
    if dirs.is_empty() {
        return Err(Error::format(
            root,
            "no dataset found: expected IDX files, train.csv, or one folder per class",
        ));
    }
    let parts = split_parts(root)?;
    let part = |split: Split| -> Option<PathBuf> {
        let (_, d) = parts.as_ref()?.iter().find(|(s, _)| *s == split)?;
        Some(d.clone())
    };
    let train_dir = part(Split::Train).unwrap_or_else(|| root.to_path_buf());
    let classes: Vec<String> = subdirs(&train_dir)?.iter().map(|d| dir_name(d)).collect();
    if classes.is_empty() {
        return Err(Error::format(&train_dir, "no class folders"));
    }
    let mut skipped = Vec::new();
    let (train, train_files) = read_split(&train_dir, &classes, invert, fit, &mut skipped)?;
    let mut opt = |split: Split| -> Result<Option<(Images, Vec<PathBuf>)>> {
        match part(split) {
            Some(d) => read_split(&d, &classes, invert, fit, &mut skipped).map(Some),
            None => Ok(None),
        }
    };
    let (val, val_files) = opt(Split::Val)?.unzip();
    let (test, test_files) = opt(Split::Test)?.unzip();
    Ok(RawDataset {
        classes: Some(classes),
        train,
        val,
        test,
        skipped,
        grouped_by_class: true,
        train_files,
        val_files: val_files.unwrap_or_default(),
        test_files: test_files.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::GrayImage;

    fn save(p: &Path, v: u8) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        GrayImage::from_pixel(28, 28, image::Luma([v]))
            .save(p)
            .unwrap();
    }

    #[test]
    fn class_folders_with_a_bad_file() {
        let d = tempfile::tempdir().unwrap();
        save(&d.path().join("b/1.png"), 10);
        save(&d.path().join("a/1.png"), 20);
        save(&d.path().join("a/2.png"), 30);
        std::fs::write(d.path().join("a/notes.txt"), "hello").unwrap();
        let raw = load(d.path(), Invert::No, Fit::Box).unwrap();
        assert_eq!(raw.classes.unwrap(), vec!["a", "b"]);
        assert_eq!(raw.train.labels(), &[0, 0, 1]);
        assert_eq!(raw.skipped.len(), 1);
        assert!(raw.skipped[0].0.ends_with("notes.txt"));
    }

    #[test]
    fn truncated_png_is_skipped_with_reason() {
        let d = tempfile::tempdir().unwrap();
        save(&d.path().join("a/1.png"), 10);
        save(&d.path().join("b/1.png"), 10);
        let bytes = std::fs::read(d.path().join("a/1.png")).unwrap();
        std::fs::write(d.path().join("a/2.png"), &bytes[..bytes.len() / 2]).unwrap();
        let raw = load(d.path(), Invert::No, Fit::Box).unwrap();
        assert_eq!(raw.train.len(), 2);
        assert_eq!(raw.skipped.len(), 1);
        assert!(raw.skipped[0].1.contains("decode"), "{}", raw.skipped[0].1);
    }

    #[test]
    fn empty_class_folder_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        save(&d.path().join("a/1.png"), 10);
        std::fs::create_dir_all(d.path().join("b")).unwrap();
        let e = load(d.path(), Invert::No, Fit::Box)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no readable images") && e.contains("/b"), "{e}");
    }

    #[test]
    fn split_layout() {
        let d = tempfile::tempdir().unwrap();
        for s in ["train", "test"] {
            save(&d.path().join(s).join("x/1.png"), 1);
            save(&d.path().join(s).join("y/1.png"), 2);
        }
        let raw = load(d.path(), Invert::No, Fit::Box).unwrap();
        assert_eq!(raw.classes.unwrap(), vec!["x", "y"]);
        assert_eq!(raw.test.unwrap().len(), 2);
        assert!(raw.val.is_none());
    }
}
