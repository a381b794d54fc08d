//! `predict`: load a run directory, apply the model to raw inputs, write outputs as `.npy` or `.jsonl`.

use std::path::Path;

use serde_json::{Value as Json, json};

use crate::data::fsio::write_atomic;
use crate::data::prepare::Preprocessor;
use crate::data::{Array, write_npy_f32};
use crate::error::{Context, Error, Result};
use crate::infer::manifest::{MANIFEST_FILE, Manifest};
use crate::infer::uncertainty::{McSummary, summarize};
use crate::layers::Ctx;
use crate::model::Graph;
use crate::model::io::load_model;
use crate::task::head::TaskHead;
use crate::task::loss::Task;
use crate::train::trainer::{EVAL_BATCH, input_data};
use burn::prelude::*;

/// What a word2vec run is for, in the errors of the commands that do not apply to it.
pub const WORD2VEC_RUN: &str = "a word2vec run's product is its word vectors, vectors.bin (word2vec binary): start an \
     embedding layer from them with pretrained = { path = \"RUN/vectors.bin\" }, or look at them with graft \
     word-vectors RUN/vectors.bin --nearest WORD";

/// `--model DIR` names a run directory (one with `model.toml`), or the error says what it is instead.
pub fn check_run_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() && dir.join("model.toml").is_file() {
        return Ok(());
    }
    let what = if dir.is_dir() {
        "is not a graft run directory (it has no model.toml)"
    } else if dir.exists() {
        "is a file, not a run directory"
    } else {
        "does not exist"
    };
    Err(Error::new(format!("--model {what}; give the directory `graft train --out` wrote")).in_file(dir))
}

/// A trained model with what it needs to turn raw inputs into predictions.
pub struct Predictor {
    pub graph: Graph,
    pub head: TaskHead,
    /// A multi-task model's tasks, each with the output that serves it (empty for a single-task model).
    pub tasks: Vec<TaskHead>,
    pub preprocessor: Preprocessor,
    /// Feature statistics and the rejection threshold (`ood.json`), when the model was trained with `reject`.
    pub ood: Option<crate::infer::ood::OodModel>,
    /// The CSV column the model's texts came from in training.
    pub text_column: Option<String>,
    /// `"autoencoder"` or `"vae"`: the model reconstructs its input, and `predict` scores how well.
    pub objective: Option<String>,
}

