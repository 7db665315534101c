//! The unlabelled pool of semi-supervised training (`--unlabeled PATH`): images without labels,
//! held as bytes (784 a image) however many there are.
//!
//! `PATH` may be an image folder (any nesting; class folders, if any, are just more folders),
//! an IDX images file, a directory holding `train-images-idx3-ubyte[.gz]`, or a CSV file (a
//! label column, if present, is not used for training). Images are prepared by the labelled
//! data's rule (`--invert`, `--fit`); files that are not readable images are skipped with a
//! warning. Labels that come with the pool (an IDX labels file beside the images, a CSV label
//! column) are kept apart, only to report how accurate the pseudo-labels are.

use super::labelled::Origin;
use super::prepare::{Fit, Invert, load_image};
use super::{PIXELS, csv, idx};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Unlabelled images.
#[derive(Debug, Clone)]
pub struct Pool {
    pixels: Vec<u8>,
    /// Labels that came with the pool: never trained on, only compared with pseudo-labels.
    pub known_labels: Option<Vec<u32>>,
    /// Where it was read from.
    pub source: PathBuf,
    /// Files skipped, and a count, for the user.
    pub warnings: Vec<String>,
    /// Each image's file, for image folders; empty when one file holds them all (`held_in`).
    files: Vec<PathBuf>,
    /// The file holding every image (IDX images, CSV), when there is one.
    held_in: PathBuf,
    /// Each image's position in `held_in`, once images were left out (empty: its own index).
    positions: Vec<usize>,
}

impl Pool {
    /// A pool of `pixels` (784 bytes an image).
    pub fn new(pixels: Vec<u8>, known_labels: Option<Vec<u32>>, source: PathBuf) -> Result<Pool> {
        if pixels.is_empty() || !pixels.len().is_multiple_of(PIXELS) {
            return Err(Error::format(
                &source,
                "the unlabelled pool holds no images (an empty pool is no help: leave out \
                 --unlabeled)",
            ));
        }
        if let Some(l) = &known_labels
            && l.len() * PIXELS != pixels.len()
        {
            return Err(Error::format(
                &source,
                format!(
                    "has {} labels for {} images",
                    l.len(),
                    pixels.len() / PIXELS
                ),
            ));
        }
        Ok(Pool {
            pixels,
            known_labels,
            held_in: source.clone(),
            source,
            warnings: Vec::new(),
            files: Vec::new(),
            positions: Vec::new(),
        })
    }

    /// Where image `i` came from: its file, or its position in the file holding them all.
    pub fn origin(&self, i: usize) -> Origin {
        match self.files.get(i) {
            Some(f) => Origin::File(f.clone()),
            None => Origin::Entry {
                file: self.held_in.clone(),
                index: self.origin_index(i),
            },
        }
    }

    fn origin_index(&self, i: usize) -> usize {
        self.positions.get(i).copied().unwrap_or(i)
    }

    /// Images in the pool.
    pub fn len(&self) -> usize {
        self.pixels.len() / PIXELS
    }

    /// Whether the pool holds no image (never, once built).
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Image `i`'s 784 bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * PIXELS..(i + 1) * PIXELS]
    }

    /// Leaves out the images whose pixels are those of an image in `data`'s training,
    /// validation or test part (a pool holding the test images would train on them), with a
    /// warning saying how many of each.
    pub fn leave_out_copies_of(&mut self, data: &super::Dataset) -> Result<()> {
        let key = |px: &[u8]| -> [u8; 32] { Sha256::digest(px).into() };
        let mut part_of = std::collections::HashMap::new();
        for split in [super::Split::Train, super::Split::Val, super::Split::Test] {
            if let Some(images) = data.part(split) {
                for i in 0..images.len() {
                    part_of.entry(key(images.image(i))).or_insert(split);
                }
            }
        }
        let mut counts = [0usize; 3];
        let mut keep = Vec::with_capacity(self.len());
        for i in 0..self.len() {
            match part_of.get(&key(self.image(i))) {
                Some(s) => counts[*s as usize] += 1,
                None => keep.push(i),
            }
        }
        if keep.len() == self.len() {
            return Ok(());
        }
        if keep.is_empty() {
            return Err(Error::format(
                &self.source,
                "every image of the unlabelled pool is also a labelled image (identical pixels): \
                 nothing is left to learn from; leave out --unlabeled",
            ));
        }
        let said: Vec<String> = [super::Split::Train, super::Split::Val, super::Split::Test]
            .into_iter()
            .filter(|s| counts[*s as usize] > 0)
            .map(|s| format!("{} {}", counts[s as usize], s.name()))
            .collect();
        self.warnings.push(format!(
            "{} holds {} image(s) identical to labelled ones ({}): left out of the pool, so that \
             no image is both trained on without its label and scored",
            self.source.display(),
            self.len() - keep.len(),
            said.join(", ")
        ));
        let mut pixels = Vec::with_capacity(keep.len() * PIXELS);
        for &i in &keep {
            pixels.extend_from_slice(self.image(i));
        }
        self.known_labels = self
            .known_labels
            .take()
            .map(|l| keep.iter().map(|&i| l[i]).collect());
        if self.files.is_empty() {
            self.positions = keep.iter().map(|&i| self.origin_index(i)).collect();
        } else {
            self.files = keep.iter().map(|&i| self.files[i].clone()).collect();
        }
        self.pixels = pixels;
        Ok(())
    }

    /// SHA-256 of the images, in order (the labels, never trained on, are left out).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update((self.len() as u64).to_le_bytes());
        h.update(&self.pixels);
        format!("{:x}", h.finalize())
    }
}

