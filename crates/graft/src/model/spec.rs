//! `ModelSpec`: the one representation of a model. The TOML `[model]` table (sequential or graph form) and the
//! Rust builder both produce it; `model.toml` next to the weights is it, written back in graph form.

use toml::Value;

use crate::error::{Context, Error, Result};
use crate::layers::activation::NoOptions;
use crate::layers::{LAYER_KINDS, LayerSpec, Shape};
use crate::model::backbone::{Architecture, BACKBONE_KINDS, Backbone, BackboneConfig};
use graft_data::suggest::hint;

/// A named model input with its per-sample shape.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub shape: Shape,
}

/// What a node computes: a layer of its own, or the layer of an earlier node (shared weights).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeOp {
    Layer(LayerSpec),
    Shared(String),
}

/// One node of the graph. `inputs` name model inputs or earlier nodes (`"lstm"` or `"lstm:1"` for a node's
/// second output).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    pub op: NodeOp,
    pub inputs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelSpec {
    pub inputs: Vec<InputSpec>,
    pub nodes: Vec<NodeSpec>,
    /// Node references whose values the model returns.
    pub outputs: Vec<String>,
    /// The pretrained-CNN entries the nodes were expanded from (for their weights and image preprocessing); the
    /// expanded nodes are in `nodes`, and `model.toml` holds only those.
    pub backbones: Vec<Backbone>,
}

impl ModelSpec {
    /// A sequential model on one input named `input`; add layers with [`ModelSpec::add`].
    pub fn sequential(input_shape: impl Into<Shape>) -> Self {
        ModelSpec {
            inputs: vec![InputSpec {
                name: "input".into(),
                shape: input_shape.into(),
            }],
            ..Default::default()
        }
    }

