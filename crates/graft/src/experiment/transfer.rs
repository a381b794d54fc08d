//! Transfer learning by strategy, and choosing the strategy from the data: `[train] transfer = "auto"`.
//!
//! The practitioners' rule of thumb (CS231n's "transfer learning" notes, ULMFiT, Yosinski et al. 2014): with few
//! examples, train a classifier on the frozen network's features — fine-tuning would overfit; with more, fine-tune
//! the top blocks; with many examples of data unlike the pretraining data, fine-tune all of it, lower layers at
//! lower rates. graft measures the two quantities the rule speaks of — examples per class and the distance from the
//! pretraining domain ([`crate::pretrained::shift`]) — applies the rule ([`decide`]), prints and records why, and
//! trains the chosen strategy's recipe ([`apply`]). A strategy can also be named outright.
//!
//! ```toml
//! [train]
//! transfer = "auto"                               # or "features", "fine_tune_top", "fine_tune_all"
//! # transfer = { fine_tune_top = { blocks = 3 } }
//! # transfer = { auto = { budget_minutes = 10 } }   # also try the runner-up briefly, keep the better
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::experiment::spec::TrainSpec;
use crate::layers::LayerSpec;
use crate::model::Graph;
use crate::model::backbone::Architecture;
use crate::model::groups::{GroupPatterns, LayerGroupsSpec};
use crate::train::callbacks::EarlyStoppingSpec;
use crate::train::optim::OptimizerSpec;
use crate::train::schedule::ScheduleSpec;

/// What trains, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The pretrained part frozen and its outputs cached; only the layers after it train.
    Features,
    /// The layers after the pretrained part and its top `blocks` blocks, as ULMFiT layer groups: discriminative
    /// rates (÷2.6 per group down), gradual unfreezing, a slanted triangular schedule.
    FineTuneTop { blocks: usize },
    /// Everything, in four groups (the head, then the pretrained blocks in three slices top to bottom), with the same
    /// rates, unfreezing and schedule.
    FineTuneAll,
}

/// `[train] transfer`.
#[derive(Debug, Clone, PartialEq)]
pub enum TransferSpec {
    /// Choose from the data; with a budget, also train the runner-up briefly and keep the better.
    Auto {
        budget_minutes: Option<f64>,
    },
    Fixed(Strategy),
}

/// ULMFiT's factor between the rates of neighbouring layer groups.
const LR_DECAY: f64 = 2.6;
/// The rule's thresholds on the smallest class's training examples.
pub const FEW_PER_CLASS: usize = 100;
pub const MANY_PER_CLASS: usize = 1000;
/// The rule's threshold on a CNN's domain shift (mean per-feature KL divergence, nats) above which images count as
/// unlike ImageNet.
pub const FAR_SHIFT: f64 = 0.2;

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Features => "features",
            Strategy::FineTuneTop { .. } => "fine_tune_top",
            Strategy::FineTuneAll => "fine_tune_all",
        }
    }

    /// `features`, `fine_tune_top (2 blocks)`, `fine_tune_all`.
    pub fn describe(self) -> String {
        match self {
            Strategy::FineTuneTop { blocks } => format!("fine_tune_top ({blocks} blocks)"),
            s => s.name().to_string(),
        }
    }
}

const NAMES: [&str; 4] = ["auto", "features", "fine_tune_top", "fine_tune_all"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    budget_minutes: Option<f64>,
    blocks: Option<usize>,
}

impl TransferSpec {
    fn from_parts(name: &str, options: Options) -> std::result::Result<Self, String> {
        let only = |allowed: &str, given: bool, key: &str| {
            if given {
                Err(format!("`{key}` is an option of {allowed}, not of \"{name}\""))
            } else {
                Ok(())
            }
        };
        match name {
            "auto" => {
                only("fine_tune_top", options.blocks.is_some(), "blocks")?;
                Ok(TransferSpec::Auto {
                    budget_minutes: options.budget_minutes,
                })
            }
            "features" | "fine_tune_all" => {
                only("auto", options.budget_minutes.is_some(), "budget_minutes")?;
                only("fine_tune_top", options.blocks.is_some(), "blocks")?;
                Ok(TransferSpec::Fixed(if name == "features" {
                    Strategy::Features
                } else {
                    Strategy::FineTuneAll
                }))
            }
            "fine_tune_top" => {
                only("auto", options.budget_minutes.is_some(), "budget_minutes")?;
                Ok(TransferSpec::Fixed(Strategy::FineTuneTop {
                    blocks: options.blocks.unwrap_or(2),
                }))
            }
            other => Err(format!(
                "unknown transfer strategy \"{other}\"{}; expected one of {}",
                graft_data::suggest::hint(other, NAMES),
                NAMES.map(|n| format!("\"{n}\"")).join(", ")
            )),
        }
    }

