//! Layer groups for fine-tuning a pretrained network as ULMFiT does (Howard & Ruder, 2018): the parameters are
//! split into groups by name pattern, listed from the top of the network (the head) down. Each group trains at its
//! own learning rate — the base rate divided by `lr_decay` once per group below the top (discriminative fine-tuning)
//! — and with gradual unfreezing only the top group trains in the first epoch, one more group from the top joins in
//! each epoch after. Parameters in no group stay frozen, so listing the head and the top k blocks fine-tunes just
//! those.
//!
//! ```toml
//! [train.layer_groups]
//! groups = ["logits", "bert.encoder.layer.5", "bert.encoder.layer.4"]
//! lr_decay = 2.6
//! gradual_unfreezing = true
//! ```

use std::collections::HashSet;

use burn::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::module::{Module, ModuleMapper, Param, ParamGroup, ParamId};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Graph;
use crate::model::freeze::glob_match;
use graft_data::suggest::hint;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerGroupsSpec {
    /// One entry per group, the top of the network first: a glob over parameter names (a node name covers all its
    /// parameters), or a list of them.
    pub groups: Vec<GroupPatterns>,
    /// Group g (0 = the top) trains at lr / lr_decay^g; ULMFiT uses 2.6, 1 gives every group the same rate.
    #[serde(default = "one")]
    pub lr_decay: f64,
    /// Epoch e (from 1) trains the top e groups only.
    #[serde(default)]
    pub gradual_unfreezing: bool,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum GroupPatterns {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for GroupPatterns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = GroupPatterns;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a parameter-name pattern or an array of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<GroupPatterns, E> {
                Ok(GroupPatterns::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<GroupPatterns, A::Error> {
                let mut patterns = vec![];
                while let Some(p) = seq.next_element::<String>()? {
                    patterns.push(p);
                }
                Ok(GroupPatterns::Many(patterns))
            }
        }
        d.deserialize_any(V)
    }
}

impl GroupPatterns {
    fn patterns(&self) -> Vec<&str> {
        match self {
            GroupPatterns::One(p) => vec![p.as_str()],
            GroupPatterns::Many(ps) => ps.iter().map(String::as_str).collect(),
        }
    }
}

/// Every parameter's name, id and whether it trains now.
fn parameters(model: &Graph) -> Vec<(String, ParamId, bool)> {
    crate::model::params::parameters(model)
        .into_iter()
        .map(|p| (p.name, p.id, p.trainable))
        .collect()
}

/// The groups of one model.
#[derive(Debug, Clone)]
pub struct LayerGroups {
    /// Per group (top first): the ids of its parameters that may train (frozen ones by `freeze` stay out).
    members: Vec<Vec<ParamId>>,
    /// Names of the parameters in no group, which stay frozen.
    pub outside: Vec<String>,
    decay: f64,
    gradual: bool,
}

impl LayerGroups {
    /// Assigns every parameter of `model` to the first group whose pattern matches its name; a pattern that matches
    /// nothing is an error.
    pub fn new(spec: &LayerGroupsSpec, model: &Graph) -> Result<Self> {
        let at = "train.layer_groups";
        if spec.groups.is_empty() {
            return Err(Error::new("name at least one group").at(format!("{at}.groups")));
        }
        if spec.lr_decay <= 0.0 || !spec.lr_decay.is_finite() {
            return Err(
                Error::new(format!("expected a positive number, found {}", spec.lr_decay)).at(format!("{at}.lr_decay")),
            );
        }
        let params = parameters(model);
        let mut members = vec![vec![]; spec.groups.len()];
        let mut outside = vec![];
        let mut used: Vec<Vec<bool>> = spec.groups.iter().map(|g| vec![false; g.patterns().len()]).collect();
        for (name, id, trains) in &params {
            let mut group = None;
            for (g, patterns) in spec.groups.iter().enumerate() {
                for (k, p) in patterns.patterns().iter().enumerate() {
                    if glob_match(p, name) || glob_match(&format!("{p}.*"), name) {
                        used[g][k] = true;
                        group = group.or(Some(g));
                    }
                }
            }
            match group {
                Some(g) if *trains => members[g].push(*id),
                Some(_) => {}
                None => outside.push(name.clone()),
            }
        }
        for (g, patterns) in spec.groups.iter().enumerate() {
            if let Some(k) = used[g].iter().position(|u| !u) {
                let p = patterns.patterns()[k];
                return Err(Error::new(format!(
                    "pattern '{p}' matches no parameter{}",
                    hint(p, params.iter().map(|(n, _, _)| n.as_str()))
                ))
                .at(format!("{at}.groups[{g}]")));
            }
        }
        Ok(LayerGroups {
            members,
            outside,
            decay: spec.lr_decay,
            gradual: spec.gradual_unfreezing,
        })
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The learning-rate factor of group `g`: 1 / lr_decay^g.
    pub fn factor(&self, g: usize) -> f64 {
        1.0 / self.decay.powi(g as i32)
    }

    /// How many groups, from the top, train in `epoch` (from 1).
    pub fn training_in(&self, epoch: usize) -> usize {
        if self.gradual {
            epoch.clamp(1, self.len())
        } else {
            self.len()
        }
    }

    /// Per-parameter learning rates for an optimizer step at base rate `lr`.
    pub fn learning_rates(&self, lr: f64) -> ModuleLearningRate {
        let mut scheduler = ModuleLrScheduler::new(lr);
        for (g, ids) in self.members.iter().enumerate().skip(1) {
            scheduler = scheduler.with_group(ParamGroup::from_ids(ids.clone()), lr * self.factor(g));
        }
        scheduler.step()
    }

    /// `model` with the top `count` groups trainable and the others frozen.
    pub fn unfreeze_top(&self, model: Graph, count: usize) -> Graph {
        struct Set {
            on: HashSet<ParamId>,
            off: HashSet<ParamId>,
        }
        impl ModuleMapper for Set {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                if self.on.contains(&param.id) {
                    param.set_require_grad(true)
                } else if self.off.contains(&param.id) {
                    param.set_require_grad(false)
                } else {
                    param
                }
            }
        }
        let mut set = Set {
            on: self.members[..count.min(self.len())]
                .iter()
                .flatten()
                .copied()
                .collect(),
            off: self.members[count.min(self.len())..]
                .iter()
                .flatten()
                .copied()
                .collect(),
        };
        model.map(&mut set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Array, Dataset, Targets};
    use crate::experiment::spec::TrainSpec;
    use crate::layers::LayerSpec;
    use crate::layers::dense::DenseConfig;
    use crate::model::io::named_tensors;
    use crate::model::spec::ModelSpec;
    use crate::task::head::TaskHead;
    use crate::train::trainer::fit;

    fn data() -> Dataset {
        let x: Vec<f32> = (0..32).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
        let y: Vec<f32> = (0..8).map(|i| (i % 3) as f32 - 1.0).collect();
        Dataset::new(
            Array::new(vec![8, 4], x).unwrap(),
            Some(Targets::Values(Array::new(vec![8, 1], y).unwrap())),
        )
        .unwrap()
    }

    /// A 4 → a(6) → b(5) → c(1) model. Runs that must start from the same weights share one (the device's random
    /// generator is shared by the tests running in parallel, so building twice does not repeat the draw).
    fn model() -> Graph {
        let device = Device::default().autodiff();
        let spec = ModelSpec::sequential(vec![4])
            .add_named("a", LayerSpec::Dense(DenseConfig::new(6)))
            .add_named("b", LayerSpec::Dense(DenseConfig::new(5)))
            .add_named("c", LayerSpec::Dense(DenseConfig::new(1)));
        Graph::build(&spec, &device).unwrap()
    }

    /// Trains `model` with `groups` and returns each parameter's change.
    fn train(model: Graph, groups: &str, epochs: usize, optimizer: &str) -> Vec<(String, Vec<f32>)> {
        let train: TrainSpec = toml::from_str(&format!(
            "epochs = {epochs}\nbatch_size = 8\nshuffle = false\nloss = \"mse\"\nmetrics = []\noptimizer = {optimizer}\nlayer_groups = {groups}"
        ))
        .unwrap();
        let outside = LayerGroups::new(train.layer_groups.as_ref().unwrap(), &model)
            .unwrap()
            .outside;
        let (model, _) = crate::model::freeze::freeze(model, &outside).unwrap();
        let before = named_tensors(&model);
        let head = TaskHead::new(&train.loss, 1, vec![]).unwrap();
        let fitted = fit(model, &[head], &train.fit_config(), &data(), None, 1, &mut []).unwrap();
        named_tensors(&fitted.model)
            .into_iter()
            .zip(before)
            .map(|(a, b)| (a.name, a.values.iter().zip(&b.values).map(|(x, y)| x - y).collect()))
            .collect()
    }

    fn changed(deltas: &[(String, Vec<f32>)]) -> Vec<String> {
        deltas
            .iter()
            .filter(|(_, d)| d.iter().any(|v| *v != 0.0))
            .map(|(n, _)| n.clone())
            .collect()
    }

    #[test]
    fn gradual_unfreezing_adds_one_group_per_epoch_from_the_top() {
        let groups = r#"{ groups = ["c", "b", "a"], gradual_unfreezing = true }"#;
        let adam = "{ adam = { lr = 0.01 } }";
        assert_eq!(changed(&train(model(), groups, 1, adam)), ["c.weight", "c.bias"]);
        assert_eq!(
            changed(&train(model(), groups, 2, adam)),
            ["b.weight", "b.bias", "c.weight", "c.bias"]
        );
        assert_eq!(changed(&train(model(), groups, 3, adam)).len(), 6);
        // Without gradual unfreezing every group trains from the start; parameters in no group never do.
        let two = r#"{ groups = ["c", "b"] }"#;
        assert_eq!(
            changed(&train(model(), two, 1, adam)),
            ["b.weight", "b.bias", "c.weight", "c.bias"]
        );
    }

    #[test]
    fn each_group_below_the_top_trains_at_the_rate_divided_by_the_decay() {
        let sgd = "{ sgd = { lr = 0.1 } }";
        let start = model();
        let same = train(start.clone(), r#"{ groups = ["c", "b"], lr_decay = 1.0 }"#, 1, sgd);
        let decayed = train(start, r#"{ groups = ["c", "b"], lr_decay = 2.0 }"#, 1, sgd);
        for ((name, a), (_, b)) in same.iter().zip(&decayed) {
            let factor = if name.starts_with('b') { 0.5 } else { 1.0 };
            for (x, y) in a.iter().zip(b) {
                // The deltas (about 1e-2) are differences of float32 weights near 1: exact to about 1e-7.
                assert!((x * factor - y).abs() <= 1e-6, "{name}: {x} vs {y}");
            }
            if name.starts_with('a') {
                assert!(
                    a.iter().all(|v| *v == 0.0),
                    "{name} is in no group and must stay frozen"
                );
            }
        }
    }

    #[test]
    fn a_group_pattern_that_matches_nothing_is_named() {
        let device = Device::default().autodiff();
        let spec = ModelSpec::sequential(vec![4]).add_named("dense", LayerSpec::Dense(DenseConfig::new(2)));
        let model = Graph::build(&spec, &device).unwrap();
        let groups: LayerGroupsSpec = toml::from_str(r#"groups = ["dense", ["dense.bias", "dnse"]]"#).unwrap();
        let e = LayerGroups::new(&groups, &model).unwrap_err().to_string();
        assert!(
            e.contains("train.layer_groups.groups[1]") && e.contains("'dnse'"),
            "{e}"
        );
    }
}
