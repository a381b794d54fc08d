//! The Fréchet distance between two sets of feature vectors (Heusel et al. 2017's FID when the features are a
//! classifier's): each set is summarized as a Gaussian — mean μ and covariance Σ — and the distance is
//! ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½). Means, covariances and products are computed in f64 on the host (a few
//! hundred features at most); the matrix square roots come from burn's SVD of symmetric positive semi-definite
//! matrices (Σ₁^½ Σ₂ Σ₁^½ is symmetric and has the eigenvalues of Σ₁Σ₂, so its singular values give the trace).

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::error::{Error, Result};

/// Mean and unbiased covariance (as `np.cov`) of `rows` of `dim` values each.
fn moments(rows: &[f32], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() / dim;
    let mut mean = vec![0.0; dim];
    for row in rows.chunks(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0.0; dim * dim];
    for row in rows.chunks(dim) {
        let centred: Vec<f64> = row.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
        for i in 0..dim {
            for j in i..dim {
                cov[i * dim + j] += centred[i] * centred[j];
            }
        }
    }
    for i in 0..dim {
        for j in i..dim {
            let c = cov[i * dim + j] / (n as f64 - 1.0);
            cov[i * dim + j] = c;
            cov[j * dim + i] = c;
        }
    }
    (mean, cov)
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                out[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    out
}

/// SVD of the symmetric PSD `m` (`d × d`): its eigenvectors (columns of U, row-major) and eigenvalues.
fn psd_eigen(m: &[f64], d: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let device = Device::default();
    let values: Vec<f32> = m.iter().map(|&v| v as f32).collect();
    let tensor = Tensor::<2>::from_data(TensorData::new(values, [d, d]), &device);
    // burn's SVD panics when its QR iteration does not converge within the sweep budget; a generous budget and
    // catch_unwind keep that a one-line error.
    let result = std::panic::catch_unwind(|| burn::linalg::svd::<2, 1>(tensor, 200));
    let (u, s, _) = result.map_err(|_| Error::new("the covariance's singular value decomposition did not converge"))?;
    let read = |t: TensorData| -> Result<Vec<f64>> {
        Ok(t.convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::new(format!("cannot read the decomposition back: {e:?}")))?
            .into_iter()
            .map(f64::from)
            .collect())
    };
    Ok((read(u.into_data())?, read(s.into_data())?))
}

/// Σ^½ of the symmetric PSD `m`: U diag(√s) Uᵀ.
fn sqrt_psd(m: &[f64], d: usize) -> Result<Vec<f64>> {
    let (u, s) = psd_eigen(m, d)?;
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            out[i * d + j] = (0..d).map(|k| u[i * d + k] * s[k].max(0.0).sqrt() * u[j * d + k]).sum();
        }
    }
    Ok(out)
}

/// The Fréchet distance between the Gaussians fitted to `a` and `b`, each rows of `dim` values (row-major). Each
/// set needs at least two rows; the same set against itself gives 0 up to rounding.
pub fn frechet_distance(a: &[f32], b: &[f32], dim: usize) -> Result<f64> {
    if dim == 0 || !a.len().is_multiple_of(dim) || !b.len().is_multiple_of(dim) {
        return Err(Error::new(format!(
            "feature sets of {} and {} values do not split into rows of {dim}",
            a.len(),
            b.len()
        )));
    }
    let (n, m) = (a.len() / dim, b.len() / dim);
    if n < 2 || m < 2 {
        return Err(Error::new(format!(
            "a covariance needs at least two samples per set; found {n} and {m}"
        )));
    }
    if let Some(v) = a.iter().chain(b).find(|v| !v.is_finite()) {
        return Err(Error::new(format!(
            "a feature value is {v}; the features must be finite"
        )));
    }
    let (mu1, s1) = moments(a, dim);
    let (mu2, s2) = moments(b, dim);
    let root = sqrt_psd(&s1, dim)?;
    let middle = matmul(&matmul(&root, &s2, dim), &root, dim);
    let (_, singular) = psd_eigen(&middle, dim)?;
    let covmean_trace: f64 = singular.iter().map(|s| s.max(0.0).sqrt()).sum();
    let means: f64 = mu1.iter().zip(&mu2).map(|(x, y)| (x - y).powi(2)).sum();
    let traces: f64 = (0..dim).map(|i| s1[i * dim + i] + s2[i * dim + i]).sum();
    Ok(means + traces - 2.0 * covmean_trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows `tools/reference/frechet_reference.py` makes.
    fn rows(n: usize, d: usize, shift: f64, scale: f64) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * d);
        for i in 0..n {
            for j in 0..d {
                let (i, j) = (i as f64, j as f64);
                let x = (i * 1.3 + j * 0.7 + shift).sin() * scale + (i * 0.37 * (j + 1.0)).cos() + 0.1 * j;
                out.push(x as f32);
            }
        }
        out
    }

    #[test]
    fn matches_numpys_float64_distance() {
        // (n, m, d, shift, scale, numpy's distance)
        for (n, m, d, shift, scale, want) in [
            (200, 150, 6, 1.0, 1.3, 0.21570702947420628),
            (300, 300, 10, 2.0, 1.8, 2.8714953673557204),
        ] {
            let a = rows(n, d, 0.0, 1.0);
            let b = rows(m, d, shift, scale);
            let got = frechet_distance(&a, &b, d).unwrap();
            // The square roots come from a float32 SVD: 1e-4 of the covariances' scale (their traces are ~10).
            assert!((got - want).abs() < 1e-4 * (1.0 + want), "{got} vs {want}");
            let own = frechet_distance(&a, &a, d).unwrap();
            assert!(own.abs() < 1e-4, "a set against itself: {own}");
        }
    }

    #[test]
    fn bad_sets_are_errors() {
        assert!(
            frechet_distance(&[1.0, 2.0, 3.0], &[1.0, 2.0], 2)
                .unwrap_err()
                .to_string()
                .contains("rows of 2")
        );
        assert!(
            frechet_distance(&[1.0, 2.0], &[1.0, 2.0, 3.0, 4.0], 2)
                .unwrap_err()
                .to_string()
                .contains("two samples")
        );
        let e = frechet_distance(&[1.0, f32::NAN, 3.0, 4.0], &[1.0, 2.0, 3.0, 4.0], 2).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
    }
}
