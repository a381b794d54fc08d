//! Reading labelled texts: one folder per class (files in sorted order, hidden files skipped, bytes that are not
//! UTF-8 replaced) or a text and a label column of a CSV file, read by the table reader so quoting and multi-line
//! cells work as for tables; a label column may hold several labels per text.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::TextSpec;
use crate::error::{Context, Error, Result};
use crate::table::{CsvSpec, read_csv};

/// Reads the texts and their class labels per `spec`: `(texts, labels, class names)`, label `i` meaning
/// `class names[i]`. A folder `path` holds one folder per class (files in sorted order; bytes that are not UTF-8
/// are replaced, as e-mails are not always UTF-8); a file `path` is a CSV with a header row.
pub fn read_texts(spec: &TextSpec) -> Result<(Vec<String>, Vec<usize>, Vec<String>)> {
    let meta = fs::metadata(&spec.path).in_file(&spec.path)?;
    if meta.is_dir() {
        read_folders(spec)
    } else if spec.label_separator.is_some() {
        Err(Error::new("internal: multi-label texts are read by read_label_sets").in_file(&spec.path))
    } else {
        let (texts, sets, names) = read_csv_texts(spec).in_file(&spec.path)?;
        Ok((texts, sets.into_iter().map(|s| s[0]).collect(), names))
    }
}

/// Texts, the labels of each text, and the label names.
type LabelSets = (Vec<String>, Vec<Vec<usize>>, Vec<String>);

/// Reads multi-label texts from a CSV whose label column holds `label_separator`-separated labels: `(texts, the
/// labels of each text, label names)`.
pub fn read_label_sets(spec: &TextSpec) -> Result<LabelSets> {
    let meta = fs::metadata(&spec.path).in_file(&spec.path)?;
    if meta.is_dir() {
        return Err(
            Error::new("`label_separator` applies to a CSV of texts, but this is a folder").in_file(&spec.path),
        );
    }
    read_csv_texts(spec).in_file(&spec.path)
}

/// Hidden files and folders (names starting with `.`) are never read.
fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Bytes as text, each sequence that is not UTF-8 replaced by U+FFFD.
pub(super) fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The sub-folders of `root`, sorted, hidden ones skipped.
pub(crate) fn sub_folders(root: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(root).in_file(root)? {
        let entry = entry.in_file(root)?;
        let path = entry.path();
        if !is_hidden(&entry.file_name()) && path.is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Appends the files under `dir` (recursively, symlinked folders not followed) that pass the extension filter.
pub(crate) fn collect_files(dir: &Path, extensions: Option<&[String]>, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).in_file(dir)? {
        let entry = entry.in_file(dir)?;
        if is_hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().in_file(&path)?;
        if kind.is_dir() {
            collect_files(&path, extensions, out)?;
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            let wanted = match extensions {
                None => true,
                Some(exts) => path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| exts.iter().any(|x| x.trim_start_matches('.').eq_ignore_ascii_case(e))),
            };
            if wanted {
                out.push(path);
            }
        }
    }
    Ok(())
}

