//! graft: build, train, transfer and ship neural networks in Rust, on burn.
//!
//! Modules from the lowest level up; each imports only from those listed before it (the test in
//! `layering.rs` enforces it):
//!
//! - [`layers`]: one file per layer family, its config, shape inference and module; the per-sample [`layers::value`].
//! - [`model`]: the model spec, the graph built from it, its files, summary and parameter walks (freeze, restore,
//!   layer groups).
//! - [`task`]: what a model is trained to do: losses, metrics, task heads, calibration, decision thresholds.
//! - [`pretrained`]: pretrained encoders and word vectors loaded into a built model.
//! - [`train`]: the training loop and what it is made of: optimizers, schedules, callbacks.
//! - [`infer`]: a trained run directory used from a program: predictions, MC dropout, out-of-distribution scores.
//! - [`report`]: charts and `report.html`.
//! - [`experiment`]: the TOML experiment, its data, and the run directory: train, cross-validate, evaluate, embed.
//!
//! Below the library: `graft-data` (re-exported as [`data`], with the error type) and `graft-kernels`.

pub mod experiment;
pub mod infer;
pub mod layers;
pub mod model;
pub mod pretrained;
pub mod report;
pub mod task;
pub mod train;

#[cfg(test)]
mod layering;

pub use graft_data::error;
pub use graft_data::{self as data, Error, Result};
/// The fused CPU kernels, and [`kernels::init_threads`] for programs that train on the CPU.
pub use graft_kernels as kernels;
