//! The dense layer's forward from its weight packed into panels (see [`super`]): `y = x·Wᵀ + b`,
//! through the ReLU when asked, for more rows than `dense::few_rows` takes.
//!
//! Why: gemm packs the weight into its own panel layout on every call, and with the rows split over the threads
//! every thread packs all of it; for a model that serves the same weights call after call that is work thrown away
//! each time (ONNX Runtime packs a constant weight once, when the session is built). Here the weight is packed
//! once (`flex.rs` keeps the panels with the weight they came from) and the product runs from the panels: 64
//! outputs (4 vectors) × 6 input rows in 24 accumulators, the rows' inputs broadcast where they lie. Measured alone
//! on 2 threads against `dense::forward` (gemm, bands of rows): 1024×784 → 512 1.71 against 1.76 ms, 1024×512 →
//! 256 0.53 against 0.63, 64×1600 → 128 61 against 96 µs, 4096×384 → 1536 10.3 against 11.5 ms, 4096×1536 → 384
//! 9.9 against 11.6 ms. The bias and the ReLU are applied as the tile is stored.
//!
//! A weight that changes every call (training) is packed per call, panel by panel, each by the thread that then takes
//! every row through it ([`forward_packing`]): gemm's rows split over the threads made each thread gather the whole
//! weight, and for rows a power of two apart (the MLP's 512 inputs: 2 KB) that gather lands in few cache sets.
//! Alone on 2 threads (median of 3 × 30 timings): MLP 128×784 → 512 300 → 255 µs, 128×512 → 256 165 → 91, the CNN's
//! 64×1600 → 128 105 → 75, the LSTM's projection 3200×128 → 512 1.19 → 1.04 ms, MiniLM 4096×1536 → 384 11.0 →
//! 10.7 ms, 4096×384 → 1536 12.0 → 11.6, 4096×384 → 384 2.57 → 2.59.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Outputs per panel: 4 vectors of 16.
const PANEL: usize = 64;
/// Input rows per register tile (6 × 4 accumulators, 4 weight vectors, the broadcast: 29 of the 32 registers).
const ROWS: usize = 6;
/// Tiles of rows taken through all the panels before the next ones: their inputs (8 × 6 rows) stay in L2 while
/// each panel passes, where taking a thread's whole band of rows (512 × 784 inputs) through each panel in turn
/// streamed the band from L3 once per panel (1024×784 → 512: 1.71 against 1.84 ms; 4 to 32 tiles were alike).
const TILES_PER_BLOCK: usize = 8;
/// Multiply-adds below which the product runs on the calling thread (as `matmul::matmul_parallel`).
const PARALLEL: usize = 192 * 192 * 192;
/// Weight values from which [`Panels::new`] packs the panels on all threads.
const PARALLEL_PACK: usize = 1 << 16;

/// Whether [`forward`] suits `out_f` outputs: on AVX-512, with outputs enough to fill most of a panel (10 classes
/// would compute 64), unless `GRAFT_DENSE_PANELS=0` asks for gemm (to measure the gain). The row count is the
/// caller's (`dense::panels_take`: beyond `dense::few_rows`' rows).
pub(crate) fn takes(out_f: usize) -> bool {
    static GEMM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let gemm = *GEMM.get_or_init(|| std::env::var("GRAFT_DENSE_PANELS").is_ok_and(|v| v == "0"));
    #[cfg(target_arch = "x86_64")]
    return !gemm && out_f >= PANEL / 2 && std::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (out_f, gemm);
        false
    }
}

/// A weight `[out, in]` as panels of [`PANEL`] outputs: panel `p` holds `[in][PANEL]`, output `p·PANEL + l` at lane
/// `l`, zero past the last output.
pub(crate) struct Panels {
    pub(crate) out_f: usize,
    pub(crate) in_f: usize,
    /// The panels from `start`, the first value on a 64-byte boundary so that no vector load spans two cache lines.
    buffer: Vec<f32>,
    start: usize,
}

