//! Restoring only some layers from a checkpoint or state dict: chosen by name pattern, with prefix renames, and
//! skipping shape mismatches where asked. The report says what was loaded, skipped and left initialized.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Graph;
use crate::model::freeze::glob_match;
use crate::model::io::{NamedTensor, read_state_dict};
use crate::model::params::{ParamMapper, ParamPath, map_params};

/// `[train] init_from = { path = "runs/base/model.safetensors", include = ["conv*"], rename = { "encoder." = "enc." } }`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSpec {
    /// A run directory (its `model.safetensors`), a `.safetensors` file or a PyTorch `.pt`/`.pth`/`.bin` state dict.
    pub path: PathBuf,
    /// Parameters to restore, by glob over the model's names (a node name covers the node); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Parameters to leave initialized even if included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Prefix renames from the file's names to the model's (`"encoder." = "enc."`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rename: BTreeMap<String, String>,
    /// Leave parameters whose shapes differ initialized (a new head) instead of failing.
    #[serde(default)]
    pub skip_mismatched: bool,
}

/// What a restore did, parameter by parameter.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RestoreReport {
    pub loaded: Vec<String>,
    /// Included, but with another shape in the file ("name (file [..], model [..])").
    pub skipped: Vec<String>,
    /// Not included, or not in the file.
    pub left_initialized: Vec<String>,
    /// File tensors no parameter took.
    pub unused: usize,
}

impl std::fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        write!(
            f,
            "loaded {}: {}; skipped {}: {}; left initialized {}: {}; unused in the file: {}",
            self.loaded.len(),
            list(&self.loaded),
            self.skipped.len(),
            list(&self.skipped),
            self.left_initialized.len(),
            list(&self.left_initialized),
            self.unused
        )
    }
}

fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns
        .iter()
        .any(|p| glob_match(p, name) || glob_match(&format!("{p}.*"), name))
}

/// The file key for a model parameter name under the prefix renames.
fn file_key(rename: &BTreeMap<String, String>, name: &str) -> String {
    for (from, to) in rename {
        if let Some(rest) = name.strip_prefix(to.as_str()) {
            return format!("{from}{rest}");
        }
    }
    name.to_string()
}

