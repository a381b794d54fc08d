//! The bar a network has to clear: simple models on the same preprocessed inputs, scored like the network. A
//! linear model — logistic regression for classes, linear regression for values — on the inputs as the network sees
//! them (features, pixels average-pooled to at most 16×16, or the token ids' term frequencies), and for short
//! numeric sequences also 5-nearest neighbours. Both are built from graft's own pieces (a one-layer model trained by
//! the same loop, or a distance matrix), so their metrics are computed exactly as the network's are.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::TensorData;
use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::data::prepare::Preprocessor;
use crate::data::{Dataset, gather};
use crate::error::Result;
use crate::experiment::data::Splits;
use crate::layers::LayerSpec;
use crate::layers::activation::NoOptions;
use crate::layers::conv::Dims;
use crate::layers::dense::DenseConfig;
use crate::layers::embedding::EmbeddingConfig;
use crate::layers::init::Initializer;
use crate::layers::pool::AdaptivePoolConfig;
use crate::model::{Graph, ModelSpec};
use crate::task::head::{EpochMetrics, TaskHead};
use crate::task::loss::Task;
use crate::train::FitConfig;
use crate::train::callbacks::{Callback, EarlyStopping, EarlyStoppingSpec};
use crate::train::optim::OptimizerSpec;
use crate::train::trainer::{EVAL_BATCH, evaluate};

/// Images are average-pooled to at most this many positions per side before the linear model.
const MAX_SIDE: usize = 16;
/// Sequences of at most this many values per sample get a k-NN baseline too.
const KNN_MAX_VALUES: usize = 2000;
const KNN_K: usize = 5;
/// k-NN compares each scored row with at most this many training rows.
const KNN_MAX_TRAIN: usize = 20_000;

/// One baseline's scores.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineScore {
    /// What it is, in words: "logistic regression on the inputs".
    pub name: String,
    /// Its metrics on the scored set, computed as the network's are.
    pub metrics: Map<String, Json>,
    /// Wall time to fit and score it (not written: `metrics.json` is identical for identical seeds).
    #[serde(skip)]
    pub seconds: f64,
}

/// Whether `heads` are ones a baseline can stand in for: one unnamed classification or regression head with one
/// target per sample (not per step of a sequence), on one input.
pub fn applies(heads: &[TaskHead], data: &Dataset) -> bool {
    let [head] = heads else { return false };
    let per_sample = match (&data.targets, head.task) {
        (Some(crate::data::Targets::Classes { .. }), Task::Multiclass | Task::Binary) => true,
        (Some(crate::data::Targets::Values(v)), Task::Regression) => v.sample_size() == head.outputs,
        _ => false,
    };
    head.name.is_none() && per_sample && data.extra_inputs.is_empty()
}

/// The linear model's spec for inputs of `shape` (and token ids when `preprocessor` is a tokenizer), with `outputs`
/// outputs; and its name.
fn linear_spec(shape: &[usize], preprocessor: &Preprocessor, outputs: usize, task: Task) -> (ModelSpec, String) {
    let what = if task == Task::Regression {
        "linear regression"
    } else {
        "logistic regression"
    };
    let vocabulary = match preprocessor {
        Preprocessor::Text(t) => Some(t.vocab_size()),
        Preprocessor::PretrainedText(t) => Some(t.vocab_size()),
        _ => None,
    };
    let mut spec = ModelSpec::sequential(shape.to_vec());
    let dense = |units| {
        let mut d = DenseConfig::new(units);
        d.kernel_initializer = Initializer::Zeros;
        LayerSpec::Dense(d)
    };
    if let Some(vocabulary) = vocabulary {
        // Averaging one embedding row per token is a linear map of the term frequencies: the bag-of-words model.
        let mut embedding = EmbeddingConfig::new(vocabulary, outputs).with_padding_idx(0);
        embedding.initializer = Initializer::Zeros;
        // The dense after it keeps its random start: with both factors at zero neither would get a gradient.
        spec = spec
            .add(LayerSpec::Embedding(embedding))
            .add(LayerSpec::GlobalAvgPool1d(NoOptions {}))
            .add(LayerSpec::Dense(DenseConfig::new(outputs)));
        return (spec, format!("{what} on the term frequencies"));
    }
    let mut name = format!("{what} on the inputs");
    if let [_, h, w] = shape
        && (*h > MAX_SIDE || *w > MAX_SIDE)
    {
        spec = spec.add(LayerSpec::AdaptiveAvgPool2d(AdaptivePoolConfig {
            size: Dims::Each(vec![(*h).min(MAX_SIDE), (*w).min(MAX_SIDE)]),
        }));
        name = format!(
            "{what} on the pixels pooled to {}×{}",
            (*h).min(MAX_SIDE),
            (*w).min(MAX_SIDE)
        );
    }
    if shape.len() > 1 {
        spec = spec.add(LayerSpec::Flatten(NoOptions {}));
    }
    (spec.add(dense(outputs)), name)
}

