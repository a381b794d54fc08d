//! Weights in and out: `model.safetensors` with PyTorch state-dict names and layouts (`conv1.weight`,
//! `lstm.weight_ih_l0`, ...), and `model.toml` holding the model spec. Files are written atomically.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::TensorData;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::model::Graph;
use crate::report::write_atomic;
use crate::spec::model::ModelSpec;

/// One named parameter (or buffer) as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Every parameter and buffer of a module under its path, in visiting order.
pub fn named_tensors<M: Module>(module: &M) -> Vec<NamedTensor> {
    struct Collect {
        path: Vec<String>,
        out: Vec<NamedTensor>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            let shape = t.dims().to_vec();
            let values = t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
            self.out.push(NamedTensor {
                name: self.path.join("."),
                shape,
                values,
            });
        }
    }
    let mut c = Collect {
        path: vec![],
        out: vec![],
    };
    module.visit(&mut c);
    c.out
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
        .map_err(|e| e.in_file(path))?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let buffer = safetensors::serialize(views, Some(meta)).map_err(|e| Error::new(e.to_string()).in_file(path))?;
    write_atomic(path, &buffer)
}

/// Reads every tensor of a safetensors file as float32.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, NamedTensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
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

/// Replaces every parameter of `module` by the tensor of the same name. Every parameter must be present with
/// its exact shape; the error names the key, the expected and the found shape.
pub fn load_tensors<M: Module>(module: M, tensors: &HashMap<String, NamedTensor>, file: &Path) -> Result<M> {
    struct Load<'a> {
        path: Vec<String>,
        tensors: &'a HashMap<String, NamedTensor>,
        error: Option<Error>,
    }
    impl ModuleMapper for Load<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let name = self.path.join(".");
            let expected = param.lazy_shape().dims::<D>().to_vec();
            match self.tensors.get(&name) {
                None => {
                    self.error
                        .get_or_insert(Error::new(format!("missing tensor '{name}' (shape {expected:?})")));
                    param
                }
                Some(t) if t.shape != expected => {
                    self.error.get_or_insert(Error::new(format!(
                        "tensor '{name}' has shape {:?}, the model expects {expected:?}",
                        t.shape
                    )));
                    param
                }
                Some(t) => {
                    let device = param.lazy_device();
                    let tensor = Tensor::<D>::from_data(TensorData::new(t.values.clone(), t.shape.clone()), &device);
                    let id = param.id;
                    param.transform_for_load(tensor, id)
                }
            }
        }
    }
    let mut loader = Load {
        path: vec![],
        tensors,
        error: None,
    };
    let module = module.map(&mut loader);
    match loader.error {
        Some(e) => Err(e.in_file(file)),
        None => Ok(module),
    }
}

/// Writes `model.toml` (the spec in graph form) and `model.safetensors` into `dir`.
pub fn save_model(graph: &Graph, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut doc = toml::Table::new();
    doc.insert("model".into(), graph.spec.to_toml()?);
    let text = toml::to_string(&doc).map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&dir.join("model.toml"), text.as_bytes())?;
    save_safetensors(&graph.valid(), &dir.join("model.safetensors"))
}

/// Reads the spec from `dir/model.toml`.
pub fn load_spec(dir: &Path) -> Result<ModelSpec> {
    let path = dir.join("model.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| Error::new(e.message().to_string()).in_file(&path))?;
    let model = doc
        .get("model")
        .ok_or_else(|| Error::new("missing [model]").in_file(&path))?;
    ModelSpec::from_toml(model, "model").map_err(|e| e.in_file(&path))
}

/// Builds the model of a run directory and loads its weights.
pub fn load_model(dir: &Path, device: &Device) -> Result<Graph> {
    let spec = load_spec(dir)?;
    let graph = Graph::build(&spec, device).map_err(|e| e.in_file(dir.join("model.toml")))?;
    let weights = dir.join("model.safetensors");
    let tensors = read_safetensors(&weights)?;
    load_tensors(graph, &tensors, &weights)
}
