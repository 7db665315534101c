//! warmstart: train small CNN image classifiers on scarce data, starting from pretrained weights.
//!
//! The library does the work; the `warmstart` binary is a thin CLI over it. A run is:
//! [`data::load`] a dataset → [`model::ArchConfig::init`] a network → optionally
//! [`checkpoint::transfer`] pretrained weights into it → [`train::fit`] → [`eval`].

pub mod augment;
pub mod batch;
pub mod bench;
pub mod bundled;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod fast;
pub mod fsutil;
pub mod fuzzing;
pub mod model;
pub mod report;
pub mod resume;
pub mod train;

pub use error::{Error, Result};
