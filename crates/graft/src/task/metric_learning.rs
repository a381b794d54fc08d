//! Losses of siamese and triplet networks, on embeddings: the contrastive loss of Hadsell, Chopra and LeCun 2006
//! (pairs), PyTorch's triplet margin loss (given triplets), and the triplet loss with triplets mined online from a
//! batch's class labels — batch-all and batch-hard (Hermans, Beyer and Leibe 2017) and semi-hard (Schroff et al.'s
//! FaceNet, as TensorFlow Addons defines it). Mining picks which distances enter the loss from their current values
//! (on the host: the choice carries no gradient); the loss is then taken of those distances, so its gradient is
//! exactly that of the chosen triplets. Distances are Euclidean, √(‖a − b‖² + 1e-12), so identical embeddings have
//! a finite gradient.

use burn::prelude::*;
use burn::tensor::{Int, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How triplets are formed from a batch's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mining {
    /// Every valid triplet (anchor, positive of its class, negative of another), averaged over those with a
    /// positive loss.
    BatchAll,
    /// Per anchor, its farthest positive and nearest negative.
    BatchHard,
    /// Per positive pair, the nearest negative that is farther than the positive (else the farthest negative).
    #[default]
    SemiHard,
}

/// `{ triplet = { margin = 0.2, mining = "semi_hard" } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripletSpec {
    #[serde(default = "point_two")]
    pub margin: f64,
    #[serde(default)]
    pub mining: Mining,
}

impl Default for TripletSpec {
    fn default() -> Self {
        TripletSpec {
            margin: 0.2,
            mining: Mining::default(),
        }
    }
}

/// `{ contrastive = { margin = 1.0 } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContrastiveSpec {
    #[serde(default = "one")]
    pub margin: f64,
}

impl Default for ContrastiveSpec {
    fn default() -> Self {
        ContrastiveSpec { margin: 1.0 }
    }
}

fn point_two() -> f64 {
    0.2
}

fn one() -> f64 {
    1.0
}

const EPS: f64 = 1e-12;

/// Euclidean distances between all rows of `embeddings [n, d]` → `[n, n]`.
pub fn pairwise_distances(embeddings: Tensor<2>) -> Tensor<2> {
    let squared = embeddings.clone().powi_scalar(2).sum_dim(1); // [n, 1]
    let dots = embeddings.clone().matmul(embeddings.transpose()); // [n, n]
    let d2 = squared.clone() + squared.transpose() - dots.mul_scalar(2.0);
    d2.clamp_min(0.0).add_scalar(EPS).sqrt()
}

/// Row-wise Euclidean distance of `a` and `b` `[n, d]` → `[n]`.
fn row_distance(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    (a - b)
        .powi_scalar(2)
        .sum_dim(1)
        .add_scalar(EPS)
        .sqrt()
        .squeeze_dim::<1>(1)
}

/// Contrastive loss of pairs `a`, `b` `[n, d]` with `same` `[n]` (1 for a same-class pair, 0 otherwise): the mean
/// of ½·[y·d² + (1 − y)·max(0, margin − d)²].
pub fn contrastive_loss(a: Tensor<2>, b: Tensor<2>, same: Tensor<1>, margin: f64) -> Tensor<1> {
    let d = row_distance(a, b);
    let pull = d.clone().powi_scalar(2) * same.clone();
    let push = d.neg().add_scalar(margin).clamp_min(0.0).powi_scalar(2) * same.neg().add_scalar(1.0);
    (pull + push).mul_scalar(0.5).mean()
}

/// PyTorch's `F.triplet_margin_loss(anchor, positive, negative, margin, p=2, eps=1e-6)`: mean of
/// max(0, d(a, p) − d(a, n) + margin) with d(x, y) = ‖x − y + eps‖₂, triplets given row by row `[n, d]`.
pub fn triplet_margin_loss(anchor: Tensor<2>, positive: Tensor<2>, negative: Tensor<2>, margin: f64) -> Tensor<1> {
    let d = |x: Tensor<2>, y: Tensor<2>| {
        (x - y)
            .add_scalar(1e-6)
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .squeeze_dim::<1>(1)
    };
    let dap = d(anchor.clone(), positive);
    let dan = d(anchor, negative);
    (dap - dan).add_scalar(margin).clamp_min(0.0).mean()
}

