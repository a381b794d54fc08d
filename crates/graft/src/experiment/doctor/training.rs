//! The training checks: short runs from the initial weights, each bounded by steps and by wall time.

use std::time::{Duration, Instant};

use burn::module::Module;
use serde_json::{Map, Value as Json, json};

use super::{Check, Patient, Status, sample_rows};
use crate::data::{Batches, Dataset, Targets, gather, gather_for_training};
use crate::error::Result;
use crate::report::fmt_number;
use crate::task::loss::Task;
use crate::train::diagnostics::first_non_finite;
use crate::train::lr_finder::{LrFinderConfig, LrFinding, lr_range_test};
use crate::train::trainer::{EVAL_BATCH, evaluate};
use crate::train::{FitConfig, Supervised, TrainStep};

type TrainingCheck = fn(&Patient) -> Result<(Check, Option<LrFinding>)>;

pub(super) const CHECKS: [(&str, TrainingCheck); 4] = [
    ("overfit_batch", overfit_batch),
    ("lr_finder", lr_finder),
    ("label_shuffle", label_shuffle),
    ("baseline", baseline),
];

/// The batch the model must memorize: small, as Karpathy's recipe has it.
const OVERFIT_ROWS: usize = 16;
const OVERFIT_STEPS: usize = 300;
/// "Near zero": this share of the chance loss.
const NEAR_ZERO: f64 = 0.05;
/// Steps each label run trains (at most; fewer when the time runs out).
const LABEL_STEPS: usize = 200;

/// Loss (and accuracy for classifiers) of the model in inference mode on `data`.
fn score(p: &Patient, model: &crate::model::Graph, data: &Dataset) -> Result<Map<String, Json>> {
    evaluate(&model.valid(), &p.heads, data, &p.class_weights, EVAL_BATCH, 1, false)
}

fn overfit_batch(p: &Patient) -> Result<(Check, Option<LrFinding>)> {
    let rows: Vec<usize> = p
        .probe_rows
        .iter()
        .copied()
        .take(OVERFIT_ROWS.min(p.exp.train.batch_size))
        .collect();
    let batch = gather(&p.splits.train, &rows)?;
    let memorize = p.splits.train.select(&rows);
    let config = p.fit_config();
    let mut step = Supervised::new(p.model.independent_copy(), &p.heads, &config, &p.splits.train, p.seed)?;
    step.begin_epoch(1)?;
    let chance = super::model::chance_loss(p)?;
    let start = score(p, &step.model, &memorize)?;
    let initial = start.get("loss").and_then(Json::as_f64).unwrap_or(f64::NAN);
    let deadline = Instant::now() + Duration::from_secs_f64(p.seconds);
    let target = NEAR_ZERO * chance;
    let mut steps = 0;
    let classifier = p.heads.len() == 1 && p.heads[0].is_classification() && p.heads[0].task != Task::Multilabel;
    let solved = |m: &Map<String, Json>| {
        m.get("loss").and_then(Json::as_f64).is_some_and(|l| l <= target)
            || (classifier && m.get("accuracy").and_then(Json::as_f64) == Some(1.0))
    };
    while steps < OVERFIT_STEPS && Instant::now() < deadline {
        if step.train_batch(&batch, p.lr()).is_err() {
            let place = first_non_finite(&step.model, &batch)?;
            let at = match &place {
                Some((layer, true)) => format!("; NaN first appears in layer '{layer}' (its inputs finite)"),
                Some((layer, false)) => format!("; layer '{layer}' reads non-finite inputs"),
                None => String::new(),
            };
            let check = Check::new(
                "overfit_batch",
                Status::Fail,
                format!(
                    "training on one batch of {} rows at lr {}: the loss became NaN or infinite at step {}{at}",
                    rows.len(),
                    p.lr(),
                    steps + 1
                ),
                "the learning rate is too high for this model (see lr_finder), or clip gradients",
            )
            .with(json!({ "diverged_at": steps + 1, "layer": place.map(|p| p.0) }));
            return Ok((check, None));
        }
        steps += 1;
        if (steps % 10 == 0 || steps == OVERFIT_STEPS) && solved(&score(p, &step.model, &memorize)?) {
            break;
        }
    }
    let last = score(p, &step.model, &memorize)?;
    let end = last.get("loss").and_then(Json::as_f64).unwrap_or(f64::NAN);
    let accuracy = last.get("accuracy").and_then(Json::as_f64).filter(|_| classifier);
    let measured = format!(
        "one batch of {} rows, {steps} steps at lr {}: loss {} → {}{} (near zero: ≤ {target:.4})",
        rows.len(),
        p.lr(),
        fmt_number(initial),
        fmt_number(end),
        accuracy.map(|a| format!(", accuracy {a:.3}")).unwrap_or_default()
    );
    let details = json!({ "steps": steps, "initial": initial, "final": end, "target": target, "accuracy": accuracy });
    let check = if solved(&last) {
        Check::new("overfit_batch", Status::Pass, measured, "")
    } else if end <= 0.5 * initial {
        Check::new(
            "overfit_batch",
            Status::Warn,
            measured,
            "the loss falls but not to zero in this budget: a higher learning rate (see lr_finder), less \
             regularization, or a larger model",
        )
    } else {
        Check::new(
            "overfit_batch",
            Status::Fail,
            measured,
            "a model that cannot memorize 16 examples will not learn thousands: check the learning rate (see \
             lr_finder), frozen layers, the loss against the output, and that the labels reach the loss",
        )
    };
    Ok((check.with(details), None))
}

