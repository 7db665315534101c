//! `warmstart predict`: image files, or one CSV of images, classified by a checkpoint. The
//! library returns the predictions and writes the Kaggle submission; the binary shows them.

use crate::checkpoint;
use crate::data::{Fit, Images, Invert, PIXELS, prepare};
use crate::device::{self, DeviceKind, PrecisionRequest};
use crate::error::{Error, Result};
use crate::eval::{image_probabilities, predict_set_cancellable};
use crate::model::Net;
use burn::prelude::Device;
use std::path::{Path, PathBuf};

/// What to predict, and with which model.
#[derive(Debug, Clone)]
pub struct PredictRequest {
    /// A checkpoint file or a run directory.
    pub model: PathBuf,
    /// Image files, or one CSV file of images.
    pub images: Vec<PathBuf>,
    /// For a CSV: write the Kaggle submission (`ImageId,Label`) here instead of listing the rows.
    pub out: Option<PathBuf>,
    /// `out` may replace an existing file.
    pub overwrite: bool,
    /// Inversion of image files; default: the model's, from its training.
    pub invert: Option<Invert>,
    /// How image files are fitted into 28x28; default: the model's.
    pub fit: Option<Fit>,
    /// Where to compute.
    pub device: DeviceKind,
    /// Arithmetic of the multiplies.
    pub precision: PrecisionRequest,
}

/// What became of one image file.
#[derive(Debug)]
pub enum Outcome {
    /// Each class's probability, in the model's class order.
    Classes(Vec<f32>),
    /// Nothing drawn once prepared (a white or black page): no class is given.
    Blank,
    /// The file could not be read, and why.
    Unreadable(Error),
}

/// One image file's outcome.
#[derive(Debug)]
pub struct FilePrediction {
    /// The file.
    pub path: PathBuf,
    /// What became of it.
    pub outcome: Outcome,
}

/// What `predict` found.
#[derive(Debug)]
pub enum Predicted {
    /// Image files, one outcome each.
    Files(Vec<FilePrediction>),
    /// The rows of a CSV file of images: each row's class index and its probability.
    Rows {
        /// The CSV file.
        path: PathBuf,
        /// Each row's class probabilities (in the model's class order), in file order.
        rows: Vec<Vec<f32>>,
        /// Where the submission was written, if it was.
        written: Option<PathBuf>,
    },
}

/// The predictions and the model's class names.
#[derive(Debug)]
pub struct Prediction {
    /// The model's classes, in output order.
    pub classes: Vec<String>,
    /// What was predicted.
    pub predicted: Predicted,
}

fn is_csv(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Runs a prediction request.
pub fn predict(req: &PredictRequest) -> Result<Prediction> {
    if let Some(out) = &req.out {
        if !(req.images.len() == 1 && is_csv(&req.images[0])) {
            return Err(Error::invalid(format!(
                "--out {} writes the predictions of a CSV file of images (a Kaggle submission); \
                 for image files the predictions are printed",
                out.display()
            )));
        }
        let weights = checkpoint::resolve(&req.model)?;
        let sidecar = checkpoint::sidecar(&weights);
        let inputs = [
            req.images[0].as_path(),
            weights.as_path(),
            sidecar.as_path(),
        ];
        crate::fsutil::check_output(out, req.overwrite, &inputs)?;
    }
    let dev = device::for_inference(req.device)?;
    let (model, meta) = checkpoint::load(&req.model, &dev)?;
    let model = model.with_precision(device::resolve_precision(req.precision, req.device)?);
    let classes = meta.classes.clone();
    if let [csv] = req.images.as_slice()
        && is_csv(csv)
    {
        if req.invert.is_some() || req.fit.is_some() {
            return Err(Error::invalid(format!(
                "{} holds prepared 28x28 pixels: --invert and --fit apply to image files only",
                csv.display()
            )));
        }
        let (rows, written) = predict_csv(csv, req.out.as_deref(), &model, &classes, &dev)?;
        return Ok(Prediction {
            classes,
            predicted: Predicted::Rows {
                path: csv.clone(),
                rows,
                written,
            },
        });
    }
    if req.out.is_some() || req.images.iter().any(|p| is_csv(p)) {
        return Err(Error::invalid(
            "a CSV file of images is predicted on its own (one CSV, optionally with --out FILE)",
        ));
    }
    let invert = req.invert.unwrap_or(meta.input.invert);
    let fit = req.fit.unwrap_or(meta.input.fit);
    let mut files = Vec::with_capacity(req.images.len());
    for path in &req.images {
        crate::cancel::check("predicting")?;
        let outcome = match prepare::load_image(path, invert, fit) {
            Ok(px) if prepare::is_blank(&px) => Outcome::Blank,
            Ok(px) => Outcome::Classes(image_probabilities(&model, &px, &dev)),
            Err(e) => Outcome::Unreadable(e),
        };
        files.push(FilePrediction {
            path: path.clone(),
            outcome,
        });
    }
    Ok(Prediction {
        classes,
        predicted: Predicted::Files(files),
    })
}

/// Every row of a CSV file of images; with `out`, the Kaggle submission written there.
fn predict_csv(
    path: &Path,
    out: Option<&Path>,
    model: &Net,
    classes: &[String],
    dev: &Device,
) -> Result<(Vec<Vec<f32>>, Option<PathBuf>)> {
    let pixels = crate::data::csv::read_unlabelled(path)?;
    let n = pixels.len() / PIXELS;
    let set = Images::new(pixels, vec![0; n])?;
    let p = predict_set_cancellable(model, &set, dev)?;
    let rows: Vec<Vec<f32>> = (0..n).map(|i| p.row(i).to_vec()).collect();
    let Some(out) = out else {
        return Ok((rows, None));
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| Error::invalid(format!("cannot write the submission: {e}"));
    w.write_record(["ImageId", "Label"]).map_err(err)?;
    for (i, r) in rows.iter().enumerate() {
        w.write_record([(i + 1).to_string(), classes[top(r, 1)[0]].clone()])
            .map_err(err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::invalid(format!("cannot write the submission: {e}")))?;
    crate::fsutil::write_atomic(out, &bytes)?;
    Ok((rows, Some(out.to_path_buf())))
}

/// The `k` most likely classes of `probs`, most likely first.
pub fn top(probs: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
    order.truncate(k.max(1));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_classes_are_ordered_by_probability() {
        assert_eq!(top(&[0.1, 0.6, 0.3], 2), [1, 2]);
        assert_eq!(top(&[0.1, 0.6, 0.3], 0), [1]);
        assert_eq!(top(&[0.5], 3), [0]);
    }
}
