//! Specs: plain data describing models and experiments, read from TOML and written back.

pub mod experiment;
pub mod model;

pub use experiment::ExperimentSpec;
pub use model::ModelSpec;
