//! Softmax over the last axis on plain f32 buffers (see [`super`]), rows on all threads. burn's autodiff backend
//! composes softmax from max, subtract, exp, sum and divide, each a full pass and `exp` a scalar loop on one
//! thread; here the forward is one pass per row and the backward `dx = y·(dy − Σ dy·y)` another.

use crate::simd::{lane_dot, lane_sum};
use rayon::prelude::*;

/// Rows per parallel task.
fn rows_per_task(row: usize) -> usize {
    (16_384 / row.max(1)).max(1)
}

/// `x` `[rows, row]` → `softmax(x)` along each row.
pub fn forward(x: &[f32], row: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    if row == 0 {
        return y;
    }
    let chunk = rows_per_task(row) * row;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(y, x)| forward_rows(x, y, row));
    y
}

simd_dispatch! {
    fn forward_rows(x: &[f32], y: &mut [f32], row: usize) => forward_body
}

#[inline(always)]
fn forward_body(x: &[f32], y: &mut [f32], row: usize) {
    for (y, x) in y.chunks_exact_mut(row).zip(x.chunks_exact(row)) {
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        // A row of −∞ (every position masked out) has no maximum to subtract; PyTorch gives NaN there too.
        for (y, &x) in y.iter_mut().zip(x) {
            *y = crate::simd::exp(x - max);
        }
        let scale = 1.0 / lane_sum(y);
        for y in y.iter_mut() {
            *y *= scale;
        }
    }
}

/// The input gradient from the output `y` and its gradient `dy`, both `[rows, row]`.
pub fn backward(y: &[f32], dy: &[f32], row: usize) -> Vec<f32> {
    let mut dx = vec![0f32; y.len()];
    if row == 0 {
        return dx;
    }
    let chunk = rows_per_task(row) * row;
    dx.par_chunks_mut(chunk)
        .zip(y.par_chunks(chunk).zip(dy.par_chunks(chunk)))
        .for_each(|(dx, (y, dy))| backward_rows(y, dy, dx, row));
    dx
}

simd_dispatch! {
    fn backward_rows(y: &[f32], dy: &[f32], dx: &mut [f32], row: usize) => backward_body
}

#[inline(always)]
fn backward_body(y: &[f32], dy: &[f32], dx: &mut [f32], row: usize) {
    for ((dx, y), dy) in dx
        .chunks_exact_mut(row)
        .zip(y.chunks_exact(row))
        .zip(dy.chunks_exact(row))
    {
        let dot = lane_dot(y, dy);
        for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
            *dx = y * (dy - dot);
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::Distribution;
    use burn::tensor::activation::softmax;

    /// The fused softmax inside autodiff gives burn's composed output and gradient, including very negative
    /// (masked) entries, for rows shorter and longer than a task.
    #[test]
    fn fused_softmax_matches_burns() {
        let device = Device::default().autodiff();
        for shape in [[3, 4, 7], [2, 5, 5000]] {
            let mask = Tensor::<3>::random(shape, Distribution::Bernoulli(0.2), &device).mul_scalar(-1e9);
            let x = (Tensor::<3>::random(shape, Distribution::Normal(0.0, 3.0), &device) + mask).require_grad();
            let fused = super::super::softmax(x.clone());
            let composed = softmax(x.clone(), 2);
            let to_vec = |t: Tensor<3>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            for (f, c) in to_vec(fused.clone()).into_iter().zip(to_vec(composed.clone())) {
                assert!((f - c).abs() < 1e-6 + 1e-5 * c.abs(), "softmax {f} vs burn {c}");
            }
            let weights = Tensor::<3>::random(shape, Distribution::Uniform(-1.0, 1.0), &device);
            let g_f = (fused * weights.clone()).sum().backward();
            let g_c = (composed * weights).sum().backward();
            for (f, c) in to_vec(x.grad(&g_f).unwrap())
                .into_iter()
                .zip(to_vec(x.grad(&g_c).unwrap()))
            {
                assert!(
                    (f - c).abs() < 1e-6 + 1e-5 * c.abs(),
                    "softmax gradient {f} vs burn {c}"
                );
            }
        }
    }
}