impl Predictor {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        check_run_dir(dir)?;
        let graph = load_model(dir, device)?;
        let manifest = Manifest::read(dir)?;
        let path = dir.join(MANIFEST_FILE);
        let outputs = *graph.output_shapes()[0].last().unwrap_or(&1);
        // A reconstruction model predicts its input, not the classes its data had.
        let classes = if manifest.objective.is_some() {
            vec![]
        } else {
            manifest.classes
        };
        let mut head = TaskHead::new(&manifest.loss, outputs, classes).in_file(&path)?;
        head.temperature = manifest.temperature;
        head.thresholds = manifest.thresholds;
        head.class_weights = manifest.class_weights;
        head.target_scaler = manifest.target_scaler;
        let preprocessor = manifest.preprocessor;
        let mut tasks = vec![];
        for t in manifest.tasks.into_iter().flatten() {
            let bad = |what: &str| Error::new(format!("tasks: {what}")).in_file(&path);
            let name = t.name.ok_or_else(|| bad("a task without a name"))?;
            let output = t.output;
            let width = graph
                .output_shapes()
                .get(output)
                .and_then(|s| s.last().copied())
                .ok_or_else(|| bad(&format!("task '{name}' names output {output}, which the model lacks")))?;
            let mut head = TaskHead::new(&t.loss, width, t.classes).in_file(&path)?;
            head.name = Some(name);
            head.output = output;
            head.temperature = t.temperature;
            head.thresholds = t.thresholds;
            head.class_weights = t.class_weights;
            head.weight = t.weight;
            tasks.push(head);
        }
        Ok(Predictor {
            graph,
            head,
            tasks,
            preprocessor,
            ood: crate::infer::ood::OodModel::read(dir)?,
            text_column: manifest.text_column,
            objective: manifest.objective,
        })
    }

    /// Raw inputs from `path` in the format the model was trained on, through the stored preprocessing.
    pub fn read_inputs(&self, path: &Path) -> Result<Array> {
        self.preprocessor.read_inputs_from(path, self.text_column.as_deref())
    }

    /// An autoencoder's or VAE's reconstructions of `inputs` (`[N, input shape]`; a VAE decodes the posterior mean)
    /// and each input's reconstruction error (the training loss averaged over its elements: the anomaly score).
    pub fn reconstruct(&self, inputs: &Array) -> Result<(Array, Vec<f64>)> {
        if self.graph.spec.inputs.len() > 1 {
            return Err(Error::new(
                "a conditional VAE reconstructs an input given its class, which predict's inputs do not carry; \
                 measure it with graft eval, or draw samples of a class with graft sample --class",
            ));
        }
        let ds = crate::data::Dataset::new(inputs.clone(), None)?;
        let config = crate::train::reconstruction::ReconstructionConfig::autoencoder(self.head.loss.clone());
        let errors = crate::train::reconstruction::evaluate_reconstruction(&self.graph, &config, &ds)?.errors;
        let output = match self.graph.outputs[0] {
            crate::model::graph::Source::Node(n, 0) => n,
            _ => return Err(Error::new("the model's output is not a layer's output")),
        };
        let reconstructions = self.graph.features(output, &ds, EVAL_BATCH)?.inputs;
        Ok((reconstructions, errors))
    }

    /// Probabilities (classification) or values (regression), `[N, K]` row-major.
    pub fn predict(&self, inputs: &Array) -> Result<Array> {
        Ok(self.predict_heads(inputs, std::slice::from_ref(&self.head))?.remove(0))
    }

    /// The model's raw output scores (logits, before any softmax or sigmoid) `[N, K]`.
    pub fn logits(&self, inputs: &Array) -> Result<Array> {
        let mut raw = self.head.clone();
        raw.task = crate::task::loss::Task::Regression;
        Ok(self
            .sample_heads(inputs, std::slice::from_ref(&raw), 1, Ctx::default())?
            .remove(0))
    }

    /// One array per head (see [`Predictor::predict`]), all from one forward pass per batch.
    pub fn predict_heads(&self, inputs: &Array, heads: &[TaskHead]) -> Result<Vec<Array>> {
        self.sample_heads(inputs, heads, 1, Ctx::default())
    }

    /// Monte-Carlo dropout: `passes` predictions of every input with dropout active (batch norm on its running
    /// statistics), summarized per input, for each head. The passes of a batch run as one forward pass over the
    /// batch repeated `passes` times.
    pub fn predict_mc(&self, inputs: &Array, heads: &[TaskHead], passes: usize) -> Result<Vec<Vec<McSummary>>> {
        if passes == 0 {
            return Err(Error::new("--mc-dropout needs at least 1 pass"));
        }
        let ctx = Ctx {
            mc_dropout: true,
            ..Ctx::default()
        };
        let samples = self.sample_heads(inputs, heads, passes, ctx)?;
        let n = inputs.len();
        Ok(heads
            .iter()
            .zip(samples)
            .map(|(head, a)| {
                let k = a.sample_size();
                (0..n)
                    .map(|i| {
                        let draws: Vec<Vec<f32>> = (0..passes)
                            .map(|p| a.data[(p * n + i) * k..(p * n + i + 1) * k].to_vec())
                            .collect();
                        summarize(&draws, head.is_classification())
                    })
                    .collect()
            })
            .collect())
    }

    /// Per head, `[passes · n, K]`: pass p of input i at row p·n + i.
    fn sample_heads(&self, inputs: &Array, heads: &[TaskHead], passes: usize, ctx: Ctx) -> Result<Vec<Array>> {
        if self.graph.spec.inputs.len() > 1 {
            return Err(Error::new(format!(
                "this model has {} inputs; predict reads one input file, so feed models with several inputs through \
                 `graft eval` or the Rust API",
                self.graph.spec.inputs.len()
            )));
        }
        let expected = &self.graph.spec.inputs[0].shape;
        if inputs.sample_shape() != expected.as_slice() {
            return Err(Error::new(format!(
                "inputs have per-sample shape {:?}, the model expects {:?}",
                inputs.sample_shape(),
                expected
            )));
        }
        self.graph.check_token_ids(&[inputs])?;
        let device = burn::module::Module::devices(&self.graph)
            .first()
            .cloned()
            .unwrap_or_default();
        let n = inputs.len();
        let mut out: Vec<Vec<f32>> = vec![vec![]; heads.len()];
        let mut widths = vec![0; heads.len()];
        // Keep a forward pass near 256 rows whatever the number of passes.
        let chunk = (256 / passes).max(1);
        let order = self.length_order(inputs).unwrap_or_else(|| (0..n).collect());
        for idx in order.chunks(chunk) {
            let tiled: Vec<usize> = (0..passes).flat_map(|_| idx.iter().copied()).collect();
            let x = input_data(&inputs.select(&tiled), &device)?;
            let outs = self.graph.forward_ctx(vec![x], ctx, true)?;
            for (h, head) in heads.iter().enumerate() {
                let logits = match outs[head.output].data.clone() {
                    crate::layers::value::Data::D2(t) => t,
                    other => other.reshape(&[tiled.len(), usize::MAX])?.d2()?,
                };
                let probs = head.probabilities(logits);
                let k = probs.dims()[1];
                if out[h].is_empty() {
                    widths[h] = k;
                    out[h] = vec![0.0; passes * n * k];
                }
                let values = probs.into_data().try_to_vec::<f32>().unwrap_or_default();
                // Back in input order: pass p's answer for row i is row p·n + i.
                for p in 0..passes {
                    for (r, &i) in idx.iter().enumerate() {
                        let from = (p * idx.len() + r) * k;
                        let to = (p * n + i) * k;
                        out[h][to..to + k].copy_from_slice(&values[from..from + k]);
                    }
                }
            }
        }
        out.into_iter()
            .zip(widths)
            .map(|(values, width)| Array::new(vec![passes * n, width], values))
            .collect()
    }

    /// Rows sorted by their number of tokens when the model's cost follows the longest sequence of a batch (a
    /// `bert` layer reads the input and runs only up to the batch's last token): then each batch holds texts of
    /// similar length. `GRAFT_SORT_BY_LENGTH=0` keeps the input order (to measure the difference).
    fn length_order(&self, inputs: &Array) -> Option<Vec<usize>> {
        if std::env::var("GRAFT_SORT_BY_LENGTH").is_ok_and(|v| v == "0") {
            return None;
        }
        let pad = self.graph.token_pad()?;
        (inputs.sample_shape().len() == 1).then(|| crate::model::partial::rows_by_length(inputs, pad))
    }
}

