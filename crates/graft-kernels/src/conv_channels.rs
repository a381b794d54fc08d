//! The forward of a stride-1 convolution with 16 output channels to a vector (see [`super`]): for one tap, the
//! weights of up to 64 output channels are a few vectors, multiplied by each of several output positions' input
//! value, broadcast. It is a gemm (positions × taps by taps × channels) whose left matrix is never written: each
//! position's input value for a tap is read from the padded image at the position's offset plus the tap's.
//!
//! Why beside `conv_direct.rs` (positions in the vector): that kernel computes the "wide" output, as wide as the
//! padded input, and drops the columns past each row's end: 19% more work on the benchmark CNN's 11-wide second
//! layer, whose products are four-fifths of the model. Here each position is its own broadcast, so only real
//! positions are computed, and with a max pool after the convolution only those inside a window (the 11th row and
//! column of an 11×11 output pool into nothing). The cost is the output: it comes out channels-last per image and
//! is written back channels-first through 16 × 16 transposes in registers, which is small beside the products when
//! there are many input channels (and a pool divides it by the window). With few taps (the benchmark's 1-channel
//! first layer has 9) it is not, unless a 2×2 pool is taken in registers: each group of positions is then two whole
//! windows, and only their maxima are written (64 images: 112 µs against `conv_direct.rs`'s 134). Pooled after the
//! rows were written it took 280 µs, and unpooled 223 against 201, so few taps without a 2×2 pool stay with
//! `conv_direct.rs` ([`MIN_TAPS`]).
//!
//! Measured alone on 64 images (2 threads), the benchmark's second layer (32 → 64 channels, 3×3, 13×13 input) with
//! its ReLU and 2×2 pool: 590–600 µs against `conv_direct.rs`'s 725–740; without the pool 730–760 against 760–800.
//!
//! Work is split by images over rayon's threads; one request's image by blocks of 16 output channels over the
//! latency pool, from the transposed weight that `flex.rs` keeps for a model's inference (transposing it on every
//! call cost more than the kernel saves on one image). CNN at batch 1, against the commit before: 1.064× (median of
//! 12 alternating rounds).

use crate::conv_direct::{OutRows, Plan};
use crate::conv_geometry::Geometry;

/// Input values per output value (`Ci·KH·KW`) from which this kernel is taken: below it, the products are too few
/// for the channels-last output's transposition not to matter (the benchmark's first layer has 9, its second 288).
const MIN_TAPS: usize = 32;

/// Taps whose weights (for up to 64 channels, 256 bytes a tap) a block takes through every position at once.
const TAPS_PER_CHUNK: usize = 64;

/// Whether [`forward`] takes `g` (followed by `pool`): where it [`fits`], unless `GRAFT_CONV_CHANNELS=0` asks for
/// `conv_direct.rs` (to measure the gain), for at least an image per thread or with the weight already transposed
/// (`kept`: `flex.rs` keeps a model's for its inference). Transposing the weight on every call of one request (18,432
/// values on the benchmark's second layer) made the CNN at batch 1 1.4× slower than `conv_direct.rs`.
pub(crate) fn takes(g: &Geometry, pool: Option<[usize; 2]>, kept: bool) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("GRAFT_CONV_CHANNELS").is_ok_and(|v| v == "0"));
    !off && fits(g, pool) && (kept || g.batch >= rayon::current_num_threads().max(1))
}

/// Whether [`forward`] can compute `g` (followed by `pool`): where `conv_direct.rs` can (unit strides, AVX-512),
/// with output channels in whole vectors, and at least [`MIN_TAPS`] taps or a 2×2 pool taken in registers
/// ([`in_registers`]).
pub(crate) fn fits(g: &Geometry, pool: Option<[usize; 2]>) -> bool {
    let taps = g.in_channels * g.kernel[0] * g.kernel[1];
    crate::conv_direct::takes(g)
        && g.out_channels.is_multiple_of(16)
        && (taps >= MIN_TAPS || in_registers(taps, pool.unwrap_or([1, 1])))
}

