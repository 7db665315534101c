//! What each subcommand does, in terms of the library.

use super::render::{Console, say, say_raw};
use super::{
    AuditArgs, BenchArgs, Cli, Command, CompareArgs, ExportArgs, PredictArgs, PreviewArgs,
    ServeArgs,
};
use anyhow::{Context, Result, bail};
use warmstart::checkpoint;
use warmstart::cluster::{self, CommandLine, Engine, EngineArgs, Job, slurm};
use warmstart::compare::{self, CompareRequest};
use warmstart::data::LoadOptions;
use warmstart::device;
use warmstart::options::RuntimeArgs;
use warmstart::pipeline::{self, EvalRequest, load_data};
use warmstart::predict::{self, Outcome, PredictRequest, Predicted};
use warmstart::progress::{Event, Progress, WarningsOnly};
use warmstart::record::Stage;
use warmstart::report::figures::{
    augment_preview_png, check_preview, check_preview_out, one_per_class,
};

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
    let console = &mut Console::new();
    match command {
        Command::Pretrain(a) => {
            pipeline::train_stage(Stage::Pretrain, &a.request, a.resume.as_deref(), console)?;
            Ok(())
        }
        Command::Train(a) => {
            pipeline::train_stage(Stage::Train, &a.request, a.resume.as_deref(), console)?;
            Ok(())
        }
        Command::Eval(a) => eval(&a, console),
        Command::Predict(a) => predict(&a),
        Command::Run(a) => Ok(pipeline::run(&a, console)?),
        Command::Compare(a) => compare(&a, console),
        Command::Audit(a) => audit(&a, console),
        Command::Suggest(a) => suggest(&a, console),
        Command::Label(a) => {
            warmstart::serve::label::serve(&a, |addr, n, warnings| {
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                let what = match (&a.audit, &a.pool, &a.into) {
                    (Some(d), _, _) => format!(
                        "Checking {n} labels flagged by the audit in {}",
                        d.display()
                    ),
                    (_, Some(p), Some(i)) => {
                        format!(
                            "Labelling {n} images of {} into {}",
                            p.display(),
                            i.display()
                        )
                    }
                    _ => format!("Labelling {n} images"),
                };
                say(format_args!(
                    "{what} at http://{addr}/ (Ctrl-C stops; every answer is saved at once)"
                ));
            })?;
            say("stopped");
            Ok(())
        }
        Command::LrFind(a) => {
            if a.resume.is_some() {
                bail!("lr-find has no --resume: it trains nothing it keeps");
            }
            pipeline::lr_find(Stage::Train, &a.request, console)?;
            Ok(())
        }
        Command::AugmentPreview(a) => augment_preview(&a, console),
        Command::Export(a) => export(&a),
        Command::Serve(a) => serve(&a),
        Command::Bench(a) => bench(&a),
        Command::MakeFashion1k {
            from,
            out,
            pool_out,
        } => {
            warmstart::bundled::build_fashion_1k(&from, &out)?;
            warmstart::bundled::build_fashion_pool(&from, &pool_out)?;
            for dir in [&out, &pool_out] {
                let n = warmstart::bundled::verify(dir)?;
                say(format_args!(
                    "wrote {} ({n} files, checksums in SHA256SUMS)",
                    dir.display()
                ));
            }
            Ok(())
        }
    }
}

fn audit(args: &AuditArgs, console: &mut Console) -> Result<()> {
    let a = &args.request;
    args.engine.check()?;
    if args.engine.on != Engine::Local {
        if a.fold.is_some() {
            bail!("--fold trains one fold here: give it without --on");
        }
        let job = warmstart::audit::job(a, &mut WarningsOnly(console))?;
        if elsewhere(&job, &args.engine, a.train.runtime.threads, console)? {
            return Ok(());
        }
    }
    let Some(audit) = warmstart::audit::run(a, console)? else {
        return Ok(());
    };
    let f = &audit.findings;
    let s = &audit.similarity;
    let wrong: f64 = f.estimated_wrong.iter().sum();
    let n = audit.data.images.len();
    say(format_args!(
        "Out-of-fold predictions agree with {:.2}% of the given labels",
        100.0 * audit.agreement()
    ));
    say(format_args!(
        "Wrong labels: about {wrong:.0} of {n} estimated ({:.1}%); {} flagged in label_issues.csv",
        100.0 * wrong / n.max(1) as f64,
        f.issues.len()
    ));
    for x in f.issues.iter().take(5) {
        say(format_args!(
            "  {}: given {}, looks like {} ({:.0}% vs {:.0}%)",
            audit.data.origins[x.image].relative_to(&audit.data.source),
            audit.data.classes[x.given as usize],
            audit.data.classes[x.suggested as usize],
            100.0 * audit.probs[x.image * audit.data.classes.len() + x.given as usize],
            100.0 * audit.probs[x.image * audit.data.classes.len() + x.suggested as usize]
        ));
    }
    say(format_args!(
        "Duplicates: {} pairs among the labelled images, {} with the test set; outliers: {}",
        s.within.len(),
        s.across.len(),
        s.outliers.len()
    ));
    say(format_args!(
        "Wrote {}: label_issues.csv, classes.csv, duplicates.csv, outliers.csv, out_of_fold.csv, \
         audit.html",
        audit.out.display()
    ));
    Ok(())
}

