//! Optimizers, with PyTorch's defaults and semantics. SGD, Adagrad, RMSprop and AMSGrad are burn's; Adadelta and
//! NAdam, which burn lacks, are written here on burn tensor ops (`torch.optim` update rules); Adam and AdamW are
//! written here too, as one fused pass per parameter on the CPU backend (burn's made a dozen).

use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdaGradConfig, AdamConfig, AdamState, AdamWConfig, AdaptiveMomentumState, ModuleOptimizer, Optimizer,
    RmsPropConfig, SgdConfig,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use graft_kernels::{self as fused, adam::AdamStep};

/// `optimizer = { adam = { lr = 1e-3 } }`; every field defaults to `torch.optim`'s default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerSpec {
    Sgd(SgdSpec),
    Adagrad(AdagradSpec),
    Adadelta(AdadeltaSpec),
    Rmsprop(RmspropSpec),
    Adam(AdamSpec),
    Adamw(AdamSpec),
    Nadam(NadamSpec),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdSpec {
    #[serde(default = "lr_01")]
    pub lr: f64,
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub dampening: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default)]
    pub weight_decay: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdagradSpec {
    #[serde(default = "lr_01")]
    pub lr: f64,
    #[serde(default)]
    pub lr_decay: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "eps_10")]
    pub eps: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdadeltaSpec {
    #[serde(default = "lr_1")]
    pub lr: f64,
    #[serde(default = "rho")]
    pub rho: f64,
    #[serde(default = "eps_6")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmspropSpec {
    #[serde(default = "lr_01")]
    pub lr: f64,
    #[serde(default = "alpha")]
    pub alpha: f64,
    #[serde(default = "eps_8")]
    pub eps: f64,
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub centered: bool,
    #[serde(default)]
    pub weight_decay: f64,
}

/// Adam and AdamW (AdamW's `weight_decay` is decoupled and defaults to 0.01 as in PyTorch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamSpec {
    #[serde(default = "lr_001")]
    pub lr: f64,
    #[serde(default = "beta1")]
    pub beta1: f64,
    #[serde(default = "beta2")]
    pub beta2: f64,
    #[serde(default = "eps_8")]
    pub eps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[serde(default)]
    pub amsgrad: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NadamSpec {
    #[serde(default = "lr_002")]
    pub lr: f64,
    #[serde(default = "beta1")]
    pub beta1: f64,
    #[serde(default = "beta2")]
    pub beta2: f64,
    #[serde(default = "eps_8")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "momentum_decay")]
    pub momentum_decay: f64,
}

/// A spec with every field at its serde default (PyTorch's defaults), as an empty TOML table gives it.
fn defaults<T: serde::de::DeserializeOwned>() -> T {
    serde_json::from_value(serde_json::Value::Object(Default::default())).expect("every field has a default")
}

macro_rules! default_from_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                defaults()
            }
        }
    )*};
}
default_from_serde!(SgdSpec, AdagradSpec, AdadeltaSpec, RmspropSpec, AdamSpec, NadamSpec);

impl Default for OptimizerSpec {
    /// Adam with PyTorch's defaults (lr 1e-3).
    fn default() -> Self {
        OptimizerSpec::Adam(AdamSpec::default())
    }
}

impl OptimizerSpec {
    /// Adam at learning rate `lr`, the other settings PyTorch's defaults.
    pub fn adam(lr: f64) -> Self {
        OptimizerSpec::Adam(AdamSpec {
            lr,
            ..Default::default()
        })
    }
    /// AdamW at learning rate `lr` (decoupled weight decay 0.01).
    pub fn adamw(lr: f64) -> Self {
        OptimizerSpec::Adamw(AdamSpec {
            lr,
            ..Default::default()
        })
    }
    /// Plain SGD at learning rate `lr`; set `momentum` etc. on an [`SgdSpec`] for more.
    pub fn sgd(lr: f64) -> Self {
        OptimizerSpec::Sgd(SgdSpec {
            lr,
            ..Default::default()
        })
    }
}

fn lr_1() -> f64 {
    1.0
}
fn lr_01() -> f64 {
    0.01
}
fn lr_001() -> f64 {
    1e-3
}
fn lr_002() -> f64 {
    2e-3
}
fn eps_6() -> f64 {
    1e-6
}
fn eps_8() -> f64 {
    1e-8
}
fn eps_10() -> f64 {
    1e-10
}
fn rho() -> f64 {
    0.9
}
fn alpha() -> f64 {
    0.99
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn momentum_decay() -> f64 {
    4e-3
}

/// Gradient clipping: `{ norm = 1.0 }` rescales each parameter's gradient to at most that L2 norm; `{ value = 0.5 }`
/// clamps every gradient element.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipSpec {
    Norm(f64),
    Value(f64),
}

