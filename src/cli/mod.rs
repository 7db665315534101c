//! The command line: argument definitions and the glue from them to the library.

mod commands;
mod render;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use warmstart::augment::AugmentConfig;
use warmstart::data::{Fit, Invert};
use warmstart::options::{RuntimeArgs, TrainArgs};
use warmstart::pipeline::{EvalRequest, RunRequest};

pub use commands::dispatch;
use warmstart::serve::ServeArgs;

#[derive(Parser, Debug)]
#[command(
    name = "warmstart",
    version,
    about = "Train small CNN image classifiers on scarce data, warm-started from pretrained weights.",
    long_about = "Train small CNN image classifiers on scarce data, warm-started from pretrained weights.\n\n\
                  With no command, runs `warmstart run`: pretrain on the bundled MNIST, train the bundled \
                  fashion-1k from those weights, evaluate and plot.",
    after_help = "Examples:\n  warmstart                      # the whole pipeline (same as `warmstart run`)\n  \
                  warmstart train --data my-images/ --init runs/pretrain\n  \
                  warmstart predict --model runs/train digit.png"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pretrain the CNN (default: 15 epochs on the bundled MNIST) and save its weights.
    #[command(
        after_help = "Example:\n  warmstart pretrain --epochs 15 --out runs/pretrain\n  \
                            warmstart pretrain --limit 2000 --epochs 1   # a quick try"
    )]
    Pretrain(TrainArgs),
    /// Train on a (small) dataset starting from pretrained weights, with augmentation.
    #[command(
        after_help = "Example:\n  warmstart train --data my-images/ --init runs/pretrain --out runs/mine\n  \
                            warmstart train --init random --augment none   # the baseline to beat"
    )]
    Train(TrainArgs),
    /// Evaluate a checkpoint: accuracy, per-class precision/recall/F1, confusion matrix.
    #[command(
        after_help = "Example:\n  warmstart eval --model runs/train --data data/fashion-1k\n  \
                            warmstart eval --model runs/train --tta 8   # with test-time augmentation"
    )]
    Eval(EvalRequest),
    /// Predict the class of image files with a checkpoint.
    #[command(after_help = "Example:\n  warmstart predict --model runs/train shoe.png shirt.jpg")]
    Predict(PredictArgs),
    /// The whole homework: pretrain on MNIST (reusing an existing checkpoint), train fashion-1k
    /// from it, evaluate on its test set and plot the curves.
    #[command(after_help = "Example:\n  warmstart run --out runs\n  \
                            warmstart run --pretrain-epochs 1 --epochs 2 --limit 2000   # a quick try")]
    Run(RunRequest),
    /// Find a learning rate: train with a rate growing from 1e-7 to 10 and suggest one from the
    /// loss (fastai's lr_find). Trains as `train` would with the same data, start, batch size,
    /// augmentation, weight decay, smoothing and rate ratio; refuses the flags of a schedule or a
    /// run's length. Writes lr_find.png, no checkpoint.
    #[command(
        name = "lr-find",
        after_help = "Example:\n  warmstart lr-find --data my-images/ --out runs/lr-find\n  \
                            warmstart train --data my-images/ --lr 0.003 --schedule onecycle   # then"
    )]
    LrFind(TrainArgs),
    /// Train several variants over several seeds and show, with error bars, which one is better
    /// on your data (default: pretrained or random start x augmentation or none).
    #[command(
        after_help = "Example:\n  warmstart compare --data my-images/ --seeds 3\n  \
                            warmstart compare --variant base='' --variant lr3='--lr 0.003' --variant long='--epochs 100'\n  \
                            warmstart compare --data my-images/ --seeds 5 --threads 4 --on slurm --slurm-arg=--partition=cpu\n\n\
                            Every run is a normal run directory (OUT/<variant>/seed-<s>/). Re-running the same \
                            command skips finished runs and resumes an interrupted one. Other flags (--epochs, \
                            --limit, --data, ...) apply to every variant; a variant's own flags take precedence."
    )]
    Compare(CompareArgs),
    /// Find the likely wrong labels of a dataset (out-of-fold predictions of K-fold
    /// cross-validation, then confident learning), its duplicated images (also those leaked into
    /// the test set) and its outliers. Writes label_issues.csv, classes.csv, duplicates.csv,
    /// outliers.csv, out_of_fold.csv and audit.html.
    #[command(
        after_help = "Example:\n  warmstart audit --data my-images/ --out runs/audit\n  \
                            warmstart audit --data my-images/ --folds 10 --epochs 50\n  \
                            warmstart audit --data my-images/ --on list | parallel -j 4   # then the same command without --on\n\n\
                            Each fold trains as `warmstart train` would (same flags), with fewer epochs unless --epochs is given.",
        mut_arg("epochs", |a| a.help(format!(
            "Epochs of each fold's training [default: {}]",
            warmstart::audit::DEFAULT_EPOCHS
        ))),
        mut_arg("out", |a| a.help(format!(
            "Where the audit writes its files [default: {}]",
            warmstart::audit::DEFAULT_OUT
        )))
    )]
    Audit(AuditArgs),
    /// Pick the unlabelled images to label next: the ones a trained model is least sure of,
    /// spread over the kinds of image it tells apart. Copies them into OUT/to-label/ and lists
    /// them in OUT/suggested.csv.
    #[command(
        after_help = "Example:\n  warmstart suggest --model runs/mine --unlabeled my-unlabelled/ --count 100 --labelled my-images/\n  \
                            warmstart suggest --model runs/pretrain --unlabeled pool/ --strategy typical --count 50   # a first round"
    )]
    Suggest(warmstart::suggest::SuggestRequest),
    /// Label images in the browser: a local page shows each image of a folder with the model's
    /// guess; a click or a key (1-9, 0) moves it into INTO/<class>/, undo moves it back.
    #[command(
        after_help = "Example:\n  warmstart label --pool runs/suggest/to-label --into my-images/ --model runs/mine\n  \
                            # then open http://127.0.0.1:8090/"
    )]
    Label(warmstart::serve::label::LabelRequest),
    /// Measure training and inference speed of the seed CNN on this machine.
    #[command(after_help = "Example:\n  warmstart bench --threads 2\n\n\
                            The last lines are machine-readable: train_b128, train_b32_aug, infer_b1000 (images/s), \
                            latency_b1 (ms), peak_rss (MiB).")]
    Bench(BenchArgs),
    /// Export a trained model to ONNX (opset 18, dynamic batch; outputs logits and
    /// probabilities; class names and input preparation in its metadata).
    #[command(
        after_help = "Example:\n  warmstart export --model runs/train --out model.onnx\n\n\
                            The input is `images`, [N, 1, 28, 28] float32: 28x28 grayscale pixels divided by 255, \
                            light strokes on a dark background. See README.md for loading it with onnxruntime."
    )]
    Export(ExportArgs),
    /// Serve a local web page to draw or drop an image and see what the model says, with a JSON
    /// API (POST /api/predict, GET /api/model).
    #[command(
        after_help = "Example:\n  warmstart serve --model runs/pretrain   # then open http://127.0.0.1:8080/\n  \
                            curl --data-binary @digit.png http://127.0.0.1:8080/api/predict"
    )]
    Serve(ServeArgs),
    /// Draw a grid of random augmentations of training images, to check the settings look right.
    #[command(
        name = "augment-preview",
        after_help = "Example:\n  warmstart augment-preview --data my-images/ --augment rotation=15,shift=0.1,zoom=0.2 --out preview.png"
    )]
    AugmentPreview(PreviewArgs),
    /// Rebuild data/fashion-1k and data/fashion-pool from the original Fashion-MNIST IDX files.
    #[command(
        name = "make-fashion-1k",
        after_help = "Example:\n  \
                            warmstart make-fashion-1k --from fashion-mnist/ --out data/fashion-1k --pool-out data/fashion-pool"
    )]
    MakeFashion1k {
        /// Directory holding train-*/t10k-* Fashion-MNIST IDX files.
        #[arg(long)]
        from: PathBuf,
        #[arg(long, default_value = "data/fashion-1k")]
        out: PathBuf,
        /// Where the unlabelled pool for fashion-1k goes.
        #[arg(long, default_value = "data/fashion-pool")]
        pool_out: PathBuf,
    },
}

