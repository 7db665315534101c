//! `--on slurm`: the unfinished runs as one Slurm job array (a task per run, each running the
//! run's own command), and a job that depends on it (`afterok`) running the user's command to
//! collect the results. Slurm does the scheduling, retries and accounting; this only writes the
//! scripts, calls `sbatch` and `squeue`, and remembers what it submitted (`OUT/slurm/`).

use super::{CommandLine, Job, quote};
use crate::error::{Error, Result};
use crate::fsutil::{create_dir, write_atomic};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Training images a CPU core gets through in a second, for the time limit's estimate: about a
/// quarter of what one Zen 3 core does at batch 128, leaving room for older cores, augmentation
/// and validation; the estimate is then doubled. `--slurm-arg=--time=...` overrides it.
const IMAGES_PER_CORE_SECOND: f64 = 100.0;
/// Minutes added to every time limit: loading the data, the first epoch's set-up, the queue's
/// clock granularity.
const SETUP_MINUTES: u64 = 10;
/// Memory of a run before its images: the model, its optimiser, activations of a batch, the
/// binary.
const BASE_MIB: u64 = 1024;
/// Bytes held per image (28x28 pixels as bytes and as f32 batches, augmentation's copies).
const BYTES_PER_IMAGE: u64 = 16 * 784;
/// CPUs per task when `--threads` is not given (at most this machine's).
const DEFAULT_CPUS: usize = 4;

/// What a submission asks of Slurm for each run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resources {
    /// `--cpus-per-task`, which the run's `--threads` follows.
    pub cpus: usize,
    /// `--time`, in minutes.
    pub minutes: u64,
    /// `--mem`, in MiB.
    pub mib: u64,
}

impl Resources {
    /// The defaults for `job`: `threads` CPUs (or [`DEFAULT_CPUS`], at most this machine's),
    /// twice the estimated training time plus [`SETUP_MINUTES`] (a `--time` budget's length
    /// where runs have one), memory from the images a run holds.
    pub fn estimate(job: &Job, threads: Option<usize>) -> Resources {
        let here = std::thread::available_parallelism().map_or(1, usize::from);
        let cpus = threads.unwrap_or(DEFAULT_CPUS.min(here)).max(1);
        let seconds = job
            .tasks
            .iter()
            .map(|t| {
                t.budget_s
                    .unwrap_or(t.images as f64 / (IMAGES_PER_CORE_SECOND * cpus as f64))
            })
            .fold(0.0, f64::max);
        Resources {
            cpus,
            minutes: SETUP_MINUTES + (2.0 * seconds / 60.0).ceil() as u64,
            mib: BASE_MIB + job.resident_images * BYTES_PER_IMAGE / (1024 * 1024),
        }
    }
}

/// What was submitted last, kept in `OUT/slurm/submitted.json` to name the runs that failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Submitted {
    array: String,
    collect: String,
    tasks: Vec<SubmittedTask>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SubmittedTask {
    name: String,
    log: PathBuf,
}

/// What `--on slurm` did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Submitted: the array's and the collecting job's ids, the runs and the logs' folder.
    Submitted {
        /// The array's job id.
        array: String,
        /// The collecting job's id.
        collect: String,
        /// Runs submitted.
        runs: usize,
        /// Where the tasks' logs go.
        logs: PathBuf,
    },
    /// `--dry-run`: the script that submits both jobs.
    Written {
        /// `OUT/slurm/submit.sh`.
        submit: PathBuf,
        /// Runs in the array.
        runs: usize,
    },
    /// Every run is finished: the caller collects them here.
    NothingToRun,
}

/// The job name of every job of the command writing into `out`, to find them again with
/// `squeue`: the command and a hash of the output directory's absolute path.
pub fn job_name(what: &str, out: &Path) -> String {
    let h = Sha256::digest(out.as_os_str().as_encoded_bytes());
    let hex: String = h.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("warmstart-{what}-{hex}")
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| {
        Error::invalid(if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{program} is not on PATH: is this a Slurm login node? (--dry-run writes the job \
                 scripts without submitting them)"
            )
        } else {
            format!("cannot run {program} ({what}): {e}")
        })
    })?;
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "{program} failed ({what}, {}): {} (on a machine that is not part of the cluster, \
             --dry-run writes the job scripts without submitting them)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The jobs of `name` still queued or running, as `squeue` shows them (`12_[0-3] PENDING`).
fn queued(name: &str) -> Result<Vec<String>> {
    let text = run(
        Command::new("squeue").args(["--me", "-h", "-n", name, "-o", "%i %T"]),
        "listing this command's jobs",
    )?;
    Ok(text.lines().map(str::to_string).collect())
}

