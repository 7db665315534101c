//! ONNX export: the network in inference mode as an ONNX model (opset 18) with a dynamic batch
//! dimension, input `images` `[N, 1, 28, 28]` float32 (light-on-dark pixels divided by 255, as
//! warmstart feeds it), outputs `logits` and `probabilities` (softmax), and `metadata_props` that
//! say how to prepare images and what the classes are.
//!
//! burn-onnx's exporter traces [`Net::forward_reference`] on burn's capture device and lowers it
//! (Conv, BatchNormalization, MaxPool, Relu, Reshape, MatMul + Add; dropout vanishes outside
//! training). Three things it does not do are done afterwards on the decoded `ModelProto`
//! (onnx-ir's protobuf types): it cannot lower burn's softmax (an unsupported operation in 0.22),
//! so a standard `Softmax` node is appended; it numbers the graph's inputs and outputs, so they
//! are renamed; it writes no model metadata.

use crate::checkpoint::Meta;
use crate::data::SIDE;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::Net;
use burn::prelude::*;
use burn_onnx::export::{AxisSpec, InputSpec, OnnxExporter};
use onnx_ir::{AttributeProto, AttributeType, Message, ModelProto, NodeProto};
use std::path::Path;

/// The name of the model's input.
pub const INPUT: &str = "images";
/// The names of the model's outputs, in order.
pub const OUTPUTS: [&str; 2] = ["logits", "probabilities"];

/// Exports `model` (described by its sidecar `meta`) as ONNX bytes.
pub fn to_onnx(model: &Net, meta: &Meta) -> Result<Vec<u8>> {
    let device = Device::flex();
    let sample = |n: usize| Tensor::<4>::zeros([n, 1, SIDE, SIDE], &device);
    let specs = [InputSpec::new([
        AxisSpec::dynamic("batch"),
        AxisSpec::Static,
        AxisSpec::Static,
        AxisSpec::Static,
    ])];
    let onnx = OnnxExporter::new()
        .export_dynamic(model, sample(2), sample(3), &specs, |net: &Net, x| {
            net.forward_reference(x)
        })
        .map_err(|e| Error::invalid(format!("the ONNX exporter failed: {e}")))?;
    let mut proto = ModelProto::parse_from_bytes(onnx.as_bytes())
        .map_err(|e| Error::invalid(format!("the exporter wrote an unreadable model: {e}")))?;
    name_graph_ends(&mut proto)?;
    append_softmax(&mut proto)?;
    describe(&mut proto, meta)?;
    proto
        .write_to_bytes()
        .map_err(|e| Error::invalid(format!("could not encode the ONNX model: {e}")))
}

/// Exports `model` to `out` (written atomically).
pub fn save(model: &Net, meta: &Meta, out: &Path) -> Result<()> {
    let bytes = to_onnx(model, meta)?;
    write_atomic(out, &bytes)
}

/// Checks, before any work, that `export --out OUT` may write `out` for the checkpoint `model`:
/// never over the checkpoint or its sidecar, and over an existing file only with `overwrite`.
pub fn check_out(model: &Path, out: &Path, overwrite: bool) -> Result<()> {
    let weights = crate::checkpoint::resolve(model)?;
    let sidecar = crate::checkpoint::sidecar(&weights);
    crate::fsutil::check_output(out, overwrite, &[weights.as_path(), sidecar.as_path()])
}

/// Renames the graph's input and outputs (burn-onnx numbers them) wherever they are used.
fn name_graph_ends(proto: &mut ModelProto) -> Result<()> {
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| Error::invalid("the exported model has no graph"))?;
    if graph.input.len() != 1 || graph.output.len() != 1 {
        return Err(Error::invalid(format!(
            "the exported graph has {} inputs and {} outputs, expected one of each",
            graph.input.len(),
            graph.output.len(),
        )));
    }
    let renames = [
        (graph.input[0].name.clone(), INPUT.to_string()),
        (graph.output[0].name.clone(), OUTPUTS[0].to_string()),
    ];
    let rename = |name: &mut String| {
        if let Some((_, new)) = renames.iter().find(|(old, _)| old == name) {
            *name = new.clone();
        }
    };
    for v in graph.input.iter_mut().chain(graph.output.iter_mut()) {
        rename(&mut v.name);
    }
    for node in graph.node.iter_mut() {
        node.input.iter_mut().for_each(rename);
        node.output.iter_mut().for_each(rename);
    }
    Ok(())
}

