//! Inference with a trained run directory.

pub mod manifest;
pub mod onnx;
pub mod ood;
pub mod predict;
pub mod reject;
pub mod sample;
pub mod uncertainty;
