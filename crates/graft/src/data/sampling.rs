//! Which training examples an epoch visits when the classes are imbalanced: random oversampling of the smaller
//! classes, random undersampling of the larger ones, or batches drawn to an even class mix. Only the training split
//! is resampled; every draw is seeded by (seed, epoch), so a run repeats exactly.

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::rng::seeded_rng;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resample {
    /// Every class drawn with replacement up to the largest class's count (all of its own examples kept).
    Oversample,
    /// Every class drawn without replacement down to the smallest class's count.
    Undersample,
    /// As many examples as the data has, each drawn by first picking a class uniformly, then one of its examples:
    /// every batch holds the classes in about equal numbers, also with thousands of classes.
    BalancedBatches,
}

/// The example order of one epoch under `kind`, from the class `labels` of the training examples.
pub fn epoch_order(kind: Resample, labels: &[usize], classes: usize, seed: u64, epoch: usize) -> Result<Vec<usize>> {
    let mut by_class: Vec<Vec<usize>> = vec![vec![]; classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class
            .get_mut(l)
            .ok_or_else(|| Error::new(format!("label {l} is outside the {classes} classes")))?
            .push(i);
    }
    let present: Vec<&Vec<usize>> = by_class.iter().filter(|c| !c.is_empty()).collect();
    if present.is_empty() {
        return Ok(vec![]);
    }
    let mut rng = seeded_rng(b"resample", seed, epoch as u64);
    let mut order = match kind {
        Resample::Oversample => {
            let target = present.iter().map(|c| c.len()).max().unwrap_or(0);
            let mut out = vec![];
            for members in &present {
                out.extend(members.iter().copied());
                out.extend((members.len()..target).map(|_| members[rng.random_range(0..members.len())]));
            }
            out
        }
        Resample::Undersample => {
            let target = present.iter().map(|c| c.len()).min().unwrap_or(0);
            let mut out = vec![];
            for members in &present {
                let mut m = members.to_vec();
                m.shuffle(&mut rng);
                out.extend(m.into_iter().take(target));
            }
            out
        }
        Resample::BalancedBatches => (0..labels.len())
            .map(|_| {
                let members = present[rng.random_range(0..present.len())];
                members[rng.random_range(0..members.len())]
            })
            .collect(),
    };
    order.shuffle(&mut rng);
    Ok(order)
}

/// Stratified K-fold: `k` folds of row indices, each holding every class in its overall proportion (a class's
/// count differs between folds by at most one). Seeded.
pub fn stratified_folds(labels: &[usize], k: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    if k < 2 || k > labels.len() {
        return Err(Error::new(format!(
            "expected between 2 and {} folds (the number of examples), found {k}",
            labels.len()
        )));
    }
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut by_class: Vec<Vec<usize>> = vec![vec![]; classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    let mut rng = seeded_rng(b"kfold\0\0\0", seed, 0);
    let mut folds = vec![vec![]; k];
    // Dealing each class round-robin, continuing where the previous class stopped, keeps both every class's
    // counts and the fold sizes within one of each other.
    let mut next = 0;
    for members in by_class.iter_mut() {
        members.shuffle(&mut rng);
        for &i in members.iter() {
            folds[next].push(i);
            next = (next + 1) % k;
        }
    }
    for f in folds.iter_mut() {
        f.sort_unstable();
    }
    Ok(folds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<usize> {
        // 90 / 9 / 1: strongly imbalanced.
        (0..100)
            .map(|i| {
                if i < 90 {
                    0
                } else if i < 99 {
                    1
                } else {
                    2
                }
            })
            .collect()
    }

    fn counts(order: &[usize], labels: &[usize]) -> Vec<usize> {
        let mut c = vec![0; 3];
        for &i in order {
            c[labels[i]] += 1;
        }
        c
    }

    #[test]
    fn samplers_reach_their_target_mix() {
        let l = labels();
        let over = epoch_order(Resample::Oversample, &l, 3, 1, 1).unwrap();
        assert_eq!(counts(&over, &l), vec![90, 90, 90]);
        // Every original example is kept.
        for i in 0..100 {
            assert!(over.contains(&i));
        }
        let under = epoch_order(Resample::Undersample, &l, 3, 1, 1).unwrap();
        assert_eq!(counts(&under, &l), vec![1, 1, 1]);
        let balanced = epoch_order(Resample::BalancedBatches, &l, 3, 1, 1).unwrap();
        assert_eq!(balanced.len(), 100);
        let c = counts(&balanced, &l);
        assert!(c.iter().all(|&x| (20..=47).contains(&x)), "{c:?}");
        // Over many epochs the mix converges to a third each.
        let total: Vec<usize> = (1..=50)
            .map(|e| counts(&epoch_order(Resample::BalancedBatches, &l, 3, 1, e).unwrap(), &l))
            .fold(vec![0; 3], |a, c| a.iter().zip(&c).map(|(x, y)| x + y).collect());
        assert!(
            total.iter().all(|&x| (x as f64 / 5000.0 - 1.0 / 3.0).abs() < 0.02),
            "{total:?}"
        );
        // Seeded: the same (seed, epoch) repeats, another epoch differs.
        assert_eq!(over, epoch_order(Resample::Oversample, &l, 3, 1, 1).unwrap());
        assert_ne!(over, epoch_order(Resample::Oversample, &l, 3, 1, 2).unwrap());
    }

    #[test]
    fn stratified_folds_keep_class_proportions_within_one_sample() {
        let l: Vec<usize> = (0..103).map(|i| i % 7 % 3).collect();
        let folds = stratified_folds(&l, 5, 3).unwrap();
        let mut seen: Vec<usize> = folds.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
        for class in 0..3 {
            let per: Vec<usize> = folds
                .iter()
                .map(|f| f.iter().filter(|&&i| l[i] == class).count())
                .collect();
            let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
            assert!(hi - lo <= 1, "class {class}: {per:?}");
        }
        let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
        assert!(stratified_folds(&l, 1, 0).is_err());
    }
}
