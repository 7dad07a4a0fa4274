//! `Representations`: what extraction returns. Per position, one tensor per image stacked over timesteps.

use crate::error::{Error, Result};
use crate::tensor_io;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Where one image came from and how it was prepared.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageInfo {
    pub source: String,
    /// `(height, width)` used for extraction.
    pub size: (i64, i64),
    /// Original size, when it was reduced to a multiple of 8.
    pub resized_from: Option<(i64, i64)>,
}

/// Representations at several positions, for several images and timesteps.
///
/// # Shapes
/// For each position and image: `[T, ..native]`, where the native shape is the module's output without the
/// batch dimension (`[C, h, w]` for blocks, `[h·w, C]` for transformer blocks and attention layers).
#[derive(Debug)]
pub struct Representations {
    positions: Vec<String>,
    timesteps: Vec<i64>,
    images: Vec<ImageInfo>,
    /// position → per image `[T, ..native]`
    data: BTreeMap<String, Vec<Tensor>>,
}

impl Representations {
    pub(crate) fn new(positions: Vec<String>, timesteps: Vec<i64>) -> Self {
        let data = positions.iter().map(|p| (p.clone(), Vec::new())).collect();
        Self { positions, timesteps, images: Vec::new(), data }
    }

    /// Add one image's captures: position → `[T, ..native]`.
    pub(crate) fn push_image(&mut self, info: ImageInfo, mut per_position: BTreeMap<String, Tensor>) -> Result<()> {
        for p in &self.positions {
            let t = per_position
                .remove(p)
                .ok_or_else(|| Error::invalid("representations", format!("no capture for `{p}`")))?;
            self.data.get_mut(p).expect("positions and data share keys").push(t);
        }
        self.images.push(info);
        Ok(())
    }

    pub fn positions(&self) -> &[String] {
        &self.positions
    }

    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    pub fn images(&self) -> &[ImageInfo] {
        &self.images
    }

    fn unknown(&self, position: &str) -> Error {
        Error::UnknownPosition { given: position.to_string(), valid: self.positions.clone() }
    }

    fn step_index(&self, step: i64) -> Result<usize> {
        self.timesteps.iter().position(|&t| t == step).ok_or_else(|| {
            Error::invalid(
                format!("timestep {step}"),
                format!("not among the extracted timesteps {:?}", self.timesteps),
            )
        })
    }

    /// One image's representation at a position: `[T, ..native]`.
    pub fn image(&self, position: &str, image: usize) -> Result<&Tensor> {
        let per_image = self.data.get(position).ok_or_else(|| self.unknown(position))?;
        per_image
            .get(image)
            .ok_or_else(|| Error::invalid(format!("image {image}"), format!("there are {} images", per_image.len())))
    }

    /// All images at a position: `[N, T, ..native]` (images must share a size).
    pub fn get(&self, position: &str) -> Result<Tensor> {
        let per_image = self.data.get(position).ok_or_else(|| self.unknown(position))?;
        let shapes: Vec<Vec<i64>> = per_image.iter().map(|t| t.size()).collect();
        if shapes.windows(2).any(|w| w[0] != w[1]) {
            return Err(Error::Shape {
                context: format!("stacking `{position}`"),
                why: format!("images have different shapes {shapes:?}; use `image(position, i)`"),
            });
        }
        Ok(Tensor::f_stack(per_image, 0)?)
    }

    /// A subset by positions and timesteps (sdhelper's `.at`).
    pub fn at<S: AsRef<str>>(&self, positions: &[S], steps: &[i64]) -> Result<Self> {
        let idx: Vec<i64> = steps.iter().map(|&s| self.step_index(s).map(|i| i as i64)).collect::<Result<_>>()?;
        let index = Tensor::from_slice(&idx);
        let mut data = BTreeMap::new();
        let mut names = Vec::new();
        for p in positions {
            let p = p.as_ref();
            let per_image = self.data.get(p).ok_or_else(|| self.unknown(p))?;
            let picked =
                per_image.iter().map(|t| t.f_index_select(0, &index)).collect::<std::result::Result<Vec<_>, _>>()?;
            data.insert(p.to_string(), picked);
            names.push(p.to_string());
        }
        Ok(Self { positions: names, timesteps: steps.to_vec(), images: self.images.clone(), data })
    }

    /// Mean over the spatial axes: `[T, C, h, w]` → `[T, C]`; token outputs `[T, L, C]` → `[T, C]`.
    pub fn spatial_mean(&self) -> Result<Self> {
        let mut data = BTreeMap::new();
        for (p, per_image) in &self.data {
            let reduced = per_image
                .iter()
                .map(|t| match t.dim() {
                    4 => Ok(t.f_mean_dim([2i64, 3].as_slice(), false, Kind::Float)?),
                    3 => Ok(t.f_mean_dim([1i64].as_slice(), false, Kind::Float)?),
                    _ => Ok(t.shallow_clone()),
                })
                .collect::<Result<Vec<_>>>()?;
            data.insert(p.clone(), reduced);
        }
        Ok(Self {
            positions: self.positions.clone(),
            timesteps: self.timesteps.clone(),
            images: self.images.clone(),
            data,
        })
    }

