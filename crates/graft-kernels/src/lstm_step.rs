//! The LSTM forward's per-step products on AVX-512, written for the shape they have: one thread's few batch rows
//! against the whole input and recurrent weights, every step, a hundred times in a row.
//!
//! Each step computes `x_t · W_ihᵀ + b + h_prev · W_hhᵀ` in one pass, the input projection included: a separate
//! projection of the whole sequence wrote a `[B, T, 4H]` tensor (6.5 MB on the benchmark) that every step then read
//! back. The weights come from panels built once per sequence: per block of 16 hidden units, the i, f, g and o
//! weights of those units side by side (`[F + H][64]`), read in slabs of 128 inputs (32 KB, in L1 while every row
//! uses them), one register tile holding all four gates of 16 units of 4 rows. Measured on 16 rows, H = 128, 100
//! steps on one core, the recurrent product alone: 0.86 ms by gemm, 0.77 ms here (270 GFLOP/s). The backward's
//! products stay with gemm, which runs them at a core's peak (the same kind of tile for `dh += d_gates · W_hh`, with
//! `W_hh` in L1 slabs, was no faster).
//!
//! Only for hidden sizes that are multiples of 16 on CPUs with AVX-512; `GRAFT_LSTM_STEP=0` keeps the gemm path (the
//! whole projection first, then per step gemm; to measure the gain). The tests below check both against each other.

/// Rows per register tile: 4 rows × 4 vectors = 16 accumulators (and 4 of each step's weight vectors in registers).
const ROWS: usize = 4;
/// Weight rows per L1 slab: 128 × 64 floats = 32 KB (of the 48 KB L1 of the CPUs measured).
const SLAB: usize = 128;

/// Whether [`gate_sums`] takes a run of hidden size `h`.
pub(crate) fn applies(h: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let enabled = *ENABLED.get_or_init(|| {
            !std::env::var("GRAFT_LSTM_STEP").is_ok_and(|v| v == "0") && std::is_x86_feature_detected!("avx512f")
        });
        enabled && h > 0 && h.is_multiple_of(16)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = h;
        false
    }
}

/// `W_ih` `[4H, F]` and `W_hh` `[4H, H]` → per block of 16 units, a `[F + H][64]` panel: row k holds the i, f, g and
/// o weights of those units for input k (the step's `x_t` first, then `h_prev`).
pub(crate) fn gate_panels(w_ih: &[f32], w_hh: &[f32], f: usize, h: usize) -> Vec<f32> {
    let k_all = f + h;
    let mut panels = vec![0f32; h / 16 * k_all * 64];
    for u in 0..h / 16 {
        let panel = &mut panels[u * k_all * 64..(u + 1) * k_all * 64];
        for gate in 0..4 {
            for lane in 0..16 {
                let unit = gate * h + 16 * u + lane;
                let weights = w_ih[unit * f..(unit + 1) * f]
                    .iter()
                    .chain(&w_hh[unit * h..(unit + 1) * h]);
                for (k, &w) in weights.enumerate() {
                    panel[k * 64 + gate * 16 + lane] = w;
                }
            }
        }
    }
    panels
}

/// One step's gate pre-activations `a [b, 4H] = x_t · W_ihᵀ + bias + h_prev · W_hhᵀ` (gates i, f, g, o in blocks
/// of H), the weights as [`gate_panels`]. Row `r`'s `x_t` is `x[r * x_stride..][..F]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gate_sums(
    x: &[f32],
    x_stride: usize,
    h_prev: &[f32],
    panels: &[f32],
    bias: &[f32],
    a: &mut [f32],
    b: usize,
    (f, h): (usize, usize),
) {
    assert!(b == 0 || x.len() >= (b - 1) * x_stride + f, "gate_sums: x");
    assert!(
        h_prev.len() >= b * h && panels.len() >= h / 16 * (f + h) * 64,
        "gate_sums: h_prev or panels"
    );
    assert!(bias.len() >= 4 * h && a.len() >= b * 4 * h, "gate_sums: bias or output");
    // SAFETY: `applies` checked the CPU; the lengths the kernel reads and writes are asserted above.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        avx512::gate_sums(x, x_stride, h_prev, panels, bias, a, b, (f, h))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, x_stride, h_prev, panels, bias, a, b, f, h);
}

