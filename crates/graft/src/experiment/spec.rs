//! `ExperimentSpec`: an experiment file — `[data]`, `[model]`, `[train]` — as users write it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::error::{Context, Error, Result};
use crate::model::spec::ModelSpec;
pub use crate::task::head::{CLASS_WEIGHT_NAMES, ClassWeights};
use crate::task::loss::LossSpec;
use crate::task::metrics::check_metric_names;
pub use crate::train::callbacks::{CallbacksSpec, CheckpointSpec, EarlyStoppingSpec};
use crate::train::optim::{ClipSpec, OptimizerSpec};
use crate::train::schedule::ScheduleSpec;
use crate::train::trainer::FitConfig;
use graft_data::suggest::hint;

#[derive(Debug, Clone)]
pub struct ExperimentSpec {
    pub data: DataSpec,
    /// The model (empty for `[word2vec]`, whose two embedding tables are sized by the corpus' vocabulary).
    pub model: ModelSpec,
    pub train: TrainSpec,
    /// Supervised (the default), or a section `[autoencoder]` / `[vae]`: the model learns to give back its input.
    pub objective: Objective,
    /// The file it was read from; relative data paths are resolved against its folder.
    pub path: Option<PathBuf>,
}

/// What the model learns from the data.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Objective {
    /// The targets of `[data]` through the loss of `[train]`.
    #[default]
    Supervised,
    /// `[autoencoder]`: its input back, scored by `[train] loss`.
    Autoencoder(AutoencoderSpec),
    /// `[vae]`: a variational autoencoder, trained on the negative ELBO.
    Vae(VaeSpec),
    /// `[gan]`: `[model]` is a generator of codes → samples, trained against `[gan.discriminator]`.
    Gan(GanSpec),
    /// `[siamese]`: `[model]` embeds inputs, trained on pairs or triplets formed from the class labels.
    Siamese(SiameseSpec),
    /// `[word2vec]`: word vectors learnt from `[data] corpus` by skip-gram with negative sampling (no `[model]`).
    Word2Vec(Word2VecSpec),
}

/// `[word2vec]`: the skip-gram model, its pairs and its evaluation. The defaults are the word2vec tool's and
/// gensim's (`vector_size = 100, window = 5, min_count = 5, negative = 5, sample = 1e-3`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Word2VecSpec {
    /// The vectors' dimension.
    #[serde(default = "hundred")]
    pub dim: usize,
    /// The largest distance between a word and a context word; each word's window is drawn from 1..=window, so
    /// nearer words count more.
    #[serde(default = "five")]
    pub window: usize,
    /// Words seen fewer times in the corpus are left out (and so are not counted in any window).
    #[serde(default = "five")]
    pub min_count: usize,
    /// At most this many words, the most frequent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vocab: Option<usize>,
    /// Noise words per (word, context) pair.
    #[serde(default = "five")]
    pub negatives: usize,
    /// Frequent words are dropped at random with the word2vec tool's probability for this threshold (0: keep all).
    #[serde(default = "subsample")]
    pub subsample: f64,
    /// Analogy questions (`questions-words.txt` format) scored on the trained vectors: accuracy in `test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analogies: Option<PathBuf>,
    /// Word pairs with human similarity scores (`wordsim353.tsv` format): Spearman correlation in `test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<PathBuf>,
}

impl Default for Word2VecSpec {
    fn default() -> Self {
        Word2VecSpec {
            dim: 100,
            window: 5,
            min_count: 5,
            max_vocab: None,
            negatives: 5,
            subsample: 1e-3,
            analogies: None,
            similarity: None,
        }
    }
}

fn hundred() -> usize {
    100
}
fn subsample() -> f64 {
    1e-3
}

/// `[siamese]`: the metric-learning loss.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiameseSpec {
    /// `{ triplet = { margin = 0.2, mining = "semi_hard" } }` (default; mining `"batch_all"`, `"batch_hard"` or
    /// `"semi_hard"`) or `{ contrastive = { margin = 1.0 } }`.
    #[serde(default)]
    pub loss: crate::train::metric::MetricLoss,
}

