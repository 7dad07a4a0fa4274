//! Reading and writing float32 tensors as safetensors files.

use crate::error::{Error, Result};
use crate::weights::Weights;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Write tensors (converted to float32, contiguous) under the given names.
pub fn save(path: &Path, tensors: &[(String, Tensor)], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let values = Vec::<f32>::try_from(&t.f_flatten(0, -1)?)?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.clone(), shape, bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::invalid(format!("tensor `{name}`"), e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    safetensors::serialize_to_file(views, metadata, path)
        .map_err(|e| Error::BadSafetensors { path: path.to_path_buf(), why: e.to_string() })
}

/// Read every tensor of a safetensors file (float tensors as float32) and its metadata.
pub fn load(path: &Path) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let weights = Weights::open(&[path.to_path_buf()], Kind::Float, Device::Cpu)?;
    let mut out = HashMap::new();
    for name in weights.names() {
        let t = weights.get(&name, None)?;
        out.insert(name, t);
    }
    let metadata = read_metadata(path)?;
    Ok((out, metadata))
}

/// The `__metadata__` table, read from the header alone (the tensors were already read by [`Weights`], which
/// also validated the header).
fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let bad = |why: String| Error::BadSafetensors { path: path.to_path_buf(), why };
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut size = [0u8; 8];
    file.read_exact(&mut size).map_err(|e| bad(e.to_string()))?;
    let header_len = u64::from_le_bytes(size);
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if header_len > file_len.saturating_sub(8) {
        return Err(bad(format!("header length {header_len} does not fit in a {file_len}-byte file")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| bad(e.to_string()))?;
    let table: serde_json::Value = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    Ok(match table.get("__metadata__") {
        Some(meta) => serde_json::from_value(meta.clone()).map_err(|e| bad(format!("__metadata__: {e}")))?,
        None => HashMap::new(),
    })
}
