//! The graft engine of the benchmark against PyTorch (`bash bench/run.sh`; the PyTorch engine is
//! `bench/torch_bench.py`, the orchestrator `bench/compare.py`).
//!
//! `graft bench --serve` reads one JSON request per line (`{"workload": "mlp", "warmup": 3, "steps": 10}`) and
//! answers each with one line (`{"workload": "mlp", "batch": 128, "seconds": [...]}`: the wall time of every timed
//! step). Training workloads run graft's own training loop (`fit`: batches gathered on a loader thread, forward,
//! loss, backward, optimizer step, per-batch loss and metrics) and time the interval between consecutive batch
//! ends, so a step is exactly what a user's training pays for. Inference workloads run the model without autodiff.
//! Models are built on first use and kept, so later rounds continue training the same weights.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use rand::Rng;
use serde_json::{Value as Json, json};

use graft::data::{Array, Dataset, Targets};
use graft::error::{Error, Result};
use graft::layers::activation::{Activation, NoOptions};
use graft::layers::bert::BertLayerConfig;
use graft::layers::conv::ConvConfig;
use graft::layers::dense::DenseConfig;
use graft::layers::embedding::EmbeddingConfig;
use graft::layers::pool::PoolConfig;
use graft::layers::recurrent::RecurrentConfig;
use graft::layers::value::{Data, input_data};
use graft::layers::{BidirectionalConfig, LayerSpec};
use graft::model::Graph;
use graft::model::ModelSpec;
use graft::task::head::TaskHead;
use graft::task::loss::LossSpec;
use graft::train::FitConfig;
use graft::train::callbacks::Callback;
use graft::train::optim::OptimizerSpec;

/// One workload's model and data, built on first request.
enum Workload {
    Train {
        model: Option<Graph>,
        head: TaskHead,
        train: Box<FitConfig>,
        /// Draws `n` examples (inputs and labels) of this workload.
        sample: fn(usize, &mut rand_chacha::ChaCha8Rng) -> Result<Dataset>,
        seed: u64,
    },
    Infer {
        model: Graph,
        input: Data,
        batch: usize,
        /// Turn the model's logits into probabilities.
        softmax: bool,
    },
    Sgemm {
        a: Tensor<2>,
        b: Tensor<2>,
    },
}

/// 784 → 512 → 256 → 10, ReLU.
fn mlp() -> ModelSpec {
    ModelSpec::sequential(vec![784])
        .add(LayerSpec::Dense(
            DenseConfig::new(512).with_activation(Activation::Relu),
        ))
        .add(LayerSpec::Dense(
            DenseConfig::new(256).with_activation(Activation::Relu),
        ))
        .add(LayerSpec::Dense(DenseConfig::new(10)))
}

/// Two 3×3 convolutions (32, 64 filters) with 2×2 max pooling, then 128 → 10, on 28×28 grey images.
fn cnn() -> ModelSpec {
    let conv = |filters| LayerSpec::Conv2d(ConvConfig::new(filters, 3).with_activation(Activation::Relu));
    ModelSpec::sequential(vec![1, 28, 28])
        .add(conv(32))
        .add(LayerSpec::MaxPool2d(PoolConfig::new(2)))
        .add(conv(64))
        .add(LayerSpec::MaxPool2d(PoolConfig::new(2)))
        .add(LayerSpec::Flatten(NoOptions {}))
        .add(LayerSpec::Dense(
            DenseConfig::new(128).with_activation(Activation::Relu),
        ))
        .add(LayerSpec::Dense(DenseConfig::new(10)))
}

/// Ids of 100 steps over a 10,000-word vocabulary → 128-dim embeddings → `layer` → 2 classes.
fn recurrent(layer: LayerSpec) -> ModelSpec {
    ModelSpec::sequential(vec![100])
        .add(LayerSpec::Embedding(EmbeddingConfig::new(10_000, 128)))
        .add(layer)
        .add(LayerSpec::Dense(DenseConfig::new(2)))
}

/// MiniLM from `dir` over `tokens` token ids, mean-pooled, with a 2-class head when `head`.
fn minilm(dir: &str, tokens: usize, head: bool) -> ModelSpec {
    let bert = BertLayerConfig::pretrained(dir)
        .with_pooling("mean")
        .with_normalize(false);
    let spec = ModelSpec::sequential(vec![tokens]).add_named("bert", LayerSpec::Bert(bert));
    if head {
        spec.add_named("logits", LayerSpec::Dense(DenseConfig::new(2)))
    } else {
        spec
    }
}

/// One epoch of batches of `batch` at Adam's rate `lr`, no metrics: the training step alone.
fn fit_config(batch: usize, lr: f64) -> FitConfig {
    FitConfig::default()
        .with_epochs(1)
        .with_batch_size(batch)
        .with_optimizer(OptimizerSpec::adam(lr))
        .with_metrics(Vec::<String>::new())
}