/// `[gan]`: the discriminator and how the two networks train.
#[derive(Debug, Clone, PartialEq)]
pub struct GanSpec {
    /// `"non_saturating"` (default) or `{ wasserstein = { gradient_penalty = 10.0 } }`.
    pub loss: crate::task::gan::GanLoss,
    /// Discriminator steps per generator step (default 1; 5 is WGAN-GP's).
    pub critic_steps: usize,
    /// The discriminator's optimizer (default: `[train] optimizer`).
    pub optimizer: Option<OptimizerSpec>,
    /// The discriminator (a critic for the Wasserstein loss): a model like `[model]`, from the data's per-sample
    /// shape (its `input` may be left out) to one score, `[1]`.
    pub discriminator: ModelSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GanInput {
    #[serde(default)]
    loss: crate::task::gan::GanLoss,
    #[serde(default = "one_step")]
    critic_steps: usize,
    #[serde(default)]
    optimizer: Option<OptimizerSpec>,
    discriminator: Value,
}

fn one_step() -> usize {
    1
}

impl GanSpec {
    fn from_toml(value: &Value) -> Result<Self> {
        let input: GanInput = section_de(value, "gan")?;
        Ok(GanSpec {
            loss: input.loss,
            critic_steps: input.critic_steps,
            optimizer: input.optimizer,
            discriminator: ModelSpec::from_toml(&input.discriminator, "gan.discriminator")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderSpec {
    /// Denoising: the standard deviation of Gaussian noise added to the training inputs (the targets stay clean).
    #[serde(default)]
    pub noise: f64,
    /// Anomaly detection: the classes that count as normal. Training and validation use their examples only; the
    /// test set's reconstruction errors score how well they tell the other classes apart (AUROC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub normal: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeSpec {
    /// The weight of the KL term: 1 is the ELBO; above 1 a β-VAE (smoother codes, blurrier reconstructions).
    #[serde(default = "one")]
    pub beta: f64,
    #[serde(default)]
    pub noise: f64,
    /// As for `[autoencoder]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub normal: Vec<String>,
    /// A conditional VAE: the model's second input is each example's class, one-hot (shape `[classes]`), which
    /// the encoder and the decoder both read; `graft sample --class` then picks what to draw.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conditional: bool,
}

impl Default for VaeSpec {
    fn default() -> Self {
        VaeSpec {
            beta: 1.0,
            noise: 0.0,
            normal: vec![],
            conditional: false,
        }
    }
}

impl Objective {
    /// The training step's settings, with the reconstruction loss from `[train] loss`.
    pub fn reconstruction(&self, loss: &LossSpec) -> Option<crate::train::reconstruction::ReconstructionConfig> {
        use crate::train::reconstruction::ReconstructionConfig as R;
        match self {
            Objective::Supervised | Objective::Gan(_) | Objective::Siamese(_) | Objective::Word2Vec(_) => None,
            Objective::Autoencoder(a) => Some(R::autoencoder(loss.clone()).with_noise(a.noise)),
            Objective::Vae(v) => Some(R::vae(loss.clone(), v.beta).with_noise(v.noise)),
        }
    }

    /// The classes an anomaly detector trains on (empty: all).
    pub fn normal_classes(&self) -> &[String] {
        match self {
            Objective::Supervised | Objective::Gan(_) | Objective::Siamese(_) | Objective::Word2Vec(_) => &[],
            Objective::Autoencoder(a) => &a.normal,
            Objective::Vae(v) => &v.normal,
        }
    }

    /// The section's name (`autoencoder`, `vae`), for messages and `metrics.json`.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Supervised => "supervised",
            Objective::Autoencoder(_) => "autoencoder",
            Objective::Vae(_) => "vae",
            Objective::Gan(_) => "gan",
            Objective::Siamese(_) => "siamese",
            Objective::Word2Vec(_) => "word2vec",
        }
    }
}

pub use crate::data::prepare::{IdxFiles, NpyFiles, SourceSpec as DatasetSpec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// Fraction of the (non-test) data held out for validation; ignored when `[data] validation` is given.
    #[serde(default = "fifteen")]
    pub validation: f64,
    /// Fraction held out for the final test; ignored when `[data] test` is given.
    #[serde(default = "twenty")]
    pub test: f64,
    /// Keep class proportions in every part (classification only).
    #[serde(default = "yes")]
    pub stratify: bool,
}

impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec {
            validation: 0.15,
            test: 0.2,
            stratify: true,
        }
    }
}

fn fifteen() -> f64 {
    0.15
}
fn twenty() -> f64 {
    0.2
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// The data set (absent when `tasks` gives one per task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetSpec>,
    #[serde(default)]
    pub split: SplitSpec,
    /// A given validation set instead of a split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<DatasetSpec>,
    /// A given test set instead of a split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<DatasetSpec>,
    /// Background examples that belong to none of the classes, in the data set's format: they become one more class
    /// (`background_class`, last in class order; give the model one more output) and are split like the rest, so
    /// the model learns to say "none of these".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<DatasetSpec>,
    #[serde(default = "other", skip_serializing_if = "is_other")]
    pub background_class: String,
    /// Multi-task learning: one data set per task (each with its own split or given validation and test sets),
    /// trained as their union, every example labelled for its own task only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<String, DataSpec>,
    /// Examples drawn from trained generative models, added to the training split only:
    /// `[{ model = "runs/cvae", class = "7", count = 5000 }]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generated: Vec<crate::experiment::generated::GeneratedSpec>,
    /// Unlabelled running text for `[word2vec]`: `{ path = "corpus.txt" }`, a folder of text files, or a CSV's
    /// text column (`{ path = "reviews.csv", column = "review" }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<crate::data::text::corpus::CorpusSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Required, unless `transfer` chooses a strategy whose recipe sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default = "batch")]
    pub batch_size: usize,
    /// Adam at lr 1e-3 when left out (or, with `transfer`, the chosen strategy's rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerSpec>,
    pub loss: LossSpec,
    /// Metrics logged per epoch (train and `val_`); the test set gets every metric.
    #[serde(default = "accuracy")]
    pub metrics: Vec<String>,
    #[serde(default)]
    pub schedule: ScheduleSpec,
    #[serde(default)]
    pub callbacks: CallbacksSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad: Option<ClipSpec>,
    /// `"balanced"` (n / (classes · count_c), as scikit-learn) or one weight per class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<ClassWeights>,
    /// k of `top_k_accuracy`.
    #[serde(default = "five")]
    pub top_k: usize,
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Batches of texts of similar length (as Hugging Face's `group_by_length`): a `bert` layer then computes
    /// little padding.
    #[serde(default, skip_serializing_if = "is_false")]
    pub group_by_length: bool,
    /// Start from the weights of another run or state dict, for some or all layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<crate::model::restore::RestoreSpec>,
    /// Parameters kept fixed during training, by glob over their names (`embedding`, `conv1.*`, `*.bias`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// Feature extraction: compute the output of the frozen part of the model (everything up to the latest layer
    /// that only frozen layers feed) once for every sample, in inference mode, and train the rest on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_features: bool,
    /// Discriminative learning rates and gradual unfreezing over groups of layers (ULMFiT); parameters in no group
    /// stay frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_groups: Option<crate::model::groups::LayerGroupsSpec>,
    /// Multi-task learning: per task (as named in `[data.tasks]`), the model output that serves it and its loss,
    /// loss weight, metrics and class weights; the total loss is the weighted sum, each task's loss counting only
    /// the examples labelled for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<String, TaskSpec>,
    /// `"temperature"`: after training, fit a temperature on the validation split that calibrates the
    /// probabilities (stored with the model, used by `predict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrate: Option<Calibration>,
    /// Reject inputs that belong to no class: a score and the fraction of validation inputs its threshold keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<crate::infer::ood::RejectSpec>,
    /// `"oversample"`, `"undersample"` or `"balanced_batches"`: which training examples each epoch visits
    /// (classification; the validation and test sets are never resampled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resample: Option<crate::data::sampling::Resample>,
    /// Binary and multi-label outputs: tune the decision threshold on the validation split (`{ objective = "f1" }`,
    /// `"youden"` or `{ recall_at_precision = 0.9 }`); stored with the model and used by `predict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<crate::task::threshold::ThresholdSpec>,
    /// Regression: the model learns the target standardized with the training rows' mean and standard deviation
    /// (stored with the model); predictions and metrics are in the target's own unit. `false` trains on the raw
    /// target.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub standardize_target: bool,
    /// Resumable checkpoints inside long epochs: `{ every_batches = 500 }` or `{ every_minutes = 10 }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<crate::train::config::CheckpointEvery>,
    /// `{ alpha = 0.4 }`: blend every training batch with a shuffled copy of itself (inputs and losses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixup: Option<crate::train::mixup::MixupSpec>,
    /// Transfer learning by strategy: `"features"`, `"fine_tune_top"`, `"fine_tune_all"`, or `"auto"` to choose
    /// one from the data ([`crate::experiment::transfer`]); it sets `freeze`, `cache_features` and `layer_groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<crate::experiment::transfer::TransferSpec>,
    /// Score simple models on the same inputs beside the network (a linear model; 5-nearest neighbours for short
    /// numeric sequences) and report both; `false` skips them.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub baseline: bool,
    /// A look inside the network, in the report: per-layer statistics over the epochs, a 2-D projection of a
    /// layer's outputs, attention maps ([`crate::experiment::introspect`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspect: Option<crate::experiment::introspect::IntrospectSpec>,
}

impl ExperimentSpec {
    /// The experiment a TOML file with these three sections describes; relative paths in `data` resolve against
    /// the working directory.
    pub fn new(data: DataSpec, model: ModelSpec, train: TrainSpec) -> Self {
        ExperimentSpec {
            data,
            model,
            train,
            objective: Objective::Supervised,
            path: None,
        }
    }

    /// A `[word2vec]` experiment: vectors learnt from `corpus` with the loop settings of `fit` (the loss is negative
    /// sampling; `fit`'s loss and metrics are not used).
    pub fn word2vec(corpus: crate::data::text::corpus::CorpusSpec, w2v: Word2VecSpec, fit: FitConfig) -> Self {
        let data = DataSpec {
            dataset: None,
            corpus: Some(corpus),
            ..DataSpec::new(DatasetSpec::Builtin(String::new()))
        };
        let train = TrainSpec::new(LossSpec::BinaryCrossentropy { pos_weight: None }, fit);
        ExperimentSpec::new(data, ModelSpec::default(), train).with_objective(Objective::Word2Vec(w2v))
    }

    /// This experiment with another objective (`Objective::Autoencoder(..)`, `Objective::Vae(..)`).
    pub fn with_objective(mut self, objective: Objective) -> Self {
        self.objective = objective;
        self
    }
}

impl DataSpec {
    /// `[data] dataset = ...` with the default split (15% validation, 20% test, stratified).
    pub fn new(dataset: DatasetSpec) -> Self {
        DataSpec {
            dataset: Some(dataset),
            split: SplitSpec::default(),
            validation: None,
            test: None,
            background: None,
            background_class: other(),
            tasks: BTreeMap::new(),
            generated: vec![],
            corpus: None,
        }
    }

    pub fn with_split(mut self, split: SplitSpec) -> Self {
        self.split = split;
        self
    }
}

impl TrainSpec {
    /// `[train]` with `loss` and the loop's settings from `fit`; everything else (callbacks, transfer, calibration,
    /// rejection, thresholds) off, as in a `[train]` table that names only those keys. Set the other fields
    /// directly.
    pub fn new(loss: LossSpec, fit: FitConfig) -> Self {
        TrainSpec {
            epochs: Some(fit.epochs),
            batch_size: fit.batch_size,
            optimizer: (fit.optimizer != OptimizerSpec::default()).then_some(fit.optimizer),
            loss,
            metrics: fit.metrics,
            schedule: fit.schedule,
            callbacks: CallbacksSpec::default(),
            clip_grad: fit.clip_grad,
            class_weights: None,
            top_k: fit.top_k,
            shuffle: fit.shuffle,
            group_by_length: fit.group_by_length,
            init_from: None,
            freeze: vec![],
            cache_features: false,
            layer_groups: fit.layer_groups,
            tasks: BTreeMap::new(),
            calibrate: None,
            reject: None,
            resample: fit.resample,
            threshold: None,
            standardize_target: true,
            checkpoint: fit.checkpoint_every,
            mixup: fit.mixup,
            transfer: None,
            baseline: true,
            introspect: None,
        }
    }

    /// The optimizer `[train]` names, else Adam at its defaults.
    pub fn optimizer(&self) -> OptimizerSpec {
        self.optimizer.clone().unwrap_or_default()
    }

    /// The epochs `[train]` gives (present once any `transfer` strategy is resolved; checked when the spec is read).
    pub fn epochs(&self) -> usize {
        self.epochs.unwrap_or(1)
    }

    /// The training loop's part of `[train]`.
    pub fn fit_config(&self) -> FitConfig {
        FitConfig {
            epochs: self.epochs(),
            batch_size: self.batch_size,
            shuffle: self.shuffle,
            group_by_length: self.group_by_length,
            optimizer: self.optimizer(),
            clip_grad: self.clip_grad,
            schedule: self.schedule.clone(),
            metrics: self.metrics.clone(),
            top_k: self.top_k,
            resample: self.resample,
            layer_groups: self.layer_groups.clone(),
            checkpoint_every: self.checkpoint,
            mixup: self.mixup,
        }
    }
}

fn is_true(v: &bool) -> bool {
    *v
}

fn is_false(v: &bool) -> bool {
    !*v
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Calibration {
    Temperature,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The model output (a node name in `[model] outputs`); by default the task's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// By default `[train] loss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossSpec>,
    #[serde(default = "one")]
    pub weight: f64,
    /// By default `[train] metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<ClassWeights>,
}

fn one() -> f64 {
    1.0
}

fn other() -> String {
    "other".into()
}

fn is_other(name: &String) -> bool {
    name == "other"
}

fn batch() -> usize {
    32
}
fn five() -> usize {
    5
}
fn accuracy() -> Vec<String> {
    vec!["accuracy".into()]
}

const SECTIONS: [&str; 8] = [
    "data",
    "model",
    "train",
    "autoencoder",
    "vae",
    "gan",
    "siamese",
    "word2vec",
];
/// The sections that say what the model learns besides supervised targets; at most one per experiment.
const OBJECTIVES: [&str; 5] = ["autoencoder", "vae", "gan", "siamese", "word2vec"];

impl ExperimentSpec {
    pub fn from_file(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let copy = path.join("experiment.toml");
            return Err(Error::new(if copy.is_file() {
                format!(
                    "this is a run directory, not an experiment file; the experiment it ran is {}",
                    copy.display()
                )
            } else {
                "this is a folder, not an experiment file (a TOML file with [data], [model] and [train])".to_string()
            })
            .in_file(path));
        }
        let text = std::fs::read_to_string(path).in_file(path)?;
        let mut spec = Self::from_toml_str(&text).in_file(path)?;
        spec.path = Some(path.to_path_buf());
        Ok(spec)
    }

    pub fn from_toml_str(text: &str) -> Result<Self> {
        let doc: toml::Table = toml::from_str(text).map_err(|e| Error::new(toml_message(&e)))?;
        for key in doc.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                return Err(Error::new(format!(
                    "unknown section [{key}]{}; an experiment has [data], [model] and [train], and one of [autoencoder], \
                     [vae], [gan], [siamese] or [word2vec] when the model learns something else than the data's targets",
                    hint(key, SECTIONS)
                )));
            }
        }
        let section = |name: &str| {
            doc.get(name)
                .ok_or_else(|| Error::new(format!("missing section [{name}]")))
        };
        let data: DataSpec = section_de(section("data")?, "data")?;
        if doc.contains_key("word2vec") {
            return Self::word2vec_from(&doc, data);
        }
        if data.corpus.is_some() {
            return Err(Error::new(
                "a corpus is running text to learn word vectors from, for [word2vec]; a model learns from `dataset`",
            )
            .at("data.corpus"));
        }
        let model = ModelSpec::from_toml(section("model")?, "model")?;
        // GANs and siamese models set their losses in their own section; `[train]` keeps the loop's settings.
        let own_loss = ["gan", "siamese"].into_iter().find(|k| doc.contains_key(*k));
        let train = train_section(section("train")?, own_loss)?;
        // The trainer logs only the metrics it knows, so a misspelt name would silently log nothing.
        check_metric_names(&train.metrics).at("train.metrics")?;
        for (name, task) in &train.tasks {
            if let Some(metrics) = &task.metrics {
                check_metric_names(metrics).at_with(|| format!("train.tasks.{name}.metrics"))?;
            }
        }
        match (&data.dataset, data.tasks.is_empty()) {
            (None, true) => {
                return Err(Error::new("missing `dataset` (or one data set per task in `[data.tasks]`)").at("data"));
            }
            (Some(_), false) => {
                return Err(Error::new("give either `dataset` or `[data.tasks]`, not both").at("data"));
            }
            _ => {}
        }
        for (name, task) in &data.tasks {
            if task.dataset.is_none() || !task.tasks.is_empty() {
                return Err(Error::new("a task's data needs a `dataset` (and no tasks of its own)")
                    .at(format!("data.tasks.{name}")));
            }
        }
        for name in train.tasks.keys() {
            if !data.tasks.contains_key(name) {
                return Err(Error::new(format!(
                    "no such task in [data.tasks]{}",
                    hint(name, data.tasks.keys().map(String::as_str))
                ))
                .at(format!("train.tasks.{name}")));
            }
        }
        let given: Vec<&str> = OBJECTIVES.into_iter().filter(|k| doc.contains_key(*k)).collect();
        if given.len() > 1 {
            return Err(Error::new(format!(
                "[{}] and [{}] both given; a model is one or the other",
                given[0], given[1]
            )));
        }
        let objective = match given.first().copied() {
            Some("autoencoder") => Objective::Autoencoder(section_de(&doc["autoencoder"], "autoencoder")?),
            Some("vae") => Objective::Vae(section_de(&doc["vae"], "vae")?),
            Some("gan") => Objective::Gan(GanSpec::from_toml(&doc["gan"])?),
            Some(_) => Objective::Siamese(section_de(&doc["siamese"], "siamese")?),
            None => Objective::Supervised,
        };
        if !data.generated.is_empty() && (objective != Objective::Supervised || !data.tasks.is_empty()) {
            return Err(Error::new(
                "generated examples join the training split of a supervised model with one data set",
            )
            .at("data.generated"));
        }
        if data.tasks.values().any(|t| !t.generated.is_empty()) {
            return Err(Error::new("generated examples are given in [data], not per task").at("data.tasks"));
        }
        if objective != Objective::Supervised && !data.tasks.is_empty() {
            return Err(Error::new(format!(
                "[{}] trains one model on one data set; [data.tasks] is for supervised multi-task models",
                objective.name()
            ))
            .at("data.tasks"));
        }
        Ok(ExperimentSpec {
            data,
            model,
            train,
            objective,
            path: None,
        })
    }

