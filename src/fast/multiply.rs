//! A matrix multiply's operands and options as types, and the one place that chooses its
//! arithmetic: `gemm`'s f32 ([`super::gemm::matmul`]) or bf16's ([`super::bf16::matmul_bf16`]).
//! Every product is `dst[m,n] (+)= lhs[m,k] · rhs[k,n]` with the shape given as `(m, n, k)`.

use super::bf16::{available, matmul_bf16};
use super::gemm::matmul;
use crate::device::Precision;

/// How an operand's values are stored relative to the product's view of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// As the product reads it: the left operand `[m][k]`, the right one `[k][n]`.
    RowMajor,
    /// Transposed: the left operand stored `[k][m]`, the right one `[n][k]`.
    Transposed,
}

impl Layout {
    /// [`Layout::Transposed`] when `t` (for tests that run over both layouts).
    #[cfg(test)]
    pub(crate) fn transposed_if(t: bool) -> Layout {
        if t {
            Layout::Transposed
        } else {
            Layout::RowMajor
        }
    }
}

/// One side of a product: its values and their [`Layout`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand<'a> {
    /// The values, at least the operand's size.
    pub(crate) data: &'a [f32],
    /// How they are stored.
    pub(crate) layout: Layout,
}

impl<'a> Operand<'a> {
    /// An operand stored as the product reads it.
    pub(crate) fn rows(data: &'a [f32]) -> Self {
        Operand {
            data,
            layout: Layout::RowMajor,
        }
    }

    /// An operand stored transposed.
    pub(crate) fn transposed(data: &'a [f32]) -> Self {
        Operand {
            data,
            layout: Layout::Transposed,
        }
    }

    /// Whether it is stored transposed.
    pub(crate) fn is_transposed(&self) -> bool {
        self.layout == Layout::Transposed
    }
}

/// What a product does with the destination's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// `dst = lhs · rhs`.
    Overwrite,
    /// `dst += lhs · rhs` (the weight gradients' sums over images).
    Accumulate,
}

impl Write {
    /// [`Write::Accumulate`] when `acc` (for tests that run over both).
    #[cfg(test)]
    pub(crate) fn accumulate_if(acc: bool) -> Write {
        if acc {
            Write::Accumulate
        } else {
            Write::Overwrite
        }
    }
}

/// Which threads a product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// The calling thread only: the caller is already one of many parallel tasks (per image).
    Caller,
    /// Spread over rayon's threads (one large product, such as a dense layer's).
    All,
}

impl Threads {
    /// [`Threads::All`] when `all` (for tests that run over both).
    #[cfg(test)]
    pub(crate) fn all_if(all: bool) -> Threads {
        if all { Threads::All } else { Threads::Caller }
    }
}

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
