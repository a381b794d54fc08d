//! A fused LSTM layer pass for the CPU (`flex`) backend: the whole sequence in one operation with a handwritten
//! backward (backpropagation through time), instead of a dozen small autodiff operations per timestep.
//!
//! The input projection `x·W_ihᵀ + b_ih + b_hh` of every step is one matmul outside (ordinary autodiff); the fused
//! operation runs the recurrence: per step one `[B, H]×[H, 4H]` matmul and one pass over the gates that stores
//! what the backward needs (i, f, g, o and tanh c). The backward walks the steps in reverse, computing the gate
//! gradients and `dh·W_hh` per step, then the weight gradient as a single `[4H, T·B]×[T·B, H]` matmul. Padded
//! steps (`keep` = 0) leave the state unchanged, exactly as the composed layer does.
//!
//! Other backends (and other float types) use the composed layer in `recurrent.rs`; both are checked against the
//! same PyTorch fixtures.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::TensorData;

/// The sizes of one fused run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dims {
    pub batch: usize,
    pub steps: usize,
    pub hidden: usize,
}

/// Gate values saved per step: i, f, g, o and tanh(c).
const SAVED: usize = 5;

/// `e^x` to about 3e-7 relative error, in plain arithmetic so that the gate loops vectorize (a call into libm per
/// element was a fifth of the step). Cody–Waite reduction: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 in two parts so
/// that n·ln2 is exact), e^r by its degree-6 Taylor polynomial, 2^n built in the exponent bits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits
    const LN2_HI: f32 = 0.693_145_751_953_125;
    const LN2_LO: f32 = 1.428_606_765_330_187e-6;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let power = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    p * f32::from_bits((power.wrapping_add(127) as u32) << 23)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    2.0 / (1.0 + exp(-2.0 * x)) - 1.0
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, each matrix given by its row and column strides.
#[allow(clippy::too_many_arguments)]
fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (dst_rs, dst_cs): (isize, isize),
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (isize, isize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (isize, isize),
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
            gemm::Parallelism::None,
        );
    }
}

fn time_of(steps: usize, step: usize, reverse: bool) -> usize {
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

/// Runs `work` on every batch range in parallel and concatenates the per-range outputs (each batch-major).
fn per_batch_range<R: Send>(batch: usize, work: impl Fn(std::ops::Range<usize>) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    batch_ranges(batch).into_par_iter().map(work).collect()
}

/// The recurrence over a whole sequence.
///
/// `xp` `[B, T, 4H]`: the input projection plus both biases; `w_hh` `[4H, H]`; `h0`, `c0` `[B, H]`; `keep` `[B, T]`
/// (1 for a real step, 0 for padding). Returns the states `[B, T, 2H]` (h then c after each timestep) and the
/// saved gates `[B, T, 5H]`.
pub fn forward(
    d: Dims,
    xp: &[f32],
    w_hh: &[f32],
    h0: &[f32],
    c0: &[f32],
    keep: &[f32],
    reverse: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (t, h) = (d.steps, d.hidden);
    let parts = per_batch_range(d.batch, |r| {
        let rows = r.len();
        forward_rows(
            Dims { batch: rows, ..d },
            &xp[r.start * t * 4 * h..r.end * t * 4 * h],
            w_hh,
            &h0[r.start * h..r.end * h],
            &c0[r.start * h..r.end * h],
            &keep[r.start * t..r.end * t],
            reverse,
        )
    });
    let (mut states, mut saved) = (
        Vec::with_capacity(d.batch * t * 2 * h),
        Vec::with_capacity(d.batch * t * SAVED * h),
    );
    for (st, sv) in parts {
        states.extend_from_slice(&st);
        saved.extend_from_slice(&sv);
    }
    (states, saved)
}

fn forward_rows(
    d: Dims,
    xp: &[f32],
    w_hh: &[f32],
    h0: &[f32],
    c0: &[f32],
    keep: &[f32],
    reverse: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (b, t, h) = (d.batch, d.steps, d.hidden);
    let g4 = 4 * h;
    let mut states = vec![0f32; b * t * 2 * h];
    let mut saved = vec![0f32; b * t * SAVED * h];
    let (mut hp, mut cp) = (h0.to_vec(), c0.to_vec());
    let mut a = vec![0f32; b * g4];
    for s in 0..t {
        let time = time_of(t, s, reverse);
        // a = h_prev · W_hhᵀ
        matmul(
            (b, g4, h),
            &mut a,
            (g4 as isize, 1),
            false,
            &hp,
            (h as isize, 1),
            w_hh,
            (1, h as isize),
        );
        for bi in 0..b {
            let row = bi * t + time;
            let k = keep[row];
            let (arow, xrow) = (&mut a[bi * g4..(bi + 1) * g4], &xp[row * g4..(row + 1) * g4]);
            for (av, xv) in arow.iter_mut().zip(xrow) {
                *av += xv;
            }
            let out = &mut saved[row * SAVED * h..(row + 1) * SAVED * h];
            let (hrow, crow) = (&mut hp[bi * h..(bi + 1) * h], &mut cp[bi * h..(bi + 1) * h]);
            let st = &mut states[row * 2 * h..(row + 1) * 2 * h];
            gates_forward(arow, crow, hrow, out, st, k, h);
        }
    }
    (states, saved)
}

/// One row's gates from its pre-activations `a` (i, f, g, o blocks): updates the states in place (blended with
/// `keep`), saves the gate values and writes the new states.
#[inline(never)]
fn gates_forward(a: &[f32], c: &mut [f32], hs: &mut [f32], out: &mut [f32], st: &mut [f32], keep: f32, h: usize) {
    let (ai, rest) = a.split_at(h);
    let (af, rest) = rest.split_at(h);
    let (ag, ao) = rest.split_at(h);
    let (oi, rest) = out.split_at_mut(h);
    let (of, rest) = rest.split_at_mut(h);
    let (og, rest) = rest.split_at_mut(h);
    let (oo, otc) = rest.split_at_mut(h);
    for j in 0..h {
        let i = sigmoid(ai[j]);
        let f = sigmoid(af[j]);
        let g = tanh(ag[j]);
        let o = sigmoid(ao[j]);
        let c_new = f * c[j] + i * g;
        let tc = tanh(c_new);
        oi[j] = i;
        of[j] = f;
        og[j] = g;
        oo[j] = o;
        otc[j] = tc;
        hs[j] += keep * (o * tc - hs[j]);
        c[j] += keep * (c_new - c[j]);
    }
    st[..h].copy_from_slice(hs);
    st[h..].copy_from_slice(c);
}

/// Gradients of the fused pass's inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    pub xp: Vec<f32>,
    pub w_hh: Vec<f32>,
    pub h0: Vec<f32>,
    pub c0: Vec<f32>,
}

