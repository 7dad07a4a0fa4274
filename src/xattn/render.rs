//! Pictures of attention maps: heat maps with a named colormap and a colour bar, overlays on the image, the
//! A1111 extension's "masked" and "grey" outputs, and HTML grids with captions (images embedded as base64 PNG).

use crate::error::{Error, Result};
use image::{Rgb, RgbImage};
use std::io::Cursor;
use tch::{Kind, Tensor};

/// Named colormaps (low → high).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colormap {
    Jet,
    Viridis,
    Magma,
    /// Black → white.
    Gray,
    /// White → black (matplotlib's `Greys`).
    Greys,
}

/// `(position, r, g, b)` anchors, linearly interpolated.
const VIRIDIS: [(f32, [u8; 3]); 9] = [
    (0.0, [68, 1, 84]),
    (0.125, [71, 44, 122]),
    (0.25, [59, 81, 139]),
    (0.375, [44, 113, 142]),
    (0.5, [33, 144, 141]),
    (0.625, [39, 173, 129]),
    (0.75, [92, 200, 99]),
    (0.875, [170, 220, 50]),
    (1.0, [253, 231, 37]),
];
const MAGMA: [(f32, [u8; 3]); 9] = [
    (0.0, [0, 0, 4]),
    (0.125, [28, 16, 68]),
    (0.25, [79, 18, 123]),
    (0.375, [129, 37, 129]),
    (0.5, [181, 54, 122]),
    (0.625, [229, 80, 100]),
    (0.75, [251, 135, 97]),
    (0.875, [254, 194, 135]),
    (1.0, [252, 253, 191]),
];

fn interpolate(anchors: &[(f32, [u8; 3])], x: f32) -> [u8; 3] {
    let j = anchors.iter().position(|(p, _)| *p >= x).unwrap_or(anchors.len() - 1).max(1);
    let ((p0, c0), (p1, c1)) = (anchors[j - 1], anchors[j]);
    let t = ((x - p0) / (p1 - p0)).clamp(0.0, 1.0);
    let mix = |a: u8, b: u8| (a as f32 + (b as f32 - a as f32) * t).round() as u8;
    [mix(c0[0], c1[0]), mix(c0[1], c1[1]), mix(c0[2], c1[2])]
}

impl Colormap {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "jet" => Ok(Colormap::Jet),
            "viridis" => Ok(Colormap::Viridis),
            "magma" => Ok(Colormap::Magma),
            "gray" | "grey" => Ok(Colormap::Gray),
            "greys" | "grays" => Ok(Colormap::Greys),
            _ => Err(Error::invalid(format!("colormap `{name}`"), "known: jet, viridis, magma, gray, greys")),
        }
    }

    /// The colour of a value in [0, 1] (clamped).
    pub fn color(self, x: f32) -> [u8; 3] {
        let x = if x.is_finite() { x.clamp(0.0, 1.0) } else { 0.0 };
        let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        match self {
            Colormap::Jet => {
                let ramp = |c: f32| byte(1.5 - (4.0 * x - c).abs());
                [ramp(3.0), ramp(2.0), ramp(1.0)]
            }
            Colormap::Viridis => interpolate(&VIRIDIS, x),
            Colormap::Magma => interpolate(&MAGMA, x),
            Colormap::Gray => [byte(x); 3],
            Colormap::Greys => [byte(1.0 - x); 3],
        }
    }
}

/// How a map is drawn (`sdscope xattn --mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderMode {
    /// The map in a colormap, with a colour bar.
    Heat,
    /// The colormap blended over the image.
    Overlay,
    /// The image multiplied by the map scaled to [0, 1] (the A1111 extension's "masked").
    Masked,
    /// The map scaled to [0, 1] as grey levels (the A1111 extension's "grey").
    Grey,
}

impl RenderMode {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "heat" => Ok(RenderMode::Heat),
            "overlay" => Ok(RenderMode::Overlay),
            "masked" => Ok(RenderMode::Masked),
            "grey" | "gray" => Ok(RenderMode::Grey),
            _ => Err(Error::invalid(format!("mode `{name}`"), "known: heat, overlay, masked, grey")),
        }
    }
}

/// Drawing options. `vmin`/`vmax` default to the map's range (0 and the maximum for masked/grey).
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    pub mode: RenderMode,
    pub colormap: Colormap,
    pub vmin: Option<f64>,
    pub vmax: Option<f64>,
    /// Weight of the heat map in an overlay.
    pub alpha: f32,
    pub colorbar: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self { mode: RenderMode::Heat, colormap: Colormap::Jet, vmin: None, vmax: None, alpha: 0.5, colorbar: true }
    }
}

impl RenderOptions {
    pub fn mode(mode: RenderMode) -> Self {
        Self { mode, ..Self::default() }
    }
}

fn map_values(map: &Tensor) -> Result<(Vec<f32>, u32, u32)> {
    if map.dim() != 2 {
        return Err(Error::Shape {
            context: "rendering a map".into(),
            why: format!("expected [H, W], got {:?}", map.size()),
        });
    }
    let (h, w) = (map.size()[0] as u32, map.size()[1] as u32);
    let values = Vec::<f32>::try_from(map.f_to_kind(Kind::Float)?.f_contiguous()?.f_flatten(0, -1)?)?;
    Ok((values, h, w))
}

