//! The tokenization rules: lowercasing, words (runs of letters, digits and apostrophes) and fastText-style
//! character n-grams, shared by the spec (checked before any text is read) and the fitted [`super::Tokenizer`]. Every
//! text passes through here at fit and at transform time, so bytes are scanned without decoding where the text is
//! ASCII and scratch buffers are reused across texts.

use super::TokenMode;
use crate::error::{Error, Result};

/// fastText's default character n-gram lengths.
const DEFAULT_NGRAMS: [usize; 2] = [3, 6];

/// The tokenization rules, shared by the spec and the fitted tokenizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Splitter {
    pub(super) lowercase: bool,
    pub(super) mode: TokenMode,
    /// `[min, max]` characters, for char n-grams.
    pub(super) ngrams: [usize; 2],
    pub(super) length: usize,
}

/// Scratch space reused across texts, so tokenizing allocates only for new vocabulary entries.
#[derive(Default)]
pub(super) struct Scratch {
    lower: String,
    word: String,
    bounds: Vec<usize>,
}

impl Splitter {
    pub(super) fn new(
        lowercase: bool,
        mode: TokenMode,
        ngram_range: Option<[usize; 2]>,
        length: usize,
    ) -> Result<Self> {
        if length == 0 {
            return Err(Error::new("the output length must be at least 1").at("length"));
        }
        let ngrams = match (mode, ngram_range) {
            (TokenMode::Word, None) => DEFAULT_NGRAMS,
            (TokenMode::Word, Some(_)) => {
                return Err(Error::new("ngram_range applies only with mode = \"char_ngrams\"").at("ngram_range"));
            }
            (TokenMode::CharNgrams, range) => {
                let [min, max] = range.unwrap_or(DEFAULT_NGRAMS);
                if min == 0 || min > max {
                    return Err(Error::new(format!(
                        "ngram_range must be [min, max] with 1 <= min <= max, found [{min}, {max}]"
                    ))
                    .at("ngram_range"));
                }
                [min, max]
            }
        };
        Ok(Splitter {
            lowercase,
            mode,
            ngrams,
            length,
        })
    }

    /// Calls `f` on each token of `text` in order until it returns false.
    pub(super) fn each_token(&self, text: &str, scratch: &mut Scratch, mut f: impl FnMut(&str) -> bool) {
        let Scratch { lower, word, bounds } = scratch;
        let text = if self.lowercase {
            lower.clear();
            if text.is_ascii() {
                lower.push_str(text);
                lower.make_ascii_lowercase();
            } else {
                lower.push_str(&text.to_lowercase());
            }
            lower.as_str()
        } else {
            text
        };
        let words = Words { text, pos: 0 };
        match self.mode {
            TokenMode::Word => {
                for w in words {
                    if !f(w) {
                        return;
                    }
                }
            }
            TokenMode::CharNgrams => {
                let [min, max] = self.ngrams;
                for w in words {
                    word.clear();
                    word.push('<');
                    word.push_str(w);
                    word.push('>');
                    bounds.clear();
                    bounds.extend(word.char_indices().map(|(i, _)| i));
                    bounds.push(word.len());
                    let chars = bounds.len() - 1;
                    if !f(word) {
                        return;
                    }
                    for i in 0..chars {
                        for n in min..=max.min(chars - i) {
                            let j = i + n;
                            // Skip the whole word (already given) and the boundary marks alone.
                            if (i == 0 && j == chars) || (n == 1 && (i == 0 || j == chars)) {
                                continue;
                            }
                            if !f(&word[bounds[i]..bounds[j]]) {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The words of a text: maximal runs of alphanumeric characters and apostrophes. Scans bytes, decoding a character
/// only where the text is not ASCII (several times faster than `str::split` with a `char` predicate).
struct Words<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let mut start = None;
        let mut i = self.pos;
        while i < bytes.len() {
            let b = bytes[i];
            let (in_word, width) = if b.is_ascii() {
                (b.is_ascii_alphanumeric() || b == b'\'', 1)
            } else {
                let c = self.text[i..].chars().next().expect("a character starts here");
                (c.is_alphanumeric(), c.len_utf8())
            };
            if in_word {
                start.get_or_insert(i);
            } else if let Some(s) = start {
                self.pos = i + width;
                return Some(&self.text[s..i]);
            }
            i += width;
        }
        self.pos = bytes.len();
        start.map(|s| &self.text[s..])
    }
}

#[cfg(test)]
mod tests {
    use crate::text::tests::{spec, strings};
    use crate::text::{TokenMode, Tokenizer, TokenizerSpec};

    #[test]
    fn word_tokenization_rules() {
        let tok = Tokenizer::fit(&TokenizerSpec::default(), &[], &[]).unwrap();
        assert_eq!(
            tok.tokens("Don't STOP--e-mail me@x.com, 42nd_st! Ünïcode ÇA  "),
            strings(&[
                "don't",
                "stop",
                "e",
                "mail",
                "me",
                "x",
                "com",
                "42nd",
                "st",
                "ünïcode",
                "ça"
            ])
        );
        assert!(tok.tokens(" ,.;- \n").is_empty());
        let cased = TokenizerSpec {
            lowercase: false,
            ..TokenizerSpec::default()
        };
        let tok = Tokenizer::fit(&cased, &[], &[]).unwrap();
        assert_eq!(tok.tokens("Hello WORLD"), strings(&["Hello", "WORLD"]));
    }

    #[test]
    fn char_ngrams() {
        let s = TokenizerSpec {
            mode: TokenMode::CharNgrams,
            ngram_range: Some([3, 4]),
            ..spec(1000, 50)
        };
        let tok = Tokenizer::fit(&s, &[], &[]).unwrap();
        assert_eq!(
            tok.tokens("Where"),
            strings(&[
                "<where>", "<wh", "<whe", "whe", "wher", "her", "here", "ere", "ere>", "re>"
            ])
        );
        // Short words: the whole word, and no n-gram is the whole word again.
        assert_eq!(
            tok.tokens("a I'm"),
            strings(&["<a>", "<i'm>", "<i'", "<i'm", "i'm", "i'm>", "'m>"])
        );
        let uni = TokenizerSpec {
            ngram_range: Some([1, 2]),
            ..s.clone()
        };
        let tok = Tokenizer::fit(&uni, &[], &[]).unwrap();
        // Multi-byte characters count as one; the bare boundary marks are not tokens.
        assert_eq!(tok.tokens("çé"), strings(&["<çé>", "<ç", "ç", "çé", "é", "é>"]));
        let texts = strings(&["where here", "there"]);
        let tok = Tokenizer::fit(&s, &texts, &[0]).unwrap();
        // "there" shares n-grams with the training words but is not a known word.
        assert_eq!(tok.id("<there>"), 1);
        assert!(tok.id("here") > 1);
        let ids = tok.transform(&texts[1..]);
        // Known: her, here, ere, ere>, re>.
        assert_eq!(ids.data.iter().filter(|&&v| v > 1.0).count(), 5);
        // Defaults to fastText's [3, 6].
        let d = TokenizerSpec {
            mode: TokenMode::CharNgrams,
            ..TokenizerSpec::default()
        };
        assert_eq!(Tokenizer::fit(&d, &[], &[]).unwrap().splitter.ngrams, [3, 6]);
        let bad = TokenizerSpec {
            ngram_range: Some([3, 2]),
            ..s
        };
        assert!(bad.validate().is_err());
    }
}
