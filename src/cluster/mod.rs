//! Where the independent runs of `compare` (variants × seeds) and `audit` (folds) go: here, one
//! after another (the default), to a Slurm cluster as a job array with a dependent job that
//! collects them ([`slurm`]), or as a plain list of shell commands for any other engine (GNU
//! parallel, a CI matrix).
//!
//! Nothing here runs a model. Each run is described by the command that runs it alone: the
//! user's own command line without the engine's flags, plus the run's selector (`--cell` or
//! `--fold`). That command is what the local loop would do for the run (same seed, same
//! threads: the same bits), and the collecting command is the user's command itself: it reads
//! the finished runs back and writes the table.

pub mod argv;
pub mod slurm;

use crate::error::{Error, Result};
use std::path::PathBuf;

/// Where the runs are computed.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// Here, one after another.
    #[default]
    Local,
    /// As a Slurm job array (`sbatch`), collected by a dependent job.
    Slurm,
    /// Printed, one shell command per unfinished run, then the collecting command.
    List,
}

/// The engine's flags, shared by `compare` and `audit`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EngineArgs {
    /// Where the runs go: `local` (here, one after another), `slurm` (a job array submitted
    /// with sbatch, then a job that collects the results), `list` (one shell command per
    /// unfinished run on standard output, for GNU parallel or a CI matrix, then the collecting
    /// command as a comment).
    #[arg(long, value_enum, default_value_t = Engine::Local)]
    pub on: Engine,
    /// With `--on slurm`: write the job scripts and the command that submits them, submit
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With `--on slurm`: an sbatch option for the runs and the collecting job, repeat for more
    /// (`--slurm-arg=--partition=cpu --slurm-arg=--time=2:00:00`); it overrides the defaults
    /// estimated from the runs' size.
    #[arg(long, value_name = "OPTION", allow_hyphen_values = true)]
    pub slurm_arg: Vec<String>,
}

impl EngineArgs {
    /// Refuses the Slurm flags without `--on slurm`.
    pub fn check(&self) -> Result<()> {
        if self.on != Engine::Slurm {
            let given: Vec<&str> = [
                (self.dry_run, "--dry-run"),
                (!self.slurm_arg.is_empty(), "--slurm-arg"),
            ]
            .into_iter()
            .filter_map(|(g, f)| g.then_some(f))
            .collect();
            if !given.is_empty() {
                return Err(Error::invalid(format!(
                    "{} only apply with --on slurm",
                    given.join(" and ")
                )));
            }
        }
        Ok(())
    }
}

/// One unfinished run of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The run's name as the command shows it (`pretrained+aug/seed-2`, `fold 3`).
    pub name: String,
    /// The flags that select it, appended to the user's command (`--cell pretrained+aug/seed-2`).
    pub select: Vec<String>,
    /// Images one run trains on over all its epochs (pool images counted), for the time
    /// estimate.
    pub images: u64,
    /// The run's own `--time` budget in seconds, when it has one.
    pub budget_s: Option<f64>,
}

/// The runs of one command that are not finished yet, and how to collect them.
#[derive(Debug, Clone)]
pub struct Job {
    /// The command: `compare` or `audit`.
    pub what: &'static str,
    /// Its output directory; the scripts and logs go into `OUT/slurm/`.
    pub out: PathBuf,
    /// The unfinished runs.
    pub tasks: Vec<Task>,
    /// Images held in memory by one run (labelled and pool), for the memory estimate.
    pub resident_images: u64,
}

/// The command line of a run or of the collection: the program, where it runs and its
/// arguments (the user's, without the engine's flags, `--threads` added by the engine).
#[derive(Debug, Clone)]
pub struct CommandLine {
    /// The warmstart binary, absolute.
    pub program: PathBuf,
    /// The directory the user ran the command in (the arguments' relative paths are from there).
    pub cwd: PathBuf,
    /// The arguments after the program.
    pub args: Vec<String>,
}

impl CommandLine {
    /// The command as the user typed it, less `--on`, `--dry-run`, `--slurm-arg` and
    /// `--threads`, run from here.
    pub fn of_this_process(argv: &[String]) -> Result<Self> {
        let program = std::env::current_exe()
            .map_err(|e| Error::invalid(format!("cannot find the warmstart binary: {e}")))?;
        let cwd = std::env::current_dir()
            .map_err(|e| Error::invalid(format!("cannot read the current directory: {e}")))?;
        Ok(CommandLine {
            program,
            cwd,
            args: argv::without_engine(argv.get(1..).unwrap_or_default()),
        })
    }

    /// `cd CWD && PROGRAM ARGS... EXTRA...`, each word quoted for a POSIX shell; `threads` is
    /// appended unquoted so that it can be a shell variable.
    pub fn shell(&self, extra: &[String], threads: Option<&str>) -> Result<String> {
        let mut words = vec![self.program.to_string_lossy().into_owned()];
        words.extend(self.args.iter().cloned());
        words.extend(extra.iter().cloned());
        let mut s = format!("cd {} && {}", quote(&self.cwd.to_string_lossy())?, {
            let q: Result<Vec<String>> = words.iter().map(|w| quote(w)).collect();
            q?.join(" ")
        });
        if let Some(t) = threads {
            s.push_str(&format!(" --threads {t}"));
        }
        Ok(s)
    }
}

/// `word` quoted for a POSIX shell.
pub fn quote(word: &str) -> Result<String> {
    shlex::try_quote(word)
        .map(|q| q.into_owned())
        .map_err(|_| Error::invalid(format!("{word:?} cannot be written in a shell command")))
}

/// `--on list`: one line per unfinished run, then the collecting command as a comment (a shell
/// or GNU parallel given every line skips it).
pub fn list(job: &Job, cmd: &CommandLine, threads: Option<usize>) -> Result<String> {
    let t = threads.map(|t| t.to_string());
    let mut s = String::new();
    for task in &job.tasks {
        s.push_str(&cmd.shell(&task.select, t.as_deref())?);
        s.push('\n');
    }
    s.push_str(&format!(
        "# then, once every run above has finished, to write the {} results:\n# {}\n",
        job.what,
        cmd.shell(&[], t.as_deref())?
    ));
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_command_is_the_users_command_with_the_run_selected() {
        let cmd = CommandLine {
            program: "/opt/ws/warmstart".into(),
            cwd: "/home/me/my data".into(),
            args: vec!["compare".into(), "--variant".into(), "b=--lr 0.003".into()],
        };
        let job = Job {
            what: "compare",
            out: "runs/compare".into(),
            tasks: vec![Task {
                name: "b/seed-1".into(),
                select: vec!["--cell".into(), "b/seed-1".into()],
                images: 1,
                budget_s: None,
            }],
            resident_images: 1,
        };
        let text = list(&job, &cmd, Some(2)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "cd '/home/me/my data' && /opt/ws/warmstart compare --variant 'b=--lr 0.003' \
             --cell b/seed-1 --threads 2"
        );
        assert!(lines[1].starts_with('#') && lines[2].starts_with('#'));
        assert!(lines[2].ends_with("--variant 'b=--lr 0.003' --threads 2"));
    }

    #[test]
    fn slurm_flags_need_slurm() {
        let a = EngineArgs {
            dry_run: true,
            ..Default::default()
        };
        assert!(a.check().unwrap_err().to_string().contains("--dry-run"));
        let a = EngineArgs {
            on: Engine::Slurm,
            dry_run: true,
            slurm_arg: vec!["--partition=x".into()],
        };
        assert!(a.check().is_ok());
    }
}
