//! Semi-supervised training (`--unlabeled`): the pool trains, its labels never reach the loss,
//! its figures are reported, an interrupted run resumes to the same bits, and bad pools are
//! refused naming the path.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use warmstart::data::{LoadOptions, idx, load};

/// A pool of `n` Fashion-MNIST test images as an IDX directory with `labels` (or none).
fn pool_dir(dir: &Path, n: usize, labels: Option<fn(u32) -> u32>) -> PathBuf {
    let d = load(Path::new("data/fashion-1k"), &LoadOptions::default()).unwrap();
    let test = d.test.unwrap();
    std::fs::create_dir_all(dir).unwrap();
    // Test images the runs do not score (they keep the first 50 at most): a pool holding the
    // scored ones would have them left out.
    let px: Vec<u8> = (0..n).flat_map(|i| test.image(5000 + i).to_vec()).collect();
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        idx::gzip(&idx::encode(&[n, 28, 28], &px)),
    )
    .unwrap();
    if let Some(f) = labels {
        let l: Vec<u8> = (0..n).map(|i| f(test.label(5000 + i)) as u8).collect();
        std::fs::write(
            dir.join("train-labels-idx1-ubyte.gz"),
            idx::gzip(&idx::encode(&[n], &l)),
        )
        .unwrap();
    }
    dir.to_path_buf()
}

/// A short pretraining on fashion-1k: 4 labelled batches of 32 an epoch.
fn args(out: &Path, pool: Option<&Path>, batch: &str) -> Vec<String> {
    let mut a: Vec<String> = [
        "pretrain",
        "--data",
        "data/fashion-1k",
        "--limit",
        "144",
        "--batch-size",
        batch,
        "--test-limit",
        "50",
        "--epochs",
        "2",
        "--threads",
        "2",
        "--seed",
        "5",
        "--out",
        s(out),
    ]
    .map(String::from)
    .to_vec();
    if let Some(p) = pool {
        // Every prediction confident: every pool image learns its pseudo-label, so labels
        // that leaked into the loss would change the weights.
        for w in [
            "--unlabeled",
            s(p),
            "--threshold",
            "0.05",
            "--unlabeled-ratio",
            "2",
        ] {
            a.push(w.into());
        }
    }
    a
}

/// `args` at threshold 0.2 over 3 epochs: the first epoch has few pseudo-labels and uneven
/// classes, so the later epochs' per-class thresholds differ from the fixed one.
fn per_class_setting(mut a: Vec<String>) -> Vec<String> {
    for (flag, value) in [("--threshold", "0.2"), ("--epochs", "3")] {
        let at = a.iter().position(|w| w == flag).unwrap();
        a[at + 1] = value.into();
    }
    a
}

/// Each epoch's share of confident pool images (history.csv's pool_confident).
fn csv_confident(dir: &Path) -> Vec<f64> {
    let h = std::fs::read_to_string(dir.join("history.csv")).unwrap();
    let mut lines = h.lines();
    let col = lines
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == "pool_confident")
        .unwrap();
    lines
        .map(|l| l.split(',').nth(col).unwrap().parse().unwrap())
        .collect()
}

