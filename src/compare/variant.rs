//! `--variant NAME='FLAGS'`: a variant's flags are `train`'s, split as a shell would, except the
//! ones that belong to the whole comparison.

use super::{Variant, check_name};
use crate::error::{Error, Result};
use crate::options::TrainArgs;
use clap::{Args, FromArgMatches};

/// Flags a variant may not set, by clap id, with what to do instead: they belong to the whole
/// comparison.
pub const NOT_PER_VARIANT: [(&str, &str); 5] = [
    ("out", "--out (the comparison's directory is one)"),
    ("seed", "--seed (use --seeds)"),
    (
        "resume",
        "--resume (re-run the same compare command to continue)",
    ),
    ("threads", "--threads (one pool serves every run)"),
    ("device", "--device (give it once, for every variant)"),
];

/// Parses `NAME=FLAGS`.
pub fn parse(spec: &str) -> Result<Variant> {
    let (name, flags) = spec.split_once('=').ok_or_else(|| {
        Error::invalid(format!(
            "--variant {spec:?}: expected NAME='FLAGS', e.g. lr3='--lr 0.003'"
        ))
    })?;
    check_name(name)?;
    let words = shell_words::split(flags).map_err(|e| {
        Error::invalid(format!(
            "variant {name}: cannot split its flags {flags:?}: {e}"
        ))
    })?;
    let cmd = TrainArgs::augment_args(clap::Command::new("variant").no_binary_name(true));
    let m = cmd.try_get_matches_from(&words).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        Error::invalid(format!(
            "variant {name}: {}",
            first.trim_start_matches("error: ")
        ))
    })?;
    for (id, what) in NOT_PER_VARIANT {
        if m.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            return Err(Error::invalid(format!(
                "variant {name}: {what} cannot be set per variant"
            )));
        }
    }
    let args = TrainArgs::from_arg_matches(&m)
        .map_err(|e| Error::invalid(format!("variant {name}: {e}")))?;
    Ok(Variant {
        name: name.to_string(),
        flags: flags.trim().to_string(),
        request: args.request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_takes_train_flags_but_not_the_comparisons() {
        let v = parse("semi=--unlabeled pool --threshold-rule fixed --lr 0.01").unwrap();
        assert_eq!(v.name, "semi");
        assert_eq!(v.request.options.lr, Some(0.01));
        assert!(v.request.options.pool.unlabeled.is_some());
        for (spec, wants) in [
            ("a=--seed 3", "--seed (use --seeds)"),
            ("a=--resume x", "--resume"),
            ("a=--threads 2", "--threads"),
            ("a=--out x", "--out"),
            ("a=--device cpu", "--device"),
            ("no-flags", "expected NAME='FLAGS'"),
            ("a=--lr 'x", "cannot split"),
            ("a=--no-such-flag", "variant a:"),
            ("../x=--lr 1", "cannot be a directory name"),
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains(wants), "{spec}: {e}");
        }
    }
}
