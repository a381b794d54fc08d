//! A 3×3, stride-1 convolution's forward and both gradients by Winograd's minimal filtering F(2×2, 3×3) (Lavin &
//! Gray, 2016) on AVX-512 (see [`super`]); the input gradient is the forward of a flipped kernel
//! ([`InputGradient`]), the weight gradient the same algorithm with the roles turned ([`WeightGradient`]).
//!
//! The forward: each 2×2 block of outputs ("tile") comes from its 4×4 input patch with 16 products per
//! input and output channel pair instead of 36. Per image, the patches are transformed (`V = Bᵀ·d·B`, additions
//! only), each of the 16 transformed positions ξ is one product over the channels (`M_ξ = V_ξ · U_ξ`, tiles × Ci by
//! Ci × Co, `U = G·g·Gᵀ` the transformed weight), and each tile's outputs come back as `Aᵀ·M·A` (additions only),
//! the bias, the ReLU and, where a 2×2 max pool follows, its window: a 2×2 tile is exactly one window, so only its
//! maximum is written.
//!
//! Why: the benchmark CNN's second layer (32 → 64 channels on a 13×13 input, 4/5 of the model's products) ran at
//! the cores' FMA rate in `conv_channels.rs`, which left no way past ONNX Runtime's direct kernels at the same
//! rate but fewer products: 2.25× fewer here (1.9× for an unpooled 11×11 output, whose last tiles are half outside).
//!
//! Numerics: `B`, `G` and `A` hold 0, ±1 and ½, so the transforms lose nothing beyond the order of the additions
//! (errors as large as a direct sum's). An input NaN reaches exactly the outputs whose windows hold it (the
//! transforms' zeros follow the windows); an infinite input may give NaN where the direct sum gives ±∞ (∞ − ∞
//! inside a transform), as in every Winograd convolution.
//!
//! Channels are in the vector throughout (16 to a vector: the input channels in the input transform, the output
//! channels in the products and the output transform), so the image is turned channels-last first and the outputs
//! channels-first last, by 16 × 16 transposes in registers. Several images are split over rayon's threads; one
//! image by blocks of 16 output channels over the latency pool, each part transforming the (small) input itself.

use crate::conv_direct::OutRows;
use crate::conv_geometry::Geometry;

/// Tiles per chunk of an image (whole tile rows, at least one): 16 × 128 × 64 values of patches or products are
/// 512 KB.
const CHUNK_TILES: usize = 128;

/// Tiles whose products are accumulated together (`TILES` × 4 vectors of output channels: 24 of the 32 registers).
const TILES: usize = 6;

/// Whether [`forward`] takes `g` (followed by `pool`): where it [`fits`], unless `GRAFT_WINOGRAD=0` asks for the
/// direct kernels (to measure the gain).
pub(crate) fn takes(g: &Geometry, pool: Option<[usize; 2]>) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("GRAFT_WINOGRAD").is_ok_and(|v| v == "0"));
    !off && fits(g, pool)
}

/// Whether [`forward`] can compute `g` followed by `pool`: a 3×3 kernel with unit strides and dilation, input and
/// output channels in whole vectors, no pool or a 2×2 one, on AVX-512.
pub(crate) fn fits(g: &Geometry, pool: Option<[usize; 2]>) -> bool {
    let shape = g.kernel == [3, 3]
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.in_channels > 0
        && g.in_channels.is_multiple_of(16)
        && g.out_channels > 0
        && g.out_channels.is_multiple_of(16)
        && matches!(pool, None | Some([1, 1]) | Some([2, 2]));
    #[cfg(target_arch = "x86_64")]
    return shape && std::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = shape;
        false
    }
}

/// The weight `[Co, Ci, 3, 3]` transformed: `U_ξ = (G·g·Gᵀ)_ξ` for each input/output channel pair, as
/// `[16, Ci, Co]` (one transformed position's weights for every output channel contiguous, the products' right
/// operand).
pub(crate) fn transformed_weight(w: &[f32], co: usize, ci: usize) -> Vec<f32> {
    assert_eq!(w.len(), co * ci * 9, "conv_winograd: a {co} × {ci} × 3 × 3 weight");
    // [Ci·9, Co]: each tap's weights for every output channel contiguous, so the transform runs along them.
    let taps = crate::transpose::transposed(w, co, ci * 9);
    let mut u = vec![0f32; 16 * ci * co];
    transform_weight(&taps, co, ci, &mut u);
    u
}

simd_dispatch! {
    /// [`transformed_weight`]'s arithmetic, 16 output channels to a vector.
    fn transform_weight(taps: &[f32], co: usize, ci: usize, u: &mut [f32]) => transform_weight_body
}

