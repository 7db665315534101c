//! `compare` and `audit` on other engines: `--on list` run by GNU parallel, and `--on slurm` on a
//! real single-node Slurm cluster started by the test (`scripts/slurm-local.sh`: munged,
//! slurmctld and slurmd). Each must give the local command's table and checkpoints bit for bit
//! (same seeds, same threads); a task cancelled mid-run is finished by running the command again.
//! Where Slurm or GNU parallel is missing (or the tests do not run as root, which the daemons
//! need), the tests are reported as ignored (see build.rs).

mod common;

use common::{run_in, s};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn data() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/fashion-1k")
        .display()
        .to_string()
}

/// A comparison of 2 variants x 2 seeds, a few batches each.
fn compare_args(out: &str) -> Vec<String> {
    let d = data();
    [
        "compare",
        "--data",
        &d,
        "--limit",
        "100",
        "--test-limit",
        "50",
        "--epochs",
        "1",
        "--seeds",
        "2",
        "--variant",
        "base=",
        "--variant",
        "lr3=--lr 0.003",
        "--out",
        out,
        "--threads",
        "1",
    ]
    .map(String::from)
    .to_vec()
}

fn audit_args(out: &str) -> Vec<String> {
    let d = data();
    [
        "audit",
        "--data",
        &d,
        "--folds",
        "3",
        "--epochs",
        "1",
        "--out",
        out,
        "--threads",
        "1",
    ]
    .map(String::from)
    .to_vec()
}

fn with<'a>(args: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    args.iter()
        .map(String::as_str)
        .chain(more.iter().copied())
        .collect()
}

