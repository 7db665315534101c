//! `warmstart audit`: flipped labels are found, planted copies and test leaks listed, every image
//! named by its file, the page renders in a browser, bad flags and a used directory are refused,
//! and Ctrl-C leaves no half-written results.

mod common;

use common::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use warmstart::data::idx;

fn write_idx(dir: &Path, prefix: &str, px: &[u8], labels: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let n = labels.len();
    std::fs::write(
        dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
        idx::gzip(&idx::encode(&[n, 28, 28], px)),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
        idx::gzip(&idx::encode(&[n], labels)),
    )
    .unwrap();
}

#[test]
fn flipped_labels_copies_and_test_leaks_are_found() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    quick_pretrain(&pre, "2000", "10");
    let d = mnist_test_digits();
    // 400 labelled digits, 12 of them with a wrong label; image 399 is a copy of image 5.
    let n = 400;
    let mut px: Vec<u8> = (0..n).flat_map(|i| d.image(i).to_vec()).collect();
    px[399 * 784..].copy_from_slice(d.image(5));
    let mut labels: Vec<u8> = (0..n).map(|i| d.label(i) as u8).collect();
    labels[399] = labels[5];
    let flipped: Vec<usize> = (0..12).map(|j| 7 + 31 * j).collect();
    for &i in &flipped {
        labels[i] = (labels[i] + 1 + (i % 8) as u8) % 10;
    }
    let data = tmp.path().join("digits");
    write_idx(&data, "train", &px, &labels);
    // The test set: 30 other digits and copies of labelled images 10 and 20.
    let mut test_px: Vec<u8> = (1000..1030).flat_map(|i| d.image(i).to_vec()).collect();
    test_px.extend_from_slice(d.image(10));
    test_px.extend_from_slice(d.image(20));
    let test_labels: Vec<u8> = (1000..1030)
        .map(|i| d.label(i) as u8)
        .chain([d.label(10) as u8, d.label(20) as u8])
        .collect();
    write_idx(&data, "t10k", &test_px, &test_labels);

    let out = tmp.path().join("audit");
    let args = [
        "audit",
        "--data",
        s(&data),
        "--init",
        s(&pre),
        "--epochs",
        "2",
        "--folds",
        "3",
        "--seed",
        "3",
        "--out",
        s(&out),
    ];
    let said = ok(&args);
    assert!(said.contains("flagged in label_issues.csv"), "{said}");

    let images_file = data.join("train-images-idx3-ubyte.gz");
    let issues = csv_rows(&out.join("label_issues.csv"));
    assert!(!issues.is_empty());
    for r in &issues {
        assert_eq!(Path::new(&r["file"]), images_file);
        assert_ne!(r["given"], r["suggested"]);
    }
    let top: Vec<usize> = issues
        .iter()
        .take(flipped.len())
        .map(|r| r["index"].parse().unwrap())
        .collect();
    let hits = top.iter().filter(|i| flipped.contains(i)).count();
    assert!(
        hits * 2 >= flipped.len(),
        "only {hits} of the first {} flagged are flips: {top:?}",
        flipped.len()
    );
    // A flagged flip suggests the digit's true class.
    for r in issues.iter().take(flipped.len()) {
        let i: usize = r["index"].parse().unwrap();
        if flipped.contains(&i) {
            assert_eq!(r["given"], labels[i].to_string());
        }
    }

    let oof = csv_rows(&out.join("out_of_fold.csv"));
    assert_eq!(oof.len(), n);
    for (i, r) in oof.iter().enumerate() {
        assert_eq!(r["index"], i.to_string());
        assert_eq!(r["given"], labels[i].to_string());
        let sum: f64 = (0..10)
            .map(|c| r[&format!("p_{c}")].parse::<f64>().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 0.01, "row {i} sums to {sum}");
        assert!(["1", "2", "3"].contains(&r["fold"].as_str()));
    }

    let dups = csv_rows(&out.join("duplicates.csv"));
    let exact: HashSet<(String, String, String)> = dups
        .iter()
        .filter(|r| r["kind"] == "exact")
        .map(|r| {
            (
                r["between"].clone(),
                r["index"].clone(),
                r["other_index"].clone(),
            )
        })
        .collect();
    for want in [
        ("labelled", "5", "399"),
        ("labelled-test", "10", "30"),
        ("labelled-test", "20", "31"),
    ] {
        let want = (want.0.to_string(), want.1.to_string(), want.2.to_string());
        assert!(exact.contains(&want), "{want:?} not in {exact:?}");
    }
    let classes = csv_rows(&out.join("classes.csv"));
    assert_eq!(classes.len(), 10);
    let estimated: f64 = classes
        .iter()
        .map(|r| r["estimated_wrong"].parse::<f64>().unwrap())
        .sum();
    assert!(estimated > 0.0, "{classes:?}");
    // Each fold keeps its history, not its checkpoints.
    assert!(out.join("folds/fold-1/history.csv").is_file());
    assert!(!out.join("folds/fold-1/last.safetensors").exists());

    // The same command again would replace the results: refused, nothing changed.
    let before = std::fs::read(out.join("label_issues.csv")).unwrap();
    let err = fails(&args);
    assert!(
        err.contains("earlier audit") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("label_issues.csv")).unwrap(), before);

    let Some(browser) = browser_for_test() else {
        return;
    };
    let url = format!("file://{}", out.join("audit.html").display());
    let dom = headless(&browser, &tmp.path().join("profile"), &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let attr = |name: &str| -> usize {
        let key = format!("{name}=\"");
        let at = dom
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} in the page"));
        let rest = &dom[at + key.len()..];
        rest[..rest.find('"').unwrap()].parse().unwrap()
    };
    let total = attr("data-images-total");
    // Each flagged image, the three pairs' six images, and any outliers.
    assert!(total >= issues.len().min(200) + 6, "{total} images");
    assert_eq!(attr("data-images-loaded"), total, "not every image decoded");
    assert!(dom.contains("Likely wrong labels"));
}

