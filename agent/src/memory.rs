//! Hands back the code pages the agent touched only while starting.
//!
//! Loading a configuration runs code that the steady state never runs again: TOML parsing and
//! validation, tract's ONNX parser and graph optimiser, certificate loading. Each page of it that
//! ran stays mapped and counts in the process's RSS (and in its cgroup's memory) until the kernel
//! needs the memory back: about 10 MiB of a 20 MiB x86_64 binary after start, of which the
//! reference load then touches about 1.7 MiB a minute (measured with `clear_refs`). A gateway's
//! memory figures (`ps`, `systemctl status`, the vendor's watchdog) would show that code as used.
//!
//! So once the agent runs (and again after it settles, and after every reload), it asks the kernel
//! to page out its executable's read-only mappings (`madvise(MADV_PAGEOUT)`, Linux 5.4+). Invariant:
//! this is only advice. Clean file-backed pages are dropped and read back from the file on the next
//! access; pages that were written (relocations) are anonymous and stay unless swap exists. No
//! content changes, whichever pages go. The cost is a page fault (a read from flash) the first time
//! a path that had not run since the last release runs again.
//!
//! It also hands back the free top of the agent's small-block heap ([`trim_heap`]): dlmalloc keeps
//! up to 2 MiB there by itself, and what loading a configuration left free would stay resident
//! (and on glibc, whatever the C library's own heap holds free).

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReleaseError {
    #[error("cannot read the process's memory map: {0}")]
    Maps(#[source] std::io::Error),
    #[error("the kernel refused the advice ({0}); Linux 5.4 or later is needed")]
    Advice(#[source] std::io::Error),
}

/// A mapping of the executable: its address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    start: usize,
    end: usize,
}

/// Advises the kernel to page out the executable's read-only mappings. Returns the bytes advised
/// (mapped, not necessarily resident).
pub fn release_startup_code() -> Result<usize, ReleaseError> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(ReleaseError::Maps)?;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(ReleaseError::Maps)?;
    let mut advised = 0;
    for region in read_only_regions(&maps, &exe) {
        advise(region, libc::MADV_PAGEOUT).map_err(ReleaseError::Advice)?;
        // Page by page from now on: the default read-around would bring 128 KiB of neighbours
        // back with each page the steady state touches.
        advise(region, libc::MADV_RANDOM).map_err(ReleaseError::Advice)?;
        advised += region.end - region.start;
    }
    Ok(advised)
}

/// The mappings of `exe` that are not writable, from `/proc/self/maps` text.
fn read_only_regions(maps: &str, exe: &Path) -> Vec<Region> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path: PathBuf = fields.nth(3).map(PathBuf::from)?;
            if path != exe || perms.contains('w') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Region {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
            })
        })
        .filter(|region| region.end > region.start)
        .collect()
}

/// Returns the free top of the agent's small-block heap to the kernel ([`crate::allocator::trim`]),
/// and on glibc the free memory of its own heaps (`malloc_trim(0)`).
pub fn trim_heap() {
    crate::allocator::trim();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only releases pages the allocator itself holds free; it touches no
    // allocated block and is safe to call from any thread at any time (malloc_trim(3)).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `advice` is MADV_PAGEOUT or MADV_RANDOM: neither changes what the memory holds.
#[allow(unsafe_code)]
fn advise(region: Region, advice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: both advices never change memory contents (madvise(2)): the range is a live
    // mapping of this process read from /proc/self/maps, page-aligned by the kernel, and not
    // writable, so no Rust object is aliased or invalidated. Dropped pages fault back in.
    let status = unsafe {
        libc::madvise(
            region.start as *mut libc::c_void,
            region.end - region.start,
            advice,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_read_only_mappings_are_chosen() {
        let maps = "\
55d0a0000000-55d0a0100000 r--p 00000000 fd:01 42 /usr/bin/millwright
55d0a0100000-55d0a0900000 r-xp 00100000 fd:01 42 /usr/bin/millwright
55d0a0900000-55d0a0a00000 rw-p 00900000 fd:01 42 /usr/bin/millwright
55d0a1000000-55d0a1100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 r-xp 00000000 fd:01 43 /usr/lib/other.so
7f0000002000-7f0000003000 r--p 00000000 fd:01 44 /usr/bin/millwright-old
";
        let regions = read_only_regions(maps, Path::new("/usr/bin/millwright"));
        assert_eq!(
            regions,
            vec![
                Region {
                    start: 0x55d0a0000000,
                    end: 0x55d0a0100000
                },
                Region {
                    start: 0x55d0a0100000,
                    end: 0x55d0a0900000
                },
            ]
        );
    }

    #[test]
    fn paging_out_the_test_binary_keeps_it_running() {
        let advised = release_startup_code().expect("madvise(MADV_PAGEOUT) on this kernel");
        assert!(advised > 0, "the test binary has read-only mappings");
        // Its code still runs after the pages were dropped: they fault back in.
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        assert!(!read_only_regions(&maps, &exe).is_empty());
    }
}