    /// Settings no run can use, and keys of `[train]` the strategy sets itself.
    pub fn check(&self, train: &TrainSpec) -> Result<()> {
        match self {
            TransferSpec::Auto {
                budget_minutes: Some(m),
            } if !(m.is_finite() && *m > 0.0) => {
                return Err(Error::new(format!(
                    "budget_minutes must be a positive number, found {m}"
                )));
            }
            TransferSpec::Fixed(Strategy::FineTuneTop { blocks: 0 }) => {
                return Err(Error::new("blocks must be at least 1"));
            }
            _ => {}
        }
        let set = [
            ("freeze", !train.freeze.is_empty()),
            ("cache_features", train.cache_features),
            ("layer_groups", train.layer_groups.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, given)| *given) {
            return Err(Error::new(format!(
                "transfer decides freeze, cache_features and layer_groups itself; remove `{key}` from [train], or \
                 remove transfer and set them by hand"
            )));
        }
        Ok(())
    }
}

impl Serialize for TransferSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut table = BTreeMap::new();
        match self {
            TransferSpec::Auto { budget_minutes: None } => return s.serialize_str("auto"),
            TransferSpec::Auto {
                budget_minutes: Some(m),
            } => {
                table.insert("auto", json!({ "budget_minutes": m }));
            }
            TransferSpec::Fixed(Strategy::FineTuneTop { blocks }) if *blocks != 2 => {
                table.insert("fine_tune_top", json!({ "blocks": blocks }));
            }
            TransferSpec::Fixed(strategy) => return s.serialize_str(strategy.name()),
        }
        table.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TransferSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TransferSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\", \"features\", \"fine_tune_top\", \"fine_tune_all\", or a table such as { auto = { budget_minutes = 10 } }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<TransferSpec, E> {
                TransferSpec::from_parts(v, Options::default()).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<TransferSpec, A::Error> {
                use serde::de::Error as _;
                let Some(name) = map.next_key::<String>()? else {
                    return Err(A::Error::custom(
                        "name one strategy, e.g. { auto = { budget_minutes = 10 } }",
                    ));
                };
                let options: Options = map.next_value()?;
                if map.next_key::<String>()?.is_some() {
                    return Err(A::Error::custom("name one strategy only"));
                }
                TransferSpec::from_parts(&name, options).map_err(A::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The pretrained part of a model that a strategy transfers: its blocks as parameter-name patterns, top first.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainedPart {
    /// `bert`, `efficientnet_lite0` or `resnet18`.
    pub kind: &'static str,
    /// The node that ends the part (a BERT layer's own node; a backbone's last node).
    pub output: usize,
    /// Every node of the part.
    pub nodes: Vec<String>,
    /// Its blocks from the top down, each a list of parameter-name patterns.
    pub blocks: Vec<Vec<String>>,
    /// The patterns that freeze all of it.
    pub freeze: Vec<String>,
    /// The nodes with parameters outside the part: what every strategy trains.
    pub head: Vec<String>,
}

/// The one pretrained part of `model` (a `bert` layer or a CNN backbone with `pretrained` weights).
pub fn pretrained_part(model: &Graph) -> Result<PretrainedPart> {
    let mut parts = vec![];
    for (i, node) in model.nodes.iter().enumerate() {
        if let LayerSpec::Bert(c) = &node.spec
            && c.pretrained.is_some()
            && node.layer_of == i
        {
            let layers = c.config.as_ref().map_or(0, |c| c.num_hidden_layers);
            let name = &node.name;
            let mut blocks: Vec<Vec<String>> = (0..layers)
                .rev()
                .map(|l| vec![format!("{name}.encoder.layer.{l}")])
                .collect();
            match blocks.last_mut() {
                Some(bottom) => bottom.push(format!("{name}.embeddings")),
                None => blocks.push(vec![format!("{name}.embeddings")]),
            }
            parts.push(("bert", i, vec![name.clone()], blocks, vec![name.clone()]));
        }
    }
    for b in model.spec.backbones.iter().filter(|b| b.config.pretrained.is_some()) {
        let p = &b.prefix;
        let exists = |n: &str| b.nodes.iter().any(|m| m == n);
        let mut blocks: Vec<Vec<String>> = match b.architecture {
            Architecture::EfficientnetLite0 => {
                let mut blocks = vec![vec![
                    format!("{p}_conv_head"),
                    format!("{p}_bn1"),
                    format!("{p}_blocks.15"),
                ]];
                blocks.extend((1..15).rev().map(|k| vec![format!("{p}_blocks.{k}")]));
                blocks.push(vec![
                    format!("{p}_blocks.0"),
                    format!("{p}_conv_stem"),
                    format!("{p}_bn0"),
                ]);
                blocks
            }
            Architecture::Resnet18 => {
                let mut blocks: Vec<Vec<String>> = (1..=4)
                    .rev()
                    .flat_map(|stage| [1, 0].map(|k| vec![format!("{p}layer{stage}.{k}")]))
                    .collect();
                if let Some(bottom) = blocks.last_mut() {
                    bottom.extend([format!("{p}conv1"), format!("{p}bn1")]);
                }
                blocks
            }
        };
        let classifier = format!("{p}{}", b.architecture.classifier().trim_end_matches('.'));
        if exists(&classifier) {
            blocks[0].insert(0, classifier);
        }
        let output = b
            .nodes
            .last()
            .and_then(|last| model.nodes.iter().position(|n| &n.name == last))
            .ok_or_else(|| Error::new("the backbone's nodes are missing from the model"))?;
        let freeze = blocks.iter().flatten().cloned().collect();
        parts.push((b.architecture.kind(), output, b.nodes.clone(), blocks, freeze));
    }
    let (kind, output, nodes, blocks, freeze) = match parts.len() {
        1 => parts.remove(0),
        0 => {
            return Err(Error::new(
                "the model has no pretrained part to transfer: give a `bert` layer or an `efficientnet_lite0` / \
                 `resnet18` entry a `pretrained` path",
            ));
        }
        n => {
            return Err(Error::new(format!(
                "the model has {n} pretrained parts; transfer handles one (set freeze and layer_groups by hand for \
                 several)"
            )));
        }
    };
    let counts = crate::model::summary::parameter_counts(model);
    let head: Vec<String> = model
        .nodes
        .iter()
        .filter(|n| !nodes.contains(&n.name) && counts.get(&n.name).is_some_and(|(t, f)| t + f > 0))
        .map(|n| n.name.clone())
        .collect();
    if head.is_empty() {
        return Err(Error::new(
            "nothing after the pretrained part has weights to train; add a layer after it (e.g. a dense output)",
        ));
    }
    Ok(PretrainedPart {
        kind,
        output,
        nodes,
        blocks,
        freeze,
        head,
    })
}

/// What the rule looks at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// Training examples (after the validation and test splits).
    pub train_examples: usize,
    /// Training examples per class (classification).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub examples_per_class: BTreeMap<String, usize>,
    /// The smallest class's count (the number of examples for other tasks).
    pub smallest_class: usize,
    /// Mean per-feature KL divergence from the pretraining data's features, in nats.
    pub domain_shift: f64,
    /// What the shift compared: "256 training texts against 320 reference sentences", ...
    pub shift_measured_on: String,
    /// Whether the pretrained part is a text encoder (else a CNN).
    #[serde(skip)]
    pub text: bool,
}

/// The rule's answer: a strategy and the branch that chose it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub strategy: Strategy,
    pub rule: String,
}

