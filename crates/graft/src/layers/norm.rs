//! Normalization layers with PyTorch parameter names: batch norm (`weight`, `bias`, `running_mean`,
//! `running_var`), layer norm, group norm and instance norm. The channel axis is the last one for vectors `[F]` and
//! sequences `[L, C]`, the first for images `[C, H, W]`.

use burn::module::{Param, RunningState};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Shape, shape_err};
use crate::error::Result;
use crate::layers::value::Data;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNormConfig {
    /// PyTorch's convention: running = (1-momentum)·running + momentum·batch.
    #[serde(default = "momentum")]
    pub momentum: f64,
    #[serde(default = "eps")]
    pub epsilon: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerNormConfig {
    #[serde(default = "eps")]
    pub epsilon: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupNormConfig {
    pub groups: usize,
    #[serde(default = "eps")]
    pub epsilon: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceNormConfig {
    #[serde(default = "eps")]
    pub epsilon: f64,
    /// Learnable per-channel scale and shift (PyTorch's default: off).
    #[serde(default)]
    pub affine: bool,
}

fn momentum() -> f64 {
    0.1
}
fn eps() -> f64 {
    1e-5
}

/// The number of channels of a per-sample shape under graft's layout conventions.
pub fn channels(input: &Shape) -> Result<usize> {
    match input.as_slice() {
        [f] => Ok(*f),
        [_, c] => Ok(*c),
        [c, _, _] => Ok(*c),
        _ => Err(shape_err(format!(
            "normalization expects [F], [L, C] or [C, H, W], found {input:?}"
        ))),
    }
}

impl BatchNormConfig {
    pub fn init(&self, input: &Shape, device: &Device) -> Result<BatchNorm> {
        if !(0.0..=1.0).contains(&self.momentum) || self.epsilon <= 0.0 {
            return Err(shape_err("momentum must be in [0, 1] and epsilon positive"));
        }
        let c = channels(input)?;
        Ok(BatchNorm {
            weight: Param::from_tensor(Tensor::ones([c], device)),
            bias: Param::from_tensor(Tensor::zeros([c], device)),
            running_mean: RunningState::new(Tensor::zeros([c], device)),
            running_var: RunningState::new(Tensor::ones([c], device)),
            momentum: self.momentum,
            epsilon: self.epsilon,
        })
    }
}

#[derive(Module, Debug)]
pub struct BatchNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    pub momentum: f64,
    pub epsilon: f64,
}

impl BatchNorm {
    /// The same layer with running statistics of its own. burn's `RunningState` is shared by every clone of a
    /// module (one `Arc`), so two clones trained side by side would move each other's statistics; a copy that is
    /// to train on its own needs this.
    pub fn with_own_running_stats(self) -> Self {
        fn own(state: &RunningState<Tensor<1>>) -> RunningState<Tensor<1>> {
            struct Id(Option<burn::module::ParamId>);
            impl burn::module::ModuleVisitor for Id {
                fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                    self.0 = Some(param.id);
                }
            }
            let mut id = Id(None);
            state.visit(&mut id);
            let value = state.value();
            match id.0 {
                Some(id) => RunningState::with_id(id, value),
                None => RunningState::new(value),
            }
        }
        BatchNorm {
            running_mean: own(&self.running_mean),
            running_var: own(&self.running_var),
            ..self
        }
    }

    /// Any supported shape → the same shape. Training uses batch statistics and updates the running ones (the
    /// running variance is the unbiased one, as in PyTorch); inference uses the running statistics.
    ///
    /// A frozen batch norm (its `weight` fixed by `freeze` or outside the layer groups) runs on its running
    /// statistics even in training, and leaves them as they are, as Keras does for a layer with
    /// `trainable = False`: a frozen pretrained backbone then computes the same features in training as in
    /// inference, and small fine-tuning batches cannot overwrite its ImageNet statistics.
    pub fn forward(&self, x: Data, training: bool) -> Data {
        let weight = self.weight.val();
        let frozen = weight.device().is_autodiff() && !weight.is_require_grad();
        let training = training && !frozen;
        match x {
            Data::D2(t) => Data::D2(self.forward_cf(t, training)),
            Data::D3(t) => Data::D3(self.forward_cf(t.swap_dims(1, 2), training).swap_dims(1, 2)),
            Data::D4(t) => Data::D4(self.forward_cf(t, training)),
        }
    }

    fn forward_cf<const D: usize>(&self, x: Tensor<D>, training: bool) -> Tensor<D> {
        if !training {
            let device = x.device();
            return burn::tensor::module::batch_norm(
                x,
                self.weight.val(),
                self.bias.val(),
                self.running_mean.value().to_device(&device),
                self.running_var.value().to_device(&device),
                self.epsilon,
            );
        }
        let dims = x.dims();
        let n: usize = dims
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, d)| d)
            .product();
        let result = burn::tensor::module::batch_norm_train(x, self.weight.val(), self.bias.val(), self.epsilon);
        let unbiased = if n > 1 { n as f64 / (n - 1) as f64 } else { 1.0 };
        let m = self.momentum;
        let mean = self
            .running_mean
            .value_sync()
            .mul_scalar(1.0 - m)
            .add(result.mean.detach().mul_scalar(m));
        let var = self
            .running_var
            .value_sync()
            .mul_scalar(1.0 - m)
            .add(result.variance.detach().mul_scalar(m * unbiased));
        self.running_mean.update(mean.detach());
        self.running_var.update(var.detach());
        // Make the update visible now: inference right after this step, and saving, read the current statistics.
        self.running_mean.value_sync();
        self.running_var.value_sync();
        result.output
    }
}

