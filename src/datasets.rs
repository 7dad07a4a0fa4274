//! The sample photos in `datasets/` (public domain / CC0, see `datasets/ATTRIBUTION.md`) and image-folder
//! loaders.

use crate::error::{Error, Result};
use crate::image_io::{prepare_rgb, resize_lanczos, PreparedImage};
use std::path::{Path, PathBuf};

/// One sample photo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub name: &'static str,
    pub path: PathBuf,
    pub licence: &'static str,
}

const SAMPLES: [(&str, &str, &str); 4] = [
    ("cat", "cat.jpg", "CC0, Stefan van der Walt"),
    ("astronaut", "astronaut.jpg", "public domain, NASA"),
    ("coffee", "coffee.jpg", "CC0, Rachel Michetti"),
    ("rocket", "rocket.jpg", "public domain, SpaceX"),
];

/// The folder holding the samples (inside the sdscope source tree).
pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets").join("samples")
}

/// Every sample photo: cat, astronaut, coffee, rocket.
pub fn samples() -> Vec<Sample> {
    SAMPLES.iter().map(|(name, file, licence)| Sample { name, path: samples_dir().join(file), licence }).collect()
}

/// The path of a sample photo by name.
pub fn sample(name: &str) -> Result<PathBuf> {
    samples().into_iter().find(|s| s.name.eq_ignore_ascii_case(name)).map(|s| s.path).ok_or_else(|| {
        Error::invalid(format!("sample `{name}`"), format!("known: {}", SAMPLES.map(|s| s.0).join(", ")))
    })
}

/// The image files of a folder (png, jpg, jpeg, webp, bmp, tif, tiff), sorted by name.
pub fn image_folder(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"].contains(&e.to_ascii_lowercase().as_str())
            })
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Load an image reduced (Pillow's Lanczos, see [`resize_lanczos`]) so that its long side is at most
/// `max_side`, then to multiples of 8.
pub fn load_resized(path: impl AsRef<Path>, max_side: u32) -> Result<(String, PreparedImage)> {
    let path = path.as_ref();
    let img =
        image::open(path).map_err(|e| Error::BadImage { path: path.to_path_buf(), why: e.to_string() })?.to_rgb8();
    let (w, h) = img.dimensions();
    let scale = (max_side as f64 / w.max(h) as f64).min(1.0);
    let (nw, nh) = (((w as f64 * scale).round() as u32).max(8), ((h as f64 * scale).round() as u32).max(8));
    let img = if (nw, nh) == (w, h) { img } else { resize_lanczos(&img, nw, nh) };
    Ok((path.display().to_string(), prepare_rgb(img, 8)?))
}
