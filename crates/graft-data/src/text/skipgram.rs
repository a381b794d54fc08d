//! Skip-gram training data as the word2vec tool forms it (Mikolov et al. 2013): frequent words subsampled, a window
//! of random width around each remaining token, one (target, context) pair per neighbour inside it; and the noise
//! distribution negative samples are drawn from, the unigram distribution raised to a power.
//!
//! Both are seeded, so the same corpus, settings and seed give the same pairs and the same negatives. The noise
//! sampler is exact: the word2vec tool fills a 10^8-entry table whose rounding gives rare words a slightly wrong
//! probability, where Walker's alias method (Vose's construction) draws each word with its exact probability, in
//! constant time per draw, from two tables the size of the vocabulary.

use rand::Rng;

use super::corpus::Corpus;
use crate::error::{Error, Result};
use crate::rng::seeded_rng;

/// The chance that one occurrence of a word seen `count` times among `total` in-vocabulary tokens is kept, with
/// subsampling threshold `threshold`: the word2vec tool's `(sqrt(f/(t·T)) + 1)·(t·T)/f`, capped at 1 (words with
/// `f <= 2.6·t·T` are always kept). A threshold of 0 keeps every token.
pub fn keep_probability(count: u64, total: u64, threshold: f64) -> f64 {
    let scaled = threshold * total as f64;
    if scaled <= 0.0 || count == 0 {
        return 1.0;
    }
    let f = count as f64;
    (((f / scaled).sqrt() + 1.0) * scaled / f).min(1.0)
}

/// Skip-gram (target, context) pairs as the word2vec tool forms them: each token kept with the subsampling
/// probability of its word (Mikolov et al. 2013, the tool's formula: keep = (sqrt(f/(t·T)) + 1)·(t·T)/f for a word seen
/// f times in T in-vocabulary tokens, threshold t; t = 0 keeps every token, see [`keep_probability`]), then, within
/// each sentence of kept tokens, for each position a window b drawn uniformly from 1..=window and one pair with each
/// neighbour at distance ≤ b. Seeded (a generator of its own purpose); same seed → same pairs.
///
/// Pairs come sentence by sentence, position by position, neighbours left to right; `(targets[k], contexts[k])` is
/// pair k. The tool trains the neighbour's input vector to predict the centre word; the pair list holds both
/// orders of every neighbour relation equally often in expectation, so which side a trainer calls the input does not
/// change what it learns. Unlike the tool, a sentence is not cut at 1000 words (lines of the corpus are sentences
/// whatever their length; windows never cross them) and T does not count end-of-sentence markers.
pub fn skipgram_pairs(corpus: &Corpus, window: usize, subsample: f64, seed: u64) -> Result<(Vec<u32>, Vec<u32>)> {
    if window == 0 || window > u32::MAX as usize {
        return Err(Error::new(format!("window must be between 1 and {}, found {window}", u32::MAX)).at("window"));
    }
    if !subsample.is_finite() || subsample < 0.0 {
        return Err(Error::new(format!(
            "subsample must be a finite number >= 0 (0 keeps every token; word2vec uses 1e-3 to 1e-5), found \
             {subsample}"
        ))
        .at("subsample"));
    }
    let total = corpus.len_tokens_in_vocab();
    let keep: Vec<f64> = corpus
        .counts
        .iter()
        .map(|&c| keep_probability(c, total, subsample))
        .collect();
    // Each kept token has on average window + 1 neighbours inside its window (fewer at sentence ends).
    let expected_kept: f64 = corpus.counts.iter().zip(&keep).map(|(&c, &p)| c as f64 * p).sum();
    let capacity = (expected_kept * (window as f64 + 1.0)).min(1e9) as usize;
    let (mut targets, mut contexts) = (Vec::with_capacity(capacity), Vec::with_capacity(capacity));
    let mut rng = seeded_rng(b"skipgram", seed, 0);
    let mut kept = Vec::new();
    for (s, sentence) in corpus.sentences.iter().enumerate() {
        kept.clear();
        for &word in sentence {
            let Some(&p) = keep.get(word as usize) else {
                return Err(Error::new(format!(
                    "sentence {s} holds word id {word}, but the vocabulary has {} words",
                    keep.len()
                )));
            };
            if p >= 1.0 || rng.random::<f64>() < p {
                kept.push(word);
            }
        }
        let n = kept.len();
        for i in 0..n {
            let b = rng.random_range(1..=window as u32) as usize;
            let (lo, hi) = (i.saturating_sub(b), (i + b).min(n - 1));
            for j in (lo..=hi).filter(|&j| j != i) {
                targets.push(kept[i]);
                contexts.push(kept[j]);
            }
        }
    }
    Ok((targets, contexts))
}

