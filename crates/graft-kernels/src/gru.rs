//! The GRU recurrence (PyTorch's equations) and its backpropagation through time, on plain f32 buffers (see
//! [`super`]).
//!
//! `r = σ(x_r + h·W_hrᵀ)`, `z = σ(x_z + h·W_hzᵀ)`, `n = tanh(x_n + r ⊙ (h·W_hnᵀ + b_hn))`, `h' = (1 − z) ⊙ n + z ⊙ h`,
//! where `x_*` already holds the input projection with `b_i*` and the foldable `b_hr`, `b_hz`; `b_hn` sits inside
//! the reset gate's product, so it is an input of its own.

use crate::recurrence::{Dims, add_step_gradient, per_batch_range, step_product, time_of, weight_gradient};
use crate::simd::{sigmoid, tanh};
use crate::transpose::transposed;

/// Values saved per step: r, z, n and the recurrent candidate `h·W_hnᵀ + b_hn`.
pub const SAVED: usize = 4;

/// `xp` `[B, T, 3H]`, `w_hh` `[3H, H]`, `b_hn` `[H]`, `h0` `[B, H]`, `keep` `[B, T]` → the states `[B, T, H]` after
/// each timestep and the saved values `[B, T, 4H]`.
pub fn forward(
    d: Dims,
    xp: &[f32],
    w_hh: &[f32],
    b_hn: &[f32],
    h0: &[f32],
    keep: &[f32],
    reverse: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (t, h) = (d.steps, d.hidden);
    let mut states = vec![0f32; d.batch * t * h];
    let mut saved = vec![0f32; d.batch * t * SAVED * h];
    let w_t = transposed(w_hh, 3 * h, h);
    per_batch_range(
        d.batch,
        [&mut states, &mut saved],
        [t * h, t * SAVED * h],
        |r, [states, saved]| {
            forward_rows(
                Dims { batch: r.len(), ..d },
                &xp[r.start * t * 3 * h..r.end * t * 3 * h],
                &w_t,
                b_hn,
                &h0[r.start * h..r.end * h],
                &keep[r.start * t..r.end * t],
                reverse,
                states,
                saved,
            )
        },
    );
    (states, saved)
}

#[allow(clippy::too_many_arguments)]
fn forward_rows(
    d: Dims,
    xp: &[f32],
    w_t: &[f32],
    b_hn: &[f32],
    h0: &[f32],
    keep: &[f32],
    reverse: bool,
    states: &mut [f32],
    saved: &mut [f32],
) {
    let (b, t, h) = (d.batch, d.steps, d.hidden);
    let g3 = 3 * h;
    let mut hp = h0.to_vec();
    let mut a = vec![0f32; b * g3];
    for s in 0..t {
        let time = time_of(t, s, reverse);
        step_product(&mut a, &hp, w_t, b, (g3, h));
        for bi in 0..b {
            let row = bi * t + time;
            gates_forward(
                &a[bi * g3..(bi + 1) * g3],
                &xp[row * g3..(row + 1) * g3],
                b_hn,
                &mut hp[bi * h..(bi + 1) * h],
                &mut saved[row * SAVED * h..(row + 1) * SAVED * h],
                keep[row],
                h,
            );
            states[row * h..(row + 1) * h].copy_from_slice(&hp[bi * h..(bi + 1) * h]);
        }
    }
}

simd_dispatch! {
    fn gates_forward(a: &[f32], x: &[f32], b_hn: &[f32], hs: &mut [f32], out: &mut [f32], keep: f32, h: usize)
        => gates_forward_body
}

#[inline(always)]
fn gates_forward_body(a: &[f32], x: &[f32], b_hn: &[f32], hs: &mut [f32], out: &mut [f32], keep: f32, h: usize) {
    let (ar, rest) = a.split_at(h);
    let (az, an) = rest.split_at(h);
    let (xr, rest) = x.split_at(h);
    let (xz, xn) = rest.split_at(h);
    let (or, rest) = out.split_at_mut(h);
    let (oz, rest) = rest.split_at_mut(h);
    let (on, ohn) = rest.split_at_mut(h);
    // Every slice cut to exactly h so that the loop runs without bounds checks and vectorizes.
    let (an, xn, b_hn, hs, ohn) = (&an[..h], &xn[..h], &b_hn[..h], &mut hs[..h], &mut ohn[..h]);
    for j in 0..h {
        let r = sigmoid(xr[j] + ar[j]);
        let z = sigmoid(xz[j] + az[j]);
        let hn = an[j] + b_hn[j];
        let n = tanh(xn[j] + r * hn);
        let h_new = n + z * (hs[j] - n);
        or[j] = r;
        oz[j] = z;
        on[j] = n;
        ohn[j] = hn;
        hs[j] += keep * (h_new - hs[j]);
    }
}