impl OptimizerSpec {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerSpec::Sgd(s) => s.lr,
            OptimizerSpec::Adagrad(s) => s.lr,
            OptimizerSpec::Adadelta(s) => s.lr,
            OptimizerSpec::Rmsprop(s) => s.lr,
            OptimizerSpec::Adam(s) | OptimizerSpec::Adamw(s) => s.lr,
            OptimizerSpec::Nadam(s) => s.lr,
        }
    }

    pub fn check(&self) -> Result<()> {
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::new(format!("lr must be a positive number, found {lr}")));
        }
        if let OptimizerSpec::Sgd(s) = self
            && s.nesterov
            && (s.momentum <= 0.0 || s.dampening != 0.0)
        {
            return Err(Error::new(
                "nesterov needs momentum > 0 and dampening = 0 (as in PyTorch)",
            ));
        }
        Ok(())
    }

    pub fn init(&self, clip: Option<ClipSpec>) -> Result<ModuleOptimizer> {
        self.check()?;
        let decay = |w: f64| (w != 0.0).then(|| WeightDecayConfig::new(w as f32));
        let clipping = clip.map(|c| match c {
            ClipSpec::Norm(v) => GradientClippingConfig::Norm(v as f32),
            ClipSpec::Value(v) => GradientClippingConfig::Value(v as f32),
        });
        Ok(match self {
            OptimizerSpec::Sgd(s) => SgdConfig::new()
                .with_weight_decay(decay(s.weight_decay))
                .with_momentum((s.momentum != 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(s.momentum)
                        .with_dampening(s.dampening)
                        .with_nesterov(s.nesterov)
                }))
                .with_gradient_clipping(clipping)
                .init(),
            OptimizerSpec::Adagrad(s) => AdaGradConfig::new()
                .with_lr_decay(s.lr_decay)
                .with_epsilon(s.eps as f32)
                .with_weight_decay(decay(s.weight_decay))
                .with_grad_clipping(clipping)
                .init(),
            OptimizerSpec::Rmsprop(s) => RmsPropConfig::new()
                .with_alpha(s.alpha as f32)
                .with_momentum(s.momentum as f32)
                .with_epsilon(s.eps as f32)
                .with_centered(s.centered)
                .with_weight_decay(decay(s.weight_decay))
                .with_grad_clipping(clipping)
                .init(),
            OptimizerSpec::Adam(s) if !s.amsgrad => with_clipping(
                ModuleOptimizer::from(Adam::new(s, s.weight_decay.unwrap_or(0.0), 0.0)),
                clipping,
            ),
            OptimizerSpec::Adamw(s) if !s.amsgrad => with_clipping(
                ModuleOptimizer::from(Adam::new(s, 0.0, s.weight_decay.unwrap_or(0.01))),
                clipping,
            ),
            OptimizerSpec::Adam(s) => AdamConfig::new()
                .with_beta_1(s.beta1 as f32)
                .with_beta_2(s.beta2 as f32)
                .with_epsilon(s.eps as f32)
                .with_amsgrad(s.amsgrad)
                .with_weight_decay(decay(s.weight_decay.unwrap_or(0.0)))
                .with_grad_clipping(clipping)
                .init(),
            OptimizerSpec::Adamw(s) => AdamWConfig::new()
                .with_beta_1(s.beta1 as f32)
                .with_beta_2(s.beta2 as f32)
                .with_epsilon(s.eps as f32)
                .with_amsgrad(s.amsgrad)
                .with_weight_decay(s.weight_decay.unwrap_or(0.01) as f32)
                .with_grad_clipping(clipping)
                .init(),
            OptimizerSpec::Adadelta(s) => with_clipping(ModuleOptimizer::from(Adadelta(s.clone())), clipping),
            OptimizerSpec::Nadam(s) => with_clipping(ModuleOptimizer::from(Nadam(s.clone())), clipping),
        })
    }
}

fn with_clipping(optim: ModuleOptimizer, clipping: Option<GradientClippingConfig>) -> ModuleOptimizer {
    match clipping {
        Some(c) => optim.with_grad_clipping(c.init()),
        None => optim,
    }
}

/// `torch.optim.Adam` and `AdamW` (without AMSGrad, which burn's own serve): m ← β1m + (1-β1)g,
/// v ← β2v + (1-β2)g², θ ← (1 - lr·λ_decoupled)θ - lr·m̂/(√v̂ + ε), with g = ∇ + λ_l2·θ. On the CPU backend one
/// fused pass over parameter, gradient and moments (`graft_kernels::adam`); elsewhere the same formula in tensor ops.
/// The state is burn's `AdamState`, so checkpoints keep their format.
#[derive(Clone)]
struct Adam {
    beta1: f64,
    beta2: f64,
    eps: f64,
    l2: f64,
    decoupled: f64,
}

