//! The schedules as written in the experiment file (`ScheduleSpec` and its option enums, with their defaults),
//! and the checks of their values that the runtime schedules share.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A learning-rate schedule as written in the experiment file, externally tagged: `"constant"`,
/// `{ step = { step_size = 30 } }`, `{ warmup = { warmup_steps = 500, then = { cosine = {} } } }`, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleSpec {
    /// The optimizer's lr throughout.
    #[default]
    Constant,
    /// torch `StepLR`: multiply by `gamma` every `step_size` epochs.
    Step {
        step_size: usize,
        #[serde(default = "default_step_gamma")]
        gamma: f64,
    },
    /// torch `ExponentialLR`: multiply by `gamma` every epoch.
    Exponential { gamma: f64 },
    /// torch `CosineAnnealingLR`, per epoch, from the optimizer's lr down to `eta_min` over `t_max` epochs
    /// (default: the run's epochs; after a warm-up, the epochs left after it).
    Cosine {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        t_max: Option<usize>,
        #[serde(default)]
        eta_min: f64,
    },
    /// Linear warm-up over `warmup_steps` optimizer steps from `start_factor × lr` to `lr`, then `then`
    /// (default: constant), counted from the end of the warm-up.
    Warmup {
        warmup_steps: usize,
        #[serde(default)]
        start_factor: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        then: Option<Box<ScheduleSpec>>,
    },
    /// torch `OneCycleLR`, per optimizer step. Overrides the optimizer's lr: starts at `max_lr / div_factor`,
    /// rises to `max_lr`, ends at `max_lr / div_factor / final_div_factor`.
    OneCycle {
        max_lr: f64,
        #[serde(default = "default_pct_start")]
        pct_start: f64,
        #[serde(default = "default_div_factor")]
        div_factor: f64,
        #[serde(default = "default_final_div_factor")]
        final_div_factor: f64,
        #[serde(default)]
        anneal: Anneal,
        #[serde(default)]
        three_phase: bool,
    },
    /// ULMFiT's slanted triangular learning rate (Howard & Ruder 2018, eq. 3), per optimizer step: a short linear
    /// rise from `lr / ratio` to the optimizer's lr over the first `cut_frac` of the steps, then a long linear decay
    /// back to `lr / ratio`.
    SlantedTriangular {
        #[serde(default = "default_cut_frac")]
        cut_frac: f64,
        #[serde(default = "default_ratio")]
        ratio: f64,
    },
    /// torch `ReduceLROnPlateau` on the logged value `monitor`, checked at the end of each epoch.
    ReduceOnPlateau {
        #[serde(default = "default_monitor")]
        monitor: String,
        #[serde(default)]
        mode: Mode,
        #[serde(default = "default_plateau_factor")]
        factor: f64,
        #[serde(default = "default_patience")]
        patience: usize,
        #[serde(default = "default_threshold")]
        threshold: f64,
        #[serde(default)]
        threshold_mode: ThresholdMode,
        #[serde(default)]
        cooldown: usize,
        #[serde(default)]
        min_lr: f64,
    },
}

fn default_cut_frac() -> f64 {
    0.1
}
fn default_ratio() -> f64 {
    32.0
}
fn default_step_gamma() -> f64 {
    0.1
}
fn default_pct_start() -> f64 {
    0.3
}
fn default_div_factor() -> f64 {
    25.0
}
fn default_final_div_factor() -> f64 {
    1e4
}
fn default_monitor() -> String {
    "val_loss".to_string()
}
fn default_plateau_factor() -> f64 {
    0.1
}
fn default_patience() -> usize {
    10
}
fn default_threshold() -> f64 {
    1e-4
}

/// Whether the monitored value should go down (`min`, a loss) or up (`max`, an accuracy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Min,
    Max,
}

/// How one-cycle moves between its phase end points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Anneal {
    #[default]
    Cos,
    Linear,
}

