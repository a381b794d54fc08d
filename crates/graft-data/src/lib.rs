//! graft's data layer, below every tensor: reading datasets into one in-memory form, preprocessing them,
//! splitting them and cutting them into mini-batches, all deterministic given a seed; and what every level above
//! shares: the error type, "did you mean" hints, spec deserialization with key paths, atomic file writes.
//!
//! - [`Array`]: a dense row-major `f32` array whose first axis is the sample axis.
//! - [`Dataset`] and [`Targets`]: inputs plus class labels or value targets; [`DataSource`] is the
//!   trait every reader implements ([`Digits`], [`NpySource`]; later IDX, CSV, text).
//! - [`split_indices`]: seeded, optionally stratified train/held-out splits.
//! - [`Batches`] and [`gather`]: per-epoch mini-batch order and the batch arrays.
//! - [`WordVectors`]: pretrained word vectors (word2vec binary/text, GloVe) and embedding matrices from them; writing
//!   them in the word2vec formats and scoring them on the analogy and word-similarity benchmarks.
//! - [`text::Corpus`] and [`text::skipgram`]: a corpus as word ids, skip-gram pairs and negative sampling for
//!   training word vectors.

pub mod array;
pub mod batch;
pub mod dataset;
pub mod de;
pub mod digits;
pub mod error;
pub mod fault;
pub mod fsio;
pub mod hf_tokenizer;
pub mod idx;
pub mod image;
pub mod image_source;
pub mod npy;
pub mod prepare;
pub mod rng;
pub mod sampling;
pub mod sentence_pipeline;
pub mod split;
pub mod suggest;
pub mod table;
#[doc(hidden)]
pub mod test_util;
pub mod text;
pub mod wordvec;

pub use array::Array;
pub use batch::{Batch, Batches, gather, gather_for_training};
pub use dataset::{DataSource, Dataset, Targets, TaskLabels, numbered_class_names};
pub use digits::{DIGITS_SAMPLES, Digits, load_digits};
pub use idx::{IdxSource, read_idx};
pub use npy::{NpySource, read_npy_f32, read_npy_labels, write_npy_f32};
pub use split::split_indices;
pub use wordvec::{WordVecFormat, WordVectors};

pub use error::{Error, Result};