/// Monte-Carlo dropout: the passes, and the seed of their dropout masks (the same seed, the same passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McDropout {
    pub passes: usize,
    pub seed: u64,
}

/// How `predict` runs.
#[derive(Debug, Clone, Default)]
pub struct PredictOptions {
    /// The input holds this layer's outputs (from `graft embed --layer`); only the model after it runs.
    pub from_layer: Option<String>,
    /// Monte-Carlo dropout with this many passes.
    pub mc_dropout: Option<usize>,
    /// Seeds the dropout masks of Monte-Carlo passes.
    pub seed: u64,
    /// Columns of a CSV input copied into each prediction (an id, say).
    pub keep: Vec<String>,
}

impl PredictOptions {
    /// The Monte-Carlo passes asked for, with their seed.
    pub fn mc(&self) -> Option<McDropout> {
        self.mc_dropout.map(|passes| McDropout {
            passes,
            seed: self.seed,
        })
    }
}

/// What `predict` writes, by the output's extension.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    /// The probabilities or values as a float32 array.
    Npy,
    /// One JSON object per input.
    Jsonl,
    /// One row per input; nested fields become columns (`probabilities.cat`).
    Csv,
}

impl Format {
    fn of(output: &Path) -> Result<Format> {
        if is_stdio(output) {
            return Ok(Format::Jsonl);
        }
        match output
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("npy") => Ok(Format::Npy),
            Some("jsonl") => Ok(Format::Jsonl),
            Some("csv") => Ok(Format::Csv),
            _ => Err(
                Error::new("the output must end in .jsonl, .csv or .npy, or be - (JSON lines on stdout)")
                    .in_file(output),
            ),
        }
    }
}