impl Panels {
    pub(crate) fn new(w: &[f32], out_f: usize, in_f: usize) -> Panels {
        assert_eq!(w.len(), out_f * in_f, "dense panels: the weight's length");
        let len = out_f.div_ceil(PANEL) * in_f * PANEL;
        let mut buffer = crate::unfilled::unfilled(len + 15);
        let start = buffer.as_ptr().align_offset(64).min(15);
        for i in (0..start).chain(start + len..len + 15) {
            buffer[i].write(0.0);
        }
        let pack = |(panel, values): (usize, &mut [MaybeUninit<f32>])| pack(w, out_f, in_f, panel, values);
        let values = &mut buffer[start..start + len];
        if len == 0 {
        } else if len >= PARALLEL_PACK && rayon::current_num_threads() > 1 {
            values.par_chunks_mut(in_f * PANEL).enumerate().for_each(pack);
        } else {
            values.chunks_mut(in_f * PANEL).enumerate().for_each(pack);
        }
        Panels {
            out_f,
            in_f,
            // SAFETY: the prefix, every panel's every lane, and the suffix were written.
            buffer: unsafe { crate::unfilled::filled(buffer) },
            start,
        }
    }

    fn values(&self) -> &[f32] {
        &self.buffer[self.start..]
    }

    /// Asserts that `x` holds `n` rows of the inputs and `b` the outputs' biases; whether the product has outputs.
    fn takes_operands(&self, n: usize, x: &[f32], b: &[f32]) -> bool {
        assert!(
            x.len() >= n * self.in_f && b.len() >= self.out_f,
            "dense panels: input or bias too short"
        );
        n * self.out_f > 0
    }

    /// Rows `rows` of `x` through panel `panel` into its lanes of `out`'s rows (`out_f` values apart), biased by `b`,
    /// through the ReLU when `relu`.
    ///
    /// # Safety
    /// `out` holds the rows' `out_f` values, whose lanes of this panel no other thread writes meanwhile.
    unsafe fn rows_through(
        &self,
        panel: usize,
        x: &[f32],
        rows: std::ops::Range<usize>,
        b: &[f32],
        out: Out,
        relu: bool,
    ) {
        let (in_f, lanes) = (self.in_f, (self.out_f - panel * PANEL).min(PANEL));
        // SAFETY: the caller's promise.
        unsafe {
            panel_rows(
                x,
                in_f,
                rows,
                &self.values()[panel * in_f * PANEL..(panel + 1) * in_f * PANEL],
                &b[panel * PANEL..panel * PANEL + lanes],
                out.at(panel * PANEL),
                self.out_f,
                relu,
            )
        }
    }

    /// The bytes the panels hold.
    pub(crate) fn bytes(&self) -> usize {
        self.buffer.len() * std::mem::size_of::<f32>()
    }
}

/// Panel `panel` of the weight `w` `[out_f, in_f]` into `values` (`in_f × PANEL`), by 16 × 16 transposes; lanes
/// past the last output are zero.
fn pack(w: &[f32], out_f: usize, in_f: usize, panel: usize, values: &mut [MaybeUninit<f32>]) {
    assert!(values.len() >= in_f * PANEL && w.len() >= out_f * in_f);
    let first = panel * PANEL;
    let lanes = (out_f - first).min(PANEL);
    let out = values.as_mut_ptr().cast::<f32>();
    for o0 in (first..first + lanes).step_by(16) {
        let count = (first + lanes - o0).min(16);
        let mut k0 = 0;
        while k0 + 16 <= in_f {
            // SAFETY: rows o0 .. o0 + count of `w` hold inputs k0 .. k0 + 16; the panel holds rows k0 .. k0 + 16
            // of PANEL values, of which this stores lanes o0 − first .. + count.
            unsafe {
                crate::transpose::block(
                    &w[o0 * in_f + k0..],
                    in_f,
                    count,
                    out.add(k0 * PANEL + o0 - first),
                    PANEL,
                )
            };
            k0 += 16;
        }
        for k in k0..in_f {
            for o in o0..o0 + count {
                values[k * PANEL + o - first].write(w[o * in_f + k]);
            }
        }
    }
    for k in 0..in_f {
        for v in &mut values[k * PANEL + lanes..(k + 1) * PANEL] {
            v.write(0.0);
        }
    }
}