impl Command {
    /// The CPU/GPU settings of a command that computes with tensors.
    pub fn runtime(&self) -> Option<&RuntimeArgs> {
        match self {
            Command::Pretrain(a) | Command::Train(a) | Command::LrFind(a) => {
                Some(&a.request.runtime)
            }
            Command::Eval(a) => Some(&a.runtime),
            Command::Predict(a) => Some(&a.runtime),
            Command::Run(a) => Some(&a.runtime),
            Command::Compare(a) => Some(&a.train.request.runtime),
            Command::Audit(a) => Some(&a.request.train.runtime),
            Command::Suggest(a) => Some(&a.runtime),
            Command::Bench(a) => Some(&a.runtime),
            Command::Serve(a) => Some(&a.runtime),
            Command::AugmentPreview(_)
            | Command::MakeFashion1k { .. }
            | Command::Export(_)
            | Command::Label(_) => None,
        }
    }
}

/// Flags of `compare`: its own, and `train`'s for every variant (`--out` is the comparison's
/// directory, [default: runs/compare]; `--seed` and `--resume` do not apply).
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// Seeds: a comma-separated list (1,2,3), or a count N for seeds 1 to N [default: 1,2,3].
    #[arg(long)]
    pub seeds: Option<String>,
    /// A variant, NAME='FLAGS' with any flags `train` takes; repeat for more. Replaces the default
    /// grid; the first is the baseline.
    #[arg(long = "variant", value_name = "NAME=FLAGS")]
    pub variants: Vec<String>,
    /// Run only this run of the comparison, VARIANT/seed-S (its folder), writing no table: what
    /// each task of `--on slurm` and each line of `--on list` runs. The same command without it
    /// reads the finished runs back.
    #[arg(long, value_name = "VARIANT/seed-S")]
    pub cell: Option<String>,
    #[command(flatten)]
    pub engine: warmstart::cluster::EngineArgs,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Flags of `audit`: its own, `train`'s for each fold, and where the folds run.
