//! `[train] introspect`: a look inside the network, opt-in because each costs time. `layer_stats = true` records
//! every layer's weight norm, gradient size and activation spread at each epoch's end on a fixed batch of training
//! rows; `projection = { layer = "hidden" }` projects that layer's outputs for held-out rows to 2-D (PCA, t-SNE or
//! both) coloured by class; `attention = { examples = 3 }` draws a BERT encoder's attention for the first test
//! texts. Charts go into the report, numbers into `metrics.json` under `introspection`.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use burn::module::Module;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};

use crate::data::prepare::Preprocessor;
use crate::data::{Batch, Dataset, Targets, gather};
use crate::error::{Context, Error, Result};
use crate::layers::Layer;
use crate::model::Graph;
use crate::model::graph::Source;
use crate::report::Chart;
use crate::report::introspection::{LayerEpoch, attention_chart, layer_stats_charts, projection_chart};
use crate::task::head::TaskHead;
use crate::train::callbacks::{Callback, Control, Logs};
use crate::train::diagnostics::{LayerStats, layer_statistics};

/// `[train] introspect = { ... }`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectSpec {
    /// Per-layer weight, gradient and activation statistics at every epoch's end (one extra forward and backward
    /// pass on 256 training rows per epoch).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub layer_stats: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<ProjectionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<AttentionSpec>,
}

/// `projection = { layer = "hidden", method = "both", rows = 1000 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSpec {
    /// The layer (node name) whose outputs are projected.
    pub layer: String,
    #[serde(default)]
    pub method: ProjectionMethod,
    /// Held-out rows to project (the test set's first ones, else validation's).
    #[serde(default = "thousand")]
    pub rows: usize,
}

fn thousand() -> usize {
    1000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionMethod {
    Pca,
    Tsne,
    #[default]
    Both,
}

/// `attention = { examples = 3 }`: maps for the first test texts of the model's BERT encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionSpec {
    #[serde(default = "three")]
    pub examples: usize,
}

fn three() -> usize {
    3
}

impl IntrospectSpec {
    /// Mistakes found before training: a projected layer the model lacks, attention without an encoder.
    pub fn check(&self, model: &Graph) -> Result<()> {
        if let Some(p) = &self.projection {
            model.node_index(&p.layer).at("train.introspect.projection.layer")?;
            if p.rows < 3 {
                return Err(Error::new(format!("rows must be at least 3, found {}", p.rows))
                    .at("train.introspect.projection.rows"));
            }
        }
        if self.attention.is_some() && bert_node(model).is_none() && attention_nodes(model).is_empty() {
            return Err(Error::new(
                "attention maps are drawn for `bert`, `multi_head_attention` and `transformer_encoder` layers; this \
                 model has none",
            )
            .at("train.introspect.attention"));
        }
        Ok(())
    }
}

/// The node of a `bert` layer that reads a model input directly.
fn bert_node(model: &Graph) -> Option<usize> {
    model.nodes.iter().position(|n| {
        matches!(n.layer, Some(Layer::Bert(..))) && n.sources.iter().any(|s| matches!(s, Source::Input(_)))
    })
}

/// The nodes that run an attention or transformer layer (their own or a shared one).
fn attention_nodes(model: &Graph) -> Vec<usize> {
    (0..model.nodes.len())
        .filter(|&i| {
            matches!(
                model.nodes[model.nodes[i].layer_of].layer,
                Some(Layer::Attention(_) | Layer::Transformer(_))
            )
        })
        .collect()
}

/// One epoch's per-layer statistics, shared between the callback that records them and the run that reports them.
pub type LayerLog = Rc<RefCell<Vec<(usize, Vec<LayerStats>)>>>;

/// Records [`layer_statistics`] on a fixed batch at every epoch's end (in inference mode: no dropout, and batch
/// norm's running statistics are left alone).
pub struct LayerStatsRecorder {
    heads: Vec<TaskHead>,
    class_weights: Vec<Option<Vec<f32>>>,
    probe: Batch,
    pub log: LayerLog,
}

impl LayerStatsRecorder {
    /// On up to 256 rows of `train` (evenly spaced, so the batch is the same at every epoch).
    pub fn new(heads: &[TaskHead], train: &Dataset) -> Result<Self> {
        let n = train.len();
        let step = n.div_ceil(256).max(1);
        let rows: Vec<usize> = (0..n).step_by(step).collect();
        Ok(LayerStatsRecorder {
            heads: heads.to_vec(),
            class_weights: crate::train::trainer::head_class_weights(heads, train)?,
            probe: gather(train, &rows)?,
            log: Rc::new(RefCell::new(vec![])),
        })
    }
}