fn lr_finder(p: &Patient) -> Result<(Check, Option<LrFinding>)> {
    let config = p.fit_config();
    let mut step = Supervised::new(p.model.independent_copy(), &p.heads, &config, &p.splits.train, p.seed)?;
    let sweep = LrFinderConfig {
        batch_size: p.exp.train.batch_size,
        ..LrFinderConfig::default()
    };
    let deadline = Instant::now() + Duration::from_secs_f64(p.seconds);
    let finding = lr_range_test(&mut step, &p.splits.train, &sweep, p.seed, Some(deadline))?;
    let lr = p.lr();
    let reached = finding.points.last().map_or(0.0, |q| q.lr);
    let Some(suggested) = finding.suggested else {
        let check = Check::new(
            "lr_finder",
            Status::Warn,
            format!(
                "the loss never fell over {} steps up to lr {reached:.1e}",
                finding.points.len()
            ),
            "nothing learns at any rate: see overfit_batch and gradient_flow",
        );
        return Ok((check, Some(finding)));
    };
    let minimum = finding.lr_at_minimum.unwrap_or(suggested);
    let measured = format!(
        "suggested lr {suggested:.1e} (steepest fall at {}, lowest loss at {minimum:.1e}); configured {lr:.1e}; {} \
         steps up to {reached:.1e} ({})",
        finding.steepest.map_or("—".to_string(), |s| format!("{s:.1e}")),
        finding.points.len(),
        finding.ended
    );
    // Until the loss has turned up, the lowest loss is just the last one reached, and the suggestion a guess.
    let lowest = finding.points.iter().map(|q| q.smoothed).fold(f64::INFINITY, f64::min);
    let turned_up = finding.ended == "diverged" || finding.points.last().is_some_and(|q| q.smoothed > 1.3 * lowest);
    let check = if !turned_up {
        Check::new(
            "lr_finder",
            Status::Warn,
            measured,
            "the sweep ended before the loss turned up, so the reading is incomplete: give it more time (--seconds)",
        )
    } else if lr > minimum {
        Check::new(
            "lr_finder",
            Status::Warn,
            measured,
            format!("the configured rate is past the loss's minimum, where training is unstable: try {suggested:.1e}"),
        )
    } else if lr < suggested / 30.0 {
        Check::new(
            "lr_finder",
            Status::Warn,
            measured,
            format!(
                "the configured rate is {:.0}× below the suggestion: training will crawl; try {suggested:.1e}",
                suggested / lr
            ),
        )
    } else {
        Check::new("lr_finder", Status::Pass, measured, "")
    };
    let details =
        json!({ "suggested": suggested, "steepest": finding.steepest, "lr_at_minimum": minimum, "configured": lr });
    Ok((check.with(details), Some(finding)))
}

