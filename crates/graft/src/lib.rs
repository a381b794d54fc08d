//! graft: build, train, transfer and ship neural networks in Rust, on burn.
//!
//! The folders follow the pipeline: `spec` (what a model and an experiment are) → `layers` and `model` (building
//! and running it) → `data` → `train` → `infer` → `report`.

pub mod bench;
pub mod data;
pub mod error;
#[cfg(test)]
mod gradcheck;
pub mod infer;
pub mod layers;
pub mod model;
#[cfg(test)]
mod parity;
pub mod report;
pub mod spec;
#[cfg(test)]
mod test_util;
pub mod train;
pub mod transfer;

pub use error::{Error, Result};
