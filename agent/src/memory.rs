//! Hands back the code pages the agent touched only while starting.
//!
//! Loading a configuration runs code that the steady state never runs again: TOML parsing and
//! validation, tract's ONNX parser and graph optimiser, certificate loading. Each page of it that
//! ran stays mapped and counts in the process's RSS (and in its cgroup's memory) until the kernel
//! needs the memory back: about 10 MiB of a 20 MiB x86_64 binary after start, of which the
//! reference load then touches about 1.7 MiB a minute (measured with `clear_refs`). A gateway's
//! memory figures (`ps`, `systemctl status`, the vendor's watchdog) would show that code as used.
//!
//! So once the agent runs (and again after it settles, and after every reload), it hands those
//! pages back, in two steps over its executable's read-only mappings:
//! - `madvise(MADV_PAGEOUT)` (Linux 5.4+) reclaims them from memory altogether. The kernel does
//!   that for file pages only when the process could write the file (its owner, or root): the
//!   packaged service runs as `millwright` and its binary belongs to root, so there it pages out
//!   only anonymous pages, and only when swap exists.
//! - So each page that `/proc/self/pagemap` shows as a file page (or not present) is then unmapped
//!   from the agent (`MADV_DONTNEED`, any user): it stays in the page cache, which the kernel
//!   reclaims when it needs memory, and the next access maps it again from there. Measured as the
//!   service user before this step: 18.2 MiB RSS at the reference load, 15 MiB of it code.
//!
//! Invariant: no content changes, whichever pages go. Read-only mappings cannot be written, so a
//! page that was a file page when pagemap was read is one still; the pages the loader wrote before
//! making them read-only (relocations) are anonymous, and `MADV_DONTNEED` would revert them to the
//! file's bytes, so those (and swapped ones) are never in a range given to it. The cost is a page
//! fault (from the page cache, or from flash if reclaimed) the first time a path that had not run
//! since the last release runs again.
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
    #[error("the kernel refused the advice ({0})")]
    Advice(#[source] std::io::Error),
}

/// A mapping of the executable: its address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    start: usize,
    end: usize,
}

/// Hands back what starting left behind: the heap's free top and the code pages that ran (see the
/// module). Called between the phases of a start or reload, each of which runs code of its own,
/// so that the start-up peak is one phase's code, not all of them. An old kernel refuses the
/// advice: logged once.
pub fn release_startup_memory() {
    trim_heap();
    static REFUSAL_LOGGED: std::sync::Once = std::sync::Once::new();
    match release_code_pages() {
        Ok(bytes) => tracing::debug!(mapped_bytes = bytes, "released startup code pages"),
        Err(error) => {
            REFUSAL_LOGGED.call_once(|| tracing::info!(%error, "startup code pages stay resident"))
        }
    }
}

/// Pages out or unmaps the executable's read-only mappings. Returns the bytes advised (mapped,
/// not necessarily resident).
fn release_code_pages() -> Result<usize, ReleaseError> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(ReleaseError::Maps)?;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(ReleaseError::Maps)?;
    let mut advised = 0;
    let pagemap = std::fs::File::open("/proc/self/pagemap").map_err(ReleaseError::Maps)?;
    let page = page_size();
    for region in read_only_regions(&maps, &exe) {
        // Refused before Linux 5.4: the unmapping below still works there.
        let _ = advise(region, libc::MADV_PAGEOUT);
        unmap_file_pages(&pagemap, region, page)?;
        // Page by page from now on: the default read-around would bring 128 KiB of neighbours
        // back with each page the steady state touches.
        advise(region, libc::MADV_RANDOM).map_err(ReleaseError::Advice)?;
        advised += region.end - region.start;
    }
    Ok(advised)
}

fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system; no memory is touched.
    #[allow(unsafe_code)]
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Unmaps the pages of `region` that are mapped from the file (see the module's invariant).
fn unmap_file_pages(
    pagemap: &std::fs::File,
    region: Region,
    page: usize,
) -> Result<(), ReleaseError> {
    let entries = read_pagemap(pagemap, region, page).map_err(ReleaseError::Maps)?;
    for run in droppable_runs(region, page, &entries) {
        advise(run, libc::MADV_DONTNEED).map_err(ReleaseError::Advice)?;
    }
    Ok(())
}

/// `/proc/self/pagemap`'s entries (one u64 per page) for `region`.
fn read_pagemap(pagemap: &std::fs::File, region: Region, page: usize) -> std::io::Result<Vec<u64>> {
    use std::os::unix::fs::FileExt;
    let pages = (region.end - region.start) / page;
    let mut bytes = vec![0u8; pages * 8];
    pagemap.read_exact_at(&mut bytes, (region.start / page * 8) as u64)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|entry| u64::from_ne_bytes(entry.try_into().expect("8 bytes")))
        .collect())
}

const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const FILE_PAGE: u64 = 1 << 61;