/// The triplet loss of `embeddings [n, d]` over triplets mined from `labels [n]` by `mining`. A batch with no valid
/// triplet (one class, or no class with two examples) gives a zero loss that still belongs to the graph, so a
/// training step on it changes nothing rather than failing.
pub fn mined_triplet_loss(
    embeddings: Tensor<2>,
    labels: Tensor<1, Int>,
    margin: f64,
    mining: Mining,
) -> Result<Tensor<1>> {
    let [n, _] = embeddings.dims();
    let labels: Vec<i64> = labels
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| Error::new(format!("cannot read the labels: {e:?}")))?;
    if labels.len() != n {
        return Err(Error::new(format!("{} labels for {n} embeddings", labels.len())));
    }
    let device = embeddings.device();
    let distances = pairwise_distances(embeddings.clone());
    let values: Vec<f32> = distances
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::new(format!("cannot read the distances: {e:?}")))?;
    let d = |i: usize, j: usize| values[i * n + j];
    let positive = |a: usize, j: usize| a != j && labels[a] == labels[j];
    let negative = |a: usize, j: usize| labels[a] != labels[j];
    // (anchor-positive, anchor-negative) flat indices of the chosen triplets.
    let mut chosen: Vec<(i64, i64)> = vec![];
    match mining {
        Mining::BatchAll => {
            for a in 0..n {
                for p in (0..n).filter(|&p| positive(a, p)) {
                    for m in (0..n).filter(|&m| negative(a, m)) {
                        // Triplets already beyond the margin add nothing and would only dilute the mean.
                        if d(a, p) - d(a, m) + margin as f32 > 0.0 {
                            chosen.push(((a * n + p) as i64, (a * n + m) as i64));
                        }
                    }
                }
            }
        }
        Mining::BatchHard => {
            for a in 0..n {
                let hardest_positive = (0..n)
                    .filter(|&p| positive(a, p))
                    .max_by(|&x, &y| d(a, x).total_cmp(&d(a, y)));
                let hardest_negative = (0..n)
                    .filter(|&m| negative(a, m))
                    .min_by(|&x, &y| d(a, x).total_cmp(&d(a, y)));
                if let (Some(p), Some(m)) = (hardest_positive, hardest_negative) {
                    chosen.push(((a * n + p) as i64, (a * n + m) as i64));
                }
            }
        }
        Mining::SemiHard => {
            for a in 0..n {
                for p in (0..n).filter(|&p| positive(a, p)) {
                    let negatives = (0..n).filter(|&m| negative(a, m));
                    let semi_hard = negatives
                        .clone()
                        .filter(|&m| d(a, m) > d(a, p))
                        .min_by(|&x, &y| d(a, x).total_cmp(&d(a, y)));
                    let fallback = || negatives.clone().max_by(|&x, &y| d(a, x).total_cmp(&d(a, y)));
                    if let Some(m) = semi_hard.or_else(fallback) {
                        chosen.push(((a * n + p) as i64, (a * n + m) as i64));
                    }
                }
            }
        }
    }
    if chosen.is_empty() {
        return Ok(embeddings.sum().mul_scalar(0.0));
    }
    let k = chosen.len();
    let index = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [k]), &device);
    let flat = distances.reshape([n * n]);
    let dap = flat.clone().select(0, index(chosen.iter().map(|c| c.0).collect()));
    let dan = flat.select(0, index(chosen.iter().map(|c| c.1).collect()));
    Ok((dap - dan).add_scalar(margin).clamp_min(0.0).mean())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(values: &[f32], rows: usize, device: &Device) -> Tensor<2> {
        Tensor::<2>::from_data(TensorData::new(values.to_vec(), [rows, values.len() / rows]), device)
    }

    fn value(t: Tensor<1>) -> f64 {
        t.into_scalar::<f32>() as f64
    }

    /// Points on a line: class 0 at 0 and 1, class 1 at 3 and 7.
    fn line(device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
        let e = matrix(&[0.0, 1.0, 3.0, 7.0], 4, device);
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 0, 1, 1], [4]), device);
        (e, labels)
    }

    #[test]
    fn mining_picks_the_triplets_its_definition_names() {
        let device = Device::default();
        let (e, labels) = line(&device);
        let m = 1.0;
        // Batch-hard: anchor 0: p = 1 (d 1), nearest negative 3 → relu(1 − 3 + 1) = 0; anchor 1: p 0 (1), n 3 (2)
        // → 0; anchor 3: p 7 (4), n 1 (2) → 3; anchor 7: p 3 (4), n 1 (6) → 0. Mean 0.75.
        let hard = value(mined_triplet_loss(e.clone(), labels.clone(), m, Mining::BatchHard).unwrap());
        assert!((hard - 0.75).abs() < 1e-5, "{hard}");
        // Batch-all, triplets with a positive loss: (1,0,3): 1−2+1 = 0 → no; (3,7,0): 4−3+1 = 2; (3,7,1): 4−2+1 = 3;
        // (7,3,0): 4−7+1 < 0; (7,3,1): 4−6+1 < 0; (0,1,3): 1−3+1 < 0. Mean of 2 and 3 = 2.5.
        let all = value(mined_triplet_loss(e.clone(), labels.clone(), m, Mining::BatchAll).unwrap());
        assert!((all - 2.5).abs() < 1e-5, "{all}");
        // Semi-hard: (0,1): negatives farther than 1: 3 (3), 7 → 3: relu(1−3+1) = 0; (1,0): d 1, negatives 2, 6 → 2:
        // 0; (3,7): d 4, negatives 3, 2 — none farther → the farthest, 3: relu(4−3+1) = 2; (7,3): d 4, negatives 7, 6
        // → 6: 0. Mean 0.5.
        let semi = value(mined_triplet_loss(e, labels, m, Mining::SemiHard).unwrap());
        assert!((semi - 0.5).abs() < 1e-5, "{semi}");
    }

    #[test]
    fn one_class_gives_a_zero_loss_with_a_graph() {
        let device = Device::default().autodiff();
        let e = matrix(&[0.0, 1.0, 3.0], 3, &device).require_grad();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 2, 2], [3]), &device);
        let loss = mined_triplet_loss(e.clone(), labels, 0.5, Mining::SemiHard).unwrap();
        let grads = loss.clone().backward();
        assert_eq!(value(loss), 0.0);
        assert!(e.grad(&grads).is_some());
    }

    #[test]
    fn contrastive_pulls_same_pairs_and_pushes_others_within_the_margin() {
        let device = Device::default();
        let a = matrix(&[0.0, 0.0, 0.0, 0.0, 1.0, 1.0], 3, &device);
        let b = matrix(&[3.0, 4.0, 0.6, 0.8, 1.0, 1.0], 3, &device);
        let same = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0], [3]), &device);
        // Pair 1: same, d = 5 → ½·25; pair 2: different, d = 1 < 2 → ½·1; pair 3: different, d = 0 → ½·4.
        let got = value(contrastive_loss(a, b, same, 2.0));
        assert!((got - (12.5 + 0.5 + 2.0) / 3.0).abs() < 1e-4, "{got}");
    }

    #[test]
    fn distances_are_euclidean_with_finite_gradients_at_zero() {
        let device = Device::default().autodiff();
        let e = matrix(&[0.0, 0.0, 3.0, 4.0, 0.0, 0.0], 3, &device).require_grad();
        let d = pairwise_distances(e.clone());
        let v = d.clone().into_data().try_to_vec::<f32>().unwrap();
        assert!((v[1] - 5.0).abs() < 1e-4 && v[2] < 1e-5 && v[0] < 1e-5, "{v:?}");
        let grads = d.sum().backward();
        let g = e.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
    }

    #[test]
    fn options_read_from_toml() {
        let t: TripletSpec = toml::from_str("mining = \"batch_hard\"").unwrap();
        assert_eq!((t.margin, t.mining), (0.2, Mining::BatchHard));
        assert!(toml::from_str::<TripletSpec>("mining = \"hardest\"").is_err());
        assert!(toml::from_str::<ContrastiveSpec>("margn = 1").is_err());
    }
}
