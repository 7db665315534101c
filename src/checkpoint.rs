//! Checkpoints: safetensors weights plus a JSON sidecar carrying everything needed to use them
//! (architecture, class names, input convention, training arguments, metrics, version).
//! Both files are written atomically; the sidecar is written last, so a checkpoint with a sidecar
//! is always complete.

use crate::data::{Fit, Invert, SIDE};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::{ARCHITECTURE, ArchConfig, Net};
use crate::record::RunRecord;
use burn::prelude::*;
use burn::store::{ModuleSnapshot, ModuleStore, PathFilter, SafetensorsStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How raw images become model input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Channels (1: grayscale).
    pub channels: usize,
    /// Pixel values are bytes divided by this.
    pub scale_divisor: f32,
    /// Strokes are light on a dark background (MNIST's convention).
    pub polarity: String,
    /// How image files were inverted to that polarity during training.
    pub invert: Invert,
    /// How new images are fitted into 28x28 for this model (as its training images were, or for
    /// bundled/IDX data the stage's default); `box` in sidecars written before the choice existed.
    #[serde(default)]
    pub fit: Fit,
}

impl InputSpec {
    /// warmstart's input convention, with the inversion rule used in training.
    pub fn new(invert: Invert, fit: Fit) -> Self {
        InputSpec {
            height: SIDE,
            width: SIDE,
            channels: 1,
            scale_divisor: 255.0,
            polarity: "light-on-dark".into(),
            invert,
            fit,
        }
    }
}

/// Metrics of the epoch a checkpoint was taken at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub loss: f64,
    /// Training accuracy over the epoch (on augmented batches).
    pub acc: f64,
    /// Validation loss after the epoch.
    pub val_loss: f64,
    /// Validation accuracy after the epoch.
    pub val_acc: f64,
    /// Test accuracy, recorded in the kept checkpoint after training when there is a test set.
    pub test_acc: Option<f64>,
}

/// The JSON sidecar of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The warmstart version that wrote it.
    pub warmstart_version: String,
    /// The architecture name ([`ARCHITECTURE`]), checked when loading.
    pub architecture: String,
    /// The layer sizes.
    pub arch: ArchConfig,
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// How images become model input.
    pub input: InputSpec,
    /// Everything the run that produced it was given and resolved to (read from the layout of
    /// either record version).
    #[serde(deserialize_with = "crate::record::any_layout")]
    pub training: RunRecord,
    /// Metrics of the epoch the checkpoint was taken at.
    pub metrics: Metrics,
}

impl Meta {
    /// The sidecar of a checkpoint of the standard network for `classes`, trained as `training`.
    pub fn new(classes: Vec<String>, training: RunRecord, metrics: Metrics) -> Self {
        Meta {
            warmstart_version: env!("CARGO_PKG_VERSION").into(),
            architecture: ARCHITECTURE.into(),
            arch: ArchConfig::standard(classes.len()),
            classes,
            input: InputSpec::new(training.data.invert, training.data.fit),
            training,
            metrics,
        }
    }
}

/// The weights file a user's path means: a run directory means its `best.safetensors`, and a
/// sidecar means its weights.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    let p = if path.is_dir() {
        path.join("best.safetensors")
    } else if path.extension().is_some_and(|e| e == "json") {
        path.with_extension("safetensors")
    } else {
        path.to_path_buf()
    };
    if !p.is_file() {
        return Err(Error::format(
            &p,
            "no such checkpoint (give a .safetensors file or a run directory holding best.safetensors)",
        ));
    }
    Ok(p)
}

/// The JSON sidecar beside a `.safetensors` file.
pub fn sidecar(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Serialises the model's tensors to safetensors bytes.
pub fn to_bytes(model: &Net) -> Result<Vec<u8>> {
    // burn's default metadata is a hash map written in random order; without it the same weights
    // always give the same bytes (what the sidecar records instead is richer anyway).
    let mut store = SafetensorsStore::from_bytes(None).clear_metadata();
    model
        .save_into(&mut store)
        .map_err(|e| Error::invalid(format!("cannot serialise the model: {e}")))?;
    store
        .get_bytes()
        .map_err(|e| Error::invalid(format!("cannot serialise the model: {e}")))
}

/// Overwrites all of `model`'s tensors (parameters and BatchNorm statistics) from safetensors bytes,
/// keeping its parameter ids.
pub fn apply_bytes(model: &mut Net, bytes: Vec<u8>) -> std::result::Result<(), String> {
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let res = model.load_from(&mut store).map_err(|e| e.to_string())?;
    if res.errors.is_empty() && res.missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "errors {:?}, missing {:?}",
            res.errors, res.missing
        ))
    }
}

