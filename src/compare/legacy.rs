//! Comparison folders of warmstart 0.1 kept each run's settings in `compare-settings.txt`, the
//! `Debug` text of the run's request of that version. This rebuilds that text from a request so
//! that those folders read back: a run whose old text matches is this run, and its results are
//! reused instead of trained again.

use crate::augment::AugmentConfig;
use crate::data::{Fit, Invert};
use crate::device::{DeviceKind, PrecisionRequest};
use crate::options::InitRequest;
use crate::schedule::ScheduleName;
use std::path::PathBuf;

/// The file the 0.1 layout wrote.
pub const FILE: &str = "compare-settings.txt";

/// The 0.1 request, field for field in its order, with its name: its `Debug` text is the file.
#[derive(Debug)]
#[allow(dead_code)] // read through `Debug` only
struct TrainRequest {
    data: Option<PathBuf>,
    out: Option<PathBuf>,
    epochs: Option<usize>,
    batch_size: Option<usize>,
    lr: Option<f64>,
    seed: Option<u64>,
    limit: Option<usize>,
    test_limit: Option<usize>,
    val_split: Option<f64>,
    augment: Option<AugmentConfig>,
    init: Option<InitRequest>,
    new_head: bool,
    invert: Option<Invert>,
    fit: Option<Fit>,
    device: DeviceKind,
    precision: PrecisionRequest,
    overwrite: bool,
    schedule: Option<ScheduleName>,
    warmup: Option<f64>,
    patience: Option<usize>,
    label_smoothing: Option<f32>,
    weight_decay: Option<f32>,
    freeze_epochs: Option<usize>,
    clean_epochs: Option<usize>,
    precise_bn: Option<bool>,
    lr_ratio: Option<f64>,
}

/// The text warmstart 0.1 wrote for the run `r` (its `out` is left out, as it was).
pub fn settings_text(r: &crate::options::TrainRequest) -> String {
    let o = r.options.clone();
    format!(
        "{:?}",
        TrainRequest {
            data: o.data,
            out: None,
            epochs: o.epochs,
            batch_size: o.batch_size,
            lr: o.lr,
            seed: o.seed,
            limit: o.limit,
            test_limit: o.test_limit,
            val_split: o.val_split,
            augment: o.augment,
            init: o.init,
            new_head: o.new_head,
            invert: o.invert,
            fit: o.fit,
            device: r.runtime.device,
            precision: r.runtime.precision,
            overwrite: o.overwrite,
            schedule: o.schedule,
            warmup: o.warmup,
            patience: o.patience,
            label_smoothing: o.label_smoothing,
            weight_decay: o.weight_decay,
            freeze_epochs: o.freeze_epochs,
            clean_epochs: o.clean_epochs,
            precise_bn: o.precise_bn,
            lr_ratio: o.lr_ratio,
        }
    )
}
