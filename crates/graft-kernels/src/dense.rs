//! The dense (linear) layer `y = x·Wᵀ + b` with PyTorch's weight layout `W [out, in]`, on plain f32 buffers (see
//! [`super`]). Composed from burn's primitives, the weight is used through a transposed view, so its gradient
//! arrives as a transposed (strided) tensor and every optimizer update on it takes the backend's slow strided path;
//! here the backward writes `dW = dyᵀ·x` directly in `[out, in]` order.

use crate::matmul::matmul_parallel;

/// Up to this many rows, [`forward`] takes dot products with the weight rows where they lie ([`few_rows`]).
pub const FEW_ROWS: usize = 16;

/// Multiply-adds from which [`few_rows`] splits the outputs over the latency pool's threads (about a microsecond
/// of work: below that the handoff costs more than it saves).
const FEW_ROWS_PARALLEL: usize = 1 << 16;

/// `x` `[N, in]`, `w` `[out, in]`, `b` `[out]` → `y` `[N, out]`.
pub fn forward(n: usize, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    if n <= FEW_ROWS && few_rows_enabled() {
        return few_rows(n, x, w, b);
    }
    if panels_take(n, b.len()) {
        return crate::dense_panels::forward_packing(n, x, w, b, false);
    }
    crate::matmul::biased_product(n, x, w, b, false)
}

/// Whether `n` rows of `out_f` outputs take `dense_panels.rs`: more rows than [`few_rows`] takes, and outputs
/// the panels suit (`dense_panels::takes`).
pub(crate) fn panels_take(n: usize, out_f: usize) -> bool {
    n > FEW_ROWS && crate::dense_panels::takes(out_f)
}

/// Whether `n` rows, few enough for [`few_rows`], take a weight's kept panels instead (`dense_panels::forward_few`,
/// inference), unless `GRAFT_FEW_PANELS=0` asks for [`few_rows`] (to measure the gain). From panels, one row through
/// 384 → 1536 took 10.7 µs against [`few_rows`]' 14.4 (weights in cache), 16 rows 37.6 against 58.9 µs; with the
/// weights coming from memory (MiniLM's), 16 rows 384 → 1536 68.5 against 100.7 µs.
pub(crate) fn few_panels_take(n: usize, out_f: usize) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("GRAFT_FEW_PANELS").is_ok_and(|v| v == "0"));
    !off && n <= FEW_ROWS && crate::dense_panels::takes(out_f)
}

/// Multiply-adds from which [`forward_split`] splits (a few µs per core; the CNN's 64 × 128 → 10 stays whole).
const SPLIT: usize = 1 << 20;

/// [`forward`] for a model's layer outside autodiff whose outputs are too few for `dense_panels.rs` (a classifier's
/// last layer): the rows are split over the threads from `SPLIT` multiply-adds, where [`forward`] keeps products
/// under 192³ multiply-adds on one thread. The layers before it have just run on the pool, so its threads are awake:
/// the MLP's 1024 × 256 → 10 took 1.3% of the batch-1,024 pass on one core (split: 1.027× faster, median of 8
/// alternating rounds).
pub fn forward_split(n: usize, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let (out_f, in_f) = (b.len(), w.len() / b.len().max(1));
    if n <= FEW_ROWS || n * out_f * in_f < SPLIT {
        return forward(n, x, w, b);
    }
    crate::matmul::biased_product(n, x, w, b, true)
}

