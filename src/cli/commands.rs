//! What each subcommand does, in terms of the library.

use super::{Cli, Command, EvalArgs, PredictArgs, RunArgs, RuntimeArgs, TrainArgs};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use warmstart::augment::AugmentConfig;
use warmstart::checkpoint;
use warmstart::data::{self, Dataset, Invert, LoadOptions, folder};
use warmstart::device;
use warmstart::eval::{Confusion, predict_set, probabilities};
use warmstart::model::ArchConfig;
use warmstart::train::{self, TrainOptions};

pub fn dispatch(cli: Cli) -> Result<()> {
    // Ctrl-C and SIGTERM ask the training loop to save a resumable state and stop.
    ctrlc::set_handler(warmstart::resume::request_stop)
        .context("cannot install the Ctrl-C handler")?;
    match cli.command {
        Some(Command::Pretrain(a)) => {
            setup_runtime(&a.runtime)?;
            train_stage(&a, Stage::Pretrain).map(|_| ())
        }
        Some(Command::Train(a)) => {
            setup_runtime(&a.runtime)?;
            train_stage(&a, Stage::Train).map(|_| ())
        }
        Some(Command::Eval(a)) => eval(&a),
        Some(Command::Predict(a)) => predict(&a),
        Some(Command::Run(a)) => run(&a),
        Some(Command::MakeFashion1k { from, out }) => {
            warmstart::bundled::build_fashion_1k(&from, &out)?;
            let n = warmstart::bundled::verify(&out)?;
            println!(
                "wrote {} ({n} files, checksums in SHA256SUMS)",
                out.display()
            );
            Ok(())
        }
        None => unreachable!("main turns no command into `run`"),
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
    if let (Init::From(p), None) = (&init, &a.init)
        && !p.exists()
    {
        bail!(
            "no pretrained checkpoint at {}: run `warmstart pretrain` first, or pass --init PATH or --init random",
            p.display()
        );
    }
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
            "device": a.runtime.device,
            "threads": a.runtime.threads,
        }),
    };
    if opts.lr <= 0.0 || !opts.lr.is_finite() {
        bail!("--lr must be a positive number");
    }
    let dev = device::make(a.runtime.device, a.seed)?;
    let data = load_data(&data_path, &load)?;
    let mut model = ArchConfig::seed(data.classes.len()).init(&dev);
    match &init {
        Init::Random => println!("Init: random weights"),
        Init::From(p) => {
            let rep = checkpoint::transfer(&mut model, p)?;
            println!("Init: {}\n{rep}", p.display());
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
    finish_stage(outcome, data, &out, &dev)
}

fn resume_stage(a: &TrainArgs, dir: &Path) -> Result<StageResult> {
    let saved = warmstart::resume::load(dir)?;
    let opts = saved.state.options.clone();
    let dev = device::make(a.runtime.device, opts.seed)?;
    let data = load_data(&opts.data, &opts.load)?;
    let outcome = train::resume(saved, &data, a.epochs, &dev)?;
    finish_stage(outcome, data, &opts.out, &dev)
}

/// Reports the best epoch and the test accuracy of the best checkpoint.
fn finish_stage(
    outcome: train::Outcome,
    data: Dataset,
    out: &Path,
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
    if let Some(test) = &data.test {
        let (model, _) = checkpoint::load(&outcome.best_path, dev)?;
        let p = predict_set(&model, test, dev);
        println!(
            "Test accuracy: {:.4} ({}/{})",
            p.accuracy(),
            p.correct(),
            p.len()
        );
        checkpoint::update_meta(&outcome.best_path, |m| {
            m.metrics.test_acc = Some(p.accuracy())
        })?;
    } else {
        println!(
            "No test set in {}: no test accuracy.",
            data.source.display()
        );
    }
    println!(
        "Wrote {}, {} and {}",
        outcome.best_path.display(),
        out.join("history.csv").display(),
        out.join("curves.png").display()
    );
    Ok(StageResult {
        out: out.to_path_buf(),
        data,
    })
}

fn load_data(path: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let d = data::load(path, opts)?;
    println!(
        "Data: {} — {} classes, {} train / {} validation{} / {}",
        path.display(),
        d.classes.len(),
        d.train.len(),
        d.val.len(),
        if d.val_was_split {
            " (split off train)"
        } else {
            ""
        },
        d.test
            .as_ref()
            .map_or("no test set".to_string(), |t| format!(
                "{} test images",
                t.len()
            ))
    );
    Ok(d)
}

fn run(a: &RunArgs) -> Result<()> {
    setup_runtime(&a.runtime)?;
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
    if let Some(test) = &res.data.test {
        let dev = device::make(a.runtime.device, a.seed)?;
        let (model, meta) = checkpoint::load(&res.out, &dev)?;
        let p = predict_set(&model, test, &dev);
        let c = Confusion::new(&p, &meta.classes);
        println!(
            "\n== Evaluation of {} on the test set\n{}",
            res.out.display(),
            c.render()
        );
    }
    Ok(())
}

fn eval(a: &EvalArgs) -> Result<()> {
    setup_runtime(&a.runtime)?;
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
    println!("Loss: {:.4}\n", p.loss());
    print!("{}", Confusion::new(&p, &meta.classes).render());
    Ok(())
}

fn predict(a: &PredictArgs) -> Result<()> {
    setup_runtime(&a.runtime)?;
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
        data::batch::to_unit(&px, &mut pixels);
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
