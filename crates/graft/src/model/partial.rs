//! Parts of a model: running it only up to a named node (embeddings of a whole catalogue, cached features), and
//! the rest of it as a model of its own whose input is that node's output (prediction from precomputed vectors,
//! training a head on cached features). A node splits a model cleanly when nothing after it reads the model's
//! inputs or any node before it except through that node.

use burn::module::Module;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::layers::Ctx;
use crate::layers::value::{Data, Value};
use crate::model::Graph;
use crate::model::graph::Source;
use crate::model::spec::{InputSpec, ModelSpec};
use graft_data::suggest::hint;

impl Graph {
    /// The index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Result<usize> {
        self.nodes.iter().position(|n| n.name == name).ok_or_else(|| {
            Error::new(format!(
                "the model has no layer '{name}'{}",
                hint(name, self.nodes.iter().map(|n| n.name.as_str()))
            ))
        })
    }

    /// Which nodes node `n` depends on, itself included.
    fn upstream(&self, n: usize) -> Vec<bool> {
        let mut needed = vec![false; self.nodes.len()];
        needed[n] = true;
        for i in (0..=n).rev() {
            if !needed[i] {
                continue;
            }
            for s in &self.nodes[i].sources {
                if let Source::Node(j, _) = s {
                    needed[*j] = true;
                }
            }
        }
        needed
    }

    /// Runs only what node `n` depends on and returns its first output.
    pub fn forward_until(&self, inputs: Vec<Data>, n: usize, ctx: Ctx) -> Result<Value> {
        let needed = self.upstream(n);
        let inputs: Vec<Value> = inputs.into_iter().map(Value::new).collect();
        let mut values = self.run_nodes(&inputs, ctx, false, n + 1, Some(&needed), &[])?;
        Ok(values[n].swap_remove(0))
    }

    /// Why the model cannot be split after node `n`, if it cannot; the later nodes may read the model inputs
    /// numbered in `kept`.
    fn split_problem(&self, n: usize, kept: &[usize]) -> Option<String> {
        let node = &self.nodes[n];
        if node.outputs.len() != 1 {
            return Some(format!(
                "'{}' has {} outputs; split after a single-output layer",
                node.name,
                node.outputs.len()
            ));
        }
        if node.masked[0] {
            return Some(format!(
                "'{}' outputs a padded sequence, whose mask a precomputed array cannot carry",
                node.name
            ));
        }
        let before = self.upstream(n);
        for (i, later) in self.nodes.iter().enumerate().skip(n + 1) {
            if before[later.layer_of] && later.layer_of != i {
                return Some(format!(
                    "'{}' shares the layer of '{}', which comes before the split",
                    later.name, self.nodes[later.layer_of].name
                ));
            }
            for s in &later.sources {
                match *s {
                    Source::Input(k) if !kept.contains(&k) => {
                        return Some(format!(
                            "'{}' reads the model input '{}' directly",
                            later.name, self.spec.inputs[k].name
                        ));
                    }
                    Source::Node(j, _) if j < n => {
                        return Some(format!(
                            "'{}' reads '{}', which comes before the split",
                            later.name, self.nodes[j].name
                        ));
                    }
                    _ => {}
                }
            }
        }
        for o in &self.outputs {
            match *o {
                Source::Node(j, _) if j > n => {}
                _ => return Some("a model output comes before the split".into()),
            }
        }
        None
    }

    /// The part of the model after node `name`: a model whose one input (named `name`) is that node's output, with
    /// copies of this model's layers.
    pub fn after(&self, name: &str) -> Result<Graph> {
        self.after_keeping(name, &[])
    }

    /// [`Graph::after`] where the later part also reads the model inputs named in `inputs` (a conditional decoder
    /// reads the code and the class): they follow the split node as the part's inputs.
    pub fn after_keeping(&self, name: &str, inputs: &[&str]) -> Result<Graph> {
        let n = self.node_index(name)?;
        let kept = inputs
            .iter()
            .map(|i| {
                self.spec.inputs.iter().position(|x| x.name == *i).ok_or_else(|| {
                    Error::new(format!(
                        "the model has no input '{i}'{}",
                        hint(i, self.spec.inputs.iter().map(|x| x.name.as_str()))
                    ))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        if let Some(problem) = self.split_problem(n, &kept) {
            return Err(Error::new(format!(
                "the model cannot be split after '{name}': {problem}"
            )));
        }
        let cut = &self.nodes[n];
        let spec = ModelSpec {
            inputs: std::iter::once(InputSpec {
                name: cut.name.clone(),
                shape: cut.outputs[0].clone(),
            })
            .chain(kept.iter().map(|&k| self.spec.inputs[k].clone()))
            .collect(),
            nodes: self.spec.nodes[n + 1..].to_vec(),
            outputs: self.spec.outputs.clone(),
            backbones: vec![],
        };
        let device = self.devices().first().cloned().unwrap_or_default();
        let mut head = Graph::build(&spec, &device)?;
        for node in head.nodes.iter_mut() {
            if node.layer.is_some() {
                let i = self.node_index(&node.name)?;
                node.layer = self.nodes[i].layer.clone();
            }
        }
        Ok(head)
    }

    /// This model with the layers of `head` (a part made by [`Graph::after`], trained since) put back by name.
    pub fn with_layers_of(mut self, head: Graph) -> Graph {
        for part in head.nodes {
            if let Some(layer) = part.layer
                && let Some(node) = self.nodes.iter_mut().find(|n| n.name == part.name)
            {
                node.layer = Some(layer);
            }
        }
        self
    }

    /// The pad id of the token ids a `bert` layer reads from the model's first input, when one does: that layer
    /// runs only up to a batch's last token, so its cost follows the longest text of the batch.
    pub fn token_pad(&self) -> Option<f32> {
        self.nodes.iter().find_map(|node| match &node.layer {
            Some(crate::layers::Layer::Bert(model, _)) if node.sources.first() == Some(&Source::Input(0)) => {
                Some(model.config.pad_token_id as f32)
            }
            _ => None,
        })
    }

    /// `ds` with its inputs replaced by the output of node `cut` (computed in inference mode, `batch_size` at a time).
    pub fn features(&self, cut: usize, ds: &Dataset, batch_size: usize) -> Result<Dataset> {
        let model = self;
        let device = model.devices().first().cloned().unwrap_or_default();
        let shape = model.nodes[cut].outputs[0].clone();
        let width: usize = shape.iter().product();
        let mut data = vec![0f32; ds.len() * width];
        // Rows of token ids go in order of length, so a batch holds texts of similar length and layers that cut off
        // shared padding (bert) compute little of it; the order does not change any row's features.
        let indices: Vec<usize> =
            if ds.images.is_none() && ds.inputs.sample_shape().len() == 1 && ds.extra_inputs.is_empty() {
                rows_by_length(&ds.inputs, self.token_pad().unwrap_or(0.0))
            } else {
                (0..ds.len()).collect()
            };
        for chunk in indices.chunks(batch_size.max(1)) {
            let batch = crate::data::gather(ds, chunk)?;
            let out = model.forward_until(
                crate::layers::value::batch_inputs(&batch, &device)?,
                cut,
                crate::layers::Ctx::default(),
            )?;
            let values = match out.data {
                crate::layers::value::Data::D2(t) => t.into_data(),
                crate::layers::value::Data::D3(t) => t.into_data(),
                crate::layers::value::Data::D4(t) => t.into_data(),
            };
            let values = values
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| Error::new(format!("cannot read features back: {e:?}")))?;
            for (k, &r) in chunk.iter().enumerate() {
                data[r * width..(r + 1) * width].copy_from_slice(&values[k * width..(k + 1) * width]);
            }
        }
        let mut out = ds.clone();
        out.inputs = crate::data::Array::new(std::iter::once(ds.len()).chain(shape).collect(), data)?;
        out.extra_inputs.clear();
        out.input_names.clear();
        // The rows are the features now, not image files to decode.
        out.images = None;
        Ok(out)
    }

    /// The latest node that splits the model cleanly and up to which no parameter trains and nothing draws noise:
    /// everything before it can be computed once and cached. A dropout (or sampling) layer stays after the cut, so
    /// it still regularizes the layers that train. `None` when there is no such node.
    pub fn frozen_cut(&self) -> Option<usize> {
        use crate::layers::LayerSpec;
        let counts = super::summary::parameter_counts(self);
        let frozen: Vec<bool> = self
            .nodes
            .iter()
            .map(|node| {
                let owner = &self.nodes[node.layer_of].name;
                let random = matches!(node.spec, LayerSpec::Dropout(_) | LayerSpec::Sampling(_));
                !random && counts.get(owner).is_none_or(|(trainable, _)| *trainable == 0)
            })
            .collect();
        (0..self.nodes.len()).rev().find(|&n| {
            self.upstream(n).iter().enumerate().all(|(i, up)| !up || frozen[i]) && self.split_problem(n, &[]).is_none()
        })
    }
}

/// The rows of `[N, T]` token ids padded at the end with `pad`, shortest first. Batches of rows taken in this
/// order hold texts of similar length.
pub fn rows_by_length(ids: &crate::data::Array, pad: f32) -> Vec<usize> {
    let lengths = crate::data::batch::token_lengths(ids, pad);
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&r| lengths[r]);
    order
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use super::*;
    use crate::layers::LayerSpec;
    use crate::layers::dense::DenseConfig;

    fn dense(units: usize) -> LayerSpec {
        LayerSpec::Dense(DenseConfig::new(units))
    }

    fn mlp(device: &Device) -> Graph {
        let spec = ModelSpec::sequential(vec![5])
            .add_named("a", dense(4))
            .add_named("b", dense(3))
            .add_named("c", dense(2));
        Graph::build(&spec, device).unwrap()
    }

    #[test]
    fn the_two_parts_compute_what_the_whole_model_computes() {
        let device = Device::default();
        let model = mlp(&device);
        let x = Tensor::<2>::random([3, 5], burn::tensor::Distribution::Default, &device);
        let whole = model
            .forward(vec![Data::D2(x.clone())], false, false)
            .unwrap()
            .remove(0);
        let b = model.node_index("b").unwrap();
        let features = model.forward_until(vec![Data::D2(x)], b, Ctx::default()).unwrap();
        assert_eq!(features.data.dims(), vec![3, 3]);
        let head = model.after("b").unwrap();
        assert_eq!(head.spec.inputs[0].name, "b");
        assert_eq!(head.nodes.len(), 1);
        let split = head.forward(vec![features.data], false, false).unwrap().remove(0);
        let (w, s) = (
            whole.data.d2().unwrap().into_data().try_to_vec::<f32>().unwrap(),
            split.data.d2().unwrap().into_data().try_to_vec::<f32>().unwrap(),
        );
        assert_eq!(w, s);
    }

    #[test]
    fn frozen_cut_is_the_last_layer_fed_only_by_frozen_ones() {
        let device = Device::default().autodiff();
        let model = mlp(&device);
        assert_eq!(model.frozen_cut(), None);
        let (model, _) = crate::model::freeze::freeze(model, &["a".into(), "b".into()]).unwrap();
        assert_eq!(model.frozen_cut(), Some(1));
        let head = model.after("b").unwrap();
        let trained = model.clone().with_layers_of(head);
        assert_eq!(trained.nodes.len(), 3);
    }

    #[test]
    fn dropout_after_the_frozen_layers_stays_in_the_trained_part() {
        let device = Device::default().autodiff();
        let spec = ModelSpec::sequential(vec![5])
            .add_named("a", dense(4))
            .add_named(
                "drop",
                LayerSpec::Dropout(crate::layers::dropout::DropoutConfig { rate: 0.5 }),
            )
            .add_named("c", dense(2));
        let model = Graph::build(&spec, &device).unwrap();
        let (model, _) = crate::model::freeze::freeze(model, &["a".into()]).unwrap();
        assert_eq!(model.frozen_cut(), Some(0), "cut before the dropout, not after it");
    }

    #[test]
    fn a_model_that_cannot_be_split_there_says_why() {
        let device = Device::default();
        let spec = ModelSpec::graph()
            .input("x", vec![4])
            .node("a", dense(3), &["x"])
            .node("b", dense(3), &["a"])
            .node(
                "skip",
                LayerSpec::Add(crate::layers::activation::NoOptions {}),
                &["a", "b"],
            )
            .output("skip");
        let model = Graph::build(&spec, &device).unwrap();
        let e = model.after("b").unwrap_err().to_string();
        assert!(e.contains("'skip' reads 'a'"), "{e}");
        let e = model.after("bb").unwrap_err().to_string();
        assert!(e.contains("no layer 'bb'") && e.contains("did you mean"), "{e}");
    }
}
