//! CSV tables and the fitted tabular preprocessing: standardized numeric columns and one-hot or
//! embedding-id categorical columns, fitted on the training rows only and stored with the model so
//! that prediction applies exactly the same transformation.
//!
//! Columns are always found by name, so a predict-time file may order its columns differently or
//! lack the target column.
//!
//! The `csv` crate splits files into records; [`read_csv`] adds what that crate leaves to its caller: text
//! encodings, delimiter detection, trimming of unquoted fields, and quoting errors that name the line.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::array::Array;
use super::dataset::Targets;
use crate::error::{Context, Error, Result};

/// The strings that mean "missing" when a spec does not say.
const DEFAULT_MISSING: [&str; 4] = ["", "?", "NA", "NaN"];
/// How many class names an error message lists before eliding the rest.
const LISTED_CLASSES: usize = 10;

/// A CSV file as strings: header names and rows (all rows the same width as the header).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// How to read a CSV file and what to do with its columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSpec {
    pub path: PathBuf,
    /// The target column's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Column names when the file has no header row (UCI Adult has none); otherwise the first row is the header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// The field separator, a one-character string in the spec.
    #[serde(default = "comma")]
    pub delimiter: char,
    /// Columns treated as categorical; default: every column whose (non-missing) values are not all numeric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categorical: Option<Vec<String>>,
    /// Columns to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// How categorical columns reach the model.
    #[serde(default)]
    pub encoding: CategoricalEncoding,
    /// Strings that mean "missing" (default `["", "?", "NA", "NaN"]`), compared with surrounding whitespace removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_values: Option<Vec<String>>,
    /// What to do with missing feature values.
    #[serde(default)]
    pub missing: MissingPolicy,
    /// Lines to skip at the top (the Adult test file starts with a "|1x3 Cross validator" line).
    #[serde(default)]
    pub skip_rows: usize,
    /// Strip this suffix from target values (the Adult test labels end with ".").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_target_suffix: Option<String>,
    /// The target is a real value (regression) rather than a class name.
    #[serde(default)]
    pub regression: bool,
}

fn comma() -> char {
    ','
}

impl Default for CsvSpec {
    fn default() -> Self {
        CsvSpec {
            path: PathBuf::new(),
            target: None,
            columns: None,
            delimiter: ',',
            categorical: None,
            ignore: Vec::new(),
            encoding: CategoricalEncoding::default(),
            missing_values: None,
            missing: MissingPolicy::default(),
            skip_rows: 0,
            strip_target_suffix: None,
            regression: false,
        }
    }
}

/// How categorical columns are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CategoricalEncoding {
    /// One slot per training category plus one slot for unknown and missing values.
    #[default]
    OneHot,
    /// One column per categorical feature holding an id into one id space shared by all of them
    /// (id 0: unknown or missing), for a single `embedding` layer after a slice.
    Embedding,
}

/// What to do with missing feature values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingPolicy {
    /// Numeric: the training mean; categorical: the reserved unknown/missing category.
    #[default]
    Mean,
    /// Drop training rows with any missing feature; at predict time (and for held-out rows) as `Mean`.
    Drop,
    /// Numeric: 0 before standardization; categorical: the reserved category.
    Zero,
    /// Refuse, naming row and column.
    Error,
}

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
pub(super) struct Record {
    pub(super) line: usize,
    pub(super) fields: Vec<String>,
}

/// Splits `text`, whose first line is line `first_line` of its file, into records. Whitespace around unquoted fields
/// (and around a quoted field) is dropped; records that are one empty unquoted field (blank lines) are skipped.
pub(super) fn parse_records(text: &str, delimiter: u8, first_line: usize) -> Result<Vec<Record>> {
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
fn check_unique(header: &[String]) -> Result<()> {
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

/// The position of every column, by name.
fn header_index(table: &Table) -> Result<HashMap<&str, usize>> {
    check_unique(&table.header)?;
    Ok(table.header.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect())
}

/// Checks that every row is as wide as the header (a `Table` may be built by hand).
fn check_rows(table: &Table) -> Result<()> {
    match table.rows.iter().position(|r| r.len() != table.header.len()) {
        Some(i) => Err(Error::new(format!(
            "row {i} has {} fields, the header has {}",
            table.rows[i].len(),
            table.header.len()
        ))),
        None => Ok(()),
    }
}

/// A finite number, or `None`.
fn parse_number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// The header's names, for "not found" messages.
fn list_columns(table: &Table) -> String {
    table.header.join(", ")
}

/// The fitted preprocessing of one feature column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Column {
    /// Standardized: `(x - mean) / std`, with the training mean and population std (0 → 1).
    Numeric { name: String, mean: f32, std: f32 },
    /// The training categories, sorted; unknown and missing values share one reserved slot (one-hot: the slot after
    /// the categories; embedding: id 0).
    Categorical { name: String, categories: Vec<String> },
}

impl Column {
    fn name(&self) -> &str {
        match self {
            Column::Numeric { name, .. } | Column::Categorical { name, .. } => name,
        }
    }
}

/// How the file was read, so that predict-time files are read the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvFormat {
    delimiter: char,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    columns: Option<Vec<String>>,
    #[serde(default)]
    skip_rows: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    strip_target_suffix: Option<String>,
}