/// Draws negative samples from the unigram distribution raised to `power` (0.75 in word2vec): word `i` with
/// probability `counts[i]^power / Σ_j counts[j]^power`, a word of count 0 never.
///
/// Walker's alias method: column `k` (one per word of nonzero count) is drawn uniformly, then gives its own word with
/// probability `threshold[k]` and its alias otherwise; Vose's construction fills the columns so that every word's
/// total share over them is its probability.
#[derive(Debug, Clone)]
pub struct NoiseSampler {
    probabilities: Vec<f64>,
    /// The word of each column.
    words: Vec<u32>,
    threshold: Vec<f64>,
    alias: Vec<u32>,
}

impl NoiseSampler {
    /// The sampler for word counts `counts` (indexed by word id) raised to `power`. Errors when there is no word,
    /// every count is 0, or `power` is not finite (or so large that a weight overflows).
    pub fn new(counts: &[u64], power: f64) -> Result<Self> {
        if !power.is_finite() {
            return Err(Error::new(format!("the noise power must be a finite number, found {power}")).at("power"));
        }
        if counts.is_empty() {
            return Err(Error::new("there are no words to draw negative samples from"));
        }
        if counts.len() > u32::MAX as usize {
            return Err(Error::new(format!("{} words do not fit 32-bit ids", counts.len())));
        }
        let weights: Vec<f64> = counts
            .iter()
            .map(|&c| if c == 0 { 0.0 } else { (c as f64).powf(power) })
            .collect();
        let sum: f64 = weights.iter().sum();
        if !sum.is_finite() {
            return Err(Error::new(format!(
                "the counts raised to the power {power} overflow; use a smaller power"
            ))
            .at("power"));
        }
        if sum <= 0.0 {
            return Err(Error::new(format!(
                "every one of the {} word counts is 0: there is nothing to draw negative samples from",
                counts.len()
            )));
        }
        let probabilities: Vec<f64> = weights.iter().map(|w| w / sum).collect();
        let words: Vec<u32> = (0..counts.len() as u32).filter(|&i| counts[i as usize] > 0).collect();
        let m = words.len();
        // Each column holds a mass of 1: word k's scaled share is m·p_k.
        let mut scaled: Vec<f64> = words.iter().map(|&w| probabilities[w as usize] * m as f64).collect();
        let mut threshold = vec![1.0; m];
        let mut alias: Vec<u32> = words.clone();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..m).partition(|&k| scaled[k] < 1.0);
        while let (Some(&l), Some(&g)) = (small.last(), large.last()) {
            small.pop();
            threshold[l] = scaled[l];
            alias[l] = words[g];
            // Vose's order of operations, which keeps the rounding error from accumulating.
            scaled[g] = (scaled[g] + scaled[l]) - 1.0;
            if scaled[g] < 1.0 {
                large.pop();
                small.push(g);
            }
        }
        // What is left is 1 up to rounding: those columns keep their own word (threshold already 1).
        Ok(NoiseSampler {
            probabilities,
            words,
            threshold,
            alias,
        })
    }

    /// One word id.
    pub fn sample(&self, rng: &mut impl Rng) -> u32 {
        let k = rng.random_range(0..self.words.len() as u32) as usize;
        let t = self.threshold[k];
        if t >= 1.0 || rng.random::<f64>() < t {
            self.words[k]
        } else {
            self.alias[k]
        }
    }

    /// Fills `out` with independent draws.
    pub fn fill(&self, out: &mut [u32], rng: &mut impl Rng) {
        for slot in out {
            *slot = self.sample(rng);
        }
    }

    /// The probability of drawing `id` (0 for an id beyond the counts).
    pub fn probability(&self, id: u32) -> f64 {
        self.probabilities.get(id as usize).copied().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A corpus of the given sentences over `vocab` words with ids as given (counts from the sentences).
    fn corpus(vocab: usize, sentences: Vec<Vec<u32>>) -> Corpus {
        let mut counts = vec![0u64; vocab];
        for &w in sentences.iter().flatten() {
            counts[w as usize] += 1;
        }
        Corpus {
            words: (0..vocab).map(|i| format!("w{i}")).collect(),
            tokens: counts.iter().sum(),
            counts,
            sentences,
            files: 0,
        }
    }

    /// The upper 0.999 quantile of the chi-square distribution with `df` degrees of freedom (Wilson–Hilferty).
    fn chi_square_999(df: f64) -> f64 {
        let z = 3.090_232;
        let a = 2.0 / (9.0 * df);
        df * (1.0 - a + z * a.sqrt()).powi(3)
    }

    fn chi_square(observed: &[u64], expected: &[f64]) -> f64 {
        observed
            .iter()
            .zip(expected)
            .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
            .sum()
    }

    /// The pairs of one sentence of `n` distinct ids `0..n` when position i draws window `b[i]`.
    fn pairs_for(b: &[usize]) -> Vec<(u32, u32)> {
        let n = b.len();
        let mut out = Vec::new();
        for (i, &bi) in b.iter().enumerate() {
            for j in i.saturating_sub(bi)..=(i + bi).min(n - 1) {
                if j != i {
                    out.push((i as u32, j as u32));
                }
            }
        }
        out
    }

    #[test]
    fn every_window_combination_is_equally_likely() {
        // Sentence of 4 distinct words, window 2: each position draws b in {1, 2}, 16 outcomes, all different.
        let (n, window) = (4usize, 2usize);
        let outcomes: Vec<Vec<(u32, u32)>> = (0..1 << n)
            .map(|mask: usize| pairs_for(&(0..n).map(|i| 1 + (mask >> i & 1)).collect::<Vec<_>>()))
            .collect();
        let c = corpus(n, vec![(0..n as u32).collect()]);
        let seeds = 8000u64;
        let mut seen = vec![0u64; outcomes.len()];
        for seed in 0..seeds {
            let (t, x) = skipgram_pairs(&c, window, 0.0, seed).unwrap();
            let pairs: Vec<(u32, u32)> = t.into_iter().zip(x).collect();
            let k = outcomes
                .iter()
                .position(|o| *o == pairs)
                .expect("an enumerated outcome");
            seen[k] += 1;
        }
        let expected = vec![seeds as f64 / outcomes.len() as f64; outcomes.len()];
        let chi2 = chi_square(&seen, &expected);
        assert!(chi2 < chi_square_999(15.0), "chi-square {chi2}: {seen:?}");
    }

    #[test]
    fn pairs_per_position_and_per_distance_have_the_expected_counts() {
        // 3000 copies of a 9-word sentence (word i at position i), window 4, no subsampling.
        let (n, w, copies) = (9usize, 4usize, 3000usize);
        let c = corpus(n, vec![(0..n as u32).collect(); copies]);
        let (targets, contexts) = skipgram_pairs(&c, w, 0.0, 7).unwrap();
        assert_eq!(targets.len(), contexts.len());
        let mut by_position = vec![0u64; n];
        let mut by_distance = vec![0u64; n];
        for (&t, &x) in targets.iter().zip(&contexts) {
            by_position[t as usize] += 1;
            by_distance[(t as i64 - x as i64).unsigned_abs() as usize] += 1;
        }
        assert_eq!(by_distance[0], 0);
        assert!(by_distance[w + 1..].iter().all(|&k| k == 0));
        // Position i with window b has min(b, i) + min(b, n-1-i) neighbours; b is uniform on 1..=w.
        for (i, &got) in by_position.iter().enumerate() {
            let k: Vec<f64> = (1..=w).map(|b| (b.min(i) + b.min(n - 1 - i)) as f64).collect();
            let mean = k.iter().sum::<f64>() / w as f64;
            let var = k.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / w as f64;
            let (expected, sd) = (copies as f64 * mean, (copies as f64 * var).sqrt());
            let got = got as f64;
            assert!(
                (got - expected).abs() <= 4.0 * sd,
                "position {i}: {got} pairs, expected {expected} ± {sd}"
            );
        }
        // Distance d: each position with c neighbours at distance d (c in {0, 1, 2}) adds c with probability
        // p = (w - d + 1)/w (its window reaches d); positions are independent.
        for (d, &got) in by_distance.iter().enumerate().take(w + 1).skip(1) {
            let p = (w - d + 1) as f64 / w as f64;
            let reach: Vec<f64> = (0..n)
                .map(|i| (usize::from(i >= d) + usize::from(i + d < n)) as f64)
                .collect();
            let expected = copies as f64 * p * reach.iter().sum::<f64>();
            let sd = (copies as f64 * p * (1.0 - p) * reach.iter().map(|c| c * c).sum::<f64>()).sqrt();
            let got = got as f64;
            if d == 1 {
                assert_eq!(got, expected, "every window reaches distance 1");
            } else {
                assert!(
                    (got - expected).abs() <= 4.0 * sd,
                    "distance {d}: {got}, expected {expected} ± {sd}"
                );
            }
        }
    }

    #[test]
    fn sentences_are_never_crossed() {
        // Sentences alternate between words 0..5 and 5..10; some are one word long.
        let sentences: Vec<Vec<u32>> = (0..400)
            .map(|s| {
                let base = if s % 2 == 0 { 0 } else { 5 };
                (0..1 + s % 5).map(|k| base + k as u32).collect()
            })
            .collect();
        let c = corpus(10, sentences);
        let (t, x) = skipgram_pairs(&c, 10, 0.0, 1).unwrap();
        assert!(!t.is_empty());
        assert!(t.iter().zip(&x).all(|(&a, &b)| (a < 5) == (b < 5) && a != b));
    }

    #[test]
    fn subsampling_drops_frequent_words_at_the_tools_rate() {
        // "the w_k" 20,000 times and "of w_k" 4,000 times, over 1,000 rare words w_k (24 times each, always kept);
        // window 1, so each kept "the" or "of" is the target of exactly one pair (with its always-kept neighbour).
        let (the, of) = (1000u32, 1001u32);
        let mut sentences = Vec::new();
        for s in 0..24_000u32 {
            sentences.push(vec![if s < 20_000 { the } else { of }, s % 1000]);
        }
        let c = corpus(1002, sentences);
        let total = c.len_tokens_in_vocab();
        assert_eq!(total, 48_000);
        let t = 1e-3;
        // t·T = 48: keep "the" (20,000) with (sqrt(20000/48) + 1)·48/20000, "of" with (sqrt(4000/48) + 1)·48/4000.
        let p_the = keep_probability(20_000, total, t);
        let p_of = keep_probability(4_000, total, t);
        assert!((p_the - ((20_000f64 / 48.0).sqrt() + 1.0) * 48.0 / 20_000.0).abs() < 1e-15);
        assert!(
            (p_the - 0.051_389).abs() < 1e-5 && (p_of - 0.121_546).abs() < 1e-5,
            "{p_the} {p_of}"
        );
        assert_eq!(keep_probability(24, total, t), 1.0);
        assert_eq!(keep_probability(20_000, total, 0.0), 1.0);
        for seed in [3, 4] {
            let (targets, contexts) = skipgram_pairs(&c, 1, t, seed).unwrap();
            for (word, n, p) in [(the, 20_000f64, p_the), (of, 4_000f64, p_of)] {
                let kept = targets.iter().filter(|&&w| w == word).count() as f64;
                let (mean, sd) = (n * p, (n * p * (1.0 - p)).sqrt());
                assert!(
                    (kept - mean).abs() <= 4.0 * sd,
                    "word {word}: kept {kept}, expected {mean} ± {sd}"
                );
                // Its neighbour pairs with it back.
                assert_eq!(contexts.iter().filter(|&&w| w == word).count() as f64, kept);
            }
            // The rare words are all kept: every pair is (frequent, rare) or (rare, frequent).
            assert_eq!(targets.len() % 2, 0);
        }
    }

    #[test]
    fn same_seed_same_pairs() {
        let c = Corpus::from_texts(["a b c d e f a b", "c d e a", "f f a b c"], true, 1, None).unwrap();
        let a = skipgram_pairs(&c, 3, 0.1, 42).unwrap();
        assert_eq!(a, skipgram_pairs(&c, 3, 0.1, 42).unwrap());
        let differ = (43..53).any(|seed| skipgram_pairs(&c, 3, 0.1, seed).unwrap() != a);
        assert!(differ);
    }

    #[test]
    fn pair_errors() {
        let c = corpus(3, vec![vec![0, 1, 2]]);
        assert_eq!(
            skipgram_pairs(&c, 0, 0.0, 1).unwrap_err().location.as_deref(),
            Some("window")
        );
        for bad in [-1e-5, f64::NAN, f64::INFINITY] {
            assert_eq!(
                skipgram_pairs(&c, 2, bad, 1).unwrap_err().location.as_deref(),
                Some("subsample")
            );
        }
        let bad = Corpus {
            sentences: vec![vec![0, 7]],
            ..c
        };
        assert!(
            skipgram_pairs(&bad, 2, 0.0, 1)
                .unwrap_err()
                .message
                .contains("word id 7")
        );
    }

    /// Each word's share of the alias table: a column gives its word `threshold` and its alias the rest.
    fn table_shares(s: &NoiseSampler, n: usize) -> Vec<f64> {
        let m = s.words.len() as f64;
        let mut share = vec![0.0; n];
        for k in 0..s.words.len() {
            share[s.words[k] as usize] += s.threshold[k] / m;
            share[s.alias[k] as usize] += (1.0 - s.threshold[k]) / m;
        }
        share
    }

    #[test]
    fn the_alias_table_holds_the_exact_probabilities() {
        let counts: Vec<u64> = (1..=500u64).map(|r| 1_000_000 / r).chain([0, 3, 0]).collect();
        let s = NoiseSampler::new(&counts, 0.75).unwrap();
        let total: f64 = counts.iter().map(|&c| (c as f64).powf(0.75)).sum();
        for (i, &c) in counts.iter().enumerate() {
            let p = if c == 0 { 0.0 } else { (c as f64).powf(0.75) / total };
            assert!((s.probability(i as u32) - p).abs() < 1e-15, "word {i}");
        }
        for (i, share) in table_shares(&s, counts.len()).into_iter().enumerate() {
            assert!((share - s.probability(i as u32)).abs() < 1e-12, "word {i}: {share}");
        }
        assert_eq!(s.probability(10_000), 0.0);
        let sum: f64 = (0..counts.len() as u32).map(|i| s.probability(i)).sum();
        assert!((sum - 1.0).abs() < 1e-12);
    }

    #[test]
    fn draws_follow_the_probabilities() {
        let counts: Vec<u64> = vec![100, 50, 10, 1, 0, 7, 2000, 1];
        for power in [0.75, 1.0, 0.0] {
            let s = NoiseSampler::new(&counts, power).unwrap();
            let mut rng = seeded_rng(b"test\0\0\0\0", 5, 0);
            let draws = 400_000usize;
            let mut out = vec![0u32; draws];
            s.fill(&mut out, &mut rng);
            let mut seen = vec![0u64; counts.len()];
            for &w in &out {
                seen[w as usize] += 1;
            }
            assert_eq!(seen[4], 0, "a word of count 0 is never drawn");
            let live: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] > 0).collect();
            let observed: Vec<u64> = live.iter().map(|&i| seen[i]).collect();
            let expected: Vec<f64> = live.iter().map(|&i| draws as f64 * s.probability(i as u32)).collect();
            let chi2 = chi_square(&observed, &expected);
            let df = (live.len() - 1) as f64;
            assert!(chi2 < chi_square_999(df), "power {power}: chi-square {chi2} on {df} df");
        }
        // A Zipf vocabulary of 5,000 words, with sample().
        let counts: Vec<u64> = (1..=5000u64).map(|r| 10_000_000 / r).collect();
        let s = NoiseSampler::new(&counts, 0.75).unwrap();
        let mut rng = seeded_rng(b"test\0\0\0\0", 6, 0);
        let mut seen = vec![0u64; counts.len()];
        let draws = 2_000_000;
        for _ in 0..draws {
            seen[s.sample(&mut rng) as usize] += 1;
        }
        let expected: Vec<f64> = (0..counts.len())
            .map(|i| draws as f64 * s.probability(i as u32))
            .collect();
        let chi2 = chi_square(&seen, &expected);
        assert!(chi2 < chi_square_999(4999.0), "chi-square {chi2} on 4999 df");
    }

    #[test]
    fn sampler_errors() {
        assert!(NoiseSampler::new(&[], 0.75).is_err());
        assert!(
            NoiseSampler::new(&[0, 0], 0.75)
                .unwrap_err()
                .message
                .contains("every one of the 2")
        );
        for bad in [f64::NAN, f64::INFINITY] {
            assert_eq!(
                NoiseSampler::new(&[1, 2], bad).unwrap_err().location.as_deref(),
                Some("power")
            );
        }
        assert!(
            NoiseSampler::new(&[10, 2], 1e6)
                .unwrap_err()
                .message
                .contains("overflow")
        );
        // One word: always that word.
        let s = NoiseSampler::new(&[0, 5], 0.75).unwrap();
        let mut rng = seeded_rng(b"test\0\0\0\0", 1, 0);
        assert!((0..100).all(|_| s.sample(&mut rng) == 1));
    }

    /// Pairs and negatives for the State of the Union addresses (`GRAFT_SOTU_DIR`, else /tmp/sotu/package/data), when
    /// present: how long the data side of a word2vec epoch takes.
    #[test]
    fn real_corpus_pairs_and_negatives_quickly() {
        use crate::text::CorpusSpec;
        use std::time::Instant;
        let root = std::env::var_os("GRAFT_SOTU_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/tmp/sotu/package/data".into());
        if !root.is_dir() {
            eprintln!("skipped: {} is not there", root.display());
            return;
        }
        let mut spec = CorpusSpec::new(&root);
        spec.extensions = Some(vec!["txt".into()]);
        let c = Corpus::read(&spec, 5, None).unwrap();
        let started = Instant::now();
        let (targets, _) = skipgram_pairs(&c, 5, 1e-3, 1).unwrap();
        let pairs = started.elapsed();
        let started = Instant::now();
        let noise = NoiseSampler::new(&c.counts, 0.75).unwrap();
        let built = started.elapsed();
        let mut out = vec![0u32; 5 * targets.len()];
        let started = Instant::now();
        noise.fill(&mut out, &mut seeded_rng(b"negative", 1, 0));
        let drawn = started.elapsed();
        eprintln!(
            "sotu: {} in-vocabulary tokens -> {} pairs (window 5, subsample 1e-3) in {:.0} ms; noise table for {} \
             words in {:.1} ms, {} negatives in {:.0} ms",
            c.len_tokens_in_vocab(),
            targets.len(),
            pairs.as_secs_f64() * 1e3,
            c.words.len(),
            built.as_secs_f64() * 1e3,
            out.len(),
            drawn.as_secs_f64() * 1e3
        );
        assert!(targets.len() > 1_000_000);
    }
}