/// The job id `sbatch --parsable` printed (`123` or `123;cluster`).
fn job_id(text: &str) -> Result<String> {
    let id = text.split(';').next().unwrap_or_default().trim();
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) {
        Ok(id.to_string())
    } else {
        Err(Error::invalid(format!(
            "sbatch printed {text:?}, not a job id"
        )))
    }
}

/// The `#SBATCH` header shared by both scripts.
fn header(name: &str, r: Resources, output: &Path) -> Result<String> {
    Ok(format!(
        "#SBATCH --job-name={name}\n#SBATCH --cpus-per-task={}\n#SBATCH --time={}\n\
         #SBATCH --mem={}M\n#SBATCH --output={}\n",
        r.cpus,
        r.minutes,
        r.mib,
        quote(&output.to_string_lossy())?
    ))
}

/// What both job scripts are written from: the runs, the commands, the job name, the resources
/// and where the logs go.
struct Scripts<'a> {
    job: &'a Job,
    cmd: &'a CommandLine,
    name: &'a str,
    r: Resources,
    logs: &'a Path,
}

impl Scripts<'_> {
    /// The array's script: task `i` runs the `i`-th unfinished run's command.
    fn runs(&self) -> Result<String> {
        let (job, r) = (self.job, self.r);
        let mut s = format!(
            "#!/bin/bash\n# warmstart {}: {} run(s) as a Slurm job array, one task per run. Each \
             task runs what\n# `warmstart {}` runs here for that run; run the command again to \
             submit the runs left.\n",
            job.what,
            job.tasks.len(),
            job.what
        );
        s.push_str(&format!(
            "#SBATCH --array=0-{}\n",
            job.tasks.len().saturating_sub(1)
        ));
        s.push_str(&header(self.name, r, &self.logs.join("%A_%a.out"))?);
        s.push_str(&format!(
            "set -euo pipefail\nthreads=${{SLURM_CPUS_PER_TASK:-{}}}\ncase \"$SLURM_ARRAY_TASK_ID\" in\n",
            r.cpus
        ));
        for (i, t) in job.tasks.iter().enumerate() {
            s.push_str(&format!(
                "  {i}) # {}\n    {} ;;\n",
                t.name,
                self.cmd.shell(&t.select, Some("\"$threads\""))?
            ));
        }
        s.push_str(
            "  *) echo \"no run $SLURM_ARRAY_TASK_ID in this array\" >&2; exit 2 ;;\nesac\n",
        );
        Ok(s)
    }

    /// The collecting job's script: the user's command, which reads the finished runs back.
    fn collect(&self) -> Result<String> {
        Ok(format!(
            "#!/bin/bash\n# warmstart {}: collects the runs of the array into the results (it \
             runs once every\n# task has succeeded: sbatch --dependency=afterok).\n{}set -euo \
             pipefail\nthreads=${{SLURM_CPUS_PER_TASK:-{}}}\n{}\n",
            self.job.what,
            header(self.name, self.r, &self.logs.join("collect-%j.out"))?,
            self.r.cpus,
            self.cmd.shell(&[], Some("\"$threads\""))?
        ))
    }
}

