//! How far a data set lies from what a pretrained network was trained on — the "similarity to the pretraining
//! domain" of the transfer-learning rule of thumb. Both measures compare per-feature Gaussians: the mean over
//! features of KL(N(target) ‖ N(pretraining)), so 0 is "looks like the pretraining data" and it grows as the target
//! data's features move away from, or concentrate inside, the range the network was trained on.
//!
//! - A sentence encoder: its pooled output on a sample of the target texts against its output on a reference sample
//!   of general English that graft ships ([`REFERENCE_SENTENCES`]: encyclopedia facts, questions and answers,
//!   comments, news, paper sentences, prose, instructions — the mix such encoders are trained on).
//! - A CNN: the pretraining data's statistics ship inside the weights — every batch norm's running mean and variance
//!   describe its input over ImageNet — so the target images' per-channel mean and variance at each batch norm's
//!   input are compared with them, averaged over the layers.

use burn::prelude::*;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::layers::value::Data;
use crate::model::Graph;
use crate::model::graph::Source;

/// The general-English reference sample for text encoders: 320 sentences, one per line, written for graft.
pub const REFERENCE_SENTENCES: &str = include_str!("reference-sentences.txt");

/// The reference sentences as a list.
pub fn reference_sentences() -> Vec<String> {
    REFERENCE_SENTENCES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Per-feature mean and (population) variance, accumulated in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    pub count: f64,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
}

impl Moments {
    pub fn new(features: usize) -> Self {
        Moments {
            count: 0.0,
            sum: vec![0.0; features],
            sum_sq: vec![0.0; features],
        }
    }

    /// Adds rows of `values` (`[rows, features]`, row-major).
    pub fn add_rows(&mut self, values: &[f32]) {
        let d = self.sum.len();
        for row in values.chunks_exact(d) {
            for (k, &v) in row.iter().enumerate() {
                self.sum[k] += v as f64;
                self.sum_sq[k] += (v as f64) * (v as f64);
            }
            self.count += 1.0;
        }
    }

    /// Adds per-feature sums over `count` observations.
    pub fn add_sums(&mut self, count: f64, sum: &[f64], sum_sq: &[f64]) {
        for k in 0..self.sum.len() {
            self.sum[k] += sum[k];
            self.sum_sq[k] += sum_sq[k];
        }
        self.count += count;
    }

    pub fn mean(&self) -> Vec<f64> {
        self.sum.iter().map(|s| s / self.count.max(1.0)).collect()
    }

    pub fn variance(&self) -> Vec<f64> {
        let n = self.count.max(1.0);
        self.sum
            .iter()
            .zip(&self.sum_sq)
            .map(|(s, q)| (q / n - (s / n) * (s / n)).max(0.0))
            .collect()
    }
}

/// Mean over features of KL(N(μₜ, σₜ²) ‖ N(μᵣ, σᵣ²)). Variances are floored at 1e-3 of the reference's mean
/// variance, so a feature that is constant on one side (a dead channel) counts as far, not infinitely far.
pub fn gaussian_shift(target_mean: &[f64], target_var: &[f64], ref_mean: &[f64], ref_var: &[f64]) -> f64 {
    let d = ref_mean.len().max(1) as f64;
    let floor = 1e-3 * ref_var.iter().sum::<f64>() / d + 1e-12;
    let mut total = 0.0;
    for k in 0..ref_mean.len() {
        let (vt, vr) = (target_var[k].max(floor), ref_var[k].max(floor));
        let dm = target_mean[k] - ref_mean[k];
        total += 0.5 * ((vr / vt).ln() + (vt + dm * dm) / vr - 1.0);
    }
    total / d
}

/// Rows of node `node`'s output for every row of `ds` (inference mode), flattened to one vector per row; token
/// vectors (`[T, H]`, pooling "none") are averaged over their steps.
fn node_rows(model: &Graph, node: usize, ds: &Dataset) -> Result<(Vec<f32>, usize)> {
    let features = model.features(node, ds, 32)?;
    let shape = features.inputs.sample_shape();
    let width = *shape.last().unwrap_or(&1);
    let steps: usize = shape[..shape.len().saturating_sub(1)].iter().product::<usize>().max(1);
    if steps == 1 {
        return Ok((features.inputs.data, width));
    }
    let mut pooled = vec![0f32; ds.len() * width];
    for (r, row) in features.inputs.data.chunks_exact(steps * width).enumerate() {
        for step in row.chunks_exact(width) {
            for (k, v) in step.iter().enumerate() {
                pooled[r * width + k] += v / steps as f32;
            }
        }
    }
    Ok((pooled, width))
}

/// The text measure: node `node`'s outputs on `target` against those on `reference` (both token-id data sets).
pub fn encoder_shift(model: &Graph, node: usize, target: &Dataset, reference: &Dataset) -> Result<f64> {
    let moments = |ds: &Dataset| -> Result<Moments> {
        let (rows, width) = node_rows(model, node, ds)?;
        let mut m = Moments::new(width);
        m.add_rows(&rows);
        Ok(m)
    };
    let (t, r) = (moments(target)?, moments(reference)?);
    Ok(gaussian_shift(&t.mean(), &t.variance(), &r.mean(), &r.variance()))
}

