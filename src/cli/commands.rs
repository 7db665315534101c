//! What each subcommand does, in terms of the library.

use super::{
    BenchArgs, Cli, Command, CompareArgs, ExportArgs, PredictArgs, PreviewArgs, ServeArgs,
    TrainArgs,
};
use anyhow::{Context, Result, anyhow, bail};
use clap::{ArgMatches, Args, FromArgMatches};
use std::io::Write;
use std::path::PathBuf;
use warmstart::checkpoint;
use warmstart::compare::{self, CompareRequest, Variant};
use warmstart::data::{LoadOptions, prepare};
use warmstart::device;
use warmstart::eval::image_probabilities;
use warmstart::options::RuntimeArgs;
use warmstart::pipeline::{self, Verbosity, load_data};
use warmstart::record::Stage;
use warmstart::report::figures::{augment_preview_png, check_preview, one_per_class};

pub fn dispatch(cli: Cli) -> Result<()> {
    // Ctrl-C and SIGTERM ask the training loop to save a resumable state and stop.
    ctrlc::set_handler(warmstart::cancel::request_stop)
        .context("cannot install the Ctrl-C handler")?;
    let command = cli.command.context("main turns no command into `run`")?;
    if let Some(rt) = command.runtime() {
        setup_runtime(rt)?;
    }
    device::on_workers(|| command_on_workers(command))
}