/// Reads raw `input` (`.npy`, or the format the model was trained on: IDX, CSV, text lines), applies the stored
/// preprocessing, predicts, writes `output` (`.jsonl`, `.csv` or `.npy`). With Monte-Carlo dropout the `.npy` holds
/// the mean probabilities and each row adds `std`, `entropy` and `mutual_information`.
pub fn predict_file(
    model_dir: &Path,
    input: &Path,
    output: &Path,
    opts: &PredictOptions,
    device: &Device,
) -> Result<usize> {
    let format = Format::of(output)?;
    let mut predictor = Predictor::load(model_dir, device)?;
    predictor.check_predicts().in_file(model_dir)?;
    if let Some(name) = &opts.from_layer {
        predictor.graph = predictor.graph.after(name).at("--from-layer")?;
        // What comes in is that layer's output: numbers, with no preprocessing left to apply.
        predictor.preprocessor = Preprocessor::None;
    }
    if is_stdio(input) {
        if !opts.keep.is_empty() {
            return Err(Error::new(
                "--keep copies columns of a CSV input file; with --input - put what you need beside each line yourself",
            )
            .at("--keep"));
        }
        if is_stdio(output) {
            let stdin = std::io::BufReader::new(std::io::stdin());
            return predict_lines(&predictor, stdin, std::io::stdout().lock(), opts);
        }
    }
    let inputs = match &opts.from_layer {
        _ if is_stdio(input) => {
            let text = std::io::read_to_string(std::io::stdin()).map_err(|e| Error::new(format!("stdin: {e}")))?;
            let mut items = vec![];
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                items.push(parse_line(line).map_err(|e| e.at(format!("stdin line {}", i + 1)))?);
            }
            predictor.inputs_from_json(&items)?
        }
        Some(name) => {
            if input.extension().and_then(|e| e.to_str()) != Some("npy") {
                return Err(Error::new(format!(
                    "--from-layer {name} reads that layer's outputs from a .npy file (`graft embed --layer {name}` \
                     writes one)"
                ))
                .in_file(input));
            }
            crate::data::read_npy_f32(input)?
        }
        None => predictor.read_inputs(input)?,
    };
    // Predictions on image files carry each file's name (relative to the folder given).
    let files = match &opts.from_layer {
        None if !is_stdio(input) => predictor.preprocessor.input_files(input)?,
        _ => None,
    };
    let kept = if let Some(files) = files.filter(|_| format != Format::Npy) {
        let base = if input.is_dir() { input } else { Path::new("") };
        let names = files
            .iter()
            .map(|f| vec![f.strip_prefix(base).unwrap_or(f).display().to_string()])
            .collect();
        Some((vec!["file".to_string()], names))
    } else if opts.keep.is_empty() {
        None
    } else if format == Format::Npy {
        return Err(
            Error::new("--keep writes its columns beside each prediction: give a .jsonl or .csv output")
                .in_file(output),
        );
    } else {
        Some((
            opts.keep.clone(),
            predictor.preprocessor.read_columns(input, &opts.keep)?,
        ))
    };
    let mc = opts.mc();
    if format == Format::Npy {
        let array = predictor.array(&inputs, mc).in_file(input)?;
        write_npy_f32(output, &array)?;
    } else {
        let rows = predictor.rows(&inputs, mc).in_file(input)?;
        let kept = kept.as_ref().map(|(names, values)| (names.as_slice(), values.clone()));
        write_rows(output, format, rows, kept)?;
    }
    Ok(inputs.len())
}

/// `-` for stdin or stdout.
fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn parse_line(line: &str) -> Result<Json> {
    serde_json::from_str(line).map_err(|e| Error::new(format!("not JSON ({e})")))
}

