//! Building an ONNX graph one operator at a time: fresh tensor names, constants and weights as initializers
//! (deduplicated by name, so a layer shared by several nodes is stored once), and attributes.

use std::collections::HashSet;

use super::proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, NodeProto, TensorProto, TensorShapeProto, TensorTypeProto,
    TypeProto, ValueInfoProto, attribute_type, data_type,
};

/// The graph under construction.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    initializer_names: HashSet<String>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

/// An operator's attribute.
#[derive(Clone)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Str(String),
    Strs(Vec<String>),
}

impl GraphBuilder {
    /// A tensor name not used before, readable in a viewer: `stem_N`.
    pub fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{stem}_{}", self.counter)
    }

    /// Adds `op_type(inputs) -> one output` and returns the output's name. An empty input name is an omitted
    /// optional input.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.op_n(op_type, inputs, 1, attrs).remove(0)
    }

    /// Adds an operator with `n` outputs.
    pub fn op_n(&mut self, op_type: &str, inputs: &[&str], n: usize, attrs: Vec<(&str, Attr)>) -> Vec<String> {
        let stem = op_type.to_lowercase();
        let outputs: Vec<String> = (0..n).map(|_| self.fresh(&stem)).collect();
        self.node(op_type, inputs, &outputs, attrs);
        outputs
    }

    /// Adds an operator writing the named outputs.
    pub fn node(&mut self, op_type: &str, inputs: &[&str], outputs: &[String], attrs: Vec<(&str, Attr)>) {
        let name = self.fresh(&format!("{}_node", op_type.to_lowercase()));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.to_vec(),
            name,
            op_type: op_type.to_string(),
            attribute: attrs.into_iter().map(|(n, a)| attribute(n, a)).collect(),
        });
    }

    /// A float32 initializer `name` (kept once when added again under the same name, as a shared layer's weights
    /// are).
    pub fn weight(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), values.len());
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, dims, data_type::FLOAT, raw)
    }

    /// A new float32 constant.
    pub fn floats(&mut self, dims: &[usize], values: &[f32]) -> String {
        let name = self.fresh("const");
        self.weight(&name, dims, values)
    }

    /// A new float32 scalar constant.
    pub fn scalar(&mut self, value: f32) -> String {
        self.floats(&[], &[value])
    }

    /// A new 1-D int64 constant (shapes, axes, slice bounds).
    pub fn ints(&mut self, values: &[i64]) -> String {
        let name = self.fresh("ints");
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(&name, &[values.len()], data_type::INT64, raw)
    }

    /// A new boolean constant.
    pub fn bools(&mut self, dims: &[usize], values: &[bool]) -> String {
        let name = self.fresh("mask");
        let raw = values.iter().map(|&b| u8::from(b)).collect();
        self.initializer(&name, dims, data_type::BOOL, raw)
    }

    fn initializer(&mut self, name: &str, dims: &[usize], data_type: i32, raw_data: Vec<u8>) -> String {
        if self.initializer_names.insert(name.to_string()) {
            self.initializers.push(TensorProto {
                dims: dims.iter().map(|&d| d as i64).collect(),
                data_type,
                name: name.to_string(),
                raw_data,
            });
        }
        name.to_string()
    }

    /// Declares a graph input: `elem_type` with a free leading batch axis and the fixed per-sample `shape`.
    pub fn input(&mut self, name: &str, elem_type: i32, shape: &[usize]) {
        self.inputs.push(value_info(name, elem_type, shape));
    }

    /// Declares a graph output, as [`GraphBuilder::input`].
    pub fn output(&mut self, name: &str, shape: &[usize]) {
        self.outputs.push(value_info(name, data_type::FLOAT, shape));
    }

    pub fn finish(self, name: &str) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: name.to_string(),
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
        }
    }
}

fn value_info(name: &str, elem_type: i32, shape: &[usize]) -> ValueInfoProto {
    let batch = Dimension {
        value: Some(DimensionValue::DimParam("batch".into())),
    };
    let dims = shape.iter().map(|&d| Dimension {
        value: Some(DimensionValue::DimValue(d as i64)),
    });
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: std::iter::once(batch).chain(dims).collect(),
                }),
            }),
        }),
    }
}

fn attribute(name: &str, attr: Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match attr {
        Attr::Int(i) => {
            a.i = i;
            a.r#type = attribute_type::INT;
        }
        Attr::Float(f) => {
            a.f = f;
            a.r#type = attribute_type::FLOAT;
        }
        Attr::Ints(v) => {
            a.ints = v;
            a.r#type = attribute_type::INTS;
        }
        Attr::Str(s) => {
            a.s = s.into_bytes();
            a.r#type = attribute_type::STRING;
        }
        Attr::Strs(v) => {
            a.strings = v.into_iter().map(String::into_bytes).collect();
            a.r#type = attribute_type::STRINGS;
        }
    }
    a
}