#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    #[command(flatten)]
    pub request: warmstart::audit::AuditRequest,
    #[command(flatten)]
    pub engine: warmstart::cluster::EngineArgs,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Timed training batches at batch 128.
    #[arg(long, default_value_t = 30)]
    pub batches_b128: usize,
    /// Timed training batches at batch 32 with augmentation.
    #[arg(long, default_value_t = 100)]
    pub batches_b32: usize,
    /// Untimed batches before each training measurement.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Timed inference passes at batch 1000 (the median is reported; one untimed pass first).
    #[arg(long, default_value_t = 5)]
    pub infer_repeats: usize,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct PreviewArgs {
    /// Dataset whose training images to show [default: bundled fashion-1k].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Augmentation to preview.
    #[arg(long, default_value = "rotation=10,shift=0.1,zoom=0.1")]
    pub augment: AugmentConfig,
    /// Rows: one training image each (one per class first).
    #[arg(long, default_value_t = 8)]
    pub rows: usize,
    /// Augmented copies per row.
    #[arg(long, default_value_t = 8)]
    pub cols: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Invert image-folder images to light-on-dark.
    #[arg(long, value_enum, default_value_t = Invert::Auto)]
    pub invert: Invert,
    /// Output PNG (outside --data).
    #[arg(long, default_value = "augment_preview.png")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// Checkpoint: a .safetensors file or a run directory (uses its best.safetensors).
    #[arg(long, default_value = "runs/train")]
    pub model: PathBuf,
    /// Image files, in any format the `image` crate decodes, or a CSV file of images (one per
    /// row, `pixel0,...,pixel783` as Kaggle's test.csv, or with a label column first).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Write the predictions of a CSV file as a Kaggle submission, `ImageId,Label` (ImageId is
    /// the row number from 1, Label the class name).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Invert to light-on-dark [default: as in training].
    #[arg(long, value_enum)]
    pub invert: Option<Invert>,
    /// Fit image files into 28x28: `box` (longer side to 28, centred) or `mnist` (cropped to the
    /// ink, longer side to 20, centre of mass at the centre) [default: the model's, from its
    /// training].
    #[arg(long, value_enum)]
    pub fit: Option<Fit>,
    /// Show the K most likely classes.
    #[arg(long, default_value_t = 1)]
    pub top: usize,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Checkpoint: a .safetensors file or a run directory (uses its best.safetensors).
    #[arg(long, default_value = "runs/train")]
    pub model: PathBuf,
    /// The ONNX file to write.
    #[arg(long, default_value = "model.onnx")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
}
