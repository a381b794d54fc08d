//! Output buffers that a kernel writes in full before anything reads them, without the zero fill of
//! `vec![0.0; n]` (a pass over the whole output that the kernel then overwrites).

use std::mem::MaybeUninit;

/// A buffer for an output that a kernel writes in full (through [`put`]) before anything reads it: the zero fill of
/// `vec![0.0; n]` was a quarter of the LSTM's forward (0.53 of 2.0 ms at B = 32, T = 100, H = 128), a pass over
/// 11.5 MB that the kernel then overwrote. In this crate's tests it starts as NaN, so that an element left unwritten
/// shows in the results.
pub(crate) fn unfilled(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    if cfg!(test) {
        v.resize(len, MaybeUninit::new(f32::NAN));
    } else {
        // SAFETY: within the capacity; a `MaybeUninit` needs no initialization.
        unsafe { v.set_len(len) };
    }
    v
}

/// `dst = src`, element by element.
pub(crate) fn put(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "put: lengths");
    for (d, s) in dst.iter_mut().zip(src) {
        d.write(*s);
    }
}

/// The buffer as floats.
///
/// # Safety
/// Every element of `v` has been written.
pub(crate) unsafe fn filled(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, length and capacity; `MaybeUninit<f32>` has the layout of `f32`, and every element is
    // initialized (the caller's promise).
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

/// The slice as floats.
///
/// # Safety
/// Every element of `s` has been written.
pub(crate) unsafe fn written(s: &[MaybeUninit<f32>]) -> &[f32] {
    // SAFETY: as in [`filled`].
    unsafe { &*(s as *const [MaybeUninit<f32>] as *const [f32]) }
}
