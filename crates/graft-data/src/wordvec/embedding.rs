//! The embedding matrix that word vectors give for a fitted vocabulary, to initialize an `embedding` layer: found
//! tokens get their vectors, the others seeded random draws of the vectors' own scale, so training starts from the
//! pretrained geometry and the same seed gives the same matrix.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::WordVectors;
use crate::array::Array;
use crate::rng::seeded_rng;

impl WordVectors {
    /// An embedding matrix `[vocab.len(), dim]` for a vocabulary given as `id -> token`, with ids 0 and 1
    /// reserved as graft's tokenizer assigns them (0 = padding, 1 = out-of-vocabulary; the strings at those
    /// positions are not looked up). Row 0 is zeros; row `i >= 2` is the vector of `vocab[i]`, looked up as
    /// is, then lowercased; row 1 and the rows of tokens without a vector are drawn from N(0, σ²), σ the
    /// standard deviation of all values of these vectors, from a ChaCha8 generator seeded by `seed` (the
    /// same seed and vocabulary give the same matrix). Also returns how many tokens (of ids >= 2) had a
    /// vector. The `embedding` layer it initializes must have this `dim`.
    pub fn embedding_matrix(&self, vocab: &[String], seed: u64) -> (Array, usize) {
        let dim = self.dim;
        let sigma = self.value_std();
        let mut normal = Normal::new(seeded_rng(b"wordvecs", seed, 0));
        let mut data = vec![0f32; vocab.len() * dim];
        let mut found = 0;
        for (id, (token, row)) in vocab.iter().zip(data.chunks_exact_mut(dim.max(1))).enumerate() {
            if id == 0 {
                continue;
            }
            let vector = if id == 1 {
                None
            } else {
                self.get(token).or_else(|| {
                    let lower = token.to_lowercase();
                    if lower == *token { None } else { self.get(&lower) }
                })
            };
            match vector {
                Some(vector) => {
                    row.copy_from_slice(vector);
                    found += 1;
                }
                None => row.iter_mut().for_each(|v| *v = (sigma * normal.sample()) as f32),
            }
        }
        (
            Array {
                shape: vec![vocab.len(), dim],
                data,
            },
            found,
        )
    }

    /// The (population) standard deviation of all values; 0 without values.
    fn value_std(&self) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        let n = self.values.len() as f64;
        let mean = self.values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = self.values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        var.sqrt()
    }
}

/// Standard normal draws by the Box-Muller transform (both values of each pair are used).
struct Normal {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Normal {
    fn new(rng: ChaCha8Rng) -> Self {
        Normal { rng, spare: None }
    }

    fn sample(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - self.rng.random::<f64>(); // (0, 1]: ln(u1) is finite
        let u2 = self.rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

#[cfg(test)]
mod tests {
    use crate::wordvec::WordVectors;

    #[test]
    fn embedding_matrix_rows_counts_and_seeding() {
        let wv = WordVectors::new(
            vec!["the".into(), "cat".into(), "sat".into()],
            2,
            vec![1.0, -1.0, 0.5, 0.25, -0.5, 2.0],
        )
        .unwrap();
        let vocab: Vec<String> = ["<pad>", "<unk>", "the", "Cat", "dog", "SAT", "the"]
            .map(String::from)
            .into();
        let (m, found) = wv.embedding_matrix(&vocab, 7);
        assert_eq!(m.shape, vec![7, 2]);
        assert_eq!(found, 4); // the, Cat -> cat, SAT -> sat, the again
        assert_eq!(m.row(0), &[0.0, 0.0]);
        assert_eq!(m.row(2), wv.get("the").unwrap());
        assert_eq!(m.row(3), wv.get("cat").unwrap());
        assert_eq!(m.row(5), wv.get("sat").unwrap());
        assert_eq!(m.row(6), wv.get("the").unwrap());
        for oov in [1, 4] {
            assert!(
                m.row(oov).iter().all(|v| *v != 0.0 && v.is_finite()),
                "{:?}",
                m.row(oov)
            );
        }
        assert_ne!(m.row(1), m.row(4));

        let (again, _) = wv.embedding_matrix(&vocab, 7);
        assert_eq!(again, m);
        let (other, _) = wv.embedding_matrix(&vocab, 8);
        assert_ne!(other.row(4), m.row(4));
        assert_eq!(other.row(2), m.row(2));

        // The draws have the spread of the vectors.
        let sigma = wv.value_std();
        let many: Vec<String> = (0..5000).map(|i| format!("oov{i}")).collect();
        let (m, found) = wv.embedding_matrix(&many, 1);
        assert_eq!(found, 0);
        let draws = &m.data[2..];
        let mean = draws.iter().map(|&v| f64::from(v)).sum::<f64>() / draws.len() as f64;
        let std = (draws.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / draws.len() as f64).sqrt();
        assert!(
            mean.abs() < 0.03 * sigma && (std / sigma - 1.0).abs() < 0.03,
            "mean {mean}, std {std}, σ {sigma}"
        );

        let (empty, found) = wv.embedding_matrix(&[], 1);
        assert_eq!((empty.shape, empty.data.len(), found), (vec![0, 2], 0, 0));
    }
}