/// Whether the kernel takes the pool's maximum in registers: for the 2×2 window (a group of 8 positions is two
/// windows, for up to 48 channels at once, whose groups are 8 positions) when the taps fit one chunk, so that every
/// position's sum is complete in the registers. The scratch rows are then the pooled output's (a quarter of the
/// positions), which is what makes this kernel pay on a first layer's few taps.
fn in_registers(taps: usize, pool: [usize; 2]) -> bool {
    pool == [2, 2] && taps <= TAPS_PER_CHUNK
}

/// One convolution's fixed parts, shared by every image and thread.
struct Layer<'a> {
    plan: Plan,
    /// The weight as `[K, Co]` ([`transposed_weight`]).
    wt: &'a [f32],
    b: &'a [f32],
    relu: bool,
    /// The pool's window (`[1, 1]` without a pool).
    pool: [usize; 2],
    /// The offsets in the padded image of the output positions computed: row-major over the pooled rows and
    /// columns (`(Ho / kh)·kh` by `(Wo / kw)·kw`; the rest fall in no window), or window by window when the pool is
    /// taken in registers.
    positions: Vec<usize>,
    /// Positions per pool window when the kernel pools in registers (each group of positions is whole windows, and
    /// `scratch` receives one row per window), else 1.
    window: usize,
    /// One output channel's values per image.
    len: usize,
    /// The padded image's values that the products read: up to the last position's last tap.
    reach: usize,
}

/// The weight `[Co, K]` as `[K, Co]`: one tap's weights for every output channel, contiguous.
pub(crate) fn transposed_weight(w: &[f32], co: usize) -> Vec<f32> {
    crate::transpose::transposed(w, co, w.len() / co.max(1))
}

/// `x` `[N, Ci, H, W]`, `w` `[Co, Ci, KH, KW]`, `b` `[Co]` → `y` `[N, Co, Ho, Wo]`, through a ReLU when `relu`, and
/// max-pooled over non-overlapping `pool` windows (`[N, Co, Ho / kh, Wo / kw]`) when given. The caller checks
/// [`fits`] ([`takes`] where it chooses this kernel) for the same `pool`.
pub(crate) fn forward(g: Geometry, x: &[f32], w: &[f32], b: &[f32], relu: bool, pool: Option<[usize; 2]>) -> Vec<f32> {
    forward_transposed(g, x, &transposed_weight(w, g.out_channels), b, relu, pool)
}

/// [`forward`] from the weight as [`transposed_weight`] gives it (kept from call to call by `flex.rs` for a model's
/// inference). Several images are split over rayon's threads; one image by blocks of 16 output channels over the
/// latency pool.
pub(crate) fn forward_transposed(
    g: Geometry,
    x: &[f32],
    wt: &[f32],
    b: &[f32],
    relu: bool,
    pool: Option<[usize; 2]>,
) -> Vec<f32> {
    let plan = Plan::new(g);
    let co = g.out_channels;
    let k = plan.taps.len();
    let pool = pool.unwrap_or([1, 1]);
    let ([ho, wo], wp) = (g.output, plan.padded[1]);
    let (rows, cols) = ((ho / pool[0]) * pool[0], (wo / pool[1]) * pool[1]);
    let len = (ho / pool[0]) * (wo / pool[1]);
    if co * len == 0 {
        return vec![0f32; g.batch * co * len];
    }
    assert_eq!(wt.len(), k * co, "conv_channels: the transposed weight's length");
    let window = if in_registers(k, pool) { pool[0] * pool[1] } else { 1 };
    let positions = if window > 1 {
        let [kh, kw] = pool;
        let mut positions = Vec::with_capacity(len * window);
        for i in 0..rows / kh {
            for j in 0..cols / kw {
                for a in 0..kh {
                    positions.extend((0..kw).map(|b| (i * kh + a) * wp + j * kw + b));
                }
            }
        }
        positions
    } else {
        (0..rows).flat_map(|i| (0..cols).map(move |j| i * wp + j)).collect()
    };
    let last = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
    let layer = Layer {
        wt,
        b,
        relu,
        pool,
        reach: last(&positions) + last(&plan.taps) + 1,
        positions,
        window,
        len,
        plan,
    };
    let image_len = g.in_channels * g.input[0] * g.input[1];
    // Without padding the padded planes are the image's own (the windows of a valid convolution end inside it), so
    // each image is read where it lies instead of being copied (3% of the benchmark CNN's inference).
    let in_place = layer.plan.padded == g.input;
    let padded_buffer = || {
        if in_place {
            Vec::new()
        } else {
            vec![0f32; layer.plan.padded_len()]
        }
    };
    // Several images over rayon's threads (a buffer pair each), one request's image by blocks of 16 output channels
    // over the latency pool.
    let y = crate::conv_direct::over_images(
        (g.batch, co, len),
        (16, co * layer.positions.len() * k),
        |width| {
            (
                padded_buffer(),
                vec![0f32; layer.positions.len() / layer.window * width],
            )
        },
        |(padded, scratch), n, channels, out| {
            let planes = layer.planes(&x[n * image_len..(n + 1) * image_len], in_place, padded);
            layer.image(planes, channels, scratch, out);
        },
    );
    // SAFETY: every image's every output value was written by `emit` (as `conv.rs`'s test checks, where an unwritten
    // one would show as NaN).
    unsafe { crate::unfilled::filled(y) }
}

