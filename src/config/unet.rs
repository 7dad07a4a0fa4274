//! `unet/config.json` of `UNet2DConditionModel`.

use super::PerBlock;
use serde::Deserialize;

fn default_true() -> bool {
    true
}
fn default_groups() -> Option<i64> {
    Some(32)
}
fn default_eps() -> f64 {
    1e-5
}
fn default_layers() -> PerBlock<i64> {
    PerBlock::One(2)
}
fn default_transformer_layers() -> PerBlock<i64> {
    PerBlock::One(1)
}
fn default_head_dim() -> Option<PerBlock<i64>> {
    Some(PerBlock::One(8))
}
fn default_channels() -> i64 {
    4
}
fn default_cross() -> PerBlock<i64> {
    PerBlock::One(1280)
}
fn default_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}

#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "default_channels")]
    pub in_channels: i64,
    #[serde(default = "default_channels")]
    pub out_channels: i64,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    #[serde(default = "default_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default)]
    pub only_cross_attention: Option<PerBlock<bool>>,
    pub block_out_channels: Vec<i64>,
    #[serde(default = "default_layers")]
    pub layers_per_block: PerBlock<i64>,
    #[serde(default = "default_groups")]
    pub norm_num_groups: Option<i64>,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_cross")]
    pub cross_attention_dim: PerBlock<i64>,
    #[serde(default = "default_transformer_layers")]
    pub transformer_layers_per_block: PerBlock<i64>,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<Vec<i64>>,
    #[serde(default = "default_head_dim")]
    pub attention_head_dim: Option<PerBlock<i64>>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<i64>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<i64>,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<i64>,
    #[serde(default)]
    pub num_class_embeds: Option<i64>,
    #[serde(default)]
    pub time_embedding_type: Option<String>,
    #[serde(default)]
    pub resnet_time_scale_shift: Option<String>,
    #[serde(default)]
    pub encoder_hid_dim: Option<i64>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<i64>,
    #[serde(default)]
    pub conv_in_kernel: Option<i64>,
    #[serde(default)]
    pub conv_out_kernel: Option<i64>,
    #[serde(default)]
    pub sample_size: Option<i64>,
}
