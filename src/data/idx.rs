//! IDX files (the MNIST format), plain or gzip-compressed.
//!
//! Parsed by hand: the format is a 4-byte magic, big-endian dimensions and raw bytes, and no
//! maintained crate reads it with the errors we want (naming the file and the exact fault).

use super::{Images, PIXELS, RawDataset, SIDE};
use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Largest IDX file accepted, decompressed: 256 MiB, about 340,000 images of 28x28. Checked
/// against the header's declared size before decompressing the body, so a small gzip declaring
/// or holding gigabytes is refused without inflating it (loading keeps about three copies of the
/// pixels, so this bounds a load to about 1 GB of memory).
pub const MAX_BYTES: u64 = 256 << 20;

/// An unsigned-byte IDX array.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// The size of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Reads a file, transparently gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_BYTES {
        return Err(too_big(path, "is", len));
    }
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    gunzip_if_needed(path, raw)
}

fn too_big(path: &Path, verb: &str, bytes: u64) -> Error {
    Error::format(
        path,
        format!(
            "{verb} {bytes} bytes of IDX data, more than the {} MiB accepted",
            MAX_BYTES >> 20
        ),
    )
}

/// Gunzips `raw` when it starts with the gzip magic; `path` is only used in errors. The IDX
/// header is decompressed first and the body only up to the size it declares.
pub fn gunzip_if_needed(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let corrupt = |e: std::io::Error| Error::format(path, format!("corrupt gzip data: {e}"));
    let mut gz = GzDecoder::new(&raw[..]);
    let mut out = Vec::new();
    // Magic (4 bytes), then one 4-byte size per dimension.
    (&mut gz).take(4).read_to_end(&mut out).map_err(corrupt)?;
    if out.len() == 4 {
        let ndims = u64::from(out[3]);
        (&mut gz)
            .take(4 * ndims)
            .read_to_end(&mut out)
            .map_err(corrupt)?;
        if out.len() as u64 == 4 + 4 * ndims {
            let declared = out[4..]
                .chunks(4)
                .map(|d| u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])))
                .try_fold(1u64, |acc, d| acc.checked_mul(d))
                .unwrap_or(u64::MAX);
            if declared > MAX_BYTES {
                return Err(too_big(path, "declares", declared));
            }
            // One byte more than declared, so that `parse` can report extra data.
            (&mut gz)
                .take(declared + 1)
                .read_to_end(&mut out)
                .map_err(corrupt)?;
            return Ok(out);
        }
    }
    // Too short for a header: whatever there is, for `parse` to report.
    gz.take(MAX_BYTES).read_to_end(&mut out).map_err(corrupt)?;
    Ok(out)
}

