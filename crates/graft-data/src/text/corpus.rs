//! A training corpus for word vectors: sentences of word ids over a vocabulary of the corpus's own frequent words,
//! read from a text file, a folder of text files or a column of a CSV file.
//!
//! Words are the word-level tokenizer's ([`super::TokenMode::Word`]: runs of letters, digits and apostrophes,
//! lowercased when asked), so vectors trained here look up the same tokens a `text` model's tokenizer produces.
//! Files are decoded as the labelled-text reader decodes them (bytes that are not UTF-8 replaced) and CSV files go
//! through the table reader (quoting, multi-line cells, encodings).
//!
//! Reading is one pass: each line is tokenized as it is read and each token counted in a hash map that holds every
//! distinct word once, the sentences kept as that map's ids; the vocabulary (words seen at least `min_count` times)
//! is chosen at the end and the ids renumbered, out-of-vocabulary tokens dropped from the sentences as the word2vec
//! tool drops them (so the window of a skip-gram spans the words that remain).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::{fmt, fs};

use serde::{Deserialize, Serialize};

use super::read::{collect_files, lossy};
use super::splitter::{Scratch, Splitter};
use super::tokenizer::FxMap;
use super::{MAX_EXACT_F32, TokenMode};
use crate::error::{Context, Error, Result};
use crate::suggest::hint;
use crate::table::{CsvSpec, read_csv};

/// Where a corpus comes from: `[data] corpus = { path = "...", column = "review", extensions = ["txt"],
/// lowercase = true }`.
///
/// `path` is read as a CSV file when its extension is `.csv` or `.tsv` (any case; `.tsv` is tab-separated) or when
/// `column` is given; as a folder of text files when it is a folder; as one text file otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSpec {
    /// A text file (each line one sentence), a folder of text files read recursively in sorted path order (each
    /// line of each file a sentence; hidden files/folders skipped), or a CSV file with a header (needs `column`;
    /// each cell one sentence).
    pub path: PathBuf,
    /// For a CSV: the name of the column holding the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Folder: only files with these extensions (`"txt"` or `".txt"`, any case), as TextSpec's `extensions`; by
    /// default every regular file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<String>>,
    /// Lowercase the text before splitting it into words.
    #[serde(default = "super::yes")]
    pub lowercase: bool,
}

impl CorpusSpec {
    /// A spec for `path` with the defaults: no column, every file, lowercased.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CorpusSpec {
            path: path.into(),
            column: None,
            extensions: None,
            lowercase: true,
        }
    }
}

/// A corpus as word ids: the vocabulary, its counts and the sentences.
#[derive(Clone, PartialEq)]
pub struct Corpus {
    /// The vocabulary: words seen at least `min_count` times, most frequent first, ties alphabetical, at most
    /// `max_vocab`.
    pub words: Vec<String>,
    /// Occurrences of each vocabulary word in the corpus.
    pub counts: Vec<u64>,
    /// Each sentence as vocabulary ids, out-of-vocabulary tokens removed (as the word2vec tool does); empty
    /// sentences dropped.
    pub sentences: Vec<Vec<u32>>,
    /// Tokens read, in and out of the vocabulary.
    pub tokens: u64,
    /// Files read.
    pub files: usize,
}

impl fmt::Debug for Corpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.words.len().min(10);
        f.debug_struct("Corpus")
            .field("vocab_size", &self.words.len())
            .field("sentences", &self.sentences.len())
            .field("tokens", &self.tokens)
            .field("tokens_in_vocab", &self.len_tokens_in_vocab())
            .field("files", &self.files)
            .field("first_words", &&self.words[..shown])
            .finish()
    }
}

