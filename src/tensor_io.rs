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

fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::BadSafetensors { path: path.to_path_buf(), why: e.to_string() })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}
