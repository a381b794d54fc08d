//! Freezing parameters by name pattern: frozen parameters keep their values while the rest trains (feature
//! extraction, fine-tuning only the top layers). Patterns are globs over PyTorch-style parameter names:
//! `embedding.*`, `conv1.weight`, `lstm.*_reverse`; `*` matches any run of characters (dots included), `?` one.

use burn::module::Param;
use burn::prelude::*;

use crate::error::{Error, Result};
use crate::model::Graph;
use crate::model::params::{ParamMapper, ParamPath, map_params};
use graft_data::suggest::hint;

/// Whether `name` matches the glob `pattern`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer glob with backtracking to the last `*`.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Stops gradients for every parameter whose name matches one of `patterns` (a pattern that names a node, such as
/// `conv1`, freezes all of that node's parameters). Returns the model and the frozen names; a pattern matching
/// nothing is an error with the closest parameter name.
pub fn freeze(model: Graph, patterns: &[String]) -> Result<(Graph, Vec<String>)> {
    struct Freeze<'a> {
        patterns: &'a [String],
        used: Vec<bool>,
        frozen: Vec<String>,
        names: Vec<String>,
    }
    impl ParamMapper for Freeze<'_> {
        fn map<const D: usize>(&mut self, path: ParamPath<'_>, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let name = path.name();
            self.names.push(name.clone());
            if path.is_running_stat() {
                return param;
            }
            let mut hit = false;
            for (i, p) in self.patterns.iter().enumerate() {
                if glob_match(p, &name) || glob_match(&format!("{p}.*"), &name) {
                    self.used[i] = true;
                    hit = true;
                }
            }
            if hit {
                self.frozen.push(name);
                param.set_require_grad(false)
            } else {
                param
            }
        }
    }
    let mut f = Freeze {
        patterns,
        used: vec![false; patterns.len()],
        frozen: vec![],
        names: vec![],
    };
    let model = map_params(model, &mut f);
    if let Some(i) = f.used.iter().position(|u| !u) {
        return Err(Error::new(format!(
            "pattern '{}' matches no parameter{}",
            patterns[i],
            hint(&patterns[i], f.names.iter().map(String::as_str))
        ))
        .at("train.freeze"));
    }
    Ok((model, f.frozen))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::layers::LayerSpec;
    use crate::layers::dense::DenseConfig;
    use crate::model::io::named_tensors;
    use crate::model::spec::ModelSpec;
    use crate::train::optim::OptimizerSpec;
    use burn::optim::GradientsParams;

    fn spec() -> ModelSpec {
        ModelSpec::sequential(vec![4])
            .add_named("d1", LayerSpec::Dense(DenseConfig::new(8)))
            .add_named("d2", LayerSpec::Dense(DenseConfig::new(2)))
    }

    #[test]
    fn frozen_weights_stay_bit_identical_while_the_rest_trains() {
        let device = Device::default().autodiff();
        device.seed(3);
        let (mut model, frozen) = freeze(Graph::build(&spec(), &device).unwrap(), &["d1".to_string()]).unwrap();
        assert_eq!(frozen, vec!["d1.weight", "d1.bias"]);
        let before = named_tensors(&model);
        let optimizer: OptimizerSpec = toml::Value::Table(toml::from_str("adam = { lr = 0.1 }").unwrap())
            .try_into()
            .unwrap();
        let mut optim = optimizer.init(None).unwrap();
        let x = Tensor::<2>::from_floats([[1.0, -2.0, 0.5, 3.0], [0.1, 0.2, -0.3, 0.4]], &device);
        for _ in 0..5 {
            let out = model
                .forward(vec![crate::layers::value::Data::D2(x.clone())], true, true)
                .unwrap()
                .remove(0);
            let loss = out.data.d2().unwrap().powi_scalar(2).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.1, model, grads);
        }
        let after = named_tensors(&model);
        for (b, a) in before.iter().zip(&after) {
            if b.name.starts_with("d1.") {
                assert_eq!(b.values, a.values, "{} changed", b.name);
            } else {
                assert_ne!(b.values, a.values, "{} did not train", b.name);
            }
        }
        // The optimizer keeps no state for frozen parameters: Adam holds its moments for d2's two tensors only.
        let tensors = |record: String| -> usize {
            let tail = record
                .split("num_tensors: ")
                .nth(1)
                .expect("num_tensors in the record's Debug");
            tail.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let frozen_state = tensors(format!("{:?}", optim.to_record()));
        let mut all = Graph::build(&spec(), &device).unwrap();
        let mut optim_all = optimizer.init(None).unwrap();
        let out = all
            .forward(vec![crate::layers::value::Data::D2(x.clone())], true, true)
            .unwrap()
            .remove(0);
        let grads = GradientsParams::from_grads(out.data.d2().unwrap().powi_scalar(2).sum().backward(), &all);
        all = optim_all.step(0.1, all, grads);
        let all_state = tensors(format!("{:?}", optim_all.to_record()));
        assert!(
            frozen_state > 0 && all_state == 2 * frozen_state,
            "{frozen_state} vs {all_state}"
        );
        assert_eq!(all.nodes.len(), 2);
        let summary = model.summary();
        assert_eq!((summary.rows[0].trainable, summary.rows[0].frozen), (0, 40));
        assert_eq!((summary.rows[1].trainable, summary.rows[1].frozen), (18, 0));
    }

    #[test]
    fn a_pattern_that_matches_nothing_is_named() {
        let device = Device::default().autodiff();
        let e = freeze(Graph::build(&spec(), &device).unwrap(), &["d3.weight".to_string()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("'d3.weight' matches no parameter; did you mean `d1.weight`?"),
            "{e}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("conv1.weight", "conv1.weight"));
        assert!(glob_match("conv*", "conv1.bias"));
        assert!(glob_match("*.bias", "fc.bias"));
        assert!(glob_match("lstm.*_reverse", "lstm.weight_ih_l0_reverse"));
        assert!(glob_match("fc?.weight", "fc2.weight"));
        assert!(!glob_match("fc?.weight", "fc12.weight"));
        assert!(!glob_match("conv1", "conv1.weight"));
    }
}
