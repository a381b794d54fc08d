//! The run directory as the unit users share: claiming `--out` without clobbering anything that is not a graft run,
//! the record of what defines the run's split (`run.json` beside a copy of the experiment file), the history written
//! after every epoch (so an interrupted run leaves a usable directory), and `eval`, which measures a trained model on
//! exactly the rows its run was tested on, or on a new labelled file, through the preprocessing stored with it.

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};

use crate::data::prepare::{SourceSpec, read_raw};
use crate::data::{Dataset, Targets};
use crate::error::{Context, Error, Result};
use crate::experiment::data::{check_data_fits, prepare_fold};
use crate::experiment::lock::{LOCK_FILE, RunLock};
use crate::experiment::run::{RunOptions, RunResult};
use crate::experiment::spec::ExperimentSpec;
use crate::infer::predict::Predictor;
use crate::model::Graph;
use crate::report::write_atomic;
use crate::task::head::TaskHead;
use crate::train::callbacks::{Callback, Control, Logs};
use crate::train::trainer::{EVAL_BATCH, evaluate, head_class_weights, history_entry};

pub const RUN_RECORD: &str = "run.json";
pub const EXPERIMENT_COPY: &str = "experiment.toml";
/// Files whose presence marks a directory as a graft run (or a cross-validation of runs), including runs written
/// before `run.json` existed.
const RUN_MARKERS: [&str; 5] = [RUN_RECORD, "preprocess.json", "model.toml", "metrics.json", "cv.json"];

/// What, besides the experiment file, decides which rows a run trained and was tested on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: u32,
    pub seed: u64,
    /// The experiment file the run was trained from; its relative data paths resolve against this file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<PathBuf>,
    /// Cross-validation: the rows of the data set that were this fold's test set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_rows: Option<Vec<usize>>,
}

impl RunRecord {
    /// `dir/run.json`, or `None` for a run written before graft recorded it.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(RUN_RECORD);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).in_file(&path)?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::new(format!("not a graft run record: {e}")).in_file(&path))
    }

    /// Writes `run.json` and, when the experiment came from a file, a copy of that file as `experiment.toml`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        if let Some(source) = &self.experiment {
            let text = std::fs::read(source).in_file(source)?;
            write_atomic(&dir.join(EXPERIMENT_COPY), &text)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::new(e.to_string()))?;
        write_atomic(&dir.join(RUN_RECORD), text.as_bytes())
    }

    /// The experiment as it was when the run trained (the copy in the run directory), resolving data paths as the
    /// original file did.
    fn experiment_spec(&self, dir: &Path) -> Result<ExperimentSpec> {
        let copy = dir.join(EXPERIMENT_COPY);
        let text = std::fs::read_to_string(&copy).map_err(|_| {
            Error::new(
                "the run was not trained from an experiment file, so eval cannot find its data; pass the experiment: \
                 graft eval --model DIR EXPERIMENT.toml",
            )
            .in_file(dir)
        })?;
        let mut spec = ExperimentSpec::from_toml_str(&text).in_file(&copy)?;
        spec.path = self.experiment.clone();
        Ok(spec)
    }
}

/// Makes `out` ready for a new run: created when missing, used when empty, emptied when it holds a graft run and
/// `overwrite` is set (so no stale chart or checkpoint survives); anything else is refused, so a typo in `--out`
/// never writes into (or removes) a directory of the user's own. The returned lock keeps a second training out of
/// the directory until it is dropped.
pub fn claim_out_dir(out: &Path, overwrite: bool) -> Result<RunLock> {
    if out.exists() && !out.is_dir() {
        return Err(Error::new("this is a file; --out takes a directory for the run").in_file(out));
    }
    std::fs::create_dir_all(out).in_file(out)?;
    // Locked before anything is looked at or removed, so a running training's directory is never touched.
    let lock = RunLock::acquire(out)?;
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(out).in_file(out)? {
        let entry = entry.in_file(out)?;
        if entry.file_name() != LOCK_FILE {
            entries.push(entry.path());
        }
    }
    if entries.is_empty() {
        return Ok(lock);
    }
    // A stale lock marks the directory of a training that died (killed before it wrote any of the markers, say):
    // graft's own files, so --overwrite may replace them.
    if lock.took_over.is_none() && !RUN_MARKERS.iter().any(|f| out.join(f).exists()) {
        return Err(Error::new(
            "--out: the directory is not empty and holds no graft run; give a new or empty directory",
        )
        .in_file(out));
    }
    if !overwrite {
        return Err(Error::new(
            "--out: the directory holds a graft run already; pass --overwrite to replace it (its files are removed \
             first) or give another directory",
        )
        .in_file(out));
    }
    for path in entries {
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path).in_file(&path)?;
        } else {
            std::fs::remove_file(&path).in_file(&path)?;
        }
    }
    Ok(lock)
}

