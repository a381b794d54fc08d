//! Metric learning: losses on embeddings rather than on predictions, for siamese and triplet networks that learn a
//! space where distance means dissimilarity (face verification, retrieval, few-shot). Pairs (contrastive,
//! Hadsell et al. 2006) and given triplets (PyTorch's `F.triplet_margin_loss`) come from the data pipeline;
//! mined triplets are found inside each labeled batch (batch-all and batch-hard, Hermans et al. 2017; semi-hard,
//! FaceNet / TensorFlow Addons' `triplet_semihard_loss`), since random triplets are mostly too easy to teach
//! anything. Distances are Euclidean (not squared), with a square root whose gradient stays finite where two
//! embeddings coincide.

use burn::prelude::*;
use burn::tensor::{Bool, Int, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::task::divergence::same_shape;

/// `eps` of PyTorch's `F.pairwise_distance`, which [`triplet_margin_loss`] adds to each difference as torch does.
pub const TRIPLET_EPS: f64 = 1e-6;

/// √x elementwise with a finite gradient at 0: `x ≤ 0` gives 0 and a zero gradient (the convention PyTorch's norm
/// uses at 0; the true derivative 1/(2√x) is infinite there). How: the zeros are replaced by 1 before the square
/// root and the result is masked back to 0, so the backward pass divides by 2·√1 rather than by 0, and the outer
/// mask then zeroes that gradient. Any shape.
pub fn safe_sqrt<const D: usize>(squared: Tensor<D>) -> Tensor<D> {
    let zero = squared.clone().lower_equal_elem(0.0);
    squared.mask_fill(zero.clone(), 1.0).sqrt().mask_fill(zero, 0.0)
}

/// The Euclidean norm of each row, through [`safe_sqrt`]: `[n, d]` → `[n]`.
pub fn row_norms(x: Tensor<2>) -> Tensor<1> {
    safe_sqrt(x.powi_scalar(2).sum_dim(1).squeeze_dim::<1>(1))
}

/// Euclidean distances between every pair of rows: `embeddings [n, d]` → `[n, n]`, zero on the diagonal, with the
/// [`safe_sqrt`] so the diagonal (and any pair of identical rows) has a zero gradient, not NaN. Computed from the
/// differences `[n, n, d]`, not from ‖a‖² + ‖b‖² − 2a·b: that form cancels in float32 and gives distances near
/// √(ε·‖a‖²) ≈ 3e-4·‖a‖ for close rows, where margins are decided; the cost is `n²·d` memory.
pub fn pairwise_distances(embeddings: Tensor<2>) -> Tensor<2> {
    let [n, d] = embeddings.dims();
    let rows = embeddings.clone().unsqueeze_dim::<3>(1).expand([n, n, d]);
    let cols = embeddings.unsqueeze_dim::<3>(0).expand([n, n, d]);
    safe_sqrt((rows - cols).powi_scalar(2).sum_dim(2).squeeze_dim::<2>(2))
}

fn check_margin(what: &str, margin: f64) -> Result<()> {
    if margin > 0.0 && margin.is_finite() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{what}: margin must be positive and finite, found {margin}"
        )))
    }
}

/// The contrastive loss of Hadsell, Chopra & LeCun (2006): mean over pairs of ½·[y·d² + (1 − y)·max(0, margin −
/// d)²], d = ‖a − b‖₂. `a [n, d]`, `b [n, d]` the two embeddings of each pair, `same [n]`: 1 for a same-class
/// pair, 0 otherwise; `margin > 0`: dissimilar pairs farther apart than it cost nothing. The y·d² term is taken
/// from the squared distance directly; max(0, margin − d) goes through [`safe_sqrt`], so an identical dissimilar
/// pair has a zero gradient (torch's norm gives the same). → `[1]`.
pub fn contrastive_loss(a: Tensor<2>, b: Tensor<2>, same: Tensor<1>, margin: f64) -> Result<Tensor<1>> {
    check_margin("contrastive_loss", margin)?;
    let dims = a.dims();
    same_shape("contrastive_loss", "a", dims, "b", b.dims())?;
    let [labels] = same.dims();
    if labels != dims[0] {
        return Err(Error::new(format!(
            "contrastive_loss: `same` must hold one value per pair ({}), found {labels}",
            dims[0]
        )));
    }
    let squared = (a - b).powi_scalar(2).sum_dim(1).squeeze_dim::<1>(1);
    let d = safe_sqrt(squared.clone());
    let short = d.neg().add_scalar(margin).clamp_min(0.0).powi_scalar(2);
    let per_pair = same.clone() * squared + same.neg().add_scalar(1.0) * short;
    Ok(per_pair.mean().mul_scalar(0.5))
}