impl Callback for LayerStatsRecorder {
    fn on_epoch_end(&mut self, epoch: usize, _logs: &Logs, model: &Graph, _control: &mut Control) -> Result<()> {
        let (_, stats) = layer_statistics(model, &self.heads, &self.class_weights, &self.probe, false)?;
        self.log.borrow_mut().push((epoch, stats));
        Ok(())
    }
}

/// What introspection adds to a run: the report's charts and the numbers for `metrics.json`.
#[derive(Default)]
pub struct Introspection {
    pub charts: Vec<Chart>,
    pub record: Map<String, Json>,
}

/// The charts and numbers of `spec` for the trained `model` (inference mode) and the run's data.
pub fn introspect(
    spec: &IntrospectSpec,
    dir: &Path,
    model: &Graph,
    log: Option<&LayerLog>,
    held_out: Option<&Dataset>,
    preprocessor: &Preprocessor,
    seed: u64,
) -> Result<Introspection> {
    let mut out = Introspection::default();
    if let Some(log) = log {
        let log = log.borrow();
        let epochs: Vec<(usize, Vec<LayerEpoch>)> = log
            .iter()
            .map(|(e, layers)| {
                (
                    *e,
                    layers
                        .iter()
                        .filter(|l| l.weight_norm.is_some())
                        .map(|l| LayerEpoch {
                            layer: &l.node,
                            weight_norm: l.weight_norm,
                            grad_ratio: l.grad_ratio(),
                            output_std: l.output_std,
                        })
                        .collect(),
                )
            })
            .collect();
        out.charts.extend(layer_stats_charts(dir, &epochs)?);
        out.record.insert(
            "layer_stats".into(),
            json!(
                log.iter()
                    .map(|(e, l)| json!({ "epoch": e, "layers": l }))
                    .collect::<Vec<_>>()
            ),
        );
    }
    let Some(held) = held_out else { return Ok(out) };
    if let Some(p) = &spec.projection {
        let rows: Vec<usize> = (0..held.len().min(p.rows)).collect();
        let cut = model.node_index(&p.layer)?;
        let features = model.features(cut, &held.select(&rows), 64)?;
        let width = features.inputs.sample_size();
        let (labels, classes) = match &held.targets {
            Some(Targets::Classes { labels, names }) => (rows.iter().map(|&r| labels[r]).collect(), names.clone()),
            _ => (vec![0; rows.len()], vec![]),
        };
        let methods: &[(&str, ProjectionMethod)] = match p.method {
            ProjectionMethod::Pca => &[("pca", ProjectionMethod::Pca)],
            ProjectionMethod::Tsne => &[("tsne", ProjectionMethod::Tsne)],
            ProjectionMethod::Both => &[("pca", ProjectionMethod::Pca), ("tsne", ProjectionMethod::Tsne)],
        };
        let mut record = Map::new();
        for (name, method) in methods {
            let (points, what) = match method {
                ProjectionMethod::Pca => {
                    let (points, explained) = pca_2d(&features.inputs.data, width);
                    record.insert("pca_explained_variance".into(), json!([explained.0, explained.1]));
                    (
                        points,
                        format!(
                            "PCA ({:.0}% + {:.0}% of the variance)",
                            100.0 * explained.0,
                            100.0 * explained.1
                        ),
                    )
                }
                _ => (
                    tsne_2d(&features.inputs.data, width, seed),
                    "t-SNE (perplexity 30)".to_string(),
                ),
            };
            let file = format!("projection_{name}.png");
            let title = format!("'{}' outputs of {} held-out rows: {what}", p.layer, rows.len());
            projection_chart(&dir.join(&file), &title, &points, &labels, &classes)?;
            out.charts.push(Chart {
                file,
                caption: format!(
                    "The outputs of layer '{}' projected to 2-D by {what}, coloured by class",
                    p.layer
                ),
            });
        }
        record.insert("layer".into(), json!(p.layer));
        record.insert("rows".into(), json!(rows.len()));
        out.record.insert("projection".into(), Json::Object(record));
    }
    if let Some(a) = &spec.attention {
        let rows: Vec<usize> = (0..held.len().min(a.examples)).collect();
        let mut drawn = vec![];
        for &r in &rows {
            let batch = gather(held, &[r])?;
            let (panels, tokens) = attention_panels(model, &batch, preprocessor)?;
            if panels.is_empty() {
                continue;
            }
            let file = format!("attention_{}.png", r + 1);
            let title = format!("Attention of held-out example {} (mean over heads)", r + 1);
            attention_chart(&dir.join(&file), &title, &tokens, &panels)?;
            out.charts.push(Chart {
                file: file.clone(),
                caption: format!(
                    "What each position of held-out example {} attends to, layer by layer",
                    r + 1
                ),
            });
            drawn.push(json!({ "row": r, "tokens": tokens, "file": file }));
        }
        out.record.insert("attention".into(), json!(drawn));
    }
    Ok(out)
}

