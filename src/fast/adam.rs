//! Adam's arithmetic for one parameter tensor, in one pass (the optimizer around it is
//! `FusedAdam` in `fused_adam.rs`).

use multiversion::multiversion;
use rayon::prelude::*;

/// The constants of one Adam step, as burn's `Adam` derives them from the step count.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub lr: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    /// `sqrt(1 - beta_2^t) / (1 - beta_1^t)`.
    pub factor: f32,
    /// `epsilon * sqrt(1 - beta_2^t)`.
    pub eps: f32,
}

impl AdamStep {
    /// Step `time` (1-based), with the same f32 arithmetic as burn-optim 0.22's `Adam`.
    pub fn new(lr: f64, beta_1: f32, beta_2: f32, epsilon: f32, time: usize) -> Self {
        let t = time as i32;
        let bc2 = (1.0 - beta_2.powi(t)).sqrt();
        AdamStep {
            lr: lr as f32,
            beta_1,
            beta_2,
            factor: bc2 / (1.0 - beta_1.powi(t)),
            eps: epsilon * bc2,
        }
    }
}

/// One Adam step in place: moments `m`, `v` and parameters `p` from gradient `g`.
///
/// Each element goes through burn's `Adam` operations in burn's order (`m·β1 + g·(1-β1)`, ...,
/// `p - (m·f / (√v + ε'))·lr`), so the result is bit for bit what burn's dozen whole-tensor
/// passes give, in one pass: at batch 32 burn's step was a fifth of the training time.
pub(crate) fn adam_step(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: AdamStep) {
    const CHUNK: usize = 1 << 14;
    p.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|((p, m), (v, g))| adam_chunk(p, m, v, g, s));
}

#[multiversion(targets = "simd")]
fn adam_chunk(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: AdamStep) {
    let (c1, c2) = (1.0 - s.beta_1, 1.0 - s.beta_2);
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        *m = *m * s.beta_1 + g * c1;
        *v = *v * s.beta_2 + g * g * c2;
        *p -= (*m * s.factor / (v.sqrt() + s.eps)) * s.lr;
    }
}