fn suggest(a: &warmstart::suggest::SuggestRequest, console: &mut Console) -> Result<()> {
    let s = warmstart::suggest::run(a, console)?;
    if s.already_labelled > 0 {
        say(format_args!(
            "{} pool images are already labelled and were left out",
            s.already_labelled
        ));
    }
    for p in s.picks.iter().take(5) {
        say(format_args!(
            "  {}: the model guesses {} ({:.0}%)",
            p.origin,
            s.classes[p.guess as usize],
            100.0 * p.guess_probability
        ));
    }
    say(format_args!(
        "Wrote {} images to label into {} (listed in {})",
        s.picks.len(),
        s.out.join("to-label").display(),
        s.out.join("suggested.csv").display()
    ));
    Ok(())
}

fn export(a: &ExportArgs) -> Result<()> {
    warmstart::export::check_out(&a.model, &a.out, a.overwrite)?;
    let (model, meta) = checkpoint::load(&a.model, &burn::prelude::Device::flex())?;
    warmstart::export::save(&model, &meta, &a.out)?;
    say(format_args!(
        "wrote {} (ONNX opset 18; input `images` [N,1,28,28] float32 = pixel/255, light on dark; \
         outputs `logits`, `probabilities` over {} classes)",
        a.out.display(),
        meta.classes.len()
    ));
    Ok(())
}

fn serve(a: &ServeArgs) -> Result<()> {
    let (req, warning) = a.resolve()?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    warmstart::serve::serve(&req, |addr| {
        say(format_args!(
            "Serving {} at http://{addr}/ (Ctrl-C stops)",
            a.model.display()
        ));
    })?;
    say("stopped");
    Ok(())
}