/// The rule, on the kind of pretrained part, the smallest class's examples n and the domain shift s.
///
/// - A CNN backbone: the practitioners' rule of thumb — n < 100 → features; 100 ≤ n < 1,000 → the top blocks when
///   the images lie far from ImageNet (s > 0.2), features otherwise; n ≥ 1,000 → everything when far, the top blocks
///   otherwise. (EfficientNet-Lite0's shift: four natural photos 0.10 at 224×224; Fashion-MNIST 0.35 at 224, 0.40 at
///   64×64, where the photos too read 0.33 — small images are far from what the network saw.)
/// - A text encoder (BERT family): everything, at any size, with ULMFiT's recipe (discriminative rates, gradual
///   unfreezing, slanted triangular rates). Full fine-tuning beats frozen features for BERT-family encoders (Peters,
///   Ruder & Smith 2019, "To Tune or Not to Tune?"), and ULMFiT fine-tunes all layers from 100 labelled examples up;
///   this crate's grid found it best, or within 0.4 points of the best, from 13 examples per class to 5,046 texts
///   on two tasks (README). The textbook table, applied to MiniLM, chose frozen features where they lost by up to 9.5
///   points.
pub fn decide(e: &Evidence) -> Decision {
    let (n, s) = (e.smallest_class, e.domain_shift);
    if e.text {
        return Decision {
            strategy: Strategy::FineTuneAll,
            rule: format!(
                "a pretrained text encoder ({n} examples in the smallest class, domain shift {s:.2}): fine-tune all \
                 of it with discriminative rates and gradual unfreezing, which beats frozen features at every size"
            ),
        };
    }
    let far = s > FAR_SHIFT;
    let shift = format!("domain shift {s:.2} {} {FAR_SHIFT}", if far { ">" } else { "≤" });
    let (strategy, rule) = if n < FEW_PER_CLASS {
        (
            Strategy::Features,
            format!(
                "{n} examples in the smallest class < {FEW_PER_CLASS}: too few to fine-tune, train on frozen features"
            ),
        )
    } else if n < MANY_PER_CLASS {
        if far {
            (
                Strategy::FineTuneTop { blocks: 2 },
                format!(
                    "{FEW_PER_CLASS} ≤ {n} examples in the smallest class < {MANY_PER_CLASS} and {shift}: adapt the top blocks"
                ),
            )
        } else {
            (
                Strategy::Features,
                format!(
                    "{FEW_PER_CLASS} ≤ {n} examples in the smallest class < {MANY_PER_CLASS} and {shift}: the pretrained features fit"
                ),
            )
        }
    } else if far {
        (
            Strategy::FineTuneAll,
            format!("{n} examples in the smallest class ≥ {MANY_PER_CLASS} and {shift}: fine-tune everything"),
        )
    } else {
        (
            Strategy::FineTuneTop { blocks: 2 },
            format!("{n} examples in the smallest class ≥ {MANY_PER_CLASS} and {shift}: fine-tune the top blocks"),
        )
    };
    Decision { strategy, rule }
}

