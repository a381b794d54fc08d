//! Files replaced atomically: a reader (or a run that is killed mid-write) sees the old file or the whole new
//! one, never a half-written one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Context, Error, Result};

/// Replaces `path` with `bytes` so that readers see either the old file or the whole new one, never
/// a half-written page (a report may be regenerated while someone has it open).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_sibling(path)?;
    let written = write_synced(&tmp, bytes).in_file(path);
    commit_temp(&tmp, path, written)
}

/// Copies `from` over `to` with the same guarantee as [`write_atomic`]: readers see the old file or the whole copy.
pub fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let tmp = temp_sibling(to)?;
    let copied = crate::fault::write_error()
        .map_or(Ok(()), Err)
        .and_then(|()| fs::copy(from, &tmp))
        .and_then(|_| fs::File::open(&tmp)?.sync_all())
        .in_file(from);
    commit_temp(&tmp, to, copied)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(e) = crate::fault::write_error() {
        return Err(e);
    }
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A temporary name in the target's own directory: `rename` is only atomic within one file system.
/// The target's name stays at the end so that extension-sniffing writers (the PNG encoder) still work.
pub fn temp_sibling(path: &Path) -> Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| Error::new("cannot write to a path without a file name").in_file(path))?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(path.with_file_name(format!(".tmp-{}-{n}-{}", std::process::id(), name.to_string_lossy())))
}

/// Moves a fully written temporary file over `path`, or removes it when writing failed, so that no
/// stray temporaries are left behind either way.
pub fn commit_temp(tmp: &Path, path: &Path, written: Result<()>) -> Result<()> {
    let result = written.and_then(|()| fs::rename(tmp, path).in_file(path));
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_atomic_replaces_the_file_and_cleans_up() {
        let dir = TempDir::new("atomic");
        let path = dir.0.join("x.txt");
        write_atomic(&path, b"first").expect("first write");
        write_atomic(&path, b"second").expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        assert_eq!(file_names(&dir.0), ["x.txt"]);
    }

    #[test]
    fn write_atomic_into_a_missing_directory_names_the_target() {
        let dir = TempDir::new("atomic-missing");
        let path = dir.0.join("nope/x.txt");
        let err = write_atomic(&path, b"x").expect_err("must fail");
        assert_eq!(err.file.as_deref(), Some(path.as_path()));
    }
}
