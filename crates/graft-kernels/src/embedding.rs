//! Embedding lookup on plain f32 buffers (see [`super`]): the rows of a `[V, D]` table at the given ids, and the
//! table's gradient, each output-gradient row added into a zero `[V, D]`. burn-flex's backward zero-filled that
//! gradient in a byte buffer and then copied it once more to align it (5 MB each way on the benchmark's 10,000 × 128
//! table, every step), before its scatter.
//!
//! Ids arrive as whole numbers stored in f32 (how graft's batches carry them; exact below 2²⁴). graft checks them
//! against the vocabulary on the host before a batch reaches a model (`Graph::check_token_ids`), so an id out of
//! range here is a bug, and it stops with a message rather than reading past the table.

/// The table row of `id`, checked.
fn row(id: f32, vocab: usize) -> usize {
    let r = id as usize;
    assert!(
        id >= 0.0 && id.fract() == 0.0 && r < vocab,
        "embedding id {id} is outside the table's {vocab} rows"
    );
    r
}

/// `weight` `[V, D]` at `ids` (N of them) → `[N, D]`.
pub fn forward(weight: &[f32], dim: usize, ids: &[f32]) -> Vec<f32> {
    let vocab = weight.len() / dim.max(1);
    let mut out = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        let r = row(id, vocab);
        out.extend_from_slice(&weight[r * dim..(r + 1) * dim]);
    }
    out
}

/// The table's gradient `[V, D]` from the output gradient `dy` `[N, D]` at `ids`: rows of repeated ids add up.
pub fn backward(dy: &[f32], ids: &[f32], vocab: usize, dim: usize) -> Vec<f32> {
    let mut dw = vec![0f32; vocab * dim];
    for (&id, g) in ids.iter().zip(dy.chunks_exact(dim.max(1))) {
        let r = row(id, vocab);
        for (acc, v) in dw[r * dim..(r + 1) * dim].iter_mut().zip(g) {
            *acc += v;
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::{Distribution, Int};

    /// The fused lookup gives burn's `embedding` output and weight gradient, with repeated ids, under autodiff and
    /// on a plain device.
    #[test]
    fn fused_embedding_matches_burns() {
        for device in [Device::default(), Device::default().autodiff()] {
            let w = Tensor::<2>::random([7, 5], Distribution::Uniform(-1.0, 1.0), &device);
            let w = if device.is_autodiff() { w.require_grad() } else { w };
            let ids = [[3.0f32, 0.0, 6.0, 3.0], [1.0, 1.0, 2.0, 3.0]];
            let float_ids = Tensor::<2>::from_floats(ids, &device);
            let int_ids: Tensor<2, Int> = float_ids.clone().int();
            let fused = crate::embedding(w.clone(), float_ids);
            let composed = burn::tensor::module::embedding(w.clone(), int_ids);
            assert_eq!(fused.dims(), [2, 4, 5]);
            let values = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(values(fused.clone()), values(composed.clone()));
            if device.is_autodiff() {
                let weights = Tensor::<3>::random([2, 4, 5], Distribution::Uniform(-1.0, 1.0), &device);
                let g_f = (fused * weights.clone()).sum().backward();
                let g_c = (composed * weights).sum().backward();
                let grad = |g| w.grad(g).unwrap().into_data().try_to_vec::<f32>().unwrap();
                let (a, b) = (grad(&g_f), grad(&g_c));
                for (p, q) in a.iter().zip(&b) {
                    assert!((p - q).abs() <= 1e-6, "{a:?} vs {b:?}");
                }
                assert!(a.iter().any(|v| *v != 0.0));
            }
        }
    }
}