/// The runner-up of a decision, which `budget_minutes` also tries: the neighbouring strategy on the side of the
/// threshold the evidence lies closest to.
pub fn runner_up(decision: &Decision, e: &Evidence) -> Strategy {
    match decision.strategy {
        Strategy::Features => Strategy::FineTuneTop { blocks: 2 },
        Strategy::FineTuneAll => Strategy::FineTuneTop { blocks: 2 },
        Strategy::FineTuneTop { .. } => {
            if e.smallest_class < MANY_PER_CLASS {
                Strategy::Features
            } else {
                Strategy::FineTuneAll
            }
        }
    }
}

/// Measures the evidence on a built model with its pretrained weights: class counts of `train`, and the domain shift
/// on up to 256 training examples (seeded choice).
pub fn measure(
    model: &Graph,
    part: &PretrainedPart,
    train: &Dataset,
    preprocessor: &crate::data::prepare::Preprocessor,
    seed: u64,
) -> Result<Evidence> {
    let mut examples_per_class = BTreeMap::new();
    let smallest_class = match (train.labels(), train.class_names()) {
        (Some(labels), Some(names)) => {
            let mut counts = vec![0usize; names.len()];
            for &l in labels {
                counts[l] += 1;
            }
            for (name, &c) in names.iter().zip(&counts) {
                examples_per_class.insert(name.clone(), c);
            }
            counts.iter().copied().filter(|&c| c > 0).min().unwrap_or(0)
        }
        _ => train.len(),
    };
    let sample = sample_rows(train.len(), 256, seed);
    let target = train.select(&sample);
    let (domain_shift, shift_measured_on) = if part.kind == "bert" {
        let crate::data::prepare::Preprocessor::PretrainedText(tokenizer) = preprocessor else {
            return Err(Error::new(
                "the bert layer's data is not tokenized by a pretrained tokenizer; give the text source \
                 `tokenizer = { pretrained = \"...\" }`",
            ));
        };
        let sentences = crate::pretrained::shift::reference_sentences();
        let ids = tokenizer.transform(&sentences)?;
        let reference = Dataset::new(ids, None)?;
        let shift = crate::pretrained::shift::encoder_shift(model, part.output, &target, &reference)?;
        (
            shift,
            format!(
                "the encoder's output on {} training texts against {} reference sentences of general English",
                target.len(),
                sentences.len()
            ),
        )
    } else {
        let (shift, layers) = crate::pretrained::shift::batch_norm_shift(model, &part.nodes, &target)?;
        (
            shift,
            format!(
                "{} training images at the inputs of {layers} batch-norm layers against their ImageNet running statistics",
                target.len()
            ),
        )
    };
    Ok(Evidence {
        text: part.kind == "bert",
        train_examples: train.len(),
        examples_per_class,
        smallest_class,
        domain_shift,
        shift_measured_on,
    })
}

