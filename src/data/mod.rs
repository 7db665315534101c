//! Datasets: where images come from (IDX, CSV, image folders) and how they are split.
//!
//! Every source yields 28x28 grayscale images stored as bytes, light strokes on a dark background
//! (the MNIST convention), and a class index per image. A [`Dataset`] always knows its class names.

pub mod csv;
pub mod folder;
pub mod idx;
pub mod split;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub use folder::Invert;

/// Image side in pixels; every image is converted to `SIDE x SIDE`.
pub const SIDE: usize = 28;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;

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
    if idx::find(path, "train", "images").is_some() {
        return Ok(SourceKind::Idx);
    }
    if path.join("train.csv").is_file() {
        return Ok(SourceKind::Csv);
    }
    Ok(SourceKind::Folder)
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// Loads the dataset at `path`, whatever its kind, validates it and makes sure it has a validation set.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let raw = match detect(path)? {
        SourceKind::Idx => idx::load_dir(path)?,
        SourceKind::Csv => csv::load(path)?,
        SourceKind::Folder => folder::load(path, opts.invert)?,
    };
    crate::cancel::check("loading data")?;
    if !raw.skipped.is_empty() {
        for (p, why) in &raw.skipped {
            eprintln!("warning: skipped {}: {why}", p.display());
        }
        eprintln!(
            "warning: {} file(s) under {} could not be used and were skipped",
            raw.skipped.len(),
            path.display()
        );
    }
    finish(path, raw, opts)
}

/// Validates labels against classes, applies limits and splits off a validation set when needed.
fn finish(path: &Path, raw: RawDataset, opts: &LoadOptions) -> Result<Dataset> {
    let max_label = [Some(&raw.train), raw.val.as_ref(), raw.test.as_ref()]
        .into_iter()
        .flatten()
        .flat_map(|s| s.labels().iter().copied())
        .max();
    let classes = match raw.classes {
        Some(c) => c,
        None => (0..max_label.map_or(0, |m| m + 1))
            .map(|i| i.to_string())
            .collect(),
    };
    if let Some(m) = max_label
        && m as usize >= classes.len()
    {
        return Err(Error::format(
            path,
            format!("label {m} is out of range for {} classes", classes.len()),
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
    let mut train = raw.train;
    if let Some(n) = opts.limit {
        train = train.truncate(n);
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
    })
}

/// Reads a class-name file (one name per line), if `dir` has one.
pub fn read_class_names(dir: &Path) -> Result<Option<Vec<String>>> {
    let p = dir.join("classes.txt");
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.is_empty() {
        return Err(Error::format(&p, "no class names"));
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
        assert!(err.to_string().contains("label 2 is out of range"), "{err}");
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
