//! The backend extension: the fused ops on `Flex`, and on `Autodiff<Flex>` with their backward
//! passes registered in burn's autodiff graph.

use super::kernels::{self, BnSaved, Conv3x3, Dense};
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::TensorData;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// Which statistics a fused batch norm uses.
#[derive(Debug, Clone)]
pub enum BnMode {
    /// Training: the batch's own mean and (biased) variance, reported to `sink` so the module
    /// can update its running averages.
    Train { eps: f32, sink: BatchStats },
    /// Evaluation: the running statistics.
    Eval {
        eps: f32,
        mean: Vec<f32>,
        var: Vec<f32>,
    },
}

/// Where a training forward pass leaves the batch mean and variance it normalised with.
#[derive(Debug, Clone, Default)]
pub struct BatchStats(Arc<Mutex<Option<MeanVar>>>);

/// Per-channel mean and variance.
type MeanVar = (Vec<f32>, Vec<f32>);

impl BatchStats {
    fn put(&self, mean: Vec<f32>, var: Vec<f32>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((mean, var));
    }

    /// The statistics of the last forward pass, if one ran.
    pub fn take(&self) -> Option<MeanVar> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[backend_extension(Flex, Autodiff)]
pub trait FastOps: Backend {
    fn conv_bn_relu(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        bn: BnMode,
    ) -> FloatTensor<Self>;

    fn dense_bn_relu(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        bn: BnMode,
    ) -> FloatTensor<Self>;

    fn max_pool2(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Evaluation only: conv 3x3 → batch norm (running statistics) → ReLU → 2x2 max pool.
    fn conv_bn_relu_pool_eval(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
        running: (Vec<f32>, Vec<f32>),
    ) -> FloatTensor<Self>;
}

/// The tensor's values as a contiguous slice (borrowed when already contiguous).
fn host(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("fast ops run on f32 tensors")
                .to_vec(),
        ),
    }
}

fn flex<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn dims<const D: usize>(t: &FlexTensor) -> [usize; D] {
    t.layout().shape().dims::<D>()
}

fn conv_geom(x: &FlexTensor, w: &FlexTensor) -> Conv3x3 {
    let [n, cin, h, wd] = dims::<4>(x);
    let [cout, wcin, kh, kw] = dims::<4>(w);
    assert!(
        wcin == cin && kh == 3 && kw == 3 && h >= 3 && wd >= 3,
        "fused conv: input {:?} and weight {:?} are not a valid 3x3 convolution",
        [n, cin, h, wd],
        [cout, wcin, kh, kw]
    );
    Conv3x3 {
        n,
        cin,
        h,
        w: wd,
        cout,
    }
}

fn dense_geom(x: &FlexTensor, w: &FlexTensor) -> Dense {
    let [n, inp] = dims::<2>(x);
    let [winp, out] = dims::<2>(w);
    assert_eq!(inp, winp, "fused dense: input width and weight rows differ");
    Dense { n, inp, out }
}

fn conv_out(g: Conv3x3, y: Vec<f32>) -> FlexTensor {
    flex(y, [g.n, g.cout, g.oh(), g.ow()])
}

/// Training forward of the conv block on host slices; reports the batch statistics.
fn conv_train(
    g: Conv3x3,
    x: &FlexTensor,
    p: [&FlexTensor; 4],
    eps: f32,
    sink: &BatchStats,
) -> (Vec<f32>, BnSaved) {
    let [w, b, gamma, beta] = p.map(host);
    let (y, saved) = kernels::conv_bn_relu_train(g, &host(x), &w, &b, &gamma, &beta, eps);
    sink.put(saved.mean.clone(), saved.var.clone());
    (y, saved)
}

fn dense_train(
    d: Dense,
    x: &FlexTensor,
    p: [&FlexTensor; 4],
    eps: f32,
    sink: &BatchStats,
) -> (Vec<f32>, BnSaved) {
    let [w, b, gamma, beta] = p.map(host);
    let (y, saved) = kernels::dense_bn_relu_train(d, &host(x), &w, &b, &gamma, &beta, eps);
    sink.put(saved.mean.clone(), saved.var.clone());
    (y, saved)
}

