//! Training: losses, optimizers, schedules, metrics, callbacks, the loop, and running a whole experiment.

pub mod calibration;
pub mod callbacks;
pub mod curves;
pub mod experiment;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod run_dir;
pub mod schedule;
pub mod task;
pub mod threshold;
pub mod trainer;
pub mod warnings;
