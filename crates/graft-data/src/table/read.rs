//! Reading a CSV file into a [`Table`] of strings. The `csv` crate splits files into records; [`read_csv`] adds what
//! that crate leaves to its caller: text encodings, delimiter detection, trimming of unquoted fields, and quoting
//! errors that name the line, so that a user's file either reads as they meant it or fails with where it went wrong.

use std::borrow::Cow;
use std::collections::HashMap;

use super::{CsvSpec, Table};
use crate::error::{Context, Error, Result};

/// Parses a CSV file per the spec: RFC-4180 quoting (quoted fields, doubled quotes, delimiters and newlines inside
/// quotes), trims surrounding whitespace of unquoted fields (Adult has ", " separators), skips blank lines. Errors name
/// the file and the line (ragged rows: "line 17 has 13 fields, the header has 15"). A quoted field may follow spaces
/// (`1, "x"`) but then cannot hold the delimiter or a line break, where the csv reader has already split it.
///
/// A file that is not valid UTF-8 is decoded as Windows-1252 (Latin-1), or as UTF-16 when it starts with a UTF-16
/// byte-order mark. With the default `,` delimiter, a header that is one column at commas but splits at tabs or
/// semicolons selects that delimiter instead.
///
/// With `columns` (a headerless file), a file whose rows all have one field fewer than `columns` names is read as
/// lacking the target column, so that predict-time files of a headerless format may leave the target out.
/// `strip_target_suffix` is applied here, to the target column when the file has one.
pub fn read_csv(spec: &CsvSpec) -> Result<Table> {
    let path = spec.path.as_path();
    let delimiter = delimiter_byte(spec.delimiter)?;
    let bytes = std::fs::read(path).in_file(path)?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(
            Error::new("this is a gzip-compressed file; decompress it (gunzip) and give the .csv").in_file(path),
        );
    }
    let text = decode(&bytes);
    let body = skip_lines(&text, spec.skip_rows);
    let delimiter = if spec.columns.is_none() && delimiter == b',' {
        sniff_delimiter(body).in_file(path)?
    } else {
        delimiter
    };
    let mut records = parse_records(body, delimiter, spec.skip_rows + 1).in_file(path)?;

    let (header, from_file) = match &spec.columns {
        Some(columns) => {
            let mut header = columns.clone();
            let target_pos = spec.target.as_ref().and_then(|t| header.iter().position(|c| c == t));
            if let Some(pos) = target_pos
                && !records.is_empty()
                && records.iter().all(|r| r.fields.len() + 1 == header.len())
            {
                header.remove(pos);
            }
            (header, false)
        }
        None => {
            if records.is_empty() {
                return Err(Error::new("the file has no header row (it is empty)").in_file(path));
            }
            let first = records.remove(0);
            (first.fields, true)
        }
    };
    check_unique(&header).in_file(path)?;

    let mut rows = Vec::with_capacity(records.len());
    for record in records {
        if record.fields.len() != header.len() {
            let whose = if from_file { "the header has" } else { "`columns` names" };
            return Err(Error::new(format!(
                "line {} has {} fields, {whose} {}",
                record.line,
                record.fields.len(),
                header.len()
            ))
            .in_file(path));
        }
        rows.push(record.fields);
    }

    if let (Some(target), Some(suffix)) = (&spec.target, &spec.strip_target_suffix)
        && let Some(pos) = header.iter().position(|c| c == target)
    {
        for row in &mut rows {
            if let Some(stripped) = row[pos].strip_suffix(suffix.as_str()) {
                row[pos] = stripped.trim_end().to_string();
            }
        }
    }
    Ok(Table { header, rows })
}

/// The delimiter as the byte the csv reader splits at.
fn delimiter_byte(delimiter: char) -> Result<u8> {
    if matches!(delimiter, '"' | '\n' | '\r') {
        return Err(Error::new(format!("the delimiter cannot be {delimiter:?}")).at("delimiter"));
    }
    if !delimiter.is_ascii() {
        return Err(Error::new(format!("the delimiter must be an ASCII character, not {delimiter:?}")).at("delimiter"));
    }
    Ok(delimiter as u8)
}