fn command_on_workers(command: Command) -> Result<()> {
    match command {
        Command::Pretrain(a) => {
            pipeline::train_stage(
                Stage::Pretrain,
                &a.request,
                a.resume.as_deref(),
                Verbosity::Full,
            )?;
            Ok(())
        }
        Command::Train(a) => {
            pipeline::train_stage(
                Stage::Train,
                &a.request,
                a.resume.as_deref(),
                Verbosity::Full,
            )?;
            Ok(())
        }
        Command::Eval(a) => Ok(pipeline::eval(&a)?),
        Command::Predict(a) => predict(&a),
        Command::Run(a) => Ok(pipeline::run(&a)?),
        Command::Compare(a) => compare(&a),
        Command::LrFind(a) => {
            if a.resume.is_some() {
                bail!("lr-find has no --resume: it trains nothing it keeps");
            }
            pipeline::lr_find(Stage::Train, &a.request)?;
            Ok(())
        }
        Command::AugmentPreview(a) => augment_preview(&a),
        Command::Export(a) => export(&a),
        Command::Serve(a) => serve(&a),
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

fn export(a: &ExportArgs) -> Result<()> {
    let (model, meta) = checkpoint::load(&a.model, &burn::prelude::Device::flex())?;
    warmstart::export::save(&model, &meta, &a.out)?;
    println!(
        "wrote {} (ONNX opset 18; input `images` [N,1,28,28] float32 = pixel/255, light on dark; \
         outputs `logits`, `probabilities` over {} classes)",
        a.out.display(),
        meta.classes.len()
    );
    Ok(())
}

fn serve(a: &ServeArgs) -> Result<()> {
    if a.runtime.device != device::DeviceKind::Cpu {
        bail!("serve runs on the CPU only");
    }
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    if workers == 0 {
        bail!("--workers must be at least 1");
    }
    let req = warmstart::serve::ServeRequest {
        model: a.model.clone(),
        host: a.host.clone(),
        port: a.port,
        workers,
        precision: device::resolve_precision(a.runtime.precision, a.runtime.device)?,
    };
    warmstart::serve::serve(&req, |addr| {
        println!(
            "Serving {} at http://{addr}/ (Ctrl-C stops)",
            a.model.display()
        );
    })?;
    // stdout may be gone by now (a closed pipe): stopping cleanly matters more than this line.
    let _ = writeln!(std::io::stdout(), "stopped");
    Ok(())
}

fn setup_runtime(rt: &RuntimeArgs) -> Result<()> {
    if let Some(n) = rt.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        // More threads than cores only adds switching (an epoch 100x slower at 1000 threads).
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let n = if n > cores {
            eprintln!("warning: --threads {n} is more than the {cores} cores here; using {cores}");
            cores
        } else {
            n
        };
        device::set_threads(n)?;
    }
    Ok(())
}

fn is_csv(p: &std::path::Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

fn predict(a: &PredictArgs) -> Result<()> {
    let dev = device::make(a.runtime.device, 0)?;
    let (model, meta) = checkpoint::load(&a.model, &dev)?;
    let model = model.with_precision(device::resolve_precision(
        a.runtime.precision,
        a.runtime.device,
    )?);
    if let [csv] = a.images.as_slice()
        && is_csv(csv)
    {
        return predict_csv(csv, a.out.as_deref(), &model, &meta.classes, &dev);
    }
    if a.out.is_some() || a.images.iter().any(|p| is_csv(p)) {
        bail!("a CSV file of images is predicted on its own (one CSV, optionally with --out FILE)");
    }
    let invert = a.invert.unwrap_or(meta.input.invert);
    let fit = a.fit.unwrap_or(meta.input.fit);
    let mut failed = 0;
    for path in &a.images {
        warmstart::cancel::check("predicting")?;
        let px = match prepare::load_image(path, invert, fit) {
            Ok(px) => px,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        let probs = image_probabilities(&model, &px, &dev);
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
    check_preview(a.rows, a.cols, &a.out)?;
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
    augment_preview_png(&d.train, &rows, &a.augment, a.cols, a.seed, &a.out)?;
    println!(
        "Wrote {}: {} rows (original, then {} augmentations with {})",
        a.out.display(),
        rows.len(),
        a.cols,
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
    let threads = rayon::current_num_threads();
    println!(
        "Benchmark of the seed CNN on {} ({threads} threads), data: {} MNIST images",
        match a.runtime.device {
            device::DeviceKind::Cpu => "cpu (burn flex)",
            device::DeviceKind::Gpu => "gpu (burn wgpu)",
        },
        t.len()
    );
    // `auto` measures both precisions where bf16 runs (fp32 first: the reference figures).
    let precisions = match device::resolve_precision(a.runtime.precision, a.runtime.device)? {
        device::Precision::Bf16 if a.runtime.precision == device::PrecisionRequest::Auto => {
            vec![device::Precision::Fp32, device::Precision::Bf16]
        }
        p => vec![p],
    };
    for precision in precisions {
        let cfg = warmstart::bench::BenchConfig {
            batches_b128: a.batches_b128,
            batches_b32: a.batches_b32,
            warmup: a.warmup,
            infer_repeats: a.infer_repeats,
            precision,
            ..Default::default()
        };
        eprintln!("precision {precision}:");
        let r = warmstart::bench::run(&t, &cfg, &dev, |s| eprintln!("{s}"))?;
        // fp32's lines keep their names (scripts read them); bf16's get a `_bf16` suffix.
        let lines = r.lines();
        match precision {
            device::Precision::Fp32 => print!("{lines}"),
            device::Precision::Bf16 => {
                for l in lines.lines() {
                    if let Some((k, v)) = l.split_once(':') {
                        println!("{k}_bf16:{v}");
                    }
                }
            }
        }
    }
    Ok(())
}

/// Flags a variant may not set: they belong to the whole comparison.
const NOT_PER_VARIANT: [(&str, &str); 5] = [
    ("out", "--out (the comparison's directory is one)"),
    ("seed", "--seed (use --seeds)"),
    (
        "resume",
        "--resume (re-run the same compare command to continue)",
    ),
    ("threads", "--threads (one pool serves every run)"),
    ("device", "--device (give it once, for every variant)"),
];

fn given(m: &ArgMatches, id: &str) -> bool {
    m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
}

/// Parses `--variant NAME=FLAGS`: the flags are split as a shell would and parsed as `train`'s.
fn parse_variant(spec: &str) -> Result<Variant> {
    let (name, flags) = spec.split_once('=').ok_or_else(|| {
        anyhow!("--variant {spec:?}: expected NAME='FLAGS', e.g. lr3='--lr 0.003'")
    })?;
    compare::check_name(name)?;
    let words = shell_words::split(flags)
        .map_err(|e| anyhow!("variant {name}: cannot split its flags {flags:?}: {e}"))?;
    let cmd = TrainArgs::augment_args(clap::Command::new("variant").no_binary_name(true));
    let m = cmd.try_get_matches_from(&words).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        anyhow!("variant {name}: {}", first.trim_start_matches("error: "))
    })?;
    for (id, what) in NOT_PER_VARIANT {
        if given(&m, id) {
            bail!("variant {name}: {what} cannot be set per variant");
        }
    }
    let args = TrainArgs::from_arg_matches(&m).map_err(|e| anyhow!("variant {name}: {e}"))?;
    Ok(Variant {
        name: name.to_string(),
        flags: flags.trim().to_string(),
        request: args.request,
    })
}

fn compare(a: &CompareArgs) -> Result<()> {
    if a.train.request.options.seed.is_some() {
        bail!("compare takes --seeds (a list such as 1,2,3, or a count), not --seed");
    }
    if a.train.resume.is_some() {
        bail!("compare has no --resume: re-run the same compare command to continue it");
    }
    let variants = if a.variants.is_empty() {
        compare::default_variants()
    } else {
        a.variants
            .iter()
            .map(|v| parse_variant(v))
            .collect::<Result<_>>()?
    };
    let seeds = compare::parse_seeds(a.seeds.as_deref().unwrap_or("1,2,3"))?;
    let out = a
        .train
        .request
        .options
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/compare"));
    let req = CompareRequest {
        common: a.train.request.clone(),
        variants,
        seeds,
        out: out.clone(),
    };
    let c = compare::run(&req)?;
    println!("\n{}", compare::table(&c));
    println!(
        "Wrote {}: compare.csv, compare.json, compare.png and compare.html",
        out.display()
    );
    Ok(())
}

/// Predicts every row of a CSV file of images; with `out`, writes a Kaggle submission.
fn predict_csv(
    path: &std::path::Path,
    out: Option<&std::path::Path>,
    model: &warmstart::model::Net,
    classes: &[String],
    dev: &burn::prelude::Device,
) -> Result<()> {
    let pixels = warmstart::data::csv::read_unlabelled(path)?;
    let n = pixels.len() / warmstart::data::PIXELS;
    let set = warmstart::data::Images::new(pixels, vec![0; n])?;
    let p = warmstart::eval::predict_set_cancellable(model, &set, dev)?;
    let mut sub = String::from("ImageId,Label\n");
    for i in 0..n {
        let c = p.predicted(i) as usize;
        match out {
            Some(_) => sub.push_str(&format!("{},{}\n", i + 1, csv_field(&classes[c]))),
            None => println!(
                "{} row {}: {} ({:.4})",
                path.display(),
                i + 1,
                classes[c],
                p.row(i)[c]
            ),
        }
    }
    if let Some(out) = out {
        warmstart::fsutil::write_atomic(out, sub.as_bytes())?;
        println!(
            "Wrote {} ({n} predictions of {})",
            out.display(),
            path.display()
        );
    }
    Ok(())
}

/// A CSV field, quoted when it must be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
