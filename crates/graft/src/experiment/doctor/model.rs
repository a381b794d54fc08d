//! The model checks: the built model at its initial weights on one batch of training rows.

use std::collections::BTreeMap;

use burn::module::Module;
use serde_json::json;

use super::{Check, Patient, Status};
use crate::error::Result;
use crate::model::io::named_tensors;
use crate::report::fmt_number;
use crate::task::loss::Task;
use crate::train::TrainStep;
use crate::train::diagnostics::{LayerStats, first_non_finite, layer_statistics, loss_and_outputs};
use crate::train::trainer::head_rows;

type ModelCheck = fn(&Patient) -> Result<Check>;

pub(super) const CHECKS: [(&str, ModelCheck); 6] = [
    ("initial_loss", initial_loss),
    ("nan_layers", nan_layers),
    ("gradient_flow", gradient_flow),
    ("dead_units", dead_units),
    ("activation_scale", activation_scale),
    ("update_ratio", update_ratio),
];

/// The loss a model that knows nothing would have on the probe batch: every output 0 (uniform class probabilities,
/// a 0.5 sigmoid, a regression output of 0 — the standardized target's mean), summed over the heads as training
/// weighs them.
pub(super) fn chance_loss(p: &Patient) -> Result<f64> {
    let model = p.model.valid();
    let device = model.devices().first().cloned().unwrap_or_default();
    let outs = model.forward(crate::layers::value::batch_inputs(&p.probe, &device)?, false, true)?;
    let mut total = 0.0;
    for (h, head) in p.heads.iter().enumerate() {
        let mut out = outs[head.output].clone();
        out.data = crate::map_data!(out.data, |t| t.zeros_like());
        let rows = head_rows(
            head,
            out,
            &p.probe,
            p.class_weights.get(h).and_then(|w| w.as_deref()),
            &device,
        )?;
        let loss = head
            .loss
            .compute(rows.logits, rows.target, rows.weights, rows.class_weights)?;
        total += head.weight * loss.into_scalar::<f32>() as f64;
    }
    Ok(total)
}

fn initial_loss(p: &Patient) -> Result<Check> {
    let (loss, _) = loss_and_outputs(&p.model.valid(), &p.heads, &p.class_weights, &p.probe, false)?;
    let loss = loss.into_scalar::<f32>() as f64;
    let chance = chance_loss(p)?;
    let regression = p.heads.iter().all(|h| h.task == Task::Regression);
    // A regression output starts with the spread of its random weights on top of the target's own.
    let (pass, warn) = if regression { (2.0, 5.0) } else { (1.2, 2.0) };
    let ratio = loss / chance.max(1e-12);
    let measured = format!(
        "loss {} at initialization on {} training rows; chance {chance:.4} ({})",
        fmt_number(loss),
        p.probe.len(),
        chance_words(p)
    );
    let details = json!({ "loss": loss, "chance": chance, "ratio": ratio });
    Ok(if !loss.is_finite() {
        Check::new(
            "initial_loss",
            Status::Fail,
            measured,
            "the loss is not finite before any training: see nan_layers",
        )
    } else if ratio <= pass || loss <= chance + 0.05 {
        Check::new("initial_loss", Status::Pass, measured, "")
    } else if ratio <= warn {
        Check::new(
            "initial_loss",
            Status::Warn,
            measured,
            "the initial outputs are confidently wrong: check the output layer's initializer and the scale of the \
             inputs",
        )
    } else {
        Check::new(
            "initial_loss",
            Status::Fail,
            format!("{measured}: {}× chance", fmt_number(ratio)),
            "the network starts far from chance: an initializer too wide (normal std = 1 on a wide layer?), \
             unscaled inputs, or a loss that does not match the output",
        )
    }
    .with(details))
}

/// What chance means for these heads, in words.
fn chance_words(p: &Patient) -> String {
    let words: Vec<String> = p
        .heads
        .iter()
        .map(|h| match h.task {
            Task::Multiclass => format!("ln {} = {:.4}", h.num_classes(), (h.num_classes() as f64).ln()),
            Task::Binary | Task::Multilabel => "ln 2 per output".to_string(),
            Task::Regression => "the loss of predicting the mean".to_string(),
        })
        .collect();
    words.join(", ")
}