impl FastOps for Flex {
    fn conv_bn_relu(
        x: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        bn: BnMode,
    ) -> FlexTensor {
        let g = conv_geom(&x, &w);
        let y = match bn {
            BnMode::Train { eps, sink } => conv_train(g, &x, [&w, &b, &gamma, &beta], eps, &sink).0,
            BnMode::Eval { eps, mean, var } => {
                let (scale, shift) =
                    kernels::bn_fold(&host(&gamma), &host(&beta), &mean, &var, eps);
                kernels::conv_bn_relu_infer(g, &host(&x), &host(&w), &host(&b), &scale, &shift)
            }
        };
        conv_out(g, y)
    }

    fn dense_bn_relu(
        x: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        bn: BnMode,
    ) -> FlexTensor {
        let d = dense_geom(&x, &w);
        let y = match bn {
            BnMode::Train { eps, sink } => {
                dense_train(d, &x, [&w, &b, &gamma, &beta], eps, &sink).0
            }
            BnMode::Eval { eps, mean, var } => {
                let (scale, shift) =
                    kernels::bn_fold(&host(&gamma), &host(&beta), &mean, &var, eps);
                kernels::dense_bn_relu_infer(d, &host(&x), &host(&w), &host(&b), &scale, &shift)
            }
        };
        flex(y, [d.n, d.out])
    }

    fn max_pool2(x: FlexTensor) -> FlexTensor {
        let [n, c, h, w] = dims::<4>(&x);
        let (y, _) = kernels::max_pool2(&host(&x), n * c, h, w);
        flex(y, [n, c, h / 2, w / 2])
    }

    fn conv_bn_relu_pool_eval(
        x: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f32,
        (mean, var): (Vec<f32>, Vec<f32>),
    ) -> FlexTensor {
        let g = conv_geom(&x, &w);
        let (scale, shift) = kernels::bn_fold(&host(&gamma), &host(&beta), &mean, &var, eps);
        let y =
            kernels::conv_bn_relu_pool_infer(g, &host(&x), &host(&w), &host(&b), &scale, &shift);
        flex(y, [g.n, g.cout, g.oh() / 2, g.ow() / 2])
    }
}

/// What the backward pass of a fused batch-norm block keeps from its forward pass.
#[derive(Debug)]
struct BlockState<G> {
    geom: G,
    x: FlexTensor,
    w: FlexTensor,
    gamma: FlexTensor,
    y: FlexTensor,
    saved: BnSaved,
}

/// Registers a fused block's gradients for the inputs (x, w, b, gamma, beta) in the graph.
fn register_block(
    grads: &mut Gradients,
    [px, pw, pb, pg, pbeta]: [Option<NodeId>; 5],
    r: kernels::BlockGrads,
    x_shape: Vec<usize>,
    w_shape: Vec<usize>,
) {
    let c = r.db.len();
    if let (Some(id), Some(dx)) = (px, r.dx) {
        grads.register::<Flex>(id, FlexTensor::from_data(TensorData::new(dx, x_shape)));
    }
    for (id, value, shape) in [
        (pw, r.dw, w_shape),
        (pb, r.db, vec![c]),
        (pg, r.dgamma, vec![c]),
        (pbeta, r.dbeta, vec![c]),
    ] {
        if let Some(id) = id {
            grads.register::<Flex>(id, FlexTensor::from_data(TensorData::new(value, shape)));
        }
    }
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 5> for ConvBackward {
    type State = Arc<BlockState<Conv3x3>>;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb, pg, pbeta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let s = ops.state;
        let g = s.geom;
        let r = kernels::conv_bn_relu_backward(
            g,
            &host(&s.x),
            &host(&s.w),
            &host(&s.gamma),
            &host(&s.y),
            &s.saved,
            &host(&dy),
            px.is_some(),
        );
        let ids = [px, pw, pb, pg, pbeta].map(|n| n.map(|n| n.id));
        register_block(
            grads,
            ids,
            r,
            vec![g.n, g.cin, g.h, g.w],
            vec![g.cout, g.cin, 3, 3],
        );
    }
}

