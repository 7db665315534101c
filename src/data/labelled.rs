//! Every labelled image of a dataset with where it came from: what `audit` checks. Training
//! splits and limits its images; an audit looks at all of them (training and validation parts
//! together) and must name each one so that a user can find and fix it.

use super::{Fit, Images, Invert, SourceKind, checked_classes, detect, idx, read_source};
use crate::error::Result;
use std::path::{Path, PathBuf};

/// Where one labelled image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Its own image file (image folders).
    File(PathBuf),
    /// Image `index` (from 0) of a file holding many (IDX images, CSV rows after the header).
    Entry {
        /// The IDX images file or the CSV file.
        file: PathBuf,
        /// Its position in that file.
        index: usize,
    },
}

impl Origin {
    /// The file that holds the image.
    pub fn file(&self) -> &Path {
        match self {
            Origin::File(f) | Origin::Entry { file: f, .. } => f,
        }
    }

    /// The image's position in its file, for files holding many.
    pub fn index(&self) -> Option<usize> {
        match self {
            Origin::File(_) => None,
            Origin::Entry { index, .. } => Some(*index),
        }
    }
}

impl Origin {
    /// Its name relative to the data's directory `root` (the whole path when it is elsewhere).
    pub fn relative_to(&self, root: &Path) -> String {
        let rel = |p: &Path| {
            p.strip_prefix(root)
                .ok()
                .filter(|r| !r.as_os_str().is_empty())
                .unwrap_or(p)
                .display()
                .to_string()
        };
        match self {
            Origin::File(p) => rel(p),
            Origin::Entry { file, index } => format!("{} #{index}", rel(file)),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Entry { file, index } => write!(f, "{} #{index}", file.display()),
        }
    }
}

/// A dataset's labelled images (training and validation parts together), each with its origin,
/// and its test set.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// Where the data is.
    pub source: PathBuf,
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// The training images, then the validation images.
    pub images: Images,
    /// Where each of `images` came from, in the same order.
    pub origins: Vec<Origin>,
    /// The test set, when the data has one.
    pub test: Option<Images>,
    /// Where each test image came from.
    pub test_origins: Vec<Origin>,
    /// Files skipped while loading.
    pub warnings: Vec<String>,
}

/// The file an IDX or CSV source keeps a part's images in (`train`, `val` or `test`).
fn part_file(path: &Path, kind: SourceKind, part: &str) -> Option<PathBuf> {
    match kind {
        SourceKind::Idx if part == "test" => {
            idx::find(path, "t10k", "images").or_else(|| idx::find(path, "test", "images"))
        }
        SourceKind::Idx => idx::find(path, part, "images"),
        SourceKind::Csv if path.is_file() => Some(path.to_path_buf()),
        SourceKind::Csv => Some(path.join(format!("{part}.csv"))),
        SourceKind::Folder => None,
    }
}

fn entries(file: Option<PathBuf>, n: usize) -> impl Iterator<Item = Origin> {
    let file = file.unwrap_or_default();
    (0..n).map(move |index| Origin::Entry {
        file: file.clone(),
        index,
    })
}

/// Loads every labelled image at `path`, checked as for training, prepared with `invert` and
/// `fit`.
pub fn load(path: &Path, invert: Invert, fit: Fit) -> Result<Labelled> {
    let kind = detect(path)?;
    let (raw, warnings) = read_source(path, invert, fit)?;
    let classes = checked_classes(path, &raw)?;
    let val = raw.val.unwrap_or_default();
    let test_len = raw.test.as_ref().map_or(0, Images::len);
    let (origins, test_origins): (Vec<Origin>, Vec<Origin>) = if kind == SourceKind::Folder {
        (
            raw.train_files
                .into_iter()
                .chain(raw.val_files)
                .map(Origin::File)
                .collect(),
            raw.test_files.into_iter().map(Origin::File).collect(),
        )
    } else {
        let file = |part| part_file(path, kind, part);
        (
            entries(file("train"), raw.train.len())
                .chain(entries(file("val"), val.len()))
                .collect(),
            entries(file("test"), test_len).collect(),
        )
    };
    let mut pixels = raw.train.pixels().to_vec();
    pixels.extend_from_slice(val.pixels());
    let mut labels = raw.train.labels().to_vec();
    labels.extend_from_slice(val.labels());
    let images = Images::new(pixels, labels)?;
    debug_assert_eq!(origins.len(), images.len());
    Ok(Labelled {
        source: path.to_path_buf(),
        classes,
        images,
        origins,
        test: raw.test,
        test_origins,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::GrayImage;

    #[test]
    fn folder_images_are_named_by_their_files_with_the_validation_part_after() {
        let d = tempfile::tempdir().unwrap();
        for (part, class, name, v) in [
            ("train", "a", "1.png", 10u8),
            ("train", "b", "2.png", 200),
            ("val", "a", "3.png", 100),
            ("test", "b", "4.png", 50),
        ] {
            let p = d.path().join(part).join(class).join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            GrayImage::from_pixel(28, 28, image::Luma([v]))
                .save(&p)
                .unwrap();
        }
        std::fs::write(d.path().join("train/a/junk.png"), b"not a png").unwrap();
        let l = load(d.path(), Invert::No, Fit::Box).unwrap();
        assert_eq!(l.classes, ["a", "b"]);
        assert_eq!(l.images.labels(), &[0, 1, 0]);
        let names: Vec<String> = l
            .origins
            .iter()
            .map(|o| {
                o.file()
                    .strip_prefix(d.path())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["train/a/1.png", "train/b/2.png", "val/a/3.png"]);
        assert_eq!(l.test.unwrap().len(), 1);
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
    }

    #[test]
    fn idx_images_are_named_by_file_and_position() {
        let d = tempfile::tempdir().unwrap();
        let write = |name: &str, dims: &[usize], data: &[u8]| {
            std::fs::write(d.path().join(name), idx::encode(dims, data)).unwrap()
        };
        write("train-images-idx3-ubyte", &[3, 28, 28], &[7; 3 * 784]);
        write("train-labels-idx1-ubyte", &[3], &[0, 1, 1]);
        write("val-images-idx3-ubyte", &[1, 28, 28], &[9; 784]);
        write("val-labels-idx1-ubyte", &[1], &[0]);
        let l = load(d.path(), Invert::No, Fit::Box).unwrap();
        assert_eq!(l.images.len(), 4);
        assert_eq!(l.images.image(3), &[9; 784][..]);
        assert_eq!(
            l.origins[3],
            Origin::Entry {
                file: d.path().join("val-images-idx3-ubyte"),
                index: 0
            }
        );
        assert_eq!(l.origins[2].index(), Some(2));
        assert!(
            l.origins[2]
                .to_string()
                .ends_with("train-images-idx3-ubyte #2")
        );
    }
}
