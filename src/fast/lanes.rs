//! SIMD written once over the vector width: a kernel is generic over `pulp`'s [`Simd`] and runs
//! with the CPU's widest vectors (16 floats on AVX-512, 8 on AVX2, 4 on NEON), or one lane at a
//! time where those do not divide its channels. Kernels whose operations are lane by lane give
//! the same bits at every width, so the one-lane run is the definition tests hold them to.

use pulp::{Arch, Scalar, Simd, WithSimd};

/// The vector at `p`. Unchecked: each kernel asserts its bounds once (checked loads cost a
/// compare and branch each, in loops of a few additions).
///
/// # Safety
/// `p..p + S::F32_LANES` must be inside one slice.
#[inline(always)]
pub(crate) unsafe fn ld<S: Simd>(p: *const f32) -> S::f32s {
    // SAFETY: the caller's bounds; `f32s` is plain floats, read unaligned.
    unsafe { p.cast::<S::f32s>().read_unaligned() }
}

/// Stores `v` at `p`.
///
/// # Safety
/// As [`ld`], for a slice borrowed mutably.
#[inline(always)]
pub(crate) unsafe fn st<S: Simd>(p: *mut f32, v: S::f32s) {
    // SAFETY: the caller's bounds.
    unsafe { p.cast::<S::f32s>().write_unaligned(v) }
}

/// A kernel generic over the instruction set.
pub(crate) trait Kernel {
    /// Runs with `simd`'s vectors; `channels` must be a multiple of its lanes.
    fn apply<S: Simd>(self, simd: S);
    /// The channel count the vectors run along.
    fn channels(&self) -> usize;
}

/// Runs a [`Kernel`] with the CPU's widest vectors where they divide its channels, else one
/// lane at a time (same bits either way).
struct Widest<K>(K);

impl<K: Kernel> WithSimd for Widest<K> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        if self.0.channels().is_multiple_of(S::F32_LANES) {
            self.0.apply(simd)
        } else {
            self.0.apply(Scalar::new())
        }
    }
}

/// Runs `k` with the widest vectors this CPU has.
pub(crate) fn run(k: impl Kernel) {
    Arch::new().dispatch(Widest(k))
}