#[cfg(target_arch = "x86_64")]
// Register tiles index their accumulators by row and vector, as the loads and stores they pair with do.
#[allow(clippy::needless_range_loop)]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{ROWS, SLAB};

    /// Where a tile's sums start: the bias (the first slab) or the partial sums already in `a`.
    #[derive(Clone, Copy)]
    enum Start {
        Bias,
        Carried,
    }

    /// See [`super::gate_sums`]: per block of 16 units, register tiles of up to [`ROWS`] rows × the four gates, the
    /// panel read in slabs of at most [`SLAB`] inputs that never straddle `x_t` and `h_prev` (partial sums carried
    /// between slabs in `a`).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gate_sums(
        x: &[f32],
        x_stride: usize,
        h_prev: &[f32],
        panels: &[f32],
        bias: &[f32],
        a: &mut [f32],
        b: usize,
        (f, h): (usize, usize),
    ) {
        let k_all = f + h;
        for u in 0..h / 16 {
            let panel = &panels[u * k_all * 64..(u + 1) * k_all * 64];
            let mut k0 = 0;
            while k0 < k_all {
                // The slab's inputs: from x_t (k < f) or from h_prev, with their row stride.
                let (k1, src, stride, offset) = if k0 < f {
                    ((k0 + SLAB).min(f), x, x_stride, k0)
                } else {
                    ((k0 + SLAB).min(k_all), h_prev, h, k0 - f)
                };
                let start = if k0 == 0 { Start::Bias } else { Start::Carried };
                let mut r = 0;
                while r < b {
                    let rows = (b - r).min(ROWS);
                    let tile_in = Tile {
                        src: &src[r * stride + offset..],
                        stride,
                        panel: &panel[k0 * 64..k1 * 64],
                        bias,
                        row: r,
                        h,
                        unit: 16 * u,
                        start,
                    };
                    // SAFETY: rows r..r + rows ≤ b, the slab's inputs and units 16u..16u + 16 ≤ h lie inside the
                    // lengths `super::gate_sums` asserted.
                    unsafe {
                        match rows {
                            4 => tile::<4>(tile_in, a),
                            3 => tile::<3>(tile_in, a),
                            2 => tile::<2>(tile_in, a),
                            _ => tile::<1>(tile_in, a),
                        }
                    }
                    r += rows;
                }
                k0 = k1;
            }
        }
    }

    /// One register tile's inputs: `src` from the tile's first row (rows `stride` apart), the slab of the panel.
    #[derive(Clone, Copy)]
    struct Tile<'a> {
        src: &'a [f32],
        stride: usize,
        panel: &'a [f32],
        bias: &'a [f32],
        row: usize,
        h: usize,
        unit: usize,
        start: Start,
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize>(t: Tile, a: &mut [f32]) {
        let g4 = 4 * t.h;
        let at = |i: usize, g: usize| (t.row + i) * g4 + g * t.h + t.unit;
        let inputs = t.panel.len() / 64;
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        // SAFETY (every access): inside the lengths `super::gate_sums` asserted, for rows row..row + R, the slab's
        // inputs and the tile's 16 units.
        unsafe {
            for i in 0..R {
                for g in 0..4 {
                    acc[i][g] = match t.start {
                        Start::Bias => _mm512_loadu_ps(t.bias.as_ptr().add(g * t.h + t.unit)),
                        Start::Carried => _mm512_loadu_ps(a.as_ptr().add(at(i, g))),
                    };
                }
            }
            let x = t.src.as_ptr();
            let mut w = t.panel.as_ptr();
            for k in 0..inputs {
                let wv = [
                    _mm512_loadu_ps(w),
                    _mm512_loadu_ps(w.add(16)),
                    _mm512_loadu_ps(w.add(32)),
                    _mm512_loadu_ps(w.add(48)),
                ];
                for i in 0..R {
                    let xv = _mm512_set1_ps(*x.add(i * t.stride + k));
                    for g in 0..4 {
                        acc[i][g] = _mm512_fmadd_ps(xv, wv[g], acc[i][g]);
                    }
                }
                w = w.add(64);
            }
            for i in 0..R {
                for g in 0..4 {
                    _mm512_storeu_ps(a.as_mut_ptr().add(at(i, g)), acc[i][g]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::matmul;
    use crate::transpose::transposed;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 2000) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// The panel sums against gemm's (`x_t · W_ihᵀ + bias + h_prev · W_hhᵀ`), on sizes that take every tile height
    /// (7 rows = 4 + 3), more than one slab of either input (F = 200, H = 144) and strided rows of `x`.
    #[test]
    fn gate_sums_match_gemm() {
        if !applies(16) {
            return;
        }
        for (b, f, h, x_stride) in [(7, 5, 32, 9), (2, 200, 144, 200), (5, 16, 16, 48)] {
            let x = values(b * x_stride, 1);
            let h_prev = values(b * h, 2);
            let (w_ih, w_hh, bias) = (values(4 * h * f, 3), values(4 * h * h, 4), values(4 * h, 5));
            let g4 = 4 * h;
            let mut want: Vec<f32> = (0..b).flat_map(|_| bias.iter().copied()).collect();
            let (wi_t, wh_t) = (transposed(&w_ih, g4, f), transposed(&w_hh, g4, h));
            let dst = (g4 as isize, 1);
            matmul((b, g4, f), &mut want, dst, true, &x, (x_stride as isize, 1), &wi_t, dst);
            matmul((b, g4, h), &mut want, dst, true, &h_prev, (h as isize, 1), &wh_t, dst);
            let mut got = vec![f32::NAN; b * g4];
            let panels = gate_panels(&w_ih, &w_hh, f, h);
            gate_sums(&x, x_stride, &h_prev, &panels, &bias, &mut got, b, (f, h));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{b}x{f}x{h}: a[{i}] = {g}, gemm {w}"
                );
            }
        }
    }
}
