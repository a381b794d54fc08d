//! Adversarial losses for training a generator against a discriminator (GANs), kept apart from the supervised
//! losses because each step has two objectives with opposite aims. Two families: the non-saturating loss of
//! Goodfellow et al. (2014), binary cross-entropy on the discriminator's logits, with the generator maximizing log
//! D(G(z)) instead of minimizing log(1 − D(G(z))), which saturates early in training; and the Wasserstein loss
//! (Arjovsky et al. 2017) on an unbounded critic, with the gradient penalty of Gulrajani et al. (2017) as the
//! Lipschitz constraint. The penalty needs the critic's gradient w.r.t. its input, which the training step
//! computes; here is the term made from it.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::task::metric_learning::row_norms;

/// softplus(x) = log(1 + eˣ), as log(1 + e^−|x|) + max(x, 0): no overflow for large |x|.
pub(crate) fn softplus(x: Tensor<2>) -> Tensor<2> {
    x.clone().abs().neg().exp().log1p() + x.clamp_min(0.0)
}

/// The discriminator's non-saturating loss: BCEWithLogits(real, 1) + BCEWithLogits(fake, 0), each the mean over
/// its elements, i.e. mean(softplus(−real)) + mean(softplus(fake)) (PyTorch's
/// `F.binary_cross_entropy_with_logits` on each half). `real_logits [n_real, k]`, `fake_logits [n_fake, k]` (k is
/// usually 1; the two batches may differ in size). → `[1]`.
pub fn discriminator_loss(real_logits: Tensor<2>, fake_logits: Tensor<2>) -> Tensor<1> {
    softplus(real_logits.neg()).mean() + softplus(fake_logits).mean()
}

/// The generator's non-saturating loss: BCEWithLogits(fake, 1) = mean(softplus(−fake)), minimized as the
/// discriminator is fooled. `fake_logits [n, k]` → `[1]`.
pub fn generator_loss(fake_logits: Tensor<2>) -> Tensor<1> {
    softplus(fake_logits.neg()).mean()
}

/// The Wasserstein critic's loss: mean(fake) − mean(real), minimized as the critic scores real samples above
/// generated ones. `real_scores [n_real, k]`, `fake_scores [n_fake, k]` (raw scores, no sigmoid) → `[1]`.
pub fn critic_loss(real_scores: Tensor<2>, fake_scores: Tensor<2>) -> Tensor<1> {
    fake_scores.mean() - real_scores.mean()
}

/// The Wasserstein generator's loss: −mean(fake). `fake_scores [n, k]` → `[1]`.
pub fn wasserstein_generator_loss(fake_scores: Tensor<2>) -> Tensor<1> {
    fake_scores.mean().neg()
}

/// The WGAN-GP gradient penalty given the critic's input gradient: mean over rows of (‖g_row‖₂ − 1)².
/// `input_grad [n, features]`: ∂critic/∂input at the interpolated samples, flattened per row (the caller
/// computes it). The norm goes through [`crate::task::metric_learning::safe_sqrt`], so a zero row contributes 1
/// with a zero gradient (torch's norm gives the same) rather than NaN. Multiply by the penalty weight (λ = 10 in
/// Gulrajani et al.). → `[1]`.
pub fn gradient_penalty_from_grad(input_grad: Tensor<2>) -> Tensor<1> {
    row_norms(input_grad).sub_scalar(1.0).powi_scalar(2).mean()
}

fn default_gradient_penalty() -> f64 {
    10.0
}

/// `gan_loss = "non_saturating"` (the default) or `gan_loss = { wasserstein = { gradient_penalty = 10.0 } }`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GanLoss {
    /// Binary cross-entropy on logits ([`discriminator_loss`], [`generator_loss`]).
    #[default]
    NonSaturating,
    /// Critic scores ([`critic_loss`], [`wasserstein_generator_loss`]) and the weight of
    /// [`gradient_penalty_from_grad`] in the critic's loss (0: none).
    Wasserstein {
        #[serde(default = "default_gradient_penalty")]
        gradient_penalty: f64,
    },
}

