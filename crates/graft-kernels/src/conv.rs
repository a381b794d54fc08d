//! A 2-D convolution (groups = 1) on plain f32 buffers (see [`super`]), forward and backward as gemms over each
//! image's im2col matrix, images across threads: `y_n = W · col + b`; `dW += dy_n · colᵀ` and `dcol = Wᵀ · dy_n`,
//! scattered back into the input (col2im) only when the input needs a gradient (not for the first layer).
//! burn-flex's backward falls back to burn's generic routines (a transposed convolution for the input gradient), and
//! its forward picked a strided per-element path for the benchmark's small-channel layers (13% of a CNN step).

use rayon::prelude::*;

use crate::matmul::matmul;

pub use crate::conv_geometry::Geometry;

impl Geometry {
    fn patch(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }

    fn positions(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// The input row/column a window position and kernel offset read, `None` in the padding.
    fn source(&self, axis: usize, out: usize, k: usize) -> Option<usize> {
        (out * self.stride[axis] + k * self.dilation[axis])
            .checked_sub(self.pad_begin[axis])
            .filter(|&v| v < self.input[axis])
    }

    /// With unit stride and dilation along the columns, the output columns `j` whose input column `j + b − pad` is
    /// inside the image, for kernel column `b`: one contiguous run per row, copied or added as a slice.
    fn unit_columns(&self, b: usize) -> Option<std::ops::Range<usize>> {
        if self.stride[1] != 1 || self.dilation[1] != 1 {
            return None;
        }
        let start = self.pad_begin[1].saturating_sub(b);
        let end = (self.input[1] + self.pad_begin[1])
            .saturating_sub(b)
            .min(self.output[1]);
        Some(start..end.max(start))
    }

    /// One image's im2col matrix `[Ci·KH·KW, Ho·Wo]`.
    fn im2col(&self, image: &[f32], col: &mut [f32]) {
        let (p, [h, w]) = (self.positions(), self.input);
        for ci in 0..self.in_channels {
            for a in 0..self.kernel[0] {
                for b in 0..self.kernel[1] {
                    let row = &mut col[((ci * self.kernel[0] + a) * self.kernel[1] + b) * p..][..p];
                    for i in 0..self.output[0] {
                        let dst = &mut row[i * self.output[1]..(i + 1) * self.output[1]];
                        match self.source(0, i, a) {
                            None => dst.fill(0.0),
                            Some(y) => match self.unit_columns(b) {
                                Some(run) => {
                                    let src = &image[(ci * h + y) * w..][..w];
                                    let x0 = run.start + b - self.pad_begin[1];
                                    dst[..run.start].fill(0.0);
                                    dst[run.clone()].copy_from_slice(&src[x0..x0 + run.len()]);
                                    dst[run.end..].fill(0.0);
                                }
                                None => {
                                    for (j, d) in dst.iter_mut().enumerate() {
                                        *d = self.source(1, j, b).map_or(0.0, |x| image[(ci * h + y) * w + x]);
                                    }
                                }
                            },
                        }
                    }
                }
            }
        }
    }

    /// Adds an im2col-shaped gradient back into one image's input gradient.
    fn col2im(&self, dcol: &[f32], dimage: &mut [f32]) {
        col2im_image(self, dcol, dimage)
    }
}

simd_dispatch! {
    /// [`Geometry::col2im`], compiled for the widest vectors: the short runs it adds (the CNN's 11 columns) were
    /// scalar remainders in the baseline build, and a tenth of the CNN's training samples.
    fn col2im_image(g: &Geometry, dcol: &[f32], dimage: &mut [f32]) => col2im_body
}

#[inline(always)]
fn col2im_body(g: &Geometry, dcol: &[f32], dimage: &mut [f32]) {
    let (p, [h, w]) = (g.positions(), g.input);
    for ci in 0..g.in_channels {
        for a in 0..g.kernel[0] {
            for b in 0..g.kernel[1] {
                let row = &dcol[((ci * g.kernel[0] + a) * g.kernel[1] + b) * p..][..p];
                let run = g.unit_columns(b);
                for i in 0..g.output[0] {
                    let Some(y) = g.source(0, i, a) else { continue };
                    let src = &row[i * g.output[1]..(i + 1) * g.output[1]];
                    match &run {
                        Some(run) => {
                            let x0 = run.start + b - g.pad_begin[1];
                            let dst = &mut dimage[(ci * h + y) * w + x0..][..run.len()];
                            for (d, v) in dst.iter_mut().zip(&src[run.clone()]) {
                                *d += v;
                            }
                        }
                        None => {
                            for (j, v) in src.iter().enumerate() {
                                if let Some(x) = g.source(1, j, b) {
                                    dimage[(ci * h + y) * w + x] += v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `x` `[N, Ci, H, W]`, `w` `[Co, Ci, KH, KW]`, `b` `[Co]` → `y` `[N, Co, Ho, Wo]`, through a ReLU when `relu`
/// (applied to each image while it is in cache, instead of another pass over the whole activation): by direct
/// convolution for unit strides where the CPU has AVX-512 (`conv_direct.rs`), else by im2col + gemm.
pub fn forward(g: Geometry, x: &[f32], w: &[f32], b: &[f32], relu: bool) -> Vec<f32> {
    if crate::conv_winograd::takes(&g, None) {
        return crate::conv_winograd::forward(g, x, w, b, relu, None);
    }
    if crate::conv_channels::takes(&g, None, false) {
        return crate::conv_channels::forward(g, x, w, b, relu, None);
    }
    if crate::conv_direct::takes(&g) {
        return crate::conv_direct::forward(g, x, w, b, relu, None);
    }
    im2col_forward(g, x, w, b, relu)
}

/// [`forward`] followed by max pooling over non-overlapping `pool` windows: `[N, Co, Ho / kh, Wo / kw]`, each
/// image's channels pooled while in cache where the direct convolution applies.
pub fn forward_pooled(g: Geometry, x: &[f32], w: &[f32], b: &[f32], relu: bool, pool: [usize; 2]) -> Vec<f32> {
    if crate::conv_winograd::takes(&g, Some(pool)) {
        return crate::conv_winograd::forward(g, x, w, b, relu, Some(pool));
    }
    if crate::conv_channels::takes(&g, Some(pool), false) {
        return crate::conv_channels::forward(g, x, w, b, relu, Some(pool));
    }
    if crate::conv_direct::takes(&g) {
        return crate::conv_direct::forward(g, x, w, b, relu, Some(pool));
    }
    let y = im2col_forward(g, x, w, b, relu);
    let planes = g.batch * g.out_channels;
    crate::max_pool::values(&y, planes, (g.output[0], g.output[1]), (pool[0], pool[1]))
}

/// [`forward`] as one gemm per image over its im2col matrix, images across threads.
pub(crate) fn im2col_forward(g: Geometry, x: &[f32], w: &[f32], b: &[f32], relu: bool) -> Vec<f32> {
    let (k, p, co) = (g.patch(), g.positions(), g.out_channels);
    let image_len = g.in_channels * g.input[0] * g.input[1];
    let mut y = vec![0f32; g.batch * co * p];
    if co * p == 0 {
        return y;
    }
    let threads = rayon::current_num_threads().clamp(1, g.batch.max(1));
    let per = g.batch.div_ceil(threads).max(1);
    y.par_chunks_mut(per * co * p).enumerate().for_each(|(part, ys)| {
        let mut col = vec![0f32; k * p];
        for (local, y_n) in ys.chunks_exact_mut(co * p).enumerate() {
            let n = part * per + local;
            g.im2col(&x[n * image_len..(n + 1) * image_len], &mut col);
            for (row, &bias) in y_n.chunks_exact_mut(p).zip(b) {
                row.fill(bias);
            }
            // y_n [Co, P] += W [Co, K] · col [K, P]
            matmul(
                (co, p, k),
                y_n,
                (p as isize, 1),
                true,
                w,
                (k as isize, 1),
                &col,
                (p as isize, 1),
            );
            if relu {
                // NaN stays NaN, as in PyTorch's ReLU. A select with an unconditional store: a conditional store
                // compiled to a branch per element, mispredicted half the time (28% of a CNN training step).
                for v in y_n.iter_mut() {
                    *v = if *v < 0.0 { 0.0 } else { *v };
                }
            }
        }
    });
    y
}

/// Gradients of `x` `[N, Ci, H, W]` (when `need_dx`), `w` `[Co, Ci, KH, KW]` and the bias from `dy`
/// `[N, Co, Ho, Wo]`. With `relu_output` (the forward's output through its ReLU), `dy` is first masked where that
/// output is zero, image by image.
pub fn backward(
    g: Geometry,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    relu_output: Option<&[f32]>,
    need_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let (k, p, co) = (g.patch(), g.positions(), g.out_channels);
    let image_len = g.in_channels * g.input[0] * g.input[1];
    let mut dx = need_dx.then(|| vec![0f32; g.batch * image_len]);
    let winograd = need_dx
        .then(|| crate::conv_winograd::InputGradient::new(&g, w))
        .flatten();
    let threads = rayon::current_num_threads().clamp(1, g.batch.max(1));
    let per = g.batch.div_ceil(threads).max(1);
    let work = |first: usize, dx_part: Option<&mut [f32]>| -> (Vec<f32>, Vec<f32>) {
        let mut dw = vec![0f32; co * k];
        let mut db = vec![0f32; co];
        let mut winograd_w = crate::conv_winograd::WeightGradient::new(&g);
        let mut col = if winograd_w.is_none() {
            vec![0f32; k * p]
        } else {
            vec![]
        };
        // (Winograd's input gradient goes with its weight gradient, which takes every convolution the former does.)
        let mut dcol = if need_dx && (winograd.is_none() || winograd_w.is_none()) {
            vec![0f32; k * p]
        } else {
            vec![]
        };
        let mut masked = if relu_output.is_some() {
            vec![0f32; co * p]
        } else {
            vec![]
        };
        let mut dx_part = dx_part;
        let last = (first + per).min(g.batch);
        for n in first..last {
            let mut dy_n = &dy[n * co * p..(n + 1) * co * p];
            if let Some(y) = relu_output {
                for ((m, &d), &y) in masked.iter_mut().zip(dy_n).zip(&y[n * co * p..(n + 1) * co * p]) {
                    *m = if y > 0.0 { d } else { 0.0 };
                }
                dy_n = &masked;
            }
            for (acc, row) in db.iter_mut().zip(dy_n.chunks_exact(p)) {
                // Independent lanes: one running total chained every addition (a bias gradient pass cost ~5% of
                // a CNN step).
                *acc += crate::simd::lane_sum(row);
            }
            let x_n = &x[n * image_len..(n + 1) * image_len];
            let local = n - first;
            if let Some(winograd_w) = winograd_w.as_mut() {
                // Both gradients from one channels-last copy of dy_n where the input gradient is Winograd's too.
                let dx_n = winograd
                    .as_ref()
                    .zip(dx_part.as_deref_mut())
                    .map(|(flipped, part)| (flipped, &mut part[local * image_len..(local + 1) * image_len]));
                let done = dx_n.is_some();
                crate::conv_winograd::backward_image(x_n, dy_n, winograd_w, dx_n);
                if done {
                    continue;
                }
            } else {
                g.im2col(x_n, &mut col);
                // dW += dy_n [Co, P] · colᵀ [P, K]
                matmul(
                    (co, k, p),
                    &mut dw,
                    (k as isize, 1),
                    true,
                    dy_n,
                    (p as isize, 1),
                    &col,
                    (1, p as isize),
                );
            }
            if let Some(part) = dx_part.as_deref_mut() {
                let dx_n = &mut part[local * image_len..(local + 1) * image_len];
                // dcol [K, P] = Wᵀ [K, Co] · dy_n [Co, P]
                matmul(
                    (k, p, co),
                    &mut dcol,
                    (p as isize, 1),
                    false,
                    w,
                    (1, k as isize),
                    dy_n,
                    (p as isize, 1),
                );
                g.col2im(&dcol, dx_n);
            }
        }
        if let Some(winograd_w) = winograd_w {
            dw = winograd_w.finish();
        }
        (dw, db)
    };
    let starts: Vec<usize> = (0..g.batch).step_by(per).collect();
    let partial: Vec<(Vec<f32>, Vec<f32>)> = match dx.as_mut() {
        Some(dx) => starts
            .par_iter()
            .zip(dx.par_chunks_mut(per * image_len))
            .map(|(&first, part)| work(first, Some(part)))
            .collect(),
        None => starts.par_iter().map(|&first| work(first, None)).collect(),
    };
    let mut dw = vec![0f32; co * k];
    let mut db = vec![0f32; co];
    for (part_w, part_b) in partial {
        for (acc, v) in dw.iter_mut().zip(&part_w) {
            *acc += v;
        }
        for (acc, v) in db.iter_mut().zip(&part_b) {
            *acc += v;
        }
    }
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::{Geometry, im2col_forward};
    use burn::prelude::*;
    use burn::tensor::Distribution;
    use burn::tensor::ops::ConvOptions;

    /// The fused convolution inside autodiff gives burn's output and the same gradients of the input, weight and
    /// bias, for strides, asymmetric padding and dilation, with and without the fused ReLU; with an input that
    /// needs no gradient it still trains the weights.
    #[test]
    fn fused_conv_matches_the_composed_one() {
        let device = Device::default().autodiff();
        let cases = [
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            ConvOptions::new([2, 1], [1, 2], [1, 1], 1),
            ConvOptions::new([1, 2], [2, 1], [2, 1], 1),
            ConvOptions {
                padding: [(0, 1), (1, 0)],
                ..ConvOptions::new([2, 2], [0, 0], [1, 1], 1)
            },
            // unit column stride with padding at both ends: im2col's contiguous-run path, clipped on both sides
            ConvOptions {
                padding: [(1, 0), (1, 2)],
                ..ConvOptions::new([1, 1], [0, 0], [1, 1], 1)
            },
        ];
        let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
            assert_eq!(a.len(), b.len(), "{what}");
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{what}: {p} vs {q}");
            }
        };
        for (case, options) in cases.into_iter().enumerate() {
            for (input_grad, relu) in [(true, false), (false, false), (true, true), (false, true)] {
                let what = format!("case {case}, input gradient {input_grad}, relu {relu}");
                let x = Tensor::<4>::random([3, 2, 7, 8], Distribution::Uniform(-1.0, 1.0), &device);
                let x = if input_grad { x.require_grad() } else { x };
                let w = Tensor::<4>::random([4, 2, 3, 2], Distribution::Uniform(-1.0, 1.0), &device).require_grad();
                let b = Tensor::<1>::random([4], Distribution::Uniform(-1.0, 1.0), &device).require_grad();
                let fused = crate::conv2d(x.clone(), w.clone(), b.clone(), options.clone(), relu);
                let composed = burn::tensor::module::conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone());
                let composed = if relu {
                    burn::tensor::activation::relu(composed)
                } else {
                    composed
                };
                assert_eq!(fused.dims(), composed.dims(), "{what}");
                close(
                    values(fused.clone()),
                    values(composed.clone()),
                    &format!("{what}: output"),
                );
                let weights = Tensor::<4>::random(fused.dims(), Distribution::Uniform(-1.0, 1.0), &device);
                let g_f = (fused * weights.clone()).sum().backward();
                let g_c = (composed * weights).sum().backward();
                close(
                    values(w.grad(&g_f).unwrap()),
                    values(w.grad(&g_c).unwrap()),
                    &format!("{what}: d w"),
                );
                let flat = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
                close(
                    flat(b.grad(&g_f).unwrap()),
                    flat(b.grad(&g_c).unwrap()),
                    &format!("{what}: d b"),
                );
                if input_grad {
                    close(
                        values(x.grad(&g_f).unwrap()),
                        values(x.grad(&g_c).unwrap()),
                        &format!("{what}: d x"),
                    );
                } else {
                    assert!(x.grad(&g_f).is_none());
                }
            }
        }
    }

    /// The convolution with its max pool gives the two operations' values on a plain device (one pass) and under
    /// autodiff (two tracked operations, with gradients reaching the weight).
    #[test]
    fn conv_with_max_pool_matches_the_two_operations() {
        for device in [Device::default(), Device::default().autodiff()] {
            let options = ConvOptions::new([1, 1], [1, 0], [1, 1], 1);
            let x = Tensor::<4>::random([2, 3, 9, 8], Distribution::Uniform(-1.0, 1.0), &device);
            let w = Tensor::<4>::random([5, 3, 3, 3], Distribution::Uniform(-1.0, 1.0), &device);
            let w = if device.is_autodiff() { w.require_grad() } else { w };
            let b = Tensor::<1>::random([5], Distribution::Uniform(-1.0, 1.0), &device);
            for relu in [false, true] {
                let one = crate::conv2d_max_pool(x.clone(), w.clone(), b.clone(), options.clone(), relu, [2, 2]);
                let two = crate::max_pool2d(
                    crate::conv2d(x.clone(), w.clone(), b.clone(), options.clone(), relu),
                    [2, 2],
                );
                assert_eq!(one.dims(), [2, 5, 4, 3]);
                assert_eq!(one.dims(), two.dims());
                let (p, q) = (
                    one.clone().into_data().try_to_vec::<f32>().unwrap(),
                    two.into_data().try_to_vec::<f32>().unwrap(),
                );
                for (p, q) in p.iter().zip(&q) {
                    assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{p} vs {q}");
                }
                if device.is_autodiff() {
                    let grads = one.sum().backward();
                    assert!(w.grad(&grads).is_some_and(|g| g.abs().sum().into_scalar::<f32>() > 0.0));
                }
            }
        }
    }

    /// The direct convolution gives im2col + gemm's output for asymmetric padding, dilation, channel counts that are
    /// and are not multiples of the register block, 1×1 kernels, with and without the ReLU, for a single image
    /// (split by channels) and a batch (split by images).
    /// The convolution with its pool outside autodiff, where `flex.rs` keeps the transposed weight from call to call
    /// (so that one image takes the channels kernel), gives the two operations' values for one image and for
    /// several, alternating with another weight of the same shape, and after the weight is updated or replaced.
    #[test]
    fn a_kept_transposed_weight_gives_the_two_operations_values() {
        let device = Device::default();
        let options = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let b = Tensor::<1>::random([32], Distribution::Uniform(-1.0, 1.0), &device);
        let mut w = Tensor::<4>::random([32, 4, 3, 3], Distribution::Uniform(-1.0, 1.0), &device);
        let other = Tensor::<4>::random([32, 4, 3, 3], Distribution::Uniform(-1.0, 1.0), &device);
        for step in 0..3 {
            for (batch, weight) in [(1, &w), (1, &other), (3, &w)] {
                let x = Tensor::<4>::random([batch, 4, 9, 10], Distribution::Uniform(-1.0, 1.0), &device);
                let one = crate::conv2d_max_pool(x.clone(), weight.clone(), b.clone(), options.clone(), true, [2, 2]);
                let two = crate::max_pool2d(
                    crate::conv2d(x, weight.clone(), b.clone(), options.clone(), true),
                    [2, 2],
                );
                assert_eq!(one.dims(), two.dims());
                let (p, q) = (
                    one.into_data().try_to_vec::<f32>().unwrap(),
                    two.into_data().try_to_vec::<f32>().unwrap(),
                );
                for (i, (p, q)) in p.iter().zip(&q).enumerate() {
                    assert!(
                        (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                        "step {step} batch {batch} at {i}: {p} vs {q}"
                    );
                }
            }
            w = if step == 0 {
                w.mul_scalar(-0.5)
            } else {
                Tensor::<4>::random([32, 4, 3, 3], Distribution::Uniform(-1.0, 1.0), &device)
            };
        }
    }

    /// Both direct kernels (positions in the vector, `conv_direct.rs`; channels in the vector, `conv_channels.rs`)
    /// against im2col + gemm, with and without the ReLU and a pool, on one image and several, with a NaN in one
    /// image that must reach its outputs as in PyTorch.
    #[test]
    fn direct_matches_im2col() {
        let value = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 500.0;
        let shapes = [
            // (ci, co, input, kernel, pad_begin, pad_end, dilation)
            (1, 32, [28, 28], [3, 3], [0, 0], [0, 0], [1, 1]),
            (32, 64, [13, 13], [3, 3], [0, 0], [0, 0], [1, 1]),
            (3, 5, [9, 7], [3, 2], [1, 2], [0, 1], [1, 1]),
            (4, 13, [8, 8], [3, 3], [2, 1], [2, 0], [2, 1]),
            (17, 33, [6, 5], [1, 1], [0, 0], [0, 0], [1, 1]),
            (2, 7, [3, 40], [2, 5], [1, 2], [1, 2], [1, 1]),
            // Channels in the vector: 64 + 16 channels, 72 taps in two chunks; 48 channels; 32 channels.
            (8, 80, [7, 9], [3, 3], [1, 1], [1, 1], [1, 1]),
            (16, 48, [5, 6], [2, 3], [0, 1], [1, 0], [1, 2]),
            (40, 32, [4, 4], [1, 1], [0, 0], [0, 0], [1, 1]),
            // Few taps with a 2×2 pool, taken in registers: 64 channels as 48 + 16 (odd width, padding); 48.
            (2, 64, [10, 9], [3, 3], [1, 1], [1, 1], [1, 1]),
            (1, 48, [7, 7], [2, 2], [0, 0], [0, 0], [1, 1]),
            // Winograd (3×3, channels in whole vectors; the 32 → 64 above too): odd and even outputs, padding at
            // one end or both, more than 4 vectors of output channels, a 1×1 output (one tile, half outside).
            (16, 16, [6, 7], [3, 3], [1, 1], [1, 1], [1, 1]),
            (48, 80, [9, 8], [3, 3], [1, 0], [0, 1], [1, 1]),
            (16, 32, [3, 3], [3, 3], [0, 0], [0, 0], [1, 1]),
            (32, 48, [5, 4], [3, 3], [2, 0], [0, 2], [1, 1]),
            // More tiles than one chunk: 21 (20 pooled) tile rows of 18 in chunks of 8.
            (16, 16, [41, 36], [3, 3], [1, 1], [1, 1], [1, 1]),
        ];
        let close = |d: f32, e: f32| (d.is_nan() && e.is_nan()) || (d - e).abs() <= 1e-4 * (1.0 + e.abs());
        let (mut channels_taken, mut winograd_taken) = (0, 0);
        for (ci, co, input, kernel, pad_begin, pad_end, dilation) in shapes {
            for batch in [1, 3] {
                let g = stride_one((batch, ci, co), input, kernel, (pad_begin, pad_end), dilation);
                let output = g.output;
                if !crate::conv_direct::takes(&g) {
                    return;
                }
                let mut x: Vec<f32> = (0..batch * ci * input[0] * input[1]).map(value).collect();
                if batch > 1 {
                    // A NaN in the last image's last channel, inside every kernel's reach.
                    let at = x.len() - input[1] - 2;
                    x[at] = f32::NAN;
                }
                let w: Vec<f32> = (0..co * ci * kernel[0] * kernel[1]).map(|i| value(i + 5)).collect();
                let b: Vec<f32> = (0..co).map(|i| value(i + 9)).collect();
                let kernels: [(&str, DirectForward, Fits); 3] = [
                    ("conv_direct", crate::conv_direct::forward, |_, _| true),
                    (
                        "conv_channels",
                        crate::conv_channels::forward,
                        crate::conv_channels::fits,
                    ),
                    (
                        "conv_winograd",
                        crate::conv_winograd::forward,
                        crate::conv_winograd::fits,
                    ),
                ];
                for relu in [false, true] {
                    let im2col = im2col_forward(g, &x, &w, &b, relu);
                    for &(name, forward, fits) in &kernels {
                        if fits(&g, None) {
                            channels_taken += usize::from(name == "conv_channels");
                            winograd_taken += usize::from(name == "conv_winograd");
                            let direct = forward(g, &x, &w, &b, relu, None);
                            assert_eq!(direct.len(), im2col.len());
                            for (i, (&d, &e)) in direct.iter().zip(&im2col).enumerate() {
                                assert!(close(d, e), "{name} {g:?} relu {relu} at {i}: {d} vs {e}");
                            }
                        }
                        // Pooled while in cache: the pool of the full output, for the 2×2 window and another.
                        for kernel in [[2, 2], [1, 3]] {
                            if !fits(&g, Some(kernel)) {
                                continue;
                            }
                            channels_taken += usize::from(name == "conv_channels");
                            winograd_taken += usize::from(name == "conv_winograd");
                            let planes = batch * co;
                            let expect = crate::max_pool::values(
                                &im2col,
                                planes,
                                (output[0], output[1]),
                                (kernel[0], kernel[1]),
                            );
                            let pooled = forward(g, &x, &w, &b, relu, Some(kernel));
                            assert_eq!(pooled.len(), expect.len());
                            for (i, (&d, &e)) in pooled.iter().zip(&expect).enumerate() {
                                assert!(
                                    close(d, e),
                                    "{name} {g:?} relu {relu} pool {kernel:?} at {i}: {d} vs {e}"
                                );
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(
            channels_taken, 120,
            "the channels-in-the-vector kernel took the shapes and pools meant for it"
        );
        assert_eq!(
            winograd_taken, 48,
            "the Winograd kernel took the shapes and pools meant for it"
        );
    }

    /// The backward's gradients against their definitions (sums in f64) where the input gradient is a Winograd
    /// convolution (3×3, channels in whole vectors): padding 0, 1 and 2 at the beginning, odd and even sizes, a
    /// masked ReLU, one image and several; and where it is not (4 input channels), the same check of the gemm path.
    #[test]
    #[allow(clippy::needless_range_loop)]
    fn backward_matches_the_definitions() {
        let value = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 500.0;
        // (ci, co, input, pad_begin, pad_end, batch)
        let shapes = [
            (32, 64, [13, 13], [0, 0], [0, 0], 3),
            (16, 32, [7, 6], [1, 1], [1, 1], 1),
            (16, 16, [5, 8], [2, 0], [0, 2], 2),
            (16, 16, [37, 40], [1, 1], [1, 1], 1),
            (4, 16, [6, 6], [1, 1], [1, 1], 2),
        ];
        let mut winograd = 0;
        for (ci, co, input, pad_begin, pad_end, batch) in shapes {
            let g = stride_one((batch, ci, co), input, [3, 3], (pad_begin, pad_end), [1, 1]);
            let output = g.output;
            let x: Vec<f32> = (0..batch * ci * input[0] * input[1]).map(value).collect();
            let w: Vec<f32> = (0..co * ci * 9).map(|i| value(i + 5)).collect();
            let dy: Vec<f32> = (0..batch * co * output[0] * output[1]).map(|i| value(i + 11)).collect();
            // A ReLU output that is zero at about a third of the positions.
            let y: Vec<f32> = (0..dy.len()).map(|i| value(i + 3).max(-0.3) + 0.3).collect();
            winograd += usize::from(crate::conv_winograd::InputGradient::new(&g, &w).is_some());
            let (dx, dw, db) = super::backward(g, &dy, &x, &w, Some(&y), true);
            let dx = dx.expect("asked for");
            let (mut ex, mut ew, mut eb) = (vec![0f64; x.len()], vec![0f64; w.len()], vec![0f64; co]);
            let [h, wd] = input;
            let [ho, wo] = output;
            for n in 0..batch {
                for o in 0..co {
                    for i in 0..ho {
                        for j in 0..wo {
                            let at = ((n * co + o) * ho + i) * wo + j;
                            let d = if y[at] > 0.0 { dy[at] as f64 } else { 0.0 };
                            eb[o] += d;
                            for c in 0..ci {
                                for a in 0..3 {
                                    for b in 0..3 {
                                        let (Some(yy), Some(xx)) =
                                            ((i + a).checked_sub(pad_begin[0]), (j + b).checked_sub(pad_begin[1]))
                                        else {
                                            continue;
                                        };
                                        if yy >= h || xx >= wd {
                                            continue;
                                        }
                                        let xi = ((n * ci + c) * h + yy) * wd + xx;
                                        let wi = ((o * ci + c) * 3 + a) * 3 + b;
                                        ex[xi] += d * w[wi] as f64;
                                        ew[wi] += d * x[xi] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for (what, got, expect) in [("dx", &dx, &ex), ("dw", &dw, &ew), ("db", &db, &eb)] {
                assert_eq!(got.len(), expect.len(), "{what}");
                for (i, (&p, &q)) in got.iter().zip(expect.iter()).enumerate() {
                    assert!(
                        (p as f64 - q).abs() <= 1e-4 * (1.0 + q.abs()),
                        "{g:?} {what} at {i}: {p} vs {q}"
                    );
                }
            }
        }
        if crate::conv_winograd::fits(&stride_one((1, 16, 16), [4, 4], [3, 3], ([0, 0], [0, 0]), [1, 1]), None) {
            assert_eq!(winograd, 4, "the Winograd input gradient took the shapes meant for it");
        }
    }

    /// A stride-1 convolution's geometry, its output size from the input, kernel, padding (begin and end) and
    /// dilation.
    fn stride_one(
        (batch, ci, co): (usize, usize, usize),
        input: [usize; 2],
        kernel: [usize; 2],
        (pad_begin, pad_end): ([usize; 2], [usize; 2]),
        dilation: [usize; 2],
    ) -> Geometry {
        Geometry {
            batch,
            in_channels: ci,
            out_channels: co,
            input,
            output: std::array::from_fn(|a| input[a] + pad_begin[a] + pad_end[a] - dilation[a] * (kernel[a] - 1)),
            kernel,
            stride: [1, 1],
            pad_begin,
            dilation,
        }
    }

    type DirectForward = fn(Geometry, &[f32], &[f32], &[f32], bool, Option<[usize; 2]>) -> Vec<f32>;
    type Fits = fn(&Geometry, Option<[usize; 2]>) -> bool;
}