/// The image measure: at the input of every batch-norm node in `nodes`, the per-channel mean and variance of
/// `target` (over images and positions) against the layer's running statistics. Returns the mean over layers and
/// the number of layers.
pub fn batch_norm_shift(model: &Graph, nodes: &[String], target: &Dataset) -> Result<(f64, usize)> {
    use crate::layers::LayerSpec;
    let norms: Vec<usize> = model
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.spec, LayerSpec::BatchNorm(_)) && nodes.contains(&n.name))
        .map(|(i, _)| i)
        .collect();
    if norms.is_empty() {
        return Err(Error::new(
            "the backbone has no batch-norm layer to compare statistics with",
        ));
    }
    let taps: Vec<Source> = norms.iter().map(|&i| model.nodes[i].sources[0]).collect();
    let channels: Vec<usize> = norms.iter().map(|&i| model.nodes[i].outputs[0][0]).collect();
    let mut moments: Vec<Moments> = channels.iter().map(|&c| Moments::new(c)).collect();
    let device = model.devices().first().cloned().unwrap_or_default();
    let rows: Vec<usize> = (0..target.len()).collect();
    for chunk in rows.chunks(16) {
        let batch = crate::data::gather(target, chunk)?;
        let inputs = crate::layers::value::batch_inputs(&batch, &device)?;
        let (_, tapped) = model.forward_tapped(inputs, crate::layers::Ctx::default(), false, &taps)?;
        for (value, m) in tapped.into_iter().zip(moments.iter_mut()) {
            // Per channel: the sum and the sum of squares over images and positions, as [2, C].
            let (count, sums) = match value.data {
                Data::D4(x) => {
                    let [b, c, h, w] = x.dims();
                    let sums = |t: Tensor<4>| t.sum_dim(0).sum_dim(2).sum_dim(3).reshape([1, c]);
                    let both = Tensor::cat(vec![sums(x.clone()), sums(x.clone() * x)], 0);
                    ((b * h * w) as f64, both)
                }
                Data::D2(x) => {
                    let [b, c] = x.dims();
                    let both = Tensor::cat(vec![x.clone().sum_dim(0), (x.clone() * x).sum_dim(0)], 0);
                    (b as f64, both.reshape([2, c]))
                }
                Data::D3(_) => return Err(Error::new("a batch norm over sequences is not part of a backbone")),
            };
            let sums = sums
                .into_data()
                .convert::<f64>()
                .try_into_vec::<f64>()
                .map_err(|e| Error::new(format!("cannot read statistics back: {e:?}")))?;
            let (sum, sum_sq) = sums.split_at(sums.len() / 2);
            m.add_sums(count, sum, sum_sq);
        }
    }
    let stats = crate::model::io::named_tensors(model);
    let stat = |name: &str| -> Result<Vec<f64>> {
        stats
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.values.iter().map(|&v| v as f64).collect())
            .ok_or_else(|| Error::new(format!("no running statistic '{name}'")))
    };
    let mut total = 0.0;
    for (&i, m) in norms.iter().zip(&moments) {
        let name = &model.nodes[i].name;
        let (mean, var) = (
            stat(&format!("{name}.running_mean"))?,
            stat(&format!("{name}.running_var"))?,
        );
        total += gaussian_shift(&m.mean(), &m.variance(), &mean, &var);
    }
    Ok((total / norms.len() as f64, norms.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shift_is_zero_for_the_same_gaussian_and_grows_with_distance() {
        let same = gaussian_shift(&[1.0, -2.0], &[4.0, 0.5], &[1.0, -2.0], &[4.0, 0.5]);
        assert!(same.abs() < 1e-12, "{same}");
        // KL(N(1,1) ‖ N(0,1)) = 1/2 in one feature, 0 in the other → mean 1/4.
        let moved = gaussian_shift(&[1.0, 0.0], &[1.0, 1.0], &[0.0, 0.0], &[1.0, 1.0]);
        assert!((moved - 0.25).abs() < 1e-12, "{moved}");
        // Narrower than the reference: KL(N(0,¼) ‖ N(0,1)) = ½(ln 4 + ¼ − 1).
        let narrow = gaussian_shift(&[0.0], &[0.25], &[0.0], &[1.0]);
        assert!((narrow - 0.5 * (4f64.ln() + 0.25 - 1.0)).abs() < 1e-12, "{narrow}");
        let far = gaussian_shift(&[3.0], &[1.0], &[0.0], &[1.0]);
        assert!(far > moved && far > narrow);
        // A dead feature is floored, not infinite.
        assert!(gaussian_shift(&[0.0], &[0.0], &[0.0], &[1.0]).is_finite());
    }

    #[test]
    fn moments_match_the_textbook_formulas() {
        let mut m = Moments::new(2);
        m.add_rows(&[1.0, 10.0, 3.0, 10.0, 5.0, 40.0]);
        assert_eq!(m.mean(), vec![3.0, 20.0]);
        let v = m.variance();
        assert!((v[0] - 8.0 / 3.0).abs() < 1e-12 && (v[1] - 200.0).abs() < 1e-9, "{v:?}");
        let mut s = Moments::new(2);
        s.add_sums(3.0, &[9.0, 60.0], &[35.0, 1800.0]);
        assert_eq!(s.mean(), m.mean());
        assert_eq!(s.variance(), m.variance());
    }

    #[test]
    fn the_reference_sample_is_shipped() {
        let s = reference_sentences();
        assert!(s.len() >= 300, "{}", s.len());
        assert!(s.iter().all(|l| l.split_whitespace().count() >= 4));
    }
}
