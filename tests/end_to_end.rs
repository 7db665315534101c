//! End-to-end tests: the real `warmstart` binary on small real data (the bundled MNIST and
//! fashion-1k), training for a handful of batches.

mod common;

use common::*;
use std::path::{Path, PathBuf};

#[test]
fn bundled_data_matches_checksums() {
    // Each set's images and labels (and, for the labelled sets, its test files) are listed.
    for (d, files) in [
        ("data/mnist", 4),
        ("data/fashion-1k", 7),
        ("data/fashion-pool", 2),
        ("data/pretrained", 2),
    ] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(d);
        let n = warmstart::bundled::verify(&dir).unwrap();
        assert!(n >= files, "{d}: only {n} files checked");
    }
}

/// The bundled pool shares no image with fashion-1k's training, validation or test sets, so a
/// run that learns from it sees no test image and no labelled image twice.
#[test]
fn bundled_pool_is_disjoint_from_fashion_1k() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let read = |dir: &str, prefix: &str| {
        let d = data.join(dir);
        warmstart::data::idx::read_pair(
            &d.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &d.join(format!("{prefix}-labels-idx1-ubyte.gz")),
        )
        .unwrap()
    };
    let pool = read("fashion-pool", "train");
    assert_eq!(pool.len(), 20_000);
    let seen: std::collections::HashSet<&[u8]> = (0..pool.len()).map(|i| pool.image(i)).collect();
    assert_eq!(seen.len(), pool.len(), "the pool repeats an image");
    for prefix in ["train", "val", "t10k"] {
        let set = read("fashion-1k", prefix);
        let shared = (0..set.len())
            .filter(|&i| seen.contains(set.image(i)))
            .count();
        assert_eq!(
            shared, 0,
            "fashion-1k {prefix} shares {shared} images with the pool"
        );
    }
}

#[test]
#[cfg_attr(
    not(warmstart_fashion_originals),
    ignore = "set WARMSTART_FASHION_MNIST to the Fashion-MNIST IDX files' directory to run it"
)]
fn fashion_1k_rebuilds_identically_from_the_originals() {
    let src = Path::new(option_env!("WARMSTART_FASHION_ORIGINALS").unwrap_or_default());
    let tmp = tempfile::tempdir().unwrap();
    let (out, pool) = (tmp.path().join("fashion-1k"), tmp.path().join("pool"));
    ok(&[
        "make-fashion-1k",
        "--from",
        s(src),
        "--out",
        s(&out),
        "--pool-out",
        s(&pool),
    ]);
    for (built, bundled) in [(&out, "fashion-1k"), (&pool, "fashion-pool")] {
        let sums = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("data")
                .join(bundled)
                .join("SHA256SUMS"),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(built.join("SHA256SUMS")).unwrap(),
            sums,
            "{bundled}"
        );
    }
}

fn bundled_test_set(name: &str) -> warmstart::data::Images {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name);
    warmstart::data::idx::read_pair(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap()
}

/// Writes image `i` of `set` as a dark-on-light PNG, as a user's scan of a drawing might be.
fn write_png(set: &warmstart::data::Images, i: usize, path: &Path) {
    let px: Vec<u8> = set.image(i).iter().map(|p| 255 - p).collect();
    image::GrayImage::from_raw(28, 28, px)
        .unwrap()
        .save(path)
        .unwrap();
}

