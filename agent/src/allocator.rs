//! The agent's heap: one allocator for every build, so that the musl and the glibc builds use the
//! same memory for the same work, and neither pays for its C library's malloc.
//!
//! - Blocks under [`LARGE`] come from dlmalloc (the Rust port, one heap behind one lock): small
//!   and fast, and the same on musl and glibc. musl's own malloc is lean but slow: it maps and
//!   unmaps its small groups some 30 times a second at the reference load, and the agent used
//!   0.74 % of a core with it against 0.58 % with dlmalloc (footprint bench, same run). glibc's
//!   per-thread arenas and caches made the glibc build 1.9 times the musl build's memory at
//!   10,000 tags.
//! - Blocks of [`LARGE`] and more are mapped on their own (`mmap`), grown and shrunk in place or
//!   moved by the kernel (`mremap`) and unmapped when freed: their untouched pages cost nothing,
//!   and a summary round's large buffers go back to the kernel as soon as the round is done.
//!   dlmalloc would carve them out of its heap and touch them (zeroing them for `alloc_zeroed`):
//!   sled allocates 25 MB of zeroed histograms of which it touches a few pages, and that alone
//!   made a dlmalloc-only agent 38 MiB at the reference load.
//!
//! Invariant: which allocator holds a block follows from its layout alone (Rust hands `dealloc`
//! and `realloc` the layout the block was allocated with), so a block is always released by the
//! allocator that made it; a `realloc` across [`LARGE`] moves the block between them.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Mutex, PoisonError};

/// Blocks from this size up are mapped on their own.
pub const LARGE: usize = 64 * 1024;

/// Alignment a fresh mapping always has (the smallest page size of the targets).
const PAGE: usize = 4096;

/// The global allocator (installed by the `millwright` binary).
pub struct Heap;

/// dlmalloc's state, behind a lock: it is not thread-safe by itself.
struct Small(dlmalloc::Dlmalloc);

// SAFETY: the raw pointers inside dlmalloc's state point into memory it mapped itself, owned by
// no thread; every access goes through the mutex below.
#[allow(unsafe_code)]
unsafe impl Send for Small {}

static SMALL: Mutex<Small> = Mutex::new(Small(dlmalloc::Dlmalloc::new()));

fn small() -> std::sync::MutexGuard<'static, Small> {
    // No code under this lock panics; and dlmalloc's state is consistent between calls.
    SMALL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= PAGE
}

/// Blocks of their own, straight from the kernel.
mod mapped {
    use std::ptr::null_mut;

    #[allow(unsafe_code)]
    pub fn map(size: usize) -> *mut u8 {
        // SAFETY: a new private anonymous mapping; it aliases nothing.
        let at = unsafe {
            libc::mmap(
                null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if at == libc::MAP_FAILED {
            null_mut()
        } else {
            at.cast()
        }
    }

    /// # Safety
    /// `at` and `size` are a block this module mapped, no longer used.
    #[allow(unsafe_code)]
    pub unsafe fn unmap(at: *mut u8, size: usize) {
        // A failure would leave the pages mapped: a leak, not unsoundness; nothing to do about it.
        libc::munmap(at.cast(), size);
    }

    /// # Safety
    /// `at` and `size` are a block this module mapped; `new_size` is not zero.
    #[allow(unsafe_code)]
    pub unsafe fn remap(at: *mut u8, size: usize, new_size: usize) -> *mut u8 {
        let moved = libc::mremap(at.cast(), size, new_size, libc::MREMAP_MAYMOVE);
        if moved == libc::MAP_FAILED {
            null_mut()
        } else {
            moved.cast()
        }
    }
}

#[allow(unsafe_code)]
// SAFETY (all four): each call forwards the caller's layout to the allocator chosen by its size,
// which is the same for the allocation and its release (see the module's invariant).
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            mapped::map(layout.size())
        } else {
            small().0.malloc(layout.size(), layout.align())
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            // Fresh anonymous pages are zero.
            mapped::map(layout.size())
        } else {
            small().0.calloc(layout.size(), layout.align())
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout) {
            mapped::unmap(ptr, layout.size())
        } else {
            small().0.free(ptr, layout.size(), layout.align())
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (is_large(layout), is_large(new_layout)) {
            (true, true) => mapped::remap(ptr, layout.size(), new_size),
            (false, false) => small()
                .0
                .realloc(ptr, layout.size(), layout.align(), new_size),
            _ => {
                // Across the line: a new block from the other allocator, then the old one freed.
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                moved
            }
        }
    }
}

