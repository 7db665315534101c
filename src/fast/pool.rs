//! 2x2 max pooling with stride 2, forward (recording the winner of each window) and backward.

use multiversion::multiversion;
use rayon::prelude::*;

/// 2x2 max pooling, stride 2, over `[planes, h, w]` (`h`, `w` even). Returns the output and, per
/// output, which of the four inputs won (0..4, the first on ties).
pub(crate) fn max_pool2(x: &[f32], planes: usize, h: usize, w: usize) -> (Vec<f32>, Vec<u8>) {
    let (oh, ow) = (h / 2, w / 2);
    let mut y = vec![0f32; planes * oh * ow];
    let mut arg = vec![0u8; planes * oh * ow];
    y.par_chunks_mut(oh * ow)
        .zip(arg.par_chunks_mut(oh * ow))
        .zip(x.par_chunks(h * w))
        .for_each(|((yp, ap), xp)| pool_plane(xp, h, w, yp, Some(ap)));
    (y, arg)
}

/// 2x2 max pooling of one `h x w` plane into `y`, recording the winners in `arg` when given
/// (the first of equal values wins, as in burn).
#[multiversion(targets = "simd")]
pub(crate) fn pool_plane(xp: &[f32], h: usize, w: usize, y: &mut [f32], arg: Option<&mut [u8]>) {
    let (oh, ow) = (h / 2, w / 2);
    let mut none = [0u8; 0];
    let (arg, record) = match arg {
        Some(a) => (a, true),
        None => (&mut none[..], false),
    };
    for oy in 0..oh {
        let (r0, r1) = (
            &xp[2 * oy * w..][..2 * ow],
            &xp[(2 * oy + 1) * w..][..2 * ow],
        );
        let yr = &mut y[oy * ow..][..ow];
        for ox in 0..ow {
            let (a, b, c, d) = (r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]);
            let (top, ti) = if b > a { (b, 1u8) } else { (a, 0u8) };
            let (bot, bi) = if d > c { (d, 3u8) } else { (c, 2u8) };
            let (v, i) = if bot > top { (bot, bi) } else { (top, ti) };
            yr[ox] = v;
            if record {
                arg[oy * ow + ox] = i;
            }
        }
    }
}

/// Backward of [`max_pool2`]: each output gradient goes to the input that won.
pub(crate) fn max_pool2_backward(
    dy: &[f32],
    arg: &[u8],
    planes: usize,
    h: usize,
    w: usize,
) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut dx = vec![0f32; planes * h * w];
    dx.par_chunks_mut(h * w)
        .zip(dy.par_chunks(oh * ow).zip(arg.par_chunks(oh * ow)))
        .for_each(|(dp, (gp, ap))| {
            for oy in 0..oh {
                for ox in 0..ow {
                    let a = usize::from(ap[oy * ow + ox]);
                    let (yy, xx) = (2 * oy + a / 2, 2 * ox + a % 2);
                    dp[yy * w + xx] = gp[oy * ow + ox];
                }
            }
        });
    dx
}
