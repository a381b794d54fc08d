//! The data checks: what can be wrong before a model sees a batch.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use burn::prelude::*;
use burn::tensor::TensorData;
use serde_json::json;

use super::{Check, Status, input_rows, sample_rows};
use crate::data::prepare::Preprocessor;
use crate::data::{Array, Dataset, Targets};
use crate::error::Result;
use crate::experiment::data::Splits;
use crate::experiment::spec::ExperimentSpec;

type DataCheck = fn(&ExperimentSpec, &Splits) -> Result<Check>;

pub(super) const CHECKS: [(&str, DataCheck); 5] = [
    ("data_finite", data_finite),
    ("class_balance", class_balance),
    ("inputs_scaled", inputs_scaled),
    ("preprocessing_fit", preprocessing_fit),
    ("duplicates", duplicates),
];

/// Image folders are decoded per batch; the checks read at most this many rows of each split from them.
const MAX_DECODED_ROWS: usize = 2000;
/// A feature whose mean or spread exceeds this is not on the scale networks are initialized for.
const UNSCALED: f64 = 10.0;
/// Near-duplicates: a validation or test row closer to a training row than this share of the median distance
/// between a training row and its [`KTH_NEIGHBOUR`]th nearest neighbour (so the bar follows the data's density and
/// dimension).
const NEAR: f64 = 0.1;
const KTH_NEIGHBOUR: usize = 5;
/// More copied rows than this share of validation and test fails the check: the data set was duplicated before
/// the split. Fewer are a warning: some real data repeats itself (reviews posted twice, identical table rows).
const LEAK_FAIL_SHARE: f64 = 0.2;
/// Near-duplicates are sought only in inputs at least this wide: among a few columns, close neighbours are natural.
const NEAR_MIN_FEATURES: usize = 16;

/// The splits with their names.
fn parts(splits: &Splits) -> Vec<(&'static str, &Dataset)> {
    let mut out = vec![("training", &splits.train)];
    if let Some(v) = &splits.validation {
        out.push(("validation", v));
    }
    if let Some(t) = &splits.test {
        out.push(("test", t));
    }
    out
}

/// Every row of an in-memory split; a seeded sample of one read from image folders.
fn readable_rows(ds: &Dataset, seed: u64) -> Vec<usize> {
    if ds.images.is_some() {
        let mut rows = sample_rows(ds.len(), MAX_DECODED_ROWS, seed);
        rows.sort_unstable();
        rows
    } else {
        (0..ds.len()).collect()
    }
}

/// Whether the model reads these inputs as token ids (text), not as measurements.
fn token_ids(splits: &Splits) -> bool {
    matches!(
        splits.preprocessor,
        Preprocessor::Text(_) | Preprocessor::PretrainedText(_)
    )
}

fn data_finite(_: &ExperimentSpec, splits: &Splits) -> Result<Check> {
    let mut problems = vec![];
    let mut counted = vec![];
    for (name, ds) in parts(splits) {
        let rows = readable_rows(ds, 0);
        let inputs = input_rows(ds, &rows)?;
        for (i, array) in inputs.iter().enumerate() {
            if let Some(at) = array.data.iter().position(|v| !v.is_finite()) {
                let bad = array.data.iter().filter(|v| !v.is_finite()).count();
                let size = array.sample_size().max(1);
                let input = if inputs.len() > 1 {
                    format!(" (input {i})")
                } else {
                    String::new()
                };
                problems.push(format!(
                    "{bad} non-finite {name} input values{input}, the first {} at row {}, feature {}",
                    array.data[at],
                    rows[at / size],
                    at % size
                ));
            }
        }
        if let Some(Targets::Values(values)) = &ds.targets
            && let Some(at) = values.data.iter().position(|v| !v.is_finite())
        {
            problems.push(format!(
                "non-finite {name} target {} at row {}",
                values.data[at],
                at / values.sample_size().max(1)
            ));
        }
        if let Some(w) = &ds.weights
            && let Some(at) = w.iter().position(|v| !v.is_finite())
        {
            problems.push(format!("non-finite {name} sample weight {} at row {at}", w[at]));
        }
        counted.push(format!("{} {name}", rows.len()));
    }
    Ok(if problems.is_empty() {
        Check::new(
            "data_finite",
            Status::Pass,
            format!("no NaN or infinity in {} rows", counted.join(", ")),
            "",
        )
    } else {
        Check::new(
            "data_finite",
            Status::Fail,
            problems.join("; "),
            "fix or drop these rows (a CSV column can set `missing = \"mean\"` or \"drop\"); one NaN makes every \
             loss NaN",
        )
        .with(json!({ "problems": problems }))
    })
}

