//! The fitted word-level [`Tokenizer`]: a vocabulary of the training texts' most frequent tokens and the rules to
//! turn new texts into fixed-length rows of ids (padding, truncation, out-of-vocabulary id), stored as JSON with the
//! model so `predict` tokenizes exactly as training did.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use super::splitter::{Scratch, Splitter};
use super::{MAX_EXACT_F32, Side, TokenMode, TokenizerSpec};
use crate::array::Array;
use crate::error::{Error, Result};

/// Id of the padding that fills short sequences.
const PAD: u32 = 0;
/// Id of every token outside the vocabulary.
const OOV: u32 = 1;

/// FxHash (as in rustc) with a final mix: much faster than SipHash for short string keys, and the keys are the user's own text.
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            let v = u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59);
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn finish(&self) -> u64 {
        // A final mix (as murmur3's) so the low bits, which pick the bucket, depend on every input byte.
        let h = (self.0 ^ (self.0 >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

/// A hash map with [`FxHasher`], for maps keyed by tokens (the tokenizer's counts and index, the corpus counts).
pub(super) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A vocabulary fitted on the training texts, with the rules to tokenize, pad and truncate new texts.
/// Serializes to JSON (settings plus the tokens in id order) to be stored with the model.
#[derive(Clone, PartialEq)]
pub struct Tokenizer {
    pub(super) splitter: Splitter,
    padding: Side,
    truncation: Side,
    /// The tokens in id order: `vocab[i]` has id `i + 2`.
    pub(super) vocab: Vec<String>,
    /// Token → id.
    index: FxMap<String, u32>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.vocab.len().min(10);
        f.debug_struct("Tokenizer")
            .field("splitter", &self.splitter)
            .field("padding", &self.padding)
            .field("truncation", &self.truncation)
            .field("vocab_size", &self.vocab_size())
            .field("first_tokens", &&self.vocab[..shown])
            .finish()
    }
}

impl Tokenizer {
    /// Every id's token: `"<pad>"` (0), `"<oov>"` (1), then the vocabulary — the rows of an embedding matrix.
    pub fn tokens_by_id(&self) -> Vec<String> {
        ["<pad>".to_string(), "<oov>".to_string()]
            .into_iter()
            .chain(self.vocab.iter().cloned())
            .collect()
    }

    /// The token of one id: `"<pad>"` (0), `"<oov>"` (1), a vocabulary entry, or `None` past the vocabulary.
    pub fn token(&self, id: usize) -> Option<String> {
        match id {
            0 => Some("<pad>".into()),
            1 => Some("<oov>".into()),
            i => self.vocab.get(i - 2).cloned(),
        }
    }

    /// Fits the vocabulary on `texts[r]` for `r` in `train_rows` (only those: held-out texts must not leak into
    /// it): the `spec.vocab_size - 2` most frequent tokens seen at least `spec.min_freq` times, most frequent first
    /// (ids 2, 3, …), ties broken alphabetically.
    pub fn fit(spec: &TokenizerSpec, texts: &[String], train_rows: &[usize]) -> Result<Self> {
        let splitter = spec.splitter()?;
        let mut counts: FxMap<String, u64> = FxMap::default();
        let mut scratch = Scratch::default();
        for &row in train_rows {
            let text = texts
                .get(row)
                .ok_or_else(|| Error::new(format!("training row {row} is outside the {} texts", texts.len())))?;
            splitter.each_token(text, &mut scratch, |token| {
                match counts.get_mut(token) {
                    Some(c) => *c += 1,
                    None => {
                        counts.insert(token.to_owned(), 1);
                    }
                }
                true
            });
        }
        let min_freq = spec.min_freq as u64;
        let mut entries: Vec<(String, u64)> = counts.into_iter().filter(|&(_, c)| c >= min_freq).collect();
        let order = |a: &(String, u64), b: &(String, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
        let keep = spec.vocab_size - 2;
        if entries.len() > keep {
            entries.select_nth_unstable_by(keep, order);
            entries.truncate(keep);
        }
        entries.sort_unstable_by(order);
        let vocab = entries.into_iter().map(|(token, _)| token).collect();
        Tokenizer::build(splitter, spec.padding, spec.truncation, vocab)
    }

    fn build(splitter: Splitter, padding: Side, truncation: Side, vocab: Vec<String>) -> Result<Self> {
        if vocab.len() + 2 > MAX_EXACT_F32 {
            return Err(Error::new(format!(
                "{} tokens is more than ids held exactly by a float allow",
                vocab.len()
            )));
        }
        let mut index = FxMap::with_capacity_and_hasher(vocab.len(), Default::default());
        for (i, token) in vocab.iter().enumerate() {
            if token.is_empty() {
                return Err(Error::new(format!("vocabulary entry {i} is empty")));
            }
            if index.insert(token.clone(), i as u32 + 2).is_some() {
                return Err(Error::new(format!("token {token:?} appears twice in the vocabulary")));
            }
        }
        Ok(Tokenizer {
            splitter,
            padding,
            truncation,
            vocab,
            index,
        })
    }

    /// The tokens of `text`, in order, before vocabulary lookup, padding or truncation.
    pub fn tokens(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.splitter.each_token(text, &mut Scratch::default(), |t| {
            out.push(t.to_owned());
            true
        });
        out
    }

    /// Token ids `[n, length]` as `f32` (whole numbers; `embedding` layers take ids as floats): 1 for tokens
    /// outside the vocabulary, 0 for padding.
    pub fn transform(&self, texts: &[String]) -> Array {
        let length = self.splitter.length;
        let mut data = vec![PAD as f32; texts.len() * length];
        let mut scratch = Scratch::default();
        let mut ids: Vec<u32> = Vec::new();
        // Keeping the first `length` ids, tokenizing can stop there.
        let cap = match self.truncation {
            Side::Post => length,
            Side::Pre => usize::MAX,
        };
        for (text, row) in texts.iter().zip(data.chunks_exact_mut(length)) {
            ids.clear();
            self.splitter.each_token(text, &mut scratch, |token| {
                ids.push(self.index.get(token).copied().unwrap_or(OOV));
                ids.len() < cap
            });
            let kept = match self.truncation {
                Side::Post => &ids[..ids.len().min(length)],
                Side::Pre => &ids[ids.len().saturating_sub(length)..],
            };
            let start = match self.padding {
                Side::Post => 0,
                Side::Pre => length - kept.len(),
            };
            for (slot, &id) in row[start..].iter_mut().zip(kept) {
                *slot = id as f32;
            }
        }
        Array {
            shape: vec![texts.len(), length],
            data,
        }
    }

    /// The number of ids, the two reserved ones included (at most the spec's `vocab_size`): the `embedding`
    /// layer's input dimension.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len() + 2
    }

    /// The length of every transformed sequence.
    pub fn length(&self) -> usize {
        self.splitter.length
    }

    /// The id of `token` (a token as [`Tokenizer::tokens`] gives it, i.e. already lowercased where the spec says
    /// so); 1 when it is outside the vocabulary.
    pub fn id(&self, token: &str) -> usize {
        self.index.get(token).map_or(OOV as usize, |&id| id as usize)
    }
}

/// The stored form of a [`Tokenizer`].
#[derive(Serialize)]
struct StoredTokenizerRef<'a> {
    lowercase: bool,
    mode: TokenMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    ngram_range: Option<[usize; 2]>,
    length: usize,
    padding: Side,
    truncation: Side,
    /// Tokens in id order, from id 2.
    vocab: &'a [String],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredTokenizer {
    lowercase: bool,
    mode: TokenMode,
    #[serde(default)]
    ngram_range: Option<[usize; 2]>,
    length: usize,
    padding: Side,
    truncation: Side,
    vocab: Vec<String>,
}

impl Serialize for Tokenizer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let s = &self.splitter;
        StoredTokenizerRef {
            lowercase: s.lowercase,
            mode: s.mode,
            ngram_range: (s.mode == TokenMode::CharNgrams).then_some(s.ngrams),
            length: s.length,
            padding: self.padding,
            truncation: self.truncation,
            vocab: &self.vocab,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Tokenizer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = StoredTokenizer::deserialize(deserializer)?;
        let splitter = Splitter::new(s.lowercase, s.mode, s.ngram_range, s.length).map_err(serde::de::Error::custom)?;
        Tokenizer::build(splitter, s.padding, s.truncation, s.vocab).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::tests::{all_rows, spec, strings};

    #[test]
    fn vocabulary_order_min_freq_and_size_cut() {
        let texts = strings(&["b a c b", "a d b", "c e", "z"]);
        // Counts: b 3, a 2, c 2, d 1, e 1, z 1.
        let tok = Tokenizer::fit(&spec(100, 4), &texts, &all_rows(&texts)).unwrap();
        assert_eq!(tok.vocab, strings(&["b", "a", "c", "d", "e", "z"]));
        assert_eq!(tok.vocab_size(), 8);
        assert_eq!((tok.id("b"), tok.id("a"), tok.id("c"), tok.id("z")), (2, 3, 4, 7));

        let cut = Tokenizer::fit(&spec(5, 4), &texts, &all_rows(&texts)).unwrap();
        assert_eq!(cut.vocab, strings(&["b", "a", "c"]));
        assert_eq!(cut.vocab_size(), 5);
        assert_eq!(cut.id("d"), 1);

        let frequent = TokenizerSpec {
            min_freq: 2,
            ..spec(100, 4)
        };
        let tok = Tokenizer::fit(&frequent, &texts, &all_rows(&texts)).unwrap();
        assert_eq!(tok.vocab, strings(&["b", "a", "c"]));
        assert_eq!(tok.vocab_size(), 5);

        // The cut among equally frequent tokens is alphabetical, whatever the text order.
        let ties = strings(&["q p o n m"]);
        let tok = Tokenizer::fit(&spec(4, 4), &ties, &[0]).unwrap();
        assert_eq!(tok.vocab, strings(&["m", "n"]));

        for bad in [spec(2, 4), spec(10, 0), spec(MAX_EXACT_F32 + 1, 4)] {
            assert!(Tokenizer::fit(&bad, &texts, &[0]).is_err());
        }
        let err = Tokenizer::fit(&spec(10, 4), &texts, &[4]).unwrap_err();
        assert_eq!(err.message, "training row 4 is outside the 4 texts");
    }

    #[test]
    fn oov_padding_and_truncation_on_both_sides() {
        let texts = strings(&["a b c", "c c b"]);
        let fitted = |padding, truncation| {
            let s = TokenizerSpec {
                padding,
                truncation,
                ..spec(100, 4)
            };
            Tokenizer::fit(&s, &texts, &[0, 1]).unwrap()
        };
        // Counts c 3, b 2, a 1: ids c = 2, b = 3, a = 4; x and q are unknown (1).
        let new = strings(&["a x b", "c b a q c b", ""]);
        let cases = [
            (Side::Post, Side::Post, [4., 1., 3., 0., 2., 3., 4., 1., 0., 0., 0., 0.]),
            (Side::Pre, Side::Post, [0., 4., 1., 3., 2., 3., 4., 1., 0., 0., 0., 0.]),
            (Side::Post, Side::Pre, [4., 1., 3., 0., 4., 1., 2., 3., 0., 0., 0., 0.]),
            (Side::Pre, Side::Pre, [0., 4., 1., 3., 4., 1., 2., 3., 0., 0., 0., 0.]),
        ];
        for (padding, truncation, expected) in cases {
            let ids = fitted(padding, truncation).transform(&new);
            assert_eq!(ids.shape, vec![3, 4]);
            assert_eq!(ids.data, expected, "padding {padding:?}, truncation {truncation:?}");
        }
        assert_eq!(fitted(Side::Post, Side::Post).transform(&[]).shape, vec![0, 4]);
    }

    #[test]
    fn serde_round_trip_transforms_identically() {
        let texts = strings(&[
            "The cat sat on the mat.",
            "A dog! The dog barked; cats ran.",
            "Ünïcode wörds",
        ]);
        let s = TokenizerSpec {
            padding: Side::Pre,
            ..spec(9, 6)
        };
        let tok = Tokenizer::fit(&s, &texts, &all_rows(&texts)).unwrap();
        let json = serde_json::to_string(&tok).unwrap();
        let back: Tokenizer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, tok);
        let probe = strings(&["the dog sat on a new mat", "wörds wörds unseen", ""]);
        let (a, b) = (tok.transform(&probe), back.transform(&probe));
        assert_eq!(a.shape, b.shape);
        assert!(a.data.iter().zip(&b.data).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(json.contains("\"vocab\":[\"the\",\"dog\""), "{json}");

        // Char n-grams keep their range; a corrupted vocabulary is refused.
        let ng = TokenizerSpec {
            mode: TokenMode::CharNgrams,
            ngram_range: Some([2, 3]),
            ..spec(50, 8)
        };
        let tok = Tokenizer::fit(&ng, &texts, &[0]).unwrap();
        let back: Tokenizer = serde_json::from_str(&serde_json::to_string(&tok).unwrap()).unwrap();
        assert_eq!(back.tokens("cat"), tok.tokens("cat"));
        assert_eq!(back.transform(&texts).data, tok.transform(&texts).data);
        let dup =
            r#"{"lowercase":true,"mode":"word","length":3,"padding":"post","truncation":"post","vocab":["a","a"]}"#;
        assert!(
            serde_json::from_str::<Tokenizer>(dup)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let extra =
            r#"{"lowercase":true,"mode":"word","length":3,"padding":"post","truncation":"post","vocab":[],"x":1}"#;
        assert!(serde_json::from_str::<Tokenizer>(extra).is_err());
    }

    #[test]
    fn fit_uses_only_the_training_rows() {
        let texts = strings(&["alpha beta", "gamma leak", "beta alpha"]);
        let tok = Tokenizer::fit(&spec(100, 3), &texts, &[0, 2]).unwrap();
        assert_eq!(tok.id("leak"), 1);
        assert_eq!(tok.id("gamma"), 1);
        assert_eq!(tok.vocab_size(), 4);
        assert_eq!(tok.transform(&texts[1..2]).data, vec![1., 1., 0.]);
    }
}
