//! The search space of `graft tune`: a TOML file naming experiment keys by path
//! (`"train.optimizer.adam.lr" = { loguniform = [1e-4, 1e-2] }`, `"model.layers[1].dense.units" = { choice = [64,
//! 128] }`), how to search, and what to optimize. Paths are set on the experiment's own TOML, so any key the
//! experiment file can hold can be searched, and a value the experiment does not accept is the experiment's own
//! one-line error.

use std::collections::BTreeMap;
use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// How trials are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Every combination (continuous ranges at `points` values each).
    Grid,
    /// Independent seeded draws.
    #[default]
    Random,
    /// Successive halving (Jamieson & Talwalkar 2016; the synchronous form of ASHA/Hyperband's inner loop): random
    /// configurations on a small epoch budget, the best 1/eta promoted to eta times the budget, until one is left
    /// or the experiment's own epochs are reached.
    Halving,
}

/// One searched key's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    /// One of these TOML values.
    Choice(Vec<toml::Value>),
    /// Uniform between the bounds.
    Uniform([f64; 2]),
    /// Uniform in the logarithm between the (positive) bounds: learning rates, weight decay.
    Loguniform([f64; 2]),
    /// A whole number between the bounds, both included.
    Int([i64; 2]),
}

/// `[halving]`: the first rung's epochs and the promotion factor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HalvingSpec {
    #[serde(default = "one")]
    pub min_epochs: usize,
    #[serde(default = "three")]
    pub eta: usize,
}

fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn grid_points() -> usize {
    3
}

impl Default for HalvingSpec {
    fn default() -> Self {
        HalvingSpec { min_epochs: 1, eta: 3 }
    }
}

/// The whole space file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceSpec {
    #[serde(default)]
    pub method: Method,
    /// What to optimize: a logged value (`val_loss`, `val_accuracy`, `val_f1_macro`, ...); the best epoch of each
    /// trial counts. With `--folds`, the mean over the folds' held-out scores of the same metric.
    #[serde(default = "val_loss")]
    pub metric: String,
    /// `"min"` or `"max"`; by default losses and errors are minimized and everything else maximized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
    /// Values per continuous range in a grid.
    #[serde(default = "grid_points")]
    pub points: usize,
    #[serde(default)]
    pub halving: HalvingSpec,
    pub params: BTreeMap<String, Distribution>,
}

fn val_loss() -> String {
    "val_loss".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    Min,
    Max,
}

impl SpaceSpec {
    pub fn from_file(path: &Path) -> Result<SpaceSpec> {
        let text = std::fs::read_to_string(path).in_file(path)?;
        let space: SpaceSpec = toml::from_str(&text)
            .map_err(|e| Error::new(e.message().to_string()))
            .in_file(path)?;
        space.check().in_file(path)?;
        Ok(space)
    }

    pub fn check(&self) -> Result<()> {
        if self.params.is_empty() {
            return Err(Error::new("no parameters to search; add `[params]` with at least one key path").at("params"));
        }
        for (key, d) in &self.params {
            parse_path(key).at(format!("params.'{key}'"))?;
            let bad = match d {
                Distribution::Choice(v) if v.is_empty() => Some("choice needs at least one value".to_string()),
                Distribution::Uniform([a, b]) if !(a.is_finite() && b.is_finite() && a < b) => {
                    Some(format!("uniform needs [low, high] with low < high, found [{a}, {b}]"))
                }
                Distribution::Loguniform([a, b]) if !(*a > 0.0 && b.is_finite() && a < b) => Some(format!(
                    "loguniform needs [low, high] with 0 < low < high, found [{a}, {b}]"
                )),
                Distribution::Int([a, b]) if a > b => {
                    Some(format!("int needs [low, high] with low ≤ high, found [{a}, {b}]"))
                }
                _ => None,
            };
            if let Some(why) = bad {
                return Err(Error::new(why).at(format!("params.'{key}'")));
            }
        }
        if self.halving.eta < 2 || self.halving.min_epochs == 0 {
            return Err(Error::new(format!(
                "eta must be at least 2 and min_epochs at least 1, found eta {} and min_epochs {}",
                self.halving.eta, self.halving.min_epochs
            ))
            .at("halving"));
        }
        if self.points < 2 {
            return Err(Error::new(format!("points must be at least 2, found {}", self.points)).at("points"));
        }
        Ok(())
    }

