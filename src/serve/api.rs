//! What the JSON API answers, apart from HTTP: a prediction for an uploaded image file and the
//! model's description. Pure functions of the bytes received, so they are tested without a server.

use crate::checkpoint::Meta;
use crate::data::PIXELS;
use crate::data::decode;
use crate::data::memory::Reservation;
use crate::data::prepare::{self, Fit, Invert};
use crate::eval::{argmax, image_probabilities};
use crate::model::Net;
use burn::prelude::Device;
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::Path;

/// The answer to `POST /api/predict`.
#[derive(Debug, Serialize)]
pub struct Prediction {
    /// The most likely class's name.
    pub class: String,
    /// Its index in the model's class list.
    pub index: usize,
    /// Each class's probability, by class name.
    pub probabilities: Map<String, Value>,
    /// The 28x28 image the model saw, row by row (0 = background, 255 = ink).
    pub image: Vec<u8>,
    /// How the image was fitted into 28x28.
    pub fit: Fit,
}

/// How to prepare an uploaded image: from the query string, else the model's own settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prep {
    /// Inversion to light-on-dark.
    pub invert: Invert,
    /// Fit into 28x28.
    pub fit: Fit,
}

impl Prep {
    /// The model's settings with `fit=` and `invert=` of a query string applied; an unknown key
    /// or value is an error naming it.
    pub fn from_query(meta: &Meta, query: &str) -> Result<Prep, String> {
        let mut prep = Prep {
            invert: meta.input.invert,
            fit: meta.input.fit,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (k, v) {
                ("fit", "box") => prep.fit = Fit::Box,
                ("fit", "mnist") => prep.fit = Fit::Mnist,
                ("invert", "auto") => prep.invert = Invert::Auto,
                ("invert", "yes") => prep.invert = Invert::Yes,
                ("invert", "no") => prep.invert = Invert::No,
                ("fit", _) => return Err(format!("fit must be box or mnist, not {v:?}")),
                ("invert", _) => return Err(format!("invert must be auto, yes or no, not {v:?}")),
                _ => {
                    return Err(format!(
                        "unknown query parameter {k:?} (fit and invert exist)"
                    ));
                }
            }
        }
        Ok(prep)
    }
}

/// Decodes an uploaded image file with `memory` (reserved for it: [`decode::reserve`]),
/// prepares it as `prep` says and runs the model on it. An undecodable file is an error message
/// for a 400.
pub fn predict(
    net: &Net,
    meta: &Meta,
    device: &Device,
    body: &[u8],
    prep: Prep,
    memory: &Reservation,
) -> Result<Prediction, String> {
    if body.is_empty() {
        return Err("the request has no body: send an image file (PNG, JPEG, ...)".into());
    }
    let img =
        decode::decode_reserved(Path::new("upload"), body, memory).map_err(|e| e.to_string())?;
    let px = prepare::prepare(&img, prep.invert, prep.fit);
    if prepare::is_blank(&px) {
        return Err("the image is blank once prepared (nothing drawn on it): no class".into());
    }
    Ok(classify(net, meta, device, &px, prep.fit))
}

/// Runs the model on one prepared image.
pub fn classify(
    net: &Net,
    meta: &Meta,
    device: &Device,
    px: &[u8; PIXELS],
    fit: Fit,
) -> Prediction {
    let probs = image_probabilities(net, px, device);
    let index = argmax(&probs);
    let probabilities = meta
        .classes
        .iter()
        .zip(&probs)
        .map(|(c, &p)| (c.clone(), Value::from(f64::from(p))))
        .collect();
    Prediction {
        class: meta.classes.get(index).cloned().unwrap_or_default(),
        index,
        probabilities,
        image: px.to_vec(),
        fit,
    }
}

/// The answer to `GET /api/model`.
pub fn describe(name: &str, meta: &Meta) -> Value {
    serde_json::json!({
        "name": name,
        "classes": meta.classes,
        "test_accuracy": meta.metrics.test_acc,
        "epoch": meta.metrics.epoch,
        "input": meta.input,
        "warmstart_version": meta.warmstart_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Metrics;
    use crate::model::ArchConfig;
    use crate::record::Stage;

    fn meta() -> Meta {
        let record = crate::plan::resolve(Stage::Train, &Default::default())
            .unwrap()
            .record;
        Meta::new(
            vec!["zero".into(), "one".into()],
            record,
            Metrics::default(),
        )
    }

    #[test]
    fn queries_override_the_model_and_unknown_ones_are_named() {
        let m = meta();
        let p = Prep::from_query(&m, "").unwrap();
        assert_eq!((p.fit, p.invert), (m.input.fit, m.input.invert));
        let p = Prep::from_query(&m, "fit=mnist&invert=yes").unwrap();
        assert_eq!((p.fit, p.invert), (Fit::Mnist, Invert::Yes));
        assert!(
            Prep::from_query(&m, "fit=square")
                .unwrap_err()
                .contains("square")
        );
        assert!(Prep::from_query(&m, "size=3").unwrap_err().contains("size"));
    }

    #[test]
    fn garbage_is_an_error_and_a_png_is_classified() {
        let device = Device::flex();
        let net = ArchConfig::standard(2).init(&device);
        let m = meta();
        let prep = Prep::from_query(&m, "").unwrap();
        let held = |b: &[u8]| decode::reserve(Path::new("t"), b, None).unwrap().unwrap();
        assert!(predict(&net, &m, &device, b"", prep, &held(b"")).is_err());
        let garbage = b"not an image at all";
        assert!(predict(&net, &m, &device, garbage, prep, &held(garbage)).is_err());
        let mut png = Vec::new();
        image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(56, 56, |x, y| {
            image::Luma([if (20..36).contains(&x) && y > 8 {
                255
            } else {
                0
            }])
        }))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
        let p = predict(&net, &m, &device, &png, prep, &held(&png)).unwrap();
        assert_eq!(p.image.len(), PIXELS);
        // A white page and a black one have nothing to classify.
        for v in [0u8, 255] {
            let mut blank = Vec::new();
            image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(40, 40, image::Luma([v])))
                .write_to(
                    &mut std::io::Cursor::new(&mut blank),
                    image::ImageFormat::Png,
                )
                .unwrap();
            let e = predict(&net, &m, &device, &blank, prep, &held(&blank)).unwrap_err();
            assert!(e.contains("blank"), "{e}");
        }
        let total: f64 = p.probabilities.values().filter_map(Value::as_f64).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert_eq!(p.class, m.classes[p.index]);
    }
}
