//! Weights in and out: `model.safetensors` with PyTorch state-dict names and layouts (`conv1.weight`,
//! `lstm.weight_ih_l0`, ...), and `model.toml` holding the model spec. Files are written atomically.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::TensorData;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::data::fsio::write_atomic;
use crate::error::{Context, Error, Result};
use crate::model::Graph;
use crate::model::params::{ParamMapper, ParamPath, ParamVisitor, map_params, visit_params};
use crate::model::spec::ModelSpec;

/// One named parameter (or buffer) as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Every parameter and buffer of a module under its path, in visiting order.
pub fn named_tensors<M: Module>(module: &M) -> Vec<NamedTensor> {
    struct Collect(Vec<NamedTensor>);
    impl ParamVisitor for Collect {
        fn visit<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>) {
            let t = param.val();
            let shape = t.dims().to_vec();
            let values = t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
            self.0.push(NamedTensor {
                name: path.name(),
                shape,
                values,
            });
        }
    }
    let mut c = Collect(vec![]);
    visit_params(module, &mut c);
    c.0
}

/// Writes a module's parameters to a safetensors file (float32), atomically.
pub fn save_safetensors<M: Module>(module: &M, path: &Path) -> Result<()> {
    let tensors = named_tensors(module);
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .into_iter()
        .map(|t| (t.name, t.values.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape))
        .collect();
    let views = bytes
        .iter()
        .map(|(name, data, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::new(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()
        .in_file(path)?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let buffer = safetensors::serialize(views, Some(meta)).map_err(|e| Error::new(e.to_string()).in_file(path))?;
    write_atomic(path, &buffer)
}

/// Reads every tensor of a safetensors file as float32.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, NamedTensor>> {
    let bytes = std::fs::read(path).in_file(path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::new(format!("not a readable safetensors file: {e}")).in_file(path))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            Dtype::I64 => view
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            other => {
                return Err(
                    Error::new(format!("tensor '{name}' has dtype {other:?}; float32/float64 expected")).in_file(path),
                );
            }
        };
        out.insert(
            name.clone(),
            NamedTensor {
                name,
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

/// What a strict load found wrong, each entry with its shapes.
#[derive(Debug, Default)]
pub struct LoadProblems {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    pub wrong_shape: Vec<String>,
}

impl LoadProblems {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }

    /// `missing 2: a [3], b [4]; unexpected 1: c [1]; wrong shape 1: d (file [2], model [3])`, long lists cut.
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        for (what, items) in [
            ("missing", &self.missing),
            ("unexpected", &self.unexpected),
            ("wrong shape", &self.wrong_shape),
        ] {
            if !items.is_empty() {
                parts.push(format!("{what} {}: {}", items.len(), listed(items)));
            }
        }
        parts.join("; ")
    }
}

/// `items`, comma-separated: the first 12 and a count of the rest.
fn listed(items: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut text = items.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > SHOWN {
        text.push_str(&format!(", ... and {} more", items.len() - SHOWN));
    }
    text
}

/// Replaces every parameter of `module` by the tensor whose name `key` gives for the parameter's module path
/// (PyTorch's `load_state_dict(strict=True)`): every parameter must be present with its exact shape and every
/// tensor used, except the keys `ignore` accepts. `expected_from` names where the expected shapes come from
/// ("model", "config") in wrong-shape entries.
pub fn load_named<M: Module>(
    module: M,
    tensors: &HashMap<String, NamedTensor>,
    key: impl Fn(&[String]) -> String,
    ignore: impl Fn(&str) -> bool,
    expected_from: &str,
) -> std::result::Result<M, LoadProblems> {
    load_named_where(module, |_| true, tensors, key, ignore, expected_from)
}

/// [`load_named`] for the parameters whose graft name (`node.weight`) `select` accepts; the others keep their
/// values and are not looked for (a pretrained part of a larger model).
pub fn load_named_where<M: Module>(
    module: M,
    select: impl Fn(&str) -> bool,
    tensors: &HashMap<String, NamedTensor>,
    key: impl Fn(&[String]) -> String,
    ignore: impl Fn(&str) -> bool,
    expected_from: &str,
) -> std::result::Result<M, LoadProblems> {
    struct Load<'a, K, S> {
        tensors: &'a HashMap<String, NamedTensor>,
        key: K,
        select: S,
        expected_from: &'a str,
        used: std::collections::HashSet<String>,
        problems: LoadProblems,
    }
    impl<K: Fn(&[String]) -> String, S: Fn(&str) -> bool> ParamMapper for Load<'_, K, S> {
        fn map<const D: usize>(&mut self, path: ParamPath<'_>, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if !(self.select)(&path.name()) {
                return param;
            }
            let name = (self.key)(path.parts());
            let expected = param.lazy_shape().dims::<D>().to_vec();
            match self.tensors.get(&name) {
                None => {
                    self.problems.missing.push(format!("{name} {expected:?}"));
                    param
                }
                Some(t) if t.shape != expected => {
                    self.problems.wrong_shape.push(format!(
                        "{name} (file {:?}, {} {expected:?})",
                        t.shape, self.expected_from
                    ));
                    self.used.insert(name);
                    param
                }
                Some(t) => {
                    self.used.insert(name);
                    let device = param.lazy_device();
                    let tensor = Tensor::<D>::from_data(TensorData::new(t.values.clone(), t.shape.clone()), &device);
                    let id = param.id;
                    param.transform_for_load(tensor, id)
                }
            }
        }
    }
    let mut loader = Load {
        tensors,
        key,
        select,
        expected_from,
        used: Default::default(),
        problems: LoadProblems::default(),
    };
    let module = map_params(module, &mut loader);
    let mut problems = loader.problems;
    problems.unexpected = tensors
        .iter()
        .filter(|(k, _)| !loader.used.contains(*k) && !ignore(k))
        .map(|(k, t)| format!("{k} {:?}", t.shape))
        .collect();
    problems.unexpected.sort();
    if problems.is_empty() { Ok(module) } else { Err(problems) }
}