#[inline(always)]
fn transform_weight_body(taps: &[f32], co: usize, ci: usize, u: &mut [f32]) {
    for k in 0..ci {
        let g: [&[f32]; 9] = std::array::from_fn(|t| &taps[(k * 9 + t) * co..][..co]);
        for o in 0..co {
            let g = |a: usize, b: usize| g[a * 3 + b][o];
            // G·g: rows g₀, (g₀ + g₁ + g₂)/2, (g₀ − g₁ + g₂)/2, g₂ of the kernel, per column. (Written out here and
            // below: arrays built by `std::array::from_fn` were not always inlined, and cost most in the AVX-512
            // loops.)
            let column = |b: usize| {
                let (g0, g1, g2) = (g(0, b), g(1, b), g(2, b));
                [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2]
            };
            let (c0, c1, c2) = (column(0), column(1), column(2));
            let row = |i: usize| [c0[i], c1[i], c2[i]];
            let t = [row(0), row(1), row(2), row(3)];
            // (G·g)·Gᵀ: the same along each row.
            for (i, t) in t.iter().enumerate() {
                let row = [t[0], 0.5 * (t[0] + t[1] + t[2]), 0.5 * (t[0] - t[1] + t[2]), t[2]];
                for (j, v) in row.into_iter().enumerate() {
                    u[((i * 4 + j) * ci + k) * co + o] = v;
                }
            }
        }
    }
}

/// `x` `[N, Ci, H, W]`, `w` `[Co, Ci, 3, 3]`, `b` `[Co]` → `y` `[N, Co, Ho, Wo]`, through a ReLU when `relu`, and
/// max-pooled over 2×2 windows (`[N, Co, Ho / 2, Wo / 2]`) when `pool` is `[2, 2]`. The caller checks [`fits`].
pub(crate) fn forward(g: Geometry, x: &[f32], w: &[f32], b: &[f32], relu: bool, pool: Option<[usize; 2]>) -> Vec<f32> {
    let u = transformed_weight(w, g.out_channels, g.in_channels);
    forward_transformed(g, x, &u, b, relu, pool)
}

/// [`forward`] from the weight as [`transformed_weight`] gives it (kept from call to call by `flex.rs` for a
/// model's inference).
pub(crate) fn forward_transformed(
    g: Geometry,
    x: &[f32],
    u: &[f32],
    b: &[f32],
    relu: bool,
    pool: Option<[usize; 2]>,
) -> Vec<f32> {
    assert!(fits(&g, pool), "conv_winograd: {g:?} with pool {pool:?}");
    let (ci, co) = (g.in_channels, g.out_channels);
    assert_eq!(u.len(), 16 * ci * co, "conv_winograd: the transformed weight's length");
    assert!(b.len() >= co, "conv_winograd: the bias's length");
    let pooled = pool == Some([2, 2]);
    let [ho, wo] = g.output;
    // With the pool, the tiles are its windows (an odd last row or column falls in none); without, they cover the
    // output, the last ones in part.
    let tiles = if pooled {
        [ho / 2, wo / 2]
    } else {
        [ho.div_ceil(2), wo.div_ceil(2)]
    };
    let len = if pooled { tiles[0] * tiles[1] } else { ho * wo };
    let layer = Layer {
        g,
        u,
        b,
        relu,
        pooled,
        tiles,
        len,
    };
    let image_len = ci * g.input[0] * g.input[1];
    // One request's image by blocks of 16 output channels over the latency pool, each part transforming the (small)
    // input itself; the working buffers are the thread's own (`SCRATCH`).
    let y = crate::conv_direct::over_images(
        (g.batch, co, len),
        (16, 16 * tiles[0] * tiles[1] * ci * co),
        |_| (),
        |_, n, channels, out| layer.image(&x[n * image_len..(n + 1) * image_len], channels, out),
    );
    // SAFETY: every image's every output value was written (see `Layer::image`).
    unsafe { crate::unfilled::filled(y) }
}

/// The input gradient of a convolution, as a Winograd convolution of the output gradient with the kernel flipped and
/// its input and output channels swapped: `dx[ci, y, x] = Σ dy[co, y + ph − a, x + pw − b] · w[co, ci, a, b]` is the
/// forward with kernel `w'[ci, co, a, b] = w[co, ci, 2 − a, 2 − b]` and begin padding `2 − ph` (the output gradient
/// read as zero outside). It replaces `conv.rs`'s `Wᵀ · dy` and col2im (a quarter of the CNN's training step).
pub(crate) struct InputGradient {
    /// The flipped convolution's geometry, for one image.
    g: Geometry,
    /// Its transformed weight ([`transformed_weight`] of `w'`).
    u: Vec<f32>,
    /// Its bias: none.
    zeros: Vec<f32>,
}

impl InputGradient {
    /// For the convolution `g` with weight `w` `[Co, Ci, 3, 3]`, where its flipped convolution [`takes`] (so `g` is
    /// 3×3 with unit strides and dilation, and pads at most 2 at the beginning); else `None`.
    pub(crate) fn new(g: &Geometry, w: &[f32]) -> Option<InputGradient> {
        let [ph, pw] = g.pad_begin;
        if g.kernel != [3, 3] || g.stride != [1, 1] || g.dilation != [1, 1] || ph > 2 || pw > 2 {
            return None;
        }
        let flipped = Geometry {
            batch: 1,
            in_channels: g.out_channels,
            out_channels: g.in_channels,
            input: g.output,
            output: g.input,
            kernel: [3, 3],
            stride: [1, 1],
            pad_begin: [2 - ph, 2 - pw],
            dilation: [1, 1],
        };
        if !takes(&flipped, None) {
            return None;
        }
        let (co, ci) = (g.out_channels, g.in_channels);
        assert_eq!(w.len(), co * ci * 9, "conv_winograd: a {co} × {ci} × 3 × 3 weight");
        let mut swapped = vec![0f32; w.len()];
        for o in 0..co {
            for i in 0..ci {
                for t in 0..9 {
                    swapped[(i * co + o) * 9 + t] = w[(o * ci + i) * 9 + 8 - t];
                }
            }
        }
        Some(InputGradient {
            g: flipped,
            u: transformed_weight(&swapped, ci, co),
            zeros: vec![0.0; ci],
        })
    }