impl Adam {
    fn new(s: &AdamSpec, l2: f64, decoupled: f64) -> Self {
        Adam {
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.eps,
            l2,
            decoupled,
        }
    }
}

impl Optimizer for Adam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        param: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let (t, m, v) = match state {
            Some(st) => (st.momentum.time + 1, st.momentum.moment_1, st.momentum.moment_2),
            None => (1, grad.zeros_like(), grad.zeros_like()),
        };
        let bc2_sqrt = (1.0 - self.beta2.powi(t as i32)).sqrt();
        let step = AdamStep {
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            step_size: (lr * bc2_sqrt / (1.0 - self.beta1.powi(t as i32))) as f32,
            eps: (self.eps * bc2_sqrt) as f32,
            l2: self.l2 as f32,
            keep: (1.0 - lr * self.decoupled) as f32,
        };
        let (param, m, v) = if fused::applies(&param) {
            fused::adam(param, grad, m, v, step)
        } else {
            let grad = if self.l2 != 0.0 {
                grad + param.clone().mul_scalar(self.l2)
            } else {
                grad
            };
            let m = m.mul_scalar(self.beta1) + grad.clone().mul_scalar(1.0 - self.beta1);
            let v = v.mul_scalar(self.beta2) + grad.square().mul_scalar(1.0 - self.beta2);
            let update = m.clone().mul_scalar(step.step_size) / v.clone().sqrt().add_scalar(step.eps);
            (param.mul_scalar(step.keep) - update, m, v)
        };
        (param, Some(AdamState::new(AdaptiveMomentumState::new(t, m, v))))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

/// `torch.optim.Adadelta`: v ← ρv + (1-ρ)g²; Δ = √(u+ε)/√(v+ε)·g; u ← ρu + (1-ρ)Δ²; θ ← θ - lr·Δ.
/// State: `moment_1` = v (square average), `moment_2` = u (accumulated update).
#[derive(Clone)]
struct Adadelta(AdadeltaSpec);

