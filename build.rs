//! What the machine that builds the tests can run, as `cfg` flags, so that a test this machine
//! cannot run is reported as *ignored* (with the reason) instead of passing without running:
//! `warmstart_avx512` (AVX512F), `warmstart_bf16` (AVX512_BF16 with AVX512F/BW) and
//! `warmstart_fashion_originals` (the original Fashion-MNIST IDX files, from
//! `WARMSTART_FASHION_MNIST`). Tests are built and run on the same machine; a target directory
//! carried to another CPU is rebuilt by `cargo clean`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(warmstart_avx512)");
    println!("cargo::rustc-check-cfg=cfg(warmstart_bf16)");
    println!("cargo::rustc-check-cfg=cfg(warmstart_fashion_originals)");
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
