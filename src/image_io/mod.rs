//! Images in and out: any common format → RGB float tensor in [-1, 1], as diffusers' `VaeImageProcessor` does.

mod resample;

use crate::error::{Error, Result};
pub use resample::{resize_lanczos, resize_pillow, Filter};
use std::path::Path;
use tch::{Kind, Tensor};

/// A prepared input image.
pub struct PreparedImage {
    /// `[1, 3, H, W]` float32 in [-1, 1].
    pub pixels: Tensor,
    /// Size used, `(height, width)`, multiples of `multiple`.
    pub size: (i64, i64),
    /// Original size when it had to be reduced to a multiple of 8.
    pub resized_from: Option<(i64, i64)>,
}

impl PreparedImage {
    /// Another handle on the same pixels (to extract the same image several times).
    pub fn shallow_clone(&self) -> Self {
        Self { pixels: self.pixels.shallow_clone(), size: self.size, resized_from: self.resized_from }
    }
}

/// Load an image file (grayscale, alpha and 16-bit images are converted to 8-bit RGB like PIL's
/// `convert("RGB")`) and scale it to [-1, 1]. Sizes that are not multiples of `multiple` are reduced to the
/// nearest smaller multiple with Pillow's Lanczos resampling, byte for byte what diffusers' `VaeImageProcessor`
/// feeds the VAE.
pub fn load_image(path: &Path, multiple: u32) -> Result<PreparedImage> {
    let rgb = open_rgb(path)?;
    prepare_rgb(rgb, multiple).map_err(|e| match e {
        Error::InvalidArgument { why, .. } => Error::BadImage { path: path.to_path_buf(), why },
        other => other,
    })
}

/// Load an image as a `side`×`side` square: the shortest side scaled to `side` (Pillow's Lanczos, byte for
/// byte), then the centre cropped, as dataset pipelines do so that every item has the same shape. `side` must be a
/// multiple of 8. `resized_from` holds the original size.
pub fn load_square(path: &Path, side: u32) -> Result<PreparedImage> {
    if side == 0 || !side.is_multiple_of(8) {
        return Err(Error::invalid(format!("image size {side}"), "must be a positive multiple of 8 (e.g. 512)"));
    }
    let rgb = open_rgb(path)?;
    let (w, h) = rgb.dimensions();
    let scale = side as f64 / w.min(h) as f64;
    let scaled_side = |n: u32| (n as f64 * scale).round().min(u32::MAX as f64) as u32;
    let (sw, sh) = (scaled_side(w).max(side), scaled_side(h).max(side));
    // A very elongated image scaled up to `side` on its short side would be huge on its long one.
    check_pixels(path, &format!("scaled to a {side}-pixel square, the image"), sw, sh)?;
    let scaled = if (sw, sh) == (w, h) { rgb } else { resize_lanczos(&rgb, sw, sh) };
    let cropped = image::imageops::crop_imm(&scaled, (sw - side) / 2, (sh - side) / 2, side, side).to_image();
    let mut prepared = prepare_rgb(cropped, 8)?;
    prepared.resized_from = ((w, h) != (side, side)).then_some((h as i64, w as i64));
    Ok(prepared)
}

/// Images larger than this many pixels are refused (decompression bombs: a few bytes of PNG or WebP can claim
/// gigapixels); `SDSCOPE_MAX_PIXELS` changes it.
pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// The pixel cap: `SDSCOPE_MAX_PIXELS` when set to a positive integer, else [`DEFAULT_MAX_PIXELS`].
pub fn max_pixels() -> u64 {
    std::env::var("SDSCOPE_MAX_PIXELS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_MAX_PIXELS)
}

fn check_pixels(path: &Path, what: &str, w: u32, h: u32) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::BadImage { path: path.to_path_buf(), why: format!("{what} is {w}×{h}: it has no pixels") });
    }
    let (pixels, cap) = (u64::from(w) * u64::from(h), max_pixels());
    if pixels > cap {
        return Err(Error::BadImage {
            path: path.to_path_buf(),
            why: format!(
                "{what} is {w}×{h} = {pixels} pixels, more than the cap of {cap} (a decompression bomb?); set \
                 SDSCOPE_MAX_PIXELS to allow more"
            ),
        });
    }
    Ok(())
}

