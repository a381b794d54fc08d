//! From a data source to model inputs: sources that need fitted preprocessing (CSV tables, texts) are read raw,
//! split, fitted on the training rows only, and transformed; the fitted [`Preprocessor`] is stored with the model so
//! `predict` applies exactly the same transformation to raw inputs.

mod json_inputs;
mod preprocessor;
mod raw;
mod source;

pub use preprocessor::Preprocessor;
pub use raw::Raw;
pub use source::{BUILTIN_DATASETS, IdxFiles, NpyFiles, SOURCE_KINDS, SourceSpec, XFiles, read_raw};