/// PyTorch's `F.triplet_margin_loss(anchor, positive, negative, margin, p=2, eps=1e-6, swap=False)`: mean over
/// triplets of max(0, d(a, p) − d(a, n) + margin), with torch's `pairwise_distance` d(x, y) = ‖x − y + eps‖₂
/// ([`TRIPLET_EPS`] added to every coordinate of the difference). `anchor`, `positive`, `negative`: `[n, d]` each;
/// `margin > 0` (torch rejects others too). → `[1]`.
pub fn triplet_margin_loss(
    anchor: Tensor<2>,
    positive: Tensor<2>,
    negative: Tensor<2>,
    margin: f64,
) -> Result<Tensor<1>> {
    check_margin("triplet_margin_loss", margin)?;
    let dims = anchor.dims();
    same_shape("triplet_margin_loss", "anchor", dims, "positive", positive.dims())?;
    same_shape("triplet_margin_loss", "anchor", dims, "negative", negative.dims())?;
    let d_ap = row_norms((anchor.clone() - positive).add_scalar(TRIPLET_EPS));
    let d_an = row_norms((anchor - negative).add_scalar(TRIPLET_EPS));
    Ok((d_ap - d_an).add_scalar(margin).clamp_min(0.0).mean())
}

/// How [`mined_triplet_loss`] picks triplets (a, p, n) in a batch: p ≠ a has a's label, n another label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mining {
    /// Every valid triplet; the mean over those whose loss is above 0 (Hermans et al. 2017, "batch all").
    BatchAll,
    /// Per anchor, the farthest positive and the closest negative; the mean over anchors that have both.
    BatchHard,
    /// Per positive pair (a, p), the closest negative farther from a than p, or the farthest negative when every
    /// negative is closer (FaceNet; TensorFlow Addons' `triplet_semihard_loss`); the mean over positive pairs.
    #[default]
    SemiHard,
}

/// Masks built on the host from the labels: `[a][j]` for p = j (same label, j ≠ a) and n = j (other label).
struct LabelMasks {
    n: usize,
    positive: Vec<bool>,
    negative: Vec<bool>,
}

impl LabelMasks {
    fn new(labels: &[i64]) -> LabelMasks {
        let n = labels.len();
        let mut positive = vec![false; n * n];
        let mut negative = vec![false; n * n];
        for (a, la) in labels.iter().enumerate() {
            for (j, lj) in labels.iter().enumerate() {
                positive[a * n + j] = a != j && la == lj;
                negative[a * n + j] = la != lj;
            }
        }
        LabelMasks { n, positive, negative }
    }

    fn has_positive(&self, a: usize) -> bool {
        self.positive[a * self.n..(a + 1) * self.n].iter().any(|&p| p)
    }

    fn has_negative(&self, a: usize) -> bool {
        self.negative[a * self.n..(a + 1) * self.n].iter().any(|&p| p)
    }
}

fn bool_tensor<const D: usize>(values: Vec<bool>, shape: [usize; D], device: &Device) -> Tensor<D, Bool> {
    Tensor::<D, Bool>::from_data(TensorData::new(values, shape), device)
}

