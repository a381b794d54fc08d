//! The experiment: a TOML file (or the same spec built in Rust) → data → a trained run directory; and what works on
//! run directories as a whole: cross-validation, evaluation, embedding. The only level that sees training and
//! inference together.

pub mod baseline;
pub mod build;
pub mod cv;
pub mod data;
pub mod doctor;
pub mod embed;
pub mod fid;
pub mod gan;
pub mod generated;
pub mod introspect;
pub mod lock;
pub mod ood;
pub mod post;
pub mod reconstruct;
pub mod run;
pub mod run_dir;
pub mod sample;
pub mod siamese;
pub mod spec;
pub mod transfer;
pub mod tsne;
pub mod tune;
pub mod word2vec;

pub use cv::cross_validate;
pub use data::{Splits, check_data_fits, prepare_data, prepare_fold};
pub use run::{RunOptions, RunResult, run_experiment};
pub use spec::ExperimentSpec;