#[test]
fn pretrain_then_train_from_it_then_eval_and_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    let out = ok(&[
        "pretrain",
        "--limit",
        "2000",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--test-limit",
        "1000",
        "--out",
        s(&pre),
    ]);
    assert!(out.contains("Epoch 1/1 - "), "{out}");
    assert!(
        out.contains(" - loss: ") && out.contains(" - val_acc: "),
        "{out}"
    );
    let test_acc = figure_after(&out, "Test accuracy:");
    assert!(
        test_acc > 0.80,
        "MNIST test accuracy after 1 epoch on 2000 images: {test_acc}"
    );
    for f in [
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "last.json",
        "history.csv",
        "curves.png",
    ] {
        assert!(pre.join(f).is_file(), "{f} missing");
    }
    let hist = std::fs::read_to_string(pre.join("history.csv")).unwrap();
    assert_eq!(hist.lines().count(), 2, "{hist}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pre.join("best.json")).unwrap()).unwrap();
    assert_eq!(meta["classes"].as_array().unwrap().len(), 10);
    assert!((meta["metrics"]["test_acc"].as_f64().unwrap() - test_acc).abs() < 1e-4);

    // eval agrees with what pretrain reported on the same 1000 images.
    let ev = ok(&["eval", "--model", s(&pre), "--limit", "1000"]);
    assert!(
        (figure_after(&ev, "Accuracy on test") - test_acc).abs() < 1e-4,
        "{ev}"
    );
    assert!(ev.contains("confusion matrix"), "{ev}");
    assert!(
        pre.join("eval-test/confusion.png").is_file()
            && pre.join("eval-test/per_class.json").is_file()
    );
    // Garments scored by a digit model: refused, not silently compared.
    let err = fails(&[
        "eval",
        "--model",
        s(&pre),
        "--data",
        "data/fashion-1k",
        "--limit",
        "10",
    ]);
    assert!(err.contains("are not the checkpoint's"), "{err}");

    // Train fashion-1k from it for an epoch.
    let fa = tmp.path().join("fashion");
    let out = ok(&[
        "train",
        "--init",
        s(&pre),
        "--epochs",
        "1",
        "--test-limit",
        "1000",
        "--out",
        s(&fa),
    ]);
    // Garments are not digits: same class count, but a new head.
    assert!(out.contains("loaded 18 tensors"), "{out}");
    assert!(
        out.contains("new (freshly initialised) 2 tensors: fc2.bias, fc2.weight"),
        "{out}"
    );
    let acc = figure_after(&out, "Test accuracy:");
    assert!(
        acc > 0.3,
        "fashion-1k after one epoch from pretrained weights: {acc}"
    );
    // Digits again: the whole model, head included, is reused.
    let out = ok(&[
        "train",
        "--data",
        "data/mnist",
        "--init",
        s(&pre),
        "--limit",
        "200",
        "--epochs",
        "1",
        "--test-limit",
        "100",
        "--out",
        s(&tmp.path().join("digits")),
    ]);
    assert!(
        out.contains("loaded 20 tensors") && out.contains("new: none"),
        "{out}"
    );

    // predict on image files; a missing one is reported by name and fails the command.
    let img = tmp.path().join("item.png");
    write_png(&bundled_test_set("fashion-1k"), 0, &img);
    let out = ok(&["predict", "--model", s(&fa), "--top", "3", s(&img)]);
    assert!(out.contains("item.png: "), "{out}");
    assert_eq!(
        out.matches(" (0.").count() + out.matches(" (1.0").count(),
        3,
        "{out}"
    );
    let err = fails(&["predict", "--model", s(&fa), s(&img), "/nonexistent/x.png"]);
    assert!(err.contains("/nonexistent/x.png"), "{err}");
}

#[test]
fn a_new_head_when_the_class_count_differs() {
    // A 3-class image-folder dataset trained from a 10-class checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    ok(&[
        "pretrain",
        "--limit",
        "300",
        "--epochs",
        "1",
        "--test-limit",
        "10",
        "--out",
        s(&pre),
    ]);
    let data = tmp.path().join("shapes");
    let set = bundled_test_set("fashion-1k");
    for (class, wanted) in [("bag", 8u32), ("boot", 9), ("trouser", 1)] {
        let d = data.join(class);
        std::fs::create_dir_all(&d).unwrap();
        let picks = (0..set.len()).filter(|&i| set.label(i) == wanted).take(12);
        for i in picks {
            write_png(&set, i, &d.join(format!("{i}.png")));
        }
    }
    std::fs::write(data.join("boot/readme.txt"), "not an image").unwrap();
    let out_dir = tmp.path().join("shapes-run");
    let o = run(&[
        "train",
        "--data",
        s(&data),
        "--init",
        s(&pre),
        "--epochs",
        "1",
        "--out",
        s(&out_dir),
    ]);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stdout.contains("3 classes"), "{stdout}");
    assert!(
        stdout.contains("fc2.weight") && stdout.contains("new (freshly initialised) 2 tensors"),
        "{stdout}"
    );
    assert!(
        stderr.contains("readme.txt") && stderr.contains("1 file(s)"),
        "{stderr}"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("best.json")).unwrap()).unwrap();
    assert_eq!(
        meta["classes"],
        serde_json::json!(["bag", "boot", "trouser"])
    );
}

