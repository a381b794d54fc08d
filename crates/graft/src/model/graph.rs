//! A model built from a [`ModelSpec`]: shape inference over the whole graph (every mismatch is an error naming
//! the layers and shapes, before any tensor is allocated for training), then one burn module per node.

use burn::module::{Devices, Module, ModuleMapper, ModuleVisitor};
use burn::prelude::*;

use crate::error::{Context, Error, Result};
use crate::layers::activation::Activation;
use crate::layers::value::{Data, Value};
use crate::layers::{Ctx, Layer, LayerSpec, Shape};
use crate::model::spec::{ModelSpec, NodeOp};
use graft_data::suggest::hint;

/// Where a node's input comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    Input(usize),
    /// (node index, output index)
    Node(usize, usize),
}

#[derive(Debug, Clone)]
pub struct GraphNode {
    pub name: String,
    /// The node whose layer this node runs (itself unless it shares another's weights).
    pub layer_of: usize,
    pub sources: Vec<Source>,
    pub outputs: Vec<Shape>,
    pub masked: Vec<bool>,
    /// Present for nodes that own their layer.
    pub layer: Option<Layer>,
    /// The spec of the layer this node runs.
    pub spec: LayerSpec,
}

/// The built model.
#[derive(Debug, Clone)]
pub struct Graph {
    pub spec: ModelSpec,
    pub nodes: Vec<GraphNode>,
    pub outputs: Vec<Source>,
}

impl Graph {
    /// Every value of a model input that an `embedding` layer reads directly must be one of its ids (a whole number
    /// from 0 to `input_dim - 1`): checked on the host arrays, so a bad id is one line naming the input, the layer,
    /// the largest id it takes and the value, before it reaches the engine.
    pub fn check_token_ids(&self, arrays: &[&crate::data::Array]) -> Result<()> {
        for node in &self.nodes {
            let LayerSpec::Embedding(cfg) = &node.spec else {
                continue;
            };
            for source in &node.sources {
                let Source::Input(i) = *source else { continue };
                let Some(array) = arrays.get(i) else { continue };
                let limit = cfg.input_dim as f32;
                let bad = array
                    .data
                    .iter()
                    .position(|&v| !(v >= 0.0 && v < limit && v.fract() == 0.0));
                let Some(k) = bad else { continue };
                let v = array.data[k];
                let width = array.sample_size().max(1);
                let advice = if v >= limit {
                    "; raise the layer's input_dim, or tokenize the data with the vocabulary the model was trained on"
                } else {
                    "; token ids are whole numbers from 0"
                };
                return Err(Error::new(format!(
                    "token id {v} (sample {}, position {}) of input '{}' is not an id of layer '{}', which takes ids 0 \
                     to {}{advice}",
                    k / width,
                    k % width,
                    self.spec.inputs.get(i).map_or("?", |x| x.name.as_str()),
                    node.name,
                    cfg.input_dim - 1
                )));
            }
        }
        Ok(())
    }

