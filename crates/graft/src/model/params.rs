//! Every parameter of a model with its PyTorch-style name, its id, its size and whether it trains now.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

use super::Graph;

/// Where a parameter sits in a module: the names of the fields and indices from the top,
/// `["encoder", "layer", "0", "attention", "query", "weight"]`.
#[derive(Clone, Copy)]
pub struct ParamPath<'a>(&'a [String]);

impl<'a> ParamPath<'a> {
    /// The PyTorch-style name: `encoder.layer.0.attention.query.weight`.
    pub fn name(&self) -> String {
        self.0.join(".")
    }

    /// The parts of the path, outermost first.
    pub fn parts(&self) -> &'a [String] {
        self.0
    }

    /// Whether this is a batch-norm running statistic (a buffer, which PyTorch's `parameters()` leaves out).
    pub fn is_running_stat(&self) -> bool {
        matches!(self.0.last().map(String::as_str), Some("running_mean" | "running_var"))
    }
}

/// What [`visit_params`] calls for every float parameter (and buffer), in visiting order.
pub trait ParamVisitor {
    fn visit<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>);
}

/// What [`map_params`] calls for every float parameter (and buffer), in visiting order; it returns the parameter
/// to keep in its place.
pub trait ParamMapper {
    fn map<const D: usize>(&mut self, path: ParamPath<'_>, param: Param<Tensor<D>>) -> Param<Tensor<D>>;
}

/// Walks every float parameter of `module` with its path: burn's [`ModuleVisitor`] plus the path bookkeeping.
pub fn visit_params<M: Module, V: ParamVisitor>(module: &M, visitor: &mut V) {
    struct Walk<'v, V> {
        path: Vec<String>,
        inner: &'v mut V,
    }
    impl<V: ParamVisitor> ModuleVisitor for Walk<'_, V> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.inner.visit(ParamPath(&self.path), param);
        }
    }
    module.visit(&mut Walk {
        path: vec![],
        inner: visitor,
    });
}

/// Rebuilds `module` with every float parameter replaced by what `mapper` returns for it and its path: burn's
/// [`ModuleMapper`] plus the path bookkeeping.
pub fn map_params<M: Module, F: ParamMapper>(module: M, mapper: &mut F) -> M {
    struct Walk<'f, F> {
        path: Vec<String>,
        inner: &'f mut F,
    }
    impl<F: ParamMapper> ModuleMapper for Walk<'_, F> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            self.inner.map(ParamPath(&self.path), param)
        }
    }
    module.map(&mut Walk {
        path: vec![],
        inner: mapper,
    })
}

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
    struct Collect(Vec<ParamInfo>);
    impl ParamVisitor for Collect {
        fn visit<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>) {
            if path.is_running_stat() {
                return;
            }
            let value = param.val();
            self.0.push(ParamInfo {
                name: path.name(),
                id: param.id,
                numel: param.lazy_shape().num_elements(),
                trainable: value.is_require_grad() || !value.device().is_autodiff(),
            });
        }
    }
    let mut c = Collect(vec![]);
    visit_params(graph, &mut c);
    c.0
}
