//! The forward of a stride-1 convolution as a direct convolution with AVX-512 (see [`super`]): 16 output positions
//! to a vector, several vectors and output channels accumulated in registers, from input vectors loaded where they
//! lie and weights broadcast one at a time. No im2col matrix is written and nothing is packed per image.
//!
//! The positions are those of a "wide" output as wide as the zero-padded input: output `(i, j)` at `i·Wp + j` reads
//! input `(i + a·d, j + b·d)` at `i·Wp + j + (a·d·Wp + b·d)`, one offset per tap for every position, so 16 adjacent
//! positions are 16 adjacent inputs even across rows. The `Wp − Wo` columns past each row's end are computed and
//! dropped when the rows are copied out (15% extra work on the benchmark's 11-wide layer, 7% on its 26-wide one).
//!
//! Why: im2col + gemm per image ran the benchmark CNN's layers as small gemms (64×288 by 288×121) whose packing,
//! im2col and edge tiles took half the time, and ONNX Runtime's direct kernels ran the whole model 2.5× faster. A
//! channels-last kernel (channels in the vector) was tried first: writing its output back channels-first (a
//! transposition, or scatter stores) cost as much as the products on the 1-channel first layer. The backward
//! (`conv.rs`) keeps im2col + gemm, where the products are large.
//!
//! Work is split by images over rayon's threads when there are enough images, else (one request) by blocks of output
//! channels over the latency pool's spinning threads.

use rayon::prelude::*;

use crate::conv_geometry::Geometry;

/// Output channels accumulated together (`CHANNELS` × [`VECTORS`] accumulators: 20 of the 32 registers; the other
/// shapes tried were no faster, and 3 × 9 much slower).
const CHANNELS: usize = 4;
/// Vectors of 16 positions accumulated together.
const VECTORS: usize = 5;

/// Whether [`forward`] takes `g`: unit strides, on AVX-512, unless `GRAFT_DIRECT_CONV=0` asks for im2col + gemm
/// (to measure the gain).
pub(crate) fn takes(g: &Geometry) -> bool {
    static IM2COL_ALWAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let im2col = *IM2COL_ALWAYS.get_or_init(|| std::env::var("GRAFT_DIRECT_CONV").is_ok_and(|v| v == "0"));
    #[cfg(target_arch = "x86_64")]
    return !im2col && g.stride == [1, 1] && std::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (g, im2col);
        false
    }
}

/// The wide output's geometry for one convolution.
pub(crate) struct Plan {
    pub(crate) g: Geometry,
    /// The padded input plane's rows and columns.
    pub(crate) padded: [usize; 2],
    /// Per kernel tap (channel-major, then row-major as the weight's `[Ci, KH, KW]`), the offset of the input it
    /// reads from the position's own.
    pub(crate) taps: Vec<usize>,
    /// Wide positions computed per channel: `Ho·Wp` rounded up to whole vectors.
    wide: usize,
}

impl Plan {
    pub(crate) fn new(g: Geometry) -> Plan {
        // Large enough for the input with its begin padding and for every window (which covers the end padding).
        let padded: [usize; 2] = std::array::from_fn(|axis| {
            let reach = (g.output[axis].max(1) - 1) + (g.kernel[axis] - 1) * g.dilation[axis] + 1;
            (g.input[axis] + g.pad_begin[axis]).max(reach)
        });
        let plane = padded[0] * padded[1];
        let mut taps = Vec::with_capacity(g.in_channels * g.kernel[0] * g.kernel[1]);
        for c in 0..g.in_channels {
            for a in 0..g.kernel[0] {
                for b in 0..g.kernel[1] {
                    taps.push(c * plane + a * g.dilation[0] * padded[1] + b * g.dilation[1]);
                }
            }
        }
        Plan {
            g,
            padded,
            taps,
            wide: (g.output[0] * padded[1]).next_multiple_of(16),
        }
    }

    /// The padded input's length: every plane, plus the reach of the last vector of wide positions past the last
    /// plane's end (those positions are dropped, but their loads must stay inside the buffer).
    pub(crate) fn padded_len(&self) -> usize {
        self.taps
            .last()
            .map_or(0, |&t| t + self.wide)
            .max(self.g.in_channels * self.padded[0] * self.padded[1])
    }

    /// Copies one image `[Ci, H, W]` into the padded planes, whose padding is already zero (and stays so).
    pub(crate) fn pad(&self, image: &[f32], out: &mut [f32]) {
        let g = &self.g;
        let [h, w] = g.input;
        let [hp, wp] = self.padded;
        for (c, plane) in image.chunks_exact(h * w).enumerate() {
            for (y, row) in plane.chunks_exact(w).enumerate() {
                out[(c * hp + y + g.pad_begin[0]) * wp + g.pad_begin[1]..][..w].copy_from_slice(row);
            }
        }
    }