fn ok_in(dir: &Path, args: &[&str]) -> String {
    let out = run_in(dir, args);
    assert!(out.status.success(), "warmstart {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// compare.csv without its seconds and run columns.
fn table(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("compare.csv")).unwrap();
    text.lines()
        .map(|l| l.split(',').take(7).collect::<Vec<_>>().join(","))
        .collect()
}

/// Every cell's checkpoints are the same bits in both comparisons.
fn same_checkpoints(a: &Path, b: &Path, cells: &[&str]) {
    for c in cells {
        for f in ["best.safetensors", "last.safetensors"] {
            let x = std::fs::read(a.join(c).join(f)).unwrap();
            let y = std::fs::read(b.join(c).join(f)).unwrap();
            assert!(
                x == y,
                "{c}/{f} differs between {} and {}",
                a.display(),
                b.display()
            );
        }
    }
}

const CELLS: [&str; 4] = ["base/seed-1", "base/seed-2", "lr3/seed-1", "lr3/seed-2"];
const AUDIT_FILES: [&str; 5] = [
    "label_issues.csv",
    "classes.csv",
    "duplicates.csv",
    "outliers.csv",
    "out_of_fold.csv",
];

#[test]
#[cfg_attr(
    not(warmstart_parallel),
    ignore = "needs GNU parallel (/usr/bin/parallel; apt-get install parallel)"
)]
fn a_listed_comparison_run_by_gnu_parallel_gives_the_local_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok_in(dir, &with(&compare_args("local"), &[]));
    let list = ok_in(dir, &with(&compare_args("listed"), &["--on", "list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 6, "{list}");
    for (line, cell) in lines.iter().zip(CELLS) {
        assert!(
            line.contains(&format!("--cell {cell} --threads 1")),
            "{line}"
        );
    }
    // The collecting command comes last, as a comment: parallel skips it.
    assert!(
        lines[5].starts_with("# ") && !lines[5].contains("--cell"),
        "{list}"
    );
    std::fs::write(dir.join("runs.txt"), &list).unwrap();
    let status = Command::new("parallel")
        .args(["-j", "2", "--halt", "now,fail=1", "--arg-file", "runs.txt"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        !dir.join("listed/compare.csv").exists(),
        "the runs wrote the table"
    );
    // Everything is finished: the list holds only the collecting command.
    let again = ok_in(dir, &with(&compare_args("listed"), &["--on", "list"]));
    assert_eq!(again.lines().count(), 2, "{again}");
    ok_in(dir, &with(&compare_args("listed"), &[]));
    assert_eq!(table(&dir.join("local")), table(&dir.join("listed")));
    same_checkpoints(&dir.join("local"), &dir.join("listed"), &CELLS);

    // An audit's folds likewise.
    ok_in(dir, &with(&audit_args("audit-local"), &[]));
    let list = ok_in(dir, &with(&audit_args("audit-listed"), &["--on", "list"]));
    assert_eq!(
        list.lines().filter(|l| !l.starts_with('#')).count(),
        3,
        "{list}"
    );
    std::fs::write(dir.join("folds.txt"), &list).unwrap();
    let status = Command::new("parallel")
        .args(["-j", "2", "--halt", "now,fail=1", "--arg-file", "folds.txt"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success());
    let out = ok_in(dir, &with(&audit_args("audit-listed"), &[]));
    assert!(out.contains("fold 3/3"), "{out}");
    for f in AUDIT_FILES {
        let a = std::fs::read(dir.join("audit-local").join(f)).unwrap();
        let b = std::fs::read(dir.join("audit-listed").join(f)).unwrap();
        assert!(a == b, "{f} differs");
    }
}

#[test]
fn engine_flags_are_checked_and_a_dry_run_writes_the_scripts_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let args = compare_args("c");
    let err = common::fails_in(dir, &with(&args, &["--dry-run"]));
    assert!(
        err.contains("--dry-run only apply with --on slurm"),
        "{err}"
    );
    let err = common::fails_in(dir, &with(&args, &["--cell", "base/seed-9"]));
    assert!(
        err.contains("--cell \"base/seed-9\" is not a run of this comparison")
            && err.contains("lr3/seed-2"),
        "{err}"
    );
    let err = common::fails_in(
        dir,
        &with(&args, &["--cell", "base/seed-1", "--on", "list"]),
    );
    assert!(err.contains("without --on"), "{err}");
    let err = common::fails_in(dir, &with(&audit_args("a"), &["--fold", "4"]));
    assert!(
        err.contains("--fold 4 is not a fold of this audit: give 1 to 3"),
        "{err}"
    );
    // Without sbatch on the PATH: a dry run needs none and submits nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_warmstart"))
        .env("PATH", "/nonexistent")
        .current_dir(dir)
        .args(with(
            &args,
            &["--on", "slurm", "--dry-run", "--slurm-arg=--partition=cpu"],
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let slurm = dir.join("c/slurm");
    let runs = std::fs::read_to_string(slurm.join("runs.sbatch")).unwrap();
    assert!(runs.contains("#SBATCH --array=0-3\n") && runs.contains("#SBATCH --cpus-per-task=1\n"));
    for cell in CELLS {
        assert_eq!(
            runs.matches(&format!("--cell {cell} --threads \"$threads\""))
                .count(),
            1
        );
    }
    let submit = std::fs::read_to_string(slurm.join("submit.sh")).unwrap();
    assert!(
        submit.contains("--dependency=afterok:\"$array\"") && submit.contains("--partition=cpu"),
        "{submit}"
    );
    assert!(!slurm.join("submitted.json").exists() && !dir.join("c/base").exists());
    // Without --dry-run and without Slurm: a clear error, nothing submitted.
    let out = Command::new(env!("CARGO_BIN_EXE_warmstart"))
        .env("PATH", "/nonexistent")
        .current_dir(dir)
        .args(with(&args, &["--on", "slurm"]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("squeue is not on PATH"),
        "{err}"
    );
}

/// A single-node Slurm cluster in a temporary folder, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local.sh")
    }

    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(Self::script())
            .args(["start", s(dir.path())])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the cluster did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster { dir }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.conf());
        c
    }

    /// Runs warmstart with this cluster's configuration.
    fn warmstart(&self, dir: &Path, args: &[&str]) -> std::process::Output {
        common::run_with_env(dir, &[("SLURM_CONF", &self.conf())], args)
    }

    fn queue(&self) -> String {
        let out = self
            .command("squeue")
            .args(["-h", "-o", "%i %T"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the queue is empty (at most `limit`).
    fn drain(&self, limit: Duration) {
        let start = Instant::now();
        while !self.queue().trim().is_empty() {
            assert!(start.elapsed() < limit, "jobs left: {}", self.queue());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self, out: &Path) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(out.join("slurm/logs")) {
            for e in entries.flatten() {
                text.push_str(&format!("== {}\n", e.path().display()));
                text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .args(["stop", s(self.dir.path())])
            .status();
    }
}

/// The array job's id in `Submitted N run(s) of this compare as Slurm job array ID; ...`.
fn array_id(stdout: &str) -> String {
    let after = stdout.split("job array ").nth(1).expect("an array id");
    after.chars().take_while(char::is_ascii_digit).collect()
}

#[test]
#[cfg_attr(
    not(warmstart_slurm),
    ignore = "needs root and Slurm (apt-get install slurmctld slurmd slurm-client munge) to \
              start a single-node cluster"
)]
fn compare_and_audit_on_a_real_slurm_cluster_give_the_local_results() {
    let cluster = Cluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let limit = Duration::from_secs(300);

    // A comparison: 4 tasks and the collecting job; a second submission while they are queued
    // is refused.
    ok_in(dir, &with(&compare_args("local"), &[]));
    let out = cluster.warmstart(dir, &with(&compare_args("slurm"), &["--on", "slurm"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("Submitted 4 run(s)"), "{stdout}");
    let again = cluster.warmstart(dir, &with(&compare_args("slurm"), &["--on", "slurm"]));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("already has jobs queued or running"),
        "{err}"
    );
    // The audit's 3 folds go in beside it.
    // Submitted by hand, from the scripts `--dry-run` writes.
    ok_in(dir, &with(&audit_args("audit-local"), &[]));
    let out = cluster.warmstart(
        dir,
        &with(&audit_args("audit-slurm"), &["--on", "slurm", "--dry-run"]),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Wrote the job scripts for 3 run(s)"));
    let submitted = cluster
        .command("sh")
        .arg(dir.join("audit-slurm/slurm/submit.sh"))
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{submitted:?}");
    cluster.drain(limit);
    let slurm = dir.join("slurm");
    assert!(
        slurm.join("compare.csv").is_file(),
        "the collecting job wrote no table:\n{}",
        cluster.logs(&slurm)
    );
    assert_eq!(table(&dir.join("local")), table(&slurm));
    same_checkpoints(&dir.join("local"), &slurm, &CELLS);
    let audit = dir.join("audit-slurm");
    assert!(
        audit.join("label_issues.csv").is_file(),
        "{}",
        cluster.logs(&audit)
    );
    for f in AUDIT_FILES {
        let a = std::fs::read(dir.join("audit-local").join(f)).unwrap();
        let b = std::fs::read(audit.join(f)).unwrap();
        assert!(a == b, "{f} differs");
    }

    // A task cancelled mid-run: running the command again names it with its log, submits it
    // again, and it resumes to the bits of an uninterrupted run.
    let d = data();
    let longer = |out: &str| -> Vec<String> {
        [
            "compare",
            "--data",
            &d,
            "--test-limit",
            "50",
            "--epochs",
            "6",
            "--seeds",
            "1",
            "--variant",
            "base=",
            "--out",
            out,
            "--threads",
            "1",
        ]
        .map(String::from)
        .to_vec()
    };
    ok_in(dir, &with(&longer("long-local"), &[]));
    let out = cluster.warmstart(dir, &with(&longer("long"), &["--on", "slurm"]));
    let array = array_id(&String::from_utf8_lossy(&out.stdout));
    let run = dir.join("long/base/seed-1");
    let start = Instant::now();
    while !run.join("resume.ckpt").is_file() {
        assert!(
            start.elapsed() < limit,
            "no epoch ended: {}",
            cluster.logs(&dir.join("long"))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = cluster.command("scancel").arg(&array).status().unwrap();
    assert!(status.success());
    cluster.drain(limit);
    assert!(
        !run.join("result.json").exists(),
        "the run finished before it was cancelled"
    );
    let out = cluster.warmstart(dir, &with(&longer("long"), &["--on", "slurm"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "base/seed-1 did not finish in job {array}: its log is"
        )) && err.contains(&format!("{array}_0.out")),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Submitted 1 run(s)"));
    cluster.drain(limit);
    assert!(
        dir.join("long/compare.csv").is_file(),
        "{}",
        cluster.logs(&dir.join("long"))
    );
    assert_eq!(table(&dir.join("long-local")), table(&dir.join("long")));
    same_checkpoints(&dir.join("long-local"), &dir.join("long"), &["base/seed-1"]);
}
