//! Decision thresholds for binary and multi-label outputs, tuned on the validation split: the probability above
//! which an output counts as positive, chosen to maximize F1, Youden's J (TPR − FPR), or recall subject to a
//! precision floor, instead of a fixed 0.5 that rarely suits a skewed class balance.

use crate::task::curves::Ranking;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What the threshold maximizes: `"f1"`, `"youden"`, or `{ recall_at_precision = 0.9 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    F1,
    Youden,
    RecallAtPrecision(f64),
}

/// `[train] threshold = { objective = "f1" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    pub objective: Objective,
}

/// The threshold `t` (positive when p ≥ t) that maximizes `objective` over `scores` with their true `positives`,
/// and the objective's value there. Every distinct score is a candidate; among equal values the higher threshold
/// wins (fewer positives predicted). `None` when the objective cannot be met (no positive example, or no threshold
/// reaches the precision floor).
pub fn tune(scores: &[f32], positives: &[bool], objective: &Objective) -> Option<(f64, f64)> {
    let ranking = Ranking::new(scores.iter().map(|&s| s as f64).zip(positives.iter().copied()));
    let (p, n) = (ranking.positives, ranking.negatives);
    if p == 0 {
        return None;
    }
    let mut best: Option<(f64, f64, f64)> = None; // (value, precision, threshold)
    for point in &ranking.points {
        let (tp, fp) = (point.true_pos, point.false_pos);
        let recall = tp as f64 / p as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        let value = match objective {
            Objective::F1 => 2.0 * tp as f64 / (2 * tp + fp + (p - tp)) as f64,
            Objective::Youden => recall - if n > 0 { fp as f64 / n as f64 } else { 0.0 },
            Objective::RecallAtPrecision(floor) if precision >= *floor => recall,
            Objective::RecallAtPrecision(_) => continue,
        };
        // Strictly better only: walking down from the highest threshold, ties keep the higher one.
        if best.is_none_or(|(v, bp, _)| value > v || (value == v && precision > bp)) {
            best = Some((value, precision, point.threshold));
        }
    }
    best.map(|(v, _, t)| (t, v))
}

impl ThresholdSpec {
    pub fn check(&self) -> Result<()> {
        if let Objective::RecallAtPrecision(f) = self.objective
            && !(f > 0.0 && f <= 1.0)
        {
            return Err(
                Error::new(format!("expected a precision in (0, 1], found {f}")).at("train.threshold.objective")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores and labels where every objective has one clear best threshold.
    fn case() -> (Vec<f32>, Vec<bool>) {
        let scores = vec![0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1];
        let labels = vec![true, true, false, true, true, false, false, true, false, false];
        (scores, labels)
    }

    /// The objective at threshold t computed directly, for comparison with every candidate.
    fn at(scores: &[f32], labels: &[bool], t: f32, objective: &Objective) -> Option<f64> {
        let tp = scores.iter().zip(labels).filter(|(s, l)| **s >= t && **l).count() as f64;
        let fp = scores.iter().zip(labels).filter(|(s, l)| **s >= t && !**l).count() as f64;
        let p = labels.iter().filter(|l| **l).count() as f64;
        let n = labels.len() as f64 - p;
        match objective {
            Objective::F1 => Some(2.0 * tp / (tp + fp + p)),
            Objective::Youden => Some(tp / p - fp / n),
            Objective::RecallAtPrecision(f) => (tp / (tp + fp) >= *f).then_some(tp / p),
        }
    }

    #[test]
    fn the_tuned_threshold_maximizes_its_objective() {
        let (scores, labels) = case();
        for objective in [Objective::F1, Objective::Youden, Objective::RecallAtPrecision(0.75)] {
            let (t, value) = tune(&scores, &labels, &objective).unwrap();
            assert_eq!(at(&scores, &labels, t as f32, &objective), Some(value), "{objective:?}");
            for &c in &scores {
                if let Some(v) = at(&scores, &labels, c, &objective) {
                    assert!(v <= value + 1e-12, "{objective:?}: threshold {c} gives {v} > {value}");
                }
            }
        }
        // By hand: at 0.6, tp 4, fp 1, fn 1: F1 = 8/10 (at 0.3 it is 10/13), Youden 0.8 − 0.2, and precision 0.8
        // meets the 0.75 floor with recall 0.8.
        let (t, f1) = tune(&scores, &labels, &Objective::F1).unwrap();
        assert_eq!((t as f32, f1), (0.6, 0.8));
        assert_eq!(tune(&scores, &labels, &Objective::Youden).unwrap().0 as f32, 0.6);
        assert_eq!(
            tune(&scores, &labels, &Objective::RecallAtPrecision(0.75)).unwrap(),
            (0.6000000238418579, 0.8)
        );
        assert_eq!(tune(&scores, &labels, &Objective::RecallAtPrecision(1.01)), None);
        assert_eq!(tune(&scores, &[false; 10], &Objective::F1), None);
    }
}
