//! Weight initializers, chosen per layer (`kernel_initializer = "he_normal"`). Fan-in and fan-out follow PyTorch's
//! `_calculate_fan_in_and_fan_out`: for a weight `[out, in, k...]`, fan_in = in·∏k and fan_out = out·∏k.

use burn::module::Param;
use burn::nn::Initializer as BurnInit;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// How a parameter's initial values are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Initializer {
    /// U(±√(6/(fan_in+fan_out))) — Keras' default for dense and convolution kernels.
    GlorotUniform,
    /// N(0, 2/(fan_in+fan_out)).
    GlorotNormal,
    /// U(±√(6/fan_in)).
    HeUniform,
    /// N(0, 2/fan_in).
    HeNormal,
    /// U(±√(3/fan_in)).
    LecunUniform,
    /// N(0, 1/fan_in).
    LecunNormal,
    /// A (semi-)orthogonal matrix, PyTorch's algorithm — Keras' default for recurrent kernels.
    Orthogonal,
    Zeros,
    Ones,
    Constant(f64),
    Uniform {
        min: f64,
        max: f64,
    },
    Normal {
        mean: f64,
        std: f64,
    },
}

impl Initializer {
    pub const NAMES: [&'static str; 12] = [
        "glorot_uniform",
        "glorot_normal",
        "he_uniform",
        "he_normal",
        "lecun_uniform",
        "lecun_normal",
        "orthogonal",
        "zeros",
        "ones",
        "constant",
        "uniform",
        "normal",
    ];

    /// A parameter of `shape` (PyTorch layout: `[out, in, kernel...]` for weights).
    pub fn init<const D: usize>(self, shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
        let (fan_in, fan_out) = fans(&shape);
        let burn_init = match self {
            Initializer::GlorotUniform => BurnInit::XavierUniform { gain: 1.0 },
            Initializer::GlorotNormal => BurnInit::XavierNormal { gain: 1.0 },
            Initializer::HeUniform => BurnInit::KaimingUniform {
                gain: 2f64.sqrt(),
                fan_out_only: false,
            },
            Initializer::HeNormal => BurnInit::KaimingNormal {
                gain: 2f64.sqrt(),
                fan_out_only: false,
            },
            Initializer::LecunUniform => BurnInit::KaimingUniform {
                gain: 1.0,
                fan_out_only: false,
            },
            Initializer::LecunNormal => BurnInit::KaimingNormal {
                gain: 1.0,
                fan_out_only: false,
            },
            Initializer::Orthogonal => BurnInit::Orthogonal { gain: 1.0 },
            Initializer::Zeros => BurnInit::Zeros,
            Initializer::Ones => BurnInit::Ones,
            Initializer::Constant(value) => BurnInit::Constant { value },
            Initializer::Uniform { min, max } => BurnInit::Uniform { min, max },
            Initializer::Normal { mean, std } => BurnInit::Normal { mean, std },
        };
        burn_init.init_with(shape, Some(fan_in), Some(fan_out), device)
    }
}

/// PyTorch's fan computation: dimension 0 is out, 1 is in, the rest are receptive-field dimensions.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [out, inp, rest @ ..] => {
            let receptive: usize = rest.iter().product();
            (inp * receptive, out * receptive)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(values: &[f32]) -> (f64, f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let max_abs = values.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
        (mean, var, max_abs)
    }

    fn draw(init: Initializer, shape: [usize; 2]) -> Vec<f32> {
        let device = Device::default();
        device.seed(7);
        init.init(shape, &device).val().into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn fans_follow_pytorch() {
        assert_eq!(fans(&[64, 32]), (32, 64));
        assert_eq!(fans(&[16, 3, 5, 5]), (75, 400));
    }

    #[test]
    fn variances_match_the_formulas() {
        // [out=300, in=200]: fan_in 200, fan_out 300. 60,000 draws: the sample variance is within ~1% (4σ).
        let (fi, fo): (f64, f64) = (200.0, 300.0);
        let cases = [
            (
                Initializer::GlorotUniform,
                2.0 / (fi + fo),
                Some((6.0 / (fi + fo)).sqrt()),
            ),
            (Initializer::GlorotNormal, 2.0 / (fi + fo), None),
            (Initializer::HeUniform, 2.0 / fi, Some((6.0 / fi).sqrt())),
            (Initializer::HeNormal, 2.0 / fi, None),
            (Initializer::LecunUniform, 1.0 / fi, Some((3.0 / fi).sqrt())),
            (Initializer::LecunNormal, 1.0 / fi, None),
        ];
        for (init, expected_var, bound) in cases {
            let (mean, var, max_abs) = stats(&draw(init, [300, 200]));
            assert!(
                mean.abs() < 4.0 * (expected_var / 60000.0).sqrt(),
                "{init:?} mean {mean}"
            );
            assert!(
                (var / expected_var - 1.0).abs() < 0.03,
                "{init:?} var {var} expected {expected_var}"
            );
            if let Some(b) = bound {
                assert!(max_abs <= b + 1e-6, "{init:?} exceeds its bound {b}: {max_abs}");
                assert!(max_abs > 0.95 * b, "{init:?} does not reach its bound {b}: {max_abs}");
            }
        }
    }

    #[test]
    fn orthogonal_rows_are_orthonormal() {
        let w = draw(Initializer::Orthogonal, [8, 16]);
        for i in 0..8 {
            for j in 0..8 {
                let dot: f32 = (0..16).map(|k| w[i * 16 + k] * w[j * 16 + k]).sum();
                let expected = if i == j { 1.0 } else { 0.0 };
                assert!((dot - expected).abs() < 1e-4, "rows {i},{j}: {dot}");
            }
        }
    }

    #[test]
    fn constants() {
        assert!(draw(Initializer::Zeros, [3, 4]).iter().all(|&v| v == 0.0));
        assert!(draw(Initializer::Constant(0.5), [3, 4]).iter().all(|&v| v == 0.5));
    }
}