impl Layer<'_> {
    /// The padded planes of `image`: the image itself when no padding is needed, else copied into `padded`.
    fn planes<'p>(&self, image: &'p [f32], in_place: bool, padded: &'p mut [f32]) -> &'p [f32] {
        if in_place {
            image
        } else {
            self.plan.pad(image, padded);
            padded
        }
    }

    /// Output channels `channels` (whole vectors) of one padded image into `y` (the image's output `[Co, len]`) at
    /// those channels' rows, through `scratch` (`[positions, channels]`, channels-last).
    fn image(&self, padded: &[f32], channels: std::ops::Range<usize>, scratch: &mut [f32], y: OutRows) {
        let (co, width) = (self.plan.g.out_channels, channels.len());
        assert!(padded.len() >= self.reach && scratch.len() >= self.positions.len() / self.window * width);
        assert!(channels.end <= co && co <= self.b.len() && self.wt.len() >= self.plan.taps.len() * co);
        let mut c = channels.start;
        while c < channels.end {
            // Pooled in registers, 64 channels are 48 + 16: 4 vectors take 6 positions, not whole windows.
            let vectors = ((channels.end - c) / 16).min(if self.window > 1 { 3 } else { 4 });
            let out = &mut scratch[c - channels.start..];
            match (vectors, self.window) {
                (4, 1) => self.block::<4, 6, 1>(padded, c, out, width),
                (3, 1) => self.block::<3, 8, 1>(padded, c, out, width),
                (2, 1) => self.block::<2, 8, 1>(padded, c, out, width),
                (1, 1) => self.block::<1, 8, 1>(padded, c, out, width),
                (3, 4) => self.block::<3, 8, 4>(padded, c, out, width),
                (2, 4) => self.block::<2, 8, 4>(padded, c, out, width),
                (1, 4) => self.block::<1, 8, 4>(padded, c, out, width),
                _ => unreachable!("in_registers: 2×2 windows, at most 3 vectors"),
            }
            c += vectors * 16;
        }
        self.emit(scratch, channels, y);
    }

    /// The `16·V` channels from `c` at every position, `P` positions at a time, into `out` (position `s`'s at
    /// `s · width`; with windows of `W` positions pooled in registers, window `s / W`'s).
    fn block<const V: usize, const P: usize, const W: usize>(
        &self,
        padded: &[f32],
        c: usize,
        out: &mut [f32],
        width: usize,
    ) {
        let n = self.positions.len();
        let co = self.plan.g.out_channels;
        let taps = &self.plan.taps;
        // The taps in chunks whose weights stay in L1 while every position goes through them: all 288 taps of the
        // benchmark's second layer at 64 channels (73 KB) came from L2 for every group of positions.
        let chunks = taps.len().div_ceil(TAPS_PER_CHUNK);
        assert!(W == 1 || (chunks == 1 && P.is_multiple_of(W) && n.is_multiple_of(W)));
        for chunk in 0..chunks {
            let (t0, t1) = (taps.len() * chunk / chunks, taps.len() * (chunk + 1) / chunks);
            let mut s = 0;
            while s < n {
                let count = (n - s).min(P);
                // A last, short group repeats its last position in the spare registers and stores only the real
                // ones.
                let offsets: [usize; P] = std::array::from_fn(|p| self.positions[s + p.min(count - 1)]);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `takes` checked AVX-512F. Every position's offset plus every tap's stays inside the padded
                // image (`image` asserted its length against `reach`); the weight rows hold `c + 16·V ≤ Co`
                // channels, the bias too; `out` holds `count` positions' rows of `width ≥ 16·V` values.
                unsafe {
                    avx512::group::<V, P, W>(
                        (padded, &offsets, &taps[t0..t1]),
                        (&self.wt[t0 * co + c..], co, &self.b[c..c + 16 * V], self.relu),
                        &mut out[s / W * width..],
                        (width, count, chunk == 0, chunk + 1 == chunks),
                    );
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (padded, c, offsets, co, width);
                s += count;
            }
        }
    }

    /// The channels-last rows in `scratch` into the image's channels-first output, each pool window's maximum (NaN
    /// propagating) where there is a pool: the maxima of 16 output positions at a time go into `pooled`, whose
    /// 16 × 16 blocks are transposed in registers and stored as 16 positions of each channel's row.
    fn emit(&self, scratch: &[f32], channels: std::ops::Range<usize>, y: OutRows) {
        let width = channels.len();
        let [kh, kw] = self.pool;
        let wo = self.plan.g.output[1];
        let (ow, used) = (wo / kw, (wo / kw) * kw);
        let mut pooled = [0f32; 16 * 64];
        let mut starts = Vec::with_capacity(kh * kw);
        let mut position = 0;
        while position < self.len {
            let count = (self.len - position).min(16);
            let mut c = 0;
            while c < width {
                let lanes = (width - c).min(64);
                if self.pool == [1, 1] || self.window > 1 {
                    // No pool, or pooled in registers: the output rows are the scratch rows.
                    for block in (0..lanes).step_by(16) {
                        let first = channels.start + c + block;
                        // SAFETY: as below, with `scratch` holding `len` rows of `width` values.
                        unsafe {
                            crate::transpose::block(
                                &scratch[position * width + c + block..],
                                width,
                                count,
                                y.0.add(first * self.len + position),
                                self.len,
                            )
                        };
                    }
                    c += lanes;
                    continue;
                }
                // Rows `position..position + count` of the pooled output, channels `c..c + lanes`, into `pooled`
                // (row r at r · 64).
                for r in 0..count {
                    let (i, j) = ((position + r) / ow, (position + r) % ow);
                    starts.clear();
                    for a in 0..kh {
                        starts.extend((0..kw).map(|b| ((i * kh + a) * used + j * kw + b) * width + c));
                    }
                    window_max(&mut pooled[r * 64..r * 64 + lanes], scratch, &starts);
                }
                for block in (0..lanes).step_by(16) {
                    let first = channels.start + c + block;
                    // SAFETY: rows `first..first + 16` of the image's [Co, len] output belong to this call alone, and
                    // `position + count ≤ len`; `pooled` holds 16 rows of 64 values.
                    unsafe {
                        crate::transpose::block(
                            &pooled[block..],
                            64,
                            count,
                            y.0.add(first * self.len + position),
                            self.len,
                        )
                    };
                }
                c += lanes;
            }
            position += count;
        }
    }
}