    /// The flipped convolution, for one image's input gradient `[Ci, H, W]` (every value written).
    fn layer(&self) -> Layer<'_> {
        let [h, w] = self.g.output;
        Layer {
            g: self.g,
            u: &self.u,
            b: &self.zeros,
            relu: false,
            pooled: false,
            tiles: [h.div_ceil(2), w.div_ceil(2)],
            len: h * w,
        }
    }
}

/// One image's backward through a convolution that [`WeightGradient`] takes: its weight gradient added to `dw`
/// from the input `x` `[Ci, H, W]` and the output gradient `dy` `[Co, Ho, Wo]`, and with `dx` its input gradient
/// `[Ci, H, W]` (every value written). `dy` is turned channels-last once for both.
pub(crate) fn backward_image(x: &[f32], dy: &[f32], dw: &mut WeightGradient, dx: Option<(&InputGradient, &mut [f32])>) {
    let g = dw.g;
    let (ci, co, [h, w], [ho, wo]) = (g.in_channels, g.out_channels, g.input, g.output);
    assert!(
        x.len() == ci * h * w && dy.len() == co * ho * wo,
        "conv_winograd: one image's operands"
    );
    SCRATCH.with_borrow_mut(|s| {
        let Scratch {
            input,
            gradient,
            patches,
            products,
            outputs,
        } = s;
        let gradient = at_least(gradient, ho * wo * co);
        channels_last(dy, co, ho * wo, gradient);
        if let Some((flipped, dx)) = dx {
            assert_eq!(dx.len(), ci * h * w, "conv_winograd: the input gradient's length");
            let layer = flipped.layer();
            layer.channels_last_image(gradient, 0..ci, OutRows(dx.as_mut_ptr()), (patches, products, outputs));
        }
        let input = at_least(input, h * w * ci);
        channels_last(x, ci, h * w, input);
        dw.add(input, gradient, (patches, products));
    });
}

/// The weight gradient of a convolution by Winograd's F(3×3, 2×2), the same algorithm with the roles turned (the
/// output gradient's 2×2 tile is the filter, the 3×3 weight gradient the output): `dW = Gᵀ·[Σ_tiles (A·e·Aᵀ) ⊙
/// (Bᵀ·d·B)]·G`, `e` a 2×2 tile of the output gradient, `d` the 4×4 input patch under it (the forward's patches), and
/// `A`, `B`, `G` the forward's matrices. Per transformed position ξ the sum over tiles is one product, input channels
/// by tiles by output channels: 16 per tile and channel pair against im2col's 36 (the gemm `dy · colᵀ` and the im2col
/// matrix it reads were a quarter of the CNN's training step). One per thread: it adds that thread's images.
pub(crate) struct WeightGradient {
    g: Geometry,
    /// Tile rows and columns over the output gradient.
    tiles: [usize; 2],
    /// `Σ (A·e·Aᵀ)_ξ ⊙ (Bᵀ·d·B)_ξ` per input and output channel, `[16, Ci, Co]`.
    sums: Vec<f32>,
}

impl WeightGradient {
    /// For the convolution `g`, where [`takes`] it (a 3×3 kernel with unit strides and dilation, channels in whole
    /// vectors); else `None`.
    pub(crate) fn new(g: &Geometry) -> Option<WeightGradient> {
        if !takes(g, None) {
            return None;
        }
        let [ho, wo] = g.output;
        Some(WeightGradient {
            g: *g,
            tiles: [ho.div_ceil(2), wo.div_ceil(2)],
            sums: vec![0.0; 16 * g.in_channels * g.out_channels],
        })
    }