/// The file's text. Public tables that are not UTF-8 are mostly Windows-1252 (a superset of Latin-1 in which every
/// byte is a character, so decoding cannot fail); encoding_rs honours a byte-order mark first, which makes the
/// UTF-16 "Unicode text" that spreadsheets export readable too.
fn decode(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text.strip_prefix('\u{feff}').unwrap_or(text)),
        Err(_) => encoding_rs::WINDOWS_1252.decode(bytes).0,
    }
}

/// `text` after its first `lines` lines. Skipped lines are cut off before parsing because they are not CSV: a quote
/// in one must not open a field.
fn skip_lines(text: &str, lines: usize) -> &str {
    let mut rest = text;
    for _ in 0..lines {
        match rest.find('\n') {
            Some(i) => rest = &rest[i + 1..],
            None => return "",
        }
    }
    rest
}

/// The delimiter of a file whose header (its first non-blank line) is one column at commas but more at tabs or at
/// semicolons: tab-separated exports, and the `;` tables of locales that write decimal commas. A header that splits
/// at both is an error asking for `delimiter`; a header that splits at neither is a one-column table.
fn sniff_delimiter(text: &str) -> Result<u8> {
    let Some(header) = text.lines().find(|line| !line.trim().is_empty()) else {
        return Ok(b',');
    };
    let width = |delimiter: u8| {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(delimiter)
            .from_reader(header.as_bytes())
            .records()
            .next()
            .and_then(|record| record.ok())
            .map_or(0, |record| record.len())
    };
    if width(b',') > 1 {
        return Ok(b',');
    }
    let splitting: Vec<u8> = [b'\t', b';'].into_iter().filter(|&d| width(d) > 1).collect();
    match splitting[..] {
        [] => Ok(b','),
        [delimiter] => Ok(delimiter),
        _ => Err(Error::new(
            "the header has one column when split at ',' but holds both tabs and ';', so the delimiter cannot be \
             told: set it, e.g. `delimiter = \"\\t\"` for a tab-separated file",
        )
        .at("delimiter")),
    }
}

/// One parsed record: its fields and the line it starts on (1-based).
pub(crate) struct Record {
    pub(crate) line: usize,
    pub(crate) fields: Vec<String>,
}

/// Splits `text`, whose first line is line `first_line` of its file, into records. Whitespace around unquoted fields
/// (and around a quoted field) is dropped; records that are one empty unquoted field (blank lines) are skipped.
pub(crate) fn parse_records(text: &str, delimiter: u8, first_line: usize) -> Result<Vec<Record>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        // Only '\n' ends a record, so that the '\r' of a CRLF line is trailing whitespace, trimmed like any other,
        // and the line count is the number of '\n' before the record.
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(text.as_bytes());
    let mut record = csv::StringRecord::new();
    let mut records = Vec::new();
    while reader
        .read_record(&mut record)
        .map_err(|e| Error::new(format!("cannot read the CSV: {e}")))?
    {
        let rest = &text[record.position().map_or(0, |p| p.byte() as usize)..];
        // A record's position is where the reader started looking for it, before the blank lines it skipped.
        let blank_lines = rest.len() - rest.trim_start_matches('\n').len();
        let line = first_line - 1 + record.position().map_or(1, |p| p.line() as usize) + blank_lines;
        let (fields, quoted) = field_values(&rest[blank_lines..], &record, line)?;
        let blank = !quoted && fields.len() == 1 && fields[0].is_empty();
        if !blank {
            records.push(Record { line, fields });
        }
    }
    Ok(records)
}

