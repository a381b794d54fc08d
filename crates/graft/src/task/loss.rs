//! Losses, computed from logits (a final softmax/sigmoid is left out of the forward pass for them), with
//! PyTorch's reductions: `mean` over rows (and elements), class weights normalizing by the sum of the weights
//! of the targets as `nn.CrossEntropyLoss(weight=...)` does.

use burn::prelude::*;
use burn::tensor::Int;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `loss = "mse"` or `loss = { huber = { delta = 1.0 } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LossInput", into = "LossInput")]
pub enum LossSpec {
    Mse,
    Mae,
    Huber {
        delta: f64,
    },
    /// Sigmoid + binary cross-entropy per output; `pos_weight` multiplies the positive term (per output or one
    /// value for all).
    BinaryCrossentropy {
        pos_weight: Option<Vec<f64>>,
    },
    /// Softmax + cross-entropy against one-hot or soft (probability) targets.
    CategoricalCrossentropy {
        label_smoothing: f64,
    },
    /// Softmax + cross-entropy against class indices.
    SparseCategoricalCrossentropy {
        label_smoothing: f64,
    },
    /// A linear SVM's hinge loss on the raw scores, per output (as Keras' `hinge`): 0/1 targets become −1/+1 and
    /// the loss is mean(max(0, 1 − y·score)). One output: binary; several: multi-label.
    Hinge,
    /// A multi-class SVM (Weston–Watkins), torch's `MultiMarginLoss`: Σ_{j≠y} max(0, 1 − score_y + score_j) / K.
    MulticlassHinge,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum LossInput {
    Name(String),
    Table(LossTable),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
enum LossTable {
    Huber {
        #[serde(default = "one")]
        delta: f64,
    },
    BinaryCrossentropy {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pos_weight: Option<Vec<f64>>,
    },
    CategoricalCrossentropy {
        #[serde(default)]
        label_smoothing: f64,
    },
    SparseCategoricalCrossentropy {
        #[serde(default)]
        label_smoothing: f64,
    },
}

fn one() -> f64 {
    1.0
}

/// The losses that take options (`{ huber = { delta = 2.0 } }`).
const LOSS_TABLES: [&str; 4] = [
    "huber",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HuberOptions {
    #[serde(default = "one")]
    delta: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BinaryOptions {
    #[serde(default)]
    pos_weight: Option<Vec<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SmoothingOptions {
    #[serde(default)]
    label_smoothing: f64,
}

/// A name or a one-key table, decided by the value's shape, so a wrong option names itself and its key path.
impl<'de> Deserialize<'de> for LossInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{Error as _, MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LossInput;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(
                    f,
                    "a loss name ({}) or a table such as {{ huber = {{ delta = 1.0 }} }}",
                    LOSS_NAMES.join(", ")
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<LossInput, E> {
                Ok(LossInput::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<LossInput, A::Error> {
                let Some(kind) = map.next_key::<String>()? else {
                    return Err(A::Error::custom(format!(
                        "an empty table; losses with options: {}",
                        LOSS_TABLES.join(", ")
                    )));
                };
                let table = match kind.as_str() {
                    "huber" => LossTable::Huber {
                        delta: map.next_value::<HuberOptions>()?.delta,
                    },
                    "binary_crossentropy" => LossTable::BinaryCrossentropy {
                        pos_weight: map.next_value::<BinaryOptions>()?.pos_weight,
                    },
                    "categorical_crossentropy" => LossTable::CategoricalCrossentropy {
                        label_smoothing: map.next_value::<SmoothingOptions>()?.label_smoothing,
                    },
                    "sparse_categorical_crossentropy" => LossTable::SparseCategoricalCrossentropy {
                        label_smoothing: map.next_value::<SmoothingOptions>()?.label_smoothing,
                    },
                    name if LOSS_NAMES.contains(&name) => {
                        return Err(A::Error::custom(format!(
                            "`{name}` takes no options; write loss = \"{name}\""
                        )));
                    }
                    other => {
                        return Err(A::Error::custom(format!(
                            "unknown loss `{other}`{}; losses with options: {}",
                            graft_data::suggest::hint(other, LOSS_NAMES),
                            LOSS_TABLES.join(", ")
                        )));
                    }
                };
                if let Some(other) = map.next_key::<String>()? {
                    return Err(A::Error::custom(format!(
                        "one loss per table, found `{kind}` and `{other}`"
                    )));
                }
                Ok(LossInput::Table(table))
            }
        }
        d.deserialize_any(V)
    }
}

pub const LOSS_NAMES: [&str; 8] = [
    "mse",
    "mae",
    "huber",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "hinge",
    "multiclass_hinge",
];

impl TryFrom<LossInput> for LossSpec {
    type Error = String;
    fn try_from(input: LossInput) -> std::result::Result<Self, String> {
        let spec = match input {
            LossInput::Name(n) => match n.as_str() {
                "mse" | "mean_squared_error" => LossSpec::Mse,
                "mae" | "mean_absolute_error" => LossSpec::Mae,
                "huber" => LossSpec::Huber { delta: 1.0 },
                "binary_crossentropy" => LossSpec::BinaryCrossentropy { pos_weight: None },
                "categorical_crossentropy" => LossSpec::CategoricalCrossentropy { label_smoothing: 0.0 },
                "sparse_categorical_crossentropy" => LossSpec::SparseCategoricalCrossentropy { label_smoothing: 0.0 },
                "hinge" => LossSpec::Hinge,
                "multiclass_hinge" | "multi_margin" => LossSpec::MulticlassHinge,
                other => {
                    return Err(format!(
                        "unknown loss `{other}`{}; valid losses: {}",
                        graft_data::suggest::hint(other, LOSS_NAMES),
                        LOSS_NAMES.join(", ")
                    ));
                }
            },
            LossInput::Table(LossTable::Huber { delta }) => LossSpec::Huber { delta },
            LossInput::Table(LossTable::BinaryCrossentropy { pos_weight }) => {
                LossSpec::BinaryCrossentropy { pos_weight }
            }
            LossInput::Table(LossTable::CategoricalCrossentropy { label_smoothing }) => {
                LossSpec::CategoricalCrossentropy { label_smoothing }
            }
            LossInput::Table(LossTable::SparseCategoricalCrossentropy { label_smoothing }) => {
                LossSpec::SparseCategoricalCrossentropy { label_smoothing }
            }
        };
        match &spec {
            LossSpec::CategoricalCrossentropy { label_smoothing }
            | LossSpec::SparseCategoricalCrossentropy { label_smoothing }
                if !(0.0..1.0).contains(label_smoothing) =>
            {
                Err(format!("label_smoothing must be in [0, 1), found {label_smoothing}"))
            }
            LossSpec::Huber { delta } if *delta <= 0.0 => Err(format!("delta must be positive, found {delta}")),
            _ => Ok(spec),
        }
    }
}

impl From<LossSpec> for LossInput {
    fn from(spec: LossSpec) -> Self {
        match spec {
            LossSpec::Mse => LossInput::Name("mse".into()),
            LossSpec::Mae => LossInput::Name("mae".into()),
            LossSpec::Hinge => LossInput::Name("hinge".into()),
            LossSpec::MulticlassHinge => LossInput::Name("multiclass_hinge".into()),
            LossSpec::Huber { delta } => LossInput::Table(LossTable::Huber { delta }),
            LossSpec::BinaryCrossentropy { pos_weight } => {
                LossInput::Table(LossTable::BinaryCrossentropy { pos_weight })
            }
            LossSpec::CategoricalCrossentropy { label_smoothing } => {
                LossInput::Table(LossTable::CategoricalCrossentropy { label_smoothing })
            }
            LossSpec::SparseCategoricalCrossentropy { label_smoothing } => {
                LossInput::Table(LossTable::SparseCategoricalCrossentropy { label_smoothing })
            }
        }
    }
}

/// What the model is asked to predict, as the loss implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One class among several (softmax).
    Multiclass,
    /// One sigmoid output: class 1 vs 0.
    Binary,
    /// Several independent sigmoid outputs.
    Multilabel,
    Regression,
}

/// Targets of one batch, as tensors.
pub enum Target {
    /// Class indices `[N]`.
    Classes(Tensor<1, Int>),
    /// Values `[N, K]` (regression, one-hot or soft labels, 0/1 labels).
    Values(Tensor<2>),
}

impl LossSpec {
    pub fn task(&self, outputs: usize) -> Task {
        match self {
            LossSpec::Mse | LossSpec::Mae | LossSpec::Huber { .. } => Task::Regression,
            LossSpec::BinaryCrossentropy { .. } | LossSpec::Hinge if outputs == 1 => Task::Binary,
            LossSpec::BinaryCrossentropy { .. } | LossSpec::Hinge => Task::Multilabel,
            _ => Task::Multiclass,
        }
    }

    /// Whether class weights act inside this loss (PyTorch's `CrossEntropyLoss(weight=...)`, hard labels) rather
    /// than as per-row weights.
    pub fn takes_class_weights(&self) -> bool {
        matches!(
            self,
            LossSpec::SparseCategoricalCrossentropy { .. } | LossSpec::CategoricalCrossentropy { .. }
        )
    }

    /// Mean loss of a batch. `logits [N, K]`; `weights [N]` per row (sample weights, and class weights for losses
    /// that do not [take them](LossSpec::takes_class_weights)), or `None`; `class_weights [K]` for cross-entropy
    /// against class labels, applied as PyTorch does: loss_i = (1-ε)·w_{y_i}·(−log p_{i,y_i}) + ε/K·Σ_c w_c·(−log
    /// p_{i,c}), mean = Σ s_i·loss_i / Σ s_i·w_{y_i}.
    pub fn compute(
        &self,
        logits: Tensor<2>,
        target: Target,
        weights: Option<Tensor<1>>,
        class_weights: Option<&[f32]>,
    ) -> Result<Tensor<1>> {
        if let (Some(cw), Target::Classes(labels), true) = (class_weights, &target, self.takes_class_weights()) {
            return self.class_weighted_cross_entropy(logits, labels.clone(), weights, cw);
        }
        let per_row = self.per_row(logits, target)?;
        Ok(match weights {
            None => per_row.mean(),
            Some(w) => {
                let total = w.clone().sum().clamp_min(1e-12);
                (per_row * w).sum() / total
            }
        })
    }

    /// The loss of every row, `[N]` (the mean over a row's outputs): `logits [N, K]` against `target`. Also the
    /// per-example reconstruction error an autoencoder scores anomalies by.
    pub fn per_row(&self, logits: Tensor<2>, target: Target) -> Result<Tensor<1>> {
        let [_, k] = logits.dims();
        let device = logits.device();
        let per_row: Tensor<1> = match (self, target) {
            (LossSpec::Mse, Target::Values(t)) => (logits - t).powi_scalar(2).mean_dim(1).squeeze_dim(1),
            (LossSpec::Mae, Target::Values(t)) => (logits - t).abs().mean_dim(1).squeeze_dim(1),
            (LossSpec::Huber { delta }, Target::Values(t)) => {
                let d = (logits - t).abs();
                let quadratic = d.clone().powi_scalar(2).mul_scalar(0.5);
                let linear = d.clone().sub_scalar(0.5 * delta).mul_scalar(*delta);
                quadratic
                    .mask_where(d.greater_elem(*delta), linear)
                    .mean_dim(1)
                    .squeeze_dim(1)
            }
            (LossSpec::BinaryCrossentropy { pos_weight }, target) => {
                let t = match target {
                    Target::Values(t) => t,
                    Target::Classes(c) => c.float().unsqueeze_dim::<2>(1),
                };
                // log(1 + e^-|x|) + max(-x, 0) = -log σ(x), computed stably.
                let softplus_neg = logits.clone().abs().neg().exp().log1p() + logits.clone().neg().clamp_min(0.0);
                let per = match pos_weight {
                    None => (logits.clone() - logits.clone() * t.clone()) + softplus_neg,
                    Some(p) => {
                        let p = if p.len() == 1 { vec![p[0]; k] } else { p.clone() };
                        if p.len() != k {
                            return Err(Error::new(format!("pos_weight has {} values for {k} outputs", p.len())));
                        }
                        let p = Tensor::<1>::from_floats(
                            p.iter().map(|&v| v as f32).collect::<Vec<_>>().as_slice(),
                            &device,
                        )
                        .unsqueeze_dim::<2>(0);
                        let coef = (p.sub_scalar(1.0) * t.clone()).add_scalar(1.0);
                        (t.neg().add_scalar(1.0)) * logits.clone() + coef * softplus_neg
                    }
                };
                per.mean_dim(1).squeeze_dim(1)
            }
            (LossSpec::Hinge, target) => {
                let t = match target {
                    Target::Values(t) => t,
                    Target::Classes(c) => c.float().unsqueeze_dim::<2>(1),
                };
                let signs = t.mul_scalar(2.0).sub_scalar(1.0);
                (signs * logits)
                    .neg()
                    .add_scalar(1.0)
                    .clamp_min(0.0)
                    .mean_dim(1)
                    .squeeze_dim(1)
            }
            (LossSpec::MulticlassHinge, Target::Classes(c)) => {
                let own = logits.clone().gather(1, c.unsqueeze_dim::<2>(1));
                // The j = y term is max(0, 1) = 1 in the sum over every j; take it back out.
                let margins = (logits - own).add_scalar(1.0).clamp_min(0.0);
                margins
                    .sum_dim(1)
                    .squeeze_dim::<1>(1)
                    .sub_scalar(1.0)
                    .div_scalar(k as f64)
            }
            (LossSpec::CategoricalCrossentropy { label_smoothing }, target) => {
                let t = match target {
                    Target::Values(t) => t,
                    Target::Classes(c) => c.one_hot::<2>(k).float(),
                };
                let t = if *label_smoothing > 0.0 {
                    t.mul_scalar(1.0 - label_smoothing)
                        .add_scalar(label_smoothing / k as f64)
                } else {
                    t
                };
                (log_softmax(logits, 1) * t).sum_dim(1).squeeze_dim(1).neg()
            }
            (LossSpec::SparseCategoricalCrossentropy { label_smoothing }, Target::Classes(c)) => {
                let logp = log_softmax(logits, 1);
                let nll = logp
                    .clone()
                    .gather(1, c.unsqueeze_dim::<2>(1))
                    .squeeze_dim::<1>(1)
                    .neg();
                if *label_smoothing > 0.0 {
                    let smooth = logp.mean_dim(1).squeeze_dim::<1>(1).neg();
                    nll.mul_scalar(1.0 - label_smoothing) + smooth.mul_scalar(*label_smoothing)
                } else {
                    nll
                }
            }
            (_, _) => {
                return Err(Error::new(format!(
                    "the loss and the targets do not fit: {self:?} needs {}",
                    if matches!(
                        self,
                        LossSpec::SparseCategoricalCrossentropy { .. } | LossSpec::MulticlassHinge
                    ) {
                        "class labels"
                    } else {
                        "target values"
                    }
                )));
            }
        };
        Ok(per_row)
    }
}

impl LossSpec {
    fn class_weighted_cross_entropy(
        &self,
        logits: Tensor<2>,
        labels: Tensor<1, Int>,
        sample_weights: Option<Tensor<1>>,
        class_weights: &[f32],
    ) -> Result<Tensor<1>> {
        let [n, k] = logits.dims();
        if class_weights.len() != k {
            return Err(Error::new(format!(
                "{} class weights for {k} outputs",
                class_weights.len()
            )));
        }
        let device = logits.device();
        let smoothing = match self {
            LossSpec::SparseCategoricalCrossentropy { label_smoothing }
            | LossSpec::CategoricalCrossentropy { label_smoothing } => *label_smoothing,
            _ => 0.0,
        };
        let w = Tensor::<1>::from_floats(class_weights, &device);
        let w_y = w.clone().gather(0, labels.clone());
        let logp = log_softmax(logits, 1);
        let nll = logp
            .clone()
            .gather(1, labels.unsqueeze_dim::<2>(1))
            .squeeze_dim::<1>(1)
            .neg();
        let mut per_row = nll * w_y.clone();
        if smoothing > 0.0 {
            let smooth = (logp * w.unsqueeze_dim::<2>(0)).sum_dim(1).squeeze_dim::<1>(1).neg();
            per_row = per_row.mul_scalar(1.0 - smoothing) + smooth.mul_scalar(smoothing / k as f64);
        }
        let s = sample_weights.unwrap_or_else(|| Tensor::<1>::ones([n], &device));
        let total = (w_y * s.clone()).sum().clamp_min(1e-12);
        Ok((per_row * s).sum() / total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Tensor<2> {
        Tensor::<2>::from_floats([[1.0, -0.5, 2.0], [0.3, 0.1, -1.2]], &Device::default())
    }

    fn value(t: Tensor<1>) -> f64 {
        t.into_scalar::<f32>() as f64
    }

    // Reference values: tools/reference/losses.py (torch.nn.functional on the same numbers).
    #[test]
    fn sparse_cross_entropy_matches_pytorch() {
        let labels = Tensor::<1, Int>::from_ints([2, 1], &Device::default());
        let l = LossSpec::SparseCategoricalCrossentropy { label_smoothing: 0.0 };
        assert!(
            (value(
                l.compute(logits(), Target::Classes(labels.clone()), None, None)
                    .unwrap()
            ) - 0.642_700)
                .abs()
                < 1e-5
        );
        let l = LossSpec::SparseCategoricalCrossentropy { label_smoothing: 0.1 };
        assert!((value(l.compute(logits(), Target::Classes(labels), None, None).unwrap()) - 0.719_367).abs() < 1e-5);
    }

    #[test]
    fn weighted_cross_entropy_normalizes_by_weight_sum() {
        let labels = Tensor::<1, Int>::from_ints([2, 1], &Device::default());
        let w = Tensor::<1>::from_floats([0.5, 2.0], &Device::default());
        let l = LossSpec::SparseCategoricalCrossentropy { label_smoothing: 0.0 };
        assert!((value(l.compute(logits(), Target::Classes(labels), Some(w), None).unwrap()) - 0.805_397).abs() < 1e-5);
    }

    #[test]
    fn svm_hinge_losses_match_pytorch() {
        let device = Device::default();
        let t = Tensor::<2>::from_floats([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], &device);
        let hinge = value(
            LossSpec::Hinge
                .compute(logits(), Target::Values(t), None, None)
                .unwrap(),
        );
        assert!((hinge - 0.716_667).abs() < 1e-5, "{hinge}");
        let labels = Tensor::<1, Int>::from_ints([1, 0], &device);
        let first = logits().narrow(1, 0, 1);
        let binary = value(
            LossSpec::Hinge
                .compute(first, Target::Classes(labels), None, None)
                .unwrap(),
        );
        assert!((binary - 0.65).abs() < 1e-5, "{binary}");
        let labels = Tensor::<1, Int>::from_ints([2, 1], &device);
        let multi = value(
            LossSpec::MulticlassHinge
                .compute(logits(), Target::Classes(labels), None, None)
                .unwrap(),
        );
        assert!((multi - 0.2).abs() < 1e-5, "{multi}");
        assert_eq!(LossSpec::Hinge.task(1), Task::Binary);
        assert_eq!(LossSpec::MulticlassHinge.task(3), Task::Multiclass);
    }

    #[test]
    fn regression_losses_match_pytorch() {
        let t = Tensor::<2>::from_floats([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], &Device::default());
        let cases = [
            (LossSpec::Mse, 0.698_333),
            (LossSpec::Mae, 0.75),
            (LossSpec::Huber { delta: 1.0 }, 0.345_833),
        ];
        for (l, expected) in cases {
            let got = value(l.compute(logits(), Target::Values(t.clone()), None, None).unwrap());
            assert!((got - expected).abs() < 1e-5, "{l:?}: {got} vs {expected}");
        }
    }

    #[test]
    fn binary_cross_entropy_with_pos_weight_matches_pytorch() {
        let t = Tensor::<2>::from_floats([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], &Device::default());
        let l = LossSpec::BinaryCrossentropy { pos_weight: None };
        assert!((value(l.compute(logits(), Target::Values(t.clone()), None, None).unwrap()) - 0.579_384).abs() < 1e-5);
        let l = LossSpec::BinaryCrossentropy {
            pos_weight: Some(vec![3.0]),
        };
        assert!((value(l.compute(logits(), Target::Values(t), None, None).unwrap()) - 0.806_478).abs() < 1e-5);
    }

    #[test]
    fn categorical_cross_entropy_with_soft_labels_matches_pytorch() {
        let soft = Tensor::<2>::from_floats([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0]], &Device::default());
        let l = LossSpec::CategoricalCrossentropy { label_smoothing: 0.0 };
        assert!(
            (value(l.compute(logits(), Target::Values(soft.clone()), None, None).unwrap()) - 0.892_700).abs() < 1e-5
        );
        let l = LossSpec::CategoricalCrossentropy { label_smoothing: 0.2 };
        assert!((value(l.compute(logits(), Target::Values(soft), None, None).unwrap()) - 0.996_034).abs() < 1e-5);
        // Hard labels through the categorical loss equal the sparse loss.
        let labels = Tensor::<1, Int>::from_ints([2, 1], &Device::default());
        let l = LossSpec::CategoricalCrossentropy { label_smoothing: 0.0 };
        assert!((value(l.compute(logits(), Target::Classes(labels), None, None).unwrap()) - 0.642_700).abs() < 1e-5);
    }

    #[test]
    fn parses_names_and_tables_with_suggestions() {
        #[derive(Deserialize)]
        struct T {
            loss: LossSpec,
        }
        let t: T = toml::from_str("loss = { huber = { delta = 2.0 } }").unwrap();
        assert_eq!(t.loss, LossSpec::Huber { delta: 2.0 });
        let e = toml::from_str::<T>("loss = \"sparse_categorical_crossentropie\"")
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("did you mean `sparse_categorical_crossentropy`"),
            "{e}"
        );
    }
}
