//! `warmstart label`: a local page that shows the images of a folder one at a time, enlarged,
//! with the model's guess, and files each into `INTO/<class>/` on a click or a key (1–9, 0);
//! undo takes an answer back. Every answer is a file moved at once ([`queue`]), so closing the
//! tab or pressing Ctrl-C loses nothing. It runs on `serve`'s hardened connection handling and
//! its Host/Origin guard, on 127.0.0.1 only: a page that moves files must not be reachable from
//! another machine or drivable by another web site.

pub mod queue;
mod routes;

use crate::checkpoint;
use crate::data::folder::sorted_entries;
use crate::data::prepare;
use crate::error::{Error, Result};
use crate::eval::{argmax, image_probabilities};
use burn::prelude::Device;
use queue::Queue;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `warmstart label`.
#[derive(clap::Args, Debug, Clone)]
pub struct LabelRequest {
    /// The images to label: a folder (any nesting), such as `suggest`'s OUT/to-label.
    #[arg(long, required_unless_present = "audit", requires = "into")]
    pub pool: Option<PathBuf>,
    /// The labelled data folder: each answer moves the image into `INTO/<class>/`.
    #[arg(long)]
    pub into: Option<PathBuf>,
    /// Instead of a pool: an audit's output folder, to check its likely wrong labels (each
    /// answer leaves the image in its class folder or moves it to the sibling folder of the
    /// class chosen).
    #[arg(long, conflicts_with_all = ["pool", "into"])]
    pub audit: Option<PathBuf>,
    /// The classes, comma-separated, in key order [default: INTO's class folders, else the
    /// model's classes].
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Where answers go when INTO has the `{train,val,test}/<class>` layout: `train`, `val` or
    /// `test` [default: train].
    #[arg(long, value_enum, requires = "into")]
    pub split: Option<crate::data::Split>,
    /// A trained model (checkpoint or run directory) whose guess is shown with each image.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 8090)]
    pub port: u16,
}

/// The key of each class: its own name when every class is a single digit (digits `0`–`9`: the
/// key `3` gives the class `3`, not the fourth); else 1–9 in order, then 0 for the tenth, none
/// after.
pub fn keys(classes: &[String]) -> Vec<Option<char>> {
    let digit = |c: &String| {
        let mut ch = c.chars();
        ch.next()
            .filter(|d| d.is_ascii_digit() && ch.next().is_none())
    };
    let own: Vec<Option<char>> = classes.iter().map(digit).collect();
    let distinct: std::collections::HashSet<_> = own.iter().flatten().collect();
    if own.iter().all(Option::is_some) && distinct.len() == classes.len() {
        return own;
    }
    (0..classes.len())
        .map(|k| match k {
            0..=8 => char::from_digit(k as u32 + 1, 10),
            9 => Some('0'),
            _ => None,
        })
        .collect()
}

/// Whether `name` can be a class folder inside `INTO` (and nothing else: no path, no hidden
/// folder that loading would skip).
fn folder_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