/// Saves weights then sidecar, each atomically.
pub fn save(model: &Net, meta: &Meta, weights: &Path) -> Result<()> {
    write_atomic(weights, &to_bytes(model)?)?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(&sidecar(weights), &json)
}

/// Rewrites a checkpoint's sidecar after changing it (e.g. to record the test accuracy).
pub fn update_meta(weights: &Path, f: impl FnOnce(&mut Meta)) -> Result<()> {
    let mut meta = read_meta(weights)?;
    f(&mut meta);
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(&sidecar(weights), &json)
}

/// Reads and checks a checkpoint's sidecar.
pub fn read_meta(weights: &Path) -> Result<Meta> {
    let p = sidecar(weights);
    let text = crate::fsutil::read(
        &p,
        "checkpoint sidecar is missing (every .safetensors needs its .json)",
    )?;
    parse_meta(&p, &text)
}

/// Parses and checks sidecar JSON; `p` is only used in errors.
pub fn parse_meta(p: &Path, text: &[u8]) -> Result<Meta> {
    let meta: Meta = serde_json::from_slice(text)
        .map_err(|e| Error::format(p, format!("corrupt checkpoint sidecar: {e}")))?;
    if meta.architecture != ARCHITECTURE {
        return Err(Error::format(
            p,
            format!(
                "checkpoint is for architecture {:?}, this warmstart uses {ARCHITECTURE:?}",
                meta.architecture
            ),
        ));
    }
    if meta.classes.len() != meta.arch.classes {
        return Err(Error::format(
            p,
            format!(
                "sidecar lists {} class names for a {}-class model",
                meta.classes.len(),
                meta.arch.classes
            ),
        ));
    }
    Ok(meta)
}

fn open_store(weights: &Path) -> Result<SafetensorsStore> {
    let bytes = std::fs::read(weights).map_err(|e| Error::io(weights, e))?;
    Ok(SafetensorsStore::from_bytes(Some(bytes)))
}

fn tensor_shapes(
    store: &mut SafetensorsStore,
    weights: &Path,
) -> Result<BTreeMap<String, Vec<usize>>> {
    let all = store
        .get_all_tensors()
        .map_err(|e| Error::format(weights, format!("not a readable safetensors file: {e}")))?;
    Ok(all
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.to_vec()))
        .collect())
}

/// Whether a stored tensor holds a NaN or an infinity (`None`: not readable as f32).
fn non_finite(t: &burn::store::burn_pack::Tensor) -> Option<bool> {
    let data = burn::store::bridge::to_data(t).ok()?;
    let values = data.as_slice::<f32>().ok()?;
    Some(values.iter().any(|v| !v.is_finite()))
}

/// Refuses a checkpoint whose tensors `names` (all when `None`) hold NaN or infinite values,
/// naming the first: a model trained into NaN predicts garbage with confident probabilities.
fn check_finite(
    store: &mut SafetensorsStore,
    weights: &Path,
    names: Option<&[String]>,
) -> Result<()> {
    let all = store
        .get_all_tensors()
        .map_err(|e| Error::format(weights, format!("not a readable safetensors file: {e}")))?;
    for (name, t) in all {
        if names.is_some_and(|n| !n.contains(name)) {
            continue;
        }
        if non_finite(t) == Some(true) {
            return Err(Error::format(
                weights,
                format!(
                    "tensor {name} holds NaN or infinite values: the weights are unusable (trained \
                     with too high a learning rate?)"
                ),
            ));
        }
    }
    Ok(())
}

/// The first of `model`'s tensors (parameters and batch-norm statistics) holding a NaN or an
/// infinity, if any.
pub fn non_finite_tensor(model: &Net) -> Option<String> {
    model
        .collect(None, None, false)
        .into_iter()
        .find(|t| non_finite(t) == Some(true))
        .map(|t| t.name.clone())
}

fn model_shapes(model: &Net) -> BTreeMap<String, Vec<usize>> {
    model
        .collect(None, None, false)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect()
}

/// Loads a complete checkpoint for evaluation or prediction.
pub fn load(path: &Path, device: &Device) -> Result<(Net, Meta)> {
    let weights = resolve(path)?;
    let meta = read_meta(&weights)?;
    let bytes = std::fs::read(&weights).map_err(|e| Error::io(&weights, e))?;
    let model = load_weights(&weights, bytes, &meta, device)?;
    Ok((model, meta))
}