/// Up to `k` of `n` row indices, drawn without replacement by `seed`, in increasing order.
fn sample_rows(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rows = crate::experiment::data::sample_rows(n, k, seed, b"transfer");
    rows.sort_unstable();
    rows
}

/// `exp` with its `transfer` resolved into ordinary `[train]` settings (freeze, cache_features, layer groups and the
/// recipe), and the record of the choice for `metrics.json` and the report. Prints the choice unless quiet.
pub fn resolve(
    exp: &crate::experiment::ExperimentSpec,
    spec: &TransferSpec,
    splits: &crate::experiment::Splits,
    opts: &crate::experiment::RunOptions,
) -> Result<(crate::experiment::ExperimentSpec, Json)> {
    let started = std::time::Instant::now();
    let mut plain = exp.clone();
    plain.train.transfer = None;
    let model = crate::experiment::build::build_model(&plain, splits, &opts.device, opts.seed, true)?;
    let part = pretrained_part(&model).map_err(|e| e.at("train.transfer"))?;
    let mut record = serde_json::Map::new();
    let strategy = match spec {
        TransferSpec::Fixed(strategy) => {
            record.insert("chosen_by".into(), json!("experiment file"));
            *strategy
        }
        TransferSpec::Auto { budget_minutes } => {
            let evidence = measure(&model, &part, &splits.train, &splits.preprocessor, opts.seed)?;
            let decision = decide(&evidence);
            record.insert("chosen_by".into(), json!("rule"));
            record.insert("rule".into(), json!(decision.rule));
            record.insert("rule_choice".into(), json!(decision.strategy.name()));
            record.insert("evidence".into(), serde_json::to_value(&evidence).unwrap_or(Json::Null));
            if !opts.quiet {
                eprintln!(
                    "transfer = auto: {} training examples (smallest class {}), domain shift {:.3} ({})",
                    evidence.train_examples, evidence.smallest_class, evidence.domain_shift, evidence.shift_measured_on
                );
                eprintln!("transfer = auto: {} → {}", decision.rule, decision.strategy.describe());
            }
            match budget_minutes {
                None => decision.strategy,
                Some(minutes) => {
                    let candidates = [decision.strategy, runner_up(&decision, &evidence)];
                    let (winner, trials) = try_candidates(exp, candidates, *minutes, splits, opts)?;
                    record.insert("chosen_by".into(), json!("budget trials on the validation split"));
                    record.insert("trials".into(), json!(trials));
                    winner
                }
            }
        }
    };
    drop(model);
    let mut resolved = plain;
    resolved.train = apply(
        &exp.train,
        strategy,
        &part,
        splits.train.len(),
        splits.validation.is_some(),
    );
    record.insert("strategy".into(), json!(strategy.name()));
    if let Strategy::FineTuneTop { blocks } = strategy {
        record.insert("blocks".into(), json!(blocks));
    }
    record.insert("pretrained".into(), json!(part.kind));
    record.insert("recipe".into(), recipe_json(&resolved.train));
    record.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
    if !opts.quiet {
        let r = &record["recipe"];
        eprintln!(
            "transfer: {} of the pretrained {} — {} epochs at lr {}",
            strategy.describe(),
            part.kind,
            r["epochs"],
            r["lr"]
        );
    }
    Ok((resolved, Json::Object(record)))
}

/// What `transfer` would do for `exp` with this seed — the record [`resolve`] makes, budget trials left out —
/// without training anything or writing a file (`graft train --plan`).
pub fn plan(exp: &crate::experiment::ExperimentSpec, seed: u64, device: &burn::prelude::Device) -> Result<Json> {
    let spec = match &exp.train.transfer {
        Some(TransferSpec::Auto { .. }) => TransferSpec::Auto { budget_minutes: None },
        Some(fixed) => fixed.clone(),
        None => {
            return Err(Error::new("the experiment sets no `transfer`, so there is nothing to plan").at("train"));
        }
    };
    let splits = crate::experiment::prepare_fold(exp, seed, None, None)?;
    let opts = crate::experiment::RunOptions {
        seed,
        quiet: true,
        device: device.clone(),
        out: std::path::PathBuf::new(),
        overwrite: false,
        test_rows: None,
        resume: false,
    };
    Ok(resolve(exp, &spec, &splits, &opts)?.1)
}