#[test]
fn csv_data_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("digits.csv");
    let mut text = String::from("label");
    for i in 0..784 {
        text.push_str(&format!(",pixel{i}"));
    }
    text.push('\n');
    let set = bundled_test_set("mnist");
    for i in 0..200 {
        text.push_str(&set.label(i).to_string());
        for p in set.image(i) {
            text.push_str(&format!(",{p}"));
        }
        text.push('\n');
    }
    std::fs::write(&csv, text).unwrap();
    let out = ok(&[
        "pretrain",
        "--data",
        s(&csv),
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        s(&tmp.path().join("run")),
    ]);
    // 10% of each class, rounded per class: 21 of the 200 images.
    assert!(
        out.contains("179 train / 21 validation (split off train)"),
        "{out}"
    );
    assert!(out.contains("No test set"), "{out}");
}

#[test]
fn bad_inputs_give_errors_that_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    // A missing path.
    let err = fails(&[
        "train",
        "--data",
        "/no/such/dir",
        "--init",
        "random",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("/no/such/dir"), "{err}");
    // A mistyped path is reported before anything else is missing (here: no runs/pretrain).
    let err = fails_in(
        tmp.path(),
        &["train", "--data", "/no/such/dir", "--out", s(&out)],
    );
    assert!(
        err.contains("/no/such/dir") && !err.contains("pretrained"),
        "{err}"
    );
    // A malformed IDX file.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("train-images-idx3-ubyte"),
        b"\x00\x00\x08\x03\x00\x00\x00\x05",
    )
    .unwrap();
    std::fs::write(
        bad.join("train-labels-idx1-ubyte"),
        b"\x00\x00\x08\x01\x00\x00\x00\x05abcde",
    )
    .unwrap();
    let err = fails(&[
        "train",
        "--data",
        s(&bad),
        "--init",
        "random",
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("header"),
        "{err}"
    );
    // No pretraining where the default expects one (a fresh clone): the bundled one, said first.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let run = run_in(
        &fresh,
        &[
            "train",
            "--out",
            "r",
            "--epochs",
            "1",
            "--limit",
            "20",
            "--test-limit",
            "20",
        ],
    );
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{text}");
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("Starting from the bundled MNIST pretraining")
            && first.contains("data/pretrained")
            && first.contains("runs/pretrain does not exist yet"),
        "{text}"
    );
    let record = std::fs::read_to_string(fresh.join("r/best.json")).unwrap();
    assert!(record.contains("data/pretrained"), "{record}");
    // A checkpoint that is not one.
    let fake = tmp.path().join("fake.safetensors");
    std::fs::write(&fake, b"nope").unwrap();
    let err = fails(&["eval", "--model", s(&fake)]);
    assert!(
        err.contains("fake.json") && err.contains("missing"),
        "{err}"
    );
    // A bad flag value.
    let err = fails(&["train", "--augment", "spin=3", "--init", "random"]);
    assert!(err.contains("spin"), "{err}");
    assert!(!PathBuf::from(&out).join("best.safetensors").exists());
}

#[test]
fn training_writes_a_report_that_renders_in_a_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let out = ok(&[
        "train",
        "--init",
        "random",
        "--limit",
        "200",
        "--epochs",
        "2",
        "--test-limit",
        "500",
        "--out",
        s(&run_dir),
    ]);
    assert!(out.contains("report.html"), "{out}");
    for f in [
        "report.html",
        "confusion.png",
        "mistakes.png",
        "augment_preview.png",
        "per_class.csv",
        "per_class.json",
    ] {
        assert!(run_dir.join(f).is_file(), "{f} missing");
    }
    let per_class: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("per_class.json")).unwrap()).unwrap();
    assert_eq!(per_class["total"], 500);
    assert_eq!(per_class["classes"][9]["class"], "Ankle boot");
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<img ").count(),
        4,
        "curves, confusion, mistakes, preview"
    );
    assert!(html.contains("Test accuracy (kept checkpoint)") && html.contains("Ankle boot"));
    assert!(
        !html.contains("src=\"/") && !html.contains("src=\"file:"),
        "images must be embedded"
    );

    let Some(browser) = browser_for_test() else {
        return;
    };
    let url = format!("file://{}", run_dir.join("report.html").display());
    let dom = headless(
        &browser,
        &tmp.path().join("profile1"),
        &["--dump-dom"],
        &url,
    );
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom_text.contains("data-images-total=\"4\"")
            && dom_text.contains("data-images-loaded=\"4\""),
        "the page did not load its 4 images: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot = tmp.path().join("shot.png");
    let arg = format!("--screenshot={}", shot.display());
    let r = headless(
        &browser,
        &tmp.path().join("profile2"),
        &[&arg, "--window-size=1280,2400"],
        &url,
    );
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let img = image::open(&shot).unwrap().to_rgb8();
    let drawn = img
        .pixels()
        .filter(|p| p.0.iter().any(|&c| c < 200))
        .count();
    let frac = drawn as f64 / (img.width() * img.height()) as f64;
    // Text, tables, plots and the dark image tiles: a blank or broken page is nearly all white.
    assert!(
        frac > 0.05,
        "screenshot is mostly blank ({:.3} drawn)",
        frac
    );
}

