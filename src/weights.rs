//! Safetensors weights as one name → tensor table over several files.
//!
//! Model weights ([`Weights::open_mapped`]) are memory-mapped, privately (copy-on-write), one mapping per file:
//! a tensor whose stored dtype is the working dtype and whose data is aligned for it is a view of the mapping, so
//! loading reads nothing but headers and a pass reads (through the page cache) only the weights it touches. A
//! write into such a tensor changes a private copy of the page, never the file. Each view holds the mapping
//! (libtorch's storage owns it), which is unmapped when the last tensor viewing it is dropped. Other tensors (a
//! cast, a device move, unaligned data) are read and copied one by one. Data files ([`Weights::open`]) are always
//! copied, so that rewriting such a file in place can never pull pages from under a live tensor.
//!
//! Pickle checkpoints (`.bin`, `.ckpt`, `.pt`, `.pth`) are refused: loading them can run arbitrary code.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    kind: Kind,
    shape: Vec<i64>,
    begin: u64,
    end: u64,
}

/// A set of safetensors files seen as one name → tensor table.
#[derive(Debug)]
pub struct Weights {
    files: Vec<(PathBuf, File)>,
    /// Per file, its private mapping as a byte tensor once a view needed it (`Some(None)` where mapping failed).
    /// A mutex rather than a `OnceLock`: tensors are `Send` but not `Sync`.
    mappings: Vec<Mutex<Option<Option<Tensor>>>>,
    /// Whether tensors may view the files' mappings.
    mapped: bool,
    entries: HashMap<String, Entry>,
    dtype: Kind,
    device: Device,
}

/// Refuse pickle checkpoints with a message that says why.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if matches!(ext.as_str(), "bin" | "ckpt" | "pt" | "pth" | "pkl" | "pickle") {
        return Err(Error::PickleRefused { path: path.to_path_buf(), kind: format!(".{ext}") });
    }
    Ok(())
}

fn kind_of(dtype: &str) -> Option<Kind> {
    Some(match dtype {
        "F32" => Kind::Float,
        "F16" => Kind::Half,
        "BF16" => Kind::BFloat16,
        "F64" => Kind::Double,
        "I64" => Kind::Int64,
        "I32" => Kind::Int,
        "I16" => Kind::Int16,
        "I8" => Kind::Int8,
        "U8" => Kind::Uint8,
        "BOOL" => Kind::Bool,
        _ => return None,
    })
}

/// Diffusers' legacy VAE attention names, mapped to the current ones.
fn modern_name(name: &str) -> String {
    for (old, new) in [(".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0.")]
    {
        if name.contains(old) && name.contains("attentions.") {
            return name.replacen(old, new, 1);
        }
    }
    name.to_string()
}

impl Weights {
    /// Open model weights: tensors view a private memory map of their file where the stored dtype is `dtype`, the
    /// device is the CPU and the data is aligned; the others are read, cast to `dtype` (floating ones only) and
    /// moved to `device`, one by one. `SDSCOPE_NO_MMAP=1` turns views off (every tensor copied).
    pub fn open_mapped(paths: &[PathBuf], dtype: Kind, device: Device) -> Result<Self> {
        let mut weights = Self::open(paths, dtype, device)?;
        weights.mapped = std::env::var_os("SDSCOPE_NO_MMAP").is_none_or(|v| v.is_empty() || v == "0");
        Ok(weights)
    }