impl Corpus {
    /// Reads the corpus `spec` names and keeps as vocabulary the words seen at least `min_count` times (at most
    /// `max_vocab` of them, the most frequent). Errors name the file: a missing path, a folder without matching
    /// files, a CSV without `column` or without that column, a vocabulary of fewer than 2 words.
    pub fn read(spec: &CorpusSpec, min_count: usize, max_vocab: Option<usize>) -> Result<Corpus> {
        check_limits(min_count, max_vocab)?;
        let path = spec.path.as_path();
        let meta = fs::metadata(path).in_file(path)?;
        let mut counter = Counter::new(spec.lowercase);
        let files = if meta.is_dir() {
            if spec.column.is_some() {
                return Err(Error::new("`column` applies to a CSV file, but this is a folder").in_file(path));
            }
            let mut paths = Vec::new();
            collect_files(path, spec.extensions.as_deref(), &mut paths)?;
            if paths.is_empty() {
                let filter = match &spec.extensions {
                    Some(exts) => format!(" with extension {}", exts.join(" or ")),
                    None => String::new(),
                };
                return Err(Error::new(format!(
                    "the folder holds no files{filter} (hidden files and folders are skipped)"
                ))
                .in_file(path));
            }
            paths.sort();
            for file in &paths {
                read_lines(file, |line| counter.add(line))?;
            }
            paths.len()
        } else {
            if spec.extensions.is_some() {
                return Err(Error::new("`extensions` applies to a folder of texts, but this is a file").in_file(path));
            }
            match csv_delimiter(spec) {
                Some(delimiter) => read_column(path, spec.column.as_deref(), delimiter, &mut counter).in_file(path)?,
                None => read_lines(path, |line| counter.add(line))?,
            }
            1
        };
        counter.finish(min_count, max_vocab, files).in_file(path)
    }

    /// Builds a corpus from in-memory texts, each text one sentence (tests, and callers that already hold texts).
    pub fn from_texts<'a>(
        texts: impl IntoIterator<Item = &'a str>,
        lowercase: bool,
        min_count: usize,
        max_vocab: Option<usize>,
    ) -> Result<Corpus> {
        check_limits(min_count, max_vocab)?;
        let mut counter = Counter::new(lowercase);
        for text in texts {
            counter.add(text);
        }
        counter.finish(min_count, max_vocab, 0)
    }

    /// The number of in-vocabulary tokens: the sum of the sentence lengths (and of `counts`).
    pub fn len_tokens_in_vocab(&self) -> u64 {
        self.sentences.iter().map(|s| s.len() as u64).sum()
    }
}

/// Checks the vocabulary limits before any text is read, so a bad setting fails at once.
fn check_limits(min_count: usize, max_vocab: Option<usize>) -> Result<()> {
    if min_count == 0 {
        return Err(Error::new("min_count must be at least 1, found 0").at("min_count"));
    }
    match max_vocab {
        Some(n) if n < 2 => Err(Error::new(format!(
            "max_vocab must be at least 2 (skip-gram needs two words), found {n}"
        ))
        .at("max_vocab")),
        Some(n) if n > MAX_EXACT_F32 => Err(Error::new(format!(
            "max_vocab {n} is above {MAX_EXACT_F32}, the most word ids a float holds exactly"
        ))
        .at("max_vocab")),
        _ => Ok(()),
    }
}

/// The delimiter when `spec` names a CSV (see [`CorpusSpec`]), `None` for a text file.
fn csv_delimiter(spec: &CorpusSpec) -> Option<char> {
    let ext = spec.path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext.eq_ignore_ascii_case("tsv") {
        Some('\t')
    } else if ext.eq_ignore_ascii_case("csv") || spec.column.is_some() {
        Some(',')
    } else {
        None
    }
}

/// Calls `f` on each line of the text file `path`, streamed (a corpus file may be larger than memory would like)
/// and decoded as [`lossy`] decodes whole files: a line break never falls inside a UTF-8 sequence, so decoding line
/// by line replaces exactly the same bytes.
fn read_lines(path: &Path, mut f: impl FnMut(&str)) -> Result<()> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).in_file(path)?);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).in_file(path)? == 0 {
            return Ok(());
        }
        match std::str::from_utf8(&line) {
            Ok(text) => f(text),
            Err(_) => f(&lossy(std::mem::take(&mut line))),
        }
    }
}

