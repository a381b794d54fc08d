//! `graft fuzz`: every reader of user files fed mutated inputs, to find what makes one panic, hang or allocate
//! without bound instead of returning a one-line error. It runs on the stable toolchain with no fuzzing engine: each
//! target starts from small valid files made here (by graft's own writers, or shipped fixtures), and a seeded
//! mutator (bit flips, interesting bytes and integers, insertions, deletions, duplications, truncation, splices)
//! derives inputs from them, up to 64 KiB each.
//!
//! - Panics: each input runs under `catch_unwind` with a silent panic hook; the input and the message are saved.
//! - Hangs: a watchdog thread ends the process when one input runs longer than [`HANG_SECONDS`]; the input is on
//!   disk already (each is written to `<crashes>/current-<target>` before it runs).
//! - Unbounded allocations: while fuzzing, the CLI's allocator ([`crate::alloc_guard`]) refuses any single
//!   allocation above [`ALLOCATION_LIMIT`] — for inputs this small, a size taken from the file's header unchecked —
//!   which aborts the process; the input is on disk as for a hang, and the process's failure is the finding.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde_json::json;

use graft::error::{Context, Error, Result};

/// The largest input tried.
const MAX_INPUT: usize = 64 * 1024;
/// One input running longer than this is a hang.
pub const HANG_SECONDS: u64 = 10;
/// The largest single allocation a reader may make while fuzzing.
pub const ALLOCATION_LIMIT: usize = 1 << 30;

/// The targets, one per reader.
pub const TARGETS: [&str; 14] = [
    "spec",
    "checkpoint",
    "safetensors",
    "pt",
    "idx",
    "npy",
    "csv",
    "word2vec",
    "hf_tokenizer",
    "preprocess",
    "corpus",
    "benchmarks",
    "resume",
    "model_toml",
];

/// Runs `which` (a target or `all`) for `seconds` each; prints one JSON line per target. Returns whether every
/// target ran clean.
pub fn run(which: &str, seconds: f64, seed: u64, crashes: &Path) -> Result<bool> {
    let targets: Vec<&str> = if which == "all" {
        TARGETS.to_vec()
    } else if TARGETS.contains(&which) {
        vec![which]
    } else {
        return Err(Error::new(format!(
            "unknown fuzz target `{which}`{}; targets: all, {}",
            graft::data::suggest::hint(which, TARGETS),
            TARGETS.join(", ")
        )));
    };
    std::fs::create_dir_all(crashes).in_file(crashes)?;
    let work = crashes.join(format!("work-{}", std::process::id()));
    std::fs::create_dir_all(&work).in_file(&work)?;
    start_watchdog();
    // Readers' panics are findings, reported as such: the default hook's message and backtrace would only be noise.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut clean = true;
    for target in targets {
        let report = fuzz_target(target, seconds, seed, crashes, &work)?;
        clean &= report["findings"].as_array().is_some_and(Vec::is_empty);
        println!("{report}");
    }
    std::panic::set_hook(default_hook);
    let _ = std::fs::remove_dir_all(&work);
    Ok(clean)
}

fn fuzz_target(target: &str, seconds: f64, seed: u64, crashes: &Path, work: &Path) -> Result<serde_json::Value> {
    let case = Case::new(target, &work.join(target))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv(target));
    let current = crashes.join(format!("current-{target}"));
    let started = Instant::now();
    let (mut executions, mut errors) = (0u64, 0u64);
    let mut findings = vec![];
    while started.elapsed().as_secs_f64() < seconds || executions == 0 {
        let input = mutate(&case.seeds, &mut rng);
        std::fs::write(&current, &input).in_file(&current)?;
        case.write_input(&input)?;
        BUSY_SINCE.store(now_ms(), Ordering::SeqCst);
        crate::alloc_guard::enable(ALLOCATION_LIMIT);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case.read()));
        crate::alloc_guard::disable();
        BUSY_SINCE.store(0, Ordering::SeqCst);
        executions += 1;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => errors += 1,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into());
                let saved = crashes.join(format!("{target}-{}.bin", findings.len() + 1));
                std::fs::write(&saved, &input).in_file(&saved)?;
                std::fs::write(saved.with_extension("txt"), &message).in_file(&saved)?;
                findings.push(json!({"kind": "panic", "message": message, "input": saved}));
            }
        }
    }
    let _ = std::fs::remove_file(&current);
    Ok(json!({
        "target": target,
        "seconds": started.elapsed().as_secs_f64(),
        "executions": executions,
        "errors": errors,
        "findings": findings,
    }))
}