/// Trains a copy of the initial model on shuffled batches of `train` for [`LABEL_STEPS`] steps or `seconds`,
/// whichever ends first (checked every step, so a slow model stops on time), at the configured rate; returns the
/// model and the steps it took, or the step at which the loss stopped being finite.
fn short_run(
    p: &Patient,
    train: &Dataset,
    seconds: f64,
) -> Result<std::result::Result<(crate::model::Graph, usize), usize>> {
    let config = FitConfig {
        layer_groups: None,
        ..p.fit_config()
    };
    let mut step = Supervised::new(p.model.independent_copy(), &p.heads, &config, train, p.seed)?;
    step.begin_epoch(1)?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let batch_size = config.batch_size.clamp(1, train.len().max(1));
    let mut steps = 0;
    'epochs: for epoch in 1.. {
        for rows in Batches::new(train.len(), batch_size, true, p.seed, epoch)? {
            if steps >= LABEL_STEPS || Instant::now() >= deadline {
                break 'epochs;
            }
            let batch = gather_for_training(train, &rows, p.seed, epoch)?;
            if step.train_batch(&batch, p.lr()).is_err() {
                return Ok(Err(steps + 1));
            }
            steps += 1;
        }
    }
    Ok(Ok((step.model, steps)))
}

/// The rows the short runs train on (a draw of at most 2,000 training rows), and the held-out rows they and the
/// baseline are scored on: up to 500 validation rows, or the last fifth of the draw when there is no validation
/// split (then left out of training).
fn held_out(p: &Patient) -> (Vec<usize>, Vec<usize>, Dataset) {
    let drawn = sample_rows(p.splits.train.len(), 2000, p.seed ^ 1);
    match &p.splits.validation {
        Some(v) => (drawn, vec![], v.select(&sample_rows(v.len(), 500, p.seed ^ 2))),
        None => {
            let cut = drawn.len() * 4 / 5;
            let held = drawn[cut..].to_vec();
            (drawn[..cut].to_vec(), held.clone(), p.splits.train.select(&held))
        }
    }
}

/// What chance is on `held` for `metric`: the majority class's share (with its binomial spread) for classes, R² = 0
/// for values.
fn chance(held: &Dataset) -> (&'static str, f64, f64) {
    let n = held.len().max(1) as f64;
    match &held.targets {
        Some(Targets::Classes { labels, names }) => {
            let mut counts = vec![0usize; names.len().max(1)];
            for &l in labels {
                if let Some(c) = counts.get_mut(l) {
                    *c += 1;
                }
            }
            let majority = *counts.iter().max().unwrap_or(&0) as f64 / n;
            (
                "accuracy",
                majority,
                (majority * (1.0 - majority) / n).sqrt().max(0.5 / n),
            )
        }
        _ => ("r2", 0.0, (2.0 / n).sqrt()),
    }
}

fn label_shuffle(p: &Patient) -> Result<(Check, Option<LrFinding>)> {
    if p.heads.len() != 1 || p.heads[0].name.is_some() || p.heads[0].task == Task::Multilabel {
        return Ok((
            Check::skip(
                "label_shuffle",
                "one class or value target only (not multi-task or multi-label)",
            ),
            None,
        ));
    }
    let (train_rows, _, held) = held_out(p);
    let real = p.splits.train.select(&train_rows);
    let mut shuffled = real.clone();
    let permutation = sample_rows(real.len(), real.len(), p.seed ^ 3);
    shuffled.targets = real.targets.as_ref().map(|t| t.select(&permutation));
    let runs = (
        short_run(p, &real, p.seconds / 2.0)?,
        short_run(p, &shuffled, p.seconds / 2.0)?,
    );
    let ((real_model, steps), (shuffled_model, _)) = match runs {
        (Ok(real), Ok(shuffled)) => (real, shuffled),
        (Err(at), _) | (_, Err(at)) => {
            let check = Check::new(
                "label_shuffle",
                Status::Warn,
                format!(
                    "the short run's loss became NaN or infinite at step {at} (lr {})",
                    p.lr()
                ),
                "nothing to compare until training is stable: see overfit_batch and lr_finder",
            );
            return Ok((check, None));
        }
    };
    let (real_score, shuffled_score) = (score(p, &real_model, &held)?, score(p, &shuffled_model, &held)?);
    let (metric, chance, sigma) = chance(&held);
    let get = |m: &Map<String, Json>| m.get(metric).and_then(Json::as_f64).unwrap_or(f64::NAN);
    let (r, s) = (get(&real_score), get(&shuffled_score));
    p.short_run_score.set(Some((steps, r)));
    let measured = format!(
        "validation {metric} after {steps} steps on {} rows: real labels {r:.3}, shuffled labels {s:.3}; chance \
         {chance:.3} ± {sigma:.3} ({} held-out rows)",
        real.len(),
        held.len()
    );
    let details = json!({ "metric": metric, "real": r, "shuffled": s, "chance": chance, "sigma": sigma });
    let check = if s > chance + 3.0 * sigma {
        Check::new(
            "label_shuffle",
            Status::Fail,
            measured,
            "a model trained on shuffled labels predicts the held-out rows: something other than the labels \
             carries the answer (duplicates across splits, labels encoded in the inputs or in the row order)",
        )
    } else if r.is_nan() || r <= chance + sigma {
        Check::new(
            "label_shuffle",
            Status::Fail,
            measured,
            "the real labels teach no more than shuffled ones: are the labels aligned with the inputs (row order, \
             a join, a sort)? if overfit_batch passed, the model can learn — the labels carry nothing it can use",
        )
    } else if r <= chance + 3.0 * sigma {
        Check::new(
            "label_shuffle",
            Status::Warn,
            measured,
            "barely above chance after a short run: a longer run will tell; check label alignment if it stays so",
        )
    } else {
        Check::new("label_shuffle", Status::Pass, measured, "")
    };
    Ok((check.with(details), None))
}

