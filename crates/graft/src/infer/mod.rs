//! Inference with a trained run directory.

pub mod ood;
pub mod predict;
pub mod uncertainty;