/// Whether [`forward`] takes the few-rows path: on AVX-512, unless `GRAFT_FEW_ROWS=0` asks for gemm at every batch
/// size (to measure the gain).
fn few_rows_enabled() -> bool {
    static GEMM_ALWAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let gemm_always = *GEMM_ALWAYS.get_or_init(|| std::env::var("GRAFT_FEW_ROWS").is_ok_and(|v| v == "0"));
    #[cfg(target_arch = "x86_64")]
    return !gemm_always && std::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// [`forward`] for a few rows (serving one request, a short text): each output is the dot product of an input row
/// with a weight row, read where it lies. gemm packs the weight into its own panel layout on every call, which for a
/// few rows costs as much as the product itself (half of MiniLM's time on one 16-token text) and is only repaid
/// when many rows share the packed panels. Large enough products are split by output columns over the latency
/// pool (`latency_pool.rs`): each thread always gets the same half of the weight, which then stays in its
/// core's cache from one request to the next.
pub fn few_rows(n: usize, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let (out_f, in_f) = (b.len(), w.len() / b.len().max(1));
    let mut y = vec![0f32; n * out_f];
    if n * out_f == 0 {
        return y;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        let parts = if n * out_f * in_f >= FEW_ROWS_PARALLEL {
            crate::latency_pool::parts()
        } else {
            1
        };
        let width = out_f.div_ceil(parts).next_multiple_of(16);
        let out = OutPtr(y.as_mut_ptr());
        let part = |p: usize| {
            let cols = (p * width).min(out_f)..((p + 1) * width).min(out_f);
            // SAFETY: AVX-512F is present; `y` holds n×out values and each part writes only its own columns.
            unsafe { avx512::block(x, w, b, out, n, in_f, cols) };
        };
        if parts == 1 {
            part(0);
        } else {
            crate::latency_pool::run(&part, n * out_f * in_f);
        }
        return y;
    }
    crate::matmul::biased_product(n, x, w, b, false)
}

/// The output buffer, shared by the parts of a split product (each writes its own columns).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: the parts write disjoint columns, and the caller waits for all of them before it reads the buffer.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// The tiles written with AVX-512 intrinsics: the compiler did not vectorize the same loops over arrays of lanes
/// (it kept the accumulators on the stack, one float at a time).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::OutPtr;

    /// Columns `cols` of `y [n, out] = x [n, k] · w [out, k]ᵀ + b`, weight rows in the outer loop: each is read from
    /// memory once per call and used for every input row while it is in cache (the inputs, a few rows, stay in L1);
    /// the other order streamed a 2.4 MB weight from L3 once per four rows.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: OutPtr,
        n: usize,
        k: usize,
        cols: std::ops::Range<usize>,
    ) {
        const O: usize = 4;
        // Weight rows are asked for this many tiles ahead when there are rows enough to hide the hints' cost: a long
        // model's weights come from memory on every request (MiniLM's 42 MB), and the hardware prefetcher alone left
        // a 16-row 384 → 1536 product at 18 GB/s of the ~35 a stream gets here; with the hints it ran at 27
        // (measured on weights 16× larger than the caches). On one row (the MLP's 1.6 MB, in cache) they cost as
        // much as the products: 14.5 → 19 µs.
        const PREFETCH: usize = 4;
        let prefetch = n >= 4;
        let mut o = cols.start;
        while o < cols.end {
            // SAFETY (both): the caller's buffer holds n rows of b.len() outputs, o + O ≤ cols.end ≤ b.len().
            if cols.end - o >= O {
                if prefetch {
                    let ahead = (o + PREFETCH * O).min(cols.end);
                    let next = w[ahead * k..(ahead + O).min(cols.end) * k].as_ptr_range();
                    let mut line = next.start;
                    while line < next.end {
                        _mm_prefetch::<_MM_HINT_T0>(line.cast());
                        // One hint per 64-byte line.
                        line = line.wrapping_add(16);
                    }
                }
                let ws: [&[f32]; O] = std::array::from_fn(|j| &w[(o + j) * k..(o + j + 1) * k]);
                unsafe { rows_times::<O>(x, &ws, b, y, n, k, o) };
                o += O;
            } else {
                unsafe { rows_times::<1>(x, &[&w[o * k..(o + 1) * k]], b, y, n, k, o) };
                o += 1;
            }
        }
    }

    /// Outputs `o..o + O` of every row: 4 rows at a time (16 accumulators of 16 lanes for O = 4), then one by one.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_times<const O: usize>(
        x: &[f32],
        ws: &[&[f32]; O],
        b: &[f32],
        y: OutPtr,
        n: usize,
        k: usize,
        o: usize,
    ) {
        let out_f = b.len();
        let put = |r: usize, j: usize, v: f32| {
            assert!(r < n && o + j < out_f);
            // SAFETY: inside the n×out buffer (asserted); only this part writes column o + j.
            unsafe { *y.0.add(r * out_f + o + j) = b[o + j] + v };
        };
        let mut r = 0;
        while r < n {
            if n - r >= 4 {
                let rows: [&[f32]; 4] = std::array::from_fn(|i| &x[(r + i) * k..(r + i + 1) * k]);
                let sums = unsafe { dots::<4, O>(&rows, ws, k) };
                for (i, s) in sums.iter().enumerate() {
                    for (j, &v) in s.iter().enumerate() {
                        put(r + i, j, v);
                    }
                }
                r += 4;
            } else {
                let sums = unsafe { dots::<1, O>(&[&x[r * k..(r + 1) * k]], ws, k) };
                for (j, &v) in sums[0].iter().enumerate() {
                    put(r, j, v);
                }
                r += 1;
            }
        }
    }

    /// Every dot product of `R` rows with `O` rows, all of length `k` (the last partial step masked).
    #[target_feature(enable = "avx512f")]
    unsafe fn dots<const R: usize, const O: usize>(rows: &[&[f32]; R], ws: &[&[f32]; O], k: usize) -> [[f32; O]; R] {
        let mut acc = [[_mm512_setzero_ps(); O]; R];
        let mut c = 0;
        while c < k {
            let left = k - c;
            let mask: __mmask16 = if left >= 16 { 0xffff } else { (1u16 << left) - 1 };
            let mut wv = [_mm512_setzero_ps(); O];
            for j in 0..O {
                // SAFETY: the mask keeps the load inside the row's k elements.
                wv[j] = unsafe { _mm512_maskz_loadu_ps(mask, ws[j].as_ptr().add(c)) };
            }
            for i in 0..R {
                // SAFETY: as above.
                let xv = unsafe { _mm512_maskz_loadu_ps(mask, rows[i].as_ptr().add(c)) };
                for j in 0..O {
                    acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
                }
            }
            c += 16;
        }
        let mut sums = [[0f32; O]; R];
        for i in 0..R {
            for j in 0..O {
                sums[i][j] = _mm512_reduce_add_ps(acc[i][j]);
            }
        }
        sums
    }
}