/// Trains each candidate for half the budget (its own recipe, stopped at the first epoch end past the time) in
/// `OUT/transfer-trials/<strategy>` and keeps the one with the lower best validation loss.
fn try_candidates(
    exp: &crate::experiment::ExperimentSpec,
    candidates: [Strategy; 2],
    budget_minutes: f64,
    splits: &crate::experiment::Splits,
    opts: &crate::experiment::RunOptions,
) -> Result<(Strategy, Vec<Json>)> {
    if splits.validation.is_none() {
        return Err(Error::new(
            "budget_minutes compares strategies on the validation split, and the data has none; give              `split = { validation = 0.15 }` or leave budget_minutes out",
        )
        .at("train.transfer"));
    }
    let mut trials = vec![];
    let mut best: Option<(f64, Strategy)> = None;
    for strategy in candidates {
        let mut trial = exp.clone();
        trial.train.transfer = Some(TransferSpec::Fixed(strategy));
        trial.train.callbacks.time_limit = Some(crate::train::callbacks::TimeLimitSpec {
            minutes: budget_minutes / 2.0,
        });
        let out = opts.out.join("transfer-trials").join(strategy.name());
        if !opts.quiet {
            eprintln!(
                "transfer = auto: trying {} for up to {:.1} minutes ({})",
                strategy.describe(),
                budget_minutes / 2.0,
                out.display()
            );
        }
        let started = std::time::Instant::now();
        let result = crate::experiment::run_experiment(
            &trial,
            &crate::experiment::RunOptions {
                seed: opts.seed,
                quiet: true,
                device: opts.device.clone(),
                out: out.clone(),
                overwrite: true,
                test_rows: opts.test_rows.clone(),
                resume: false,
            },
        )?;
        let val_loss = result
            .history
            .iter()
            .filter_map(|e| e.get("val_loss").and_then(Json::as_f64))
            .fold(f64::INFINITY, f64::min);
        if !opts.quiet {
            eprintln!(
                "transfer = auto: {} reached val_loss {val_loss:.4} in {} epochs",
                strategy.describe(),
                result.history.len()
            );
        }
        trials.push(json!({
            "strategy": strategy.name(),
            "best_val_loss": val_loss,
            "epochs": result.history.len(),
            "seconds": started.elapsed().as_secs_f64(),
            "run": out.display().to_string(),
        }));
        if best.is_none_or(|(b, _)| val_loss < b) {
            best = Some((val_loss, strategy));
        }
    }
    Ok((best.map(|(_, s)| s).unwrap_or(candidates[0]), trials))
}

/// Base learning rates of the recipes (Adam): the head on cached features, and the top group when fine-tuning
/// (the fine-food fine-tuning example's rate; lower groups divide it by 2.6 each).
const FEATURES_LR: f64 = 1e-3;
const FINE_TUNE_LR: f64 = 3e-4;

/// `train` with the settings of `strategy` for `part`: what is frozen or cached, the layer groups, and — where
/// `[train]` leaves them out — epochs, the optimizer's rate, the schedule and early stopping. Fine-tuning runs at
/// least ~150 optimizer steps (more epochs on small data, at most 20) and at least one epoch per group.
pub fn apply(
    train: &TrainSpec,
    strategy: Strategy,
    part: &PretrainedPart,
    train_rows: usize,
    validation: bool,
) -> TrainSpec {
    let mut t = train.clone();
    let steps_per_epoch = train_rows.div_ceil(t.batch_size.max(1)).max(1);
    let groups = |blocks: Vec<Vec<String>>| {
        let mut groups = vec![GroupPatterns::Many(part.head.clone())];
        groups.extend(blocks.into_iter().map(GroupPatterns::Many));
        LayerGroupsSpec {
            groups,
            lr_decay: LR_DECAY,
            gradual_unfreezing: true,
        }
    };
    match strategy {
        Strategy::Features => {
            t.freeze = part.freeze.clone();
            t.cache_features = true;
            t.epochs.get_or_insert(30);
            t.optimizer.get_or_insert(OptimizerSpec::adam(FEATURES_LR));
            if validation && t.callbacks.early_stopping.is_none() {
                t.callbacks.early_stopping = Some(EarlyStoppingSpec {
                    patience: 5,
                    ..EarlyStoppingSpec::default()
                });
            }
        }
        Strategy::FineTuneTop { .. } | Strategy::FineTuneAll => {
            let spec = match strategy {
                Strategy::FineTuneTop { blocks } => groups(part.blocks.iter().take(blocks).cloned().collect()),
                _ => groups(thirds(&part.blocks)),
            };
            let min_epochs = spec.groups.len().max(3);
            t.epochs
                .get_or_insert((150usize.div_ceil(steps_per_epoch)).clamp(min_epochs, 20.max(min_epochs)));
            t.optimizer.get_or_insert(OptimizerSpec::adam(FINE_TUNE_LR));
            if t.schedule == ScheduleSpec::default() {
                // ULMFiT's 10% warm-up, but at least one rising step in very short runs.
                let steps = t.epochs() * steps_per_epoch;
                t.schedule = ScheduleSpec::SlantedTriangular {
                    cut_frac: (0.1f64).max(1.5 / steps as f64).min(0.5),
                    ratio: 32.0,
                };
            }
            t.layer_groups = Some(spec);
        }
    }
    t.transfer = None;
    t
}

