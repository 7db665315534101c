//! `--precision auto|fp32|bf16` end to end: what a run records, what `eval` computes in, what a
//! resumed run keeps, and the errors where bf16 cannot run.

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;

fn record_precision(run: &Path) -> String {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("best.json")).unwrap()).unwrap();
    meta["training"]["precision"].as_str().unwrap().to_string()
}

fn train(out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "pretrain",
        "--limit",
        "600",
        "--test-limit",
        "300",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

#[test]
fn the_run_records_the_precision_it_computed_in_and_says_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (auto, fp32) = (tmp.path().join("auto"), tmp.path().join("fp32"));
    let out = train(&auto, &[]);
    let expected = if warmstart::device::cpu_has_bf16() {
        "bf16"
    } else {
        "fp32"
    };
    assert_eq!(record_precision(&auto), expected);
    assert!(out.contains(&format!("{expected} multiplies")), "{out}");
    train(&fp32, &["--precision", "fp32"]);
    assert_eq!(record_precision(&fp32), "fp32");
    let report = std::fs::read_to_string(fp32.join("report.html")).unwrap();
    assert!(
        report.contains("fp32 multiplies"),
        "the report names the precision"
    );
    if expected == "bf16" {
        // Different arithmetic, different weights (same seed and data).
        let a = std::fs::read(auto.join("last.safetensors")).unwrap();
        let b = std::fs::read(fp32.join("last.safetensors")).unwrap();
        assert_ne!(a, b, "bf16 trained exactly as fp32");
    }
}

#[test]
fn bf16_where_it_cannot_run_is_a_clear_error_and_auto_falls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // burn's reference ops (the A/B switch) compute in f32 only.
    let err = String::from_utf8_lossy(
        &bin()
            .env("WARMSTART_REFERENCE_OPS", "1")
            .args([
                "pretrain",
                "--limit",
                "64",
                "--epochs",
                "1",
                "--precision",
                "bf16",
            ])
            .args(["--out", s(&out)])
            .output()
            .unwrap()
            .stderr,
    )
    .into_owned();
    assert!(
        err.contains("--precision bf16") && err.contains("fused CPU kernels"),
        "{err}"
    );
    assert!(!out.join("best.safetensors").exists());
    let run = bin()
        .env("WARMSTART_REFERENCE_OPS", "1")
        .args([
            "pretrain",
            "--limit",
            "64",
            "--test-limit",
            "64",
            "--epochs",
            "1",
        ])
        .args(["--batch-size", "32", "--out", s(&out)])
        .output()
        .unwrap();
    assert!(run.status.success());
    assert_eq!(record_precision(&out), "fp32");
    // The GPU path is f32 only, whatever the build.
    let err = fails(&[
        "eval",
        "--model",
        s(&out),
        "--device",
        "gpu",
        "--precision",
        "bf16",
    ]);
    assert!(err.contains("bf16") || err.contains("GPU"), "{err}");
}

#[test]
#[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
fn eval_computes_in_the_precision_asked_for() {
    assert!(
        warmstart::device::cpu_has_bf16(),
        "built for AVX512_BF16, run without it"
    );
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train(&run, &["--precision", "fp32"]);
    let accuracy = |p: &str| {
        let out = ok(&[
            "eval",
            "--model",
            s(&run),
            "--limit",
            "300",
            "--precision",
            p,
        ]);
        figure_after(&out, "Accuracy on test")
    };
    let (f, b) = (accuracy("fp32"), accuracy("bf16"));
    assert!((f - b).abs() <= 0.01, "fp32 {f}, bf16 {b}");
    // What `eval` does with each, through the library: the same network, different bits.
    let device = burn::prelude::Device::flex();
    let (net, _) = warmstart::checkpoint::load(&run, &device).unwrap();
    let opts = warmstart::data::LoadOptions::default();
    let mnist = warmstart::data::load(&warmstart::bundled::dir("mnist"), &opts).unwrap();
    let test = mnist.test.unwrap().truncate(300);
    let prec = |p| {
        let net = net.clone().with_precision(p);
        warmstart::eval::predict_set(&net, &test, &device)
    };
    let (p32, p16) = (
        prec(warmstart::device::Precision::Fp32),
        prec(warmstart::device::Precision::Bf16),
    );
    assert_ne!(p32.probs, p16.probs, "bf16 computed exactly as fp32");
    let worst = p32
        .probs
        .iter()
        .zip(&p16.probs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 0.05, "probabilities differ by up to {worst}");
    let agree = (0..300)
        .filter(|&i| p32.predicted(i) == p16.predicted(i))
        .count();
    assert!(agree >= 297, "{agree} of 300 predictions agree");
}

#[test]
#[cfg_attr(not(warmstart_bf16), ignore = "this CPU has no AVX512_BF16")]
fn a_resumed_run_keeps_its_precision() {
    assert!(
        warmstart::device::cpu_has_bf16(),
        "built for AVX512_BF16, run without it"
    );
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut child = bin()
        .args([
            "pretrain",
            "--limit",
            "2000",
            "--test-limit",
            "100",
            "--epochs",
            "60",
        ])
        .args([
            "--batch-size",
            "32",
            "--threads",
            "1",
            "--precision",
            "bf16",
        ])
        .args(["--out", s(&run)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = ctrl_c_after_the_first_epoch(&mut child, &run);
    assert_eq!(status.code(), Some(130));
    let out = run_in(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &[
            "pretrain",
            "--resume",
            s(&run),
            "--epochs",
            "2",
            "--precision",
            "fp32",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ignoring --precision"), "{err}");
    assert!(out.status.success());
    assert_eq!(record_precision(&run), "bf16");
}
