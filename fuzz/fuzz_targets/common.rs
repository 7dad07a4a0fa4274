//! Shared by every fuzz target: an allocation cap and scratch files.
//!
//! The targets are built without a sanitizer (libtorch is not instrumented, and ASan would double the build), so
//! libFuzzer's `-malloc_limit_mb` has no malloc hooks to work with. The global allocator below does that job for
//! every Rust allocation: one larger than `SDSCOPE_FUZZ_MAX_ALLOC_MB` (default 2048) aborts the process, which
//! libFuzzer reports as a crash and saves the input that caused it.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Capped;

static LIMIT: AtomicUsize = AtomicUsize::new(0);

fn limit() -> usize {
    match LIMIT.load(Ordering::Relaxed) {
        0 => {
            // No allocation here: the environment is read through libc.
            let mb = std::env::var_os("SDSCOPE_FUZZ_MAX_ALLOC_MB")
                .and_then(|v| v.to_str().and_then(|s| s.parse::<usize>().ok()))
                .unwrap_or(2048);
            let bytes = mb.saturating_mul(1 << 20).max(1);
            LIMIT.store(bytes, Ordering::Relaxed);
            bytes
        }
        n => n,
    }
}

fn check(size: usize) {
    let limit = LIMIT.load(Ordering::Relaxed);
    if limit != 0 && size > limit {
        // Plain write(2): allocating here would recurse.
        let msg = b"\n==sdscope-fuzz== allocation larger than SDSCOPE_FUZZ_MAX_ALLOC_MB: the input asked for an absurd amount of memory\n";
        unsafe {
            libc_write(2, msg.as_ptr(), msg.len());
        }
        std::process::abort();
    }
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, count: usize) -> isize;
}

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// Call once per run (from `fuzz_target!`'s init): reads the limit while allocating is still allowed.
pub fn init() {
    limit();
}

/// A scratch folder for this process.
pub fn scratch() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sdscope-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    })
}

/// Write `bytes` to `name` in the scratch folder and return its path.
pub fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("scratch file");
    path
}

/// The test fixtures (`.sdscope/fixtures`, or `SDSCOPE_FIXTURES`), when present.
pub fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("SDSCOPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.sdscope/fixtures"));
    dir.is_dir().then_some(dir)
}

/// Split `data` into `n` parts: each part but the last is preceded by its length as two little-endian bytes.
pub fn split(mut data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n.saturating_sub(1) {
        if data.len() < 2 {
            parts.push(&data[..0]);
            continue;
        }
        let len = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
        parts.push(&data[2..2 + len]);
        data = &data[2 + len..];
    }
    parts.push(data);
    parts
}