/// A run directory opened for training: held, and when resuming, the checkpoint to continue from.
pub enum Opened {
    Ready(RunLock, Option<crate::train::resume::ResumePoint>),
    /// `--resume` of a run that has finished: its results, untouched.
    Finished(RunResult),
}

impl Opened {
    /// Where a training's resumable checkpoints go, and the one it continues from.
    pub fn resumable(from: Option<crate::train::resume::ResumePoint>, out: &Path) -> crate::train::step::Resumable {
        crate::train::step::Resumable {
            checkpoints: out.join("checkpoints"),
            from,
        }
    }
}

/// Opens `opts.out` for training `exp`: a new run ([`claim_out_dir`]), or with `opts.resume` the interrupted run
/// there — the same experiment (a changed key is named), the same seed — continued from its newest resumable
/// checkpoint that passes its checksums (a damaged one is reported and the one before it used).
pub fn open_run_dir(exp: &ExperimentSpec, opts: &RunOptions) -> Result<Opened> {
    if !opts.resume {
        return Ok(Opened::Ready(claim_out_dir(&opts.out, opts.overwrite)?, None));
    }
    let out = &opts.out;
    if opts.overwrite {
        return Err(
            Error::new("--resume continues the run in --out, which --overwrite would remove; give one").in_file(out),
        );
    }
    if !out.is_dir() {
        return Err(Error::new("--resume: no run here to continue; leave --resume out to start one").in_file(out));
    }
    let lock = RunLock::acquire(out)?;
    let record = RunRecord::read(out)?.ok_or_else(|| {
        Error::new("--resume: this directory holds no graft run (run.json is missing); leave --resume out to start one")
            .in_file(out)
    })?;
    if record.seed != opts.seed {
        return Err(Error::new(format!(
            "the run was started with --seed {}; resume it with that seed (found --seed {})",
            record.seed, opts.seed
        ))
        .in_file(out));
    }
    if let Some(source) = &exp.path {
        let copy = out.join(EXPERIMENT_COPY);
        let before = std::fs::read_to_string(&copy).in_file(&copy)?;
        let now = std::fs::read_to_string(source).in_file(source)?;
        if let Some(change) = first_change(&before, &now) {
            return Err(Error::new(format!(
                "the experiment changed since the run started ({change}); resume with the experiment it started with,                  or start anew with --overwrite"
            ))
            .in_file(source));
        }
    }
    let metrics = out.join("metrics.json");
    if metrics.exists() {
        let text = std::fs::read_to_string(&metrics).in_file(&metrics)?;
        let doc: Json = serde_json::from_str(&text).map_err(|e| Error::new(e.to_string()).in_file(&metrics))?;
        if doc.get("complete") != Some(&Json::Bool(false)) {
            if !opts.quiet {
                eprintln!("the run in {} has finished; nothing to resume", out.display());
            }
            let history = doc
                .get("history")
                .and_then(Json::as_array)
                .map(|h| h.iter().filter_map(|e| e.as_object().cloned()).collect())
                .unwrap_or_default();
            let test = doc.get("test").and_then(Json::as_object).cloned().unwrap_or_default();
            return Ok(Opened::Finished(RunResult {
                history,
                test,
                out: out.clone(),
            }));
        }
    }
    let mut notes = vec![];
    let from = crate::train::resume::find_checkpoint(&out.join("checkpoints"), &mut notes)?;
    if !opts.quiet {
        for note in &notes {
            eprintln!("warning: {note}");
        }
        match &from {
            Some(p) => match p.partial {
                Some(part) => eprintln!(
                    "resuming in epoch {} after batch {} ({})",
                    p.epoch + 1,
                    part.batches,
                    p.dir.display()
                ),
                None => eprintln!("resuming after epoch {} ({})", p.epoch, p.dir.display()),
            },
            None => eprintln!("no epoch had ended; training from the start"),
        }
    }
    Ok(Opened::Ready(lock, from))
}

