//! `transformer/config.json` of diffusers' `SD3Transformer2DModel` (SD3, SD3.5, MMDiT-X).

use serde::Deserialize;

fn d_sample() -> i64 {
    128
}
fn d_patch() -> i64 {
    2
}
fn d_channels() -> i64 {
    16
}
fn d_layers() -> i64 {
    18
}
fn d_head_dim() -> i64 {
    64
}
fn d_heads() -> i64 {
    18
}
fn d_joint() -> i64 {
    4096
}
fn d_caption() -> i64 {
    1152
}
fn d_pooled() -> i64 {
    2048
}
fn d_pos_max() -> Option<i64> {
    Some(96)
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sd3TransformerConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    /// Latent side the model was trained at (pixels / 8).
    #[serde(default = "d_sample")]
    pub sample_size: i64,
    #[serde(default = "d_patch")]
    pub patch_size: i64,
    #[serde(default = "d_channels")]
    pub in_channels: i64,
    #[serde(default = "d_layers")]
    pub num_layers: i64,
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: i64,
    #[serde(default = "d_heads")]
    pub num_attention_heads: i64,
    /// Width of the text sequence (the T5 width; the CLIP states are zero-padded to it).
    #[serde(default = "d_joint")]
    pub joint_attention_dim: i64,
    #[serde(default = "d_caption")]
    pub caption_projection_dim: i64,
    /// Width of the pooled text vector (both CLIP projections, concatenated).
    #[serde(default = "d_pooled")]
    pub pooled_projection_dim: i64,
    #[serde(default)]
    pub out_channels: Option<i64>,
    #[serde(default = "d_pos_max")]
    pub pos_embed_max_size: Option<i64>,
    /// Blocks with a second, image-only attention (SD3.5's MMDiT-X).
    #[serde(default)]
    pub dual_attention_layers: Vec<i64>,
    /// `"rms_norm"` (SD3.5) or none.
    #[serde(default)]
    pub qk_norm: Option<String>,
}

impl Sd3TransformerConfig {
    pub fn inner_dim(&self) -> i64 {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> i64 {
        self.out_channels.unwrap_or(self.in_channels)
    }
}
