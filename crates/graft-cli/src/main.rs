//! The `graft` command line: thin clap commands over the library.

mod bench;

mod alloc_guard;
mod fuzz;

#[global_allocator]
static ALLOCATOR: alloc_guard::Guard = alloc_guard::Guard;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use graft::data::prepare::Preprocessor;
use graft::error::{Context, Error, Result};
use graft::experiment::ExperimentSpec;
use graft::experiment::run_dir::{EvalData, eval_run};
use graft::experiment::{RunOptions, prepare_data, run_experiment};
use graft::infer::manifest::Manifest;
use graft::model::Graph;
use graft::model::ModelSpec;
use graft::model::io::{import_state_dict, load_model, save_model, save_safetensors};
use graft::task::head::TaskHead;
use graft::task::loss::LossSpec;
use serde_json::Value as Json;

#[derive(Parser)]
#[command(
    name = "graft",
    version,
    about = "Build, train and ship neural networks — without Python."
)]
struct Cli {
    /// Where tensors live: `cpu`, or `cuda:N` when built with the `cuda` feature.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train an experiment and write the run directory.
    Train {
        /// The experiment file (TOML with [data], [model] and [train]).
        experiment: PathBuf,
        /// The run directory to write: created when missing; an existing run needs --overwrite.
        #[arg(long)]
        out: PathBuf,
        /// Replace the graft run already in --out (its files are removed first).
        #[arg(long)]
        overwrite: bool,
        /// Seeds the split, the weights, shuffling and dropout: the same seed gives the same run.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// No progress output and no warnings (errors are still printed).
        #[arg(long)]
        quiet: bool,
        /// Continue the interrupted run in --out from its last complete epoch; it ends as an uninterrupted run would.
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Print what `[train] transfer` would choose and why (JSON: strategy, rule, evidence, recipe) and stop:
        /// nothing is trained or written, --out is not touched.
        #[arg(long, conflicts_with_all = ["overwrite", "resume"])]
        plan: bool,
    },
    /// Stratified k-fold cross-validation: one run per fold, each fold's test metrics and their mean ± std.
    Cv {
        /// The experiment file; its data set is split into the folds.
        experiment: PathBuf,
        /// The number of folds.
        #[arg(long, default_value_t = 5)]
        folds: usize,
        /// The directory for the folds' runs (fold-1, fold-2, ...) and cv.json.
        #[arg(long)]
        out: PathBuf,
        /// Replace a cross-validation already in --out (its files are removed first).
        #[arg(long)]
        overwrite: bool,
        /// Seeds the folds and every fold's training.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// No progress output and no warnings.
        #[arg(long)]
        quiet: bool,
    },
    /// Test metrics of a trained run as JSON: on exactly the rows the run was tested on (its recorded split, through
    /// its stored preprocessing), or on a new labelled file with --data.
    Eval {
        /// The run directory (the --out of `graft train`).
        #[arg(long)]
        model: PathBuf,
        /// The experiment file, only for runs written by an older graft (newer runs keep a copy of theirs).
        experiment: Option<PathBuf>,
        /// Only with EXPERIMENT for an older run: the seed it was trained with (newer runs record theirs).
        #[arg(long)]
        seed: Option<u64>,
        /// A labelled file in the run's data format (a CSV with the target column, texts with their labels, or
        /// inputs as .npy/IDX with --labels), evaluated through the run's stored preprocessing.
        #[arg(long)]
        data: Option<PathBuf>,
        /// The labels of --data when it holds arrays (.npy or IDX).
        #[arg(long, requires = "data")]
        labels: Option<PathBuf>,
    },
    /// The graft engine of the benchmark against PyTorch (run `bash bench/run.sh`): answers JSON requests, one per
    /// line on stdin, with step timings on stdout.
    Bench {
        /// Serve requests until stdin ends (the only mode; bench/compare.py drives it).
        #[arg(long)]
        serve: bool,
        /// The pretrained MiniLM directory for the minilm workloads.
        #[arg(long, default_value = "data/minilm")]
        minilm: PathBuf,
    },
    /// Predict with a trained model: inputs as the run's data came (.npy, IDX, CSV, text), output .npy or .jsonl.
    Predict {
        /// The run directory (the --out of `graft train`).
        #[arg(long)]
        model: PathBuf,
        /// The inputs: .npy, IDX images, a CSV with the training columns (the target may be absent), or texts (one
        /// per line in a .txt file, or a CSV's text column); `-`: JSON lines on stdin, one input each (an object of
        /// columns, a string, or an array of numbers).
        #[arg(long)]
        input: PathBuf,
        /// Where to write: `.jsonl` (one object per input), `.csv` (one row per input, nested fields as columns such as
        /// `probabilities.cat`), `.npy` (probabilities or values only), or `-` (JSON lines on stdout; with
        /// `--input -` each line is answered as it comes).
        #[arg(long)]
        output: PathBuf,
        /// Columns of a CSV input to copy into each prediction (an id, say), comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "COLUMN")]
        keep: Vec<String>,
        /// The input holds this layer's outputs as a .npy (from `graft embed --layer`): only the model after it runs.
        #[arg(long)]
        from_layer: Option<String>,
        /// Monte-Carlo dropout: N passes with dropout active; reports the mean, std, entropy, mutual information.
        #[arg(long, value_name = "N")]
        mc_dropout: Option<usize>,
        /// Seeds the dropout masks of --mc-dropout.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Serve a trained model over HTTP: POST /v1/predict, GET /v1/model, /healthz, /metrics; requests that arrive
    /// together run as one batch. Stops on SIGTERM or Ctrl-C after answering the requests in flight.
    Serve {
        /// The run directory (the --out of `graft train`).
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// 0 picks a free port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The most inputs one forward pass takes (requests are batched whole).
        #[arg(long, default_value_t = 64)]
        max_batch: usize,
        /// How long a batch waits for requests already arriving (read, not yet queued), in milliseconds; a lone
        /// request does not wait.
        #[arg(long, default_value_t = 5.0)]
        max_wait_ms: f64,
        /// The largest request body accepted, in bytes.
        #[arg(long, default_value_t = 16 << 20)]
        max_body_bytes: usize,
        /// The most inputs one request may carry.
        #[arg(long, default_value_t = 1024)]
        max_inputs: usize,
        /// Requests waiting for the model beyond this many get 503.
        #[arg(long, default_value_t = 1024)]
        max_queue: usize,
        /// A request not answered within this many milliseconds gets 504.
        #[arg(long, default_value_t = 30000)]
        timeout_ms: u64,
    },
    /// Import a PyTorch state dict (safetensors, PyTorch names and layouts) into a graft run directory.
    Import {
        /// The state dict: keys are the graft node names followed by the PyTorch parameter names.
        #[arg(long)]
        torch: PathBuf,
        /// A file with the `[model]` table (a `model.toml` or an experiment file).
        #[arg(long)]
        spec: PathBuf,
        /// The run directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Class names in output order, comma-separated (default: 0, 1, ...).
        #[arg(long, value_delimiter = ',')]
        classes: Vec<String>,
        /// The loss the model was trained with; it decides how outputs become predictions.
        #[arg(long, default_value = "sparse_categorical_crossentropy")]
        loss: String,
    },
    /// Export a run directory's model: its weights as a PyTorch state dict (safetensors), or the whole model as
    /// ONNX for ONNX Runtime and other engines (the preprocessing stays in the run's preprocess.json).
    #[command(group = clap::ArgGroup::new("target").required(true).multiple(true).args(["out", "onnx"]))]
    Export {
        /// The run directory.
        #[arg(long)]
        model: PathBuf,
        /// The .safetensors file to write (PyTorch state-dict names and layouts); a name ending in .onnx writes ONNX.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The .onnx file to write: the model's graph and weights (opset 17), token ids as int64.
        #[arg(long)]
        onnx: Option<PathBuf>,
    },
    /// Sentence embeddings from a pretrained encoder: one text per line in, a float32 [n_texts, dim] `.npy` out.
    Embed {
        /// A Hugging Face-format encoder directory (config.json, model.safetensors, tokenizer.json; the
        /// sentence-transformers pooling files when present), or a graft run directory with `--layer`.
        #[arg(long)]
        model: PathBuf,
        /// A text file, one text per line (for a graft model: anything `predict` reads).
        #[arg(long)]
        input: PathBuf,
        /// The .npy file to write, float32 [n_texts, dim].
        #[arg(long)]
        output: PathBuf,
        /// For a graft model directory: run it up to this layer and write that layer's outputs.
        #[arg(long)]
        layer: Option<String>,
        /// Texts per forward pass (texts of similar length are batched together).
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
    },
    /// How well each out-of-distribution score separates in-distribution inputs from others (JSON on stdout).
    Ood {
        /// The run directory of a classifier.
        #[arg(long)]
        model: PathBuf,
        /// In-distribution inputs, in any format `predict` reads.
        #[arg(long)]
        in_dist: PathBuf,
        /// Out-of-distribution inputs.
        #[arg(long)]
        ood: PathBuf,
        /// Also write an HTML page with each score's histograms and the ROC curves.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Seeds the dropout masks behind mc_mutual_information.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// New samples from a trained VAE: codes drawn from its N(0, I) prior, decoded by the part of the model after
    /// its `sampling` layer.
    Sample {
        /// The run directory of a `[vae]` experiment.
        #[arg(long)]
        model: PathBuf,
        /// How many samples.
        #[arg(long, default_value_t = 16)]
        n: usize,
        /// A conditional VAE's class for every sample (by default its classes in turn).
        #[arg(long)]
        class: Option<String>,
        /// `.npy` (float32 [n, output shape]) or, for image outputs, `.png` (a grid of the samples).
        #[arg(long)]
        output: PathBuf,
        /// Seeds the codes: the same seed gives the same samples.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// How close a generator's samples come to real data: the Fréchet distance (FID) between a classifier's
    /// features of real inputs and of samples, one per seed, with mean and std (JSON on stdout).
    Fid {
        /// The run directory of a classifier trained on the same data set (its features measure the distance).
        #[arg(long)]
        classifier: PathBuf,
        /// The run directory of a [vae] or [gan] experiment.
        #[arg(long)]
        generator: PathBuf,
        /// Samples drawn per seed.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Seeds 1..=N, one distance each.
        #[arg(long, default_value_t = 5)]
        seeds: usize,
        /// The classifier's feature layer (default: the input of its last layer).
        #[arg(long)]
        layer: Option<String>,
        /// Real inputs in the classifier's data format (default: the classifier run's test split).
        #[arg(long)]
        real: Option<PathBuf>,
    },
    /// Word vectors scored on analogy questions and word-similarity pairs, and each word's nearest words (JSON on
    /// stdout): a word2vec run directory's vectors.bin or any word2vec binary/text or GloVe file.
    WordVectors {
        /// A word-vector file, or the run directory of a [word2vec] experiment.
        vectors: PathBuf,
        /// Analogy questions in the `questions-words.txt` format (`: section` lines, then `a b c d`).
        #[arg(long)]
        analogies: Option<PathBuf>,
        /// Word pairs with human similarity scores, `word1<TAB>word2<TAB>score` (`wordsim353.tsv` format).
        #[arg(long)]
        similarity: Option<PathBuf>,
        /// A word whose nearest words to list; repeat for several.
        #[arg(long, value_name = "WORD")]
        nearest: Vec<String>,
        /// How many nearest words.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Feeds every reader of user files mutated inputs for a while and reports panics, hangs and oversized
    /// allocations (a development tool: JSON lines on stdout, exit 1 on a finding).
    #[command(hide = true)]
    Fuzz {
        /// A target (spec, checkpoint, safetensors, pt, idx, npy, csv, word2vec, hf_tokenizer, preprocess, corpus,
        /// benchmarks, resume, model_toml) or `all`.
        target: String,
        /// Seconds per target.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where crashing inputs are saved (default: graft-fuzz-crashes in the temporary folder).
        #[arg(long)]
        crashes: Option<PathBuf>,
    },
    /// Short automatic checks before training: the data (NaN, balance, scale, leakage, duplicates), the model at
    /// initialization (loss against chance, NaN by layer, gradient flow, dead ReLUs, activation scale, update size)
    /// and short runs (overfit one batch, the learning-rate range test, shuffled labels). Prints pass / warn / fail
    /// with one line of advice each; exits 1 when a check fails.
    Doctor {
        /// The experiment file to check (nothing is trained for real, nothing written unless --out).
        experiment: PathBuf,
        /// Write doctor.json, doctor.html and the range test's lr_finder.png into this folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the checks as JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
        /// Run only these checks (comma-separated names, e.g. `lr_finder,overfit_batch`).
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<String>>,
        /// The most seconds each training check (overfit_batch, lr_finder, label_shuffle) may run.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Seeds the split, the initial weights and every draw of the checks.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// No line per check while they run (the table or JSON is still printed).
        #[arg(long)]
        quiet: bool,
    },
    /// Hyperparameter search over any key of the experiment (grid, random, successive halving), each trial a seeded
    /// run (or cross-validation); writes results.csv/json, tune.png and best.toml; resumes an interrupted search.
    Tune {
        /// The experiment file; it is tried as given first, as the reference.
        experiment: PathBuf,
        /// The search space (TOML): `method`, `metric`, and `[params]` of key paths and their values, e.g.
        /// `"train.optimizer.adam.lr" = { loguniform = [1e-4, 1e-2] }`.
        #[arg(long)]
        space: PathBuf,
        /// Configurations to try besides the experiment as given (random, halving); at most this many of a grid.
        #[arg(long)]
        trials: Option<usize>,
        /// Score each configuration by k-fold cross-validation instead of one run.
        #[arg(long)]
        folds: Option<usize>,
        /// The folder for the trials' runs and the results; a search with the same settings there is resumed.
        #[arg(long)]
        out: PathBuf,
        /// Replace a search with other settings in --out.
        #[arg(long)]
        overwrite: bool,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// No line per trial.
        #[arg(long)]
        quiet: bool,
    },
    /// Print every layer's output shape, parameter counts and receptive field.
    Summary {
        /// An experiment file or a run directory.
        target: PathBuf,
    },
}

fn device(name: &str) -> Result<burn::prelude::Device> {
    match name {
        "cpu" => Ok(burn::prelude::Device::default()),
        #[cfg(feature = "cuda")]
        other if other.starts_with("cuda") => {
            let index = other.strip_prefix("cuda:").unwrap_or("0");
            let index: usize = index
                .parse()
                .map_err(|_| Error::new(format!("--device: bad CUDA index in '{other}'")))?;
            Ok(burn::prelude::Device::cuda(index))
        }
        other if other.starts_with("cuda") => Err(Error::new(format!(
            "--device {other}: this graft was built without CUDA; rebuild with `--features cuda`"
        ))),
        other => Err(Error::new(format!(
            "--device: expected `cpu` or `cuda:N`, found '{other}'"
        ))),
    }
}

fn run(cli: Cli) -> Result<()> {
    let dev = device(&cli.device)?;
    match cli.command {
        Command::Train {
            experiment,
            out,
            overwrite,
            seed,
            quiet,
            resume,
            plan,
        } => {
            let exp = ExperimentSpec::from_file(&experiment)?;
            if plan {
                let record = graft::experiment::transfer::plan(&exp, seed, &dev)
                    .map_err(|e| about_experiment(e, &experiment))?;
                println!("{}", serde_json::to_string_pretty(&record).unwrap_or_default());
                return Ok(());
            }
            stop_training_on_signals();
            let result = run_experiment(
                &exp,
                &RunOptions {
                    seed,
                    quiet,
                    device: dev,
                    out,
                    overwrite,
                    test_rows: None,
                    resume,
                },
            )
            .map_err(|e| about_experiment(e, &experiment))?;
            // Regression: the loss is on the standardized target, so the numbers in the target's unit come first.
            let shown: Vec<String> = [
                "accuracy",
                "f1_macro",
                "rmse",
                "mae",
                "r2",
                "loss",
                "elbo",
                "reconstruction_error",
                "anomaly_auroc",
            ]
            .iter()
            .filter_map(|k| {
                result
                    .test
                    .get(*k)
                    .and_then(|v| v.as_f64())
                    .map(|v| format!("{k} {v:.4}"))
            })
            .collect();
            if !shown.is_empty() {
                eprintln!("test: {}", shown.join("  "));
            }
            eprintln!("wrote {}", result.out.display());
        }
        Command::Cv {
            experiment,
            folds,
            out,
            overwrite,
            seed,
            quiet,
        } => {
            let exp = ExperimentSpec::from_file(&experiment)?;
            let opts = RunOptions {
                seed,
                quiet,
                device: dev,
                out: out.clone(),
                overwrite,
                test_rows: None,
                resume: false,
            };
            let report =
                graft::experiment::cross_validate(&exp, &opts, folds).map_err(|e| about_experiment(e, &experiment))?;
            for key in [
                "accuracy",
                "f1_macro",
                "balanced_accuracy",
                "roc_auc",
                "rmse",
                "mae",
                "r2",
            ] {
                if let (Some(m), Some(s)) = (report["mean"][key].as_f64(), report["std"][key].as_f64()) {
                    eprintln!("{key}: {m:.4} ± {s:.4}");
                }
            }
            eprintln!("wrote {} (one run per fold, cv.json)", out.display());
        }
        Command::Eval {
            model,
            experiment,
            seed,
            data,
            labels,
        } => {
            let data = data.map(|data| EvalData { data, labels });
            let metrics = eval_run(&model, experiment.as_deref(), seed, data.as_ref(), &dev)?;
            print_json(&Json::Object(metrics))?;
        }
        Command::Predict {
            model,
            input,
            output,
            from_layer,
            mc_dropout,
            seed,
            keep,
        } => {
            let opts = graft::infer::predict::PredictOptions {
                from_layer,
                mc_dropout,
                seed,
                keep,
            };
            let n = graft::infer::predict::predict_file(&model, &input, &output, &opts, &dev)?;
            let predictions = if n == 1 { "prediction" } else { "predictions" };
            if output.as_os_str() != "-" {
                eprintln!("wrote {n} {predictions} to {}", output.display());
            }
        }
        Command::Serve {
            model,
            host,
            port,
            max_batch,
            max_wait_ms,
            max_body_bytes,
            max_inputs,
            max_queue,
            timeout_ms,
        } => {
            if !(max_wait_ms.is_finite() && max_wait_ms >= 0.0) {
                return Err(Error::new(format!(
                    "--max-wait-ms must be a number of milliseconds ≥ 0, found {max_wait_ms}"
                )));
            }
            let options = graft_serve::ServeOptions {
                host,
                port,
                max_batch,
                max_wait: std::time::Duration::from_secs_f64(max_wait_ms / 1e3),
                max_body_bytes,
                max_inputs,
                max_queue,
                timeout: std::time::Duration::from_millis(timeout_ms),
                ..graft_serve::ServeOptions::new(model.clone())
            };
            graft_serve::serve(options, dev, |address| {
                eprintln!("graft serve: {} on http://{address}/v1/predict", model.display());
            })?;
        }
        Command::Import {
            torch,
            spec,
            out,
            classes,
            loss,
        } => {
            let text = std::fs::read_to_string(&spec).in_file(&spec)?;
            let doc: toml::Table =
                toml::from_str(&text).map_err(|e| Error::new(e.message().to_string()).in_file(&spec))?;
            let model = doc
                .get("model")
                .ok_or_else(|| Error::new("no [model] table").in_file(&spec))?;
            let model_spec = ModelSpec::from_toml(model, "model").in_file(&spec)?;
            let loss: LossSpec = toml::Value::String(loss)
                .try_into()
                .map_err(|e: toml::de::Error| Error::new(e.message().to_string()).at("--loss"))?;
            let graph = import_state_dict(&model_spec, &torch, &dev)?;
            let outputs = *graph.output_shapes()[0].last().unwrap_or(&1);
            let head = TaskHead::new(&loss, outputs, classes).at("--classes")?;
            let classes = if head.is_classification() && head.classes.is_empty() {
                (0..head.num_classes()).map(|i| i.to_string()).collect()
            } else {
                head.classes.clone()
            };
            let head = TaskHead { classes, ..head };
            save_model(&graph, &out)?;
            Manifest::new(std::slice::from_ref(&head), &graph, &Preprocessor::None).write(&out)?;
            eprintln!("imported {} into {}", torch.display(), out.display());
        }
        Command::Sample {
            model,
            n,
            class,
            output,
            seed,
        } => {
            let written = graft::experiment::sample::sample_file(&model, n, class.as_deref(), &output, seed, &dev)?;
            eprintln!("wrote {written} samples to {}", output.display());
        }
        Command::Fid {
            classifier,
            generator,
            n,
            seeds,
            layer,
            real,
        } => {
            let opts = graft::experiment::fid::FidOptions { n, seeds, layer, real };
            let report = graft::experiment::fid::fid(&classifier, &generator, &opts, &dev)?;
            print_json(&report)?;
        }
        Command::Export { model, out, onnx } => {
            graft::infer::predict::check_run_dir(&model)?;
            let (onnx_out, weights_out): (Vec<PathBuf>, Vec<PathBuf>) = out
                .into_iter()
                .chain(onnx.clone())
                .partition(|p| onnx.as_ref() == Some(p) || p.extension().is_some_and(|e| e == "onnx"));
            for path in weights_out {
                save_safetensors(&load_model(&model, &dev)?, &path)?;
                eprintln!("wrote {}", path.display());
            }
            for path in onnx_out {
                let done = graft::infer::onnx::export_run(&model, &path, &dev)?;
                let describe = |name: &str, kind: &str, shape: &[usize]| {
                    let dims: Vec<String> = std::iter::once("batch".to_string())
                        .chain(shape.iter().map(|d| d.to_string()))
                        .collect();
                    format!("{name} {kind}[{}]", dims.join(", "))
                };
                let inputs: Vec<String> = done.inputs.iter().map(|(n, k, s)| describe(n, k, s)).collect();
                let outputs: Vec<String> = done.outputs.iter().map(|(n, s)| describe(n, "float32", s)).collect();
                eprintln!(
                    "wrote {} (ONNX opset {}, {} operators, {:.1} MB): inputs {}; outputs {}",
                    path.display(),
                    graft::infer::onnx::OPSET,
                    done.operators,
                    done.bytes as f64 / 1e6,
                    inputs.join(", "),
                    outputs.join(", ")
                );
            }
        }
        Command::Embed {
            model,
            input,
            output,
            layer,
            batch_size,
        } => {
            let (n, dim) =
                graft::experiment::embed::embed_file(&model, &input, &output, layer.as_deref(), batch_size, &dev)?;
            eprintln!("wrote {n} embeddings of dimension {dim} to {}", output.display());
        }
        Command::Ood {
            model,
            in_dist,
            ood,
            report,
            seed,
        } => {
            let report = graft::experiment::ood::ood_report(&model, &in_dist, &ood, report.as_deref(), seed, &dev)?;
            print_json(&report)?;
        }
        Command::Bench { serve, minilm } => {
            if !serve {
                return Err(Error::new(
                    "`graft bench` runs as the engine of `bash bench/run.sh`; pass --serve",
                ));
            }
            bench::serve(std::io::stdin().lock(), std::io::stdout().lock(), minilm)?;
        }
        Command::WordVectors {
            vectors,
            analogies,
            similarity,
            nearest,
            top,
        } => {
            let report = graft::experiment::word2vec::word_vectors_report(
                &vectors,
                analogies.as_deref(),
                similarity.as_deref(),
                &nearest,
                top,
            )?;
            print_json(&report)?;
        }
        Command::Fuzz {
            target,
            seconds,
            seed,
            crashes,
        } => {
            let crashes = crashes.unwrap_or_else(|| std::env::temp_dir().join("graft-fuzz-crashes"));
            if !fuzz::run(&target, seconds, seed, &crashes)? {
                return Err(Error::new(format!(
                    "the fuzzer found inputs that break a reader; they are in {}",
                    crashes.display()
                )));
            }
        }
        Command::Doctor {
            experiment,
            out,
            json,
            only,
            seconds,
            seed,
            quiet,
        } => {
            let exp = ExperimentSpec::from_file(&experiment)?;
            let options = graft::experiment::doctor::DoctorOptions {
                seed,
                device: dev,
                only,
                seconds_per_check: seconds,
                // The table is printed as the checks finish: the training checks take a while.
                on_check: (!json).then(|| {
                    Box::new(move |c: &graft::experiment::doctor::Check| {
                        if !quiet {
                            let _ = print_stdout(&c.to_text());
                        }
                    }) as graft::experiment::doctor::OnCheck
                }),
            };
            let diagnosis =
                graft::experiment::doctor::diagnose(&exp, &options).map_err(|e| about_experiment(e, &experiment))?;
            if let Some(dir) = &out {
                let title = experiment
                    .file_stem()
                    .map_or("experiment".into(), |s| s.to_string_lossy());
                graft::experiment::doctor::write_diagnosis(&diagnosis, dir, &title)?;
            }
            if json {
                print_json(&diagnosis.to_json())?;
            } else if quiet {
                print_stdout(&diagnosis.to_text())?;
            } else {
                print_stdout(&format!("{}\n", diagnosis.summary()))?;
            }
            if let Some(dir) = &out {
                eprintln!("wrote {}", dir.join("doctor.html").display());
            }
            let failed = diagnosis.failed();
            if failed > 0 {
                return Err(Error::new(format!(
                    "graft doctor: {failed} of {} checks failed",
                    diagnosis.checks.len()
                )));
            }
        }
        Command::Tune {
            experiment,
            space,
            trials,
            folds,
            out,
            overwrite,
            seed,
            quiet,
        } => {
            let space_spec = graft::experiment::tune::SpaceSpec::from_file(&space)?;
            stop_training_on_signals();
            let options = graft::experiment::tune::TuneOptions {
                seed,
                trials,
                folds,
                out,
                overwrite,
                quiet,
                device: dev,
            };
            // Mistakes in the space (its keys' values, the metric) belong to the space file.
            let result = graft::experiment::tune::tune(&experiment, &space_spec, &options).map_err(|e| {
                match e.location.as_deref() {
                    Some(l) if e.file.is_none() && (l == "metric" || l.starts_with("params")) => e.in_file(&space),
                    _ => about_experiment(e, &experiment),
                }
            })?;
            let ok = result.trials.iter().filter(|t| t.objective.is_some()).count();
            match &result.best {
                Some(best) => {
                    let values: Vec<String> = best
                        .params
                        .iter()
                        .map(|(k, v)| format!("{k} = {}", graft::experiment::tune::show(v)))
                        .collect();
                    eprintln!(
                        "best: trial {} ({}) {} {}; {} of {} trials ran; wrote {}",
                        best.id,
                        if values.is_empty() {
                            "as given".into()
                        } else {
                            values.join(", ")
                        },
                        result.metric,
                        best.objective.map_or("—".into(), graft::report::fmt_number),
                        ok,
                        result.trials.len(),
                        result.out.join("best.toml").display()
                    );
                }
                None => {
                    return Err(Error::new(format!(
                        "every trial failed; see {}",
                        result.out.join("results.csv").display()
                    )));
                }
            }
        }
        Command::Summary { target } => {
            let graph = if target.is_dir() {
                load_model(&target, &dev)?
            } else {
                let exp = ExperimentSpec::from_file(&target)?;
                let mut spec = match &exp.objective {
                    graft::experiment::spec::Objective::Word2Vec(w) => {
                        graft::experiment::word2vec::word2vec_model(&exp, w).in_file(&target)?
                    }
                    _ => exp.model.clone(),
                };
                if spec.needs_input_shape() {
                    let splits = prepare_data(&exp, 42)?;
                    spec = spec.with_data_shape(&splits.train.sample_shape());
                }
                let spec = spec.with_pretrained_sizes(&|p| exp.resolve(p)).in_file(&target)?;
                Graph::build(&spec, &dev).in_file(&target)?
            };
            print_stdout(&format!("{}\n", graph.summary()))?;
        }
    }
    Ok(())
}

/// An error at a key path of the experiment (`data.dataset.csv.target: ...`) names the experiment file too.
fn about_experiment(e: Error, experiment: &std::path::Path) -> Error {
    if e.file.is_none() && e.location.as_deref().is_some_and(|l| !l.starts_with("--")) {
        e.in_file(experiment)
    } else {
        e
    }
}

/// Writes to stdout; a reader that closed it early (`graft eval ... | head -1`) ends the output quietly instead of
/// with a panic.
fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::new(format!("writing to stdout: {e}"))),
        _ => Ok(()),
    }
}

fn print_json(value: &Json) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::new(e.to_string()))?;
    print_stdout(&format!("{text}\n"))
}