    /// All spatial positions of one image on the largest grid: each map nearest-upsampled by an integer factor,
    /// zero-padded where the largest size is not a multiple, timesteps merged into channels.
    /// # Shapes
    /// → `[Σ_positions T·C, H_max, W_max]`, positions in order, timestep-major within a position.
    pub fn concat(&self, image: usize) -> Result<Tensor> {
        let maps: Vec<(&String, &Tensor)> =
            self.positions.iter().map(|p| Ok((p, self.image(p, image)?))).collect::<Result<_>>()?;
        if let Some((p, t)) = maps.iter().find(|(_, t)| t.dim() != 4) {
            return Err(Error::Shape {
                context: "concat".into(),
                why: format!("`{p}` has shape {:?}; only [T, C, h, w] maps can be concatenated", t.size()),
            });
        }
        let h_max = maps.iter().map(|(_, t)| t.size()[2]).max().unwrap_or(0);
        let w_max = maps.iter().map(|(_, t)| t.size()[3]).max().unwrap_or(0);
        let mut parts = Vec::new();
        for (_, t) in maps {
            let s = t.size();
            let (fh, fw) = (h_max / s[2], w_max / s[3]);
            let up = t.f_repeat_interleave_self_int(fh, 2, None)?.f_repeat_interleave_self_int(fw, 3, None)?;
            let (ph, pw) = (h_max - s[2] * fh, w_max - s[3] * fw);
            let up = if ph > 0 || pw > 0 { up.f_constant_pad_nd([0, pw, 0, ph])? } else { up };
            parts.push(up.f_reshape([s[0] * s[1], h_max, w_max])?);
        }
        Ok(Tensor::f_cat(&parts, 0)?)
    }

    /// One image's representation at one timestep as an `ndarray` (float32, native shape).
    pub fn to_ndarray(&self, position: &str, image: usize, step: i64) -> Result<ndarray::ArrayD<f32>> {
        let t = self
            .image(position, image)?
            .f_get(self.step_index(step)? as i64)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?;
        let array: ndarray::ArrayD<f32> = (&t).try_into()?;
        Ok(array)
    }

    /// Save as safetensors: one `[N, T, ..native]` tensor per position (or `position#i` per image when sizes
    /// differ), with timesteps and image infos in the metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        for p in &self.positions {
            match self.get(p) {
                Ok(t) => tensors.push((p.clone(), t)),
                Err(_) => {
                    for (i, t) in self.data[p].iter().enumerate() {
                        tensors.push((format!("{p}#{i}"), t.f_unsqueeze(0)?));
                    }
                }
            }
        }
        let mut meta = std::collections::HashMap::new();
        meta.insert(
            "sdscope".to_string(),
            serde_json::json!({"positions": self.positions, "timesteps": self.timesteps, "images": self.images})
                .to_string(),
        );
        tensor_io::save(path, &tensors, Some(meta))
    }

    /// Load what [`Representations::save`] wrote.
    pub fn load(path: &Path) -> Result<Self> {
        let (tensors, meta) = tensor_io::load(path)?;
        let bad = |why: &str| Error::BadSafetensors { path: PathBuf::from(path), why: why.to_string() };
        let info: serde_json::Value = serde_json::from_str(
            meta.get("sdscope").ok_or_else(|| bad("no sdscope metadata (not written by Representations::save)"))?,
        )?;
        let positions: Vec<String> = serde_json::from_value(info["positions"].clone())?;
        let timesteps: Vec<i64> = serde_json::from_value(info["timesteps"].clone())?;
        let images: Vec<ImageInfo> = serde_json::from_value(info["images"].clone())?;
        let mut data = BTreeMap::new();
        for p in &positions {
            let per_image = match tensors.get(p) {
                Some(t) => (0..images.len() as i64).map(|i| t.f_get(i)).collect::<std::result::Result<Vec<_>, _>>()?,
                None => (0..images.len())
                    .map(|i| {
                        tensors
                            .get(&format!("{p}#{i}"))
                            .map(|t| t.f_get(0))
                            .ok_or_else(|| bad(&format!("missing `{p}`")))?
                            .map_err(Error::from)
                    })
                    .collect::<Result<Vec<_>>>()?,
            };
            data.insert(p.clone(), per_image);
        }
        Ok(Self { positions, timesteps, images, data })
    }
}
