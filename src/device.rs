//! Choosing where tensors live: burn's `flex` CPU backend, or `wgpu` for GPUs when built with the
//! `gpu` feature.

use crate::error::{Error, Result};
use burn::prelude::Device;

/// Where to compute.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// burn's `flex` backend with warmstart's fused ops.
    #[default]
    Cpu,
    /// burn's `wgpu` backend (needs the `gpu` feature).
    Gpu,
}

/// The device for `kind`, seeded so that initialisation and dropout are reproducible.
pub fn make(kind: DeviceKind, seed: u64) -> Result<Device> {
    let device = match kind {
        DeviceKind::Cpu => Device::flex(),
        DeviceKind::Gpu => gpu()?,
    };
    device.seed(seed);
    Ok(device)
}

#[cfg(feature = "gpu")]
fn gpu() -> Result<Device> {
    Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "gpu"))]
fn gpu() -> Result<Device> {
    Err(Error::invalid(
        "this warmstart was built without GPU support; rebuild with `cargo build --release --features gpu`",
    ))
}

/// Runs `f` on a worker thread of the global CPU pool (sized by [`set_threads`] beforehand).
///
/// Why: a parallel op started from a thread outside the pool is queued and wakes sleeping
/// workers, then puts the caller to sleep; from a worker it is split in place and the other
/// workers steal their share. A training step runs ~100 such ops: over 300 batch-32 steps this
/// took context switches from 46,000 to 6,000 and training from ~2,900 to ~3,250 images/s.
pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Sizes the CPU thread pool used by the `flex` backend. Call once, before any tensor work.
pub fn set_threads(n: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::invalid(format!("cannot set --threads {n}: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn on_workers_runs_the_closure_on_a_pool_worker_and_returns_its_value() {
        assert_eq!(
            rayon::current_thread_index(),
            None,
            "tests run outside the pool"
        );
        let (index, value) = super::on_workers(|| (rayon::current_thread_index(), 7));
        assert!(index.is_some(), "the closure ran on the calling thread");
        assert_eq!(value, 7);
    }
}
