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

/// The arithmetic of the matrix multiplies, as a run resolved it (`--precision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 everywhere.
    #[default]
    Fp32,
    /// The convolution and dense multiplies (forward and backward) with bf16 operands and f32
    /// sums; batch norm, loss, softmax, Adam and the weights stay f32.
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// What `--precision` asks for.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionRequest {
    /// bf16 where the CPU has bf16 dot products (AVX512_BF16) and the fused CPU path runs; fp32
    /// otherwise.
    #[default]
    Auto,
    /// f32 everywhere.
    Fp32,
    /// bf16 multiplies; an error where the CPU lacks them.
    Bf16,
}

/// Whether this CPU has the bf16 dot-product instructions the bf16 kernels use (AVX512_BF16,
/// with AVX512F/BW for the packing). CPUs with only AMX-BF16 also have AVX512_BF16.
pub fn cpu_has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The precision a run on `kind` computes in. bf16 runs only in warmstart's fused CPU kernels:
/// burn's own ops (the GPU, or the CPU with `WARMSTART_REFERENCE_OPS` set) stay f32.
pub fn resolve_precision(req: PrecisionRequest, kind: DeviceKind) -> Result<Precision> {
    let fused_cpu = kind == DeviceKind::Cpu && std::env::var_os(REFERENCE_OPS_ENV).is_none();
    match req {
        PrecisionRequest::Fp32 => Ok(Precision::Fp32),
        PrecisionRequest::Auto if fused_cpu && cpu_has_bf16() => Ok(Precision::Bf16),
        PrecisionRequest::Auto => Ok(Precision::Fp32),
        PrecisionRequest::Bf16 => check_bf16(kind).map(|()| Precision::Bf16),
    }
}

/// Whether bf16 can run on `kind` here; the error says why not.
pub fn check_bf16(kind: DeviceKind) -> Result<()> {
    if kind != DeviceKind::Cpu {
        return Err(Error::invalid(
            "--precision bf16 runs on the CPU only (the GPU path computes in fp32); use --precision fp32 or auto",
        ));
    }
    if std::env::var_os(REFERENCE_OPS_ENV).is_some() {
        return Err(Error::invalid(format!(
            "--precision bf16 needs warmstart's fused CPU kernels, which {REFERENCE_OPS_ENV} turns off"
        )));
    }
    if !cpu_has_bf16() {
        return Err(Error::invalid(
            "--precision bf16: this CPU has no bf16 dot-product instructions (AVX512_BF16); use --precision fp32 or auto",
        ));
    }
    Ok(())
}

/// Set to any value to run the model on burn's reference ops instead of the fused ones (A/B
/// benchmarks, debugging).
pub const REFERENCE_OPS_ENV: &str = "WARMSTART_REFERENCE_OPS";

/// The device for inference (`predict`, `serve`, `bench`): it draws no random numbers, but is
/// seeded all the same so that nothing it computes can differ between runs.
pub fn for_inference(kind: DeviceKind) -> Result<Device> {
    make(kind, INFERENCE_SEED)
}

/// The seed of [`for_inference`]'s device.
const INFERENCE_SEED: u64 = 0;

/// Sets the worker threads to `n`, at most the machine's cores (more only add switching: an
/// epoch 100x slower at 1000 threads); returns a warning when `n` was capped.
pub fn set_threads_capped(n: usize) -> Result<Option<String>> {
    if n == 0 {
        return Err(Error::invalid("--threads must be at least 1"));
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    if n > cores {
        set_threads(cores)?;
        return Ok(Some(format!(
            "--threads {n} is more than the {cores} cores here; using {cores}"
        )));
    }
    set_threads(n)?;
    Ok(None)
}

/// The precisions `bench` measures for `req` on `kind`: `auto` measures both where bf16 runs
/// (fp32 first: the reference figures), otherwise the one asked for.
pub fn bench_precisions(req: PrecisionRequest, kind: DeviceKind) -> Result<Vec<Precision>> {
    Ok(match resolve_precision(req, kind)? {
        Precision::Bf16 if req == PrecisionRequest::Auto => vec![Precision::Fp32, Precision::Bf16],
        p => vec![p],
    })
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

/// The GPU adapter `--device gpu` computes on, in words (name, kind, graphics API); `None` for
/// the CPU. Brings the GPU up if it is not yet, so it fails as [`make`] does.
pub fn describe(kind: DeviceKind) -> Result<Option<String>> {
    match kind {
        DeviceKind::Cpu => Ok(None),
        DeviceKind::Gpu => gpu_adapter().map(Some),
    }
}

/// How to get a GPU adapter, for the error that says there is none.
#[cfg(feature = "gpu")]
const NO_ADAPTER_HELP: &str = "--device gpu found no Vulkan adapter: install your GPU's Vulkan \
     driver, or a software one to try the GPU path on the CPU (Debian and Ubuntu: \
     `apt install mesa-vulkan-drivers`; `vulkaninfo --summary` from vulkan-tools lists what is \
     found), or use --device cpu";

#[cfg(feature = "gpu")]
mod wgpu_adapter {
    use burn::prelude::Device;
    #[cfg(not(target_os = "macos"))]
    use burn::tensor::wgpu::WgpuBackend;
    use burn::tensor::wgpu::wgpu::{AdapterInfo, DeviceType};

    /// The one wgpu runtime of this process, brought up on first use: burn registers a runtime
    /// per adapter selector once, and later selections of the same one reuse it.
    static GPU: std::sync::OnceLock<Result<(Device, String), String>> = std::sync::OnceLock::new();

    pub fn get() -> &'static Result<(Device, String), String> {
        GPU.get_or_init(|| {
            let options = Device::wgpu_options();
            // Vulkan only outside macOS (Metal there): where Vulkan finds no adapter, wgpu's
            // automatic choice falls back to OpenGL, on which burn's kernels fail at the first
            // reduction (a launch error, with Mesa's llvmpipe).
            #[cfg(not(target_os = "macos"))]
            let options = options.graphics_api(WgpuBackend::Vulkan);
            options
                .init_with_setup()
                .map(|(device, setup)| (device, words(&setup.adapter.get_info())))
                .map_err(|e| e.to_string())
        })
    }

    fn words(info: &AdapterInfo) -> String {
        let kind = match info.device_type {
            DeviceType::DiscreteGpu => "a discrete GPU",
            DeviceType::IntegratedGpu => "an integrated GPU",
            DeviceType::VirtualGpu => "a virtual GPU",
            DeviceType::Cpu => "a software adapter running on the CPU",
            DeviceType::Other => "an adapter of unknown kind",
        };
        format!("{} ({kind}, {:?})", info.name, info.backend)
    }
}

fn gpu() -> Result<Device> {
    gpu_runtime().map(|(device, _)| device)
}

fn gpu_adapter() -> Result<String> {
    gpu_runtime().map(|(_, adapter)| adapter)
}

/// The GPU device and its adapter in words.
#[cfg(feature = "gpu")]
fn gpu_runtime() -> Result<(Device, String)> {
    wgpu_adapter::get()
        .clone()
        .map_err(|e| Error::invalid(format!("{NO_ADAPTER_HELP} ({e})")))
}

#[cfg(not(feature = "gpu"))]
fn gpu_runtime() -> Result<(Device, String)> {
    Err(Error::invalid(NO_GPU_BUILD))
}

#[cfg(not(feature = "gpu"))]
const NO_GPU_BUILD: &str = "this warmstart was built without GPU support; rebuild with `cargo build --release --features gpu`";

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
