//! The datasets shipped in `data/`: MNIST for pretraining, `fashion-1k`, the scarce default
//! target, and `fashion-pool`, unlabelled images for it. Their checksums are verified before use,
//! and the Fashion-MNIST ones can be rebuilt from the original files.

use crate::data::idx::{encode, gzip, read_pair};
use crate::data::{Images, PIXELS, SIDE};
use crate::error::{Error, Result};
use crate::fsutil::{create_dir, write_atomic};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Fashion-MNIST's class names, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Images per class in the fashion-1k training and validation sets.
pub const FASHION_TRAIN_PER_CLASS: usize = 100;
/// Validation images per class in fashion-1k (the next ones after the training images).
pub const FASHION_VAL_PER_CLASS: usize = 50;
/// Images per class in fashion-pool (the next ones after fashion-1k's): 20,000 in all, about
/// 9 MB compressed.
pub const FASHION_POOL_PER_CLASS: usize = 2_000;

/// Finds a bundled dataset directory (`data/<name>`): relative to the working directory first,
/// then to the source tree the binary was built from.
pub fn dir(name: &str) -> PathBuf {
    let local = Path::new("data").join(name);
    if local.is_dir() {
        return local;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name);
    if built.is_dir() { built } else { local }
}

/// The folder of the bundled pretraining (`data/pretrained`): the default `warmstart pretrain`
/// run's kept checkpoint and its sidecar.
pub const PRETRAINED: &str = "pretrained";

/// The bundled pretraining's folder, its files checked against its `SHA256SUMS`; `None` where
/// this copy of warmstart has none.
pub fn pretrained() -> Result<Option<PathBuf>> {
    let d = dir(PRETRAINED);
    if !d.join("best.safetensors").is_file() {
        return Ok(None);
    }
    verify(&d)?;
    Ok(Some(d))
}

/// The SHA-256 of `bytes` as lowercase hex, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks every file listed in `dir/SHA256SUMS` (`<hex>  <name>` lines).
pub fn verify(dir: &Path) -> Result<usize> {
    let sums = dir.join("SHA256SUMS");
    let text = std::fs::read_to_string(&sums).map_err(|e| Error::io(&sums, e))?;
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (hex, name) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| Error::format(&sums, format!("malformed line {line:?}")))?;
        let name = name.trim().trim_start_matches('*');
        let p = dir.join(name);
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        if sha256_hex(&bytes) != hex.to_ascii_lowercase() {
            return Err(Error::format(
                &p,
                "checksum does not match SHA256SUMS: the file is corrupt or was changed",
            ));
        }
        n += 1;
    }
    Ok(n)
}

/// Per class, the images at positions `skip..skip+take` among that class's images, in file order;
/// the result is in file order.
fn per_class(images: &Images, classes: usize, skip: usize, take: usize) -> Result<Images> {
    let mut seen = vec![0usize; classes];
    let mut pick = Vec::new();
    for (i, &l) in images.labels().iter().enumerate() {
        let c = l as usize;
        if c >= classes {
            continue;
        }
        if seen[c] >= skip && seen[c] < skip + take {
            pick.push(i);
        }
        seen[c] += 1;
    }
    if let Some(c) = seen.iter().position(|&s| s < skip + take) {
        return Err(Error::invalid(format!(
            "class {c} has only {} images, {} needed",
            seen[c],
            skip + take
        )));
    }
    Ok(images.select(&pick))
}

fn write_set(
    out: &Path,
    prefix: &str,
    set: &Images,
    files: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let n = set.len();
    debug_assert_eq!(set.pixels().len(), n * PIXELS);
    let labels: Vec<u8> = set.labels().iter().map(|&l| l as u8).collect();
    for (kind, bytes) in [
        (
            "images-idx3-ubyte",
            gzip(&encode(&[n, SIDE, SIDE], set.pixels())),
        ),
        ("labels-idx1-ubyte", gzip(&encode(&[n], &labels))),
    ] {
        let name = format!("{prefix}-{kind}.gz");
        write_atomic(&out.join(&name), &bytes)?;
        files.push((name, bytes));
    }
    Ok(())
}