    /// Adds one image's part from its input `[H·W, Ci]` and output gradient `[Ho·Wo, Co]`, both channels-last.
    fn add(&mut self, input: &[f32], gradient: &[f32], (patches, transformed): (&mut Vec<f32>, &mut Vec<f32>)) {
        let g = self.g;
        let (ci, co, [ho, wo]) = (g.in_channels, g.out_channels, g.output);
        let [tile_rows, tile_cols] = self.tiles;
        let chunk = chunk_rows(self.tiles);
        let patches = at_least(patches, 16 * chunk * tile_cols * ci);
        let transformed = at_least(transformed, 16 * chunk * tile_cols * co);
        for first in (0..tile_rows).step_by(chunk) {
            let rows = first..(first + chunk).min(tile_rows);
            let count = rows.len() * tile_cols;
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `takes` checked AVX-512F; each buffer has the length the function asks for (sliced above).
            unsafe {
                avx512::patches(input, &g, (self.tiles, rows.clone()), patches);
                avx512::gradient_tiles(gradient, (co, [ho, wo]), (tile_cols, rows.clone()), transformed);
                self.sum::<4>(patches, transformed, count);
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (input, gradient, patches, transformed, count);
        }
    }

    /// `sums_ξ[ci, co] += Σ_t patches_ξ[t, ci] · transformed_ξ[t, co]` over `count` tiles, up to 6 input channels by
    /// `16·V` output channels at a time.
    ///
    /// # Safety
    /// AVX-512F; `patches` `[16, count, Ci]`, `transformed` `[16, count, Co]`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn sum<const V: usize>(&mut self, patches: &[f32], transformed: &[f32], count: usize) {
        let (ci, co) = (self.g.in_channels, self.g.out_channels);
        assert!(patches.len() >= 16 * count * ci && transformed.len() >= 16 * count * co && count > 0);
        let groups = ci.div_ceil(TILES);
        for xi in 0..16 {
            let a = &patches[xi * count * ci..];
            let b = &transformed[xi * count * co..];
            let out = &mut self.sums[xi * ci * co..];
            for group in 0..groups {
                let (r0, r1) = (ci * group / groups, ci * (group + 1) / groups);
                let mut c = 0;
                while c < co {
                    let (a, b, out) = (&a[r0..], &b[c..], &mut out[r0 * co + c..]);
                    // SAFETY: `a` holds `count` rows ci apart of the channels from r0, `b` `count` rows co apart of
                    // the channels from c, `out` rows r0..r1 (co apart) of `sums_ξ` from c (asserted above).
                    unsafe {
                        match ((co - c) / 16).min(V) {
                            4 => sum_rows::<4>(r1 - r0, (a, ci), (b, co), count, out),
                            3 => sum_rows::<3>(r1 - r0, (a, ci), (b, co), count, out),
                            2 => sum_rows::<2>(r1 - r0, (a, ci), (b, co), count, out),
                            _ => sum_rows::<1>(r1 - r0, (a, ci), (b, co), count, out),
                        }
                    }
                    c += 16 * ((co - c) / 16).min(V);
                }
            }
        }
    }

    /// The weight gradient `[Co, Ci, 3, 3]` of the images added: `Gᵀ·sums·G` per channel pair, `Gᵀ = [[1, ½, ½, 0],
    /// [0, ½, −½, 0], [0, ½, ½, 1]]`.
    pub(crate) fn finish(&self) -> Vec<f32> {
        const GT: [[f32; 4]; 3] = [[1.0, 0.5, 0.5, 0.0], [0.0, 0.5, -0.5, 0.0], [0.0, 0.5, 0.5, 1.0]];
        let (ci, co) = (self.g.in_channels, self.g.out_channels);
        let mut dw = vec![0f32; co * ci * 9];
        for i in 0..ci {
            for o in 0..co {
                let m = |xi: usize| self.sums[(xi * ci + i) * co + o];
                for a in 0..3 {
                    for b in 0..3 {
                        let mut v = 0.0;
                        for (p, left) in GT[a].iter().enumerate() {
                            for (q, right) in GT[b].iter().enumerate() {
                                v += left * m(p * 4 + q) * right;
                            }
                        }
                        dw[((o * ci + i) * 3 + a) * 3 + b] = v;
                    }
                }
            }
        }
        dw
    }
}

/// [`WeightGradient::sum`]'s rows `0..rows` (at most [`TILES`]) of one group.
///
/// # Safety
/// AVX-512F; as [`avx512::sum_rows`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_rows<const V: usize>(rows: usize, a: (&[f32], usize), b: (&[f32], usize), count: usize, out: &mut [f32]) {
    let row = b.1;
    // SAFETY: the caller's promise.
    unsafe {
        match rows {
            6 => avx512::sum_rows::<6, V>(a, b, count, out, row),
            5 => avx512::sum_rows::<5, V>(a, b, count, out, row),
            4 => avx512::sum_rows::<4, V>(a, b, count, out, row),
            3 => avx512::sum_rows::<3, V>(a, b, count, out, row),
            2 => avx512::sum_rows::<2, V>(a, b, count, out, row),
            _ => avx512::sum_rows::<1, V>(a, b, count, out, row),
        }
    }
}

/// One convolution's fixed parts, shared by every image and thread.
struct Layer<'a> {
    g: Geometry,
    /// `[16, Ci, Co]` ([`transformed_weight`]).
    u: &'a [f32],
    b: &'a [f32],
    relu: bool,
    /// Whether a 2×2 max pool follows (each tile is one window).
    pooled: bool,
    /// Tile rows and columns.
    tiles: [usize; 2],
    /// One output channel's values per image.
    len: usize,
}