fn nan_layers(p: &Patient) -> Result<Check> {
    let model = p.model.valid();
    Ok(match first_non_finite(&model, &p.probe)? {
        None => {
            let (loss, outputs) = loss_and_outputs(&model, &p.heads, &p.class_weights, &p.probe, false)?;
            let loss = loss.into_scalar::<f32>() as f64;
            if loss.is_finite() {
                Check::new(
                    "nan_layers",
                    Status::Pass,
                    format!("every layer's output is finite on {} training rows", p.probe.len()),
                    "",
                )
            } else {
                let largest = outputs
                    .last()
                    .map(|v| crate::train::diagnostics::host(v.data.clone()))
                    .unwrap_or_default()
                    .iter()
                    .fold(0f64, |m, &x| m.max((x as f64).abs()));
                Check::new(
                    "nan_layers",
                    Status::Fail,
                    format!(
                        "every layer's output is finite, but the loss is {loss}: the model's outputs reach {} and \
                         overflow it",
                        fmt_number(largest)
                    ),
                    "outputs this large come from an initializer far too wide or unscaled inputs",
                )
            }
        }
        Some((layer, inputs_finite)) => nan_found(&layer, inputs_finite, "at initialization"),
    })
}

/// The report of a first non-finite layer.
pub(super) fn nan_found(layer: &str, inputs_finite: bool, when: &str) -> Check {
    let (measured, advice) = if inputs_finite {
        (
            format!("layer '{layer}' turns finite inputs into NaN or infinity {when}"),
            "its weights or its arithmetic overflow: a narrower initializer, a lower learning rate, gradient \
             clipping, or normalization before it",
        )
    } else {
        (
            format!("layer '{layer}' is the first with NaN or infinity {when}, and it reads non-finite inputs"),
            "the data holds NaN or infinity (see data_finite)",
        )
    };
    Check::new("nan_layers", Status::Fail, measured, advice)
        .with(json!({ "layer": layer, "inputs_finite": inputs_finite }))
}

fn stats(p: &Patient) -> Result<Vec<LayerStats>> {
    Ok(layer_statistics(&p.model.independent_copy(), &p.heads, &p.class_weights, &p.probe, true)?.1)
}

fn gradient_flow(p: &Patient) -> Result<Check> {
    let stats = stats(p)?;
    let layers: Vec<&LayerStats> = stats
        .iter()
        .filter(|s| s.grad_norm.is_some() && !s.sparse_gradient)
        .collect();
    let ratios: Vec<(String, f64)> = layers
        .iter()
        .filter_map(|s| s.grad_ratio().map(|r| (s.node.clone(), r)))
        .collect();
    let details = json!({
        "layers": ratios.iter().map(|(n, r)| json!({ "layer": n, "grad_over_weight": r })).collect::<Vec<_>>()
    });
    if let Some(bad) = stats.iter().find(|s| s.non_finite_grads > 0) {
        return Ok(Check::new(
            "gradient_flow",
            Status::Fail,
            format!(
                "{} non-finite gradient values in layer '{}'",
                bad.non_finite_grads, bad.node
            ),
            "exploding gradients: gradient clipping (`clip_grad = { norm = 1.0 }`), a lower learning rate, \
             normalization layers",
        )
        .with(details));
    }
    let silent: Vec<&str> = layers
        .iter()
        .filter(|s| s.grad_norm == Some(0.0) && s.weight_norm.unwrap_or(0.0) > 0.0)
        .map(|s| s.node.as_str())
        .collect();
    let (Some(first), Some(last)) = (ratios.first(), ratios.last()) else {
        return Ok(Check::skip(
            "gradient_flow",
            "no trainable layer with weights outside embeddings",
        ));
    };
    let spread = first.1 / last.1.max(f64::MIN_POSITIVE);
    let measured = format!(
        "‖∇W‖/‖W‖ {:.2e} in the first trainable layer '{}', {:.2e} in the last '{}' (ratio {spread:.2e}) over {} layers",
        first.1,
        first.0,
        last.1,
        last.0,
        ratios.len()
    );
    let vanishing = "the first layers get almost no gradient: vanishing gradients (use ReLU-family activations \
                     instead of sigmoid/tanh in deep stacks, He initialization, batch normalization or residual \
                     connections), or activations growing toward the output (see activation_scale)";
    let exploding = "exploding gradients toward the input: a narrower initializer, normalization layers, gradient \
                     clipping";
    Ok(if !(spread.is_finite()) || spread < 1e-4 {
        Check::new("gradient_flow", Status::Fail, measured, vanishing)
    } else if spread > 1e4 {
        Check::new("gradient_flow", Status::Fail, measured, exploding)
    } else if spread < 1e-2 {
        Check::new("gradient_flow", Status::Warn, measured, vanishing)
    } else if spread > 1e2 {
        Check::new("gradient_flow", Status::Warn, measured, exploding)
    } else if !silent.is_empty() {
        Check::new(
            "gradient_flow",
            Status::Warn,
            format!("no gradient reaches {}; {measured}", silent.join(", ")),
            "a layer the loss does not depend on (disconnected, or behind dead units)",
        )
    } else {
        Check::new("gradient_flow", Status::Pass, measured, "")
    }
    .with(details))
}

