//! The skip-gram negative-sampling objective of word2vec (Mikolov et al. 2013): instead of a softmax over the
//! whole vocabulary, each (word, context) pair is one binary decision — the true context against `k` noise words
//! drawn from the unigram distribution — so a step costs O(k·dim), not O(vocabulary·dim).

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::task::gan::softplus;

/// The dot product of each word's vector with each of its candidate contexts: `target [batch, dim]`,
/// `contexts [batch, 1 + k, dim]` (the true context first, then the noise words) → scores `[batch, 1 + k]`.
pub fn skipgram_scores(target: Tensor<2>, contexts: Tensor<3>) -> Result<Tensor<2>> {
    let [batch, dim] = target.dims();
    let [c_batch, candidates, c_dim] = contexts.dims();
    if (batch, dim) != (c_batch, c_dim) || candidates < 2 {
        return Err(Error::new(format!(
            "skipgram_scores: target [batch, dim] and contexts [batch, 1 + negatives, dim] must agree, with at least \
             one negative; found {:?} and {:?}",
            [batch, dim],
            [c_batch, candidates, c_dim]
        )));
    }
    Ok((contexts * target.unsqueeze_dim::<3>(1)).sum_dim(2).squeeze_dim::<2>(2))
}

/// Negative-sampling loss of `scores [batch, 1 + k]` whose first column scores the true context:
/// −log σ(s₀) − Σⱼ log σ(−sⱼ) per row, i.e. softplus(−s₀) + Σⱼ softplus(sⱼ), averaged over rows (summed over a
/// row's candidates, as the word2vec tool's update and the usual PyTorch implementations) → `[1]`.
pub fn negative_sampling_loss(scores: Tensor<2>) -> Result<Tensor<1>> {
    let [batch, candidates] = scores.dims();
    if batch == 0 || candidates < 2 {
        return Err(Error::new(format!(
            "negative_sampling_loss: scores must be [batch, 1 + negatives] with at least one row and one negative, \
             found {:?}",
            [batch, candidates]
        )));
    }
    let positive = scores.clone().slice([0..batch, 0..1]);
    let negatives = scores.slice([0..batch, 1..candidates]);
    Ok((softplus(positive.neg()).sum() + softplus(negatives).sum()).div_scalar(batch as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn scores_are_dot_products_with_each_candidate() {
        let device = Device::default();
        let target = Tensor::<2>::from_floats([[1.0, 2.0], [0.5, -1.0]], &device);
        let contexts = Tensor::<3>::from_floats(
            [
                [[1.0, 1.0], [0.0, -1.0], [2.0, 0.0]],
                [[2.0, 2.0], [1.0, 0.0], [0.0, 3.0]],
            ],
            &device,
        );
        let s = host(skipgram_scores(target, contexts).unwrap());
        assert_eq!(s, vec![3.0, -2.0, 2.0, -1.0, 0.5, -3.0]);
    }

    #[test]
    fn loss_is_the_binary_cross_entropy_of_each_candidate_summed_per_row() {
        let device = Device::default();
        let scores = Tensor::<2>::from_floats([[2.0, -1.0, 0.5], [-30.0, 40.0, -0.25]], &device);
        let sp = |x: f64| (1.0 + x.exp()).ln();
        // Row 0: softplus(−2) + softplus(−1) + softplus(0.5); row 1 saturates both ways without overflow.
        let want = ((sp(-2.0) + sp(-1.0) + sp(0.5)) + (30.0 + 40.0 + sp(-0.25))) / 2.0;
        let got = host(negative_sampling_loss(scores).unwrap())[0] as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn shapes_are_checked() {
        let device = Device::default();
        let one_column = Tensor::<2>::zeros([3, 1], &device);
        assert!(
            negative_sampling_loss(one_column)
                .unwrap_err()
                .to_string()
                .contains("one negative")
        );
        let err = skipgram_scores(
            Tensor::<2>::zeros([2, 4], &device),
            Tensor::<3>::zeros([2, 3, 5], &device),
        )
        .unwrap_err();
        assert!(err.to_string().contains("[2, 3, 5]"), "{err}");
    }
}
