//! The fitted [`TabularPreprocessor`], stored with the model: it turns table rows into model inputs and targets,
//! names the input columns, and reads predict-time files the way the training file was read, so that prediction
//! applies exactly the transformation training did.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::columns::{
    Column, CsvFormat, check_rows, header_index, list_columns, missing_error, not_a_number, parse_number,
};
use super::{CategoricalEncoding, CsvSpec, MissingPolicy, Table};
use crate::array::Array;
use crate::dataset::Targets;
use crate::error::{Error, Result};

/// How many class names an error message lists before eliding the rest.
const LISTED_CLASSES: usize = 10;

/// Preprocessing fitted on the training rows only and stored with the model (serde, goes into preprocess.json).
///
/// Feature columns come out numeric first (standardized), then categorical, each group in the order of the training
/// file's header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TabularPreprocessor {
    /// Feature columns in output order: every numeric column before every categorical one.
    pub(super) columns: Vec<Column>,
    pub(super) encoding: CategoricalEncoding,
    pub(super) missing: MissingPolicy,
    pub(super) missing_values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) target: Option<String>,
    #[serde(default)]
    pub(super) regression: bool,
    /// Sorted distinct target values of the whole table (empty for regression or without a target).
    #[serde(default)]
    pub(super) class_names: Vec<String>,
    pub(super) format: CsvFormat,
}

impl TabularPreprocessor {
    /// The input columns the model reads, in the order they are encoded.
    pub fn feature_columns(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name()).collect()
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
    use crate::table::read_csv;
    use crate::table::tests::{PEOPLE, all, spec};
    use crate::test_util::TempDir;
    use std::path::PathBuf;

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