    /// Output channels `cols` at every position of one padded image, through the ReLU when `relu`, into `y` (the
    /// image's output, `[Co, Ho·Wo]`, or max-pooled over non-overlapping `pool` windows) at those channels' rows.
    /// `wide` is scratch for one register block's wide rows: each block is written out (or pooled) while it is in
    /// L1, where all channels' wide rows at once (94 KB on the benchmark's first layer) went through L2.
    fn image(
        &self,
        padded: &[f32],
        (w, b, relu, pool): (&[f32], &[f32], bool, Option<[usize; 2]>),
        cols: std::ops::Range<usize>,
        wide: &mut [f32],
        y: OutRows,
    ) {
        assert!(padded.len() >= self.padded_len() && wide.len() >= CHANNELS * self.wide);
        assert!(w.len() >= cols.end * self.taps.len() && b.len() >= cols.end);
        // The vectors in blocks of as even sizes as fit (9 as 4 + 5, not 5 + 4 + … 1 alone: a lone vector leaves the
        // FMA units waiting on too few accumulators).
        let total = self.wide / 16;
        let blocks = total.div_ceil(VECTORS);
        let mut co = cols.start;
        while co < cols.end {
            let channels = (cols.end - co).min(CHANNELS);
            let (mut q, mut block) = (0, 0);
            while q < self.wide {
                let vectors = total * (block + 1) / blocks - total * block / blocks;
                block += 1;
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `takes` checked AVX-512F; the sizes are asserted above: every tap's load of the vectors at
                // q stays inside `padded_len`, the block's wide rows inside `wide`.
                unsafe {
                    let args = (padded, self.taps.as_slice(), w, b, relu, co, channels, q);
                    let out = &mut wide[q..];
                    match vectors {
                        5 => avx512::block::<5>(args, out, self.wide),
                        4 => avx512::block::<4>(args, out, self.wide),
                        3 => avx512::block::<3>(args, out, self.wide),
                        2 => avx512::block::<2>(args, out, self.wide),
                        _ => avx512::block::<1>(args, out, self.wide),
                    }
                }
                q += vectors * 16;
            }
            self.emit(&wide[..channels * self.wide], co, pool, y);
            co += channels;
        }
    }

    /// Writes the wide rows of the channels from `co` into `y`: each row's first Wo columns are the output, or what
    /// the pool makes of them.
    fn emit(&self, wide: &[f32], co: usize, pool: Option<[usize; 2]>, y: OutRows) {
        let ([ho, wo], wp) = (self.g.output, self.padded[1]);
        let len = self.out_len(pool);
        for (k, source) in wide.chunks_exact(self.wide).enumerate() {
            // SAFETY: row `co + k` of the image's [Co, len] output belongs to this call alone; it may not have been
            // written yet, and is written here before anything reads it.
            let row = unsafe { std::slice::from_raw_parts_mut(y.0.add((co + k) * len), len) };
            match pool {
                Some(kernel) => crate::max_pool::pool_rows(source, wp, (ho, wo), (kernel[0], kernel[1]), row),
                None => {
                    for (i, out) in row.chunks_exact_mut(wo).enumerate() {
                        out.copy_from_slice(&source[i * wp..i * wp + wo]);
                    }
                }
            }
        }
    }

    /// One output channel's values per image: `Ho·Wo`, or the pooled `(Ho / kh)·(Wo / kw)`.
    fn out_len(&self, pool: Option<[usize; 2]>) -> usize {
        let [ho, wo] = self.g.output;
        pool.map_or(ho * wo, |[kh, kw]| (ho / kh) * (wo / kw))
    }
}

/// Rows of an output buffer written by several parts at once, each its own rows.
#[derive(Clone, Copy)]
pub(crate) struct OutRows(pub(crate) *mut f32);

// SAFETY: every part writes disjoint rows, and the caller waits for all parts before reading.
unsafe impl Send for OutRows {}
unsafe impl Sync for OutRows {}

/// The output `[N, Co, len]` of a convolution's forward over `batch` images, each written by `image(state, n,
/// channels, out)` (output channels `channels` of image `n` into `out`, the image's `[Co, len]` output). At least an
/// image per thread: images split over rayon's threads, each thread's one after another through one `state(Co)`.
/// Fewer (one request): each image split by blocks of `block` output channels over the latency pool (`work`: one
/// image's multiply-adds), each part with its own `state(channels)`. Every value is the callers' to write: the
/// buffer comes back as written by `image`.
pub(crate) fn over_images<S>(
    (batch, co, len): (usize, usize, usize),
    (block, work): (usize, usize),
    state: impl Fn(usize) -> S + Sync,
    image: impl Fn(&mut S, usize, std::ops::Range<usize>, OutRows) + Sync,
) -> Vec<std::mem::MaybeUninit<f32>> {
    let mut y = crate::unfilled::unfilled(batch * co * len);
    if co * len == 0 {
        return y;
    }
    let threads = rayon::current_num_threads().max(1);
    if batch >= threads {
        let per = batch.div_ceil(threads);
        y.par_chunks_mut(per * co * len).enumerate().for_each(|(part, ys)| {
            let mut state = state(co);
            for (local, y_n) in ys.chunks_exact_mut(co * len).enumerate() {
                image(&mut state, part * per + local, 0..co, OutRows(y_n.as_mut_ptr().cast()));
            }
        });
        return y;
    }
    let blocks = co.div_ceil(block);
    let parts = crate::latency_pool::parts().min(blocks);
    for (n, y_n) in y.chunks_exact_mut(co * len).enumerate() {
        let out = OutRows(y_n.as_mut_ptr().cast());
        let part = |part: usize| {
            if part < parts {
                let channels = (blocks * part / parts * block).min(co)..(blocks * (part + 1) / parts * block).min(co);
                image(&mut state(channels.len()), n, channels, out);
            }
        };
        if parts <= 1 {
            part(0);
        } else {
            crate::latency_pool::run(&part, work);
        }
    }
    y
}

