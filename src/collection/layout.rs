//! Where everything of a collection lives, and which items each shard holds.
//!
//! ```text
//! DIR/manifest.json
//! DIR/shard-00000-of-00004/{position}.safetensors   tensor `x` [items, ..] (+ `step`, `timestep`, `pos`)
//! DIR/shard-00000-of-00004/items.jsonl              one JSON object per item, in order
//! DIR/shard-00000-of-00004/images/{index:08}.png    with --keep-images
//! DIR/shard-00000-of-00004.partial-{host}-{pid}/    a shard being written (never read)
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const ITEMS_FILE: &str = "items.jsonl";
pub const IMAGES_DIR: &str = "images";
const PARTIAL_MARK: &str = ".partial-";

/// The folder name of a complete shard: `shard-00003-of-00016`.
pub fn shard_dir_name(index: usize, count: usize) -> String {
    format!("shard-{index:05}-of-{count:05}")
}

/// The folder of a complete shard.
pub fn shard_dir(root: &Path, index: usize, count: usize) -> PathBuf {
    root.join(shard_dir_name(index, count))
}

/// The folder a worker writes shard `index` into before renaming it (unique per host and process).
pub fn partial_dir(root: &Path, index: usize, count: usize) -> PathBuf {
    let host = hostname();
    root.join(format!("{}{PARTIAL_MARK}{host}-{}", shard_dir_name(index, count), std::process::id()))
}

/// Leftover partial folders of a shard (from killed or running workers).
pub fn partial_dirs(root: &Path, index: usize, count: usize) -> Vec<PathBuf> {
    let prefix = format!("{}{PARTIAL_MARK}", shard_dir_name(index, count));
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// The file of one position in a shard; the position's canonical text is the file name.
pub fn position_file(shard: &Path, position: &str) -> PathBuf {
    shard.join(format!("{position}.safetensors"))
}

/// The file of an item's kept image.
pub fn image_file(shard: &Path, item: u64) -> PathBuf {
    shard.join(IMAGES_DIR).join(format!("{item:08}.png"))
}

/// Items `[start, end)` of shard `index` of `count` over `total` items: contiguous ranges whose sizes differ by
/// at most one, the larger ones first. A pure function of its arguments.
pub fn shard_range(total: u64, index: usize, count: usize) -> Range<u64> {
    let (n, i) = (count.max(1) as u64, index as u64);
    let (base, extra) = (total / n, total % n);
    let start = i * base + i.min(extra);
    let len = base + u64::from(i < extra);
    start..(start + len).min(total)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_item_once() {
        for total in [0u64, 1, 7, 10, 1000] {
            for count in 1..=9 {
                let mut next = 0;
                for i in 0..count {
                    let r = shard_range(total, i, count);
                    assert_eq!(r.start, next, "total {total} count {count} shard {i}");
                    assert!(r.end - r.start <= total / count as u64 + 1);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
        assert_eq!(shard_dir_name(3, 16), "shard-00003-of-00016");
    }
}