/// A thread's working buffers, kept from call to call: one request's image takes a few microseconds, as long as
/// zeroing fresh buffers would.
#[derive(Default)]
struct Scratch {
    /// The image channels-last, `[H·W, Ci]`.
    input: Vec<f32>,
    /// The output gradient channels-last, `[Ho·Wo, Co]` (for both of the backward's products).
    gradient: Vec<f32>,
    /// The transformed patches, `[16, tiles, Ci]`.
    patches: Vec<f32>,
    /// The products, `[16, tiles, channels]`.
    products: Vec<f32>,
    /// The outputs channels-last, `[len, channels]`.
    outputs: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// `v` at least `len` long. Every value a call reads it has written first, so what an earlier call left is never
/// seen.
fn at_least(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// Tile rows per chunk for `tiles` (rows, columns): about [`CHUNK_TILES`] tiles, so that the patches and products
/// stay in L2 whatever the image's size (a 224 × 224 image's would take 50 MB each).
fn chunk_rows([tile_rows, tile_cols]: [usize; 2]) -> usize {
    CHUNK_TILES.div_ceil(tile_cols.max(1)).clamp(1, tile_rows.max(1))
}

impl Layer<'_> {
    /// Output channels `channels` (whole vectors) of one image `[Ci, H, W]` into `y` (the image's output `[Co, len]`)
    /// at those channels' rows.
    fn image(&self, image: &[f32], channels: std::ops::Range<usize>, y: OutRows) {
        let (ci, [h, w]) = (self.g.in_channels, self.g.input);
        assert_eq!(image.len(), ci * h * w, "conv_winograd: one image's length");
        SCRATCH.with_borrow_mut(|s| {
            let input = at_least(&mut s.input, h * w * ci);
            channels_last(image, ci, h * w, input);
            self.channels_last_image(input, channels, y, (&mut s.patches, &mut s.products, &mut s.outputs));
        });
    }

    /// [`Layer::image`] from the image channels-last (`[H·W, Ci]`), through the working buffers given.
    fn channels_last_image(
        &self,
        input: &[f32],
        channels: std::ops::Range<usize>,
        y: OutRows,
        (patches, products, outputs): (&mut Vec<f32>, &mut Vec<f32>, &mut Vec<f32>),
    ) {
        let g = &self.g;
        let (ci, co, [h, w]) = (g.in_channels, g.out_channels, g.input);
        let [tile_rows, tile_cols] = self.tiles;
        let width = channels.len();
        assert!(input.len() >= h * w * ci && channels.end <= co && width.is_multiple_of(16));
        let chunk = chunk_rows(self.tiles);
        let most = chunk * tile_cols;
        let rows_out = |tile_row: usize| {
            if self.pooled {
                tile_row
            } else {
                (2 * tile_row).min(g.output[0])
            }
        };
        let out_cols = if self.pooled { tile_cols } else { g.output[1] };
        let patches = at_least(patches, 16 * most * ci);
        let products = at_least(products, 16 * most * width);
        let outputs = at_least(outputs, rows_out(chunk) * out_cols * width);
        for first in (0..tile_rows).step_by(chunk) {
            let rows = first..(first + chunk).min(tile_rows);
            let count = rows.len() * tile_cols;
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `fits` checked AVX-512F; each buffer has the length the function asks for (sliced above).
            unsafe {
                avx512::patches(input, g, (self.tiles, rows.clone()), patches);
                let mut c = channels.start;
                while c < channels.end {
                    let vectors = ((channels.end - c) / 16).min(4);
                    match vectors {
                        4 => self.products::<4>(patches, count, (c, channels.start, width), products),
                        3 => self.products::<3>(patches, count, (c, channels.start, width), products),
                        2 => self.products::<2>(patches, count, (c, channels.start, width), products),
                        _ => self.products::<1>(patches, count, (c, channels.start, width), products),
                    }
                    c += vectors * 16;
                }
                avx512::outputs(
                    products,
                    width,
                    (&self.b[channels.clone()], self.relu, self.pooled),
                    (tile_cols, rows.clone(), g.output),
                    outputs,
                );
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (patches, products, count);
            // Channels-last rows to the image's channels-first output: 16 positions of 16 channels at a time.
            let (begin, end) = (rows_out(rows.start) * out_cols, rows_out(rows.end) * out_cols);
            let mut position = begin;
            while position < end {
                let n = (end - position).min(16);
                for c in (0..width).step_by(16) {
                    // SAFETY: rows `channels.start + c ..+ 16` of the image's [Co, len] output belong to this
                    // call alone, and `position + n ≤ len`; `outputs` holds this chunk's `end − begin` rows of
                    // `width` values.
                    unsafe {
                        crate::transpose::block(
                            &outputs[(position - begin) * width + c..],
                            width,
                            n,
                            y.0.add((channels.start + c) * self.len + position),
                            self.len,
                        )
                    };
                }
                position += n;
            }
        }
    }

    /// The products `M_ξ = V_ξ · U_ξ` of `count` tiles for the `16·V` output channels from `c`, into `products`
    /// (`[16, count, width]`, channel `c` at column `c − first`), [`TILES`] or fewer tiles at a time (as even groups
    /// as fit).
    ///
    /// # Safety
    /// AVX-512F; `patches` `[16, count, Ci]` and `products` `[16, count, width]` whole; `c + 16·V ≤ Co`,
    /// `c − first + 16·V ≤ width`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn products<const V: usize>(
        &self,
        patches: &[f32],
        count: usize,
        (c, first, width): (usize, usize, usize),
        products: &mut [f32],
    ) {
        let (ci, co) = (self.g.in_channels, self.g.out_channels);
        assert!(patches.len() >= 16 * count * ci && products.len() >= 16 * count * width);
        assert!(c + 16 * V <= co && c >= first && c - first + 16 * V <= width && self.u.len() >= 16 * ci * co);
        let groups = count.div_ceil(TILES);
        for xi in 0..16 {
            for group in 0..groups {
                let (t0, t1) = (count * group / groups, count * (group + 1) / groups);
                let a = &patches[(xi * count + t0) * ci..];
                let u = &self.u[xi * ci * co + c..];
                let out = &mut products[(xi * count + t0) * width + (c - first)..];
                // SAFETY: rows t0..t1 of V_ξ (ci values each) lie in `a`; the ci rows of U_ξ (co apart) hold the
                // 16·V channels from c; rows t0..t1 of M_ξ (width apart) hold them from c − first (all asserted).
                unsafe {
                    match t1 - t0 {
                        6 => avx512::product::<6, V>(a, ci, u, co, out, width),
                        5 => avx512::product::<5, V>(a, ci, u, co, out, width),
                        4 => avx512::product::<4, V>(a, ci, u, co, out, width),
                        3 => avx512::product::<3, V>(a, ci, u, co, out, width),
                        2 => avx512::product::<2, V>(a, ci, u, co, out, width),
                        _ => avx512::product::<1, V>(a, ci, u, co, out, width),
                    }
                }
            }
        }
    }
}

/// `image` `[Ci, positions]` → `out` `[positions, Ci]`, by 16 × 16 blocks (the last positions one by one).
fn channels_last(image: &[f32], ci: usize, positions: usize, out: &mut [f32]) {
    assert!(image.len() >= ci * positions && out.len() >= ci * positions && ci.is_multiple_of(16));
    let whole = positions / 16 * 16;
    for c0 in (0..ci).step_by(16) {
        for p0 in (0..whole).step_by(16) {
            // SAFETY: channels c0..c0 + 16 hold positions p0..p0 + 16; `out` holds positions p0..p0 + 16 (ci apart)
            // of ci values, of which this writes c0..c0 + 16.
            unsafe {
                crate::transpose::block(
                    &image[c0 * positions + p0..],
                    positions,
                    16,
                    out.as_mut_ptr().add(p0 * ci + c0),
                    ci,
                )
            };
        }
        for p in whole..positions {
            for r in 0..16 {
                out[p * ci + c0 + r] = image[(c0 + r) * positions + p];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::conv_geometry::Geometry;
    use crate::max_pool::avx512::max_nan;

    /// The transformed patches `V = Bᵀ·d·B` of the tiles in tile rows `rows`, `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0],
    /// [0, −1, 1, 0], [0, 1, 0, −1]]`: tile `(i, j)`'s patch `d` is the input from row `2i − pad`, column `2j − pad`
    /// (zero outside the image), and `V`'s value ξ goes to `patches[(ξ·count + t)·Ci + channel]`, `t = (i − first
    /// row)·tile columns + j`, `count` the tiles in `rows`.
    ///
    /// # Safety
    /// AVX-512F; `input` holds the image channels-last (`[H·W, Ci]`), `patches` `16·count·Ci` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn patches(
        input: &[f32],
        g: &Geometry,
        (tiles, rows): ([usize; 2], std::ops::Range<usize>),
        patches: &mut [f32],
    ) {
        let (ci, [h, w], [ph, pw]) = (g.in_channels, g.input, g.pad_begin);
        let count = rows.len() * tiles[1];
        assert!(input.len() >= h * w * ci && patches.len() >= 16 * count * ci && ci.is_multiple_of(16));
        let zero = _mm512_setzero_ps();
        for ti in rows.clone() {
            // The patch's rows and columns in the image, `None` in the padding (or past the image's end, where only
            // outputs that are dropped read).
            let inside = |v: usize, pad: usize, end: usize| v.checked_sub(pad).filter(|&v| v < end);
            let y = |r: usize| inside(2 * ti + r, ph, h);
            let ys = [y(0), y(1), y(2), y(3)];
            for tj in 0..tiles[1] {
                let x = |c: usize| inside(2 * tj + c, pw, w);
                let cols = [x(0), x(1), x(2), x(3)];
                let t = (ti - rows.start) * tiles[1] + tj;
                for k in (0..ci).step_by(16) {
                    let mut d = [[zero; 4]; 4];
                    for (r, y) in ys.iter().enumerate() {
                        for (c, x) in cols.iter().enumerate() {
                            if let (Some(y), Some(x)) = (y, x) {
                                // SAFETY: (y, x) is inside the image; channels k..k + 16 of its row.
                                d[r][c] = unsafe { _mm512_loadu_ps(input.as_ptr().add((y * w + x) * ci + k)) };
                            }
                        }
                    }
                    // Bᵀ·d (along the columns), then ·B (along the rows).
                    let mut e = [[zero; 4]; 4];
                    for c in 0..4 {
                        let column = transform_4(d[0][c], d[1][c], d[2][c], d[3][c]);
                        for (r, v) in column.into_iter().enumerate() {
                            e[r][c] = v;
                        }
                    }
                    for (r, row) in e.iter().enumerate() {
                        let v = transform_4(row[0], row[1], row[2], row[3]);
                        for (c, v) in v.into_iter().enumerate() {
                            let xi = r * 4 + c;
                            // SAFETY: (ξ·tiles + t)·ci + k + 16 ≤ 16·tiles·ci.
                            unsafe { _mm512_storeu_ps(patches.as_mut_ptr().add((xi * count + t) * ci + k), v) };
                        }
                    }
                }
            }
        }
    }

    /// The transformed tiles `A·e·Aᵀ` of the output gradient in tile rows `rows` (`A = [[1, 0], [1, 1], [1, −1],
    /// [0, −1]]`; `e` the 2×2 tile, zero past the output's end), value ξ of tile `t` (counted from the chunk's first)
    /// at `out[(ξ·count + t)·Co + channel]`.
    ///
    /// # Safety
    /// AVX-512F; `gradient` `[Ho·Wo, Co]` (channels-last) with `Co` a multiple of 16, `out` `16·count·Co` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gradient_tiles(
        gradient: &[f32],
        (co, [ho, wo]): (usize, [usize; 2]),
        (tile_cols, rows): (usize, std::ops::Range<usize>),
        out: &mut [f32],
    ) {
        let count = rows.len() * tile_cols;
        assert!(gradient.len() >= ho * wo * co && out.len() >= 16 * count * co && co.is_multiple_of(16));
        let zero = _mm512_setzero_ps();
        let spread = |e0: __m512, e1: __m512| {
            [
                e0,
                _mm512_add_ps(e0, e1),
                _mm512_sub_ps(e0, e1),
                _mm512_sub_ps(zero, e1),
            ]
        };
        for ti in rows.clone() {
            for tj in 0..tile_cols {
                let t = (ti - rows.start) * tile_cols + tj;
                for c in (0..co).step_by(16) {
                    let mut e = [[zero; 2]; 2];
                    for (a, row) in e.iter_mut().enumerate() {
                        for (b, v) in row.iter_mut().enumerate() {
                            let (i, j) = (2 * ti + a, 2 * tj + b);
                            if i < ho && j < wo {
                                // SAFETY: (i, j) is inside the output; channels c..c + 16 of its row.
                                *v = unsafe { _mm512_loadu_ps(gradient.as_ptr().add((i * wo + j) * co + c)) };
                            }
                        }
                    }
                    // A·e along the columns (two rows to four), then ·Aᵀ along the rows.
                    let top = spread(e[0][0], e[1][0]);
                    let bottom = spread(e[0][1], e[1][1]);
                    for r in 0..4 {
                        for (q, v) in spread(top[r], bottom[r]).into_iter().enumerate() {
                            // SAFETY: ((r·4 + q)·count + t)·Co + c + 16 ≤ 16·count·Co.
                            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(((r * 4 + q) * count + t) * co + c), v) };
                        }
                    }
                }
            }
        }
    }