/// Replaces every parameter of `module` by the tensor of the same name, strictly (see [`load_named`]); PyTorch's
/// batch-norm step counters (`*.num_batches_tracked`) are accepted and ignored — graft's momentum is fixed, as is
/// PyTorch's default.
pub fn load_tensors<M: Module>(module: M, tensors: &HashMap<String, NamedTensor>, file: &Path) -> Result<M> {
    load_named(
        module,
        tensors,
        |path| path.join("."),
        |k| k.ends_with(".num_batches_tracked"),
        "model",
    )
    .map_err(|p| Error::new(format!("the weights do not match the model — {}", p.describe())).in_file(file))
}

/// Writes `model.toml` (the spec in graph form) and `model.safetensors` into `dir`.
pub fn save_model(graph: &Graph, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).in_file(dir)?;
    let mut doc = toml::Table::new();
    doc.insert("model".into(), graph.spec.to_toml()?);
    let text = toml::to_string(&doc).map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&dir.join("model.toml"), text.as_bytes())?;
    save_safetensors(&graph.valid(), &dir.join("model.safetensors"))
}

/// Reads the spec from `dir/model.toml`.
pub fn load_spec(dir: &Path) -> Result<ModelSpec> {
    let path = dir.join("model.toml");
    let text = std::fs::read_to_string(&path).in_file(&path)?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| Error::new(e.message().to_string()).in_file(&path))?;
    let model = doc
        .get("model")
        .ok_or_else(|| Error::new("missing [model]").in_file(&path))?;
    ModelSpec::from_toml(model, "model").in_file(&path)
}

/// Builds the model of a run directory and loads its weights.
pub fn load_model(dir: &Path, device: &Device) -> Result<Graph> {
    let spec = load_spec(dir)?;
    let graph = Graph::build(&spec, device).in_file(dir.join("model.toml"))?;
    let weights = dir.join("model.safetensors");
    let tensors = read_safetensors(&weights)?;
    load_tensors(graph, &tensors, &weights)
}