/// Gradients of the fused pass's inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    pub xp: Vec<f32>,
    pub w_hh: Vec<f32>,
    pub b_hn: Vec<f32>,
    pub h0: Vec<f32>,
}

/// Backpropagation through time for [`forward`], given the gradient of its states `[B, T, H]`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    d: Dims,
    d_states: &[f32],
    states: &[f32],
    saved: &[f32],
    w_hh: &[f32],
    h0: &[f32],
    keep: &[f32],
    reverse: bool,
) -> Grads {
    let (t, h) = (d.steps, d.hidden);
    let mut total = Grads {
        xp: vec![0f32; d.batch * t * 3 * h],
        w_hh: vec![0f32; 3 * h * h],
        b_hn: vec![0f32; h],
        h0: vec![0f32; d.batch * h],
    };
    let weight_grads = per_batch_range(
        d.batch,
        [&mut total.xp, &mut total.h0],
        [t * 3 * h, h],
        |r, [d_xp, d_h0]| {
            let bt = r.start * t..r.end * t;
            backward_rows(
                Dims { batch: r.len(), ..d },
                &d_states[bt.start * h..bt.end * h],
                &states[bt.start * h..bt.end * h],
                &saved[bt.start * SAVED * h..bt.end * SAVED * h],
                w_hh,
                &h0[r.start * h..r.end * h],
                &keep[bt],
                reverse,
                (d_xp, d_h0),
            )
        },
    );
    for (d_w, d_b_hn) in weight_grads {
        for (acc, v) in total.w_hh.iter_mut().zip(&d_w) {
            *acc += v;
        }
        for (acc, v) in total.b_hn.iter_mut().zip(&d_b_hn) {
            *acc += v;
        }
    }
    total
}

/// The rows' backward: fills the gradients of their `xp` and `h0` in place and returns their parts of the `W_hh`
/// and `b_hn` gradients.
#[allow(clippy::too_many_arguments)]
fn backward_rows(
    d: Dims,
    d_states: &[f32],
    states: &[f32],
    saved: &[f32],
    w_hh: &[f32],
    h0: &[f32],
    keep: &[f32],
    reverse: bool,
    (d_xp, dh): (&mut [f32], &mut [f32]),
) -> (Vec<f32>, Vec<f32>) {
    let (b, t, h) = (d.batch, d.steps, d.hidden);
    let g3 = 3 * h;
    // The gradient of the recurrent pre-activations h·W_hhᵀ (its n block differs from d_xp's by the reset gate).
    let mut d_rec = vec![0f32; b * t * g3];
    let mut h_prev_all = vec![0f32; b * t * h];
    for s in (0..t).rev() {
        let time = time_of(t, s, reverse);
        let prev = (s > 0).then(|| time_of(t, s - 1, reverse));
        for bi in 0..b {
            let row = bi * t + time;
            let h_prev: &[f32] = match prev {
                None => &h0[bi * h..(bi + 1) * h],
                Some(p) => &states[(bi * t + p) * h..(bi * t + p + 1) * h],
            };
            h_prev_all[row * h..(row + 1) * h].copy_from_slice(h_prev);
            gates_backward(
                &saved[row * SAVED * h..(row + 1) * SAVED * h],
                &d_states[row * h..(row + 1) * h],
                h_prev,
                keep[row],
                &mut dh[bi * h..(bi + 1) * h],
                &mut d_xp[row * g3..(row + 1) * g3],
                &mut d_rec[row * g3..(row + 1) * g3],
                h,
            );
        }
        add_step_gradient(dh, &d_rec[time * g3..], t * g3, w_hh, b, (g3, h));
    }
    let d_w = weight_gradient(&d_rec, &h_prev_all, b * t, (g3, h));
    let mut d_b_hn = vec![0f32; h];
    for row in d_rec.chunks_exact(g3) {
        for (acc, v) in d_b_hn.iter_mut().zip(&row[2 * h..]) {
            *acc += v;
        }
    }
    (d_w, d_b_hn)
}

