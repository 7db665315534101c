//! Matrix transposes between the NCHW layout and the channel-last one the Winograd transforms
//! work in.

/// `dst[c][r] = src[r][c]` for a `rows x cols` matrix, in 8x8 blocks (a strided copy one value
/// at a time touches a new cache line per value).
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const B: usize = 8;
    let (rw, cw) = (rows / B * B, cols / B * B);
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    #[cfg(target_arch = "x86_64")]
    let avx = std::arch::is_x86_feature_detected!("avx");
    #[cfg(not(target_arch = "x86_64"))]
    let avx = false;
    // 16x16 blocks first where AVX-512 has them (a quarter fewer shuffles per value), then 8x8.
    #[cfg(target_arch = "x86_64")]
    let (r16, c16) = if std::arch::is_x86_feature_detected!("avx512f") {
        (rows / 16 * 16, cols / 16 * 16)
    } else {
        (0, 0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (r16, c16) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    for rb in (0..r16).step_by(16) {
        for cb in (0..c16).step_by(16) {
            let (s0, d0) = (rb * cols + cb, cb * rows + rb);
            // SAFETY: AVX-512F is present (r16 > 0 only then); the 16x16 block lies inside both
            // slices (rb + 16 <= rows, cb + 16 <= cols, lengths asserted above).
            unsafe { avx_block::transpose16(&src[s0..], cols, &mut dst[d0..], rows) };
        }
    }
    for rb in (0..rw).step_by(B) {
        for cb in (0..cw).step_by(B) {
            if rb < r16 && cb < c16 {
                continue;
            }
            let (s0, d0) = (rb * cols + cb, cb * rows + rb);
            #[cfg(target_arch = "x86_64")]
            if avx {
                // SAFETY: AVX is present (checked above); the 8x8 block lies inside both
                // slices (rb + 8 <= rows, cb + 8 <= cols, lengths asserted above).
                unsafe { avx_block::transpose8(&src[s0..], cols, &mut dst[d0..], rows) };
                continue;
            }
            for r in 0..B {
                for c in 0..B {
                    dst[d0 + c * rows + r] = src[s0 + r * cols + c];
                }
            }
        }
    }
    let _ = avx;
    for r in 0..rows {
        let cs = if r < rw { cw } else { 0 };
        for c in cs..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// The 8x8 register transpose (unpack, shuffle, swap 128-bit halves): the compiler turned the
/// portable block copy into one scalar move per value.
#[cfg(target_arch = "x86_64")]
mod avx_block {
    use std::arch::x86_64::*;

    /// Transposes the 8x8 block at `src` (row stride `ss`) into `dst` (row stride `ds`).
    ///
    /// # Safety
    /// AVX must be available; `src[7 * ss + 8]` and `dst[7 * ds + 8]` must be in bounds.
    #[target_feature(enable = "avx")]
    pub unsafe fn transpose8(src: &[f32], ss: usize, dst: &mut [f32], ds: usize) {
        assert!(src.len() >= 7 * ss + 8 && dst.len() >= 7 * ds + 8);
        // SAFETY: the assert keeps every 8-float load and store inside the slices.
        unsafe {
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.as_ptr().add(i * ss)));
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let out = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (i, v) in out.into_iter().enumerate() {
                _mm256_storeu_ps(dst.as_mut_ptr().add(i * ds), v);
            }
        }
    }

    /// Transposes the 16x16 block at `src` (row stride `ss`) into `dst` (row stride `ds`):
    /// pairs unpacked, then 4-value groups shuffled, then 128-bit lanes twice.
    ///
    /// # Safety
    /// AVX-512F must be available; `src[15 * ss + 16]` and `dst[15 * ds + 16]` must be in bounds.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose16(src: &[f32], ss: usize, dst: &mut [f32], ds: usize) {
        assert!(src.len() >= 15 * ss + 16 && dst.len() >= 15 * ds + 16);
        // SAFETY: the assert keeps every 16-float load and store inside the slices.
        unsafe {
            let r: [__m512; 16] =
                std::array::from_fn(|i| _mm512_loadu_ps(src.as_ptr().add(i * ss)));
            let t: [__m512; 16] = std::array::from_fn(|i| {
                let (a, b) = (r[i & !1], r[i | 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_ps(a, b)
                } else {
                    _mm512_unpackhi_ps(a, b)
                }
            });
            // Within each group of four: (t0, t2) and (t1, t3), low then high halves.
            let u: [__m512; 16] = std::array::from_fn(|i| {
                let g = i / 4 * 4;
                let (a, b) = match i % 4 {
                    0 | 1 => (t[g], t[g + 2]),
                    _ => (t[g + 1], t[g + 3]),
                };
                if i % 2 == 0 {
                    _mm512_shuffle_ps::<0x44>(a, b)
                } else {
                    _mm512_shuffle_ps::<0xEE>(a, b)
                }
            });
            // 128-bit lanes: rows i and i + 4 of each half, even lanes then odd.
            let v: [__m512; 16] = std::array::from_fn(|i| {
                let base = if i < 8 { 0 } else { 8 };
                let j = i % 8;
                let (a, b) = (u[base + j % 4], u[base + j % 4 + 4]);
                if j < 4 {
                    _mm512_shuffle_f32x4::<0x88>(a, b)
                } else {
                    _mm512_shuffle_f32x4::<0xDD>(a, b)
                }
            });
            for i in 0..16 {
                let (a, b) = (v[i % 8], v[i % 8 + 8]);
                let w = if i < 8 {
                    _mm512_shuffle_f32x4::<0x88>(a, b)
                } else {
                    _mm512_shuffle_f32x4::<0xDD>(a, b)
                };
                _mm512_storeu_ps(dst.as_mut_ptr().add(i * ds), w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_handles_whole_blocks_and_ragged_edges() {
        for (rows, cols) in [
            (8, 8),
            (16, 24),
            (13, 21),
            (3, 5),
            (144, 64),
            (32, 676),
            (676, 32),
            (40, 56),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![-1f32; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
        }
    }
}
