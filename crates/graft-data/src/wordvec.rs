//! Pretrained word vectors (word2vec binary, word2vec text, GloVe text) and the embedding matrix they
//! give for a fitted vocabulary, to initialize an `embedding` layer.
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

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::array::Array;
use super::rng::seeded_rng;
use crate::error::{Context, Error, Result};

/// How many leading bytes of a file format detection looks at (more than a header plus one 300-d record).
const SNIFF_BYTES: usize = 1 << 16;
/// The longest word a binary file may hold; beyond this the file is corrupt or the header's dimension wrong.
const MAX_WORD_BYTES: usize = 1 << 16;

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

    /// An embedding matrix `[vocab.len(), dim]` for a vocabulary given as `id -> token`, with ids 0 and 1
    /// reserved as graft's tokenizer assigns them (0 = padding, 1 = out-of-vocabulary; the strings at those
    /// positions are not looked up). Row 0 is zeros; row `i >= 2` is the vector of `vocab[i]`, looked up as
    /// is, then lowercased; row 1 and the rows of tokens without a vector are drawn from N(0, σ²), σ the
    /// standard deviation of all values of these vectors, from a ChaCha8 generator seeded by `seed` (the
    /// same seed and vocabulary give the same matrix). Also returns how many tokens (of ids >= 2) had a
    /// vector. The `embedding` layer it initializes must have this `dim`.
    pub fn embedding_matrix(&self, vocab: &[String], seed: u64) -> (Array, usize) {
        let dim = self.dim;
        let sigma = self.value_std();
        let mut normal = Normal::new(seeded_rng(b"wordvecs", seed, 0));
        let mut data = vec![0f32; vocab.len() * dim];
        let mut found = 0;
        for (id, (token, row)) in vocab.iter().zip(data.chunks_exact_mut(dim.max(1))).enumerate() {
            if id == 0 {
                continue;
            }
            let vector = if id == 1 {
                None
            } else {
                self.get(token).or_else(|| {
                    let lower = token.to_lowercase();
                    if lower == *token { None } else { self.get(&lower) }
                })
            };
            match vector {
                Some(vector) => {
                    row.copy_from_slice(vector);
                    found += 1;
                }
                None => row.iter_mut().for_each(|v| *v = (sigma * normal.sample()) as f32),
            }
        }
        (
            Array {
                shape: vec![vocab.len(), dim],
                data,
            },
            found,
        )
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// The (population) standard deviation of all values; 0 without values.
    fn value_std(&self) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        let n = self.values.len() as f64;
        let mean = self.values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = self.values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        var.sqrt()
    }
}

/// Standard normal draws by the Box-Muller transform (both values of each pair are used).
struct Normal {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Normal {
    fn new(rng: ChaCha8Rng) -> Self {
        Normal { rng, spare: None }
    }

