//! Representation similarity between images: one query token (a spatial position of one image's
//! representation, a C-vector) against every token of each image, with the measures and semantics of the
//! representation similarity explorer web app, so results agree with it.
//!
//! ```no_run
//! use sdscope::prelude::*;
//! use sdscope::similarity::{similarity_maps, Measure, Query};
//! let pipe = Pipeline::load("sd15")?;
//! let reprs = pipe.extract(&ExtractRequest::new(["up_blocks[1]"]).timestep(50), &["cat.png", "dog.png"])?;
//! let grids: Vec<Tensor> = (0..2).map(|i| reprs.image("up_blocks[1]", i).map(|t| t.get(0))).collect::<Result<_>>()?;
//! let maps = similarity_maps(&grids, Query { image: 0, row: 12, col: 20 }, Measure::Cosine)?;
//! println!("best match in the dog: {:?}, mean {:.3} ± {:.3}", maps[1].best, maps[1].mean, maps[1].std);
//! # Ok::<(), sdscope::Error>(())
//! ```
//!
//! Each image keeps its own token grid (images of different sizes or aspect ratios give grids of different
//! sizes); the query is one token of one image's grid, compared with every token of every grid.

pub mod explorer;

use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// The explorer's similarity measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// q·t / (‖q‖‖t‖ + 1e-10)
    Cosine,
    /// Cosine after subtracting m = (mean token of the query's image + mean token of the target image) / 2.
    CosineCentered,
    /// q·t divided by the largest |q·t| in that map.
    DotProduct,
    /// 1 − d / max d over the map, with the L1 distance.
    Manhattan,
    /// 1 − d / max d, L2 distance.
    Euclidean,
    /// 1 − d / max d, L∞ distance.
    Chebyshev,
    /// (‖t‖ − ‖q‖) divided by the largest |‖t‖ − ‖q‖| in that map (signed).
    RelL2Norm,
}

impl Measure {
    pub const ALL: [Measure; 7] = [
        Measure::Cosine,
        Measure::CosineCentered,
        Measure::DotProduct,
        Measure::Manhattan,
        Measure::Euclidean,
        Measure::Chebyshev,
        Measure::RelL2Norm,
    ];

    /// The explorer's name (`cosine`, `cosine-centered`, `dot-product`, `manhattan`, `euclidean`, `chebyshev`,
    /// `rel-l2-norm`).
    pub fn name(self) -> &'static str {
        match self {
            Measure::Cosine => "cosine",
            Measure::CosineCentered => "cosine-centered",
            Measure::DotProduct => "dot-product",
            Measure::Manhattan => "manhattan",
            Measure::Euclidean => "euclidean",
            Measure::Chebyshev => "chebyshev",
            Measure::RelL2Norm => "rel-l2-norm",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        let key = name.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL.into_iter().find(|m| m.name() == key).ok_or_else(|| {
            Error::invalid(format!("measure `{name}`"), format!("known: {}", Self::ALL.map(|m| m.name()).join(", ")))
        })
    }
}

/// One token of one image: `row`, `col` index that image's grid at the chosen position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub image: usize,
    pub row: i64,
    pub col: i64,
}

/// The similarity of every token of one image to the query.
/// # Shapes
/// `map: [h, w]` float32 (that image's grid)
#[derive(Debug)]
pub struct SimilarityMap {
    pub map: Tensor,
    /// `(row, col)` of the most similar token.
    pub best: (i64, i64),
    pub mean: f64,
    pub std: f64,
}

/// `[C, h, w]` → `[h·w, C]` in float64.
fn tokens(grid: &Tensor) -> Result<Tensor> {
    Ok(grid.f_to_kind(Kind::Double)?.f_flatten(1, 2)?.f_transpose(0, 1)?)
}

/// `x / max|x|`, 0 where the maximum is 0.
fn by_max_abs(x: &Tensor) -> Result<Tensor> {
    let m = x.f_abs()?.f_max()?.double_value(&[]);
    Ok(if m > 0.0 { x.f_div_scalar(m)? } else { x.f_zeros_like()? })
}

/// `1 − d / max d`, 1 everywhere where every distance is 0.
fn one_minus_by_max(d: &Tensor) -> Result<Tensor> {
    let m = d.f_max()?.double_value(&[]);
    Ok(if m > 0.0 { d.f_div_scalar(m)?.f_neg()?.f_add_scalar(1.0)? } else { d.f_ones_like()? })
}

fn cosine(q: &Tensor, t: &Tensor) -> Result<Tensor> {
    let dot = t.f_matmul(q)?;
    let norms = t.f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?.f_mul_scalar(q.f_norm()?.double_value(&[]))?;
    Ok(dot.f_div(&norms.f_add_scalar(1e-10)?)?)
}