impl Optimizer for Adadelta {
    type State<const D: usize> = AdaptiveMomentumState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        param: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let s = &self.0;
        let grad = if s.weight_decay != 0.0 {
            grad + param.clone().mul_scalar(s.weight_decay)
        } else {
            grad
        };
        let (v, u) = match state {
            Some(st) => (st.moment_1, st.moment_2),
            None => (grad.zeros_like(), grad.zeros_like()),
        };
        let v = v.mul_scalar(s.rho) + grad.clone().powi_scalar(2).mul_scalar(1.0 - s.rho);
        let delta = u.clone().add_scalar(s.eps).sqrt() / v.clone().add_scalar(s.eps).sqrt() * grad;
        let u = u.mul_scalar(s.rho) + delta.clone().powi_scalar(2).mul_scalar(1.0 - s.rho);
        let param = param - delta.mul_scalar(lr);
        (param, Some(AdaptiveMomentumState::new(0, v, u)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.moment_1 = state.moment_1.to_device(device);
        state.moment_2 = state.moment_2.to_device(device);
        state
    }
}

/// `torch.optim.NAdam` (Dozat 2016 with PyTorch's momentum schedule μ_t = β1(1 - ½·0.96^(t·ψ))).
#[derive(Clone)]
struct Nadam(NadamSpec);

impl Nadam {
    fn mu(&self, t: usize) -> f64 {
        self.0.beta1 * (1.0 - 0.5 * 0.96f64.powf(t as f64 * self.0.momentum_decay))
    }
}

impl Optimizer for Nadam {
    type State<const D: usize> = AdaptiveMomentumState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        param: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let s = &self.0;
        let grad = if s.weight_decay != 0.0 {
            grad + param.clone().mul_scalar(s.weight_decay)
        } else {
            grad
        };
        let (t, m, v) = match state {
            Some(st) => (st.time + 1, st.moment_1, st.moment_2),
            None => (1, grad.zeros_like(), grad.zeros_like()),
        };
        let mu_t = self.mu(t);
        let mu_next = self.mu(t + 1);
        let mu_product: f64 = (1..=t).map(|i| self.mu(i)).product();
        let m = m.mul_scalar(s.beta1) + grad.clone().mul_scalar(1.0 - s.beta1);
        let v = v.mul_scalar(s.beta2) + grad.clone().powi_scalar(2).mul_scalar(1.0 - s.beta2);
        let bias2 = 1.0 - s.beta2.powi(t as i32);
        let denom = v.clone().div_scalar(bias2).sqrt().add_scalar(s.eps);
        let grad_term = grad.mul_scalar(lr * (1.0 - mu_t) / (1.0 - mu_product)) / denom.clone();
        let mom_term = m.clone().mul_scalar(lr * mu_next / (1.0 - mu_product * mu_next)) / denom;
        (param - grad_term - mom_term, Some(AdaptiveMomentumState::new(t, m, v)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.moment_1 = state.moment_1.to_device(device);
        state.moment_2 = state.moment_2.to_device(device);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Module, Param};
    use burn::optim::GradientsParams;

    #[derive(Module, Debug)]
    struct Weights {
        w: Param<Tensor<1>>,
    }

    /// Five steps on loss = Σ c·w² + w from w0 = [0.5, -1, 2], c = [1, 2, 3].
    fn run(spec: &str) -> Vec<f32> {
        let spec: OptimizerSpec = toml::from_str::<toml::Table>(spec)
            .ok()
            .and_then(|t| t.get("o").cloned())
            .map(|v| v.try_into().unwrap())
            .unwrap();
        let device = Device::default().autodiff();
        let mut model = Weights {
            w: Param::from_tensor(Tensor::<1>::from_floats([0.5, -1.0, 2.0], &device)),
        };
        let c = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &device);
        let mut optim = spec.init(None).unwrap();
        for _ in 0..5 {
            let w = model.w.val();
            let loss = (c.clone() * w.clone().powi_scalar(2) + w).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(spec.lr(), model, grads);
        }
        model.w.val().into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn every_optimizer_matches_torch_optim() {
        // tools/reference/optimizers.py (torch 2.15).
        let cases: [(&str, [f32; 3]); 10] = [
            ("o = { sgd = { lr = 0.1 } }", [-0.17232, -0.30832, -0.14448]),
            (
                "o = { sgd = { lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 0.01 } }",
                [-0.6049404, 0.0629153, -0.9182554],
            ),
            ("o = { adagrad = { lr = 0.1 } }", [0.1977149, -0.7055948, 1.6859618]),
            ("o = { adadelta = { lr = 1.0 } }", [0.4836313, -0.9836528, 1.9835967]),
            ("o = { rmsprop = { lr = 0.01 } }", [0.1964658, -0.7043779, 1.6846803]),
            (
                "o = { rmsprop = { lr = 0.01, centered = true } }",
                [0.19284, -0.7010124, 1.6806803],
            ),
            ("o = { adam = { lr = 0.1 } }", [0.0079637, -0.5128689, 1.5026653]),
            (
                "o = { adam = { lr = 0.1, amsgrad = true } }",
                [0.0079637, -0.5128689, 1.5026653],
            ),
            ("o = { adamw = { lr = 0.1 } }", [0.0065114, -0.509073, 1.4937472]),
            ("o = { nadam = { lr = 0.1 } }", [0.1236629, -0.6348404, 1.6073663]),
        ];
        let mut failures = vec![];
        for (spec, expected) in cases {
            let got = run(spec);
            if got.iter().zip(expected).any(|(g, e)| (g - e).abs() > 2e-5) {
                failures.push(format!("{spec}: got {got:?}, torch {expected:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// The fused CPU update (f32) and the tensor-op formula (taken for other dtypes and backends) agree, with both
    /// kinds of weight decay, over several steps.
    #[test]
    fn fused_and_composed_adam_agree() {
        let device = Device::default();
        for (l2, decoupled) in [(0.0, 0.0), (0.1, 0.0), (0.0, 0.05)] {
            let spec = AdamSpec {
                lr: 0.05,
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-8,
                weight_decay: None,
                amsgrad: false,
            };
            let adam = Adam::new(&spec, l2, decoupled);
            let values = [0.5, -1.0, 2.0, 0.0, 3.5];
            let mut fused = Tensor::<1>::from_floats(values, &device);
            let mut composed = fused.clone().cast(burn::tensor::DType::F64);
            let (mut fused_state, mut composed_state) = (None, None);
            for step in 0..4 {
                let grad = Tensor::<1>::from_floats([0.3, -0.2, 1.5, 0.0, -4.0], &device).mul_scalar(step as f64 + 1.0);
                (fused, fused_state) = adam.step(0.05, fused, grad.clone(), fused_state);
                (composed, composed_state) =
                    adam.step(0.05, composed, grad.cast(burn::tensor::DType::F64), composed_state);
            }
            let f = fused.into_data().convert::<f64>().try_to_vec::<f64>().unwrap();
            let c = composed.into_data().convert::<f64>().try_to_vec::<f64>().unwrap();
            for (a, b) in f.iter().zip(&c) {
                assert!(
                    (a - b).abs() < 1e-6,
                    "l2 {l2}, decoupled {decoupled}: fused {f:?}, composed {c:?}"
                );
            }
            assert_ne!(f[..], values.map(f64::from)[..], "the parameters moved");
        }
    }

    #[test]
    fn nesterov_without_momentum_is_refused() {
        let spec = OptimizerSpec::Sgd(SgdSpec {
            lr: 0.1,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 0.0,
        });
        assert!(spec.init(None).is_err());
    }
}
