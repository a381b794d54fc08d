//! What a model is trained to do, shared by training and inference: losses, metrics and their curves, task heads,
//! probability calibration and decision thresholds; the divergences, metric-learning and adversarial losses of
//! generative and embedding models, and word2vec's negative sampling.

pub mod calibration;
pub mod curves;
pub mod divergence;
pub mod frechet;
pub mod gan;
pub mod head;
pub mod loss;
pub mod metric_learning;
pub mod metrics;
pub mod negative_sampling;
pub mod threshold;
