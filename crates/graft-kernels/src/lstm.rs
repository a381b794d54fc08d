//! The LSTM layer's fused pass (one direction), on plain f32 buffers (see [`super`]).
//!
//! Per step: the gate pre-activations `x_t·W_ihᵀ + b + h_prev·W_hhᵀ` (on AVX-512 in one pass, `lstm_step.rs`; else
//! the whole input projection first and one gemm per step) and one pass over the gates that stores what the backward
//! needs (i, f, g, o and tanh c). The backward walks the steps in reverse, computing the gate gradients and
//! `dh·W_hh` per step, then the weight gradients as whole-sequence matmuls (`[4H, B·T]×[B·T, H]` and, for the input
//! side, the dense layer's backward).

use std::mem::MaybeUninit;

use crate::dense;
use crate::lstm_step;
use crate::recurrence::{Dims, add_step_gradient, per_batch_range, step_product, time_of, weight_gradient};
use crate::simd::{sigmoid, tanh};
use crate::transpose::transposed;
use crate::unfilled::{filled, put, unfilled, written};

/// Gate values saved per step: i, f, g, o and tanh(c).
pub const SAVED: usize = 5;

/// The input side of the layer: `x` `[B, T, F]`, `w_ih` `[4H, F]` and `bias` `[4H]` (PyTorch's two biases summed).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub x: &'a [f32],
    pub features: usize,
    pub w_ih: &'a [f32],
    pub bias: &'a [f32],
}

/// What each step adds to `h_prev · W_hhᵀ`, and the weights the step reads.
#[derive(Clone, Copy)]
enum Step<'a> {
    /// The AVX-512 step: `x_t · W_ihᵀ + b` computed with the recurrent product, from the panels of both weights.
    Fused { input: Input<'a>, panels: &'a [f32] },
    /// The gemm step: the projection of the whole sequence, `[B, T, 4H]` (the range's rows), and `W_hhᵀ`.
    Projected { xp: &'a [f32], w_t: &'a [f32] },
}

/// The recurrence over a whole sequence.
///
/// `w_hh` `[4H, H]`; `h0`, `c0` `[B, H]`; `keep` `[B, T]` (1 for a real step, 0 for padding). Returns the states
/// `[B, T, 2H]` (h then c after each timestep) and the saved gates `[B, T, 5H]`.
pub fn forward(
    d: Dims,
    input: Input,
    w_hh: &[f32],
    h0: &[f32],
    c0: &[f32],
    keep: &[f32],
    reverse: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (t, h, f) = (d.steps, d.hidden, input.features);
    let mut states = unfilled(d.batch * t * 2 * h);
    let mut saved = unfilled(d.batch * t * SAVED * h);
    let fused = lstm_step::applies(h);
    // The weights in the layout the step reads: gate panels of both for the AVX-512 step; else the projection of the
    // whole sequence (on all threads) and W_hh transposed for gemm.
    let (panels, xp, w_t) = if fused {
        (lstm_step::gate_panels(input.w_ih, w_hh, f, h), vec![], vec![])
    } else {
        let xp = dense::forward(d.batch * t, input.x, input.w_ih, input.bias);
        (vec![], xp, transposed(w_hh, 4 * h, h))
    };
    per_batch_range(
        d.batch,
        [&mut states, &mut saved],
        [t * 2 * h, t * SAVED * h],
        |r, [states, saved]| {
            let step = if fused {
                let x = &input.x[r.start * t * f..r.end * t * f];
                Step::Fused {
                    input: Input { x, ..input },
                    panels: &panels,
                }
            } else {
                Step::Projected {
                    xp: &xp[r.start * t * 4 * h..r.end * t * 4 * h],
                    w_t: &w_t,
                }
            };
            forward_rows(
                Dims { batch: r.len(), ..d },
                step,
                &h0[r.start * h..r.end * h],
                &c0[r.start * h..r.end * h],
                &keep[r.start * t..r.end * t],
                reverse,
                states,
                saved,
            )
        },
    );
    // SAFETY: `forward_rows` writes every row of both at every step.
    unsafe { (filled(states), filled(saved)) }
}

