//! The embedding map: a self-contained HTML+JS block (no network, no CDN) with a 2-D map of embedded images.
//! Points are coloured by label (the legend hides a class on click), hovering shows the image's thumbnail,
//! label, caption and index, the wheel zooms and dragging pans, a text box filters by caption, and clicking a
//! point lists its nearest neighbours in the embedding space (computed here, not in the 2-D map).
//!
//! Size per point: the thumbnail (a cell of a JPEG atlas, about 1–3 KB at 64 px and quality 80 for photos,
//! much less for flat synthetic pictures), its label index, caption, coordinates and `k` neighbour indices as
//! JSON (roughly 20 + 6·k bytes plus the caption), with a third more for the atlases' base64.
//! [`EmbeddingMap::size`] reports the real numbers.
//!
//! ```no_run
//! use sdscope::embed::map::{EmbeddingMap, MapOptions, Thumbnails};
//! # let (xy, embeds) = (tch::Tensor::zeros([2, 2], tch::kind::FLOAT_CPU), tch::Tensor::zeros([2, 8], tch::kind::FLOAT_CPU));
//! let paths: Vec<std::path::PathBuf> = vec!["cat.png".into(), "dog.png".into()];
//! let labels = vec!["cat".to_string(), "dog".to_string()];
//! let map = EmbeddingMap::new(&xy, &embeds, labels.clone(), labels, Thumbnails::Paths(&paths), &MapOptions::default())?;
//! map.save_html("map.html")?;
//! # Ok::<(), sdscope::Error>(())
//! ```

use crate::display::emit;
use crate::embed::processor::load_rgb;
use crate::error::{Error, Result};
use crate::project::Metric;
use crate::xattn::render::{escape_html, tensor_to_rgb};
use base64::Engine;
use image::RgbImage;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The pictures behind the points, one per point in the same order (or none).
pub enum Thumbnails<'a> {
    None,
    Images(&'a [RgbImage]),
    /// `[H, W, 3]` uint8 each.
    Tensors(&'a [Tensor]),
    /// Image files, read and shrunk one at a time.
    Paths(&'a [PathBuf]),
}

impl Thumbnails<'_> {
    fn len(&self) -> Option<usize> {
        match self {
            Thumbnails::None => None,
            Thumbnails::Images(v) => Some(v.len()),
            Thumbnails::Tensors(v) => Some(v.len()),
            Thumbnails::Paths(v) => Some(v.len()),
        }
    }

    fn get(&self, i: usize) -> Result<Option<RgbImage>> {
        Ok(match self {
            Thumbnails::None => None,
            Thumbnails::Images(v) => Some(v[i].clone()),
            Thumbnails::Tensors(v) => Some(tensor_to_rgb(&v[i])?),
            Thumbnails::Paths(v) => Some(load_rgb(&v[i])?),
        })
    }
}

#[derive(Debug, Clone)]
pub struct MapOptions {
    /// Neighbours listed per point (fewer when there are fewer other points).
    pub k: usize,
    /// The neighbours' metric in the embedding space.
    pub metric: Metric,
    /// Longest side of a thumbnail in pixels (8..=256).
    pub thumb_px: u32,
    /// JPEG quality of the atlases (1..=100).
    pub jpeg_quality: u8,
    pub title: String,
    /// Size of the scatter in CSS pixels.
    pub width: u32,
    pub height: u32,
}

impl Default for MapOptions {
    fn default() -> Self {
        Self {
            k: 10,
            metric: Metric::Cosine,
            thumb_px: 64,
            jpeg_quality: 80,
            title: "embedding map".into(),
            width: 760,
            height: 560,
        }
    }
}

/// Cells per atlas row and per atlas: a 64 px cell gives 2048×2048 atlases.
const ATLAS_COLS: usize = 32;
const ATLAS_CELLS: usize = ATLAS_COLS * ATLAS_COLS;

/// What the page costs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapSize {
    pub points: usize,
    /// The JPEG atlases (before base64).
    pub thumbnails: usize,
    /// The whole HTML block.
    pub html: usize,
    pub per_point: f64,
}

/// A map of `n` points ready to be shown.
pub struct EmbeddingMap {
    /// `[n·2]`, fitted into the unit square (aspect kept, centred).
    xy: Vec<f32>,
    label_names: Vec<String>,
    label_of: Vec<u32>,
    captions: Vec<String>,
    k: usize,
    /// `[n·k]`, nearest first.
    neighbours: Vec<u32>,
    cell: u32,
    /// `[n·2]`: the thumbnail's width and height inside its cell (0 × 0 without one).
    thumb_wh: Vec<u8>,
    atlases: Vec<Vec<u8>>,
    options: MapOptions,
}

fn rows_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(t.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_contiguous()?.f_flatten(0, -1)?)?)
}

