//! The text readers: word2vec text (and fastText `.vec`), with its header line, and GloVe, without one; a word and
//! its values per line, separated by ASCII whitespace. Errors name the line.

use std::fs::File;
use std::io::{BufRead, BufReader};

use super::read::{Collector, ReadError, fields, read_header, shown};
use super::{WordVecFormat, WordVectors};
use crate::error::Error;

/// Reads word2vec text (`header` true) or GloVe (no header; `dim` from the first line).
pub(super) fn read_text(
    reader: &mut BufReader<File>,
    len: u64,
    header: bool,
) -> std::result::Result<WordVectors, ReadError> {
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
    use crate::wordvec::read::detect;
    use crate::wordvec::tests::{check_sample, read_err, text_lines};
    use std::fs;

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
}
