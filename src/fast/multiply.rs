//! The one place that chooses a matrix multiply's arithmetic: `gemm`'s f32
//! ([`super::gemm::matmul`]) or bf16's ([`super::bf16::matmul_bf16`]).

use super::bf16::{available, matmul_bf16};
use super::gemm::matmul;
pub(crate) use super::operand::{Operand, Threads, Write};
use crate::device::Precision;

/// A product in `prec`: bf16 operands with f32 sums ([`matmul_bf16`]) where the product is
/// large enough on every side for it to pay: the 32-column panels and pair-wise sums need `n`
/// and `k` of 16 or more (conv1's 9-long patches and 9-wide weight gradient stay f32), and the
/// right operand is converted on every call, which only 16 or more rows repay (a batch of one
/// image through the dense layer would convert all 1.2 M weights to multiply them once). A CPU
/// without AVX512_BF16 computes in f32 (runs resolve `--precision` with an error there first;
/// this keeps a library caller's `Net::with_precision` from reaching a missing instruction).
pub(crate) fn matmul_in(
    prec: Precision,
    dst: &mut [f32],
    shape: (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
    write: Write,
    threads: Threads,
) {
    if in_bf16(prec, shape) {
        matmul_bf16(dst, shape, lhs, rhs, write, threads)
    } else {
        matmul(dst, shape, lhs, rhs, write, threads)
    }
}

/// Whether [`matmul_in`] multiplies this shape in bf16 (for callers that pack an operand
/// themselves).
pub(crate) fn in_bf16(prec: Precision, (m, n, k): (usize, usize, usize)) -> bool {
    prec == Precision::Bf16 && m >= 16 && k >= 16 && n >= 16 && available()
}