/// The blocks (top first) in three contiguous slices of near-equal size, top first.
fn thirds(blocks: &[Vec<String>]) -> Vec<Vec<String>> {
    let n = blocks.len();
    let slices = n.min(3);
    (0..slices)
        .map(|s| {
            let (from, to) = (s * n / slices, (s + 1) * n / slices);
            blocks[from..to].iter().flatten().cloned().collect()
        })
        .collect()
}

/// The recipe's settings that a reader of the record wants: epochs, rate, what trains.
pub fn recipe_json(t: &TrainSpec) -> Json {
    let groups = t.layer_groups.as_ref().map(|g| {
        g.groups
            .iter()
            .map(|p| match p {
                GroupPatterns::One(s) => json!([s]),
                GroupPatterns::Many(v) => json!(v),
            })
            .collect::<Vec<_>>()
    });
    json!({
        "epochs": t.epochs(),
        "lr": t.optimizer().lr(),
        "cache_features": t.cache_features,
        "frozen": if t.freeze.is_empty() { Json::Null } else { json!(t.freeze) },
        "layer_groups": groups,
        "schedule": serde_json::to_value(&t.schedule).unwrap_or(Json::Null),
        "early_stopping": t.callbacks.early_stopping.is_some(),
    })
}

/// The report's "Transfer learning" table, from the record [`resolve`] made.
pub fn report_section(record: &Json) -> crate::report::Section {
    let text = |v: &Json| match v {
        Json::String(s) => s.clone(),
        Json::Null => "—".into(),
        Json::Number(n) => n.as_f64().map_or(n.to_string(), |f| {
            if f.fract() == 0.0 {
                format!("{f:.0}")
            } else {
                format!("{f:.4}")
            }
        }),
        other => other.to_string(),
    };
    let mut rows: Vec<(String, String)> = vec![];
    let row = |rows: &mut Vec<(String, String)>, name: &str, value: &Json| {
        if !value.is_null() {
            rows.push((name.to_string(), text(value)));
        }
    };
    row(&mut rows, "strategy", &record["strategy"]);
    row(&mut rows, "blocks fine-tuned", &record["blocks"]);
    row(&mut rows, "pretrained part", &record["pretrained"]);
    row(&mut rows, "chosen by", &record["chosen_by"]);
    row(&mut rows, "rule that fired", &record["rule"]);
    let evidence = &record["evidence"];
    row(&mut rows, "training examples", &evidence["train_examples"]);
    row(&mut rows, "smallest class", &evidence["smallest_class"]);
    row(
        &mut rows,
        "domain shift (mean KL per feature, nats)",
        &evidence["domain_shift"],
    );
    row(&mut rows, "shift measured on", &evidence["shift_measured_on"]);
    if let Some(trials) = record["trials"].as_array() {
        for t in trials {
            rows.push((
                format!("trial: {}", text(&t["strategy"])),
                format!(
                    "best val_loss {} after {} epochs ({} s)",
                    text(&t["best_val_loss"]),
                    text(&t["epochs"]),
                    text(&t["seconds"])
                ),
            ));
        }
    }
    let recipe = &record["recipe"];
    row(&mut rows, "epochs", &recipe["epochs"]);
    row(&mut rows, "learning rate (top group)", &recipe["lr"]);
    row(&mut rows, "decision time (s)", &record["seconds"]);
    crate::report::Section {
        title: "Transfer learning".into(),
        text: "How the pretrained part was transferred, and why (`[train] transfer`).".into(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(smallest: usize, shift: f64) -> Evidence {
        Evidence {
            text: false,
            train_examples: smallest * 2,
            examples_per_class: BTreeMap::new(),
            smallest_class: smallest,
            domain_shift: shift,
            shift_measured_on: String::new(),
        }
    }

    #[test]
    fn the_rule_follows_size_first_then_shift() {
        let top = Strategy::FineTuneTop { blocks: 2 };
        for (n, s, want) in [
            (10, 0.1, Strategy::Features),
            (99, 5.0, Strategy::Features),
            (100, 0.1, Strategy::Features),
            (999, 0.2, Strategy::Features),
            (100, 0.21, top),
            (999, 3.0, top),
            (1000, 0.05, top),
            (5000, 0.2, top),
            (1000, 0.35, Strategy::FineTuneAll),
        ] {
            let d = decide(&evidence(n, s));
            assert_eq!(d.strategy, want, "n = {n}, shift = {s}: {}", d.rule);
            assert!(d.rule.contains(&n.to_string()), "{}", d.rule);
        }
        assert!(decide(&evidence(10, 0.1)).rule.contains("too few"));
        assert!(decide(&evidence(1000, 1.5)).rule.contains("domain shift 1.50 > 0.2"));
        // A text encoder is fine-tuned whole at any size.
        for (n, s) in [(5, 0.1), (500, 2.0), (5000, 0.01)] {
            let d = decide(&Evidence {
                text: true,
                ..evidence(n, s)
            });
            assert_eq!(d.strategy, Strategy::FineTuneAll, "{}", d.rule);
            assert!(d.rule.contains("text encoder"), "{}", d.rule);
        }
    }

    #[test]
    fn the_runner_up_is_the_neighbour_across_the_nearest_threshold() {
        let top = Strategy::FineTuneTop { blocks: 2 };
        let runner = |n, s| runner_up(&decide(&evidence(n, s)), &evidence(n, s));
        assert_eq!(runner(20, 0.1), top);
        assert_eq!(runner(5000, 2.0), top);
        assert_eq!(runner(500, 2.0), Strategy::Features);
        assert_eq!(runner(5000, 0.1), Strategy::FineTuneAll);
    }

    #[test]
    fn strategies_read_and_write_as_toml() {
        #[derive(Deserialize, Serialize)]
        struct T {
            transfer: TransferSpec,
        }
        let read = |s: &str| toml::from_str::<T>(&format!("transfer = {s}")).map(|t| t.transfer);
        assert_eq!(read("\"auto\"").unwrap(), TransferSpec::Auto { budget_minutes: None });
        assert_eq!(
            read("{ auto = { budget_minutes = 5 } }").unwrap(),
            TransferSpec::Auto {
                budget_minutes: Some(5.0)
            }
        );
        assert_eq!(read("\"features\"").unwrap(), TransferSpec::Fixed(Strategy::Features));
        assert_eq!(
            read("\"fine_tune_top\"").unwrap(),
            TransferSpec::Fixed(Strategy::FineTuneTop { blocks: 2 })
        );
        assert_eq!(
            read("{ fine_tune_top = { blocks = 3 } }").unwrap(),
            TransferSpec::Fixed(Strategy::FineTuneTop { blocks: 3 })
        );
        assert_eq!(
            read("\"fine_tune_all\"").unwrap(),
            TransferSpec::Fixed(Strategy::FineTuneAll)
        );
        for spec in [
            TransferSpec::Auto { budget_minutes: None },
            TransferSpec::Auto {
                budget_minutes: Some(2.5),
            },
            TransferSpec::Fixed(Strategy::FineTuneTop { blocks: 4 }),
            TransferSpec::Fixed(Strategy::FineTuneAll),
        ] {
            let text = toml::to_string(&T { transfer: spec.clone() }).unwrap();
            assert_eq!(toml::from_str::<T>(&text).unwrap().transfer, spec, "{text}");
        }
        let e = read("\"fine_tune\"").unwrap_err().to_string();
        assert!(
            e.contains("unknown transfer strategy \"fine_tune\"") && e.contains("fine_tune_top"),
            "{e}"
        );
        let e = read("{ features = { budget_minutes = 3 } }").unwrap_err().to_string();
        assert!(e.contains("`budget_minutes` is an option of auto"), "{e}");
        let e = read("{ auto = { budget = 3 } }").unwrap_err().to_string();
        assert!(e.contains("budget"), "{e}");
    }

    #[test]
    fn blocks_split_into_three_slices_top_first() {
        let blocks: Vec<Vec<String>> = (0..7).rev().map(|k| vec![format!("b{k}")]).collect();
        let t = thirds(&blocks);
        assert_eq!(t, vec![vec!["b6", "b5"], vec!["b4", "b3"], vec!["b2", "b1", "b0"]]);
        assert_eq!(thirds(&blocks[..2]).len(), 2);
    }
}
