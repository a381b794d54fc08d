//! Warnings about the data that a run should not hide: classes too rare to learn or to measure, and validation
//! batches that hold a single class. They are printed, kept in `metrics.json` and shown on the report.

use crate::data::Dataset;
use crate::task::head::TaskHead;
use crate::task::loss::Task;

/// A class with less than this share of the training rows gets a warning.
const RARE_CLASS_SHARE: f64 = 0.01;

/// The warnings for training on `train` and validating on `validation` in batches of `eval_batch` rows (in order).
pub fn data_warnings(
    heads: &[TaskHead],
    train: &Dataset,
    validation: Option<&Dataset>,
    eval_batch: usize,
) -> Vec<String> {
    let mut out = vec![];
    for head in heads {
        let prefix = head.name.as_ref().map(|n| format!("task '{n}': ")).unwrap_or_default();
        let name = |class: usize| head.classes.get(class).cloned().unwrap_or_else(|| class.to_string());
        if head.is_classification()
            && let Some(labels) = head.train_labels(train)
        {
            let mut counts = vec![0usize; head.num_classes().max(1)];
            for &l in &labels {
                if let Some(c) = counts.get_mut(l) {
                    *c += 1;
                }
            }
            for (class, &count) in counts.iter().enumerate() {
                let share = count as f64 / labels.len().max(1) as f64;
                if share < RARE_CLASS_SHARE {
                    out.push(format!(
                        "{prefix}class '{}' has {count} of {} training examples ({:.2}%, under 1%): expect poor \
                         recall for it; consider class_weights = \"balanced\", resample or a tuned threshold",
                        name(class),
                        labels.len(),
                        100.0 * share
                    ));
                }
            }
            if let Some(val) = validation.and_then(|v| head.train_labels(v)) {
                let single = val
                    .chunks(eval_batch.max(1))
                    .filter(|batch| batch.iter().all(|&l| l == batch[0]))
                    .count();
                let batches = val.len().div_ceil(eval_batch.max(1));
                if single > 0 && counts.len() > 1 {
                    out.push(format!(
                        "{prefix}{single} of {batches} validation batches of {eval_batch} hold a single class (is the \
                         validation data sorted by class?); graft's metrics cover the whole epoch, but per-batch \
                         figures would be meaningless"
                    ));
                }
            }
        }
        if head.task == Task::Multilabel
            && head.name.is_none()
            && let Some(values) = train.values()
        {
            let k = values.sample_size().max(1);
            let rows = values.len().max(1);
            for j in 0..k {
                let positives = values.data.iter().skip(j).step_by(k).filter(|&&v| v > 0.5).count();
                let share = positives as f64 / rows as f64;
                if share < RARE_CLASS_SHARE {
                    out.push(format!(
                        "label '{}' is positive in {positives} of {rows} training examples ({:.2}%, under 1%)",
                        name(j),
                        100.0 * share
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Array, Targets};
    use crate::task::loss::LossSpec;

    fn classes(labels: Vec<usize>, k: usize) -> Dataset {
        let n = labels.len();
        let inputs = Array::new(vec![n, 1], vec![0.0; n]).unwrap();
        Dataset::new(inputs, Some(Targets::numbered_classes(labels, k))).unwrap()
    }

    fn head(k: usize) -> TaskHead {
        TaskHead::new(
            &LossSpec::SparseCategoricalCrossentropy { label_smoothing: 0.0 },
            k,
            (0..k).map(|c| c.to_string()).collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_class_under_one_percent_and_single_class_batches_are_reported() {
        // 300 rows: class 2 has 2 (0.67%), class 1 has 98, class 0 has 200.
        let mut labels = vec![0; 200];
        labels.extend(vec![1; 98]);
        labels.extend(vec![2; 2]);
        let train = classes(labels.clone(), 3);
        // Sorted validation data: batches of 100 → the first two hold only class 0.
        let val = classes(labels, 3);
        let w = data_warnings(&[head(3)], &train, Some(&val), 100);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("class '2' has 2 of 300") && w[0].contains("0.67%"),
            "{}",
            w[0]
        );
        assert!(
            w[1].starts_with("2 of 3 validation batches of 100 hold a single class"),
            "{}",
            w[1]
        );
        // Balanced, shuffled data gives none.
        let even = classes((0..300).map(|i| i % 3).collect(), 3);
        assert!(data_warnings(&[head(3)], &even, Some(&even), 100).is_empty());
    }
}

/// Metric learning pairs examples of one class: when most training examples are alone in their class (a numeric
/// target read as classes, say), most give no same-class pair and the loss can reach 0 on the few that do.
pub fn lone_examples_warning(labels: &[usize]) -> Option<String> {
    let mut counts = std::collections::HashMap::new();
    for &l in labels {
        *counts.entry(l).or_insert(0usize) += 1;
    }
    let alone = counts.values().filter(|&&c| c == 1).count();
    (2 * alone > labels.len()).then(|| {
        format!(
            "{alone} of {} training examples are the only one of their class ({} classes): they form no same-class \
             pair, so the model learns from the few that do (a numeric target read as classes?)",
            labels.len(),
            counts.len()
        )
    })
}

#[cfg(test)]
mod lone_tests {
    use super::*;

    #[test]
    fn most_examples_alone_in_their_class_are_named() {
        assert_eq!(lone_examples_warning(&[0, 0, 1, 1, 2]), None);
        let w = lone_examples_warning(&[0, 0, 1, 2, 3, 4]).unwrap();
        assert!(
            w.starts_with("4 of 6 training examples") && w.contains("5 classes"),
            "{w}"
        );
    }
}