    /// Open safetensors files whose tensors are always read and copied (cast to `dtype`, floating ones only, and
    /// moved to `device`).
    pub fn open(paths: &[PathBuf], dtype: Kind, device: Device) -> Result<Self> {
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            refuse_pickle(path)?;
            let file = File::open(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::MissingFile { path: path.clone(), hint: None },
                _ => Error::io(path, e),
            })?;
            for (name, entry) in read_header(path, &file, index)? {
                entries.insert(modern_name(&name), entry);
            }
            files.push((path.clone(), file));
        }
        let mappings = files.iter().map(|_| Mutex::new(None)).collect();
        Ok(Self { files, mappings, mapped: false, entries, dtype, device })
    }

    pub fn dtype(&self) -> Kind {
        self.dtype
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.entries.keys().cloned().collect();
        names.sort();
        names
    }

    /// The stored shape of a tensor, if present.
    pub fn shape_of(&self, name: &str) -> Option<&[i64]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    fn file_for_errors(&self) -> PathBuf {
        match self.files.as_slice() {
            [(p, _)] => p.clone(),
            _ => PathBuf::from(self.files.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(" + ")),
        }
    }

    /// Read one tensor, checking its shape when `expected` is given.
    pub fn get(&self, name: &str, expected: Option<&[i64]>) -> Result<Tensor> {
        let entry = self.entries.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            file: self.file_for_errors(),
            expected: expected.map(|s| s.to_vec()),
        })?;
        let (path, file) = &self.files[entry.file];
        let mut shape = entry.shape.clone();
        if let Some(exp) = expected {
            if shape != exp {
                // Legacy 1×1-conv attention projections stored where a linear weight is expected (and back).
                let numel = |s: &[i64]| s.iter().try_fold(1i64, |n, &d| n.checked_mul(d));
                let same_numel = numel(&shape).is_some() && numel(&shape) == numel(exp);
                let squeezable = same_numel && shape.iter().filter(|&&d| d != 1).eq(exp.iter().filter(|&&d| d != 1));
                if !squeezable {
                    return Err(Error::ShapeMismatch {
                        name: name.to_string(),
                        file: path.clone(),
                        found: shape,
                        expected: exp.to_vec(),
                    });
                }
                shape = exp.to_vec();
            }
        }
        let floating = matches!(entry.kind, Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double);
        if self.mapped && self.device == Device::Cpu && (entry.kind == self.dtype || !floating) {
            if let Some(view) = self.view(entry, &shape)? {
                return Ok(view);
            }
        }
        let mut bytes = vec![0u8; (entry.end - entry.begin) as usize];
        file.read_exact_at(&mut bytes, entry.begin).map_err(|e| Error::BadSafetensors {
            path: path.clone(),
            why: format!("reading `{name}`: {e} (is the file truncated?)"),
        })?;
        let tensor = Tensor::f_from_data_size(&bytes, &shape, entry.kind)?;
        drop(bytes);
        let tensor = if floating && entry.kind != self.dtype { tensor.f_to_kind(self.dtype)? } else { tensor };
        Ok(if self.device != Device::Cpu { tensor.f_to_device(self.device)? } else { tensor })
    }

    /// A tensor viewing its file's mapping, or `None` where it cannot (unaligned or empty data, a path that is
    /// not UTF-8, a file that cannot be mapped): the caller copies instead.
    fn view(&self, entry: &Entry, shape: &[i64]) -> Result<Option<Tensor>> {
        let size = entry.kind.elt_size_in_bytes() as u64;
        if entry.end == entry.begin || !entry.begin.is_multiple_of(size) {
            return Ok(None);
        }
        let (path, file) = &self.files[entry.file];
        let mapping = {
            let mut slot = self.mappings[entry.file].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slot.get_or_insert_with(|| {
                let len = file.metadata().ok()?.len();
                let name = path.to_str()?;
                // shared = false: a private (copy-on-write) mapping of the whole file, read lazily by page faults.
                Tensor::f_from_file(name, false, Some(len as i64), (Kind::Uint8, Device::Cpu)).ok()
            })
            .as_ref()
            .map(|t| t.shallow_clone())
        };
        let Some(mapping) = mapping else { return Ok(None) };
        let bytes = mapping.f_narrow(0, entry.begin as i64, (entry.end - entry.begin) as i64)?;
        Ok(Some(bytes.f_view_dtype(entry.kind)?.f_reshape(shape)?))
    }

    /// Whether tensors of this table view memory-mapped files.
    pub fn is_mapped(&self) -> bool {
        self.mapped
    }

    /// A builder rooted at the top of the name table.
    pub fn root(&self) -> VarBuilder<'_> {
        VarBuilder { weights: self, prefix: String::new() }
    }
}