/// Similarity maps of every image against one query token.
/// # Shapes
/// `grids[i]: [C, h_i, w_i]` (one image's representation at one position and step) → one `[h_i, w_i]` map each
pub fn similarity_maps(grids: &[Tensor], query: Query, measure: Measure) -> Result<Vec<SimilarityMap>> {
    let source = grids.get(query.image).ok_or_else(|| {
        Error::invalid(format!("query image {}", query.image), format!("there are {} images", grids.len()))
    })?;
    for (i, g) in grids.iter().enumerate() {
        if g.dim() != 3 || g.size()[0] != source.size()[0] {
            return Err(Error::Shape {
                context: format!("similarity grid {i}"),
                why: format!("expected [C, h, w] with C = {}, got {:?}", source.size()[0], g.size()),
            });
        }
    }
    let (h, w) = (source.size()[1], source.size()[2]);
    if !(0..h).contains(&query.row) || !(0..w).contains(&query.col) {
        return Err(Error::invalid(
            format!("query token ({}, {})", query.row, query.col),
            format!("image {}'s grid is {h}×{w}: rows 0..{h}, columns 0..{w}", query.image),
        ));
    }
    let source_tokens = tokens(source)?;
    let q = source_tokens.f_get(query.row * w + query.col)?;
    let source_mean = source_tokens.f_mean_dim(0, false, Kind::Double)?;
    grids
        .iter()
        .map(|g| {
            let t = tokens(g)?;
            let values = match measure {
                Measure::Cosine => cosine(&q, &t)?,
                Measure::CosineCentered => {
                    let m = source_mean.f_add(&t.f_mean_dim(0, false, Kind::Double)?)?.f_div_scalar(2.0)?;
                    cosine(&q.f_sub(&m)?, &t.f_sub(&m)?)?
                }
                Measure::DotProduct => by_max_abs(&t.f_matmul(&q)?)?,
                Measure::Manhattan => {
                    one_minus_by_max(&t.f_sub(&q)?.f_abs()?.f_sum_dim_intlist(1, false, Kind::Double)?)?
                }
                Measure::Euclidean => {
                    one_minus_by_max(&t.f_sub(&q)?.f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?)?
                }
                Measure::Chebyshev => one_minus_by_max(&t.f_sub(&q)?.f_abs()?.f_amax([1i64].as_slice(), false)?)?,
                Measure::RelL2Norm => {
                    let norms = t.f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?;
                    by_max_abs(&norms.f_sub_scalar(q.f_norm()?.double_value(&[]))?)?
                }
            };
            let (gh, gw) = (g.size()[1], g.size()[2]);
            let best = values.f_argmax(0, false)?.int64_value(&[]);
            Ok(SimilarityMap {
                mean: values.f_mean(Kind::Double)?.double_value(&[]),
                std: values.f_std(false)?.double_value(&[]),
                best: (best / gw, best % gw),
                map: values.f_reshape([gh, gw])?.f_to_kind(Kind::Float)?,
            })
        })
        .collect()
}

/// Pictures of the maps over their images (orange positive, blue negative, opacity |similarity|), the query
/// token outlined in green and each other image's best match in white, captioned with mean ± std.
/// `images[i]`: `[H, W, 3]` uint8.
pub fn render_maps(maps: &[SimilarityMap], images: &[Tensor], query: Query) -> Result<crate::display::PictureGrid> {
    use image::{Rgb, RgbImage};
    let mut pictures = Vec::new();
    for (i, (m, img)) in maps.iter().zip(images).enumerate() {
        let mut out: RgbImage = crate::xattn::render::tensor_to_rgb(img)?;
        let (w, h) = out.dimensions();
        let (gh, gw) = (m.map.size()[0], m.map.size()[1]);
        let values = Vec::<f32>::try_from(m.map.f_contiguous()?.f_flatten(0, -1)?)?;
        let cell = |x: u32, y: u32| ((y as i64 * gh / h as i64).min(gh - 1), (x as i64 * gw / w as i64).min(gw - 1));
        for (x, y, px) in out.enumerate_pixels_mut() {
            let (r, c) = cell(x, y);
            let v = values[(r * gw + c) as usize];
            let a = v.abs().min(1.0);
            let color = if v >= 0.0 { [255.0, 90.0, 0.0] } else { [0.0, 110.0, 255.0] };
            *px = Rgb(std::array::from_fn(|k| (px.0[k] as f32 * (1.0 - a) + color[k] * a).round() as u8));
        }
        let (mark, color) =
            if i == query.image { ((query.row, query.col), [0, 200, 83]) } else { (m.best, [255, 255, 255]) };
        for (x, y, px) in out.enumerate_pixels_mut() {
            let (r, c) = cell(x, y);
            let on_edge = (r, c) == mark && {
                let (r0, c0) = (cell(x.saturating_sub(1), y), cell(x + 1, y));
                let (u, d) = (cell(x, y.saturating_sub(1)), cell(x, y + 1));
                x == 0
                    || y == 0
                    || x + 1 == w
                    || y + 1 == h
                    || r0 != (r, c)
                    || c0 != (r, c)
                    || u != (r, c)
                    || d != (r, c)
            };
            if on_edge {
                *px = Rgb(color);
            }
        }
        pictures.push(crate::display::Picture::new(out, format!("image {i}: {:.3} ± {:.3}", m.mean, m.std)));
    }
    Ok(crate::display::PictureGrid::new(pictures))
}
