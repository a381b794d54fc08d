"""Reference Fréchet distances for the unit tests in crates/graft/src/task/frechet.rs.

Run with `python3 tools/reference/frechet_reference.py` (numpy only). The feature rows are made by the same
formulas the Rust test uses, rounded to float32 (what graft receives); the distance is computed in float64 the way
pytorch-fid and the FID paper define it, ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½), with the unbiased covariances of
`np.cov` and the matrix square root from a symmetric eigendecomposition (Σ₁^½ Σ₂ Σ₁^½ is symmetric and has the
eigenvalues of Σ₁Σ₂).
"""

import numpy as np


def rows(n, d, shift, scale):
    i = np.arange(n, dtype=np.float64)[:, None]
    j = np.arange(d, dtype=np.float64)[None, :]
    x = np.sin(i * 1.3 + j * 0.7 + shift) * scale + np.cos(i * 0.37 * (j + 1)) + 0.1 * j
    return x.astype(np.float32).astype(np.float64)


def sqrt_psd(m):
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    r = sqrt_psd(s1)
    covmean_trace = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * covmean_trace)


for name, (n, m, d, shift, scale) in {
    "rescaled": (200, 150, 6, 1.0, 1.3),
    "wider_and_moved": (300, 300, 10, 2.0, 1.8),
}.items():
    a = rows(n, d, 0.0, 1.0)
    b = rows(m, d, shift, scale)
    print(f"{name}: {fid(a, b)!r}  (self: {fid(a, a)!r})")