/// `graft predict --input - --output -`: one input per line in (JSON: an object of columns, a string, or an array of
/// numbers, as the model takes), one prediction per line out, in order. The lines waiting when a batch starts are
/// predicted together (up to 256), and each batch's answers are flushed at once, so a program can write a line and
/// read its answer. A line that cannot be read or predicted is answered with `{"error": ...}` and the stream goes
/// on; the call fails at the end if any did. Monte-Carlo passes are seeded per line, so a line's answer does not
/// depend on which lines came with it.
pub fn predict_lines(
    predictor: &Predictor,
    input: impl std::io::BufRead + Send,
    mut output: impl std::io::Write,
    opts: &PredictOptions,
) -> Result<usize> {
    const MOST: usize = 256;
    let (lines, waiting) = std::sync::mpsc::channel::<std::io::Result<String>>();
    let (mut done, mut failed) = (0usize, 0usize);
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(move || {
            for line in input.lines() {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let write = |output: &mut dyn std::io::Write, row: &Json| {
            writeln!(output, "{row}").map_err(|e| Error::new(format!("stdout: {e}")))
        };
        while let Ok(first) = waiting.recv() {
            let mut batch = vec![first];
            while batch.len() < MOST {
                match waiting.try_recv() {
                    Ok(line) => batch.push(line),
                    Err(_) => break,
                }
            }
            let mut items = Vec::with_capacity(batch.len());
            let mut answers: Vec<Option<Json>> = vec![None; batch.len()];
            for (k, line) in batch.into_iter().enumerate() {
                let number = done + failed + k + 1;
                let parsed = line
                    .map_err(|e| Error::new(format!("stdin: {e}")))
                    .and_then(|l| parse_line(&l))
                    .map_err(|e| e.at(format!("line {number}")));
                match parsed {
                    Ok(item) => items.push((k, number, item)),
                    Err(e) => answers[k] = Some(json!({ "error": e.to_string() })),
                }
            }
            let predict = |items: &[Json]| -> Result<Vec<Json>> {
                let inputs = predictor.inputs_from_json(items)?;
                predictor.rows(&inputs, opts.mc())
            };
            let values: Vec<Json> = items.iter().map(|(_, _, item)| item.clone()).collect();
            let together = match opts.mc_dropout {
                None if !values.is_empty() => predict(&values).ok(),
                _ => None,
            };
            match together {
                Some(rows) => {
                    for ((k, _, _), row) in items.iter().zip(rows) {
                        answers[*k] = Some(row);
                    }
                }
                // One at a time: MC dropout seeded per line, or a batch with a bad line in it.
                None => {
                    for (k, number, item) in &items {
                        answers[*k] = Some(match predict(std::slice::from_ref(item)) {
                            Ok(mut rows) => rows.remove(0),
                            Err(e) => {
                                let e = e.to_string().replacen("inputs[0]: ", "", 1);
                                json!({ "error": format!("line {number}: {e}") })
                            }
                        });
                    }
                }
            }
            for answer in answers.into_iter().flatten() {
                if answer.get("error").is_some() {
                    failed += 1;
                    eprintln!("error: {}", answer["error"].as_str().unwrap_or_default());
                } else {
                    done += 1;
                }
                write(&mut output, &answer)?;
            }
            output.flush().map_err(|e| Error::new(format!("stdout: {e}")))?;
        }
        Ok(())
    })?;
    if failed > 0 {
        return Err(Error::new(format!(
            "{failed} of {} lines could not be predicted (each answered with an error line)",
            done + failed
        )));
    }
    Ok(done)
}

impl Predictor {
    /// What the model takes and gives, as JSON: its input (name, shape, the JSON form of one input and the stored
    /// preprocessing), its objective, its output head (or one per task) with the classes, and whether it marks
    /// unknown inputs. `graft serve`'s `GET /v1/model` and the Python `Model.info`.
    pub fn describe(&self) -> Json {
        let head = |h: &TaskHead| {
            json!({
                "name": h.name,
                "task": h.task,
                "loss": h.loss,
                "outputs": h.outputs,
                "classes": h.classes,
                "thresholds": h.thresholds,
            })
        };
        let input = &self.graph.spec.inputs[0];
        json!({
            "input": {
                "name": input.name,
                "shape": input.shape,
                "json": self.preprocessor.describe_json_input(),
            },
            "objective": self.objective,
            "output": if self.tasks.is_empty() {
                head(&self.head)
            } else {
                Json::Array(self.tasks.iter().map(head).collect())
            },
            "rejects_unknown_inputs": self.ood.as_ref().is_some_and(|o| o.reject.is_some()),
        })
    }

    /// The model inputs for JSON items (one per sample: an object of columns, a string, or an array of numbers, as
    /// the model's data came), through the stored preprocessing.
    pub fn inputs_from_json(&self, items: &[Json]) -> Result<Array> {
        let shape = &self.graph.spec.inputs[0].shape;
        self.preprocessor
            .inputs_from_json(items, shape, self.text_column.as_deref())
    }

    /// An error saying what to use instead when this run's model does not make predictions (a GAN, a siamese model,
    /// word vectors).
    pub fn check_predicts(&self) -> Result<()> {
        match self.objective.as_deref() {
            Some("gan") => Err(Error::new(
                "a GAN's generator makes samples from codes: draw them with graft sample",
            )),
            Some("siamese") => Err(Error::new(
                "a siamese model embeds its inputs: write the embeddings with graft embed --model DIR --layer NAME \
                 (its last layer)",
            )),
            Some("word2vec") => Err(Error::new(WORD2VEC_RUN)),
            _ => Ok(()),
        }
    }

    /// One JSON object per input, as `predict` writes them: class, class index and probabilities by class name
    /// (with the OOD score, and `"unknown"` above the rejection threshold, for a model trained with `reject`),
    /// values for regression, one object per task for a multi-task model, the reconstruction error for an
    /// autoencoder. With Monte-Carlo dropout the prediction is the mean over the passes, with its spread.
    pub fn rows(&self, inputs: &Array, mc: Option<McDropout>) -> Result<Vec<Json>> {
        let mc_dropout = self.start(mc)?;
        if self.objective.is_some() {
            let (_, errors) = self.reconstruct(inputs)?;
            return Ok(errors.iter().map(|e| json!({ "reconstruction_error": e })).collect());
        }
        if let Some(passes) = mc_dropout {
            return mc_rows(self, inputs, passes);
        }
        if !self.tasks.is_empty() {
            let preds = self.predict_heads(inputs, &self.tasks)?;
            return Ok((0..inputs.len())
                .map(|i| {
                    Json::Object(
                        self.tasks
                            .iter()
                            .zip(&preds)
                            .map(|(head, p)| (head.name.clone().unwrap_or_default(), row_json(head, p.row(i))))
                            .collect(),
                    )
                })
                .collect());
        }
        let preds = self.predict(inputs)?;
        let rejection = rejection_scores(self, inputs)?;
        Ok((0..preds.len())
            .map(|i| {
                let mut line = row_json(&self.head, preds.row(i));
                if let Some((scores, threshold)) = &rejection {
                    line["ood_score"] = json!(scores[i]);
                    if scores[i] > *threshold {
                        line["class"] = json!("unknown");
                        line["class_index"] = Json::Null;
                    }
                }
                line
            })
            .collect())
    }

    /// Checks that the model predicts and that Monte-Carlo dropout applies to it, and seeds the passes' dropout
    /// masks; the number of passes.
    fn start(&self, mc: Option<McDropout>) -> Result<Option<usize>> {
        self.check_predicts()?;
        let Some(mc) = mc else { return Ok(None) };
        if self.objective.is_some() {
            return Err(Error::new(
                "--mc-dropout summarizes class probabilities; an autoencoder's predictions are reconstructions",
            ));
        }
        let device = burn::module::Module::devices(&self.graph)
            .first()
            .cloned()
            .unwrap_or_default();
        device.seed(mc.seed);
        Ok(Some(mc.passes))
    }

    /// What `predict` writes to a `.npy`: the probabilities or values `[N, K]` (with `mc_dropout`, their means over
    /// the passes), or an autoencoder's reconstructions.
    pub fn array(&self, inputs: &Array, mc: Option<McDropout>) -> Result<Array> {
        let mc_dropout = self.start(mc)?;
        if self.objective.is_some() {
            return Ok(self.reconstruct(inputs)?.0);
        }
        if !self.tasks.is_empty() {
            return Err(Error::new(
                "a multi-task model predicts several things per input; write them to a .jsonl or .csv file",
            ));
        }
        match mc_dropout {
            Some(passes) => {
                let summaries = self.predict_mc(inputs, std::slice::from_ref(&self.head), passes)?;
                let k = summaries[0].first().map_or(0, |s| s.mean.len());
                let data = summaries[0].iter().flat_map(|s| s.mean.iter().copied()).collect();
                Array::new(vec![inputs.len(), k], data)
            }
            None => self.predict(inputs),
        }
    }
}

/// Writes one row per prediction, each with the kept input columns (names, then each row's values) in front.
fn write_rows(
    output: &Path,
    format: Format,
    rows: Vec<Json>,
    kept: Option<(&[String], Vec<Vec<String>>)>,
) -> Result<()> {
    let rows: Vec<Vec<(String, Json)>> = rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut fields = vec![];
            if let Some((names, values)) = &kept {
                for (name, value) in names.iter().zip(&values[i]) {
                    if row.get(name).is_some() {
                        return Err(Error::new(format!(
                            "the column `{name}` has the name of a prediction field; rename it in the input"
                        ))
                        .at("--keep"));
                    }
                    fields.push((name.clone(), json!(value)));
                }
            }
            match row {
                Json::Object(map) => fields.extend(map),
                other => fields.push(("prediction".into(), other)),
            }
            Ok(fields)
        })
        .collect::<Result<_>>()?;
    let bytes = match format {
        Format::Jsonl => {
            let mut text = String::new();
            for fields in rows {
                let object: serde_json::Map<String, Json> = fields.into_iter().collect();
                text.push_str(&Json::Object(object).to_string());
                text.push('\n');
            }
            text.into_bytes()
        }
        Format::Csv => csv_bytes(&rows).in_file(output)?,
        Format::Npy => unreachable!("arrays are written where they are computed"),
    };
    if is_stdio(output) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        return out
            .write_all(&bytes)
            .and_then(|()| out.flush())
            .map_err(|e| Error::new(format!("stdout: {e}")));
    }
    write_atomic(output, &bytes)
}

