//! Running a `[word2vec]` experiment: the corpus of `[data] corpus` becomes a vocabulary and (word, context)
//! pairs (frequent words subsampled, each word's window drawn from 1..=window, as the word2vec tool does), a
//! skip-gram model with negative sampling trains on them with the loop every run has (schedule, progress,
//! checkpoints, history), and the run directory gets the vectors as `vectors.bin` in the word2vec binary format —
//! what an `embedding` layer's `pretrained` option, gensim and the word2vec tools read — and, when `[word2vec]`
//! names them, the analogy accuracy and similarity correlation in `metrics.json`'s `test`.
//!
//! The pairs are drawn once per run (seeded); every epoch visits them in a new order with new noise words.

use std::path::Path;

use burn::module::Module;
use serde_json::{Map, Value as Json, json};

use crate::data::prepare::Preprocessor;
use crate::data::text::corpus::{Corpus, CorpusSpec};
use crate::data::text::skipgram::skipgram_pairs;
use crate::data::wordvec::WordVectors;
use crate::data::{Array, Dataset};
use crate::error::{Context, Error, Result};
use crate::experiment::run::{RunOptions, RunResult, finish_run, record_run, run_callbacks, train_run};
use crate::experiment::spec::{ExperimentSpec, Word2VecSpec};
use crate::infer::manifest::Manifest;
use crate::model::Graph;
use crate::train::skipgram::{SkipGram, skipgram_model, word_vectors};

/// The vectors' file in the run directory.
pub const VECTORS_FILE: &str = "vectors.bin";

/// Analogy questions are answered among this many most frequent words (gensim's default `restrict_vocab`).
pub const ANALOGY_VOCABULARY: usize = 300_000;

pub fn run_word2vec(exp: &ExperimentSpec, w2v: &Word2VecSpec, opts: &RunOptions) -> Result<RunResult> {
    // The benchmark files are checked before anything trains, so a wrong path is not found after the run.
    let analogies = w2v.analogies.as_ref().map(|p| exp.resolve(p));
    let similarity = w2v.similarity.as_ref().map(|p| exp.resolve(p));
    for (key, path) in [("analogies", &analogies), ("similarity", &similarity)] {
        if let Some(p) = path
            && !p.is_file()
        {
            return Err(Error::new("no such file").in_file(p).at(format!("word2vec.{key}")));
        }
    }
    let (_lock, from) = match crate::experiment::run_dir::open_run_dir(exp, opts)? {
        crate::experiment::run_dir::Opened::Finished(done) => return Ok(done),
        crate::experiment::run_dir::Opened::Ready(lock, from) => (lock, from),
    };
    let corpus = read_corpus(exp, w2v)?;
    let (targets, contexts) = skipgram_pairs(&corpus, w2v.window, w2v.subsample, opts.seed).at("word2vec")?;
    if targets.is_empty() {
        return Err(Error::new(format!(
            "the corpus gives no (word, context) pair: no sentence keeps two words of the vocabulary ({} words with \
             min_count = {}); give more text or lower min_count",
            corpus.words.len(),
            w2v.min_count
        ))
        .at("data.corpus"));
    }
    if !opts.quiet {
        eprintln!(
            "corpus: {} file(s), {} tokens; vocabulary {} words (min_count {}); {} training pairs (window {}, \
             subsample {})",
            corpus.files,
            corpus.tokens,
            corpus.words.len(),
            w2v.min_count,
            targets.len(),
            w2v.window,
            w2v.subsample
        );
    }
    let pairs = pair_dataset(&targets, &contexts)?;
    let device = opts.device.clone().autodiff();
    device.seed(opts.seed);
    let model = Graph::build(&skipgram_model(corpus.words.len(), w2v.dim, w2v.negatives), &device)?;
    let fit = exp.train.fit_config();
    let mut step = SkipGram::new(model, &corpus.counts, &fit, opts.seed)?;
    record_run(exp, opts)?;
    let manifest = Manifest::for_objective(&step.model, &Preprocessor::None, &exp.train.loss, "word2vec", vec![]);
    manifest.write(&opts.out)?;
    let (mut callbacks, checkpoint) = run_callbacks(exp, opts, false)?;
    callbacks.push(Box::new(checkpoint));
    let history = train_run(&fit, opts, &mut callbacks, &mut step, &pairs, None, from)?;

    let model = step.model.valid();
    let (values, dim) = word_vectors(&model)?;
    let vectors = WordVectors::new(corpus.words.clone(), dim, values)?;
    vectors.write_binary(&opts.out.join(VECTORS_FILE))?;
    let test = evaluate_vectors(&vectors, analogies.as_deref(), similarity.as_deref())?;
    let mut extra = Map::new();
    extra.insert(
        "corpus".into(),
        json!({
            "files": corpus.files,
            "tokens": corpus.tokens,
            "vocabulary": corpus.words.len(),
            "pairs": targets.len(),
        }),
    );
    finish_run(exp, opts, &model, &manifest, history, test, extra, &[])
}

