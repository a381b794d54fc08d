//! The experiment: a TOML file (or the same spec built in Rust) → data → a trained run directory; and what works on
//! run directories as a whole: cross-validation, evaluation, embedding. The only level that sees training and
//! inference together.

pub mod embed;
pub mod ood;
pub mod run;
pub mod run_dir;
pub mod spec;

pub use spec::ExperimentSpec;
