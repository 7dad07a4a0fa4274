//! The weight files a pipeline was loaded from, by content, for the collection manifest.

use crate::collection::manifest::FileHash;
use crate::error::{Error, Result};
use crate::hub::component_weights;
use crate::pipeline::Pipeline;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Every weight file the pipeline was loaded from (U-Net or SD3 transformer, VAE, text encoders, T5 when loaded)
/// with its size and sha256. Files in the Hugging Face cache are links to blobs named by their sha256, which is
/// taken as is; other files are hashed.
pub fn model_file_hashes(pipe: &Pipeline) -> Result<Vec<FileHash>> {
    let root = &pipe.source.root;
    let mut files = Vec::new();
    let denoiser = crate::denoiser::denoiser_folder(root);
    match &pipe.source.unet_override {
        Some(file) => files.push(file.clone()),
        None => files.extend(component_weights(&root.join(denoiser))?),
    }
    let t5 = pipe.t5.is_some().then_some("text_encoder_3");
    for component in ["vae", "text_encoder", "text_encoder_2"].into_iter().chain(t5) {
        let dir = root.join(component);
        if dir.is_dir() {
            files.extend(component_weights(&dir)?);
        }
    }
    files
        .iter()
        .map(|file| {
            let relative = file.strip_prefix(root).unwrap_or(file).to_string_lossy().replace('\\', "/");
            let bytes = std::fs::metadata(file).map_err(|e| Error::io(file, e))?.len();
            Ok(FileHash { path: relative, bytes, sha256: content_sha256(file)? })
        })
        .collect()
}

fn content_sha256(file: &Path) -> Result<String> {
    if let Ok(target) = std::fs::read_link(file) {
        let name = target.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let in_blobs = target.parent().and_then(|p| p.file_name()).is_some_and(|p| p == "blobs");
        if in_blobs && name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(name);
        }
    }
    // Hashing 14 GB of SDXL weights takes half a minute: remember each file's hash by path, size and mtime.
    let key = cache_key(file)?;
    let mut cache = read_cache();
    if let Some(hash) = cache.get(&key) {
        return Ok(hash.clone());
    }
    let hash = hash_file(file)?;
    cache.insert(key, hash.clone());
    write_cache(&cache);
    Ok(hash)
}

/// `canonical path|bytes|mtime in ns`: any rewrite of the file changes it.
fn cache_key(file: &Path) -> Result<String> {
    let meta = std::fs::metadata(file).map_err(|e| Error::io(file, e))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos());
    let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    Ok(format!("{}|{}|{}", canonical.display(), meta.len(), mtime.unwrap_or(0)))
}

fn cache_file() -> std::path::PathBuf {
    let dir = std::env::var_os("SDSCOPE_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir).join(".cache/sdscope")
    });
    dir.join("file-sha256.json")
}

fn read_cache() -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(cache_file()).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// Best effort: a cache that cannot be written only costs the hashing next time.
fn write_cache(cache: &std::collections::BTreeMap<String, String>) {
    let path = cache_file();
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = path.parent().map(std::fs::create_dir_all).transpose().is_ok()
        && serde_json::to_vec(cache).ok().is_some_and(|bytes| std::fs::write(&tmp, bytes).is_ok());
    if written && std::fs::rename(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

fn hash_file(file: &Path) -> Result<String> {
    let mut reader = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buffer).map_err(|e| Error::io(file, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}
