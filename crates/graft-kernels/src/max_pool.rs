//! 2-D max pooling over non-overlapping windows (kernel = stride, no padding; the common `max_pool2d = { size =
//! 2 }`), on plain f32 buffers (see [`super`]). The forward keeps each output's position within its window, so the
//! backward is a scatter of the output gradient.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// `x` `[planes, h, w]` (planes = batch × channels) → the maxima `[planes, h / kh, w / kw]` and the position of each
/// maximum within its window (row-major, the first one on ties as PyTorch picks; NaN wins, as it propagates).
pub fn forward(x: &[f32], planes: usize, (h, w): (usize, usize), (kh, kw): (usize, usize)) -> (Vec<f32>, Vec<f32>) {
    let (oh, ow) = (h / kh, w / kw);
    if oh * ow == 0 {
        return (vec![0f32; planes * oh * ow], vec![0f32; planes * oh * ow]);
    }
    // Every window writes its maximum and position: no zero fill first.
    let mut y = crate::unfilled::unfilled(planes * oh * ow);
    let mut at = crate::unfilled::unfilled(planes * oh * ow);
    y.par_chunks_mut(oh * ow)
        .zip(at.par_chunks_mut(oh * ow))
        .enumerate()
        .for_each(|(p, (yp, ap))| forward_plane(&x[p * h * w..(p + 1) * h * w], yp, ap, (h, w), (kh, kw)));
    // SAFETY: every plane's every window was written.
    unsafe { (crate::unfilled::filled(y), crate::unfilled::filled(at)) }
}

/// Elements below which [`values`] runs on the calling thread: waking rayon's workers costs more than pooling one
/// request's feature maps (32 planes of 26×26 take about a microsecond).
const PARALLEL: usize = 1 << 16;

/// The maxima alone (inference): `x` `[planes, h, w]` → `[planes, h / kh, w / kw]`, NaN propagating as in
/// [`forward`].
pub fn values(x: &[f32], planes: usize, (h, w): (usize, usize), (kh, kw): (usize, usize)) -> Vec<f32> {
    let (oh, ow) = (h / kh, w / kw);
    let mut y = vec![0f32; planes * oh * ow];
    if oh * ow == 0 {
        return y;
    }
    let plane = |(p, yp): (usize, &mut [f32])| pool_rows(&x[p * h * w..(p + 1) * h * w], w, (h, w), (kh, kw), yp);
    if x.len() < PARALLEL {
        y.chunks_mut(oh * ow).enumerate().for_each(plane);
    } else {
        y.par_chunks_mut(oh * ow).enumerate().for_each(plane);
    }
    y
}

/// The maxima of one plane of `h` rows of `w` values that lie `stride` apart (a convolution's wide rows, or a
/// plain plane with `stride = w`), into `out` `[h / kh, w / kw]`.
pub(crate) fn pool_rows(
    plane: &[f32],
    stride: usize,
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
    out: &mut [f32],
) {
    let (oh, ow) = (h / kh, w / kw);
    #[cfg(target_arch = "x86_64")]
    if (kh, kw) == (2, 2) && std::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present; the plane holds 2·oh rows `stride` ≥ 2·ow apart, the output oh·ow values.
        unsafe { avx512::windows_2x2(plane, out, stride, oh, ow) };
        return;
    }
    for i in 0..oh {
        for j in 0..ow {
            let mut best = plane[i * kh * stride + j * kw];
            for di in 0..kh {
                for &v in &plane[(i * kh + di) * stride + j * kw..][..kw] {
                    best = if beats(v, best) { v } else { best };
                }
            }
            out[i * ow + j] = best;
        }
    }
}

/// The 2×2 windows with AVX-512 intrinsics: the stride-2 pairs do not vectorize from plain loops. `max_nan` is the
/// pool's maximum for the convolution's own pooling too (`conv_channels.rs`).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// The larger of `a` and `b`, NaN if either is (`max` alone returns `b` when `a` is NaN).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) fn max_nan(a: __m512, b: __m512) -> __m512 {
        let a_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, a);
        _mm512_mask_blend_ps(a_nan, _mm512_max_ps(a, b), a)
    }

    /// One plane's 2×2 maxima, 16 outputs at a time: the two rows' 32 inputs are reduced vertically, then even and
    /// odd columns are separated by a permute and reduced.
    ///
    /// # Safety
    /// AVX-512F; `plane` holds `2·oh` rows of `w ≥ 2·ow` values, `out` `oh·ow` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn windows_2x2(plane: &[f32], out: &mut [f32], w: usize, oh: usize, ow: usize) {
        assert!(out.len() >= oh * ow && w >= 2 * ow && (oh == 0 || plane.len() >= (2 * oh - 1) * w + 2 * ow));
        let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        for i in 0..oh {
            let (top, bottom) = (plane[2 * i * w..].as_ptr(), plane[(2 * i + 1) * w..].as_ptr());
            let row = out[i * ow..].as_mut_ptr();
            let mut j = 0;
            while j < ow {
                let n = (ow - j).min(16);
                // Inputs 2j .. 2j + 2n of each row, in two masked halves.
                let (lo_n, hi_n) = ((2 * n).min(16), (2 * n).saturating_sub(16));
                let (lo, hi) = (((1u32 << lo_n) - 1) as __mmask16, ((1u32 << hi_n) - 1) as __mmask16);
                // SAFETY (loads, store): the masks keep every access inside the rows (2j + 2n ≤ 2·ow ≤ w) and the
                // output row (j + n ≤ ow).
                unsafe {
                    let v_lo = max_nan(
                        _mm512_maskz_loadu_ps(lo, top.add(2 * j)),
                        _mm512_maskz_loadu_ps(lo, bottom.add(2 * j)),
                    );
                    let v_hi = max_nan(
                        _mm512_maskz_loadu_ps(hi, top.add(2 * j + 16)),
                        _mm512_maskz_loadu_ps(hi, bottom.add(2 * j + 16)),
                    );
                    let pooled = max_nan(
                        _mm512_permutex2var_ps(v_lo, even, v_hi),
                        _mm512_permutex2var_ps(v_lo, odd, v_hi),
                    );
                    _mm512_mask_storeu_ps(row.add(j), ((1u32 << n) - 1) as __mmask16, pooled);
                }
                j += n;
            }
        }
    }
}