/// Gradients of `x` (when `need_dx`), `w` and `b` from `dy` `[N, out]`.
pub fn backward(
    n: usize,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    out_f: usize,
    need_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let in_f = w.len() / out_f.max(1);
    let dx = need_dx.then(|| {
        if crate::dense_panels::in_place_takes(out_f, in_f) {
            // dx [n, in] = dy [n, out] · W [out, in]
            return crate::dense_panels::product_in_place((n, out_f, in_f), dy, (out_f, 1), w, in_f);
        }
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
        dx
    });
    let dw = if crate::dense_panels::in_place_takes(n, in_f) {
        // dW [out, in] = dyᵀ [out, n] · x [n, in]
        crate::dense_panels::product_in_place((out_f, n, in_f), dy, (1, out_f), x, in_f)
    } else {
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
        dw
    };
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

    /// The few-rows path gives gemm's products, for every row count up to the limit, widths that are and are not
    /// multiples of the tiles and of 16 lanes, and both the one-thread and the split paths.
    #[test]
    fn few_rows_match_gemm() {
        let value = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 500.0;
        for (in_f, out_f) in [(3, 5), (16, 8), (37, 21), (384, 1536), (784, 512)] {
            let w: Vec<f32> = (0..out_f * in_f).map(value).collect();
            let b: Vec<f32> = (0..out_f).map(|i| value(i + 11)).collect();
            for n in 1..=FEW_ROWS {
                let x: Vec<f32> = (0..n * in_f).map(|i| value(i + 3)).collect();
                let expect = crate::matmul::biased_product(n, &x, &w, &b, false);
                let got = few_rows(n, &x, &w, &b);
                for (g, e) in got.iter().zip(&expect) {
                    assert!(
                        (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{n}×{in_f}→{out_f}: {g} vs {e}"
                    );
                }
            }
        }
    }

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
        let (dx, dw, db) = backward(2, &dy, &x, &w, 2, true);
        let dx = dx.expect("dx was asked for");
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
        // Without dx the weight and bias gradients are the same.
        let (none, dw_alone, db_alone) = backward(2, &dy, &x, &w, 2, false);
        assert!(none.is_none());
        assert_eq!((dw_alone, db_alone), (dw, db));
    }

    /// The gradients against their definitions (sums in f64) on shapes that take the in-place panels for both
    /// products (inputs from 32: whole and partial panels, steps from 1), for one of them (dW over more than
    /// `dense_panels`' step limit), and for neither (too few inputs): gemm's and the panels' paths alike.
    #[test]
    fn gradients_match_the_definitions_on_every_path() {
        let value = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 500.0;
        for (n, in_f, out_f) in [
            (1, 32, 1),
            (5, 64, 7),
            (20, 70, 40),
            (130, 100, 64),
            (7, 784, 33),
            (1100, 40, 12),
            (9, 20, 50),
        ] {
            let x: Vec<f32> = (0..n * in_f).map(value).collect();
            let w: Vec<f32> = (0..out_f * in_f).map(|i| value(i + 3)).collect();
            let dy: Vec<f32> = (0..n * out_f).map(|i| value(i + 7)).collect();
            let (dx, dw, db) = backward(n, &dy, &x, &w, out_f, true);
            let dx = dx.expect("dx was asked for");
            let close = |got: f32, sum: f64, what: &str| {
                assert!(
                    (got as f64 - sum).abs() <= 1e-4 * (1.0 + sum.abs()),
                    "{n}×{in_f}→{out_f} {what}: {got} vs {sum}"
                );
            };
            for r in 0..n {
                for j in 0..in_f {
                    let e: f64 = (0..out_f)
                        .map(|o| dy[r * out_f + o] as f64 * w[o * in_f + j] as f64)
                        .sum();
                    close(dx[r * in_f + j], e, &format!("dx[{r}, {j}]"));
                }
            }
            for o in 0..out_f {
                for j in 0..in_f {
                    let e: f64 = (0..n).map(|r| dy[r * out_f + o] as f64 * x[r * in_f + j] as f64).sum();
                    close(dw[o * in_f + j], e, &format!("dw[{o}, {j}]"));
                }
                let e: f64 = (0..n).map(|r| dy[r * out_f + o] as f64).sum();
                close(db[o], e, &format!("db[{o}]"));
            }
        }
    }
}