fn read_header(path: &Path, file: &File, index: usize) -> Result<Vec<(String, Entry)>> {
    let bad = |why: String| Error::BadSafetensors { path: path.to_path_buf(), why };
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut size = [0u8; 8];
    file.read_exact_at(&mut size, 0).map_err(|_| bad(format!("only {len} bytes, not even a header")))?;
    let header_len = u64::from_le_bytes(size);
    if header_len > 100_000_000 || 8 + header_len > len {
        return Err(bad(format!(
            "header length {header_len} does not fit in a {len}-byte file (truncated or not safetensors)"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(|e| bad(e.to_string()))?;
    let table: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let data_start = 8 + header_len;
    let mut out = Vec::with_capacity(table.len());
    for (name, info) in table {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info["dtype"].as_str().unwrap_or("?");
        let kind = kind_of(dtype).ok_or_else(|| bad(format!("tensor `{name}` has unsupported dtype {dtype}")))?;
        let shape: Vec<i64> = serde_json::from_value(info["shape"].clone())
            .map_err(|e| bad(format!("tensor `{name}` has a bad shape: {e}")))?;
        let offsets: [u64; 2] = serde_json::from_value(info["data_offsets"].clone())
            .map_err(|e| bad(format!("tensor `{name}` has bad data_offsets: {e}")))?;
        if let Some(d) = shape.iter().find(|&&d| d < 0) {
            return Err(bad(format!("tensor `{name}` has a negative dimension {d} in its shape {shape:?}")));
        }
        // Checked: a header may claim sizes whose product or offsets overflow.
        let expected_bytes = shape
            .iter()
            .try_fold(kind.elt_size_in_bytes() as u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("tensor `{name}` has an absurd shape {shape:?}")))?;
        let (begin, end) = match (data_start.checked_add(offsets[0]), data_start.checked_add(offsets[1])) {
            (Some(begin), Some(end)) if begin <= end => (begin, end),
            _ => return Err(bad(format!("tensor `{name}` has bad data_offsets {offsets:?}"))),
        };
        if end - begin != expected_bytes {
            return Err(bad(format!("tensor `{name}` has {} bytes for shape {shape:?} {dtype}", end - begin)));
        }
        if end > len {
            return Err(bad(format!(
                "tensor `{name}` ends at byte {end} but the file has {len} bytes (truncated download?)"
            )));
        }
        out.push((name, Entry { file: index, kind, shape, begin, end }));
    }
    Ok(out)
}

#[derive(Clone)]
pub struct VarBuilder<'a> {
    weights: &'a Weights,
    prefix: String,
}

impl<'a> VarBuilder<'a> {
    /// Descend into a child module (`vb.pp("down_blocks").pp(0)`).
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Self { weights: self.weights, prefix }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A tensor that must exist with exactly this shape.
    pub fn get(&self, name: &str, shape: &[i64]) -> Result<Tensor> {
        self.weights.get(&self.full(name), Some(shape))
    }

    /// A tensor that may be absent (e.g. an optional bias).
    pub fn get_opt(&self, name: &str, shape: &[i64]) -> Result<Option<Tensor>> {
        let full = self.full(name);
        if self.weights.contains(&full) {
            self.weights.get(&full, Some(shape)).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(&self.full(name))
    }

    /// Shape of a stored tensor below this prefix.
    pub fn shape_of(&self, name: &str) -> Option<Vec<i64>> {
        self.weights.shape_of(&self.full(name)).map(|s| s.to_vec())
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn dtype(&self) -> Kind {
        self.weights.dtype
    }

    pub fn device(&self) -> Device {
        self.weights.device
    }
}