#[derive(Debug)]
struct DenseBackward;

impl Backward<Flex, 5> for DenseBackward {
    type State = Arc<BlockState<Dense>>;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb, pg, pbeta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let s = ops.state;
        let d = s.geom;
        let r = kernels::dense_bn_relu_backward(
            d,
            &host(&s.x),
            &host(&s.w),
            &host(&s.gamma),
            &host(&s.y),
            &s.saved,
            &host(&dy),
            px.is_some(),
        );
        let ids = [px, pw, pb, pg, pbeta].map(|n| n.map(|n| n.id));
        register_block(grads, ids, r, vec![d.n, d.inp], vec![d.inp, d.out]);
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
            let dx = kernels::max_pool2_backward(&host(&dy), &arg, n * c, h, w);
            grads.register::<Flex>(node.id, flex(dx, [n, c, h, w]));
        }
    }
}

const TRACKED_EVAL: &str = "fused batch norm in evaluation mode cannot be differentiated; \
     Net::forward uses burn's reference ops for that case";

impl<C: CheckpointStrategy> FastOps for Autodiff<Flex, C> {
    fn conv_bn_relu(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        bn: BnMode,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), w.node(), b.node(), gamma.node(), beta.node()];
        match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let BnMode::Train { eps, sink } = bn else {
                    panic!("{TRACKED_EVAL}");
                };
                let (x, w) = (x.primitive().clone(), w.primitive().clone());
                let geom = conv_geom(&x, &w);
                let (y, saved) = conv_train(
                    geom,
                    &x,
                    [&w, b.primitive(), gamma.primitive(), beta.primitive()],
                    eps,
                    &sink,
                );
                let y = conv_out(geom, y);
                let state = BlockState {
                    geom,
                    x,
                    w,
                    gamma: gamma.primitive().clone(),
                    y: y.clone(),
                    saved,
                };
                prep.finish(Arc::new(state), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(<Flex as FastOps>::conv_bn_relu(
                x.into_primitive(),
                w.into_primitive(),
                b.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                bn,
            )),
        }
    }

    fn dense_bn_relu(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        bn: BnMode,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), w.node(), b.node(), gamma.node(), beta.node()];
        match DenseBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let BnMode::Train { eps, sink } = bn else {
                    panic!("{TRACKED_EVAL}");
                };
                let (x, w) = (x.primitive().clone(), w.primitive().clone());
                let geom = dense_geom(&x, &w);
                let (y, saved) = dense_train(
                    geom,
                    &x,
                    [&w, b.primitive(), gamma.primitive(), beta.primitive()],
                    eps,
                    &sink,
                );
                let y = flex(y, [geom.n, geom.out]);
                let state = BlockState {
                    geom,
                    x,
                    w,
                    gamma: gamma.primitive().clone(),
                    y: y.clone(),
                    saved,
                };
                prep.finish(Arc::new(state), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(<Flex as FastOps>::dense_bn_relu(
                x.into_primitive(),
                w.into_primitive(),
                b.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                bn,
            )),
        }
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
                let (y, arg) = kernels::max_pool2(&host(&xp), n * c, h, w);
                prep.finish(([n, c, h, w], Arc::new(arg)), flex(y, [n, c, h / 2, w / 2]))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(<Flex as FastOps>::max_pool2(x.into_primitive()))
            }
        }
    }

    fn conv_bn_relu_pool_eval(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
        running: (Vec<f32>, Vec<f32>),
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), w.node(), b.node(), gamma.node(), beta.node()];
        // An op without a backward pass: only its untracked use is allowed.
        match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(_) => panic!("{TRACKED_EVAL}"),
            OpsKind::UnTracked(prep) => prep.finish(<Flex as FastOps>::conv_bn_relu_pool_eval(
                x.into_primitive(),
                w.into_primitive(),
                b.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                eps,
                running,
            )),
        }
    }
}