/// The first key whose value differs between two experiment files, as `train.epochs: 5 → 10`; `None` when they say
/// the same (comments and layout aside).
fn first_change(before: &str, now: &str) -> Option<String> {
    let parse = |t: &str| t.parse::<toml::Table>().ok().map(toml::Value::Table);
    let (a, b) = (parse(before)?, parse(now)?);
    fn walk(path: &str, a: Option<&toml::Value>, b: Option<&toml::Value>) -> Option<String> {
        match (a, b) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                keys.into_iter().find_map(|k| {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(&p, x.get(k), y.get(k))
                })
            }
            (x, y) if x == y => None,
            (x, y) => {
                let show = |v: Option<&toml::Value>| v.map_or("(absent)".to_string(), |v| v.to_string());
                Some(format!("{path}: {} → {}", show(x), show(y)))
            }
        }
    }
    walk("", Some(&a), Some(&b))
}

/// Writes `metrics.json` with the history so far after every epoch (marked `"complete": false` until the run
/// finishes and writes its test metrics), so a run stopped midway still shows what it learned.
pub struct HistoryWriter {
    path: PathBuf,
    history: Vec<Map<String, Json>>,
}

impl HistoryWriter {
    pub fn new(dir: &Path) -> Self {
        HistoryWriter {
            path: dir.join("metrics.json"),
            history: vec![],
        }
    }
}

impl Callback for HistoryWriter {
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, _model: &Graph, _control: &mut Control) -> Result<()> {
        self.history.push(history_entry(epoch, logs));
        let doc = json!({"history": self.history, "test": {}, "complete": false});
        let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::new(e.to_string()))?;
        write_atomic(&self.path, text.as_bytes())
    }

    fn load_state(
        &mut self,
        _dir: &Path,
        history: &[Map<String, Json>],
        _device: &burn::prelude::Device,
    ) -> Result<()> {
        self.history = history.to_vec();
        Ok(())
    }
}

/// The training and test rows of a run as it split them (its recorded seed and test rows), transformed by its
/// stored preprocessing rather than a new fit.
fn recorded_split(
    exp: &ExperimentSpec,
    record: Option<&RunRecord>,
    seed: u64,
    predictor: &Predictor,
) -> Result<(Dataset, Option<Dataset>)> {
    let test_rows = record.and_then(|r| r.test_rows.as_deref());
    let splits = prepare_fold(exp, seed, test_rows, Some(&predictor.preprocessor))?;
    Ok((splits.train, splits.test))
}

/// The test split of the run in `dir`, exactly as it was tested (for comparing other models on it).
pub fn run_test_split(dir: &Path, predictor: &Predictor) -> Result<Dataset> {
    let record = RunRecord::read(dir)?.ok_or_else(|| {
        Error::new("this run has no run.json (it was trained by an older graft); train it again").in_file(dir)
    })?;
    let exp = record.experiment_spec(dir)?;
    let (_, test) = recorded_split(&exp, Some(&record), record.seed, predictor)?;
    test.ok_or_else(|| Error::new("the run's experiment has no test split").in_file(dir))
}

/// A labelled file to evaluate instead of the run's own test split: a CSV or text file in the format the run
/// trained on, or arrays (`.npy` inputs, IDX images) with their labels in `labels`.
#[derive(Debug, Clone)]
pub struct EvalData {
    pub data: PathBuf,
    pub labels: Option<PathBuf>,
}

