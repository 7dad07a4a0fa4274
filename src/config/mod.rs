//! Component configurations, read with serde from the `config.json` files of a diffusers folder.
//! Every architecture switch comes from these files; nothing is hard-coded per model.

pub mod clip;
pub mod mmdit;
pub mod scheduler;
pub mod t5;
pub mod unet;
pub mod vae;

pub use clip::ClipConfig;
pub use mmdit::Sd3TransformerConfig;
pub use scheduler::SchedulerConfig;
pub use t5::T5Config;
pub use unet::UNetConfig;
pub use vae::VaeConfig;

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::Path;

/// Read and parse a JSON config file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingFile { path: path.to_path_buf(), hint: None },
        _ => Error::io(path, e),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::BadConfig { path: path.to_path_buf(), why: e.to_string() })
}

/// The largest width or count a config may give: far above any real model, small enough that products of a few
/// of them (weight shapes, channel sums) cannot overflow.
pub const MAX_CONFIG_DIM: i64 = 1 << 20;

/// Check that every named value lies in `min..=MAX_CONFIG_DIM` (a config that asks for zero, negative or absurd
/// sizes is refused before anything is built from it).
pub(crate) fn check_dims<'a>(path: &Path, min: i64, dims: impl IntoIterator<Item = (&'a str, i64)>) -> Result<()> {
    for (what, value) in dims {
        if !(min..=MAX_CONFIG_DIM).contains(&value) {
            return Err(Error::BadConfig {
                path: path.to_path_buf(),
                why: format!("`{what}` = {value} is outside {min}..={MAX_CONFIG_DIM}"),
            });
        }
    }
    Ok(())
}

/// A value that configs write either once for all blocks or as one entry per block.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// Expand to one value per block; a list of the wrong length is an error.
    pub fn expand(&self, blocks: usize, what: &str, path: &Path) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); blocks]),
            PerBlock::Each(v) if v.len() == blocks => Ok(v.clone()),
            PerBlock::Each(v) => Err(Error::BadConfig {
                path: path.to_path_buf(),
                why: format!("`{what}` has {} entries but there are {blocks} blocks", v.len()),
            }),
        }
    }
}
