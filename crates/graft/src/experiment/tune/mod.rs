//! `graft tune`: hyperparameter search over any key of an experiment file — grid, random, or successive halving —
//! each trial an ordinary seeded run (or cross-validation) in `OUT/trials/`, the experiment as given always tried
//! first as the reference. Results are rewritten after every trial (`results.json`, `results.csv`), so an interrupted
//! search resumes where it stopped; at the end come `tune.png` and `best.toml`, the experiment with the best values.

pub mod space;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub use space::{Distribution, Goal, HalvingSpec, Method, SpaceSpec, set_path};

use crate::error::{Context, Error, Result};
use crate::experiment::spec::ExperimentSpec;
use crate::experiment::{RunOptions, cross_validate, run_experiment};

pub struct TuneOptions {
    pub seed: u64,
    /// Configurations to try (random and halving: required; grid: at most this many of the grid).
    pub trials: Option<usize>,
    /// Score each trial by k-fold cross-validation instead of one run.
    pub folds: Option<usize>,
    pub out: PathBuf,
    /// Replace a search with other settings already in `out`.
    pub overwrite: bool,
    pub quiet: bool,
    pub device: Device,
}

/// One trained configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// 0 is the experiment as given; with halving, the same id returns on later rungs.
    pub id: usize,
    pub rung: usize,
    /// The epochs it trained for when the search set them (halving).
    pub epochs: Option<usize>,
    /// The searched keys' values (for trial 0, the experiment's own where it sets them).
    pub params: BTreeMap<String, toml::Value>,
    /// The metric's best epoch (or its mean over the folds); `None` when the run failed.
    pub objective: Option<f64>,
    /// `ok`, or `failed: ` and the run's error.
    pub status: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Results {
    format: u32,
    /// Everything that decides the trials; a search resumes only under the same.
    settings: String,
    metric: String,
    maximize: bool,
    trials: Vec<Trial>,
    best: Option<Trial>,
}

pub struct TuneResult {
    pub trials: Vec<Trial>,
    pub best: Option<Trial>,
    pub metric: String,
    pub out: PathBuf,
}

/// A configuration to train: its id, values and (halving) epochs.
struct Planned {
    id: usize,
    rung: usize,
    epochs: Option<usize>,
    params: BTreeMap<String, toml::Value>,
}

