//! transformers' `CLIPVisionModelWithProjection`: patch embedding, class token, pre-norm encoder, the class
//! token through `post_layernorm` and `visual_projection` (`get_image_features`).

use super::clip_encoder::{Activation, ClipEncoder, EncoderShape};
use crate::config::check_dims;
use crate::error::{Error, Result};
use crate::nn::{LayerNorm, Linear};
use crate::weights::Weights;
use serde::Deserialize;
use std::path::Path;
use tch::Tensor;

fn d_hidden() -> i64 {
    768
}
fn d_intermediate() -> i64 {
    3072
}
fn d_layers() -> i64 {
    12
}
fn d_heads() -> i64 {
    12
}
fn d_channels() -> i64 {
    3
}
fn d_image() -> i64 {
    224
}
fn d_patch() -> i64 {
    32
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}

/// `vision_config` of a `CLIPModel`, or the config of a `CLIPVisionModelWithProjection` (defaults: transformers').
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "d_hidden")]
    pub hidden_size: i64,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: i64,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: i64,
    #[serde(default = "d_heads")]
    pub num_attention_heads: i64,
    #[serde(default = "d_channels")]
    pub num_channels: i64,
    #[serde(default = "d_image")]
    pub image_size: i64,
    #[serde(default = "d_patch")]
    pub patch_size: i64,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub projection_dim: Option<i64>,
}

/// # Shapes
/// `last_hidden_state: [B, 1 + patches, hidden]`; `pooled: [B, hidden]`; `image_embeds: [B, projection]`.
pub struct ClipVisionOutput {
    pub last_hidden_state: Tensor,
    pub pooled: Tensor,
    pub image_embeds: Option<Tensor>,
}

pub struct ClipVisionModel {
    pub config: ClipVisionConfig,
    class_embedding: Tensor,
    patch_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    encoder: ClipEncoder,
    post_layernorm: LayerNorm,
    visual_projection: Option<Linear>,
}

impl ClipVisionModel {
    /// Weights under `vision_model.` (both a full `CLIPModel` and a `CLIPVisionModelWithProjection` save them so),
    /// the projection at `visual_projection.weight`.
    pub fn load(config: ClipVisionConfig, config_path: &Path, weights: &Weights) -> Result<Self> {
        let activation = Activation::parse(&config.hidden_act, config_path)?;
        check_dims(
            config_path,
            1,
            [
                ("hidden_size", config.hidden_size),
                ("intermediate_size", config.intermediate_size),
                ("num_hidden_layers", config.num_hidden_layers),
                ("num_attention_heads", config.num_attention_heads),
                ("num_channels", config.num_channels),
                ("image_size", config.image_size),
                ("patch_size", config.patch_size),
            ]
            .into_iter()
            .chain(config.projection_dim.map(|p| ("projection_dim", p))),
        )?;
        let d = config.hidden_size;
        if d % config.num_attention_heads != 0 || config.image_size % config.patch_size != 0 {
            return Err(Error::BadConfig {
                path: config_path.into(),
                why: "hidden_size must be a multiple of num_attention_heads and image_size of patch_size".into(),
            });
        }
        let root = weights.root();
        let vm = if root.contains("vision_model.embeddings.class_embedding") {
            root.pp("vision_model")
        } else {
            root.clone()
        };
        let emb = vm.pp("embeddings");
        let (p, c) = (config.patch_size, config.num_channels);
        let patches = (config.image_size / p) * (config.image_size / p);
        let eps = config.layer_norm_eps;
        let shape = EncoderShape {
            hidden: d,
            intermediate: config.intermediate_size,
            layers: config.num_hidden_layers,
            heads: config.num_attention_heads,
            eps,
        };
        let visual_projection = match (config.projection_dim, root.contains("visual_projection.weight")) {
            (Some(proj), true) => Some(Linear::load(&root.pp("visual_projection"), d, proj, false)?),
            _ => None,
        };
        Ok(Self {
            class_embedding: emb.get("class_embedding", &[d])?,
            patch_embedding: emb.pp("patch_embedding").get("weight", &[d, c, p, p])?,
            position_embedding: emb.pp("position_embedding").get("weight", &[patches + 1, d])?,
            pre_layrnorm: LayerNorm::load(&vm.pp("pre_layrnorm"), d, eps)?,
            encoder: ClipEncoder::load(&vm.pp("encoder"), shape, activation)?,
            post_layernorm: LayerNorm::load(&vm.pp("post_layernorm"), d, eps)?,
            visual_projection,
            config,
        })
    }

    /// # Shapes
    /// `pixels: [B, channels, image_size, image_size]` (normalised, as the image processor gives them).
    pub fn forward(&self, pixels: &Tensor) -> Result<ClipVisionOutput> {
        let s = self.config.image_size;
        let size = pixels.size();
        if size.len() != 4 || size[1] != self.config.num_channels || size[2] != s || size[3] != s {
            return Err(Error::Shape {
                context: "CLIP vision input".into(),
                why: format!("expected [B, {}, {s}, {s}], got {size:?}", self.config.num_channels),
            });
        }
        let b = size[0];
        let x = pixels.f_to_kind(self.patch_embedding.kind())?.f_to_device(self.patch_embedding.device())?;
        let p = self.config.patch_size;
        let patches = x.f_conv2d::<Tensor>(&self.patch_embedding, None, [p, p], [0, 0], [1, 1], 1)?;
        let patches = patches.f_flatten(2, 3)?.f_transpose(1, 2)?; // [B, N, d]
        let d = self.config.hidden_size;
        let class = self.class_embedding.f_view([1, 1, d])?.f_expand([b, 1, d], false)?;
        let h = Tensor::f_cat(&[class, patches], 1)?.f_add(&self.position_embedding.f_unsqueeze(0)?)?;
        let h = self.pre_layrnorm.forward(&h)?;
        let last_hidden_state = self.encoder.forward(&h, false)?.last;
        let pooled = self.post_layernorm.forward(&last_hidden_state.f_select(1, 0)?)?;
        let image_embeds = match &self.visual_projection {
            Some(proj) => Some(proj.forward(&pooled)?),
            None => None,
        };
        Ok(ClipVisionOutput { last_hidden_state, pooled, image_embeds })
    }
}
