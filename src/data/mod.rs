//! Datasets: where images come from (IDX, CSV, image folders) and how they are split.
//!
//! Every source yields 28x28 grayscale images stored as bytes, light strokes on a dark background
//! (the MNIST convention), and a class index per image. A [`Dataset`] always knows its class names.

pub mod cost;
pub mod csv;
pub mod decode;
pub mod folder;
pub mod idx;
pub mod labelled;
pub mod memory;
pub mod pool;
pub mod prepare;
pub mod split;
pub mod tree;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub use prepare::{Fit, Invert};

/// Image side in pixels; every image is converted to `SIDE x SIDE`.
pub const SIDE: usize = 28;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;
/// Most classes a dataset may have: a mistyped label (`1000` for `100`) must not silently make
/// a thousand-class model with reports too large to open.
pub const MAX_CLASSES: usize = 1000;

/// A set of labelled 28x28 grayscale images, stored contiguously.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Images {
    pixels: Vec<u8>,
    labels: Vec<u32>,
}

impl Images {
    /// Builds a set from flat pixels (`labels.len() * PIXELS` bytes) and labels.
    pub fn new(pixels: Vec<u8>, labels: Vec<u32>) -> Result<Self> {
        if pixels.len() != labels.len() * PIXELS {
            return Err(Error::invalid(format!(
                "{} pixels do not make {} images of {SIDE}x{SIDE}",
                pixels.len(),
                labels.len()
            )));
        }
        Ok(Images { pixels, labels })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 784 pixel bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * PIXELS..(i + 1) * PIXELS]
    }

    /// The class index of image `i`.
    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }

    /// All class indices, in order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// All pixel bytes, image after image.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Images {
        let mut pixels = Vec::with_capacity(indices.len() * PIXELS);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Images { pixels, labels }
    }

    /// The first `n` images (all of them when there are fewer).
    pub fn truncate(mut self, n: usize) -> Images {
        let n = n.min(self.len());
        self.pixels.truncate(n * PIXELS);
        self.labels.truncate(n);
        self
    }

    /// Number of images of each class, for `classes` classes.
    pub fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

/// What a source yields before it is validated and split.
#[derive(Debug, Default)]
pub struct RawDataset {
    /// Class names, when the source names them (folders, `classes.txt`).
    pub classes: Option<Vec<String>>,
    /// The training images.
    pub train: Images,
    /// The validation images, when the source has them.
    pub val: Option<Images>,
    /// The test images, when the source has them.
    pub test: Option<Images>,
    /// Images that could not be decoded and were skipped, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// The training images are in class order (image folders), so `--limit` must take from
    /// every class rather than the first N.
    pub grouped_by_class: bool,
    /// Each training image's file, for image folders (empty for IDX and CSV, whose images are
    /// known by their position in the file).
    pub train_files: Vec<PathBuf>,
    /// Each validation image's file, likewise.
    pub val_files: Vec<PathBuf>,
    /// Each test image's file, likewise.
    pub test_files: Vec<PathBuf>,
}

/// A dataset ready for training: class names, a training set, a validation set and perhaps a test set.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// The training images.
    pub train: Images,
    /// The validation images (split off the training images when the source has none).
    pub val: Images,
    /// The test images, when the source has them.
    pub test: Option<Images>,
    /// Where the data came from, for reports.
    pub source: PathBuf,
    /// True when the validation set was split off the training set.
    pub val_was_split: bool,
    /// What the user should know about the loading (skipped files, empty classes), for the
    /// caller to report.
    pub warnings: Vec<String>,
    /// Unlabelled images to learn from as well (`--unlabeled`), loaded by the pipeline.
    pub pool: Option<std::sync::Arc<pool::Pool>>,
}

impl Dataset {
    /// `1000 train / 500 validation / 10000 test images`, noting a validation set split off train.
    pub fn sizes(&self) -> String {
        format!(
            "{} train / {} validation{} / {}",
            self.train.len(),
            self.val.len(),
            if self.val_was_split {
                " (split off train)"
            } else {
                ""
            },
            self.test
                .as_ref()
                .map_or("no test set".to_string(), |t| format!(
                    "{} test images",
                    t.len()
                ))
        )
    }
}

/// One of a dataset's three parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// The test set.
    Test,
    #[value(name = "val")]
    /// The validation set.
    Val,
    /// The training set.
    Train,
}

impl Split {
    /// The name users type: `test`, `val` or `train`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Test => "test",
            Split::Val => "val",
            Split::Train => "train",
        }
    }
}

impl Dataset {
    /// The images of one part; `None` for a test set the data does not have.
    pub fn part(&self, split: Split) -> Option<&Images> {
        match split {
            Split::Test => self.test.as_ref(),
            Split::Val => Some(&self.val),
            Split::Train => Some(&self.train),
        }
    }
}