    /// A `[word2vec]` experiment: `[data] corpus` and `[train]`, no `[model]` (its size comes from the vocabulary).
    fn word2vec_from(doc: &toml::Table, data: DataSpec) -> Result<Self> {
        if doc.contains_key("model") {
            return Err(Error::new(
                "a word2vec model is two embedding tables sized by the corpus' vocabulary and [word2vec] dim; leave \
                 [model] out",
            )
            .at("model"));
        }
        if let Some(other) = OBJECTIVES
            .into_iter()
            .find(|k| *k != "word2vec" && doc.contains_key(*k))
        {
            return Err(Error::new(format!(
                "[{other}] and [word2vec] both given; a model is one or the other"
            )));
        }
        if data.corpus.is_none() {
            return Err(Error::new(
                "missing `corpus`: word2vec learns from running text, e.g. corpus = { path = \"corpus.txt\" } (a \
                 text file, a folder of them, or a CSV with `column`)",
            )
            .at("data"));
        }
        let unused = [
            ("dataset", data.dataset.is_some()),
            ("validation", data.validation.is_some()),
            ("test", data.test.is_some()),
            ("background", data.background.is_some()),
            ("tasks", !data.tasks.is_empty()),
            ("generated", !data.generated.is_empty()),
        ];
        if let Some((key, _)) = unused.iter().find(|(_, given)| *given) {
            return Err(Error::new(format!(
                "word2vec learns from `corpus` alone and is scored on analogies and similarity pairs ([word2vec] \
                 analogies, similarity); `{key}` does not apply"
            ))
            .at(format!("data.{key}")));
        }
        let doc_train = doc.get("train").ok_or_else(|| Error::new("missing section [train]"))?;
        let train = train_section(doc_train, Some("word2vec"))?;
        let w2v: Word2VecSpec = section_de(&doc["word2vec"], "word2vec")?;
        for (key, value) in [
            ("dim", w2v.dim),
            ("window", w2v.window),
            ("min_count", w2v.min_count),
            ("negatives", w2v.negatives),
        ] {
            if value == 0 {
                return Err(Error::new("must be at least 1").at(format!("word2vec.{key}")));
            }
        }
        if !(w2v.subsample.is_finite() && w2v.subsample >= 0.0) {
            return Err(Error::new(format!(
                "must be 0 (keep every word) or a small positive threshold such as 1e-3, found {}",
                w2v.subsample
            ))
            .at("word2vec.subsample"));
        }
        Ok(ExperimentSpec {
            data,
            model: ModelSpec::default(),
            train,
            objective: Objective::Word2Vec(w2v),
            path: None,
        })
    }