fn checkpoints(dir: &Path) -> Vec<Vec<u8>> {
    ["best.safetensors", "last.safetensors"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect()
}

#[test]
fn the_pool_trains_and_its_labels_never_reach_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let right = pool_dir(&t.join("pool-right"), 300, Some(|l| l));
    let wrong = pool_dir(&t.join("pool-wrong"), 300, Some(|l| (l + 3) % 10));
    let bare = pool_dir(&t.join("pool-bare"), 300, None);
    let mut outs = Vec::new();
    for (name, pool) in [
        ("right", Some(&right)),
        ("wrong", Some(&wrong)),
        ("bare", Some(&bare)),
        ("none", None),
    ] {
        let out = t.join(name);
        let a = args(&out, pool.map(PathBuf::as_path), "32");
        let text = ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        outs.push((out, text));
    }
    // The same pool with the pseudo-labels as predicted rather than aligned to the class shares.
    let unaligned = t.join("unaligned");
    let mut a = args(&unaligned, Some(&right), "32");
    a.extend(["--align", "none"].map(String::from));
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        checkpoints(&unaligned) != checkpoints(&outs[0].0),
        "--align changed nothing"
    );
    // The pool's loss at half weight: other weights, and the weight said where the pool is.
    let half = t.join("half");
    let mut a = args(&half, Some(&right), "32");
    a.extend(["--unlabeled-weight", "0.5"].map(String::from));
    let half_text = ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        checkpoints(&half) != checkpoints(&outs[0].0),
        "--unlabeled-weight changed nothing"
    );
    assert!(half_text.contains("loss weight 0.5"), "{half_text}");
    // The pool from the second epoch on: the first trains exactly as the labels alone do (its
    // figures are the labels-only run's), the second learns pool images.
    let late = t.join("late");
    let mut a = args(&late, Some(&right), "32");
    a.extend(["--unlabeled-after", "1"].map(String::from));
    let late_text = ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(late_text.contains("from epoch 2"), "{late_text}");
    let confident = csv_confident(&late);
    assert!(confident[0] == 0.0 && confident[1] > 0.5, "{confident:?}");
    let epoch_figures = |dir: &Path, row: usize| -> Vec<String> {
        let h = std::fs::read_to_string(dir.join("history.csv")).unwrap();
        let line = h.lines().nth(row).unwrap().to_string();
        // loss, acc, val_loss, val_acc (the epoch's seconds differ between runs).
        line.split(',').skip(2).take(4).map(String::from).collect()
    };
    assert_eq!(epoch_figures(&late, 1), epoch_figures(&outs[3].0, 1));
    assert_ne!(epoch_figures(&late, 2), epoch_figures(&outs[3].0, 2));
    assert!(checkpoints(&late) != checkpoints(&outs[0].0));
    // Per-class thresholds: after an epoch with pseudo-labels, the classes that got the fewest
    // get lower thresholds, so more pool images are learned than at one fixed threshold (three
    // epochs: at 0.2 the first has almost none).
    let mut per_class = Vec::new();
    for mode in ["fixed", "per-class"] {
        let out = t.join(mode);
        let mut a = per_class_setting(args(&out, Some(&right), "32"));
        a.extend(["--threshold-rule", mode].map(String::from));
        let text = ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        per_class.push((checkpoints(&out), text, csv_confident(&out)));
    }
    let (fixed, flex) = (&per_class[0], &per_class[1]);
    assert!(fixed.0 != flex.0, "--thresholds per-class changed nothing");
    assert!(flex.1.contains("(per class)") && !fixed.1.contains("(per class)"));
    // The first two epochs are the same; the third learns from more pool images.
    assert_eq!(fixed.2[..2], flex.2[..2]);
    assert!(flex.2[2] > fixed.2[2], "{:?} {:?}", fixed.2, flex.2);
    let bits: Vec<_> = outs.iter().map(|(o, _)| checkpoints(o)).collect();
    assert!(bits[0] == bits[1], "the pool's labels changed the weights");
    assert!(
        bits[0] == bits[2],
        "a pool without labels trained differently"
    );
    assert!(bits[0] != bits[3], "the pool changed nothing");
    // Reported: the confident share and, when the pool has labels, the pseudo-labels' accuracy.
    let (right_text, bare_text) = (&outs[0].1, &outs[2].1);
    assert!(right_text.contains("Unlabeled: ") && right_text.contains("300 images"));
    assert!(
        right_text.contains("- pool: 1.00 confident, pseudo_acc: "),
        "{right_text}"
    );
    assert!(
        bare_text.contains("- pool: 1.00 confident, classes"),
        "{bare_text}"
    );
    let csv = |o: &Path| std::fs::read_to_string(o.join("history.csv")).unwrap();
    let (h_right, h_wrong) = (csv(&outs[0].0), csv(&outs[1].0));
    assert!(
        h_right
            .lines()
            .next()
            .unwrap()
            .contains(",pool_confident,pseudo_acc,pseudo_share_0")
    );
    let acc = |h: &str| -> f64 {
        h.lines()
            .last()
            .unwrap()
            .split(',')
            .nth(7)
            .unwrap()
            .parse()
            .unwrap()
    };
    // The same pseudo-labels, measured against right and shifted labels.
    assert!(acc(&h_right) > acc(&h_wrong), "{h_right}\n{h_wrong}");
    // The report names the pool, and the curves get a third panel for it.
    let report = std::fs::read_to_string(outs[0].0.join("report.html")).unwrap();
    assert!(report.contains("Unlabelled pool") && report.contains("pool-right"));
    let width = |o: &Path| {
        let png = std::fs::read(o.join("curves.png")).unwrap();
        u32::from_be_bytes(png[16..20].try_into().unwrap())
    };
    assert_eq!((width(&outs[0].0), width(&outs[3].0)), (1800, 1200));
    // The run record keeps the pool.
    let meta = std::fs::read_to_string(outs[0].0.join("best.json")).unwrap();
    assert!(
        meta.contains("pool-right")
            && meta.contains("\"count\": 300")
            && meta.contains("\"align\": \"classes\"")
            && meta.contains("\"thresholds\": \"per-class\""),
        "{meta}"
    );
}

