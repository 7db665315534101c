//! Helpers shared by the end-to-end tests: running the real binary, reading its output, and a
//! headless Chromium. Each test crate uses a subset, hence `dead_code` is allowed.
#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `warmstart` binary, run in the project root.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_warmstart"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

pub fn run(args: &[&str]) -> Output {
    run_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    run_with_env(dir, &[], args)
}

/// [`run_in`] with environment variables set for the binary (and what it starts).
pub fn run_with_env(dir: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let out = bin()
        .current_dir(dir)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("the binary runs");
    eprintln!(
        "$ warmstart {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "warmstart {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail, and returns its stderr.
pub fn fails(args: &[&str]) -> String {
    fails_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

pub fn fails_in(dir: &Path, args: &[&str]) -> String {
    let out = run_in(dir, args);
    assert!(
        !out.status.success(),
        "warmstart {args:?} should have failed"
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    err
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Parses the figure after `key` in `text`, e.g. `Accuracy on test (…): 0.9123`.
pub fn figure_after(text: &str, key: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.contains(key))
        .unwrap_or_else(|| panic!("no {key:?} in {text}"));
    let rest = &line[line.find(key).unwrap() + key.len()..];
    let rest = rest.rsplit(": ").next().unwrap_or(rest);
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// A 1-epoch pretraining on 300 MNIST images into `dir`: a checkpoint to start from, in seconds.
pub fn tiny_pretrain(dir: &Path) {
    ok(&[
        "pretrain",
        "--limit",
        "300",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--test-limit",
        "10",
        "--out",
        dir.to_str().unwrap(),
    ]);
}

/// A 1-epoch pretraining on the first `limit` MNIST images (batch 64) into `dir`: a model good
/// enough (~90%) that its answers are not near-ties, in a few seconds.
pub fn quick_pretrain(dir: &Path, limit: &str, test_limit: &str) {
    ok(&[
        "pretrain",
        "--limit",
        limit,
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--test-limit",
        test_limit,
        "--out",
        dir.to_str().unwrap(),
    ]);
}

/// A headless Chromium, if one is installed (`WARMSTART_CHROMIUM` overrides the search).
pub fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("WARMSTART_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

/// The browser for a test's browser half, or `None` to skip it — an error under
/// `WARMSTART_REQUIRE_BROWSER` (CI installs Chromium and sets it).
pub fn browser_for_test() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("WARMSTART_REQUIRE_BROWSER").is_none(),
            "WARMSTART_REQUIRE_BROWSER is set but no chromium was found"
        );
        eprintln!("skipped the browser half: no chromium here (CI installs it)");
    }
    found
}

pub fn headless(browser: &Path, profile: &Path, extra: &[&str], url: &str) -> Output {
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-quic".into(),
        format!("--user-data-dir={}", profile.display()),
        "--virtual-time-budget=10000".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url.to_string());
    Command::new(browser)
        .args(&args)
        .output()
        .expect("chromium runs")
}

/// Waits until the run in `dir` has finished an epoch (its history exists), presses Ctrl-C
/// (SIGINT) and returns how the process ended.
pub fn ctrl_c_after_the_first_epoch(
    child: &mut std::process::Child,
    dir: &Path,
) -> std::process::ExitStatus {
    let t0 = std::time::Instant::now();
    while !dir.join("history.csv").exists() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(120),
            "training never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    child.wait().unwrap()
}

/// MNIST's test digits, as bundled (the default pretraining saw only the training file).
pub fn mnist_test_digits() -> warmstart::data::Images {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    warmstart::data::idx::read_pair(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap()
}

/// The rows of a CSV file with a header, each as (column name → value).
pub fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            header
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

/// A headless Chromium driven over its DevTools protocol.
pub fn launch_browser(chromium: PathBuf) -> headless_chrome::Browser {
    headless_chrome::Browser::new(
        headless_chrome::LaunchOptions::default_builder()
            .path(Some(chromium))
            .sandbox(false)
            .headless(true)
            .idle_browser_timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// The `http://…` address in the first line a server prints (no trailing slash).
pub fn url_in_first_line(stdout: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches('/')
        .to_string()
}
