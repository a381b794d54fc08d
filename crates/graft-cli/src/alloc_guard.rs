//! The CLI's allocator: the system's, plus a ceiling on any single allocation that only `graft fuzz` turns on. A
//! reader that trusts a size from a file's header would otherwise ask for terabytes on a damaged file; under the
//! ceiling such a request fails, which aborts the process (an allocator must not unwind) with the offending input
//! left on disk by the harness. Off, it costs one relaxed atomic load per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The ceiling in bytes; 0 is off.
static LIMIT: AtomicUsize = AtomicUsize::new(0);

pub struct Guard;

// SAFETY: every call is forwarded to `System` unchanged, or refused with a null pointer as `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refused(new_size) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn refused(size: usize) -> bool {
    let limit = LIMIT.load(Ordering::Relaxed);
    limit != 0 && size > limit
}

/// Refuses single allocations above `bytes` from now on.
pub fn enable(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

pub fn disable() {
    LIMIT.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_over_the_ceiling_fail_only_while_it_is_on() {
        // Far above anything the other tests of this binary allocate, so they are not disturbed meanwhile.
        enable(1 << 30);
        let mut v: Vec<u8> = Vec::new();
        assert!(v.try_reserve(3 << 30).is_err());
        assert!(v.try_reserve(1 << 20).is_ok());
        disable();
        let mut w: Vec<u8> = Vec::new();
        assert!(w.try_reserve(3 << 30).is_ok());
    }
}