    /// Validates the spec, infers every shape and initializes the parameters on `device`.
    pub fn build(spec: &ModelSpec, device: &Device) -> Result<Graph> {
        // Subnormal floats slow every kernel tens of times; flush them on the threads that will run this model.
        graft_kernels::init_threads();
        if spec.inputs.is_empty() {
            return Err(Error::new("the model has no inputs").at("model"));
        }
        if let Some(i) = spec.inputs.iter().find(|i| i.shape.is_empty()) {
            return Err(Error::new(format!(
                "the shape of input '{}' comes from the data; it is known once the data is loaded",
                i.name
            ))
            .at("model"));
        }
        let mut nodes: Vec<GraphNode> = Vec::with_capacity(spec.nodes.len());
        for node in &spec.nodes {
            let at = || format!("layer '{}'", node.name);
            if spec.inputs.iter().any(|i| i.name == node.name) || nodes.iter().any(|n| n.name == node.name) {
                return Err(Error::new("this name is used twice; node names must be unique").at(at()));
            }
            if node.inputs.is_empty() {
                return Err(Error::new("has no inputs (`from`)").at(at()));
            }
            let sources = node
                .inputs
                .iter()
                .map(|r| resolve(spec, &nodes, r))
                .collect::<Result<Vec<_>>>()
                .at_with(at)?;
            let shapes: Vec<Shape> = sources.iter().map(|s| shape_of(spec, &nodes, *s)).collect();
            let masked: Vec<bool> = sources.iter().map(|s| masked_of(&nodes, *s)).collect();
            let (layer_of, layer_spec) = match &node.op {
                NodeOp::Layer(l) => (nodes.len(), l.clone()),
                NodeOp::Shared(target) => {
                    let Some(idx) = nodes.iter().position(|n| &n.name == target) else {
                        return Err(Error::new(format!(
                            "shares the layer of '{target}', which is not an earlier node{}",
                            hint(target, nodes.iter().map(|n| n.name.as_str()))
                        ))
                        .at(at()));
                    };
                    (nodes[idx].layer_of, nodes[nodes[idx].layer_of].spec.clone())
                }
            };
            let built = layer_spec.build(&shapes, &node.inputs, &masked, device).map_err(|e| {
                let detail = describe_inputs(&node.inputs, &shapes);
                Error::new(format!("{} (inputs: {detail})", e.message)).at(at())
            })?;
            if layer_of != nodes.len() {
                let original = &nodes[layer_of];
                let original_shapes: Vec<Shape> = original.sources.iter().map(|s| shape_of(spec, &nodes, *s)).collect();
                if original_shapes != shapes {
                    return Err(Error::new(format!(
                        "shares the layer of '{}', which takes {original_shapes:?}, but its inputs are {shapes:?}",
                        original.name
                    ))
                    .at(at()));
                }
            }
            nodes.push(GraphNode {
                name: node.name.clone(),
                layer_of,
                sources,
                outputs: built.outputs,
                masked: built.masked,
                layer: (layer_of == nodes.len()).then_some(built.layer),
                spec: layer_spec,
            });
        }
        if spec.outputs.is_empty() {
            return Err(Error::new("the model names no outputs").at("model.outputs"));
        }
        let outputs = spec
            .outputs
            .iter()
            .map(|r| resolve(spec, &nodes, r))
            .collect::<Result<Vec<_>>>()
            .at("model.outputs")?;
        // Draw every initial value now, in node order, so the same seed gives the same weights.
        let graph = Graph {
            spec: spec.clone(),
            nodes,
            outputs,
        }
        .materialize();
        Ok(graph)
    }

    /// The per-sample shape a source (a model input or a node's output) carries.
    pub fn source_shape(&self, source: Source) -> Shape {
        shape_of(&self.spec, &self.nodes, source)
    }

    pub fn input_shapes(&self) -> Vec<Shape> {
        self.spec.inputs.iter().map(|i| i.shape.clone()).collect()
    }

    pub fn output_shapes(&self) -> Vec<Shape> {
        self.outputs
            .iter()
            .map(|s| shape_of(&self.spec, &self.nodes, *s))
            .collect()
    }

    /// The activation an output ends in, when it turns logits into probabilities.
    pub fn output_probability(&self, output: usize) -> Option<crate::layers::activation::Activation> {
        let Source::Node(mut n, 0) = self.outputs[output] else {
            return None;
        };
        // A sigmoid reshaped on its way out is still the output's probability (see `logit_nodes`).
        while matches!(
            self.nodes[n].spec,
            LayerSpec::Reshape(_) | LayerSpec::Flatten(_) | LayerSpec::Permute(_)
        ) {
            match self.nodes[n].sources[0] {
                Source::Node(m, 0) if self.logit_nodes()[m] => n = m,
                _ => return None,
            }
        }
        self.nodes[n].spec.ends_in_probability()
    }

    /// Moves the model out of `self`, leaving the same graph without its layers in its place (to be overwritten at
    /// once). An optimizer step given a clone instead found every parameter buffer shared with the model left
    /// behind, and the fused Adam then copied each parameter before updating it (6% of an MLP training step).
    pub fn take(&mut self) -> Graph {
        let layers: Vec<Option<Layer>> = self.nodes.iter_mut().map(|n| n.layer.take()).collect();
        let mut moved = self.clone();
        for (node, layer) in moved.nodes.iter_mut().zip(layers) {
            node.layer = layer;
        }
        moved
    }

    /// A copy of the model that trains independently of this one. A plain `clone` shares batch norm's running
    /// statistics (burn keeps them behind one `Arc`), so training the clone would move this model's statistics too.
    pub fn independent_copy(&self) -> Graph {
        let mut copy = self.clone();
        for node in &mut copy.nodes {
            node.layer = node.layer.take().map(Layer::with_own_state);
        }
        copy
    }

