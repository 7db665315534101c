//! What each subcommand does, in terms of the library.

use super::{
    BenchArgs, Cli, Command, EvalArgs, PredictArgs, PreviewArgs, RunArgs, RuntimeArgs, TrainArgs,
};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use warmstart::augment::AugmentConfig;
use warmstart::checkpoint;
use warmstart::data::{self, Dataset, Invert, LoadOptions, folder};
use warmstart::device;
use warmstart::eval::{Confusion, Predictions, predict_set, probabilities, with_tta};
use warmstart::model::ArchConfig;
use warmstart::report::figures::{augment_preview_png, one_per_class};
use warmstart::report::run::{finish_run, write_eval};
use warmstart::train::{self, TrainOptions};

pub fn dispatch(cli: Cli) -> Result<()> {
    // Ctrl-C and SIGTERM ask the training loop to save a resumable state and stop.
    ctrlc::set_handler(warmstart::resume::request_stop)
        .context("cannot install the Ctrl-C handler")?;
    let command = cli.command.context("main turns no command into `run`")?;
    if let Some(rt) = command.runtime() {
        setup_runtime(rt)?;
    }
    device::on_workers(|| command_on_workers(command))
}

fn command_on_workers(command: Command) -> Result<()> {
    match command {
        Command::Pretrain(a) => train_stage(&a, Stage::Pretrain).map(|_| ()),
        Command::Train(a) => train_stage(&a, Stage::Train).map(|_| ()),
        Command::Eval(a) => eval(&a),
        Command::Predict(a) => predict(&a),
        Command::Run(a) => run(&a),
        Command::AugmentPreview(a) => augment_preview(&a),
        Command::Bench(a) => bench(&a),
        Command::MakeFashion1k { from, out } => {
            warmstart::bundled::build_fashion_1k(&from, &out)?;
            let n = warmstart::bundled::verify(&out)?;
            println!(
                "wrote {} ({n} files, checksums in SHA256SUMS)",
                out.display()
            );
            Ok(())
        }
    }
}

fn setup_runtime(rt: &RuntimeArgs) -> Result<()> {
    if let Some(n) = rt.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        device::set_threads(n)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Pretrain,
    Train,
}

/// What `--init` asks for.
enum Init {
    Random,
    From(PathBuf),
}

fn parse_init(s: &str) -> Init {
    if s == "random" {
        Init::Random
    } else {
        Init::From(PathBuf::from(s))
    }
}

/// The result of a training stage that `run` needs.
struct StageResult {
    out: PathBuf,
    data: Dataset,
    test: Option<Predictions>,
}

