//! `graft doctor`: short, automatic checks of an experiment before it is trained for real — the checklist of why a
//! network does not learn (Karpathy's "A Recipe for Training Neural Networks", the "Troubleshooting Deep Neural
//! Networks" literature), each measured and turned into pass / warn / fail with one line of advice.
//!
//! Three families, cheapest first: the data (`data.rs`: non-finite values, class balance, input scale, where the
//! preprocessing was fitted, duplicates across splits), the model at initialization on one batch (`model.rs`: the
//! loss against chance, non-finite values localized to a layer, gradient flow, dead ReLUs, activation scale, the
//! size of one update), and short training runs (`training.rs`: overfitting one batch, the learning-rate range
//! test, real against shuffled labels).

mod data;
mod model;
mod training;

use std::path::Path;
use std::time::Instant;

use burn::prelude::*;
use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::data::{Batch, Dataset, gather};
use crate::error::{Error, Result};
use crate::experiment::build::{build_model, task_heads};
use crate::experiment::data::{Splits, prepare_fold};
use crate::experiment::spec::{ExperimentSpec, Objective};
use crate::model::Graph;
use crate::task::head::TaskHead;
use crate::train::lr_finder::LrFinding;

/// Every check, in the order it runs, with what it measures (the README's checklist is this table).
pub const CHECKS: [(&str, &str); 15] = [
    (
        "data_finite",
        "NaN or infinite values in the inputs or targets of every split",
    ),
    (
        "class_balance",
        "examples per class in training; classes missing from training; the imbalance ratio",
    ),
    (
        "inputs_scaled",
        "per-feature (per-channel for images) mean and spread of the training inputs",
    ),
    (
        "preprocessing_fit",
        "whether the scaling was fitted on the training rows only (standardized arrays are tested for the \
         signature of statistics taken over every row)",
    ),
    (
        "duplicates",
        "rows of validation and test that also occur (exactly or nearly) in training; conflicting labels",
    ),
    (
        "initial_loss",
        "the loss at initialization against chance (ln K for K classes; E[y²] for regression)",
    ),
    (
        "nan_layers",
        "the first layer whose output is NaN or infinite on a training batch, and whether its input was",
    ),
    (
        "gradient_flow",
        "‖∇W‖/‖W‖ per layer at initialization: the first trainable layer against the last",
    ),
    (
        "dead_units",
        "units of each ReLU layer that are zero for every example of a batch",
    ),
    (
        "activation_scale",
        "the spread (std) of every hidden layer's output at initialization",
    ),
    (
        "update_ratio",
        "‖ΔW‖/‖W‖ of one optimizer step at the configured learning rate (healthy near 1e-3)",
    ),
    (
        "overfit_batch",
        "whether the model drives the loss on one small batch to near zero",
    ),
    (
        "lr_finder",
        "the learning-rate range test: loss against a rising rate, a suggested rate, the configured one",
    ),
    (
        "label_shuffle",
        "a short run on real labels must beat chance on validation; one on shuffled labels must not",
    ),
    (
        "baseline",
        "a linear model (and k-NN for short sequences) on the same inputs, against the network's short run",
    ),
];

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    /// The check does not apply to this experiment (the reason is in `measured`).
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One check's outcome: what was measured, in words and numbers, and what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub measured: String,
    /// One line; empty when there is nothing to do.
    pub advice: String,
    pub details: Json,
    pub seconds: f64,
}

impl Check {
    fn new(name: &'static str, status: Status, measured: impl Into<String>, advice: impl Into<String>) -> Check {
        Check {
            name,
            status,
            measured: measured.into(),
            advice: advice.into(),
            details: Json::Null,
            seconds: 0.0,
        }
    }

    fn with(mut self, details: Json) -> Check {
        self.details = details;
        self
    }

    fn skip(name: &'static str, why: impl Into<String>) -> Check {
        Check::new(name, Status::Skip, why, "")
    }
}

/// What [`DoctorOptions::on_check`] calls.
pub type OnCheck = Box<dyn Fn(&Check)>;

pub struct DoctorOptions {
    pub seed: u64,
    pub device: Device,
    /// Run only these checks (names from [`CHECKS`]); all when `None`.
    pub only: Option<Vec<String>>,
    /// The most wall time each training check (overfit, range test, label runs) may take.
    pub seconds_per_check: f64,
    /// Called with each check as it finishes (the CLI prints it).
    pub on_check: Option<OnCheck>,
}