fn class_balance(_: &ExperimentSpec, splits: &Splits) -> Result<Check> {
    let Some(Targets::Classes { labels, names }) = &splits.train.targets else {
        return Ok(match &splits.train.targets {
            Some(Targets::Values(_)) => Check::skip("class_balance", "the targets are values, not classes"),
            _ => Check::skip(
                "class_balance",
                "no single class target (multi-task data: see each task's report)",
            ),
        });
    };
    let k = names.len().max(1);
    let mut counts = vec![0usize; k];
    for &l in labels {
        if let Some(c) = counts.get_mut(l) {
            *c += 1;
        }
    }
    let elsewhere = |class: usize| -> usize {
        parts(splits)
            .iter()
            .skip(1)
            .filter_map(|(_, ds)| ds.labels())
            .map(|l| l.iter().filter(|&&x| x == class).count())
            .sum()
    };
    let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
    let missing_classes: Vec<usize> = (0..k).filter(|&c| counts[c] == 0 && elsewhere(c) > 0).collect();
    // A few named, the rest counted: a numeric target read as classes has hundreds.
    let mut missing: Vec<String> = missing_classes
        .iter()
        .take(5)
        .map(|&c| format!("'{}' ({} held-out rows)", name(c), elsewhere(c)))
        .collect();
    if missing_classes.len() > 5 {
        missing.push(format!("and {} more", missing_classes.len() - 5));
    }
    let seen: Vec<usize> = counts.iter().copied().filter(|&c| c > 0).collect();
    let (most, least) = (
        seen.iter().copied().max().unwrap_or(0),
        seen.iter().copied().min().unwrap_or(0),
    );
    let smallest = (0..k)
        .filter(|&c| counts[c] > 0)
        .min_by_key(|&c| counts[c])
        .unwrap_or(0);
    let ratio = most as f64 / least.max(1) as f64;
    let measured = format!(
        "{k} classes, {} to {} training examples each (imbalance {ratio:.1}:1; smallest '{}')",
        least,
        most,
        name(smallest)
    );
    let details = json!({ "counts": counts, "imbalance": ratio });
    Ok(if !missing.is_empty() {
        Check::new(
            "class_balance",
            Status::Fail,
            format!("no training example of class {}; {measured}", missing.join(", ")),
            "the model cannot learn a class it never sees: split with `stratify = true` or add examples",
        )
        .with(details)
    } else if least < 10 || ratio > 10.0 {
        Check::new(
            "class_balance",
            Status::Warn,
            measured,
            "expect poor recall on the small classes: class_weights = \"balanced\", resample = \"oversample\", or a \
             tuned threshold; judge by f1_macro / balanced_accuracy, not accuracy",
        )
        .with(details)
    } else {
        Check::new("class_balance", Status::Pass, measured, "").with(details)
    })
}