fn baseline(p: &Patient) -> Result<(Check, Option<LrFinding>)> {
    if !crate::experiment::baseline::applies(&p.heads, &p.splits.train) {
        return Ok((
            Check::skip(
                "baseline",
                "one class or value target of one input only (not multi-task or multi-label)",
            ),
            None,
        ));
    }
    let (train_rows, held_rows, held) = held_out(p);
    // Without a validation split the held-out rows come from training: the baseline must not see them.
    let rest = (!held_rows.is_empty()).then(|| {
        let held: std::collections::HashSet<usize> = held_rows.iter().copied().collect();
        let keep: Vec<usize> = (0..p.splits.train.len()).filter(|r| !held.contains(r)).collect();
        p.splits.train.select(&keep)
    });
    let data = crate::experiment::baseline::FitData {
        train: rest.as_ref().unwrap_or(&p.splits.train),
        validation: p.splits.validation.as_ref(),
        preprocessor: &p.splits.preprocessor,
    };
    let scores = crate::experiment::baseline::baselines(&data, &p.heads, &held, &[], p.seed, &p.device)?;
    let metric = crate::experiment::baseline::headline_metric(&p.heads[0]);
    let Some(best) = scores
        .iter()
        .filter_map(|b| b.metrics.get(metric).and_then(Json::as_f64).map(|v| (v, b)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
    else {
        return Ok((Check::skip("baseline", "no baseline applies to these inputs"), None));
    };
    // The network's short run: label_shuffle's, or one of its own when that check did not run.
    let network = match p.short_run_score.get() {
        Some(score) => Some(score),
        None => match short_run(p, &p.splits.train.select(&train_rows), p.seconds / 2.0)? {
            Ok((model, steps)) => score(p, &model, &held)?
                .get(metric)
                .and_then(Json::as_f64)
                .map(|v| (steps, v)),
            Err(_) => None,
        },
    };
    let names: Vec<String> = scores
        .iter()
        .map(|b| {
            format!(
                "{} {metric} {}",
                b.name,
                b.metrics
                    .get(metric)
                    .and_then(Json::as_f64)
                    .map_or("—".into(), fmt_number)
            )
        })
        .collect();
    let details = json!({ "metric": metric, "baselines": scores, "network_short_run": network });
    let check = match network {
        Some((steps, ours)) if ours < best.0 => Check::new(
            "baseline",
            Status::Warn,
            format!(
                "{}; the network after {steps} steps: {} ({} held-out rows)",
                names.join(", "),
                fmt_number(ours),
                held.len()
            ),
            format!(
                "the network has to beat the {} once trained (the run's report compares them on the test set); if \
                 it cannot, the simple model is the better choice",
                best.1.name
            ),
        ),
        Some((steps, ours)) => Check::new(
            "baseline",
            Status::Pass,
            format!(
                "{}; the network after {steps} steps: {} ({} held-out rows)",
                names.join(", "),
                fmt_number(ours),
                held.len()
            ),
            "",
        ),
        None => Check::new(
            "baseline",
            Status::Warn,
            format!("{}; the network's short run diverged", names.join(", ")),
            "see overfit_batch and lr_finder",
        ),
    };
    Ok((check.with(details), None))
}
