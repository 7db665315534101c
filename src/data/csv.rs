//! CSV datasets in the Kaggle digit-recognizer layout: a header row, then `label,pixel0,...,pixel783`.
//!
//! `--data` may name one `.csv` file (a training set) or a directory holding `train.csv` and
//! optionally `val.csv` and `test.csv` (all with labels).

use super::{Images, MAX_CLASSES, PIXELS, RawDataset};
use crate::error::{Error, Result};
use std::path::Path;

/// Reads one labelled CSV file.
pub fn read(path: &Path) -> Result<Images> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_from(path, std::io::BufReader::new(file))
}

/// Parses labelled CSV from any reader; `path` is only used in errors.
pub fn read_from(path: &Path, input: impl std::io::Read) -> Result<Images> {
    let (pixels, labels) = read_rows(path, input, true)?;
    Images::new(pixels, labels.unwrap_or_default())
}

/// The images of a CSV file to predict: labelled (`label,pixel0,...`) or not (`pixel0,...,
/// pixel783`, as Kaggle's `test.csv`); labels are ignored. Returns the pixels, 784 per image.
pub fn read_unlabelled(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(read_rows(path, std::io::BufReader::new(file), false)?.0)
}

/// Pixels and (when the file has a label column) labels of CSV rows; `labels_required` refuses a
/// file without labels, naming the problem.
fn read_rows(
    path: &Path,
    input: impl std::io::Read,
    labels_required: bool,
) -> Result<(Vec<u8>, Option<Vec<u32>>)> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let header = rdr
        .headers()
        .map_err(|e| Error::format(path, format!("cannot read the header row: {e}")))?
        .clone();
    let first = header.get(0).unwrap_or("").trim();
    if header.len() <= 1 && first.is_empty() {
        return Err(Error::format(
            path,
            "the file is empty: expected a header row (label,pixel0,...,pixel783) and one row \
             per image",
        ));
    }
    if first.is_empty() || first.parse::<f64>().is_ok() {
        return Err(Error::format(
            path,
            "line 1: expected a header row (label,pixel0,...,pixel783), found data",
        ));
    }
    // Kaggle's own files number their rows in a first `ImageId` column: an id, never a label.
    let id_column = header.len() == PIXELS + 1
        && matches!(
            first.to_ascii_lowercase().as_str(),
            "imageid" | "image_id" | "id"
        );
    if id_column && labels_required {
        return Err(Error::format(
            path,
            format!(
                "line 1: the first column is {first:?}, an image number, not a label: a training \
                 CSV has `label` first"
            ),
        ));
    }
    let labelled = header.len() == PIXELS + 1 && !id_column;
    let width = if header.len() == PIXELS + 1 {
        PIXELS + 1
    } else {
        PIXELS
    };
    if !labelled && !id_column && (labels_required || header.len() != PIXELS) {
        return Err(Error::format(
            path,
            format!(
                "line 1: the header has {} columns, expected {} (label and {PIXELS} pixels){}",
                header.len(),
                PIXELS + 1,
                if header.len() == PIXELS {
                    "; a file without labels cannot be used for training or evaluation \
                     (`warmstart predict` takes it)"
                } else {
                    ""
                }
            ),
        ));
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| Error::format(path, format!("malformed CSV: {e}")))?;
        let line = rec.position().map_or(0, |p| p.line());
        if rec.len() != width {
            return Err(Error::format(
                path,
                format!("line {line}: {} columns, expected {width}", rec.len()),
            ));
        }
        for (col, cell) in rec.iter().enumerate() {
            if col == 0 && id_column {
                continue;
            }
            let v: u32 = cell.trim().parse().map_err(|_| {
                Error::format(
                    path,
                    format!(
                        "line {line}, column {}: {cell:?} is not a whole number",
                        col + 1
                    ),
                )
            })?;
            if col == 0 && labelled {
                if v as usize >= MAX_CLASSES {
                    return Err(Error::format(
                        path,
                        format!(
                            "line {line}: label {v}: at most {MAX_CLASSES} classes (labels 0 to \
                             {}) are supported; is it mistyped?",
                            MAX_CLASSES - 1
                        ),
                    ));
                }
                labels.push(v);
            } else if v > 255 {
                return Err(Error::format(
                    path,
                    format!(
                        "line {line}, column {}: pixel value {v} is above 255",
                        col + 1
                    ),
                ));
            } else {
                pixels.push(v as u8);
            }
        }
    }
    Ok((pixels, labelled.then_some(labels)))
}

/// Loads a CSV file, or a directory with `train.csv` and optionally `val.csv` and `test.csv`.
pub fn load(path: &Path) -> Result<RawDataset> {
    if path.is_file() {
        return Ok(RawDataset {
            train: read(path)?,
            ..Default::default()
        });
    }
    let opt = |name: &str| -> Result<Option<Images>> {
        let p = path.join(name);
        if p.is_file() {
            read(&p).map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(RawDataset {
        classes: super::read_class_names(path)?,
        train: read(&path.join("train.csv"))?,
        val: opt("val.csv")?,
        test: opt("test.csv")?,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> String {
        let mut h = String::from("label");
        for i in 0..PIXELS {
            h.push_str(&format!(",pixel{i}"));
        }
        h
    }

    fn row(label: &str, px: &str) -> String {
        let mut r = label.to_string();
        for _ in 0..PIXELS {
            r.push(',');
            r.push_str(px);
        }
        r
    }

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("train.csv");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn parses_rows() {
        let (_d, p) = write(&format!(
            "{}\n{}\n{}\n",
            header(),
            row("3", "0"),
            row("1", "255")
        ));
        let s = read(&p).unwrap();
        assert_eq!(s.labels(), &[3, 1]);
        assert_eq!(s.image(1)[0], 255);
    }

    #[test]
    fn missing_header() {
        let (_d, p) = write(&format!("{}\n", row("3", "0")));
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("header") && e.contains("train.csv"), "{e}");
    }

    #[test]
    fn wrong_column_count() {
        let (_d, p) = write(&format!("{}\n{}\n3,1,2\n", header(), row("3", "0")));
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("3 columns"), "{e}");
    }

    #[test]
    fn non_numeric_and_out_of_range() {
        let (_d, p) = write(&format!("{}\n{}\n", header(), row("3", "x")));
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("not a whole number"), "{e}");
        let (_d, p) = write(&format!("{}\n{}\n", header(), row("3", "256")));
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("above 255"), "{e}");
    }

    #[test]
    fn an_empty_file_says_so() {
        for text in ["", "\n"] {
            let (_d, p) = write(text);
            let e = read(&p).unwrap_err().to_string();
            assert!(e.contains("the file is empty"), "{text:?}: {e}");
        }
    }

    /// Kaggle's numbered rows: the first column is an id (4,200 here), never a label.
    #[test]
    fn an_image_id_column_is_not_a_label() {
        let h = header().replacen("label", "ImageId", 1);
        let (_d, p) = write(&format!(
            "{h}\n{}\n{}\n",
            row("4200", "7"),
            row("4201", "9")
        ));
        let px = read_unlabelled(&p).unwrap();
        assert_eq!(px.len(), 2 * PIXELS);
        assert_eq!((px[0], px[PIXELS]), (7, 9));
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("\"ImageId\", an image number, not a label"),
            "{e}"
        );
    }

    #[test]
    fn unlabelled_file_explains() {
        let h: Vec<String> = (0..PIXELS).map(|i| format!("pixel{i}")).collect();
        let (_d, p) = write(&format!("{}\n", h.join(",")));
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("without labels"), "{e}");
    }
}
