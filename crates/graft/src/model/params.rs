//! Every parameter of a model with its PyTorch-style name, its id, its size and whether it trains now.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

use super::Graph;

pub struct ParamInfo {
    /// `node.weight`, `bert.encoder.layer.5.output.dense.bias`, ...
    pub name: String,
    pub id: ParamId,
    pub numel: usize,
    /// Gradients flow to it (freezing exists only on a training device; elsewhere every parameter trains).
    pub trainable: bool,
}

/// The parameters of `graph` in visiting order; batch-norm running statistics are buffers, not parameters (as
/// PyTorch's `parameters()` leaves them out), and are skipped.
pub fn parameters(graph: &Graph) -> Vec<ParamInfo> {
    struct Collect {
        path: Vec<String>,
        out: Vec<ParamInfo>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let leaf = self.path.last().map(String::as_str).unwrap_or("");
            if leaf == "running_mean" || leaf == "running_var" {
                return;
            }
            let value = param.val();
            self.out.push(ParamInfo {
                name: self.path.join("."),
                id: param.id,
                numel: param.lazy_shape().num_elements(),
                trainable: value.is_require_grad() || !value.device().is_autodiff(),
            });
        }
    }
    let mut c = Collect {
        path: vec![],
        out: vec![],
    };
    graph.visit(&mut c);
    c.out
}
