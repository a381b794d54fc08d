//! 2-D max pooling over non-overlapping windows (kernel = stride, no padding; the common `max_pool2d = { size =
//! 2 }`), on plain f32 buffers (see [`super`]). The forward keeps each output's position within its window, so the
//! backward is a scatter of the output gradient.

use rayon::prelude::*;

/// `x` `[planes, h, w]` (planes = batch × channels) → the maxima `[planes, h / kh, w / kw]` and the position of each
/// maximum within its window (row-major, the first one on ties as PyTorch picks; NaN wins, as it propagates).
pub fn forward(x: &[f32], planes: usize, (h, w): (usize, usize), (kh, kw): (usize, usize)) -> (Vec<f32>, Vec<f32>) {
    let (oh, ow) = (h / kh, w / kw);
    let mut y = vec![0f32; planes * oh * ow];
    let mut at = vec![0f32; planes * oh * ow];
    if oh * ow == 0 {
        return (y, at);
    }
    y.par_chunks_mut(oh * ow)
        .zip(at.par_chunks_mut(oh * ow))
        .enumerate()
        .for_each(|(p, (yp, ap))| forward_plane(&x[p * h * w..(p + 1) * h * w], yp, ap, (h, w), (kh, kw)));
    (y, at)
}

simd_dispatch! {
    /// One plane's maxima and their positions.
    fn forward_plane(plane: &[f32], yp: &mut [f32], ap: &mut [f32], size: (usize, usize), kernel: (usize, usize))
        => forward_plane_body
}

/// Whether `v` replaces the running maximum `best`: larger, or NaN over a number (ties keep the first). The
/// non-short-circuit `|` and `&` keep it free of branches, which random data would mispredict half the time.
#[inline(always)]
fn beats(v: f32, best: f32) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

#[inline(always)]
fn forward_plane_body(plane: &[f32], yp: &mut [f32], ap: &mut [f32], (h, w): (usize, usize), (kh, kw): (usize, usize)) {
    let (oh, ow) = (h / kh, w / kw);
    if (kh, kw) == (2, 2) {
        // The common window, without the general loop's branches, so that it vectorizes.
        for i in 0..oh {
            let (r0, r1) = (&plane[2 * i * w..][..2 * ow], &plane[(2 * i + 1) * w..][..2 * ow]);
            let (yr, ar) = (&mut yp[i * ow..][..ow], &mut ap[i * ow..][..ow]);
            for (((top, bottom), y), a) in r0.chunks_exact(2).zip(r1.chunks_exact(2)).zip(yr).zip(ar) {
                let (mut best, mut pos) = (top[0], 0.0f32);
                for (v, p) in [(top[1], 1.0), (bottom[0], 2.0), (bottom[1], 3.0)] {
                    let take = beats(v, best);
                    best = if take { v } else { best };
                    pos = if take { p } else { pos };
                }
                *y = best;
                *a = pos;
            }
        }
        return;
    }
    for i in 0..oh {
        for j in 0..ow {
            let (mut best, mut pos) = (f32::NEG_INFINITY, 0usize);
            let mut first = true;
            for di in 0..kh {
                let row = &plane[(i * kh + di) * w + j * kw..(i * kh + di) * w + j * kw + kw];
                for (dj, &v) in row.iter().enumerate() {
                    if first || beats(v, best) {
                        best = v;
                        pos = di * kw + dj;
                        first = false;
                    }
                }
            }
            yp[i * ow + j] = best;
            ap[i * ow + j] = pos as f32;
        }
    }
}

/// The input gradient `[planes, h, w]` from the output gradient and the saved positions.
pub fn backward(dy: &[f32], at: &[f32], planes: usize, (h, w): (usize, usize), (kh, kw): (usize, usize)) -> Vec<f32> {
    let (oh, ow) = (h / kh, w / kw);
    let mut dx = vec![0f32; planes * h * w];
    if oh * ow == 0 {
        return dx;
    }
    dx.par_chunks_mut(h * w).enumerate().for_each(|(p, dxp)| {
        backward_plane(
            &dy[p * oh * ow..(p + 1) * oh * ow],
            &at[p * oh * ow..(p + 1) * oh * ow],
            dxp,
            w,
            (kh, kw),
        )
    });
    dx
}