impl LayerNormConfig {
    pub fn init(&self, input: &Shape, device: &Device) -> Result<LayerNorm> {
        let f = *input
            .last()
            .ok_or_else(|| shape_err("layer norm needs at least one axis"))?;
        Ok(LayerNorm {
            weight: Param::from_tensor(Tensor::ones([f], device)),
            bias: Param::from_tensor(Tensor::zeros([f], device)),
            epsilon: self.epsilon,
        })
    }
}

/// Normalizes over the last axis, as `torch.nn.LayerNorm(normalized_shape=F)`.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub epsilon: f64,
}

impl LayerNorm {
    /// `[..., F]` → `[..., F]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::layer_norm(x, self.weight.val(), Some(self.bias.val()), self.epsilon)
    }
}

impl GroupNormConfig {
    pub fn init(&self, input: &Shape, device: &Device) -> Result<GroupNorm> {
        let c = channels(input)?;
        if self.groups == 0 || c % self.groups != 0 {
            return Err(shape_err(format!(
                "groups = {} must divide the {c} channels",
                self.groups
            )));
        }
        Ok(GroupNorm::new(c, self.groups, self.epsilon, true, device))
    }
}

impl InstanceNormConfig {
    pub fn init(&self, input: &Shape, device: &Device) -> Result<GroupNorm> {
        if input.len() < 2 {
            return Err(shape_err(format!(
                "instance norm needs [L, C] or [C, H, W] inputs, found {input:?}"
            )));
        }
        let c = channels(input)?;
        Ok(GroupNorm::new(c, c, self.epsilon, self.affine, device))
    }
}

/// Group normalization (`torch.nn.GroupNorm`); instance norm is the case groups = channels
/// (`torch.nn.InstanceNorm*d` without running statistics).
#[derive(Module, Debug)]
pub struct GroupNorm {
    pub weight: Option<Param<Tensor<1>>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub groups: usize,
    pub epsilon: f64,
}

impl GroupNorm {
    fn new(channels: usize, groups: usize, epsilon: f64, affine: bool, device: &Device) -> Self {
        GroupNorm {
            weight: affine.then(|| Param::from_tensor(Tensor::ones([channels], device))),
            bias: affine.then(|| Param::from_tensor(Tensor::zeros([channels], device))),
            groups,
            epsilon,
        }
    }

    /// Any supported shape → the same shape.
    pub fn forward(&self, x: Data) -> Data {
        match x {
            Data::D2(t) => Data::D2(self.forward_cf(t)),
            Data::D3(t) => Data::D3(self.forward_cf(t.swap_dims(1, 2)).swap_dims(1, 2)),
            Data::D4(t) => Data::D4(self.forward_cf(t)),
        }
    }

    fn forward_cf<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let (b, c) = (dims[0], dims[1]);
        let grouped: Tensor<3> = x.reshape([b as i64, self.groups as i64, -1]);
        let mean = grouped.clone().mean_dim(2);
        let centered = grouped - mean;
        let var = centered.clone().powi_scalar(2).mean_dim(2);
        let normed: Tensor<D> = (centered / var.add_scalar(self.epsilon).sqrt()).reshape(dims);
        let mut affine_shape = [1usize; D];
        affine_shape[1] = c;
        let mut y = normed;
        if let Some(w) = &self.weight {
            y = y * w.val().reshape(affine_shape);
        }
        if let Some(b) = &self.bias {
            y = y + b.val().reshape(affine_shape);
        }
        y
    }
}