    /// Runs the graph: one batch tensor per model input → one value per model output. With `logits`, output
    /// nodes leave out a final softmax/sigmoid (the losses work on logits, which is numerically stable).
    pub fn forward(&self, inputs: Vec<Data>, training: bool, logits: bool) -> Result<Vec<Value>> {
        self.forward_ctx(
            inputs,
            Ctx {
                training,
                ..Ctx::default()
            },
            logits,
        )
    }

    pub fn forward_ctx(&self, inputs: Vec<Data>, ctx: Ctx, logits: bool) -> Result<Vec<Value>> {
        Ok(self.forward_tapped(inputs, ctx, logits, &[])?.0)
    }

    /// [`Graph::forward_ctx`] that also returns the values at `taps` (inner nodes' outputs, e.g. a VAE's mean and
    /// log-variance, which its loss needs beside the reconstruction) from the same pass.
    pub fn forward_tapped(
        &self,
        inputs: Vec<Data>,
        ctx: Ctx,
        logits: bool,
        taps: &[Source],
    ) -> Result<(Vec<Value>, Vec<Value>)> {
        let inputs: Vec<Value> = inputs.into_iter().map(Value::new).collect();
        // On one of the pool's threads (see `graft_kernels::on_pool`; already there inside a training step): the
        // batch-1,024 MLP 1.015x faster, the batch-64 CNN 1.010x, MiniLM 0.995x (medians of 10 alternating rounds).
        let rows = inputs
            .first()
            .map_or(0, |v| v.data.dims().first().copied().unwrap_or(0));
        let values = graft_kernels::on_pool(rows, || {
            self.run_nodes(&inputs, ctx, logits, self.nodes.len(), None, taps)
        })?;
        let outputs = self.outputs.iter().map(|s| fetch(&inputs, &values, *s)).collect();
        Ok((outputs, taps.iter().map(|s| fetch(&inputs, &values, *s)).collect()))
    }

    /// The outputs of the first `upto` nodes (those not `needed` are skipped and left empty; `kept` are read
    /// afterwards). Output nodes leave out a final softmax/sigmoid when `logits` is set.
    pub(crate) fn run_nodes(
        &self,
        inputs: &[Value],
        ctx: Ctx,
        logits: bool,
        upto: usize,
        needed: Option<&[bool]>,
        kept: &[Source],
    ) -> Result<Vec<Vec<Value>>> {
        let mut values: Vec<Vec<Value>> = Vec::with_capacity(upto);
        let gives_logits = if logits { self.logit_nodes() } else { vec![] };
        // The next node's output when it was computed with this one (a convolution and its max pool).
        let mut computed: Option<Vec<Value>> = None;
        for (i, node) in self.nodes.iter().enumerate().take(upto) {
            if let Some(out) = computed.take() {
                values.push(out);
                continue;
            }
            if needed.is_some_and(|n| !n[i]) {
                values.push(vec![]);
                continue;
            }
            let args: Vec<Value> = node.sources.iter().map(|s| fetch(inputs, &values, *s)).collect();
            let node_ctx = Ctx {
                skip_probability: logits && gives_logits[i],
                ..ctx
            };
            let layer = self.nodes[node.layer_of]
                .layer
                .as_ref()
                .ok_or_else(|| Error::new("layer missing"))?;
            if let (Layer::Conv2d(conv), Some(window)) = (layer, self.pooled_by_next(i, upto, needed, kept))
                && let Some(Data::D4(x)) = args.first().map(|a| &a.data)
                && let Some(pooled) = conv.forward_max_pooled(x, window)
            {
                // Nothing reads the convolution's own output (`pooled_by_next` checked).
                values.push(vec![]);
                computed = Some(vec![Value::new(Data::D4(pooled))]);
                continue;
            }
            let out = layer
                .forward(args, &node_ctx)
                .at_with(|| format!("layer '{}'", node.name))?;
            values.push(out);
        }
        Ok(values)
    }
}

