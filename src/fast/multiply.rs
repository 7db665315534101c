//! The one place that chooses the arithmetic of a matrix multiply: `gemm`'s f32 or `bf16`'s.

use super::bf16::{available, matmul_bf16};
use super::gemm::matmul;
use crate::device::Precision;

/// [`matmul`] in `prec`: bf16 operands with f32 sums ([`matmul_bf16`]) where the
/// product is large enough on every side for it to pay: the 32-column panels and pair-wise sums
/// need `n` and `k` of 16 or more (conv1's 9-long patches and 9-wide weight gradient stay f32),
/// and the right operand is converted on every call, which only 16 or more rows repay (a batch
/// of one image through the dense layer would convert all 1.2 M weights to multiply them once).
/// A CPU without AVX512_BF16 computes in f32 (runs resolve `--precision` with an error there
/// first; this keeps a library caller's `Net::with_precision` from reaching a missing
/// instruction).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_in(
    prec: Precision,
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    lhs_t: bool,
    rhs: &[f32],
    rhs_t: bool,
    accumulate: bool,
    parallel: bool,
) {
    if in_bf16(prec, (m, n, k)) {
        matmul_bf16(dst, (m, n, k), lhs, lhs_t, rhs, rhs_t, accumulate, parallel)
    } else {
        matmul(dst, (m, n, k), lhs, lhs_t, rhs, rhs_t, accumulate, parallel)
    }
}

/// Whether [`matmul_in`] multiplies this shape in bf16 (for callers that pack an operand
/// themselves).
pub(crate) fn in_bf16(prec: Precision, (m, n, k): (usize, usize, usize)) -> bool {
    prec == Precision::Bf16 && m >= 16 && k >= 16 && n >= 16 && available()
}