    /// Resolves a data path relative to the experiment file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        match (&self.path, p.is_relative()) {
            (Some(file), true) => {
                let base = file.parent().unwrap_or(Path::new("."));
                let candidate = base.join(p);
                if candidate.exists() || !p.exists() {
                    candidate
                } else {
                    p.to_path_buf()
                }
            }
            _ => p.to_path_buf(),
        }
    }
}

/// `[train]`; `own_loss` names the section that sets the loss instead (`gan`, `siamese`, `word2vec`), where
/// `[train]` keeps the loop's settings and may not name a loss.
fn train_section(train: &Value, own_loss: Option<&str>) -> Result<TrainSpec> {
    let train: TrainSpec = match (own_loss, train) {
        (Some(kind), Value::Table(t)) => {
            if t.contains_key("loss") {
                let set_by = if kind == "word2vec" {
                    "word2vec's loss is negative sampling, set by [word2vec] negatives".to_string()
                } else {
                    format!("a {kind} model's loss is set by [{kind}] loss")
                };
                return Err(Error::new(format!("{set_by}; leave loss out of [train]")).at("train.loss"));
            }
            let mut t = t.clone();
            t.insert("loss".into(), Value::String("binary_crossentropy".into()));
            section_de(&Value::Table(t), "train")?
        }
        (_, train) => section_de(train, "train")?,
    };
    if train.epochs == Some(0) || train.batch_size == 0 {
        return Err(Error::new("epochs and batch_size must be at least 1").at("train"));
    }
    if train.epochs.is_none() && train.transfer.is_none() {
        return Err(Error::new("missing field `epochs`: how many passes over the training data").at("train"));
    }
    if let Some(t) = &train.transfer {
        t.check(&train).at("train.transfer")?;
    }
    Ok(train)
}

