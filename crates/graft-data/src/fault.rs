//! Fault injection for the interruption tests: `GRAFT_FAULT=NAME[:N]` makes the process abort — no unwinding, no
//! destructors, as a `SIGKILL` would stop it — the N-th time (default: first) it reaches the point `NAME`, so a
//! test can stop a training at an exact place (mid-epoch, during a checkpoint write, during validation) and check
//! what a resumed run makes of it. Without the variable a point costs one relaxed atomic load.
//!
//! `GRAFT_FAULT=disk-full[:N]` and `read-only[:N]` stand for the storage failing under a running training: from the
//! N-th resumable checkpoint on (reached at the point `checkpoint-write`, with part of the checkpoint written),
//! every file write fails as the operating system reports a full disk or a file system remounted read-only. A
//! root process ignores permissions and no test can fill a real disk, so this is how the tests reach those paths.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

static TARGET: OnceLock<Option<(String, usize)>> = OnceLock::new();
static REACHED: AtomicUsize = AtomicUsize::new(0);
/// 0: writes succeed; otherwise the raw OS error every write now fails with.
static FAILING: AtomicU8 = AtomicU8::new(0);

/// Storage faults: (the name in `GRAFT_FAULT`, the OS error code: ENOSPC and EROFS, the same on Linux and macOS).
const STORAGE: [(&str, u8); 2] = [("disk-full", 28), ("read-only", 30)];
/// The point at which a storage fault strikes.
const STORAGE_POINT: &str = "checkpoint-write";

fn target() -> &'static Option<(String, usize)> {
    TARGET.get_or_init(|| {
        let spec = std::env::var("GRAFT_FAULT").ok()?;
        let (point, nth) = match spec.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().ok()?),
            None => (spec, 1),
        };
        Some((point, nth))
    })
}

/// The fault point `name`: aborts the process when `GRAFT_FAULT` names it (and this is its N-th visit), or from
/// there on fails every write for a storage fault.
pub fn point(name: &str) {
    let Some((point, nth)) = target() else { return };
    let storage = STORAGE.iter().find(|(s, _)| s == point);
    let hit = |p: &str| p == name && REACHED.fetch_add(1, Ordering::Relaxed) + 1 == *nth;
    match storage {
        Some(&(_, code)) if hit(STORAGE_POINT) => FAILING.store(code, Ordering::Relaxed),
        None if hit(point) => {
            eprintln!("GRAFT_FAULT: stopping at {name}");
            std::process::abort();
        }
        _ => {}
    }
}

/// The error a file write must fail with now, under a storage fault that has struck; `None` otherwise.
pub fn write_error() -> Option<std::io::Error> {
    match FAILING.load(Ordering::Relaxed) {
        0 => None,
        code => Some(std::io::Error::from_raw_os_error(code as i32)),
    }
}