/// One thread's rows: writes every element of their `states` and `saved`.
#[allow(clippy::too_many_arguments)]
fn forward_rows(
    d: Dims,
    step: Step,
    h0: &[f32],
    c0: &[f32],
    keep: &[f32],
    reverse: bool,
    states: &mut [MaybeUninit<f32>],
    saved: &mut [MaybeUninit<f32>],
) {
    let (b, t, h) = (d.batch, d.steps, d.hidden);
    let g4 = 4 * h;
    let (mut hp, mut cp) = (h0.to_vec(), c0.to_vec());
    let mut a = vec![0f32; b * g4];
    let mut gate_values = vec![0f32; SAVED * h];
    for s in 0..t {
        let time = time_of(t, s, reverse);
        match step {
            Step::Fused { input, panels } => {
                let f = input.features;
                let x_t = &input.x[time * f..];
                lstm_step::gate_sums(x_t, t * f, &hp, panels, input.bias, &mut a, b, (f, h));
            }
            Step::Projected { xp, w_t } => {
                // a = h_prev · W_hhᵀ + xp_t
                step_product(&mut a, &hp, w_t, b, (g4, h));
                for bi in 0..b {
                    let row = bi * t + time;
                    let (arow, xrow) = (&mut a[bi * g4..(bi + 1) * g4], &xp[row * g4..(row + 1) * g4]);
                    for (av, xv) in arow.iter_mut().zip(xrow) {
                        *av += xv;
                    }
                }
            }
        }
        for bi in 0..b {
            let row = bi * t + time;
            let (hrow, crow) = (&mut hp[bi * h..(bi + 1) * h], &mut cp[bi * h..(bi + 1) * h]);
            gates_forward(&a[bi * g4..(bi + 1) * g4], crow, hrow, &mut gate_values, keep[row], h);
            put(&mut saved[row * SAVED * h..(row + 1) * SAVED * h], &gate_values);
            let st = &mut states[row * 2 * h..(row + 1) * 2 * h];
            put(&mut st[..h], hrow);
            put(&mut st[h..], crow);
        }
    }
}

simd_dispatch! {
    /// One row's gates from its pre-activations `a` (i, f, g, o blocks): updates the states in place (blended with
    /// `keep`) and writes the gate values to save.
    fn gates_forward(a: &[f32], c: &mut [f32], hs: &mut [f32], out: &mut [f32], keep: f32, h: usize)
        => gates_forward_body
}

#[inline(always)]
fn gates_forward_body(a: &[f32], c: &mut [f32], hs: &mut [f32], out: &mut [f32], keep: f32, h: usize) {
    let (ai, rest) = a.split_at(h);
    let (af, rest) = rest.split_at(h);
    let (ag, ao) = rest.split_at(h);
    let (oi, rest) = out.split_at_mut(h);
    let (of, rest) = rest.split_at_mut(h);
    let (og, rest) = rest.split_at_mut(h);
    let (oo, otc) = rest.split_at_mut(h);
    // Every slice cut to exactly h so that the loop runs without bounds checks and vectorizes.
    let (ao, otc, c, hs) = (&ao[..h], &mut otc[..h], &mut c[..h], &mut hs[..h]);
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
}

/// Gradients of the fused pass's inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    pub x: Vec<f32>,
    pub w_ih: Vec<f32>,
    pub bias: Vec<f32>,
    pub w_hh: Vec<f32>,
    pub h0: Vec<f32>,
    pub c0: Vec<f32>,
}

/// The gradient the backward starts from.
#[derive(Debug, Clone, Copy)]
pub enum DStates<'a> {
    /// Of the states after every step, `[B, T, 2H]`.
    Every(&'a [f32]),
    /// Of the final states alone, `[B, 2H]` (h then c after the direction's last step): what a classifier on the
    /// last state passes, without a `[B, T, 2H]` tensor of zeros around it.
    Final(&'a [f32]),
}

/// Backpropagation through time for [`forward`], given the gradient of its states.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    d: Dims,
    d_states: DStates,
    states: &[f32],
    saved: &[f32],
    input: Input,
    w_hh: &[f32],
    h0: &[f32],
    c0: &[f32],
    keep: &[f32],
    reverse: bool,
) -> Grads {
    let (t, h) = (d.steps, d.hidden);
    let mut d_xp = unfilled(d.batch * t * 4 * h);
    let parts = per_batch_range(d.batch, [&mut d_xp], [t * 4 * h], |r, [d_xp]| {
        let (bt, bh) = (r.start * t..r.end * t, r.start * h..r.end * h);
        let d_states = match d_states {
            DStates::Every(all) => DStates::Every(&all[bt.start * 2 * h..bt.end * 2 * h]),
            DStates::Final(last) => DStates::Final(&last[r.start * 2 * h..r.end * 2 * h]),
        };
        backward_rows(
            Dims { batch: r.len(), ..d },
            d_states,
            &states[bt.start * 2 * h..bt.end * 2 * h],
            &saved[bt.start * SAVED * h..bt.end * SAVED * h],
            w_hh,
            (&h0[bh.clone()], &c0[bh]),
            &keep[bt],
            reverse,
            d_xp,
        )
    });
    // SAFETY: `backward_rows` writes every row of its part at its step.
    let d_xp = unsafe { filled(d_xp) };
    // The input side: the gate gradients are the projection's output gradients.
    let (x, w_ih, bias) = dense::backward(d.batch * t, &d_xp, input.x, input.w_ih, 4 * h, true);
    let x = x.expect("dense::backward: dx asked for");
    let mut total = Grads {
        x,
        w_ih,
        bias,
        w_hh: vec![0f32; 4 * h * h],
        h0: Vec::with_capacity(d.batch * h),
        c0: Vec::with_capacity(d.batch * h),
    };
    for part in parts {
        for (acc, v) in total.w_hh.iter_mut().zip(&part.w_hh) {
            *acc += v;
        }
        total.h0.extend_from_slice(&part.h0);
        total.c0.extend_from_slice(&part.c0);
    }
    total
}