/// Backpropagation through time for [`forward`], given the gradient of its states `[B, T, 2H]`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    d: Dims,
    d_states: &[f32],
    states: &[f32],
    saved: &[f32],
    w_hh: &[f32],
    h0: &[f32],
    c0: &[f32],
    keep: &[f32],
    reverse: bool,
) -> Grads {
    let (t, h) = (d.steps, d.hidden);
    let parts = per_batch_range(d.batch, |r| {
        let (bt, bh) = (r.start * t..r.end * t, r.start * h..r.end * h);
        backward_rows(
            Dims { batch: r.len(), ..d },
            &d_states[bt.start * 2 * h..bt.end * 2 * h],
            &states[bt.start * 2 * h..bt.end * 2 * h],
            &saved[bt.start * SAVED * h..bt.end * SAVED * h],
            w_hh,
            &h0[bh.clone()],
            &c0[bh],
            &keep[bt],
            reverse,
        )
    });
    let mut total = Grads {
        xp: Vec::with_capacity(d.batch * t * 4 * h),
        w_hh: vec![0f32; 4 * h * h],
        h0: Vec::with_capacity(d.batch * h),
        c0: Vec::with_capacity(d.batch * h),
    };
    for g in parts {
        total.xp.extend_from_slice(&g.xp);
        total.h0.extend_from_slice(&g.h0);
        total.c0.extend_from_slice(&g.c0);
        for (acc, v) in total.w_hh.iter_mut().zip(&g.w_hh) {
            *acc += v;
        }
    }
    total
}