#[test]
fn folder_images_are_named_by_file_and_ctrl_c_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = mnist_test_digits();
    let data = tmp.path().join("shapes");
    for i in 0..120 {
        let class = ["zero", "one", "two"][i % 3];
        let dir = data.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        // Digits 0, 1, 2 of the test file: the i-th image of its class.
        let wanted = (i % 3) as u32;
        let j = (0..d.len())
            .filter(|&j| d.label(j) == wanted)
            .nth(i / 3)
            .unwrap();
        image::GrayImage::from_raw(28, 28, d.image(j).to_vec())
            .unwrap()
            .save(dir.join(format!("{i:03}.png")))
            .unwrap();
    }
    let out = tmp.path().join("audit");
    let base = |epochs: &'static str| -> Vec<String> {
        [
            "audit",
            "--data",
            s(&data),
            "--init",
            "random",
            "--epochs",
            epochs,
            "--folds",
            "2",
            "--batch-size",
            "16",
            "--out",
            s(&out),
        ]
        .map(String::from)
        .to_vec()
    };
    // Interrupted in the first fold: no result file is written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_warmstart"))
        .args(base("400"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = ctrl_c_after_the_first_epoch(&mut child, &out.join("folds/fold-1"));
    assert!(!status.success());
    for f in warmstart::audit::FILES {
        assert!(!out.join(f).exists(), "{f} written by an interrupted audit");
    }
    // Run to the end (the interrupted fold starts again).
    let args = base("1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&args);
    let oof = csv_rows(&out.join("out_of_fold.csv"));
    assert_eq!(oof.len(), 120);
    let files: HashSet<PathBuf> = oof.iter().map(|r| PathBuf::from(&r["file"])).collect();
    assert_eq!(files.len(), 120);
    for r in &oof {
        let f = PathBuf::from(&r["file"]);
        assert!(f.is_file(), "{f:?}");
        assert_eq!(
            f.parent().unwrap().file_name().unwrap().to_str().unwrap(),
            r["given"]
        );
        assert_eq!(r["index"], "");
    }
}

#[test]
fn flags_an_audit_cannot_use_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a");
    for (flags, wants) in [
        (
            &["--limit", "50"][..],
            "--limit (it checks every labelled image)",
        ),
        (&["--val-split", "0.2"][..], "--val-split"),
        (&["--unlabeled", "data/fashion-pool"][..], "--unlabeled"),
        (&["--folds", "1"][..], "--folds must be at least 2"),
        (
            &["--folds", "2000"][..],
            "--folds 2000 is more than the 1500 labelled images",
        ),
        (
            &["--unlabeled-after", "2"][..],
            "--unlabeled-after (its folds train on the labelled images only)",
        ),
    ] {
        let mut args = vec!["audit", "--init", "random", "--out", s(&out)];
        args.extend_from_slice(flags);
        let err = fails(&args);
        assert!(err.contains(wants), "{flags:?}: {err}");
    }
    let err = fails(&["audit", "--data", "/no/such/dir", "--out", s(&out)]);
    assert!(err.contains("/no/such/dir"), "{err}");
    assert!(!out.join("label_issues.csv").exists());
}