/// Counts each cell of the text column of a CSV file as one sentence.
fn read_column(path: &Path, column: Option<&str>, delimiter: char, counter: &mut Counter) -> Result<()> {
    let table = read_csv(&CsvSpec {
        path: path.to_path_buf(),
        delimiter,
        ..CsvSpec::default()
    })?;
    let names = || table.header.join(", ");
    let Some(column) = column else {
        return Err(Error::new(format!(
            "a CSV corpus needs `column`, the name of the column holding the text; the columns are: {}",
            names()
        )));
    };
    let Some(col) = table.header.iter().position(|h| h.trim() == column) else {
        return Err(Error::new(format!(
            "no column '{column}'{}; the columns are: {}",
            hint(column, table.header.iter().map(|h| h.trim())),
            names()
        ))
        .at("column"));
    };
    for row in &table.rows {
        counter.add(&row[col]);
    }
    Ok(())
}

/// The one-pass count: every distinct token once (as a key of `ids`), the sentences as ids in order of first
/// appearance, flat with their ends (one allocation instead of one per sentence).
struct Counter {
    splitter: Splitter,
    scratch: Scratch,
    ids: FxMap<String, u32>,
    counts: Vec<u64>,
    tokens: Vec<u32>,
    ends: Vec<usize>,
}