/// Runs the search of `space` over the experiment file `experiment`.
pub fn tune(experiment: &Path, space: &SpaceSpec, opts: &TuneOptions) -> Result<TuneResult> {
    let text = std::fs::read_to_string(experiment).in_file(experiment)?;
    let doc: toml::Table = toml::from_str(&text)
        .map_err(|e| Error::new(e.message().to_string()))
        .in_file(experiment)?;
    let base = ExperimentSpec::from_file(experiment)?;
    if opts.folds.is_some_and(|k| k < 2) {
        return Err(Error::new(format!("expected at least 2 folds, found {}", opts.folds.unwrap_or(0))).at("--folds"));
    }
    let trials = match (space.method, opts.trials) {
        (Method::Grid, t) => t,
        (_, Some(0)) | (_, None) => {
            return Err(Error::new(
                "how many configurations to try: --trials N (at least 1) for the random and halving methods",
            )
            .at("--trials"));
        }
        (_, t) => t,
    };
    let max_epochs = base.train.epochs();
    // Every key must make a valid experiment: checked with the first values before anything trains.
    let first = match space.method {
        Method::Grid => space.grid().into_iter().next().unwrap_or_default(),
        _ => space.draw(opts.seed, 1),
    };
    for (key, value) in &first {
        let one: BTreeMap<String, toml::Value> = [(key.clone(), value.clone())].into();
        experiment_with(&doc, experiment, &one, None).map_err(|e| {
            Error::new(format!("{key} = {value} does not make a valid experiment: {e}")).at(format!("params.'{key}'"))
        })?;
    }
    let settings = fingerprint(&text, space, opts);
    let mut done = open_out(&opts.out, &settings, opts.overwrite)?;
    let maximize = space.maximize();
    let as_given: BTreeMap<String, toml::Value> = space
        .params
        .keys()
        .filter_map(|k| get_path(&doc, k).map(|v| (k.clone(), v)))
        .collect();
    let mut record = Recorder {
        out: opts.out.clone(),
        settings,
        space,
        maximize,
        quiet: opts.quiet,
        trials: vec![],
        best: None,
    };
    let run = |plan: Planned, record: &mut Recorder, done: &mut Vec<Trial>| -> Result<Trial> {
        if let Some(at) = done.iter().position(|t| t.id == plan.id && t.rung == plan.rung) {
            let trial = done.remove(at);
            record.push(trial.clone(), "resumed")?;
            return Ok(trial);
        }
        let trial = run_trial(&doc, experiment, &plan, space, opts)?;
        record.push(trial.clone(), "")?;
        Ok(trial)
    };
    match space.method {
        Method::Grid | Method::Random => {
            let configs: Vec<BTreeMap<String, toml::Value>> = match space.method {
                Method::Grid => {
                    let grid = space.grid();
                    let n = trials.unwrap_or(grid.len()).min(grid.len());
                    grid.into_iter().take(n).collect()
                }
                _ => (1..=trials.unwrap_or(1)).map(|i| space.draw(opts.seed, i)).collect(),
            };
            let plans = std::iter::once(as_given.clone()).chain(configs);
            for (id, params) in plans.enumerate() {
                let plan = Planned {
                    id,
                    rung: 0,
                    epochs: None,
                    params,
                };
                run(plan, &mut record, &mut done)?;
            }
        }
        Method::Halving => {
            let h = space.halving;
            let mut alive: Vec<(usize, BTreeMap<String, toml::Value>)> = std::iter::once((0, as_given.clone()))
                .chain((1..=trials.unwrap_or(1)).map(|i| (i, space.draw(opts.seed, i))))
                .collect();
            let mut rung = 0;
            let mut epochs = h.min_epochs.min(max_epochs);
            loop {
                let mut scored = vec![];
                for (id, params) in &alive {
                    let plan = Planned {
                        id: *id,
                        rung,
                        epochs: Some(epochs),
                        params: params.clone(),
                    };
                    let trial = run(plan, &mut record, &mut done)?;
                    scored.push((trial.objective, *id, params.clone()));
                }
                if alive.len() <= 1 || epochs >= max_epochs {
                    break;
                }
                // The best 1/eta (at least one) go on to eta times the epochs; failed runs never do.
                scored.sort_by(|a, b| compare(a.0, b.0, maximize));
                let keep = alive.len().div_ceil(h.eta).max(1);
                alive = scored
                    .into_iter()
                    .filter(|s| s.0.is_some())
                    .take(keep)
                    .map(|(_, id, p)| (id, p))
                    .collect();
                if alive.is_empty() {
                    break;
                }
                rung += 1;
                epochs = (epochs * h.eta).min(max_epochs);
            }
        }
    }
    let best = best_trial(&record.trials, maximize);
    if let Some(b) = &best {
        // The best values, at the experiment's own epochs: what to train for real.
        let mut best_doc = doc.clone();
        for (key, value) in &b.params {
            set_path(&mut best_doc, key, value.clone())?;
        }
        absolute_paths(&mut best_doc, experiment.parent().unwrap_or(Path::new(".")));
        let text = format!(
            "# The best of `graft tune` ({} = {}, trial {}), from {}; relative paths made absolute.\n{}",
            space.metric,
            b.objective.map_or("—".into(), crate::report::fmt_number),
            b.id,
            experiment.display(),
            toml::to_string(&best_doc).map_err(|e| Error::new(e.to_string()))?
        );
        crate::report::write_atomic(&opts.out.join("best.toml"), text.as_bytes())?;
    }
    record.best = best.clone();
    record.write()?;
    let points: Vec<(usize, f64, usize)> = record
        .trials
        .iter()
        .enumerate()
        .filter_map(|(order, t)| t.objective.map(|o| (order, o, t.rung)))
        .collect();
    if !points.is_empty() {
        crate::report::tune_chart(&opts.out.join("tune.png"), &points, &space.metric, maximize)?;
    }
    Ok(TuneResult {
        trials: record.trials,
        best,
        metric: space.metric.clone(),
        out: opts.out.clone(),
    })
}

