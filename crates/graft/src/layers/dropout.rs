//! Inverted dropout: in training, each value is zeroed with probability `rate` and the rest scaled by
//! 1/(1-rate); at inference it is the identity. Written on tensor ops (not burn's `Dropout`, which only acts on an
//! autodiff device) so Monte-Carlo dropout can run it at inference too.

use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use super::shape_err;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutConfig {
    pub rate: f64,
}

impl DropoutConfig {
    pub fn check(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(shape_err(format!("rate must be in [0, 1), found {}", self.rate)));
        }
        Ok(())
    }
}

/// Any shape → the same shape.
pub fn dropout<const D: usize>(x: Tensor<D>, rate: f64, active: bool) -> Tensor<D> {
    if !active || rate == 0.0 {
        return x;
    }
    let keep = 1.0 - rate;
    let mask = x.random_like(Distribution::Bernoulli(keep));
    x * mask.div_scalar(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_at_inference_and_scaled_in_training() {
        let device = Device::default();
        device.seed(3);
        let x = Tensor::<2>::ones([200, 100], &device);
        assert_eq!(dropout(x.clone(), 0.25, false).into_data(), x.clone().into_data());
        let y = dropout(x, 0.25, true).into_data().try_to_vec::<f32>().unwrap();
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
        assert!((kept - 0.75).abs() < 0.01, "kept fraction {kept}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    }
}