impl Graph {
    /// The window of the non-overlapping max pool at node `i + 1` when it is the only reader of node `i`'s output
    /// (no other node, model output or `kept` value reads it) and runs in this pass: then a convolution at `i` may
    /// compute the pooled values directly (ONNX Runtime fuses the same pair).
    fn pooled_by_next(&self, i: usize, upto: usize, needed: Option<&[bool]>, kept: &[Source]) -> Option<[usize; 2]> {
        if i + 1 >= upto || needed.is_some_and(|n| !n[i + 1]) {
            return None;
        }
        let next = &self.nodes[i + 1];
        let Some(Layer::Pool(pool)) = self.nodes[next.layer_of].layer.as_ref() else {
            return None;
        };
        let window = pool.non_overlapping_max2d()?;
        let reads_i = |s: &Source| matches!(s, Source::Node(n, _) if *n == i);
        let only_reader = next.sources.len() == 1
            && reads_i(&next.sources[0])
            && !self
                .nodes
                .iter()
                .enumerate()
                .any(|(j, node)| j != i + 1 && node.sources.iter().any(reads_i))
            && !self.outputs.iter().any(reads_i)
            && !kept.iter().any(reads_i);
        only_reader.then_some(window)
    }

    /// Per node, whether a loss on logits skips its final softmax/sigmoid: the model's output nodes, and a node
    /// ending in a sigmoid whose every consumer only reshapes it (reshape, flatten, permute) on the way to an
    /// output — so a decoder's sigmoid pixels reshaped to an image still reach `binary_crossentropy` as logits.
    /// (A softmax is not looked through: reshaping moves the axis it normalized.)
    fn logit_nodes(&self) -> Vec<bool> {
        let mut gives = vec![false; self.nodes.len()];
        for o in &self.outputs {
            if let Source::Node(n, _) = *o {
                gives[n] = true;
            }
        }
        let shape_only = |j: usize| {
            matches!(
                self.nodes[j].spec,
                LayerSpec::Reshape(_) | LayerSpec::Flatten(_) | LayerSpec::Permute(_)
            )
        };
        for i in (0..self.nodes.len()).rev() {
            let sigmoid = self.nodes[i].spec.ends_in_probability() == Some(Activation::Sigmoid);
            if gives[i] || !(sigmoid || shape_only(i)) {
                continue;
            }
            let consumers: Vec<usize> = (i + 1..self.nodes.len())
                .filter(|&j| {
                    self.nodes[j]
                        .sources
                        .iter()
                        .any(|s| matches!(s, Source::Node(n, _) if *n == i))
                })
                .collect();
            let feeds_output = self.outputs.iter().any(|o| matches!(o, Source::Node(n, _) if *n == i));
            gives[i] = !consumers.is_empty() && !feeds_output && consumers.iter().all(|&j| shape_only(j) && gives[j]);
        }
        gives
    }
}

fn fetch(inputs: &[Value], values: &[Vec<Value>], source: Source) -> Value {
    match source {
        Source::Input(i) => inputs[i].clone(),
        Source::Node(n, o) => values[n][o].clone(),
    }
}

