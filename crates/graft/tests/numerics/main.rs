//! The numerical checks of every layer, loss and optimizer, run against the library's public API: finite-difference
//! gradients in float64 (`gradcheck.rs`) and parity with PyTorch's fixtures (`parity.rs`). One test binary for both,
//! since each links burn.

mod backbones;
mod gradcheck;
mod parity;
