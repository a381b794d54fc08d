//! Training behaviour added by callbacks (as in Keras and fastai): progress bar, early stopping, checkpoints.
//! Each sees the epoch's logs and the model, and may ask the loop to stop.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::prelude::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value as Json};

use crate::data::fsio::copy_atomic;
use crate::error::{Context, Error, Result};
use crate::model::Graph;
use crate::model::io::save_model;
use serde::{Deserialize, Serialize};

/// Per-epoch values: `loss`, `val_loss`, metrics, `lr`.
pub type Logs = BTreeMap<String, f64>;

/// What a callback can tell the loop.
#[derive(Debug, Default)]
pub struct Control {
    pub stop: bool,
}

pub trait Callback {
    fn on_epoch_begin(&mut self, _epoch: usize, _batches: usize) {}
    fn on_batch_end(&mut self, _batch: usize, _loss: f64) {}
    fn on_epoch_end(&mut self, _epoch: usize, _logs: &Logs, _model: &Graph, _control: &mut Control) -> Result<()> {
        Ok(())
    }
    /// At the end of training; may replace the model (restoring the best weights).
    fn on_train_end(&mut self, _model: &mut Graph) -> Result<()> {
        Ok(())
    }
    /// The name of the callback's folder in a resumable checkpoint, for callbacks with a state to keep (the same
    /// name in the interrupted and the resumed run, whichever other callbacks each has).
    fn state_name(&self) -> Option<&'static str> {
        None
    }
    /// Writes what the callback needs to continue an interrupted run into `dir` (its own folder of a resumable
    /// checkpoint).
    fn save_state(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }
    /// Reads back what [`Callback::save_state`] wrote; `history` holds the epochs done.
    fn load_state(&mut self, _dir: &Path, _history: &[Map<String, Json>], _device: &Device) -> Result<()> {
        Ok(())
    }
}

/// The small state of a callback that compares epochs: the best value so far and the epochs since it.
#[derive(Serialize, Deserialize)]
struct BestSoFar {
    best: Option<f64>,
    waited: usize,
}

/// Whether larger is better for a monitored value, unless the user said.
fn maximize(monitor: &str, mode: Option<&str>) -> Result<bool> {
    match mode {
        Some("max") => Ok(true),
        Some("min") => Ok(false),
        Some(other) => Err(Error::new(format!(
            "mode must be \"min\" or \"max\", found \"{other}\""
        ))),
        None => {
            let m = monitor.trim_start_matches("val_");
            Ok(!(m.contains("loss") || m == "mse" || m == "mae"))
        }
    }
}