fn gaussian(shape: &[usize], n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Result<Array> {
    let size: usize = shape.iter().product();
    let data = (0..n * size)
        .map(|_| {
            // Box–Muller: inputs only need to be roughly standard normal.
            let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect();
    Array::new(std::iter::once(n).chain(shape.iter().copied()).collect(), data)
}

fn ids(len: usize, low: u32, high: u32, n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Result<Array> {
    let data = (0..n * len).map(|_| rng.random_range(low..high) as f32).collect();
    Array::new(vec![n, len], data)
}

fn labelled(inputs: Array, classes: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Result<Dataset> {
    let labels = (0..inputs.len()).map(|_| rng.random_range(0..classes)).collect();
    Dataset::new(inputs, Some(Targets::numbered_classes(labels, classes)))
}

fn mlp_data(n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Result<Dataset> {
    let x = gaussian(&[784], n, rng)?;
    labelled(x, 10, rng)
}

fn cnn_data(n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Result<Dataset> {
    let x = gaussian(&[1, 28, 28], n, rng)?;
    labelled(x, 10, rng)
}

fn text_data(n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Result<Dataset> {
    let x = ids(100, 0, 10000, n, rng)?;
    labelled(x, 2, rng)
}

fn token_data(n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Result<Dataset> {
    let x = ids(128, 1000, 30000, n, rng)?;
    labelled(x, 2, rng)
}

/// Records when each batch ends.
struct BatchClock(std::sync::Arc<std::sync::Mutex<Vec<Instant>>>);

impl Callback for BatchClock {
    fn on_batch_end(&mut self, _batch: usize, _loss: f64) {
        self.0.lock().expect("clock").push(Instant::now());
    }
}

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    graft::data::rng::seeded_rng(b"benchmrk", seed, 0)
}

impl Workload {
    fn build(name: &str, minilm_dir: &str) -> Result<Workload> {
        let device = Device::default();
        let autodiff = device.clone().autodiff();
        device.seed(0);
        autodiff.seed(0);
        let loss = LossSpec::SparseCategoricalCrossentropy { label_smoothing: 0.0 };
        let train = |spec: ModelSpec, batch: usize, lr: f64, sample, freeze: &[&str]| {
            let spec = spec.with_pretrained_sizes(&|p| p.to_path_buf())?;
            let graph = graft::pretrained::load_pretrained_encoders(Graph::build(&spec, &autodiff)?, true)?;
            let patterns: Vec<String> = freeze.iter().map(|p| p.to_string()).collect();
            let (graph, _) = graft::model::freeze::freeze(graph, &patterns)?;
            let width = *graph.output_shapes()[0].last().unwrap_or(&1);
            let head = TaskHead::new(&loss, width, (0..width).map(|c| c.to_string()).collect())?;
            Ok::<Workload, Error>(Workload::Train {
                model: Some(graph),
                head,
                train: Box::new(fit_config(batch, lr)),
                sample,
                seed: 0,
            })
        };
        let infer = |spec: ModelSpec, input: Array, softmax: bool| {
            let spec = spec.with_pretrained_sizes(&|p| p.to_path_buf())?;
            let graph = graft::pretrained::load_pretrained_encoders(Graph::build(&spec, &device)?, true)?;
            Ok::<Workload, Error>(Workload::Infer {
                softmax,
                batch: input.len(),
                input: input_data(&input, &device)?,
                model: graph,
            })
        };
        let frozen_minilm = [
            "bert.embeddings",
            "bert.encoder.layer.0",
            "bert.encoder.layer.1",
            "bert.encoder.layer.2",
            "bert.encoder.layer.3",
        ];
        match name {
            "mlp" => train(mlp(), 128, 1e-3, mlp_data, &[]),
            "cnn" => train(cnn(), 64, 1e-3, cnn_data, &[]),
            "lstm" => train(
                recurrent(LayerSpec::Lstm(RecurrentConfig::new(128))),
                32,
                1e-3,
                text_data,
                &[],
            ),
            "gru" => train(
                recurrent(LayerSpec::Gru(RecurrentConfig::new(128))),
                32,
                1e-3,
                text_data,
                &[],
            ),
            "bilstm" => train(
                recurrent(LayerSpec::Bidirectional(BidirectionalConfig::new(LayerSpec::Lstm(
                    RecurrentConfig::new(128),
                )))),
                32,
                1e-3,
                text_data,
                &[],
            ),
            "minilm_finetune" => train(minilm(minilm_dir, 128, true), 32, 1e-4, token_data, &frozen_minilm),
            "minilm_infer" => infer(
                minilm(minilm_dir, 128, false),
                ids(128, 1000, 30000, 32, &mut rng(0))?,
                false,
            ),
            "minilm_latency_1x16" => infer(
                minilm(minilm_dir, 16, false),
                ids(16, 1000, 30000, 1, &mut rng(0))?,
                false,
            ),
            "mlp_latency_b1" => infer(mlp(), gaussian(&[784], 1, &mut rng(0))?, true),
            "mlp_infer_b1024" => infer(mlp(), gaussian(&[784], 1024, &mut rng(0))?, true),
            "cnn_latency_b1" => infer(cnn(), gaussian(&[1, 28, 28], 1, &mut rng(0))?, true),
            "cnn_infer_b64" => infer(cnn(), gaussian(&[1, 28, 28], 64, &mut rng(0))?, true),
            "sgemm" => Ok(Workload::Sgemm {
                a: Tensor::random([2048, 2048], Distribution::Default, &device),
                b: Tensor::random([2048, 2048], Distribution::Default, &device),
            }),
            other => Err(Error::new(format!(
                "unknown workload '{other}'; expected mlp, cnn, lstm, gru, bilstm, minilm_infer, minilm_finetune, \
                 minilm_latency_1x16, mlp_latency_b1, mlp_infer_b1024, cnn_latency_b1, cnn_infer_b64 or sgemm"
            ))),
        }
    }

    /// Runs `warmup` untimed steps, then `steps` timed ones: (batch, seconds per timed step).
    fn run(&mut self, warmup: usize, steps: usize) -> Result<(usize, Vec<f64>)> {
        match self {
            Workload::Train {
                model,
                head,
                train,
                sample,
                seed,
            } => {
                // The first batch has no start mark: it is always a warm-up step.
                let batches = warmup.max(1) + steps;
                *seed += 1;
                let data = sample(train.batch_size * batches, &mut rng(*seed))?;
                let ends = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
                let mut callbacks: Vec<Box<dyn Callback>> = vec![Box::new(BatchClock(ends.clone()))];
                let graph = model.take().ok_or_else(|| Error::new("internal: the model was lost"))?;
                let fitted = graft::train::trainer::fit(
                    graph,
                    std::slice::from_ref(head),
                    train,
                    &data,
                    None,
                    *seed,
                    &mut callbacks,
                )?;
                *model = Some(fitted.model);
                let ends = ends.lock().expect("clock");
                let seconds: Vec<f64> = ends.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
                Ok((train.batch_size, seconds[seconds.len() - steps..].to_vec()))
            }
            Workload::Infer {
                model,
                input,
                batch,
                softmax,
            } => {
                let mut step = || -> Result<()> {
                    let out = model.forward(vec![input.clone()], false, false)?;
                    let probs = match out.into_iter().next().map(|v| v.data) {
                        Some(Data::D2(t)) if *softmax => burn::tensor::activation::softmax(t, 1),
                        Some(Data::D2(t)) => t,
                        _ => return Err(Error::new("internal: unexpected output rank")),
                    };
                    // Reading the probabilities back is part of what a caller pays for.
                    std::hint::black_box(probs.into_data());
                    Ok(())
                };
                time_steps(warmup, steps, &mut step).map(|s| (*batch, s))
            }
            Workload::Sgemm { a, b } => {
                let mut step = || -> Result<()> {
                    let c = a.clone().matmul(b.clone());
                    std::hint::black_box(c.slice([0..1, 0..1]).into_scalar::<f32>());
                    Ok(())
                };
                time_steps(warmup, steps, &mut step).map(|s| (1, s))
            }
        }
    }
}

fn time_steps(warmup: usize, steps: usize, step: &mut dyn FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        step()?;
    }
    (0..steps)
        .map(|_| {
            let start = Instant::now();
            step()?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect()
}

/// Answers benchmark requests from `input` on `output` until end of input. `minilm_dir`: the pretrained MiniLM.
pub fn serve(input: impl BufRead, mut output: impl Write, minilm_dir: PathBuf) -> Result<()> {
    let mut workloads: HashMap<String, Workload> = HashMap::new();
    let dir = minilm_dir.to_string_lossy().to_string();
    for line in input.lines() {
        let line = line.map_err(|e| Error::new(format!("reading a request: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Json>(&line) {
            Err(e) => json!({"error": format!("not JSON: {e}")}),
            Ok(request) => answer(&request, &mut workloads, &dir),
        };
        writeln!(output, "{reply}").map_err(|e| Error::new(format!("writing a reply: {e}")))?;
        output
            .flush()
            .map_err(|e| Error::new(format!("writing a reply: {e}")))?;
    }
    Ok(())
}

fn answer(request: &Json, workloads: &mut HashMap<String, Workload>, dir: &str) -> Json {
    let Some(name) = request.get("workload").and_then(Json::as_str) else {
        return json!({"error": "a request names a `workload`"});
    };
    if name == "info" {
        return json!({
            "workload": "info",
            "engine": format!("graft {} (burn 0.22.1 flex)", env!("CARGO_PKG_VERSION")),
            "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        });
    }
    let warmup = request.get("warmup").and_then(Json::as_u64).unwrap_or(3) as usize;
    let steps = request.get("steps").and_then(Json::as_u64).unwrap_or(10).max(1) as usize;
    let result = (|| -> Result<(usize, Vec<f64>)> {
        if !workloads.contains_key(name) {
            let built = Workload::build(name, dir)?;
            workloads.insert(name.to_string(), built);
        }
        workloads.get_mut(name).expect("inserted").run(warmup, steps)
    })();
    match result {
        Ok((batch, seconds)) => json!({"workload": name, "batch": batch, "seconds": seconds}),
        Err(e) => json!({"workload": name, "error": e.to_string()}),
    }
}
