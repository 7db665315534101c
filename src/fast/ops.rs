//! The backend extension: the fused ops as one burn trait, implemented here on `Flex` (the
//! forward passes on host slices); its `Autodiff<Flex>` implementation, which registers the
//! backward passes, is in `autodiff.rs`.

use super::adam::{AdamStep, adam_step};
use super::batchnorm::{BlockGrads, BnSaved, InputGrad, Layer, Norm, Upstream, bn_fold};
use super::conv::{
    FoldedConv, conv_bn_relu_backward, conv_bn_relu_infer, conv_bn_relu_train,
    two_blocks_pool_infer,
};
use super::dense::{Dense, dense_bn_relu_backward, dense_bn_relu_infer, dense_bn_relu_train};
use super::geometry::Conv3x3;
use super::pool::max_pool2;
use crate::device::Precision;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, ExtensionType, Flex, backend_extension};
use burn::tensor::TensorData;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// Which statistics a fused batch norm uses.
#[derive(Debug, Clone)]
pub enum BnMode {
    /// Training: the batch's own mean and (biased) variance, reported to `sink` so the module
    /// can update its running averages.
    Train {
        /// Added to the variance before the square root.
        eps: f32,
        /// Receives the batch's mean and variance.
        sink: BatchStats,
    },
    /// Evaluation: the running statistics.
    Eval {
        /// Added to the variance before the square root.
        eps: f32,
        /// Running mean per channel.
        mean: Vec<f32>,
        /// Running variance per channel.
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

/// One fused block (a 3x3 convolution or a dense layer, then batch norm, then ReLU) as the
/// backend receives it: the layer's parameters, which statistics its batch norm uses and the
/// arithmetic of its multiply — one value instead of six loose arguments, as the kernels inside
/// take a `Layer` and a `Norm`.
#[derive(ExtensionType)]
pub struct BnReluLayer<B: Backend> {
    /// `[cout, cin, 3, 3]` for a convolution, `[in, out]` for a dense layer.
    pub weight: FloatTensor<B>,
    /// One per output channel.
    pub bias: FloatTensor<B>,
    /// Batch norm's scale, one per output channel.
    pub gamma: FloatTensor<B>,
    /// Batch norm's shift, one per output channel.
    pub beta: FloatTensor<B>,
    /// The batch's statistics (training) or the running ones (evaluation).
    pub norm: BnMode,
    /// The multiply's arithmetic.
    pub precision: Precision,
}

#[backend_extension(Flex, Autodiff)]
/// The fused operations as a burn backend extension: implemented for `Flex` and `Autodiff<Flex>`.
pub trait FastOps: Backend {
    /// `relu(batch_norm(conv3x3(x, w) + b))`.
    fn conv_bn_relu(
        x: FloatTensor<Self>,
        #[extension_type] layer: BnReluLayer<Self>,
    ) -> FloatTensor<Self>;

    /// `relu(batch_norm(x · w + b))`.
    fn dense_bn_relu(
        x: FloatTensor<Self>,
        #[extension_type] layer: BnReluLayer<Self>,
    ) -> FloatTensor<Self>;

    /// 2x2 max pooling with stride 2.
    fn max_pool2(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Evaluation only: two folded conv blocks (conv 3x3 → batch norm with running statistics
    /// → ReLU), then a 2x2 max pool.
    fn conv_blocks_pool_eval(
        x: FloatTensor<Self>,
        first: FoldedConv,
        second: FoldedConv,
        prec: Precision,
    ) -> FloatTensor<Self>;

    /// One Adam step on a parameter and its two moments; returns them updated, in that order.
    fn adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        step: AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The tensor's values as a contiguous slice (borrowed when already contiguous).
pub(super) fn host(t: &FlexTensor) -> Cow<'_, [f32]> {
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

/// The tensor's values, writable in place (its buffer is copied first only when shared).
fn values_mut(t: &mut FlexTensor) -> &mut [f32] {
    if !t.is_contiguous() {
        *t = t.to_contiguous();
    }
    let (start, end) = t
        .layout()
        .contiguous_offsets()
        .expect("a contiguous tensor");
    &mut t.storage_mut::<f32>()[start..end]
}

pub(super) fn flex<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

pub(super) fn dims<const D: usize>(t: &FlexTensor) -> [usize; D] {
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

/// What differs between the fused conv and dense blocks (shapes and kernels); the batch-norm
/// modes, the autodiff bookkeeping and the gradient registration are shared.
pub(super) trait Block: Copy + Send + Sync + std::fmt::Debug + 'static {
    fn of(x: &FlexTensor, w: &FlexTensor) -> Self;
    fn x_shape(&self) -> Vec<usize>;
    fn w_shape(&self) -> Vec<usize>;
    fn out_shape(&self) -> Vec<usize>;
    fn train(&self, prec: Precision, x: &[f32], layer: Layer, norm: Norm) -> (Vec<f32>, BnSaved);
    /// Inference with the batch norm folded into `scale` and `shift`.
    fn infer(&self, prec: Precision, x: &[f32], layer: Layer, folded: (&[f32], &[f32]))
    -> Vec<f32>;
    /// `wg` is the weights and the batch norm's `gamma`.
    fn backward(
        &self,
        prec: Precision,
        x: &[f32],
        wg: (&[f32], &[f32]),
        up: Upstream,
        dx: InputGrad,
    ) -> BlockGrads;
}

impl Block for Conv3x3 {
    fn of(x: &FlexTensor, w: &FlexTensor) -> Self {
        conv_geom(x, w)
    }
    fn x_shape(&self) -> Vec<usize> {
        vec![self.n, self.cin, self.h, self.w]
    }
    fn w_shape(&self) -> Vec<usize> {
        vec![self.cout, self.cin, 3, 3]
    }
    fn out_shape(&self) -> Vec<usize> {
        vec![self.n, self.cout, self.oh(), self.ow()]
    }
    fn train(&self, prec: Precision, x: &[f32], layer: Layer, norm: Norm) -> (Vec<f32>, BnSaved) {
        conv_bn_relu_train(prec, *self, x, layer, norm)
    }
    fn infer(
        &self,
        prec: Precision,
        x: &[f32],
        layer: Layer,
        folded: (&[f32], &[f32]),
    ) -> Vec<f32> {
        let (scale, shift) = folded;
        conv_bn_relu_infer(prec, *self, x, layer.w, layer.bias, scale, shift)
    }
    fn backward(
        &self,
        prec: Precision,
        x: &[f32],
        wg: (&[f32], &[f32]),
        up: Upstream,
        dx: InputGrad,
    ) -> BlockGrads {
        conv_bn_relu_backward(prec, *self, x, wg, up, dx)
    }
}

impl Block for Dense {
    fn of(x: &FlexTensor, w: &FlexTensor) -> Self {
        dense_geom(x, w)
    }
    fn x_shape(&self) -> Vec<usize> {
        vec![self.n, self.inp]
    }
    fn w_shape(&self) -> Vec<usize> {
        vec![self.inp, self.out]
    }
    fn out_shape(&self) -> Vec<usize> {
        vec![self.n, self.out]
    }
    fn train(&self, prec: Precision, x: &[f32], layer: Layer, norm: Norm) -> (Vec<f32>, BnSaved) {
        dense_bn_relu_train(prec, *self, x, layer, norm)
    }
    fn infer(
        &self,
        prec: Precision,
        x: &[f32],
        layer: Layer,
        folded: (&[f32], &[f32]),
    ) -> Vec<f32> {
        let (scale, shift) = folded;
        dense_bn_relu_infer(prec, *self, x, layer.w, layer.bias, scale, shift)
    }
    fn backward(
        &self,
        prec: Precision,
        x: &[f32],
        wg: (&[f32], &[f32]),
        up: Upstream,
        dx: InputGrad,
    ) -> BlockGrads {
        dense_bn_relu_backward(prec, *self, x, wg, up, dx)
    }
}

pub(super) fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Training forward of a block on host slices; reports the batch statistics.
pub(super) fn block_train<G: Block>(
    prec: Precision,
    g: G,
    x: &FlexTensor,
    p: [&FlexTensor; 4],
    eps: f32,
    sink: &BatchStats,
) -> (Vec<f32>, BnSaved) {
    let [w, b, gamma, beta] = p.map(host);
    let layer = Layer { w: &w, bias: &b };
    let norm = Norm {
        gamma: &gamma,
        beta: &beta,
        eps,
    };
    let (y, saved) = g.train(prec, &host(x), layer, norm);
    sink.put(saved.mean.clone(), saved.var.clone());
    (y, saved)
}

/// A block's forward pass without autodiff, in either batch-norm mode.
pub(super) fn block_forward<G: Block>(x: FlexTensor, layer: BnReluLayer<Flex>) -> FlexTensor {
    let BnReluLayer {
        weight: w,
        bias: b,
        gamma,
        beta,
        norm,
        precision: prec,
    } = layer;
    let g = G::of(&x, &w);
    let y = match norm {
        BnMode::Train { eps, sink } => {
            block_train(prec, g, &x, [&w, &b, &gamma, &beta], eps, &sink).0
        }
        BnMode::Eval { eps, mean, var } => {
            let (scale, shift) = bn_fold(&host(&gamma), &host(&beta), &mean, &var, eps);
            let (w, b) = (host(&w), host(&b));
            let layer = Layer { w: &w, bias: &b };
            g.infer(prec, &host(&x), layer, (&scale, &shift))
        }
    };
    tensor(y, g.out_shape())
}

impl FastOps for Flex {
    fn conv_bn_relu(x: FlexTensor, layer: BnReluLayer<Self>) -> FlexTensor {
        block_forward::<Conv3x3>(x, layer)
    }

    fn dense_bn_relu(x: FlexTensor, layer: BnReluLayer<Self>) -> FlexTensor {
        block_forward::<Dense>(x, layer)
    }

    fn max_pool2(x: FlexTensor) -> FlexTensor {
        let [n, c, h, w] = dims::<4>(&x);
        let (y, _) = max_pool2(&host(&x), n * c, h, w);
        flex(y, [n, c, h / 2, w / 2])
    }

    fn conv_blocks_pool_eval(
        x: FlexTensor,
        first: FoldedConv,
        second: FoldedConv,
        prec: Precision,
    ) -> FlexTensor {
        let [n, cin, h, w] = dims::<4>(&x);
        assert!(
            h >= 6
                && w >= 6
                && first.w.len() == first.cout * cin * 9
                && second.w.len() == second.cout * first.cout * 9
                && [&first.scale, &first.shift]
                    .iter()
                    .all(|v| v.len() == first.cout)
                && [&second.scale, &second.shift]
                    .iter()
                    .all(|v| v.len() == second.cout),
            "fused conv blocks: input {:?} and folded blocks of {} and {} channels do not fit",
            [n, cin, h, w],
            first.cout,
            second.cout
        );
        let g1 = Conv3x3 {
            n,
            cin,
            h,
            w,
            cout: first.cout,
        };
        let y = two_blocks_pool_infer(prec, g1, &host(&x), &first, &second);
        flex(y, [n, second.cout, (h - 4) / 2, (w - 4) / 2])
    }

    fn adam_step(
        mut param: FlexTensor,
        grad: FlexTensor,
        mut moment_1: FlexTensor,
        mut moment_2: FlexTensor,
        step: AdamStep,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let g = host(&grad);
        adam_step(
            values_mut(&mut param),
            values_mut(&mut moment_1),
            values_mut(&mut moment_2),
            &g,
            step,
        );
        (param, moment_1, moment_2)
    }
}