/// Whether `threshold` is relative to the best value (`rel`) or an absolute amount (`abs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMode {
    #[default]
    Rel,
    Abs,
}

impl ScheduleSpec {
    /// The variant's key in the experiment file (`"one_cycle"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ScheduleSpec::Constant => "constant",
            ScheduleSpec::Step { .. } => "step",
            ScheduleSpec::Exponential { .. } => "exponential",
            ScheduleSpec::Cosine { .. } => "cosine",
            ScheduleSpec::Warmup { .. } => "warmup",
            ScheduleSpec::OneCycle { .. } => "one_cycle",
            ScheduleSpec::SlantedTriangular { .. } => "slanted_triangular",
            ScheduleSpec::ReduceOnPlateau { .. } => "reduce_on_plateau",
        }
    }
}

pub(super) fn check_base_lr(base_lr: f64) -> Result<()> {
    if base_lr.is_finite() && base_lr >= 0.0 {
        Ok(())
    } else {
        Err(Error::new(format!(
            "the optimizer's lr must be a finite number >= 0, found {base_lr}"
        )))
    }
}

pub(super) fn positive(key: &str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Error::new(format!("expected a finite number > 0, found {value}")).at(key))
    }
}

pub(super) fn non_negative(key: &str, value: f64) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(Error::new(format!("expected a finite number >= 0, found {value}")).at(key))
    }
}

