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

/// Iterative stratification for multi-label data (Sechidis, Tsoumakas & Vlahavas, 2011): row indices dealt into
/// parts of the given `shares` (summing to 1) so that every label is spread over the parts in those shares, as far
/// as examples carrying several labels allow. `sets[i]` are the labels of row `i` (indices below `num_labels`).
/// The rarest remaining label is dealt first; each of its examples goes to the part that most lacks that label,
/// then the part that most lacks examples, then at random. Rows without labels fill the parts' remaining sizes.
/// Seeded; each part is sorted.
pub fn iterative_stratification(sets: &[Vec<usize>], num_labels: usize, shares: &[f64], seed: u64) -> Vec<Vec<usize>> {
    let k = shares.len();
    let n = sets.len();
    let mut rng = seeded_rng(b"iterstrt", seed, 0);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut wanted: Vec<f64> = shares.iter().map(|s| s * n as f64).collect();
    let mut label_count = vec![0usize; num_labels];
    for set in sets {
        for &l in set {
            label_count[l] += 1;
        }
    }
    let mut wanted_label: Vec<Vec<f64>> = shares
        .iter()
        .map(|s| label_count.iter().map(|&c| s * c as f64).collect())
        .collect();
    let mut parts: Vec<Vec<usize>> = vec![vec![]; k];
    let mut assigned = vec![false; n];
    let mut remaining = label_count.clone();
    let place = |row: usize,
                 part: usize,
                 wanted: &mut [f64],
                 wanted_label: &mut [Vec<f64>],
                 remaining: &mut [usize],
                 parts: &mut [Vec<usize>]| {
        parts[part].push(row);
        wanted[part] -= 1.0;
        for &l in &sets[row] {
            wanted_label[part][l] -= 1.0;
            remaining[l] -= 1;
        }
    };
    while let Some(label) = (0..num_labels)
        .filter(|&l| remaining[l] > 0)
        .min_by_key(|&l| (remaining[l], l))
    {
        for &row in &order {
            if assigned[row] || !sets[row].contains(&label) {
                continue;
            }
            let best = (0..k)
                .map(|j| (wanted_label[j][label], wanted[j]))
                .fold(None::<(f64, f64)>, |b, x| match b {
                    Some(b) if b >= x => Some(b),
                    _ => Some(x),
                })
                .expect("at least one part");
            let ties: Vec<usize> = (0..k)
                .filter(|&j| (wanted_label[j][label], wanted[j]) == best)
                .collect();
            let part = ties[rng.random_range(0..ties.len())];
            assigned[row] = true;
            place(row, part, &mut wanted, &mut wanted_label, &mut remaining, &mut parts);
        }
    }
    for &row in &order {
        if assigned[row] {
            continue;
        }
        let most = wanted.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let ties: Vec<usize> = (0..k).filter(|&j| wanted[j] == most).collect();
        let part = ties[rng.random_range(0..ties.len())];
        place(row, part, &mut wanted, &mut wanted_label, &mut remaining, &mut parts);
    }
    for p in parts.iter_mut() {
        p.sort_unstable();
    }
    parts
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
    fn iterative_stratification_spreads_every_label_evenly() {
        // 600 rows over 5 labels of very different frequency, with co-occurring labels.
        let mut rng = seeded_rng(b"testmlbl", 7, 0);
        let sets: Vec<Vec<usize>> = (0..600)
            .map(|_| {
                let mut s = vec![];
                for (l, p) in [0.5, 0.3, 0.1, 0.03, 0.01].iter().enumerate() {
                    if rng.random::<f64>() < *p {
                        s.push(l);
                    }
                }
                s
            })
            .collect();
        let folds = iterative_stratification(&sets, 5, &[0.2; 5], 3);
        let mut seen: Vec<usize> = folds.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..600).collect::<Vec<_>>(), "every row in exactly one fold");
        for f in &folds {
            assert!(
                (119..=121).contains(&f.len()),
                "fold sizes {:?}",
                folds.iter().map(Vec::len).collect::<Vec<_>>()
            );
        }
        for label in 0..5 {
            let total = sets.iter().filter(|s| s.contains(&label)).count();
            let per_fold: Vec<usize> = folds
                .iter()
                .map(|f| f.iter().filter(|&&r| sets[r].contains(&label)).count())
                .collect();
            let (lo, hi) = (per_fold.iter().min().unwrap(), per_fold.iter().max().unwrap());
            // Within one or two examples of total/5 (an example with several labels can only go to one fold).
            assert!(hi - lo <= 2, "label {label} ({total} rows) spread {per_fold:?}");
        }
        // A 80/20 split keeps each label's share too, and repeats with the seed.
        let split = iterative_stratification(&sets, 5, &[0.8, 0.2], 9);
        assert_eq!(split, iterative_stratification(&sets, 5, &[0.8, 0.2], 9));
        assert_eq!(split[1].len(), 120);
        for label in 0..5 {
            let total = sets.iter().filter(|s| s.contains(&label)).count() as f64;
            let held = split[1].iter().filter(|&&r| sets[r].contains(&label)).count() as f64;
            assert!(
                (held - 0.2 * total).abs() <= 1.0,
                "label {label}: {held} of {total} held out"
            );
        }
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