/// The `k` nearest other rows of each row of `x` (cosine: largest cosine similarity; Euclidean: smallest
/// distance), nearest first, by blocks of rows so that memory stays bounded.
/// # Shapes
/// `x [n, D]` → `[n, min(k, n − 1)]` int64.
pub fn nearest_neighbours(x: &Tensor, k: usize, metric: Metric) -> Result<Tensor> {
    let n = x.size().first().copied().unwrap_or(0).max(1);
    nearest_neighbours_in_blocks(x, k, metric, ((1i64 << 24) / n).max(1) as usize)
}

/// [`nearest_neighbours`] with `block` rows at a time.
#[doc(hidden)]
pub fn nearest_neighbours_in_blocks(x: &Tensor, k: usize, metric: Metric, block: usize) -> Result<Tensor> {
    if x.dim() != 2 || x.size()[1] < 1 {
        return Err(Error::Shape {
            context: "nearest neighbours".into(),
            why: format!("expected [n, D ≥ 1], got {:?}", x.size()),
        });
    }
    let n = x.size()[0];
    let k = (k as i64).min(n - 1).max(0);
    // Unit rows for cosine: their Euclidean order is the cosine order.
    let rows = metric.prepare(&x.f_to_device(Device::Cpu)?)?.f_to_kind(Kind::Float)?;
    let (indices, _) = crate::project::nearest_neighbours_in_blocks(&rows, k as usize, block)?;
    Ok(Tensor::from_slice(&indices).f_reshape([n, k])?)
}

fn fit_unit_square(xy: &[f32]) -> Result<Vec<f32>> {
    if let Some(i) = xy.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid("map coordinates", format!("point {} is not finite", i / 2)));
    }
    let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
    for p in xy.chunks_exact(2) {
        for d in 0..2 {
            lo[d] = lo[d].min(p[d]);
            hi[d] = hi[d].max(p[d]);
        }
    }
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]);
    let offset = [(span - (hi[0] - lo[0])) / 2.0, (span - (hi[1] - lo[1])) / 2.0];
    Ok(xy
        .chunks_exact(2)
        .flat_map(|p| {
            (0..2).map(move |d| if span > 0.0 { (p[d] - lo[d] + offset[d]) / span } else { 0.5 }).collect::<Vec<_>>()
        })
        .collect())
}

/// Shrink to fit `side` (never enlarge), as a thumbnail.
fn shrink(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let scale = (side as f64 / w.max(h).max(1) as f64).min(1.0);
    let (tw, th) = (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
    if (tw, th) == (w, h) {
        return img.clone();
    }
    image::imageops::thumbnail(img, tw, th)
}

fn jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .map_err(|e| Error::invalid("JPEG atlas", e.to_string()))?;
    Ok(out)
}

impl EmbeddingMap {
    /// A map of `n` points with their labels, captions (shown as text, never as HTML) and thumbnails.
    /// # Shapes
    /// `xy [n, 2]` (any scale), `embeddings [n, D]`; `labels`, `captions` and the thumbnails have `n` items.
    pub fn new(
        xy: &Tensor,
        embeddings: &Tensor,
        labels: Vec<String>,
        captions: Vec<String>,
        thumbnails: Thumbnails,
        options: &MapOptions,
    ) -> Result<Self> {
        let n = match xy.size().as_slice() {
            [n, 2] if *n > 0 => *n as usize,
            s => {
                return Err(Error::Shape {
                    context: "map coordinates".into(),
                    why: format!("expected [n ≥ 1, 2], got {s:?}"),
                })
            }
        };
        if embeddings.dim() != 2 || embeddings.size()[0] != n as i64 {
            let why = format!("expected [{n}, D] (one row per point of xy), got {:?}", embeddings.size());
            return Err(Error::Shape { context: "map embeddings".into(), why });
        }
        for (what, len) in
            [("labels", Some(labels.len())), ("captions", Some(captions.len())), ("thumbnails", thumbnails.len())]
        {
            if let Some(len) = len.filter(|&l| l != n) {
                return Err(Error::invalid(format!("map {what}"), format!("{len} {what} for {n} points")));
            }
        }
        if !(8..=256).contains(&options.thumb_px) || !(1..=100).contains(&options.jpeg_quality) {
            let why = format!(
                "thumb_px {} must be in 8..=256, jpeg_quality {} in 1..=100",
                options.thumb_px, options.jpeg_quality
            );
            return Err(Error::invalid("map options", why));
        }
        if n > u32::MAX as usize / 2 {
            return Err(Error::invalid("map", format!("{n} points is too many")));
        }
        let xy = fit_unit_square(&rows_f32(xy)?)?;
        let nn = nearest_neighbours(embeddings, options.k, options.metric)?;
        let k = nn.size()[1] as usize;
        let neighbours = Vec::<i64>::try_from(nn.f_flatten(0, -1)?)?.into_iter().map(|i| i as u32).collect();
        let mut label_names: Vec<String> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let label_of = labels
            .into_iter()
            .map(|l| {
                *index.entry(l.clone()).or_insert_with(|| {
                    label_names.push(l);
                    label_names.len() as u32 - 1
                })
            })
            .collect();
        // Cells are multiples of 16 px so that JPEG blocks (and 4:2:0 chroma) never straddle two thumbnails.
        let cell = options.thumb_px.div_ceil(16) * 16;
        let mut thumb_wh = vec![0u8; 2 * n];
        let mut atlases = Vec::new();
        if thumbnails.len().is_some() {
            for first in (0..n).step_by(ATLAS_CELLS) {
                let count = ATLAS_CELLS.min(n - first);
                let rows = count.div_ceil(ATLAS_COLS) as u32;
                let cols = ATLAS_COLS.min(count) as u32;
                let mut atlas = RgbImage::from_pixel(cols * cell, rows * cell, image::Rgb([255, 255, 255]));
                for j in 0..count {
                    let Some(img) = thumbnails.get(first + j)? else { continue };
                    let t = shrink(&img, options.thumb_px);
                    let (x, y) = ((j % ATLAS_COLS) as u32 * cell, (j / ATLAS_COLS) as u32 * cell);
                    image::imageops::replace(&mut atlas, &t, x as i64, y as i64);
                    thumb_wh[2 * (first + j)] = (t.width() - 1) as u8;
                    thumb_wh[2 * (first + j) + 1] = (t.height() - 1) as u8;
                }
                atlases.push(jpeg(&atlas, options.jpeg_quality)?);
            }
        }
        Ok(Self {
            xy,
            label_names,
            label_of,
            captions,
            k,
            neighbours,
            cell,
            thumb_wh,
            atlases,
            options: options.clone(),
        })
    }

