//! Exact t-SNE (van der Maaten & Hinton 2008) for the report's projections of a layer's outputs: at most a few
//! thousand rows, so the O(n²) form is fast enough and needs no approximation. Seeded from graft's own generator, so
//! a run's picture is the same every time (the t-SNE crates draw from an unseeded generator).
//!
//! The optimization follows the paper's recipe: affinities from per-point Gaussians whose width matches the
//! perplexity (binary search on the precision), symmetrized; Student-t similarities in 2-D; 1,000 steps of gradient
//! descent with momentum 0.5 then 0.8, early exaggeration ×12 for the first 250, and per-coordinate adaptive gains.

use rand_distr::{Distribution, Normal};

const STEPS: usize = 1000;
const EXAGGERATED: usize = 250;
const EXAGGERATION: f64 = 12.0;

/// `n × width` rows → `n` points in 2-D.
pub fn embed(data: &[f32], width: usize, perplexity: f64, seed: u64) -> Vec<(f32, f32)> {
    let n = data.len() / width.max(1);
    if n < 3 {
        return (0..n).map(|i| (i as f32, 0.0)).collect();
    }
    // A perplexity near n has no room to vary; sklearn requires perplexity < n.
    let perplexity = perplexity.min((n as f64 - 1.0) / 3.0).max(1.0);
    let d = squared_distances(data, width, n);
    let p = joint_probabilities(&d, n, perplexity);
    let mut rng = crate::data::rng::seeded_rng(b"tsne\0\0\0\0", seed, 0);
    let normal = Normal::new(0.0, 1e-4).expect("a valid normal");
    let mut y: Vec<f64> = (0..2 * n).map(|_| normal.sample(&mut rng)).collect();
    let mut velocity = vec![0f64; 2 * n];
    let mut gains = vec![1f64; 2 * n];
    // sklearn's "auto" learning rate: n / exaggeration / 4, at least 50.
    let rate = (n as f64 / EXAGGERATION / 4.0).max(50.0);
    let mut q = vec![0f64; n * n];
    for step in 0..STEPS {
        let exaggeration = if step < EXAGGERATED { EXAGGERATION } else { 1.0 };
        let momentum = if step < EXAGGERATED { 0.5 } else { 0.8 };
        // Unnormalized Student-t similarities and their sum.
        let mut z = 0.0;
        for i in 0..n {
            for j in (i + 1)..n {
                let (dx, dy) = (y[2 * i] - y[2 * j], y[2 * i + 1] - y[2 * j + 1]);
                let w = 1.0 / (1.0 + dx * dx + dy * dy);
                q[i * n + j] = w;
                q[j * n + i] = w;
                z += 2.0 * w;
            }
        }
        for i in 0..n {
            let (mut gx, mut gy) = (0.0, 0.0);
            for j in 0..n {
                if i == j {
                    continue;
                }
                let w = q[i * n + j];
                let force = (exaggeration * p[i * n + j] - w / z) * w;
                gx += force * (y[2 * i] - y[2 * j]);
                gy += force * (y[2 * i + 1] - y[2 * j + 1]);
            }
            for (k, g) in [(2 * i, 4.0 * gx), (2 * i + 1, 4.0 * gy)] {
                // Gains grow where the gradient keeps its direction against the velocity, shrink where it flips.
                gains[k] = if (g > 0.0) != (velocity[k] > 0.0) {
                    gains[k] + 0.2
                } else {
                    (gains[k] * 0.8).max(0.01)
                };
                velocity[k] = momentum * velocity[k] - rate * gains[k] * g;
            }
        }
        for (v, u) in y.iter_mut().zip(&velocity) {
            *v += u;
        }
        // Keep the cloud centred.
        let (mx, my) = (0..n).fold((0.0, 0.0), |(a, b), i| (a + y[2 * i], b + y[2 * i + 1]));
        for i in 0..n {
            y[2 * i] -= mx / n as f64;
            y[2 * i + 1] -= my / n as f64;
        }
    }
    (0..n).map(|i| (y[2 * i] as f32, y[2 * i + 1] as f32)).collect()
}