/// `graft eval`: the run's test metrics, measured again on exactly the rows the run was tested on (the split its
/// recorded seed made, transformed by the stored preprocessing, not a new fit), or on `data`. `experiment` replaces
/// the run's own copy of its experiment (needed for runs written before graft kept one); `seed` must then agree
/// with the run's.
pub fn eval_run(
    dir: &Path,
    experiment: Option<&Path>,
    seed: Option<u64>,
    data: Option<&EvalData>,
    device: &Device,
) -> Result<Map<String, Json>> {
    if !dir.is_dir() {
        return Err(Error::new("--model takes a run directory (the --out of graft train)").in_file(dir));
    }
    let predictor = Predictor::load(dir, device)?;
    if predictor.objective.as_deref() == Some("word2vec") {
        return Err(Error::new(format!(
            "{}; its analogy and similarity scores are in metrics.json, and graft word-vectors scores it on other \
             benchmark files",
            crate::infer::predict::WORD2VEC_RUN
        ))
        .in_file(dir));
    }
    if predictor.objective.as_deref() == Some("gan") {
        return Err(Error::new(
            "a GAN has no test metrics; compare generators with graft fid --classifier CLS --generator DIR",
        )
        .in_file(dir));
    }
    let record = RunRecord::read(dir)?;
    if let (Some(r), Some(s)) = (&record, seed)
        && r.seed != s
    {
        return Err(Error::new(format!(
            "the run was trained with seed {}, whose split eval reuses; leave --seed out",
            r.seed
        ))
        .at("--seed"));
    }
    let exp = match (experiment, &record) {
        (Some(path), _) => ExperimentSpec::from_file(path)?,
        (None, Some(r)) => r.experiment_spec(dir)?,
        (None, None) => {
            return Err(Error::new(
                "this run has no run.json (it was trained by an older graft); pass its experiment file: graft eval \
                 --model DIR EXPERIMENT.toml",
            )
            .in_file(dir));
        }
    };
    let seed = record.as_ref().map_or(seed.unwrap_or(42), |r| r.seed);
    if predictor.objective.is_some() && data.is_some() {
        return Err(Error::new(
            "an autoencoder run is evaluated on its own test split; score new inputs with graft predict, which \
             writes each one's reconstruction error",
        )
        .at("--data"));
    }
    let mut heads = if predictor.tasks.is_empty() {
        vec![predictor.head.clone()]
    } else {
        predictor.tasks.clone()
    };
    let (mut test, train) = match data {
        None => {
            let (train, test) = recorded_split(&exp, record.as_ref(), seed, &predictor)?;
            let test = test.ok_or_else(|| {
                Error::new("the experiment has no test split; evaluate a labelled file with --data").at("data")
            })?;
            (test, Some(train))
        }
        Some(d) => (labelled_file(&exp, &predictor, &heads, d)?, None),
    };
    if matches!(&exp.objective, crate::experiment::spec::Objective::Vae(v) if v.conditional) {
        // The class input is made from the labels, as in training, before the data is matched to the model.
        return crate::experiment::reconstruct::eval_reconstruction(&exp, &predictor.graph, &test, seed);
    }
    check_data_fits(&predictor.graph, &mut test, "data.test")?;
    if let crate::experiment::spec::Objective::Siamese(siamese) = &exp.objective {
        let train = train
            .as_ref()
            .ok_or_else(|| Error::new("the run's training split is needed").in_file(dir))?;
        return crate::experiment::siamese::test_metrics(&predictor.graph, &siamese.loss, train, &test);
    }
    if predictor.objective.is_some() {
        return crate::experiment::reconstruct::eval_reconstruction(&exp, &predictor.graph, &test, seed);
    }
    // Runs written before the resolved class weights were stored recompute them from the experiment.
    for head in heads.iter_mut().filter(|h| h.class_weights.is_none()) {
        head.class_weights = match &head.name {
            Some(n) => exp.train.tasks.get(n).and_then(|t| t.class_weights.clone()),
            None => exp.train.class_weights.clone(),
        };
    }
    let weights = head_class_weights(&heads, train.as_ref().unwrap_or(&test))?;
    evaluate(
        &predictor.graph,
        &heads,
        &test,
        &weights,
        EVAL_BATCH,
        exp.train.top_k,
        true,
    )
}