/// Builds `fashion-pool` from the original Fashion-MNIST training files in `src`: per class the
/// [`FASHION_POOL_PER_CLASS`] images after fashion-1k's, in file order, none of them in
/// fashion-1k or the test set. The labels are written beside the images: training never reads
/// them, the history uses them to score the pseudo-labels.
pub fn build_fashion_pool(src: &Path, out: &Path) -> Result<()> {
    let train = read_pair(
        &find_original(src, "train", "images")?,
        &find_original(src, "train", "labels")?,
    )?;
    let skip = FASHION_TRAIN_PER_CLASS + FASHION_VAL_PER_CLASS;
    let pool = per_class(&train, FASHION_CLASSES.len(), skip, FASHION_POOL_PER_CLASS)?;
    create_dir(out)?;
    let mut files = Vec::new();
    write_set(out, "train", &pool, &mut files)?;
    write_sums(out, &files)
}

fn find_original(src: &Path, prefix: &str, kind: &str) -> Result<PathBuf> {
    crate::data::idx::find(src, prefix, kind).ok_or_else(|| {
        Error::format(
            src,
            format!("no {prefix}-{kind} IDX file (Fashion-MNIST originals expected)"),
        )
    })
}

fn write_sums(out: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let sums: String = files
        .iter()
        .map(|(n, b)| format!("{}  {n}\n", sha256_hex(b)))
        .collect();
    write_atomic(&out.join("SHA256SUMS"), sums.as_bytes())
}

/// Builds `fashion-1k` from the four original Fashion-MNIST files in `src`: train = the first 100
/// images of each class in the official training-file order, val = the next 50 of each class,
/// test = the official 10,000 test images.
pub fn build_fashion_1k(src: &Path, out: &Path) -> Result<()> {
    let find = |prefix: &str, kind: &str| find_original(src, prefix, kind);
    let train = read_pair(&find("train", "images")?, &find("train", "labels")?)?;
    let test = read_pair(&find("t10k", "images")?, &find("t10k", "labels")?)?;
    let k = FASHION_CLASSES.len();
    create_dir(out)?;
    let mut files = Vec::new();
    write_set(
        out,
        "train",
        &per_class(&train, k, 0, FASHION_TRAIN_PER_CLASS)?,
        &mut files,
    )?;
    write_set(
        out,
        "val",
        &per_class(&train, k, FASHION_TRAIN_PER_CLASS, FASHION_VAL_PER_CLASS)?,
        &mut files,
    )?;
    write_set(out, "t10k", &test, &mut files)?;
    let classes = FASHION_CLASSES.join("\n") + "\n";
    write_atomic(&out.join("classes.txt"), classes.as_bytes())?;
    files.push(("classes.txt".into(), classes.into_bytes()));
    write_sums(out, &files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_class_takes_in_file_order() {
        let labels = vec![0, 1, 0, 1, 0, 1, 0];
        let mut px = vec![0u8; labels.len() * PIXELS];
        for i in 0..labels.len() {
            px[i * PIXELS] = i as u8;
        }
        let s = Images::new(px, labels).unwrap();
        let v = per_class(&s, 2, 1, 2).unwrap();
        let firsts: Vec<u8> = (0..v.len()).map(|i| v.image(i)[0]).collect();
        assert_eq!(firsts, vec![2, 3, 4, 5]);
        assert!(per_class(&s, 2, 2, 2).is_err());
    }

    #[test]
    fn verify_detects_a_changed_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), b"hello").unwrap();
        std::fs::write(
            d.path().join("SHA256SUMS"),
            format!("{}  a\n", sha256_hex(b"hello")),
        )
        .unwrap();
        assert_eq!(verify(d.path()).unwrap(), 1);
        std::fs::write(d.path().join("a"), b"hellO").unwrap();
        let e = verify(d.path()).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
    }
}