#[allow(clippy::too_many_arguments)]
fn backward_rows(
    d: Dims,
    d_states: &[f32],
    states: &[f32],
    saved: &[f32],
    w_hh: &[f32],
    h0: &[f32],
    c0: &[f32],
    keep: &[f32],
    reverse: bool,
) -> Grads {
    let (b, t, h) = (d.batch, d.steps, d.hidden);
    let g4 = 4 * h;
    // The gradient of the pre-activations is the gradient of xp.
    let mut d_gates = vec![0f32; b * t * g4];
    let mut h_prev_all = vec![0f32; b * t * h];
    let (mut dh, mut dc) = (vec![0f32; b * h], vec![0f32; b * h]);
    for s in (0..t).rev() {
        let time = time_of(t, s, reverse);
        let prev = (s > 0).then(|| time_of(t, s - 1, reverse));
        for bi in 0..b {
            let row = bi * t + time;
            let (h_prev, c_prev): (&[f32], &[f32]) = match prev {
                None => (&h0[bi * h..(bi + 1) * h], &c0[bi * h..(bi + 1) * h]),
                Some(p) => {
                    let st = &states[(bi * t + p) * 2 * h..(bi * t + p + 1) * 2 * h];
                    (&st[..h], &st[h..])
                }
            };
            h_prev_all[row * h..(row + 1) * h].copy_from_slice(h_prev);
            gates_backward(
                &saved[row * SAVED * h..(row + 1) * SAVED * h],
                &d_states[row * 2 * h..(row + 1) * 2 * h],
                c_prev,
                keep[row],
                &mut dh[bi * h..(bi + 1) * h],
                &mut dc[bi * h..(bi + 1) * h],
                &mut d_gates[row * g4..(row + 1) * g4],
                h,
            );
        }
        // dh_prev += d_gates(step) · W_hh, the step's rows being T·4H apart.
        matmul(
            (b, h, g4),
            &mut dh,
            (h as isize, 1),
            true,
            &d_gates[time * g4..],
            ((t * g4) as isize, 1),
            w_hh,
            (h as isize, 1),
        );
    }
    // dW_hh = Σ d_gatesᵀ · h_prev over all B·T rows, as one matmul.
    let mut d_w = vec![0f32; g4 * h];
    matmul(
        (g4, h, b * t),
        &mut d_w,
        (h as isize, 1),
        false,
        &d_gates,
        (1, g4 as isize),
        &h_prev_all,
        (h as isize, 1),
    );
    Grads {
        xp: d_gates,
        w_hh: d_w,
        h0: dh,
        c0: dc,
    }
}

/// One row's step backward: from the gradient of its states (`ds`: h then c, plus the carried `dh`, `dc`), the
/// gradient of its gate pre-activations (`dg`), and the carried gradients for the previous step (the recurrent
/// matmul's part of `dh` is added by the caller).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn gates_backward(
    saved: &[f32],
    ds: &[f32],
    c_prev: &[f32],
    keep: f32,
    dh: &mut [f32],
    dc: &mut [f32],
    dg: &mut [f32],
    h: usize,
) {
    let (si, rest) = saved.split_at(h);
    let (sf, rest) = rest.split_at(h);
    let (sg, rest) = rest.split_at(h);
    let (so, stc) = rest.split_at(h);
    let (dsh, dsc) = ds.split_at(h);
    let (di, rest) = dg.split_at_mut(h);
    let (df, rest) = rest.split_at_mut(h);
    let (dgg, do_) = rest.split_at_mut(h);
    for j in 0..h {
        let (i, f, g, o, tc) = (si[j], sf[j], sg[j], so[j], stc[j]);
        let d_state_h = dsh[j] + dh[j];
        let d_state_c = dsc[j] + dc[j];
        let dh_new = keep * d_state_h;
        let dc_new = keep * d_state_c + dh_new * o * (1.0 - tc * tc);
        di[j] = dc_new * g * i * (1.0 - i);
        df[j] = dc_new * c_prev[j] * f * (1.0 - f);
        dgg[j] = dc_new * i * (1.0 - g * g);
        do_[j] = dh_new * tc * o * (1.0 - o);
        dc[j] = dc_new * f + (1.0 - keep) * d_state_c;
        dh[j] = (1.0 - keep) * d_state_h;
    }
}

/// The fused pass as backend operations: the forward returns the states and the saved gates, the backward the
/// gradients of `(xp, w_hh, h0, c0)`.
#[backend_extension(Flex, Autodiff)]
pub trait FusedLstmBackend: Backend {
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
}

fn f32s(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("an f32 tensor").to_vec()),
    }
}

fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn dims_of(xp: &FlexTensor) -> Dims {
    let shape = xp.layout().shape();
    Dims {
        batch: shape[0],
        steps: shape[1],
        hidden: shape[2] / 4,
    }
}