/// Restores the selected parameters of `model` from `spec.path` (already resolved by the caller).
pub fn restore(model: Graph, spec: &RestoreSpec) -> Result<(Graph, RestoreReport)> {
    let file = if spec.path.is_dir() {
        spec.path.join("model.safetensors")
    } else {
        spec.path.clone()
    };
    let tensors = read_state_dict(&file)?;
    struct Restore<'a> {
        spec: &'a RestoreSpec,
        tensors: &'a std::collections::HashMap<String, NamedTensor>,
        used: HashSet<String>,
        report: RestoreReport,
        mismatch: Option<String>,
    }
    impl ParamMapper for Restore<'_> {
        fn map<const D: usize>(&mut self, path: ParamPath<'_>, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let name = path.name();
            let included = (self.spec.include.is_empty() || matches_any(&self.spec.include, &name))
                && !matches_any(&self.spec.exclude, &name);
            let key = file_key(&self.spec.rename, &name);
            let Some(t) = self.tensors.get(&key).filter(|_| included) else {
                self.report.left_initialized.push(name);
                return param;
            };
            self.used.insert(key.clone());
            let expected = param.lazy_shape().dims::<D>().to_vec();
            if t.shape != expected {
                let entry = format!("{name} (file {:?} as '{key}', model {expected:?})", t.shape);
                if self.spec.skip_mismatched {
                    self.report.skipped.push(entry);
                } else {
                    self.mismatch.get_or_insert(entry);
                }
                return param;
            }
            let device = param.lazy_device();
            let tensor = Tensor::<D>::from_data(TensorData::new(t.values.clone(), t.shape.clone()), &device);
            let id = param.id;
            self.report.loaded.push(name);
            param.transform_for_load(tensor, id)
        }
    }
    let mut r = Restore {
        spec,
        tensors: &tensors,
        used: HashSet::new(),
        report: Default::default(),
        mismatch: None,
    };
    let model = map_params(model, &mut r);
    if let Some(m) = r.mismatch {
        return Err(Error::new(format!(
            "shape mismatch: {m}; set skip_mismatched = true to leave it initialized"
        ))
        .in_file(&file)
        .at("train.init_from"));
    }
    if r.report.loaded.is_empty() {
        return Err(
            Error::new("no parameter of the model was found in the file (check include and rename)")
                .in_file(&file)
                .at("train.init_from"),
        );
    }
    r.report.unused = tensors.len() - r.used.len();
    Ok((model, r.report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::LayerSpec;
    use crate::layers::dense::DenseConfig;
    use crate::model::io::{named_tensors, save_safetensors};
    use crate::model::spec::ModelSpec;
    use graft_data::test_util::TempDir;

    fn mlp(hidden: &str, head: usize) -> ModelSpec {
        ModelSpec::sequential(vec![4])
            .add_named(hidden, LayerSpec::Dense(DenseConfig::new(8)))
            .add_named("head", LayerSpec::Dense(DenseConfig::new(head)))
    }

    fn values(g: &Graph, name: &str) -> Vec<f32> {
        named_tensors(g).into_iter().find(|t| t.name == name).unwrap().values
    }

    fn spec(path: PathBuf) -> RestoreSpec {
        RestoreSpec {
            path,
            include: vec![],
            exclude: vec![],
            rename: BTreeMap::new(),
            skip_mismatched: false,
        }
    }

    #[test]
    fn a_new_head_is_skipped_and_the_trunk_loaded() {
        let dir = TempDir::new("restore");
        let device = Device::default();
        device.seed(1);
        let base = Graph::build(&mlp("trunk", 10), &device).unwrap();
        let file = dir.file("base.safetensors");
        save_safetensors(&base, &file).unwrap();
        device.seed(2);
        let new = Graph::build(&mlp("trunk", 3), &device).unwrap();
        let head_before = values(&new, "head.weight");
        let e = restore(new.clone(), &spec(file.clone())).unwrap_err().to_string();
        assert!(
            e.contains("head.weight (file [10, 8] as 'head.weight', model [3, 8])"),
            "{e}"
        );
        let (restored, report) = restore(
            new,
            &RestoreSpec {
                skip_mismatched: true,
                ..spec(file)
            },
        )
        .unwrap();
        assert_eq!(report.loaded, vec!["trunk.weight", "trunk.bias"]);
        assert_eq!(report.skipped.len(), 2);
        assert_eq!(values(&restored, "trunk.weight"), values(&base, "trunk.weight"));
        assert_eq!(values(&restored, "head.weight"), head_before);
    }

    #[test]
    fn include_patterns_and_renames_choose_what_is_loaded() {
        let dir = TempDir::new("restore");
        let device = Device::default();
        device.seed(1);
        let base = Graph::build(&mlp("encoder", 2), &device).unwrap();
        let file = dir.file("base.safetensors");
        save_safetensors(&base, &file).unwrap();
        device.seed(2);
        let new = Graph::build(&mlp("enc", 2), &device).unwrap();
        let mut s = spec(file);
        s.rename.insert("encoder.".into(), "enc.".into());
        s.include = vec!["enc".into()];
        let (restored, report) = restore(new, &s).unwrap();
        assert_eq!(report.loaded, vec!["enc.weight", "enc.bias"]);
        assert_eq!(report.left_initialized, vec!["head.weight", "head.bias"]);
        assert_eq!(report.unused, 2);
        assert_eq!(values(&restored, "enc.weight"), values(&base, "encoder.weight"));
        assert!(
            report
                .to_string()
                .starts_with("loaded 2: enc.weight, enc.bias; skipped 0: none")
        );
    }
}