fn read_folders(spec: &TextSpec) -> Result<(Vec<String>, Vec<usize>, Vec<String>)> {
    let root = &spec.path;
    if spec.column.is_some() || spec.label.is_some() {
        return Err(Error::new("`column` and `label` apply to a CSV file, but this is a folder").in_file(root));
    }
    let classes: Vec<(String, Vec<String>)> = match &spec.classes {
        Some(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        None => sub_folders(root)?
            .into_iter()
            .map(|name| (name.clone(), vec![name]))
            .collect(),
    };
    if classes.is_empty() {
        return Err(Error::new("no class folders found (one sub-folder per class is expected)").in_file(root));
    }
    let mut seen = BTreeMap::new();
    for (class, folders) in &classes {
        if folders.is_empty() {
            return Err(Error::new(format!("class '{class}' lists no folders"))
                .at("classes")
                .in_file(root));
        }
        for folder in folders {
            if let Some(other) = seen.insert(folder.as_str(), class.as_str()) {
                return Err(Error::new(format!(
                    "folder '{folder}' is listed under both '{other}' and '{class}'"
                ))
                .at("classes")
                .in_file(root));
            }
        }
    }
    let extensions = spec.extensions.as_deref();
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    for (label, (class, folders)) in classes.iter().enumerate() {
        let before = texts.len();
        for folder in folders {
            let dir = root.join(folder);
            if !dir.is_dir() {
                let available = sub_folders(root).unwrap_or_default().join(", ");
                return Err(Error::new(format!(
                    "class '{class}': there is no folder '{folder}' here (the folders are: {available})"
                ))
                .in_file(root));
            }
            let mut files = Vec::new();
            collect_files(&dir, extensions, &mut files)?;
            files.sort();
            for file in files {
                let bytes = fs::read(&file).in_file(&file)?;
                if crate::image::looks_like_image(&file, &bytes) {
                    return Err(Error::new(
                        "this is an image, not a text: read a folder of images with { images = { path = ... } }",
                    )
                    .in_file(&file));
                }
                texts.push(lossy(bytes));
                labels.push(label);
            }
        }
        if texts.len() == before {
            let filter = match extensions {
                Some(exts) => format!(" with extension {}", exts.join(" or ")),
                None => String::new(),
            };
            return Err(Error::new(format!(
                "class '{class}' has no files{filter} (in {})",
                folders.join(", ")
            ))
            .in_file(root));
        }
    }
    let names = classes.into_iter().map(|(class, _)| class).collect();
    Ok((texts, labels, names))
}

/// The labels of each row: one each, or (with `label_separator`) any number.
fn read_csv_texts(spec: &TextSpec) -> Result<LabelSets> {
    if spec.extensions.is_some() {
        return Err(Error::new(
            "`extensions` applies to a folder of texts, but this is a file",
        ));
    }
    let (Some(column), Some(label)) = (&spec.column, &spec.label) else {
        return Err(Error::new(
            "a CSV of texts needs `column` (the text column) and `label` (the class column)",
        ));
    };
    // The CSV parsing (quoting, line breaks inside quotes, ragged rows) is the table reader's.
    let table = read_csv(&CsvSpec {
        path: spec.path.clone(),
        ..CsvSpec::default()
    })?;
    let find = |name: &str, what: &str| {
        table.header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            Error::new(format!(
                "no {what} column '{name}'; the columns are: {}",
                table.header.join(", ")
            ))
        })
    };
    let (text_col, label_col) = (find(column, "text")?, find(label, "label")?);
    let (mut texts, mut values) = (Vec::new(), Vec::new());
    for (i, record) in table.rows.into_iter().enumerate() {
        let row = format!("row {}", i + 1);
        let cell = record[label_col].trim();
        let row_values: Vec<String> = match &spec.label_separator {
            Some(sep) => cell
                .split(sep.as_str())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect(),
            None if cell.is_empty() => {
                return Err(Error::new(format!("the label ('{label}') is empty")).at(row));
            }
            None => vec![cell.to_string()],
        };
        values.push((row, row_values));
        texts.push(record[text_col].clone());
    }
    let (names, class_of): (Vec<String>, BTreeMap<String, usize>) = match &spec.classes {
        Some(map) => {
            let mut class_of = BTreeMap::new();
            for (i, (class, vals)) in map.iter().enumerate() {
                for v in vals {
                    if let Some(j) = class_of.insert(v.trim().to_string(), i) {
                        let other = map.keys().nth(j).expect("class index");
                        return Err(Error::new(format!(
                            "label value '{v}' is listed under both '{other}' and '{class}'"
                        ))
                        .at("classes"));
                    }
                }
            }
            (map.keys().cloned().collect(), class_of)
        }
        None => {
            let distinct: BTreeSet<&str> = values.iter().flat_map(|(_, v)| v.iter().map(String::as_str)).collect();
            let mut names: Vec<String> = distinct.into_iter().map(str::to_string).collect();
            if names.iter().all(|n| n.parse::<i64>().is_ok()) {
                names.sort_by_key(|n| n.parse::<i64>().expect("checked integer"));
            }
            let class_of = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
            (names, class_of)
        }
    };
    let mut labels = Vec::with_capacity(values.len());
    for (row, row_values) in &values {
        let mut set = Vec::with_capacity(row_values.len());
        for value in row_values {
            match class_of.get(value) {
                Some(&c) if !set.contains(&c) => set.push(c),
                Some(_) => {}
                None => {
                    return Err(
                        Error::new(format!("label '{value}' is not listed under any class of `classes`"))
                            .at(row.clone()),
                    );
                }
            }
        }
        labels.push(set);
    }
    Ok((texts, labels, names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use crate::text::tests::{folder_spec, strings};

    #[test]
    fn folders_default_to_one_class_per_sub_folder_sorted() {
        let dir = TempDir::new("folders");
        dir.write("neg/b.txt", b"second neg");
        dir.write("neg/a.txt", b"first neg");
        dir.write("pos/z.txt", b"only pos");
        dir.write("pos/.hidden", b"skipped");
        dir.write(".git/x.txt", b"not a class");
        dir.write("stray.txt", b"files in the root are not texts");
        let (texts, labels, names) = read_texts(&folder_spec(&dir.0)).unwrap();
        assert_eq!(names, strings(&["neg", "pos"]));
        assert_eq!(texts, strings(&["first neg", "second neg", "only pos"]));
        assert_eq!(labels, vec![0, 0, 1]);
    }

    #[test]
    fn folders_class_mapping_extensions_nesting_and_lossy_bytes() {
        let dir = TempDir::new("mapping");
        dir.write("spam-2/01.txt", b"spam two");
        dir.write("spam-1/02.TXT", b"spam one b");
        dir.write("spam-1/01.txt", b"spam one a");
        dir.write("spam-1/cmds", b"not a text");
        dir.write("easy-ham/x.txt", b"caf\xe9 \xff ok");
        dir.write("easy-ham/sub/y.txt", b"nested");
        dir.write("hard-ham/a.txt", b"hard");
        dir.write("unused/a.txt", b"ignored folder");
        let mut s = folder_spec(&dir.0);
        s.classes = Some(BTreeMap::from([
            ("spam".to_string(), strings(&["spam-1", "spam-2"])),
            ("ham".to_string(), strings(&["hard-ham", "easy-ham"])),
        ]));
        s.extensions = Some(strings(&[".txt"]));
        let (texts, labels, names) = read_texts(&s).unwrap();
        assert_eq!(names, strings(&["ham", "spam"]));
        // Folders in the listed order, files sorted by path within each (`sub/y.txt` before `x.txt`).
        assert_eq!(
            texts,
            strings(&[
                "hard",
                "nested",
                "caf\u{fffd} \u{fffd} ok",
                "spam one a",
                "spam one b",
                "spam two"
            ])
        );
        assert_eq!(labels, vec![0, 0, 0, 1, 1, 1]);

        // Without the filter, `cmds` is read too.
        s.extensions = None;
        assert_eq!(read_texts(&s).unwrap().0.len(), 7);

        // Errors name what is wrong.
        s.extensions = Some(strings(&["eml"]));
        let err = read_texts(&s).unwrap_err();
        assert!(
            err.message.contains("class 'ham' has no files with extension eml"),
            "{err}"
        );
        s.extensions = None;
        s.classes = Some(BTreeMap::from([("ham".to_string(), strings(&["nope"]))]));
        let err = read_texts(&s).unwrap_err();
        assert!(
            err.message.contains("no folder 'nope'") && err.message.contains("easy-ham, hard-ham"),
            "{err}"
        );
        s.classes = Some(BTreeMap::from([
            ("a".to_string(), strings(&["unused"])),
            ("b".to_string(), strings(&["unused"])),
        ]));
        assert!(read_texts(&s).unwrap_err().message.contains("both 'a' and 'b'"));
        s.classes = None;
        s.column = Some("text".into());
        assert!(read_texts(&s).is_err());
    }

    #[test]
    fn a_label_separator_reads_sets_of_labels() {
        let dir = TempDir::new("text-multilabel");
        let csv = "text,tags\nred dog,colour|animal\nnothing,\nblue,colour| colour \n";
        let path = dir.0.join("t.csv");
        fs::write(&path, csv).unwrap();
        let mut s = folder_spec(&path);
        s.column = Some("text".into());
        s.label = Some("tags".into());
        s.label_separator = Some("|".into());
        let (texts, sets, names) = read_label_sets(&s).unwrap();
        assert_eq!(texts, strings(&["red dog", "nothing", "blue"]));
        assert_eq!(names, strings(&["animal", "colour"]));
        // An empty cell is no label; a repeated label counts once.
        assert_eq!(sets, vec![vec![1, 0], vec![], vec![1]]);
        assert!(read_texts(&s).is_err(), "single-label reading refuses a separator");
    }

    #[test]
    fn csv_columns_quotes_and_labels() {
        let dir = TempDir::new("csv");
        let csv = "\u{feff}id,label,text\r\n1,spam,\"Win, \"\"now\"\"\nfree\"\r\n2,ham,hello there\n\n3, ham ,\"\"\n";
        dir.write("t.csv", csv.as_bytes());
        let mut s = folder_spec(&dir.0.join("t.csv"));
        s.column = Some("text".into());
        s.label = Some("label".into());
        let (texts, labels, names) = read_texts(&s).unwrap();
        assert_eq!(texts, strings(&["Win, \"now\"\nfree", "hello there", ""]));
        assert_eq!(names, strings(&["ham", "spam"]));
        assert_eq!(labels, vec![1, 0, 0]);

        // Classes map label values; integer labels sort numerically by default.
        s.classes = Some(BTreeMap::from([
            ("bad".to_string(), strings(&["spam"])),
            ("good".to_string(), strings(&["ham"])),
        ]));
        let (_, labels, names) = read_texts(&s).unwrap();
        assert_eq!((labels, names), (vec![0, 1, 1], strings(&["bad", "good"])));
        s.classes = None;
        s.label = Some("id".into());
        dir.write("n.csv", b"id,text\n10,a\n9,b\n2,c\n");
        s.path = dir.0.join("n.csv");
        let (_, labels, names) = read_texts(&s).unwrap();
        assert_eq!((labels, names), (vec![2, 1, 0], strings(&["2", "9", "10"])));

        // Errors: unknown column, ragged row, unclosed quote, missing `label`.
        s.column = Some("body".into());
        assert!(
            read_texts(&s)
                .unwrap_err()
                .message
                .contains("no text column 'body'; the columns are: id, text")
        );
        s.column = Some("text".into());
        dir.write("r.csv", b"id,text\n1,a\n2,b,c\n");
        s.path = dir.0.join("r.csv");
        let err = read_texts(&s).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        assert_eq!(err.file.as_deref(), Some(s.path.as_path()));
        dir.write("q.csv", b"id,text\n1,\"open\n2,b\n");
        s.path = dir.0.join("q.csv");
        let err = read_texts(&s).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        s.label = None;
        assert!(read_texts(&s).unwrap_err().message.contains("needs `column`"));
    }
}