fn train_stage(a: &TrainArgs, stage: Stage) -> Result<StageResult> {
    if let Some(dir) = &a.resume {
        return resume_stage(a, dir);
    }
    let (name, data_default, out_default, epochs, batch, augment, init_default) = match stage {
        Stage::Pretrain => (
            "pretrain",
            warmstart::bundled::dir("mnist"),
            "runs/pretrain",
            15,
            128,
            AugmentConfig::NONE,
            "random".to_string(),
        ),
        Stage::Train => (
            "train",
            warmstart::bundled::dir("fashion-1k"),
            "runs/train",
            30,
            32,
            AugmentConfig::SEED,
            "runs/pretrain".to_string(),
        ),
    };
    let data_path = a.data.clone().unwrap_or(data_default);
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(out_default));
    let init_s = a.init.clone().unwrap_or(init_default);
    let init = parse_init(&init_s);
    let load = LoadOptions {
        val_split: a.val_split,
        seed: a.seed,
        invert: a.invert,
        limit: a.limit,
        test_limit: a.test_limit,
    };
    let opts = TrainOptions {
        epochs: a.epochs.unwrap_or(epochs),
        batch_size: a.batch_size.unwrap_or(batch),
        lr: a.lr,
        seed: a.seed,
        augment: a.augment.unwrap_or(augment),
        out: out.clone(),
        data: data_path.clone(),
        load: load.clone(),
        args: serde_json::json!({
            "command": name,
            "init": init_s,
            "new_head": a.new_head,
            "device": a.runtime.device,
            "threads": a.runtime.threads,
        }),
    };
    if opts.lr <= 0.0 || !opts.lr.is_finite() {
        bail!("--lr must be a positive number");
    }
    let dev = device::make(a.runtime.device, a.seed)?;
    let data = load_data(&data_path, &load)?;
    // Checked after the data, so a mistyped --data is reported as such first.
    if let (Init::From(p), None) = (&init, &a.init)
        && !p.exists()
    {
        bail!(
            "no pretrained checkpoint at {}: run `warmstart pretrain` first, or pass --init PATH or --init random",
            p.display()
        );
    }
    let mut model = ArchConfig::seed(data.classes.len()).init(&dev);
    match &init {
        Init::Random => println!("Init: random weights"),
        Init::From(p) => {
            // The head is reused only when it predicts the same classes: same count is not enough
            // (MNIST's "0".."9" and Fashion-MNIST's garments are both 10 classes).
            let same_classes = checkpoint::resolve(p)
                .and_then(|w| checkpoint::read_meta(&w))
                .map(|m| m.classes == data.classes)
                .unwrap_or(true);
            let new_head = a.new_head || !same_classes;
            let skip: &[&str] = if new_head { &["fc2"] } else { &[] };
            let rep = checkpoint::transfer(&mut model, p, skip)?;
            println!("Init: {}\n{rep}", p.display());
            if new_head && !a.new_head {
                println!("(the checkpoint's classes differ from the data's: new classifier head)");
            }
        }
    }
    println!(
        "Training {} epochs, batch {}, Adam lr {}, augmentation {}, seed {} -> {}",
        opts.epochs,
        opts.batch_size,
        opts.lr,
        opts.augment,
        opts.seed,
        out.display()
    );
    let outcome = train::fit(model, &data, &opts, &dev)?;
    finish_stage(outcome, data, &opts, &dev)
}

fn resume_stage(a: &TrainArgs, dir: &Path) -> Result<StageResult> {
    let mut saved = warmstart::resume::load(dir)?;
    // The run lives where the user says it is now, even if the directory was moved.
    saved.state.options.out = dir.to_path_buf();
    if let Some(e) = a.epochs {
        saved.state.options.epochs = e;
    }
    let opts = saved.state.options.clone();
    let dev = device::make(a.runtime.device, opts.seed)?;
    let data = load_data(&opts.data, &opts.load)?;
    let outcome = train::resume(saved, &data, &dev)?;
    finish_stage(outcome, data, &opts, &dev)
}

/// Reports the best epoch and the test accuracy of the best checkpoint, and writes the run's report.
fn finish_stage(
    outcome: train::Outcome,
    data: Dataset,
    opts: &TrainOptions,
    dev: &burn::prelude::Device,
) -> Result<StageResult> {
    if let Some(best) = outcome.history.best() {
        println!(
            "Best validation accuracy {:.4} at epoch {} -> {}",
            best.val_acc,
            best.epoch,
            outcome.best_path.display()
        );
    }
    let summary = finish_run(&data, opts, &outcome.history, &outcome.best_path, dev)?;
    match &summary.test {
        Some(p) => println!(
            "Test accuracy: {:.4} ({}/{})",
            p.accuracy(),
            p.correct(),
            p.len()
        ),
        None => println!(
            "No test set in {}: no test accuracy (the report scores the validation set).",
            data.source.display()
        ),
    }
    println!(
        "Wrote {}: checkpoints, history.csv, curves.png, confusion.png, mistakes.png, \
         augment_preview.png, per_class.csv/json and report.html ({})",
        opts.out.display(),
        summary.report.display()
    );
    Ok(StageResult {
        out: opts.out.clone(),
        data,
        test: summary.test,
    })
}

fn load_data(path: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let d = data::load(path, opts)?;
    println!(
        "Data: {} — {} classes, {}",
        path.display(),
        d.classes.len(),
        d.sizes()
    );
    Ok(d)
}