    /// `n` points in `clusters` Gaussian clusters (embeddings of 32 dimensions; the map shows each cluster at a
    /// random place), with flat thumbnails of [`Self::synthetic_colour`] and a disc of the cluster's colour, and
    /// one caption holding `<script>`: for measuring the page without a model.
    pub fn synthetic(n: usize, seed: u64) -> Result<Self> {
        use rand::{Rng, SeedableRng};
        if n == 0 {
            return Err(Error::invalid("synthetic map", "needs at least one point"));
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (clusters, dim) = (8usize, 32usize);
        let mut normal = move || -> f32 {
            let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        };
        let centres: Vec<f32> = (0..clusters * dim).map(|_| 3.0 * normal()).collect();
        let places: Vec<f32> = (0..clusters * 2).map(|_| 4.0 * normal()).collect();
        let words = ["a cat", "a dog", "a red car", "a house", "a tree", "a boat", "a bird", "a bicycle"];
        let (mut emb, mut xy, mut labels, mut captions, mut thumbs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let c = (i * 7 + i / 3) % clusters;
            emb.extend((0..dim).map(|d| centres[c * dim + d] + normal()));
            xy.extend((0..2).map(|d| places[c * 2 + d] + 0.6 * normal()));
            labels.push(format!("class {c}"));
            captions.push(if i == 0 {
                "<script>alert(1)</script> & friends".into()
            } else {
                format!("{} no. {i}", words[c])
            });
            let ring = [(c * 80 % 256) as u8, (c * 150 % 256) as u8, (255 - c * 30) as u8];
            thumbs.push(RgbImage::from_fn(48, 40, |x, y| {
                let (dx, dy) = (x as i32 - 24, y as i32 - 22);
                image::Rgb(if dx * dx + dy * dy < 100 { ring } else { Self::synthetic_colour(i) })
            }));
        }
        let xy = Tensor::from_slice(&xy).f_reshape([n as i64, 2])?;
        let emb = Tensor::from_slice(&emb).f_reshape([n as i64, dim as i64])?;
        let options = MapOptions {
            metric: Metric::Euclidean,
            title: format!("synthetic map of {n} points"),
            ..MapOptions::default()
        };
        Self::new(&xy, &emb, labels, captions, Thumbnails::Images(&thumbs), &options)
    }

    /// The background colour of point `i`'s synthetic thumbnail (the browser check recomputes it).
    pub fn synthetic_colour(i: usize) -> [u8; 3] {
        [(i * 67 + 40) as u8, (i * 151 + 90) as u8, (i * 29 + 160) as u8]
    }

    pub fn len(&self) -> usize {
        self.captions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }

    /// Point `i`'s neighbours in the embedding space, nearest first.
    pub fn neighbours(&self, i: usize) -> Option<&[u32]> {
        self.neighbours.get(i * self.k..(i + 1) * self.k)
    }

    /// The JPEG atlases.
    pub fn atlases(&self) -> &[Vec<u8>] {
        &self.atlases
    }

    /// Where point `i`'s thumbnail is: atlas, x, y, width, height (`None` without thumbnails).
    pub fn thumbnail_cell(&self, i: usize) -> Option<(usize, u32, u32, u32, u32)> {
        if self.atlases.is_empty() || i >= self.len() {
            return None;
        }
        let j = i % ATLAS_CELLS;
        let (x, y) = ((j % ATLAS_COLS) as u32 * self.cell, (j / ATLAS_COLS) as u32 * self.cell);
        Some((i / ATLAS_CELLS, x, y, self.thumb_wh[2 * i] as u32 + 1, self.thumb_wh[2 * i + 1] as u32 + 1))
    }

    /// The page's data as JSON, safe inside a `<script>` element.
    fn payload(&self) -> Result<String> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let q = |v: f32| (v as f64 * 1e5).round() / 1e5;
        let payload = serde_json::json!({
            "n": self.len(), "k": self.k, "metric": format!("{:?}", self.options.metric).to_lowercase(),
            "x": self.xy.iter().step_by(2).map(|&v| q(v)).collect::<Vec<_>>(),
            "y": self.xy.iter().skip(1).step_by(2).map(|&v| q(v)).collect::<Vec<_>>(),
            "labels": self.label_names, "label": self.label_of, "captions": self.captions, "nn": self.neighbours,
            "cell": self.cell, "cols": ATLAS_COLS, "per": ATLAS_CELLS, "wh": b64(&self.thumb_wh),
            "atlases": self.atlases.iter().map(|a| b64(a)).collect::<Vec<_>>(),
            "width": self.options.width, "height": self.options.height,
        });
        // No `<` inside a <script> element (`<` only occurs inside JSON strings, where \u003c means the same).
        Ok(serde_json::to_string(&payload)?.replace('<', "\\u003c"))
    }