/// Per feature (per channel of `[C, H, W]` images, per last-axis feature of sequences) mean and standard deviation
/// over `array`'s rows.
fn feature_moments(array: &Array) -> Vec<(f64, f64)> {
    let shape = array.sample_shape();
    let size = array.sample_size().max(1);
    // Which feature each position of a sample belongs to, and how many features there are.
    let (features, feature_of): (usize, Box<dyn Fn(usize) -> usize>) = match shape.len() {
        3 => {
            let plane = shape[1] * shape[2];
            (shape[0], Box::new(move |i| i / plane.max(1)))
        }
        2 => {
            let f = shape[1].max(1);
            (f, Box::new(move |i| i % f))
        }
        _ => (size, Box::new(|i| i)),
    };
    let mut sums = vec![(0.0f64, 0.0f64, 0usize); features.max(1)];
    for row in array.data.chunks(size) {
        for (i, &v) in row.iter().enumerate() {
            if v.is_finite() {
                let s = &mut sums[feature_of(i)];
                s.0 += v as f64;
                s.1 += (v as f64) * (v as f64);
                s.2 += 1;
            }
        }
    }
    sums.into_iter()
        .map(|(sum, sq, n)| {
            let n = n.max(1) as f64;
            let mean = sum / n;
            (mean, (sq / n - mean * mean).max(0.0).sqrt())
        })
        .collect()
}

fn inputs_scaled(_: &ExperimentSpec, splits: &Splits) -> Result<Check> {
    if token_ids(splits) {
        return Ok(Check::skip(
            "inputs_scaled",
            "the inputs are token ids, read through an embedding",
        ));
    }
    let rows = sample_rows(splits.train.len(), 5000, 0);
    let inputs = input_rows(&splits.train, &rows)?;
    let mut worst: Option<(usize, usize, f64, f64)> = None;
    let mut ranges = vec![];
    let mut tiny = true;
    for (i, array) in inputs.iter().enumerate() {
        let moments = feature_moments(array);
        let (lo_m, hi_m) = moments
            .iter()
            .fold((f64::MAX, f64::MIN), |a, m| (a.0.min(m.0), a.1.max(m.0)));
        let (lo_s, hi_s) = moments
            .iter()
            .fold((f64::MAX, f64::MIN), |a, m| (a.0.min(m.1), a.1.max(m.1)));
        ranges.push(format!("mean {lo_m:.3} to {hi_m:.3}, std {lo_s:.3} to {hi_s:.3}"));
        tiny &= hi_s < 0.01 && hi_m.abs().max(lo_m.abs()) < 0.01;
        for (f, &(m, s)) in moments.iter().enumerate() {
            let size = m.abs().max(s);
            if size > UNSCALED && worst.is_none_or(|w| size > w.2.abs().max(w.3)) {
                worst = Some((i, f, m, s));
            }
        }
    }
    let what = if inputs.first().is_some_and(|a| a.sample_shape().len() == 3) {
        "channel"
    } else {
        "feature"
    };
    let measured = format!("per {what}: {}", ranges.join("; "));
    Ok(match worst {
        Some((_, f, m, s)) => Check::new(
            "inputs_scaled",
            Status::Warn,
            format!("{what} {f} has mean {m:.3}, std {s:.3}; {measured}"),
            "standardize the inputs (CSV: `scale = \"standard\"`; arrays: subtract the training mean, divide by its \
             std): initializers assume inputs of unit scale",
        ),
        None if tiny => Check::new(
            "inputs_scaled",
            Status::Warn,
            format!("every {what} is nearly constant; {measured}"),
            "the inputs carry almost no signal at this scale: check how they were exported",
        ),
        None => Check::new("inputs_scaled", Status::Pass, measured, ""),
    })
}