/// Reads the pool at `path` (see the module documentation).
pub fn load(path: &Path, invert: Invert, fit: Fit) -> Result<Pool> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let src = path.to_path_buf();
    if meta.is_file() {
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
        let name = name.unwrap_or_default();
        if name.ends_with(".csv") {
            return csv_pool(path);
        }
        if name.contains("idx3-ubyte") {
            let (_, pixels) = idx::read_images(path)?;
            return Pool::new(pixels, None, src);
        }
        return Err(Error::format(
            path,
            "not an unlabelled pool: expected a folder of images, an IDX images file \
             (*-idx3-ubyte[.gz]), a directory holding train-images-idx3-ubyte[.gz], or a .csv file",
        ));
    }
    if let Some(images) = idx::find(path, "train", "images") {
        let (n, pixels) = idx::read_images(&images)?;
        // The labels beside the images, if any, only measure the pseudo-labels.
        let labels = match idx::find(path, "train", "labels") {
            Some(l) => {
                let l = idx::read_labels(&l)?;
                (l.len() == n).then_some(l)
            }
            None => None,
        };
        let mut pool = Pool::new(pixels, labels, src)?;
        pool.held_in = images;
        return Ok(pool);
    }
    if path.join("train.csv").is_file() {
        return csv_pool(&path.join("train.csv"));
    }
    folder_pool(path, invert, fit)
}

fn csv_pool(path: &Path) -> Result<Pool> {
    // Labelled or not, the pool trains on the pixels only; labels (when the file has them)
    // measure the pseudo-labels.
    let labels = csv::read(path).ok().map(|i| i.labels().to_vec());
    let pixels = csv::read_unlabelled(path)?;
    let labels = labels.filter(|l| l.len() * PIXELS == pixels.len());
    Pool::new(pixels, labels, path.to_path_buf())
}

