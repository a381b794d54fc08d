//! The lock a training holds on its run directory, so that a second `graft train --out` into the same directory
//! (a second terminal, a retried job, `--overwrite` by mistake) is refused instead of interleaving two runs' files
//! or deleting a running one's checkpoints. The lock is a file created exclusively (`O_EXCL`), holding the
//! owner's process id; it is removed when the run ends, and a lock whose process is gone (a run killed with
//! `SIGKILL`, a machine that rebooted) is stale and taken over.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Result};

/// The lock file's name inside the run directory.
pub const LOCK_FILE: &str = ".graft.lock";

/// A held lock on a run directory; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    /// The process of a stale lock this one replaced.
    pub took_over: Option<u32>,
}

impl RunLock {
    /// Locks `dir` (which must exist) for this process: refused while another live process holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let mut took_over = None;
        // Two tries: the second after removing a stale lock (another process may win the race; then it holds it).
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(format!("{}\n", std::process::id()).as_bytes())
                        .and_then(|()| file.sync_all())
                        .in_file(&path)?;
                    return Ok(RunLock { path, took_over });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match owner {
                        Some(pid) if pid != std::process::id() && process_alive(pid) => {
                            return Err(Error::new(format!(
                                "a training (process {pid}) is writing this run directory; wait for it to end, stop \
                                 it, or give another --out"
                            ))
                            .in_file(dir));
                        }
                        // Dead, unreadable (a write cut short) or our own: stale.
                        _ => {
                            took_over = owner;
                            match std::fs::remove_file(&path) {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => return Err(Error::io(&path, e)),
                            }
                        }
                    }
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::new("another training took this run directory at the same moment; give another --out").in_file(dir))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Only our own lock: a directory another process took over after ours went stale is theirs.
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            == Some(std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether process `pid` exists (on this machine).
#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 checks for existence without sending anything; EPERM means it exists but belongs to someone else.
    // SAFETY: kill with signal 0 has no effect on the target process.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Without a way to ask, a lock is assumed live unless it is this process's.
#[cfg(not(unix))]
fn process_alive(pid: u32) -> bool {
    pid != std::process::id()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("graft-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_live_lock_refuses_and_a_released_one_is_gone() {
        let d = dir("live");
        // Process 1 (init) is always alive and never ours.
        std::fs::write(d.join(LOCK_FILE), "1\n").unwrap();
        let err = RunLock::acquire(&d).unwrap_err().to_string();
        assert!(err.contains("process 1") && err.contains("another --out"), "{err}");
        std::fs::remove_file(d.join(LOCK_FILE)).unwrap();
        let lock = RunLock::acquire(&d).unwrap();
        assert_eq!(lock.took_over, None);
        let text = std::fs::read_to_string(d.join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(lock);
        assert!(!d.join(LOCK_FILE).exists());
    }

    #[test]
    fn a_dead_or_damaged_lock_is_taken_over() {
        let d = dir("stale");
        // A pid above the kernel's limit (4,194,304) cannot be running.
        std::fs::write(d.join(LOCK_FILE), "4194399\n").unwrap();
        let lock = RunLock::acquire(&d).unwrap();
        assert_eq!(lock.took_over, Some(4194399));
        drop(lock);
        std::fs::write(d.join(LOCK_FILE), "").unwrap();
        let lock = RunLock::acquire(&d).unwrap();
        assert_eq!(lock.took_over, None);
    }

    #[test]
    fn dropping_leaves_a_lock_that_another_process_took_over() {
        let d = dir("taken");
        let lock = RunLock::acquire(&d).unwrap();
        std::fs::write(d.join(LOCK_FILE), "1\n").unwrap();
        drop(lock);
        assert_eq!(std::fs::read_to_string(d.join(LOCK_FILE)).unwrap(), "1\n");
    }
}