#[test]
fn an_interrupted_run_with_a_pool_resumes_to_the_same_bits() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let pool = pool_dir(&tmp.path().join("pool"), 200, None);
    // The later epochs' per-class thresholds come from the earlier epochs' pseudo-labels, which a
    // resumed run reads back from its history.
    let run = |out: &Path| per_class_setting(args(out, Some(&pool), "8"));
    let whole = tmp.path().join("whole");
    let a = run(&whole);
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    for (k, wait) in [150u64, 600].into_iter().enumerate() {
        let cut = tmp.path().join(format!("cut-{k}"));
        let mut child = bin()
            .args(run(&cut))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            if line.unwrap().starts_with("Training ") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(wait));
        assert!(
            Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        lines.for_each(drop);
        assert_eq!(child.wait().unwrap().code(), Some(130), "point {k}");
        let saved = warmstart::train::resume::load(&cut).unwrap();
        eprintln!(
            "point {k}: interrupted in epoch {}, after batch {}",
            saved.state.epoch + 1,
            saved.state.batch
        );
        if k == 0 {
            ok(&["pretrain", "--resume", s(&cut)]);
        } else {
            // The pool moved meanwhile: the resume names the way to follow it, and follows it.
            let moved = tmp.path().join("pool-moved");
            std::fs::rename(&pool, &moved).unwrap();
            let err = fails(&["pretrain", "--resume", s(&cut)]);
            assert!(
                err.contains("unlabelled pool") && err.contains("--unlabeled NEW_PATH"),
                "{err}"
            );
            // Another pool is refused by its fingerprint.
            let other = pool_dir(&tmp.path().join("other"), 199, None);
            let err = fails(&["pretrain", "--resume", s(&cut), "--unlabeled", s(&other)]);
            assert!(err.contains("the unlabelled pool changed"), "{err}");
            let out = run_in(
                Path::new(env!("CARGO_MANIFEST_DIR")),
                &["pretrain", "--resume", s(&cut), "--unlabeled", s(&moved)],
            );
            assert!(out.status.success());
            assert!(!String::from_utf8_lossy(&out.stderr).contains("ignoring"));
        }
        assert!(
            checkpoints(&whole) == checkpoints(&cut),
            "point {k}: the resumed run's checkpoints differ"
        );
        let h = |d: &Path| {
            std::fs::read_to_string(d.join("history.csv"))
                .unwrap()
                .lines()
                .map(|l| {
                    let mut f: Vec<&str> = l.split(',').collect();
                    f.remove(1);
                    f.join(",")
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(h(&whole), h(&cut), "point {k}: the pool's figures differ");
    }
}

#[test]
fn bad_pools_and_pool_flags_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let base = |extra: &[&str]| -> String {
        let mut a = vec![
            "pretrain",
            "--data",
            "data/fashion-1k",
            "--limit",
            "64",
            "--epochs",
            "1",
            "--out",
            s(&out),
        ];
        a.extend_from_slice(extra);
        fails(&a)
    };
    let e = base(&["--unlabeled", "/no/such/pool"]);
    assert!(e.contains("/no/such/pool"), "{e}");
    let junk = tmp.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("a.png"), "not a png").unwrap();
    let e = base(&["--unlabeled", s(&junk)]);
    assert!(e.contains("junk") && e.contains("no readable image"), "{e}");
    assert!(e.contains("a.png: not an image in a known format"), "{e}");
    let e = base(&["--threshold", "0.5"]);
    assert!(e.contains("--unlabeled"), "{e}");
    let e = base(&["--align", "none"]);
    assert!(
        e.contains("--align") && e.contains("--unlabeled PATH"),
        "{e}"
    );
    let e = base(&["--unlabeled", "x", "--thresholds", "each"]);
    assert!(e.contains("each") && e.contains("per-class"), "{e}");
    let e = base(&["--unlabeled", "x", "--align", "sideways"]);
    assert!(e.contains("sideways") && e.contains("classes"), "{e}");
    let pool = pool_dir(&tmp.path().join("pool"), 10, None);
    let e = base(&["--unlabeled", s(&pool), "--threshold", "1.5"]);
    assert!(e.contains("--threshold"), "{e}");
    let e = base(&["--unlabeled", s(&pool), "--unlabeled-ratio", "0"]);
    assert!(e.contains("--unlabeled-ratio"), "{e}");
    assert!(!out.join("best.safetensors").exists());
}

