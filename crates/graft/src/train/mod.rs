//! Training: the loop with an open step ([`step`]), the supervised step ([`trainer`]), optimizers, schedules
//! and callbacks.

pub mod adversarial;
pub mod callbacks;
pub mod config;
pub mod diagnostics;
pub mod interrupt;
pub mod lr_finder;
pub mod metric;
pub mod mixup;
pub mod optim;
pub mod reconstruction;
pub mod resume;
pub mod schedule;
pub mod skipgram;
pub mod step;
pub mod supervised;
pub mod trainer;
pub mod warnings;

pub use config::FitConfig;
pub use step::{History, TrainStep, Trainer};
pub use trainer::{FitResult, Supervised, fit};
