//! A global allocator that counts live heap bytes, only while switched on.
//!
//! The idle-memory measurement needs the heap a pooled connection keeps; the resident set alone
//! moves in whole pages and with the allocator's caching. Counting is switched off for every
//! other measurement, where the cost left is one relaxed load of a flag that never changes
//! under them (always-on counters such as the `stats_alloc` crate's would add two contended
//! atomic writes per allocation to the throughput figures).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

pub struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);

fn add(bytes: usize) {
    if ON.load(Relaxed) {
        LIVE.fetch_add(bytes as i64, Relaxed);
    }
}

fn sub(bytes: usize) {
    if ON.load(Relaxed) {
        LIVE.fetch_sub(bytes as i64, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters change.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size);
            sub(layout.size());
        }
        p
    }
}

/// Starts counting from zero. The count is the change in live heap bytes since then (blocks
/// allocated earlier and freed now count negative), so only differences between two readings
/// taken while counting is on mean anything.
pub fn start() {
    LIVE.store(0, Relaxed);
    ON.store(true, Relaxed);
}

pub fn stop() {
    ON.store(false, Relaxed);
}

/// Live heap bytes gained since [`start`].
pub fn live() -> i64 {
    LIVE.load(Relaxed)
}
