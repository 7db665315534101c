//! The user's command line without the engine's flags: what each run's command and the
//! collecting command are built from, so that a run on a cluster is the very command it would be
//! here.

/// Flags removed with their value (`--on slurm`, `--on=slurm`); `--threads` is set by the engine.
const WITH_VALUE: [&str; 3] = ["--on", "--slurm-arg", "--threads"];
/// Flags removed alone.
const ALONE: [&str; 1] = ["--dry-run"];

/// `args` (after the program) without `--on`, `--dry-run`, `--slurm-arg` and `--threads`, in
/// either of their spellings (`--flag VALUE`, `--flag=VALUE`). After `--` nothing is a flag.
pub fn without_engine(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            out.push(a.clone());
            out.extend(it.cloned());
            break;
        }
        if ALONE.contains(&a.as_str()) {
            continue;
        }
        if WITH_VALUE.contains(&a.as_str()) {
            it.next();
            continue;
        }
        if WITH_VALUE
            .iter()
            .any(|f| a.strip_prefix(f).is_some_and(|rest| rest.starts_with('=')))
        {
            continue;
        }
        out.push(a.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn engine_flags_go_in_both_spellings_and_values_stay() {
        let got = without_engine(&words(
            "compare --on slurm --data d --slurm-arg --partition=x --threads 2 --dry-run \
             --slurm-arg=--time=1:00:00 --on=list --threads=4 --seeds 2 --online",
        ));
        assert_eq!(got, words("compare --data d --seeds 2 --online"));
        // A variant's flags are one word: its `--threads` is the variant's, not the engine's.
        let v = vec![
            "compare".to_string(),
            "--variant".into(),
            "t=--threads 1".into(),
        ];
        assert_eq!(without_engine(&v), v);
    }
}
