//! Robustness of the real binary: interruptions (SIGINT, SIGKILL) and resume, determinism,
//! numerical faults and a full disk. Training runs are tiny (a few batches per epoch).

mod common;
use common::ctrl_c_after_the_first_epoch;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_warmstart"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn show(args: &[&str], out: &Output) {
    eprintln!(
        "$ warmstart {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(args: &[&str]) -> Output {
    let out = bin().args(args).output().expect("the binary runs");
    show(args, &out);
    out
}

fn spawn(args: &[String]) -> Child {
    bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts")
}

/// A short pretraining run on fashion-1k (small files load fast): 8 batches per epoch.
fn tiny_args(out: &Path, epochs: usize) -> Vec<String> {
    [
        "pretrain",
        "--data",
        "data/fashion-1k",
        "--limit",
        "256",
        "--batch-size",
        "32",
        "--test-limit",
        "50",
        "--epochs",
        &epochs.to_string(),
        "--threads",
        "2",
        "--seed",
        "7",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn history_without_seconds(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("history.csv"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.remove(1);
            f.join(",")
        })
        .collect()
}

/// Every checkpoint file present in `dir` must be readable, whenever the run was killed.
fn assert_checkpoints_readable(dir: &Path) {
    for name in ["best.safetensors", "last.safetensors"] {
        let p = dir.join(name);
        if p.exists() && dir.join(name.replace("safetensors", "json")).exists() {
            warmstart::checkpoint::load(&p, &burn::prelude::Device::flex())
                .unwrap_or_else(|e| panic!("unreadable checkpoint after a kill: {e}"));
        }
    }
    if warmstart::train::resume::exists(dir) {
        warmstart::train::resume::load(dir)
            .unwrap_or_else(|e| panic!("unreadable resume state: {e}"));
    }
}

#[test]
fn same_seed_same_bits_and_sigkill_resume_reaches_them() {
    let tmp = tempfile::tempdir().unwrap();
    let epochs = 3;
    // Two uninterrupted runs: bit-identical weights and identical histories.
    let refs: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("ref{i}"))).collect();
    for r in &refs {
        let a = tiny_args(r, epochs);
        let out = bin().args(&a).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bytes = |d: &Path| std::fs::read(d.join("last.safetensors")).unwrap();
    assert_eq!(
        bytes(&refs[0]),
        bytes(&refs[1]),
        "same seed, different weights"
    );
    assert_eq!(
        history_without_seconds(&refs[0]),
        history_without_seconds(&refs[1])
    );

    // Kill with SIGKILL at random moments, resuming each time, until the run completes.
    let run_dir = tmp.path().join("killed");
    let mut kills = 0;
    // The kill times come from a seed that is printed, so a failure can be replayed with
    // WARMSTART_KILL_SEED=<seed>.
    let seed: u64 = match std::env::var("WARMSTART_KILL_SEED") {
        Ok(s) => s.parse().expect("WARMSTART_KILL_SEED is a whole number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("kill times from WARMSTART_KILL_SEED={seed}");
    let mut rng_state = seed | 1;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts < 200, "the run never completed");
        // Killed before its first resumable state, a new run may have left files: start over.
        let mut args = tiny_args(&run_dir, epochs);
        args.push("--overwrite".into());
        if warmstart::train::resume::exists(&run_dir) {
            args = vec![
                "pretrain".into(),
                "--threads".into(),
                "2".into(),
                "--resume".into(),
                run_dir.to_str().unwrap().into(),
            ];
        }
        let mut child = spawn(&args);
        if kills < 20 {
            // Anywhere from start-up to the end of a short run.
            std::thread::sleep(Duration::from_millis(50 + next() % 2000));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                assert_checkpoints_readable(&run_dir);
                continue;
            }
        }
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "run failed after {kills} kills (WARMSTART_KILL_SEED={seed}): {status}"
        );
        if kills >= 20 {
            break;
        }
        // Finished before 20 kills: start over to kill it more.
        std::fs::remove_dir_all(&run_dir).unwrap();
    }
    assert_checkpoints_readable(&run_dir);
    assert_eq!(
        bytes(&run_dir),
        bytes(&refs[0]),
        "weights after {kills} kills and resumes differ from an uninterrupted run (WARMSTART_KILL_SEED={seed})"
    );
    assert_eq!(
        history_without_seconds(&run_dir),
        history_without_seconds(&refs[0])
    );
}

#[test]
fn sigint_saves_state_and_resume_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut child = bin()
        .args(tiny_args(&dir, 40))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let status = ctrl_c_after_the_first_epoch(&mut child, &dir);
    assert_eq!(status.code(), Some(130), "Ctrl-C should exit with 130");
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(
        err.contains(&format!("`warmstart pretrain --resume {}`", dir.display())),
        "the message gives the whole command: {err}"
    );
    let saved = warmstart::train::resume::load(&dir).unwrap();
    assert!(saved.state.epoch < 40);
    let args = [
        "pretrain",
        "--resume",
        dir.to_str().unwrap(),
        "--epochs",
        &(saved.state.epoch + 1).to_string(),
    ];
    let out = run(&args);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Resuming"), "{stdout}");
    assert!(stdout.contains("Test accuracy:"), "{stdout}");
}