/// A page `MADV_DONTNEED` may drop without changing what the mapping reads: mapped from the file,
/// or not mapped at all (dropping it does nothing). A present anonymous page (written before the
/// mapping became read-only) or a swapped one would be lost.
fn droppable(entry: u64) -> bool {
    entry & SWAPPED == 0 && (entry & PRESENT == 0 || entry & FILE_PAGE != 0)
}

/// The longest runs of droppable pages of `region` that hold at least one mapped page.
fn droppable_runs(region: Region, page: usize, entries: &[u64]) -> Vec<Region> {
    let mut runs = Vec::new();
    let mut run: Option<(usize, bool)> = None; // (first page, any present)
    for (index, &entry) in entries.iter().chain(std::iter::once(&SWAPPED)).enumerate() {
        match (run, droppable(entry)) {
            (None, true) => run = Some((index, entry & PRESENT != 0)),
            (Some((first, present)), true) => run = Some((first, present || entry & PRESENT != 0)),
            (Some((first, present)), false) => {
                if present {
                    runs.push(Region {
                        start: region.start + first * page,
                        end: region.start + index * page,
                    });
                }
                run = None;
            }
            (None, false) => {}
        }
    }
    runs
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

/// `advice` is MADV_PAGEOUT, MADV_RANDOM, or MADV_DONTNEED over file pages of a read-only
/// private mapping: none changes what the memory reads.
#[allow(unsafe_code)]
fn advise(region: Region, advice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the range is a live mapping of this process read from /proc/self/maps, page-aligned,
    // and not writable, so no Rust object is aliased or invalidated. MADV_PAGEOUT and MADV_RANDOM
    // never change contents (madvise(2)); MADV_DONTNEED is only given runs of file pages (see
    // `droppable_runs`), which fault back in from the same file with the same bytes.
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

    const PAGE: usize = 4096;

    fn region(pages: usize) -> Region {
        Region {
            start: 0x10000,
            end: 0x10000 + pages * PAGE,
        }
    }

    fn pages(region: Region, first: usize, end: usize) -> Region {
        Region {
            start: region.start + first * PAGE,
            end: region.start + end * PAGE,
        }
    }

    #[test]
    fn written_and_swapped_pages_are_never_dropped() {
        let file = PRESENT | FILE_PAGE;
        let anon = PRESENT;
        let swapped = SWAPPED;
        let absent = 0;
        let entries = [
            file, file, anon, absent, file, swapped, absent, absent, file,
        ];
        let whole = region(entries.len());
        assert_eq!(
            droppable_runs(whole, PAGE, &entries),
            vec![pages(whole, 0, 2), pages(whole, 3, 5), pages(whole, 6, 9)]
        );
    }

    #[test]
    fn runs_with_nothing_mapped_are_left_alone() {
        let entries = [0, 0, PRESENT, 0, PRESENT | FILE_PAGE];
        let whole = region(entries.len());
        assert_eq!(
            droppable_runs(whole, PAGE, &entries),
            vec![pages(whole, 3, 5)]
        );
        assert!(droppable_runs(whole, PAGE, &[0; 5]).is_empty());
    }

    /// The test binary's read-only regions and how many of their pages are mapped from the file.
    fn mapped_code_pages() -> (Vec<Region>, usize) {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let pagemap = std::fs::File::open("/proc/self/pagemap").expect("pagemap");
        let regions = read_only_regions(&maps, &exe);
        let mapped = regions
            .iter()
            .flat_map(|r| read_pagemap(&pagemap, *r, page_size()).expect("read pagemap"))
            .filter(|entry| entry & PRESENT != 0 && entry & FILE_PAGE != 0)
            .count();
        (regions, mapped)
    }

    /// Held by the tests that release the test binary's pages, so that one's count is not the
    /// other's doing.
    static RELEASING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn file_pages_are_unmapped_without_the_right_to_page_them_out() {
        let _alone = RELEASING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Whoever runs the test: this step alone is what a service user's agent gets.
        let (regions, before) = mapped_code_pages();
        let pagemap = std::fs::File::open("/proc/self/pagemap").expect("pagemap");
        for region in &regions {
            unmap_file_pages(&pagemap, *region, page_size()).expect("unmap");
        }
        let (_, after) = mapped_code_pages();
        // Tests on other threads run code meanwhile, so not to zero; the relocated pages stay.
        assert!(
            after * 2 < before,
            "{before} code pages mapped before, {after} after"
        );
    }

    #[test]
    fn paging_out_the_test_binary_keeps_it_running() {
        let _alone = RELEASING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let advised = release_code_pages().expect("madvise(MADV_PAGEOUT) on this kernel");
        assert!(advised > 0, "the test binary has read-only mappings");
        // Its code still runs after the pages were dropped: they fault back in.
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        assert!(!read_only_regions(&maps, &exe).is_empty());
    }
}