/// Reads a PyTorch `torch.save` state dict (`.pt`, `.pth`, `.bin`; zip or legacy format) with burn's pickle reader.
pub fn read_pytorch(path: &Path) -> Result<HashMap<String, NamedTensor>> {
    use pytorch_reader::{DType as dt, PytorchReader};
    let reader = PytorchReader::new(path)
        .map_err(|e| Error::new(format!("not a readable PyTorch state dict: {e}")).in_file(path))?;
    let mut out = HashMap::new();
    for (name, tensor) in reader.tensors() {
        let bytes = tensor.read().in_file(path)?;
        let values: Vec<f32> = match tensor.dtype() {
            dt::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            dt::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            dt::I64 => bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            other => {
                return Err(
                    Error::new(format!("tensor '{name}' has dtype {other:?}; float32/float64 expected")).in_file(path),
                );
            }
        };
        out.insert(
            name.clone(),
            NamedTensor {
                name: name.clone(),
                shape: tensor.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

/// A state dict in any supported format, chosen by extension: `.safetensors`, or PyTorch's `.pt`/`.pth`/`.bin`.
pub fn read_state_dict(path: &Path) -> Result<HashMap<String, NamedTensor>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("pt" | "pth" | "bin") => read_pytorch(path),
        _ => read_safetensors(path),
    }
}

/// `graft import`: builds the model of `spec` and loads a PyTorch state dict into it by name.
pub fn import_state_dict(spec: &ModelSpec, file: &Path, device: &Device) -> Result<Graph> {
    let graph = Graph::build(spec, device)?;
    let tensors = read_state_dict(file)?;
    load_tensors(graph, &tensors, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::LayerSpec;
    use crate::layers::dense::DenseConfig;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("graft-io-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mlp() -> ModelSpec {
        ModelSpec::sequential(vec![4])
            .add_named("fc1", LayerSpec::Dense(DenseConfig::new(3)))
            .add_named("fc2", LayerSpec::Dense(DenseConfig::new(2)))
    }

    #[test]
    fn save_and_load_round_trip_bit_exact() {
        let device = Device::default();
        device.seed(5);
        let graph = Graph::build(&mlp(), &device).unwrap();
        let file = temp("roundtrip").join("w.safetensors");
        save_safetensors(&graph, &file).unwrap();
        let tensors = read_safetensors(&file).unwrap();
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        assert_eq!(names, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
        assert_eq!(tensors["fc1.weight"].shape, vec![3, 4], "PyTorch's [out, in]");
        device.seed(6);
        let other = Graph::build(&mlp(), &device).unwrap();
        let loaded = load_tensors(other, &tensors, &file).unwrap();
        assert_eq!(named_tensors(&loaded), named_tensors(&graph));
    }

    #[test]
    fn reads_a_torch_save_state_dict() {
        // tools/reference/io_fixtures.py: values 0.1 * arange, fc2.weight saved as float64.
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/io/mlp.pt");
        let tensors = read_state_dict(&file).unwrap();
        assert_eq!(tensors["fc1.weight"].shape, vec![3, 4]);
        assert_eq!(tensors["fc2.weight"].shape, vec![2, 3]);
        for t in tensors.values() {
            for (i, v) in t.values.iter().enumerate() {
                assert!((v - 0.1 * i as f32).abs() < 1e-6, "{} [{i}] = {v}", t.name);
            }
        }
        let graph = import_state_dict(&mlp(), &file, &Device::default()).unwrap();
        let loaded = named_tensors(&graph);
        assert_eq!(loaded[0].name, "fc1.weight");
        assert!((loaded[0].values[5] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn mismatches_are_all_listed() {
        let device = Device::default();
        let graph = Graph::build(&mlp(), &device).unwrap();
        let mut tensors: HashMap<String, NamedTensor> =
            named_tensors(&graph).into_iter().map(|t| (t.name.clone(), t)).collect();
        tensors.remove("fc2.bias");
        tensors.get_mut("fc1.weight").unwrap().shape = vec![4, 3];
        tensors.insert(
            "head.weight".into(),
            NamedTensor {
                name: "head.weight".into(),
                shape: vec![1],
                values: vec![0.0],
            },
        );
        tensors.insert(
            "bn.num_batches_tracked".into(),
            NamedTensor {
                name: "bn.num_batches_tracked".into(),
                shape: vec![],
                values: vec![0.0],
            },
        );
        let e = load_tensors(graph, &tensors, Path::new("sd.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("sd.safetensors: the weights do not match the model"),
            "{e}"
        );
        assert!(e.contains("missing 1: fc2.bias [2]"), "{e}");
        assert!(e.contains("unexpected 1: head.weight [1]"), "{e}");
        assert!(
            e.contains("wrong shape 1: fc1.weight (file [4, 3], model [3, 4])"),
            "{e}"
        );
    }
}
