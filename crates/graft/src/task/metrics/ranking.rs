//! The ranking metrics shared by the classification and multi-label accumulators: ROC-AUC and average precision
//! averaged over the classes where they are defined, and the ROC and precision–recall curves the report draws.

use serde_json::Value;

use super::{json_f64, mean};
use crate::task::curves::Ranking;

/// The mean of the defined values, `None` when none is.
pub(super) fn mean_defined(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let defined: Vec<f64> = values.flatten().collect();
    (!defined.is_empty()).then(|| mean(&defined))
}

pub(super) fn curves_json(rankings: Vec<(usize, Ranking)>, max_points: usize) -> Value {
    let points = |pts: Vec<(f64, f64)>| -> Value {
        Value::Array(
            crate::task::curves::thin(&pts, max_points)
                .into_iter()
                .map(|(x, y)| Value::Array(vec![json_f64(x), json_f64(y)]))
                .collect(),
        )
    };
    let (mut roc, mut pr) = (vec![], vec![]);
    for (class, r) in rankings {
        if let Some(auc) = r.roc_auc() {
            roc.push(serde_json::json!({"class": class, "auc": json_f64(auc), "points": points(r.roc_points())}));
            let ap = r.average_precision().map_or(Value::Null, json_f64);
            pr.push(serde_json::json!({"class": class, "average_precision": ap, "points": points(r.pr_points())}));
        }
    }
    serde_json::json!({"roc": roc, "pr": pr})
}

/// ROC-AUC of float64 scores (compared in float32, as the metrics are).
pub(crate) fn roc_auc_f64(scored: &[(f64, bool)]) -> Option<f64> {
    binary_roc_auc(scored.iter().map(|&(s, p)| (s as f32, p)).collect())
}

/// ROC-AUC of `scores` for the positive rows: the probability that a random positive outscores a random negative,
/// ties counted 1/2. `None` unless both kinds of row occur.
fn binary_roc_auc(scored: Vec<(f32, bool)>) -> Option<f64> {
    Ranking::new(scored.into_iter().map(|(s, p)| (s as f64, p))).roc_auc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half() {
        // One positive and one negative at the same score: a coin flip.
        assert_eq!(binary_roc_auc(vec![(0.5, true), (0.5, false)]), Some(0.5));
        assert_eq!(
            binary_roc_auc(vec![(0.0, true), (-0.0, false), (1.0, true)]),
            Some(0.75)
        );
        assert_eq!(binary_roc_auc(vec![(0.2, false), (0.9, true)]), Some(1.0));
    }
}