impl Counter {
    fn new(lowercase: bool) -> Self {
        Counter {
            splitter: Splitter::new(lowercase, TokenMode::Word, None, 1).expect("word mode with length 1 is valid"),
            scratch: Scratch::default(),
            ids: FxMap::default(),
            counts: Vec::new(),
            tokens: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Adds one sentence.
    fn add(&mut self, text: &str) {
        let before = self.tokens.len();
        let Counter {
            splitter,
            scratch,
            ids,
            counts,
            tokens,
            ..
        } = self;
        splitter.each_token(text, scratch, |token| {
            let id = match ids.get(token) {
                Some(&id) => id,
                None => {
                    let id = u32::try_from(counts.len()).expect("fewer than 2^32 distinct words");
                    ids.insert(token.to_owned(), id);
                    counts.push(0);
                    id
                }
            };
            counts[id as usize] += 1;
            tokens.push(id);
            true
        });
        if self.tokens.len() > before {
            self.ends.push(self.tokens.len());
        }
    }

    /// Chooses the vocabulary and renumbers the sentences into it.
    fn finish(self, min_count: usize, max_vocab: Option<usize>, files: usize) -> Result<Corpus> {
        let Counter {
            ids,
            counts,
            tokens,
            ends,
            ..
        } = self;
        // The strings move out of the map into a vector indexed by the first-seen id: no copies.
        let mut by_id = vec![String::new(); counts.len()];
        for (word, id) in ids {
            by_id[id as usize] = word;
        }
        let min = min_count as u64;
        let mut kept: Vec<u32> = (0..counts.len() as u32)
            .filter(|&i| counts[i as usize] >= min)
            .collect();
        let order = |&a: &u32, &b: &u32| {
            counts[b as usize]
                .cmp(&counts[a as usize])
                .then_with(|| by_id[a as usize].cmp(&by_id[b as usize]))
        };
        if let Some(max) = max_vocab
            && kept.len() > max
        {
            kept.select_nth_unstable_by(max, order);
            kept.truncate(max);
        }
        kept.sort_unstable_by(order);
        let total = tokens.len() as u64;
        if kept.len() < 2 {
            let found = match kept.len() {
                0 => "no word occurs".to_owned(),
                _ => format!("only one word ('{}') occurs", by_id[kept[0] as usize]),
            };
            return Err(Error::new(format!(
                "{found} min_count = {min_count} times (the corpus has {} distinct words in {total} tokens, the \
                 most frequent seen {} times); lower min_count or give a larger corpus",
                counts.len(),
                counts.iter().max().copied().unwrap_or(0)
            )));
        }
        if kept.len() > MAX_EXACT_F32 {
            return Err(Error::new(format!(
                "{} words occur at least min_count = {min_count} times, more than the {MAX_EXACT_F32} ids a float \
                 holds exactly; set max_vocab or raise min_count",
                kept.len()
            )));
        }
        const OOV: u32 = u32::MAX;
        let mut new_id = vec![OOV; counts.len()];
        let mut words = Vec::with_capacity(kept.len());
        let mut vocab_counts = Vec::with_capacity(kept.len());
        for (new, &old) in kept.iter().enumerate() {
            new_id[old as usize] = new as u32;
            words.push(std::mem::take(&mut by_id[old as usize]));
            vocab_counts.push(counts[old as usize]);
        }
        let mut sentences = Vec::with_capacity(ends.len());
        let mut start = 0;
        for end in ends {
            let sentence: Vec<u32> = tokens[start..end]
                .iter()
                .map(|&t| new_id[t as usize])
                .filter(|&id| id != OOV)
                .collect();
            if !sentence.is_empty() {
                sentences.push(sentence);
            }
            start = end;
        }
        Ok(Corpus {
            words,
            counts: vocab_counts,
            sentences,
            tokens: total,
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use crate::text::tests::strings;
    use std::time::Instant;

    fn words_of(c: &Corpus, s: usize) -> Vec<&str> {
        c.sentences[s].iter().map(|&i| c.words[i as usize].as_str()).collect()
    }

    #[test]
    fn vocabulary_order_counts_and_oov_removal() {
        let c = Corpus::from_texts(
            ["The cat sat on the mat.", "", "a dog; THE dog", "zebra", "cat's cat"],
            true,
            2,
            None,
        )
        .unwrap();
        // the: 3; cat, dog: 2 (ties alphabetical); the rest once and out of the vocabulary.
        assert_eq!(c.words, strings(&["the", "cat", "dog"]));
        assert_eq!(c.counts, vec![3, 2, 2]);
        assert_eq!(c.tokens, 13);
        assert_eq!(c.files, 0);
        // "zebra" and "cat's" sentences: one loses every token and is dropped, "cat's cat" keeps "cat".
        assert_eq!(c.sentences.len(), 3);
        assert_eq!(words_of(&c, 0), ["the", "cat", "the"]);
        assert_eq!(words_of(&c, 1), ["dog", "the", "dog"]);
        assert_eq!(words_of(&c, 2), ["cat"]);
        assert_eq!(c.len_tokens_in_vocab(), 7);
        assert_eq!(c.len_tokens_in_vocab(), c.counts.iter().sum::<u64>());

        // max_vocab keeps the most frequent; case kept without lowercasing.
        let c = Corpus::from_texts(["b b a a c", "B"], false, 1, Some(2)).unwrap();
        assert_eq!((c.words.clone(), c.counts.clone()), (strings(&["a", "b"]), vec![2, 2]));
        assert_eq!(c.sentences, vec![vec![1, 1, 0, 0]]);
    }

    #[test]
    fn tokenization_is_the_word_tokenizers() {
        let text = "Don't STOP--e-mail me@x.com, 42nd_st! Ünïcode ÇA don't";
        let c = Corpus::from_texts([text], true, 1, None).unwrap();
        let expected = [
            "don't",
            "stop",
            "e",
            "mail",
            "me",
            "x",
            "com",
            "42nd",
            "st",
            "ünïcode",
            "ça",
            "don't",
        ];
        assert_eq!(words_of(&c, 0), expected);
        // "don't" (twice) first, the others (once each) in byte order.
        let mut rest = expected[1..11].to_vec();
        rest.sort();
        assert_eq!(c.words[0], "don't");
        assert_eq!(c.words[1..], strings(&rest));
    }

    #[test]
    fn limits_and_small_vocabularies_are_refused() {
        let err = Corpus::from_texts(["a b"], true, 0, None).unwrap_err();
        assert_eq!(err.location.as_deref(), Some("min_count"));
        let err = Corpus::from_texts(["a b"], true, 1, Some(1)).unwrap_err();
        assert_eq!(err.location.as_deref(), Some("max_vocab"));
        let err = Corpus::from_texts(["a b"], true, 1, Some(MAX_EXACT_F32 + 1)).unwrap_err();
        assert_eq!(err.location.as_deref(), Some("max_vocab"));
        let err = Corpus::from_texts(["a b a c"], true, 3, None).unwrap_err();
        assert!(
            err.message.starts_with("no word occurs min_count = 3 times")
                && err
                    .message
                    .contains("3 distinct words in 4 tokens, the most frequent seen 2 times")
                && err.message.ends_with("lower min_count or give a larger corpus"),
            "{err}"
        );
        let err = Corpus::from_texts(["a b a c"], true, 2, None).unwrap_err();
        assert!(
            err.message
                .starts_with("only one word ('a') occurs min_count = 2 times"),
            "{err}"
        );
        assert!(Corpus::from_texts(["", " ,. "], true, 1, None).is_err());
    }

    #[test]
    fn folders_sorted_recursive_filtered_and_lossy() {
        let dir = TempDir::new("corpus-folder");
        dir.write("b.txt", b"second file\r\nits second line\n");
        dir.write("a/z.TXT", b"first caf\xe9 file\n\n");
        dir.write("a/notes.md", b"not read with the filter");
        dir.write(".hidden/x.txt", b"hidden folder");
        dir.write(".x.txt", b"hidden file");
        let mut spec = CorpusSpec::new(&dir.0);
        spec.extensions = Some(strings(&[".txt"]));
        let c = Corpus::read(&spec, 1, None).unwrap();
        assert_eq!(c.files, 2);
        assert_eq!(c.tokens, 8);
        // Paths sorted: a/z.TXT before b.txt; the blank line is no sentence; the byte that is not UTF-8 became
        // U+FFFD, which is not a letter, so it ends the word.
        assert_eq!(words_of(&c, 0), ["first", "caf", "file"]);
        assert_eq!(words_of(&c, 1), ["second", "file"]);
        assert_eq!(words_of(&c, 2), ["its", "second", "line"]);
        assert_eq!(c.sentences.len(), 3);

        spec.extensions = None;
        let c = Corpus::read(&spec, 1, None).unwrap();
        assert_eq!((c.files, c.tokens), (3, 13));

        spec.extensions = Some(strings(&["csv"]));
        let err = Corpus::read(&spec, 1, None).unwrap_err();
        assert!(err.message.contains("no files with extension csv"), "{err}");
        assert_eq!(err.file.as_deref(), Some(dir.0.as_path()));
        spec.extensions = None;
        spec.column = Some("text".into());
        assert!(
            Corpus::read(&spec, 1, None)
                .unwrap_err()
                .message
                .contains("`column` applies to a CSV")
        );

        let missing = dir.0.join("nope");
        let err = Corpus::read(&CorpusSpec::new(&missing), 1, None).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(missing.as_path()));

        // One text file, each line a sentence; `extensions` does not apply to it.
        let file = dir.write("one.txt", b"x y\ny x z\n");
        let c = Corpus::read(&CorpusSpec::new(&file), 1, None).unwrap();
        assert_eq!((c.files, c.sentences.len(), c.tokens), (1, 2, 5));
        let mut spec = CorpusSpec::new(&file);
        spec.extensions = Some(strings(&["txt"]));
        assert!(Corpus::read(&spec, 1, None).is_err());
        // The vocabulary error names the file.
        let err = Corpus::read(&CorpusSpec::new(&file), 5, None).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(file.as_path()));
    }

    #[test]
    fn csv_cells_are_sentences() {
        let dir = TempDir::new("corpus-csv");
        let path = dir.write(
            "r.csv",
            "id,review\n1,\"Good film, good\nacting\"\n2,bad film\n".as_bytes(),
        );
        let mut spec = CorpusSpec::new(&path);
        spec.column = Some("review".into());
        let c = Corpus::read(&spec, 1, None).unwrap();
        assert_eq!(c.files, 1);
        assert_eq!(c.sentences.len(), 2);
        assert_eq!(words_of(&c, 0), ["good", "film", "good", "acting"]);
        assert_eq!(words_of(&c, 1), ["bad", "film"]);

        // A tab-separated file by its extension, a CSV of another extension by `column`.
        let tsv = dir.write("r.TSV", b"review\tid\nsome, text\t1\ntext\t2\n");
        let mut spec = CorpusSpec::new(&tsv);
        spec.column = Some("review".into());
        let c = Corpus::read(&spec, 1, None).unwrap();
        assert_eq!((c.words.clone(), c.tokens), (strings(&["text", "some"]), 3));
        let data = dir.write("r.data", b"review\nx y\n");
        let mut spec = CorpusSpec::new(&data);
        spec.column = Some("review".into());
        assert_eq!(Corpus::read(&spec, 1, None).unwrap().tokens, 2);

        let mut spec = CorpusSpec::new(&path);
        let err = Corpus::read(&spec, 1, None).unwrap_err();
        assert!(
            err.message.contains("needs `column`") && err.message.ends_with("the columns are: id, review"),
            "{err}"
        );
        assert_eq!(err.file.as_deref(), Some(path.as_path()));
        spec.column = Some("reveiw".into());
        let err = Corpus::read(&spec, 1, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: column: no column 'reveiw'; did you mean `review`?; the columns are: id, review",
                path.display()
            )
        );
    }

    #[test]
    fn spec_serde_defaults() {
        let s: CorpusSpec = toml::from_str(r#"path = "d""#).unwrap();
        assert_eq!(s, CorpusSpec::new("d"));
        let s: CorpusSpec =
            toml::from_str("path = \"r.csv\"\ncolumn = \"review\"\nlowercase = false\nextensions = [\"txt\"]").unwrap();
        assert_eq!(
            (s.column.as_deref(), s.lowercase, s.extensions.is_some()),
            (Some("review"), false, true)
        );
        assert!(toml::from_str::<CorpusSpec>("path = \"d\"\ncolum = \"x\"").is_err());
        let back: CorpusSpec = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    /// The State of the Union addresses (`GRAFT_SOTU_DIR`, else /tmp/sotu/package/data), when present.
    #[test]
    fn real_corpus_reads_quickly() {
        let root = std::env::var_os("GRAFT_SOTU_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/sotu/package/data"));
        if !root.is_dir() {
            eprintln!("skipped: {} is not there", root.display());
            return;
        }
        let mut spec = CorpusSpec::new(&root);
        spec.extensions = Some(strings(&["txt"]));
        let started = Instant::now();
        let c = Corpus::read(&spec, 5, None).unwrap();
        let elapsed = started.elapsed();
        let all = Corpus::read(&CorpusSpec::new(&root), 1, None).unwrap();
        let elapsed_all = started.elapsed() - elapsed;
        eprintln!(
            "sotu: {} files, {} tokens, {} sentences, vocabulary {} (min_count 5; {} in vocabulary) in {:.0} ms; \
             every file ({}, min_count 1: {} tokens, vocabulary {}) in {:.0} ms; first words {:?}",
            c.files,
            c.tokens,
            c.sentences.len(),
            c.words.len(),
            c.len_tokens_in_vocab(),
            elapsed.as_secs_f64() * 1e3,
            all.files,
            all.tokens,
            all.words.len(),
            elapsed_all.as_secs_f64() * 1e3,
            &c.words[..8]
        );
        assert_eq!(c.words[0], "the");
        assert!(c.tokens > 1_000_000);
    }

    /// A CSV from `scripts/fetch-data.sh` (the diabetes table), when present: every cell of a column is a sentence.
    #[test]
    fn real_csv_reads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/diabetes/diabetes.csv");
        if !path.exists() {
            eprintln!("skipped: {} is not there", path.display());
            return;
        }
        let table = read_csv(&CsvSpec {
            path: path.clone(),
            ..CsvSpec::default()
        })
        .unwrap();
        let column = table.header.last().unwrap().clone();
        let mut spec = CorpusSpec::new(&path);
        spec.column = Some(column.clone());
        let started = Instant::now();
        let c = Corpus::read(&spec, 1, None).unwrap();
        eprintln!(
            "{}: column '{column}': {} rows, {} tokens, vocabulary {} in {:.1} ms",
            path.display(),
            table.rows.len(),
            c.tokens,
            c.words.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!(
            c.sentences.len(),
            table.rows.iter().filter(|r| !r.last().unwrap().is_empty()).count()
        );
    }
}
