//! Matrix transposes by 16 × 16 blocks in registers: the recurrent layers' `W_hhᵀ` every step of training, the
//! dense forward's `Wᵀ` (so that gemm copies the weight where it gathered it), the convolution's `[K, Co]` weight and
//! its channels-last tiles back to channels-first.
//!
//! Why: the element-by-element transpose wrote one value per cache line of the output, 2 KB apart for a 512-wide
//! matrix: 1.5 ms for the MLP's 512 × 784 weight, 0.37 ms for 256 × 512, where a training step is about 1.3 ms. By
//! blocks, a row of 16 values is read and 16 are written at a time.

use rayon::prelude::*;

use crate::unfilled::{filled, unfilled};

/// Values from which [`transposed`] splits the output rows over the threads (a few µs of work: the product it feeds
/// runs on them next).
const PARALLEL: usize = 1 << 17;

/// `w` `[rows, cols]` row-major → `wᵀ` `[cols, rows]` row-major.
pub(crate) fn transposed(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert!(
        w.len() >= rows * cols,
        "transposed: a {rows} × {cols} matrix from {} values",
        w.len()
    );
    let mut t = unfilled(rows * cols);
    if rows * cols == 0 {
        // SAFETY: empty.
        return unsafe { filled(t) };
    }
    // Output rows `c0..c0 + 16` (input columns) from every input row.
    let band = |(c0, out): (usize, &mut [std::mem::MaybeUninit<f32>])| {
        let c0 = c0 * 16;
        let width = out.len() / rows;
        let out_ptr = out.as_mut_ptr().cast::<f32>();
        for r0 in (0..rows).step_by(16) {
            let count = (rows - r0).min(16);
            if width == 16 {
                // SAFETY: rows r0 .. r0 + count of `w` hold columns c0 .. c0 + 16; `out` holds 16 rows of `rows`
                // values, of which this stores columns r0 .. r0 + count.
                unsafe { block(&w[r0 * cols + c0..], cols, count, out_ptr.add(r0), rows) };
            } else {
                for r in r0..r0 + count {
                    for l in 0..width {
                        out[l * rows + r].write(w[r * cols + c0 + l]);
                    }
                }
            }
        }
    };
    if rows * cols >= PARALLEL && rayon::current_num_threads() > 1 {
        t.par_chunks_mut(16 * rows).enumerate().for_each(band);
    } else {
        t.chunks_mut(16 * rows).enumerate().for_each(band);
    }
    // SAFETY: every band stored each of its output rows' `rows` values.
    unsafe { filled(t) }
}

/// Rows `0..count` (≤ 16, `rows_apart` values apart) of 16 values from the start of `block`, transposed: value `l`
/// of row `r` to `out[l · stride + r]`, for `r < count`.
///
/// # Safety
/// `out` holds 16 rows `stride` apart of `count` values each.
pub(crate) unsafe fn block(block: &[f32], rows_apart: usize, count: usize, out: *mut f32, stride: usize) {
    assert!(count <= 16 && (count == 0 || block.len() >= (count - 1) * rows_apart + 16));
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is there; the rows lie inside `block` (asserted); `out` as the caller promises.
        unsafe { avx512::block(block, rows_apart, count, out, stride) };
        return;
    }
    for r in 0..count {
        for l in 0..16 {
            // SAFETY: as the caller promises.
            unsafe { *out.add(l * stride + r) = block[r * rows_apart + l] };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// For each round of [`block`] (row-index bit 8, 4, 2, 1), the two-register permutes of rows `r` (bit clear)
    /// and `r + bit`: the low row keeps its own values where the column has the bit clear and takes the high row's
    /// from column `c − bit` where set; the high row takes the low row's from `c + bit` where clear and keeps its
    /// own where set (indices ≥ 16 pick the second register).
    const SWAPS: [[[i32; 16]; 2]; 4] = [swaps(8), swaps(4), swaps(2), swaps(1)];

    const fn swaps(bit: usize) -> [[i32; 16]; 2] {
        let mut out = [[0; 16]; 2];
        let mut c = 0;
        while c < 16 {
            let set = c & bit != 0;
            out[0][c] = if set { (16 + c - bit) as i32 } else { c as i32 };
            out[1][c] = if set { (16 + c) as i32 } else { (c + bit) as i32 };
            c += 1;
        }
        out
    }

    /// Rows `0..count` of 16 values (`rows_apart` apart) from `block`, transposed into `out` (value `l` of row `r` at
    /// `out[l · stride + r]`) by four rounds of two-register permutes, each swapping one bit of the row index with
    /// the same bit of the column index.
    ///
    /// # Safety
    /// AVX-512F; `block` holds `count ≤ 16` rows `rows_apart` apart; `out` holds 16 rows `stride` apart of `count`
    /// values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(block: &[f32], rows_apart: usize, count: usize, out: *mut f32, stride: usize) {
        let mut rows = [_mm512_setzero_ps(); 16];
        for (r, row) in rows.iter_mut().enumerate() {
            // Rows from `count` on are masked off: nothing is read there.
            let mask = if r < count { 0xffff } else { 0 };
            // SAFETY: rows below `count` lie inside `block` (the caller's promise); the others read nothing.
            *row = unsafe { _mm512_maskz_loadu_ps(mask, block.as_ptr().wrapping_add(r * rows_apart)) };
        }
        swap_round::<8>(&mut rows, 0);
        swap_round::<4>(&mut rows, 1);
        swap_round::<2>(&mut rows, 2);
        swap_round::<1>(&mut rows, 3);
        let mask = ((1u32 << count) - 1) as __mmask16;
        for (l, row) in rows.iter().enumerate() {
            // SAFETY: row l of `out` holds `count` values (the caller's promise).
            unsafe { _mm512_mask_storeu_ps(out.add(l * stride), mask, *row) };
        }
    }

    /// One round of [`block`]: rows `r` (bit clear) and `r + BIT` swap the row-index bit with the column's.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::needless_range_loop)]
    fn swap_round<const BIT: usize>(rows: &mut [__m512; 16], round: usize) {
        // SAFETY: 16 i32 values each.
        let (low, high) = unsafe {
            (
                _mm512_loadu_si512(SWAPS[round][0].as_ptr().cast()),
                _mm512_loadu_si512(SWAPS[round][1].as_ptr().cast()),
            )
        };
        for r in 0..16 {
            if r & BIT == 0 {
                let (a, b) = (rows[r], rows[r + BIT]);
                rows[r] = _mm512_permutex2var_ps(a, low, b);
                rows[r + BIT] = _mm512_permutex2var_ps(a, high, b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every shape around the 16-value blocks and the parallel threshold gives the element-by-element transpose.
    #[test]
    fn transposed_matches_the_definition() {
        for (rows, cols) in [
            (1, 1),
            (3, 5),
            (16, 16),
            (17, 33),
            (40, 16),
            (31, 47),
            (512, 256),
            (300, 520),
            (10, 256),
        ] {
            let w: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
            let t = super::transposed(&w, rows, cols);
            assert_eq!(t.len(), rows * cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(t[c * rows + r], w[r * cols + c], "{rows} × {cols} at ({r}, {c})");
                }
            }
        }
    }
}
