//! What the binary and the text readers share: collecting words (a repeated word keeps its first vector, words
//! that are not UTF-8 are decoded lossily, both counted), format detection from a file's first bytes, the word2vec
//! header line, and errors located at a line or word for the caller to put in the file.

use std::collections::HashMap;
use std::io::{BufRead, Read};

use super::{WordVecFormat, WordVectors};
use crate::error::Error;

/// Accumulates words and values, keeping the first vector of a repeated word.
pub(super) struct Collector {
    dim: usize,
    words: Vec<String>,
    values: Vec<f32>,
    index: HashMap<String, usize>,
    duplicates: usize,
    non_utf8: usize,
}

impl Collector {
    pub(super) fn new(dim: usize, capacity: usize) -> Self {
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
    pub(super) fn push_bytes(&mut self, word: &[u8], vector: impl Iterator<Item = f32>) {
        let word = match std::str::from_utf8(word) {
            Ok(word) => word.to_owned(),
            Err(_) => {
                self.non_utf8 += 1;
                String::from_utf8_lossy(word).into_owned()
            }
        };
        self.push_string(word, vector);
    }

    pub(super) fn push_string(&mut self, word: String, vector: impl Iterator<Item = f32>) {
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

    pub(super) fn finish(self) -> WordVectors {
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
pub(super) enum ReadError {
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
pub(super) fn detect(head: &[u8]) -> WordVecFormat {
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
pub(super) fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty())
}

/// A word for messages: lossily decoded and cut short.
pub(super) fn shown(word: &[u8]) -> String {
    let word = String::from_utf8_lossy(word);
    if word.chars().count() > 40 {
        format!("{:?}...", word.chars().take(40).collect::<String>())
    } else {
        format!("{word:?}")
    }
}

/// Reads the header line (line 1) of a word2vec file: `(n_words, dim, bytes consumed)`.
pub(super) fn read_header(
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

#[cfg(test)]
mod tests {
    use crate::test_util::TempDir;
    use crate::wordvec::WordVectors;
    use crate::wordvec::tests::binary;

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
}