/// `[H, W, 3]` uint8 → an RGB image.
pub fn tensor_to_rgb(image: &Tensor) -> Result<RgbImage> {
    let s = image.size();
    if s.len() != 3 || s[2] != 3 {
        return Err(Error::Shape { context: "image".into(), why: format!("expected [H, W, 3] uint8, got {s:?}") });
    }
    let data = Vec::<u8>::try_from(image.f_to_kind(Kind::Uint8)?.f_contiguous()?.f_flatten(0, -1)?)?;
    RgbImage::from_raw(s[1] as u32, s[0] as u32, data)
        .ok_or_else(|| Error::invalid("image buffer", "has the wrong length"))
}

/// Draw a map `[H, W]`; overlay and masked need the image (`[H, W, 3]` uint8, same size).
pub fn render(map: &Tensor, image: Option<&Tensor>, options: &RenderOptions) -> Result<RgbImage> {
    let (values, h, w) = map_values(map)?;
    let max = values.iter().copied().fold(f32::MIN, f32::max) as f64;
    let min = values.iter().copied().fold(f32::MAX, f32::min) as f64;
    let scaled_by_max = matches!(options.mode, RenderMode::Masked | RenderMode::Grey);
    let lo = options.vmin.unwrap_or(if scaled_by_max { 0.0 } else { min });
    let hi = options.vmax.unwrap_or(max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let unit = |v: f32| (((v as f64 - lo) / span) as f32).clamp(0.0, 1.0);
    let base = match (options.mode, image) {
        (RenderMode::Overlay | RenderMode::Masked, Some(img)) => {
            let img = tensor_to_rgb(img)?;
            if img.dimensions() != (w, h) {
                return Err(Error::Shape {
                    context: "rendering over the image".into(),
                    why: format!("the map is {w}×{h}, the image {}×{}", img.width(), img.height()),
                });
            }
            Some(img)
        }
        (RenderMode::Overlay | RenderMode::Masked, None) => {
            return Err(Error::invalid(format!("{:?} rendering", options.mode), "needs the image the maps belong to"))
        }
        _ => None,
    };
    let mut out = RgbImage::new(w, h);
    for (i, px) in out.pixels_mut().enumerate() {
        let (x, y) = (i as u32 % w, i as u32 / w);
        let u = unit(values[i]);
        *px = match options.mode {
            RenderMode::Heat => Rgb(options.colormap.color(u)),
            RenderMode::Grey => Rgb(Colormap::Gray.color(u)),
            RenderMode::Overlay => {
                let c = options.colormap.color(u);
                let p = base.as_ref().expect("checked").get_pixel(x, y).0;
                let a = options.alpha.clamp(0.0, 1.0);
                Rgb(std::array::from_fn(|k| (p[k] as f32 * (1.0 - a) + c[k] as f32 * a).round() as u8))
            }
            RenderMode::Masked => {
                let p = base.as_ref().expect("checked").get_pixel(x, y).0;
                Rgb(std::array::from_fn(|k| (p[k] as f32 * u).round() as u8))
            }
        };
    }
    if options.colorbar && options.mode == RenderMode::Heat {
        out = with_colorbar(&out, options.colormap);
    }
    Ok(out)
}

/// The picture with a vertical colour bar (low at the bottom) on its right.
fn with_colorbar(img: &RgbImage, cmap: Colormap) -> RgbImage {
    let (w, h) = img.dimensions();
    let (gap, bar) = ((w / 32).max(2), (w / 12).max(6));
    let mut out = RgbImage::from_pixel(w + gap + bar, h, Rgb([255, 255, 255]));
    image::imageops::replace(&mut out, img, 0, 0);
    for y in 0..h {
        let c = Rgb(cmap.color(1.0 - y as f32 / (h.max(2) - 1) as f32));
        for x in w + gap..w + gap + bar {
            out.put_pixel(x, y, c);
        }
    }
    out
}

/// PNG bytes of an image.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| Error::invalid("PNG encoding", e.to_string()))?;
    Ok(bytes)
}

/// Escape text for HTML.
pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A self-contained HTML block: the pictures side by side with their captions, each at least `min_px` wide
/// (small latent-sized maps are scaled up without smoothing).
pub fn html_grid(items: &[(String, RgbImage)], min_px: u32) -> Result<String> {
    use base64::Engine;
    let mut html = String::from("<div style=\"display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start\">");
    for (caption, img) in items {
        let data = base64::engine::general_purpose::STANDARD.encode(png_bytes(img)?);
        let width = img.width().max(min_px);
        html.push_str(&format!(
            "<figure style=\"margin:0;text-align:center\"><img src=\"data:image/png;base64,{data}\" width=\"{width}\" \
             style=\"image-rendering:pixelated\"/><figcaption style=\"font:12px sans-serif\">{}</figcaption></figure>",
            escape_html(caption)
        ));
    }
    html.push_str("</div>");
    Ok(html)
}