/// What `graft doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub checks: Vec<Check>,
    /// The range test's curve and reading, when it ran.
    pub lr_finder: Option<LrFinding>,
    /// The learning rate `[train]` configures.
    pub configured_lr: f64,
}

impl Diagnosis {
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| c.status == Status::Fail).count()
    }

    pub fn to_json(&self) -> Json {
        json!({
            "checks": self.checks,
            "lr_finder": self.lr_finder,
            "configured_lr": self.configured_lr,
            "summary": {
                "pass": self.count(Status::Pass),
                "warn": self.count(Status::Warn),
                "fail": self.count(Status::Fail),
                "skip": self.count(Status::Skip),
            },
        })
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// The checks as a table for a terminal: one [`Check::to_text`] each, then [`Diagnosis::summary`].
    pub fn to_text(&self) -> String {
        let mut out: String = self.checks.iter().map(Check::to_text).collect();
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// `12 passed, 1 warning, 1 failed, 0 skipped`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} warnings, {} failed, {} skipped",
            self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Fail),
            self.count(Status::Skip)
        )
    }
}

impl Check {
    /// The check for a terminal: status, name and measurement, and the advice on the line below.
    pub fn to_text(&self) -> String {
        let mut out = format!("{:<4}  {:<17}  {}\n", self.status.label(), self.name, self.measured);
        if !self.advice.is_empty() {
            out.push_str(&format!("{:<4}  {:<17}  → {}\n", "", "", self.advice));
        }
        out
    }
}

/// Everything the checks look at, prepared once.
pub(crate) struct Patient<'a> {
    pub exp: &'a ExperimentSpec,
    pub splits: Splits,
    /// Built on the autodiff device, at its initial (or pretrained) weights.
    pub model: Graph,
    pub heads: Vec<TaskHead>,
    pub class_weights: Vec<Option<Vec<f32>>>,
    /// A seeded draw of training rows the model checks run on, and their indices.
    pub probe: Batch,
    pub probe_rows: Vec<usize>,
    pub seed: u64,
    pub seconds: f64,
    /// The device the baselines train on (the model's, without autodiff).
    pub device: Device,
    /// `label_shuffle`'s real-label run: its steps and validation score, for `baseline` to compare with.
    pub short_run_score: std::cell::Cell<Option<(usize, f64)>>,
}

impl Patient<'_> {
    pub fn fit_config(&self) -> crate::train::FitConfig {
        crate::train::FitConfig {
            // Resampling and mixup change what a batch is; the checks look at plain batches.
            resample: None,
            mixup: None,
            ..self.exp.train.fit_config()
        }
    }

    pub fn lr(&self) -> f64 {
        self.exp.train.optimizer().lr()
    }
}