static BUSY_SINCE: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Ends the process when one input has run longer than [`HANG_SECONDS`] (it cannot be interrupted in its thread).
fn start_watchdog() {
    let _ = now_ms();
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let since = BUSY_SINCE.load(Ordering::SeqCst);
            if since != 0 && now_ms().saturating_sub(since) > HANG_SECONDS * 1000 {
                eprintln!(
                    "error: an input ran longer than {HANG_SECONDS} s (a hang); it is the current-* file in the crashes folder"
                );
                std::process::exit(3);
            }
        }
    });
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// One mutated input: a seed with 1–8 stacked mutations.
pub fn mutate(seeds: &[Vec<u8>], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut data = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..=8) {
        let len = data.len();
        match rng.random_range(0..9) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                const BYTES: [u8; 16] = [
                    0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'-', b'"', b'\n', b',', b'[', b'{', b' ', b'e', b'.',
                ];
                let i = rng.random_range(0..len);
                data[i] = BYTES[rng.random_range(0..BYTES.len())];
            }
            2 if len >= 8 => {
                const INTS: [u64; 9] = [
                    0,
                    1,
                    u64::MAX,
                    0x7fff_ffff,
                    0xffff_ffff,
                    0x8000_0000,
                    1 << 40,
                    255,
                    65536,
                ];
                let width = [2usize, 4, 8][rng.random_range(0..3)];
                let i = rng.random_range(0..=len - width);
                let v = INTS[rng.random_range(0..INTS.len())];
                let bytes = if rng.random_bool(0.5) {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                let from = if rng.random_bool(0.5) { 0 } else { 8 - width };
                data[i..i + width].copy_from_slice(&bytes[from..from + width]);
            }
            3 => {
                let at = rng.random_range(0..=len);
                let n = rng.random_range(1..=16);
                let fill: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                data.splice(at..at, fill);
            }
            4 if len > 0 => {
                let at = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - at).min(64));
                data.drain(at..at + n);
            }
            5 if len > 0 => {
                let at = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - at).min(256));
                let chunk = data[at..at + n].to_vec();
                let to = rng.random_range(0..=len);
                data.splice(to..to, chunk);
            }
            6 if len > 0 => data.truncate(rng.random_range(0..len)),
            7 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                if !other.is_empty() && len > 0 {
                    let cut = rng.random_range(0..len);
                    let from = rng.random_range(0..other.len());
                    data.truncate(cut);
                    data.extend_from_slice(&other[from..]);
                }
            }
            _ if len > 0 => {
                // A decimal number overwritten by another: sizes and counts in the text formats.
                let i = rng.random_range(0..len);
                let digits = [
                    "0",
                    "-1",
                    "99999999999",
                    "4294967296",
                    "1e308",
                    "nan",
                    "18446744073709551616",
                ];
                let d = digits[rng.random_range(0..digits.len())].as_bytes();
                let end = (i + d.len()).min(len);
                data.splice(i..end, d.iter().copied());
            }
            _ => data.push(rng.random()),
        }
    }
    data.truncate(MAX_INPUT);
    data
}

/// A target: its seed inputs, where an input is written, and the reader run on it.
struct Case {
    target: String,
    dir: PathBuf,
    seeds: Vec<Vec<u8>>,
}