/// Preprocessing fitted on the training rows only and stored with the model (serde, goes into preprocess.json).
///
/// Feature columns come out numeric first (standardized), then categorical, each group in the order of the training
/// file's header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TabularPreprocessor {
    /// Feature columns in output order: every numeric column before every categorical one.
    columns: Vec<Column>,
    encoding: CategoricalEncoding,
    missing: MissingPolicy,
    missing_values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default)]
    regression: bool,
    /// Sorted distinct target values of the whole table (empty for regression or without a target).
    #[serde(default)]
    class_names: Vec<String>,
    format: CsvFormat,
}

impl TabularPreprocessor {
    /// Fits on `train_rows` of `table` (numeric mean/std with population std, std 0 → 1; category vocabularies;
    /// class names = sorted distinct target values over ALL rows of `table` — labels must be known for every split).
    pub fn fit(spec: &CsvSpec, table: &Table, train_rows: &[usize]) -> Result<Self> {
        Self::fit_inner(spec, table, train_rows).in_file(&spec.path)
    }

    fn fit_inner(spec: &CsvSpec, table: &Table, train_rows: &[usize]) -> Result<Self> {
        let index = header_index(table)?;
        check_rows(table)?;
        let require = |name: &str, what: &str| -> Result<()> {
            if index.contains_key(name) {
                Ok(())
            } else {
                Err(Error::new(format!(
                    "{what} column '{name}' is not in the table (columns: {})",
                    list_columns(table)
                ))
                .at(what.to_string()))
            }
        };
        if let Some(target) = &spec.target {
            require(target, "target")?;
        }
        for name in &spec.ignore {
            require(name, "ignore")?;
        }
        for name in spec.categorical.iter().flatten() {
            require(name, "categorical")?;
        }
        if let Some(&r) = train_rows.iter().find(|&&r| r >= table.rows.len()) {
            return Err(Error::new(format!(
                "training row {r} is outside the table's {} rows",
                table.rows.len()
            )));
        }

        let missing_values: Vec<String> = match &spec.missing_values {
            Some(m) => m.iter().map(|s| s.trim().to_string()).collect(),
            None => DEFAULT_MISSING.iter().map(|s| s.to_string()).collect(),
        };
        let is_missing = |v: &str| missing_values.iter().any(|m| m == v.trim());

        let features: Vec<usize> = (0..table.header.len())
            .filter(|&c| {
                let name = &table.header[c];
                spec.target.as_ref() != Some(name) && !spec.ignore.contains(name)
            })
            .collect();
        if features.is_empty() {
            return Err(Error::new(format!(
                "no feature columns are left (columns: {}; target and ignored columns are not features)",
                list_columns(table)
            )));
        }
        let categorical = |c: usize| match &spec.categorical {
            Some(names) => names.contains(&table.header[c]),
            None => table
                .rows
                .iter()
                .any(|row| !is_missing(&row[c]) && parse_number(&row[c]).is_none()),
        };
        let (cat_cols, num_cols): (Vec<usize>, Vec<usize>) = features.iter().partition(|&&c| categorical(c));

        // The rows the statistics come from.
        let mut used: Vec<usize> = train_rows.to_vec();
        match spec.missing {
            MissingPolicy::Drop => used.retain(|&r| features.iter().all(|&c| !is_missing(&table.rows[r][c]))),
            MissingPolicy::Error => {
                for &r in train_rows {
                    if let Some(&c) = features.iter().find(|&&c| is_missing(&table.rows[r][c])) {
                        return Err(missing_error(r, &table.header[c], &table.rows[r][c]));
                    }
                }
            }
            MissingPolicy::Mean | MissingPolicy::Zero => {}
        }

        let mut columns = Vec::with_capacity(features.len());
        for &c in &num_cols {
            let name = &table.header[c];
            let mut values = Vec::with_capacity(used.len());
            for &r in &used {
                let v = &table.rows[r][c];
                if !is_missing(v) {
                    values.push(parse_number(v).ok_or_else(|| not_a_number(r, name, v))?);
                }
            }
            let (mean, std) = mean_std(&values);
            let (mean, std) = (mean as f32, std as f32);
            if !mean.is_finite() || !std.is_finite() {
                return Err(Error::new(format!(
                    "column '{name}' has values too large to standardize in 32-bit floats"
                )));
            }
            let std = if std.is_normal() { std } else { 1.0 };
            columns.push(Column::Numeric {
                name: name.clone(),
                mean,
                std,
            });
        }
        for &c in &cat_cols {
            let categories: BTreeSet<&str> = used
                .iter()
                .map(|&r| table.rows[r][c].as_str())
                .filter(|v| !is_missing(v))
                .collect();
            columns.push(Column::Categorical {
                name: table.header[c].clone(),
                categories: categories.into_iter().map(str::to_string).collect(),
            });
        }

        let class_names = match &spec.target {
            Some(target) if !spec.regression => {
                let t = index[target.as_str()];
                let names: BTreeSet<&str> = table
                    .rows
                    .iter()
                    .map(|row| row[t].as_str())
                    .filter(|v| !is_missing(v))
                    .collect();
                names.into_iter().map(str::to_string).collect()
            }
            _ => Vec::new(),
        };

        Ok(TabularPreprocessor {
            columns,
            encoding: spec.encoding,
            missing: spec.missing,
            missing_values,
            target: spec.target.clone(),
            regression: spec.regression,
            class_names,
            format: CsvFormat {
                delimiter: spec.delimiter,
                columns: spec.columns.clone(),
                skip_rows: spec.skip_rows,
                strip_target_suffix: spec.strip_target_suffix.clone(),
            },
        })
    }

