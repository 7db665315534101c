#![warn(missing_docs)]
//! warmstart: train small CNN image classifiers on scarce data, starting from pretrained weights.
//!
//! The library does the work; the `warmstart` binary is a thin CLI over it. The modules follow
//! the pipeline: [`data`] (loading and splitting) → [`augment`] → [`batch`] → [`model`] (with
//! [`fast`], the fused CPU kernels) → [`options`] (what a user asks for) → [`record`] (what a run
//! was given) → [`checkpoint`] → [`plan`] (resolving a request into a record) → [`eval`] →
//! [`train`] → [`report`] → [`pipeline`] (the commands end to end), and the commands of many
//! runs: [`compare`], [`audit`]; and [`suggest`], which images to label next. Imports point one way: no
//! module imports one that imports it back (`tests/layers.rs` checks it).

pub mod audit;
pub mod augment;
pub mod batch;
pub mod bench;
pub mod budget;
pub mod bundled;
pub mod cancel;
pub mod checkpoint;
pub mod cluster;
pub mod compare;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod export;
pub mod fast;
pub mod flags;
pub mod fsutil;
pub mod fuzzing;
pub mod history;
pub mod lrfind;
pub mod model;
pub mod options;
pub mod pipeline;
pub mod plan;
pub mod predict;
pub mod progress;
pub mod record;
pub mod report;
pub mod schedule;
pub mod serve;
pub mod suggest;
pub mod train;
pub mod unlabeled;

pub use error::{Error, Result};