fn section_de<T: serde::de::DeserializeOwned>(value: &Value, name: &str) -> Result<T> {
    graft_data::de::parse(value, name)
}

/// toml's message without its multi-line source excerpt: "TOML parse error at line 3, column 9: ...".
fn toml_message(e: &toml::de::Error) -> String {
    let line = e
        .span()
        .map(|_| e.to_string())
        .unwrap_or_else(|| e.message().to_string());
    let mut parts = line.lines();
    let head = parts.next().unwrap_or("").trim_end_matches(':').to_string();
    let detail = line.lines().last().unwrap_or("").trim().to_string();
    if head == detail {
        head
    } else {
        format!("{head}: {}", e.message().trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_constructors_say_what_the_minimal_toml_says() {
        let toml = "[data]\ndataset = \"digits\"\n[model]\nlayers = [{ dense = { units = 10 } }]\n\
                    [train]\nepochs = 10\nloss = \"sparse_categorical_crossentropy\"\n";
        let read = ExperimentSpec::from_toml_str(toml).unwrap();
        let loss = LossSpec::SparseCategoricalCrossentropy { label_smoothing: 0.0 };
        let built = ExperimentSpec::new(
            DataSpec::new(DatasetSpec::Builtin("digits".into())),
            read.model.clone(),
            TrainSpec::new(loss, FitConfig::default()),
        );
        assert_eq!(built.data, read.data);
        assert_eq!(built.train, read.train);
        assert_eq!(read.train.fit_config(), FitConfig::default());
    }

    #[test]
    fn autoencoder_and_vae_sections_choose_the_objective() {
        let base = "[data]\ndataset = \"digits\"\n[model]\nlayers = [{ dense = { units = 64 } }]\n\
                    [train]\nepochs = 2\nloss = \"mse\"\n";
        let read = |extra: &str| ExperimentSpec::from_toml_str(&format!("{base}{extra}"));
        assert_eq!(read("").unwrap().objective, Objective::Supervised);
        assert_eq!(
            read("[autoencoder]\nnoise = 0.2\nnormal = [\"3\"]\n")
                .unwrap()
                .objective,
            Objective::Autoencoder(AutoencoderSpec {
                noise: 0.2,
                normal: vec!["3".into()]
            })
        );
        assert_eq!(read("[vae]\n").unwrap().objective, Objective::Vae(VaeSpec::default()));
        let vae = read("[vae]\nbeta = 4.0\n").unwrap().objective;
        let config = vae.reconstruction(&LossSpec::Mse).unwrap();
        assert_eq!(config.beta, Some(4.0));
        let e = read("[vae]\nbeta = 4.0\nkl = 1\n").unwrap_err().to_string();
        assert!(e.contains("vae") && e.contains("kl"), "{e}");
        let e = read("[autoencoder]\n[vae]\n").unwrap_err().to_string();
        assert!(e.contains("[autoencoder] and [vae] both given"), "{e}");
        let e = read("[autoencodr]\n").unwrap_err().to_string();
        assert!(
            e.contains("did you mean [autoencoder]") || e.contains("autoencoder"),
            "{e}"
        );
    }

    const MINIMAL: &str = r#"
[data]
dataset = "digits"
[model]
input = [64]
layers = [{ dense = { units = 10 } }]
[train]
epochs = 2
loss = "sparse_categorical_crossentropy"
"#;

    #[test]
    fn minimal_experiment_takes_defaults() {
        let e = ExperimentSpec::from_toml_str(MINIMAL).unwrap();
        assert_eq!(e.train.batch_size, 32);
        assert_eq!(e.data.split, SplitSpec::default());
        assert!(matches!(e.train.optimizer(), OptimizerSpec::Adam(_)));
    }

    #[test]
    fn unknown_section_and_key_are_named() {
        let e = ExperimentSpec::from_toml_str(&MINIMAL.replace("[train]", "[trian]")).unwrap_err();
        assert!(e.to_string().contains("did you mean `train`"), "{e}");
        let e = ExperimentSpec::from_toml_str(&MINIMAL.replace("epochs = 2", "epochs = 2\nbatch = 3")).unwrap_err();
        assert!(e.to_string().starts_with("train: unknown option `batch`"), "{e}");
    }

    /// MINIMAL with `from` replaced by `to`, and the error it gives.
    fn error_of(from: &str, to: &str) -> String {
        assert!(MINIMAL.contains(from), "{from}");
        ExperimentSpec::from_toml_str(&MINIMAL.replace(from, to))
            .unwrap_err()
            .to_string()
    }

    const CSV_OPTIONS: &str = "path, target, columns, delimiter, categorical, ignore, encoding, missing_values, \
                               missing, skip_rows, strip_target_suffix, regression";

    #[test]
    fn data_source_errors_name_the_key_path_and_suggest() {
        let dataset = "dataset = \"digits\"";
        assert_eq!(
            error_of(
                dataset,
                "dataset = { csv = { path = \"a.csv\", catgorical = [\"x\"] } }"
            ),
            format!(
                "data.dataset.csv: unknown option `catgorical`; did you mean `categorical`?; valid options: {CSV_OPTIONS}"
            )
        );
        assert_eq!(
            error_of(
                dataset,
                "dataset = { csv = { path = \"a.csv\", missing = \"median\" } }"
            ),
            "data.dataset.csv.missing: unknown value `median`; did you mean `mean`?; valid values: mean, drop, zero, \
             error"
        );
        assert_eq!(
            error_of(dataset, "dataset = { cvs = { path = \"a.csv\" } }"),
            "data.dataset: unknown data source `cvs`; did you mean `csv`?; valid: csv, text, npy, idx, images"
        );
        assert_eq!(
            error_of(
                dataset,
                "dataset = { text = { path = \"t\", tokenizer = { lower_case = false } } }"
            ),
            "data.dataset.text.tokenizer: unknown option `lower_case`; did you mean `lowercase`?; valid options: \
             lowercase, vocab_size, min_freq, length, padding, truncation, mode, ngram_range, pretrained"
        );
        assert_eq!(
            error_of(dataset, "dataset = { csv = { path = \"a.csv\", skip_rows = \"1\" } }"),
            "data.dataset.csv.skip_rows: expected usize, found the string \"1\""
        );
        assert_eq!(
            error_of(dataset, "dataset = \"digts\""),
            "data.dataset: unknown built-in data set \"digts\"; did you mean `digits`?; built-in: digits; or a table \
             such as { csv = { path = \"...\" } }"
        );
        assert_eq!(
            error_of(
                dataset,
                "dataset = { csv = { path = \"a.csv\" }, npy = { x = \"x.npy\" } }"
            ),
            "data.dataset: a data source names one kind, found `csv` and `npy`"
        );
        assert_eq!(
            error_of(
                dataset,
                "dataset = \"digits\"\nvalidation = { npy = { x = { image = 3 } } }"
            ),
            "data.validation.npy.x.image: expected a string, found the integer 3"
        );
        assert_eq!(
            error_of(
                dataset,
                "[data.tasks.spam]\ndataset = { csv = { path = \"s.csv\", targte = \"y\" } }"
            ),
            format!(
                "data.tasks.spam.dataset.csv: unknown option `targte`; did you mean `target`?; valid options: {CSV_OPTIONS}"
            )
        );
    }

    #[test]
    fn train_errors_name_the_key_path_and_suggest() {
        let epochs = "epochs = 2";
        assert!(
            error_of(epochs, "epochs = 2\nmetrics = [\"accuracy\", \"acuracy\"]").starts_with(
                "train.metrics: unknown metric `acuracy`; did you mean `accuracy`?; valid metrics: accuracy, \
                 top_k_accuracy, precision_macro,"
            )
        );
        let tasks = MINIMAL
            .replace("dataset = \"digits\"\n", "")
            .replace("[model]", "[data.tasks.a]\ndataset = \"digits\"\n[model]")
            + "[train.tasks.a]\nmetrics = [\"f1_macor\"]\n";
        let e = ExperimentSpec::from_toml_str(&tasks).unwrap_err().to_string();
        assert!(
            e.starts_with("train.tasks.a.metrics: unknown metric `f1_macor`; did you mean `f1_macro`?"),
            "{e}"
        );
        assert_eq!(
            error_of(epochs, "epochs = 2\nclass_weights = \"balancd\""),
            "train.class_weights: unknown class weights \"balancd\"; did you mean `balanced`?; expected \"balanced\" \
             or one weight per class"
        );
        let loss = "loss = \"sparse_categorical_crossentropy\"";
        assert_eq!(
            error_of(loss, "loss = { hubr = {} }"),
            "train.loss: unknown loss `hubr`; did you mean `huber`?; losses with options: huber, binary_crossentropy, \
             categorical_crossentropy, sparse_categorical_crossentropy"
        );
        assert_eq!(
            error_of(loss, "loss = { huber = { detla = 2.0 } }"),
            "train.loss.huber: unknown option `detla`; did you mean `delta`?; valid options: delta"
        );
        assert_eq!(
            error_of(loss, "loss = { mse = {} }"),
            "train.loss: `mse` takes no options; write loss = \"mse\""
        );
        assert_eq!(
            error_of(epochs, "epochs = 2\nschedule = { cosin = {} }"),
            "train.schedule: unknown kind `cosin`; did you mean `cosine`?; valid kinds: constant, step, exponential, \
             cosine, warmup, one_cycle, slanted_triangular, reduce_on_plateau"
        );
        assert_eq!(
            error_of(epochs, "epochs = 2\nlayer_groups = { groups = [\"dense\", 3] }"),
            "train.layer_groups.groups[1]: expected a parameter-name pattern or an array of them, found the integer 3"
        );
    }

    #[test]
    fn layer_option_values_name_the_key_path() {
        let layers = "layers = [{ dense = { units = 10 } }]";
        assert_eq!(
            error_of(
                layers,
                "layers = [{ dense = { units = 10 } }, { conv1d = { filters = 2, kernel = \"3\" } }]"
            ),
            "model.layers[1].conv1d.kernel: expected a size such as 3, or one per axis such as [3, 1], found the \
             string \"3\""
        );
        assert_eq!(
            error_of(
                layers,
                "layers = [{ conv1d = { filters = 2, kernel = 3, padding = \"sme\" } }]"
            ),
            "model.layers[0].conv1d.padding: unknown padding \"sme\"; did you mean `same`?; expected \"valid\", \
             \"same\", a number or one number per axis"
        );
        assert_eq!(
            error_of(
                layers,
                "layers = [{ max_pool1d = { size = 2, count_include_pad = false } }]"
            ),
            "model.layers[0].max_pool1d: unknown option `count_include_pad`; valid options: size, stride, padding"
        );
    }

    #[test]
    fn malformed_toml_names_the_line() {
        let e = ExperimentSpec::from_toml_str("[data\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn data_has_either_one_dataset_or_one_per_task() {
        let e = ExperimentSpec::from_toml_str(&MINIMAL.replace("dataset = \"digits\"", "")).unwrap_err();
        assert!(e.to_string().contains("missing `dataset`"), "{e}");
        let both = MINIMAL.replace("[model]", "[data.tasks.a]\ndataset = \"digits\"\n[model]");
        let e = ExperimentSpec::from_toml_str(&both).unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let tasks = MINIMAL.replace("dataset = \"digits\"\n", "").replace(
            "[model]",
            "[data.tasks.a]\ndataset = \"digits\"\n[data.tasks.b]\ndataset = \"digits\"\n[model]",
        );
        let spec = ExperimentSpec::from_toml_str(&tasks).unwrap();
        assert_eq!(spec.data.tasks.keys().collect::<Vec<_>>(), ["a", "b"]);
        let e = ExperimentSpec::from_toml_str(&format!("{tasks}[train.tasks.c]\nweight = 2.0\n")).unwrap_err();
        assert!(
            e.to_string().contains("train.tasks.c") && e.to_string().contains("no such task"),
            "{e}"
        );
    }
}
