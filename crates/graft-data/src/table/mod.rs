//! CSV tables and the fitted tabular preprocessing: standardized numeric columns and one-hot or
//! embedding-id categorical columns, fitted on the training rows only and stored with the model so
//! that prediction applies exactly the same transformation.
//!
//! Columns are always found by name, so a predict-time file may order its columns differently or
//! lack the target column.
//!
//! The `csv` crate splits files into records; [`read_csv`] adds what that crate leaves to its caller: text
//! encodings, delimiter detection, trimming of unquoted fields, and quoting errors that name the line.

mod columns;
mod preprocessor;
mod read;

pub use preprocessor::TabularPreprocessor;
pub(crate) use read::parse_records;
pub use read::read_csv;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn spec(path: PathBuf, target: Option<&str>) -> CsvSpec {
        CsvSpec {
            path,
            target: target.map(str::to_string),
            ..CsvSpec::default()
        }
    }

    pub(super) fn all(table: &Table) -> Vec<usize> {
        (0..table.rows.len()).collect()
    }

    pub(super) const PEOPLE: &str = "age,city,income\n\
                          20,Paris,low\n\
                          30,Oslo,high\n\
                          40,Paris,low\n\
                          50,Rome,high\n\
                          100,Lima,low\n";

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
}