    /// The map as one HTML block (for a notebook cell), with an id of its own.
    pub fn to_html(&self) -> Result<String> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let id = format!("sdmap{:x}x{}", nanos & 0xffffff, COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let (w, h) = (self.options.width, self.options.height);
        Ok(format!(
            r#"<div id="{id}" class="sdscope-map" style="font:13px sans-serif;color:#222">
<div style="margin-bottom:6px;display:flex;gap:8px;align-items:center;flex-wrap:wrap"><b>{title}</b>
 <input data-role="filter" type="search" placeholder="filter by caption" style="width:220px">
 <button data-role="reset" type="button">reset view</button>
 <span data-role="status" style="color:#666"></span></div>
<div style="display:flex;gap:10px;align-items:flex-start">
<div data-role="frame" style="position:relative;width:{w}px;height:{h}px;border:1px solid #ccc;touch-action:none;overflow:hidden">
<canvas data-role="plot" style="position:absolute;left:0;top:0;width:{w}px;height:{h}px"></canvas>
<canvas data-role="overlay" style="position:absolute;left:0;top:0;width:{w}px;height:{h}px;cursor:crosshair"></canvas>
<div data-role="tip" style="position:absolute;display:none;pointer-events:none;background:#fff;border:1px solid #999;border-radius:4px;padding:4px;max-width:260px;box-shadow:0 2px 6px rgba(0,0,0,.25)"></div>
</div>
<div data-role="legend" style="max-height:{h}px;overflow:auto;min-width:150px"></div>
</div>
<div data-role="neighbours" style="margin-top:8px"></div>
<script type="application/json" data-role="payload">{payload}</script>
<script>{script}
sdscopeMap(document.getElementById("{id}"));</script>
</div>"#,
            title = escape_html(&self.options.title),
            payload = self.payload()?,
            script = MAP_JS
        ))
    }

    /// A standalone page with the same map.
    pub fn save_html(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let page = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\
             <body style=\"margin:12px\">{}</body></html>\n",
            escape_html(&self.options.title),
            self.to_html()?
        );
        std::fs::write(path, page).map_err(|e| Error::io(path, e))
    }

    /// Bytes of the page and of the thumbnails, in all and per point.
    pub fn size(&self) -> Result<MapSize> {
        let html = self.to_html()?.len();
        let thumbnails = self.atlases.iter().map(|a| a.len()).sum();
        Ok(MapSize { points: self.len(), thumbnails, html, per_point: html as f64 / self.len().max(1) as f64 })
    }

    pub fn evcxr_display(&self) {
        match self.to_html() {
            Ok(html) => emit(
                &html,
                &format!(
                    "EmbeddingMap: {} points, {} labels, {} neighbours each",
                    self.len(),
                    self.label_names.len(),
                    self.k
                ),
            ),
            Err(e) => println!("{e}"),
        }
    }
}

const MAP_JS: &str = include_str!("map.js");