    fn sample(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - self.rng.random::<f64>(); // (0, 1]: ln(u1) is finite
        let u2 = self.rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// Accumulates words and values, keeping the first vector of a repeated word.
struct Collector {
    dim: usize,
    words: Vec<String>,
    values: Vec<f32>,
    index: HashMap<String, usize>,
    duplicates: usize,
    non_utf8: usize,
}

impl Collector {
    fn new(dim: usize, capacity: usize) -> Self {
        Collector {
            dim,
            words: Vec::with_capacity(capacity),
            values: Vec::with_capacity(capacity.saturating_mul(dim)),
            index: HashMap::with_capacity(capacity),
            duplicates: 0,
            non_utf8: 0,
        }
    }

    /// Adds a word given as bytes, decoding it lossily when it is not UTF-8.
    fn push_bytes(&mut self, word: &[u8], vector: impl Iterator<Item = f32>) {
        let word = match std::str::from_utf8(word) {
            Ok(word) => word.to_owned(),
            Err(_) => {
                self.non_utf8 += 1;
                String::from_utf8_lossy(word).into_owned()
            }
        };
        self.push_string(word, vector);
    }

    fn push_string(&mut self, word: String, vector: impl Iterator<Item = f32>) {
        if self.index.contains_key(&word) {
            self.duplicates += 1;
            return;
        }
        self.index.insert(word.clone(), self.words.len());
        self.words.push(word);
        let before = self.values.len();
        self.values.extend(vector);
        debug_assert_eq!(self.values.len() - before, self.dim);
    }

    fn finish(self) -> WordVectors {
        WordVectors {
            words: self.words,
            dim: self.dim,
            values: self.values,
            duplicates: self.duplicates,
            non_utf8: self.non_utf8,
            index: self.index,
        }
    }
}

/// A failure while parsing: an I/O error (the caller adds the file) or a located message.
enum ReadError {
    Io(std::io::Error),
    Bad(Error),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl From<Error> for ReadError {
    fn from(e: Error) -> Self {
        ReadError::Bad(e)
    }
}

/// The format of a file starting with `head`: see [`WordVectors::read`].
fn detect(head: &[u8]) -> WordVecFormat {
    let Some(end) = head.iter().position(|&b| b == b'\n') else {
        return WordVecFormat::Glove;
    };
    let Some((_, dim)) = parse_header(&head[..end]) else {
        return WordVecFormat::Glove;
    };
    let rest = &head[end + 1..];
    let window = &rest[..rest.len().min(dim.saturating_mul(4).saturating_add(1024))];
    let control = window
        .iter()
        .any(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f);
    let bad_utf8 = match std::str::from_utf8(window) {
        Ok(_) => false,
        // A character cut by the end of the window is not evidence of binary data.
        Err(e) => e.error_len().is_some(),
    };
    if control || bad_utf8 {
        WordVecFormat::Word2VecBinary
    } else {
        WordVecFormat::Word2VecText
    }
}

/// `(n_words, dim)` from a header line `"n dim"` (surrounding whitespace allowed), or `None`.
fn parse_header(line: &[u8]) -> Option<(usize, usize)> {
    let mut fields = fields(line);
    let n = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let dim = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    fields.next().is_none().then_some((n, dim))
}

/// The ASCII-whitespace-separated fields of a line.
fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty())
}

/// A word for messages: lossily decoded and cut short.
fn shown(word: &[u8]) -> String {
    let word = String::from_utf8_lossy(word);
    if word.chars().count() > 40 {
        format!("{:?}...", word.chars().take(40).collect::<String>())
    } else {
        format!("{word:?}")
    }
}

/// Reads the header line (line 1) of a word2vec file: `(n_words, dim, bytes consumed)`.
fn read_header(
    reader: &mut impl BufRead,
    format: WordVecFormat,
) -> std::result::Result<(usize, usize, u64), ReadError> {
    let mut line = Vec::new();
    (&mut *reader).take(4096).read_until(b'\n', &mut line)?;
    let consumed = line.len() as u64;
    let Some((n, dim)) = parse_header(&line) else {
        let text = String::from_utf8_lossy(&line[..line.len().min(80)])
            .trim_end()
            .to_owned();
        return Err(Error::new(format!(
            "expected the {format} header \"<words> <dimension>\", found {text:?} (GloVe files have no header: \
             use format \"glove\")"
        ))
        .at("line 1")
        .into());
    };
    if dim == 0 {
        return Err(Error::new(format!("the header \"{n} {dim}\" gives dimension 0"))
            .at("line 1")
            .into());
    }
    if n.checked_mul(dim).is_none() {
        return Err(
            Error::new(format!("the header \"{n} {dim}\" announces too many values to hold"))
                .at("line 1")
                .into(),
        );
    }
    Ok((n, dim, consumed))
}

fn read_binary(reader: &mut BufReader<File>, len: u64) -> std::result::Result<WordVectors, ReadError> {
    let format = WordVecFormat::Word2VecBinary;
    let (n, dim, mut offset) = read_header(reader, format)?;
    let record_bytes = (dim as u64).saturating_mul(4);
    // Each record takes at least a one-byte word, a space and the vector: don't reserve more than fits.
    let capacity = n.min((len / (record_bytes + 2)) as usize);
    let mut out = Collector::new(dim, capacity);
    let mut word = Vec::new();
    let mut vector = Vec::new(); // sized once the file is known to hold a whole vector
    for i in 0..n {
        let at = |e: Error| -> ReadError { e.at(format!("word {} of {n}", i + 1)).into() };
        let start = offset;
        word.clear();
        (&mut *reader)
            .take(MAX_WORD_BYTES as u64 + 1)
            .read_until(b' ', &mut word)?;
        offset += word.len() as u64;
        if word.last() != Some(&b' ') {
            let message = if word.iter().all(|b| b.is_ascii_whitespace()) {
                format!("the file ends after {i} of the {n} words its header announces (truncated at byte {offset}?)")
            } else if word.len() > MAX_WORD_BYTES {
                format!(
                    "no space within {MAX_WORD_BYTES} bytes of byte {start}: not a word (is the header's dimension \
                     {dim} right?)"
                )
            } else {
                let skip = word.iter().take_while(|&&b| b == b'\n').count();
                format!(
                    "the file ends inside the word {} (truncated at byte {offset})",
                    shown(&word[skip..])
                )
            };
            return Err(at(Error::new(message)));
        }
        word.pop();
        let skip = word.iter().take_while(|&&b| b == b'\n').count();
        let text = &word[skip..];
        if text.is_empty() || text.contains(&b'\n') {
            return Err(at(Error::new(format!(
                "expected a word at byte {}, found {} (is the header's dimension {dim} right?)",
                start + skip as u64,
                if text.is_empty() {
                    "an empty word".to_owned()
                } else {
                    format!("{} with a line break", shown(text))
                }
            ))));
        }
        let left = len.saturating_sub(offset);
        if left < record_bytes {
            return Err(at(Error::new(format!(
                "the file ends inside the vector of {}: expected {record_bytes} bytes ({dim} f32), found {left} \
                 (truncated)",
                shown(text)
            ))));
        }
        vector.resize(4 * dim, 0);
        reader.read_exact(&mut vector)?;
        offset += record_bytes;
        let values = vector
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if let Some((k, v)) = values.clone().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(at(Error::new(format!("value {} of {} is {v}", k + 1, shown(text)))));
        }
        out.push_bytes(text, values);
    }
    // Only whitespace (the last record's newline) may follow the announced words.
    let mut tail = [0u8; 4096];
    loop {
        let got = match reader.read(&mut tail) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if let Some(k) = tail[..got].iter().position(|b| !b.is_ascii_whitespace()) {
            return Err(Error::new(format!(
                "the header announces {n} words but more data follows them, at byte {} (is the word count in the \
                 header right?)",
                offset + k as u64
            ))
            .at("line 1")
            .into());
        }
        offset += got as u64;
    }
    Ok(out.finish())
}

/// Reads word2vec text (`header` true) or GloVe (no header; `dim` from the first line).
fn read_text(reader: &mut BufReader<File>, len: u64, header: bool) -> std::result::Result<WordVectors, ReadError> {
    let (mut expected, mut dim, mut line_no) = (None, None, 0usize);
    let mut out = None;
    if header {
        let (n, d, _) = read_header(reader, WordVecFormat::Word2VecText)?;
        (expected, dim, line_no) = (Some(n), Some(d), 1);
        // Each value takes at least two bytes ("0 "): don't reserve more than the file can hold.
        out = Some(Collector::new(d, n.min((len / (2 * d as u64 + 2)) as usize)));
    }
    let mut records = 0usize;
    let mut line = Vec::new();
    let mut values = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        line_no += 1;
        let at = |e: Error| -> ReadError { e.at(format!("line {line_no}")).into() };
        let mut parts = fields(&line);
        let Some(word) = parts.next() else {
            continue; // a blank line
        };
        values.clear();
        for (k, field) in parts.enumerate() {
            let value = std::str::from_utf8(field).ok().and_then(|s| s.parse::<f32>().ok());
            match value {
                Some(v) if v.is_finite() => values.push(v),
                Some(v) => return Err(at(Error::new(format!("value {} of {} is {v}", k + 1, shown(word))))),
                None => {
                    return Err(at(Error::new(format!(
                        "value {} of {} is not a number: {}",
                        k + 1,
                        shown(word),
                        shown(field)
                    ))));
                }
            }
        }
        let dim = *dim.get_or_insert(values.len());
        if dim == 0 {
            return Err(at(Error::new(format!(
                "expected a word and its values, found only the word {}",
                shown(word)
            ))));
        }
        if values.len() != dim {
            let source = if header {
                "the header's dimension"
            } else {
                "as on the first line"
            };
            return Err(at(Error::new(format!(
                "expected the word and {dim} values ({source}), found {} and {} value{}",
                shown(word),
                values.len(),
                if values.len() == 1 { "" } else { "s" }
            ))));
        }
        if let Some(n) = expected
            && records == n
        {
            return Err(at(Error::new(format!(
                "the header announces {n} words but the file holds more (is the word count in the header right?)"
            ))));
        }
        records += 1;
        out.get_or_insert_with(|| Collector::new(dim, 1024))
            .push_bytes(word, values.iter().copied());
    }
    if let Some(n) = expected
        && records < n
    {
        return Err(Error::new(format!(
            "the header announces {n} words but the file ends after {records} (truncated at line {line_no}?)"
        ))
        .at("line 1")
        .into());
    }
    match out {
        Some(out) => Ok(out.finish()),
        None => Err(Error::new("the file holds no word vectors, only blank lines").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use std::fs;
    use std::time::Instant;

    const WORDS: [&str; 3] = ["king", "queen", "Été"];
    const VALUES: [[f32; 3]; 3] = [[1.0, 0.0, 0.5], [0.25, -1.5, 2.0], [-0.125, 3.0, 1e-3]];

    /// word2vec binary of `words`/`values`, with the header `n dim` given, each record followed by `sep`.
    fn binary(header: &str, records: &[(&[u8], &[f32])], sep: &[u8]) -> Vec<u8> {
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

    fn sample_records() -> Vec<(&'static [u8], &'static [f32])> {
        WORDS.iter().zip(&VALUES).map(|(w, v)| (w.as_bytes(), &v[..])).collect()
    }

    fn text_lines() -> String {
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

    fn check_sample(wv: &WordVectors) {
        assert_eq!(wv.words, WORDS);
        assert_eq!(wv.dim, 3);
        assert_eq!(wv.values, VALUES.concat());
        assert_eq!((wv.duplicates, wv.non_utf8), (0, 0));
        assert_eq!(wv.get("queen"), Some(&VALUES[1][..]));
        assert_eq!(wv.get("Été"), Some(&VALUES[2][..]));
        assert_eq!(wv.get("été"), None);
        assert_eq!(wv.index_of("king"), Some(0));
    }

    fn read_err(path: &Path, format: Option<WordVecFormat>) -> Error {
        let err = WordVectors::read(path, format).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(path), "{err}");
        err
    }

    #[test]
    fn reads_binary_with_and_without_newlines_detected_or_named() {
        let dir = TempDir::new("bin");
        for sep in [&b"\n"[..], b""] {
            let path = dir.write("v.bin", binary("3 3", &sample_records(), sep));
            for format in [None, Some(WordVecFormat::Word2VecBinary)] {
                check_sample(&WordVectors::read(&path, format).unwrap());
            }
            assert_eq!(detect(&fs::read(&path).unwrap()), WordVecFormat::Word2VecBinary);
        }
        // CRLF header, leading newline before a word.
        let mut bytes = binary("3 3", &sample_records(), b"\n");
        bytes.splice(3..4, *b"\r\n");
        check_sample(&WordVectors::read(&dir.write("crlf.bin", &bytes), None).unwrap());
    }

    #[test]
    fn reads_word2vec_text_and_glove() {
        let dir = TempDir::new("text");
        let w2v = dir.write("v.txt", format!("3 3\n{}", text_lines()).as_bytes());
        assert_eq!(detect(&fs::read(&w2v).unwrap()), WordVecFormat::Word2VecText);
        check_sample(&WordVectors::read(&w2v, None).unwrap());
        check_sample(&WordVectors::read(&w2v, Some(WordVecFormat::Word2VecText)).unwrap());

        // As the C tool writes it: a space after every value; plus CRLF line ends and blank lines.
        let messy = format!("3 3\r\n{}\n\n", text_lines().replace('\n', " \r\n"));
        check_sample(&WordVectors::read(&dir.write("messy.txt", messy.as_bytes()), None).unwrap());

        let glove = dir.write("glove.txt", text_lines().as_bytes());
        assert_eq!(detect(&fs::read(&glove).unwrap()), WordVecFormat::Glove);
        check_sample(&WordVectors::read(&glove, None).unwrap());
        check_sample(&WordVectors::read(&glove, Some(WordVecFormat::Glove)).unwrap());
        // Values in exponent notation parse too.
        let wv = WordVectors::read(&dir.write("exp.txt", b"a 1e-2 -2.5E1\n"), None).unwrap();
        assert_eq!((wv.dim, wv.values.clone()), (2, vec![0.01, -25.0]));
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
    fn duplicates_keep_the_first_and_bad_utf8_is_decoded_lossily() {
        let dir = TempDir::new("dup");
        let records: Vec<(&[u8], &[f32])> = vec![
            (b"a", &[1.0, 2.0]),
            (b"b\xff", &[3.0, 4.0]),
            (b"a", &[5.0, 6.0]),
            (b"b\xfe", &[7.0, 8.0]), // decodes to the same "b\u{fffd}"
        ];
        let wv = WordVectors::read(&dir.write("d.bin", binary("4 2", &records, b"\n")), None).unwrap();
        assert_eq!(wv.words, ["a", "b\u{fffd}"]);
        assert_eq!(wv.values, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!((wv.duplicates, wv.non_utf8), (2, 2));

        let wv = WordVectors::read(&dir.write("d.txt", b"x 1\ny 2\nx 3\n"), None).unwrap();
        assert_eq!(
            (wv.words.clone(), wv.values.clone(), wv.duplicates),
            (vec!["x".into(), "y".into()], vec![1.0, 2.0], 1)
        );

        let wv = WordVectors::new(vec!["p".into(), "p".into()], 1, vec![1.0, 2.0]).unwrap();
        assert_eq!((wv.len(), wv.duplicates, wv.get("p")), (1, 1, Some(&[1.0][..])));
        assert!(
            WordVectors::new(vec!["p".into()], 2, vec![1.0])
                .unwrap_err()
                .message
                .contains("need 2 values, found 1")
        );
        assert!(WordVectors::new(vec![], 0, vec![]).is_err());
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

    #[test]
    fn binary_errors_name_the_word() {
        let dir = TempDir::new("binerr");
        let full = binary("3 3", &sample_records(), b"\n");

        // Cut inside the vector of the last word.
        let path = dir.write("cut.bin", &full[..full.len() - 6]);
        let err = read_err(&path, None);
        assert_eq!(err.location.as_deref(), Some("word 3 of 3"));
        assert!(
            err.message
                .contains("ends inside the vector of \"Été\": expected 12 bytes (3 f32), found 7"),
            "{err}"
        );

        // Cut inside a word.
        let cut = full.iter().position(|&b| b == b'q').unwrap() + 2;
        let err = read_err(&dir.write("cutword.bin", &full[..cut]), None);
        assert_eq!(err.location.as_deref(), Some("word 2 of 3"));
        assert!(err.message.contains("ends inside the word \"qu\""), "{err}");

        // Fewer words than the header announces.
        let err = read_err(&dir.write("few.bin", binary("4 3", &sample_records(), b"\n")), None);
        assert_eq!(err.location.as_deref(), Some("word 4 of 4"));
        assert!(
            err.message
                .contains("the file ends after 3 of the 4 words its header announces"),
            "{err}"
        );

        // More words than it announces.
        let path = dir.write("many.bin", binary("2 3", &sample_records(), b"\n"));
        let err = read_err(&path, None);
        assert_eq!(err.location.as_deref(), Some("line 1"));
        assert!(
            err.message.contains("announces 2 words but more data follows them"),
            "{err}"
        );
        assert!(err.to_string().starts_with(&format!("{}: line 1: ", path.display())));

        // A header dimension that disagrees with the records.
        let err = read_err(&dir.write("dim.bin", binary("3 2", &sample_records(), b"\n")), None);
        assert_eq!(err.location.as_deref(), Some("word 2 of 3"));
        assert!(err.message.contains("is the header's dimension 2 right?"), "{err}");

        // NaN values.
        let err = read_err(
            &dir.write("nan.bin", binary("1 2", &[(b"w", &[0.0, f32::NAN])], b"\n")),
            None,
        );
        assert_eq!(
            (err.location.as_deref(), err.message.as_str()),
            (Some("word 1 of 1"), "value 2 of \"w\" is NaN")
        );

        // A GloVe file read as word2vec.
        let glove = dir.write("glove.txt", text_lines().as_bytes());
        let err = read_err(&glove, Some(WordVecFormat::Word2VecBinary));
        assert_eq!(err.location.as_deref(), Some("line 1"));
        assert!(
            err.message
                .starts_with("expected the word2vec_binary header \"<words> <dimension>\", found \"king 1"),
            "{err}"
        );
        assert!(err.message.contains("use format \"glove\""), "{err}");

        // A header announcing far more than the file holds fails cleanly instead of reserving the memory.
        let err = read_err(&dir.write("huge.bin", b"1000000 1000000000\nw \x00\x00"), None);
        assert_eq!(err.location.as_deref(), Some("word 1 of 1000000"));
        assert!(
            err.message
                .contains("expected 4000000000 bytes (1000000000 f32), found 2"),
            "{err}"
        );

        let err = read_err(&dir.write("zero.bin", b"3 0\n"), None);
        assert_eq!(err.message, "the header \"3 0\" gives dimension 0");
    }

    #[test]
    fn text_errors_name_the_line() {
        let dir = TempDir::new("texterr");
        let err = read_err(&dir.write("short.txt", b"2 3\nking 1 2 3\nqueen 1 2\n"), None);
        assert_eq!(err.location.as_deref(), Some("line 3"));
        assert_eq!(
            err.message,
            "expected the word and 3 values (the header's dimension), found \"queen\" and 2 values"
        );

        let err = read_err(&dir.write("glove.txt", b"king 1 2 3\n\nqueen 1 2 3 4\n"), None);
        assert_eq!(err.location.as_deref(), Some("line 3"));
        assert_eq!(
            err.message,
            "expected the word and 3 values (as on the first line), found \"queen\" and 4 values"
        );

        let err = read_err(&dir.write("nan.txt", b"king 1 x2 3\n"), None);
        assert_eq!(
            err.to_string(),
            format!(
                "{}: line 1: value 2 of \"king\" is not a number: \"x2\"",
                dir.0.join("nan.txt").display()
            )
        );
        let err = read_err(&dir.write("inf.txt", b"1 2\nking 1 inf\n"), None);
        assert_eq!(
            (err.location.as_deref(), err.message.as_str()),
            (Some("line 2"), "value 2 of \"king\" is inf")
        );

        let err = read_err(&dir.write("few.txt", b"3 1\na 1\nb 2\n"), None);
        assert_eq!(err.location.as_deref(), Some("line 1"));
        assert_eq!(
            err.message,
            "the header announces 3 words but the file ends after 2 (truncated at line 3?)"
        );

        let err = read_err(&dir.write("many.txt", b"1 1\na 1\nb 2\n"), None);
        assert_eq!(err.location.as_deref(), Some("line 3"));
        assert!(
            err.message
                .starts_with("the header announces 1 words but the file holds more"),
            "{err}"
        );

        let err = read_err(&dir.write("huge.txt", b"1000000000 1000000000\na 1\n"), None);
        assert_eq!(err.location.as_deref(), Some("line 2"));

        // Truncated mid-line.
        let err = read_err(&dir.write("cut.txt", b"2 3\nking 1 2 3\nqueen 1 2."), None);
        assert_eq!(err.location.as_deref(), Some("line 3"));

        let err = read_err(&dir.write("word.txt", b"lonely\n"), None);
        assert!(err.message.contains("found only the word \"lonely\""), "{err}");

        let err = read_err(&dir.write("empty.txt", b""), None);
        assert_eq!(err.message, "the file is empty, expected word vectors");
        let err = read_err(&dir.write("blank.txt", b"\n \n"), None);
        assert_eq!(err.message, "the file holds no word vectors, only blank lines");

        let missing = dir.0.join("missing.bin");
        let err = read_err(&missing, None);
        assert!(err.location.is_none());
    }

    #[test]
    fn embedding_matrix_rows_counts_and_seeding() {
        let wv = WordVectors::new(
            vec!["the".into(), "cat".into(), "sat".into()],
            2,
            vec![1.0, -1.0, 0.5, 0.25, -0.5, 2.0],
        )
        .unwrap();
        let vocab: Vec<String> = ["<pad>", "<unk>", "the", "Cat", "dog", "SAT", "the"]
            .map(String::from)
            .into();
        let (m, found) = wv.embedding_matrix(&vocab, 7);
        assert_eq!(m.shape, vec![7, 2]);
        assert_eq!(found, 4); // the, Cat -> cat, SAT -> sat, the again
        assert_eq!(m.row(0), &[0.0, 0.0]);
        assert_eq!(m.row(2), wv.get("the").unwrap());
        assert_eq!(m.row(3), wv.get("cat").unwrap());
        assert_eq!(m.row(5), wv.get("sat").unwrap());
        assert_eq!(m.row(6), wv.get("the").unwrap());
        for oov in [1, 4] {
            assert!(
                m.row(oov).iter().all(|v| *v != 0.0 && v.is_finite()),
                "{:?}",
                m.row(oov)
            );
        }
        assert_ne!(m.row(1), m.row(4));

        let (again, _) = wv.embedding_matrix(&vocab, 7);
        assert_eq!(again, m);
        let (other, _) = wv.embedding_matrix(&vocab, 8);
        assert_ne!(other.row(4), m.row(4));
        assert_eq!(other.row(2), m.row(2));

        // The draws have the spread of the vectors.
        let sigma = wv.value_std();
        let many: Vec<String> = (0..5000).map(|i| format!("oov{i}")).collect();
        let (m, found) = wv.embedding_matrix(&many, 1);
        assert_eq!(found, 0);
        let draws = &m.data[2..];
        let mean = draws.iter().map(|&v| f64::from(v)).sum::<f64>() / draws.len() as f64;
        let std = (draws.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / draws.len() as f64).sqrt();
        assert!(
            mean.abs() < 0.03 * sigma && (std / sigma - 1.0).abs() < 0.03,
            "mean {mean}, std {std}, σ {sigma}"
        );

        let (empty, found) = wv.embedding_matrix(&[], 1);
        assert_eq!((empty.shape, empty.data.len(), found), (vec![0, 2], 0, 0));
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