fn describe_inputs(names: &[String], shapes: &[Shape]) -> String {
    names
        .iter()
        .zip(shapes)
        .map(|(n, s)| format!("'{n}' {s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves `name` or `name:k` against the model inputs and earlier nodes.
fn resolve(spec: &ModelSpec, nodes: &[GraphNode], reference: &str) -> Result<Source> {
    let (name, index) = match reference.rsplit_once(':') {
        Some((n, k)) => match k.parse::<usize>() {
            Ok(k) => (n, k),
            Err(_) => {
                return Err(Error::new(format!(
                    "'{reference}': the part after ':' must be an output index"
                )));
            }
        },
        None => (reference, 0),
    };
    if let Some(i) = spec.inputs.iter().position(|inp| inp.name == name) {
        return Ok(Source::Input(i));
    }
    if let Some(n) = nodes.iter().position(|node| node.name == name) {
        if index >= nodes[n].outputs.len() {
            return Err(Error::new(format!(
                "'{reference}': node '{name}' has {} output(s)",
                nodes[n].outputs.len()
            )));
        }
        return Ok(Source::Node(n, index));
    }
    let known = spec
        .inputs
        .iter()
        .map(|i| i.name.as_str())
        .chain(nodes.iter().map(|n| n.name.as_str()));
    let later = spec.nodes.iter().any(|n| n.name == name);
    Err(Error::new(if later {
        format!("'{name}' is defined later; a node can only take inputs from earlier nodes")
    } else {
        format!(
            "'{name}' is neither a model input nor an earlier node{}",
            hint(name, known)
        )
    }))
}

fn shape_of(spec: &ModelSpec, nodes: &[GraphNode], source: Source) -> Shape {
    match source {
        Source::Input(i) => spec.inputs[i].shape.clone(),
        Source::Node(n, o) => nodes[n].outputs[o].clone(),
    }
}

fn masked_of(nodes: &[GraphNode], source: Source) -> bool {
    match source {
        Source::Input(_) => false,
        Source::Node(n, o) => nodes[n].masked[o],
    }
}

/// Each owned layer is entered under its node's name: parameters are `conv1.weight`, as in a PyTorch state dict.
impl Module for Graph {
    fn collect_devices(&self, mut devices: Devices) -> Devices {
        for layer in self.nodes.iter().filter_map(|n| n.layer.as_ref()) {
            devices = layer.collect_devices(devices);
        }
        devices
    }

    fn fork(self, device: &Device) -> Self {
        self.map_layers(|l| l.fork(device))
    }

    fn to_device(self, device: &Device) -> Self {
        self.map_layers(|l| l.to_device(device))
    }

    fn train(self) -> Self {
        self.map_layers(|l| l.train())
    }

    fn valid(&self) -> Self {
        let mut copy = self.clone();
        for node in copy.nodes.iter_mut() {
            node.layer = node.layer.as_ref().map(|l| l.valid());
        }
        copy
    }

    fn materialize(self) -> Self {
        self.map_layers(|l| l.materialize())
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        for node in &self.nodes {
            if let Some(layer) = &node.layer {
                visitor.enter_module(&node.name, "Graph");
                layer.visit(visitor);
                visitor.exit_module(&node.name, "Graph");
            }
        }
    }

    fn map<M: ModuleMapper>(mut self, mapper: &mut M) -> Self {
        for node in self.nodes.iter_mut() {
            if let Some(layer) = node.layer.take() {
                mapper.enter_module(&node.name, "Graph");
                node.layer = Some(layer.map(mapper));
                mapper.exit_module(&node.name, "Graph");
            }
        }
        self
    }
}

impl Graph {
    fn map_layers(mut self, f: impl Fn(Layer) -> Layer) -> Self {
        for node in self.nodes.iter_mut() {
            node.layer = node.layer.take().map(&f);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::Distribution;

    use super::*;

    /// A convolution whose only reader is a non-overlapping max pool runs with it in one pass (no gradient tracked),
    /// and gives what the two layers give one after the other: a tap on the convolution's output (which must then
    /// exist) turns the pairing off. Covered: ReLU and no activation, the 2×2 and a 3×1 window, and odd sizes that
    /// drop a row and a column.
    #[test]
    fn convolution_and_max_pool_in_one_pass_match_the_two_layers() {
        let device = Device::default();
        device.seed(3);
        let src = r#"
            input = [3, 15, 13]
            layers = [
                { conv2d = { filters = 20, kernel = 3, activation = "relu" } },
                { max_pool2d = { size = 2 } },
                { conv2d = { filters = 7, kernel = 2, padding = 1 } },
                { max_pool2d = { size = [3, 1] } },
                { conv2d = { filters = 5, kernel = 1, activation = "relu" } },
                { max_pool2d = { size = 2 } },
                { flatten = {} },
                { dense = { units = 4 } },
            ]
        "#;
        let doc: toml::Table = toml::from_str(src).unwrap();
        let spec = ModelSpec::from_toml(&toml::Value::Table(doc), "model").unwrap();
        let graph = Graph::build(&spec, &device).unwrap();
        let pairs: Vec<usize> = (0..graph.nodes.len())
            .filter(|&i| {
                matches!(graph.nodes[i].layer, Some(Layer::Conv2d(_)))
                    && graph.pooled_by_next(i, graph.nodes.len(), None, &[]).is_some()
            })
            .collect();
        assert_eq!(pairs, vec![0, 2, 4], "every convolution here is read by its pool alone");
        let x = Tensor::<4>::random([2, 3, 15, 13], Distribution::Uniform(-1.0, 1.0), &device);
        let ctx = Ctx::default();
        let fused = graph.forward_ctx(vec![Data::D4(x.clone())], ctx, false).unwrap();
        let taps: Vec<Source> = pairs.iter().map(|&i| Source::Node(i, 0)).collect();
        let (separate, tapped) = graph.forward_tapped(vec![Data::D4(x)], ctx, false, &taps).unwrap();
        assert_eq!(tapped.len(), 3, "the tapped convolutions' own outputs are there");
        let values = |v: &Value| v.data.clone().d2().unwrap().into_data().try_to_vec::<f32>().unwrap();
        let (a, b) = (values(&fused[0]), values(&separate[0]));
        assert_eq!(a.len(), 8);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{a:?} vs {b:?}");
        }
    }
}
