//! transformers' Pillow-based `CLIPImageProcessor`: RGB (alpha composited onto white), shortest side to `size`
//! with Pillow's bicubic, centre crop, rescale, normalise — byte for byte and bit for bit.

use crate::error::{Error, Result};
use crate::image_io::{read_image, resize_pillow, Filter};
use image::RgbImage;
use serde::Deserialize;
use std::path::Path;
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SizeSpec {
    Shortest { shortest_edge: u32 },
    HeightWidth { height: u32, width: u32 },
    Square(u32),
}

fn yes() -> bool {
    true
}
fn default_size() -> SizeSpec {
    SizeSpec::Shortest { shortest_edge: 224 }
}
fn default_crop() -> SizeSpec {
    SizeSpec::HeightWidth { height: 224, width: 224 }
}
fn default_rescale() -> f64 {
    1.0 / 255.0
}
fn default_mean() -> [f64; 3] {
    [0.48145466, 0.4578275, 0.40821073]
}
fn default_std() -> [f64; 3] {
    [0.26862954, 0.26130258, 0.27577711]
}
fn default_resample() -> u32 {
    3
}

/// `preprocessor_config.json` (defaults: transformers' `CLIPImageProcessor`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipImageProcessor {
    #[serde(default = "yes")]
    pub do_resize: bool,
    #[serde(default = "default_size")]
    size: SizeSpec,
    #[serde(default = "default_resample")]
    pub resample: u32,
    #[serde(default = "yes")]
    pub do_center_crop: bool,
    #[serde(default = "default_crop")]
    crop_size: SizeSpec,
    #[serde(default = "yes")]
    pub do_rescale: bool,
    #[serde(default = "default_rescale")]
    pub rescale_factor: f64,
    #[serde(default = "yes")]
    pub do_normalize: bool,
    #[serde(default = "default_mean")]
    pub image_mean: [f64; 3],
    #[serde(default = "default_std")]
    pub image_std: [f64; 3],
}

impl Default for ClipImageProcessor {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl ClipImageProcessor {
    /// Read a `preprocessor_config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let p: Self =
            serde_json::from_str(&text).map_err(|e| Error::BadConfig { path: path.into(), why: e.to_string() })?;
        let filter_ok = matches!(p.resample, 1 | 3);
        if !filter_ok {
            return Err(Error::Unsupported {
                path: path.into(),
                why: format!("resample {} (supported: 3 = bicubic, 1 = Lanczos)", p.resample),
            });
        }
        if p.image_std.contains(&0.0) {
            return Err(Error::BadConfig { path: path.into(), why: "image_std has a zero".into() });
        }
        Ok(p)
    }

    fn filter(&self) -> Filter {
        if self.resample == 1 {
            Filter::Lanczos
        } else {
            Filter::Bicubic
        }
    }

    /// The output side of the crop (height, width).
    pub fn crop(&self) -> (u32, u32) {
        match self.crop_size {
            SizeSpec::HeightWidth { height, width } => (height, width),
            SizeSpec::Square(s) | SizeSpec::Shortest { shortest_edge: s } => (s, s),
        }
    }

    /// The size after the resize step, as transformers computes it (the long side truncated).
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        match self.size {
            SizeSpec::Shortest { shortest_edge: s } => {
                let (short, long) = if width <= height { (width, height) } else { (height, width) };
                let long_out = (s as f64 * long as f64 / short as f64) as u32;
                if width <= height {
                    (s, long_out.max(1))
                } else {
                    (long_out.max(1), s)
                }
            }
            SizeSpec::HeightWidth { height, width } => (width, height),
            SizeSpec::Square(s) => (s, s),
        }
    }

    /// The resize step alone (Pillow's bicubic, byte for byte).
    pub fn resize(&self, rgb: &RgbImage) -> RgbImage {
        if !self.do_resize {
            return rgb.clone();
        }
        let (w, h) = self.resized_size(rgb.width().max(1), rgb.height().max(1));
        if (w, h) == rgb.dimensions() {
            rgb.clone()
        } else {
            resize_pillow(rgb, w, h, self.filter())
        }
    }

    /// Centre crop (zero padding where the image is smaller), rescale and normalise.
    /// # Shapes
    /// → `[3, crop_h, crop_w]` float32.
    pub fn finish(&self, rgb: &RgbImage) -> Result<Tensor> {
        let (w, h) = (rgb.width() as i64, rgb.height() as i64);
        let pixels = Tensor::from_slice(rgb.as_raw()).f_reshape([h, w, 3])?;
        let pixels = if self.do_center_crop {
            let (ch, cw) = self.crop();
            let (ch, cw) = (ch as i64, cw as i64);
            let (top, left) = ((h - ch).div_euclid(2), (w - cw).div_euclid(2));
            let out = Tensor::zeros([ch, cw, 3], (Kind::Uint8, tch::Device::Cpu));
            // The overlap of the crop window with the image.
            let (y0, x0) = (top.max(0), left.max(0));
            let (y1, x1) = ((top + ch).min(h), (left + cw).min(w));
            if y1 > y0 && x1 > x0 {
                let src = pixels.f_narrow(0, y0, y1 - y0)?.f_narrow(1, x0, x1 - x0)?;
                out.f_narrow(0, y0 - top, y1 - y0)?.f_narrow(1, x0 - left, x1 - x0)?.f_copy_(&src)?;
            }
            out
        } else {
            pixels
        };
        // As transformers: float32(uint8 · float64 factor), then (x − mean) / std in float32.
        let mut x = pixels.f_to_kind(Kind::Double)?;
        if self.do_rescale {
            x = x.f_mul_scalar(self.rescale_factor)?;
        }
        let mut x = x.f_to_kind(Kind::Float)?;
        if self.do_normalize {
            let mean = Tensor::from_slice(&self.image_mean.map(|m| m as f32));
            let std = Tensor::from_slice(&self.image_std.map(|s| s as f32));
            x = x.f_sub(&mean)?.f_div(&std)?;
        }
        Ok(x.f_permute([2, 0, 1])?.f_contiguous()?)
    }

    /// An image file through every step.
    /// # Shapes
    /// → `[3, crop_h, crop_w]` float32.
    pub fn preprocess(&self, path: &Path) -> Result<Tensor> {
        self.finish(&self.resize(&load_rgb(path)?))
    }
}

/// An image as transformers' `convert_rgb` gives it: alpha composited onto white with Pillow's integer
/// arithmetic (`Image.alpha_composite`), grey replicated, palette expanded.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let img = read_image(path)?;
    if !img.color().has_alpha() {
        return Ok(img.to_rgb8());
    }
    let rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for p in rgba.pixels() {
        let a = p.0[3] as u32;
        let outa255 = a * 255 + 255 * (255 - a);
        let c1 = a * 255 * 255 * 128 / outa255;
        let c2 = 255 * 128 - c1;
        for c in 0..3 {
            let t = p.0[c] as u32 * c1 + 255 * c2 + (0x80 << 7);
            out.push(((((t >> 8) + t) >> 8) >> 7) as u8);
        }
    }
    Ok(RgbImage::from_raw(w, h, out).expect("the buffer has width × height × 3 bytes"))
}
