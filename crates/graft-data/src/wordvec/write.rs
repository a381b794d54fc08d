//! Writing word vectors in the word2vec formats, so that vectors trained by graft load in gensim, the C tool's
//! `distance` and graft's own reader. Files are streamed to a temporary sibling and renamed into place, so a reader
//! never sees half a file; a word that would not read back (empty, or holding whitespace, which separates fields in
//! both formats) or a value that is not finite (the readers refuse it) is refused before anything is written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::WordVectors;
use crate::error::{Context, Error, Result};
use crate::fsio::{commit_temp, temp_sibling};

impl WordVectors {
    /// word2vec C binary (the tool's `-binary 1`): header `"n dim\n"`, per word its bytes, a space, `dim`
    /// little-endian `f32`, `"\n"`. Written atomically (see [`crate::fsio`]).
    pub fn write_binary(&self, path: &Path) -> Result<()> {
        self.check_writable().in_file(path)?;
        write_streamed(path, |out| {
            writeln!(out, "{} {}", self.len(), self.dim)?;
            for (word, vector) in self.words.iter().zip(self.values.chunks_exact(self.dim)) {
                out.write_all(word.as_bytes())?;
                out.write_all(b" ")?;
                for v in vector {
                    out.write_all(&v.to_le_bytes())?;
                }
                out.write_all(b"\n")?;
            }
            Ok(())
        })
    }

    /// word2vec text format: the same header, then `"word v1 ... vdim\n"` per word, each value in the shortest form
    /// that reads back as the same `f32` (exponent notation for very small or large magnitudes).
    pub fn write_text(&self, path: &Path) -> Result<()> {
        self.check_writable().in_file(path)?;
        write_streamed(path, |out| {
            writeln!(out, "{} {}", self.len(), self.dim)?;
            for (word, vector) in self.words.iter().zip(self.values.chunks_exact(self.dim)) {
                out.write_all(word.as_bytes())?;
                for &v in vector {
                    // Both forms are Rust's shortest round-trip digits; plain notation would spell 1e-30 with 30 zeros.
                    let a = v.abs();
                    if a != 0.0 && !(1e-4..1e15).contains(&a) {
                        write!(out, " {v:e}")?;
                    } else {
                        write!(out, " {v}")?;
                    }
                }
                out.write_all(b"\n")?;
            }
            Ok(())
        })
    }

    /// Refuses what the word2vec formats cannot hold: empty words, words with whitespace, values not finite.
    fn check_writable(&self) -> Result<()> {
        for (i, (word, vector)) in self.words.iter().zip(self.values.chunks_exact(self.dim)).enumerate() {
            if word.is_empty() {
                return Err(Error::new(format!(
                    "word {} of {} is empty, which the word2vec formats cannot hold",
                    i + 1,
                    self.len()
                )));
            }
            if word.chars().any(char::is_whitespace) {
                return Err(Error::new(format!(
                    "word {} of {} ({word:?}) holds whitespace, which separates fields in the word2vec formats: it \
                     would not read back",
                    i + 1,
                    self.len()
                )));
            }
            if let Some((k, v)) = vector.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(Error::new(format!(
                    "value {} of {word:?} is {v}; word-vector files hold finite numbers only",
                    k + 1
                )));
            }
        }
        Ok(())
    }
}

