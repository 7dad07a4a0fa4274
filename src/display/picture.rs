//! Pictures: RGB images with a caption, shown inline as PNG; grids of pictures with captions.

use super::{emit, figure};
use crate::error::{Error, Result};
use crate::xattn::render::{html_grid, png_bytes, render, tensor_to_rgb, Colormap, RenderMode, RenderOptions};
use image::RgbImage;
use std::path::Path;
use tch::{Kind, Tensor};

/// An RGB picture with a caption.
#[derive(Clone)]
pub struct Picture {
    pub image: RgbImage,
    pub caption: String,
}

/// Size and caption only: evcxr falls back to `Debug` for a cell's value in some cases (see
/// `kernel/README.md`), and the pixels would fill the notebook with numbers.
impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Picture({}×{}, {:?})", self.image.width(), self.image.height(), self.caption)
    }
}

impl Picture {
    pub fn new(image: RgbImage, caption: impl Into<String>) -> Self {
        Self { image, caption: caption.into() }
    }

    /// From a tensor: `[H, W, 3]` uint8, or `[3, H, W]` / `[1, 3, H, W]` float in [-1, 1] (what the VAE decodes
    /// and `load_image` gives).
    pub fn from_tensor(t: &Tensor, caption: impl Into<String>) -> Result<Self> {
        let t = if t.dim() == 4 { t.f_get(0)? } else { t.shallow_clone() };
        let image = if t.kind() == Kind::Uint8 {
            tensor_to_rgb(&t)?
        } else if t.dim() == 3 && t.size()[0] == 3 {
            tensor_to_rgb(&crate::models::vae_decoder::to_rgb8(&t)?)?
        } else {
            return Err(Error::Shape {
                context: "picture".into(),
                why: format!(
                    "expected [H, W, 3] uint8 or [3, H, W] float in [-1, 1], got {:?} {:?}",
                    t.kind(),
                    t.size()
                ),
            });
        };
        Ok(Self::new(image, caption))
    }

    /// The same picture with another caption.
    pub fn with_caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = caption.into();
        self
    }

    /// Read an image file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let image =
            image::open(path).map_err(|e| Error::BadImage { path: path.to_path_buf(), why: e.to_string() })?.to_rgb8();
        Ok(Self::new(image, path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()))
    }

    /// A map `[h, w]` in a colormap (range from the data unless given), with a colour bar.
    pub fn heatmap(
        map: &Tensor,
        colormap: Colormap,
        range: Option<(f64, f64)>,
        caption: impl Into<String>,
    ) -> Result<Self> {
        let options = RenderOptions {
            colormap,
            vmin: range.map(|r| r.0),
            vmax: range.map(|r| r.1),
            ..RenderOptions::mode(RenderMode::Heat)
        };
        Ok(Self::new(render(map, None, &options)?, caption))
    }

    /// Nearest-neighbour enlargement (small latent-sized maps).
    pub fn scaled(mut self, factor: u32) -> Self {
        let (w, h) = self.image.dimensions();
        self.image = image::imageops::resize(
            &self.image,
            w * factor.max(1),
            h * factor.max(1),
            image::imageops::FilterType::Nearest,
        );
        self
    }

    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.image.save(path).map_err(|e| Error::invalid(format!("writing {}", path.display()), e.to_string()))
    }

    pub fn png(&self) -> Result<Vec<u8>> {
        png_bytes(&self.image)
    }

    pub fn to_html(&self) -> Result<String> {
        html_grid(&[(self.caption.clone(), self.image.clone())], 128)
    }

    pub fn evcxr_display(&self) {
        let (w, h) = self.image.dimensions();
        match self.to_html() {
            Ok(html) => emit(&html, &format!("Picture {w}×{h} {}", self.caption)),
            Err(e) => println!("{e}"),
        }
    }
}

const GRID_GAP: u32 = 8;
const CAPTION_HEIGHT: u32 = 22;

