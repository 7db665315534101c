//! Dropout masks drawn from parallel ChaCha8 streams.

use multiversion::multiversion;
use rayon::prelude::*;

/// Dropout multipliers for `n` values: `1/keep` with probability `keep`, else 0. Chunks of the
/// mask come from independent ChaCha8 streams of `seed`, so it is generated in parallel and is
/// the same whatever the number of threads.
pub(crate) fn dropout_mask(n: usize, keep: f32, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    const CHUNK: usize = 8192;
    let threshold = (f64::from(keep) * 4_294_967_296.0) as u64;
    let scale = 1.0 / keep;
    let mut mask = vec![0f32; n];
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, part)| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(c as u64);
            // Drawn in bulk (the same words as one `next_u32` per value), then a branch-free
            // select: the per-value draw and branch were 4% of a batch-128 step.
            let mut words = [0u32; 1024];
            for part in part.chunks_mut(words.len()) {
                let words = &mut words[..part.len()];
                rng.fill(words);
                keep_or_drop(part, words, threshold, scale);
            }
        });
    mask
}

#[multiversion(targets = "simd")]
fn keep_or_drop(out: &mut [f32], words: &[u32], threshold: u64, scale: f32) {
    for (v, &r) in out.iter_mut().zip(words) {
        *v = if u64::from(r) < threshold { scale } else { 0.0 };
    }
}
