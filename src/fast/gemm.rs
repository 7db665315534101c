//! Matrix multiplication (the `gemm` crate, with its packing tuned for our shapes) and the
//! per-thread scratch buffers the kernels multiply in.

use super::operand::{Operand, Threads, Write};
use gemm::Parallelism;
use std::cell::RefCell;

/// `dst[m,n] (+)= lhs[m,k] · rhs[k,n]` in f32, each operand in its own layout.
pub(crate) fn matmul(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    write: Write,
    threads: Threads,
) {
    if nothing_to_multiply(dst, (m, n, k), lhs.data, rhs.data, write) {
        return;
    }
    tune_gemm();
    let accumulate = write == Write::Accumulate;
    let (lhs, lhs_t, rhs, rhs_t) = (lhs.data, lhs.is_transposed(), rhs.data, rhs.is_transposed());
    let (lrs, lcs) = if lhs_t { (1, m) } else { (k, 1) };
    let (rrs, rcs) = if rhs_t { (1, k) } else { (n, 1) };
    let par = if threads == Threads::All && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above keep every index gemm touches inside the three slices, and
    // `dst` does not alias the inputs (it is a distinct `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lcs as isize,
            lrs as isize,
            rhs.as_ptr(),
            rcs as isize,
            rrs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// The operands' sizes checked (a multiply must not read or write outside them), and the empty
/// products done: `true` when nothing is left to multiply (`k == 0` leaves zeros unless
/// accumulating).
pub(crate) fn nothing_to_multiply(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    rhs: &[f32],
    write: Write,
) -> bool {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    if k == 0 && write == Write::Overwrite {
        dst[..m * n].fill(0.0);
    }
    m == 0 || n == 0 || k == 0
}

/// gemm copies ("packs") an operand it reads column-contiguously once the other side is wider
/// than 8 (16 threaded) microkernel tiles of 6 columns: our convolutions' 64 output channels
/// crossed that line, so each image's im2col matrix was copied a second time (9% of a training
/// step in `perf`). Measured at batch 128: threshold 8 → 3,140–3,260 images/s, 16 to 256 →
/// 3,330–3,390. The setting is process-wide; it only moves that packing line.
fn tune_gemm() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gemm::set_lhs_packing_threshold_single_thread(32);
        gemm::set_lhs_packing_threshold_multi_thread(64);
    });
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a per-thread scratch buffer of `len` floats (contents unspecified), reused
/// across calls so the hot loop does not fault in fresh pages every batch.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}