/// The model a `[word2vec]` experiment trains, sized by its corpus' vocabulary (read for it), for `graft summary`.
pub fn word2vec_model(exp: &ExperimentSpec, w2v: &Word2VecSpec) -> Result<crate::model::ModelSpec> {
    let corpus = read_corpus(exp, w2v)?;
    Ok(skipgram_model(corpus.words.len(), w2v.dim, w2v.negatives))
}

fn read_corpus(exp: &ExperimentSpec, w2v: &Word2VecSpec) -> Result<Corpus> {
    let spec = exp
        .data
        .corpus
        .as_ref()
        .ok_or_else(|| Error::new("missing `corpus`").at("data"))?;
    let spec = CorpusSpec {
        path: exp.resolve(&spec.path),
        ..spec.clone()
    };
    Corpus::read(&spec, w2v.min_count, w2v.max_vocab).at("data.corpus")
}

/// The pairs as a data set: input `target` (the word's id, `[1]`) and input `context` (the context word's id).
fn pair_dataset(targets: &[u32], contexts: &[u32]) -> Result<Dataset> {
    let column = |ids: &[u32]| Array::new(vec![ids.len(), 1], ids.iter().map(|&id| id as f32).collect());
    let mut data = Dataset::new(column(targets)?, None)?;
    data.extra_inputs = vec![column(contexts)?];
    data.input_names = vec!["target".into(), "context".into()];
    Ok(data)
}

/// Scores `vectors` on analogy questions (accuracy overall, semantic, syntactic, per section, and how many
/// questions had every word in the vocabulary) and on word pairs with human similarity scores (Spearman and
/// Pearson correlation, and the pairs covered), as `metrics.json`'s `test` holds them.
pub fn evaluate_vectors(
    vectors: &WordVectors,
    analogies: Option<&Path>,
    similarity: Option<&Path>,
) -> Result<Map<String, Json>> {
    let mut m = Map::new();
    let ratio = |a: usize, b: usize| if b == 0 { Json::Null } else { json!(a as f64 / b as f64) };
    if let Some(path) = analogies {
        let score = vectors.evaluate_analogies(path, ANALOGY_VOCABULARY)?;
        m.insert("analogy_accuracy".into(), ratio(score.correct, score.evaluated));
        m.insert(
            "analogy_semantic_accuracy".into(),
            ratio(score.semantic.0, score.semantic.1),
        );
        m.insert(
            "analogy_syntactic_accuracy".into(),
            ratio(score.syntactic.0, score.syntactic.1),
        );
        m.insert("analogy_coverage".into(), ratio(score.evaluated, score.questions));
        let sections: Map<String, Json> = score
            .sections
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    json!({ "correct": s.correct, "evaluated": s.evaluated, "questions": s.questions }),
                )
            })
            .collect();
        m.insert("analogy_sections".into(), Json::Object(sections));
    }
    if let Some(path) = similarity {
        let score = vectors.evaluate_similarity(path)?;
        m.insert("similarity_spearman".into(), json!(score.spearman));
        m.insert("similarity_pearson".into(), json!(score.pearson));
        m.insert("similarity_coverage".into(), ratio(score.evaluated, score.pairs));
    }
    Ok(m)
}

