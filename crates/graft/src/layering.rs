//! The import order of the library's modules, checked: a module may use the modules listed before it in
//! [`ORDER`] and the crates below graft (`graft-data`, `graft-kernels`, burn), never one listed after it. A
//! test that reads the sources is the only check Rust offers inside one crate; between crates, Cargo makes the
//! order a compile error already. Test code is exempt: a layer's tests may build a whole model.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The library's modules, lowest first; the same list opens `lib.rs`.
const ORDER: [&str; 8] = [
    "layers",
    "model",
    "task",
    "pretrained",
    "train",
    "infer",
    "report",
    "experiment",
];

/// Modules every level may use: the re-exports of `graft-data`.
const BELOW: [&str; 2] = ["data", "error"];

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Files that are whole test modules (`#[cfg(test)] mod name;` in their parent), by path.
fn test_files(src: &Path, files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut tests = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            let Some(name) = pair[1].strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) else {
                continue;
            };
            if pair[0] != "#[cfg(test)]" {
                continue;
            }
            let dir = match file.file_name().and_then(|n| n.to_str()) {
                Some("mod.rs" | "lib.rs") => file.parent().unwrap().to_path_buf(),
                _ => file.with_extension(""),
            };
            tests.insert(dir.join(format!("{name}.rs")));
            tests.insert(dir.join(name).join("mod.rs"));
        }
    }
    tests.retain(|p| p.starts_with(src));
    tests
}

/// The code of a file without its inline test module (by convention the file's last item).
fn production_code(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// The top-level modules a piece of code names: `crate::x`, `crate::{x::.., y}`, and `super::x` from a
/// folder's `mod.rs` (where `super` is the crate root).
fn named_modules(code: &str, super_is_root: bool) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut prefixes = vec!["crate::"];
    if super_is_root {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                names.extend(
                    group
                        .split(',')
                        .map(|item| ident(item.trim()))
                        .filter(|n| !n.is_empty()),
                );
            } else {
                names.insert(ident(rest));
            }
        }
    }
    names
}

/// Every import of a module from a level above it, as `file: module uses above`.
fn violations(src: &Path) -> Vec<String> {
    let level = |m: &str| ORDER.iter().position(|o| *o == m);
    let files = rust_files(src);
    let tests = test_files(src, &files);
    let mut found = vec![];
    for file in files.iter().filter(|f| !tests.contains(*f)) {
        let relative = file.strip_prefix(src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs");
        let Some(own) = level(top) else { continue };
        let text = std::fs::read_to_string(file).unwrap();
        let super_is_root = relative.components().count() == 2 && relative.ends_with("mod.rs");
        for name in named_modules(production_code(&text), super_is_root) {
            match level(&name) {
                Some(l) if l > own => found.push(format!("{}: {top} uses {name}", relative.display())),
                None if !BELOW.contains(&name.as_str()) && !name.is_empty() && name != "map_data" => found.push(
                    format!("{}: {top} uses {name}, which is in no level", relative.display()),
                ),
                _ => {}
            }
        }
    }
    found
}

#[test]
fn modules_import_only_from_levels_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "imports from a higher level:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_plain_grouped_and_root_super_imports() {
    let code = "use crate::model::Graph;\nuse crate::{infer::predict, report};\nfn f() { super::train::fit(); }";
    let names: Vec<String> = named_modules(code, true).into_iter().collect();
    assert_eq!(names, ["infer", "model", "report", "train"]);
    let names: Vec<String> = named_modules(code, false).into_iter().collect();
    assert_eq!(names, ["infer", "model", "report"]);
    assert_eq!(
        production_code("a\n#[cfg(test)]\nmod tests {\n use crate::x;\n}"),
        "a\n"
    );
}