/// `x` `[n, in]`, `w` `[out, in]`, `b` `[out]` → `y` `[n, out]` (through the ReLU when `relu`) for a weight that
/// changes from call to call (training): each panel is packed by the thread that then takes every row through it,
/// panels split over the threads. Against gemm with the rows split, which gathers the whole weight into its own
/// layout on every thread (with rows 2 KB apart, into few cache sets): MLP 128×512 → 256 180 → 120 µs.
pub(crate) fn forward_packing(n: usize, x: &[f32], w: &[f32], b: &[f32], relu: bool) -> Vec<f32> {
    let out_f = b.len();
    let in_f = w.len() / out_f.max(1);
    assert!(
        x.len() >= n * in_f && w.len() == out_f * in_f,
        "dense panels: input or weight size"
    );
    let mut y = crate::unfilled::unfilled(n * out_f);
    if n * out_f * in_f == 0 {
        // No inputs: every row is the bias.
        for (i, v) in y.iter_mut().enumerate() {
            let value = b[i % out_f];
            v.write(if relu && value < 0.0 { 0.0 } else { value });
        }
        // SAFETY: all written.
        return unsafe { crate::unfilled::filled(y) };
    }
    let out = Out(y.as_mut_ptr().cast());
    let task = |panel: usize| {
        let mut buffer = crate::unfilled::unfilled(in_f * PANEL + 15);
        let start = buffer.as_ptr().align_offset(64).min(15);
        pack(w, out_f, in_f, panel, &mut buffer[start..]);
        // SAFETY: `pack` wrote the panel's in_f × PANEL values from `start`.
        let values: &[f32] = unsafe { std::slice::from_raw_parts(buffer.as_ptr().add(start).cast(), in_f * PANEL) };
        let lanes = (out_f - panel * PANEL).min(PANEL);
        // SAFETY: this panel's task alone stores lanes panel·PANEL .. + lanes of `y`'s `n` rows.
        unsafe {
            panel_rows(
                x,
                in_f,
                0..n,
                values,
                &b[panel * PANEL..panel * PANEL + lanes],
                out.at(panel * PANEL),
                out_f,
                relu,
            )
        };
    };
    if n * out_f * in_f >= PARALLEL && rayon::current_num_threads() > 1 {
        (0..out_f.div_ceil(PANEL)).into_par_iter().for_each(task);
    } else {
        (0..out_f.div_ceil(PANEL)).for_each(task);
    }
    // SAFETY: every panel's task stored its lanes of every row.
    unsafe { crate::unfilled::filled(y) }
}

/// Whether [`product_in_place`] suits a product of `k` steps into `cols` columns: as [`takes`] for the columns, and
/// steps few enough that a tile's inputs stream from cache (it has no blocking over the steps, as gemm has: the
/// LSTM's weight gradient over 3,200 steps stays with gemm), unless `GRAFT_DENSE_BACKWARD_PANELS=0` asks for gemm.
pub(crate) fn in_place_takes(k: usize, cols: usize) -> bool {
    static GEMM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let gemm = *GEMM.get_or_init(|| std::env::var("GRAFT_DENSE_BACKWARD_PANELS").is_ok_and(|v| v == "0"));
    !gemm && k <= MAX_IN_PLACE_STEPS && takes(cols)
}

/// The most steps [`product_in_place`] takes (see [`in_place_takes`]).
const MAX_IN_PLACE_STEPS: usize = 1024;