/// One attention map: its title and its `T × T` weights, row by row.
type Panel = (String, Vec<f32>);

/// One example's attention maps (each averaged over its heads, `T × T` row by row) with their panel titles, and
/// the names of the `T` positions: a `bert` layer's maps layer by layer, else every self-attention node's. Tokens
/// where the positions are the input's token ids, else their numbers; padding is cut off.
fn attention_panels(model: &Graph, batch: &Batch, preprocessor: &Preprocessor) -> Result<(Vec<Panel>, Vec<String>)> {
    let device = model.devices().first().cloned().unwrap_or_default();
    let ids = batch.inputs.row(0);
    let text = matches!(preprocessor, Preprocessor::Text(_) | Preprocessor::PretrainedText(_));
    let mean = |m: burn::tensor::Tensor<4>| -> Vec<f32> {
        m.mean_dim(1)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default()
    };
    if let Some(node) = bert_node(model)
        && let Some(Layer::Bert(encoder, _)) = &model.nodes[model.nodes[node].layer_of].layer
    {
        let input = crate::layers::value::input_data(&batch.inputs, &device)?.d2()?;
        let maps = crate::layers::bert::attention_maps(encoder, input)?;
        let t = maps.first().map_or(0, |m| m.dims()[2]);
        let panels = maps
            .into_iter()
            .enumerate()
            .map(|(l, m)| (format!("layer {}", l + 1), mean(m)))
            .collect();
        return Ok((panels, token_strings(preprocessor, ids).into_iter().take(t).collect()));
    }
    let nodes = attention_nodes(model);
    let taps: Vec<Source> = nodes.iter().flat_map(|&n| model.nodes[n].sources.clone()).collect();
    let inputs = crate::layers::value::batch_inputs(batch, &device)?;
    let (_, tapped) = model.forward_tapped(inputs, crate::layers::Ctx::default(), true, &taps)?;
    let mut tapped = tapped.into_iter();
    let mut panels = vec![];
    let mut t = 0;
    for &n in &nodes {
        let args: Vec<_> = tapped.by_ref().take(model.nodes[n].sources.len()).collect();
        let layer = model.nodes[model.nodes[n].layer_of].layer.as_ref();
        let Some(weights) = layer.map(|l| l.attention_weights(args)).transpose()?.flatten() else {
            continue;
        };
        let [_, _, tq, tk] = weights.dims();
        if tq != tk {
            // Cross-attention between sequences of different lengths has no square map to draw.
            continue;
        }
        t = tq;
        panels.push((model.nodes[n].name.clone(), mean(weights)));
    }
    // Positions are tokens when the sequence is the input's own; padding (id 0) at the end is cut off.
    let (names, keep) = if text && ids.len() == t {
        let len = ids.iter().rposition(|&v| v != 0.0).map_or(t, |p| p + 1);
        (
            token_strings(preprocessor, ids)
                .into_iter()
                .take(len)
                .collect::<Vec<_>>(),
            len,
        )
    } else {
        ((1..=t).map(|i| i.to_string()).collect(), t)
    };
    let panels = panels
        .into_iter()
        .map(|(name, m)| {
            let cut: Vec<f32> = (0..keep).flat_map(|q| m[q * t..q * t + keep].to_vec()).collect();
            (name, cut)
        })
        .collect();
    Ok((panels, names))
}

/// The tokens of one row of ids, as the tokenizer names them (ids where it cannot).
fn token_strings(preprocessor: &Preprocessor, ids: &[f32]) -> Vec<String> {
    ids.iter()
        .map(|&id| match preprocessor {
            Preprocessor::PretrainedText(t) => t.token(id as u32).unwrap_or_else(|| format!("#{id}")),
            Preprocessor::Text(t) => t.token(id as usize).unwrap_or_else(|| format!("#{id}")),
            _ => format!("#{id}"),
        })
        .collect()
}

