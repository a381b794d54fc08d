//! A request to stop training cleanly (Ctrl-C, `SIGTERM` from a scheduler): the program that owns the signals
//! (the CLI) calls [`request`]; the training loop finishes the batch it is on, writes a resumable checkpoint and
//! stops with an error that says how to continue.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks the running training to stop after its current batch.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// The flag itself, for signal handlers that set it (`signal_hook::flag::register`).
pub fn flag() -> &'static AtomicBool {
    &REQUESTED
}