simd_dispatch! {
    /// One plane's maxima and their positions.
    fn forward_plane(
        plane: &[f32],
        yp: &mut [MaybeUninit<f32>],
        ap: &mut [MaybeUninit<f32>],
        size: (usize, usize),
        kernel: (usize, usize),
    )
        => forward_plane_body
}

/// Whether `v` replaces the running maximum `best`: larger, or NaN over a number (ties keep the first). The
/// non-short-circuit `|` and `&` keep it free of branches, which random data would mispredict half the time.
#[inline(always)]
pub(crate) fn beats(v: f32, best: f32) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

#[inline(always)]
fn forward_plane_body(
    plane: &[f32],
    yp: &mut [MaybeUninit<f32>],
    ap: &mut [MaybeUninit<f32>],
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
) {
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
                y.write(best);
                a.write(pos);
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
            yp[i * ow + j].write(best);
            ap[i * ow + j].write(pos as f32);
        }
    }
}

/// The input gradient `[planes, h, w]` from the output gradient and the saved positions.
pub fn backward(dy: &[f32], at: &[f32], planes: usize, (h, w): (usize, usize), (kh, kw): (usize, usize)) -> Vec<f32> {
    let (oh, ow) = (h / kh, w / kw);
    if oh * ow == 0 {
        return vec![0f32; planes * h * w];
    }
    // Each plane writes every element (no zero fill first: 2% of the CNN's step went to it).
    let mut dx = crate::unfilled::unfilled(planes * h * w);
    dx.par_chunks_mut(h * w).enumerate().for_each(|(p, dxp)| {
        backward_plane(
            &dy[p * oh * ow..(p + 1) * oh * ow],
            &at[p * oh * ow..(p + 1) * oh * ow],
            dxp,
            (h, w),
            (kh, kw),
        )
    });
    // SAFETY: every plane's every element was written.
    unsafe { crate::unfilled::filled(dx) }
}

/// One plane's input gradient, every element written: each output gradient to the position its maximum came from,
/// zero elsewhere (the windows do not overlap, so each is written, not added to; rows and columns past the last
/// whole window are zero).
#[inline(never)]
fn backward_plane(
    dy: &[f32],
    at: &[f32],
    dxp: &mut [MaybeUninit<f32>],
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
) {
    let (oh, ow) = (h / kh, w / kw);
    if (kh, kw) == (2, 2) {
        // The common window, written whole and without branches (and without the general loop's divisions), so
        // that it vectorizes: random positions made the scatter's branches mispredict.
        for (i, (dyr, ar)) in dy.chunks_exact(ow).zip(at.chunks_exact(ow)).enumerate() {
            let (top, bottom) = dxp[2 * i * w..(2 * i + 2) * w].split_at_mut(w);
            for (((t, b), &g), &p) in top.chunks_exact_mut(2).zip(bottom.chunks_exact_mut(2)).zip(dyr).zip(ar) {
                let at = |k: f32| if p == k { g } else { 0.0 };
                t[0].write(at(0.0));
                t[1].write(at(1.0));
                b[0].write(at(2.0));
                b[1].write(at(3.0));
            }
            // An odd width's last column.
            for row in [top, bottom] {
                row[2 * ow..].iter_mut().for_each(|v| {
                    v.write(0.0);
                });
            }
        }
        // An odd height's last row.
        dxp[2 * oh * w..].iter_mut().for_each(|v| {
            v.write(0.0);
        });
        return;
    }
    dxp.iter_mut().for_each(|v| {
        v.write(0.0);
    });
    // SAFETY: every element was just written.
    let dxp: &mut [f32] = unsafe { &mut *(dxp as *mut [MaybeUninit<f32>] as *mut [f32]) };
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

    /// The inference pool gives the training pool's maxima, with NaN propagating, on planes whose widths are and
    /// are not multiples of the vector, odd sizes (a row and a column dropped) and other windows.
    #[test]
    fn values_match_forward() {
        for ((h, w), kernel) in [
            ((26, 26), (2, 2)),
            ((11, 11), (2, 2)),
            ((5, 71), (2, 2)),
            ((7, 6), (2, 3)),
        ] {
            let planes = 3;
            let mut x: Vec<f32> = (0..planes * h * w)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 50.0)
                .collect();
            x[w + 3] = f32::NAN;
            x[h * w + 2 * w] = f32::NAN;
            let (expect, _) = forward(&x, planes, (h, w), kernel);
            let got = values(&x, planes, (h, w), kernel);
            assert_eq!(got.len(), expect.len());
            for (g, e) in got.iter().zip(&expect) {
                assert!(g == e || (g.is_nan() && e.is_nan()), "{h}×{w} {kernel:?}: {g} vs {e}");
            }
        }
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
