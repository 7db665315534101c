//! `warmstart compare` end to end: a tiny grid (2 variants x 2 seeds, one short epoch each) whose
//! table, CSV, JSON, figure and page must agree with each run's own evaluation; an interrupted
//! comparison that, re-run, ends with the numbers of an uninterrupted one; the page in a browser.

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn compare_args<'a>(init: &'a Path, out: &'a Path, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "compare",
        "--init",
        s(init),
        "--epochs",
        epochs,
        "--limit",
        "200",
        "--test-limit",
        "200",
        "--seeds",
        "1,2",
        "--variant",
        "pre=",
        "--variant",
        "rand=--init random --augment none",
        "--threads",
        "2",
        "--out",
        s(out),
    ]
}

/// compare.csv without the seconds column (timing differs between runs).
fn csv_without_seconds(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("compare.csv"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.remove(7);
            f.join(",")
        })
        .collect()
}

#[test]
fn outputs_agree_with_each_runs_own_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    tiny_pretrain(&pre);
    let out_dir = tmp.path().join("cmp");
    let out = ok(&compare_args(&pre, &out_dir, "1"));
    let csv = std::fs::read_to_string(out_dir.join("compare.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 4, "{csv}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("compare.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(out_dir.join("compare.html")).unwrap();
    let mut by_variant = std::collections::BTreeMap::<String, Vec<f64>>::new();
    for (i, row) in rows.iter().enumerate() {
        let (variant, seed, acc) = (row[0], row[1], row[2].parse::<f64>().unwrap());
        let run_dir = out_dir.join(variant).join(format!("seed-{seed}"));
        // The run's own evaluation of its best checkpoint, on the same 200 test images.
        let eval = ok(&["eval", "--model", s(&run_dir)]);
        let eval_acc = figure_after(&eval, "Accuracy on test");
        let (correct, total) = (row[3], row[4]);
        assert!(eval.contains(&format!("({correct}/{total})")), "{eval}");
        assert!(
            (eval_acc - acc).abs() < 5e-5,
            "{variant} seed {seed}: {eval_acc} vs {acc}"
        );
        // ... and the test accuracy recorded in its sidecar.
        let meta = warmstart::checkpoint::read_meta(&run_dir.join("best.safetensors")).unwrap();
        assert_eq!(meta.metrics.test_acc, Some(acc_exact(&json, i)));
        assert_eq!(meta.training.seed.to_string(), seed);
        assert!(run_dir.join("report.html").is_file());
        assert!(html.contains(&format!("{variant}/seed-{seed}/report.html")));
        assert!(
            out.contains(&format!(
                "{variant} seed {seed}: test accuracy {acc:.4} ({correct}/{total})"
            )),
            "{out}"
        );
        by_variant.entry(variant.to_string()).or_default().push(acc);
    }
    // The summary is the mean over the seeds, in the JSON, the printed table and the page.
    for (i, (variant, accs)) in [("pre", &by_variant["pre"]), ("rand", &by_variant["rand"])]
        .into_iter()
        .enumerate()
    {
        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
        let summary = &json["summary"][i];
        assert_eq!(summary["name"], variant);
        assert!((summary["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
        let shown = format!("{:.2}%", 100.0 * mean);
        assert!(
            out.contains(&shown) && html.contains(&shown),
            "{shown}: {out}"
        );
    }
    let d = by_variant["rand"]
        .iter()
        .zip(&by_variant["pre"])
        .map(|(r, p)| r - p)
        .sum::<f64>()
        / 2.0;
    assert!((json["differences"][0]["mean"].as_f64().unwrap() - d).abs() < 1e-12);
    assert!(out.contains(&format!("{:+.2} points", 100.0 * d)), "{out}");
    // The figure: a dot per run in the dots' colour, and the means in red.
    let img = image::open(out_dir.join("compare.png")).unwrap().to_rgb8();
    let blue = img.pixels().filter(|p| p.0 == [31, 119, 180]).count();
    let red = img.pixels().filter(|p| p.0 == [214, 39, 40]).count();
    assert!(blue > 4 * 40, "dots: {blue} pixels");
    assert!(red > 2 * 40, "means: {red} pixels");
    // Accuracy against minutes: each variant's mean ringed in its own colour (blue, then red),
    // and the page shows both figures.
    let img = image::open(out_dir.join("compare-time.png"))
        .unwrap()
        .to_rgb8();
    for colour in [[31, 119, 180], [214, 39, 40]] {
        let n = img.pixels().filter(|p| p.0 == colour).count();
        assert!(n > 60, "{colour:?}: {n} pixels");
    }
    let html = std::fs::read_to_string(out_dir.join("compare.html")).unwrap();
    assert_eq!(html.matches("data:image/png;base64,").count(), 2);

    // Re-running the same command reads every run back: same numbers, no training.
    let again = ok(&compare_args(&pre, &out_dir, "1"));
    assert_eq!(
        std::fs::read_to_string(out_dir.join("compare.csv")).unwrap(),
        csv
    );
    assert!(!again.contains("Epoch 1/1"), "{again}");
    // Other settings in the same directory are refused, naming the run.
    let err = fails(&compare_args(&pre, &out_dir, "2"));
    assert!(
        err.contains("seed-1") && err.contains("other settings"),
        "{err}"
    );

    let Some(browser) = browser_for_test() else {
        return;
    };
    let url = format!("file://{}", out_dir.join("compare.html").display());
    let dom = headless(&browser, &tmp.path().join("profile"), &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("data-images-total=\"2\"") && dom.contains("data-images-loaded=\"2\""),
        "the page did not load its figures: {dom}"
    );
    assert!(dom.contains("rand/seed-2/report.html"), "{dom}");
}

/// The accuracy of run `i` in compare.json, exactly.
fn acc_exact(json: &serde_json::Value, i: usize) -> f64 {
    json["runs"][i]["accuracy"].as_f64().unwrap()
}

#[test]
fn an_interrupted_comparison_finishes_with_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    tiny_pretrain(&pre);
    let whole = tmp.path().join("whole");
    ok(&compare_args(&pre, &whole, "6"));

    let cut = tmp.path().join("cut");
    let args = compare_args(&pre, &cut, "6");
    let mut child = bin()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Interrupt once the second run has finished an epoch: in the middle of a run.
    let marker = cut.join("pre/seed-2/history.csv");
    let start = Instant::now();
    while !marker.exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(marker.exists(), "the second run never finished an epoch");
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "Ctrl-C should exit with 130");
    assert!(
        cut.join("pre/seed-2/resume.ckpt").is_file(),
        "no resumable state"
    );
    assert!(
        !cut.join("pre/seed-2/result.json").exists(),
        "the run was not cut short"
    );
    assert!(!cut.join("compare.csv").exists());

    let done = run(&args);
    assert!(done.status.success());
    let (out, err) = (
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr),
    );
    assert!(out.contains("[4/4]"), "{out}");
    // The resumed run was set up by this same command: nothing of it is "ignored".
    assert!(!err.contains("ignoring"), "{err}");
    assert_eq!(csv_without_seconds(&cut), csv_without_seconds(&whole));
}

/// A finished run is reused only on the data it was trained on: change the test labels, re-run
/// with one more seed, and the comparison refuses to mix the old run with new ones, saying so.
#[test]
fn finished_runs_on_other_data_are_not_mixed_in() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let header = std::iter::once("label".to_string())
        .chain((0..784).map(|i| format!("pixel{i}")))
        .collect::<Vec<_>>()
        .join(",");
    let rows = |n: usize, first_label: u32| -> String {
        let mut s = header.clone() + "\n";
        for i in 0..n {
            let label = (i as u32 + first_label) % 3;
            let px = (40 + 60 * label).to_string();
            s.push_str(&format!("{label},{}\n", vec![px; 784].join(",")));
        }
        s
    };
    std::fs::write(data.join("train.csv"), rows(30, 0)).unwrap();
    std::fs::write(data.join("test.csv"), rows(9, 0)).unwrap();
    let out = tmp.path().join("cmp");
    // One variant learns from an unlabelled pool as well: the pool's images count as data too.
    let pool = tmp.path().join("pool.csv");
    // Shades of the classes' own (identical images would be left out of the pool).
    std::fs::write(&pool, rows(12, 0).replace(",40", ",45")).unwrap();
    let semi = format!("b=--unlabeled {}", pool.display());
    let args = |seeds: &'static str| -> Vec<String> {
        [
            "compare",
            "--data",
            data.to_str().unwrap(),
            "--init",
            "random",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--seeds",
            seeds,
            "--variant",
            "a=",
            "--variant",
            &semi,
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let first = args("1");
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    ok(&first);
    // The same command reads the finished run back.
    let again = ok(&first);
    assert!(again.contains("[1/2] a seed 1"), "{again}");
    // Other images in the pool: the pool variant's finished run is refused.
    std::fs::write(&pool, rows(12, 1).replace(",40,", ",41,")).unwrap();
    let more = args("1,2");
    let err = fails(&more.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("b/seed-1") && err.contains("another unlabelled pool"),
        "{err}"
    );
    std::fs::write(&pool, rows(12, 0).replace(",40", ",45")).unwrap();
    // Other labels for the test set.
    std::fs::write(data.join("test.csv"), rows(9, 1)).unwrap();
    let more = args("1,2");
    let err = fails(&more.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("seed-1") && err.contains("finished on other data"),
        "{err}"
    );
}
