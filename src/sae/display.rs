//! Notebook views of SAE features: feature cards (top items with activation maps, frequency, mean activation),
//! top-feature tables, and a feature's activation map over an image.

use super::top::{activation_map, item_caption, item_image, TopItems};
use super::{rows_of, Sae};
use crate::collection::Collection;
use crate::display::{emit, Picture, PictureGrid};
use crate::error::{Error, Result};
use crate::xattn::render::{render, Colormap, RenderMode, RenderOptions};
use tch::{Kind, Tensor};

/// One feature: its best items (image with the activation map over it, or the map alone when the collection kept
/// no images), how often it fires and how strongly.
#[derive(Debug)]
pub struct FeatureCard {
    pub feature: i64,
    pub frequency: f64,
    pub mean_activation: f64,
    pub pictures: Vec<Picture>,
}

/// Upsample a map `[h, w]` to `[H, W]` (bilinear).
fn upsample(map: &Tensor, height: i64, width: i64) -> Result<Tensor> {
    Ok(map
        .f_to_kind(Kind::Float)?
        .f_unsqueeze(0)?
        .f_unsqueeze(0)?
        .f_upsample_bilinear2d([height, width], false, None, None)?
        .f_squeeze_dim(0)?
        .f_squeeze_dim(0)?)
}

/// A feature's activation map drawn over an image `[H, W, 3]` uint8 (upsampled), or alone as a heat map.
pub fn overlay(map: &Tensor, image: Option<&Tensor>, vmax: Option<f64>, caption: &str) -> Result<Picture> {
    let options = RenderOptions {
        mode: if image.is_some() { RenderMode::Overlay } else { RenderMode::Heat },
        colormap: Colormap::Jet,
        vmin: Some(0.0),
        vmax,
        alpha: 0.5,
        colorbar: image.is_none(),
    };
    let rgb = match image {
        Some(img) => render(&upsample(map, img.size()[0], img.size()[1])?, Some(img), &options)?,
        None => {
            let scale = (128 / map.size()[0].max(1)).max(1);
            render(&upsample(map, map.size()[0] * scale, map.size()[1] * scale)?, None, &options)?
        }
    };
    Ok(Picture::new(rgb, caption))
}

fn picture_tensor(path: &std::path::Path) -> Result<Tensor> {
    let img =
        image::open(path).map_err(|e| Error::BadImage { path: path.to_path_buf(), why: e.to_string() })?.to_rgb8();
    let (w, h) = img.dimensions();
    Ok(Tensor::from_slice(&img.into_raw()).f_reshape([h as i64, w as i64, 3])?)
}

impl FeatureCard {
    /// Build feature f's card from a top-items pass over `collection`.
    pub fn build(sae: &Sae, top: &TopItems, collection: &Collection, feature: i64) -> Result<Self> {
        let best = top.best(feature)?;
        let vmax = best.first().map(|b| b.1).filter(|v| *v > 0.0);
        let mut pictures = Vec::new();
        for (item, score) in best {
            let map = activation_map(sae, collection, &top.position, feature, item)?;
            let image = item_image(collection, item)?.map(|p| picture_tensor(&p)).transpose()?;
            let caption = format!("#{item} ({score:.2}): {}", item_caption(collection, item)?);
            pictures.push(overlay(&map, image.as_ref(), vmax, &caption)?);
        }
        Ok(Self {
            feature,
            frequency: top.frequency(feature)?,
            mean_activation: top.mean_activation(feature)?,
            pictures,
        })
    }

    pub fn to_html(&self) -> Result<String> {
        let grid = PictureGrid::new(self.pictures.clone()).to_html()?;
        Ok(format!(
            "<div class=\"sdscope-feature\"><h4 style=\"margin:4px 0\">feature {}</h4>\
             <p style=\"margin:2px 0\">fires on {:.3}% of positions · mean activation {:.3}</p>{grid}</div>",
            self.feature,
            self.frequency * 100.0,
            self.mean_activation
        ))
    }

    pub fn evcxr_display(&self) {
        match self.to_html() {
            Ok(html) => emit(&html, &format!("feature {} ({} top items)", self.feature, self.pictures.len())),
            Err(e) => println!("{e}"),
        }
    }
}

/// Features ranked by their mean activation over some rows.
#[derive(Debug, Clone)]
pub struct FeatureTable {
    pub rows: Vec<(i64, f64)>,
}

impl FeatureTable {
    pub fn to_html(&self) -> String {
        let body: String = self
            .rows
            .iter()
            .map(|(f, v)| format!("<tr><td style=\"text-align:right\">{f}</td><td>{v:.4}</td></tr>"))
            .collect();
        format!("<table><thead><tr><th>feature</th><th>mean activation</th></tr></thead><tbody>{body}</tbody></table>")
    }

    pub fn evcxr_display(&self) {
        let plain: Vec<String> = self.rows.iter().map(|(f, v)| format!("{f}: {v:.4}")).collect();
        emit(&self.to_html(), &plain.join("\n"));
    }
}

impl Sae {
    /// The `count` features with the largest activation averaged over a capture's positions (their "Explore"),
    /// optionally only inside a mask `[h, w]` over the capture's grid.
    /// # Shapes
    /// `capture [d, h, w]` (one image) or `[N, d]` rows.
    pub fn top_features(&self, capture: &Tensor, mask: Option<&Tensor>, count: usize) -> Result<FeatureTable> {
        let x = if capture.dim() == 3 { capture.f_unsqueeze(0)? } else { capture.shallow_clone() };
        let rows = rows_of(&x, self.d_in())?.f_to_kind(Kind::Float)?;
        let dense = self.dense(&self.encode(&rows)?)?;
        let weights = match mask {
            Some(m) => {
                let m = m.f_to_kind(Kind::Float)?.f_reshape([-1, 1])?.f_to_device(dense.device())?;
                if m.size()[0] != dense.size()[0] {
                    return Err(Error::Shape {
                        context: "top features".into(),
                        why: format!("mask has {} positions, the capture {}", m.size()[0], dense.size()[0]),
                    });
                }
                m
            }
            None => Tensor::ones([dense.size()[0], 1], (Kind::Float, dense.device())),
        };
        let mean = dense
            .f_mul(&weights)?
            .f_sum_dim_intlist([0i64].as_slice(), false, Kind::Float)?
            .f_div(&weights.f_sum(Kind::Float)?.f_clamp_min(1e-12)?)?;
        let count = (count as i64).min(self.num_latents());
        let (values, indices) = mean.f_topk(count, 0, true, true)?;
        let values = Vec::<f64>::try_from(values.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?)?;
        let indices = Vec::<i64>::try_from(indices.f_to_device(tch::Device::Cpu)?)?;
        Ok(FeatureTable { rows: indices.into_iter().zip(values).filter(|(_, v)| *v > 0.0).collect() })
    }

    /// Feature f's activation over one capture's grid.
    /// # Shapes
    /// `capture [d, h, w]` → `[h, w]`.
    pub fn feature_map(&self, capture: &Tensor, feature: i64) -> Result<Tensor> {
        if capture.dim() != 3 || capture.size()[0] != self.d_in() {
            return Err(Error::Shape {
                context: "feature map".into(),
                why: format!("expected one capture [{}, h, w], got {:?}", self.d_in(), capture.size()),
            });
        }
        let (h, w) = (capture.size()[1], capture.size()[2]);
        let rows = rows_of(&capture.f_unsqueeze(0)?, self.d_in())?.f_to_kind(Kind::Float)?;
        Ok(self.feature_activation(&rows, feature)?.f_reshape([h, w])?)
    }
}
