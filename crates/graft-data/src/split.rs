//! Seeded train/held-out splits, optionally stratified by class.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use rand::seq::SliceRandom;

use super::rng::seeded_rng;
use crate::error::{Error, Result};

/// Splits `0..n` into `(kept, held_out)`, both sorted ascending, with `round(fraction * n)`
/// samples held out, chosen by a ChaCha8 generator seeded from `seed` (same seed, same split).
///
/// With `stratify` (one class id per sample), each class is held out in proportion to its size:
/// the exact per-class shares are rounded by largest remainder so the total is exact, and then
/// every class with at least two samples gets at least one sample in each part, if another class
/// can spare one. Per-class counts thus stay within one of the exact share unless tiny classes
/// force a trade.
///
/// Errors: `fraction` outside `[0, 1)`, a `stratify` of the wrong length, or a split that would
/// leave the held-out part (for `fraction > 0`) or the kept part empty.
pub fn split_indices(
    n: usize,
    fraction: f64,
    stratify: Option<&[usize]>,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::new(format!(
            "the held-out fraction must be at least 0 and below 1, found {fraction}"
        )));
    }
    if let Some(labels) = stratify
        && labels.len() != n
    {
        return Err(Error::new(format!(
            "cannot stratify {n} samples by {} labels",
            labels.len()
        )));
    }
    let held = (fraction * n as f64).round() as usize;
    if fraction > 0.0 && held == 0 {
        return Err(Error::new(format!(
            "holding out {fraction} of {n} samples leaves the held-out part empty; \
             use a larger fraction, more data, or 0 for no held-out part"
        )));
    }
    if held >= n && n > 0 {
        return Err(Error::new(format!(
            "holding out {fraction} of {n} samples leaves nothing to train on; use a smaller fraction"
        )));
    }
    if held == 0 {
        return Ok(((0..n).collect(), Vec::new()));
    }

    let mut rng = seeded_rng(b"split\0\0\0", seed, 0);
    let mut held_out = match stratify {
        None => {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            order.truncate(held);
            order
        }
        Some(labels) => {
            // A map, not a vector indexed by label: labels are user data and may be huge.
            let mut classes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (i, &label) in labels.iter().enumerate() {
                classes.entry(label).or_default().push(i);
            }
            let mut groups: Vec<Vec<usize>> = classes.into_values().collect();
            let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
            let quotas = allocate(&sizes, held);
            let mut out = Vec::with_capacity(held);
            for (group, quota) in groups.iter_mut().zip(quotas) {
                group.shuffle(&mut rng);
                out.extend_from_slice(&group[..quota]);
            }
            out
        }
    };
    held_out.sort_unstable();

    let mut is_held = vec![false; n];
    for &i in &held_out {
        is_held[i] = true;
    }
    let kept = (0..n).filter(|&i| !is_held[i]).collect();
    Ok((kept, held_out))
}