/// Builds the model `meta` describes from safetensors bytes, checking every tensor's name and
/// shape first; `weights` is only used in errors.
pub fn load_weights(weights: &Path, bytes: Vec<u8>, meta: &Meta, device: &Device) -> Result<Net> {
    if meta.arch != ArchConfig::standard(meta.arch.classes)
        || meta.arch.classes == 0
        || meta.arch.classes > 100_000
    {
        return Err(Error::format(
            sidecar(weights),
            format!("unsupported layer sizes {:?}", meta.arch),
        ));
    }
    let mut model = meta.arch.init(device);
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let have = tensor_shapes(&mut store, weights)?;
    check_finite(&mut store, weights, None)?;
    let want = model_shapes(&model);
    for (name, shape) in &want {
        match have.get(name) {
            None => {
                return Err(Error::format(
                    weights,
                    format!("tensor {name} is missing: not a checkpoint of this model"),
                ));
            }
            Some(s) if s != shape => {
                return Err(Error::format(
                    weights,
                    format!("tensor {name} has shape {s:?}, the model needs {shape:?}"),
                ));
            }
            _ => {}
        }
    }
    let res = model
        .load_from(&mut store)
        .map_err(|e| Error::format(weights, format!("cannot load weights: {e}")))?;
    if !res.errors.is_empty() {
        return Err(Error::format(
            weights,
            format!("cannot load weights: {:?}", res.errors),
        ));
    }
    Ok(model)
}

/// What `--init` copied and what it left freshly initialised.
#[derive(Debug, Clone, Default)]
pub struct TransferReport {
    /// Model tensors copied from the checkpoint.
    pub loaded: Vec<String>,
    /// Model tensors with no same-named, same-shaped tensor in the checkpoint.
    pub fresh: Vec<String>,
    /// Checkpoint tensors the model did not use.
    pub unused: Vec<String>,
}

impl std::fmt::Display for TransferReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "loaded {} tensors: {}",
            self.loaded.len(),
            self.loaded.join(", ")
        )?;
        if self.fresh.is_empty() {
            write!(f, "new: none")
        } else {
            write!(
                f,
                "new (freshly initialised) {} tensors: {}",
                self.fresh.len(),
                self.fresh.join(", ")
            )
        }
    }
}