/// How to load a dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadOptions {
    /// Fraction of the training set held out for validation when the source has no validation set.
    pub val_split: f64,
    /// Seeds the stratified validation split.
    pub seed: u64,
    /// How image files are inverted to light-on-dark.
    pub invert: Invert,
    /// How image files are fitted into 28x28 (`box` when an older record does not say).
    #[serde(default)]
    pub fit: Fit,
    /// Use only the first N training images.
    pub limit: Option<usize>,
    /// Use only the first N test images.
    pub test_limit: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            val_split: 0.1,
            seed: 42,
            invert: Invert::Auto,
            fit: Fit::Box,
            limit: None,
            test_limit: None,
        }
    }
}

/// The kinds of source `--data PATH` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory of IDX files (the MNIST format).
    Idx,
    /// A CSV file, or a directory with `train.csv`.
    Csv,
    /// A folder of class folders of images.
    Folder,
}

/// Decides which kind of source `path` is, from what it contains.
pub fn detect(path: &Path) -> Result<SourceKind> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return if has_ext(path, "csv") {
            Ok(SourceKind::Csv)
        } else {
            Err(Error::format(
                path,
                "not a dataset: expected a .csv file or a directory (of IDX files, CSV files or class folders)",
            ))
        };
    }
    let files = if idx::find(path, "train", "images").is_some() {
        Some((SourceKind::Idx, "IDX files"))
    } else if path.join("train.csv").is_file() {
        Some((SourceKind::Csv, "train.csv"))
    } else {
        None
    };
    let Some((kind, what)) = files else {
        return Ok(SourceKind::Folder);
    };
    // Files and class folders side by side: which one is the data is a guess, so ask.
    let folders: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with('.'))
        .collect();
    if !folders.is_empty() {
        return Err(Error::format(
            path,
            format!(
                "holds both {what} and folders ({}): point --data at a directory with only one \
                 of them",
                folders.join(", ")
            ),
        ));
    }
    Ok(kind)
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// Loads the dataset at `path`, whatever its kind, validates it and makes sure it has a validation set.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let (raw, mut warnings) = read_source(path, opts.invert, opts.fit)?;
    let mut d = finish(path, raw, opts)?;
    warnings.append(&mut d.warnings);
    d.warnings = warnings;
    Ok(d)
}

/// Reads the source at `path`, whatever its kind, with a warning for each file it skipped.
fn read_source(path: &Path, invert: Invert, fit: Fit) -> Result<(RawDataset, Vec<String>)> {
    let raw = match detect(path)? {
        SourceKind::Idx => idx::load_dir(path)?,
        SourceKind::Csv => csv::load(path)?,
        SourceKind::Folder => folder::load(path, invert, fit)?,
    };
    crate::cancel::check("loading data")?;
    let mut warnings: Vec<String> = raw
        .skipped
        .iter()
        .map(|(p, why)| format!("skipped {}: {why}", p.display()))
        .collect();
    if !raw.skipped.is_empty() {
        warnings.push(format!(
            "{} file(s) under {} could not be used and were skipped",
            raw.skipped.len(),
            path.display()
        ));
    }
    Ok((raw, warnings))
}

/// The class names of `raw`, checked against its labels (every label a class, every class a
/// label, at least two), and that it has training images.
fn checked_classes(path: &Path, raw: &RawDataset) -> Result<Vec<String>> {
    let parts = [
        ("training", Some(&raw.train)),
        ("validation", raw.val.as_ref()),
        ("test", raw.test.as_ref()),
    ];
    let max_label = parts
        .iter()
        .filter_map(|(name, s)| s.map(|s| (name, s)))
        .filter_map(|(name, s)| s.labels().iter().max().map(|&m| (m, *name)))
        .max();
    if let Some((m, part)) = max_label
        && m as usize >= MAX_CLASSES
    {
        return Err(Error::format(
            path,
            format!(
                "label {m} in the {part} set: at most {MAX_CLASSES} classes (labels 0 to {}) are \
                 supported; is it mistyped?",
                MAX_CLASSES - 1
            ),
        ));
    }
    let classes = match &raw.classes {
        Some(c) => c.clone(),
        None => (0..max_label.map_or(0, |(m, _)| m + 1))
            .map(|i| i.to_string())
            .collect(),
    };
    if let Some((m, part)) = max_label
        && m as usize >= classes.len()
    {
        return Err(Error::format(
            path,
            format!(
                "label {m} in the {part} set is out of range for {} classes",
                classes.len()
            ),
        ));
    }
    if let Some((m, _)) = max_label
        && (m as usize) + 1 < classes.len()
    {
        return Err(Error::format(
            path.join("classes.txt"),
            format!(
                "names {} classes but the labels only go up to {m} ({} classes): one name per \
                 label, in label order",
                classes.len(),
                m + 1
            ),
        ));
    }
    if raw.train.is_empty() {
        return Err(Error::format(path, "the training set is empty"));
    }
    if classes.len() < 2 {
        return Err(Error::format(
            path,
            format!(
                "a classifier needs at least 2 classes, found {}",
                classes.len()
            ),
        ));
    }
    Ok(classes)
}