fn preprocessing_fit(_: &ExperimentSpec, splits: &Splits) -> Result<Check> {
    let n = splits.train.len();
    let by_graft = |what: &str| {
        Check::new(
            "preprocessing_fit",
            Status::Pass,
            format!("{what} fitted by graft on the {n} training rows only"),
            "",
        )
    };
    match &splits.preprocessor {
        Preprocessor::Tabular(_) => return Ok(by_graft("column scaling and encodings")),
        Preprocessor::Text(_) => return Ok(by_graft("the vocabulary")),
        Preprocessor::PretrainedText(_) => {
            return Ok(Check::new(
                "preprocessing_fit",
                Status::Pass,
                "a pretrained tokenizer: nothing is fitted on the data",
                "",
            ));
        }
        Preprocessor::Image { .. } | Preprocessor::Images(_) => {
            return Ok(Check::new(
                "preprocessing_fit",
                Status::Pass,
                "fixed pixel scaling: nothing is fitted on the data",
                "",
            ));
        }
        Preprocessor::None => {}
    }
    // Arrays arrive preprocessed. Standardization fitted on every row leaves the union of the splits with mean 0
    // and std 1 to float precision, while the training rows alone differ by sampling noise.
    let all: Vec<&Dataset> = parts(splits).into_iter().map(|(_, d)| d).collect();
    if all.len() < 2 {
        return Ok(Check::skip(
            "preprocessing_fit",
            "no validation or test rows to compare",
        ));
    }
    let standardized = |sets: &[&Dataset]| -> Result<f64> {
        let mut data = vec![];
        let mut shape = vec![];
        for ds in sets {
            let a = &input_rows(ds, &(0..ds.len()).collect::<Vec<_>>())?[0];
            shape = a.sample_shape().to_vec();
            data.extend_from_slice(&a.data);
        }
        let rows = data.len() / shape.iter().product::<usize>().max(1);
        let array = Array::new(std::iter::once(rows).chain(shape).collect(), data)?;
        let flat = Array::new(vec![rows, array.sample_size()], array.data)?;
        let moments = feature_moments(&flat);
        let varying: Vec<&(f64, f64)> = moments.iter().filter(|m| m.1 > 1e-3).collect();
        let exact = varying
            .iter()
            .filter(|(m, s)| m.abs() < 1e-5 && (s - 1.0).abs() < 1e-4)
            .count();
        Ok(exact as f64 / varying.len().max(1) as f64)
    };
    let training = standardized(&all[..1])?;
    let union = standardized(&all)?;
    let train_and_validation = if all.len() == 3 { standardized(&all[..2])? } else { 0.0 };
    let details = json!({
        "standardized_share": { "training": training, "all_rows": union, "training_and_validation": train_and_validation }
    });
    Ok(if training >= 0.9 {
        Check::new(
            "preprocessing_fit",
            Status::Pass,
            format!(
                "the inputs are standardized with the training rows' statistics ({:.0}% of features)",
                100.0 * training
            ),
            "",
        )
        .with(details)
    } else if union >= 0.9 || train_and_validation >= 0.9 {
        let whose = if union >= 0.9 {
            "every row, test included"
        } else {
            "the training and validation rows"
        };
        Check::new(
            "preprocessing_fit",
            Status::Warn,
            format!(
                "the inputs are standardized with the statistics of {whose} ({:.0}% of features have mean 0, std 1 \
                 there to float precision; {:.0}% on the training rows alone)",
                100.0 * union.max(train_and_validation),
                100.0 * training
            ),
            "fit the scaler on the training rows only (or give graft the raw data and let it scale): statistics of \
             held-out rows leak into training and flatter the test score",
        )
        .with(details)
    } else {
        Check::new(
            "preprocessing_fit",
            Status::Pass,
            "no scaling fitted outside graft detected (the arrays are not standardized over any set of splits)",
            "",
        )
        .with(details)
    })
}

/// A row's identity: the bits of every input value.
fn row_hash(inputs: &[Array], row: usize) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for a in inputs {
        for v in a.row(row) {
            v.to_bits().hash(&mut h);
        }
    }
    h.finish()
}