/// Ctrl-C inside the first epoch, before any epoch has a validation accuracy, still leaves a state
/// that resumes, and the resumed run ends with the bits of an uninterrupted one — at ten points
/// spread over the first epoch (0 to 270 ms after its first batch starts; the epoch takes about
/// 0.6 s on a 2-core machine).
#[test]
fn ctrl_c_in_the_first_epoch_resumes_bit_identically() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let args = |out: &Path| -> Vec<String> {
        let mut a = tiny_args(out, 2);
        // ~113 batches an epoch, so that every interruption lands inside the first.
        for (flag, value) in [("--limit", "1024"), ("--batch-size", "8")] {
            let i = a.iter().position(|x| x == flag).unwrap();
            a[i + 1] = value.into();
        }
        a
    };
    let whole = tmp.path().join("whole");
    assert!(
        run(&args(&whole).iter().map(String::as_str).collect::<Vec<_>>())
            .status
            .success()
    );
    let mut batches_done = Vec::new();
    for k in 0..10u64 {
        let cut = tmp.path().join(format!("cut-{k}"));
        let mut child = bin()
            .args(args(&cut))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        // The line just before the first batch.
        for line in lines.by_ref() {
            if line.unwrap().starts_with("Training ") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(30 * k));
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        lines.for_each(drop);
        assert_eq!(child.wait().unwrap().code(), Some(130), "point {k}");
        let saved = warmstart::train::resume::load(&cut).unwrap();
        assert_eq!(
            saved.state.epoch, 0,
            "point {k}: interrupted after the first epoch"
        );
        assert_eq!(saved.state.best_acc, None);
        batches_done.push(saved.state.batch);
        let out = run(&["pretrain", "--resume", cut.to_str().unwrap()]);
        assert!(out.status.success(), "point {k}");
        for f in ["best.safetensors", "last.safetensors"] {
            assert!(
                std::fs::read(whole.join(f)).unwrap() == std::fs::read(cut.join(f)).unwrap(),
                "point {k}: {f} differs from the uninterrupted run's"
            );
        }
    }
    eprintln!("interrupted after batches {batches_done:?} of the first epoch");
    batches_done.dedup();
    assert!(
        batches_done.len() > 1,
        "every interruption hit the same batch"
    );
}

/// A run whose data folder moved resumes with `--data` pointing at the new place, once the images
/// there are the same; without it, the error says how.
#[test]
fn a_resume_follows_moved_data_with_the_same_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-1k");
    for e in std::fs::read_dir(&bundled).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, data.join(p.file_name().unwrap())).unwrap();
    }
    let dir = tmp.path().join("run");
    let mut args = tiny_args(&dir, 40);
    let i = args.iter().position(|a| a == "--data").unwrap();
    args[i + 1] = data.to_str().unwrap().into();
    let mut child = spawn(&args);
    assert_eq!(
        ctrl_c_after_the_first_epoch(&mut child, &dir).code(),
        Some(130)
    );
    let moved = tmp.path().join("moved");
    std::fs::rename(&data, &moved).unwrap();
    let resume = |extra: &[&str]| {
        let mut a = vec![
            "pretrain",
            "--resume",
            dir.to_str().unwrap(),
            "--epochs",
            "2",
        ];
        a.extend(extra);
        run(&a)
    };
    let lost = resume(&[]);
    let err = String::from_utf8_lossy(&lost.stderr);
    assert!(!lost.status.success());
    assert!(
        err.contains("is not there any more") && err.contains("--data"),
        "{err}"
    );
    // Other images under the new path are refused by their fingerprint.
    let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let wrong = resume(&["--data", other.to_str().unwrap()]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("the data changed"));
    let found = resume(&["--data", moved.to_str().unwrap()]);
    assert!(
        found.status.success(),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
    assert!(!String::from_utf8_lossy(&found.stderr).contains("ignoring"));
}

#[test]
fn non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    let dir = tmp.path().join("run");
    // A short pretraining, then training from it with a learning rate that blows the weights up.
    let a = tiny_args(&pre, 1);
    assert!(bin().args(&a).output().unwrap().status.success());
    let args = [
        "train",
        "--data",
        "data/fashion-1k",
        "--limit",
        "256",
        "--epochs",
        "3",
        "--lr",
        "1e38",
        "--init",
        pre.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ];
    let out = run(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loss became"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Either the blow-up came in the first epoch (no checkpoint yet, and the message says so) or
    // later (the message names the checkpoint of the last finite epoch, which loads and is
    // finite); the pretrained checkpoint it started from is untouched.
    if dir.join("last.safetensors").exists() {
        assert!(err.contains("last good checkpoint"), "{err}");
        let (m, _) = warmstart::checkpoint::load(&dir, &burn::prelude::Device::flex()).unwrap();
        let w: Vec<f32> = m.fc1.weight.val().into_data().iter::<f32>().collect();
        assert!(w.iter().all(|v| v.is_finite()));
    } else {
        assert!(err.contains("no checkpoint was saved"), "{err}");
    }
    assert!(warmstart::checkpoint::load(&pre, &burn::prelude::Device::flex()).is_ok());
}

