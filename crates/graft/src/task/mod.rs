//! What a model is trained to do, shared by training and inference: losses, metrics and their curves, task heads,
//! probability calibration and decision thresholds.

pub mod calibration;
pub mod curves;
pub mod frechet;
pub mod gan;
pub mod head;
pub mod loss;
pub mod metric_learning;
pub mod metrics;
pub mod threshold;
