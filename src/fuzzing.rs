//! Entry points for the fuzz targets (`fuzz/`) and for the regression test that replays every input
//! they found crashing (`tests/fuzz_regressions.rs`). Each takes arbitrary bytes and must return
//! without panicking, whatever they hold.

use crate::checkpoint;
use crate::data::{Invert, csv, folder, idx};
use std::path::Path;

const P: &str = "fuzz-input";

/// The IDX loader: gzip detection and decompression, header and body checks.
pub fn idx(data: &[u8]) {
    let p = Path::new(P);
    if let Ok(bytes) = idx::gunzip_if_needed(p, data.to_vec())
        && let Ok(a) = idx::parse(p, &bytes)
    {
        assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
    }
}

/// The CSV loader.
pub fn csv(data: &[u8]) {
    if let Ok(set) = csv::read_from(Path::new(P), data) {
        assert_eq!(set.pixels().len(), set.len() * crate::data::PIXELS);
    }
}

/// The image-folder loader's decoding and conversion of one file.
pub fn image(data: &[u8]) {
    if let Ok(img) = folder::decode_bytes(Path::new(P), data) {
        let _ = folder::to_mnist(&img, Invert::Auto);
    }
}

/// The checkpoint loader: the first byte chooses between the sidecar JSON, the safetensors weights
/// (with a valid sidecar) and the resume file.
pub fn checkpoint(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let p = Path::new("fuzz.safetensors");
    match which % 3 {
        0 => {
            let _ = checkpoint::parse_meta(p, rest);
        }
        1 => {
            let meta = checkpoint::Meta::new(
                (0..10).map(|i| i.to_string()).collect(),
                Invert::Auto,
                serde_json::json!({}),
                checkpoint::Metrics::default(),
            );
            let _ =
                checkpoint::load_weights(p, rest.to_vec(), &meta, &burn::prelude::Device::flex());
        }
        _ => {
            let _ = crate::resume::parse(p, rest);
        }
    }
}
