//! Fused operations for the CPU (`flex`) backend, each a burn backend extension (`#[backend_extension(Flex,
//! Autodiff)]`) with a handwritten backward, where burn's composed primitives were the bottleneck (see the README's
//! Performance section for what each gained):
//!
//! - `lstm.rs`, `gru.rs`: a whole recurrent sequence per layer and direction. The input projection of every step is
//!   one matmul outside, in ordinary autodiff; the fused operation runs the recurrence, per step one small matmul
//!   and one vectorized gate pass; batch rows run on separate threads. Padded steps (`keep` = 0) leave the state
//!   unchanged, exactly as the composed layer does.
//! - `dense.rs`: `x·Wᵀ + b` with the weight gradient in the weight's own layout.
//! - `conv.rs`, `max_pool.rs`: convolution (im2col + gemm, both passes) and non-overlapping max pooling.
//! - `gelu.rs`, `softmax.rs`: element-wise GELU and last-axis softmax on all threads.
//! - `adam.rs`: the Adam/AdamW update in one pass (used by `train/optim.rs`).
//!
//! Other backends (and other float types, such as the float64 gradient checks) use the composed operations; both
//! are checked against the same PyTorch fixtures, and against each other.

/// Defines `fn $name(args) -> R` that runs `$body` (an `#[inline(always)]` function taking the same arguments)
/// compiled for AVX-512 or for AVX2 with FMA when this CPU has them, else for the SSE2 baseline the crate is built
/// for: graft's element-wise loops (gates, GELU, softmax, Adam) then vectorize 8 or 16 wide instead of 4. std caches
/// the feature checks.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $(#[$meta])*
        #[inline(never)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn narrow($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `wide` is compiled for.
                    return unsafe { wide($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `narrow` is compiled for.
                    return unsafe { narrow($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

pub mod adam;
pub mod conv;
pub mod dense;
pub mod gelu;
pub mod gru;
pub mod lstm;
pub mod max_pool;
pub mod softmax;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::ops::ConvOptions;

/// The sizes of one fused run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dims {
    pub batch: usize,
    pub steps: usize,
    pub hidden: usize,
}

/// `e^x` to about 3e-7 relative error, in plain arithmetic so that the gate loops vectorize (a call into libm per
/// element was a fifth of the step). Cody–Waite reduction: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 in two parts so
/// that n·ln2 is exact), e^r by its degree-6 Taylor polynomial, 2^n built in the exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let power = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    p * f32::from_bits((power.wrapping_add(127) as u32) << 23)
}

/// Sums in sixteen independent lanes: one running total would chain every addition on the last (strict IEEE order
/// keeps the compiler from splitting it), which cost more than the softmax's exponentials.
#[inline(always)]
pub(crate) fn lane_sum(a: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = a.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for a in chunks {
        for k in 0..16 {
            lanes[k] += a[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
pub(crate) fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (a, b) in ca.zip(cb) {
        for k in 0..16 {
            lanes[k] += a[k] * b[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    2.0 / (1.0 + exp(-2.0 * x)) - 1.0
}

/// [`matmul`], on all threads when the product is large enough to gain from them (burn-flex's own threshold).
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
    let parallelism = if m * n * k >= 192 * 192 * 192 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    gemm_with(
        dims,
        dst,
        dst_strides,
        accumulate,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
        parallelism,
    );
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

/// `w` `[rows, cols]` row-major → `wᵀ` `[cols, rows]` row-major. The recurrent matmul reads `W_hhᵀ`; given
/// column-contiguous, gemm uses it in place, where the strided view made it repack the whole weight every step.
pub(crate) fn transposed(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for (r, row) in w.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

pub(crate) fn time_of(steps: usize, step: usize, reverse: bool) -> usize {
    if reverse { steps - 1 - step } else { step }
}

/// The batch rows split into one contiguous range per thread: the rows of an LSTM are independent, so each range
/// runs its whole recurrence on its own core (the per-step matmuls are too small to split well).
fn batch_ranges(batch: usize) -> Vec<std::ops::Range<usize>> {
    let parts = rayon::current_num_threads().clamp(1, batch.max(1));
    (0..parts)
        .map(|p| (p * batch / parts)..((p + 1) * batch / parts))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Runs `work` on every batch range in parallel. Each output buffer is batch-major with `row_len[i]` values per
/// batch row; `work` gets the range and its rows of every output to fill in place, and returns a per-range value.
pub(crate) fn per_batch_range<R: Send, const N: usize>(
    batch: usize,
    mut outputs: [&mut [f32]; N],
    row_len: [usize; N],
    work: impl Fn(std::ops::Range<usize>, [&mut [f32]; N]) -> R + Sync + Send,
) -> Vec<R> {
    use rayon::prelude::*;
    let mut jobs = Vec::new();
    for r in batch_ranges(batch) {
        let mut mine: [&mut [f32]; N] = std::array::from_fn(|_| <&mut [f32]>::default());
        for (i, out) in outputs.iter_mut().enumerate() {
            let (head, tail) = std::mem::take(out).split_at_mut(r.len() * row_len[i]);
            mine[i] = head;
            *out = tail;
        }
        jobs.push((r, mine));
    }
    jobs.into_par_iter().map(|(r, outs)| work(r, outs)).collect()
}

/// The fused passes as backend operations. Each forward returns the states and the saved gates; each backward the
/// gradients of the forward's differentiable inputs (LSTM: `xp, w_hh, h0, c0`; GRU: `xp, w_hh, b_hn, h0`).
#[backend_extension(Flex, Autodiff)]
pub trait FusedBackend: Backend {
    fn lstm_forward(
        xp: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    #[allow(clippy::too_many_arguments)]
    fn lstm_backward(
        d_states: FloatTensor<Self>,
        states: FloatTensor<Self>,
        saved: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );

    fn dense_forward(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;

    fn dense_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    fn gru_forward(
        xp: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        b_hn: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// A 2-D convolution forward (groups = 1): im2col + gemm per image.
    fn conv2d_forward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// The gradients of `x` (an empty tensor unless `need_dx`), `w` and `b`; `y` is the forward's output when it
    /// went through the ReLU (`relu`), ignored otherwise.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        y: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
        need_dx: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `[B, C, H, W]` → (maxima `[B, C, H / kh, W / kw]`, position of each maximum in its window).
    fn max_pool2d_forward(x: FloatTensor<Self>, kh: usize, kw: usize) -> (FloatTensor<Self>, FloatTensor<Self>);

    fn max_pool2d_backward(
        dy: FloatTensor<Self>,
        at: FloatTensor<Self>,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
    ) -> FloatTensor<Self>;

    /// GELU (erf form), element-wise.
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The input gradient of [`FusedBackend::fused_gelu`].
    fn fused_gelu_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self>;

    /// One Adam/AdamW update: the new parameter and moments (see [`adam::AdamStep`]).
    fn fused_adam(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: adam::AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Softmax over the last axis.
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The input gradient of [`FusedBackend::fused_softmax`] from its output `y`.
    fn fused_softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self>;

    #[allow(clippy::too_many_arguments)]
    fn gru_backward(
        d_states: FloatTensor<Self>,
        states: FloatTensor<Self>,
        saved: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );
}

fn f32s(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("an f32 tensor").to_vec()),
    }
}

/// `t` with storage that holds exactly its elements in order, so `storage_mut` updates it in place (copying only
/// when the storage is shared).
fn writable(t: FlexTensor) -> FlexTensor {
    let layout = t.layout();
    let n = layout.num_elements();
    if layout.is_contiguous() && layout.start_offset() == 0 && t.storage::<f32>().len() == n {
        return t;
    }
    let shape = layout.shape().to_vec();
    flex(f32s(&t).into_owned(), shape)
}

fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The geometry of a convolution of an input shaped `xs` with a weight shaped `ws` into `output` positions.
fn conv_geometry(xs: &[usize], ws: &[usize], output: [usize; 2], options: &ConvOptions<2>) -> conv::Geometry {
    conv::Geometry {
        batch: xs[0],
        in_channels: xs[1],
        out_channels: ws[0],
        input: [xs[2], xs[3]],
        output,
        kernel: [ws[2], ws[3]],
        stride: options.stride,
        pad_begin: [options.padding[0].0, options.padding[1].0],
        dilation: options.dilation,
    }
}

/// `[B, T, width·H]` → the run's sizes.
fn dims_of(t: &FlexTensor, width: usize) -> Dims {
    let shape = t.layout().shape();
    Dims {
        batch: shape[0],
        steps: shape[1],
        hidden: shape[2] / width,
    }
}

impl FusedBackend for Flex {
    fn lstm_forward(
        xp: FlexTensor,
        w_hh: FlexTensor,
        h0: FlexTensor,
        c0: FlexTensor,
        keep: FlexTensor,
        reverse: bool,
    ) -> (FlexTensor, FlexTensor) {
        let d = dims_of(&xp, 4);
        let (states, saved) = lstm::forward(
            d,
            &f32s(&xp),
            &f32s(&w_hh),
            &f32s(&h0),
            &f32s(&c0),
            &f32s(&keep),
            reverse,
        );
        (
            flex(states, vec![d.batch, d.steps, 2 * d.hidden]),
            flex(saved, vec![d.batch, d.steps, lstm::SAVED * d.hidden]),
        )
    }

    fn lstm_backward(
        d_states: FlexTensor,
        states: FlexTensor,
        saved: FlexTensor,
        w_hh: FlexTensor,
        h0: FlexTensor,
        c0: FlexTensor,
        keep: FlexTensor,
        reverse: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
        let shape = states.layout().shape();
        let d = Dims {
            batch: shape[0],
            steps: shape[1],
            hidden: shape[2] / 2,
        };
        let g = lstm::backward(
            d,
            &f32s(&d_states),
            &f32s(&states),
            &f32s(&saved),
            &f32s(&w_hh),
            &f32s(&h0),
            &f32s(&c0),
            &f32s(&keep),
            reverse,
        );
        let (b, t, h) = (d.batch, d.steps, d.hidden);
        (
            flex(g.xp, vec![b, t, 4 * h]),
            flex(g.w_hh, vec![4 * h, h]),
            flex(g.h0, vec![b, h]),
            flex(g.c0, vec![b, h]),
        )
    }

    fn dense_forward(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
        let n = x.layout().shape()[0];
        let out_f = b.layout().shape()[0];
        flex(dense::forward(n, &f32s(&x), &f32s(&w), &f32s(&b)), vec![n, out_f])
    }

    fn dense_backward(dy: FlexTensor, x: FlexTensor, w: FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (n, out_f) = (dy.layout().shape()[0], dy.layout().shape()[1]);
        let in_f = w.layout().shape()[1];
        let (dx, dw, db) = dense::backward(n, &f32s(&dy), &f32s(&x), &f32s(&w), out_f);
        (
            flex(dx, vec![n, in_f]),
            flex(dw, vec![out_f, in_f]),
            flex(db, vec![out_f]),
        )
    }

    fn conv2d_forward(x: FlexTensor, w: FlexTensor, b: FlexTensor, options: ConvOptions<2>, relu: bool) -> FlexTensor {
        let (xs, ws) = (x.layout().shape().to_vec(), w.layout().shape().to_vec());
        let out = |axis: usize| {
            let (begin, end) = options.padding[axis];
            let span = options.dilation[axis] * (ws[2 + axis] - 1) + 1;
            (xs[2 + axis] + begin + end).saturating_sub(span) / options.stride[axis] + 1
        };
        let g = conv_geometry(&xs, &ws, [out(0), out(1)], &options);
        let y = conv::forward(g, &f32s(&x), &f32s(&w), &f32s(&b), relu);
        flex(y, vec![g.batch, g.out_channels, g.output[0], g.output[1]])
    }

    fn conv2d_backward(
        dy: FlexTensor,
        x: FlexTensor,
        w: FlexTensor,
        y: FlexTensor,
        options: ConvOptions<2>,
        relu: bool,
        need_dx: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (xs, ws, ys) = (
            x.layout().shape().to_vec(),
            w.layout().shape().to_vec(),
            dy.layout().shape().to_vec(),
        );
        let g = conv_geometry(&xs, &ws, [ys[2], ys[3]], &options);
        let y = relu.then(|| f32s(&y));
        let (dx, dw, db) = conv::backward(g, &f32s(&dy), &f32s(&x), &f32s(&w), y.as_deref(), need_dx);
        (
            dx.map_or_else(|| flex(vec![0.0], vec![1]), |dx| flex(dx, xs.clone())),
            flex(dw, ws),
            flex(db, vec![g.out_channels]),
        )
    }

    fn max_pool2d_forward(x: FlexTensor, kh: usize, kw: usize) -> (FlexTensor, FlexTensor) {
        let shape = x.layout().shape().to_vec();
        let (b, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        let (y, at) = max_pool::forward(&f32s(&x), b * c, (h, w), (kh, kw));
        let out = vec![b, c, h / kh, w / kw];
        (flex(y, out.clone()), flex(at, out))
    }

    fn max_pool2d_backward(dy: FlexTensor, at: FlexTensor, h: usize, w: usize, kh: usize, kw: usize) -> FlexTensor {
        let shape = dy.layout().shape().to_vec();
        let (b, c) = (shape[0], shape[1]);
        flex(
            max_pool::backward(&f32s(&dy), &f32s(&at), b * c, (h, w), (kh, kw)),
            vec![b, c, h, w],
        )
    }

    fn fused_gelu(x: FlexTensor) -> FlexTensor {
        let shape = x.layout().shape().to_vec();
        flex(gelu::forward(&f32s(&x)), shape)
    }

    fn fused_gelu_backward(x: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let shape = x.layout().shape().to_vec();
        flex(gelu::backward(&f32s(&x), &f32s(&dy)), shape)
    }

    fn fused_adam(
        param: FlexTensor,
        grad: FlexTensor,
        m: FlexTensor,
        v: FlexTensor,
        step: adam::AdamStep,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (mut p, mut m, mut v) = (writable(param), writable(m), writable(v));
        adam::step(
            step,
            p.storage_mut::<f32>(),
            &f32s(&grad),
            m.storage_mut::<f32>(),
            v.storage_mut::<f32>(),
        );
        (p, m, v)
    }

    fn fused_softmax(x: FlexTensor) -> FlexTensor {
        let shape = x.layout().shape().to_vec();
        let row = shape.last().copied().unwrap_or(1);
        flex(softmax::forward(&f32s(&x), row), shape)
    }

    fn fused_softmax_backward(y: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let shape = y.layout().shape().to_vec();
        let row = shape.last().copied().unwrap_or(1);
        flex(softmax::backward(&f32s(&y), &f32s(&dy), row), shape)
    }

    fn gru_forward(
        xp: FlexTensor,
        w_hh: FlexTensor,
        b_hn: FlexTensor,
        h0: FlexTensor,
        keep: FlexTensor,
        reverse: bool,
    ) -> (FlexTensor, FlexTensor) {
        let d = dims_of(&xp, 3);
        let (states, saved) = gru::forward(
            d,
            &f32s(&xp),
            &f32s(&w_hh),
            &f32s(&b_hn),
            &f32s(&h0),
            &f32s(&keep),
            reverse,
        );
        (
            flex(states, vec![d.batch, d.steps, d.hidden]),
            flex(saved, vec![d.batch, d.steps, gru::SAVED * d.hidden]),
        )
    }

    fn gru_backward(
        d_states: FlexTensor,
        states: FlexTensor,
        saved: FlexTensor,
        w_hh: FlexTensor,
        h0: FlexTensor,
        keep: FlexTensor,
        reverse: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
        let d = dims_of(&states, 1);
        let g = gru::backward(
            d,
            &f32s(&d_states),
            &f32s(&states),
            &f32s(&saved),
            &f32s(&w_hh),
            &f32s(&h0),
            &f32s(&keep),
            reverse,
        );
        let (b, t, h) = (d.batch, d.steps, d.hidden);
        (
            flex(g.xp, vec![b, t, 3 * h]),
            flex(g.w_hh, vec![3 * h, h]),
            flex(g.b_hn, vec![h]),
            flex(g.h0, vec![b, h]),
        )
    }
}

/// Hands each parent that takes part in autodiff its gradient.
fn register<B: Backend, const N: usize>(
    grads: &mut Gradients,
    parents: [Option<burn::backend::autodiff::NodeId>; N],
    values: [FloatTensor<B>; N],
) {
    for (parent, grad) in parents.into_iter().zip(values) {
        if let Some(id) = parent {
            grads.register::<B>(id, grad);
        }
    }
}

#[derive(Debug)]
struct LstmBackward;

impl<B: Backend + FusedBackend> Backward<B, 4> for LstmBackward {
    /// states, saved gates, w_hh, h0, c0, keep, reverse
    #[allow(clippy::type_complexity)]
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        bool,
    );

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let d_states = grads.consume::<B>(&ops.node);
        let (states, saved, w_hh, h0, c0, keep, reverse) = ops.state;
        let (d_xp, d_w, d_h0, d_c0) = B::lstm_backward(d_states, states, saved, w_hh, h0, c0, keep, reverse);
        register::<B, _>(grads, ops.parents.map(|p| p.map(|n| n.id)), [d_xp, d_w, d_h0, d_c0]);
    }
}

#[derive(Debug)]
struct DenseBackward;

impl<B: Backend + FusedBackend> Backward<B, 3> for DenseBackward {
    /// x, w
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, w) = ops.state;
        let (dx, dw, db) = B::dense_backward(dy, x, w);
        register::<B, _>(grads, ops.parents.map(|p| p.map(|n| n.id)), [dx, dw, db]);
    }
}

#[derive(Debug)]
struct ConvBackward;

impl<B: Backend + FusedBackend> Backward<B, 3> for ConvBackward {
    /// x, w, the output (for the ReLU's mask; x again without it), options, relu
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, ConvOptions<2>, bool);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, w, y, options, relu) = ops.state;
        let [px, pw, pb] = ops.parents;
        let (dx, dw, db) = B::conv2d_backward(dy, x, w, y, options, relu, px.is_some());
        register::<B, _>(grads, [px, pw, pb].map(|p| p.map(|n| n.id)), [dx, dw, db]);
    }
}

#[derive(Debug)]
struct MaxPoolBackward;

impl<B: Backend + FusedBackend> Backward<B, 1> for MaxPoolBackward {
    /// positions, h, w, kh, kw
    type State = (FloatTensor<B>, usize, usize, usize, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (at, h, w, kh, kw) = ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<B>(node.id, B::max_pool2d_backward(dy, at, h, w, kh, kw));
        }
    }
}

/// The element-wise operations whose backward needs one saved tensor: GELU (its input) and softmax (its output).
#[derive(Debug, Clone, Copy)]
enum SavedOneBackward {
    Gelu,
    Softmax,
}

impl<B: Backend + FusedBackend> Backward<B, 1> for SavedOneBackward {
    /// GELU's input or softmax's output
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let dx = match self {
                SavedOneBackward::Gelu => B::fused_gelu_backward(ops.state, dy),
                SavedOneBackward::Softmax => B::fused_softmax_backward(ops.state, dy),
            };
            grads.register::<B>(node.id, dx);
        }
    }
}

/// The autodiff output `y` of the element-wise operation `kind` on `x`, keeping `saved` for its backward when `x`
/// is tracked.
fn track_saved_one<B: Backend + FusedBackend, C: CheckpointStrategy>(
    kind: SavedOneBackward,
    x: FloatTensor<Autodiff<B, C>>,
    y: FloatTensor<B>,
    saved: FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    match kind.prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(saved, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[derive(Debug)]
struct GruBackward;

impl<B: Backend + FusedBackend> Backward<B, 4> for GruBackward {
    /// states, saved values, w_hh, h0, keep, reverse
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        bool,
    );

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let d_states = grads.consume::<B>(&ops.node);
        let (states, saved, w_hh, h0, keep, reverse) = ops.state;
        let (d_xp, d_w, d_b_hn, d_h0) = B::gru_backward(d_states, states, saved, w_hh, h0, keep, reverse);
        register::<B, _>(grads, ops.parents.map(|p| p.map(|n| n.id)), [d_xp, d_w, d_b_hn, d_h0]);
    }
}

impl<B: Backend + FusedBackend, C: CheckpointStrategy> FusedBackend for Autodiff<B, C> {
    fn lstm_forward(
        xp: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (states, saved) = B::lstm_forward(
            xp.primitive().clone(),
            w_hh.primitive().clone(),
            h0.primitive().clone(),
            c0.primitive().clone(),
            keep.primitive().clone(),
            reverse,
        );
        let tracked = match LstmBackward
            .prepare::<C>([xp.node(), w_hh.node(), h0.node(), c0.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                (
                    states.clone(),
                    saved.clone(),
                    w_hh.into_primitive(),
                    h0.into_primitive(),
                    c0.into_primitive(),
                    keep.into_primitive(),
                    reverse,
                ),
                states,
            ),
            OpsKind::UnTracked(prep) => prep.finish(states),
        };
        (tracked, Self::from_inner(saved))
    }

    fn lstm_backward(
        d_states: FloatTensor<Self>,
        states: FloatTensor<Self>,
        saved: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        // Only reached when someone differentiates the backward itself; its outputs are constants.
        let (a, b, c, d) = B::lstm_backward(
            d_states.into_primitive(),
            states.into_primitive(),
            saved.into_primitive(),
            w_hh.into_primitive(),
            h0.into_primitive(),
            c0.into_primitive(),
            keep.into_primitive(),
            reverse,
        );
        (
            Self::from_inner(a),
            Self::from_inner(b),
            Self::from_inner(c),
            Self::from_inner(d),
        )
    }

    fn dense_forward(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let y = B::dense_forward(x.primitive().clone(), w.primitive().clone(), b.primitive().clone());
        match DenseBackward
            .prepare::<C>([x.node(), w.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x.into_primitive(), w.into_primitive()), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn dense_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (dx, dw, db) = B::dense_backward(dy.into_primitive(), x.into_primitive(), w.into_primitive());
        (Self::from_inner(dx), Self::from_inner(dw), Self::from_inner(db))
    }

    fn conv2d_forward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
    ) -> FloatTensor<Self> {
        let y = B::conv2d_forward(
            x.primitive().clone(),
            w.primitive().clone(),
            b.primitive().clone(),
            options.clone(),
            relu,
        );
        match ConvBackward
            .prepare::<C>([x.node(), w.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let mask = if relu { y.clone() } else { x.clone() };
                prep.finish((x, w.into_primitive(), mask, options, relu), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn conv2d_backward(
        dy: FloatTensor<Self>,
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        y: FloatTensor<Self>,
        options: ConvOptions<2>,
        relu: bool,
        need_dx: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (dx, dw, db) = B::conv2d_backward(
            dy.into_primitive(),
            x.into_primitive(),
            w.into_primitive(),
            y.into_primitive(),
            options,
            relu,
            need_dx,
        );
        (Self::from_inner(dx), Self::from_inner(dw), Self::from_inner(db))
    }

    fn max_pool2d_forward(x: FloatTensor<Self>, kh: usize, kw: usize) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = burn::backend::TensorMetadata::shape(x.primitive());
        let (h, w) = (shape[2], shape[3]);
        let (y, at) = B::max_pool2d_forward(x.primitive().clone(), kh, kw);
        let tracked = match MaxPoolBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((at.clone(), h, w, kh, kw), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (tracked, Self::from_inner(at))
    }

    fn max_pool2d_backward(
        dy: FloatTensor<Self>,
        at: FloatTensor<Self>,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::max_pool2d_backward(
            dy.into_primitive(),
            at.into_primitive(),
            h,
            w,
            kh,
            kw,
        ))
    }

    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let y = B::fused_gelu(x.primitive().clone());
        let saved = x.primitive().clone();
        track_saved_one::<B, C>(SavedOneBackward::Gelu, x, y, saved)
    }

    fn fused_gelu_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::fused_gelu_backward(x.into_primitive(), dy.into_primitive()))
    }

    fn fused_adam(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: adam::AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // An optimizer update is not differentiated: the results are constants.
        let (p, m, v) = B::fused_adam(
            param.into_primitive(),
            grad.into_primitive(),
            m.into_primitive(),
            v.into_primitive(),
            step,
        );
        (Self::from_inner(p), Self::from_inner(m), Self::from_inner(v))
    }

    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let y = B::fused_softmax(x.primitive().clone());
        track_saved_one::<B, C>(SavedOneBackward::Softmax, x, y.clone(), y)
    }

    fn fused_softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::fused_softmax_backward(y.into_primitive(), dy.into_primitive()))
    }

    fn gru_forward(
        xp: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        b_hn: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (states, saved) = B::gru_forward(
            xp.primitive().clone(),
            w_hh.primitive().clone(),
            b_hn.primitive().clone(),
            h0.primitive().clone(),
            keep.primitive().clone(),
            reverse,
        );
        let tracked = match GruBackward
            .prepare::<C>([xp.node(), w_hh.node(), b_hn.node(), h0.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                (
                    states.clone(),
                    saved.clone(),
                    w_hh.into_primitive(),
                    h0.into_primitive(),
                    keep.into_primitive(),
                    reverse,
                ),
                states,
            ),
            OpsKind::UnTracked(prep) => prep.finish(states),
        };
        (tracked, Self::from_inner(saved))
    }

    fn gru_backward(
        d_states: FloatTensor<Self>,
        states: FloatTensor<Self>,
        saved: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        reverse: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let (a, b, c, d) = B::gru_backward(
            d_states.into_primitive(),
            states.into_primitive(),
            saved.into_primitive(),
            w_hh.into_primitive(),
            h0.into_primitive(),
            keep.into_primitive(),
            reverse,
        );
        (
            Self::from_inner(a),
            Self::from_inner(b),
            Self::from_inner(c),
            Self::from_inner(d),
        )
    }
}