fn run(a: &RunArgs) -> Result<()> {
    for name in ["mnist", "fashion-1k"] {
        let dir = warmstart::bundled::dir(name);
        warmstart::bundled::verify(&dir)
            .with_context(|| format!("bundled dataset {} is not intact", dir.display()))?;
    }
    let pre_out = a.out.join("pretrain");
    let common = |data: &str, out: PathBuf, epochs| TrainArgs {
        data: Some(warmstart::bundled::dir(data)),
        out: Some(out),
        epochs: Some(epochs),
        batch_size: None,
        lr: 1e-3,
        seed: a.seed,
        limit: a.limit,
        test_limit: a.test_limit,
        val_split: 0.1,
        augment: None,
        init: None,
        invert: Invert::Auto,
        new_head: false,
        resume: None,
        runtime: a.runtime.clone(),
    };
    if !a.fresh
        && train::best_path(&pre_out).is_file()
        && checkpoint::read_meta(&train::best_path(&pre_out)).is_ok()
    {
        println!(
            "== Stage 1: reusing the pretrained checkpoint {} (pass --fresh to pretrain again)",
            train::best_path(&pre_out).display()
        );
    } else {
        println!("== Stage 1: pretraining on MNIST");
        train_stage(
            &common("mnist", pre_out.clone(), a.pretrain_epochs),
            Stage::Pretrain,
        )?;
    }
    println!("\n== Stage 2: training fashion-1k from the pretrained weights");
    let mut t = common("fashion-1k", a.out.join("fashion-1k"), a.epochs);
    t.init = Some(pre_out.to_string_lossy().into_owned());
    let res = train_stage(&t, Stage::Train)?;
    if let Some(p) = &res.test {
        let c = Confusion::new(p, &res.data.classes);
        println!(
            "\n== Evaluation of {} on the test set\n{}",
            res.out.display(),
            c.render()
        );
    }
    println!(
        "Open {} in a browser for the curves, confusion matrix, mistakes and augmentation preview.",
        res.out.join("report.html").display()
    );
    Ok(())
}

fn eval(a: &EvalArgs) -> Result<()> {
    let weights = checkpoint::resolve(&a.model)?;
    let meta = checkpoint::read_meta(&weights)?;
    let training = &meta.training;
    let data_path = match &a.data {
        Some(d) => d.clone(),
        None => training["data"]
            .as_str()
            .map(PathBuf::from)
            .context("the checkpoint does not say what data it was trained on: pass --data")?,
    };
    let opts = &training["options"];
    let seed = opts["seed"].as_u64().unwrap_or(42);
    let dev = device::make(a.runtime.device, seed)?;
    let (model, meta) = checkpoint::load(&weights, &dev)?;
    let opts = LoadOptions {
        val_split: training["options"]["args"]["val_split"]
            .as_f64()
            .unwrap_or(0.1),
        seed,
        invert: meta.input.invert,
        limit: None,
        test_limit: None,
    };
    let d = load_data(&data_path, &opts)?;
    if d.classes.len() != meta.classes.len() {
        bail!(
            "{} has {} classes but the checkpoint {} was trained on {}",
            data_path.display(),
            d.classes.len(),
            weights.display(),
            meta.classes.len()
        );
    }
    if d.classes != meta.classes {
        let numbered = d
            .classes
            .iter()
            .enumerate()
            .all(|(i, c)| *c == i.to_string());
        if !numbered {
            bail!(
                "the classes of {} ({}) are not the checkpoint's ({})",
                data_path.display(),
                d.classes.join(", "),
                meta.classes.join(", ")
            );
        }
        eprintln!(
            "warning: {} names its classes by number; assuming they are the checkpoint's {}",
            data_path.display(),
            meta.classes.join(", ")
        );
    }
    let set = match a.split.as_str() {
        "test" => d
            .test
            .with_context(|| format!("{} has no test set; use --split val", data_path.display()))?,
        "val" => d.val,
        "train" => d.train,
        other => bail!("--split must be test, val or train, not {other:?}"),
    };
    let set = match a.limit {
        Some(n) => set.truncate(n),
        None => set,
    };
    let p = predict_set(&model, &set, &dev);
    println!(
        "Model: {} ({} classes)",
        weights.display(),
        meta.classes.len()
    );
    println!(
        "Accuracy on {} ({}): {:.4} ({}/{})",
        a.split,
        data_path.display(),
        p.accuracy(),
        p.correct(),
        p.len()
    );
    println!("Loss: {:.4}", p.loss());
    let p = if a.tta > 0 {
        let aug = a.augment.unwrap_or_else(|| {
            serde_json::from_value::<AugmentConfig>(training["options"]["augment"].clone())
                .ok()
                .filter(|c| !c.is_none())
                .unwrap_or(AugmentConfig::SEED)
        });
        let t = with_tta(p.clone(), &model, &set, &dev, &aug, a.tta, seed);
        println!(
            "Accuracy with test-time augmentation (original + {} copies, {aug}): {:.4} ({}/{}), loss {:.4}",
            a.tta,
            t.accuracy(),
            t.correct(),
            t.len(),
            t.loss()
        );
        t
    } else {
        p
    };
    println!();
    // Beside the checkpoint, but apart from the training run's own report files.
    let out = a.out.clone().unwrap_or_else(|| {
        weights
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .join(format!("eval-{}", a.split))
    });
    let tta = if a.tta > 0 {
        format!(", TTA {}", a.tta)
    } else {
        String::new()
    };
    let set_name = format!("{} set{tta}", a.split);
    let (c, files) = write_eval(&out, &p, &set, &meta.classes, &set_name)?;
    print!("{}", c.render());
    println!(
        "\nWrote {}, {}, {} and {}",
        files.confusion_png.display(),
        files.mistakes_png.display(),
        files.per_class_csv.display(),
        files.per_class_json.display()
    );
    Ok(())
}