/// The class names: `--classes`, else INTO's class folders, else the model's.
fn classes(
    req: &LabelRequest,
    into: &Path,
    model_classes: Option<&[String]>,
) -> Result<Vec<String>> {
    if !req.classes.is_empty() {
        // `--classes "a, b"` means b, not a folder " b" beside it.
        let names: Vec<String> = req.classes.iter().map(|c| c.trim().to_string()).collect();
        if let Some(bad) = names.iter().find(|c| !folder_name(c)) {
            return Err(Error::invalid(format!(
                "--classes: {bad:?} cannot be a class folder's name (empty, `.`, `..`, a path \
                 separator or a control character)"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = names.iter().find(|c| !seen.insert(c.as_str())) {
            return Err(Error::invalid(format!("--classes names {dup:?} twice")));
        }
        return Ok(names);
    }
    if into.is_dir() {
        let found: Vec<String> = sorted_entries(into)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
    }
    model_classes.map(<[String]>::to_vec).ok_or_else(|| {
        Error::invalid(format!(
            "{} has no class folders yet: name the classes with --classes a,b,c (or give --model)",
            into.display()
        ))
    })
}

/// Where answers are filed: `into`, or `into/<split>` (train by default) when `into` has the
/// `{train,val,test}/<class>` layout that `train --data` reads.
fn filing_folder(into: &Path, split: Option<crate::data::Split>) -> Result<PathBuf> {
    let parts = if into.is_dir() {
        crate::data::folder::split_parts(into)?
    } else {
        None
    };
    match (parts, split) {
        (Some(parts), s) => {
            let s = s.unwrap_or(crate::data::Split::Train);
            // The part's own folder (`Train/` stays `Train/`), or a new one of its name.
            let found = parts.into_iter().find(|(p, _)| *p == s).map(|(_, d)| d);
            Ok(found.unwrap_or_else(|| into.join(s.name())))
        }
        (None, None) => Ok(into.to_path_buf()),
        (None, Some(s)) => Err(Error::invalid(format!(
            "--split {}: {} has no train/, val/ or test/ folder (it is filed as INTO/<class>/)",
            s.name(),
            into.display()
        ))),
    }
}

/// The likely wrong labels of an audit (`label_issues.csv`, classes from `classes.csv`), to
/// check.
fn audit_queue(dir: &Path) -> Result<Queue> {
    let read = |name: &str| -> Result<Vec<csv::StringRecord>> {
        let path = dir.join(name);
        let mut r = csv::Reader::from_path(&path).map_err(|e| {
            Error::format(
                &path,
                format!(
                    "cannot be read ({e}): is {} an audit's folder?",
                    dir.display()
                ),
            )
        })?;
        r.records()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::format(&path, e.to_string()))
    };
    let classes: Vec<String> = read("classes.csv")?
        .iter()
        .map(|r| r[0].to_string())
        .collect();
    let class_of = |name: &str, path: &Path| {
        classes.iter().position(|c| c == name).ok_or_else(|| {
            Error::format(
                path,
                format!("names class {name:?}, which classes.csv does not have"),
            )
        })
    };
    let issues = dir.join("label_issues.csv");
    let mut files = Vec::new();
    for r in read("label_issues.csv")? {
        let bad = || {
            Error::format(
                &issues,
                "expected rank,file,index,given,suggested,given_probability,suggested_probability",
            )
        };
        let (file, index, given, suggested, p) = (
            r.get(1).ok_or_else(bad)?,
            r.get(2).ok_or_else(bad)?,
            r.get(3).ok_or_else(bad)?,
            r.get(4).ok_or_else(bad)?,
            r.get(6).ok_or_else(bad)?,
        );
        if !index.is_empty() {
            return Err(Error::format(
                &issues,
                format!(
                    "lists images inside {file} (IDX or CSV): the page moves image files between class folders; correct those labels in the file itself"
                ),
            ));
        }
        let guess = (
            class_of(suggested, &issues)?,
            p.parse::<f32>().unwrap_or(0.0),
        );
        files.push((PathBuf::from(file), class_of(given, &issues)?, Some(guess)));
    }
    if files.is_empty() {
        return Err(Error::format(
            &issues,
            "lists no likely wrong label: nothing to check",
        ));
    }
    Queue::to_check(classes, files)
}

/// The model's guess for each image of the queue (an unreadable image has none).
fn guesses(model: &Path, q: &Queue) -> Result<(Vec<queue::Guess>, Vec<String>)> {
    let dev = Device::flex();
    let (net, meta) = checkpoint::load(model, &dev)?;
    let guesses = q
        .items()
        .iter()
        .map(|it| {
            crate::cancel::check("reading the images to label")?;
            Ok(
                prepare::load_image(&it.path, meta.input.invert, meta.input.fit)
                    .ok()
                    .map(|px| {
                        let p = image_probabilities(&net, &px, &dev);
                        let k = argmax(&p);
                        (k, p[k])
                    }),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((guesses, meta.classes))
}

/// Serves the labelling page until Ctrl-C or SIGTERM; `on_ready` gets the address, the number
/// of images and what was left out of the pool.
pub fn serve(
    req: &LabelRequest,
    on_ready: impl FnOnce(SocketAddr, usize, &[String]),
) -> Result<()> {
    let model_classes = match &req.model {
        Some(m) => Some(checkpoint::read_meta(&checkpoint::resolve(m)?)?.classes),
        None => None,
    };
    let q = match (&req.audit, &req.pool, &req.into) {
        (Some(dir), _, _) => audit_queue(dir)?,
        (None, Some(pool), Some(into)) => {
            // The whole data folder is labelled: a pool in any of its parts is refused.
            queue::refuse_pool_inside(pool, into)?;
            let into = &filing_folder(into, req.split)?;
            let classes = classes(req, into, model_classes.as_deref())?;
            let mut q = Queue::new(pool, into, classes)?;
            if let Some(m) = &req.model {
                let (g, model_classes) = guesses(m, &q)?;
                // A guess is shown only under a class name the page has.
                let g = g
                    .into_iter()
                    .map(|g| {
                        g.and_then(|(k, p)| {
                            let name = &model_classes[k];
                            q.classes().iter().position(|c| c == name).map(|i| (i, p))
                        })
                    })
                    .collect();
                q.set_guesses(g);
            }
            q
        }
        _ => {
            return Err(Error::invalid(
                "give --pool DIR --into DATA, or --audit DIR",
            ));
        }
    };
    let total = q.items().len();
    let warnings = q.warnings().to_vec();
    let state = Arc::new(routes::State {
        queue: Mutex::new(q),
        page: routes::page()?,
    });
    super::run(
        "127.0.0.1",
        req.port,
        |addr| on_ready(addr, total, &warnings),
        move |addr| routes::router(state, super::guard::Guard::new(addr)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_trimmed_and_must_be_folder_names() {
        let cmd = <LabelRequest as clap::Args>::augment_args(clap::Command::new("label"));
        let req = |classes: &str| {
            let m = cmd
                .clone()
                .try_get_matches_from(["label", "--pool", "p", "--into", "i", "--classes", classes])
                .unwrap();
            <LabelRequest as clap::FromArgMatches>::from_arg_matches(&m).unwrap()
        };
        let into = Path::new("/no/such/into");
        assert_eq!(
            classes(&req("a, b ,c"), into, None).unwrap(),
            ["a", "b", "c"]
        );
        for bad in ["a,,b", "a,../x", "a,.hidden", "a, ", "a,b/c"] {
            let e = classes(&req(bad), into, None).unwrap_err().to_string();
            assert!(e.contains("cannot be a class folder"), "{bad}: {e}");
        }
        let e = classes(&req("a, a"), into, None).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn keys_follow_the_keyboard_row_or_the_digit_names() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let eleven: Vec<String> = (0..11).map(|i| format!("c{i}")).collect();
        let k = keys(&eleven);
        assert_eq!(
            (k[0], k[8], k[9], k[10]),
            (Some('1'), Some('9'), Some('0'), None)
        );
        let digits = names(&["0", "1", "2", "7"]);
        assert_eq!(keys(&digits), [Some('0'), Some('1'), Some('2'), Some('7')]);
        // Not all digits: positions.
        assert_eq!(keys(&names(&["0", "x"])), [Some('1'), Some('2')]);
    }
}