/// One thread's part of the recurrent gradients.
struct RowGrads {
    w_hh: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
}

/// The rows' backward: writes every element of the gradient of their gate pre-activations and returns the gradients
/// of their `h0` and `c0` and their part of the `W_hh` gradient.
#[allow(clippy::too_many_arguments)]
fn backward_rows(
    d: Dims,
    d_states: DStates,
    states: &[f32],
    saved: &[f32],
    w_hh: &[f32],
    (h0, c0): (&[f32], &[f32]),
    keep: &[f32],
    reverse: bool,
    d_gates: &mut [MaybeUninit<f32>],
) -> RowGrads {
    let (b, t, h) = (d.batch, d.steps, d.hidden);
    let g4 = 4 * h;
    let (mut dh, mut dc) = (vec![0f32; b * h], vec![0f32; b * h]);
    // This step's gate gradients, rows 4H apart, before they go to their places in `d_gates`.
    let mut d_step = vec![0f32; b * g4];
    let mut h_prev_all = unfilled(b * t * h);
    let no_gradient = vec![0f32; 2 * h];
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
            put(&mut h_prev_all[row * h..(row + 1) * h], h_prev);
            let d_row = &mut d_step[bi * g4..(bi + 1) * g4];
            let d_state = match d_states {
                DStates::Every(all) => &all[row * 2 * h..(row + 1) * 2 * h],
                DStates::Final(last) if s == t - 1 => &last[bi * 2 * h..(bi + 1) * 2 * h],
                DStates::Final(_) => &no_gradient,
            };
            gates_backward(
                &saved[row * SAVED * h..(row + 1) * SAVED * h],
                d_state,
                c_prev,
                keep[row],
                &mut dh[bi * h..(bi + 1) * h],
                &mut dc[bi * h..(bi + 1) * h],
                d_row,
                h,
            );
            put(&mut d_gates[row * g4..(row + 1) * g4], d_row);
        }
        // dh_prev += d_gates(step) · W_hh (gemm runs this one at a core's peak; a register-tile kernel like the
        // forward's was 0.90 against gemm's 0.88 ms per 100 steps of 16 rows).
        add_step_gradient(&mut dh, &d_step, g4, w_hh, b, (g4, h));
    }
    // SAFETY: every row of both was written above, at its step.
    let (d_gates, h_prev_all) = unsafe { (written(d_gates), filled(h_prev_all)) };
    let d_w = weight_gradient(d_gates, &h_prev_all, b * t, (g4, h));
    RowGrads {
        w_hh: d_w,
        h0: dh,
        c0: dc,
    }
}

