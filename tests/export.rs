//! `warmstart export`: the ONNX file passes the ONNX checker and onnxruntime gives the same
//! answers as warmstart on 1,000 MNIST test images.
//!
//! onnxruntime and onnx are Python packages: the test runs `$WARMSTART_PYTHON` (CI points it at a
//! virtual environment `.ci/run` makes), else `python3`. Without them the comparison is skipped
//! with a message, and fails under `WARMSTART_REQUIRE_ONNXRUNTIME` (CI sets it).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use warmstart::data::{LoadOptions, load};

const IMAGES: usize = 1000;

fn python_with_onnxruntime() -> Option<PathBuf> {
    let python = std::env::var_os("WARMSTART_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let has = Command::new(&python)
        .args(["-c", "import onnx, onnxruntime, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has {
        return Some(python);
    }
    assert!(
        std::env::var_os("WARMSTART_REQUIRE_ONNXRUNTIME").is_none(),
        "WARMSTART_REQUIRE_ONNXRUNTIME is set but {} cannot import onnx, onnxruntime and numpy",
        python.display()
    );
    eprintln!(
        "skipped the onnxruntime half: no Python with onnx and onnxruntime (CI installs them)"
    );
    None
}

#[test]
fn onnxruntime_agrees_with_warmstart_on_1000_test_images() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    quick_pretrain(&run, "3000", "1000");
    let onnx = tmp.path().join("model.onnx");
    let out = ok(&["export", "--model", s(&run), "--out", s(&onnx)]);
    assert!(out.contains("model.onnx"), "{out}");
    assert!(std::fs::metadata(&onnx).unwrap().len() > 1_000_000);

    // warmstart's own probabilities, from the library on the CPU's fused path.
    let device = burn::prelude::Device::flex();
    let (net, meta) = warmstart::checkpoint::load(&run, &device).unwrap();
    let mnist = load(&warmstart::bundled::dir("mnist"), &LoadOptions::default()).unwrap();
    let test = mnist.test.unwrap().truncate(IMAGES);
    let ours = warmstart::eval::predict_set(&net, &test, &device);
    assert!(
        ours.accuracy() > 0.8,
        "the model should be trained: {}",
        ours.accuracy()
    );

    let Some(python) = python_with_onnxruntime() else {
        return;
    };
    let images = tmp.path().join("images.f32");
    let pixels: Vec<u8> = test
        .pixels()
        .iter()
        .flat_map(|&p| (f32::from(p) / 255.0).to_le_bytes())
        .collect();
    std::fs::write(&images, pixels).unwrap();
    let probs_path = tmp.path().join("probs.f32");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnx-check.py");
    let checked = Command::new(&python)
        .arg(&script)
        .args([s(&onnx), s(&images), &IMAGES.to_string(), s(&probs_path)])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(
        checked.status.success(),
        "onnx-check.py failed: {report}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["classes"], serde_json::json!(meta.classes));
    assert_eq!(
        report["outputs"],
        serde_json::json!(["logits", "probabilities"])
    );
    assert!(report["softmax_gap"].as_f64().unwrap() < 1e-5, "{report}");

    let theirs: Vec<f32> = std::fs::read(&probs_path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let classes = meta.classes.len();
    assert_eq!(theirs.len(), IMAGES * classes);
    let mut worst = 0f32;
    for i in 0..IMAGES {
        let row = &theirs[i * classes..(i + 1) * classes];
        assert_eq!(
            warmstart::eval::argmax(row) as u32,
            ours.predicted(i),
            "image {i}: onnxruntime {row:?}, warmstart {:?}",
            ours.row(i)
        );
        for (a, b) in row.iter().zip(ours.row(i)) {
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!("largest probability difference over {IMAGES} images: {worst:e}");
    assert!(worst <= 1e-4, "probabilities differ by up to {worst}");
}

#[test]
fn export_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(&[
        "export",
        "--model",
        s(&tmp.path().join("nothing-here")),
        "--out",
        s(&tmp.path().join("m.onnx")),
    ]);
    assert!(err.contains("nothing-here"), "{err}");
    assert!(!tmp.path().join("m.onnx").exists());
    tiny_pretrain(&tmp.path().join("run"));
    let err = fails(&[
        "export",
        "--model",
        s(&tmp.path().join("run")),
        "--out",
        s(&tmp.path().join("no-such-dir/m.onnx")),
    ]);
    assert!(err.contains("no-such-dir"), "{err}");
}
