//! The word2vec binary reader: per word the word's bytes, a space and `dim` little-endian `f32`. Nothing in the
//! records marks where a word ends but the space, so errors name the word (1-based) and, where it helps, its byte
//! offset, to tell a truncated file or a wrong header dimension from bad data.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};

use super::read::{Collector, ReadError, read_header, shown};
use super::{WordVecFormat, WordVectors};
use crate::error::Error;

/// The longest word a binary file may hold; beyond this the file is corrupt or the header's dimension wrong.
const MAX_WORD_BYTES: usize = 1 << 16;

pub(super) fn read_binary(reader: &mut BufReader<File>, len: u64) -> std::result::Result<WordVectors, ReadError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use crate::wordvec::read::detect;
    use crate::wordvec::tests::{binary, check_sample, read_err, sample_records, text_lines};
    use std::fs;

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
}
