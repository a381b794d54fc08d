//! `graft ood`: how well a trained model's out-of-distribution scores separate two sets of inputs, with the
//! optional HTML report (the scores come from `infer::ood`, the page from `report`).

use std::path::Path;

use burn::prelude::Device;

use crate::error::Result;
use crate::infer::reject::ood_separation;
use crate::report::{OodScore, write_ood_report};

/// The inputs of `inside` (in-distribution) against those of `outside`, both in any format `predict` reads:
/// `{"scores": {"max_softmax": {"auroc", "aupr", "fpr_at_95_tpr"}, ...}}`, and `report` (an `.html` path) with
/// each score's histograms and ROC curves when given. `mahalanobis` needs the feature statistics a model trained
/// with `[train] reject` carries (`ood.json`).
pub fn ood_report(
    model_dir: &Path,
    inside: &Path,
    outside: &Path,
    report: Option<&Path>,
    seed: u64,
    device: &Device,
) -> Result<serde_json::Value> {
    let separation = ood_separation(model_dir, inside, outside, seed, device)?;
    if let Some(path) = report {
        let parts: Vec<OodScore> = separation
            .scores
            .iter()
            .map(|(name, x, y)| {
                let m = &separation.doc["scores"][*name];
                let fmt = |k: &str| m[k].as_f64().map_or("—".to_string(), |v| format!("{v:.4}"));
                OodScore {
                    name,
                    inside: x,
                    outside: y,
                    figures: vec![
                        ("AUROC", fmt("auroc")),
                        ("AUPR", fmt("aupr")),
                        ("FPR at 95% TPR", fmt("fpr_at_95_tpr")),
                    ],
                }
            })
            .collect();
        let title = format!("{} vs {}", inside.display(), outside.display());
        write_ood_report(path, &title, &parts)?;
    }
    Ok(separation.doc)
}