    /// `out[r·row + 16·v + l] += Σ_k a[k·a_step + r] · b[k·b_step + 16·v + l]` for `R` rows and `V` vectors over
    /// `count` steps.
    ///
    /// # Safety
    /// AVX-512F; `a` holds `count` steps `a_step` apart of `R` values, `b` `count` steps `b_step` apart of `16·V`,
    /// `out` `R` rows `row` apart of `16·V`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)]
    pub(super) unsafe fn sum_rows<const R: usize, const V: usize>(
        (a, a_step): (&[f32], usize),
        (b, b_step): (&[f32], usize),
        count: usize,
        out: &mut [f32],
        row: usize,
    ) {
        assert!(count > 0 && a.len() >= (count - 1) * a_step + R && b.len() >= (count - 1) * b_step + 16 * V);
        assert!(out.len() >= (R - 1) * row + 16 * V);
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for r in 0..R {
            for v in 0..V {
                // SAFETY: row r of `out` holds 16·V values (asserted).
                acc[r][v] = unsafe { _mm512_loadu_ps(out.as_ptr().add(r * row + 16 * v)) };
            }
        }
        for k in 0..count {
            let mut columns = [_mm512_setzero_ps(); V];
            for v in 0..V {
                // SAFETY: step k of `b` holds 16·V values (asserted).
                columns[v] = unsafe { _mm512_loadu_ps(b.as_ptr().add(k * b_step + 16 * v)) };
            }
            for r in 0..R {
                // SAFETY: step k of `a` holds R values (asserted).
                let x = _mm512_set1_ps(unsafe { *a.as_ptr().add(k * a_step + r) });
                for v in 0..V {
                    acc[r][v] = _mm512_fmadd_ps(x, columns[v], acc[r][v]);
                }
            }
        }
        for r in 0..R {
            for v in 0..V {
                // SAFETY: as above.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(r * row + 16 * v), acc[r][v]) };
            }
        }
    }