/// The triplet loss with triplets mined from the batch's labels (see [`Mining`]): per triplet max(0, d(a, p) −
/// d(a, n) + margin) on Euclidean [`pairwise_distances`]. `embeddings [n, d]`, `labels [n]` (any integers; equal
/// means same class), `margin > 0`. → `[1]`.
///
/// A batch without any valid triplet (one class only, every class a singleton, a single row), or where batch-all
/// finds no triplet with a loss above 0, gives a loss of 0 that is still connected to `embeddings` (a zero
/// gradient, so a training step goes through), not an error. Anchors without a positive or without a negative take
/// no part. In semi-hard mining that also drops positive pairs whose anchor has no negative, where TensorFlow
/// Addons compares with a distance of 0 instead.
///
/// Everything runs as masked tensor operations: batch-hard on the `[n, n]` distances, batch-all and semi-hard on
/// `[n, n, n]` (anchor, positive, negative) tensors, so memory grows as n³. Only the label masks are built on the
/// host (reading the labels waits for the device).
pub fn mined_triplet_loss(
    embeddings: Tensor<2>,
    labels: Tensor<1, Int>,
    margin: f64,
    mining: Mining,
) -> Result<Tensor<1>> {
    check_margin("mined_triplet_loss", margin)?;
    let [n, _] = embeddings.dims();
    let [count] = labels.dims();
    if count != n {
        return Err(Error::new(format!(
            "mined_triplet_loss: {n} embeddings but {count} labels; one label per row expected"
        )));
    }
    if n == 0 {
        return Err(Error::new("mined_triplet_loss: an empty batch"));
    }
    let labels = labels
        .try_into_vec_as::<i64>()
        .map_err(|e| Error::new(format!("mined_triplet_loss: reading the labels: {e}")))?;
    let masks = LabelMasks::new(&labels);
    let device = embeddings.device();
    let dist = pairwise_distances(embeddings);
    let positive = bool_tensor(masks.positive.clone(), [n, n], &device);
    let negative = bool_tensor(masks.negative.clone(), [n, n], &device);
    let (not_positive, not_negative) = (positive.clone().bool_not(), negative.clone().bool_not());
    // [a, p, k] masks from the [a, j] ones: j = p for the positive, j = k for the negative.
    let negative3 = negative.unsqueeze_dim::<3>(1).expand([n, n, n]);
    // Masked-out entries get ±∞ so a max or min never picks them; they never reach the loss (each mean below
    // masks its invalid terms with 0 and their gradients with them; no ∞ is ever multiplied in the backward pass).
    let farthest = |d: Tensor<2>, exclude: Tensor<2, Bool>| d.mask_fill(exclude, f64::NEG_INFINITY).max_dim(1);
    let closest = |d: Tensor<2>, exclude: Tensor<2, Bool>| d.mask_fill(exclude, f64::INFINITY).min_dim(1);
    let loss = match mining {
        Mining::BatchAll => {
            let positive3 = positive.unsqueeze_dim::<3>(2).expand([n, n, n]);
            let invalid = positive3.bool_and(negative3).bool_not();
            let d_ap = dist.clone().unsqueeze_dim::<3>(2).expand([n, n, n]);
            let d_an = dist.unsqueeze_dim::<3>(1).expand([n, n, n]);
            let per = (d_ap - d_an).add_scalar(margin).clamp_min(0.0).mask_fill(invalid, 0.0);
            // The number of triplets with a loss above 0 (no gradient flows through a count).
            let active = per.clone().greater_elem(0.0).float().sum().clamp_min(1.0);
            per.sum() / active
        }
        Mining::BatchHard => {
            let valid: Vec<bool> = (0..n).map(|a| masks.has_positive(a) && masks.has_negative(a)).collect();
            let anchors = valid.iter().filter(|&&v| v).count();
            let invalid = bool_tensor(valid, [n], &device).bool_not();
            let hardest_positive = farthest(dist.clone(), not_positive).squeeze_dim::<1>(1);
            let hardest_negative = closest(dist, not_negative).squeeze_dim::<1>(1);
            (hardest_positive - hardest_negative)
                .add_scalar(margin)
                .clamp_min(0.0)
                .mask_fill(invalid, 0.0)
                .sum()
                .div_scalar(anchors.max(1) as f64)
        }
        Mining::SemiHard => {
            let mut pairs = masks.positive.clone();
            for (a, row) in pairs.chunks_mut(n).enumerate() {
                if !masks.has_negative(a) {
                    row.fill(false);
                }
            }
            let count = pairs.iter().filter(|&&v| v).count();
            let not_pair = bool_tensor(pairs, [n, n, 1], &device).bool_not();
            // [a, p, k]: d(a, p) and d(a, k).
            let d_ap = dist.clone().unsqueeze_dim::<3>(2);
            let d_ak = dist.clone().unsqueeze_dim::<3>(1).expand([n, n, n]);
            let outside = d_ak.clone().greater(d_ap.clone().expand([n, n, n])).bool_and(negative3);
            let has_outside = outside.clone().any_dim(2);
            let closest_outside = d_ak.mask_fill(outside.bool_not(), f64::INFINITY).min_dim(2);
            let farthest_negative = farthest(dist, not_negative).unsqueeze_dim::<3>(1).expand([n, n, 1]);
            let negative = farthest_negative.mask_where(has_outside, closest_outside);
            (d_ap - negative)
                .add_scalar(margin)
                .clamp_min(0.0)
                .mask_fill(not_pair, 0.0)
                .sum()
                .div_scalar(count.max(1) as f64)
        }
    };
    Ok(loss)
}