fn dead_units(p: &Patient) -> Result<Check> {
    let (_, stats) = layer_statistics(&p.model.valid(), &p.heads, &p.class_weights, &p.probe, false)?;
    let relu: Vec<(String, usize, usize)> = stats
        .iter()
        .filter_map(|s| s.dead_units.map(|(d, n)| (s.node.clone(), d, n)))
        .collect();
    let Some(worst) = relu
        .iter()
        .max_by(|a, b| (a.1 as f64 / a.2 as f64).total_cmp(&(b.1 as f64 / b.2 as f64)))
    else {
        return Ok(Check::skip("dead_units", "no layer ends in a ReLU"));
    };
    let share = worst.1 as f64 / worst.2.max(1) as f64;
    let measured = format!(
        "worst: {} of {} units of '{}' never fire on {} training rows ({} ReLU layers)",
        worst.1,
        worst.2,
        worst.0,
        p.probe.len(),
        relu.len()
    );
    let details = json!({
        "layers": relu.iter().map(|(n, d, u)| json!({ "layer": n, "dead": d, "units": u })).collect::<Vec<_>>()
    });
    let advice = "dead ReLUs pass no gradient: check bias initializers and input scale, use He initialization, a \
                  lower learning rate, or leaky_relu";
    Ok(if share >= 0.9 {
        Check::new("dead_units", Status::Fail, measured, advice)
    } else if share >= 0.4 {
        Check::new("dead_units", Status::Warn, measured, advice)
    } else {
        Check::new("dead_units", Status::Pass, measured, "")
    }
    .with(details))
}

fn activation_scale(p: &Patient) -> Result<Check> {
    let (_, stats) = layer_statistics(&p.model.valid(), &p.heads, &p.class_weights, &p.probe, false)?;
    let outputs: Vec<usize> = p
        .model
        .outputs
        .iter()
        .filter_map(|s| match s {
            crate::model::graph::Source::Node(n, _) => Some(*n),
            _ => None,
        })
        .collect();
    let hidden: Vec<&LayerStats> = stats
        .iter()
        .enumerate()
        .filter(|(i, s)| !outputs.contains(i) && s.dead_units.is_none_or(|(d, n)| d < n))
        .map(|(_, s)| s)
        .collect();
    let Some(widest) = hidden.iter().max_by(|a, b| a.output_std.total_cmp(&b.output_std)) else {
        return Ok(Check::skip("activation_scale", "no hidden layer"));
    };
    let narrowest = hidden
        .iter()
        .filter(|s| s.zero_fraction < 1.0)
        .min_by(|a, b| a.output_std.total_cmp(&b.output_std))
        .unwrap_or(widest);
    let measured = format!(
        "hidden outputs' std from {:.3e} ('{}') to {:.3e} ('{}')",
        narrowest.output_std, narrowest.node, widest.output_std, widest.node
    );
    let details = json!({
        "layers": stats.iter().map(|s| json!({ "layer": s.node, "mean": s.output_mean, "std": s.output_std, "zeros": s.zero_fraction })).collect::<Vec<_>>()
    });
    let growing = "activations grow layer by layer: an initializer too wide for the layers' fan-in (use glorot/he), \
                   unscaled inputs, or missing normalization";
    Ok(if widest.output_std > 1e3 || !widest.output_std.is_finite() {
        Check::new("activation_scale", Status::Fail, measured, growing)
    } else if widest.output_std > 20.0 {
        Check::new("activation_scale", Status::Warn, measured, growing)
    } else if narrowest.output_std < 1e-4 {
        Check::new(
            "activation_scale",
            Status::Warn,
            measured,
            "activations shrink to nearly nothing: an initializer too narrow, or saturating activations",
        )
    } else {
        Check::new("activation_scale", Status::Pass, measured, "")
    }
    .with(details))
}