    fn is_missing(&self, value: &str) -> bool {
        let value = value.trim();
        self.missing_values.iter().any(|m| m == value)
    }

    /// Checks what deserialization cannot: numeric columns first, no repeated category, usable statistics.
    fn validate(&self) -> Result<()> {
        let numeric = self.numeric_width();
        for (i, column) in self.columns.iter().enumerate() {
            match column {
                Column::Numeric { name, mean, std } => {
                    if i >= numeric {
                        return Err(Error::new(format!(
                            "numeric column '{name}' comes after a categorical one; numeric columns come first"
                        )));
                    }
                    if !mean.is_finite() || !std.is_finite() || *std <= 0.0 {
                        return Err(Error::new(format!(
                            "column '{name}' has mean {mean} and std {std}; expected finite values and std > 0"
                        )));
                    }
                }
                Column::Categorical { name, categories } => {
                    let distinct: BTreeSet<&String> = categories.iter().collect();
                    if distinct.len() != categories.len() {
                        return Err(Error::new(format!("column '{name}' lists a category twice")));
                    }
                }
            }
        }
        Ok(())
    }

    /// Rows → model inputs `[n_kept, width]` and the kept row indices (rows dropped only under
    /// [`MissingPolicy::Drop`] at training time: `training = true`). One-hot: standardized numeric columns, then for
    /// each categorical column one-hot over its training categories plus ONE extra slot that receives unknown and
    /// missing values. Embedding: standardized numeric columns, then one column per categorical feature holding an id
    /// into ONE shared id space (id 0 is reserved for unknown/missing of every column, then each column's categories
    /// in turn), so a single `embedding` layer after a slice can embed them all; [`Self::embedding_vocab`] gives that
    /// id-space size.
    ///
    /// Feature columns are found by name: the table may order them differently, have more columns, or lack the
    /// target. A missing feature column is an error naming it. Row numbers in errors index `table.rows`.
    pub fn transform(&self, table: &Table, training: bool) -> Result<(Array, Vec<usize>)> {
        self.validate()?;
        let index = header_index(table)?;
        check_rows(table)?;
        let positions = self
            .columns
            .iter()
            .map(|col| {
                index.get(col.name()).copied().ok_or_else(|| {
                    Error::new(format!(
                        "feature column '{}' is not in the table (columns: {})",
                        col.name(),
                        list_columns(table)
                    ))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        // Each categorical column's category → (one-hot slot | shared embedding id).
        let mut lookups: Vec<HashMap<&str, usize>> = Vec::with_capacity(self.columns.len());
        let mut next_id = 1;
        for column in &self.columns {
            let mut lookup = HashMap::new();
            if let Column::Categorical { categories, .. } = column {
                for (k, category) in categories.iter().enumerate() {
                    let code = match self.encoding {
                        CategoricalEncoding::OneHot => k,
                        CategoricalEncoding::Embedding => next_id + k,
                    };
                    lookup.insert(category.as_str(), code);
                }
                next_id += categories.len();
            }
            lookups.push(lookup);
        }
        let policy = match self.missing {
            MissingPolicy::Drop if !training => MissingPolicy::Mean,
            policy => policy,
        };

        let width = self.width();
        let mut data = Vec::with_capacity(table.rows.len() * width);
        let mut kept = Vec::with_capacity(table.rows.len());
        for (r, row) in table.rows.iter().enumerate() {
            if policy == MissingPolicy::Drop && positions.iter().any(|&p| self.is_missing(&row[p])) {
                continue;
            }
            for ((column, &p), lookup) in self.columns.iter().zip(&positions).zip(&lookups) {
                let value = &row[p];
                let missing = self.is_missing(value);
                if missing && policy == MissingPolicy::Error {
                    return Err(missing_error(r, column.name(), value));
                }
                match column {
                    Column::Numeric { name, mean, std } => {
                        let x = match (missing, policy) {
                            (true, MissingPolicy::Zero) => 0.0,
                            (true, _) => f64::from(*mean),
                            (false, _) => parse_number(value).ok_or_else(|| not_a_number(r, name, value))?,
                        };
                        data.push(((x - f64::from(*mean)) / f64::from(*std)) as f32);
                    }
                    Column::Categorical { categories, .. } => {
                        let code = if missing {
                            None
                        } else {
                            lookup.get(value.as_str()).copied()
                        };
                        match self.encoding {
                            CategoricalEncoding::OneHot => {
                                let hot = code.unwrap_or(categories.len());
                                data.extend((0..=categories.len()).map(|k| if k == hot { 1.0 } else { 0.0 }));
                            }
                            CategoricalEncoding::Embedding => data.push(code.unwrap_or(0) as f32),
                        }
                    }
                }
            }
            kept.push(r);
        }
        let inputs = Array::new(vec![kept.len(), width], data)?;
        Ok((inputs, kept))
    }

    /// Targets for the rows (class labels via the stored class names; a value not among them is an error naming row
    /// and value). `None` if the table has no target column (predict time). A missing target value is an error
    /// whatever the missing-value policy.
    pub fn targets(&self, table: &Table, rows: &[usize]) -> Result<Option<Targets>> {
        let Some(target) = &self.target else {
            return Ok(None);
        };
        let index = header_index(table)?;
        let Some(&t) = index.get(target.as_str()) else {
            return Ok(None);
        };
        let value_of = |r: usize| -> Result<&str> {
            let row = table
                .rows
                .get(r)
                .ok_or_else(|| Error::new(format!("row {r} is outside the table's {} rows", table.rows.len())))?;
            let value = row.get(t).ok_or_else(|| {
                Error::new(format!(
                    "row {r} has {} fields, the header has {}",
                    row.len(),
                    table.header.len()
                ))
            })?;
            if self.is_missing(value) {
                return Err(Error::new(format!(
                    "row {r}: the target '{target}' is missing ('{value}')"
                )));
            }
            Ok(value)
        };
        if self.regression {
            let mut values = Vec::with_capacity(rows.len());
            for &r in rows {
                let value = value_of(r)?;
                let x = parse_number(value).ok_or_else(|| not_a_number(r, target, value))?;
                values.push(x as f32);
            }
            return Ok(Some(Targets::Values(Array::new(vec![rows.len(), 1], values)?)));
        }
        let ids: HashMap<&str, usize> = self
            .class_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut labels = Vec::with_capacity(rows.len());
        for &r in rows {
            let value = value_of(r)?;
            let label = ids.get(value.trim()).copied().ok_or_else(|| {
                Error::new(format!(
                    "row {r}: target value '{value}' is not one of the {} classes seen when fitting ({})",
                    self.class_names.len(),
                    list_classes(&self.class_names)
                ))
            })?;
            labels.push(label);
        }
        Ok(Some(Targets::Classes {
            labels,
            names: self.class_names.clone(),
        }))
    }

    /// The number of model input columns.
    pub fn width(&self) -> usize {
        self.columns
            .iter()
            .map(|c| match (c, self.encoding) {
                (Column::Numeric { .. }, _) | (Column::Categorical { .. }, CategoricalEncoding::Embedding) => 1,
                (Column::Categorical { categories, .. }, CategoricalEncoding::OneHot) => categories.len() + 1,
            })
            .sum()
    }

    /// The number of (standardized) numeric input columns, which come first.
    pub fn numeric_width(&self) -> usize {
        self.columns
            .iter()
            .filter(|c| matches!(c, Column::Numeric { .. }))
            .count()
    }

    /// The size of the shared categorical id space: 1 (the reserved unknown/missing id 0) plus every categorical
    /// column's category count. Computed for either encoding; only embedding inputs use it.
    pub fn embedding_vocab(&self) -> usize {
        1 + self
            .columns
            .iter()
            .map(|c| match c {
                Column::Categorical { categories, .. } => categories.len(),
                Column::Numeric { .. } => 0,
            })
            .sum::<usize>()
    }

    /// Class names in label order (empty for regression or without a target).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// One name per input column: `"age"`, `"workclass=Private"`, `"workclass=<unknown>"`, … (embedding: the
    /// categorical column's own name for its id column).
    pub fn feature_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.width());
        for column in &self.columns {
            match (column, self.encoding) {
                (Column::Numeric { name, .. }, _)
                | (Column::Categorical { name, .. }, CategoricalEncoding::Embedding) => names.push(name.clone()),
                (Column::Categorical { name, categories }, CategoricalEncoding::OneHot) => {
                    names.extend(categories.iter().map(|c| format!("{name}={c}")));
                    names.push(format!("{name}=<unknown>"));
                }
            }
        }
        names
    }

    /// A spec that reads a predict-time file at `path` the way the training file was read (delimiter, header names
    /// of a headerless format, skipped lines, missing-value strings, target suffix).
    pub fn predict_spec(&self, path: &Path) -> CsvSpec {
        CsvSpec {
            path: path.to_path_buf(),
            target: self.target.clone(),
            columns: self.format.columns.clone(),
            delimiter: self.format.delimiter,
            categorical: None,
            ignore: Vec::new(),
            encoding: self.encoding,
            missing_values: Some(self.missing_values.clone()),
            missing: self.missing,
            skip_rows: self.format.skip_rows,
            strip_target_suffix: self.format.strip_target_suffix.clone(),
            regression: self.regression,
        }
    }
}

/// Mean and population standard deviation (0 and 0 for no values), two-pass.
fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn missing_error(row: usize, column: &str, value: &str) -> Error {
    Error::new(format!(
        "row {row}, column '{column}': the value is missing ('{value}') and the missing-value policy is \"error\""
    ))
}

fn not_a_number(row: usize, column: &str, value: &str) -> Error {
    Error::new(format!("row {row}, column '{column}': '{value}' is not a number"))
}

fn list_classes(names: &[String]) -> String {
    let mut listed = names
        .iter()
        .take(LISTED_CLASSES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LISTED_CLASSES {
        listed.push_str(", …");
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    fn spec(path: PathBuf, target: Option<&str>) -> CsvSpec {
        CsvSpec {
            path,
            target: target.map(str::to_string),
            ..CsvSpec::default()
        }
    }

    fn all(table: &Table) -> Vec<usize> {
        (0..table.rows.len()).collect()
    }

    const PEOPLE: &str = "age,city,income\n\
                          20,Paris,low\n\
                          30,Oslo,high\n\
                          40,Paris,low\n\
                          50,Rome,high\n\
                          100,Lima,low\n";

    #[test]
    fn standardization_uses_training_statistics_only() {
        let dir = TempDir::new("table");
        let s = spec(dir.write("p.csv", PEOPLE), Some("income"));
        let table = read_csv(&s).unwrap();
        assert_eq!(table.header, ["age", "city", "income"]);
        assert_eq!(table.rows.len(), 5);
        let p = TabularPreprocessor::fit(&s, &table, &[0, 1, 2]).unwrap();

        let mean = 30.0f64;
        let std = ((100.0 + 0.0 + 100.0) / 3.0f64).sqrt();
        assert_eq!(
            p.columns[0],
            Column::Numeric {
                name: "age".into(),
                mean: mean as f32,
                std: std as f32
            }
        );
        // Categories come from the training rows only: Rome and Lima are unknown.
        assert_eq!(
            p.columns[1],
            Column::Categorical {
                name: "city".into(),
                categories: vec!["Oslo".into(), "Paris".into()]
            }
        );
        assert_eq!(p.width(), 1 + 3);
        assert_eq!(p.numeric_width(), 1);
        assert_eq!(p.feature_names(), ["age", "city=Oslo", "city=Paris", "city=<unknown>"]);
        // Class names come from all rows.
        assert_eq!(p.class_names(), ["high", "low"]);

        let (x, kept) = p.transform(&table, false).unwrap();
        assert_eq!(kept, [0, 1, 2, 3, 4]);
        assert_eq!(x.shape, [5, 4]);
        let expected = ((100.0 - f64::from(mean as f32)) / f64::from(std as f32)) as f32;
        assert_eq!(x.row(4), &[expected, 0.0, 0.0, 1.0]);
        assert!((x.row(4)[0] - 70.0 / 8.164_966).abs() < 1e-5);
        assert_eq!(x.row(0), &[(-10.0 / f64::from(std as f32)) as f32, 0.0, 1.0, 0.0]);

        let t = p.targets(&table, &kept).unwrap().unwrap();
        assert_eq!(
            t,
            Targets::Classes {
                labels: vec![1, 0, 1, 0, 1],
                names: vec!["high".into(), "low".into()]
            }
        );
    }

    #[test]
    fn constant_column_gets_std_one() {
        let dir = TempDir::new("table");
        let s = spec(dir.write("c.csv", "a,b\n5,1\n5,2\n5,3\n"), None);
        let table = read_csv(&s).unwrap();
        let p = TabularPreprocessor::fit(&s, &table, &all(&table)).unwrap();
        assert!(matches!(
            p.columns[0],
            Column::Numeric {
                mean: 5.0,
                std: 1.0,
                ..
            }
        ));
        assert_eq!(p.targets(&table, &[0]).unwrap(), None);
        assert_eq!(p.class_names(), [] as [String; 0]);
    }

    #[test]
    fn embedding_ids_share_one_space_with_zero_reserved() {
        let dir = TempDir::new("table");
        let text = "x,color,size,y\n1,red,S,a\n2,blue,M,b\n3,red,L,a\n";
        let s = CsvSpec {
            encoding: CategoricalEncoding::Embedding,
            ..spec(dir.write("e.csv", text), Some("y"))
        };
        let table = read_csv(&s).unwrap();
        let p = TabularPreprocessor::fit(&s, &table, &all(&table)).unwrap();
        // color: blue=1, red=2; size: L=3, M=4, S=5.
        assert_eq!(p.embedding_vocab(), 6);
        assert_eq!(p.width(), 3);
        assert_eq!(p.numeric_width(), 1);
        assert_eq!(p.feature_names(), ["x", "color", "size"]);
        let (x, _) = p.transform(&table, false).unwrap();
        assert_eq!(x.row(0)[1..], [2.0, 5.0]);
        assert_eq!(x.row(1)[1..], [1.0, 4.0]);
        assert_eq!(x.row(2)[1..], [2.0, 3.0]);

        // Unknown and missing categories get id 0.
        let predict = dir.write("e2.csv", "size,color,x\nXL,red,2\n?,green,2\n");
        let t = read_csv(&p.predict_spec(&predict)).unwrap();
        let (x, kept) = p.transform(&t, false).unwrap();
        assert_eq!(kept, [0, 1]);
        assert_eq!(x.row(0), &[0.0, 2.0, 0.0]);
        assert_eq!(x.row(1), &[0.0, 0.0, 0.0]);
        assert_eq!(p.targets(&t, &kept).unwrap(), None);
    }

    #[test]
    fn unknown_category_at_predict_time_goes_to_the_reserved_slot() {
        let dir = TempDir::new("table");
        let s = spec(dir.write("p.csv", PEOPLE), Some("income"));
        let table = read_csv(&s).unwrap();
        let p = TabularPreprocessor::fit(&s, &table, &all(&table)).unwrap();
        assert_eq!(
            p.feature_names()[1..],
            ["city=Lima", "city=Oslo", "city=Paris", "city=Rome", "city=<unknown>"]
        );
        let predict = dir.write("q.csv", "city,age\nTokyo,40\nOslo,40\n");
        let t = read_csv(&p.predict_spec(&predict)).unwrap();
        let (x, _) = p.transform(&t, false).unwrap();
        assert_eq!(x.row(0)[1..], [0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(x.row(1)[1..], [0.0, 1.0, 0.0, 0.0, 0.0]);
    }

    const HOLES: &str = "n,c,y\n\
                         1,a,p\n\
                         ?,b,q\n\
                         3,,p\n\
                         5,a,q\n";

    fn fit_holes(dir: &TempDir, missing: MissingPolicy) -> (TabularPreprocessor, Table) {
        let s = CsvSpec {
            missing,
            ..spec(dir.write("h.csv", HOLES), Some("y"))
        };
        let table = read_csv(&s).unwrap();
        let p = TabularPreprocessor::fit(&s, &table, &all(&table)).unwrap();
        (p, table)
    }

    #[test]
    fn missing_mean_imputes_the_training_mean_and_the_reserved_category() {
        let dir = TempDir::new("table");
        let (p, table) = fit_holes(&dir, MissingPolicy::Mean);
        // Mean and std over the non-missing values 1, 3, 5.
        let std = (8.0f64 / 3.0).sqrt() as f32;
        assert_eq!(
            p.columns[0],
            Column::Numeric {
                name: "n".into(),
                mean: 3.0,
                std
            }
        );
        // "" is missing, not a category.
        assert!(matches!(&p.columns[1], Column::Categorical { categories, .. } if categories == &["a", "b"]));
        let (x, kept) = p.transform(&table, true).unwrap();
        assert_eq!(kept, [0, 1, 2, 3]);
        assert_eq!(x.row(1), &[0.0, 0.0, 1.0, 0.0]);
        assert_eq!(x.row(2), &[0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn missing_zero_imputes_zero_before_standardization() {
        let dir = TempDir::new("table");
        let (p, table) = fit_holes(&dir, MissingPolicy::Zero);
        let (x, _) = p.transform(&table, false).unwrap();
        let std = (8.0f64 / 3.0).sqrt() as f32;
        assert_eq!(x.row(1)[0], ((0.0 - 3.0) / f64::from(std)) as f32);
        assert_eq!(x.row(2)[1..], [0.0, 0.0, 1.0]);
    }

    #[test]
    fn missing_drop_drops_training_rows_only() {
        let dir = TempDir::new("table");
        let (p, table) = fit_holes(&dir, MissingPolicy::Drop);
        // Statistics from the complete rows 0 and 3: n = 1, 5; c = a.
        assert!(matches!(
            p.columns[0],
            Column::Numeric {
                mean: 3.0,
                std: 2.0,
                ..
            }
        ));
        assert!(matches!(&p.columns[1], Column::Categorical { categories, .. } if categories == &["a"]));
        let (x, kept) = p.transform(&table, true).unwrap();
        assert_eq!(kept, [0, 3]);
        assert_eq!(x.shape, [2, 3]);
        let t = p.targets(&table, &kept).unwrap().unwrap();
        assert_eq!(t.len(), 2);
        // At predict time nothing is dropped; missing values are imputed as under "mean".
        let (x, kept) = p.transform(&table, false).unwrap();
        assert_eq!(kept, [0, 1, 2, 3]);
        assert_eq!(x.row(1), &[0.0, 0.0, 1.0]);
    }

    #[test]
    fn missing_error_names_row_and_column() {
        let dir = TempDir::new("table");
        let s = CsvSpec {
            missing: MissingPolicy::Error,
            ..spec(dir.write("h.csv", HOLES), Some("y"))
        };
        let table = read_csv(&s).unwrap();
        let err = TabularPreprocessor::fit(&s, &table, &all(&table)).unwrap_err();
        assert!(err.message.contains("row 1, column 'n'"), "{err}");
        assert_eq!(err.file.as_deref(), Some(s.path.as_path()));

        // Fitted on complete rows, transform refuses the incomplete ones.
        let p = TabularPreprocessor::fit(&s, &table, &[0, 3]).unwrap();
        let err = p.transform(&table, false).unwrap_err();
        assert!(err.message.contains("row 1, column 'n'"), "{err}");
        let complete = Table {
            header: table.header.clone(),
            rows: vec![table.rows[3].clone()],
        };
        assert!(p.transform(&complete, false).is_ok());
    }

    #[test]
    fn custom_missing_values_and_bad_numbers() {
        let dir = TempDir::new("table");
        let s = CsvSpec {
            missing_values: Some(vec!["-".into()]),
            categorical: Some(vec![]),
            ..spec(dir.write("m.csv", "a,b\n1,2\n-,3\n?,4\n"), None)
        };
        let table = read_csv(&s).unwrap();
        // "?" is no longer missing and not a number: a numeric column ("categorical" is empty) refuses it.
        let err = TabularPreprocessor::fit(&s, &table, &all(&table)).unwrap_err();
        assert!(err.message.contains("row 2, column 'a': '?' is not a number"), "{err}");
        let p = TabularPreprocessor::fit(&s, &table, &[0, 1]).unwrap();
        assert!(p.transform(&table, false).unwrap_err().message.contains("row 2"));
    }

    #[test]
    fn target_errors_name_row_and_value() {
        let dir = TempDir::new("table");
        let s = spec(dir.write("p.csv", PEOPLE), Some("income"));
        let table = read_csv(&s).unwrap();
        let p = TabularPreprocessor::fit(&s, &table, &all(&table)).unwrap();
        let other = Table {
            header: vec!["income".into(), "age".into(), "city".into()],
            rows: vec![
                vec!["low".into(), "1".into(), "Oslo".into()],
                vec!["mid".into(), "1".into(), "Oslo".into()],
            ],
        };
        let err = p.targets(&other, &[0, 1]).unwrap_err();
        assert_eq!(
            err.message,
            "row 1: target value 'mid' is not one of the 2 classes seen when fitting (high, low)"
        );
        let err = TabularPreprocessor::fit(&spec(s.path.clone(), Some("salary")), &table, &[0]).unwrap_err();
        assert!(
            err.message.contains("target column 'salary' is not in the table"),
            "{err}"
        );
        let err = p
            .transform(
                &Table {
                    header: vec!["age".into()],
                    rows: vec![],
                },
                false,
            )
            .unwrap_err();
        assert!(
            err.message.contains("feature column 'city' is not in the table"),
            "{err}"
        );
    }

    #[test]
    fn regression_targets_are_values() {
        let dir = TempDir::new("table");
        let s = CsvSpec {
            regression: true,
            ..spec(dir.write("r.csv", "x,price\n1,10.5\n2,20.25\n3,7\n"), Some("price"))
        };
        let table = read_csv(&s).unwrap();
        let p = TabularPreprocessor::fit(&s, &table, &all(&table)).unwrap();
        assert!(p.class_names().is_empty());
        assert_eq!(p.width(), 1);
        let t = p.targets(&table, &[2, 0]).unwrap().unwrap();
        assert_eq!(t, Targets::Values(Array::new(vec![2, 1], vec![7.0, 10.5]).unwrap()));
    }

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

    #[test]
    fn serde_round_trip_transforms_bit_exactly() {
        let dir = TempDir::new("table");
        let text = "a,b,c,y\n0.1,u,1e-3,k\n0.7,v,2.5e-3,l\n1.3,u,7e-4,k\n0.35,w,1.1e-3,l\n";
        for encoding in [CategoricalEncoding::OneHot, CategoricalEncoding::Embedding] {
            let s = CsvSpec {
                encoding,
                ..spec(dir.write("s.csv", text), Some("y"))
            };
            let table = read_csv(&s).unwrap();
            let p = TabularPreprocessor::fit(&s, &table, &[0, 1, 3]).unwrap();
            let json = serde_json::to_string_pretty(&p).unwrap();
            let back: TabularPreprocessor = serde_json::from_str(&json).unwrap();
            assert_eq!(back, p);
            let (x1, k1) = p.transform(&table, true).unwrap();
            let (x2, k2) = back.transform(&table, true).unwrap();
            assert_eq!(k1, k2);
            let bits = |a: &Array| a.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&x1), bits(&x2));
            assert_eq!(back.targets(&table, &k2).unwrap(), p.targets(&table, &k1).unwrap());
        }
    }

    #[test]
    fn csv_spec_serde() {
        let s: CsvSpec = serde_json::from_str(r#"{"path": "a.csv", "target": "y"}"#).unwrap();
        assert_eq!(s, spec("a.csv".into(), Some("y")));
        let s: CsvSpec = serde_json::from_str(
            r#"{"path": "a.csv", "delimiter": ";", "encoding": "embedding", "missing": "drop", "skip_rows": 1}"#,
        )
        .unwrap();
        assert_eq!(s.delimiter, ';');
        assert_eq!(s.encoding, CategoricalEncoding::Embedding);
        assert_eq!(s.missing, MissingPolicy::Drop);
        assert!(serde_json::from_str::<CsvSpec>(r#"{"path": "a.csv", "delimiter": ";;"}"#).is_err());
        assert!(serde_json::from_str::<CsvSpec>(r#"{"path": "a.csv", "colums": []}"#).is_err());
        let back: CsvSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn column_order_does_not_matter_at_predict_time() {
        let dir = TempDir::new("table");
        let s = spec(dir.write("p.csv", PEOPLE), Some("income"));
        let table = read_csv(&s).unwrap();
        let p = TabularPreprocessor::fit(&s, &table, &all(&table)).unwrap();
        let (expected, _) = p.transform(&table, false).unwrap();

        let mut shuffled = String::from("extra,city,income,age\n");
        for row in &table.rows {
            shuffled.push_str(&format!("z,{},{},{}\n", row[1], row[2], row[0]));
        }
        let t = read_csv(&p.predict_spec(&dir.write("shuffled.csv", &shuffled))).unwrap();
        let (x, _) = p.transform(&t, false).unwrap();
        assert_eq!(x, expected);
        assert_eq!(
            p.targets(&t, &all(&t)).unwrap(),
            p.targets(&table, &all(&table)).unwrap()
        );

        let mut no_target = String::from("city,age\n");
        for row in &table.rows {
            no_target.push_str(&format!("{},{}\n", row[1], row[0]));
        }
        let t = read_csv(&p.predict_spec(&dir.write("no_target.csv", &no_target))).unwrap();
        assert_eq!(p.transform(&t, false).unwrap().0, expected);
        assert_eq!(p.targets(&t, &all(&t)).unwrap(), None);
    }

    /// The UCI Adult files, when present (`GRAFT_ADULT_DIR`, else `data/adult` at the repository root).
    #[test]
    fn uci_adult_when_present() {
        let dir = std::env::var_os("GRAFT_ADULT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/adult"));
        let train_path = dir.join("adult.data");
        if !train_path.exists() {
            eprintln!("skipped: {} is not there", train_path.display());
            return;
        }
        let columns = [
            "age",
            "workclass",
            "fnlwgt",
            "education",
            "education-num",
            "marital-status",
            "occupation",
            "relationship",
            "race",
            "sex",
            "capital-gain",
            "capital-loss",
            "hours-per-week",
            "native-country",
            "income",
        ];
        let s = CsvSpec {
            columns: Some(columns.iter().map(|c| c.to_string()).collect()),
            ..spec(train_path, Some("income"))
        };
        let train = read_csv(&s).unwrap();
        assert_eq!(train.rows.len(), 32_561);
        let p = TabularPreprocessor::fit(&s, &train, &all(&train)).unwrap();
        assert_eq!(p.class_names(), ["<=50K", ">50K"]);
        assert_eq!(p.numeric_width(), 6);

        let test_spec = CsvSpec {
            path: dir.join("adult.test"),
            skip_rows: 1,
            strip_target_suffix: Some(".".into()),
            ..s
        };
        let test = read_csv(&test_spec).unwrap();
        assert_eq!(test.rows.len(), 16_281);
        let (x, kept) = p.transform(&test, false).unwrap();
        assert_eq!(x.shape, [16_281, p.width()]);
        assert!(x.data.iter().all(|v| v.is_finite()));
        match p.targets(&test, &kept).unwrap() {
            Some(Targets::Classes { labels, names }) => {
                assert_eq!(names, ["<=50K", ">50K"]);
                assert!(labels.contains(&0) && labels.contains(&1));
            }
            other => panic!("{other:?}"),
        }
    }
}
