//! What the LSTM and GRU recurrences share: the sizes of a run, the step order of either direction, and the split
//! of the batch rows into one range per thread, and the three products of a step's gates with the recurrent weight.

use crate::matmul::matmul;

/// The sizes of one fused run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dims {
    pub batch: usize,
    pub steps: usize,
    pub hidden: usize,
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
pub(crate) fn per_batch_range<T: Send, R: Send, const N: usize>(
    batch: usize,
    mut outputs: [&mut [T]; N],
    row_len: [usize; N],
    work: impl Fn(std::ops::Range<usize>, [&mut [T]; N]) -> R + Sync + Send,
) -> Vec<R> {
    use rayon::prelude::*;
    let mut jobs = Vec::new();
    for r in batch_ranges(batch) {
        let mut mine: [&mut [T]; N] = std::array::from_fn(|_| <&mut [T]>::default());
        for (i, out) in outputs.iter_mut().enumerate() {
            let (head, tail) = std::mem::take(out).split_at_mut(r.len() * row_len[i]);
            mine[i] = head;
            *out = tail;
        }
        jobs.push((r, mine));
    }
    jobs.into_par_iter().map(|(r, outs)| work(r, outs)).collect()
}

/// One step's recurrent product `a [b, G] = h_prev [b, H] · w_t [H, G]`, `w_t` being `W_hh` `[G, H]` transposed
/// (G = 4H for the LSTM's gates, 3H for the GRU's).
pub(crate) fn step_product(a: &mut [f32], h_prev: &[f32], w_t: &[f32], b: usize, (g, h): (usize, usize)) {
    matmul(
        (b, g, h),
        a,
        (g as isize, 1),
        false,
        h_prev,
        (h as isize, 1),
        w_t,
        (g as isize, 1),
    );
}

/// One step's backward through it: `dh [b, H] += d_gates · W_hh`, row `r`'s gate gradients at
/// `d_gates[r * stride..][..G]`.
pub(crate) fn add_step_gradient(
    dh: &mut [f32],
    d_gates: &[f32],
    stride: usize,
    w_hh: &[f32],
    b: usize,
    (g, h): (usize, usize),
) {
    matmul(
        (b, h, g),
        dh,
        (h as isize, 1),
        true,
        d_gates,
        (stride as isize, 1),
        w_hh,
        (h as isize, 1),
    );
}

/// The recurrent weight's gradient over all `rows` steps at once: `Σ d_gatesᵀ · h_prev`, `[G, H]`.
pub(crate) fn weight_gradient(d_gates: &[f32], h_prev: &[f32], rows: usize, (g, h): (usize, usize)) -> Vec<f32> {
    let mut d_w = vec![0f32; g * h];
    matmul(
        (g, h, rows),
        &mut d_w,
        (h as isize, 1),
        false,
        d_gates,
        (1, g as isize),
        h_prev,
        (h as isize, 1),
    );
    d_w
}