/// `graft word-vectors`: the vectors of a word-vector file (or of a word2vec run directory's `vectors.bin`) scored
/// on analogy questions and similarity pairs, and the `top` nearest words of each word of `nearest` by cosine
/// similarity, as JSON.
pub fn word_vectors_report(
    path: &Path,
    analogies: Option<&Path>,
    similarity: Option<&Path>,
    nearest: &[String],
    top: usize,
) -> Result<Json> {
    let file = if path.is_dir() {
        path.join(VECTORS_FILE)
    } else {
        path.to_path_buf()
    };
    let vectors = WordVectors::read(&file, None)?;
    let mut report = Map::new();
    report.insert("words".into(), json!(vectors.len()));
    report.insert("dim".into(), json!(vectors.dim));
    report.extend(evaluate_vectors(&vectors, analogies, similarity)?);
    if !nearest.is_empty() {
        let mut found = Map::new();
        for word in nearest {
            let neighbours = nearest_words(&vectors, word, top).in_file(&file).at("--nearest")?;
            found.insert(
                word.clone(),
                Json::Array(neighbours.into_iter().map(|(w, c)| json!([w, c])).collect()),
            );
        }
        report.insert("nearest".into(), Json::Object(found));
    }
    Ok(Json::Object(report))
}

/// The `top` words whose vectors have the highest cosine similarity with `word`'s, most similar first.
pub fn nearest_words(vectors: &WordVectors, word: &str, top: usize) -> Result<Vec<(String, f64)>> {
    let Some(query) = vectors.index_of(word) else {
        return Err(Error::new(format!(
            "no vector for \"{word}\"{}",
            graft_data::suggest::hint(word, vectors.words.iter().map(String::as_str))
        )));
    };
    let dim = vectors.dim;
    let norm = |row: &[f32]| row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
    let q = &vectors.values[query * dim..(query + 1) * dim];
    let q_norm = norm(q);
    let mut scored: Vec<(usize, f64)> = vectors
        .values
        .chunks_exact(dim)
        .enumerate()
        .filter(|(i, _)| *i != query)
        .map(|(i, row)| {
            let dot: f64 = row.iter().zip(q).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
            let norms = norm(row) * q_norm;
            (i, if norms > 0.0 { dot / norms } else { 0.0 })
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(scored
        .into_iter()
        .take(top)
        .map(|(i, c)| (vectors.words[i].clone(), c))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::text::corpus::CorpusSpec;
    use crate::experiment::run::run_experiment;
    use crate::train::config::FitConfig;
    use crate::train::optim::OptimizerSpec;

    #[test]
    fn an_experiment_built_in_rust_writes_vectors_that_read_back() {
        let dir = std::env::temp_dir().join(format!("graft-word2vec-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let text: String = (0..1000)
            .map(|i| {
                if i % 2 == 0 {
                    "red green blue red green\n"
                } else {
                    "one two three one two\n"
                }
            })
            .collect();
        std::fs::write(dir.join("corpus.txt"), text).unwrap();
        let w2v = Word2VecSpec {
            dim: 8,
            window: 2,
            min_count: 1,
            subsample: 0.0,
            ..Word2VecSpec::default()
        };
        let fit = FitConfig::default()
            .with_epochs(3)
            .with_batch_size(64)
            .with_optimizer(OptimizerSpec::adam(0.02));
        let exp = ExperimentSpec::word2vec(CorpusSpec::new(dir.join("corpus.txt")), w2v, fit);
        let out = dir.join("run");
        let opts = RunOptions {
            seed: 42,
            quiet: true,
            device: burn::prelude::Device::default(),
            out: out.clone(),
            overwrite: false,
            test_rows: None,
            resume: false,
        };
        let result = run_experiment(&exp, &opts).unwrap();
        assert_eq!(result.history.len(), 3);
        let vectors = WordVectors::read(&out.join(VECTORS_FILE), None).unwrap();
        assert_eq!((vectors.len(), vectors.dim), (6, 8));
        // Words of one sentence type end up nearer each other than the other type's.
        let near = nearest_words(&vectors, "red", 2).unwrap();
        assert!(near.iter().all(|(w, _)| w == "green" || w == "blue"), "{near:?}");
        assert!(near[0].1 >= near[1].1);
        let err = nearest_words(&vectors, "gren", 2).unwrap_err().to_string();
        assert!(err.contains("green"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