fn squared_distances(data: &[f32], width: usize, n: usize) -> Vec<f64> {
    let mut d = vec![0f64; n * n];
    for i in 0..n {
        let a = &data[i * width..(i + 1) * width];
        for j in (i + 1)..n {
            let b = &data[j * width..(j + 1) * width];
            let s: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            d[i * n + j] = s;
            d[j * n + i] = s;
        }
    }
    d
}

/// Symmetrized affinities p_ij = (p_j|i + p_i|j) / 2n, each row's Gaussian precision found by bisection so that its
/// entropy is ln(perplexity).
fn joint_probabilities(d: &[f64], n: usize, perplexity: f64) -> Vec<f64> {
    let target = perplexity.ln();
    let mut conditional = vec![0f64; n * n];
    for i in 0..n {
        let row = &d[i * n..(i + 1) * n];
        let (mut lo, mut hi, mut beta) = (0.0f64, f64::INFINITY, 1.0f64);
        // Distances relative to the nearest neighbour keep exp() in range.
        let nearest = (0..n).filter(|&j| j != i).map(|j| row[j]).fold(f64::INFINITY, f64::min);
        for _ in 0..100 {
            let mut sum = 0.0;
            let mut weighted = 0.0;
            for j in 0..n {
                if j == i {
                    continue;
                }
                let e = (-(row[j] - nearest) * beta).exp();
                conditional[i * n + j] = e;
                sum += e;
                weighted += (row[j] - nearest) * e;
            }
            let sum = sum.max(1e-300);
            let entropy = sum.ln() + beta * weighted / sum;
            for j in 0..n {
                conditional[i * n + j] /= sum;
            }
            if (entropy - target).abs() < 1e-5 {
                break;
            }
            // Too spread out: narrow the Gaussian (larger precision), and the other way round.
            if entropy > target {
                lo = beta;
                beta = if hi.is_finite() { (beta + hi) / 2.0 } else { beta * 2.0 };
            } else {
                hi = beta;
                beta = (beta + lo) / 2.0;
            }
        }
    }
    let mut p = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            p[i * n + j] = ((conditional[i * n + j] + conditional[j * n + i]) / (2.0 * n as f64)).max(1e-12);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separated_clusters_stay_separated_and_the_result_is_seeded() {
        // Three tight clusters of 20 points in 10-D, far apart.
        let mut data = vec![];
        let mut rng = crate::data::rng::seeded_rng(b"test\0\0\0\0", 3, 0);
        let noise = Normal::new(0.0, 0.1).unwrap();
        for c in 0..3 {
            for _ in 0..20 {
                for f in 0..10 {
                    let centre = if f == c { 10.0 } else { 0.0 };
                    data.push((centre + noise.sample(&mut rng)) as f32);
                }
            }
        }
        let y = embed(&data, 10, 10.0, 1);
        assert_eq!(y, embed(&data, 10, 10.0, 1));
        let centre = |c: usize| {
            let pts = &y[c * 20..(c + 1) * 20];
            let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), p| (a + p.0, b + p.1));
            (sx / 20.0, sy / 20.0)
        };
        let spread = |c: usize| {
            let (cx, cy) = centre(c);
            y[c * 20..(c + 1) * 20]
                .iter()
                .map(|p| ((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt())
                .fold(0f32, f32::max)
        };
        for a in 0..3 {
            for b in (a + 1)..3 {
                let (ca, cb) = (centre(a), centre(b));
                let gap = ((ca.0 - cb.0).powi(2) + (ca.1 - cb.1).powi(2)).sqrt();
                assert!(gap > 2.0 * spread(a).max(spread(b)), "clusters {a}, {b}: gap {gap}");
            }
        }
    }
}