    /// Appends a layer fed by the previous node (or the input), named `<kind>_<n>`; it becomes the output.
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: LayerSpec) -> Self {
        let name = self.auto_name(layer.kind());
        self = self.add_named(&name, layer);
        self
    }

    /// Appends a named layer fed by the previous node; it becomes the output.
    pub fn add_named(mut self, name: &str, layer: LayerSpec) -> Self {
        let from = self
            .nodes
            .last()
            .map(|n| n.name.clone())
            .or_else(|| self.inputs.first().map(|i| i.name.clone()));
        self.nodes.push(NodeSpec {
            name: name.into(),
            op: NodeOp::Layer(layer),
            inputs: from.into_iter().collect(),
        });
        self.outputs = vec![name.into()];
        self
    }

    /// Appends a pretrained-CNN backbone ([`crate::model::backbone`]) fed by the previous node (or the input); its
    /// last node becomes the output. `name` prefixes its nodes and names its output node.
    pub fn add_backbone(self, name: Option<&str>, architecture: Architecture, config: BackboneConfig) -> Self {
        let from = self
            .nodes
            .last()
            .map(|n| n.name.clone())
            .or_else(|| self.inputs.first().map(|i| i.name.clone()))
            .unwrap_or_default();
        let mut spec = self.backbone_node(name, architecture, config, &from);
        spec.outputs = spec.nodes.last().map(|n| vec![n.name.clone()]).unwrap_or_default();
        spec
    }

    /// A pretrained-CNN backbone fed by `from`: its nodes are named by the PyTorch keys, prefixed by `name.` and
    /// ending in a node called `name` when a name is given.
    pub fn backbone_node(
        mut self,
        name: Option<&str>,
        architecture: Architecture,
        config: BackboneConfig,
        from: &str,
    ) -> Self {
        let prefix = name.map(|n| format!("{n}.")).unwrap_or_default();
        let mut nodes = architecture.expand(&prefix, from, config.output);
        if let (Some(name), Some(last)) = (name, nodes.last().map(|n| n.name.clone())) {
            nodes.push(NodeSpec {
                name: name.to_string(),
                op: NodeOp::Layer(LayerSpec::Linear(NoOptions {})),
                inputs: vec![last],
            });
        }
        self.backbones.push(Backbone {
            architecture,
            config,
            prefix,
            nodes: nodes.iter().map(|n| n.name.clone()).collect(),
        });
        self.nodes.extend(nodes);
        self
    }

    /// An empty graph model; add inputs, nodes and outputs.
    pub fn graph() -> Self {
        ModelSpec::default()
    }

    pub fn input(mut self, name: &str, shape: impl Into<Shape>) -> Self {
        self.inputs.push(InputSpec {
            name: name.into(),
            shape: shape.into(),
        });
        self
    }

    pub fn node(mut self, name: &str, layer: LayerSpec, from: &[&str]) -> Self {
        self.nodes.push(NodeSpec {
            name: name.into(),
            op: NodeOp::Layer(layer),
            inputs: from.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    /// A node that applies the layer of node `shares` (same weights) to other inputs.
    pub fn shared_node(mut self, name: &str, shares: &str, from: &[&str]) -> Self {
        self.nodes.push(NodeSpec {
            name: name.into(),
            op: NodeOp::Shared(shares.into()),
            inputs: from.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    pub fn output(mut self, name: &str) -> Self {
        self.outputs.push(name.into());
        self
    }

    fn auto_name(&self, kind: &str) -> String {
        (1..)
            .map(|i| format!("{kind}_{i}"))
            .find(|n| !self.nodes.iter().any(|node| &node.name == n))
            .unwrap_or_default()
    }

    /// Parses the `[model]` table (the `location` prefixes error paths, e.g. `model`).
    pub fn from_toml(value: &Value, location: &str) -> Result<Self> {
        let table = value
            .as_table()
            .ok_or_else(|| Error::new("expected a table").at(location))?;
        let sequential = table.contains_key("layers") || table.contains_key("input");
        let allowed: &[&str] = if sequential {
            &["input", "layers"]
        } else {
            &["inputs", "nodes", "outputs"]
        };
        for key in table.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(Error::new(format!(
                    "unknown key `{key}`{}; a sequential model has `input` and `layers`, a graph model `inputs`, `nodes` and `outputs`",
                    hint(key, ["input", "layers", "inputs", "nodes", "outputs"])
                ))
                .at(location));
            }
        }
        if sequential {
            // Without `input`, the shape is taken from the data when training starts.
            let shape = match table.get("input") {
                None => vec![],
                some => parse_shape(some, &format!("{location}.input"))?,
            };
            let layers = table
                .get("layers")
                .and_then(Value::as_array)
                .ok_or_else(|| Error::new("expected an array of layers").at(format!("{location}.layers")))?;
            let mut spec = ModelSpec::sequential(shape);
            for (i, layer) in layers.iter().enumerate() {
                let at = format!("{location}.layers[{i}]");
                let (name, op, from) = parse_node(layer, &at, &["name"])?;
                if from.is_some() {
                    return Err(Error::new("`from` is only for graph models").at(at));
                }
                spec = match (name, op) {
                    (Some(name), Entry::Op(NodeOp::Layer(l))) => spec.add_named(&name, l),
                    (None, Entry::Op(NodeOp::Layer(l))) => spec.add(l),
                    (name, Entry::Backbone(arch, config)) => spec.add_backbone(name.as_deref(), arch, config),
                    (_, Entry::Op(NodeOp::Shared(_))) => {
                        return Err(Error::new("`shared` is only for graph models").at(at));
                    }
                };
            }
            if spec.nodes.is_empty() {
                return Err(Error::new("a model needs at least one layer").at(format!("{location}.layers")));
            }
            return Ok(spec);
        }
        let mut spec = ModelSpec::graph();
        let inputs = table
            .get("inputs")
            .and_then(Value::as_table)
            .ok_or_else(|| Error::new("expected a table of input name = shape").at(format!("{location}.inputs")))?;
        for (name, shape) in inputs {
            spec = spec.input(name, parse_shape(Some(shape), &format!("{location}.inputs.{name}"))?);
        }
        let nodes = table
            .get("nodes")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::new("expected an array of nodes").at(format!("{location}.nodes")))?;
        for (i, node) in nodes.iter().enumerate() {
            let at = format!("{location}.nodes[{i}]");
            let (name, op, from) = parse_node(node, &at, &["name", "from"])?;
            let name = name.ok_or_else(|| Error::new("every graph node needs a `name`").at(&at))?;
            let from = from.ok_or_else(|| Error::new("every graph node needs `from` (its inputs)").at(&at))?;
            match op {
                Entry::Op(op) => spec.nodes.push(NodeSpec { name, op, inputs: from }),
                Entry::Backbone(arch, config) => {
                    let [input] = from.as_slice() else {
                        return Err(Error::new(format!(
                            "{} takes one input (images [3, H, W]), found {}",
                            arch.kind(),
                            from.len()
                        ))
                        .at(format!("{at}.from")));
                    };
                    spec = spec.backbone_node(Some(&name), arch, config, input);
                }
            }
        }
        spec.outputs = match table.get("outputs") {
            Some(v) => string_list(v)
                .ok_or_else(|| Error::new("expected an array of node names").at(format!("{location}.outputs")))?,
            None => spec.nodes.last().map(|n| vec![n.name.clone()]).unwrap_or_default(),
        };
        Ok(spec)
    }

    /// The graph form as a TOML table (what `model.toml` holds under `[model]`).
    pub fn to_toml(&self) -> Result<Value> {
        let mut table = toml::Table::new();
        let mut inputs = toml::Table::new();
        for i in &self.inputs {
            inputs.insert(
                i.name.clone(),
                Value::Array(i.shape.iter().map(|&d| Value::Integer(d as i64)).collect()),
            );
        }
        table.insert("inputs".into(), Value::Table(inputs));
        let mut nodes = vec![];
        for n in &self.nodes {
            let mut node = toml::Table::new();
            node.insert("name".into(), Value::String(n.name.clone()));
            node.insert(
                "from".into(),
                Value::Array(n.inputs.iter().cloned().map(Value::String).collect()),
            );
            match &n.op {
                NodeOp::Layer(l) => {
                    let v =
                        Value::try_from(l).map_err(|e| Error::new(format!("cannot write layer '{}': {e}", n.name)))?;
                    if let Value::Table(t) = v {
                        node.extend(t);
                    } else if let Value::String(kind) = v {
                        node.insert(kind, Value::Table(toml::Table::new()));
                    }
                }
                NodeOp::Shared(s) => {
                    node.insert("shared".into(), Value::String(s.clone()));
                }
            }
            nodes.push(Value::Table(node));
        }
        table.insert("nodes".into(), Value::Array(nodes));
        table.insert(
            "outputs".into(),
            Value::Array(self.outputs.iter().cloned().map(Value::String).collect()),
        );
        Ok(Value::Table(table))
    }
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|x| x.as_str().map(String::from)).collect(),
        _ => None,
    }
}