    /// Whether a larger value of the metric is better.
    pub fn maximize(&self) -> bool {
        match self.goal {
            Some(g) => g == Goal::Max,
            None => {
                !(self.metric.ends_with("loss")
                    || self.metric.ends_with("error")
                    || self.metric.ends_with("rmse")
                    || self.metric.ends_with("mae")
                    || self.metric.ends_with("ece"))
            }
        }
    }

    /// Trial `index`'s values: a seeded draw per key.
    pub fn draw(&self, seed: u64, index: usize) -> BTreeMap<String, toml::Value> {
        let mut rng = crate::data::rng::seeded_rng(b"tune\0\0\0\0", seed, index as u64);
        self.params
            .iter()
            .map(|(key, d)| {
                let value = match d {
                    Distribution::Choice(v) => v[rng.random_range(0..v.len())].clone(),
                    Distribution::Uniform([a, b]) => toml::Value::Float(a + (b - a) * rng.random::<f64>()),
                    Distribution::Loguniform([a, b]) => {
                        toml::Value::Float((a.ln() + (b.ln() - a.ln()) * rng.random::<f64>()).exp())
                    }
                    Distribution::Int([a, b]) => toml::Value::Integer(rng.random_range(*a..=*b)),
                };
                (key.clone(), value)
            })
            .collect()
    }

    /// Every combination of the grid, in order (the last key varies fastest).
    pub fn grid(&self) -> Vec<BTreeMap<String, toml::Value>> {
        let axes: Vec<(String, Vec<toml::Value>)> = self
            .params
            .iter()
            .map(|(key, d)| {
                let n = self.points;
                let at = |i: usize| i as f64 / (n - 1) as f64;
                let values = match d {
                    Distribution::Choice(v) => v.clone(),
                    Distribution::Uniform([a, b]) => (0..n).map(|i| toml::Value::Float(a + (b - a) * at(i))).collect(),
                    Distribution::Loguniform([a, b]) => (0..n)
                        .map(|i| toml::Value::Float((a.ln() + (b.ln() - a.ln()) * at(i)).exp()))
                        .collect(),
                    Distribution::Int([a, b]) => (*a..=*b).map(toml::Value::Integer).collect(),
                };
                (key.clone(), values)
            })
            .collect();
        let mut out = vec![BTreeMap::new()];
        for (key, values) in &axes {
            out = out
                .into_iter()
                .flat_map(|partial| {
                    values.iter().map(move |v| {
                        let mut next = partial.clone();
                        next.insert(key.clone(), v.clone());
                        next
                    })
                })
                .collect();
        }
        out
    }
}

/// One step of a key path: a table key, or an index into an array.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `model.layers[1].dense.units` → `model`, `layers`, `[1]`, `dense`, `units`.
fn parse_path(path: &str) -> Result<Vec<Step>> {
    let mut steps = vec![];
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() {
            return Err(Error::new(format!(
                "'{path}' is not a key path: expected names joined by dots with [index] after arrays, as \
                 model.layers[1].dense.units"
            )));
        }
        steps.push(Step::Key(name.to_string()));
        while !rest.is_empty() {
            let close = rest
                .find(']')
                .ok_or_else(|| Error::new(format!("'{path}': an unclosed [")))?;
            let index: usize = rest[1..close]
                .parse()
                .map_err(|_| Error::new(format!("'{path}': '{}' is not an array index", &rest[1..close])))?;
            steps.push(Step::Index(index));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(Error::new(format!("'{path}': expected '.' or '[' after ']'")));
            }
        }
    }
    Ok(steps)
}

/// Sets `path` in the experiment document `doc` to `value`. Tables on the way are created when missing (so
/// `train.optimizer.adam.lr` works on an experiment that leaves the optimizer out); arrays must already hold the
/// index, and a step into a plain value is an error naming it.
pub fn set_path(doc: &mut toml::Table, path: &str, value: toml::Value) -> Result<()> {
    // The walk treats the root like any other table: the document is moved into a value and back.
    let mut root = toml::Value::Table(std::mem::take(doc));
    let result = set_in(&mut root, path, value);
    if let toml::Value::Table(t) = root {
        *doc = t;
    }
    result
}