/// How many of each class to hold out so that the counts sum to `total` (which is below the sum
/// of `sizes`) and follow the class sizes as closely as whole numbers allow.
fn allocate(sizes: &[usize], total: usize) -> Vec<usize> {
    let n: u128 = sizes.iter().map(|&s| s as u128).sum();
    let total_wide = total as u128;
    // Exact arithmetic: class c's share is total * size_c / n; compare remainders, not floats.
    let mut quotas: Vec<usize> = sizes.iter().map(|&s| (total_wide * s as u128 / n) as usize).collect();
    let remainders: Vec<u128> = sizes.iter().map(|&s| total_wide * s as u128 % n).collect();
    let short = total - quotas.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&c| (Reverse(remainders[c]), Reverse(sizes[c]), c));
    for &c in order.iter().take(short) {
        quotas[c] += 1;
    }

    // How far class c is above its exact share, scaled by n to stay in integers.
    let excess = |quotas: &[usize], c: usize| quotas[c] as i128 * n as i128 - (total_wide * sizes[c] as u128) as i128;

    // Classes of two or more with nothing held out take one from the class most above its share
    // that can spare it without emptying one of its own parts.
    for c in 0..sizes.len() {
        if sizes[c] >= 2 && quotas[c] == 0 {
            let donor = (0..sizes.len())
                .filter(|&d| d != c && quotas[d] >= if sizes[d] >= 2 { 2 } else { 1 })
                .max_by_key(|&d| (excess(&quotas, d), Reverse(d)));
            if let Some(d) = donor {
                quotas[d] -= 1;
                quotas[c] += 1;
            }
        }
    }
    // Likewise, classes held out entirely give one to the class most below its share that can take it.
    for c in 0..sizes.len() {
        if sizes[c] >= 2 && quotas[c] == sizes[c] {
            let recipient = (0..sizes.len())
                .filter(|&r| r != c && quotas[r] + if sizes[r] >= 2 { 1 } else { 0 } < sizes[r])
                .min_by_key(|&r| (excess(&quotas, r), r));
            if let Some(r) = recipient {
                quotas[r] += 1;
                quotas[c] -= 1;
            }
        }
    }
    quotas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_partition(n: usize, kept: &[usize], held: &[usize]) {
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "kept not sorted");
        assert!(held.windows(2).all(|w| w[0] < w[1]), "held out not sorted");
        let mut all: Vec<usize> = kept.iter().chain(held).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "not disjoint and covering");
    }

    fn count_by_class(labels: &[usize], indices: &[usize], classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &i in indices {
            counts[labels[i]] += 1;
        }
        counts
    }

    #[test]
    fn plain_split_has_exact_sizes() {
        for (n, fraction, expected) in [(100, 0.2, 20), (10, 0.25, 3), (7, 0.5, 4), (1797, 0.1, 180)] {
            let (kept, held) = split_indices(n, fraction, None, 7).unwrap();
            assert_eq!(held.len(), expected);
            assert_eq!(kept.len(), n - expected);
            check_partition(n, &kept, &held);
        }
    }

    #[test]
    fn zero_fraction_keeps_everything() {
        let (kept, held) = split_indices(5, 0.0, None, 1).unwrap();
        assert_eq!(kept, vec![0, 1, 2, 3, 4]);
        assert!(held.is_empty());
        assert_eq!(split_indices(0, 0.0, None, 1).unwrap(), (vec![], vec![]));
    }

    #[test]
    fn seeds_decide_the_split() {
        let a = split_indices(1000, 0.3, None, 42).unwrap();
        assert_eq!(a, split_indices(1000, 0.3, None, 42).unwrap());
        assert_ne!(a, split_indices(1000, 0.3, None, 43).unwrap());
        let labels: Vec<usize> = (0..1000).map(|i| i % 7).collect();
        let s = split_indices(1000, 0.3, Some(&labels), 42).unwrap();
        assert_eq!(s, split_indices(1000, 0.3, Some(&labels), 42).unwrap());
        assert_ne!(s, split_indices(1000, 0.3, Some(&labels), 43).unwrap());
    }

    #[test]
    fn stratified_split_is_proportional_per_class() {
        // Uneven classes: sizes 5, 17, 40, 200, 3 and 135, interleaved.
        let sizes = [5usize, 17, 40, 200, 3, 135];
        let mut labels = Vec::new();
        for (c, &s) in sizes.iter().enumerate() {
            labels.extend(std::iter::repeat_n(c, s));
        }
        labels.reverse();
        let n = labels.len();
        for fraction in [0.1, 0.25, 0.5, 0.9] {
            let (kept, held) = split_indices(n, fraction, Some(&labels), 3).unwrap();
            check_partition(n, &kept, &held);
            let total = (fraction * n as f64).round() as usize;
            assert_eq!(held.len(), total);
            let held_counts = count_by_class(&labels, &held, sizes.len());
            let kept_counts = count_by_class(&labels, &kept, sizes.len());
            for c in 0..sizes.len() {
                let share = total as f64 * sizes[c] as f64 / n as f64;
                assert!(
                    (held_counts[c] as f64 - share).abs() <= 1.0,
                    "class {c}: {} vs {share}",
                    held_counts[c]
                );
                assert!(
                    held_counts[c] >= 1 && kept_counts[c] >= 1,
                    "class {c} missing from a part"
                );
            }
        }
    }

    #[test]
    fn small_classes_get_one_in_each_part() {
        let mut labels = vec![0, 0, 1, 1, 1, 3];
        labels.extend(std::iter::repeat_n(2, 94));
        let (kept, held) = split_indices(labels.len(), 0.05, Some(&labels), 9).unwrap();
        assert_eq!(held.len(), 5);
        let held_counts = count_by_class(&labels, &held, 4);
        let kept_counts = count_by_class(&labels, &kept, 4);
        for c in 0..3 {
            assert!(
                held_counts[c] >= 1 && kept_counts[c] >= 1,
                "class {c}: {held_counts:?} {kept_counts:?}"
            );
        }
        // A two-sample class with a large share is not held out entirely.
        assert_eq!(allocate(&[2, 100], 100), vec![1, 99]);
        assert_eq!(allocate(&[2, 3, 95], 5), vec![1, 1, 3]);
    }

    #[test]
    fn stratify_accepts_sparse_huge_labels() {
        let labels = [usize::MAX, 3, usize::MAX, 3, 1_000_000_000, 1_000_000_000];
        let (kept, held) = split_indices(6, 0.5, Some(&labels), 0).unwrap();
        check_partition(6, &kept, &held);
        let mut held_labels: Vec<usize> = held.iter().map(|&i| labels[i]).collect();
        held_labels.sort_unstable();
        assert_eq!(held_labels, vec![3, 1_000_000_000, usize::MAX]);
    }

    #[test]
    fn bad_requests_are_errors() {
        assert!(split_indices(10, 1.0, None, 0).is_err());
        assert!(split_indices(10, -0.1, None, 0).is_err());
        assert!(split_indices(10, f64::NAN, None, 0).is_err());
        let err = split_indices(10, 0.01, None, 0).unwrap_err();
        assert!(err.message.contains("held-out part empty"), "{}", err.message);
        assert!(split_indices(0, 0.5, None, 0).is_err());
        assert!(split_indices(1, 0.6, None, 0).is_err());
        assert!(split_indices(3, 0.5, Some(&[0, 1]), 0).is_err());
    }
}
