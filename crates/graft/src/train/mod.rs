//! Training: the loop, optimizers, schedules and callbacks.

pub mod callbacks;
pub mod optim;
pub mod schedule;
pub mod trainer;
pub mod warnings;
