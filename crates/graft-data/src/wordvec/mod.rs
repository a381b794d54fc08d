//! Pretrained word vectors (word2vec binary, word2vec text, GloVe text) and the embedding matrix they
//! give for a fitted vocabulary, to initialize an `embedding` layer; writing vectors in the word2vec formats
//! ([`WordVectors::write_binary`], [`WordVectors::write_text`]) and scoring them on the standard benchmarks
//! ([`WordVectors::evaluate_analogies`], [`WordVectors::evaluate_similarity`]).
//!
//! Formats:
//! - **word2vec binary** (the C tool's `-binary 1`, gensim's `binary=True`): a header line `"n dim\n"`, then per
//!   word the word's bytes, one space, `dim` little-endian `f32`, and optionally a `"\n"` (the C tool writes
//!   one, some writers do not).
//! - **word2vec text** (also fastText's `.vec`): the same header line, then `word v1 ... vdim` per line.
//! - **GloVe text**: no header; `word v1 ... vdim` per line, `dim` taken from the first line.
//!
//! Decisions, for files that are not quite clean:
//! - Words that are not valid UTF-8 are decoded lossily (each bad sequence becomes U+FFFD) and counted in
//!   [`WordVectors::non_utf8`], rather than failing the whole file: the full GoogleNews vectors hold a few
//!   such words, and gensim users read them with `unicode_errors='ignore'`. Replacement rather than dropping
//!   the bytes keeps such a word from silently matching a different, valid word.
//! - A word that appears again keeps its first vector; later ones are dropped and counted in
//!   [`WordVectors::duplicates`] (lossy decoding can make two words equal, which is counted the same way).
//! - In the text formats fields are separated by ASCII whitespace (trailing spaces, as the C tool writes,
//!   and `\r\n` line ends are fine; blank lines are skipped), so a word cannot hold a space: every line
//!   must be exactly the word and `dim` numbers.
//! - Every value must be finite: a NaN or infinity is an error, not a poisoned embedding.

mod binary;
mod embedding;
mod evaluate;
mod read;
mod text;
mod write;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use binary::read_binary;
use read::{Collector, ReadError, detect};
use text::read_text;

pub use evaluate::{AnalogyScore, SectionScore, SimilarityScore};

/// How many leading bytes of a file format detection looks at (more than a header plus one 300-d record).
const SNIFF_BYTES: usize = 1 << 16;

/// A word-vector file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WordVecFormat {
    /// word2vec C binary: header `"n dim"`, then per word: the word, a space, `dim` little-endian `f32`.
    #[serde(rename = "word2vec_binary")]
    Word2VecBinary,
    /// word2vec text (and fastText `.vec`): header `"n dim"`, then `word v1 ... vdim` per line.
    #[serde(rename = "word2vec_text")]
    Word2VecText,
    /// GloVe text: `word v1 ... vdim` per line, no header.
    #[serde(rename = "glove")]
    Glove,
}

impl WordVecFormat {
    /// The name used in specs and messages: `word2vec_binary`, `word2vec_text` or `glove`.
    pub fn name(self) -> &'static str {
        match self {
            WordVecFormat::Word2VecBinary => "word2vec_binary",
            WordVecFormat::Word2VecText => "word2vec_text",
            WordVecFormat::Glove => "glove",
        }
    }
}

impl fmt::Display for WordVecFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Word vectors: the words in file order and a row-major `[n_words, dim]` matrix.
///
/// The fields are public for cheap moves out; treat them as read-only, since [`WordVectors::get`] uses an
/// index built when the vectors were read (build changed vectors with [`WordVectors::new`]).
#[derive(Clone)]
pub struct WordVectors {
    /// The words, unique, in file order (a repeated word keeps its first position).
    pub words: Vec<String>,
    /// The length of every vector.
    pub dim: usize,
    /// `words.len() * dim` values: the vector of `words[i]` is `values[i * dim..(i + 1) * dim]`.
    pub values: Vec<f32>,
    /// How many later occurrences of an already seen word were dropped.
    pub duplicates: usize,
    /// How many words were not valid UTF-8 and were decoded with U+FFFD replacements.
    pub non_utf8: usize,
    index: HashMap<String, usize>,
}