/// The first two principal components of `n × width` rows (centred), by power iteration on the covariance without
/// forming it, and the share of the variance each explains.
pub fn pca_2d(data: &[f32], width: usize) -> (Vec<(f32, f32)>, (f64, f64)) {
    let n = data.len() / width.max(1);
    if n == 0 || width == 0 {
        return (vec![], (0.0, 0.0));
    }
    let mut mean = vec![0f64; width];
    for row in data.chunks(width) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n as f64;
        }
    }
    let centred: Vec<f64> = data
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f64 - mean[i % width])
        .collect();
    let total: f64 = centred.iter().map(|v| v * v).sum::<f64>() / n as f64;
    // Xᵀ(X v) / n: the covariance times v.
    let cov_times = |v: &[f64]| -> Vec<f64> {
        let mut out = vec![0f64; width];
        for row in centred.chunks(width) {
            let dot: f64 = row.iter().zip(v).map(|(a, b)| a * b).sum();
            for (o, a) in out.iter_mut().zip(row) {
                *o += dot * a / n as f64;
            }
        }
        out
    };
    let mut components: Vec<Vec<f64>> = vec![];
    let mut variances = vec![];
    for c in 0..2 {
        // A fixed start (not random: the projection is the same every run), made orthogonal to the first component.
        let mut v: Vec<f64> = (0..width).map(|i| 1.0 + ((i * 7 + c * 3) % 11) as f64 / 11.0).collect();
        let mut lambda = 0.0;
        for _ in 0..200 {
            for prev in &components {
                let d: f64 = v.iter().zip(prev).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(prev).for_each(|(a, b)| *a -= d * b);
            }
            let w = cov_times(&v);
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm < 1e-30 {
                break;
            }
            lambda = norm;
            v = w.into_iter().map(|x| x / norm).collect();
        }
        components.push(v);
        variances.push(lambda);
    }
    let points = centred
        .chunks(width)
        .map(|row| {
            let p = |c: &Vec<f64>| row.iter().zip(c).map(|(a, b)| a * b).sum::<f64>() as f32;
            (p(&components[0]), p(&components[1]))
        })
        .collect();
    let share = |v: f64| if total > 0.0 { v / total } else { 0.0 };
    (points, (share(variances[0]), share(variances[1])))
}

/// t-SNE of `n × width` rows to 2-D (perplexity 30, or less for few rows), seeded.
pub fn tsne_2d(data: &[f32], width: usize, seed: u64) -> Vec<(f32, f32)> {
    crate::experiment::tsne::embed(data, width, 30.0, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_direction_of_largest_spread() {
        // Points on the line y = 2x in 3-D (third coordinate constant), plus a little spread across it.
        let mut data = vec![];
        for i in 0..50 {
            let t = i as f32 - 25.0;
            let wobble = if i % 2 == 0 { 0.1 } else { -0.1 };
            data.extend_from_slice(&[t, 2.0 * t + wobble, 5.0]);
        }
        let (points, (first, second)) = pca_2d(&data, 3);
        assert_eq!(points.len(), 50);
        assert!(first > 0.999 && second < 0.001, "{first} {second}");
        // The first coordinate orders the points along the line (up to the sign).
        let ordered = points.windows(2).all(|w| w[0].0 < w[1].0) || points.windows(2).all(|w| w[0].0 > w[1].0);
        assert!(ordered);
        // The projection is deterministic.
        assert_eq!(pca_2d(&data, 3).0, points);
    }

    #[test]
    fn the_spec_reads_from_toml_and_refuses_unknown_keys() {
        let spec: IntrospectSpec =
            toml::from_str("layer_stats = true\nprojection = { layer = \"fc2\", method = \"tsne\" }\nattention = {}")
                .unwrap();
        assert!(spec.layer_stats);
        assert_eq!(spec.projection.as_ref().unwrap().method, ProjectionMethod::Tsne);
        assert_eq!(spec.projection.as_ref().unwrap().rows, 1000);
        assert_eq!(spec.attention.as_ref().unwrap().examples, 3);
        assert!(toml::from_str::<IntrospectSpec>("layerstats = true").is_err());
    }
}
