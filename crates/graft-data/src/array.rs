//! A plain dense `f32` array: the one in-memory form every data source is converted to, so that
//! splitting, batching and the model boundary never care where the numbers came from.

use crate::error::{Error, Result};

/// A dense, row-major `f32` array whose first axis is the sample axis.
///
/// `shape[0]` is the number of samples; `shape[1..]` is the shape of one sample (for images,
/// channels-first: `[channels, height, width]`). The fields are public for cheap moves in and out;
/// [`Array::new`] is the checked way to build one.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Sample count first, then the shape of one sample.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values in row-major order.
    pub data: Vec<f32>,
}

impl Array {
    /// Builds an array, checking that `shape` has a sample axis and that `data` holds exactly
    /// `shape.iter().product()` values.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let expected = checked_product(&shape)?;
        if data.len() != expected {
            return Err(Error::new(format!(
                "shape {shape:?} holds {expected} values but {} were given",
                data.len()
            )));
        }
        Ok(Array { shape, data })
    }

    /// Number of samples (the length of the first axis).
    pub fn len(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of one sample: every axis after the first.
    pub fn sample_shape(&self) -> &[usize] {
        self.shape.get(1..).unwrap_or(&[])
    }

    /// Number of values in one sample.
    pub fn sample_size(&self) -> usize {
        self.sample_shape().iter().product()
    }

    /// The values of sample `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`; indices come from the program (splits, batches), not from user data.
    pub fn row(&self, i: usize) -> &[f32] {
        let size = self.sample_size();
        &self.data[i * size..(i + 1) * size]
    }

    /// A new array holding the samples at `indices`, in that order (repeats allowed).
    ///
    /// # Panics
    /// If an index is `>= self.len()`, as slice indexing does.
    pub fn select(&self, indices: &[usize]) -> Array {
        let size = self.sample_size();
        let mut data = Vec::with_capacity(indices.len() * size);
        for &i in indices {
            data.extend_from_slice(self.row(i));
        }
        let mut shape = self.shape.clone();
        if shape.is_empty() {
            // A shapeless array has no sample axis to gather along; give the result one.
            shape.push(0);
        }
        shape[0] = indices.len();
        Array { shape, data }
    }

    /// Checks that `data` matches `shape`: the fields are public, so a hand-built array may not.
    pub fn check(&self) -> Result<()> {
        let expected = checked_product(&self.shape)?;
        if self.data.len() != expected {
            return Err(Error::new(format!(
                "array of shape {:?} should hold {expected} values but holds {}",
                self.shape,
                self.data.len()
            )));
        }
        Ok(())
    }
}

/// The element count of `shape`, refusing shapes without a sample axis or too large to address.
fn checked_product(shape: &[usize]) -> Result<usize> {
    if shape.is_empty() {
        return Err(Error::new(
            "an array needs at least one axis (the sample axis), found shape []",
        ));
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::new(format!("shape {shape:?} has too many elements to hold in memory")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Array {
        Array::new(vec![3, 2, 2], (0..12).map(|v| v as f32).collect()).unwrap()
    }

    #[test]
    fn new_checks_element_count() {
        let err = Array::new(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert_eq!(err.message, "shape [2, 3] holds 6 values but 5 were given");
        assert!(Array::new(vec![], vec![]).is_err());
        assert!(Array::new(vec![usize::MAX, 2], vec![]).is_err());
        assert!(Array::new(vec![0, 5], vec![]).is_ok());
    }

    #[test]
    fn shape_accessors() {
        let a = sample();
        assert_eq!(a.len(), 3);
        assert!(!a.is_empty());
        assert_eq!(a.sample_shape(), &[2, 2]);
        assert_eq!(a.sample_size(), 4);
        assert_eq!(a.row(1), &[4.0, 5.0, 6.0, 7.0]);

        let flat = Array::new(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(flat.sample_shape(), &[] as &[usize]);
        assert_eq!(flat.sample_size(), 1);
        assert_eq!(flat.row(2), &[3.0]);
    }

    #[test]
    fn select_gathers_rows_in_the_given_order() {
        let a = sample();
        let s = a.select(&[2, 0, 2]);
        assert_eq!(s.shape, vec![3, 2, 2]);
        assert_eq!(s.row(0), a.row(2));
        assert_eq!(s.row(1), a.row(0));
        assert_eq!(s.row(2), a.row(2));
        let empty = a.select(&[]);
        assert_eq!(empty.shape, vec![0, 2, 2]);
        assert!(empty.data.is_empty());
    }

    #[test]
    fn check_catches_hand_built_mismatch() {
        let a = Array {
            shape: vec![2, 2],
            data: vec![0.0; 3],
        };
        assert!(a.check().is_err());
        assert!(sample().check().is_ok());
    }
}