fn default_triplet_margin() -> f64 {
    0.2
}

fn default_contrastive_margin() -> f64 {
    1.0
}

/// `triplet = { margin = 0.2, mining = "semi_hard" }` (both optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripletSpec {
    #[serde(default = "default_triplet_margin")]
    pub margin: f64,
    #[serde(default)]
    pub mining: Mining,
}

impl Default for TripletSpec {
    fn default() -> Self {
        TripletSpec {
            margin: default_triplet_margin(),
            mining: Mining::default(),
        }
    }
}

impl TripletSpec {
    pub fn check(&self) -> Result<()> {
        check_margin("triplet", self.margin)
    }

    /// [`mined_triplet_loss`] with these options: `embeddings [n, d]`, `labels [n]` → `[1]`.
    pub fn compute(&self, embeddings: Tensor<2>, labels: Tensor<1, Int>) -> Result<Tensor<1>> {
        mined_triplet_loss(embeddings, labels, self.margin, self.mining)
    }
}

/// `contrastive = { margin = 1.0 }` (optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContrastiveSpec {
    #[serde(default = "default_contrastive_margin")]
    pub margin: f64,
}

impl Default for ContrastiveSpec {
    fn default() -> Self {
        ContrastiveSpec {
            margin: default_contrastive_margin(),
        }
    }
}

impl ContrastiveSpec {
    pub fn check(&self) -> Result<()> {
        check_margin("contrastive", self.margin)
    }