simd_dispatch! {
    /// One row's step backward. `dh` holds the carried gradient of the state and leaves with the previous state's
    /// (the recurrent matmul's part is added by the caller).
    #[allow(clippy::too_many_arguments)]
    fn gates_backward(
        saved: &[f32],
        ds: &[f32],
        h_prev: &[f32],
        keep: f32,
        dh: &mut [f32],
        dx: &mut [f32],
        drec: &mut [f32],
        h: usize,
    ) => gates_backward_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gates_backward_body(
    saved: &[f32],
    ds: &[f32],
    h_prev: &[f32],
    keep: f32,
    dh: &mut [f32],
    dx: &mut [f32],
    drec: &mut [f32],
    h: usize,
) {
    let (sr, rest) = saved.split_at(h);
    let (sz, rest) = rest.split_at(h);
    let (sn, shn) = rest.split_at(h);
    let (dxr, rest) = dx.split_at_mut(h);
    let (dxz, dxn) = rest.split_at_mut(h);
    let (drr, rest) = drec.split_at_mut(h);
    let (drz, drn) = rest.split_at_mut(h);
    // Every slice cut to exactly h so that the loop runs without bounds checks and vectorizes.
    let (shn, ds, h_prev, dh, dxn, drn) = (
        &shn[..h],
        &ds[..h],
        &h_prev[..h],
        &mut dh[..h],
        &mut dxn[..h],
        &mut drn[..h],
    );
    for j in 0..h {
        let (r, z, n, hn) = (sr[j], sz[j], sn[j], shn[j]);
        let d_state = ds[j] + dh[j];
        let dh_new = keep * d_state;
        let dn_pre = dh_new * (1.0 - z) * (1.0 - n * n);
        let dz_pre = dh_new * (h_prev[j] - n) * z * (1.0 - z);
        let dr_pre = dn_pre * hn * r * (1.0 - r);
        dxr[j] = dr_pre;
        dxz[j] = dz_pre;
        dxn[j] = dn_pre;
        drr[j] = dr_pre;
        drz[j] = dz_pre;
        drn[j] = dn_pre * r;
        dh[j] = (1.0 - keep) * d_state + dh_new * z;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences of Σ states · weights against the handwritten backward, with padding, both directions.
    #[test]
    fn backward_matches_finite_differences() {
        let d = Dims {
            batch: 2,
            steps: 4,
            hidden: 3,
        };
        let n = |len: usize, seed: u32| -> Vec<f32> {
            (0..len)
                .map(|i| (((i as u32).wrapping_mul(2654435761u32) ^ seed) % 1000) as f32 / 1000.0 - 0.5)
                .collect()
        };
        let (xp, w, b_hn, h0) = (n(2 * 4 * 9, 1), n(9 * 3, 2), n(3, 3), n(6, 4));
        let weights = n(2 * 4 * 3, 5);
        let keep = vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0];
        for reverse in [false, true] {
            let loss = |xp: &[f32], w: &[f32], b_hn: &[f32], h0: &[f32]| -> f64 {
                let (s, _) = forward(d, xp, w, b_hn, h0, &keep, reverse);
                s.iter().zip(&weights).map(|(a, b)| (*a as f64) * (*b as f64)).sum()
            };
            let (states, saved) = forward(d, &xp, &w, &b_hn, &h0, &keep, reverse);
            let g = backward(d, &weights, &states, &saved, &w, &h0, &keep, reverse);
            let inputs: [(&str, &Vec<f32>, &Vec<f32>); 4] = [
                ("xp", &xp, &g.xp),
                ("w_hh", &w, &g.w_hh),
                ("b_hn", &b_hn, &g.b_hn),
                ("h0", &h0, &g.h0),
            ];
            for (which, (name, values, grad)) in inputs.into_iter().enumerate() {
                for idx in 0..values.len() {
                    let eps = 1e-3f32;
                    let shifted = |delta: f32| {
                        let mut v = values.to_vec();
                        v[idx] += delta;
                        match which {
                            0 => loss(&v, &w, &b_hn, &h0),
                            1 => loss(&xp, &v, &b_hn, &h0),
                            2 => loss(&xp, &w, &v, &h0),
                            _ => loss(&xp, &w, &b_hn, &v),
                        }
                    };
                    let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps as f64);
                    assert!(
                        (numeric - grad[idx] as f64).abs() < 2e-3,
                        "{name}[{idx}] (reverse {reverse}): numeric {numeric}, analytic {}",
                        grad[idx]
                    );
                }
            }
        }
    }
}