    /// `Bᵀ·[d₀, d₁, d₂, d₃]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transform_4(d0: __m512, d1: __m512, d2: __m512, d3: __m512) -> [__m512; 4] {
        [
            _mm512_sub_ps(d0, d2),
            _mm512_add_ps(d1, d2),
            _mm512_sub_ps(d2, d1),
            _mm512_sub_ps(d1, d3),
        ]
    }

    /// `R` rows of `M_ξ` for `16·V` output channels: `out[r·width + 16·v + l] = Σ_k a[r·ci + k] · u[k·co + 16·v + l]`.
    ///
    /// # Safety
    /// AVX-512F; `a` holds `R` rows of `ci` values, `u` `ci` rows `co` apart of at least `16·V`, `out` `R` rows
    /// `width` apart of at least `16·V`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)]
    pub(super) unsafe fn product<const R: usize, const V: usize>(
        a: &[f32],
        ci: usize,
        u: &[f32],
        co: usize,
        out: &mut [f32],
        width: usize,
    ) {
        assert!(a.len() >= (R - 1) * ci + ci && u.len() >= (ci - 1) * co + 16 * V);
        assert!(out.len() >= (R - 1) * width + 16 * V);
        let zero = _mm512_setzero_ps();
        let mut acc = [[zero; V]; R];
        let (a, mut row) = (a.as_ptr(), u.as_ptr());
        for k in 0..ci {
            let mut weights = [zero; V];
            for v in 0..V {
                // SAFETY: row k of `u` holds 16·V values (asserted).
                weights[v] = unsafe { _mm512_loadu_ps(row.add(16 * v)) };
            }
            for r in 0..R {
                // SAFETY: row r of `a` holds ci values (asserted).
                let x = _mm512_set1_ps(unsafe { *a.add(r * ci + k) });
                for v in 0..V {
                    acc[r][v] = _mm512_fmadd_ps(x, weights[v], acc[r][v]);
                }
            }
            row = row.wrapping_add(co);
        }
        for r in 0..R {
            for v in 0..V {
                // SAFETY: row r of `out` holds 16·V values (asserted).
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(r * width + 16 * v), acc[r][v]) };
            }
        }
    }

    /// Each tile's outputs `Aᵀ·M·A` (`Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`) plus the bias, for the tiles of tile
    /// rows `rows`, channels-last into `outputs`: with the pool, the window's maximum (NaN propagating) then the ReLU
    /// at the tile's row (counted from the chunk's first); without, the ReLU of each output inside the image at its
    /// position's row (counted from the chunk's first output row, `2·rows.start`).
    ///
    /// # Safety
    /// AVX-512F; `products` `[16, count, width]` (`count` the tiles in `rows`) with `width` a multiple of 16, `bias`
    /// `width` values, `outputs` a row of `width` per output value of the chunk.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn outputs(
        products: &[f32],
        width: usize,
        (bias, relu, pooled): (&[f32], bool, bool),
        (tile_cols, rows, [ho, wo]): (usize, std::ops::Range<usize>, [usize; 2]),
        outputs: &mut [f32],
    ) {
        let count = rows.len() * tile_cols;
        let values = if pooled {
            count
        } else {
            ((2 * rows.end).min(ho) - (2 * rows.start).min(ho)) * wo
        };
        assert!(products.len() >= 16 * count * width && bias.len() >= width && width.is_multiple_of(16));
        assert!(outputs.len() >= values * width);
        let zero = _mm512_setzero_ps();
        let activate = |v: __m512| if relu { _mm512_max_ps(zero, v) } else { v };
        for ti in rows.clone() {
            for tj in 0..tile_cols {
                let t = (ti - rows.start) * tile_cols + tj;
                for c in (0..width).step_by(16) {
                    let mut m = [zero; 16];
                    for (xi, m) in m.iter_mut().enumerate() {
                        // SAFETY: (ξ·count + t)·width + c + 16 ≤ 16·count·width.
                        *m = unsafe { _mm512_loadu_ps(products.as_ptr().add((xi * count + t) * width + c)) };
                    }
                    // SAFETY: c + 16 ≤ width = the bias's length.
                    let b = unsafe { _mm512_loadu_ps(bias.as_ptr().add(c)) };
                    // Aᵀ·M along the columns (rows 0 and 1 of four), then ·A along the rows.
                    let (mut top, mut bottom) = ([zero; 4], [zero; 4]);
                    for j in 0..4 {
                        top[j] = _mm512_add_ps(_mm512_add_ps(m[j], m[4 + j]), m[8 + j]);
                        bottom[j] = _mm512_sub_ps(_mm512_sub_ps(m[4 + j], m[8 + j]), m[12 + j]);
                    }
                    let left = |s: &[__m512; 4]| _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]), b);
                    let right = |s: &[__m512; 4]| _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), s[3]), b);
                    let y = [[left(&top), right(&top)], [left(&bottom), right(&bottom)]];
                    if pooled {
                        // The window's maximum, then the ReLU (they commute, NaN included: `max` returns its second
                        // operand when one is NaN).
                        let m = max_nan(max_nan(y[0][0], y[0][1]), max_nan(y[1][0], y[1][1]));
                        // SAFETY: row t of `outputs` holds width values.
                        unsafe { _mm512_storeu_ps(outputs.as_mut_ptr().add(t * width + c), activate(m)) };
                        continue;
                    }
                    for (a, row) in y.iter().enumerate() {
                        for (bj, &v) in row.iter().enumerate() {
                            let (oi, oj) = (2 * ti + a, 2 * tj + bj);
                            if oi < ho && oj < wo {
                                let row = (oi - 2 * rows.start) * wo + oj;
                                // SAFETY: row < values, so `outputs` holds its width values.
                                unsafe { _mm512_storeu_ps(outputs.as_mut_ptr().add(row * width + c), activate(v)) };
                            }
                        }
                    }
                }
            }
        }
    }
}