fn setup_runtime(rt: &RuntimeArgs) -> Result<()> {
    if let Some(n) = rt.threads
        && let Some(warning) = device::set_threads_capped(n)?
    {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

fn predict(a: &PredictArgs) -> Result<()> {
    let req = PredictRequest {
        model: a.model.clone(),
        images: a.images.clone(),
        out: a.out.clone(),
        overwrite: a.overwrite,
        invert: a.invert,
        fit: a.fit,
        device: a.runtime.device,
        precision: a.runtime.precision,
    };
    if let Some(adapter) = device::describe(a.runtime.device)? {
        eprintln!("GPU: {adapter}");
    }
    let p = predict::predict(&req)?;
    let classes = &p.classes;
    match p.predicted {
        Predicted::Rows {
            path,
            rows,
            written: Some(out),
        } => say(format_args!(
            "Wrote {} ({} predictions of {})",
            out.display(),
            rows.len(),
            path.display()
        )),
        Predicted::Rows { path, rows, .. } => {
            for (i, probs) in rows.iter().enumerate() {
                let shown: Vec<String> = predict::top(probs, a.top)
                    .into_iter()
                    .map(|c| format!("{} ({:.4})", classes[c], probs[c]))
                    .collect();
                say(format_args!(
                    "{} row {}: {}",
                    path.display(),
                    i + 1,
                    shown.join(", ")
                ));
            }
        }
        Predicted::Files(files) => {
            let n = files.len();
            let mut failed = 0;
            for f in files {
                match f.outcome {
                    Outcome::Blank => say(format_args!(
                        "{}: blank (nothing drawn once prepared): no class",
                        f.path.display()
                    )),
                    Outcome::Classes(probs) => {
                        let shown: Vec<String> = predict::top(&probs, a.top)
                            .into_iter()
                            .map(|i| format!("{} ({:.4})", classes[i], probs[i]))
                            .collect();
                        say(format_args!("{}: {}", f.path.display(), shown.join(", ")));
                    }
                    Outcome::Unreadable(e) => {
                        eprintln!("error: {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {n} image(s) could not be read");
            }
        }
    }
    Ok(())
}

fn augment_preview(a: &PreviewArgs, console: &mut Console) -> Result<()> {
    check_preview(a.rows, a.cols, &a.out)?;
    let path = a
        .data
        .clone()
        .unwrap_or_else(|| warmstart::bundled::dir("fashion-1k"));
    check_preview_out(&a.out, &path, a.overwrite)?;
    let d = load_data(
        &path,
        &LoadOptions {
            invert: a.invert,
            seed: a.seed,
            ..LoadOptions::default()
        },
        console,
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
    say(format_args!(
        "Wrote {}: {} rows (original, then {} augmentations with {})",
        a.out.display(),
        rows.len(),
        a.cols,
        a.augment
    ));
    Ok(())
}

fn bench(a: &BenchArgs) -> Result<()> {
    let dev = device::for_inference(a.runtime.device)?;
    let t = warmstart::bench::images()?;
    let threads = rayon::current_num_threads();
    say(format_args!(
        "Benchmark of the seed CNN on {} ({threads} threads), data: {} MNIST images",
        match device::describe(a.runtime.device)? {
            None => "cpu (burn flex)".to_string(),
            Some(adapter) => format!("gpu (burn wgpu on {adapter})"),
        },
        t.len()
    ));
    for precision in device::bench_precisions(a.runtime.precision, a.runtime.device)? {
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
        say_raw(&r.lines(precision));
    }
    Ok(())
}

fn compare(a: &CompareArgs, console: &mut Console) -> Result<()> {
    if a.train.resume.is_some() {
        bail!("compare has no --resume: re-run the same compare command to continue it");
    }
    a.engine.check()?;
    let variants = a
        .variants
        .iter()
        .map(|v| compare::variant::parse(v))
        .collect::<warmstart::Result<_>>()?;
    let req = CompareRequest::new(a.train.request.clone(), variants, a.seeds.as_deref())?;
    if let Some(cell) = &a.cell {
        if a.engine.on != Engine::Local {
            bail!("--cell runs one run here: give it without --on");
        }
        let r = compare::run_cell(&req, cell, console)?;
        say(compare::run_line(&r));
        return Ok(());
    }
    if a.engine.on != Engine::Local {
        let job = compare::job(&req, &mut WarningsOnly(console))?;
        if elsewhere(&job, &a.engine, a.train.request.runtime.threads, console)? {
            return Ok(());
        }
    }
    let out = req.out.clone();
    let c = compare::run(&req, console)?;
    say(format_args!("\n{}", compare::table(&c)));
    say(format_args!(
        "Wrote {}: compare.csv, compare.json, compare.png, compare-time.png and compare.html",
        out.display()
    ));
    Ok(())
}

/// Hands `job`'s unfinished runs to `--on`'s engine; `false` when there are none left and the
/// caller collects the results here.
fn elsewhere(
    job: &Job,
    engine: &EngineArgs,
    threads: Option<usize>,
    console: &mut Console,
) -> Result<bool> {
    let argv: Vec<String> = std::env::args().collect();
    let cmd = CommandLine::of_this_process(&argv)?;
    match engine.on {
        Engine::Local => Ok(false),
        Engine::List => {
            if job.tasks.is_empty() {
                eprintln!(
                    "Every run of this {} is finished: run the command below.",
                    job.what
                );
            }
            say_raw(&cluster::list(job, &cmd, threads)?);
            Ok(true)
        }
        Engine::Slurm => {
            let mut warn = |w: String| console.event(Event::Warning(w));
            let outcome = cluster::slurm::submit(
                job,
                &cmd,
                (threads, &engine.slurm_arg, engine.dry_run),
                &mut warn,
            )?;
            match outcome {
                slurm::Outcome::Submitted {
                    array,
                    collect,
                    runs,
                    logs,
                } => {
                    say(format_args!(
                        "Submitted {runs} run(s) of this {} as Slurm job array {array}; job {collect} \
                         collects them into {} once they all succeed.",
                        job.what,
                        job.out.display()
                    ));
                    say(format_args!(
                        "Follow them with `squeue -j {array},{collect}`; logs are in {}. If a run \
                         fails or is cancelled, run this command again: it submits the runs left.",
                        logs.display()
                    ));
                }
                slurm::Outcome::Written { submit, runs } => say(format_args!(
                    "Wrote the job scripts for {runs} run(s) beside {}: submit them with `sh {}`",
                    submit.display(),
                    submit.display()
                )),
                slurm::Outcome::NothingToRun => {
                    say(format_args!(
                        "Every run of this {} is finished: collecting them here.",
                        job.what
                    ));
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
}

fn eval(a: &EvalRequest, console: &mut Console) -> Result<()> {
    let e = pipeline::eval(a, console)?;
    say(format_args!(
        "Model: {} ({} classes)",
        e.weights.display(),
        e.classes.len()
    ));
    if let Some(u) = &e.pool {
        say(format_args!(
            "Trained with the unlabelled pool {}: {}",
            u.path.display(),
            u.describe()
        ));
    }
    let p = &e.plain;
    say(format_args!(
        "Accuracy on {} ({}): {:.4} ({}/{})",
        e.split,
        e.data.display(),
        p.accuracy(),
        p.correct(),
        p.len()
    ));
    say(format_args!("Loss: {:.4}", p.loss()));
    if let Some((n, aug, t)) = &e.tta {
        say(format_args!(
            "Accuracy with test-time augmentation (original + {n} copies, {aug}): {:.4} ({}/{}), loss {:.4}",
            t.accuracy(),
            t.correct(),
            t.len(),
            t.loss()
        ));
    }
    say("");
    say_raw(&e.confusion.render());
    let f = &e.files;
    say(format_args!(
        "\nWrote {}, {}, {} and {}",
        f.confusion_png.display(),
        f.mistakes_png.display(),
        f.per_class_csv.display(),
        f.per_class_json.display()
    ));
    Ok(())
}
