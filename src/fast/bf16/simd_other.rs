//! Off x86-64 there are no bf16 instructions: [`super::available`] is false, so the packers
//! report nothing done and the kernel is never called.

pub(super) fn pack_paired(_: &[f32], _: &mut [u32]) -> usize {
    0
}
pub(crate) unsafe fn im2col_paired_512(_: super::Conv3x3, _: &[f32], _: &mut [u32]) {
    unreachable!("im2col_paired checks `available()`, which is false off x86-64")
}
pub(super) fn pack_interleaved(_: &[f32], _: &[f32], _: &mut [u32]) -> usize {
    0
}
pub(super) fn transpose_words(_: &[u32], _: usize, _: usize, _: &mut [u32], _: usize) -> usize {
    0
}
pub(super) fn kernel(_: super::Tile, _: &mut [f32], _: usize) {
    unreachable!("matmul_bf16 checks `available()`, which is false off x86-64")
}