/// Whether the fused operations run on `device`: the flex backend, with or without autodiff, unless
/// `GRAFT_FUSED=0` asks for the composed operations everywhere (to compare the two).
pub fn available(device: &Device) -> bool {
    static DISABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let disabled = *DISABLED.get_or_init(|| std::env::var("GRAFT_FUSED").is_ok_and(|v| v == "0"));
    !disabled && matches!(device.clone().inner().as_dispatch(), DispatchDevice::Flex(_))
}

/// Whether the fused operations take `x`: an f32 tensor on a device where they are [`available`]. (Float64, the
/// gradient checks' type, and other backends use the composed operations.)
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == burn::tensor::DType::F32 && available(&x.device())
}

/// A 2-D convolution (groups = 1) with graft's im2col + gemm forward and backward, followed by a ReLU when `relu`.
pub fn conv2d(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>, options: ConvOptions<2>, relu: bool) -> Tensor<4> {
    let y = <Dispatch as FusedBackend>::conv2d_forward(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
        options,
        relu,
    );
    Tensor::<4>::from_dispatch(y)
}

/// Max pooling of `[B, C, H, W]` over non-overlapping `kernel` windows (stride = kernel, no padding).
pub fn max_pool2d(x: Tensor<4>, kernel: [usize; 2]) -> Tensor<4> {
    let (y, _at) = <Dispatch as FusedBackend>::max_pool2d_forward(x.into_dispatch(), kernel[0], kernel[1]);
    Tensor::<4>::from_dispatch(y)
}

