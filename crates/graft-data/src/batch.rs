//! Mini-batches: which samples go together in each step, and gathering them into arrays.

use rand::seq::SliceRandom;

use super::array::Array;
use super::dataset::{Dataset, Targets};
use super::rng::seeded_rng;
use crate::error::{Error, Result};

/// Batches per window sorted by length in [`Batches::grouped_by_length`] (Hugging Face's megabatches are 50).
pub const LENGTH_WINDOW: usize = 50;

/// The number of tokens in each row of token ids `[N, T]` padded at the end with `pad`: `T` less the run of
/// `pad` at the row's end.
pub fn token_lengths(ids: &Array, pad: f32) -> Vec<usize> {
    let t = ids.sample_size();
    (0..ids.len())
        .map(|r| {
            t - ids.data[r * t..(r + 1) * t]
                .iter()
                .rev()
                .take_while(|&&v| v == pad)
                .count()
        })
        .collect()
}

/// An iterator over the mini-batches of one epoch, each a `Vec` of sample indices.
///
/// Every index in `0..n` appears exactly once per epoch; the last batch is shorter when
/// `batch_size` does not divide `n`. When shuffled, the order depends only on `(seed, epoch)`, so
/// a run resumed at epoch `e` sees exactly the batches it would have seen without the pause.
#[derive(Debug, Clone)]
pub struct Batches {
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
}

impl Batches {
    /// The batches of epoch `epoch` over `n` samples; in index order when `shuffle` is false.
    ///
    /// Errors if `batch_size` is 0.
    pub fn new(n: usize, batch_size: usize, shuffle: bool, seed: u64, epoch: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::new("the batch size must be at least 1, found 0"));
        }
        let mut order: Vec<usize> = (0..n).collect();
        if shuffle {
            order.shuffle(&mut seeded_rng(b"batches\0", seed, epoch as u64));
        }
        Ok(Batches {
            order,
            batch_size,
            next: 0,
        })
    }

    /// The batches of a given epoch order (a resampled one), in that order.
    pub fn from_order(order: Vec<usize>, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::new("the batch size must be at least 1, found 0"));
        }
        Ok(Batches {
            order,
            batch_size,
            next: 0,
        })
    }

    /// The batches of `order` (an epoch's shuffled or resampled order) regrouped so that each holds samples of
    /// similar `lengths`, as Hugging Face's `group_by_length`: the order is cut into windows of
    /// [`LENGTH_WINDOW`] batches, each window sorted by length (longest first) and cut into batches, and the full
    /// batches are then shuffled (seeded by `(seed, epoch)`), so that neither a window nor the epoch runs from
    /// long to short. A model whose cost follows a batch's longest sequence (a `bert` layer) then computes
    /// little padding; every sample still comes once per epoch, and the short last batch stays last.
    pub fn grouped_by_length(
        order: Vec<usize>,
        lengths: &[usize],
        batch_size: usize,
        seed: u64,
        epoch: usize,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::new("the batch size must be at least 1, found 0"));
        }
        let mut grouped: Vec<Vec<usize>> = Vec::with_capacity(order.len().div_ceil(batch_size));
        for window in order.chunks(batch_size * LENGTH_WINDOW) {
            let mut window = window.to_vec();
            // Stable: equal lengths keep the shuffled order.
            window.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
            grouped.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
        }
        let partial = grouped.pop_if(|b| b.len() < batch_size);
        grouped.shuffle(&mut seeded_rng(b"lengthgr", seed, epoch as u64));
        grouped.extend(partial);
        Self::from_order(grouped.concat(), batch_size)
    }

    /// The sample order of the whole epoch.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Number of batches in the epoch (including those already yielded).
    pub fn num_batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }
}

impl Iterator for Batches {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let batch = self.order[self.next..end].to_vec();
        self.next = end;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.next).div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches {}

/// One mini-batch gathered into arrays, ready to become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The inputs of the batch's samples, `[batch, ...sample shape]`.
    pub inputs: Array,
    /// Class ids, when the dataset has class targets.
    pub labels: Option<Vec<usize>>,
    /// Value targets `[batch, k]`, when the dataset has value targets.
    pub values: Option<Array>,
    /// Per-sample loss weights, when the dataset has them.
    pub weights: Option<Vec<f32>>,
    /// The batch's rows of the dataset's further inputs.
    pub extra_inputs: Vec<Array>,
    /// Multi-task data: each task's targets for the batch's rows.
    pub tasks: Vec<super::dataset::TaskLabels>,
}