/// Hands the free top of the small-block heap back to the kernel (dlmalloc does so by itself only
/// once more than 2 MiB are free there). Returns whether anything was released.
pub fn trim() -> bool {
    // SAFETY: trimming only unmaps free memory at the top of dlmalloc's own segments.
    #[allow(unsafe_code)]
    unsafe {
        small().0.trim(0)
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    /// The tests share the one small-block heap: the trimming test needs it to itself.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn filled(heap: &Heap, size: usize, align: usize) -> (*mut u8, Layout) {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a non-zero size; the block is written within its size only.
        unsafe {
            let block = heap.alloc(layout);
            assert!(!block.is_null());
            assert_eq!(block as usize % align, 0, "{size} bytes aligned to {align}");
            for i in 0..size {
                *block.add(i) = (i % 251) as u8;
            }
            (block, layout)
        }
    }

    fn holds_pattern(block: *const u8, len: usize) -> bool {
        // SAFETY: callers pass a live block of at least `len` bytes.
        (0..len).all(|i| unsafe { *block.add(i) } == (i % 251) as u8)
    }

    #[test]
    fn small_and_large_blocks_keep_their_contents_and_alignment() {
        let _serial = serial();
        let heap = Heap;
        let cases = [
            (1, 1),
            (24, 8),
            (4000, 4096),
            (LARGE - 1, 16),
            (LARGE, 8),
            (LARGE, PAGE),
            // Aligned beyond a page: dlmalloc's, whatever the size.
            (2 * LARGE, 4 * PAGE),
        ];
        for (size, align) in cases {
            let (block, layout) = filled(&heap, size, align);
            assert!(holds_pattern(block, size));
            // SAFETY: allocated above with this layout.
            unsafe { heap.dealloc(block, layout) };
        }
    }

    #[test]
    fn realloc_keeps_contents_across_the_line_both_ways() {
        let _serial = serial();
        let heap = Heap;
        let (block, layout) = filled(&heap, 1000, 8);
        // SAFETY: each step reallocates the block the previous one returned, with its layout.
        unsafe {
            let grown = heap.realloc(block, layout, 3 * LARGE);
            assert!(!grown.is_null());
            assert!(holds_pattern(grown, 1000));
            let large = Layout::from_size_align(3 * LARGE, 8).unwrap();
            for i in 1000..3 * LARGE {
                *grown.add(i) = (i % 251) as u8;
            }
            // Large to larger: the kernel grows or moves the mapping.
            let larger = heap.realloc(grown, large, 40 * LARGE);
            assert!(!larger.is_null());
            assert!(holds_pattern(larger, 3 * LARGE));
            let larger_layout = Layout::from_size_align(40 * LARGE, 8).unwrap();
            let shrunk = heap.realloc(larger, larger_layout, 500);
            assert!(!shrunk.is_null());
            assert!(holds_pattern(shrunk, 500));
            heap.dealloc(shrunk, Layout::from_size_align(500, 8).unwrap());
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_even_where_a_freed_block_was() {
        let _serial = serial();
        let heap = Heap;
        for size in [512, 2 * LARGE] {
            let (block, layout) = filled(&heap, size, 8);
            // SAFETY: freed with its layout, then a fresh zeroed block of the same layout read
            // within its size.
            unsafe {
                heap.dealloc(block, layout);
                let zeroed = heap.alloc_zeroed(layout);
                assert!(!zeroed.is_null());
                assert!((0..size).all(|i| *zeroed.add(i) == 0));
                heap.dealloc(zeroed, layout);
            }
        }
    }

    #[test]
    fn trimming_releases_a_freed_heap_top() {
        let _serial = serial();
        let heap = Heap;
        let layout = Layout::from_size_align(LARGE - 64, 8).unwrap();
        // About 1.5 MiB of small blocks, freed: under dlmalloc's own 2 MiB trim threshold.
        let blocks: Vec<(*mut u8, Layout)> =
            (0..24).map(|_| filled(&heap, layout.size(), 8)).collect();
        for (block, layout) in blocks {
            // SAFETY: allocated above with this layout.
            unsafe { heap.dealloc(block, layout) };
        }
        assert!(trim(), "the freed top was released");
    }
}
