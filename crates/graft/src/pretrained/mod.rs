//! Pretrained networks from other frameworks' formats, loaded into graft layers: BERT-family encoders from a
//! Hugging Face-format directory (`config.json`, `model.safetensors`, `tokenizer.json`, with sentence-transformers
//! pooling and normalization when its files are present), ImageNet CNNs (EfficientNet-Lite0, ResNet-18) from
//! PyTorch state dicts, and word vectors into embedding layers; and how far a data set lies from what such a
//! network was trained on (`shift`).

pub mod bert;
pub mod cnn;
pub mod load;
pub mod shift;

pub use bert::SentenceEncoder;
pub use cnn::load_pretrained_backbones;
pub use load::{load_pretrained_embeddings, load_pretrained_encoders};
