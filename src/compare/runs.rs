//! One (variant, seed) run of a comparison: its settings (saved beside it to tell a changed
//! command), and whether it is read back, resumed or trained.

use super::{CompareRequest, RunResult, Variant, legacy};
use crate::device::PrecisionRequest;
use crate::error::{Error, Result};
use crate::fsutil::{create_dir, write_atomic};
use crate::options::{RuntimeArgs, TrainOptions, TrainRequest};
use crate::pipeline;
use crate::progress::{Event, Progress, WarningsOnly};
use crate::record::{Fingerprint, Stage};
use crate::train;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What makes one run's results: its options (but where it writes), the device and the
/// arithmetic. Saved as JSON in the run's directory; threads change no result and are left out.
pub fn settings(r: &TrainRequest) -> Value {
    let options = TrainOptions {
        out: None,
        ..r.options.clone()
    };
    serde_json::json!({
        "options": options.to_json(),
        "device": r.runtime.device,
        "precision": r.runtime.precision,
    })
}

/// The flags whose values differ between two [`settings`], for a message.
pub(super) fn changed(was: &Value, now: &Value) -> String {
    let empty = serde_json::Map::new();
    let part = |v: &Value| -> serde_json::Map<String, Value> {
        let mut m = v
            .get("options")
            .and_then(Value::as_object)
            .unwrap_or(&empty)
            .clone();
        for k in ["device", "precision"] {
            if let Some(x) = v.get(k) {
                m.insert(k.into(), x.clone());
            }
        }
        m
    };
    let (a, b) = (part(was), part(now));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&Value>| match v {
        None => "(not given)".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{} was {}, is {}",
                crate::options::flag(k),
                show(a.get(k)),
                show(b.get(k))
            )
        })
        .collect();
    if diffs.is_empty() {
        "its settings were written by an earlier warmstart and differ".into()
    } else {
        diffs.join("; ")
    }
}

const RESULT: &str = "result.json";
/// A run's [`settings`], beside its results.
const SETTINGS: &str = "compare-settings.json";

/// One (variant, seed) of a comparison, and what it trains with.
pub(super) struct Cell<'a> {
    pub v: &'a Variant,
    pub seed: u64,
    /// Its directory, relative to the comparison's.
    pub rel: PathBuf,
    /// Its request: the variant's flags over the common ones, its seed and directory.
    pub request: TrainRequest,
}

impl<'a> Cell<'a> {
    pub fn new(req: &CompareRequest, v: &'a Variant, base: &TrainRequest, seed: u64) -> Self {
        let rel = PathBuf::from(&v.name).join(format!("seed-{seed}"));
        let mut request = base.clone();
        request.options.seed = Some(seed);
        request.options.out = Some(req.out.join(&rel));
        Cell {
            v,
            seed,
            rel,
            request,
        }
    }

    /// `pretrained+aug/seed-2`: its directory, and how `--cell` names it.
    pub fn name(&self) -> String {
        format!("{}/seed-{}", self.v.name, self.seed)
    }
}

/// One (variant, seed): read back when finished, resumed when interrupted, trained otherwise.
pub(super) fn one_run(
    req: &CompareRequest,
    cell: &Cell,
    data: &mut DataFingerprints,
    progress: &mut dyn Progress,
) -> Result<RunResult> {
    if let Some(done) = read_back(req, cell, data)? {
        return Ok(done);
    }
    train_cell(req, cell, progress)
}

/// The finished run's result, checked against the comparison's flags and data; `None` when it
/// has still to train (or to resume). Refuses a run trained with other settings.
pub(super) fn read_back(
    req: &CompareRequest,
    cell: &Cell,
    data: &mut DataFingerprints,
) -> Result<Option<RunResult>> {
    let dir = req.out.join(&cell.rel);
    let r = &cell.request;
    let settings = settings(r);
    // What an earlier layout wrote for the same run, so its folders read back.
    let legacy = Value::String(legacy::settings_text(r));
    let result_path = dir.join(RESULT);
    let settings_path = dir.join(SETTINGS);
    let legacy_path = dir.join(legacy::FILE);
    let stored = if settings_path.is_file() {
        let text = std::fs::read(&settings_path).map_err(|e| Error::io(&settings_path, e))?;
        Some(
            serde_json::from_slice::<Value>(&text).map_err(|e| {
                Error::format(&settings_path, format!("unreadable run settings: {e}"))
            })?,
        )
    } else if legacy_path.is_file() {
        let text = std::fs::read_to_string(&legacy_path).map_err(|e| Error::io(&legacy_path, e))?;
        Some(if Value::String(text.clone()) == legacy {
            settings.clone()
        } else {
            Value::String(text)
        })
    } else {
        None
    };
    let trained =
        result_path.is_file() || train::resume::exists(&dir) || train::best_path(&dir).is_file();
    if let Some(was) = &stored
        && *was != settings
        && trained
    {
        return Err(Error::format(
            &dir,
            format!(
                "this run was started with other settings ({}); re-run the compare command it was \
                 started with, or use another --out",
                changed(was, &settings)
            ),
        ));
    }
    if result_path.is_file() {
        let text = std::fs::read(&result_path).map_err(|e| Error::io(&result_path, e))?;
        let mut done: RunResult = serde_json::from_slice(&text)
            .map_err(|e| Error::format(&result_path, format!("unreadable run result: {e}")))?;
        if done.settings == settings || done.settings == legacy {
            // The same flags on other data are another run: the data's fingerprint, recorded in
            // the run's checkpoint, must be the data's now.
            let meta = crate::checkpoint::read_meta(&train::best_path(&dir)).ok();
            let recorded = meta
                .as_ref()
                .and_then(|m| m.training.data.fingerprint.clone());
            // Likewise the unlabelled pool's.
            let recorded_pool = meta
                .as_ref()
                .and_then(|m| m.training.unlabeled.as_ref()?.fingerprint.clone());
            if let Some(was) = recorded_pool {
                let now = data.pool_of(r)?;
                if now.as_deref() != Some(was.as_str()) {
                    return Err(Error::format(
                        &dir,
                        format!(
                            "this run finished on another unlabelled pool (its images changed since): a comparison's \
                             runs must share their data; use another --out, or remove {} to \
                             train it again",
                            dir.display()
                        ),
                    ));
                }
            }
            if let Some(was) = recorded {
                let now = data.of(r)?;
                if was != now {
                    return Err(Error::format(
                        &dir,
                        format!(
                            "this run finished on other data (it was {was}, it is {now}): a \
                             comparison's runs must share their data; use another --out, or \
                             remove {} to train it again",
                            dir.display()
                        ),
                    ));
                }
            }
            if done.settings != settings || !settings_path.is_file() {
                // Brought up to the current layout, once.
                done.settings = settings.clone();
                write_json(&result_path, &done)?;
                write_json(&settings_path, &settings)?;
                let _ = std::fs::remove_file(&legacy_path);
            }
            return Ok(Some(done));
        }
    }
    Ok(None)
}