#[test]
fn bench_ends_with_machine_readable_figures() {
    let out = ok(&[
        "bench",
        "--batches-b128",
        "2",
        "--batches-b32",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
    ]);
    // fp32's seven lines, then (where the CPU has bf16 and `--precision` is `auto`) bf16's.
    let figures: Vec<(&str, f64)> = out
        .lines()
        .filter(|l| !l.starts_with("Benchmark of"))
        .map(|line| {
            let (k, v) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            (k, v.split_whitespace().next().unwrap().parse().unwrap())
        })
        .collect();
    let keys = [
        "peak",
        "train_b128",
        "train_b32_aug",
        "semi_b32",
        "infer_b1000",
        "latency_b1",
        "peak_rss",
    ];
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    if warmstart::device::cpu_has_bf16() {
        expected.extend(keys.iter().map(|k| format!("{k}_bf16")));
    }
    let got: Vec<String> = figures.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(got, expected, "{out}");
    assert!(figures.iter().all(|&(_, v)| v > 0.0), "{out}");
    assert!(out.contains(" ms\n") && out.contains(" MiB"), "{out}");
    // Each throughput also as nominal GFLOP/s and a share of this machine's measured peak.
    assert_eq!(
        out.matches("% of peak\n").count(),
        4 * expected.len() / keys.len(),
        "{out}"
    );
}

/// `eval --split val` scores exactly the images the run validated on: the run's own validation
/// fraction, seed and `--limit` come from its record (an untyped record once made `eval` split
/// at 0.1 without the limit, scoring 6,000 images that included training ones).
#[test]
fn eval_scores_the_validation_set_the_run_held_out() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    ok(&[
        "pretrain",
        "--limit",
        "300",
        "--val-split",
        "0.3",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--test-limit",
        "20",
        "--out",
        s(&run_dir),
    ]);
    let meta = warmstart::checkpoint::read_meta(&run_dir.join("best.safetensors")).unwrap();
    let out = ok(&["eval", "--model", s(&run_dir), "--split", "val"]);
    let acc = figure_after(&out, "Accuracy on val");
    // 300 images at 0.3 hold out 90, and the run got as many of them right as eval does.
    let correct = (meta.metrics.val_acc * 90.0).round();
    assert!(out.contains(&format!("({correct}/90)")), "{out}");
    assert!(
        (acc - meta.metrics.val_acc).abs() < 5e-5,
        "eval says {acc}, the run's own validation said {}",
        meta.metrics.val_acc
    );
    // From another working directory, the recorded (absolute) data path still finds the data.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = run_in(&elsewhere, &["eval", "--model", "../run", "--split", "val"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(figure_after(&stdout, "Accuracy on val"), acc);
}

