//! graft: build, train, transfer and ship neural networks in Rust, on burn.
//!
//! The folders follow the pipeline: `spec` (what a model and an experiment are) → `layers` and `model` (building
//! and running it) → `data` → `train` → `infer` → `report`.

#[cfg(test)]
mod gradcheck;
pub mod infer;
pub mod layers;
pub mod model;
#[cfg(test)]
mod parity;
pub mod report;
pub mod spec;
pub mod train;
pub mod transfer;

pub use graft_data::error;
pub use graft_data::{self as data, Error, Result};