/// The rows as CSV: nested objects and arrays of numbers become columns of their own (`probabilities.cat`,
/// `values.0`), arrays of names one cell joined by `|`; the header is the first row's columns.
fn csv_bytes(rows: &[Vec<(String, Json)>]) -> Result<Vec<u8>> {
    fn flatten(name: String, value: &Json, out: &mut Vec<(String, String)>) {
        match value {
            Json::Object(map) => {
                for (k, v) in map {
                    flatten(format!("{name}.{k}"), v, out);
                }
            }
            Json::Array(items) if items.iter().all(Json::is_string) => {
                let names: Vec<&str> = items.iter().filter_map(Json::as_str).collect();
                out.push((name, names.join("|")));
            }
            Json::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    flatten(format!("{name}.{i}"), v, out);
                }
            }
            Json::String(text) => out.push((name, text.clone())),
            Json::Null => out.push((name, String::new())),
            other => out.push((name, other.to_string())),
        }
    }
    let cells: Vec<Vec<(String, String)>> = rows
        .iter()
        .map(|fields| {
            let mut out = vec![];
            for (name, value) in fields {
                flatten(name.clone(), value, &mut out);
            }
            out
        })
        .collect();
    let header: Vec<String> = cells
        .first()
        .map_or(vec![], |c| c.iter().map(|(n, _)| n.clone()).collect());
    let mut writer = csv::Writer::from_writer(vec![]);
    let failed = |e: csv::Error| Error::new(format!("cannot write the CSV: {e}"));
    writer.write_record(&header).map_err(failed)?;
    for row in &cells {
        let record = header
            .iter()
            .map(|h| row.iter().find(|(n, _)| n == h).map_or("", |(_, v)| v.as_str()));
        writer.write_record(record).map_err(failed)?;
    }
    writer
        .into_inner()
        .map_err(|e| Error::new(format!("cannot write the CSV: {e}")))
}