impl fmt::Debug for WordVectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.words.len().min(10);
        f.debug_struct("WordVectors")
            .field("n_words", &self.words.len())
            .field("dim", &self.dim)
            .field("duplicates", &self.duplicates)
            .field("non_utf8", &self.non_utf8)
            .field("first_words", &&self.words[..shown])
            .finish()
    }
}

impl WordVectors {
    /// Builds word vectors from words and their row-major values, checking the sizes; a repeated word keeps
    /// its first vector (the others are dropped and counted in `duplicates`).
    pub fn new(words: Vec<String>, dim: usize, values: Vec<f32>) -> Result<Self> {
        if dim == 0 {
            return Err(Error::new("word vectors need a dimension of at least 1, found 0"));
        }
        if words.len().checked_mul(dim) != Some(values.len()) {
            return Err(Error::new(format!(
                "{} words of dimension {dim} need {} values, found {}",
                words.len(),
                words.len().saturating_mul(dim),
                values.len()
            )));
        }
        let mut out = Collector::new(dim, words.len());
        for (word, vector) in words.into_iter().zip(values.chunks_exact(dim)) {
            out.push_string(word, vector.iter().copied());
        }
        Ok(out.finish())
    }

    /// Reads a word-vector file in `format`, or, when `None`, in the format detected from its start: a first
    /// line of two integers is a word2vec header (binary when the bytes after it are not text, e.g. hold NUL
    /// or control bytes or invalid UTF-8; text otherwise), anything else is GloVe.
    ///
    /// Errors name the file and the line (text) or word (binary, 1-based, with its byte offset): a file that
    /// ends early, a line with the wrong number of values, a value that is not a finite number, a header
    /// whose word count or dimension disagrees with the content.
    pub fn read(path: &Path, format: Option<WordVecFormat>) -> Result<Self> {
        let mut file = File::open(path).in_file(path)?;
        let len = file.metadata().in_file(path)?.len();
        if len == 0 {
            return Err(Error::new("the file is empty, expected word vectors").in_file(path));
        }
        let format = match format {
            Some(format) => format,
            None => {
                let mut head = Vec::with_capacity(SNIFF_BYTES);
                (&mut file)
                    .take(SNIFF_BYTES as u64)
                    .read_to_end(&mut head)
                    .in_file(path)?;
                file.seek(SeekFrom::Start(0)).in_file(path)?;
                detect(&head)
            }
        };
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let result = match format {
            WordVecFormat::Word2VecBinary => read_binary(&mut reader, len),
            WordVecFormat::Word2VecText => read_text(&mut reader, len, true),
            WordVecFormat::Glove => read_text(&mut reader, len, false),
        };
        result.map_err(|e| match e {
            ReadError::Io(e) => Error::io(path, e),
            ReadError::Bad(e) => e.in_file(path),
        })
    }

    /// The number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when there are no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The row of `word` in `words` and `values`, matched exactly.
    pub fn index_of(&self, word: &str) -> Option<usize> {
        self.index.get(word).copied()
    }

    /// The vector of `word`, matched exactly (case included).
    pub fn get(&self, word: &str) -> Option<&[f32]> {
        self.index_of(word).map(|i| self.row(i))
    }