/// GELU (erf form) on all threads; the caller checks [`available`] and f32.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::<D>::from_dispatch(<Dispatch as FusedBackend>::fused_gelu(x.into_dispatch()))
}

/// One Adam/AdamW update of `param` with `grad` and the moments `m`, `v`: the new parameter and moments. The caller
/// checks [`available`] and f32.
pub fn adam<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    step: adam::AdamStep,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let (p, m, v) = <Dispatch as FusedBackend>::fused_adam(
        param.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        step,
    );
    (
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// Softmax over the last axis on all threads; the caller checks [`available`] and f32.
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::<D>::from_dispatch(<Dispatch as FusedBackend>::fused_softmax(x.into_dispatch()))
}

/// `x` `[N, in]` · `w` `[out, in]`ᵀ + `b` `[out]` → `[N, out]`, with the weight gradient in `w`'s own layout.
pub fn dense(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>) -> Tensor<2> {
    let y = <Dispatch as FusedBackend>::dense_forward(x.into_dispatch(), w.into_dispatch(), b.into_dispatch());
    Tensor::<2>::from_dispatch(y)
}

/// The LSTM recurrence over `xp` `[B, T, 4H]` (projected inputs, biases included) with recurrent weight `w_hh`
/// `[4H, H]`, initial states `[B, H]` and `keep` `[B, T]`: the states `[B, T, 2H]` (h, then c) after every step.
pub fn lstm_states(
    xp: Tensor<3>,
    w_hh: Tensor<2>,
    h0: Tensor<2>,
    c0: Tensor<2>,
    keep: Tensor<2>,
    reverse: bool,
) -> Tensor<3> {
    let (states, _saved) = <Dispatch as FusedBackend>::lstm_forward(
        xp.into_dispatch(),
        w_hh.into_dispatch(),
        h0.into_dispatch(),
        c0.into_dispatch(),
        keep.into_dispatch(),
        reverse,
    );
    Tensor::<3>::from_dispatch(states)
}