/// ‖ΔW‖/‖W‖ per node for one optimizer step on the probe batch at the configured rate (Karpathy's "update ratio":
/// around 1e-3 is healthy; far above, the rate is too high; far below, too low).
fn update_ratio(p: &Patient) -> Result<Check> {
    let config = p.fit_config();
    let mut step =
        crate::train::Supervised::new(p.model.independent_copy(), &p.heads, &config, &p.splits.train, p.seed)?;
    step.begin_epoch(1)?;
    let before = named_tensors(&p.model);
    if let Err(e) = step.train_batch(&p.probe, p.lr()) {
        return Ok(Check::new(
            "update_ratio",
            Status::Fail,
            format!("one step at lr {} failed: {e}", p.lr()),
            "lower the learning rate",
        ));
    }
    let after = named_tensors(&step.model);
    // What trains in the first epoch (gradual unfreezing leaves the lower groups frozen there).
    let trainable: std::collections::HashSet<String> = crate::model::params::parameters(&step.model)
        .into_iter()
        .filter(|i| i.trainable)
        .map(|i| i.name)
        .collect();
    let mut nodes: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (b, a) in before.iter().zip(&after) {
        if !trainable.contains(&b.name) || b.values.len() != a.values.len() {
            continue;
        }
        let node = b.name.split('.').next().unwrap_or_default().to_string();
        let e = nodes.entry(node).or_default();
        e.0 += b.values.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
        e.1 += b
            .values
            .iter()
            .zip(&a.values)
            .map(|(&x, &y)| ((y - x) as f64).powi(2))
            .sum::<f64>();
    }
    let mut ratios: Vec<(String, f64)> = nodes
        .into_iter()
        .filter(|(_, (w, _))| *w > 0.0)
        .map(|(n, (w, d))| (n, (d / w).sqrt()))
        .collect();
    if ratios.is_empty() {
        return Ok(Check::skip("update_ratio", "no trainable weights"));
    }
    ratios.sort_by(|a, b| a.1.total_cmp(&b.1));
    let median = ratios[ratios.len() / 2].1;
    let (lo, hi) = (&ratios[0], &ratios[ratios.len() - 1]);
    let measured = format!(
        "one step at lr {}: ‖ΔW‖/‖W‖ median {median:.2e} (from {:.2e} in '{}' to {:.2e} in '{}')",
        p.lr(),
        lo.1,
        lo.0,
        hi.1,
        hi.0
    );
    let details = json!({
        "lr": p.lr(),
        "layers": ratios.iter().map(|(n, r)| json!({ "layer": n, "update_over_weight": r })).collect::<Vec<_>>()
    });
    Ok(if !median.is_finite() || hi.1 > 1.0 {
        Check::new(
            "update_ratio",
            Status::Fail,
            measured,
            "one step rewrites the weights: the learning rate is far too high (see lr_finder)",
        )
    } else if median > 0.1 {
        Check::new(
            "update_ratio",
            Status::Warn,
            measured,
            "updates near a tenth of the weights' size: the learning rate is probably too high (see lr_finder)",
        )
    } else if median < 1e-5 {
        Check::new(
            "update_ratio",
            Status::Warn,
            measured,
            "updates this small barely move the weights: the learning rate is probably too low (see lr_finder)",
        )
    } else {
        Check::new("update_ratio", Status::Pass, measured, "")
    }
    .with(details))
}