fn open_rgb(path: &Path) -> Result<image::RgbImage> {
    Ok(read_image(path)?.to_rgb8())
}

/// Decode an image file, checking the pixel cap from its header before decoding.
pub fn read_image(path: &Path) -> Result<image::DynamicImage> {
    use image::ImageDecoder;
    let bad = |e: image::ImageError| match e {
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::NotFound => {
            Error::MissingFile { path: path.to_path_buf(), hint: None }
        }
        other => Error::BadImage { path: path.to_path_buf(), why: other.to_string() },
    };
    let reader = image::ImageReader::open(path).map_err(|e| bad(e.into()))?;
    // The decoder reads the dimensions from the header: the pixel cap is checked before anything is decoded,
    // and the decoded buffer (up to 16 bytes a pixel) must fit the image crate's allocation limit as well.
    let decoder = reader.into_decoder().map_err(bad)?;
    let (w, h) = decoder.dimensions();
    check_pixels(path, "the image", w, h)?;
    let limit = image::Limits::default().max_alloc.unwrap_or(u64::MAX).max(max_pixels().saturating_mul(16));
    if decoder.total_bytes() > limit {
        return Err(Error::BadImage {
            path: path.to_path_buf(),
            why: format!("decoding needs {} bytes, more than the limit of {limit}", decoder.total_bytes()),
        });
    }
    image::DynamicImage::from_decoder(decoder).map_err(bad)
}

/// The same for an image already in memory.
pub fn prepare_rgb(rgb: image::RgbImage, multiple: u32) -> Result<PreparedImage> {
    if multiple == 0 {
        return Err(Error::invalid("image size multiple", "must be positive (8 for Stable Diffusion's VAE)"));
    }
    let (w, h) = rgb.dimensions();
    let (tw, th) = (w - w % multiple, h - h % multiple);
    if tw == 0 || th == 0 {
        return Err(Error::invalid("image", format!("{w}×{h} is smaller than the minimum {multiple}×{multiple}")));
    }
    let (rgb, resized_from) =
        if (tw, th) != (w, h) { (resize_lanczos(&rgb, tw, th), Some((h as i64, w as i64))) } else { (rgb, None) };
    let bytes = rgb.into_raw();
    // Scaled in HWC order and then permuted, without making it contiguous: the result has the channels-last
    // strides of diffusers' `from_numpy(x.transpose(0, 3, 1, 2))`, and libtorch then picks the same
    // convolution layouts, so the VAE latents' layout (and with it `randn_like`'s draw order) is the same.
    let pixels = Tensor::from_slice(&bytes)
        .f_reshape([1, th as i64, tw as i64, 3])?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(255.0)?
        .f_mul_scalar(2.0)?
        .f_sub_scalar(1.0)?
        .f_permute([0, 3, 1, 2])?;
    Ok(PreparedImage { pixels, size: (th as i64, tw as i64), resized_from })
}

/// Write an 8-bit RGB image as PNG.
/// # Shapes
/// `rgb: [H, W, 3]` uint8
pub fn save_rgb8_png(rgb: &Tensor, path: &Path) -> Result<()> {
    let size = rgb.size();
    if size.len() != 3 || size[2] != 3 || rgb.kind() != tch::Kind::Uint8 {
        return Err(Error::Shape {
            context: format!("writing {}", path.display()),
            why: format!("expected a uint8 [H, W, 3] image, got {:?} {:?}", rgb.kind(), size),
        });
    }
    let data = Vec::<u8>::try_from(rgb.f_contiguous()?.f_flatten(0, -1)?)?;
    let img = image::RgbImage::from_raw(size[1] as u32, size[0] as u32, data)
        .ok_or_else(|| Error::invalid("image buffer", "has the wrong length"))?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::invalid(format!("writing {}", path.display()), e.to_string()))
}
