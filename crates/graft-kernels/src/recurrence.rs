//! What the LSTM and GRU recurrences share: the sizes of a run, the step order of either direction, and the split
//! of the batch rows into one range per thread.

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