/// The GRU recurrence over `xp` `[B, T, 3H]` (projected inputs with `b_ih`, `b_hr` and `b_hz` included) with
/// recurrent weight `w_hh` `[3H, H]`, the candidate's recurrent bias `b_hn` `[H]`, initial state `[B, H]` and
/// `keep` `[B, T]`: the state `[B, T, H]` after every step.
pub fn gru_states(
    xp: Tensor<3>,
    w_hh: Tensor<2>,
    b_hn: Tensor<1>,
    h0: Tensor<2>,
    keep: Tensor<2>,
    reverse: bool,
) -> Tensor<3> {
    let (states, _saved) = <Dispatch as FusedBackend>::gru_forward(
        xp.into_dispatch(),
        w_hh.into_dispatch(),
        b_hn.into_dispatch(),
        h0.into_dispatch(),
        keep.into_dispatch(),
        reverse,
    );
    Tensor::<3>::from_dispatch(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_exponential_is_accurate() {
        let mut worst: f64 = 0.0;
        for k in -8000..=8000 {
            let x = k as f32 / 100.0;
            let rel = ((exp(x) as f64) - (x as f64).exp()).abs() / (x as f64).exp();
            worst = worst.max(rel);
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert!((tanh(0.5) - 0.5f32.tanh()).abs() < 1e-6 && (sigmoid(-3.0) - 0.047_425_874).abs() < 1e-6);
        // Far outside the f32 range the argument is clamped: tiny or huge, never garbage.
        assert!(exp(-200.0) > 0.0 && exp(-200.0) < 1e-37);
        assert!(exp(200.0).is_finite() && exp(200.0) > 1e38);
        assert!(sigmoid(-200.0) < 1e-37 && sigmoid(200.0) == 1.0 && tanh(-50.0) == -1.0 && tanh(50.0) == 1.0);
    }
}