/// Writes through `body` to a temporary sibling of `path`, synced, then renamed over `path` (removed on failure).
fn write_streamed(path: &Path, body: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    let tmp = temp_sibling(path)?;
    let written = File::create(&tmp)
        .and_then(|file| {
            let mut out = BufWriter::with_capacity(1 << 20, file);
            body(&mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()
        })
        .in_file(path);
    commit_temp(&tmp, path, written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use crate::wordvec::WordVecFormat;
    use crate::wordvec::tests::{VALUES, WORDS, check_sample};
    use std::fs;

    fn sample() -> WordVectors {
        WordVectors::new(WORDS.map(String::from).into(), 3, VALUES.concat()).unwrap()
    }

    #[test]
    fn binary_round_trip_is_bit_identical() {
        let dir = TempDir::new("write-bin");
        let path = dir.0.join("v.bin");
        sample().write_binary(&path).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"3 3\nking "));
        assert_eq!(
            bytes.len(),
            4 + 3 * (3 * 4 + 2) + "king".len() + "queen".len() + "Été".len()
        );
        check_sample(&WordVectors::read(&path, None).unwrap());

        // Awkward values come back with the same bits.
        let values = vec![
            -0.0,
            f32::MIN_POSITIVE,
            1e-45,
            f32::MAX,
            -f32::MAX,
            0.1,
            1.0 / 3.0,
            -2.5e-7,
            123456.79,
        ];
        let wv = WordVectors::new(vec!["a".into(), "b".into(), "c'd".into()], 3, values.clone()).unwrap();
        wv.write_binary(&path).unwrap();
        let back = WordVectors::read(&path, Some(WordVecFormat::Word2VecBinary)).unwrap();
        assert_eq!(back.words, wv.words);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.values), bits(&values));
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1, "no temporary file is left");
    }

    #[test]
    fn text_round_trip_is_exact_and_short() {
        let dir = TempDir::new("write-text");
        let path = dir.0.join("v.txt");
        sample().write_text(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, "3 3\nking 1 0 0.5\nqueen 0.25 -1.5 2\nÉté -0.125 3 0.001\n");
        check_sample(&WordVectors::read(&path, None).unwrap());

        let values = vec![
            -0.0,
            f32::MIN_POSITIVE,
            1e-45,
            f32::MAX,
            0.1,
            1.0 / 3.0,
            -2.5e-7,
            123456.79,
            1e15,
        ];
        let wv = WordVectors::new((0..3).map(|i| format!("w{i}")).collect(), 3, values.clone()).unwrap();
        wv.write_text(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().nth(1),
            Some("w0 -0 1.1754944e-38 1e-45"),
            "shortest round-trip forms"
        );
        assert_eq!(text.lines().nth(2), Some("w1 3.4028235e38 0.1 0.33333334"));
        assert_eq!(text.lines().nth(3), Some("w2 -2.5e-7 123456.79 1e15"));
        let back = WordVectors::read(&path, Some(WordVecFormat::Word2VecText)).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.values), bits(&values));
    }

    #[test]
    fn unwritable_words_and_values_are_refused() {
        let dir = TempDir::new("write-bad");
        let path = dir.0.join("v.bin");
        for (word, what) in [
            ("", "is empty"),
            ("new york", "holds whitespace"),
            ("a\tb", "holds whitespace"),
        ] {
            let wv = WordVectors::new(vec!["ok".into(), word.into()], 1, vec![1.0, 2.0]).unwrap();
            for err in [wv.write_binary(&path).unwrap_err(), wv.write_text(&path).unwrap_err()] {
                assert!(
                    err.message.starts_with("word 2 of 2") && err.message.contains(what),
                    "{err}"
                );
                assert_eq!(err.file.as_deref(), Some(path.as_path()));
            }
        }
        let wv = WordVectors::new(vec!["x".into()], 2, vec![1.0, f32::NAN]).unwrap();
        assert!(
            wv.write_text(&path)
                .unwrap_err()
                .message
                .contains("value 2 of \"x\" is NaN")
        );
        assert!(!path.exists());
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 0);
        // A missing folder names the target.
        let err = sample().write_binary(&dir.0.join("no/v.bin")).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(dir.0.join("no/v.bin").as_path()));
    }

    /// The GoogleNews subset written and read back in both formats, when it is there.
    #[test]
    fn real_vectors_round_trip() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/word2vec/GoogleNews-vectors-negative300-bolukbasi.bin");
        if !src.exists() {
            return;
        }
        let wv = WordVectors::read(&src, None).unwrap();
        let dir = TempDir::new("write-real");
        let started = std::time::Instant::now();
        wv.write_binary(&dir.0.join("v.bin")).unwrap();
        let binary = started.elapsed();
        // The source has no newline after its records; the C tool (and this writer) puts one there.
        let (ours, theirs) = (fs::read(dir.0.join("v.bin")).unwrap(), fs::read(&src).unwrap());
        assert_eq!(ours.len(), theirs.len() + wv.len());
        let back = WordVectors::read(&dir.0.join("v.bin"), None).unwrap();
        assert!(back.words == wv.words && back.values == wv.values);
        let started = std::time::Instant::now();
        wv.write_text(&dir.0.join("v.txt")).unwrap();
        let text = started.elapsed();
        let back = WordVectors::read(&dir.0.join("v.txt"), None).unwrap();
        assert_eq!((back.words == wv.words, back.values == wv.values), (true, true));
        println!(
            "wrote {} x {}: binary {:.0} ms, text {:.0} ms",
            wv.len(),
            wv.dim,
            binary.as_secs_f64() * 1e3,
            text.as_secs_f64() * 1e3
        );
    }
}