simd_dispatch! {
    /// One row's step backward: from the gradient of its states (`ds`: h then c, plus the carried `dh`, `dc`), the
    /// gradient of its gate pre-activations (`dg`), and the carried gradients for the previous step (the recurrent
    /// matmul's part of `dh` is added by the caller).
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
    ) => gates_backward_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gates_backward_body(
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
    // Every slice cut to exactly h so that the loop runs without bounds checks and vectorizes.
    let (stc, dsc, do_, c_prev, dh, dc) = (
        &stc[..h],
        &dsc[..h],
        &mut do_[..h],
        &c_prev[..h],
        &mut dh[..h],
        &mut dc[..h],
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2654435761u32) ^ seed) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    }

    /// Central differences of a scalar loss (Σ states · weights) against the handwritten backward, in f64 terms, for
    /// every input of the layer, on tiny cases with padding and both directions: hidden 3 (the gemm step) and 16
    /// (the AVX-512 step of `lstm_step.rs`, where the CPU has it).
    #[test]
    fn backward_matches_finite_differences() {
        for (hidden, features) in [(3, 5), (16, 3)] {
            finite_differences(
                Dims {
                    batch: 2,
                    steps: 4,
                    hidden,
                },
                features,
            );
        }
    }

    fn finite_differences(d: Dims, f: usize) {
        let (b, t, h) = (d.batch, d.steps, d.hidden);
        // x, w_ih, bias, w_hh, h0, c0
        let inputs = [
            values(b * t * f, 1),
            values(4 * h * f, 6),
            values(4 * h, 7),
            values(4 * h * h, 2),
            values(b * h, 3),
            values(b * h, 4),
        ];
        let weights = values(b * t * 2 * h, 5);
        let keep = vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0];
        fn input(v: &[Vec<f32>; 6], features: usize) -> Input<'_> {
            Input {
                x: &v[0],
                features,
                w_ih: &v[1],
                bias: &v[2],
            }
        }
        for reverse in [false, true] {
            let loss = |v: &[Vec<f32>; 6]| -> f64 {
                let (s, _) = forward(d, input(v, f), &v[3], &v[4], &v[5], &keep, reverse);
                s.iter().zip(&weights).map(|(a, b)| (*a as f64) * (*b as f64)).sum()
            };
            let (states, saved) = forward(d, input(&inputs, f), &inputs[3], &inputs[4], &inputs[5], &keep, reverse);
            let g = backward(
                d,
                DStates::Every(&weights),
                &states,
                &saved,
                input(&inputs, f),
                &inputs[3],
                &inputs[4],
                &inputs[5],
                &keep,
                reverse,
            );
            let grads = [&g.x, &g.w_ih, &g.bias, &g.w_hh, &g.h0, &g.c0];
            let names = ["x", "w_ih", "bias", "w_hh", "h0", "c0"];
            for which in 0..6 {
                assert_eq!(grads[which].len(), inputs[which].len(), "{}: length", names[which]);
                for idx in 0..inputs[which].len() {
                    let eps = 1e-3f32;
                    let (mut plus, mut minus) = (inputs.clone(), inputs.clone());
                    plus[which][idx] += eps;
                    minus[which][idx] -= eps;
                    let numeric = (loss(&plus) - loss(&minus)) / (2.0 * eps as f64);
                    let analytic = grads[which][idx] as f64;
                    assert!(
                        (numeric - analytic).abs() < 2e-3,
                        "{}[{idx}] (hidden {h}, reverse {reverse}): numeric {numeric}, analytic {analytic}",
                        names[which]
                    );
                }
            }
        }
    }

    /// The final-state gradient alone gives what the same gradient placed in a `[B, T, 2H]` tensor of zeros gives,
    /// in both directions, on both step kernels.
    #[test]
    fn a_final_state_gradient_matches_the_padded_full_one() {
        for (h, f) in [(3, 5), (16, 3)] {
            let d = Dims {
                batch: 3,
                steps: 4,
                hidden: h,
            };
            let (b, t) = (d.batch, d.steps);
            let (x, w_ih, bias, w_hh) = (
                values(b * t * f, 1),
                values(4 * h * f, 2),
                values(4 * h, 3),
                values(4 * h * h, 4),
            );
            let (h0, c0, keep) = (values(b * h, 5), values(b * h, 6), vec![1.0; b * t]);
            let input = Input {
                x: &x,
                features: f,
                w_ih: &w_ih,
                bias: &bias,
            };
            let d_final = values(b * 2 * h, 7);
            for reverse in [false, true] {
                let (states, saved) = forward(d, input, &w_hh, &h0, &c0, &keep, reverse);
                let last = if reverse { 0 } else { t - 1 };
                let mut d_every = vec![0f32; b * t * 2 * h];
                for bi in 0..b {
                    d_every[(bi * t + last) * 2 * h..][..2 * h].copy_from_slice(&d_final[bi * 2 * h..][..2 * h]);
                }
                let run = |ds| backward(d, ds, &states, &saved, input, &w_hh, &h0, &c0, &keep, reverse);
                assert_eq!(
                    run(DStates::Final(&d_final)),
                    run(DStates::Every(&d_every)),
                    "h {h}, reverse {reverse}"
                );
            }
        }
    }

    #[test]
    fn padded_steps_keep_the_state() {
        let d = Dims {
            batch: 1,
            steps: 3,
            hidden: 2,
        };
        let x: Vec<f32> = (0..6).map(|i| i as f32 / 6.0 - 0.4).collect();
        let w_ih: Vec<f32> = (0..16).map(|i| (i as f32 - 5.0) / 16.0).collect();
        let w: Vec<f32> = (0..16).map(|i| (i as f32 - 8.0) / 16.0).collect();
        let bias = vec![0.1; 8];
        let zeros = vec![0.0; 2];
        let input = Input {
            x: &x,
            features: 2,
            w_ih: &w_ih,
            bias: &bias,
        };
        let (states, _) = forward(d, input, &w, &zeros, &zeros, &[1.0, 0.0, 0.0], false);
        assert_eq!(states[0..4], states[4..8]);
        assert_eq!(states[0..4], states[8..12]);
    }
}