impl Case {
    fn new(target: &str, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).in_file(dir)?;
        let seeds = seeds(target, dir)?;
        Ok(Case {
            target: target.to_string(),
            dir: dir.to_path_buf(),
            seeds,
        })
    }

    /// The file the reader gets.
    fn input_path(&self) -> PathBuf {
        match self.target.as_str() {
            "checkpoint" => self.dir.join("run/model.safetensors"),
            "model_toml" => self.dir.join("run/model.toml"),
            "resume" => self.dir.join("checkpoints/resume-00001/state.json"),
            "safetensors" => self.dir.join("in.safetensors"),
            "pt" => self.dir.join("in.pt"),
            "npy" => self.dir.join("in.npy"),
            "csv" => self.dir.join("in.csv"),
            "hf_tokenizer" => self.dir.join("tokenizer.json"),
            "benchmarks" => self.dir.join("questions.txt"),
            _ => self.dir.join("in.bin"),
        }
    }

    fn write_input(&self, input: &[u8]) -> Result<()> {
        let path = self.input_path();
        std::fs::write(&path, input).in_file(&path)?;
        if self.target == "resume" {
            // A mutated state needs a manifest that accepts it, or only the checksum would ever be exercised.
            let dir = path.parent().unwrap_or(Path::new("."));
            graft::train::resume::rewrite_manifest(dir)?;
        }
        Ok(())
    }

    fn read(&self) -> Result<()> {
        let path = self.input_path();
        let device = burn::prelude::Device::default();
        match self.target.as_str() {
            "spec" => {
                let text = String::from_utf8_lossy(&std::fs::read(&path).in_file(&path)?).into_owned();
                graft::experiment::ExperimentSpec::from_toml_str(&text).map(|_| ())
            }
            "checkpoint" | "model_toml" => graft::model::io::load_model(&self.dir.join("run"), &device).map(|_| ()),
            "safetensors" => graft::model::io::read_safetensors(&path).map(|_| ()),
            "pt" => graft::model::io::read_pytorch(&path).map(|_| ()),
            "idx" => graft::data::idx::read_idx(&path).map(|_| ()),
            "npy" => {
                let a = graft::data::read_npy_f32(&path).map(|_| ());
                let b = graft::data::npy::read_npy_labels(&path).map(|_| ());
                a.and(b)
            }
            "csv" => {
                let spec: graft::data::table::CsvSpec =
                    toml::from_str(&format!("path = {:?}", path.display().to_string()))
                        .map_err(|e| Error::new(e.to_string()))?;
                graft::data::table::read_csv(&spec).map(|_| ())
            }
            "word2vec" => {
                use graft::data::wordvec::{WordVecFormat, WordVectors};
                let mut all = Ok(());
                for format in [
                    None,
                    Some(WordVecFormat::Word2VecBinary),
                    Some(WordVecFormat::Word2VecText),
                    Some(WordVecFormat::Glove),
                ] {
                    all = all.and(WordVectors::read(&path, format).map(|_| ()));
                }
                all
            }
            "hf_tokenizer" => graft::data::hf_tokenizer::PretrainedTokenizer::load(&path, 16).map(|_| ()),
            "preprocess" => {
                let text = String::from_utf8_lossy(&std::fs::read(&path).in_file(&path)?).into_owned();
                graft::infer::manifest::Manifest::from_json_str(&text, &path).map(|_| ())
            }
            "corpus" => {
                let spec = graft::data::text::corpus::CorpusSpec::new(&path);
                graft::data::text::corpus::Corpus::read(&spec, 1, None).map(|_| ())
            }
            "benchmarks" => {
                let vectors = benchmark_vectors()?;
                let a = vectors.evaluate_analogies(&path, 300_000).map(|_| ());
                let b = vectors.evaluate_similarity(&path).map(|_| ());
                a.and(b)
            }
            "resume" => graft::train::resume::find_checkpoint(&self.dir.join("checkpoints"), &mut vec![]).map(|_| ()),
            other => Err(Error::new(format!("no reader for `{other}`"))),
        }
    }
}

fn benchmark_vectors() -> Result<graft::data::wordvec::WordVectors> {
    let words: Vec<String> = ["king", "queen", "man", "woman", "paris", "france", "rome", "italy"]
        .map(String::from)
        .into();
    let values: Vec<f32> = (0..words.len() * 4)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
        .collect();
    graft::data::wordvec::WordVectors::new(words, 4, values)
}

