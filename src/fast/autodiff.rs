//! The fused ops on `Autodiff<Flex>`: each forward pass runs on `Flex` and registers a
//! backward pass in burn's autodiff graph.

use super::adam::AdamStep;
use super::batchnorm::{BlockGrads, BnSaved, InputGrad, Upstream};
use super::conv::FoldedConv;
use super::dense::Dense;
use super::geometry::Conv3x3;
use super::ops::{
    Block, BnMode, BnReluLayer, FastOps, block_forward, block_train, dims, flex, host, tensor,
};
use super::pool::{max_pool2, max_pool2_backward};
use crate::device::Precision;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use std::marker::PhantomData;
use std::sync::Arc;

/// What the backward pass of a fused batch-norm block keeps from its forward pass.
#[derive(Debug)]
struct BlockState<G> {
    geom: G,
    /// The forward pass's arithmetic, which the backward pass keeps.
    prec: Precision,
    x: FlexTensor,
    w: FlexTensor,
    gamma: FlexTensor,
    saved: BnSaved,
}

/// Registers a fused block's gradients for the inputs (x, w, b, gamma, beta) in the graph.
fn register_block(
    grads: &mut Gradients,
    [px, pw, pb, pg, pbeta]: [Option<NodeId>; 5],
    r: BlockGrads,
    x_shape: Vec<usize>,
    w_shape: Vec<usize>,
) {
    let c = r.db.len();
    if let (Some(id), Some(dx)) = (px, r.dx) {
        grads.register::<Flex>(id, tensor(dx, x_shape));
    }
    for (id, value, shape) in [
        (pw, r.dw, w_shape),
        (pb, r.db, vec![c]),
        (pg, r.dgamma, vec![c]),
        (pbeta, r.dbeta, vec![c]),
    ] {
        if let Some(id) = id {
            grads.register::<Flex>(id, tensor(value, shape));
        }
    }
}

#[derive(Debug)]
struct BlockBackward<G>(PhantomData<G>);

impl<G: Block> Backward<Flex, 5> for BlockBackward<G> {
    type State = Arc<BlockState<G>>;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb, pg, pbeta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let s = ops.state;
        let g = s.geom;
        let dy = host(&dy);
        let up = Upstream {
            saved: &s.saved,
            dy: &dy,
        };
        let dx = if px.is_some() {
            InputGrad::Needed
        } else {
            InputGrad::Skipped
        };
        let r = g.backward(s.prec, &host(&s.x), (&host(&s.w), &host(&s.gamma)), up, dx);
        let ids = [px, pw, pb, pg, pbeta].map(|n| n.map(|n| n.id));
        register_block(grads, ids, r, g.x_shape(), g.w_shape());
    }
}

/// A block's forward pass on the autodiff backend: tracked (training, saving what backward
/// needs) or not (then the plain forward).
fn block_forward_autodiff<G: Block, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    layer: BnReluLayer<Autodiff<Flex, C>>,
) -> FloatTensor<Autodiff<Flex, C>> {
    let BnReluLayer {
        weight: w,
        bias: b,
        gamma,
        beta,
        norm: bn,
        precision: prec,
    } = layer;
    let nodes = [x.node(), w.node(), b.node(), gamma.node(), beta.node()];
    let backward = BlockBackward::<G>(PhantomData);
    match backward.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let BnMode::Train { eps, sink } = bn else {
                panic!("{TRACKED_EVAL}");
            };
            let (x, w) = (x.primitive().clone(), w.primitive().clone());
            let geom = G::of(&x, &w);
            let params = [&w, b.primitive(), gamma.primitive(), beta.primitive()];
            let (y, saved) = block_train(prec, geom, &x, params, eps, &sink);
            let y = tensor(y, geom.out_shape());
            let state = BlockState {
                geom,
                prec,
                x,
                w,
                gamma: gamma.primitive().clone(),
                saved,
            };
            prep.finish(Arc::new(state), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(block_forward::<G>(
            x.into_primitive(),
            BnReluLayer {
                weight: w.into_primitive(),
                bias: b.into_primitive(),
                gamma: gamma.into_primitive(),
                beta: beta.into_primitive(),
                norm: bn,
                precision: prec,
            },
        )),
    }
}

#[derive(Debug)]
struct PoolBackward;

impl Backward<Flex, 1> for PoolBackward {
    /// Input shape and, per output, which input won.
    type State = ([usize; 4], Arc<Vec<u8>>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let ([n, c, h, w], arg) = ops.state;
        if let Some(node) = px {
            let dx = max_pool2_backward(&host(&dy), &arg, n * c, h, w);
            grads.register::<Flex>(node.id, flex(dx, [n, c, h, w]));
        }
    }
}

/// An evaluation-only op's backward pass: never registered, as only its untracked use is allowed.
#[derive(Debug)]
struct EvalOnly;

impl Backward<Flex, 1> for EvalOnly {
    type State = ();

    fn backward(self, _: Ops<(), 1>, _: &mut Gradients, _: &mut Checkpointer) {
        unreachable!("{TRACKED_EVAL}")
    }
}

const TRACKED_EVAL: &str = "fused batch norm in evaluation mode cannot be differentiated; \
     Net::forward uses burn's reference ops for that case";

impl<C: CheckpointStrategy> FastOps for Autodiff<Flex, C> {
    fn conv_bn_relu(x: FloatTensor<Self>, layer: BnReluLayer<Self>) -> FloatTensor<Self> {
        block_forward_autodiff::<Conv3x3, C>(x, layer)
    }

    fn dense_bn_relu(x: FloatTensor<Self>, layer: BnReluLayer<Self>) -> FloatTensor<Self> {
        block_forward_autodiff::<Dense, C>(x, layer)
    }

    fn max_pool2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match PoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.into_primitive();
                let [n, c, h, w] = dims::<4>(&xp);
                let (y, arg) = max_pool2(&host(&xp), n * c, h, w);
                prep.finish(([n, c, h, w], Arc::new(arg)), flex(y, [n, c, h / 2, w / 2]))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(<Flex as FastOps>::max_pool2(x.into_primitive()))
            }
        }
    }

    fn conv_blocks_pool_eval(
        x: FloatTensor<Self>,
        first: FoldedConv,
        second: FoldedConv,
        prec: Precision,
    ) -> FloatTensor<Self> {
        match EvalOnly.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(_) => panic!("{TRACKED_EVAL}"),
            OpsKind::UnTracked(prep) => prep.finish(<Flex as FastOps>::conv_blocks_pool_eval(
                x.into_primitive(),
                first,
                second,
                prec,
            )),
        }
    }

    fn adam_step(
        _: FloatTensor<Self>,
        _: FloatTensor<Self>,
        _: FloatTensor<Self>,
        _: FloatTensor<Self>,
        _: AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        panic!("optimizer steps run on a module's inner (non-autodiff) tensors")
    }
}