fn duplicates(_: &ExperimentSpec, splits: &Splits) -> Result<Check> {
    let train_rows = readable_rows(&splits.train, 1);
    let train = input_rows(&splits.train, &train_rows)?;
    let labels = splits.train.labels();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut conflicts: HashSet<u64> = HashSet::new();
    for (i, &row) in train_rows.iter().enumerate() {
        let h = row_hash(&train, i);
        if let Some(&other) = seen.get(&h) {
            if let Some(l) = labels
                && l[row] != l[other]
            {
                conflicts.insert(h);
            }
        } else {
            seen.insert(h, row);
        }
    }
    let mut measured = vec![];
    let mut leaked = 0usize;
    let mut held_out = 0usize;
    let mut details = serde_json::Map::new();
    let floats = !token_ids(splits) && train.len() == 1 && train[0].sample_size() >= NEAR_MIN_FEATURES;
    for (name, ds) in parts(splits).into_iter().skip(1) {
        let rows = readable_rows(ds, 2);
        let inputs = input_rows(ds, &rows)?;
        let exact: Vec<usize> = (0..rows.len())
            .filter(|&i| seen.contains_key(&row_hash(&inputs, i)))
            .collect();
        let near = if floats {
            near_duplicates(&train[0], &inputs[0], &exact)?
        } else {
            0
        };
        leaked += exact.len() + near;
        held_out += rows.len();
        measured.push(format!(
            "{} of {} {name} rows also in training{}",
            exact.len(),
            rows.len(),
            if floats {
                format!(" ({near} more nearly)")
            } else {
                String::new()
            }
        ));
        details.insert(
            name.into(),
            json!({ "rows": rows.len(), "exact": exact.len(), "near": near }),
        );
    }
    details.insert("training_label_conflicts".into(), json!(conflicts.len()));
    if !conflicts.is_empty() {
        measured.push(format!(
            "{} inputs occur in training with different labels",
            conflicts.len()
        ));
    }
    if held_out == 0 {
        measured.push("no validation or test rows".into());
    }
    let measured = measured.join("; ");
    let share = leaked as f64 / held_out.max(1) as f64;
    let details = serde_json::Value::Object(details);
    Ok(if share > LEAK_FAIL_SHARE {
        Check::new(
            "duplicates",
            Status::Fail,
            measured,
            "held-out rows the model has seen make validation and test scores optimistic: deduplicate before \
             splitting, or split by group (the same patient, user or source in one split)",
        )
        .with(details)
    } else if leaked > 0 || !conflicts.is_empty() {
        Check::new(
            "duplicates",
            Status::Warn,
            measured,
            "deduplicate before splitting; identical inputs with different labels are label noise or a missing \
             feature",
        )
        .with(details)
    } else {
        Check::new("duplicates", Status::Pass, measured, "").with(details)
    })
}