/// The rejection score of every input and the threshold above which an input is unknown, for a model trained with
/// `reject`.
fn rejection_scores(predictor: &Predictor, inputs: &Array) -> Result<Option<(Vec<f64>, f64)>> {
    let Some(ood) = &predictor.ood else { return Ok(None) };
    let Some(reject) = &ood.reject else { return Ok(None) };
    let name = reject.score.as_str();
    let mut scores = predictor.ood_scores(inputs, Some(&ood.features), &[name])?;
    let values = scores.remove(name).ok_or_else(|| {
        Error::new(format!(
            "ood.json names the score \"{name}\", which graft does not know"
        ))
    })?;
    Ok(Some((values, reject.threshold)))
}

/// Monte-Carlo dropout predictions: the mean probabilities as the prediction, with their spread.
fn mc_rows(predictor: &Predictor, inputs: &Array, passes: usize) -> Result<Vec<Json>> {
    let heads: Vec<TaskHead> = if predictor.tasks.is_empty() {
        vec![predictor.head.clone()]
    } else {
        predictor.tasks.clone()
    };
    let summaries = predictor.predict_mc(inputs, &heads, passes)?;
    let n = inputs.len();
    let one = |head: &TaskHead, s: &McSummary| {
        let mut line = row_json(head, &s.mean);
        for (key, value) in s.fields(head.is_classification()) {
            line[key] = value;
        }
        if head.is_classification() {
            line["std"] = by_class(head, &s.std);
        }
        line
    };
    Ok((0..n)
        .map(|i| {
            if predictor.tasks.is_empty() {
                one(&heads[0], &summaries[0][i])
            } else {
                Json::Object(
                    heads
                        .iter()
                        .zip(&summaries)
                        .map(|(h, s)| (h.name.clone().unwrap_or_default(), one(h, &s[i])))
                        .collect(),
                )
            }
        })
        .collect())
}

/// Per-class numbers keyed by class name, so a reader never has to know the class order; an array where the head
/// has no names for them.
fn by_class(head: &TaskHead, values: &[f32]) -> Json {
    if head.classes.len() == values.len() {
        Json::Object(
            head.classes
                .iter()
                .cloned()
                .zip(values.iter().map(|&v| json!(v)))
                .collect(),
        )
    } else {
        json!(values)
    }
}

