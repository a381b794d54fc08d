//! The reparameterization trick of variational autoencoders (Kingma & Welling 2014): from a mean and a log-variance
//! it draws `z = mean + exp(log_var / 2) · ε` with `ε ~ N(0, I)`, so the draw is differentiable in both. In
//! training (and Monte-Carlo sampling) it draws; in inference it passes the mean through, so reconstructions and
//! embeddings of a trained VAE are deterministic. New samples come from the prior through the decoder
//! (`graft sample`), not from this layer. It has no parameters.

use burn::prelude::*;
use burn::tensor::Distribution;

use super::{Shape, shape_err};
use crate::error::Result;
use crate::layers::value::Data;

/// Two inputs `[mean, log_var]` of one shape → that shape.
pub fn infer(inputs: &[Shape], names: &[String]) -> Result<Shape> {
    if inputs.len() != 2 {
        return Err(shape_err(format!(
            "sampling takes two inputs, the mean and the log-variance (from = [\"mean\", \"log_var\"]), found {}",
            inputs.len()
        )));
    }
    if inputs[0] != inputs[1] {
        return Err(shape_err(format!(
            "the mean '{}' has shape {:?} but the log-variance '{}' has shape {:?}; they must be equal",
            names[0], inputs[0], names[1], inputs[1]
        )));
    }
    Ok(inputs[0].clone())
}

fn draw<const D: usize>(mean: Tensor<D>, log_var: Tensor<D>) -> Tensor<D> {
    let eps = mean.random_like(Distribution::Normal(0.0, 1.0));
    mean + log_var.mul_scalar(0.5).exp() * eps
}

/// `mean`, `log_var` `[batch, ...]` → `[batch, ...]`: a reparameterized draw when `active`, else `mean`.
pub fn forward(mean: Data, log_var: Data, active: bool) -> Result<Data> {
    if !active {
        return Ok(mean);
    }
    Ok(match (mean, log_var) {
        (Data::D2(m), Data::D2(v)) => Data::D2(draw(m, v)),
        (Data::D3(m), Data::D3(v)) => Data::D3(draw(m, v)),
        (Data::D4(m), Data::D4(v)) => Data::D4(draw(m, v)),
        (m, v) => {
            return Err(shape_err(format!(
                "the mean has {} axes but the log-variance {}",
                m.rank(),
                v.rank()
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_have_the_given_mean_and_variance_and_inference_passes_the_mean() {
        let device = Device::default();
        device.seed(11);
        let mean = Tensor::<2>::full([4000, 3], 1.5, &device);
        let log_var = Tensor::<2>::full([4000, 3], (0.25f64).ln(), &device);
        let z = forward(Data::D2(mean.clone()), Data::D2(log_var.clone()), true)
            .unwrap()
            .d2()
            .unwrap();
        let values = z.into_data().try_to_vec::<f32>().unwrap();
        let n = values.len() as f64;
        let avg = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values.iter().map(|&v| (v as f64 - avg).powi(2)).sum::<f64>() / n;
        // 12,000 draws of N(1.5, 0.25): the standard error of the mean is 0.0046, of the variance 0.0032.
        assert!((avg - 1.5).abs() < 0.02, "mean {avg}");
        assert!((var - 0.25).abs() < 0.015, "variance {var}");
        let passed = forward(Data::D2(mean.clone()), Data::D2(log_var), false)
            .unwrap()
            .d2()
            .unwrap();
        assert_eq!(passed.into_data(), mean.into_data());
    }

    #[test]
    fn the_draw_is_differentiable_in_mean_and_log_variance() {
        let device = Device::default().autodiff();
        device.seed(5);
        let mean = Tensor::<2>::zeros([2, 3], &device).require_grad();
        let log_var = Tensor::<2>::zeros([2, 3], &device).require_grad();
        let z = forward(Data::D2(mean.clone()), Data::D2(log_var.clone()), true)
            .unwrap()
            .d2()
            .unwrap();
        let eps = z.clone().into_data().try_to_vec::<f32>().unwrap();
        let grads = z.sum().backward();
        let dm = mean.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let dv = log_var.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert!(dm.iter().all(|&g| (g - 1.0).abs() < 1e-6));
        // d z / d log_var = ε · exp(log_var / 2) / 2 = ε / 2 at log_var = 0, and z = ε there.
        for (g, e) in dv.iter().zip(&eps) {
            assert!((g - e / 2.0).abs() < 1e-6, "{g} vs {}", e / 2.0);
        }
    }

    #[test]
    fn shapes_are_checked() {
        let names = ["m".to_string(), "v".to_string()];
        assert!(
            infer(&[vec![4], vec![5]], &names)
                .unwrap_err()
                .to_string()
                .contains("must be equal")
        );
        assert!(
            infer(&[vec![4]], &names[..1])
                .unwrap_err()
                .to_string()
                .contains("two inputs")
        );
        assert_eq!(infer(&[vec![4], vec![4]], &names).unwrap(), vec![4]);
    }
}