/// The values of one record, and whether any field was quoted, from the csv reader's fields and the file's text
/// from the record's first line (line `line`) on. The csv reader says nothing of quoting and is lenient where graft
/// is not: it keeps text that follows a closing quote, runs a never-closed quote to the end of the file, and reads a
/// quote after spaces as text. Graft keeps the spaces inside quotes but trims unquoted fields, allows spaces around
/// a quoted field (`1, "x"`), and refuses the rest with the line.
fn field_values(text: &str, record: &csv::StringRecord, line: usize) -> Result<(Vec<String>, bool)> {
    let line_at = |at: usize| line + text.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
    let never_closed = |at: usize| Error::new(format!("line {}: a quoted field is never closed", line_at(at)));
    let mut values = Vec::with_capacity(record.len());
    let mut quoted = false;
    // Where the current field starts in `text`.
    let mut at = 0;
    for field in record {
        if text.as_bytes().get(at) == Some(&b'"') {
            // The reader's field is the quoted text, then whatever followed the closing quote.
            quoted = true;
            let close = closing_quote(text, at).ok_or_else(|| never_closed(at))?;
            let doubled = text[at + 1..close].matches('"').count() / 2;
            let (value, after) = field.split_at(close - at - 1 - doubled);
            check_after_quote(after, line_at(close))?;
            values.push(value.to_string());
            at = close + 1 + after.len() + 1;
        } else {
            let value = field.trim();
            if value.starts_with('"') {
                quoted = true;
                let Some(close) = closing_quote(value, 0) else {
                    let open = at + field.len() - field.trim_start().len();
                    return Err(match closing_quote(text, open) {
                        None => never_closed(open),
                        // The reader ended the field at a delimiter or line break inside the quotes.
                        Some(_) => Error::new(format!(
                            "line {}: a quoted field after spaces cannot hold the delimiter or a line break \
                             (remove the spaces before the quote)",
                            line_at(open)
                        )),
                    });
                };
                check_after_quote(&value[close + 1..], line_at(at))?;
                values.push(value[1..close].replace("\"\"", "\""));
            } else {
                values.push(value.to_string());
            }
            at += field.len() + 1;
        }
    }
    Ok((values, quoted))
}

/// The index of the quote that closes the quoted field opening at `open` in `text` (a doubled quote is text), if any.
fn closing_quote(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = open + 1;
    loop {
        i += bytes[i..].iter().position(|&b| b == b'"')?;
        if bytes.get(i + 1) != Some(&b'"') {
            return Some(i);
        }
        i += 2;
    }
}

/// Refuses anything but whitespace between a closing quote and the end of its field.
fn check_after_quote(after: &str, line: usize) -> Result<()> {
    match after.trim_start().chars().next() {
        None => Ok(()),
        Some(c) => Err(Error::new(format!(
            "line {line}: unexpected {c:?} after the closing quote of a field (a quote inside a quoted field is \
             written twice: \"\")"
        ))),
    }
}

