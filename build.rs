//! What the machine that builds the tests can run, as `cfg` flags, so that a test this machine
//! cannot run is reported as *ignored* (with the reason) instead of passing without running:
//! `warmstart_avx512` (AVX512F), `warmstart_bf16` (AVX512_BF16 with AVX512F/BW) and
//! `warmstart_fashion_originals` (the original Fashion-MNIST IDX files, from
//! `WARMSTART_FASHION_MNIST`) and `warmstart_gpu` (built with the `gpu` feature where a Vulkan
//! driver is installed, or wherever `WARMSTART_REQUIRE_GPU=1` asks for the GPU tests to run and
//! fail without an adapter), `warmstart_slurm` (root, with Debian's Slurm and munge daemons and
//! clients installed, to start a single-node cluster; or `WARMSTART_REQUIRE_SLURM=1`) and
//! `warmstart_parallel` (GNU parallel on the PATH). Tests are built and run on the same machine; a target directory
//! carried to another CPU is rebuilt by `cargo clean`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(warmstart_avx512)");
    println!("cargo::rustc-check-cfg=cfg(warmstart_bf16)");
    println!("cargo::rustc-check-cfg=cfg(warmstart_fashion_originals)");
    println!("cargo::rustc-check-cfg=cfg(warmstart_gpu)");
    println!("cargo::rustc-check-cfg=cfg(warmstart_slurm)");
    println!("cargo::rustc-check-cfg=cfg(warmstart_parallel)");
    println!("cargo::rerun-if-env-changed=WARMSTART_REQUIRE_GPU");
    println!("cargo::rerun-if-env-changed=WARMSTART_REQUIRE_SLURM");
    if slurm_expected() {
        println!("cargo::rustc-cfg=warmstart_slurm");
    }
    if installed(&["/usr/bin/parallel"]) {
        println!("cargo::rustc-cfg=warmstart_parallel");
    }
    if std::env::var_os("CARGO_FEATURE_GPU").is_some() && gpu_driver_expected() {
        println!("cargo::rustc-cfg=warmstart_gpu");
    }
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=WARMSTART_FASHION_MNIST");
    #[cfg(target_arch = "x86_64")]
    {
        let f = std::arch::is_x86_feature_detected!("avx512f");
        let bw = std::arch::is_x86_feature_detected!("avx512bw");
        let bf16 = std::arch::is_x86_feature_detected!("avx512bf16");
        // A build script runs on the host: its features are the target's only when they are the
        // same machine, which is how the tests are run.
        let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
        if native && f {
            println!("cargo::rustc-cfg=warmstart_avx512");
        }
        if native && f && bw && bf16 {
            println!("cargo::rustc-cfg=warmstart_bf16");
        }
    }
    if let Some(dir) = std::env::var_os("WARMSTART_FASHION_MNIST") {
        let dir = std::path::PathBuf::from(dir);
        if dir.join("train-images-idx3-ubyte.gz").is_file() {
            println!("cargo::rustc-cfg=warmstart_fashion_originals");
            println!(
                "cargo::rustc-env=WARMSTART_FASHION_ORIGINALS={}",
                dir.display()
            );
        }
    }
}

/// Whether the GPU tests should run: asked for, or a Vulkan driver's manifest is installed where
/// the Vulkan loader looks on Linux (macOS and Windows come with a graphics API).
fn gpu_driver_expected() -> bool {
    if std::env::var_os("WARMSTART_REQUIRE_GPU").is_some_and(|v| v == "1") {
        return true;
    }
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os != "linux") {
        return true;
    }
    let dirs = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"];
    dirs.iter().any(|d| {
        let dir = std::path::Path::new(d);
        if dir.is_dir() {
            println!("cargo::rerun-if-changed={d}");
        }
        std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
    })
}

/// Whether every program at `paths` exists; the folders are watched, so that installing them
/// later builds the tests again.
fn installed(paths: &[&str]) -> bool {
    let mut dirs: Vec<&str> = paths
        .iter()
        .filter_map(|p| std::path::Path::new(p).parent()?.to_str())
        .collect();
    dirs.dedup();
    for d in dirs {
        if std::path::Path::new(d).is_dir() {
            println!("cargo::rerun-if-changed={d}");
        }
    }
    paths.iter().all(|p| std::path::Path::new(p).is_file())
}

/// Whether the Slurm tests can start a single-node cluster here: asked for, or running as root
/// with the daemons and clients of Debian's packages installed.
fn slurm_expected() -> bool {
    if std::env::var_os("WARMSTART_REQUIRE_SLURM").is_some_and(|v| v == "1") {
        return true;
    }
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    });
    root && installed(&[
        "/usr/sbin/slurmctld",
        "/usr/sbin/slurmd",
        "/usr/sbin/munged",
        "/usr/bin/sbatch",
        "/usr/bin/squeue",
    ])
}