/// `x` `[N, Ci, H, W]`, `w` `[Co, Ci, KH, KW]`, `b` `[Co]` → `y` `[N, Co, Ho, Wo]`, through a ReLU when `relu`, and
/// max-pooled over non-overlapping `pool` windows (`[N, Co, Ho / kh, Wo / kw]`) when given: each image's channels
/// are pooled while their rows are in cache, instead of writing the full output and reading it again. The caller
/// checks [`takes`].
pub(crate) fn forward(g: Geometry, x: &[f32], w: &[f32], b: &[f32], relu: bool, pool: Option<[usize; 2]>) -> Vec<f32> {
    let plan = Plan::new(g);
    let (co, p, full) = (g.out_channels, plan.out_len(pool), g.output[0] * g.output[1]);
    let image_len = g.in_channels * g.input[0] * g.input[1];
    if co * p == 0 {
        return vec![0f32; g.batch * co * p];
    }
    // Every output row is written by `Plan::emit` (in this crate's tests the buffer starts as NaN, so a row left
    // unwritten would show): no zero fill first (a pass over the CNN's 5.5 MB first-layer output, 1.2% of its step).
    let filter = (w, b, relu, pool);
    // One request's image is split by output channels in whole register blocks; each part pads its own copy: the
    // copies run side by side, where one made before the split kept the other core waiting.
    let y = over_images(
        (g.batch, co, p),
        (CHANNELS, co * full * plan.taps.len()),
        |_| (vec![0f32; plan.padded_len()], vec![0f32; CHANNELS * plan.wide]),
        |(padded, wide), n, channels, out| {
            plan.pad(&x[n * image_len..(n + 1) * image_len], padded);
            plan.image(padded, filter, channels, wide, out);
        },
    );
    // SAFETY: every image's every output row was written (the parts cover all channels).
    unsafe { crate::unfilled::filled(y) }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// What [`block`] reads: the padded image, the taps' offsets, the weight `[Co, K]` and bias, the ReLU switch,
    /// the first output channel and how many (≤ `CHANNELS`), and the first wide position.
    pub(super) type Args<'a> = (&'a [f32], &'a [usize], &'a [f32], &'a [f32], bool, usize, usize, usize);

    /// `channels` output channels from `co` at the `V` vectors of wide positions from `q`, into `out` (row `r` of
    /// those channels at `r · row`). Fewer than `CHANNELS` channels repeat the last one in the spare registers and
    /// store only the real ones.
    ///
    /// # Safety
    /// AVX-512F; every tap's load of `16·V` values from `q` inside `padded`; `out` holds `channels` rows of `row`
    /// values from its start, each with `16·V` values.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)]
    pub(super) unsafe fn block<const V: usize>(
        (padded, taps, w, b, relu, co, channels, q): Args<'_>,
        out: &mut [f32],
        row: usize,
    ) {
        const R: usize = super::CHANNELS;
        let k = taps.len();
        let zero = _mm512_setzero_ps();
        let mut acc = [[zero; V]; R];
        let mut filters = [w.as_ptr(); R];
        for r in 0..R {
            let c = co + r.min(channels - 1);
            filters[r] = w[c * k..(c + 1) * k].as_ptr();
            let bias = _mm512_set1_ps(b[c]);
            for v in 0..V {
                acc[r][v] = bias;
            }
        }
        // SAFETY (the loads and stores below): the caller's promises.
        let base = unsafe { padded.as_ptr().add(q) };
        for (t, &tap) in taps.iter().enumerate() {
            let mut xv = [zero; V];
            for v in 0..V {
                xv[v] = unsafe { _mm512_loadu_ps(base.add(tap + 16 * v)) };
            }
            for r in 0..R {
                let wb = _mm512_set1_ps(unsafe { *filters[r].add(t) });
                for v in 0..V {
                    acc[r][v] = _mm512_fmadd_ps(wb, xv[v], acc[r][v]);
                }
            }
        }
        for r in 0..channels {
            for v in 0..V {
                // NaN stays NaN, as in PyTorch's ReLU: `max` returns its second operand when one is NaN.
                let value = if relu {
                    _mm512_max_ps(zero, acc[r][v])
                } else {
                    acc[r][v]
                };
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(r * row + 16 * v), value) };
            }
        }
    }
}