/// Fits the linear baseline on `splits.train` (early stopping on the validation loss when there is a validation
/// split) and scores it on `score_on`; `None` when no baseline applies to these heads.
pub fn linear_baseline(
    data: &FitData,
    heads: &[TaskHead],
    score_on: &Dataset,
    metrics: &[String],
    seed: u64,
    device: &Device,
) -> Result<Option<BaselineScore>> {
    if !applies(heads, data.train) {
        return Ok(None);
    }
    let started = Instant::now();
    let (spec, name) = linear_spec(
        &data.train.sample_shape(),
        data.preprocessor,
        heads[0].outputs,
        heads[0].task,
    );
    let train_device = device.clone().autodiff();
    train_device.seed(seed);
    let model = Graph::build(&spec, &train_device)?;
    let heads: Vec<TaskHead> = heads.iter().map(|h| TaskHead { output: 0, ..h.clone() }).collect();
    // Images read from folders are decoded every epoch: fewer epochs there.
    let (epochs, patience) = match (data.validation.is_some(), data.train.images.is_some()) {
        (_, true) => (10, 3),
        (true, false) => (100, 5),
        (false, false) => (30, 5),
    };
    let config = FitConfig {
        epochs,
        batch_size: 128,
        optimizer: OptimizerSpec::adam(1e-2),
        metrics: metrics.to_vec(),
        ..FitConfig::default()
    };
    let mut callbacks: Vec<Box<dyn Callback>> = vec![];
    if data.validation.is_some() {
        let mut stop = EarlyStoppingSpec::new("val_loss", patience);
        stop.restore_best = true;
        callbacks.push(Box::new(EarlyStopping::new(stop)?));
    }
    let fitted = crate::train::fit(
        model,
        &heads,
        &config,
        data.train,
        data.validation,
        seed,
        &mut callbacks,
    )?;
    let weights = crate::train::trainer::head_class_weights(&heads, data.train)?;
    let metrics = evaluate(&fitted.model.valid(), &heads, score_on, &weights, EVAL_BATCH, 1, false)?;
    Ok(Some(BaselineScore {
        name,
        metrics: scalars(metrics),
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// 5-nearest neighbours (Euclidean, features standardized on the training rows; the neighbours' class shares as
/// probabilities, or their mean value) for short numeric sequences `[T, F]`; `None` for other inputs.
pub fn knn_baseline(data: &FitData, heads: &[TaskHead], score_on: &Dataset) -> Result<Option<BaselineScore>> {
    let shape = data.train.sample_shape();
    let numeric = matches!(data.preprocessor, Preprocessor::None | Preprocessor::Tabular(_));
    if !applies(heads, data.train) || shape.len() != 2 || !numeric || shape.iter().product::<usize>() > KNN_MAX_VALUES {
        return Ok(None);
    }
    let started = Instant::now();
    let head = &heads[0];
    let train_rows = crate::experiment::data::sample_rows(data.train.len(), KNN_MAX_TRAIN, 5, b"doctor\0\0");
    let train = gather(data.train, &train_rows)?;
    let d = train.inputs.sample_size();
    let (n, k) = (train_rows.len(), KNN_K.min(train_rows.len()));
    // Standardize every value position with the training rows' statistics.
    let mut mean = vec![0f64; d];
    let mut sq = vec![0f64; d];
    for row in train.inputs.data.chunks(d) {
        for (j, &v) in row.iter().enumerate() {
            mean[j] += v as f64;
            sq[j] += (v as f64) * (v as f64);
        }
    }
    let scale: Vec<(f32, f32)> = (0..d)
        .map(|j| {
            let m = mean[j] / n as f64;
            let s = (sq[j] / n as f64 - m * m).max(0.0).sqrt();
            (m as f32, if s > 1e-8 { 1.0 / s as f32 } else { 0.0 })
        })
        .collect();
    let standardize = |data: &[f32]| -> Vec<f32> {
        data.iter()
            .enumerate()
            .map(|(i, &v)| (v - scale[i % d].0) * scale[i % d].1)
            .collect()
    };
    let cpu = Device::default();
    let a = Tensor::<2>::from_data(TensorData::new(standardize(&train.inputs.data), [n, d]), &cpu);
    let norms_a = a.clone().powi_scalar(2).sum_dim(1).reshape([1, n]);
    let mut metrics = EpochMetrics::new(head);
    let rows: Vec<usize> = (0..score_on.len()).collect();
    for chunk in rows.chunks(EVAL_BATCH) {
        let batch = gather(score_on, chunk)?;
        let m = chunk.len();
        let b = Tensor::<2>::from_data(TensorData::new(standardize(&batch.inputs.data), [m, d]), &cpu);
        let distances = (b.clone().powi_scalar(2).sum_dim(1) + norms_a.clone()
            - b.matmul(a.clone().transpose()).mul_scalar(2.0))
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default();
        let mut outputs = vec![];
        for r in 0..m {
            let row = &distances[r * n..(r + 1) * n];
            let mut order: Vec<usize> = (0..n).collect();
            order.select_nth_unstable_by(k - 1, |&x, &y| row[x].total_cmp(&row[y]));
            let nearest = &order[..k];
            match &train.labels {
                Some(labels) => {
                    let classes = head.num_classes().max(1);
                    let mut shares = vec![0f32; classes];
                    for &i in nearest {
                        shares[labels[i].min(classes - 1)] += 1.0 / k as f32;
                    }
                    // A binary head's metrics take the probability of class 1.
                    if head.task == Task::Binary {
                        outputs.push(shares.get(1).copied().unwrap_or(0.0));
                    } else {
                        outputs.extend(shares);
                    }
                }
                None => {
                    let Some(values) = &train.values else { return Ok(None) };
                    let width = values.sample_size();
                    for j in 0..width {
                        let mean: f32 = nearest.iter().map(|&i| values.data[i * width + j]).sum::<f32>() / k as f32;
                        outputs.push(mean);
                    }
                }
            }
        }
        metrics.update(head, &outputs, &batch);
    }
    Ok(Some(BaselineScore {
        name: format!("{KNN_K}-nearest neighbours"),
        metrics: scalars(metrics.compute(1)),
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// The numbers of a metrics object (per-class lists and the confusion matrix belong to the network's report).
fn scalars(metrics: Map<String, Json>) -> Map<String, Json> {
    metrics.into_iter().filter(|(_, v)| v.is_number()).collect()
}

/// The metric that decides which model is better for `head`: accuracy for classes, R² for values (both higher is
/// better).
pub fn headline_metric(head: &TaskHead) -> &'static str {
    if head.task == Task::Regression {
        "r2"
    } else {
        "accuracy"
    }
}

/// Every baseline that applies, scored on `score_on`.
pub fn baselines(
    data: &FitData,
    heads: &[TaskHead],
    score_on: &Dataset,
    metrics: &[String],
    seed: u64,
    device: &Device,
) -> Result<Vec<BaselineScore>> {
    let mut out = vec![];
    out.extend(linear_baseline(data, heads, score_on, metrics, seed, device)?);
    out.extend(knn_baseline(data, heads, score_on)?);
    Ok(out)
}

/// What a baseline is fitted on: training rows, the validation rows its early stopping watches, and the
/// preprocessing that made the inputs (which says whether they are token ids).
pub struct FitData<'a> {
    pub train: &'a Dataset,
    pub validation: Option<&'a Dataset>,
    pub preprocessor: &'a Preprocessor,
}

impl<'a> FitData<'a> {
    pub fn of(splits: &'a Splits) -> Self {
        FitData {
            train: &splits.train,
            validation: splits.validation.as_ref(),
            preprocessor: &splits.preprocessor,
        }
    }
}

/// A warning when the network's headline metric on the test set is not above the best baseline's.
pub fn beaten_warning(head: &TaskHead, network: &Map<String, Json>, baselines: &[BaselineScore]) -> Option<String> {
    let metric = headline_metric(head);
    let ours = network.get(metric).and_then(Json::as_f64)?;
    let best = baselines
        .iter()
        .filter_map(|b| b.metrics.get(metric).and_then(Json::as_f64).map(|v| (v, &b.name)))
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    (ours <= best.0).then(|| {
        format!(
            "the network's test {metric} ({ours:.4}) does not beat a {} ({:.4}): the network does not earn its keep \
             yet — more training, a better architecture, or the simple model",
            best.1, best.0
        )
    })
}

/// The report's table: for each metric of the network, its value and each baseline's.
pub fn report_section(
    heads: &[TaskHead],
    network: &Map<String, Json>,
    baselines: &[BaselineScore],
) -> Option<crate::report::Section> {
    let head = heads.first()?;
    if baselines.is_empty() {
        return None;
    }
    let metric_names: Vec<&str> = match head.task {
        Task::Regression => vec!["r2", "rmse", "mae"],
        _ => vec!["accuracy", "balanced_accuracy", "f1_macro", "roc_auc"],
    };
    let fmt = |m: &Map<String, Json>, k: &str| {
        m.get(k)
            .and_then(Json::as_f64)
            .map_or("—".to_string(), crate::report::fmt_number)
    };
    let rows = metric_names
        .into_iter()
        .filter(|k| network.contains_key(*k))
        .map(|k| {
            let others: Vec<String> = baselines
                .iter()
                .map(|b| format!("{} {}", b.name, fmt(&b.metrics, k)))
                .collect();
            (
                k.to_string(),
                format!("network {} · {}", fmt(network, k), others.join(" · ")),
            )
        })
        .collect();
    Some(crate::report::Section {
        title: "Baselines".into(),
        text: "Simple models fitted on the same training rows and preprocessed inputs, scored on the same test set: \
               the bar the network has to clear."
            .into(),
        rows,
    })
}
