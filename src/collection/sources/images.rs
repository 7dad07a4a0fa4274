//! Image folders and list files, and content hashes of a work list.

use super::*;

pub(super) fn is_image(path: &Path) -> bool {
    has_extension(path, &IMAGE_EXTENSIONS)
}

pub(super) fn folder_images(dir: &Path) -> Result<Vec<ImageItem>> {
    let found = walk(dir, &is_image)?;
    let item = |f: Found| {
        let folders = &f.rel[..f.rel.len() - 1];
        ImageItem { path: f.path, label: (!folders.is_empty()).then(|| folders.join("/")) }
    };
    Ok(found.into_iter().map(item).collect())
}

pub(super) fn list_file_images(list: &Path) -> Result<Vec<ImageItem>> {
    let base = list.parent().unwrap_or(Path::new(""));
    let mut items = Vec::new();
    for line in lines(list)? {
        let (number, text) = line?;
        let text = text.trim_start();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let (file, label) = text.split_once('\t').unwrap_or((text, ""));
        let label = Some(label.trim()).filter(|l| !l.is_empty()).map(str::to_string);
        let path = base.join(file.trim_end());
        if !path.is_file() {
            let hint = format!("listed on line {number} of {}", list.display());
            return Err(Error::MissingFile { path, hint: Some(hint) });
        }
        items.push(ImageItem { path, label });
    }
    Ok(items)
}

// ---------------------------------------------------------------------------------------------------------------
// Hashing

pub(super) fn put_bytes(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A relative path as `/`-separated text (lossy for non-UTF-8 names), the same on every platform.
pub(super) fn slash_path(path: &Path) -> String {
    let parts = path.components().map(|c| match c {
        Component::Normal(s) => s.to_string_lossy(),
        Component::RootDir => "".into(),
        other => other.as_os_str().to_string_lossy(),
    });
    parts.collect::<Vec<_>>().join("/")
}

pub(super) fn file_sha256(path: &Path) -> Result<[u8; 32]> {
    let mut file = open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(hash.finalize().into());
        }
        hash.update(&buf[..n]);
    }
}
