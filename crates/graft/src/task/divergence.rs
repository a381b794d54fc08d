//! Divergences between distributions, the terms that make a model generative rather than a predictor: the
//! variational autoencoder's KL(q(z|x) ‖ N(0, I)) in closed form for a diagonal Gaussian, and the KL divergence of
//! a predicted log-distribution from a target distribution (distillation, label distributions), with PyTorch's
//! `F.kl_div(..., reduction="batchmean")` semantics so numbers carry over from PyTorch code.

use burn::prelude::*;

use crate::error::{Error, Result};

/// Checks that two matrices have the same shape and at least one row.
pub(crate) fn same_shape(what: &str, a: &str, a_dims: [usize; 2], b: &str, b_dims: [usize; 2]) -> Result<()> {
    if a_dims != b_dims {
        return Err(Error::new(format!(
            "{what}: `{a}` and `{b}` must have the same shape [batch, dims], found {a_dims:?} and {b_dims:?}"
        )));
    }
    if a_dims[0] == 0 {
        return Err(Error::new(format!("{what}: an empty batch ({a} has shape {a_dims:?})")));
    }
    Ok(())
}

/// KL(N(mean, exp(log_var)) ‖ N(0, I)) of each row, summed over the latent axis: −½·Σⱼ(1 + log_var − mean² −
/// exp(log_var)). `mean [batch, latent]`, `log_var [batch, latent]` (the encoder's log-variance) → `[batch]`: the
/// per-sample term of the ELBO.
pub fn gaussian_kl_per_row(mean: Tensor<2>, log_var: Tensor<2>) -> Result<Tensor<1>> {
    same_shape("gaussian_kl", "mean", mean.dims(), "log_var", log_var.dims())?;
    let inner = log_var.clone().add_scalar(1.0) - mean.powi_scalar(2) - log_var.exp();
    Ok(inner.sum_dim(1).squeeze_dim::<1>(1).mul_scalar(-0.5))
}

/// The VAE's KL term: [`gaussian_kl_per_row`] averaged over rows (summed over the latent axis, as in Kingma &
/// Welling 2014 and the PyTorch VAE example, not averaged over it). `mean [batch, latent]`, `log_var [batch,
/// latent]` → `[1]`.
pub fn gaussian_kl(mean: Tensor<2>, log_var: Tensor<2>) -> Result<Tensor<1>> {
    Ok(gaussian_kl_per_row(mean, log_var)?.mean())
}

/// KL(target ‖ input) with PyTorch's `F.kl_div(log_input, target, reduction="batchmean")`: Σ target·(log target −
/// log_input) over every element, divided by the batch size. `log_input [batch, classes]` holds log-probabilities
/// (a `log_softmax`), `target [batch, classes]` probabilities (not logs). A zero target contributes 0 (0·log 0 =
/// 0, as torch's `xlogy`), never NaN; there the gradient w.r.t. the target leaves out the t·log t term, whose
/// derivative is −∞ at 0 (torch gives NaN). Negative targets give NaN, as in torch. → `[1]`.
pub fn kl_div(log_input: Tensor<2>, target: Tensor<2>) -> Result<Tensor<1>> {
    let dims = log_input.dims();
    same_shape("kl_div", "log_input", dims, "target", target.dims())?;
    let zero = target.clone().equal_elem(0.0);
    // t·log t with the zeros' log taken of 1: 0·0 = 0, and a zero (not NaN) gradient through the log.
    let t_log_t = target.clone() * target.clone().mask_fill(zero, 1.0).log();
    Ok((t_log_t - target * log_input).sum().div_scalar(dims[0] as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn device() -> Device {
        Device::default()
    }

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    fn close(got: f32, want: f64) {
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }

    // Reference values: torch 2.15 in float64 on the same numbers.
    #[test]
    fn gaussian_kl_matches_the_closed_form() {
        let mean = Tensor::<2>::from_floats([[0.5, -1.0], [0.0, 0.0]], &device());
        let log_var = Tensor::<2>::from_floats([[0.2, -0.4], [0.0, 0.0]], &device());
        let rows = host(gaussian_kl_per_row(mean.clone(), log_var.clone()).unwrap());
        // Row 0: −½·[(1 + 0.2 − 0.25 − e^0.2) + (1 − 0.4 − 1 − e^−0.4)].
        let r0 = -0.5 * ((1.2 - 0.25 - 0.2f64.exp()) + (0.6 - 1.0 - (-0.4f64).exp()));
        close(rows[0], r0); // 0.6709 with torch.distributions.kl_divergence
        close(rows[1], 0.0);
        close(host(gaussian_kl(mean, log_var).unwrap())[0], r0 / 2.0);
    }

    #[test]
    fn kl_div_matches_torch_batchmean_with_zero_targets() {
        let d = device().autodiff();
        let log_input = Tensor::<2>::from_floats([[-1.0, -2.0, -0.5], [-0.3, -1.5, -2.5]], &d).require_grad();
        let target = Tensor::<2>::from_floats([[0.0, 0.25, 0.75], [0.5, 0.5, 0.0]], &d).require_grad();
        let value = kl_div(log_input.clone(), target.clone()).unwrap();
        // torch.nn.functional.kl_div(x, t, reduction="batchmean") in float64: Σ t·(log t − x) / 2.
        close(host(value.clone())[0], 0.259_758_837);
        let grads = value.backward();
        let gt = host(target.grad(&grads).unwrap());
        assert!(gt.iter().all(|g| g.is_finite()), "{gt:?}");
        let gx = host(log_input.grad(&grads).unwrap());
        close(gx[0], 0.0);
        close(gx[2], -0.375);
    }

    #[test]
    fn mismatched_or_empty_shapes_are_errors() {
        let a = Tensor::<2>::zeros([3, 2], &device());
        let b = Tensor::<2>::zeros([3, 4], &device());
        let e = gaussian_kl(a.clone(), b.clone()).unwrap_err().to_string();
        assert!(
            e.contains("[3, 2]") && e.contains("[3, 4]") && e.contains("log_var"),
            "{e}"
        );
        assert!(kl_div(a, b).is_err());
        let empty = Tensor::<2>::from_data(TensorData::new(Vec::<f32>::new(), [0, 2]), &device());
        assert!(
            gaussian_kl(empty.clone(), empty)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }
}