/// Adds `probabilities = Softmax(logits, axis=1)` as the second output (same type and shape).
fn append_softmax(proto: &mut ModelProto) -> Result<()> {
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| Error::invalid("the exported model has no graph"))?;
    let mut axis = AttributeProto::new();
    axis.name = "axis".into();
    axis.type_ = AttributeType::INT.into();
    axis.i = 1;
    let mut node = NodeProto::new();
    node.name = "softmax".into();
    node.op_type = "Softmax".into();
    node.input = vec![OUTPUTS[0].into()];
    node.output = vec![OUTPUTS[1].into()];
    node.attribute.push(axis);
    graph.node.push(node);
    let mut out = graph.output[0].clone();
    out.name = OUTPUTS[1].into();
    graph.output.push(out);
    Ok(())
}

/// The metadata a user of the file needs: classes, input preparation, provenance.
fn describe(proto: &mut ModelProto, meta: &Meta) -> Result<()> {
    let test_acc = meta
        .metrics
        .test_acc
        .map(|a| format!("{a:.6}"))
        .unwrap_or_default();
    let entries = [
        ("warmstart_version", env!("CARGO_PKG_VERSION").to_string()),
        ("architecture", meta.architecture.clone()),
        ("classes", json(&meta.classes)?),
        ("input", json(&meta.input)?),
        (
            "normalisation",
            "float32 = byte / 255, light strokes on a dark background".into(),
        ),
        ("polarity", meta.input.polarity.clone()),
        ("fit", meta.input.fit.name().into()),
        ("test_accuracy", test_acc),
        ("epoch", meta.metrics.epoch.to_string()),
    ];
    proto.producer_name = "warmstart".into();
    proto.producer_version = env!("CARGO_PKG_VERSION").into();
    proto.doc_string = format!(
        "warmstart {} classifier of 28x28 grayscale images into {} classes",
        meta.architecture,
        meta.classes.len()
    );
    for (key, value) in entries {
        if value.is_empty() {
            continue;
        }
        // The entry type is private to onnx-ir; the vector's element type names it for us.
        proto.metadata_props.push(Default::default());
        if let Some(e) = proto.metadata_props.last_mut() {
            e.key = key.into();
            e.value = value;
        }
    }
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| Error::invalid(format!("could not write ONNX metadata: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Metrics;
    use crate::model::ArchConfig;
    use crate::record::Stage;

    #[test]
    fn the_graph_has_named_ends_metadata_and_no_dropout() {
        let device = Device::flex();
        let net = ArchConfig::standard(3).init(&device);
        let record = crate::plan::resolve(Stage::Train, &Default::default())
            .unwrap()
            .record;
        let classes = vec!["a".to_string(), "b\"quote".to_string(), "c".to_string()];
        let meta = Meta::new(classes.clone(), record, Metrics::default());
        let bytes = to_onnx(&net, &meta).unwrap();
        let proto = ModelProto::parse_from_bytes(&bytes).unwrap();
        let graph = proto.graph.as_ref().unwrap();
        assert_eq!(graph.input[0].name, INPUT);
        let outs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(outs, OUTPUTS);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        for op in ["Conv", "BatchNormalization", "MaxPool", "Relu"] {
            assert!(ops.contains(&op), "{op} missing from {ops:?}");
        }
        assert!(!ops.iter().any(|o| o.contains("Dropout")), "{ops:?}");
        let meta_of = |k: &str| {
            proto
                .metadata_props
                .iter()
                .find(|e| e.key == k)
                .map(|e| e.value.clone())
        };
        let back: Vec<String> = serde_json::from_str(&meta_of("classes").unwrap()).unwrap();
        assert_eq!(back, classes);
        assert_eq!(meta_of("fit").as_deref(), Some("box"));
        assert_eq!(meta_of("test_accuracy"), None);
    }
}