impl GanLoss {
    pub fn check(&self) -> Result<()> {
        match self {
            GanLoss::Wasserstein { gradient_penalty }
                if !(*gradient_penalty >= 0.0 && gradient_penalty.is_finite()) =>
            {
                Err(Error::new(format!(
                    "gradient_penalty must be 0 or more and finite, found {gradient_penalty}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The discriminator's (or critic's) loss without the gradient penalty: `real [n_real, k]`, `fake [n_fake, k]`
    /// → `[1]`.
    pub fn discriminator(&self, real: Tensor<2>, fake: Tensor<2>) -> Tensor<1> {
        match self {
            GanLoss::NonSaturating => discriminator_loss(real, fake),
            GanLoss::Wasserstein { .. } => critic_loss(real, fake),
        }
    }

    /// The generator's loss: `fake [n, k]` → `[1]`.
    pub fn generator(&self, fake: Tensor<2>) -> Tensor<1> {
        match self {
            GanLoss::NonSaturating => generator_loss(fake),
            GanLoss::Wasserstein { .. } => wasserstein_generator_loss(fake),
        }
    }

    /// The weight of the gradient penalty, when there is one to compute.
    pub fn gradient_penalty(&self) -> Option<f64> {
        match self {
            GanLoss::Wasserstein { gradient_penalty } if *gradient_penalty > 0.0 => Some(*gradient_penalty),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad() -> Device {
        Device::default().autodiff()
    }

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    fn close(got: f32, want: f64) {
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }

    fn sp(x: f64) -> f64 {
        (1.0 + x.exp()).ln()
    }

    #[test]
    fn non_saturating_losses_are_binary_cross_entropy() {
        let real = Tensor::<2>::from_floats([[2.0], [-0.5]], &ad());
        let fake = Tensor::<2>::from_floats([[-1.0], [0.3], [1.5]], &ad());
        let d = host(discriminator_loss(real, fake.clone()))[0];
        close(d, (sp(-2.0) + sp(0.5)) / 2.0 + (sp(-1.0) + sp(0.3) + sp(1.5)) / 3.0);
        close(host(generator_loss(fake))[0], (sp(1.0) + sp(-0.3) + sp(-1.5)) / 3.0);
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let x = Tensor::<2>::from_floats([[-200.0], [200.0]], &ad()).require_grad();
        let v = generator_loss(x.clone());
        close(host(v.clone())[0], 100.0);
        let g = host(x.grad(&v.backward()).unwrap());
        close(g[0], -0.5);
        close(g[1], 0.0);
    }

    #[test]
    fn wasserstein_losses_and_penalty() {
        let real = Tensor::<2>::from_floats([[1.0], [3.0]], &ad());
        let fake = Tensor::<2>::from_floats([[0.5], [-0.5], [1.5]], &ad());
        close(host(critic_loss(real, fake.clone()))[0], 0.5 - 2.0);
        close(host(wasserstein_generator_loss(fake))[0], -0.5);
        let g = Tensor::<2>::from_floats([[3.0, 4.0], [0.0, 0.0]], &ad()).require_grad();
        let p = gradient_penalty_from_grad(g.clone());
        close(host(p.clone())[0], (16.0 + 1.0) / 2.0);
        let grad = host(g.grad(&p.backward()).unwrap());
        // Row 0: 2·(5 − 1)·(3, 4)/5 / 2; row 1: zero, not NaN.
        close(grad[0], 2.4);
        close(grad[1], 3.2);
        assert_eq!(&grad[2..], &[0.0, 0.0]);
    }

    #[test]
    fn gan_loss_parses_with_defaults() {
        #[derive(Deserialize)]
        struct T {
            gan_loss: GanLoss,
        }
        assert_eq!(GanLoss::default(), GanLoss::NonSaturating);
        let t: T = toml::from_str("gan_loss = \"non_saturating\"").unwrap();
        assert_eq!(t.gan_loss, GanLoss::NonSaturating);
        let t: T = toml::from_str("gan_loss = { wasserstein = {} }").unwrap();
        assert_eq!(t.gan_loss, GanLoss::Wasserstein { gradient_penalty: 10.0 });
        assert_eq!(t.gan_loss.gradient_penalty(), Some(10.0));
        let t: T = toml::from_str("gan_loss = { wasserstein = { gradient_penalty = 0.0 } }").unwrap();
        assert_eq!(t.gan_loss.gradient_penalty(), None);
        assert!(toml::from_str::<T>("gan_loss = { wasserstein = { penalty = 1.0 } }").is_err());
        assert!(toml::from_str::<T>("gan_loss = \"minimax\"").is_err());
        assert!(GanLoss::Wasserstein { gradient_penalty: -1.0 }.check().is_err());
        assert!(GanLoss::Wasserstein { gradient_penalty: 10.0 }.check().is_ok());
    }
}