fn set_in(root: &mut toml::Value, path: &str, value: toml::Value) -> Result<()> {
    let steps = parse_path(path)?;
    let (last, before) = steps.split_last().ok_or_else(|| Error::new("an empty key path"))?;
    let mut here: &mut toml::Value = root;
    let mut walked = String::new();
    for step in before {
        here = match step {
            Step::Key(k) => {
                let table = here
                    .as_table_mut()
                    .ok_or_else(|| Error::new(format!("'{walked}' is not a table, so it has no key '{k}'")))?;
                table
                    .entry(k.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            }
            Step::Index(i) => {
                let array = here
                    .as_array_mut()
                    .ok_or_else(|| Error::new(format!("'{walked}' is not an array, so it has no [{i}]")))?;
                let len = array.len();
                array
                    .get_mut(*i)
                    .ok_or_else(|| Error::new(format!("'{walked}' has {len} entries, so [{i}] is outside it")))?
            }
        };
        walked.push_str(&match step {
            Step::Key(k) if walked.is_empty() => k.clone(),
            Step::Key(k) => format!(".{k}"),
            Step::Index(i) => format!("[{i}]"),
        });
    }
    match last {
        Step::Key(k) => {
            let table = here
                .as_table_mut()
                .ok_or_else(|| Error::new(format!("'{walked}' is not a table, so it has no key '{k}'")))?;
            table.insert(k.clone(), value);
        }
        Step::Index(i) => {
            let array = here
                .as_array_mut()
                .ok_or_else(|| Error::new(format!("'{walked}' is not an array, so it has no [{i}]")))?;
            let len = array.len();
            *array
                .get_mut(*i)
                .ok_or_else(|| Error::new(format!("'{walked}' has {len} entries, so [{i}] is outside it")))? = value;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn paths_reach_nested_tables_and_array_entries() {
        let mut d = doc("[model]\nlayers = [{ flatten = {} }, { dense = { units = 32 } }]\n[train]\nepochs = 3\n");
        set_path(&mut d, "model.layers[1].dense.units", toml::Value::Integer(128)).unwrap();
        set_path(&mut d, "train.optimizer.adam.lr", toml::Value::Float(0.01)).unwrap();
        assert_eq!(d["model"]["layers"][1]["dense"]["units"].as_integer(), Some(128));
        assert_eq!(d["train"]["optimizer"]["adam"]["lr"].as_float(), Some(0.01));
        let e = set_path(&mut d, "model.layers[5].dense.units", toml::Value::Integer(1)).unwrap_err();
        assert!(
            e.to_string()
                .contains("'model.layers' has 2 entries, so [5] is outside it"),
            "{e}"
        );
        let e = set_path(&mut d, "train.epochs.x", toml::Value::Integer(1)).unwrap_err();
        assert!(e.to_string().contains("'train.epochs' is not a table"), "{e}");
        assert!(parse_path("model..x").is_err());
        assert!(parse_path("model.layers[x]").is_err());
    }

    #[test]
    fn draws_are_seeded_and_inside_their_ranges() {
        let space: SpaceSpec = toml::from_str(
            r#"
[params]
"train.optimizer.adam.lr" = { loguniform = [1e-4, 1e-2] }
"model.layers[1].dense.units" = { choice = [64, 128, 256] }
"train.batch_size" = { int = [16, 64] }
"#,
        )
        .unwrap();
        space.check().unwrap();
        for i in 0..50 {
            let a = space.draw(7, i);
            assert_eq!(a, space.draw(7, i));
            let lr = a["train.optimizer.adam.lr"].as_float().unwrap();
            assert!((1e-4..=1e-2).contains(&lr));
            let b = a["train.batch_size"].as_integer().unwrap();
            assert!((16..=64).contains(&b));
        }
        assert_ne!(space.draw(7, 0), space.draw(8, 0));
        assert!(!space.maximize());
        // The grid: 3 log-spaced rates × 3 choices × 49 batch sizes.
        assert_eq!(space.grid().len(), 3 * 3 * 49);
    }

    #[test]
    fn bad_spaces_are_refused() {
        let bad = |text: &str| {
            let s: std::result::Result<SpaceSpec, _> = toml::from_str(text);
            match s {
                Ok(s) => s.check().unwrap_err().to_string(),
                Err(e) => e.message().to_string(),
            }
        };
        assert!(bad("[params]\n\"a.b\" = { loguniform = [0.0, 1.0] }").contains("0 < low < high"));
        assert!(bad("[params]\n\"a.b\" = { choice = [] }").contains("at least one value"));
        assert!(bad("[params]\n\"a.b\" = { normal = [0.0, 1.0] }").contains("normal"));
        assert!(bad("[params]\n").contains("no parameters"));
        assert!(bad("metric = \"val_loss\"\n[params]\n\"a[\" = { int = [1, 2] }").contains("unclosed"));
    }
}