/// Held-out rows (not among `exact`) whose nearest training row is closer than [`NEAR`] times the median distance
/// from a training row to its 5th nearest other training row (500 of them), after standardizing each feature with the
/// training statistics. At most 500 held-out rows against 10,000 training rows and 4,096 features (a stride through
/// wider inputs).
fn near_duplicates(train: &Array, held: &Array, exact: &[usize]) -> Result<usize> {
    let d = train.sample_size();
    if d == 0 || held.is_empty() || train.is_empty() {
        return Ok(0);
    }
    let stride = d.div_ceil(4096);
    let features: Vec<usize> = (0..d).step_by(stride).collect();
    let train_rows = sample_rows(train.len(), 10_000, 3);
    let exact: HashSet<usize> = exact.iter().copied().collect();
    let held_rows: Vec<usize> = sample_rows(held.len(), 500, 4)
        .into_iter()
        .filter(|r| !exact.contains(r))
        .collect();
    if held_rows.is_empty() {
        return Ok(0);
    }
    let pick = |a: &Array, rows: &[usize]| -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| {
                let row = a.row(r);
                features.iter().map(move |&f| row[f]).collect::<Vec<f32>>()
            })
            .collect()
    };
    let f = features.len();
    let mut a = pick(train, &train_rows);
    let mut b = pick(held, &held_rows);
    // Standardize with the training sample's statistics, so a wide feature does not decide every distance.
    for j in 0..f {
        let col: Vec<f64> = a.iter().skip(j).step_by(f).map(|&v| v as f64).collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let std = (col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64).sqrt();
        let scale = if std > 1e-8 { 1.0 / std } else { 0.0 };
        for x in a.iter_mut().skip(j).step_by(f).chain(b.iter_mut().skip(j).step_by(f)) {
            *x = ((*x as f64 - mean) * scale) as f32;
        }
    }
    let device = Device::default();
    let (n, m) = (train_rows.len(), held_rows.len());
    let ta = Tensor::<2>::from_data(TensorData::new(a, [n, f]), &device);
    let tb = Tensor::<2>::from_data(TensorData::new(b, [m, f]), &device);
    let na = ta.clone().powi_scalar(2).sum_dim(1).reshape([1, n]);
    let nb = tb.clone().powi_scalar(2).sum_dim(1);
    let min_rows = |d: Tensor<2>| -> Vec<f32> {
        d.min_dim(1)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default()
    };
    let held_nearest = min_rows((nb + na.clone() - tb.matmul(ta.clone().transpose()).mul_scalar(2.0)).clamp_min(0.0));
    // The reference: each of 500 training rows' distance to its 5th nearest other training row (not the 1st, which
    // is itself a copy when the whole data set was duplicated), the median of those.
    let own = n.min(500);
    let probe = ta.clone().narrow(0, 0, own);
    let probe_norms = probe.clone().powi_scalar(2).sum_dim(1);
    let distances = (probe_norms + na - probe.matmul(ta.transpose()).mul_scalar(2.0))
        .clamp_min(0.0)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    let k = KTH_NEIGHBOUR.min(n.saturating_sub(1));
    if k == 0 {
        return Ok(0);
    }
    let mut kth: Vec<f32> = distances
        .chunks(n)
        .enumerate()
        .map(|(i, row)| {
            let mut others: Vec<f32> = row
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, d)| *d)
                .collect();
            let (_, v, _) = others.select_nth_unstable_by(k - 1, |a, b| a.total_cmp(b));
            *v
        })
        .collect();
    kth.sort_by(|a, b| a.total_cmp(b));
    let median = kth[kth.len() / 2];
    let limit = (NEAR * NEAR) * median as f64;
    Ok(held_nearest.iter().filter(|&&x| (x as f64) < limit).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_per_channel_for_images_and_per_column_for_tables() {
        // Two images [2, 1, 2]: channel 0 holds 1, 3 / 5, 7; channel 1 holds 10, 10 / 10, 10.
        let images = Array::new(vec![2, 2, 1, 2], vec![1.0, 3.0, 10.0, 10.0, 5.0, 7.0, 10.0, 10.0]).unwrap();
        let m = feature_moments(&images);
        assert_eq!(m.len(), 2);
        assert!((m[0].0 - 4.0).abs() < 1e-12 && (m[0].1 - 5f64.sqrt()).abs() < 1e-12);
        assert!((m[1].0 - 10.0).abs() < 1e-12 && m[1].1 == 0.0);
        let table = Array::new(vec![2, 2], vec![1.0, 2.0, 3.0, 6.0]).unwrap();
        let m = feature_moments(&table);
        assert_eq!(m, vec![(2.0, 1.0), (4.0, 2.0)]);
    }

    #[test]
    fn near_duplicates_are_found_and_distinct_rows_are_not() {
        let mut rng = crate::data::rng::seeded_rng(b"test\0\0\0\0", 1, 0);
        use rand::Rng;
        let train: Vec<f32> = (0..200 * 16).map(|_| rng.random::<f32>()).collect();
        let train = Array::new(vec![200, 16], train).unwrap();
        // Held-out: 3 copies of training rows with a little noise, 7 fresh rows.
        let mut held = vec![];
        for r in 0..3 {
            held.extend(train.row(r * 10).iter().map(|v| v + 0.001));
        }
        held.extend((0..7 * 16).map(|_| rng.random::<f32>()));
        let held = Array::new(vec![10, 16], held).unwrap();
        assert_eq!(near_duplicates(&train, &held, &[]).unwrap(), 3);
        // Rows already counted as exact duplicates are not counted again.
        assert_eq!(near_duplicates(&train, &held, &[0, 1]).unwrap(), 1);
    }
}
