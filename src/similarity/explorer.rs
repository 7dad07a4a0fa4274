//! The similarity explorer: a self-contained HTML+JS page (no network, no CDN) with the images side by side.
//! Hovering (or clicking, or touching) a token of any image shows, over every image, how similar each of its
//! tokens is to it; selectors pick the measure, position and noise step. The computation runs in the browser on
//! representations embedded as float16.
//!
//! Size: for every (position, step), 2 bytes × C × Σ h·w per image, plus a third for base64; e.g. 4 images of
//! 32×32 tokens × 1280 channels = 10.5 MB per position and step (14 MB as base64), plus the pictures.

use super::Measure;
use crate::display::{emit, escape_html};
use crate::error::{Error, Result};
use crate::representations::Representations;
use crate::xattn::render::{png_bytes, tensor_to_rgb};
use base64::Engine;
use image::RgbImage;
use std::path::Path;
use tch::{Kind, Tensor};

/// One image's tokens at one position and step: grid height, width, channels, and `[h·w, C]` float16 bytes.
type EmbeddedGrid = (i64, i64, i64, Vec<u8>);

/// An explorer over some images, positions and steps.
pub struct Explorer {
    names: Vec<String>,
    pictures: Vec<RgbImage>,
    positions: Vec<String>,
    timesteps: Vec<i64>,
    /// `[position][step][image]` → `[h·w, C]` float16 bytes, with the grid size.
    data: Vec<Vec<Vec<EmbeddedGrid>>>,
}

