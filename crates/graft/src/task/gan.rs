//! GAN losses, from the discriminator's raw scores (logits): the non-saturating loss of Goodfellow et al. 2014
//! (the generator maximizes log D(G(z)) rather than minimizing log(1 − D(G(z))), which saturates early in
//! training), and the Wasserstein loss of Arjovsky et al. 2017 with Gulrajani et al.'s gradient penalty (the critic
//! kept 1-Lipschitz by penalizing its input gradient's norm away from 1). Binary cross-entropy on logits is written
//! as softplus, stable for scores of any size.

use burn::prelude::*;
use burn::tensor::activation::softplus;
use serde::{Deserialize, Serialize};

/// `loss = "non_saturating"` or `loss = { wasserstein = { gradient_penalty = 10.0 } }`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GanLoss {
    #[default]
    NonSaturating,
    Wasserstein {
        /// λ of the gradient penalty (WGAN-GP's 10); 0 trains a plain critic, which nothing keeps Lipschitz.
        #[serde(default = "ten")]
        gradient_penalty: f64,
    },
}

fn ten() -> f64 {
    10.0
}

/// mean(softplus(−x)): binary cross-entropy of logits `x` against "real".
fn bce_real(logits: Tensor<2>) -> Tensor<1> {
    softplus(logits.neg(), 1.0).mean()
}

/// mean(softplus(x)): binary cross-entropy of logits `x` against "generated".
fn bce_fake(logits: Tensor<2>) -> Tensor<1> {
    softplus(logits, 1.0).mean()
}

/// The discriminator's loss: BCE(real scores, 1) + BCE(generated scores, 0), each a mean; scores `[n, 1]`.
pub fn discriminator_loss(real_logits: Tensor<2>, fake_logits: Tensor<2>) -> Tensor<1> {
    bce_real(real_logits) + bce_fake(fake_logits)
}

/// The non-saturating generator loss: BCE(scores of generated samples, 1), `[n, 1]` → scalar.
pub fn generator_loss(fake_logits: Tensor<2>) -> Tensor<1> {
    bce_real(fake_logits)
}

/// The critic's Wasserstein loss: mean(generated scores) − mean(real scores) (it learns to score real higher).
pub fn critic_loss(real_scores: Tensor<2>, fake_scores: Tensor<2>) -> Tensor<1> {
    fake_scores.mean() - real_scores.mean()
}

/// The generator's Wasserstein loss: −mean(scores of its samples).
pub fn wasserstein_generator_loss(fake_scores: Tensor<2>) -> Tensor<1> {
    fake_scores.mean().neg()
}

/// WGAN-GP's penalty from the critic's input gradient flattened per sample, `[n, d]`: mean over samples of
/// (‖g‖₂ − 1)². The norm is √(Σg² + 1e-12), so a zero gradient has a finite derivative.
pub fn gradient_penalty_from_grad(input_grad: Tensor<2>) -> Tensor<1> {
    let norm = input_grad.powi_scalar(2).sum_dim(1).add_scalar(1e-12).sqrt();
    norm.sub_scalar(1.0).powi_scalar(2).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn column(values: &[f32], device: &Device) -> Tensor<2> {
        Tensor::<2>::from_data(TensorData::new(values.to_vec(), [values.len(), 1]), device)
    }

    fn value(t: Tensor<1>) -> f64 {
        t.into_scalar::<f32>() as f64
    }

    fn softplus_ref(x: f64) -> f64 {
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }

    #[test]
    fn losses_match_their_definitions_also_for_large_scores() {
        let device = Device::default();
        let real = [2.0f32, -1.0, 40.0];
        let fake = [-3.0f32, 0.5, -60.0];
        let mean = |f: &dyn Fn(f64) -> f64, xs: &[f32]| xs.iter().map(|&x| f(x as f64)).sum::<f64>() / xs.len() as f64;
        let want_d = mean(&|x| softplus_ref(-x), &real) + mean(&softplus_ref, &fake);
        let got_d = value(discriminator_loss(column(&real, &device), column(&fake, &device)));
        assert!((got_d - want_d).abs() < 1e-5, "{got_d} vs {want_d}");
        let want_g = mean(&|x| softplus_ref(-x), &fake);
        let got_g = value(generator_loss(column(&fake, &device)));
        assert!((got_g - want_g).abs() < 1e-5, "{got_g} vs {want_g}");
        let w = value(critic_loss(column(&real, &device), column(&fake, &device)));
        assert!((w - (mean(&|x| x, &fake) - mean(&|x| x, &real))).abs() < 1e-5);
        assert!((value(wasserstein_generator_loss(column(&fake, &device))) + mean(&|x| x, &fake)).abs() < 1e-5);
    }

    #[test]
    fn the_penalty_is_zero_for_unit_gradients_and_finite_at_zero() {
        let device = Device::default().autodiff();
        let unit = Tensor::<2>::from_data(TensorData::new(vec![0.6f32, 0.8, 1.0, 0.0], [2, 2]), &device);
        assert!(value(gradient_penalty_from_grad(unit)) < 1e-10);
        let g = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 0.0, 3.0, 4.0], [2, 2]), &device).require_grad();
        let p = gradient_penalty_from_grad(g.clone());
        // Rows: (0 − 1)² = 1 and (5 − 1)² = 16 → 8.5.
        assert!((value(p.clone()) - 8.5).abs() < 1e-5);
        let grads = p.backward();
        let d = g.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert!(d.iter().all(|v| v.is_finite()), "{d:?}");
        // d/dg of (‖g‖ − 1)² / 2 rows = (‖g‖ − 1)·g/‖g‖ for the second row: 4·(0.6, 0.8).
        assert!((d[2] - 2.4).abs() < 1e-4 && (d[3] - 3.2).abs() < 1e-4, "{d:?}");
    }

    #[test]
    fn the_loss_reads_from_toml() {
        #[derive(Deserialize)]
        struct Doc {
            loss: GanLoss,
        }
        let read = |s: &str| toml::from_str::<Doc>(s).map(|d| d.loss);
        assert_eq!(read("loss = \"non_saturating\"").unwrap(), GanLoss::NonSaturating);
        assert_eq!(
            read("loss = { wasserstein = {} }").unwrap(),
            GanLoss::Wasserstein { gradient_penalty: 10.0 }
        );
        assert!(read("loss = { wasserstein = { penalty = 1 } }").is_err());
    }
}
