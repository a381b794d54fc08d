//! Inference with a trained run directory.

pub mod predict;
pub mod uncertainty;