fn f16_bytes(tokens: &Tensor) -> Result<Vec<u8>> {
    let halves = tokens.f_to_kind(Kind::Half)?.f_contiguous()?.f_view_dtype(Kind::Int16)?.f_flatten(0, -1)?;
    let values = Vec::<i16>::try_from(halves)?;
    Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

impl Explorer {
    /// From extracted representations (every position must be a `[C, h, w]` map) and the pictures shown,
    /// `[H, W, 3]` uint8 each, one per image in the same order.
    pub fn new(reprs: &Representations, pictures: &[Tensor]) -> Result<Self> {
        let n = reprs.images().len();
        if pictures.len() != n {
            return Err(Error::invalid("explorer pictures", format!("{} pictures for {n} images", pictures.len())));
        }
        let mut data = Vec::new();
        for p in reprs.positions() {
            let mut per_step = Vec::new();
            for s in 0..reprs.timesteps().len() {
                let mut per_image = Vec::new();
                for i in 0..n {
                    let t = reprs.image(p, i)?;
                    if t.dim() != 4 {
                        return Err(Error::Shape {
                            context: format!("explorer position `{p}`"),
                            why: format!("needs [T, C, h, w] maps, got {:?}", t.size()),
                        });
                    }
                    let grid = t.f_get(s as i64)?;
                    let (c, h, w) = (grid.size()[0], grid.size()[1], grid.size()[2]);
                    let tokens = grid.f_flatten(1, 2)?.f_transpose(0, 1)?;
                    per_image.push((h, w, c, f16_bytes(&tokens)?));
                }
                per_step.push(per_image);
            }
            data.push(per_step);
        }
        Ok(Self {
            names: reprs
                .images()
                .iter()
                .map(|i| {
                    Path::new(&i.source)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or(i.source.clone())
                })
                .collect(),
            pictures: pictures.iter().map(tensor_to_rgb).collect::<Result<_>>()?,
            positions: reprs.positions().to_vec(),
            timesteps: reprs.timesteps().to_vec(),
            data,
        })
    }

    /// An explorer over random representations (`n` images of `h`×`w` tokens × `c` channels, smooth grey
    /// pictures): for measuring the page's speed without a model.
    pub fn synthetic(n: usize, h: i64, w: i64, c: i64, seed: i64) -> Result<Self> {
        let _rng = crate::RNG_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        tch::manual_seed(seed);
        let grid = |_| -> Result<EmbeddedGrid> {
            let tokens = Tensor::f_randn([h * w, c], (Kind::Float, tch::Device::Cpu))?;
            Ok((h, w, c, f16_bytes(&tokens)?))
        };
        let data = vec![vec![(0..n).map(grid).collect::<Result<Vec<_>>>()?]];
        let side = 256u32;
        let picture = RgbImage::from_fn(side, side, |x, y| image::Rgb([(x / 2) as u8, (y / 2) as u8, 128]));
        Ok(Self {
            names: (0..n).map(|i| format!("random {i}")).collect(),
            pictures: vec![picture; n],
            positions: vec!["random".into()],
            timesteps: vec![0],
            data,
        })
    }

    /// Bytes of embedded representation data (before base64).
    pub fn data_bytes(&self) -> usize {
        self.data.iter().flatten().flatten().map(|(_, _, _, b)| b.len()).sum()
    }

    fn payload(&self) -> Result<String> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let images = self
            .pictures
            .iter()
            .zip(&self.names)
            .map(|(p, name)| Ok(serde_json::json!({"name": name, "png": b64(&png_bytes(p)?), "width": p.width(), "height": p.height()})))
            .collect::<Result<Vec<_>>>()?;
        let data: Vec<Vec<Vec<serde_json::Value>>> = self
            .data
            .iter()
            .map(|steps| {
                steps
                    .iter()
                    .map(|imgs| {
                        imgs.iter()
                            .map(|(h, w, c, b)| serde_json::json!({"h": h, "w": w, "c": c, "f16": b64(b)}))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let measures: Vec<&str> = Measure::ALL.iter().map(|m| m.name()).collect();
        let payload = serde_json::json!({
            "images": images, "positions": self.positions, "timesteps": self.timesteps, "data": data, "measures": measures,
        });
        // No `<` inside a <script> element (`<` only occurs inside JSON strings, where \u003c means the same).
        Ok(serde_json::to_string(&payload)?.replace('<', "\\u003c"))
    }

    /// The explorer as one HTML block (for a notebook cell); `id` keeps several explorers on one page apart.
    pub fn to_html(&self) -> Result<String> {
        let id = format!(
            "sdx{:x}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
                & 0xffffff
        );
        let payload = self.payload()?;
        let options = |items: Vec<String>| -> String {
            items
                .iter()
                .enumerate()
                .map(|(i, s)| format!("<option value=\"{i}\">{}</option>", escape_html(s)))
                .collect()
        };
        let measures = options(Measure::ALL.iter().map(|m| m.name().to_string()).collect());
        let positions = options(self.positions.clone());
        let steps = options(self.timesteps.iter().map(|t| format!("t = {t}")).collect());
        Ok(format!(
            r#"<div id="{id}" class="sdscope-explorer" style="font:13px sans-serif">
<div style="margin-bottom:6px">measure <select data-role="measure">{measures}</select>
 position <select data-role="position">{positions}</select>
 noise step <select data-role="step">{steps}</select>
 <span data-role="status" style="color:#666;margin-left:8px">hover or click a point of any image</span></div>
<div data-role="images" style="display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start"></div>
<script type="application/json" data-role="payload">{payload}</script>
<script>{script}
sdscopeExplorer(document.getElementById("{id}"));</script>
</div>"#,
            script = EXPLORER_JS
        ))
    }

    /// A standalone page with the same explorer.
    pub fn save_html(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let page = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sdscope similarity explorer</title></head>\
             <body style=\"margin:12px\">{}</body></html>\n",
            self.to_html()?
        );
        std::fs::write(path, page).map_err(|e| Error::io(path, e))
    }

    pub fn evcxr_display(&self) {
        match self.to_html() {
            Ok(html) => emit(
                &html,
                &format!(
                    "Explorer: {} images, {} positions, {} steps",
                    self.names.len(),
                    self.positions.len(),
                    self.timesteps.len()
                ),
            ),
            Err(e) => println!("{e}"),
        }
    }
}

const EXPLORER_JS: &str = include_str!("explorer.js");