/// `--patience N` stops at the first epoch N epochs after the best one, says so, and the
/// report shows it; `--epochs` stays the maximum.
#[test]
fn early_stopping_stops_at_the_right_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let out = ok(&[
        "train",
        "--init",
        "random",
        "--limit",
        "256",
        "--epochs",
        "25",
        "--patience",
        "2",
        "--lr",
        "0.01",
        "--test-limit",
        "50",
        "--out",
        s(&run_dir),
    ]);
    let accs: Vec<f64> = std::fs::read_to_string(run_dir.join("history.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap().parse().unwrap())
        .collect();
    // The epoch it should stop at: the first whose distance to the best so far reaches 2.
    let mut best = 0;
    let mut expect = 25;
    for (i, &a) in accs.iter().enumerate() {
        if a > accs[best] {
            best = i;
        }
        if i - best >= 2 {
            expect = i + 1;
            break;
        }
    }
    assert_eq!(accs.len(), expect, "history: {accs:?}");
    if expect < 25 {
        assert!(
            out.contains(&format!("Stopped early after epoch {expect}")),
            "{out}"
        );
        let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
        assert!(html.contains(&format!("stopped early after epoch {expect}")));
    }
}

/// `lr-find` suggests a rate inside its range, draws its curve, and keeps nothing it trained: the
/// checkpoint it started from is byte-identical afterwards and it writes no checkpoint.
#[test]
fn lr_find_suggests_a_rate_and_changes_no_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    tiny_pretrain(&pre);
    let before: Vec<Vec<u8>> = ["best.safetensors", "best.json", "last.safetensors"]
        .iter()
        .map(|f| std::fs::read(pre.join(f)).unwrap())
        .collect();
    let out_dir = tmp.path().join("lr");
    let out = ok(&[
        "lr-find",
        "--init",
        s(&pre),
        "--limit",
        "200",
        "--out",
        s(&out_dir),
    ]);
    let lr = figure_after(&out, "Suggested learning rate:");
    assert!((1e-7..=10.0).contains(&lr), "{lr}");
    let rows = std::fs::read_to_string(out_dir.join("lr_find.csv")).unwrap();
    assert!(rows.lines().count() > 10, "{rows}");
    assert!(out_dir.join("lr_find.png").is_file());
    let mut written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["lr_find.csv", "lr_find.png"]);
    let after: Vec<Vec<u8>> = ["best.safetensors", "best.json", "last.safetensors"]
        .iter()
        .map(|f| std::fs::read(pre.join(f)).unwrap())
        .collect();
    assert_eq!(
        before, after,
        "lr-find changed the checkpoint it started from"
    );
    // It trains with the flags a run would (weight decay, smoothing, rate ratio) and refuses, by
    // name, those of a run's schedule and length, which a sweep does not have.
    let flags = [
        "--weight-decay",
        "0.01",
        "--label-smoothing",
        "0.1",
        "--lr-ratio",
        "0.5",
    ];
    let tuned_dir = tmp.path().join("lr-tuned");
    let mut args = vec![
        "lr-find",
        "--init",
        s(&pre),
        "--limit",
        "200",
        "--out",
        s(&tuned_dir),
    ];
    args.extend(flags);
    let tuned = figure_after(&ok(&args), "Suggested learning rate:");
    assert!((1e-7..=10.0).contains(&tuned), "{tuned}");
    let curve = |d: &Path| std::fs::read_to_string(d.join("lr_find.csv")).unwrap();
    assert_ne!(
        curve(&out_dir),
        curve(&tuned_dir),
        "the flags changed nothing"
    );
    let e = fails(&[
        "lr-find",
        "--init",
        s(&pre),
        "--epochs",
        "3",
        "--schedule",
        "cosine",
    ]);
    assert!(
        e.contains("lr-find does not use --epochs, --schedule"),
        "{e}"
    );
}

/// `--precise-bn`: after one epoch on 3,000 MNIST images the momentum averages of batch norm lag
/// the weights (the test accuracy falls far below the training accuracy); recomputed as plain
/// averages they do not (no more than 5 points below).
#[test]
fn precise_batch_norm_statistics_fix_short_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| -> (f64, f64) {
        let dir = tmp.path().join(name);
        let mut args = vec![
            "pretrain",
            "--limit",
            "3000",
            "--epochs",
            "1",
            "--threads",
            "2",
            "--out",
            s(&dir),
        ];
        args.extend(extra);
        let out = ok(&args);
        let line = out.lines().find(|l| l.starts_with("Epoch 1/1")).unwrap();
        let train_acc: f64 = line.split(" - acc: ").nth(1).unwrap()[..6].parse().unwrap();
        (train_acc, figure_after(&out, "Test accuracy:"))
    };
    // The defaults (PreciseBN on): test accuracy no more than 5 points below training accuracy.
    let (train_acc, test_acc) = run("defaults", &[]);
    assert!(
        test_acc >= train_acc - 0.05,
        "train {train_acc}, test {test_acc}"
    );
    // The homework's recipe with and without PreciseBN: the momentum averages lag.
    let old = [
        "--schedule",
        "constant",
        "--lr",
        "0.001",
        "--augment",
        "none",
    ];
    let (train_acc, test_acc) = run("precise", &[&old[..], &["--precise-bn"]].concat());
    assert!(
        test_acc >= train_acc - 0.05,
        "train {train_acc}, test {test_acc}"
    );
    let (_, lagging) = run("momentum", &[&old[..], &["--precise-bn", "false"]].concat());
    assert!(
        test_acc > lagging + 0.2,
        "precise {test_acc}, momentum {lagging}"
    );
}