/// `y [m, cols] = A · B` for the dense layer's gradients, with `B [k, cols]` row-major (row `kk` from `b[kk ·
/// b_row]`) read in place as panels of its columns, and `A`'s element `(r, kk)` at `a[r · a_row + kk · a_step]`:
/// `dx = dy · W` reads the weight's rows as they lie (`A` = `dy`), and `dW = dyᵀ · x` the input's rows (`A` = `dy`'s
/// columns, `a_row` 1 and `a_step` the outputs). gemm packed both operands on every call (4% of the MLP's training
/// samples). Rows are split over the threads in bands; each band takes its rows block by block through every panel.
pub(crate) fn product_in_place(
    (m, k, cols): (usize, usize, usize),
    a: &[f32],
    (a_row, a_step): (usize, usize),
    b: &[f32],
    b_row: usize,
) -> Vec<f32> {
    if m * cols * k == 0 {
        return vec![0f32; m * cols];
    }
    assert!(
        a.len() > (m - 1) * a_row + (k - 1) * a_step && b.len() >= (k - 1) * b_row + cols && b_row >= cols,
        "dense panels: the operands of an in-place product"
    );
    in_bands(m, cols, m * k * cols, |first_row, rows, out| {
        for_blocks(rows, cols, |block, panel| {
            let tile = Tile {
                step: a_step,
                panel: b[panel * PANEL..].as_ptr(),
                panel_step: b_row,
                k,
                lanes: (cols - panel * PANEL).min(PANEL),
                bias: None,
                stride: cols,
                relu: false,
            };
            // SAFETY: the band's rows of `A` hold their k steps and `B`'s k rows their columns (asserted); this band
            // alone writes its rows of `y`.
            unsafe {
                tiles(
                    &tile,
                    a[first_row * a_row..].as_ptr(),
                    a_row,
                    block,
                    out.at(panel * PANEL),
                )
            };
        })
    })
}

/// `y [m, cols]` from `band(first_row, rows, out)` over bands of rows, one per thread when the product's `work`
/// (multiply-adds) is worth splitting; `out` is the band's first row. Every band must store every value of its rows
/// (in this crate's tests the buffer starts as NaN, so that one left unwritten shows).
fn in_bands(m: usize, cols: usize, work: usize, band: impl Fn(usize, usize, Out) + Sync) -> Vec<f32> {
    let mut y = crate::unfilled::unfilled(m * cols);
    let threads = if work < PARALLEL {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    let per = m.div_ceil(threads).next_multiple_of(ROWS);
    let run = |(i, ys): (usize, &mut [MaybeUninit<f32>])| band(i * per, ys.len() / cols, Out(ys.as_mut_ptr().cast()));
    if threads == 1 {
        run((0, &mut y));
    } else {
        y.par_chunks_mut(per * cols).enumerate().for_each(run);
    }
    // SAFETY: every band stored every value of its rows (the bands' promise).
    unsafe { crate::unfilled::filled(y) }
}

/// `f(block, panel)` for a band of `rows` rows, block by block of [`TILES_PER_BLOCK`] tiles and, in each block, every
/// panel of `cols` columns: a block's inputs (8 × 6 rows) stay in L2 while each panel passes, where taking a
/// thread's whole band through each panel in turn streamed the band from L3 once per panel.
fn for_blocks(rows: usize, cols: usize, mut f: impl FnMut(std::ops::Range<usize>, usize)) {
    let mut first = 0;
    while first < rows {
        let end = (first + TILES_PER_BLOCK * ROWS).min(rows);
        for panel in 0..cols.div_ceil(PANEL) {
            f(first..end, panel);
        }
        first = end;
    }
}

/// The output rows of one band, written by one thread.
#[derive(Clone, Copy)]
struct Out(*mut f32);

// SAFETY: each band writes its own rows, and the caller waits for all of them before it reads the buffer.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The output `offset` values from the start (a method, so that a closure captures the whole `Out`).
    ///
    /// # Safety
    /// Inside the buffer.
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's promise.
        unsafe { self.0.add(offset) }
    }
}

/// `x` `[n, in]`, the packed weight, `b` `[out]` → `y` `[n, out]`, through the ReLU when `relu`. The caller checks
/// [`takes`].
pub(crate) fn forward(n: usize, x: &[f32], w: &Panels, b: &[f32], relu: bool) -> Vec<f32> {
    let (out_f, in_f) = (w.out_f, w.in_f);
    if !w.takes_operands(n, x, b) {
        return vec![0f32; n * out_f];
    }
    in_bands(n, out_f, n * out_f * in_f, |first_row, rows, out| {
        let x = &x[first_row * in_f..];
        for_blocks(rows, out_f, |block, panel| {
            // SAFETY: `out` holds this band's `rows` rows of `out_f` values, written by this band alone.
            unsafe { w.rows_through(panel, x, block, b, out, relu) };
        })
    })
}