/// Submits `job`'s unfinished runs as an array and the collecting job after it (or, with
/// `dry_run`, writes the scripts and `submit.sh`). `extra` are the user's sbatch options, given
/// to both jobs on sbatch's command line (where they override the scripts' defaults).
/// `warn` receives the runs of the last submission that did not finish, with their logs.
pub fn submit(
    job: &Job,
    cmd: &CommandLine,
    (threads, extra, dry_run): (Option<usize>, &[String], bool),
    warn: &mut dyn FnMut(String),
) -> Result<Outcome> {
    let out = cmd.cwd.join(&job.out);
    let dir = out.join("slurm");
    let logs = dir.join("logs");
    create_dir(&logs)?;
    let out = out.canonicalize().map_err(|e| Error::io(&out, e))?;
    let name = job_name(job.what, &out);
    if !dry_run {
        let jobs = queued(&name)?;
        if !jobs.is_empty() {
            return Err(Error::invalid(format!(
                "this {} already has jobs queued or running ({}): wait for them (squeue --me -n \
                 {name}), or cancel them (scancel --me -n {name}) and run the command again",
                job.what,
                jobs.join(", ")
            )));
        }
    }
    let record = dir.join("submitted.json");
    if let Some(last) = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice::<Submitted>(&b).ok())
    {
        for t in &last.tasks {
            if job.tasks.iter().any(|u| u.name == t.name) {
                warn(format!(
                    "{} did not finish in job {}: its log is {}",
                    t.name,
                    last.array,
                    t.log.display()
                ));
            }
        }
    }
    if job.tasks.is_empty() {
        return Ok(Outcome::NothingToRun);
    }
    let r = Resources::estimate(job, threads);
    let runs = dir.join("runs.sbatch");
    let collect = dir.join("collect.sbatch");
    let scripts = Scripts {
        job,
        cmd,
        name: &name,
        r,
        logs: &logs,
    };
    write_atomic(&runs, scripts.runs()?.as_bytes())?;
    write_atomic(&collect, scripts.collect()?.as_bytes())?;
    let extra_q = extra
        .iter()
        .map(|a| quote(a))
        .collect::<Result<Vec<_>>>()?
        .join(" ");
    if dry_run {
        let submit = dir.join("submit.sh");
        let text = format!(
            "#!/bin/sh\n# Submits the runs, then the job that collects them once all succeeded.\n\
             set -e\ncd {}\narray=$(sbatch --parsable {extra_q} {})\narray=${{array%%;*}}\n\
             sbatch --parsable --dependency=afterok:\"$array\" --kill-on-invalid-dep=yes {extra_q} {}\n",
            quote(&cmd.cwd.to_string_lossy())?,
            quote(&runs.to_string_lossy())?,
            quote(&collect.to_string_lossy())?
        );
        write_atomic(&submit, text.as_bytes())?;
        return Ok(Outcome::Written {
            submit,
            runs: job.tasks.len(),
        });
    }
    let array = job_id(&run(
        Command::new("sbatch")
            .arg("--parsable")
            .args(extra)
            .arg(&runs)
            .current_dir(&cmd.cwd),
        "submitting the runs",
    )?)?;
    let dependency = format!("--dependency=afterok:{array}");
    let collect_id = job_id(&run(
        Command::new("sbatch")
            .args(["--parsable", &dependency, "--kill-on-invalid-dep=yes"])
            .args(extra)
            .arg(&collect)
            .current_dir(&cmd.cwd),
        "submitting the collecting job",
    )?)?;
    let submitted = Submitted {
        array: array.clone(),
        collect: collect_id.clone(),
        tasks: job
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| SubmittedTask {
                name: t.name.clone(),
                log: logs.join(format!("{array}_{i}.out")),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&submitted).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(&record, &json)?;
    Ok(Outcome::Submitted {
        array,
        collect: collect_id,
        runs: job.tasks.len(),
        logs,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Task;
    use super::*;

    fn job(images: u64, budget_s: Option<f64>) -> Job {
        Job {
            what: "compare",
            out: "runs/c".into(),
            tasks: vec![Task {
                name: "a/seed-1".into(),
                select: vec!["--cell".into(), "a/seed-1".into()],
                images,
                budget_s,
            }],
            resident_images: 70_000,
        }
    }

    #[test]
    fn estimates_grow_with_the_work_and_follow_a_budget() {
        let small = Resources::estimate(&job(60_000, None), Some(2));
        let big = Resources::estimate(&job(6_000_000, None), Some(2));
        assert_eq!(small.cpus, 2);
        assert_eq!(small.minutes, SETUP_MINUTES + 10);
        assert!(
            big.minutes > 100 * (small.minutes - SETUP_MINUTES),
            "{big:?}"
        );
        assert_eq!(
            Resources::estimate(&job(6_000_000, Some(600.0)), Some(2)).minutes,
            SETUP_MINUTES + 20
        );
        assert_eq!(small.mib, BASE_MIB + 70_000 * BYTES_PER_IMAGE / (1 << 20));
    }

    #[test]
    fn the_array_runs_each_runs_own_command() {
        let cmd = CommandLine {
            program: "/bin/warmstart".into(),
            cwd: "/w".into(),
            args: vec!["compare".into(), "--data".into(), "d".into()],
        };
        let j = job(1, None);
        let scripts = Scripts {
            job: &j,
            cmd: &cmd,
            name: "n",
            r: Resources::estimate(&j, Some(3)),
            logs: Path::new("/w/o/slurm/logs"),
        };
        let s = scripts.runs().unwrap();
        assert!(s.starts_with("#!/bin/bash\n"));
        assert!(
            s.contains("#SBATCH --array=0-0\n#SBATCH --job-name=n\n#SBATCH --cpus-per-task=3\n")
        );
        assert!(s.contains("#SBATCH --output='/w/o/slurm/logs/%A_%a.out'\n"));
        assert!(s.contains(
            "  0) # a/seed-1\n    cd /w && /bin/warmstart compare --data d --cell a/seed-1 \
             --threads \"$threads\" ;;\n"
        ));
        assert_eq!(job_id("4711;cluster").unwrap(), "4711");
        assert!(job_id("Submitted batch job 4711").is_err());
    }
}