impl ModelSpec {
    /// Whether some input shape is left to the data (`input` omitted).
    pub fn needs_input_shape(&self) -> bool {
        self.inputs.iter().any(|i| i.shape.is_empty())
    }

    /// Fills the input shapes left to the data with the shape of the data's samples.
    pub fn with_data_shape(mut self, sample_shape: &[usize]) -> Self {
        for input in self.inputs.iter_mut().filter(|i| i.shape.is_empty()) {
            input.shape = sample_shape.to_vec();
        }
        self
    }

    /// Fills in what pretrained layers leave to their files (a `bert` layer's sizes and pooling), with relative
    /// paths resolved by `resolve`.
    pub fn with_pretrained_sizes(mut self, resolve: &dyn Fn(&std::path::Path) -> std::path::PathBuf) -> Result<Self> {
        for node in self.nodes.iter_mut() {
            if let NodeOp::Layer(crate::layers::LayerSpec::Bert(c)) = &mut node.op {
                *c = c.complete(resolve).at_with(|| format!("layer '{}'", node.name))?;
            }
        }
        for backbone in self.backbones.iter_mut() {
            if let Some(path) = &backbone.config.pretrained {
                backbone.config.pretrained = Some(resolve(path));
            }
        }
        Ok(self)
    }
}

fn parse_shape(v: Option<&Value>, at: &str) -> Result<Shape> {
    let arr = v
        .and_then(Value::as_array)
        .ok_or_else(|| Error::new("expected a shape such as [1, 28, 28]").at(at))?;
    let shape: Option<Shape> = arr
        .iter()
        .map(|d| d.as_integer().filter(|&d| d > 0).map(|d| d as usize))
        .collect();
    match shape {
        Some(s) if !s.is_empty() && s.len() <= 3 => Ok(s),
        _ => Err(Error::new(format!(
            "expected 1 to 3 positive sizes per sample, found {v:?}",
            v = arr
        ))
        .at(at)),
    }
}

/// What one entry of `layers` or `nodes` holds: a node, or a backbone that expands into many.
enum Entry {
    Op(NodeOp),
    Backbone(Architecture, BackboneConfig),
}