/// Clean epochs train on exactly the batches an unaugmented run trains on: a run whose every
/// epoch is clean ends with the bits of an `--augment none` run, and the console, the record and
/// the report say which epochs were clean.
#[test]
fn clean_epochs_train_on_the_images_as_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, epochs: &str, extra: &[&str]| {
        let dir = tmp.path().join(name);
        let mut args = vec![
            "train",
            "--init",
            "random",
            "--limit",
            "200",
            "--epochs",
            epochs,
            "--test-limit",
            "50",
            "--out",
        ];
        args.push(s(&dir));
        args.extend_from_slice(extra);
        (ok(&args), dir)
    };
    let (out, clean) = run("clean", "2", &["--clean-epochs", "2"]);
    assert!(
        out.contains("augmentation none (every epoch clean)"),
        "{out}"
    );
    let (_, plain) = run("plain", "2", &["--augment", "none"]);
    let (_, augmented) = run("augmented", "2", &["--clean-epochs", "0"]);
    let bytes = |d: &Path| std::fs::read(d.join("last.safetensors")).unwrap();
    assert_eq!(
        bytes(&clean),
        bytes(&plain),
        "clean epochs are not plain epochs"
    );
    assert_ne!(
        bytes(&clean),
        bytes(&augmented),
        "augmentation made no difference"
    );
    let record = |d: &Path| {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("last.json")).unwrap()).unwrap();
        meta["training"]["clean_epochs"].as_u64().unwrap()
    };
    assert_eq!((record(&clean), record(&plain)), (2, 0));

    let (out, last) = run("last", "5", &[]);
    let said = "rotation=10,shift=0.1,zoom=0.1 (none in the last 1 epoch(s))";
    assert!(out.contains(said), "{out}");
    assert_eq!(record(&last), 1);
    let html = std::fs::read_to_string(last.join("report.html")).unwrap();
    assert!(
        html.contains(said),
        "the report does not name the clean epoch"
    );
    let err = fails(&["train", "--epochs", "3", "--clean-epochs", "4"]);
    assert!(
        err.contains("--clean-epochs 4 is more than --epochs 3"),
        "{err}"
    );
}