/// Every image under `root`, at any depth, in path order.
fn folder_pool(root: &Path, invert: Invert, fit: Fit) -> Result<Pool> {
    let tree = super::tree::files(
        root,
        super::tree::Links::Follow,
        "reading the unlabelled pool",
    )?;
    let files = tree.files;
    let mut pixels = Vec::with_capacity(files.len() * PIXELS);
    let mut skipped = Vec::new();
    let mut read = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        if i % 256 == 0 {
            crate::cancel::check("reading the unlabelled pool")?;
        }
        match load_image(f, invert, fit) {
            Ok(px) => {
                pixels.extend_from_slice(&px);
                read.push(f.clone());
            }
            Err(e) => skipped.push(e.to_string()),
        }
    }
    if pixels.is_empty() {
        // Name the first file and its problem: the skip warnings are dropped with the pool.
        let first = skipped.first().map_or(String::new(), |e| format!("; {e}"));
        return Err(Error::format(
            root,
            format!(
                "the unlabelled pool holds no readable image ({} file(s) found{first})",
                files.len()
            ),
        ));
    }
    let mut pool = Pool::new(pixels, None, root.to_path_buf())?;
    pool.files = read;
    pool.warnings = tree.warnings;
    if !skipped.is_empty() {
        let n = skipped.len();
        pool.warnings
            .extend(skipped.iter().map(|e| format!("skipped {e}")));
        pool.warnings.push(format!(
            "{n} file(s) under {} could not be used and were skipped",
            root.display()
        ));
    }
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(v: u8) -> image::GrayImage {
        image::GrayImage::from_fn(28, 28, |x, _| image::Luma([if x > 10 { v } else { 0 }]))
    }

    #[test]
    fn a_folder_at_any_depth_skipping_what_is_not_an_image() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        image(200).save(d.path().join("top.png")).unwrap();
        image(100).save(d.path().join("a/b/deep.png")).unwrap();
        std::fs::write(d.path().join("a/notes.txt"), "hello").unwrap();
        std::fs::write(d.path().join(".hidden.png"), "x").unwrap();
        let p = load(d.path(), Invert::No, Fit::Box).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.known_labels.is_none());
        assert_eq!(p.origin(0), Origin::File(d.path().join("a/b/deep.png")));
        assert_eq!(p.origin(1), Origin::File(d.path().join("top.png")));
        assert!(
            p.warnings.iter().any(|w| w.contains("notes.txt")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn idx_files_and_directories_with_their_labels_kept_apart() {
        let d = tempfile::tempdir().unwrap();
        let px: Vec<u8> = (0..3 * PIXELS).map(|i| (i % 251) as u8).collect();
        let images = d.path().join("train-images-idx3-ubyte");
        std::fs::write(&images, idx::encode(&[3, 28, 28], &px)).unwrap();
        let file = load(&images, Invert::No, Fit::Box).unwrap();
        assert_eq!((file.len(), file.known_labels.is_none()), (3, true));
        std::fs::write(
            d.path().join("train-labels-idx1-ubyte"),
            idx::encode(&[3], &[2, 0, 1]),
        )
        .unwrap();
        let dir = load(d.path(), Invert::No, Fit::Box).unwrap();
        assert_eq!(dir.known_labels, Some(vec![2, 0, 1]));
        assert_eq!(dir.image(1), &px[PIXELS..2 * PIXELS]);
        assert_eq!(dir.fingerprint(), file.fingerprint());
    }

    #[test]
    fn csv_with_or_without_labels() {
        let d = tempfile::tempdir().unwrap();
        let header: Vec<String> = (0..PIXELS).map(|i| format!("pixel{i}")).collect();
        let row = vec!["7"; PIXELS].join(",");
        let plain = d.path().join("plain.csv");
        std::fs::write(&plain, format!("{}\n{row}\n{row}\n", header.join(","))).unwrap();
        let p = load(&plain, Invert::No, Fit::Box).unwrap();
        assert_eq!((p.len(), p.known_labels.clone()), (2, None));
        let labelled = d.path().join("labelled.csv");
        std::fs::write(&labelled, format!("label,{}\n3,{row}\n", header.join(","))).unwrap();
        let p = load(&labelled, Invert::No, Fit::Box).unwrap();
        assert_eq!(p.known_labels, Some(vec![3]));
        assert_eq!(p.image(0)[0], 7);
    }

    #[test]
    fn bad_pools_are_errors_naming_the_path() {
        let d = tempfile::tempdir().unwrap();
        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = load(&empty, Invert::No, Fit::Box).unwrap_err().to_string();
        assert!(
            e.contains("empty") && e.contains("no readable image"),
            "{e}"
        );
        let junk = d.path().join("junk");
        std::fs::create_dir(&junk).unwrap();
        std::fs::write(junk.join("a.png"), "not a png").unwrap();
        let e = load(&junk, Invert::No, Fit::Box).unwrap_err().to_string();
        assert!(e.contains("junk"), "{e}");
        let e = load(&d.path().join("absent"), Invert::No, Fit::Box)
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent"), "{e}");
        let txt = d.path().join("list.txt");
        std::fs::write(&txt, "x").unwrap();
        let e = load(&txt, Invert::No, Fit::Box).unwrap_err().to_string();
        assert!(
            e.contains("list.txt") && e.contains("not an unlabelled pool"),
            "{e}"
        );
        let bad = d.path().join("bad-idx3-ubyte");
        std::fs::write(&bad, [0u8, 0, 8, 3, 0]).unwrap();
        let e = load(&bad, Invert::No, Fit::Box).unwrap_err().to_string();
        assert!(e.contains("bad-idx3-ubyte"), "{e}");
    }
}