/// `best[l]` = the maximum over `source[start + l]` for every start, NaN winning (as PyTorch's max pool propagates
/// it).
fn window_max(best: &mut [f32], source: &[f32], starts: &[usize]) {
    #[cfg(target_arch = "x86_64")]
    if best.len().is_multiple_of(16) {
        // SAFETY: `takes` checked AVX-512F; the bounds are asserted inside.
        unsafe { avx512::window_max(best, source, starts) };
        return;
    }
    for (l, m) in best.iter_mut().enumerate() {
        *m = source[starts[0] + l];
        for &s in &starts[1..] {
            let v = source[s + l];
            *m = if crate::max_pool::beats(v, *m) { v } else { *m };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::max_pool::avx512::max_nan;

    /// `V` vectors of output channels at `P` positions: `out[p · width + 16·v + l]` (+)= Σ_t
    /// `padded[offsets[p] + taps[t]] · wt[t · co + 16·v + l]`, starting from the bias when `first` (else from what
    /// `out` holds), through the ReLU when `last` and `relu`, for the first `count` positions. With `W > 1`
    /// (`first` and `last`), each `W` positions are one pool window and their maximum (NaN propagating) goes to
    /// `out[(p / W) · width + …]`.
    ///
    /// # Safety
    /// AVX-512F; every `offsets[p] + taps[t]` inside `padded`; `wt` holds `taps.len()` rows of `co` values of which
    /// the first `16·V` are read, `bias` `16·V` values; `out` holds `count / W ≥ 1` rows `width ≥ 16·V` apart.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)]
    pub(super) unsafe fn group<const V: usize, const P: usize, const W: usize>(
        (padded, offsets, taps): (&[f32], &[usize; P], &[usize]),
        (wt, co, bias, relu): (&[f32], usize, &[f32], bool),
        out: &mut [f32],
        (width, count, first, last): (usize, usize, bool, bool),
    ) {
        let zero = _mm512_setzero_ps();
        let mut acc = [[zero; V]; P];
        // SAFETY (the loads and stores below): the caller's promises; spare positions (p ≥ count) read the last
        // real one's row.
        for p in 0..P {
            for v in 0..V {
                acc[p][v] = unsafe {
                    if first {
                        _mm512_loadu_ps(bias.as_ptr().add(16 * v))
                    } else {
                        _mm512_loadu_ps(out.as_ptr().add(p.min(count - 1) * width + 16 * v))
                    }
                };
            }
        }
        let inputs: [*const f32; P] = std::array::from_fn(|p| unsafe { padded.as_ptr().add(offsets[p]) });
        let mut row = wt.as_ptr();
        for &tap in taps {
            let mut weights = [zero; V];
            for v in 0..V {
                weights[v] = unsafe { _mm512_loadu_ps(row.add(16 * v)) };
            }
            for p in 0..P {
                let x = _mm512_set1_ps(unsafe { *inputs[p].add(tap) });
                for v in 0..V {
                    acc[p][v] = _mm512_fmadd_ps(x, weights[v], acc[p][v]);
                }
            }
            row = unsafe { row.add(co) };
        }
        if W > 1 {
            // The window's maximum, then the ReLU (they commute, NaN included).
            for w in 0..count / W {
                for v in 0..V {
                    let mut m = acc[w * W][v];
                    for q in 1..W {
                        m = max_nan(m, acc[w * W + q][v]);
                    }
                    let value = if relu { _mm512_max_ps(zero, m) } else { m };
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(w * width + 16 * v), value) };
                }
            }
            return;
        }
        for p in 0..count {
            for v in 0..V {
                // NaN stays NaN, as in PyTorch's ReLU: `max` returns its second operand when one is NaN.
                let value = if relu && last {
                    _mm512_max_ps(zero, acc[p][v])
                } else {
                    acc[p][v]
                };
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(p * width + 16 * v), value) };
            }
        }
    }

    /// [`super::window_max`] on whole vectors.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn window_max(best: &mut [f32], source: &[f32], starts: &[usize]) {
        let n = best.len();
        assert!(n.is_multiple_of(16) && !starts.is_empty() && starts.iter().all(|&s| s + n <= source.len()));
        for l in (0..n).step_by(16) {
            // SAFETY: every start plus n lies inside `source` (asserted), l + 16 ≤ n inside `best`.
            unsafe {
                let mut m = _mm512_loadu_ps(source.as_ptr().add(starts[0] + l));
                for &s in &starts[1..] {
                    m = max_nan(m, _mm512_loadu_ps(source.as_ptr().add(s + l)));
                }
                _mm512_storeu_ps(best.as_mut_ptr().add(l), m);
            }
        }
    }
}