/// A pool that holds the scored test images and validation images: they are left out, said by
/// count, and the run trains on the rest; a pool of nothing but labelled images is refused.
#[test]
fn labelled_images_in_the_pool_are_left_out_and_said() {
    let tmp = tempfile::tempdir().unwrap();
    let d = load(Path::new("data/fashion-1k"), &LoadOptions::default()).unwrap();
    let test = d.test.as_ref().unwrap();
    // 6 of the 50 scored test images, 2 validation images, 14 images of no part.
    let mut px: Vec<u8> = (0..6).flat_map(|i| test.image(i).to_vec()).collect();
    px.extend((0..2).flat_map(|i| d.val.image(i).to_vec()));
    px.extend((0..14).flat_map(|i| test.image(6000 + i).to_vec()));
    let pool = tmp.path().join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    std::fs::write(
        pool.join("train-images-idx3-ubyte.gz"),
        idx::gzip(&idx::encode(&[22, 28, 28], &px)),
    )
    .unwrap();
    let a = args(&tmp.path().join("run"), Some(&pool), "32");
    let out = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("holds 8 image(s) identical to labelled ones (2 val, 6 test)"),
        "{stderr}"
    );
    assert!(stdout.contains("14 images"), "{stdout}");
    // Only labelled images: nothing to learn from.
    let only = tmp.path().join("only");
    std::fs::create_dir_all(&only).unwrap();
    std::fs::write(
        only.join("train-images-idx3-ubyte.gz"),
        idx::gzip(&idx::encode(&[6, 28, 28], &px[..6 * 784])),
    )
    .unwrap();
    let a = args(&tmp.path().join("run2"), Some(&only), "32");
    let err = fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("every image of the unlabelled pool is also a labelled image"),
        "{err}"
    );
}