/// Parses IDX bytes; `path` is only used in errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(Error::format(path, "too short to be an IDX file"));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::format(
            path,
            format!(
                "wrong magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(Error::format(
            path,
            format!(
                "IDX element type 0x{:02x} is not supported (only unsigned bytes, 0x08)",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err(Error::format(path, "IDX header declares 0 dimensions"));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(Error::format(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::format(path, format!("IDX dimensions {dims:?} overflow")))?;
    let body = bytes.len() - header;
    if body != expected {
        return Err(Error::format(
            path,
            format!(
                "IDX dimensions {dims:?} need {expected} bytes of data but the file has {body}{}",
                if body < expected { " (truncated?)" } else { "" }
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads an IDX file of 28x28 images.
pub fn read_images(path: &Path) -> Result<(usize, Vec<u8>)> {
    let a = parse(path, &read_maybe_gz(path)?)?;
    if a.dims.len() != 3 {
        return Err(Error::format(
            path,
            format!(
                "an image file needs 3 dimensions (count, rows, columns), this one has {}",
                a.dims.len()
            ),
        ));
    }
    if a.dims[1] != SIDE || a.dims[2] != SIDE {
        return Err(Error::format(
            path,
            format!(
                "images are {}x{}, expected {SIDE}x{SIDE}",
                a.dims[1], a.dims[2]
            ),
        ));
    }
    Ok((a.dims[0], a.data))
}

/// Reads an IDX label file.
pub fn read_labels(path: &Path) -> Result<Vec<u32>> {
    let a = parse(path, &read_maybe_gz(path)?)?;
    if a.dims.len() != 1 {
        return Err(Error::format(
            path,
            format!(
                "a label file needs 1 dimension, this one has {}",
                a.dims.len()
            ),
        ));
    }
    Ok(a.data.into_iter().map(u32::from).collect())
}

/// Finds `<prefix>-<kind>-idx{1,3}-ubyte[.gz]` in `dir`.
pub fn find(dir: &Path, prefix: &str, kind: &str) -> Option<PathBuf> {
    let n = if kind == "images" { 3 } else { 1 };
    let base = format!("{prefix}-{kind}-idx{n}-ubyte");
    [base.clone(), format!("{base}.gz")]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Reads one image/label pair, checking that the counts agree.
pub fn read_pair(images: &Path, labels: &Path) -> Result<Images> {
    let (n, pixels) = read_images(images)?;
    let l = read_labels(labels)?;
    if l.len() != n {
        return Err(Error::format(
            labels,
            format!(
                "has {} labels but {} has {n} images",
                l.len(),
                images.display()
            ),
        ));
    }
    debug_assert_eq!(pixels.len(), n * PIXELS);
    Images::new(pixels, l)
}

fn load_split(dir: &Path, prefix: &str) -> Result<Option<Images>> {
    match (find(dir, prefix, "images"), find(dir, prefix, "labels")) {
        (Some(i), Some(l)) => Ok(Some(read_pair(&i, &l)?)),
        (None, None) => Ok(None),
        (Some(i), None) => Err(Error::format(
            i,
            format!("has no matching {prefix}-labels-idx1-ubyte[.gz] beside it"),
        )),
        (None, Some(l)) => Err(Error::format(
            l,
            format!("has no matching {prefix}-images-idx3-ubyte[.gz] beside it"),
        )),
    }
}

/// Loads `train-*`, optional `val-*` and optional `t10k-*` (or `test-*`) from a directory.
pub fn load_dir(dir: &Path) -> Result<RawDataset> {
    let train = load_split(dir, "train")?.ok_or_else(|| {
        Error::format(
            dir,
            "no train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz]",
        )
    })?;
    let test = match load_split(dir, "t10k")? {
        Some(t) => Some(t),
        None => load_split(dir, "test")?,
    };
    Ok(RawDataset {
        classes: super::read_class_names(dir)?,
        train,
        val: load_split(dir, "val")?,
        test,
        ..Default::default()
    })
}

/// Encodes an IDX array (used to build bundled datasets and test fixtures).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Gzip-compresses deterministically (no timestamp or file name in the header).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.idx")
    }

    #[test]
    fn round_trip() {
        let data: Vec<u8> = (0..2 * 784).map(|i| i as u8).collect();
        let a = parse(p(), &encode(&[2, 28, 28], &data)).unwrap();
        assert_eq!(a.dims, vec![2, 28, 28]);
        assert_eq!(a.data, data);
    }

    #[test]
    fn wrong_magic() {
        let mut b = encode(&[1], &[3]);
        b[0] = 0x50;
        let e = parse(p(), &b).unwrap_err().to_string();
        assert!(e.contains("x.idx") && e.contains("magic"), "{e}");
    }

    #[test]
    fn truncated_body_and_extra_bytes() {
        let b = encode(&[2, 28, 28], &[0; 1000]);
        let e = parse(p(), &b).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let b = encode(&[1], &[1, 2]);
        assert!(parse(p(), &b).is_err());
    }

    #[test]
    fn truncated_header() {
        let b = vec![0, 0, 8, 3, 0, 0];
        let e = parse(p(), &b).unwrap_err().to_string();
        assert!(e.contains("header"), "{e}");
    }

    #[test]
    fn wrong_dimension_count_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("imgs");
        std::fs::write(&f, encode(&[2, 784], &[0; 1568])).unwrap();
        let e = read_images(&f).unwrap_err().to_string();
        assert!(e.contains("3 dimensions"), "{e}");
        std::fs::write(&f, encode(&[1, 32, 32], &[0; 1024])).unwrap();
        let e = read_images(&f).unwrap_err().to_string();
        assert!(e.contains("32x32"), "{e}");
    }

    #[test]
    fn label_count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let i = dir.path().join("train-images-idx3-ubyte");
        let l = dir.path().join("train-labels-idx1-ubyte.gz");
        std::fs::write(&i, encode(&[2, 28, 28], &[0; 1568])).unwrap();
        std::fs::write(&l, gzip(&encode(&[3], &[0, 1, 2]))).unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("3 labels") && e.contains("2 images"), "{e}");
    }

    #[test]
    fn a_gzip_declaring_more_than_the_limit_is_refused_before_inflating() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("train-images-idx3-ubyte.gz");
        // 2^31 images declared; a few real ones.
        let mut bytes = encode(&[4, 28, 28], &[7; 4 * 784]);
        bytes[4..8].copy_from_slice(&(1u32 << 31).to_be_bytes());
        std::fs::write(&f, gzip(&bytes)).unwrap();
        let e = read_images(&f).unwrap_err().to_string();
        assert!(e.contains("train-images") && e.contains("256 MiB"), "{e}");
        // A body longer than the header says is reported as such, without reading it all.
        let mut long = encode(&[1, 28, 28], &[7; 784]);
        long.extend_from_slice(&[0; 5000]);
        std::fs::write(&f, gzip(&long)).unwrap();
        let e = read_images(&f).unwrap_err().to_string();
        assert!(e.contains("need 784 bytes") && e.contains("785"), "{e}");
    }

    #[test]
    fn corrupt_gzip_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("train-images-idx3-ubyte.gz");
        let mut g = gzip(&encode(&[1, 28, 28], &[7; 784]));
        let n = g.len();
        g.truncate(n / 2);
        std::fs::write(&f, g).unwrap();
        let e = read_images(&f).unwrap_err().to_string();
        assert!(
            e.contains("corrupt gzip") && e.contains("train-images"),
            "{e}"
        );
    }

    #[test]
    fn missing_labels_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte"),
            encode(&[1, 28, 28], &[0; 784]),
        )
        .unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no matching train-labels"), "{e}");
    }
}
