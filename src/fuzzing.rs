//! Entry points for the fuzz targets (`fuzz/`) and for the regression test that replays every input
//! they found crashing (`tests/fuzz_regressions.rs`). Each takes arbitrary bytes and returns what
//! the loader made of them — `Ok` for input it accepted, `Err` for input it refused — and must
//! never panic, whatever they hold. Accepted input is also checked for consistency here.

use crate::checkpoint;
use crate::data::{Invert, PIXELS, csv, idx, prepare};
use crate::error::Result;
use crate::plan::{self, TrainRequest};
use crate::record::Stage;
use std::path::Path;

const P: &str = "fuzz-input";

/// The IDX loader: gzip detection and decompression, header and body checks.
pub fn idx(data: &[u8]) -> Result<()> {
    let p = Path::new(P);
    let bytes = idx::gunzip_if_needed(p, data.to_vec())?;
    let a = idx::parse(p, &bytes)?;
    assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
    Ok(())
}

/// The CSV loader.
pub fn csv(data: &[u8]) -> Result<()> {
    let set = csv::read_from(Path::new(P), data)?;
    assert_eq!(set.pixels().len(), set.len() * PIXELS);
    Ok(())
}

/// The image-folder loader's decoding and conversion of one file.
pub fn image(data: &[u8]) -> Result<()> {
    let img = prepare::decode_bytes(Path::new(P), data)?;
    let _ = prepare::prepare(&img, Invert::Auto, prepare::Fit::Box);
    Ok(())
}

/// The checkpoint loader: the first byte chooses between the sidecar JSON, the safetensors weights
/// (with a valid sidecar) and the resume file.
pub fn checkpoint(data: &[u8]) -> Result<()> {
    let Some((&which, rest)) = data.split_first() else {
        return Err(crate::Error::invalid("empty input"));
    };
    let p = Path::new("fuzz.safetensors");
    match which % 3 {
        0 => checkpoint::parse_meta(p, rest).map(|_| ()),
        1 => {
            let record = plan::resolve(Stage::Pretrain, &TrainRequest::default())?.record;
            let classes = (0..10).map(|i| i.to_string()).collect();
            let meta = checkpoint::Meta::new(classes, record, checkpoint::Metrics::default());
            let device = burn::prelude::Device::flex();
            checkpoint::load_weights(p, rest.to_vec(), &meta, &device).map(|_| ())
        }
        _ => crate::train::resume::parse(p, rest).map(|_| ()),
    }
}