fn monitored(logs: &Logs, monitor: &str, who: &str) -> Result<f64> {
    logs.get(monitor).copied().ok_or_else(|| {
        Error::new(format!(
            "monitor '{monitor}' is not logged; logged values: {}",
            logs.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
        .at(format!("train.callbacks.{who}"))
    })
}

/// Progress on stderr. On a terminal: a live bar per epoch with the running loss, samples/s, elapsed time and ETA.
/// Elsewhere (pipes, `nohup`, CI logs), where a bar would print nothing or garble the log: one line per epoch with
/// its logs, the elapsed time and the ETA of the run.
pub struct Progress {
    bar: Option<ProgressBar>,
    epochs: usize,
    batch_size: usize,
    loss_sum: f64,
    terminal: bool,
    started: Instant,
    epoch_started: Instant,
}

impl Progress {
    pub fn new(epochs: usize, batch_size: usize) -> Self {
        Progress {
            bar: None,
            epochs,
            batch_size,
            loss_sum: 0.0,
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            epoch_started: Instant::now(),
        }
    }
}

/// `1 h 02 min`, `3 min 07 s`, `12.3 s`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s >= 3600.0 {
        format!("{} h {:02} min", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    } else if s >= 60.0 {
        format!("{} min {:02} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1} s")
    }
}

/// The epoch's logs as `name value` pairs: the training loss and metrics, then the validation ones, then the rest
/// (learning rate, groups).
fn shown_logs(logs: &Logs) -> String {
    let rank = |k: &str| match k {
        "loss" => 0,
        "val_loss" => 2,
        "lr" | "groups_training" => 4,
        k if k.starts_with("val_") => 3,
        _ => 1,
    };
    let mut shown: Vec<(&String, &f64)> = logs.iter().filter(|(k, _)| k.as_str() != "epoch").collect();
    shown.sort_by_key(|(k, _)| rank(k));
    shown
        .into_iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join("  ")
}

impl Callback for Progress {
    fn on_epoch_begin(&mut self, epoch: usize, batches: usize) {
        self.loss_sum = 0.0;
        self.epoch_started = Instant::now();
        if epoch == 1 {
            self.started = Instant::now();
        }
        if !self.terminal {
            return;
        }
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {elapsed} (ETA {eta}) {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", self.epochs));
        self.bar = Some(bar);
    }

    fn on_batch_end(&mut self, batch: usize, loss: f64) {
        self.loss_sum += loss;
        if let Some(bar) = &self.bar {
            bar.inc(1);
            let seconds = self.epoch_started.elapsed().as_secs_f64().max(1e-9);
            let rate = ((batch + 1) * self.batch_size) as f64 / seconds;
            bar.set_message(format!(
                "loss {:.4}  {rate:.0} samples/s",
                self.loss_sum / (batch + 1) as f64
            ));
        }
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, _model: &Graph, _control: &mut Control) -> Result<()> {
        let shown = shown_logs(logs);
        match self.bar.take() {
            Some(bar) => bar.finish_with_message(shown),
            None => {
                let elapsed = self.started.elapsed().as_secs_f64();
                let eta = elapsed / epoch as f64 * self.epochs.saturating_sub(epoch) as f64;
                eprintln!(
                    "epoch {epoch}/{}  {shown}  {} (ETA {})",
                    self.epochs,
                    duration(elapsed),
                    duration(eta)
                );
            }
        }
        Ok(())
    }
}

/// Stops when the monitored value has not improved by `min_delta` for `patience` epochs; optionally restores
/// the best epoch's weights.
pub struct EarlyStopping {
    spec: EarlyStoppingSpec,
    maximize: bool,
    best: Option<f64>,
    best_model: Option<Graph>,
    waited: usize,
    pub stopped_epoch: Option<usize>,
}

impl EarlyStopping {
    pub fn new(spec: EarlyStoppingSpec) -> Result<Self> {
        let maximize = maximize(&spec.monitor, spec.mode.as_deref()).at("train.callbacks.early_stopping")?;
        Ok(EarlyStopping {
            spec,
            maximize,
            best: None,
            best_model: None,
            waited: 0,
            stopped_epoch: None,
        })
    }
}

fn improved(value: f64, best: Option<f64>, maximize: bool, min_delta: f64) -> bool {
    match best {
        None => value.is_finite(),
        Some(b) if maximize => value > b + min_delta,
        Some(b) => value < b - min_delta,
    }
}

impl Callback for EarlyStopping {
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, model: &Graph, control: &mut Control) -> Result<()> {
        let value = monitored(logs, &self.spec.monitor, "early_stopping")?;
        if improved(value, self.best, self.maximize, self.spec.min_delta) {
            self.best = Some(value);
            self.waited = 0;
            if self.spec.restore_best {
                self.best_model = Some(model.valid());
            }
        } else {
            self.waited += 1;
            if self.waited >= self.spec.patience {
                control.stop = true;
                self.stopped_epoch = Some(epoch);
            }
        }
        Ok(())
    }

    fn on_train_end(&mut self, model: &mut Graph) -> Result<()> {
        if let Some(best) = self.best_model.take() {
            *model = best;
        }
        Ok(())
    }

    fn state_name(&self) -> Option<&'static str> {
        Some("early_stopping")
    }

    fn save_state(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).in_file(dir)?;
        if let Some(best) = &self.best_model {
            save_model(best, &dir.join("best"))?;
        }
        let state = BestSoFar {
            best: self.best,
            waited: self.waited,
        };
        crate::train::resume::write_json(&dir.join("state.json"), &state)
    }

    fn load_state(&mut self, dir: &Path, _history: &[Map<String, Json>], device: &Device) -> Result<()> {
        let state: BestSoFar = crate::train::resume::read_json(&dir.join("state.json"))?;
        self.best = state.best;
        self.waited = state.waited;
        let best = dir.join("best");
        self.best_model = if best.is_dir() {
            Some(crate::model::io::load_model(&best, device)?)
        } else {
            None
        };
        Ok(())
    }
}

/// Writes `DIR/checkpoints/last/` every epoch and `DIR/checkpoints/best/` when the monitored value improves.
pub struct Checkpoint {
    spec: CheckpointSpec,
    maximize: bool,
    best: Option<f64>,
    dir: PathBuf,
    whole: Option<Graph>,
    publish: Option<PathBuf>,
}

impl Checkpoint {
    pub fn new(spec: CheckpointSpec, dir: PathBuf) -> Result<Self> {
        let maximize = maximize(&spec.monitor, spec.mode.as_deref()).at("train.callbacks.checkpoint")?;
        Ok(Checkpoint {
            spec,
            maximize,
            best: None,
            dir,
            whole: None,
            publish: None,
        })
    }

    /// Also copies each new best checkpoint into `run_dir` itself, so that a run stopped midway is a run directory
    /// `predict` and `eval` can use.
    pub fn publishing_best_to(mut self, run_dir: PathBuf) -> Self {
        self.publish = Some(run_dir);
        self
    }

    /// Saves `whole` with the trained layers put in, when training sees only a part of the model (the head
    /// trained on cached features), so every checkpoint is a complete model.
    pub fn around(mut self, whole: Graph) -> Self {
        self.whole = Some(whole);
        self
    }
}