/// One node table: its name, `from`, and exactly one layer-kind key (or `shared`, or a backbone).
fn parse_node(v: &Value, at: &str, meta: &[&str]) -> Result<(Option<String>, Entry, Option<Vec<String>>)> {
    let table = v
        .as_table()
        .ok_or_else(|| Error::new("expected a table such as { dense = { units = 10 } }").at(at))?;
    let name = match table.get("name") {
        Some(n) => Some(
            n.as_str()
                .ok_or_else(|| Error::new("expected a string").at(format!("{at}.name")))?
                .to_string(),
        ),
        None => None,
    };
    let from = match table.get("from") {
        Some(f) => Some(
            string_list(f)
                .ok_or_else(|| Error::new("expected a node name or an array of them").at(format!("{at}.from")))?,
        ),
        None => None,
    };
    let kinds: Vec<&String> = table
        .keys()
        .filter(|k| !meta.contains(&k.as_str()) && k.as_str() != "from")
        .collect();
    let kind = match kinds.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::new("names no layer kind (such as `dense = { units = 10 }`)").at(at));
        }
        many => {
            return Err(Error::new(format!(
                "names {} layer kinds ({}); put each layer in its own table",
                many.len(),
                many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ))
            .at(at));
        }
    };
    if kind == "shared" && meta.contains(&"from") {
        let target = table[kind]
            .as_str()
            .ok_or_else(|| Error::new("expected the name of the node to share").at(format!("{at}.shared")))?;
        return Ok((name, Entry::Op(NodeOp::Shared(target.into())), from));
    }
    if let Some(arch) = Architecture::from_kind(kind) {
        let config = graft_data::de::parse(&table[kind], &format!("{at}.{kind}"))?;
        return Ok((name, Entry::Backbone(arch, config), from));
    }
    let layer = parse_layer(kind, &table[kind], &format!("{at}.{kind}"))?;
    Ok((name, Entry::Op(NodeOp::Layer(layer)), from))
}

/// Deserializes `{ kind = options }` with clear errors for unknown kinds and options.
pub fn parse_layer(kind: &str, options: &Value, at: &str) -> Result<LayerSpec> {
    if !LAYER_KINDS.contains(&kind) {
        let at = at.rsplit_once('.').map(|(p, _)| p).unwrap_or(at);
        return Err(Error::new(format!(
            "unknown layer `{kind}`{}",
            hint(kind, LAYER_KINDS.iter().chain(BACKBONE_KINDS.iter()).copied())
        ))
        .at(at));
    }
    let mut t = toml::Table::new();
    t.insert(kind.into(), options.clone());
    // The kind is the first key of the path the errors name.
    let parent = at.strip_suffix(&format!(".{kind}")).unwrap_or(at);
    graft_data::de::parse(&Value::Table(t), parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<ModelSpec> {
        let v: Value = toml::from_str(src).unwrap();
        ModelSpec::from_toml(&v["model"], "model")
    }

    #[test]
    fn sequential_form_names_layers_and_chains_them() {
        let spec = parse(
            "[model]\ninput = [4]\nlayers = [{ dense = { units = 8, activation = \"relu\" } }, { name = \"out\", dense = { units = 2 } }]",
        )
        .unwrap();
        assert_eq!(spec.nodes[0].name, "dense_1");
        assert_eq!(spec.nodes[1].inputs, vec!["dense_1"]);
        assert_eq!(spec.outputs, vec!["out"]);
    }

    #[test]
    fn graph_form_round_trips_through_toml() {
        let src = r#"
[model]
inputs = { a = [3], b = [3] }
outputs = ["sum"]
[[model.nodes]]
name = "da"
from = ["a"]
dense = { units = 3 }
[[model.nodes]]
name = "db"
from = "b"
shared = "da"
[[model.nodes]]
name = "sum"
from = ["da", "db"]
add = {}
"#;
        let spec = parse(src).unwrap();
        assert_eq!(spec.nodes[1].op, NodeOp::Shared("da".into()));
        let mut doc = toml::Table::new();
        doc.insert("model".into(), spec.to_toml().unwrap());
        let text = toml::to_string(&doc).unwrap();
        assert_eq!(parse(&text).unwrap(), spec);
    }

    #[test]
    fn unknown_layer_suggests_the_closest() {
        let e = parse("[model]\ninput = [4]\nlayers = [{ dens = { units = 8 } }]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "model.layers[0]: unknown layer `dens`; did you mean `dense`?"
        );
    }

    #[test]
    fn unknown_option_suggests_the_closest() {
        let e = parse("[model]\ninput = [1, 8, 8]\nlayers = [{ conv2d = { filtrs = 8, kernel = 3 } }]").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("model.layers[0].conv2d: unknown option `filtrs`; did you mean `filters`?"),
            "{e}"
        );
    }
}
