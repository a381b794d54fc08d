//! Fault injection for the interruption tests: `GRAFT_FAULT=NAME[:N]` makes the process abort — no unwinding, no
//! destructors, as a `SIGKILL` would stop it — the N-th time (default: first) it reaches the point `NAME`, so a
//! test can stop a training at an exact place (mid-epoch, during a checkpoint write, during validation) and check
//! what a resumed run makes of it. Without the variable a point costs one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

static TARGET: OnceLock<Option<(String, usize)>> = OnceLock::new();
static REACHED: AtomicUsize = AtomicUsize::new(0);

/// The fault point `name`: aborts the process when `GRAFT_FAULT` names it (and this is its N-th visit).
pub fn point(name: &str) {
    let target = TARGET.get_or_init(|| {
        let spec = std::env::var("GRAFT_FAULT").ok()?;
        let (point, nth) = match spec.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().ok()?),
            None => (spec, 1),
        };
        Some((point, nth))
    });
    if let Some((point, nth)) = target
        && point == name
        && REACHED.fetch_add(1, Ordering::Relaxed) + 1 == *nth
    {
        eprintln!("GRAFT_FAULT: stopping at {name}");
        std::process::abort();
    }
}