impl FusedLstmBackend for Flex {
    fn lstm_forward(
        xp: FlexTensor,
        w_hh: FlexTensor,
        h0: FlexTensor,
        c0: FlexTensor,
        keep: FlexTensor,
        reverse: bool,
    ) -> (FlexTensor, FlexTensor) {
        let d = dims_of(&xp);
        let (states, saved) = forward(
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
            flex(saved, vec![d.batch, d.steps, SAVED * d.hidden]),
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
        let g = backward(
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
}

#[derive(Debug)]
struct LstmBackward;

impl<B: Backend + FusedLstmBackend> Backward<B, 4> for LstmBackward {
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
        for (parent, grad) in ops.parents.into_iter().zip([d_xp, d_w, d_h0, d_c0]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Backend + FusedLstmBackend, C: CheckpointStrategy> FusedLstmBackend for Autodiff<B, C> {
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
}

/// Whether the fused pass can run on `device`: the flex backend, with or without autodiff.
pub fn available(device: &Device) -> bool {
    matches!(device.clone().inner().as_dispatch(), DispatchDevice::Flex(_))
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
    let (states, _saved) = <Dispatch as FusedLstmBackend>::lstm_forward(
        xp.into_dispatch(),
        w_hh.into_dispatch(),
        h0.into_dispatch(),
        c0.into_dispatch(),
        keep.into_dispatch(),
        reverse,
    );
    Tensor::<3>::from_dispatch(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences of a scalar loss (Σ states · weights) against the handwritten backward, in f64 terms
    /// on a tiny case with padding and both directions.
    #[test]
    fn backward_matches_finite_differences() {
        let d = Dims {
            batch: 2,
            steps: 4,
            hidden: 3,
        };
        let n = |len: usize, seed: u32| -> Vec<f32> {
            (0..len)
                .map(|i| (((i as u32 * 2654435761u32) ^ seed) % 1000) as f32 / 1000.0 - 0.5)
                .collect()
        };
        let xp = n(2 * 4 * 12, 1);
        let w = n(12 * 3, 2);
        let h0 = n(6, 3);
        let c0 = n(6, 4);
        let weights = n(2 * 4 * 6, 5);
        let keep = vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0];
        for reverse in [false, true] {
            let loss = |xp: &[f32], w: &[f32], h0: &[f32], c0: &[f32]| -> f64 {
                let (s, _) = forward(d, xp, w, h0, c0, &keep, reverse);
                s.iter().zip(&weights).map(|(a, b)| (*a as f64) * (*b as f64)).sum()
            };
            let (states, saved) = forward(d, &xp, &w, &h0, &c0, &keep, reverse);
            let g = backward(d, &weights, &states, &saved, &w, &h0, &c0, &keep, reverse);
            let check = |name: &str, values: &[f32], grad: &[f32], which: usize| {
                for idx in 0..values.len() {
                    let eps = 1e-3f32;
                    let mut plus = values.to_vec();
                    let mut minus = values.to_vec();
                    plus[idx] += eps;
                    minus[idx] -= eps;
                    let args = |v: &[f32]| -> f64 {
                        match which {
                            0 => loss(v, &w, &h0, &c0),
                            1 => loss(&xp, v, &h0, &c0),
                            2 => loss(&xp, &w, v, &c0),
                            _ => loss(&xp, &w, &h0, v),
                        }
                    };
                    let numeric = (args(&plus) - args(&minus)) / (2.0 * eps as f64);
                    assert!(
                        (numeric - grad[idx] as f64).abs() < 2e-3,
                        "{name}[{idx}] (reverse {reverse}): numeric {numeric}, analytic {}",
                        grad[idx]
                    );
                }
            };
            check("xp", &xp, &g.xp, 0);
            check("w_hh", &w, &g.w_hh, 1);
            check("h0", &h0, &g.h0, 2);
            check("c0", &c0, &g.c0, 3);
        }
    }

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

    #[test]
    fn padded_steps_keep_the_state() {
        let d = Dims {
            batch: 1,
            steps: 3,
            hidden: 2,
        };
        let xp: Vec<f32> = (0..24).map(|i| i as f32 / 24.0 - 0.4).collect();
        let w: Vec<f32> = (0..16).map(|i| (i as f32 - 8.0) / 16.0).collect();
        let zeros = vec![0.0; 2];
        let (states, _) = forward(d, &xp, &w, &zeros, &zeros, &[1.0, 0.0, 0.0], false);
        assert_eq!(states[0..4], states[4..8]);
        assert_eq!(states[0..4], states[8..12]);
    }
}
