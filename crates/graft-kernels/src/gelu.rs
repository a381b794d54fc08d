//! GELU (the exact, erf form: `x·Φ(x)`) on plain f32 buffers, on all threads and in plain arithmetic so that it
//! vectorizes. burn-flex runs it as a scalar loop calling libm's `erff` on one thread, which was a fifth of a MiniLM
//! step.

use rayon::prelude::*;

/// Elements per parallel task: large enough to amortize the task, small enough to share a `[B·T, 1536]` tensor.
const CHUNK: usize = 1 << 14;

/// `(Φ(x), φ(x))`, the standard normal distribution and density. Φ(−|x|) = ½·erfc(|x|/√2) by Abramowitz & Stegun
/// 7.1.26 (erf to 1.5e-7 absolute) in its erfc form, so the tail is computed directly instead of as `1 − erf`
/// (within 0.4% of Φ down to x = −6, where x·Φ(x) is already below 1e-8); `e^{−x²/2}` is shared by both.
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let gauss = crate::simd::exp(-0.5 * x * x);
    let tail = 0.5 * poly * gauss;
    let cdf = if x >= 0.0 { 1.0 - tail } else { tail };
    (cdf, gauss * 0.398_942_3) // 1/√(2π)
}

/// `y = x·Φ(x)`.
pub fn forward(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| forward_chunk(x, y));
    y
}

simd_dispatch! {
    fn forward_chunk(x: &[f32], y: &mut [f32]) => forward_body
}

#[inline(always)]
fn forward_body(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * normal_cdf_pdf(x).0;
    }
}

/// `dx = dy·(Φ(x) + x·φ(x))`.
pub fn backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(dx, (x, dy))| backward_chunk(x, dy, dx));
    dx
}

simd_dispatch! {
    fn backward_chunk(x: &[f32], dy: &[f32], dx: &mut [f32]) => backward_body
}

#[inline(always)]
fn backward_body(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
        let (cdf, pdf) = normal_cdf_pdf(x);
        *dx = dy * (cdf + x * pdf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::prelude::*;
    use burn::tensor::activation::gelu;

    /// Against f64 values from the erfc continued fraction / series (exact to well below f32 rounding).
    fn reference_cdf(x: f64) -> f64 {
        // Φ(x) = ½·erfc(−x/√2); erfc by its Taylor series for small arguments and a continued fraction for the tail.
        let z = -x / std::f64::consts::SQRT_2;
        let erfc = |z: f64| -> f64 {
            if z.abs() < 3.0 {
                let mut term = z;
                let mut sum = z;
                for n in 1..200 {
                    term *= -z * z / n as f64;
                    sum += term / (2 * n + 1) as f64;
                }
                1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
            } else if z > 0.0 {
                let mut f = 0.0;
                for n in (1..120).rev() {
                    f = n as f64 / 2.0 / (z + f);
                }
                (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f)
            } else {
                let mut f = 0.0;
                for n in (1..120).rev() {
                    f = n as f64 / 2.0 / (-z + f);
                }
                2.0 - (-z * z).exp() / std::f64::consts::PI.sqrt() / (-z + f)
            }
        };
        0.5 * erfc(z)
    }

    #[test]
    fn cdf_and_pdf_are_accurate_over_the_range() {
        for k in -1200..=1200 {
            let x = k as f64 / 100.0;
            let (cdf, pdf) = normal_cdf_pdf(x as f32);
            let exact = reference_cdf(x);
            assert!((cdf as f64 - exact).abs() < 2.5e-7, "Φ({x}) = {cdf}, expected {exact}");
            if (-6.0..-1.0).contains(&x) {
                assert!(
                    ((cdf as f64) / exact - 1.0).abs() < 4e-3,
                    "Φ({x}) = {cdf}, expected {exact}"
                );
            }
            // what GELU sees: x·Φ(x) to f32 precision everywhere
            assert!((x * (cdf as f64 - exact)).abs() < 3e-7, "x·Φ(x) at {x}");
            let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!(
                (pdf as f64 - density).abs() < 1e-7 * (1.0 + density),
                "φ({x}) = {pdf}, expected {density}"
            );
        }
    }

    /// The fused GELU inside autodiff gives burn's output and input gradient (libm's erf) to f32 precision, and its
    /// own finite differences.
    #[test]
    fn fused_gelu_matches_burns() {
        let device = Device::default().autodiff();
        let values: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) / 2_500.0).collect();
        let x = Tensor::<2>::from_data(TensorData::new(values.clone(), [200, 200]), &device).require_grad();
        let fused = super::super::gelu(x.clone());
        let composed = gelu(x.clone());
        let to_vec = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        for (i, (f, c)) in to_vec(fused.clone())
            .into_iter()
            .zip(to_vec(composed.clone()))
            .enumerate()
        {
            assert!(
                (f - c).abs() < 3e-7 * (1.0 + values[i].abs()),
                "gelu({}) = {f}, burn {c}",
                values[i]
            );
        }
        let g_f = fused.sum().backward();
        let g_c = composed.sum().backward();
        let (df, dc) = (to_vec(x.grad(&g_f).unwrap()), to_vec(x.grad(&g_c).unwrap()));
        for (i, (f, c)) in df.into_iter().zip(dc).enumerate() {
            assert!(
                (f - c).abs() < 5e-7 * (1.0 + values[i].abs()),
                "gelu'({}) = {f}, burn {c}",
                values[i]
            );
        }
        for &x in &[-3.0f32, -0.7, 0.0, 0.4, 2.5] {
            let h = 1e-3f64;
            let g = |x: f64| x * reference_cdf(x);
            let numeric = (g(x as f64 + h) - g(x as f64 - h)) / (2.0 * h);
            let analytic = backward(&[x], &[1.0])[0] as f64;
            assert!(
                (numeric - analytic).abs() < 1e-5,
                "gelu'({x}) = {analytic}, numerically {numeric}"
            );
        }
    }
}
