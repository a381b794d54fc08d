//! The gemm calls behind every fused matmul (row and column strides, optional accumulation, one or all threads).

/// [`matmul`], on all threads when the product is large enough to gain from them (burn-flex's own threshold).
///
/// With a row-major destination of enough rows, each thread takes a band of rows and runs gemm on one thread: gemm's
/// own split of one product over rayon was as fast or slower on every dense shape measured, up to 35% (dense forward
/// 1024×784→512: 441 → 466 GFLOP/s, 128×784→512: 268 → 363, MiniLM's 4096×384→1536: 424 → 465; the LSTM's input
/// weight gradient 512×128 over 3,200 rows: 415 → 472); `GRAFT_GEMM_BANDS=0` keeps gemm's split (to measure the
/// gain).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_parallel(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    dst_strides: (isize, isize),
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (isize, isize),
    rhs: &[f32],
    rhs_strides: (isize, isize),
) {
    let (m, n, k) = dims;
    if m * n * k < 192 * 192 * 192 {
        return matmul(dims, dst, dst_strides, accumulate, lhs, lhs_strides, rhs, rhs_strides);
    }
    matmul_split(dims, dst, dst_strides, accumulate, lhs, lhs_strides, rhs, rhs_strides);
}

/// [`matmul_parallel`] without its size threshold, for a caller that knows the pool's threads are awake (the last
/// of a model's layers, right after the ones before it ran on them).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_split(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    dst_strides: (isize, isize),
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (isize, isize),
    rhs: &[f32],
    rhs_strides: (isize, isize),
) {
    let (m, n, k) = dims;
    let threads = rayon::current_num_threads().max(1);
    let row_major = dst_strides == (n as isize, 1) && lhs_strides.0 >= 0;
    if bands_enabled() && row_major && threads > 1 && m >= threads * BAND_ROWS {
        use rayon::prelude::*;
        let per = m.div_ceil(threads);
        dst[..m * n]
            .par_chunks_mut(per * n)
            .enumerate()
            .for_each(|(band, part)| {
                let first = band * per;
                let rows = part.len() / n;
                gemm_with(
                    (rows, n, k),
                    part,
                    dst_strides,
                    accumulate,
                    &lhs[first * lhs_strides.0 as usize..],
                    lhs_strides,
                    rhs,
                    rhs_strides,
                    gemm::Parallelism::None,
                );
            });
        return;
    }
    gemm_with(
        dims,
        dst,
        dst_strides,
        accumulate,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
        gemm::Parallelism::Rayon(0),
    );
}

/// The fewest rows per thread for [`matmul_parallel`]'s bands (gemm's register tiles are up to 16 rows tall).
const BAND_ROWS: usize = 16;

fn bands_enabled() -> bool {
    static GEMM_SPLIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !*GEMM_SPLIT.get_or_init(|| std::env::var("GRAFT_GEMM_BANDS").is_ok_and(|v| v == "0"))
}

/// `b` on each of `n` rows plus `x [n, in] · w [out, in]ᵀ`, by gemm: on all threads when large enough
/// (`matmul_parallel`), or at any size when `split` (`matmul_split`).
pub(crate) fn biased_product(n: usize, x: &[f32], w: &[f32], b: &[f32], split: bool) -> Vec<f32> {
    let (out_f, in_f) = (b.len(), w.len() / b.len().max(1));
    let mut y: Vec<f32> = Vec::with_capacity(n * out_f);
    for _ in 0..n {
        y.extend_from_slice(b);
    }
    let gemm = if split { matmul_split } else { matmul_parallel };
    gemm(
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

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, each matrix given by its row and column strides.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    dst_strides: (isize, isize),
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (isize, isize),
    rhs: &[f32],
    rhs_strides: (isize, isize),
) {
    gemm_with(
        dims,
        dst,
        dst_strides,
        accumulate,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
        gemm::Parallelism::None,
    );
}

#[allow(clippy::too_many_arguments)]
fn gemm_with(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (dst_rs, dst_cs): (isize, isize),
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (isize, isize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (isize, isize),
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: every caller passes buffers holding the m×n, m×k and k×n matrices the strides describe.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs,
            dst_rs,
            accumulate,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