/// Validates labels against classes, applies limits and splits off a validation set when needed.
fn finish(path: &Path, raw: RawDataset, opts: &LoadOptions) -> Result<Dataset> {
    let classes = checked_classes(path, &raw)?;
    if opts.limit == Some(0) || opts.test_limit == Some(0) {
        return Err(Error::invalid(
            "--limit and --test-limit must be at least 1 (leave them out to use every image)",
        ));
    }
    let mut train = raw.train;
    if let Some(n) = opts.limit {
        train = if raw.grouped_by_class {
            train.select(&split::evenly(&train, classes.len(), n))
        } else {
            train.truncate(n)
        };
    }
    let mut warnings = Vec::new();
    let empty: Vec<&str> = train
        .class_counts(classes.len())
        .iter()
        .zip(&classes)
        .filter(|(n, _)| **n == 0)
        .map(|(_, c)| c.as_str())
        .collect();
    if !empty.is_empty() {
        let shown: Vec<&str> = empty.iter().take(10).copied().collect();
        warnings.push(format!(
            "{} of {} classes have no training images: {}{}",
            empty.len(),
            classes.len(),
            shown.join(", "),
            if empty.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ));
    }
    let (train, val, val_was_split) = match raw.val {
        Some(v) if !v.is_empty() => (train, v, false),
        _ => {
            let (t, v) = split::stratified(&train, classes.len(), opts.val_split, opts.seed)?;
            (t, v, true)
        }
    };
    let test = match (raw.test, opts.test_limit) {
        (Some(t), Some(n)) => Some(t.truncate(n)),
        (t, _) => t,
    };
    Ok(Dataset {
        classes,
        train,
        val,
        test,
        source: path.to_path_buf(),
        val_was_split,
        warnings,
        pool: None,
    })
}

/// Reads a class-name file (one name per line, in label order), if `dir` has one. Strict,
/// because a wrong line silently renames classes: a blank line among the names (it would shift
/// every later name onto the wrong label) and a repeated name are errors; a byte-order mark and
/// trailing blank lines are ignored.
pub fn read_class_names(dir: &Path) -> Result<Option<Vec<String>>> {
    let p = dir.join("classes.txt");
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines: Vec<&str> = text.lines().map(str::trim).collect();
    while lines.last() == Some(&"") {
        lines.pop();
    }
    if lines.is_empty() {
        return Err(Error::format(&p, "no class names"));
    }
    if lines.len() > MAX_CLASSES {
        return Err(Error::format(
            &p,
            format!(
                "{} class names: at most {MAX_CLASSES} are supported",
                lines.len()
            ),
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(lines.len());
    for (i, name) in lines.iter().enumerate() {
        if name.is_empty() {
            return Err(Error::format(
                &p,
                format!(
                    "line {} is blank: every label needs a name, one per line in label order",
                    i + 1
                ),
            ));
        }
        if let Some(j) = names.iter().position(|n| n == name) {
            return Err(Error::format(
                &p,
                format!(
                    "line {} repeats the class name {name:?} of line {}",
                    i + 1,
                    j + 1
                ),
            ));
        }
        names.push(name.to_string());
    }
    Ok(Some(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imgs(labels: &[u32]) -> Images {
        Images::new(vec![0; labels.len() * PIXELS], labels.to_vec()).unwrap()
    }

    #[test]
    fn out_of_range_label_is_rejected() {
        let raw = RawDataset {
            classes: Some(vec!["a".into(), "b".into()]),
            train: imgs(&[0, 1, 2]),
            ..Default::default()
        };
        let err = finish(Path::new("d"), raw, &LoadOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("label 2 in the training set is out of range"),
            "{err}"
        );
    }

    #[test]
    fn class_names_with_a_bom_and_trailing_blank_lines_are_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("classes.txt"), "\u{feff}cat\r\ndog\r\n\r\n").unwrap();
        assert_eq!(
            read_class_names(d.path()).unwrap(),
            Some(vec!["cat".to_string(), "dog".to_string()])
        );
    }

    #[test]
    fn single_class_is_rejected() {
        let raw = RawDataset {
            train: imgs(&[0, 0, 0]),
            ..Default::default()
        };
        let err = finish(Path::new("d"), raw, &LoadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("at least 2 classes"), "{err}");
    }

    #[test]
    fn limit_then_split() {
        let labels: Vec<u32> = (0..100).map(|i| i % 2).collect();
        let raw = RawDataset {
            train: imgs(&labels),
            ..Default::default()
        };
        let opts = LoadOptions {
            limit: Some(40),
            ..Default::default()
        };
        let d = finish(Path::new("d"), raw, &opts).unwrap();
        assert_eq!(d.train.len() + d.val.len(), 40);
        assert_eq!(d.val.len(), 4);
        assert!(d.val_was_split);
        assert_eq!(d.classes, vec!["0", "1"]);
    }
}