/// [`forward`] for a few rows (one short text, a handful of requests; `dense::FEW_ROWS`), from kept panels: the
/// panels are split over the latency pool's threads, each taking every row through its own (the same half of the
/// weight from call to call), where [`forward`] splits the rows and every thread would read the whole weight.
pub(crate) fn forward_few(n: usize, x: &[f32], w: &Panels, b: &[f32], relu: bool) -> Vec<f32> {
    let (out_f, in_f) = (w.out_f, w.in_f);
    if !w.takes_operands(n, x, b) {
        return vec![0f32; n * out_f];
    }
    let mut y = crate::unfilled::unfilled(n * out_f);
    let out = Out(y.as_mut_ptr().cast());
    let panels = out_f.div_ceil(PANEL);
    let parts = crate::latency_pool::parts().min(panels);
    let per = panels.div_ceil(parts);
    let part = |p: usize| {
        for panel in (p * per).min(panels)..((p + 1) * per).min(panels) {
            // SAFETY: this part alone stores panel `panel`'s lanes of `y`'s `n` rows.
            unsafe { w.rows_through(panel, x, 0..n, b, out, relu) };
        }
    };
    if parts == 1 {
        part(0);
    } else {
        crate::latency_pool::run(&part, n * out_f * in_f);
    }
    // SAFETY: every panel's lanes of every row were stored by one part.
    unsafe { crate::unfilled::filled(y) }
}

/// Rows `rows` of `x` (`in_f` values each) through one panel (`values`, `in_f × PANEL`) into the lanes of `y` from
/// its start (`y` at row 0, rows `out_f` values apart; `bias.len()` lanes), tile by tile, through the ReLU when
/// `relu`. The last tile takes as many rows as are left (a tile for 1 to [`ROWS`] rows), so one row costs a sixth
/// of six: a 1 × 384 → 1536 product from panels in cache went from 19.7 to 10.7 µs.
///
/// # Safety
/// `y` holds the rows' `bias.len()` lanes, which no other thread writes meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn panel_rows(
    x: &[f32],
    in_f: usize,
    rows: std::ops::Range<usize>,
    values: &[f32],
    bias: &[f32],
    y: *mut f32,
    out_f: usize,
    relu: bool,
) {
    assert!(x.len() >= rows.end * in_f && values.len() >= in_f * PANEL && bias.len() <= PANEL);
    let tile = Tile {
        step: 1,
        panel: values.as_ptr(),
        panel_step: PANEL,
        k: in_f,
        lanes: bias.len(),
        bias: Some(bias),
        stride: out_f,
        relu,
    };
    // SAFETY: rows of `x` hold `in_f` values (asserted), the panel `in_f` rows of PANEL; `y` the caller's promise.
    unsafe { tiles(&tile, x.as_ptr(), in_f, rows, y) };
}

/// One panel's operands for [`tiles`]: the product `y[i · stride + l] = bias[l] + Σ_{kk < k} a_i[kk · step] ·
/// panel[kk · panel_step + l]` for lanes `l < lanes`, `a_i` the tile's input rows.
struct Tile<'a> {
    /// How far apart an input row's successive values lie (1 for a row of `x`; a column of `dy` for `dW`).
    step: usize,
    panel: *const f32,
    /// How far apart the panel's rows lie: [`PANEL`] when packed, a matrix's row length when read in place.
    panel_step: usize,
    k: usize,
    lanes: usize,
    bias: Option<&'a [f32]>,
    stride: usize,
    relu: bool,
}

/// Rows `rows` (row `r` from `a + r · a_row`) through `tile`'s panel into `y` (row `r` at `y + r · stride`), [`ROWS`]
/// at a time, the last tile as many as are left.
///
/// # Safety
/// AVX-512F; for every row `r` in `rows` and `kk < k`, `a + r · a_row + kk · step` is readable; the panel's `k` rows
/// hold `lanes` values each; `y`'s rows hold `lanes` values, which no other thread writes meanwhile.
unsafe fn tiles(tile: &Tile, a: *const f32, a_row: usize, rows: std::ops::Range<usize>, y: *mut f32) {
    // SAFETY: the caller's promises.
    unsafe {
        if tile.lanes < PANEL {
            tiles_masked::<true>(tile, a, a_row, rows, y)
        } else {
            tiles_masked::<false>(tile, a, a_row, rows, y)
        }
    }
}

