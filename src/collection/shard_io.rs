//! Writing one shard (into a partial folder, renamed when complete) and reading its files back.
//!
//! Shard files are plain safetensors with a single `__metadata__` entry, `sdscope`, holding JSON: one entry
//! keeps the header's bytes the same from run to run (safetensors writes a metadata map in hash order).

use super::layout::{partial_dir, partial_dirs, shard_dir, ITEMS_FILE};
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The metadata key of shard files.
pub const METADATA_KEY: &str = "sdscope";

/// A shard being written. Nothing in it is visible under the shard's name until [`ShardWriter::finish`].
pub struct ShardWriter {
    partial: PathBuf,
    complete: PathBuf,
}

impl ShardWriter {
    /// Start shard `index` of `count` in `root`: `None` when it is complete already. Leftovers of earlier,
    /// interrupted attempts at this shard are removed (one worker per shard at a time).
    pub fn begin(root: &Path, index: usize, count: usize) -> Result<Option<Self>> {
        let complete = shard_dir(root, index, count);
        if complete.is_dir() {
            return Ok(None);
        }
        for stale in partial_dirs(root, index, count) {
            std::fs::remove_dir_all(&stale).map_err(|e| Error::io(&stale, e))?;
        }
        let partial = partial_dir(root, index, count);
        std::fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
        Ok(Some(Self { partial, complete }))
    }

    /// The folder being written.
    pub fn dir(&self) -> &Path {
        &self.partial
    }

    /// Write one safetensors file of the shard with the given tensors (kept in their dtype) and metadata.
    pub fn write_tensors(&self, file: &Path, tensors: &[(&str, &Tensor)], metadata: &serde_json::Value) -> Result<()> {
        write_safetensors(file, tensors, metadata)
    }

    /// Write the item table, one JSON object per line.
    pub fn write_items(&self, rows: &[serde_json::Value]) -> Result<()> {
        let path = self.partial.join(ITEMS_FILE);
        let mut text = String::new();
        for row in rows {
            text.push_str(&serde_json::to_string(row)?);
            text.push('\n');
        }
        write_synced(&path, text.as_bytes())
    }

    /// Make the shard visible under its final name. If another worker finished it meanwhile, ours is dropped.
    pub fn finish(self) -> Result<PathBuf> {
        sync_dir(&self.partial)?;
        if self.complete.is_dir() {
            let _ = std::fs::remove_dir_all(&self.partial);
            return Ok(self.complete);
        }
        std::fs::rename(&self.partial, &self.complete).map_err(|e| Error::io(&self.complete, e))?;
        if let Some(parent) = self.complete.parent() {
            sync_dir(parent)?;
        }
        Ok(self.complete)
    }
}

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        other => return Err(Error::invalid("shard tensor", format!("dtype {other:?} is not stored"))),
    })
}

fn kind_of(dtype: Dtype, path: &Path) -> Result<Kind> {
    Ok(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        other => return Err(Error::BadSafetensors { path: path.into(), why: format!("unexpected dtype {other:?}") }),
    })
}

/// Write tensors in their own dtype, with one metadata entry (`sdscope`: JSON), flushed to disk.
pub fn write_safetensors(path: &Path, tensors: &[(&str, &Tensor)], metadata: &serde_json::Value) -> Result<()> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
        let dtype = dtype_of(t.kind())?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, numel)?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.to_string(), dtype, shape, bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::invalid(format!("tensor `{name}`"), e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([(METADATA_KEY.to_string(), metadata.to_string())]);
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::BadSafetensors { path: path.to_path_buf(), why: e.to_string() })?;
    write_synced(path, &bytes)
}

/// Tensors and the `sdscope` metadata of a shard file.
pub struct ShardFile {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: serde_json::Value,
}

/// Read a shard file (any safetensors file written by [`write_safetensors`]).
pub fn read_safetensors(path: &Path) -> Result<ShardFile> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingFile { path: path.to_path_buf(), hint: None },
        _ => Error::io(path, e),
    })?;
    let bad = |why: String| Error::BadSafetensors { path: path.to_path_buf(), why };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let metadata = match header.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)) {
        Some(text) => serde_json::from_str(text).map_err(|e| bad(format!("metadata: {e}")))?,
        None => serde_json::Value::Null,
    };
    let parsed = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut tensors = HashMap::new();
    for (name, view) in parsed.tensors() {
        let kind = kind_of(view.dtype(), path)?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        tensors.insert(name, Tensor::f_from_data_size(view.data(), &shape, kind)?);
    }
    Ok(ShardFile { tensors, metadata })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let mut file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_files_round_trip_in_their_dtype() {
        let dir = std::env::temp_dir().join(format!("sdscope-shard-io-{}", std::process::id()));
        let x = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0]).reshape([2, 2]).to_kind(Kind::Half);
        let step = Tensor::from_slice(&[0i64, 3]);
        let meta = serde_json::json!({"layout": ["item", "channel"]});
        let path = dir.join("a.safetensors");
        write_safetensors(&path, &[("x", &x), ("step", &step)], &meta).unwrap();
        let first = std::fs::read(&path).unwrap();
        write_safetensors(&path, &[("step", &step), ("x", &x)], &meta).unwrap();
        assert_eq!(first, std::fs::read(&path).unwrap(), "the same tensors give the same bytes");
        let back = read_safetensors(&path).unwrap();
        assert_eq!(back.tensors["x"].kind(), Kind::Half);
        assert!(back.tensors["x"].equal(&x));
        assert!(back.tensors["step"].equal(&step));
        assert_eq!(back.metadata, meta);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shard_is_visible_only_when_finished() {
        let root = std::env::temp_dir().join(format!("sdscope-shard-writer-{}", std::process::id()));
        let writer = ShardWriter::begin(&root, 1, 3).unwrap().unwrap();
        writer.write_items(&[serde_json::json!({"index": 0})]).unwrap();
        assert!(!shard_dir(&root, 1, 3).exists());
        // A second attempt removes the first one's partial folder.
        let again = ShardWriter::begin(&root, 1, 3).unwrap().unwrap();
        assert!(!writer.dir().exists() || writer.dir() == again.dir());
        again.write_items(&[serde_json::json!({"index": 0})]).unwrap();
        let done = again.finish().unwrap();
        assert!(done.join(ITEMS_FILE).is_file());
        assert!(ShardWriter::begin(&root, 1, 3).unwrap().is_none(), "a complete shard is skipped");
        assert!(partial_dirs(&root, 1, 3).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