/// One plane's input gradient: each output gradient to the position its maximum came from. `dxp` starts at zero;
/// the windows do not overlap, so every window is written, not added to.
#[inline(never)]
fn backward_plane(dy: &[f32], at: &[f32], dxp: &mut [f32], w: usize, (kh, kw): (usize, usize)) {
    let ow = w / kw;
    if (kh, kw) == (2, 2) {
        // The common window, written whole and without branches (and without the general loop's divisions), so
        // that it vectorizes: random positions made the scatter's branches mispredict.
        for (i, (dyr, ar)) in dy.chunks_exact(ow).zip(at.chunks_exact(ow)).enumerate() {
            let (top, bottom) = dxp[2 * i * w..(2 * i + 2) * w].split_at_mut(w);
            for (((t, b), &g), &p) in top.chunks_exact_mut(2).zip(bottom.chunks_exact_mut(2)).zip(dyr).zip(ar) {
                let at = |k: f32| if p == k { g } else { 0.0 };
                t[0] = at(0.0);
                t[1] = at(1.0);
                b[0] = at(2.0);
                b[1] = at(3.0);
            }
        }
        return;
    }
    for (i, (dyr, ar)) in dy.chunks_exact(ow).zip(at.chunks_exact(ow)).enumerate() {
        for (j, (&g, &pos)) in dyr.iter().zip(ar).enumerate() {
            let pos = pos as usize;
            let (di, dj) = (pos / kw, pos % kw);
            dxp[(i * kh + di) * w + j * kw + dj] += g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::prelude::*;
    use burn::tensor::Distribution;
    use burn::tensor::module::max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;

    #[test]
    fn windows_ties_and_remainders() {
        // One 3×5 plane, 2×2 windows: the last row and column are dropped (floor), ties pick the first.
        let x = [
            1.0, 3.0, 3.0, 0.0, 9.0, 2.0, 3.0, -1.0, 5.0, 9.0, 7.0, 7.0, 7.0, 7.0, 7.0,
        ];
        let (y, at) = forward(&x, 1, (3, 5), (2, 2));
        assert_eq!(y, vec![3.0, 5.0]);
        assert_eq!(at, vec![1.0, 3.0]);
        let dx = backward(&[10.0, 20.0], &at, 1, (3, 5), (2, 2));
        let mut expect = vec![0.0; 15];
        expect[1] = 10.0;
        expect[8] = 20.0;
        assert_eq!(dx, expect);
    }

    /// The fused pool inside autodiff gives burn's `max_pool2d` output and input gradient.
    #[test]
    fn fused_max_pool_matches_the_composed_one() {
        let device = Device::default().autodiff();
        // A general window, and the 2×2 one (its own loops) on odd sizes (a row and a column dropped).
        for (shape, kernel) in [([2, 3, 7, 6], [2, 3]), ([2, 3, 7, 9], [2, 2])] {
            let x = Tensor::<4>::random(shape, Distribution::Uniform(-1.0, 1.0), &device).require_grad();
            let fused = crate::max_pool2d(x.clone(), kernel);
            let composed = max_pool2d(x.clone(), MaxPoolOptions::new(kernel).with_stride(kernel));
            let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(fused.dims(), composed.dims());
            assert_eq!(values(fused.clone()), values(composed.clone()));
            let weights = Tensor::<4>::random(fused.dims(), Distribution::Uniform(-1.0, 1.0), &device);
            let g_f = (fused * weights.clone()).sum().backward();
            let g_c = (composed * weights).sum().backward();
            assert_eq!(values(x.grad(&g_f).unwrap()), values(x.grad(&g_c).unwrap()));
        }
    }
}