/// The labelled file `d`, read as the run's data set is (its source kind and options, with the path replaced) and
/// transformed by the stored preprocessing; class labels follow the run's class order, matched by name.
fn labelled_file(exp: &ExperimentSpec, predictor: &Predictor, heads: &[TaskHead], d: &EvalData) -> Result<Dataset> {
    let source = exp.data.dataset.as_ref().ok_or_else(|| {
        Error::new("--data evaluates a single-task run; a multi-task run is evaluated on its own test splits")
            .at("--data")
    })?;
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let file = absolute(&d.data);
    let labels = d.labels.as_deref().map(absolute);
    let need_labels = || {
        labels
            .clone()
            .ok_or_else(|| Error::new("arrays need their labels: add --labels FILE").at("--labels"))
    };
    let mut source = source.clone();
    match &mut source {
        SourceSpec::Csv { csv } => csv.path = file.clone(),
        SourceSpec::Text { text } => text.path = file.clone(),
        SourceSpec::Images { images } => {
            images.path = file.clone();
            images.augment = None;
            // The run's size and channels, whatever the new files' own.
            if let crate::data::prepare::Preprocessor::Images(p) = &predictor.preprocessor {
                images.size = Some(p.size);
                images.channels = Some(p.channels);
            }
        }
        SourceSpec::Npy { npy } => {
            npy.x = crate::data::prepare::XFiles::One(file.clone());
            npy.y = Some(need_labels()?);
            npy.sample_weight = None;
        }
        SourceSpec::Idx { idx } => {
            idx.images = file.clone();
            idx.labels = Some(need_labels()?);
        }
        SourceSpec::Builtin(name) => {
            return Err(Error::new(format!(
                "the run trained on the built-in '{name}'; its own test split is what `graft eval --model DIR` \
                 measures"
            ))
            .at("--data"));
        }
    }
    let raw = read_raw(&source, &|p| exp.resolve(p)).in_file(&file)?;
    let rows: Vec<usize> = (0..raw.len()).collect();
    let mut ds = raw.transform(&predictor.preprocessor, &rows, false).in_file(&file)?;
    let head = &heads[0];
    match &mut ds.targets {
        None => {
            return Err(Error::new("the file has no labels (its target column or labels are missing)").in_file(&file));
        }
        Some(Targets::Classes { labels, names }) if head.is_classification() && *names != head.classes => {
            let mut to_run = vec![];
            for name in names.iter() {
                let k = head.classes.iter().position(|c| c == name).ok_or_else(|| {
                    Error::new(format!(
                        "class '{name}' is not one the model knows ({})",
                        head.classes.join(", ")
                    ))
                    .in_file(&file)
                })?;
                to_run.push(k);
            }
            for l in labels.iter_mut() {
                *l = to_run[*l];
            }
            *names = head.classes.clone();
        }
        Some(_) => {}
    }
    ds.validate().in_file(&file)?;
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("graft-run-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn out_dir_is_created_when_missing_and_used_when_empty() {
        let dir = scratch("fresh");
        claim_out_dir(&dir, false).unwrap();
        assert!(dir.is_dir());
        claim_out_dir(&dir, false).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_foreign_directory_is_never_written_into_or_removed() {
        let dir = scratch("foreign");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("thesis.tex"), "mine").unwrap();
        for overwrite in [false, true] {
            let e = claim_out_dir(&dir, overwrite).unwrap_err().to_string();
            assert!(e.contains("holds no graft run"), "{e}");
        }
        assert!(dir.join("thesis.tex").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_is_replaced_only_with_overwrite_and_leaves_nothing_stale() {
        let dir = scratch("run");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metrics.json"), "{}").unwrap();
        std::fs::write(dir.join("metric_f1.png"), "old chart").unwrap();
        let e = claim_out_dir(&dir, false).unwrap_err().to_string();
        assert!(e.contains("--overwrite"), "{e}");
        claim_out_dir(&dir, true).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_training_killed_before_its_first_marker_left_a_graft_directory() {
        // Killed between taking the lock and writing run.json: a stale lock and the experiment's copy only.
        let dir = scratch("killed-early");
        std::fs::create_dir_all(&dir).unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        for overwrite in [false, true] {
            std::fs::write(dir.join(LOCK_FILE), format!("{pid}\n")).unwrap();
            std::fs::write(dir.join(EXPERIMENT_COPY), "[model]").unwrap();
            let claimed = claim_out_dir(&dir, overwrite);
            if overwrite {
                assert_eq!(claimed.unwrap().took_over, Some(pid));
                assert!(!dir.join(EXPERIMENT_COPY).exists());
            } else {
                let e = claimed.unwrap_err().to_string();
                assert!(e.contains("holds a graft run already"), "{e}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_is_not_a_run_directory() {
        let dir = scratch("file");
        std::fs::write(&dir, "x").unwrap();
        let e = claim_out_dir(&dir, true).unwrap_err().to_string();
        assert!(e.contains("--out takes a directory"), "{e}");
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn the_run_record_round_trips() {
        let dir = scratch("record");
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(RunRecord::read(&dir).unwrap(), None);
        let record = RunRecord {
            format: 1,
            seed: 7,
            experiment: None,
            test_rows: Some(vec![3, 1]),
        };
        record.write(&dir).unwrap();
        assert_eq!(RunRecord::read(&dir).unwrap(), Some(record));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
