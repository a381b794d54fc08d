//! The dense (linear) layer `y = x·Wᵀ + b` with PyTorch's weight layout `W [out, in]`, on plain f32 buffers (see
//! [`super`]). Composed from burn's primitives, the weight is used through a transposed view, so its gradient
//! arrives as a transposed (strided) tensor and every optimizer update on it takes the backend's slow strided path;
//! here the backward writes `dW = dyᵀ·x` directly in `[out, in]` order.

use crate::matmul::matmul_parallel;

/// `x` `[N, in]`, `w` `[out, in]`, `b` `[out]` → `y` `[N, out]`.
pub fn forward(n: usize, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let (out_f, in_f) = (b.len(), w.len() / b.len().max(1));
    let mut y: Vec<f32> = Vec::with_capacity(n * out_f);
    for _ in 0..n {
        y.extend_from_slice(b);
    }
    matmul_parallel(
        (n, out_f, in_f),
        &mut y,
        (out_f as isize, 1),
        true,
        x,
        (in_f as isize, 1),
        w,
        (1, in_f as isize),
    );
    y
}

/// Gradients of `x`, `w` and `b` from `dy` `[N, out]`.
pub fn backward(n: usize, dy: &[f32], x: &[f32], w: &[f32], out_f: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let in_f = w.len() / out_f.max(1);
    let mut dx = vec![0f32; n * in_f];
    matmul_parallel(
        (n, in_f, out_f),
        &mut dx,
        (in_f as isize, 1),
        false,
        dy,
        (out_f as isize, 1),
        w,
        (in_f as isize, 1),
    );
    let mut dw = vec![0f32; out_f * in_f];
    matmul_parallel(
        (out_f, in_f, n),
        &mut dw,
        (in_f as isize, 1),
        false,
        dy,
        (1, out_f as isize),
        x,
        (in_f as isize, 1),
    );
    let mut db = vec![0f32; out_f];
    for row in dy.chunks_exact(out_f.max(1)) {
        for (acc, v) in db.iter_mut().zip(row) {
            *acc += v;
        }
    }
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_backward_match_the_definitions() {
        // x [2, 3], w [2, 3], b [2]
        let x = [1.0, 2.0, 3.0, -1.0, 0.5, 2.0];
        let w = [0.1, -0.2, 0.3, 0.5, 0.4, -0.1];
        let b = [0.05, -0.5];
        let y = forward(2, &x, &w, &b);
        let expect = |r: usize, o: usize| b[o] + (0..3).map(|j| x[r * 3 + j] * w[o * 3 + j]).sum::<f32>();
        for r in 0..2 {
            for o in 0..2 {
                assert!((y[r * 2 + o] - expect(r, o)).abs() < 1e-6);
            }
        }
        let dy = [1.0, -2.0, 0.5, 3.0];
        let (dx, dw, db) = backward(2, &dy, &x, &w, 2);
        for r in 0..2 {
            for j in 0..3 {
                let e: f32 = (0..2).map(|o| dy[r * 2 + o] * w[o * 3 + j]).sum();
                assert!((dx[r * 3 + j] - e).abs() < 1e-6);
            }
        }
        for o in 0..2 {
            for j in 0..3 {
                let e: f32 = (0..2).map(|r| dy[r * 2 + o] * x[r * 3 + j]).sum();
                assert!((dw[o * 3 + j] - e).abs() < 1e-6);
            }
            assert!((db[o] - (dy[o] + dy[2 + o])).abs() < 1e-6);
        }
    }
}