fn predict(a: &PredictArgs) -> Result<()> {
    let dev = device::make(a.runtime.device, 0)?;
    let (model, meta) = checkpoint::load(&a.model, &dev)?;
    let invert = a.invert.unwrap_or(meta.input.invert);
    let mut failed = 0;
    for path in &a.images {
        let px = match folder::load_image(path, invert) {
            Ok(px) => px,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        let mut pixels = vec![0.0; px.len()];
        warmstart::batch::to_unit(&px, &mut pixels);
        let probs = probabilities(&model, pixels, &dev);
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
        let shown: Vec<String> = order
            .iter()
            .take(a.top.max(1))
            .map(|&i| format!("{} ({:.4})", meta.classes[i], probs[i]))
            .collect();
        println!("{}: {}", path.display(), shown.join(", "));
    }
    if failed > 0 {
        bail!("{failed} of {} image(s) could not be read", a.images.len());
    }
    Ok(())
}

fn augment_preview(a: &PreviewArgs) -> Result<()> {
    let path = a
        .data
        .clone()
        .unwrap_or_else(|| warmstart::bundled::dir("fashion-1k"));
    let d = load_data(
        &path,
        &LoadOptions {
            invert: a.invert,
            seed: a.seed,
            ..LoadOptions::default()
        },
    )?;
    let mut rows = one_per_class(&d.train, d.classes.len(), a.rows);
    // Fill remaining rows with further images in file order.
    let mut i = 0;
    while rows.len() < a.rows.min(d.train.len()) {
        if !rows.contains(&i) {
            rows.push(i);
        }
        i += 1;
    }
    augment_preview_png(&d.train, &rows, &a.augment, a.cols.max(1), a.seed, &a.out)?;
    println!(
        "Wrote {}: {} rows (original, then {} augmentations with {})",
        a.out.display(),
        rows.len(),
        a.cols.max(1),
        a.augment
    );
    Ok(())
}

fn bench(a: &BenchArgs) -> Result<()> {
    let dev = device::make(a.runtime.device, 1)?;
    let dir = warmstart::bundled::dir("mnist");
    let t = warmstart::data::idx::read_pair(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
    )?;
    let threads = a.runtime.threads.unwrap_or_else(rayon::current_num_threads);
    println!(
        "Benchmark of the seed CNN on {} ({threads} threads), data: {} MNIST images",
        match a.runtime.device {
            device::DeviceKind::Cpu => "cpu (burn flex)",
            device::DeviceKind::Gpu => "gpu (burn wgpu)",
        },
        t.len()
    );
    let cfg = warmstart::bench::BenchConfig {
        batches_b128: a.batches_b128.max(1),
        batches_b32: a.batches_b32.max(1),
        warmup: a.warmup,
        ..Default::default()
    };
    let r = warmstart::bench::run(&t, &cfg, &dev, |s| eprintln!("{s}"));
    print!("{}", r.lines());
    Ok(())
}
