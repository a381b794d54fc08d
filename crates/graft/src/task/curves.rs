//! Ranking curves of a score against binary truth: the operating points at every distinct threshold, from which
//! ROC-AUC, average precision, the ROC and precision–recall curves and tuned thresholds are all read.
//!
//! One walk over the scores sorted from high to low, ties grouped (a threshold cannot separate equal scores), so
//! every consumer agrees on how ties count.

/// The counts when every score `≥ threshold` is called positive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OperatingPoint {
    pub threshold: f64,
    pub true_pos: usize,
    pub false_pos: usize,
}

/// All operating points of one scored set, highest threshold first.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub positives: usize,
    pub negatives: usize,
    pub points: Vec<OperatingPoint>,
}

impl Ranking {
    /// Ranks `(score, is_positive)` pairs. NaN scores are kept and never equal anything, so each is its own point.
    pub fn new(scored: impl IntoIterator<Item = (f64, bool)>) -> Ranking {
        let mut sorted: Vec<(f64, bool)> = scored.into_iter().collect();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        let positives = sorted.iter().filter(|s| s.1).count();
        let mut points = Vec::new();
        let (mut tp, mut fp) = (0, 0);
        let mut i = 0;
        while i < sorted.len() {
            let threshold = sorted[i].0;
            let mut j = i;
            // Grouping by `==` (not total order) merges -0.0 with 0.0.
            while j < sorted.len() && (j == i || sorted[j].0 == threshold) {
                if sorted[j].1 {
                    tp += 1;
                } else {
                    fp += 1;
                }
                j += 1;
            }
            points.push(OperatingPoint {
                threshold,
                true_pos: tp,
                false_pos: fp,
            });
            i = j;
        }
        Ranking {
            positives,
            negatives: sorted.len() - positives,
            points,
        }
    }

    /// Area under the ROC curve: the probability that a random positive outscores a random negative, ties counted
    /// 1/2 (scikit-learn's `roc_auc_score`). `None` unless both kinds of row occur.
    pub fn roc_auc(&self) -> Option<f64> {
        if self.positives == 0 || self.negatives == 0 {
            return None;
        }
        // Twice the Mann–Whitney U, in integers so that it is exact: each negative of a tie group is beaten by the
        // positives above the group and half-beaten by the positives in it.
        let (mut twice_u, mut tp_above, mut fp_above) = (0u128, 0u128, 0u128);
        for p in &self.points {
            let (tp, fp) = (p.true_pos as u128, p.false_pos as u128);
            let (group_pos, group_neg) = (tp - tp_above, fp - fp_above);
            twice_u += group_neg * (2 * tp_above + group_pos);
            (tp_above, fp_above) = (tp, fp);
        }
        Some(twice_u as f64 / (2 * self.positives as u128 * self.negatives as u128) as f64)
    }

    /// scikit-learn's `average_precision_score`: Σ (Rₙ − Rₙ₋₁) Pₙ over the thresholds, highest first. `None` without
    /// positives.
    pub fn average_precision(&self) -> Option<f64> {
        if self.positives == 0 {
            return None;
        }
        let mut last_recall = 0.0;
        let mut ap = 0.0;
        for (recall, precision) in self.pr_points().into_iter().skip(1) {
            ap += (recall - last_recall) * precision;
            last_recall = recall;
        }
        Some(ap)
    }

    /// `(false-positive rate, true-positive rate)` from (0, 0) through every threshold to (1, 1).
    pub fn roc_points(&self) -> Vec<(f64, f64)> {
        let (n, p) = (self.negatives.max(1) as f64, self.positives.max(1) as f64);
        std::iter::once((0.0, 0.0))
            .chain(
                self.points
                    .iter()
                    .map(|o| (o.false_pos as f64 / n, o.true_pos as f64 / p)),
            )
            .collect()
    }

    /// `(recall, precision)` from (0, 1) (scikit-learn's first point) through every threshold.
    pub fn pr_points(&self) -> Vec<(f64, f64)> {
        let p = self.positives.max(1) as f64;
        std::iter::once((0.0, 1.0))
            .chain(self.points.iter().map(|o| {
                let called = (o.true_pos + o.false_pos).max(1) as f64;
                (o.true_pos as f64 / p, o.true_pos as f64 / called)
            }))
            .collect()
    }
}

/// At most `max` points of a curve for a chart: the first and last always, evenly spaced ones between.
pub fn thin(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max.max(2) {
        return points.to_vec();
    }
    let last = points.len() - 1;
    let steps = max.max(2) - 1;
    (0..=steps).map(|k| points[k * last / steps]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranking(scores: &[f64], positives: &[bool]) -> Ranking {
        Ranking::new(scores.iter().copied().zip(positives.iter().copied()))
    }

    #[test]
    fn ties_form_one_operating_point() {
        let r = ranking(&[0.4, 0.8, 0.4, 0.1], &[true, true, false, false]);
        let counts: Vec<(f64, usize, usize)> = r
            .points
            .iter()
            .map(|p| (p.threshold, p.true_pos, p.false_pos))
            .collect();
        assert_eq!(counts, vec![(0.8, 1, 0), (0.4, 2, 1), (0.1, 2, 2)]);
        assert_eq!(r.roc_points(), vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        assert_eq!(
            r.pr_points(),
            vec![(0.0, 1.0), (0.5, 1.0), (1.0, 2.0 / 3.0), (1.0, 0.5)]
        );
    }

    #[test]
    fn auc_and_average_precision_match_sklearn() {
        // sklearn: roc_auc_score([0,0,0,1,1], [0.1,0.4,0.35,0.8,0.3]) = 0.6666… ; average_precision_score = 0.75.
        let r = ranking(&[0.1, 0.4, 0.35, 0.8, 0.3], &[false, false, false, true, true]);
        assert!((r.roc_auc().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.average_precision().unwrap() - 0.75).abs() < 1e-12);
        // Ties: roc_auc_score([1,0,1,0], [0.5,0.5,0.5,0.2]) = 0.75; average_precision_score = 2/3.
        let t = ranking(&[0.5, 0.5, 0.5, 0.2], &[true, false, true, false]);
        assert!((t.roc_auc().unwrap() - 0.75).abs() < 1e-12);
        assert!((t.average_precision().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(ranking(&[0.3, 0.2], &[true, true]).roc_auc(), None);
        assert_eq!(ranking(&[0.3, 0.2], &[false, false]).average_precision(), None);
    }

    #[test]
    fn thinning_keeps_the_ends() {
        let pts: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, 0.0)).collect();
        let t = thin(&pts, 11);
        assert_eq!(t.len(), 11);
        assert_eq!((t[0].0, t[10].0), (0.0, 999.0));
        assert_eq!(thin(&pts[..5], 11).len(), 5);
    }
}
