//! The optimizer and its steps: burn's Adam arithmetic fused into one pass (`fast::FusedAdam`),
//! at one learning rate or at a rate per block.

use crate::model::Net;
use crate::record::AdamSettings;
use burn::optim::{GradientsParams, ModuleOptimizer};

/// burn's `Adam` arithmetic (`AdamW` with weight decay), fused into one pass on the CPU.
pub fn new_optimizer(a: &AdamSettings) -> ModuleOptimizer {
    ModuleOptimizer::from(crate::fast::FusedAdam::with_weight_decay(
        a.beta_1,
        a.beta_2,
        a.epsilon,
        a.weight_decay,
    ))
}

/// One optimizer step at rate `lr`: one rate for all, or discriminative rates by `lr_ratio`.
pub fn step(
    model: Net,
    optim: &mut ModuleOptimizer,
    grads: GradientsParams,
    lr: f64,
    lr_ratio: Option<f64>,
) -> Net {
    match lr_ratio {
        None => optim.step(lr, model, grads),
        Some(r) => step_by_block(model, optim, grads, lr, r),
    }
}

/// One optimizer step with discriminative rates: the head at `lr`, each block before it at
/// `ratio` times the next one's rate (the gradients are split by block; Adam's state is kept per
/// parameter, so four partial steps equal one step at four rates).
pub(super) fn step_by_block(
    model: Net,
    optim: &mut ModuleOptimizer,
    mut grads: GradientsParams,
    lr: f64,
    ratio: f64,
) -> Net {
    let blocks = model.block_params();
    let mut model = model;
    for (depth, params) in blocks.into_iter().rev().enumerate() {
        let mut part = GradientsParams::new();
        for (id, rank) in params {
            match rank {
                4 => move_grad::<4>(&mut grads, &mut part, id),
                2 => move_grad::<2>(&mut grads, &mut part, id),
                _ => move_grad::<1>(&mut grads, &mut part, id),
            }
        }
        if !part.is_empty() {
            model = optim.step(lr * ratio.powi(depth as i32), model, part);
        }
    }
    model
}

fn move_grad<const D: usize>(
    from: &mut GradientsParams,
    to: &mut GradientsParams,
    id: burn::module::ParamId,
) {
    if let Some(g) = from.remove::<D>(id) {
        to.register(id, g);
    }
}