/// `--keep` decides which epoch's weights are the model: `last` the last, `best` the best
/// validation accuracy's, and the default (`auto`) the last unless the best one's validation loss
/// is lower by the margin, read back from the run's own history.
#[test]
fn keep_decides_which_epoch_is_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |keep: Option<&str>| -> (std::path::PathBuf, String) {
        let out = tmp.path().join(keep.unwrap_or("default"));
        let mut a = vec![
            "pretrain",
            "--data",
            "data/fashion-1k",
            "--limit",
            "200",
            "--batch-size",
            "32",
            "--test-limit",
            "50",
            "--epochs",
            "4",
            "--seed",
            "3",
            "--lr",
            "0.05",
            "--out",
        ];
        a.push(s(&out));
        if let Some(k) = keep {
            a.extend(["--keep", k]);
        }
        let text = ok(&a);
        (out, text)
    };
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    let epoch_of = |d: &Path| {
        warmstart::checkpoint::load(&d.join("best.safetensors"), &burn::prelude::Device::flex())
            .unwrap()
            .1
            .metrics
            .epoch
    };
    let (last, text) = run(Some("last"));
    assert!(
        text.contains("Kept epoch 4 ") || text.contains("at epoch 4 "),
        "{text}"
    );
    assert_eq!(epoch_of(&last), 4);
    let meta = std::fs::read_to_string(last.join("best.json")).unwrap();
    assert!(meta.contains("\"keep\": \"last\""), "{meta}");

    // (epoch, val_loss, val_acc) per epoch, from the history the run wrote.
    let history = std::fs::read_to_string(last.join("history.csv")).unwrap();
    let rows: Vec<(usize, f64, f64)> = history
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[4].parse().unwrap(),
                f[5].parse().unwrap(),
            )
        })
        .collect();
    let best = rows
        .iter()
        .fold(rows[0], |b, r| if r.2 > b.2 { *r } else { b });
    let last_row = rows[rows.len() - 1];
    let (keep_best, kb_text) = run(Some("best"));
    assert_eq!(epoch_of(&keep_best), best.0, "{kb_text}");
    // Same training, so the same last epoch whatever is kept.
    assert!(read(&last, "last.safetensors") == read(&keep_best, "last.safetensors"));

    let (auto, auto_text) = run(None);
    let margin = warmstart::history::AUTO_MARGIN;
    let expected = if best.1 < last_row.1 * (1.0 - margin) {
        best.0
    } else {
        last_row.0
    };
    assert_eq!(epoch_of(&auto), expected, "{auto_text}\n{history}");
    assert!(
        read(&auto, "best.safetensors")
            == read(
                if expected == 4 { &last } else { &keep_best },
                "best.safetensors"
            )
    );
    let meta = std::fs::read_to_string(auto.join("best.json")).unwrap();
    assert!(meta.contains("\"keep\": \"auto\""), "{meta}");
}

/// The bundled pretraining is what its README says: the seed CNN trained on MNIST, 99.4% or more
/// on MNIST's 10,000 test images.
#[test]
fn the_bundled_pretraining_scores_on_mnist() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("eval");
    let text = ok(&[
        "eval",
        "--model",
        "data/pretrained",
        "--data",
        "data/mnist",
        "--out",
        s(&out),
    ]);
    let acc = figure_after(&text, "Accuracy on test");
    assert!(acc >= 0.994, "{text}");
}

/// `--time`: the run chooses its epochs from its own timing, says so, records them, and a run of
/// the record (`--epochs` as chosen) trains the same bits; a budget too short for one epoch is a
/// clear error that writes no checkpoint.
#[test]
fn a_time_budget_chooses_recorded_epochs_and_a_rerun_gives_the_same_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let common = [
        "train",
        "--init",
        "random",
        "--limit",
        "100",
        "--test-limit",
        "50",
        "--threads",
        "2",
    ];
    let timed = tmp.path().join("timed");
    let mut args = common.to_vec();
    args.extend(["--time", "20s", "--out", s(&timed)]);
    let text = ok(&args);
    let line = text
        .lines()
        .find(|l| l.starts_with("Time budget 20s:"))
        .unwrap_or_else(|| panic!("no budget line in {text}"));
    let epochs: usize = line
        .rsplit("training ")
        .next()
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no epoch count in {line:?}"));
    assert!(epochs >= 1, "{line}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(timed.join("best.json")).unwrap()).unwrap();
    assert_eq!(meta["training"]["epochs"], epochs, "{meta}");
    assert_eq!(meta["training"]["time"], "20s", "{meta}");
    let rerun = tmp.path().join("rerun");
    let n = epochs.to_string();
    let mut args = common.to_vec();
    args.extend(["--epochs", &n, "--out", s(&rerun)]);
    ok(&args);
    for f in ["best.safetensors", "last.safetensors"] {
        assert!(
            std::fs::read(timed.join(f)).unwrap() == std::fs::read(rerun.join(f)).unwrap(),
            "{f} differs between --time 20s and --epochs {n}"
        );
    }
    // Too short for one epoch: said with what would do, and nothing written.
    let short = tmp.path().join("short");
    let mut args = common.to_vec();
    args.extend(["--time", "1s", "--out", s(&short)]);
    let err = fails(&args);
    assert!(
        err.contains("--time 1s is too short") && err.contains("give at least"),
        "{err}"
    );
    assert!(!short.join("best.safetensors").exists());
    // --time and --epochs both set the length.
    let err = fails(&["train", "--time", "5m", "--epochs", "3"]);
    assert!(err.contains("--time") && err.contains("--epochs"), "{err}");
    let err = fails(&["train", "--time", "ten minutes"]);
    assert!(err.contains("not a duration"), "{err}");
}