impl Batch {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// True when the batch holds no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Copies the samples at `indices` (typically one item of [`Batches`]) out of `dataset`; images read per batch
/// are decoded here, as they are (no augmentation: validation, test, prediction).
///
/// # Panics
/// If an index is out of range (indices come from the program, not from user data).
pub fn gather(dataset: &Dataset, indices: &[usize]) -> Result<Batch> {
    gather_drawn(dataset, indices, None)
}

/// [`gather`] for a training step of `epoch`: images read per batch are augmented as their source asks, each
/// image drawn from the seed, the epoch and the file.
pub fn gather_for_training(dataset: &Dataset, indices: &[usize], seed: u64, epoch: usize) -> Result<Batch> {
    gather_drawn(dataset, indices, Some((seed, epoch)))
}

fn gather_drawn(dataset: &Dataset, indices: &[usize], draw: Option<(u64, usize)>) -> Result<Batch> {
    let inputs = match &dataset.images {
        Some(images) => {
            let ids: Vec<usize> = indices.iter().map(|&i| dataset.inputs.row(i)[0] as usize).collect();
            images.load(&ids, draw)?
        }
        None => dataset.inputs.select(indices),
    };
    let (labels, values) = match &dataset.targets {
        None => (None, None),
        Some(Targets::Classes { labels, .. }) => (Some(indices.iter().map(|&i| labels[i]).collect()), None),
        Some(Targets::Values(values)) => (None, Some(values.select(indices))),
    };
    Ok(Batch {
        inputs,
        labels,
        values,
        weights: dataset
            .weights
            .as_ref()
            .map(|w| indices.iter().map(|&i| w[i]).collect()),
        extra_inputs: dataset.extra_inputs.iter().map(|a| a.select(indices)).collect(),
        tasks: dataset.select_tasks(indices),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(n: usize, batch_size: usize, shuffle: bool, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
        Batches::new(n, batch_size, shuffle, seed, epoch).unwrap().collect()
    }

    #[test]
    fn every_index_once_per_epoch_with_partial_last_batch() {
        for shuffle in [false, true] {
            let batches = epoch(103, 10, shuffle, 5, 2);
            assert_eq!(batches.len(), 11);
            assert!(batches[..10].iter().all(|b| b.len() == 10));
            assert_eq!(batches[10].len(), 3);
            let mut all: Vec<usize> = batches.concat();
            all.sort_unstable();
            assert_eq!(all, (0..103).collect::<Vec<_>>());
        }
        assert_eq!(epoch(5, 2, false, 0, 0), vec![vec![0, 1], vec![2, 3], vec![4]]);
        assert!(epoch(0, 4, true, 0, 0).is_empty());
    }

    #[test]
    fn shuffle_order_is_a_function_of_seed_and_epoch() {
        assert_eq!(epoch(100, 8, true, 1, 3), epoch(100, 8, true, 1, 3));
        assert_ne!(epoch(100, 8, true, 1, 3), epoch(100, 8, true, 1, 4));
        assert_ne!(epoch(100, 8, true, 1, 3), epoch(100, 8, true, 2, 3));
        assert_ne!(epoch(100, 100, true, 1, 0)[0], (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn grouped_batches_hold_similar_lengths_and_every_sample_once() {
        let n = 1000;
        let lengths: Vec<usize> = (0..n).map(|i| (i * 7919) % 128 + 1).collect();
        let order = Batches::new(n, 16, true, 3, 1).unwrap().order().to_vec();
        let batches: Vec<Vec<usize>> = Batches::grouped_by_length(order.clone(), &lengths, 16, 3, 1)
            .unwrap()
            .collect();
        let mut seen: Vec<usize> = batches.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert!(batches[..batches.len() - 1].iter().all(|b| b.len() == 16));
        assert_eq!(batches.last().unwrap().len(), n % 16);
        // Padding: the tokens a batch computes (its longest row × its rows) against the tokens it holds.
        let padded = |bs: &[Vec<usize>]| -> f64 {
            let computed: usize = bs
                .iter()
                .map(|b| b.iter().map(|&i| lengths[i]).max().unwrap() * b.len())
                .sum();
            computed as f64 / lengths.iter().sum::<usize>() as f64
        };
        let shuffled: Vec<Vec<usize>> = order.chunks(16).map(<[usize]>::to_vec).collect();
        assert!(padded(&shuffled) > 1.6, "{}", padded(&shuffled));
        assert!(padded(&batches) < 1.1, "{}", padded(&batches));
        // Not a curriculum: the full batches' longest rows are not in falling order.
        let longest: Vec<usize> = batches.iter().map(|b| lengths[b[0]]).collect();
        assert!(longest.windows(2).any(|w| w[0] < w[1]));
        // A function of (seed, epoch).
        let again: Vec<Vec<usize>> = Batches::grouped_by_length(order.clone(), &lengths, 16, 3, 1)
            .unwrap()
            .collect();
        assert_eq!(again, batches);
        let other: Vec<Vec<usize>> = Batches::grouped_by_length(order, &lengths, 16, 3, 2).unwrap().collect();
        assert_ne!(other, batches);
    }

    #[test]
    fn token_lengths_count_up_to_the_trailing_padding() {
        let ids = Array::new(
            vec![3, 5],
            vec![5., 6., 0., 0., 0., 5., 6., 7., 8., 9., 0., 0., 0., 0., 0.],
        )
        .unwrap();
        assert_eq!(token_lengths(&ids, 0.0), vec![2, 5, 0]);
    }

    #[test]
    fn counts_and_errors() {
        let mut b = Batches::new(10, 4, true, 0, 0).unwrap();
        assert_eq!(b.num_batches(), 3);
        assert_eq!(b.len(), 3);
        b.next();
        assert_eq!(b.len(), 2);
        assert_eq!(b.order().len(), 10);
        assert!(Batches::new(10, 0, false, 0, 0).is_err());
    }

    #[test]
    fn gather_copies_inputs_and_targets() {
        let inputs = Array::new(vec![4, 2], (0..8).map(|v| v as f32).collect()).unwrap();
        let classes = Dataset::new(inputs.clone(), Some(Targets::numbered_classes(vec![3, 1, 0, 2], 4))).unwrap();
        let batch = gather(&classes, &[2, 0]).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.inputs.data, vec![4.0, 5.0, 0.0, 1.0]);
        assert_eq!(batch.labels, Some(vec![0, 3]));
        assert_eq!(batch.values, None);

        let values = Array::new(vec![4, 1], vec![0.1, 0.2, 0.3, 0.4]).unwrap();
        let regression = Dataset::new(inputs.clone(), Some(Targets::Values(values))).unwrap();
        let batch = gather(&regression, &[3]).unwrap();
        assert_eq!(batch.values.unwrap().data, vec![0.4]);
        assert_eq!(batch.labels, None);

        let unlabelled = Dataset::new(inputs, None).unwrap();
        let batch = gather(&unlabelled, &[1]).unwrap();
        assert_eq!((batch.labels, batch.values), (None, None));
    }
}