/// Orders objectives best first; failed runs last.
fn compare(a: Option<f64>, b: Option<f64>, maximize: bool) -> std::cmp::Ordering {
    match (a, b) {
        (Some(x), Some(y)) if maximize => y.total_cmp(&x),
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

/// The best trial of the highest rung that has a result (halving's survivors were trained longest).
fn best_trial(trials: &[Trial], maximize: bool) -> Option<Trial> {
    let top = trials.iter().filter(|t| t.objective.is_some()).map(|t| t.rung).max()?;
    trials
        .iter()
        .filter(|t| t.rung == top && t.objective.is_some())
        .min_by(|a, b| compare(a.objective, b.objective, maximize))
        .cloned()
}

/// The experiment with `params` set (and `epochs` when given), read as the experiment file would be.
fn experiment_with(
    doc: &toml::Table,
    path: &Path,
    params: &BTreeMap<String, toml::Value>,
    epochs: Option<usize>,
) -> Result<ExperimentSpec> {
    let mut doc = doc.clone();
    for (key, value) in params {
        set_path(&mut doc, key, value.clone())?;
    }
    if let Some(e) = epochs {
        set_path(&mut doc, "train.epochs", toml::Value::Integer(e as i64))?;
    }
    let text = toml::to_string(&doc).map_err(|e| Error::new(e.to_string()))?;
    let mut exp = ExperimentSpec::from_toml_str(&text)?;
    exp.path = Some(path.to_path_buf());
    Ok(exp)
}

fn run_trial(doc: &toml::Table, path: &Path, plan: &Planned, space: &SpaceSpec, opts: &TuneOptions) -> Result<Trial> {
    let started = Instant::now();
    let exp = experiment_with(doc, path, &plan.params, plan.epochs)?;
    let name = match plan.rung {
        0 => format!("{:03}", plan.id),
        r => format!("{:03}-rung{r}", plan.id),
    };
    let run = RunOptions {
        seed: opts.seed,
        quiet: true,
        device: opts.device.clone(),
        out: opts.out.join("trials").join(name),
        overwrite: true,
        test_rows: None,
        resume: false,
    };
    if run.out.exists() {
        // A trial interrupted before it was recorded starts again.
        let _ = std::fs::remove_dir_all(&run.out);
    }
    let outcome = match opts.folds {
        Some(k) => cross_validate(&exp, &run, k).and_then(|report| fold_objective(&report, &space.metric)),
        None => run_experiment(&exp, &run).and_then(|r| best_epoch(&r.history, &space.metric, space.maximize())),
    };
    let (objective, status) = match outcome {
        Ok(v) => (Some(v), "ok".to_string()),
        // A metric that is not logged is the search's mistake, not the trial's: stop.
        Err(e) if e.message.starts_with("the metric") => return Err(e),
        Err(e) => (None, format!("failed: {e}")),
    };
    Ok(Trial {
        id: plan.id,
        rung: plan.rung,
        epochs: plan.epochs,
        params: plan.params.clone(),
        objective,
        status,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The metric's best value over a run's epochs.
fn best_epoch(history: &[serde_json::Map<String, Json>], metric: &str, maximize: bool) -> Result<f64> {
    let values: Vec<f64> = history
        .iter()
        .filter_map(|e| e.get(metric).and_then(Json::as_f64))
        .collect();
    if values.is_empty() {
        let logged: Vec<&String> = history.first().map(|e| e.keys().collect()).unwrap_or_default();
        let logged: Vec<&str> = logged
            .iter()
            .map(|s| s.as_str())
            .filter(|k| *k != "epoch" && *k != "lr")
            .collect();
        return Err(Error::new(format!(
            "the metric '{metric}' is not logged by this experiment{}; it logs: {}",
            graft_data::suggest::hint(metric, logged.iter().copied()),
            logged.join(", ")
        ))
        .at("metric"));
    }
    Ok(values
        .into_iter()
        .fold(if maximize { f64::MIN } else { f64::MAX }, |b, v| {
            if maximize { b.max(v) } else { b.min(v) }
        }))
}

/// With folds: the mean over the folds' held-out scores of the metric (`val_accuracy` reads `accuracy`).
fn fold_objective(report: &Json, metric: &str) -> Result<f64> {
    let name = metric.strip_prefix("val_").unwrap_or(metric);
    report["mean"][name].as_f64().ok_or_else(|| {
        let logged: Vec<String> = report["mean"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        Error::new(format!(
            "the metric '{name}' is not among the folds' scores; they have: {}",
            logged.join(", ")
        ))
        .at("metric")
    })
}

/// The value at `path` in `doc`, when it is there.
fn get_path(doc: &toml::Table, path: &str) -> Option<toml::Value> {
    let mut probe = doc.clone();
    // Setting a marker tells whether the path exists without a second path walker: if the value was there, the old
    // one is what `doc` holds at that place.
    let marker = toml::Value::String("\u{0}graft-probe".into());
    set_path(&mut probe, path, marker.clone()).ok()?;
    find_marker(&toml::Value::Table(probe), &toml::Value::Table(doc.clone()), &marker)
}

/// The value of `original` at the place where `probed` holds `marker` (None when the place is new).
fn find_marker(probed: &toml::Value, original: &toml::Value, marker: &toml::Value) -> Option<toml::Value> {
    match (probed, original) {
        (p, o) if p == marker => Some(o.clone()),
        (toml::Value::Table(p), toml::Value::Table(o)) => p
            .iter()
            .find_map(|(k, v)| o.get(k).and_then(|ov| find_marker(v, ov, marker))),
        (toml::Value::Array(p), toml::Value::Array(o)) => {
            p.iter().zip(o).find_map(|(v, ov)| find_marker(v, ov, marker))
        }
        _ => None,
    }
}

/// Replaces every relative path in `doc` that names an existing file or folder beside the experiment with its
/// absolute form, so `best.toml` works from the output folder.
fn absolute_paths(value: &mut toml::Table, base: &Path) {
    fn walk(v: &mut toml::Value, base: &Path) {
        match v {
            toml::Value::String(s) => {
                let p = Path::new(s.as_str());
                if p.is_relative()
                    && !s.is_empty()
                    && base.join(p).exists()
                    && let Ok(abs) = std::path::absolute(base.join(p))
                {
                    *s = abs.display().to_string();
                }
            }
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, x)| walk(x, base)),
            toml::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, base)),
            _ => {}
        }
    }
    value.iter_mut().for_each(|(_, v)| walk(v, base));
}

/// A digest of everything that decides the trials.
fn fingerprint(experiment: &str, space: &SpaceSpec, opts: &TuneOptions) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    experiment.hash(&mut h);
    toml::to_string(space).unwrap_or_default().hash(&mut h);
    (opts.seed, opts.trials, opts.folds).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The trials already recorded in `out` under the same settings (to resume); an error for another search there.
fn open_out(out: &Path, settings: &str, overwrite: bool) -> Result<Vec<Trial>> {
    let path = out.join("results.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path).in_file(&path)?;
        let previous: Option<Results> = serde_json::from_str(&text).ok();
        match previous {
            Some(r) if r.settings == settings && !overwrite => return Ok(r.trials),
            _ if overwrite => {
                for name in ["results.json", "results.csv", "best.toml", "tune.png"] {
                    let _ = std::fs::remove_file(out.join(name));
                }
                let _ = std::fs::remove_dir_all(out.join("trials"));
            }
            _ => {
                return Err(Error::new(format!(
                    "{} holds a search with other settings (experiment, space, seed, trials or folds); choose another \
                     --out, or --overwrite to replace it",
                    out.display()
                ))
                .at("--out"));
            }
        }
    } else if out.exists() && out.read_dir().map(|mut d| d.next().is_some()).unwrap_or(false) && !overwrite {
        return Err(Error::new(format!(
            "{} exists and is not a graft tune folder; choose another --out, or --overwrite",
            out.display()
        ))
        .at("--out"));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::new(format!("cannot create {}: {e}", out.display())))?;
    Ok(vec![])
}

/// Keeps the trials and rewrites the results after each one.
struct Recorder<'a> {
    out: PathBuf,
    settings: String,
    space: &'a SpaceSpec,
    maximize: bool,
    quiet: bool,
    trials: Vec<Trial>,
    best: Option<Trial>,
}

impl Recorder<'_> {
    fn push(&mut self, trial: Trial, note: &str) -> Result<()> {
        if !self.quiet {
            let values: Vec<String> = trial.params.iter().map(|(k, v)| format!("{k} = {}", show(v))).collect();
            let result = match trial.objective {
                Some(o) => format!("{} {}", self.space.metric, crate::report::fmt_number(o)),
                None => trial.status.clone(),
            };
            let epochs = trial.epochs.map(|e| format!(", {e} epochs")).unwrap_or_default();
            let label = if trial.id == 0 { " (as given)" } else { "" };
            let rung = match self.space.method {
                Method::Halving => format!(" (rung {}{epochs})", trial.rung),
                _ => String::new(),
            };
            eprintln!(
                "trial {}{label}{rung}: {} → {result} ({:.1} s){}",
                trial.id,
                if values.is_empty() {
                    "—".into()
                } else {
                    values.join(", ")
                },
                trial.seconds,
                if note.is_empty() {
                    String::new()
                } else {
                    format!(" [{note}]")
                }
            );
        }
        self.trials.push(trial);
        self.best = None;
        self.write()
    }

    fn write(&self) -> Result<()> {
        let results = Results {
            format: 1,
            settings: self.settings.clone(),
            metric: self.space.metric.clone(),
            maximize: self.maximize,
            trials: self.trials.clone(),
            best: self.best.clone(),
        };
        let json = serde_json::to_string_pretty(&results).map_err(|e| Error::new(e.to_string()))?;
        crate::report::write_atomic(&self.out.join("results.json"), json.as_bytes())?;
        let keys: Vec<&String> = self.space.params.keys().collect();
        let mut csv = String::from("trial,rung,epochs,");
        for k in &keys {
            csv.push_str(&csv_field(k));
            csv.push(',');
        }
        csv.push_str(&format!("{},status,seconds\n", csv_field(&self.space.metric)));
        for t in &self.trials {
            csv.push_str(&format!(
                "{},{},{},",
                t.id,
                t.rung,
                t.epochs.map_or(String::new(), |e| e.to_string())
            ));
            for k in &keys {
                csv.push_str(&t.params.get(*k).map_or(String::new(), |v| csv_field(&v.to_string())));
                csv.push(',');
            }
            csv.push_str(&format!(
                "{},{},{:.2}\n",
                t.objective.map_or(String::new(), |o| o.to_string()),
                csv_field(&t.status),
                t.seconds
            ));
        }
        crate::report::write_atomic(&self.out.join("results.csv"), csv.as_bytes())
    }
}

/// A searched value for people: floats to four significant digits.
pub fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(f) => crate::report::fmt_number(*f),
        other => other.to_string(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
