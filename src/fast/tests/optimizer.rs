//! The fused Adam against burn's (bit for bit, records shared), decoupled weight decay, and a
//! frozen network body.

use super::*;

struct ValueCollector(Vec<Vec<f32>>);

impl burn::module::ModuleVisitor for ValueCollector {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        self.0.push(values(param.val()));
    }
}

fn params(net: &Net) -> Vec<Vec<f32>> {
    let mut c = ValueCollector(Vec::new());
    net.visit(&mut c);
    c.0
}

/// One training step of `net` on `x` with `optim` (dropout off, so no RNG draw differs).
fn adam_step_of(
    net: Net,
    optim: &mut burn::optim::ModuleOptimizer,
    x: &Tensor<4>,
    probe: &Tensor<2>,
) -> Net {
    let out = net.forward(x.clone());
    let grads =
        burn::optim::GradientsParams::from_grads((out * probe.clone()).sum().backward(), &net);
    optim.step(1e-3, net, grads)
}

/// The definition of decoupled weight decay the fused optimizer follows: the parameters times
/// `1 - lr * weight_decay`, then burn's own `Adam` step.
#[derive(Clone)]
struct DecayThenAdam(burn::optim::Adam, f32);

impl burn::optim::Optimizer for DecayThenAdam {
    type State<const D: usize> = burn::optim::AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: burn::optim::LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let decayed = tensor.mul_scalar(1.0 - lr * f64::from(self.1));
        self.0.step(lr, decayed, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        burn::optim::Adam::to_device(state, device)
    }
}

#[test]
fn fused_adam_with_weight_decay_is_decay_then_adam_bit_for_bit() {
    let device = device();
    let mut net: Net = ArchConfig::standard(5).init(&device).train();
    net.drop1.prob = 0.0;
    net.drop2.prob = 0.0;
    let adam = burn::optim::AdamConfig::new().with_epsilon(1e-7).build();
    let mut reference = burn::optim::ModuleOptimizer::from(DecayThenAdam(adam, 0.05));
    let mut fused =
        burn::optim::ModuleOptimizer::from(FusedAdam::with_weight_decay(0.9, 0.999, 1e-7, 0.05));
    let mut plain = burn::optim::ModuleOptimizer::from(FusedAdam::new(0.9, 0.999, 1e-7));
    let (mut a, mut b, mut c) = (net.clone(), net.clone(), net);
    for step in 0..3 {
        let x = random([6, 1, 28, 28], &device).abs();
        let probe = random([6, 5], &device);
        a = adam_step_of(a, &mut reference, &x, &probe);
        b = adam_step_of(b, &mut fused, &x, &probe);
        c = adam_step_of(c, &mut plain, &x, &probe);
        for (i, (va, vb)) in params(&a).iter().zip(&params(&b)).enumerate() {
            let differ = va
                .iter()
                .zip(vb)
                .filter(|(x, y)| x.to_bits() != y.to_bits());
            assert_eq!(differ.count(), 0, "step {step}: parameter {i} differs");
        }
    }
    // And the decay does something: the weights are not plain Adam's.
    assert_ne!(params(&b), params(&c));
}

#[test]
fn fused_adam_matches_burn_adam_bit_for_bit_and_shares_its_records() {
    let device = device();
    let mut net: Net = ArchConfig::standard(5).init(&device).train();
    net.drop1.prob = 0.0;
    net.drop2.prob = 0.0;
    let burn_adam = || burn::optim::AdamConfig::new().with_epsilon(1e-7).init();
    let mut reference = burn_adam();
    let mut fused = burn::optim::ModuleOptimizer::from(FusedAdam::new(0.9, 0.999, 1e-7));
    let (mut a, mut b) = (net.clone(), net);
    for step in 0..3 {
        let x = random([6, 1, 28, 28], &device).abs();
        let probe = random([6, 5], &device);
        a = adam_step_of(a, &mut reference, &x, &probe);
        b = adam_step_of(b, &mut fused, &x, &probe);
        let (pa, pb) = (params(&a), params(&b));
        assert_eq!(pa.len(), pb.len());
        for (i, (va, vb)) in pa.iter().zip(&pb).enumerate() {
            let differ = va
                .iter()
                .zip(vb)
                .filter(|(x, y)| x.to_bits() != y.to_bits());
            assert_eq!(differ.count(), 0, "step {step}: parameter {i} differs");
        }
    }
    // The fused optimizer's state continues in burn's Adam (and the other way round) exactly.
    let mut from_fused = burn_adam().load_record(fused.to_record());
    let x = random([6, 1, 28, 28], &device).abs();
    let probe = random([6, 5], &device);
    let a = adam_step_of(a, &mut reference, &x, &probe);
    let b = adam_step_of(b, &mut from_fused, &x, &probe);
    assert_eq!(params(&a), params(&b));
}

/// `--freeze-epochs`: with the body's gradients off, a training step leaves every body parameter
/// bit-identical and moves only the head; batch norm keeps updating its running statistics.
#[test]
fn a_frozen_body_keeps_its_weights_and_the_head_trains() {
    let device = device();
    let net: Net = ArchConfig::standard(5).init(&device).train();
    let before = params(&net);
    let running = |n: &Net| values(n.bn1.running_mean.value_sync());
    let running_before = running(&net);
    let mut optim = burn::optim::ModuleOptimizer::from(FusedAdam::new(0.9, 0.999, 1e-7));
    let x = random([6, 1, 28, 28], &device).abs();
    let probe = random([6, 5], &device);
    let net = adam_step_of(net.body_trainable(false), &mut optim, &x, &probe);
    let after = params(&net);
    // The visit order: conv1 (w, b), bn1 (gamma, beta), conv2, bn2, fc1, bn3, then fc2 (w, b).
    let n = after.len();
    for i in 0..n - 2 {
        assert_eq!(
            before[i], after[i],
            "body parameter {i} changed while frozen"
        );
    }
    assert_ne!(
        before[n - 2],
        after[n - 2],
        "the head's weight did not train"
    );
    assert_ne!(
        running(&net),
        running_before,
        "batch norm stopped updating its statistics"
    );
    // Unfrozen again, the body trains.
    let net = adam_step_of(net.body_trainable(true), &mut optim, &x, &probe);
    assert_ne!(params(&net)[0], after[0]);
}