/// Trains (or resumes) the cell and writes its result.
fn train_cell(req: &CompareRequest, cell: &Cell, progress: &mut dyn Progress) -> Result<RunResult> {
    let dir = req.out.join(&cell.rel);
    let r = &cell.request;
    let settings = settings(r);
    let settings_path = dir.join(SETTINGS);
    let legacy_path = dir.join(legacy::FILE);
    create_dir(&dir)?;
    write_json(&settings_path, &settings)?;
    let _ = std::fs::remove_file(&legacy_path);
    let resume = train::resume::exists(&dir).then_some(dir.as_path());
    // A resumed run continues as it was set up (its settings were checked above): given the
    // comparison's flags, `--resume` would list them as ignored, though the user typed them once.
    let resumed_as_set_up = TrainRequest {
        options: TrainOptions::default(),
        runtime: RuntimeArgs {
            precision: PrecisionRequest::Auto,
            ..r.runtime
        },
    };
    let r = if resume.is_some() {
        &resumed_as_set_up
    } else {
        r
    };
    let res = pipeline::train_stage(Stage::Train, r, resume, &mut WarningsOnly(progress))
        .inspect_err(|e| {
            if e.is_interruption() {
                progress.event(Event::Warning(
                    "to continue the whole comparison, run the same compare command again".into(),
                ));
            }
        })?;
    let best = res.history.best().ok_or_else(|| {
        Error::invalid(format!(
            "{}: the run finished without an epoch",
            dir.display()
        ))
    })?;
    let (accuracy, correct, total, scored_on) = match &res.test {
        Some(p) => (p.accuracy(), p.correct(), p.len(), "test"),
        None => {
            let n = res.data.val.len();
            let correct = (best.val_acc * n as f64).round() as usize;
            (best.val_acc, correct, n, "validation")
        }
    };
    let result = RunResult {
        variant: cell.v.name.clone(),
        seed: cell.seed,
        settings,
        accuracy,
        correct,
        total,
        scored_on: scored_on.into(),
        best_epoch: best.epoch,
        seconds: res.history.0.iter().map(|e| e.seconds).sum(),
        dir: cell.rel.clone(),
    };
    write_json(&dir.join(RESULT), &result)?;
    Ok(result)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(path, &json)
}

/// The fingerprints of the data (and unlabelled pools) the runs load, loaded once per distinct
/// loading.
#[derive(Default)]
pub(super) struct DataFingerprints {
    data: std::collections::HashMap<String, Fingerprint>,
    pools: std::collections::HashMap<String, (String, usize)>,
}

impl DataFingerprints {
    /// The fingerprint of the data run `r` would train on, as it is now.
    pub(super) fn of(&mut self, r: &TrainRequest) -> Result<Fingerprint> {
        let record = crate::plan::resolve(Stage::Train, r)?.record;
        let key = format!("{:?} {:?}", record.data.path, record.load_options());
        if let Some(f) = self.data.get(&key) {
            return Ok(f.clone());
        }
        let d = crate::data::load(&record.data.path, &record.load_options())?;
        let f = Fingerprint::of(&d);
        self.data.insert(key, f.clone());
        Ok(f)
    }

    /// The fingerprint of the unlabelled pool run `r` would train with, as it is now.
    fn pool_of(&mut self, r: &TrainRequest) -> Result<Option<String>> {
        Ok(self.pool(r)?.map(|(f, _)| f))
    }

    /// The images in the unlabelled pool run `r` would train with, as it is now.
    pub(super) fn pool_size(&mut self, r: &TrainRequest) -> Result<usize> {
        Ok(self.pool(r)?.map_or(0, |(_, n)| n))
    }

    fn pool(&mut self, r: &TrainRequest) -> Result<Option<(String, usize)>> {
        let record = crate::plan::resolve(Stage::Train, r)?.record;
        let Some(u) = &record.unlabeled else {
            return Ok(None);
        };
        let key = format!(
            "{:?} {:?} {:?}",
            u.path, record.data.invert, record.data.fit
        );
        if let Some(f) = self.pools.get(&key) {
            return Ok(Some(f.clone()));
        }
        let pool = crate::data::pool::load(&u.path, record.data.invert, record.data.fit)?;
        let f = (pool.fingerprint(), pool.len());
        self.pools.insert(key, f.clone());
        Ok(Some(f))
    }
}