/// Small valid inputs for `target`, made in `dir` (which also gets the files a reader needs besides its input).
fn seeds(target: &str, dir: &Path) -> Result<Vec<Vec<u8>>> {
    let read = |p: &Path| std::fs::read(p).in_file(p);
    Ok(match target {
        "spec" => [
            include_str!("../../../examples/digits.toml"),
            include_str!("../../../examples/digits-cvae.toml"),
            include_str!("../../../examples/adult-mlp.toml"),
            include_str!("../../../examples/multitask.toml"),
            include_str!("../../../examples/sotu-word2vec.toml"),
            include_str!("../../../examples/digits-wgan-gp.toml"),
        ]
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect(),
        "checkpoint" | "model_toml" | "safetensors" => {
            let run = dir.join("run");
            let spec = graft::model::ModelSpec::sequential(vec![4])
                .add_named("fc", graft::layers::LayerSpec::Dense(graft::layers::dense::DenseConfig::new(3)));
            let model = graft::model::Graph::build(&spec, &burn::prelude::Device::default())?;
            graft::model::io::save_model(&model, &run)?;
            match target {
                "model_toml" => vec![read(&run.join("model.toml"))?],
                _ => vec![read(&run.join("model.safetensors"))?],
            }
        }
        "pt" => vec![include_bytes!("../../graft/tests/fixtures/io/mlp.pt").to_vec()],
        "idx" => {
            let mut images = vec![0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3];
            images.extend((0..18).map(|i| i as u8 * 10));
            let labels = vec![0, 0, 0x08, 1, 0, 0, 0, 4, 1, 2, 3, 4];
            vec![images, labels]
        }
        "npy" => {
            let path = dir.join("seed.npy");
            let array = graft::data::Array::new(vec![3, 2], vec![0.5, 1.0, 2.0, 3.0, -1.0, 0.0])?;
            graft::data::write_npy_f32(&path, &array)?;
            vec![read(&path)?]
        }
        "csv" => vec![
            b"age,city,income\n39,Paris,>50K\n25,\"Rome, IT\",<=50K\n,Oslo,>50K\n".to_vec(),
            b"a;b;c\n1;2;3\n4;5;6\n".to_vec(),
        ],
        "word2vec" => {
            let vectors = benchmark_vectors()?;
            let (bin, txt) = (dir.join("seed.bin"), dir.join("seed.txt"));
            vectors.write_binary(&bin)?;
            vectors.write_text(&txt)?;
            let glove: Vec<u8> = read(&txt)?.splitn(2, |&b| b == b'\n').nth(1).unwrap_or_default().to_vec();
            vec![read(&bin)?, read(&txt)?, glove]
        }
        "hf_tokenizer" => vec![include_bytes!("../../graft/tests/fixtures/tiny-bert/tokenizer.json").to_vec()],
        "preprocess" => [
            include_str!("../../graft/tests/fixtures/preprocess-text.json"),
            include_str!("../../graft/tests/fixtures/preprocess-regression.json"),
            include_str!("../../graft/tests/fixtures/preprocess-multitask.json"),
        ]
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect(),
        "corpus" => vec![b"The king rules.\nA queen's crown, 1790 and 2016!\n\xe9t\xe9 caf\xc3\xa9\n".to_vec()],
        "benchmarks" => vec![
            b": capital-common-countries\nparis france rome italy\nking queen man woman\n: gram1\nman woman king queen\n"
                .to_vec(),
            b"# word1\tword2\tscore\nking\tqueen\t8.5\nman\twoman\t8.3\nparis\trome\t6.0\n".to_vec(),
        ],
        "resume" => {
            let checkpoints = dir.join("checkpoints");
            let history: Vec<serde_json::Map<String, serde_json::Value>> =
                vec![serde_json::from_str(r#"{"epoch": 1, "loss": 0.5, "lr": 0.001}"#).map_err(|e| Error::new(e.to_string()))?];
            graft::train::resume::write_checkpoint(&checkpoints, 1, None, &history, None, |d| {
                std::fs::write(d.join("weights.bin"), [1u8, 2, 3]).in_file(d)
            })?;
            vec![read(&checkpoints.join("resume-00001/state.json"))?]
        }
        _ => vec![b"x".to_vec()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_seeded_and_capped() {
        let seeds = vec![vec![7u8; 100], b"hello, world".to_vec()];
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..200).map(|_| mutate(&seeds, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let big = vec![vec![0u8; MAX_INPUT]];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert!((0..100).all(|_| mutate(&big, &mut rng).len() <= MAX_INPUT));
        // Mutations change the input (almost always).
        let changed = run(4).iter().filter(|m| !seeds.contains(m)).count();
        assert!(changed > 180, "{changed}");
    }
}
