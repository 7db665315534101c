//! The network a run starts from: random, or the `--init` checkpoint's tensors, with the
//! classifier head reused only when it predicts the data's classes.

use crate::checkpoint;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{ArchConfig, Net};
use crate::plan::TrainPlan;
use crate::record::{Fingerprint, InitRecord};
use burn::prelude::Device;
use std::path::Path;

/// Whether a checkpoint's classifier head may be reused for data with `classes`: only when it
/// predicts the same classes (the same count is not enough: MNIST's digits and Fashion-MNIST's
/// garments are both 10 classes) and `--new-head` was not given. The checkpoint's sidecar must be
/// readable: without it there is no telling what the head predicts.
pub fn reuse_head(checkpoint: &Path, classes: &[String], new_head_flag: bool) -> Result<bool> {
    let meta = checkpoint::read_meta(&checkpoint::resolve(checkpoint)?)?;
    Ok(!new_head_flag && meta.classes == classes)
}

/// The network to start from, for the loaded `data`: random, or the `--init` checkpoint's
/// tensors (the head only by [`reuse_head`]). Records the data's fingerprint and the head
/// decision in the plan; also returns what was loaded, for the user.
pub fn initial_model(
    plan: &mut TrainPlan,
    data: &Dataset,
    device: &Device,
) -> Result<(Net, String)> {
    plan.record.data.fingerprint = Some(Fingerprint::of(data));
    let mut model = ArchConfig::standard(data.classes.len()).init(device);
    let InitRecord::Checkpoint { path, new_head } = &mut plan.record.init else {
        return Ok((model, "Init: random weights".into()));
    };
    if plan.init_defaulted && !path.exists() {
        return Err(Error::invalid(format!(
            "no pretrained checkpoint at {}: run `warmstart pretrain` first, or pass --init PATH or --init random",
            path.display()
        )));
    }
    *new_head = !reuse_head(path, &data.classes, plan.new_head_flag)?;
    let skip: &[&str] = if *new_head { &["fc2"] } else { &[] };
    let rep = checkpoint::transfer(&mut model, path, skip)?;
    let mut said = format!("Init: {}\n{rep}", path.display());
    if *new_head && !plan.new_head_flag {
        said.push_str("\n(the checkpoint's classes differ from the data's: new classifier head)");
    }
    Ok((model, said))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Meta;
    use crate::plan::{TrainRequest, resolve};
    use crate::record::Stage;

    #[test]
    fn the_head_is_reused_only_for_the_same_class_names_and_needs_a_sidecar() {
        let device = Device::flex();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("best.safetensors");
        let digits: Vec<String> = (0..3).map(|i| i.to_string()).collect();
        let record = resolve(Stage::Pretrain, &TrainRequest::default())
            .unwrap()
            .record;
        let meta = Meta::new(digits.clone(), record, Default::default());
        checkpoint::save(&ArchConfig::standard(3).init(&device), &meta, &p).unwrap();
        assert!(reuse_head(&p, &digits, false).unwrap());
        assert!(!reuse_head(&p, &digits, true).unwrap());
        let other: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert!(!reuse_head(&p, &other, false).unwrap());
        // No sidecar: an error, not "the same classes".
        std::fs::remove_file(checkpoint::sidecar(&p)).unwrap();
        let e = reuse_head(&p, &digits, false).unwrap_err().to_string();
        assert!(e.contains("sidecar is missing"), "{e}");
    }
}