/// [`tiles`], with the panel's loads masked to its lanes when `MASKED`: a masked load took the streaming products
/// 1.6 times as long (MiniLM on one 16-token text 1.41 → 2.28 ms), so only a panel narrower than [`PANEL`] has them.
///
/// # Safety
/// As [`tiles`]; without `MASKED`, the panel's rows hold [`PANEL`] values.
unsafe fn tiles_masked<const MASKED: bool>(
    tile: &Tile,
    a: *const f32,
    a_row: usize,
    rows: std::ops::Range<usize>,
    y: *mut f32,
) {
    let mut r = rows.start;
    while r < rows.end {
        let count = (rows.end - r).min(ROWS);
        let row = |i: usize| a.wrapping_add((r + i) * a_row);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's promises, for rows r .. r + count.
        unsafe {
            let y = y.add(r * tile.stride);
            match count {
                6 => avx512::tile::<6, MASKED>(tile, std::array::from_fn(row), y),
                5 => avx512::tile::<5, MASKED>(tile, std::array::from_fn(row), y),
                4 => avx512::tile::<4, MASKED>(tile, std::array::from_fn(row), y),
                3 => avx512::tile::<3, MASKED>(tile, std::array::from_fn(row), y),
                2 => avx512::tile::<2, MASKED>(tile, std::array::from_fn(row), y),
                _ => avx512::tile::<1, MASKED>(tile, std::array::from_fn(row), y),
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (row, y);
        r += count;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{PANEL, Tile};

    /// `y[i · stride + l] = bias[l] + Σ_{kk < k} rows[i][kk · step] · panel[kk · panel_step + l]` for rows `i < R`
    /// and lanes `l < lanes` (bias 0 without one), through the ReLU when `relu` (NaN stays NaN, as in PyTorch). When
    /// `MASKED` the panel's loads are masked to its lanes, so a panel read in place past a matrix's last column reads
    /// nothing.
    ///
    /// # Safety
    /// AVX-512F; `rows[i] + kk · step` readable for `kk < k`; the panel's `k` rows hold `lanes ≤ PANEL` values
    /// (PANEL without `MASKED`); `y` holds `R` rows `stride` apart of `lanes` values.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)]
    pub(super) unsafe fn tile<const R: usize, const MASKED: bool>(tile: &Tile, rows: [*const f32; R], y: *mut f32) {
        let &Tile {
            step,
            panel,
            panel_step,
            k,
            lanes,
            bias,
            stride,
            relu,
        } = tile;
        assert!(lanes <= PANEL && bias.is_none_or(|b| b.len() >= lanes));
        let masks: [__mmask16; 4] = std::array::from_fn(|v| {
            let lanes = lanes.saturating_sub(16 * v).min(16);
            ((1u32 << lanes) - 1) as __mmask16
        });
        let zero = _mm512_setzero_ps();
        let mut acc = [[zero; 4]; R];
        if let Some(bias) = bias {
            for v in 0..4 {
                // SAFETY: the mask keeps the load inside the bias.
                let b = unsafe { _mm512_maskz_loadu_ps(masks[v], bias.as_ptr().add(16 * v)) };
                for i in 0..R {
                    acc[i][v] = b;
                }
            }
        }
        let mut weights = panel;
        let mut offset = 0;
        for _ in 0..k {
            // SAFETY (loads): panel row kk holds `lanes` values, which the masks keep to; every input row holds
            // values at kk · step for kk < k (the caller's promise).
            let wv: [__m512; 4] = std::array::from_fn(|v| unsafe {
                if MASKED {
                    _mm512_maskz_loadu_ps(masks[v], weights.add(16 * v))
                } else {
                    _mm512_loadu_ps(weights.add(16 * v))
                }
            });
            for i in 0..R {
                let x = _mm512_set1_ps(unsafe { *rows[i].add(offset) });
                for v in 0..4 {
                    acc[i][v] = _mm512_fmadd_ps(x, wv[v], acc[i][v]);
                }
            }
            weights = weights.wrapping_add(panel_step);
            offset += step;
        }
        for i in 0..R {
            for v in 0..4 {
                let value = if relu {
                    _mm512_max_ps(zero, acc[i][v])
                } else {
                    acc[i][v]
                };
                // SAFETY: row i < R of `y`, lanes inside `lanes` by the mask (the caller's promise).
                unsafe { _mm512_mask_storeu_ps(y.add(i * stride + 16 * v), masks[v], value) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place product against gemm's (`matmul::matmul`), with `A` given by rows and by columns (a transposed
    /// matrix) and `B` read as a window of a wider matrix, for whole and partial panels, short tiles, one step, and
    /// one thread and all.
    #[test]
    fn in_place_product_matches_gemm() {
        let value = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 500.0;
        for (m, k, cols) in [(1, 1, 32), (7, 5, 64), (13, 128, 100), (130, 37, 784), (512, 128, 300)] {
            if !takes(cols) {
                return;
            }
            let b_row = cols + 5;
            let b: Vec<f32> = (0..k * b_row).map(|i| value(i + 1)).collect();
            let a: Vec<f32> = (0..m * k).map(|i| value(i + 2)).collect();
            for transposed in [false, true] {
                // A [m, k] by rows, or the transpose of a [k, m] matrix.
                let (a_row, a_step) = if transposed { (1, m) } else { (k, 1) };
                let got = product_in_place((m, k, cols), &a, (a_row, a_step), &b, b_row);
                let mut expect = vec![0f32; m * cols];
                crate::matmul::matmul(
                    (m, cols, k),
                    &mut expect,
                    (cols as isize, 1),
                    false,
                    &a,
                    (a_row as isize, a_step as isize),
                    &b,
                    (b_row as isize, 1),
                );
                assert_eq!(got.len(), expect.len());
                for (i, (&g, &e)) in got.iter().zip(&expect).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{m}×{k}→{cols} transposed {transposed} at {i}: {g} vs {e}"
                    );
                }
            }
        }
    }

    /// The panels' product against gemm's (`matmul::biased_product`), with and without the ReLU, for outputs in whole and
    /// partial panels, row counts that end in every tile size and leave short blocks, one thread and all, and a NaN
    /// input; the kept panels split by rows and by panels, and the panels packed per call.
    #[test]
    fn panels_match_gemm() {
        let value = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 500.0;
        for (n, in_f, out_f) in [
            (1, 300, 128),
            (2, 20, 64),
            (3, 50, 64),
            (4, 16, 40),
            (5, 7, 300),
            (16, 384, 96),
            (17, 5, 32),
            (100, 37, 100),
            (61, 300, 128),
            (1030, 200, 70),
            (40, 0, 33),
            (20, 64, 200),
        ] {
            if !takes(out_f) {
                return;
            }
            let mut x: Vec<f32> = (0..n * in_f).map(value).collect();
            if in_f > 1 {
                x[in_f * (n / 2) + 1] = f32::NAN;
            }
            let w: Vec<f32> = (0..out_f * in_f).map(|i| value(i + 3)).collect();
            let b: Vec<f32> = (0..out_f).map(|i| value(i + 11)).collect();
            let panels = Panels::new(&w, out_f, in_f);
            let plain = crate::matmul::biased_product(n, &x, &w, &b, false);
            for relu in [false, true] {
                let kept = forward(n, &x, &panels, &b, relu);
                let packing = forward_packing(n, &x, &w, &b, relu);
                let few = forward_few(n, &x, &panels, &b, relu);
                for (y, path) in [
                    (kept, "kept panels"),
                    (packing, "packed per call"),
                    (few, "kept panels, split by panels"),
                ] {
                    assert_eq!(y.len(), plain.len());
                    for (i, (&got, &e)) in y.iter().zip(&plain).enumerate() {
                        let e = if relu && e < 0.0 { 0.0 } else { e };
                        let same = (got.is_nan() && e.is_nan()) || (got - e).abs() <= 1e-4 * (1.0 + e.abs());
                        assert!(same, "{path} {n}×{in_f}→{out_f} relu {relu} at {i}: {got} vs {e}");
                    }
                }
            }
        }
    }
}