#[test]
fn a_full_disk_keeps_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let a = tiny_args(&dir, 1);
    assert!(bin().args(&a).output().unwrap().status.success());
    let before = std::fs::read(dir.join("best.safetensors")).unwrap();
    // File writes over 1 MiB fail (as on a full disk); the checkpoint is ~4.8 MB.
    let cmd = format!(
        "trap '' XFSZ; ulimit -f 1024; exec '{}' pretrain --data data/fashion-1k --limit 256 --epochs 1 --init '{}' --out '{}'",
        env!("CARGO_BIN_EXE_warmstart"),
        dir.display(),
        dir.display()
    );
    let out = Command::new("bash")
        .args(["-c", &cmd])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    show(&["(1 MiB file limit) pretrain ..."], &out);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(".safetensors") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("best.safetensors")).unwrap(), before);
    warmstart::checkpoint::load(&dir, &burn::prelude::Device::flex()).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn unwritable_output_directory_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out_dir = file.join("sub");
    let a = tiny_args(&out_dir, 1);
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = run(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a-file") && !err.contains("panicked"), "{err}");
}

/// A run with a schedule, label smoothing, early stopping and clean last epochs, interrupted with
/// Ctrl-C and resumed, ends with the bits of an uninterrupted one (the per-step rates and the
/// augmentation are functions of the step and the epoch, and the stop decision is saved with the
/// state).
#[test]
fn a_resumed_run_with_a_schedule_ends_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = [
        "--schedule",
        "onecycle",
        "--label-smoothing",
        "0.1",
        "--patience",
        "3",
        "--clean-epochs",
        "2",
    ];
    let whole = tmp.path().join("whole");
    let mut a = tiny_args(&whole, 6);
    a.extend(extra.iter().map(|s| s.to_string()));
    assert!(bin().args(&a).output().unwrap().status.success());

    let cut = tmp.path().join("cut");
    let mut a = tiny_args(&cut, 6);
    a.extend(extra.iter().map(|s| s.to_string()));
    let mut child = spawn(&a);
    let status = ctrl_c_after_the_first_epoch(&mut child, &cut);
    if status.code() == Some(130) {
        let out = run(&[
            "pretrain",
            "--resume",
            cut.to_str().unwrap(),
            "--threads",
            "2",
        ]);
        assert!(out.status.success());
    } else {
        assert!(status.success(), "{status}");
    }
    let bytes = |d: &Path| std::fs::read(d.join("last.safetensors")).unwrap();
    assert_eq!(bytes(&cut), bytes(&whole), "weights differ after a resume");
    assert_eq!(
        history_without_seconds(&cut),
        history_without_seconds(&whole)
    );
}

/// A `--time` run interrupted and resumed keeps the epochs it recorded (it does not time itself
/// again) and ends with the bits of an uninterrupted run of those epochs.
#[test]
fn a_time_budget_run_resumes_with_its_recorded_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    // 8 batches an epoch (about 0.2 s on an idle 2-core machine): dozens of epochs in the budget,
    // still several when the other tests load the machine while it times itself.
    let args = |out: &Path, length: [&str; 2]| -> Vec<String> {
        let mut a = tiny_args(out, 1);
        let i = a.iter().position(|x| x == "--epochs").unwrap();
        a.splice(i..i + 2, length.map(String::from));
        a
    };
    let cut = tmp.path().join("cut");
    let mut child = bin()
        .args(args(&cut, ["--time", "25s"]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let status = ctrl_c_after_the_first_epoch(&mut child, &cut);
    assert_eq!(status.code(), Some(130), "Ctrl-C should exit with 130");
    let saved = warmstart::train::resume::load(&cut).unwrap();
    let epochs = saved.state.record.epochs;
    assert!(
        saved.state.epoch < epochs,
        "the run ended before Ctrl-C ({epochs} epochs)"
    );
    let out = run(&["pretrain", "--resume", cut.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("Time budget"),
        "the resumed run timed itself: {stdout}"
    );
    let whole = tmp.path().join("whole");
    let n = epochs.to_string();
    let out = bin().args(args(&whole, ["--epochs", &n])).output().unwrap();
    assert!(out.status.success());
    let bytes = |d: &Path| std::fs::read(d.join("last.safetensors")).unwrap();
    assert!(
        bytes(&cut) == bytes(&whole),
        "--time resumed differs from --epochs {n}"
    );
    assert_eq!(
        history_without_seconds(&cut),
        history_without_seconds(&whole)
    );
}