impl Callback for Checkpoint {
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, model: &Graph, _control: &mut Control) -> Result<()> {
        let whole;
        let model = match &self.whole {
            Some(w) => {
                whole = w.clone().with_layers_of(model.clone());
                &whole
            }
            None => model,
        };
        save_model(model, &self.dir.join("last"))?;
        // `monitor = "epoch"` keeps the latest as the best (a GAN's generator, which no loss ranks).
        let value = if self.spec.monitor == "epoch" {
            epoch as f64
        } else {
            monitored(logs, &self.spec.monitor, "checkpoint")?
        };
        if improved(value, self.best, self.maximize, 0.0) {
            self.best = Some(value);
            let best = self.dir.join("best");
            save_model(model, &best)?;
            if let Some(run_dir) = &self.publish {
                for file in ["model.toml", "model.safetensors"] {
                    copy_atomic(&best.join(file), &run_dir.join(file))?;
                }
            }
        }
        Ok(())
    }

    fn state_name(&self) -> Option<&'static str> {
        Some("checkpoint")
    }

    fn save_state(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).in_file(dir)?;
        let state = BestSoFar {
            best: self.best,
            waited: 0,
        };
        crate::train::resume::write_json(&dir.join("state.json"), &state)
    }

    fn load_state(&mut self, dir: &Path, _history: &[Map<String, Json>], _device: &Device) -> Result<()> {
        let state: BestSoFar = crate::train::resume::read_json(&dir.join("state.json"))?;
        self.best = state.best;
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CallbacksSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStoppingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointSpec>,
    /// `{ minutes = 30 }`: stop at the end of the first epoch that ends past this much training time (TF Addons'
    /// `TimeStopping`). The epochs trained then depend on the machine's speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<TimeLimitSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeLimitSpec {
    pub minutes: f64,
}

/// Stops training at the end of the first epoch that ends `limit` after training started.
pub struct TimeLimit {
    limit: std::time::Duration,
    started: Option<std::time::Instant>,
}

impl TimeLimit {
    pub fn new(spec: TimeLimitSpec) -> Result<Self> {
        if !(spec.minutes.is_finite() && spec.minutes > 0.0) {
            return Err(
                Error::new(format!("minutes must be a positive number, found {}", spec.minutes))
                    .at("train.callbacks.time_limit"),
            );
        }
        Ok(TimeLimit {
            limit: std::time::Duration::from_secs_f64(spec.minutes * 60.0),
            started: None,
        })
    }
}

impl Callback for TimeLimit {
    fn on_epoch_begin(&mut self, _epoch: usize, _batches: usize) {
        self.started.get_or_insert_with(std::time::Instant::now);
    }

    fn on_epoch_end(&mut self, _epoch: usize, _logs: &Logs, _model: &Graph, control: &mut Control) -> Result<()> {
        if self.started.is_some_and(|s| s.elapsed() >= self.limit) {
            control.stop = true;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStoppingSpec {
    #[serde(default = "val_loss")]
    pub monitor: String,
    /// `"min"` or `"max"`; by default `max` for accuracy-like metrics, `min` for losses and errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default = "five")]
    pub patience: usize,
    #[serde(default)]
    pub min_delta: f64,
    /// Put back the weights of the best epoch when training stops.
    #[serde(default = "yes")]
    pub restore_best: bool,
}

impl Default for EarlyStoppingSpec {
    /// Keras's `EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)`.
    fn default() -> Self {
        EarlyStoppingSpec {
            monitor: val_loss(),
            mode: None,
            patience: five(),
            min_delta: 0.0,
            restore_best: true,
        }
    }
}

impl EarlyStoppingSpec {
    /// Stops when `monitor` (a logged value, e.g. `val_loss` or `val_accuracy`) has not improved for `patience`
    /// epochs.
    pub fn new(monitor: &str, patience: usize) -> Self {
        EarlyStoppingSpec {
            monitor: monitor.into(),
            patience,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// A logged value (`val_loss`, `val_accuracy`, ...), or `"epoch"` to keep the latest epoch as the best.
    #[serde(default = "val_loss")]
    pub monitor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

fn val_loss() -> String {
    "val_loss".into()
}

fn five() -> usize {
    5
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_says_them() {
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(187.0), "3 min 07 s");
        assert_eq!(duration(3720.0), "1 h 02 min");
    }

    #[test]
    fn logs_show_training_values_before_validation_values() {
        let logs: Logs = [
            ("val_loss", 0.5),
            ("loss", 0.25),
            ("accuracy", 0.875),
            ("lr", 0.001),
            ("val_accuracy", 0.75),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(
            shown_logs(&logs),
            "loss 0.2500  accuracy 0.8750  val_loss 0.5000  val_accuracy 0.7500  lr 0.0010"
        );
    }

    #[test]
    fn mode_defaults_follow_the_metric() {
        assert!(!maximize("val_loss", None).unwrap());
        assert!(maximize("val_accuracy", None).unwrap());
        assert!(!maximize("val_mae", None).unwrap());
        assert!(maximize("val_loss", Some("max")).unwrap());
        assert!(maximize("x", Some("up")).is_err());
    }

    #[test]
    fn improvement_respects_min_delta() {
        assert!(improved(0.5, None, false, 0.0));
        assert!(!improved(f64::NAN, None, false, 0.0));
        assert!(improved(0.4, Some(0.5), false, 0.05));
        assert!(!improved(0.46, Some(0.5), false, 0.05));
        assert!(improved(0.9, Some(0.8), true, 0.0));
    }
}
