//! Mixup (Zhang et al., 2018; fastai's `MixUp` callback): every training batch is blended with a shuffled copy of
//! itself, x = λ·x_i + (1 − λ)·x_j with λ drawn per batch from Beta(α, α), and the loss is
//! λ·L(y_i) + (1 − λ)·L(y_j), which for cross-entropy is the loss against the blended labels and works as it is for
//! every loss, class weights and sample weights included. As in fastai, λ is max(λ, 1 − λ), so each blend keeps
//! its own row's label as the larger part and the training metrics (counted against it) stay meaningful.
//!
//! Drawn from the run's seed, the epoch and the batch, so a run repeats and resumes exactly. Validation, test and
//! prediction never blend. Only float inputs blend (images, tables, vectors); token ids cannot.

use rand::seq::SliceRandom;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use crate::data::{Array, Batch};
use crate::error::{Error, Result};
use crate::layers::LayerSpec;
use crate::model::Graph;
use crate::model::graph::Source;

/// `[train] mixup = { alpha = 0.4 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixupSpec {
    /// Beta(α, α)'s parameter: small α (0.1–0.4) blends mostly a little, α = 1 uniformly.
    pub alpha: f64,
}

impl MixupSpec {
    pub fn new(alpha: f64) -> Self {
        MixupSpec { alpha }
    }

    /// An α no Beta distribution has, or a model whose inputs cannot blend.
    pub fn check(&self, model: &Graph) -> Result<()> {
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::new(format!("alpha must be a positive number, found {}", self.alpha)).at("mixup"));
        }
        for node in &model.nodes {
            if !matches!(node.spec, LayerSpec::Embedding(_) | LayerSpec::Bert(_)) {
                continue;
            }
            if let Some(Source::Input(i)) = node.sources.first() {
                return Err(Error::new(format!(
                    "mixup blends float inputs, but input '{}' holds token ids (read by layer '{}')",
                    model.spec.inputs[*i].name, node.name
                ))
                .at("mixup"));
            }
        }
        Ok(())
    }

    /// The blend of batch `batch` (1-based) of `epoch` with `n` rows.
    pub fn draw(&self, n: usize, seed: u64, epoch: usize, batch: usize) -> Mix {
        let mut rng = crate::data::rng::seeded_rng(b"mixup\0\0\0", seed, ((epoch as u64) << 32) | batch as u64);
        let lambda = Beta::new(self.alpha, self.alpha)
            .map(|beta| beta.sample(&mut rng))
            .unwrap_or(1.0);
        let mut partner: Vec<usize> = (0..n).collect();
        partner.shuffle(&mut rng);
        Mix {
            lambda: lambda.max(1.0 - lambda) as f32,
            partner,
        }
    }
}

/// One batch's blend: the weight of each row's own sample and the row it is blended with.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    pub lambda: f32,
    pub partner: Vec<usize>,
}

impl Mix {
    /// `batch` with each row's partner in its place: the targets (and weights) of the second loss term.
    pub fn partners(&self, batch: &Batch) -> Batch {
        let p = &self.partner;
        Batch {
            inputs: batch.inputs.select(p),
            labels: batch.labels.as_ref().map(|l| p.iter().map(|&r| l[r]).collect()),
            values: batch.values.as_ref().map(|v| v.select(p)),
            weights: batch.weights.as_ref().map(|w| p.iter().map(|&r| w[r]).collect()),
            extra_inputs: batch.extra_inputs.iter().map(|a| a.select(p)).collect(),
            tasks: batch.tasks.iter().map(|t| t.select(p)).collect(),
        }
    }

    /// `batch` with its inputs blended with `partners`' (targets are `batch`'s own).
    pub fn blend(&self, batch: &Batch, partners: &Batch) -> Batch {
        let blend = |a: &Array, b: &Array| Array {
            shape: a.shape.clone(),
            data: a
                .data
                .iter()
                .zip(&b.data)
                .map(|(x, y)| self.lambda * x + (1.0 - self.lambda) * y)
                .collect(),
        };
        Batch {
            inputs: blend(&batch.inputs, &partners.inputs),
            extra_inputs: batch
                .extra_inputs
                .iter()
                .zip(&partners.extra_inputs)
                .map(|(a, b)| blend(a, b))
                .collect(),
            labels: batch.labels.clone(),
            values: batch.values.clone(),
            weights: batch.weights.clone(),
            tasks: batch.tasks.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        Batch {
            inputs: Array::new(vec![4, 2], vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]).unwrap(),
            labels: Some(vec![0, 1, 2, 3]),
            values: None,
            weights: Some(vec![1.0, 2.0, 3.0, 4.0]),
            extra_inputs: vec![],
            tasks: vec![],
        }
    }

    #[test]
    fn draws_repeat_with_the_seed_and_keep_the_own_row_larger() {
        let spec = MixupSpec::new(0.4);
        assert_eq!(spec.draw(8, 7, 2, 3), spec.draw(8, 7, 2, 3));
        assert_ne!(spec.draw(8, 7, 2, 3), spec.draw(8, 7, 2, 4));
        let lambdas: Vec<f32> = (1..200).map(|b| spec.draw(8, 7, 1, b).lambda).collect();
        assert!(lambdas.iter().all(|l| (0.5..=1.0).contains(l)));
        // Beta(0.4, 0.4) folded onto [0.5, 1]: its mean is 1 − E|λ − ½|-ish, well inside the interval.
        let mean = lambdas.iter().sum::<f32>() / lambdas.len() as f32;
        assert!((0.75..0.95).contains(&mean), "{mean}");
        let mut p = spec.draw(8, 7, 1, 1).partner;
        p.sort();
        assert_eq!(p, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn inputs_blend_and_partners_carry_their_own_targets() {
        let mix = Mix {
            lambda: 0.75,
            partner: vec![3, 2, 1, 0],
        };
        let b = batch();
        // row r: 0.75·r + 0.25·(3 − r)
        let partners = mix.partners(&b);
        assert_eq!(partners.labels, Some(vec![3, 2, 1, 0]));
        assert_eq!(partners.weights, Some(vec![4.0, 3.0, 2.0, 1.0]));
        let blended = mix.blend(&b, &partners);
        assert_eq!(
            blended.inputs.data,
            vec![0.75, 0.75, 1.25, 1.25, 1.75, 1.75, 2.25, 2.25]
        );
        assert_eq!(blended.labels, b.labels);
    }

    #[test]
    fn a_bad_alpha_and_token_ids_are_refused() {
        use crate::layers::embedding::EmbeddingConfig;
        use crate::model::ModelSpec;
        let device = burn::prelude::Device::default();
        let spec = ModelSpec::sequential(vec![5]).add_named("emb", LayerSpec::Embedding(EmbeddingConfig::new(10, 4)));
        let model = Graph::build(&spec, &device).unwrap();
        let e = MixupSpec::new(0.0).check(&model).unwrap_err().to_string();
        assert!(e.contains("alpha must be a positive number"), "{e}");
        let e = MixupSpec::new(0.2).check(&model).unwrap_err().to_string();
        assert!(e.contains("input 'input' holds token ids (read by layer 'emb')"), "{e}");
    }
}