/// Keeps freed tensor buffers in the heap instead of returning them to the kernel. The engine allocates a fresh
/// buffer for most op outputs; with glibc's defaults every buffer above 128 KiB is its own `mmap`, so each training
/// step pays page faults and zeroing for memory it just released (measured: the MLP training step 1.65-2x faster,
/// the CNN 1.2-1.3x, the LSTM 1.2-1.35x; see the README's performance section). `GRAFT_MALLOC_DEFAULTS=1` keeps
/// glibc's defaults, to measure the difference.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GRAFT_MALLOC_DEFAULTS").is_none() {
        // SAFETY: mallopt only changes allocator parameters; it is called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    }
}

fn main() -> ExitCode {
    tune_malloc();
    graft::kernels::init_threads();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            // 128 + SIGINT, as a shell reports a program stopped by Ctrl-C.
            if graft::train::interrupt::requested() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// During `graft train`, the first Ctrl-C or SIGTERM asks the training to stop after its batch (writing a
/// resumable checkpoint); a second one ends the process at once. Other commands keep the default: stop at once.
#[cfg(unix)]
fn stop_training_on_signals() {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // SAFETY: the handler only reads and stores an atomic flag or calls `_exit`, both async-signal-safe.
        let registered = unsafe {
            signal_hook::low_level::register(signal, || {
                if graft::train::interrupt::requested() {
                    signal_hook::low_level::exit(130);
                }
                graft::train::interrupt::request();
            })
        };
        if let Err(e) = registered {
            eprintln!("warning: cannot handle signal {signal} ({e}); an interrupted training will not checkpoint");
        }
    }
}

#[cfg(not(unix))]
fn stop_training_on_signals() {}
