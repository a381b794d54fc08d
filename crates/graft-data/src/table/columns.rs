//! The feature columns of a table and how they are fitted: which are numeric and which categorical (the spec's
//! list, or inferred: a column with a value that is not a number), the rows the statistics come from under the
//! missing-value policy, and each column's mean and std or category vocabulary, from the training rows only so that
//! held-out rows are transformed as new data will be.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::read::check_unique;
use super::{CsvSpec, MissingPolicy, Table, TabularPreprocessor};
use crate::error::{Context, Error, Result};

/// The strings that mean "missing" when a spec does not say.
const DEFAULT_MISSING: [&str; 4] = ["", "?", "NA", "NaN"];

/// The position of every column, by name.
pub(super) fn header_index(table: &Table) -> Result<HashMap<&str, usize>> {
    check_unique(&table.header)?;
    Ok(table.header.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect())
}

/// Checks that every row is as wide as the header (a `Table` may be built by hand).
pub(super) fn check_rows(table: &Table) -> Result<()> {
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
pub(super) fn parse_number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// The header's names, for "not found" messages.
pub(super) fn list_columns(table: &Table) -> String {
    table.header.join(", ")
}

/// The fitted preprocessing of one feature column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Column {
    /// Standardized: `(x - mean) / std`, with the training mean and population std (0 → 1).
    Numeric { name: String, mean: f32, std: f32 },
    /// The training categories, sorted; unknown and missing values share one reserved slot (one-hot: the slot after
    /// the categories; embedding: id 0).
    Categorical { name: String, categories: Vec<String> },
}

impl Column {
    pub(super) fn name(&self) -> &str {
        match self {
            Column::Numeric { name, .. } | Column::Categorical { name, .. } => name,
        }
    }
}

/// How the file was read, so that predict-time files are read the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CsvFormat {
    pub(super) delimiter: char,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) columns: Option<Vec<String>>,
    #[serde(default)]
    pub(super) skip_rows: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) strip_target_suffix: Option<String>,
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

pub(super) fn missing_error(row: usize, column: &str, value: &str) -> Error {
    Error::new(format!(
        "row {row}, column '{column}': the value is missing ('{value}') and the missing-value policy is \"error\""
    ))
}

pub(super) fn not_a_number(row: usize, column: &str, value: &str) -> Error {
    Error::new(format!("row {row}, column '{column}': '{value}' is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Targets;
    use crate::table::read_csv;
    use crate::table::tests::{PEOPLE, all, spec};
    use crate::test_util::TempDir;

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
}