/// `text`, or its longest prefix followed by "…", that `measure` finds at most `width` wide.
fn fit_text(text: &str, width: u32, measure: impl Fn(&str) -> u32) -> String {
    if measure(text) <= width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    (0..chars.len())
        .rev()
        .map(|n| format!("{}…", chars[..n].iter().collect::<String>()))
        .find(|t| measure(t) <= width)
        .unwrap_or_default()
}

/// Several pictures side by side, each with its caption.
#[derive(Debug, Clone, Default)]
pub struct PictureGrid {
    pub pictures: Vec<Picture>,
    /// Smallest displayed width in pixels (small maps are scaled up without smoothing).
    pub min_width: u32,
}

impl PictureGrid {
    pub fn new(pictures: Vec<Picture>) -> Self {
        Self { pictures, min_width: 128 }
    }

    pub fn to_html(&self) -> Result<String> {
        let items: Vec<(String, RgbImage)> =
            self.pictures.iter().map(|p| (p.caption.clone(), p.image.clone())).collect();
        html_grid(&items, self.min_width)
    }

    /// The grid as one image, for files and papers: the pictures top-aligned in a row, 8 px apart on white,
    /// each enlarged without smoothing to at least `min_width` pixels wide (as in the HTML), with its caption
    /// right below it in the bundled font (shortened with "…" where it is wider than its picture).
    pub fn to_image(&self) -> Result<RgbImage> {
        let pictures: Vec<RgbImage> = self
            .pictures
            .iter()
            .map(|p| {
                let factor = self.min_width.div_ceil(p.image.width().max(1)).clamp(1, 64);
                if factor == 1 {
                    p.image.clone()
                } else {
                    p.clone().scaled(factor).image
                }
            })
            .collect();
        let width = pictures.iter().map(|p| p.width() + GRID_GAP).sum::<u32>().saturating_sub(GRID_GAP).max(1);
        let height = pictures.iter().map(|p| p.height()).max().unwrap_or(0) + CAPTION_HEIGHT;
        let mut out = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
        let mut x = 0;
        for p in &pictures {
            image::imageops::replace(&mut out, p, x as i64, 0);
            x += p.width() + GRID_GAP;
        }
        self.draw_captions(out, &pictures)
    }

    /// Each caption right below its picture.
    fn draw_captions(&self, out: RgbImage, pictures: &[RgbImage]) -> Result<RgbImage> {
        use plotters::prelude::*;
        figure::register_font()?;
        let (width, height) = out.dimensions();
        let mut buffer = out.into_raw();
        {
            let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
            let font = (figure::FONT, 13).into_font().color(&BLACK);
            let mut x = 0;
            for (picture, image) in self.pictures.iter().zip(pictures) {
                let text = fit_text(&picture.caption, image.width().saturating_sub(4), |t| {
                    font.font.box_size(t).map(|(w, _)| w).unwrap_or(u32::MAX)
                });
                root.draw(&Text::new(text, (x as i32 + 2, image.height() as i32 + 4), font.clone()))
                    .map_err(figure::plot_error)?;
                x += image.width() + GRID_GAP;
            }
            root.present().map_err(figure::plot_error)?;
        }
        RgbImage::from_raw(width, height, buffer)
            .ok_or_else(|| Error::invalid("picture grid", "bitmap has the wrong size"))
    }

    /// Write the grid as one PNG (see [`PictureGrid::to_image`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, png_bytes(&self.to_image()?)?).map_err(|e| Error::io(path, e))
    }

    pub fn evcxr_display(&self) {
        let captions: Vec<&str> = self.pictures.iter().map(|p| p.caption.as_str()).collect();
        match self.to_html() {
            Ok(html) => emit(&html, &format!("{} pictures: {}", self.pictures.len(), captions.join(", "))),
            Err(e) => println!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fit_text;

    #[test]
    fn captions_are_shortened_to_fit() {
        let width = |t: &str| t.chars().count() as u32 * 10;
        assert_eq!(fit_text("cat", 30, width), "cat");
        assert_eq!(fit_text("a long caption", 50, width), "a lo…");
        assert_eq!(fit_text("x", 5, width), "");
    }
}