/// One prediction as JSON: class, class index and probabilities by class name (classification), probabilities and
/// labels (multi-label), or values (regression).
fn row_json(head: &TaskHead, row: &[f32]) -> Json {
    match head.task {
        Task::Multiclass | Task::Binary => {
            let probs: Vec<f32> = if head.task == Task::Binary {
                vec![1.0 - row[0], row[0]]
            } else {
                row.to_vec()
            };
            let best = match head.thresholds.as_deref() {
                Some([t]) if head.task == Task::Binary => usize::from(row[0] as f64 >= *t),
                _ => probs
                    .iter()
                    .enumerate()
                    .fold(0, |b, (j, p)| if *p > probs[b] { j } else { b }),
            };
            let name = head.classes.get(best).cloned().unwrap_or_else(|| best.to_string());
            json!({"class": name, "class_index": best, "probabilities": by_class(head, &probs)})
        }
        Task::Multilabel => {
            let labels: Vec<bool> = match &head.thresholds {
                Some(t) if t.len() == row.len() => row.iter().zip(t).map(|(p, t)| *p as f64 >= *t).collect(),
                _ => row.iter().map(|p| *p > 0.5).collect(),
            };
            if head.classes.len() == labels.len() {
                let names: Vec<&String> = head
                    .classes
                    .iter()
                    .zip(&labels)
                    .filter(|(_, on)| **on)
                    .map(|(n, _)| n)
                    .collect();
                json!({"probabilities": by_class(head, row), "labels": labels, "predicted": names})
            } else {
                json!({"probabilities": row, "labels": labels})
            }
        }
        Task::Regression => json!({"values": row}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::LayerSpec;
    use crate::layers::dense::DenseConfig;
    use crate::layers::dropout::DropoutConfig;
    use crate::model::spec::ModelSpec;

    fn predictor(rate: f64) -> Predictor {
        let device = Device::default();
        device.seed(4);
        let spec = ModelSpec::sequential(vec![6])
            .add(LayerSpec::Dense(DenseConfig::new(16)))
            .add(LayerSpec::Dropout(DropoutConfig { rate }))
            .add(LayerSpec::Dense(DenseConfig::new(3)));
        let loss = crate::task::loss::LossSpec::SparseCategoricalCrossentropy { label_smoothing: 0.0 };
        Predictor {
            graph: Graph::build(&spec, &device).unwrap(),
            head: TaskHead::new(&loss, 3, vec!["a".into(), "b".into(), "c".into()]).unwrap(),
            tasks: vec![],
            preprocessor: Preprocessor::None,
            ood: None,
            text_column: None,
            objective: None,
        }
    }

    fn inputs() -> Array {
        Array::new(vec![5, 6], (0..30).map(|i| ((i * 5 % 7) as f32 - 3.0) / 3.0).collect()).unwrap()
    }

    #[test]
    fn mc_dropout_without_dropout_is_the_deterministic_prediction() {
        let p = predictor(0.0);
        let plain = p.predict(&inputs()).unwrap();
        let mc = p
            .predict_mc(&inputs(), std::slice::from_ref(&p.head), 7)
            .unwrap()
            .remove(0);
        for (i, s) in mc.iter().enumerate() {
            for (a, b) in s.mean.iter().zip(plain.row(i)) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
            assert!(s.std.iter().all(|v| *v < 1e-6), "{:?}", s.std);
            assert!(s.mutual_information < 1e-6);
        }
    }

    #[test]
    fn mc_dropout_passes_differ() {
        // (That the same seed repeats them is checked by the CLI test, in processes of their own: the device's random
        // generator is shared by the tests running in parallel here.)
        let p = predictor(0.5);
        let a = p
            .predict_mc(&inputs(), std::slice::from_ref(&p.head), 20)
            .unwrap()
            .remove(0);
        assert!(
            a.iter()
                .all(|s| s.std.iter().any(|v| *v > 1e-4) && s.mutual_information > 0.0)
        );
        // The inputs are batched with their repeats: more inputs than one forward pass holds give the same shape.
        let many = Array::new(vec![40, 6], (0..240).map(|i| (i % 11) as f32 / 11.0).collect()).unwrap();
        assert_eq!(
            p.predict_mc(&many, std::slice::from_ref(&p.head), 30).unwrap()[0].len(),
            40
        );
    }
}
