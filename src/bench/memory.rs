//! Process memory split into private (anonymous) and file-backed pages, and evicting files from the page cache
//! for cold-cache measurements.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Resident memory of this process from `/proc/self/status` (Linux), in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcMemory {
    /// Private pages: libtorch allocations, copies, activations (`RssAnon`).
    pub anon: u64,
    /// Pages of mapped files: memory-mapped weights that were touched (`RssFile`).
    pub file: u64,
    /// The peak of the whole resident set so far (`VmHWM`).
    pub peak: u64,
}

impl ProcMemory {
    pub fn now() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        };
        Some(Self { anon: field("RssAnon:")?, file: field("RssFile:")?, peak: field("VmHWM:")? })
    }
}

/// Ask the kernel to drop the cached pages of these files (`posix_fadvise(DONTNEED)`: clean pages only, no root
/// needed), so that the next read comes from the disk. Returns how many files it was applied to.
pub fn evict_from_page_cache(paths: &[&Path]) -> usize {
    use std::os::fd::AsRawFd;
    let mut done = 0;
    for path in paths {
        let Ok(file) = std::fs::File::open(path) else { continue };
        // SAFETY: a plain syscall on a file descriptor this function owns for the duration of the call.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc == 0 {
            done += 1;
        }
    }
    done
}
