//! Specs: plain data describing models and experiments, read from TOML and written back.

pub mod model;
pub mod suggest;

pub use model::ModelSpec;