/// Refuses duplicate column names: columns are found by name.
pub(super) fn check_unique(header: &[String]) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        if let Some(first) = seen.insert(name, i) {
            return Err(Error::new(format!(
                "column name '{name}' appears twice (columns {} and {}); columns are found by name",
                first + 1,
                i + 1
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Targets;
    use crate::table::TabularPreprocessor;
    use crate::table::columns::Column;
    use crate::table::tests::{all, spec};
    use crate::test_util::TempDir;

    #[test]
    fn quoted_fields_with_delimiters_quotes_and_newlines() {
        let dir = TempDir::new("table");
        let text = "name,\"note, with comma\",n\r\n\
                    \"Smith, J.\",\"said \"\"hi\"\"\nthen left\",1\r\n\
                    \n   \n\
                    plain ,  \"  padded  \"  ,2\n\
                    \"\",x,3";
        let s = spec(dir.write("q.csv", text), None);
        let table = read_csv(&s).unwrap();
        assert_eq!(table.header, ["name", "note, with comma", "n"]);
        assert_eq!(
            table.rows,
            [
                vec!["Smith, J.", "said \"hi\"\nthen left", "1"],
                vec!["plain", "  padded  ", "2"],
                vec!["", "x", "3"],
            ]
        );

        let err = read_csv(&spec(dir.write("u.csv", "a,b\n1,\"open\n2,3\n"), None)).unwrap_err();
        assert_eq!(err.message, "line 2: a quoted field is never closed");
        assert!(err.to_string().contains("u.csv"));
        let err = read_csv(&spec(dir.write("v.csv", "a,b\n1,\"x\"y\n"), None)).unwrap_err();
        assert!(
            err.message
                .starts_with("line 2: unexpected 'y' after the closing quote"),
            "{err}"
        );
    }

    #[test]
    fn other_delimiters() {
        let dir = TempDir::new("table");
        let s = CsvSpec {
            delimiter: ';',
            ..spec(dir.write("s.csv", "a;b\n1,5;x\n"), None)
        };
        assert_eq!(read_csv(&s).unwrap().rows, [["1,5", "x"]]);
        let s = CsvSpec {
            delimiter: '\t',
            ..spec(dir.write("t.tsv", "a\tb\n 1 \t\tx\n"), None)
        };
        let err = read_csv(&s).unwrap_err();
        assert_eq!(err.message, "line 2 has 3 fields, the header has 2");
    }

    #[test]
    fn ragged_row_error_names_file_and_line() {
        let dir = TempDir::new("table");
        // The quoted newline makes the ragged record start on line 5.
        let text = "a,b,c\n1,2,3\n\n\"x\ny\",2,3\n1,2\n";
        let s = spec(dir.write("r.csv", text), None);
        let err = read_csv(&s).unwrap_err();
        assert_eq!(err.message, "line 6 has 2 fields, the header has 3");
        assert_eq!(err.file.as_deref(), Some(s.path.as_path()));
        let err = read_csv(&spec(dir.write("d.csv", "a,b,a\n1,2,3\n"), None)).unwrap_err();
        assert!(err.message.contains("'a' appears twice"), "{err}");
        assert!(read_csv(&spec(dir.write("e.csv", "\n\n"), None)).is_err());
        assert!(
            read_csv(&spec(dir.0.join("absent.csv"), None))
                .unwrap_err()
                .to_string()
                .contains("absent.csv")
        );
        let bad = dir.0.join("bad.csv");
        std::fs::write(&bad, b"a\n1\n\xff\n").unwrap();
        // Not UTF-8: read as Windows-1252, where 0xFF is 'ÿ'.
        assert_eq!(read_csv(&spec(bad, None)).unwrap().rows, [["1"], ["ÿ"]]);
    }

    #[test]
    fn quoted_multi_line_cell() {
        let dir = TempDir::new("table");
        let text = "id,text,label\r\n\
                    1,\"first line\r\nsecond, with a comma\n\"\"third\"\"  \",pos\r\n\
                    2,  plain  ,neg\r\n";
        let table = read_csv(&spec(dir.write("m.csv", text), Some("label"))).unwrap();
        assert_eq!(table.header, ["id", "text", "label"]);
        assert_eq!(
            table.rows,
            [
                ["1", "first line\r\nsecond, with a comma\n\"third\"  ", "pos"],
                ["2", "plain", "neg"],
            ]
        );
        // Lines are counted through the cell: the ragged row is line 6.
        let err = read_csv(&spec(dir.write("m2.csv", format!("{text}3,x\r\n")), None)).unwrap_err();
        assert_eq!(err.message, "line 6 has 2 fields, the header has 3");
    }

    #[test]
    fn tab_separated_file_without_delimiter_is_detected() {
        let dir = TempDir::new("table");
        let tsv = "age\tcity\tincome\n20\tSão Paulo, SP\tlow\n30\tOslo\thigh\n40\tOslo\tlow\n";
        let s = spec(dir.write("p.tsv", tsv), Some("income"));
        let table = read_csv(&s).unwrap();
        assert_eq!(table.header, ["age", "city", "income"]);
        assert_eq!(table.rows[0], ["20", "São Paulo, SP", "low"]);
        // The predict-time file is detected the same way.
        let p = TabularPreprocessor::fit(&s, &table, &all(&table)).unwrap();
        let t = read_csv(&p.predict_spec(&dir.write("q.tsv", "city\tage\nOslo\t25\n"))).unwrap();
        assert_eq!(t.rows, [["Oslo", "25"]]);
        assert_eq!(p.transform(&t, false).unwrap().0.shape, [1, p.width()]);

        // Semicolons (decimal-comma locales) too; an explicit delimiter is never second-guessed.
        let semi = dir.write("s.csv", "a;b\n1,5;x\n");
        assert_eq!(read_csv(&spec(semi.clone(), None)).unwrap().rows, [["1,5", "x"]]);
        let explicit = read_csv(&CsvSpec {
            delimiter: '\t',
            ..spec(semi, None)
        })
        .unwrap();
        assert_eq!(explicit.header, ["a;b"]);
        // A one-column file stays one column.
        let one = read_csv(&spec(dir.write("o.csv", "text\nhello; world\n"), None)).unwrap();
        assert_eq!(one.rows, [["hello; world"]]);

        let err = read_csv(&spec(dir.write("x.csv", "a\tb;c\n1\t2;3\n"), None)).unwrap_err();
        assert!(err.message.contains("the header has one column"), "{err}");
        assert!(err.message.contains(r#"`delimiter = "\t"`"#), "{err}");
        assert!(err.to_string().contains("x.csv"), "{err}");
    }

    #[test]
    fn latin1_file_is_decoded() {
        let dir = TempDir::new("table");
        // Windows-1252: 0xE9 'é', 0xF6 'ö', 0x80 '€'.
        let path = dir.write("l.csv", b"name,city,price\nJos\xe9,K\xf6ln,\x805\n");
        let table = read_csv(&spec(path, None)).unwrap();
        assert_eq!(table.header, ["name", "city", "price"]);
        assert_eq!(table.rows, [["José", "Köln", "€5"]]);
        // Valid UTF-8 is not decoded twice, and its byte-order mark is dropped.
        let path = dir.write("u.csv", "\u{feff}name\nJosé\n");
        assert_eq!(read_csv(&spec(path, None)).unwrap().rows, [["José"]]);
        // UTF-16 with a byte-order mark (spreadsheets' "Unicode text", tab-separated).
        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend("a\tb\n1\tJosé\n".encode_utf16().flat_map(u16::to_le_bytes));
        let table = read_csv(&spec(dir.write("w.txt", utf16), None)).unwrap();
        assert_eq!(table.header, ["a", "b"]);
        assert_eq!(table.rows, [["1", "José"]]);
    }

    #[test]
    fn ragged_tsv_row_names_file_and_line() {
        let dir = TempDir::new("table");
        let s = spec(dir.write("rag.tsv", "a\tb\tc\n1\t2\t3\n\n4\t5\n"), None);
        let err = read_csv(&s).unwrap_err();
        assert_eq!(err.message, "line 4 has 2 fields, the header has 3");
        assert_eq!(err.file.as_deref(), Some(s.path.as_path()));
        assert!(err.to_string().contains("rag.tsv: line 4 has 2 fields"), "{err}");
    }

    #[test]
    fn quotes_after_spaces_and_unsupported_delimiters() {
        let dir = TempDir::new("table");
        let table = read_csv(&spec(dir.write("q.csv", "a,b\n1, \"x \"\"y\"\"\" \n"), None)).unwrap();
        assert_eq!(table.rows, [["1", "x \"y\""]]);
        // The csv reader splits there, so graft refuses rather than misread.
        let err = read_csv(&spec(dir.write("r.csv", "a,b,c\n1, \"x, y\",2\n"), None)).unwrap_err();
        assert!(err.message.starts_with("line 2: a quoted field after spaces"), "{err}");
        let err = read_csv(&spec(dir.write("s.csv", "a,b\n1, \"x\" y\n"), None)).unwrap_err();
        assert!(
            err.message
                .starts_with("line 2: unexpected 'y' after the closing quote"),
            "{err}"
        );
        let err = read_csv(&CsvSpec {
            delimiter: '§',
            ..spec(dir.write("t.csv", "a§b\n"), None)
        })
        .unwrap_err();
        assert_eq!(err.location.as_deref(), Some("delimiter"));
        assert!(err.message.contains("ASCII"), "{err}");
    }

    #[test]
    fn headerless_file_with_columns() {
        let dir = TempDir::new("table");
        let s = CsvSpec {
            columns: Some(vec!["a".into(), "b".into(), "label".into()]),
            ..spec(dir.write("n.csv", "1,x,yes\n2,y,no\n"), Some("label"))
        };
        let table = read_csv(&s).unwrap();
        assert_eq!(table.header, ["a", "b", "label"]);
        assert_eq!(table.rows.len(), 2);
        let p = TabularPreprocessor::fit(&s, &table, &all(&table)).unwrap();
        assert_eq!(p.class_names(), ["no", "yes"]);

        // A predict-time file of the same format without the target column.
        let predict = dir.write("n2.csv", "3,x\n4,z\n");
        let t = read_csv(&p.predict_spec(&predict)).unwrap();
        assert_eq!(t.header, ["a", "b"]);
        let (x, _) = p.transform(&t, false).unwrap();
        assert_eq!(x.shape, [2, 1 + 3]);
        assert_eq!(p.targets(&t, &[0, 1]).unwrap(), None);

        let err = read_csv(&CsvSpec {
            path: dir.write("n3.csv", "1,x,yes\n2\n"),
            ..s
        })
        .unwrap_err();
        assert_eq!(err.message, "line 2 has 1 fields, `columns` names 3");
    }

    #[test]
    fn adult_style_file() {
        let dir = TempDir::new("table");
        let text = "|1x3 Cross validator\n\
                    25, Private, 11th, <=50K.\n\
                    38, ?, HS-grad, >50K.\n\
                    \n\
                    28, Local-gov, Assoc-acdm, >50K.\n";
        let s = CsvSpec {
            columns: Some(vec![
                "age".into(),
                "workclass".into(),
                "education".into(),
                "income".into(),
            ]),
            skip_rows: 1,
            strip_target_suffix: Some(".".into()),
            ..spec(dir.write("adult.test", text), Some("income"))
        };
        let table = read_csv(&s).unwrap();
        assert_eq!(table.rows.len(), 3);
        assert_eq!(table.rows[1], ["38", "?", "HS-grad", ">50K"]);
        let p = TabularPreprocessor::fit(&s, &table, &all(&table)).unwrap();
        assert_eq!(p.class_names(), ["<=50K", ">50K"]);
        assert!(
            matches!(&p.columns[1], Column::Categorical { categories, .. } if categories == &["Local-gov", "Private"])
        );
        let (x, _) = p.transform(&table, false).unwrap();
        // workclass "?" → the reserved slot (after Local-gov, Private).
        assert_eq!(x.row(1)[1..4], [0.0, 0.0, 1.0]);
        let labels = match p.targets(&table, &[0, 1, 2]).unwrap() {
            Some(Targets::Classes { labels, .. }) => labels,
            other => panic!("{other:?}"),
        };
        assert_eq!(labels, [0, 1, 1]);
        // A ragged line is counted from the top of the file, skipped lines included.
        let err = read_csv(&CsvSpec {
            path: dir.write("bad.test", "|junk\n1, a, b, c\n1, a\n"),
            ..s
        })
        .unwrap_err();
        assert_eq!(err.message, "line 3 has 2 fields, `columns` names 4");
    }
}