/// Runs the checks of `opts` on the experiment `exp`.
pub fn diagnose(exp: &ExperimentSpec, opts: &DoctorOptions) -> Result<Diagnosis> {
    if let Some(only) = &opts.only {
        for name in only {
            if !CHECKS.iter().any(|(n, _)| n == name) {
                let names: Vec<&str> = CHECKS.iter().map(|(n, _)| *n).collect();
                return Err(Error::new(format!(
                    "no check named '{name}'{}; the checks: {}",
                    graft_data::suggest::hint(name, names.iter().copied()),
                    names.join(", ")
                ))
                .at("--only"));
            }
        }
    }
    if !matches!(exp.objective, Objective::Supervised) {
        return Err(Error::new(format!(
            "graft doctor checks supervised experiments (classification, regression, multi-task); this one trains \
             a {} — its chance level and labels are not the supervised ones",
            exp.objective.name()
        )));
    }
    if !(opts.seconds_per_check.is_finite() && opts.seconds_per_check > 0.0) {
        return Err(Error::new(format!(
            "expected a positive number of seconds, found {}",
            opts.seconds_per_check
        ))
        .at("--seconds"));
    }
    let wanted = |name: &str| opts.only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    let splits = prepare_fold(exp, opts.seed, None, None)?;
    let resolved;
    let exp = match &exp.train.transfer {
        Some(spec) => {
            let run = crate::experiment::RunOptions {
                seed: opts.seed,
                quiet: true,
                device: opts.device.clone(),
                out: std::env::temp_dir().join(format!("graft-doctor-{}", std::process::id())),
                overwrite: true,
                test_rows: None,
                resume: false,
            };
            resolved = crate::experiment::transfer::resolve(exp, spec, &splits, &run)?.0;
            &resolved
        }
        None => exp,
    };
    let mut checks = vec![];
    let record = |check: Check, started: Instant, checks: &mut Vec<Check>| {
        let check = Check {
            seconds: started.elapsed().as_secs_f64(),
            ..check
        };
        if let Some(f) = &opts.on_check {
            f(&check);
        }
        checks.push(check);
    };
    // The model first: a mistake in the experiment (a loss that does not fit the target, a shape) is its one-line
    // error before any check spends time.
    let device = opts.device.clone().autodiff();
    device.seed(opts.seed);
    let mut splits = splits;
    let model = build_model(exp, &splits, &device, opts.seed, true)?;
    splits.check_fits(&model)?;
    let heads = task_heads(exp, &model, &splits.train)?;
    for (name, run) in data::CHECKS {
        if wanted(name) {
            let started = Instant::now();
            record(run(exp, &splits)?, started, &mut checks);
        }
    }
    let class_weights = crate::train::trainer::head_class_weights(&heads, &splits.train)?;
    let probe_rows = sample_rows(splits.train.len(), probe_size(exp.train.batch_size), opts.seed);
    let probe = gather(&splits.train, &probe_rows)?;
    let patient = Patient {
        exp,
        splits,
        model,
        heads,
        class_weights,
        probe,
        probe_rows,
        seed: opts.seed,
        seconds: opts.seconds_per_check,
        device: opts.device.clone(),
        short_run_score: std::cell::Cell::new(None),
    };
    for (name, run) in model::CHECKS {
        if wanted(name) {
            let started = Instant::now();
            record(run(&patient)?, started, &mut checks);
        }
    }
    let mut lr_finder = None;
    for (name, run) in training::CHECKS {
        if wanted(name) {
            let started = Instant::now();
            let (check, finding) = run(&patient)?;
            if finding.is_some() {
                lr_finder = finding;
            }
            record(check, started, &mut checks);
        }
    }
    Ok(Diagnosis {
        checks,
        lr_finder,
        configured_lr: patient.lr(),
    })
}

/// Writes `doctor.json`, `doctor.html` and (when the range test ran) `lr_finder.png` into `dir`.
pub fn write_diagnosis(diagnosis: &Diagnosis, dir: &Path, title: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
    let text = serde_json::to_string_pretty(&diagnosis.to_json()).map_err(|e| Error::new(e.to_string()))?;
    crate::report::write_atomic(&dir.join("doctor.json"), text.as_bytes())?;
    let chart = match &diagnosis.lr_finder {
        Some(f) if f.points.len() >= 2 => {
            let points: Vec<(f64, f64, f64)> = f.points.iter().map(|p| (p.lr, p.loss, p.smoothed)).collect();
            crate::report::lr_finder_chart(
                &dir.join("lr_finder.png"),
                &points,
                f.suggested,
                Some(diagnosis.configured_lr),
            )?;
            Some("lr_finder.png")
        }
        _ => None,
    };
    let rows: Vec<crate::report::CheckRow> = diagnosis
        .checks
        .iter()
        .map(|c| crate::report::CheckRow {
            name: c.name,
            status: c.status.label(),
            measured: &c.measured,
            advice: &c.advice,
        })
        .collect();
    crate::report::write_doctor_page(&dir.join("doctor.html"), title, &rows, chart)
}

/// How many training rows the model checks look at: a few batches, enough for per-unit statistics.
fn probe_size(batch_size: usize) -> usize {
    (batch_size * 4).clamp(64, 256)
}

/// `k` of `n` row indices, drawn without replacement from the seed, in drawn order.
pub(crate) fn sample_rows(n: usize, k: usize, seed: u64) -> Vec<usize> {
    crate::experiment::data::sample_rows(n, k, seed, b"doctor\0\0")
}

/// The inputs (every model input, flattened per row) of `rows` of `ds`, read as a training batch would be.
pub(crate) fn input_rows(ds: &Dataset, rows: &[usize]) -> Result<Vec<crate::data::Array>> {
    let batch = gather(ds, rows)?;
    Ok(std::iter::once(batch.inputs).chain(batch.extra_inputs).collect())
}