    /// [`contrastive_loss`] with this margin: `a [n, d]`, `b [n, d]`, `same [n]` → `[1]`.
    pub fn compute(&self, a: Tensor<2>, b: Tensor<2>, same: Tensor<1>) -> Result<Tensor<1>> {
        contrastive_loss(a, b, same, self.margin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad() -> Device {
        Device::default().autodiff()
    }

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    fn scalar(t: Tensor<1>) -> f64 {
        host(t)[0] as f64
    }

    fn close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    fn points() -> Tensor<2> {
        // Two classes on a line, plus a third class off it.
        Tensor::<2>::from_floats([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [4.5, 0.0], [0.0, 2.0]], &ad())
    }

    fn labels(values: &[i64]) -> Tensor<1, Int> {
        Tensor::<1, Int>::from_data(TensorData::new(values.to_vec(), [values.len()]), &ad())
    }

    #[test]
    fn pairwise_distances_are_exact_and_their_gradient_is_finite_on_identical_rows() {
        let x = Tensor::<2>::from_floats([[3.0, 4.0], [0.0, 0.0], [3.0, 4.0]], &ad()).require_grad();
        let d = pairwise_distances(x.clone());
        assert_eq!(host(d.clone()), vec![0.0, 5.0, 0.0, 5.0, 0.0, 5.0, 0.0, 5.0, 0.0]);
        let grads = d.sum().backward();
        let g = host(x.grad(&grads).unwrap());
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        // Row 0 moves away from row 1 only (row 2 coincides with it): 2·(3, 4)/5.
        close(g[0] as f64, 1.2);
        close(g[1] as f64, 1.6);
        assert_eq!(
            host(safe_sqrt(Tensor::<1>::from_floats([0.0, 4.0, -1.0], &ad()))),
            vec![0.0, 2.0, 0.0]
        );
    }

    #[test]
    fn contrastive_loss_follows_hadsell_et_al() {
        let a = Tensor::<2>::from_floats([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], &ad()).require_grad();
        let b = Tensor::<2>::from_floats([[0.6, 0.8], [0.3, 0.4], [3.0, 4.0], [1.0, 1.0]], &ad());
        let same = Tensor::<1>::from_floats([1.0, 0.0, 0.0, 0.0], &ad());
        let v = contrastive_loss(a.clone(), b, same, 1.0).unwrap();
        // ½·mean(1·1², (1 − 0.5)², 0 (beyond the margin), (1 − 0)²).
        close(scalar(v.clone()), 0.5 * (1.0 + 0.25 + 0.0 + 1.0) / 4.0);
        let g = host(a.grad(&v.backward()).unwrap());
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        assert_eq!(&g[6..8], &[0.0, 0.0], "identical dissimilar pair: zero gradient");
    }

    #[test]
    fn triplet_margin_loss_adds_torch_eps() {
        let a = Tensor::<2>::from_floats([[0.0, 0.0]], &ad());
        let p = Tensor::<2>::from_floats([[1.0, 0.0]], &ad());
        let n = Tensor::<2>::from_floats([[0.0, 1.5]], &ad());
        let v = scalar(triplet_margin_loss(a, p, n, 1.0).unwrap());
        let dp = ((1.0f64 - 1e-6).powi(2) + 1e-12).sqrt();
        let dn = (1e-12 + (1.5f64 - 1e-6).powi(2)).sqrt();
        close(v, dp - dn + 1.0);
    }

    #[test]
    fn mining_picks_the_documented_triplets() {
        // Labels: 0 0 1 1 2. Distances from row 0: 1 (pos), 3, 4.5, 2; from row 1: 1 (pos), 2, 3.5, √5.
        let x = points();
        let y = || labels(&[0, 0, 1, 1, 2]);
        let m = 1.5;
        // Batch hard: anchor 0: 1 − 2 + 1.5 = 0.5; anchor 1: 1 − 2 + 1.5 = 0.5; anchor 2 (pos 1.5, closest neg
        // 2): 1; anchor 3 (pos 1.5, closest neg 3.5 from row 1, √(4.5² + 4) from row 4): 1.5 − 3.5 + 1.5 = −0.5
        // → 0; anchor 4 has no positive.
        let hard = scalar(mined_triplet_loss(x.clone(), y(), m, Mining::BatchHard).unwrap());
        close(hard, (0.5 + 0.5 + 1.0 + 0.0) / 4.0);
        // Semi-hard: (0, 1): negatives farther than 1: all (3, 4.5, 2) → 2: 0.5. (1, 0): 2, 3.5, √5 → 2: 0.5.
        // (2, 3): d = 1.5; negatives 3, 2, √13 → 2: 1. (3, 2): 1.5; negatives 4.5, 3.5, √24.25 → 3.5: 0 (clamped).
        let semi = scalar(mined_triplet_loss(x.clone(), y(), m, Mining::SemiHard).unwrap());
        close(semi, (0.5 + 0.5 + 1.0 + 0.0) / 4.0);
        // Semi-hard falls back to the farthest negative when all are closer than the positive.
        let far = Tensor::<2>::from_floats([[0.0, 0.0], [10.0, 0.0], [1.0, 0.0], [2.0, 0.0]], &ad());
        let fallback = scalar(mined_triplet_loss(far, labels(&[0, 0, 1, 1]), 1.0, Mining::SemiHard).unwrap());
        // (0, 1): d 10, negatives 1, 2 → farthest 2: 9. (1, 0): negatives 9, 8 → farthest 9: 2. (2, 3): 1;
        // negatives 1 (row 0), 9 → 9: 0. (3, 2): 1; negatives 2, 8 → 2: 0.
        close(fallback, (9.0 + 2.0) / 4.0);
    }

    #[test]
    fn batch_all_averages_over_the_active_triplets() {
        let x = Tensor::<2>::from_floats([[0.0, 0.0], [1.0, 0.0], [1.5, 0.0]], &ad());
        // Triplets: (0,1,2): 1 − 1.5 + 1 = 0.5; (1,0,2): 1 − 0.5 + 1 = 1.5.
        let v = scalar(mined_triplet_loss(x, labels(&[0, 0, 1]), 1.0, Mining::BatchAll).unwrap());
        close(v, 1.0);
    }

    #[test]
    fn no_valid_triplet_gives_a_zero_loss_with_a_graph() {
        for mining in [Mining::BatchAll, Mining::BatchHard, Mining::SemiHard] {
            for y in [vec![3, 3, 3], vec![0, 1, 2], vec![5]] {
                let x = Tensor::<2>::ones([y.len(), 2], &ad()).require_grad();
                let v = mined_triplet_loss(x.clone(), labels(&y), 0.2, mining).unwrap();
                assert_eq!(scalar(v.clone()), 0.0, "{mining:?} {y:?}");
                let g = x.grad(&v.backward()).expect("a gradient");
                assert!(host(g).iter().all(|v| *v == 0.0));
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors_naming_what_was_expected() {
        let x = points();
        let e = mined_triplet_loss(x.clone(), labels(&[0, 1]), 0.2, Mining::BatchAll).unwrap_err();
        assert!(e.to_string().contains("5 embeddings but 2 labels"), "{e}");
        let e = mined_triplet_loss(x.clone(), labels(&[0, 0, 1, 1, 2]), 0.0, Mining::BatchAll).unwrap_err();
        assert!(e.to_string().contains("margin must be positive"), "{e}");
        let short = Tensor::<2>::zeros([5, 3], &ad());
        let e = triplet_margin_loss(x.clone(), x.clone(), short, 1.0).unwrap_err();
        assert!(e.to_string().contains("[5, 2] and [5, 3]"), "{e}");
        let same = Tensor::<1>::ones([4], &ad());
        let e = contrastive_loss(x.clone(), x, same, 1.0).unwrap_err();
        assert!(e.to_string().contains("one value per pair (5), found 4"), "{e}");
    }

    #[test]
    fn specs_parse_with_defaults_and_reject_unknown_keys() {
        let t: TripletSpec = toml::from_str("").unwrap();
        assert_eq!(
            t,
            TripletSpec {
                margin: 0.2,
                mining: Mining::SemiHard
            }
        );
        let t: TripletSpec = toml::from_str("mining = \"batch_hard\"\nmargin = 0.5").unwrap();
        assert_eq!(
            t,
            TripletSpec {
                margin: 0.5,
                mining: Mining::BatchHard
            }
        );
        assert!(toml::from_str::<TripletSpec>("minning = \"batch_all\"").is_err());
        let e = toml::from_str::<TripletSpec>("mining = \"hard\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch_hard") && e.contains("semi_hard"), "{e}");
        let c: ContrastiveSpec = toml::from_str("").unwrap();
        assert_eq!(c.margin, 1.0);
        assert!(ContrastiveSpec { margin: -1.0 }.check().is_err());
        assert!(toml::from_str::<ContrastiveSpec>("margin = 1.0\nmining = \"batch_all\"").is_err());
    }
}