/// Copies into `model` every checkpoint tensor whose name and shape match, except those under the
/// module names in `skip` (e.g. `["fc2"]` for a new classifier head); the rest of the model (for
/// instance a classifier head of another size) keeps its fresh initialisation.
pub fn transfer(model: &mut Net, path: &Path, skip: &[&str]) -> Result<TransferReport> {
    let weights = resolve(path)?;
    let mut store = open_store(&weights)?;
    let have = tensor_shapes(&mut store, &weights)?;
    let want = model_shapes(model);
    let mut rep = TransferReport::default();
    for (name, shape) in &want {
        let skipped = skip.iter().any(|m| name.starts_with(&format!("{m}.")));
        if have.get(name) == Some(shape) && !skipped {
            rep.loaded.push(name.clone());
        } else {
            rep.fresh.push(name.clone());
        }
    }
    rep.unused = have
        .keys()
        .filter(|k| !rep.loaded.contains(k))
        .cloned()
        .collect();
    if rep.loaded.is_empty() {
        return Err(Error::format(
            &weights,
            "no tensor matches this model by name and shape: not a warmstart checkpoint",
        ));
    }
    check_finite(&mut store, &weights, Some(&rep.loaded))?;
    let mut filter = PathFilter::new();
    for n in &rep.loaded {
        filter = filter.with_full_path(n.clone());
    }
    let mut store = store.filter(filter).allow_partial(true);
    let res = model
        .load_from(&mut store)
        .map_err(|e| Error::format(&weights, format!("cannot load weights: {e}")))?;
    if !res.errors.is_empty() {
        return Err(Error::format(
            &weights,
            format!("cannot load weights: {:?}", res.errors),
        ));
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::images_tensor;

    fn meta(classes: usize) -> Meta {
        let record = crate::plan::resolve(crate::record::Stage::Train, &Default::default())
            .unwrap()
            .record;
        Meta::new(
            (0..classes).map(|i| format!("c{i}")).collect(),
            record,
            Metrics::default(),
        )
    }

    fn predict(m: &Net, x: &Tensor<4>) -> Vec<f32> {
        m.valid()
            .forward(x.clone())
            .into_data()
            .iter::<f32>()
            .collect()
    }

    #[test]
    fn round_trip_gives_identical_predictions() {
        let device = Device::flex();
        device.seed(3);
        let m = ArchConfig::standard(10).init(&device);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("best.safetensors");
        save(&m, &meta(10), &p).unwrap();
        let (m2, meta2) = load(d.path(), &device).unwrap();
        assert_eq!(meta2, meta(10));
        let x = images_tensor(
            (0..2 * 784).map(|i| (i % 255) as f32 / 255.0).collect(),
            &device,
        );
        assert_eq!(predict(&m, &x), predict(&m2, &x));
    }

    #[test]
    fn transfer_copies_matching_and_reinitialises_head() {
        let device = Device::flex();
        device.seed(4);
        let src = ArchConfig::standard(10).init(&device);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.safetensors");
        save(&src, &meta(10), &p).unwrap();
        let mut dst = ArchConfig::standard(5).init(&device);
        let head_before: Vec<f32> = dst.fc2.weight.val().into_data().iter::<f32>().collect();
        let rep = transfer(&mut dst, &p, &[]).unwrap();
        assert!(rep.fresh.contains(&"fc2.weight".to_string()), "{rep}");
        assert!(rep.fresh.contains(&"fc2.bias".to_string()), "{rep}");
        assert!(rep.loaded.contains(&"conv1.weight".to_string()), "{rep}");
        assert!(rep.loaded.iter().any(|n| n.starts_with("bn3.")), "{rep}");
        let w = |m: &Net| -> Vec<f32> { m.conv2.weight.val().into_data().iter::<f32>().collect() };
        assert_eq!(w(&src), w(&dst));
        let head_after: Vec<f32> = dst.fc2.weight.val().into_data().iter::<f32>().collect();
        assert_eq!(head_before, head_after);
        // Same class count: everything is copied.
        let mut same = ArchConfig::standard(10).init(&device);
        let rep = transfer(&mut same, &p, &[]).unwrap();
        assert!(rep.fresh.is_empty(), "{rep}");
        // Unless the head is asked to be new.
        let mut fresh_head = ArchConfig::standard(10).init(&device);
        let rep = transfer(&mut fresh_head, &p, &["fc2"]).unwrap();
        assert_eq!(
            rep.fresh,
            vec!["fc2.bias".to_string(), "fc2.weight".to_string()],
            "{rep}"
        );
        assert_ne!(
            src.fc2
                .weight
                .val()
                .into_data()
                .iter::<f32>()
                .collect::<Vec<_>>(),
            fresh_head
                .fc2
                .weight
                .val()
                .into_data()
                .iter::<f32>()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn missing_or_corrupt_sidecar() {
        let device = Device::flex();
        let m = ArchConfig::standard(3).init(&device);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("best.safetensors");
        save(&m, &meta(3), &p).unwrap();
        std::fs::write(sidecar(&p), "{not json").unwrap();
        let e = load(&p, &device).unwrap_err().to_string();
        assert!(
            e.contains("corrupt checkpoint sidecar") && e.contains("best.json"),
            "{e}"
        );
        std::fs::remove_file(sidecar(&p)).unwrap();
        let e = load(&p, &device).unwrap_err().to_string();
        assert!(e.contains("sidecar is missing"), "{e}");
    }

    #[test]
    fn checkpoint_for_another_class_count_is_refused() {
        let device = Device::flex();
        let m = ArchConfig::standard(3).init(&device);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("best.safetensors");
        save(&m, &meta(3), &p).unwrap();
        // The sidecar claims 4 classes; the weights have 3.
        let mut bad = meta(4);
        bad.arch.classes = 4;
        std::fs::write(sidecar(&p), serde_json::to_vec(&bad).unwrap()).unwrap();
        let e = load(&p, &device).unwrap_err().to_string();
        assert!(e.contains("fc2") && e.contains("shape"), "{e}");
        let mut other = meta(3);
        other.architecture = "resnet".into();
        std::fs::write(sidecar(&p), serde_json::to_vec(&other).unwrap()).unwrap();
        let e = load(&p, &device).unwrap_err().to_string();
        assert!(e.contains("architecture"), "{e}");
    }

    #[test]
    fn garbage_weights_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("best.safetensors");
        std::fs::write(&p, b"garbage").unwrap();
        std::fs::write(sidecar(&p), serde_json::to_vec(&meta(3)).unwrap()).unwrap();
        let e = load(&p, &Device::flex()).unwrap_err().to_string();
        assert!(e.contains("best.safetensors"), "{e}");
    }
}