    /// The cosine similarity of the vectors of `a` and `b` (computed in `f64`); `None` when either word has no
    /// vector, 0 when either vector is all zeros.
    pub fn cosine(&self, a: &str, b: &str) -> Option<f32> {
        let (x, y) = (self.get(a)?, self.get(b)?);
        let (mut dot, mut xx, mut yy) = (0f64, 0f64, 0f64);
        for (&p, &q) in x.iter().zip(y) {
            let (p, q) = (f64::from(p), f64::from(q));
            dot += p * q;
            xx += p * p;
            yy += q * q;
        }
        let norms = (xx * yy).sqrt();
        Some(if norms > 0.0 { (dot / norms) as f32 } else { 0.0 })
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    pub(super) const WORDS: [&str; 3] = ["king", "queen", "Été"];
    pub(super) const VALUES: [[f32; 3]; 3] = [[1.0, 0.0, 0.5], [0.25, -1.5, 2.0], [-0.125, 3.0, 1e-3]];

    /// word2vec binary of `words`/`values`, with the header `n dim` given, each record followed by `sep`.
    pub(super) fn binary(header: &str, records: &[(&[u8], &[f32])], sep: &[u8]) -> Vec<u8> {
        let mut out = format!("{header}\n").into_bytes();
        for (word, vector) in records {
            out.extend_from_slice(word);
            out.push(b' ');
            for v in *vector {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(sep);
        }
        out
    }

    pub(super) fn sample_records() -> Vec<(&'static [u8], &'static [f32])> {
        WORDS.iter().zip(&VALUES).map(|(w, v)| (w.as_bytes(), &v[..])).collect()
    }

    pub(super) fn text_lines() -> String {
        WORDS
            .iter()
            .zip(&VALUES)
            .map(|(w, v)| {
                format!(
                    "{w} {}\n",
                    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")
                )
            })
            .collect()
    }

    pub(super) fn check_sample(wv: &WordVectors) {
        assert_eq!(wv.words, WORDS);
        assert_eq!(wv.dim, 3);
        assert_eq!(wv.values, VALUES.concat());
        assert_eq!((wv.duplicates, wv.non_utf8), (0, 0));
        assert_eq!(wv.get("queen"), Some(&VALUES[1][..]));
        assert_eq!(wv.get("Été"), Some(&VALUES[2][..]));
        assert_eq!(wv.get("été"), None);
        assert_eq!(wv.index_of("king"), Some(0));
    }

    pub(super) fn read_err(path: &Path, format: Option<WordVecFormat>) -> Error {
        let err = WordVectors::read(path, format).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(path), "{err}");
        err
    }

    #[test]
    fn format_names_in_serde_and_display() {
        let all = [
            WordVecFormat::Word2VecBinary,
            WordVecFormat::Word2VecText,
            WordVecFormat::Glove,
        ];
        let json = serde_json::to_string(&all).unwrap();
        assert_eq!(json, r#"["word2vec_binary","word2vec_text","glove"]"#);
        assert_eq!(serde_json::from_str::<Vec<WordVecFormat>>(&json).unwrap(), all);
        assert_eq!(WordVecFormat::Word2VecText.to_string(), "word2vec_text");
        assert!(serde_json::from_str::<WordVecFormat>(r#""word2_vec_binary""#).is_err());
    }

    #[test]
    fn cosine_similarity() {
        let wv = WordVectors::new(
            vec!["x".into(), "y".into(), "z".into(), "zero".into()],
            2,
            vec![1.0, 0.0, 1.0, 1.0, -2.0, 0.0, 0.0, 0.0],
        )
        .unwrap();
        assert!((wv.cosine("x", "y").unwrap() - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert_eq!(wv.cosine("x", "z"), Some(-1.0));
        assert_eq!(wv.cosine("x", "x"), Some(1.0));
        assert_eq!(wv.cosine("x", "zero"), Some(0.0));
        assert_eq!(wv.cosine("x", "missing"), None);
    }

    /// The real GoogleNews subset from `scripts/fetch-data.sh word2vec`, when it is there.
    #[test]
    fn real_google_news_vectors() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/word2vec/GoogleNews-vectors-negative300-bolukbasi.bin");
        if !path.exists() {
            return;
        }
        let start = Instant::now();
        let wv = WordVectors::read(&path, None).unwrap();
        let elapsed = start.elapsed();
        println!(
            "read {} x {} word2vec binary in {:.1} ms",
            wv.len(),
            wv.dim,
            elapsed.as_secs_f64() * 1e3
        );
        assert_eq!((wv.len(), wv.dim, wv.values.len()), (26_423, 300, 26_423 * 300));
        assert_eq!((wv.duplicates, wv.non_utf8), (0, 0));
        let cos = |a, b| wv.cosine(a, b).unwrap();
        println!(
            "cos(king, queen) = {:.4}, cos(man, woman) = {:.4}",
            cos("king", "queen"),
            cos("man", "woman")
        );
        assert_eq!(format!("{:.4}", cos("king", "queen")), "0.6511");
        assert_eq!(format!("{:.4}", cos("man", "woman")), "0.7664");
        assert!(wv.get("John").is_some() && wv.get("john").is_none());
        let vocab: Vec<String> = ["<pad>", "<unk>", "king", "john", "qwxzv"].map(String::from).into();
        let (m, found) = wv.embedding_matrix(&vocab, 0);
        assert_eq!((m.shape.clone(), found), (vec![5, 300], 1)); // "john" is only there as "John"
        assert_eq!(m.row(2), wv.get("king").unwrap());
    }
}