pub(super) fn fraction(key: &str, value: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Error::new(format!("expected a number in [0, 1], found {value}")).at(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::schedule::Scheduler;
    use crate::train::schedule::tests::{BASE_LR, Wrapper, plateau_default};

    fn new_err(spec: &str) -> Error {
        let spec = toml::from_str::<Wrapper>(&format!("schedule = {spec}"))
            .unwrap()
            .schedule;
        Scheduler::new(&spec, BASE_LR, 10, 10).unwrap_err()
    }

    #[test]
    fn invalid_values_are_errors_naming_the_key() {
        let cases = [
            ("{ step = { step_size = 3, gamma = 0 } }", "step.gamma"),
            ("{ step = { step_size = 0 } }", "step.step_size"),
            ("{ exponential = { gamma = -0.5 } }", "exponential.gamma"),
            ("{ cosine = { t_max = 0 } }", "cosine.t_max"),
            ("{ cosine = { eta_min = -1 } }", "cosine.eta_min"),
            ("{ warmup = { warmup_steps = 0 } }", "warmup.warmup_steps"),
            (
                "{ warmup = { warmup_steps = 5, start_factor = 1.5 } }",
                "warmup.start_factor",
            ),
            (
                "{ warmup = { warmup_steps = 5, then = { exponential = { gamma = 0 } } } }",
                "warmup.then.exponential.gamma",
            ),
            (
                "{ warmup = { warmup_steps = 5, then = { one_cycle = { max_lr = 1 } } } }",
                "warmup.then",
            ),
            ("{ one_cycle = { max_lr = 0.1, pct_start = 0 } }", "one_cycle.pct_start"),
            ("{ one_cycle = { max_lr = 0.1, pct_start = 1 } }", "one_cycle.pct_start"),
            (
                "{ one_cycle = { max_lr = 0.1, pct_start = 0.01 } }",
                "one_cycle.pct_start",
            ), // 1 step: empty phase
            (
                "{ one_cycle = { max_lr = 0.1, three_phase = true, pct_start = 0.6 } }",
                "one_cycle.pct_start",
            ),
            ("{ one_cycle = { max_lr = 0 } }", "one_cycle.max_lr"),
            (
                "{ one_cycle = { max_lr = 0.1, div_factor = 0 } }",
                "one_cycle.div_factor",
            ),
            (
                "{ one_cycle = { max_lr = 0.1, final_div_factor = -1 } }",
                "one_cycle.final_div_factor",
            ),
            ("{ reduce_on_plateau = { factor = 1 } }", "reduce_on_plateau.factor"),
            ("{ reduce_on_plateau = { monitor = '' } }", "reduce_on_plateau.monitor"),
            (
                "{ reduce_on_plateau = { threshold = -0.1 } }",
                "reduce_on_plateau.threshold",
            ),
            ("{ reduce_on_plateau = { min_lr = -0.1 } }", "reduce_on_plateau.min_lr"),
        ];
        for (spec, key) in cases {
            let err = new_err(spec);
            assert_eq!(err.location.as_deref(), Some(key), "{spec}: {err}");
        }
        let err = new_err("{ step = { step_size = 3, gamma = 0 } }");
        assert_eq!(err.to_string(), "step.gamma: expected a finite number > 0, found 0");

        let err = Scheduler::new(&ScheduleSpec::Constant, -1.0, 10, 10).unwrap_err();
        assert!(err.message.contains("lr"), "{err}");
        let spec = toml::from_str::<Wrapper>("schedule = { one_cycle = { max_lr = 0.1 } }")
            .unwrap()
            .schedule;
        assert!(
            Scheduler::new(&spec, 0.1, 10, 0).is_err(),
            "one-cycle needs the run's length"
        );
        // The optimizer's lr does not matter to one-cycle.
        assert!(Scheduler::new(&spec, f64::NAN, 10, 10).is_ok());
    }

    #[derive(Debug, Deserialize)]
    struct Experiment {
        train: Train,
    }

    #[derive(Debug, Deserialize)]
    struct Train {
        schedule: ScheduleSpec,
    }

    fn parse(text: &str) -> ScheduleSpec {
        toml::from_str::<Wrapper>(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .schedule
    }

    #[test]
    fn every_variant_deserializes_from_toml_with_defaults() {
        let experiment: Experiment = toml::from_str("[train]\nschedule = { cosine = { t_max = 30 } }").unwrap();
        assert_eq!(
            experiment.train.schedule,
            ScheduleSpec::Cosine {
                t_max: Some(30),
                eta_min: 0.0
            }
        );

        assert_eq!(parse("schedule = \"constant\""), ScheduleSpec::Constant);
        assert_eq!(
            parse("schedule = { step = { step_size = 30 } }"),
            ScheduleSpec::Step {
                step_size: 30,
                gamma: 0.1
            }
        );
        assert_eq!(
            parse("schedule = { step = { step_size = 2, gamma = 0.5 } }"),
            ScheduleSpec::Step {
                step_size: 2,
                gamma: 0.5
            }
        );
        assert_eq!(
            parse("schedule = { exponential = { gamma = 0.95 } }"),
            ScheduleSpec::Exponential { gamma: 0.95 }
        );
        assert_eq!(
            parse("schedule = { cosine = {} }"),
            ScheduleSpec::Cosine {
                t_max: None,
                eta_min: 0.0
            }
        );
        assert_eq!(
            parse("[schedule.cosine]\nt_max = 10\neta_min = 1e-5"),
            ScheduleSpec::Cosine {
                t_max: Some(10),
                eta_min: 1e-5
            }
        );
        assert_eq!(
            parse("schedule = { warmup = { warmup_steps = 500 } }"),
            ScheduleSpec::Warmup {
                warmup_steps: 500,
                start_factor: 0.0,
                then: None
            }
        );
        assert_eq!(
            parse(
                "schedule = { warmup = { warmup_steps = 500, start_factor = 0.1, then = { cosine = { eta_min = 0 } } } }"
            ),
            ScheduleSpec::Warmup {
                warmup_steps: 500,
                start_factor: 0.1,
                then: Some(Box::new(ScheduleSpec::Cosine {
                    t_max: None,
                    eta_min: 0.0
                })),
            }
        );
        assert_eq!(
            parse("schedule = { warmup = { warmup_steps = 5, then = \"constant\" } }"),
            ScheduleSpec::Warmup {
                warmup_steps: 5,
                start_factor: 0.0,
                then: Some(Box::new(ScheduleSpec::Constant))
            }
        );
        // An integer where a float is expected is fine.
        assert_eq!(
            parse("schedule = { one_cycle = { max_lr = 1 } }"),
            ScheduleSpec::OneCycle {
                max_lr: 1.0,
                pct_start: 0.3,
                div_factor: 25.0,
                final_div_factor: 1e4,
                anneal: Anneal::Cos,
                three_phase: false,
            }
        );
        assert_eq!(
            parse(
                "schedule = { one_cycle = { max_lr = 0.01, pct_start = 0.25, div_factor = 10, final_div_factor = 100, \
                 anneal = \"linear\", three_phase = true } }"
            ),
            ScheduleSpec::OneCycle {
                max_lr: 0.01,
                pct_start: 0.25,
                div_factor: 10.0,
                final_div_factor: 100.0,
                anneal: Anneal::Linear,
                three_phase: true,
            }
        );
        assert_eq!(
            parse("schedule = { reduce_on_plateau = {} }"),
            ScheduleSpec::ReduceOnPlateau {
                monitor: "val_loss".into(),
                mode: Mode::Min,
                factor: 0.1,
                patience: 10,
                threshold: 1e-4,
                threshold_mode: ThresholdMode::Rel,
                cooldown: 0,
                min_lr: 0.0,
            }
        );
        assert_eq!(
            parse(
                "schedule = { reduce_on_plateau = { monitor = \"val_accuracy\", mode = \"max\", factor = 0.5, \
                 patience = 2, threshold = 0.01, threshold_mode = \"abs\", cooldown = 1, min_lr = 1e-6 } }"
            ),
            ScheduleSpec::ReduceOnPlateau {
                monitor: "val_accuracy".into(),
                mode: Mode::Max,
                factor: 0.5,
                patience: 2,
                threshold: 0.01,
                threshold_mode: ThresholdMode::Abs,
                cooldown: 1,
                min_lr: 1e-6,
            }
        );
        assert_eq!(ScheduleSpec::default(), ScheduleSpec::Constant);
    }

    #[test]
    fn unknown_keys_and_variants_are_rejected() {
        let err = toml::from_str::<Wrapper>("schedule = { step = { step_size = 3, gama = 0.5 } }").unwrap_err();
        assert!(err.to_string().contains("gama"), "{err}");
        let err =
            toml::from_str::<Wrapper>("schedule = { warmup = { warmup_steps = 3, then = { cosine = { tmax = 3 } } } }")
                .unwrap_err();
        assert!(err.to_string().contains("tmax"), "{err}");
        let err = toml::from_str::<Wrapper>("schedule = \"cosin\"").unwrap_err();
        assert!(err.to_string().contains("unknown variant `cosin`"), "{err}");
        let err = toml::from_str::<Wrapper>("schedule = { step = {} }").unwrap_err();
        assert!(err.to_string().contains("missing field `step_size`"), "{err}");
    }

    #[test]
    fn specs_round_trip_through_toml() {
        let specs = [
            ScheduleSpec::Constant,
            ScheduleSpec::Step {
                step_size: 3,
                gamma: 0.5,
            },
            ScheduleSpec::Exponential { gamma: 0.9 },
            ScheduleSpec::Cosine {
                t_max: None,
                eta_min: 0.0,
            },
            ScheduleSpec::Warmup {
                warmup_steps: 100,
                start_factor: 0.1,
                then: Some(Box::new(ScheduleSpec::Cosine {
                    t_max: Some(5),
                    eta_min: 1e-6,
                })),
            },
            parse("schedule = { one_cycle = { max_lr = 0.1 } }"),
            plateau_default(),
        ];
        for spec in specs {
            let text = toml::to_string(&Wrapper { schedule: spec.clone() }).unwrap();
            assert_eq!(parse(&text), spec, "{text}");
        }
    }
}
